//! Running one definition-file stage over its unpacked base: `%setup` on the host, `%files`,
//! `%appfiles`, `%post`, `%appinstall`, in Apptainer's order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::copy::{copy_into, in_root};
use super::deffile::{FileCopy, Script, Stage};
use super::glob::{glob, has_wildcard};
use super::owners::Owners;
use super::runner::{self, Step};
use super::userns::Userns;
use super::{io, metadata, Error, Result};

/// Where a stage runs.
pub struct StageDirs<'a> {
    /// The stage's root directory (the unpacked base).
    pub root: &'a Path,
    /// The definition file, for messages.
    pub file: &'a str,
    /// Relative `%files` sources and `%setup` start here (the caller's working directory).
    pub context: &'a Path,
    /// Roots of the earlier stages, by name.
    pub stages: &'a HashMap<String, PathBuf>,
    /// The user namespace of the steps.
    pub userns: &'a Userns,
}

/// apt drops privileges to `_apt` and checks that it worked; with the seccomp fakes it did
/// not, so apt is told to stay root for the duration of the step (Charliecloud does the same).
const APT_SANDBOX: &str = "etc/apt/apt.conf.d/00rsing-build-sandbox";

/// Runs the stage's steps; `owners` carries the recorded ownership in and out.
pub fn run_stage(
    stage: &Stage,
    dirs: &StageDirs,
    owners: &mut Owners,
    say: &dyn Fn(&str),
) -> Result<()> {
    metadata::prepare(dirs.root)?;
    if let Some(setup) = &stage.setup {
        say("%setup");
        let status = std::process::Command::new(setup.interpreter.as_deref().unwrap_or("/bin/sh"))
            .arg("-e")
            .arg("-c")
            .arg(&setup.body)
            .env("APPTAINER_ROOTFS", dirs.root)
            .env("SINGULARITY_ROOTFS", dirs.root)
            .current_dir(dirs.context)
            .status()
            .map_err(io("running %setup"))?;
        if !status.success() {
            return Err(failed(
                dirs,
                "%setup",
                setup.line,
                status.code().unwrap_or(128),
            ));
        }
    }
    for files in &stage.files {
        say(&match &files.from {
            Some(from) => format!("%files from {from}"),
            None => "%files".to_string(),
        });
        let from_root = files.from.as_ref().map(|name| dirs.stages[name].as_path());
        copy_files(&files.copies, from_root, dirs)?;
    }
    for (name, app) in &stage.apps {
        if !app.files.is_empty() {
            say(&format!("%appfiles {name}"));
            copy_files(&app.files, None, dirs)?;
        }
    }
    if let Some(post) = &stage.post {
        say("%post");
        run_script(dirs, post, "%post", "/", owners)?;
    }
    for (name, app) in &stage.apps {
        if let Some(install) = &app.install {
            say(&format!("%appinstall {name}"));
            let cwd = format!("/scif/apps/{name}");
            std::fs::create_dir_all(in_root(dirs.root, &cwd))
                .map_err(io(format!("creating {cwd}")))?;
            run_script(dirs, install, &format!("%appinstall {name}"), &cwd, owners)?;
        }
    }
    Ok(())
}

/// Runs the image's `/.singularity.d/test` (after the env scripts) in a build step, with the
/// image's recorded `owners` on its files.
pub fn run_test(
    root: &Path,
    file: &str,
    line: usize,
    userns: &Userns,
    owners: &Owners,
) -> Result<()> {
    use crate::contract::{ENV_DIR, TEST};
    let script =
        format!("for f in {ENV_DIR}/*.sh; do [ -f \"$f\" ] && . \"$f\"; done; exec /bin/sh {TEST}");
    let step = Step {
        root,
        argv: vec!["/bin/sh".into(), "-c".into(), script],
        env: base_env(),
        cwd: "/".into(),
        userns,
        mounted: None,
    };
    // Changes %test makes to ownership are not kept: the image is packed with `owners`.
    let status = run_owned(&step, &mut owners.clone()).map_err(io("running %test"))?;
    if status != 0 {
        return Err(Error::StepFailed {
            what: "%test".into(),
            status,
            file: file.to_string(),
            line,
        });
    }
    Ok(())
}

fn failed(dirs: &StageDirs, what: &str, line: usize, status: i32) -> Error {
    Error::StepFailed {
        what: what.to_string(),
        status,
        file: dirs.file.to_string(),
        line,
    }
}

