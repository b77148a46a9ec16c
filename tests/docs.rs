//! The doc check: every ```console block in docs/*.md and README.md that follows a
//! `<!-- doc-check -->` line is run as shown, so the documentation cannot drift from the
//! program. Each `$ COMMAND` line runs in bash, in a directory holding the busybox SIF as
//! `image.sif`, with the rsing under test first on PATH. The lines after a command are its
//! expected output: each must match an output line, in order, where `…` matches anything
//! within the line. A command without expected output must succeed.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixtures::Fixture;
use crate::util::{rsing_bin, TestEnv};

#[derive(Debug)]
struct Step {
    file: String,
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The checked steps of one Markdown file.
fn steps(path: &Path) -> Vec<Step> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let file = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut out: Vec<Step> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let marked = lines[i].trim() == "<!-- doc-check -->";
        i += 1;
        if !marked {
            continue;
        }
        assert!(
            lines.get(i).is_some_and(|l| l.trim() == "```console"),
            "{file}:{i}: <!-- doc-check --> must be followed by a ```console block"
        );
        i += 1;
        while i < lines.len() && lines[i].trim() != "```" {
            if let Some(cmd) = lines[i].strip_prefix("$ ") {
                out.push(Step {
                    file: file.clone(),
                    line: i + 1,
                    command: cmd.to_string(),
                    expected: Vec::new(),
                });
            } else if let Some(step) = out.last_mut() {
                step.expected.push(lines[i].to_string());
            }
            i += 1;
        }
    }
    out
}

/// `pattern` (with `…` as a wildcard) matches `line`.
fn matches(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let mut rest = line;
    for (n, part) in parts.iter().enumerate() {
        if n == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if n == parts.len() - 1 && !part.is_empty() {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(p) => rest = &rest[p + part.len()..],
                None => return false,
            }
        }
    }
    parts.len() > 1 || rest.is_empty()
}

fn doc_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.push(root.join("README.md"));
    files.sort();
    files
}

#[test]
fn matcher_handles_wildcards() {
    assert!(matches("OK   userns …", "OK   userns works"));
    assert!(matches(
        "rsing … 0 FAIL",
        "rsing 0.1.0 (abc): 9 OK, 2 WARN, 0 FAIL"
    ));
    assert!(!matches("rsing … 0 FAIL", "rsing 0.1.0: 1 FAIL"));
    assert!(matches("42", "42"));
    assert!(!matches("42", "420"));
}

#[test]
fn commands_in_the_docs_run_as_shown() {
    let image = image!(Fixture::Sif);
    let all: Vec<Step> = doc_files().iter().flat_map(|f| steps(f)).collect();
    assert!(
        all.len() >= 20,
        "the guides have checked examples ({} found)",
        all.len()
    );
    // One directory per file: steps of a file share state (a file made by one is used by the
    // next), as a reader following the page would.
    let mut failures = Vec::new();
    let mut current_file = String::new();
    let mut t = TestEnv::new();
    for step in &all {
        if step.file != current_file {
            current_file = step.file.clone();
            t = TestEnv::new();
            std::fs::copy(&image, t.cwd.join("image.sif")).unwrap();
        }
        let bin_dir = t.dir.join("bin");
        std::fs::create_dir_all(&bin_dir).unwrap();
        let link = bin_dir.join("rsing");
        if !link.exists() {
            std::os::unix::fs::symlink(rsing_bin(), &link).unwrap();
        }
        let out = Command::new("bash")
            .args(["-c", &format!("exec 2>&1; {}", step.command)])
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin_dir.display()))
            .env("HOME", &t.home)
            .env("USER", whoami())
            .env("LANG", "C.UTF-8")
            .current_dir(&t.cwd)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        let mut missing = Vec::new();
        for want in step.expected.iter().filter(|w| !w.trim().is_empty()) {
            // In order: each expected line matches a later output line.
            if !lines.by_ref().any(|l| matches(want, l)) {
                missing.push(want.clone());
            }
        }
        let failed_silently = step.expected.is_empty() && !out.status.success();
        if !missing.is_empty() || failed_silently {
            failures.push(format!(
                "{}:{}: $ {}\n  exit {:?}; expected lines not found: {missing:?}\n  output:\n{}",
                step.file,
                step.line,
                step.command,
                out.status.code(),
                text
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default()
}
