//! The layering rule of docs/design.md, checked on the source: a module may only name the
//! modules its row allows (`crate::X` paths), so dependencies keep pointing one way.

use std::path::Path;

/// (module, modules it may use). Keep in step with the table in docs/design.md.
const ALLOWED: &[(&str, &[&str])] = &[
    ("cli", &["commands", "runtime"]),
    (
        "commands",
        &[
            "image", "runtime", "tree", "squashfs", "sif", "oci", "registry", "convert", "cache",
            "gpu", "lazy", "build", "contract", "siteconf", "civil", "launch",
        ],
    ),
    // The launch assembler (commands → launch → runtime).
    (
        "launch",
        &[
            "runtime", "image", "tree", "squashfs", "gpu", "lazy", "siteconf", "contract",
        ],
    ),
    ("lazy", &["registry", "oci", "squashfs", "sif"]),
    ("build", &["convert", "contract", "seccomp"]),
    ("convert", &["oci", "squashfs", "sif", "contract", "civil"]),
    ("registry", &["oci"]),
    ("oci", &[]),
    ("cache", &[]),
    ("gpu", &[]),
    ("image", &["sif", "contract"]),
    (
        "runtime",
        &["tree", "fuse", "squashfs", "contract", "seccomp"],
    ),
    ("tree", &["squashfs"]),
    ("fuse", &["squashfs"]),
    // `civil` only in the writer's tests (listing dates).
    ("squashfs", &["civil"]),
    ("sif", &[]),
    // Dates: a leaf that `build.rs` includes by path, so it names nothing.
    ("civil", &[]),
    // The fake-root seccomp filter: raw BPF, names nothing.
    ("seccomp", &[]),
    // Site configuration: a leaf for launch policy; only `runtime::binds` (bind-spec syntax).
    ("siteconf", &["runtime"]),
    // The Apptainer image contract: names and types only, over `sif`'s data types.
    ("contract", &["sif"]),
    // Fuzzing entry points (not the product): they drive the parsers of every layer.
    (
        "fuzzing",
        &["commands", "convert", "oci", "sif", "squashfs", "siteconf"],
    ),
];

fn module_of(file: &Path, src: &Path) -> String {
    let rel = file.strip_prefix(src).expect("a file under src");
    let first = rel.components().next().expect("a path component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("reading src") {
        let path = entry.expect("a dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn dependencies_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(file, &src);
        let Some((_, allowed)) = ALLOWED.iter().find(|(m, _)| *m == module) else {
            continue; // lib.rs, main.rs
        };
        let text = std::fs::read_to_string(file).expect("reading a source file");
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                rest = &rest[at + "crate::".len()..];
                let used: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if used != module && !allowed.contains(&used.as_str()) {
                    violations.push(format!(
                        "{}:{}: {module} uses {used}",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}