fn copy_files(copies: &[FileCopy], from_root: Option<&Path>, dirs: &StageDirs) -> Result<()> {
    for copy in copies {
        let matched = sources(copy, from_root, dirs.context);
        let missing = matched.is_empty() || matched.iter().any(|m| m.symlink_metadata().is_err());
        if missing {
            return Err(Error::Files {
                file: dirs.file.to_string(),
                line: copy.line,
                message: format!("{}: no such file or directory", copy.src),
            });
        }
        let several = matched.len() > 1;
        for src in &matched {
            let dest_text = match &copy.dest {
                Some(d) => d.clone(),
                None => own_path(src, &copy.src, from_root, dirs.context),
            };
            let dest = in_root(dirs.root, &dest_text);
            let into_dir = copy.dest.is_some() && (several || dest_text.ends_with('/'));
            copy_into(src, &dest, into_dir).map_err(|e| Error::Files {
                file: dirs.file.to_string(),
                line: copy.line,
                message: format!("copying {} to {dest_text}: {e}", src.display()),
            })?;
        }
    }
    Ok(())
}

/// The paths a `%files` line copies: its source, or what its wildcards (`*`, `?`, `[…]`)
/// match, as Apptainer expands them: on the host (relative to the working directory, or
/// absolute), or in the root of the stage of `%files from`. Empty when a pattern matches
/// nothing.
pub fn sources(copy: &FileCopy, from_root: Option<&Path>, context: &Path) -> Vec<PathBuf> {
    let (base, rel) = match from_root {
        Some(root) => (root.to_path_buf(), in_root(Path::new("/"), &copy.src)),
        None if copy.src.starts_with('/') => (PathBuf::from("/"), PathBuf::from(&copy.src)),
        None => (context.to_path_buf(), PathBuf::from(&copy.src)),
    };
    let rel = rel.strip_prefix("/").map(Path::to_path_buf).unwrap_or(rel);
    if !has_wildcard(&copy.src) {
        return vec![base.join(rel)];
    }
    glob(&base, &rel)
}

/// Where a source without a destination goes: the same path in the image (a relative host
/// path under `/`).
fn own_path(src: &Path, text: &str, from_root: Option<&Path>, context: &Path) -> String {
    if !has_wildcard(text) {
        return if from_root.is_some() || text.starts_with('/') {
            text.to_string()
        } else {
            format!("/{text}")
        };
    }
    let base = match from_root {
        Some(root) => root,
        None if text.starts_with('/') => Path::new("/"),
        None => context,
    };
    let rel = src.strip_prefix(base).unwrap_or(src);
    format!("/{}", rel.display())
}

/// The environment of a step, as Apptainer gives `%post`.
fn base_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), "/root".into()),
        ("LANG".into(), "C".into()),
        ("APPTAINER_CONTAINER".into(), "/".into()),
        ("APPTAINER_ROOTFS".into(), "/".into()),
        ("SINGULARITY_ROOTFS".into(), "/".into()),
        (
            "APPTAINER_ENVIRONMENT".into(),
            metadata::POST_ENVIRONMENT.into(),
        ),
        (
            "SINGULARITY_ENVIRONMENT".into(),
            metadata::POST_ENVIRONMENT.into(),
        ),
        ("APPTAINER_LABELS".into(), metadata::BUILD_LABELS.into()),
        ("SINGULARITY_LABELS".into(), metadata::BUILD_LABELS.into()),
    ];
    for key in [
        "TERM",
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "SOURCE_DATE_EPOCH",
    ] {
        if let Ok(v) = std::env::var(key) {
            env.push((key.into(), v));
        }
    }
    env
}

/// Runs `step` in its user namespace mode, carrying `owners` through it: with real ids
/// ([`super::subid`]), or with the seccomp fakes and the apt setting they need.
pub(crate) fn run_owned(step: &Step, owners: &mut Owners) -> std::io::Result<i32> {
    if let Userns::Subid(map) = step.userns {
        return super::subid::run(step, map, owners);
    }
    let apt_conf = step.root.join(APT_SANDBOX);
    let apt = apt_conf.parent().is_some_and(|d| d.is_dir())
        && !apt_conf.exists()
        && std::fs::write(&apt_conf, "APT::Sandbox::User \"root\";\n").is_ok();
    let mut inodes = owners.to_inodes(step.root);
    let result = runner::run(step, &mut inodes);
    if apt {
        let _ = std::fs::remove_file(&apt_conf);
    }
    let status = result?;
    *owners = Owners::from_inodes(step.root, &inodes)?;
    Ok(status)
}

fn run_script(
    dirs: &StageDirs,
    script: &Script,
    what: &str,
    cwd: &str,
    owners: &mut Owners,
) -> Result<()> {
    let step = Step {
        root: dirs.root,
        argv: vec![
            script
                .interpreter
                .clone()
                .unwrap_or_else(|| "/bin/sh".into()),
            "-e".into(),
            "-c".into(),
            script.body.clone(),
        ],
        env: base_env(),
        cwd: cwd.to_string(),
        userns: dirs.userns,
        mounted: None,
    };
    let result = run_owned(&step, owners);
    let status = result.map_err(io(format!("running {what}")))?;
    if status != 0 {
        return Err(failed(dirs, what, script.line, status));
    }
    Ok(())
}
