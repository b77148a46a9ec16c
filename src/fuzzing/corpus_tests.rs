//! Every committed fuzz input runs in the regular test run: the seed corpora
//! (`fuzz/corpus/TARGET/seed-*`) and the reproducers of crashes the fuzzers found
//! (`fuzz/regressions/TARGET/*`, each added with its fix). Each must end without a panic.

use std::path::Path;

/// A fuzz target's entry point, its result ignored.
type Entry = fn(&[u8]);

/// The targets and their entry points (`fuzz/fuzz_targets/*.rs`).
const TARGETS: &[(&str, Entry)] = &[
    ("sif", |d| {
        super::sif(d);
    }),
    ("squashfs", |d| {
        super::squashfs(d);
    }),
    ("layers", super::layers),
    ("manifest", super::manifest),
    ("siteconf", super::siteconf),
];

#[test]
fn committed_fuzz_inputs_run_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut ran = 0;
    for (target, entry) in TARGETS {
        for kind in ["corpus", "regressions"] {
            let dir = root.join(kind).join(target);
            let Ok(files) = std::fs::read_dir(&dir) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name().to_string_lossy().into_owned();
                if kind == "corpus" && !name.starts_with("seed-") {
                    continue; // local fuzzer output, not committed
                }
                let data = std::fs::read(file.path()).unwrap();
                entry(&data);
                ran += 1;
            }
        }
    }
    assert!(ran >= 10, "the seed corpora are missing: {ran} inputs");
}
