//! A stub driver root for the unit tests, built like the integration tests' one
//! (`tests/services/gpu-stub.sh`) from the same C sources: cc-compiled libraries with the real
//! file names and SONAMEs, a decoy of another version, and an ld.so cache made by ldconfig.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const VERSION: &str = "550.54.15";
pub const LIBDIR: &str = "usr/lib/x86_64-linux-gnu";

fn stub_source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/services/gpu-stub")
        .join(name)
}

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// True when cc and ldconfig exist; under CI=true their absence fails the test.
pub fn have_tools() -> bool {
    let ok = tool("cc").is_some() && tool("ldconfig").is_some();
    if !ok {
        assert!(
            !matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1")),
            "CI: cc and ldconfig are needed for the GPU unit tests"
        );
        eprintln!("SKIP: cc or ldconfig missing");
    }
    ok
}

pub fn run(cmd: &mut Command) {
    let out = cmd.output().expect("starting a build tool");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Compiles `source` into `dir/file` with SONAME `soname`.
pub fn shared_lib(source: &str, dir: &Path, file: &str, soname: &str, defines: &[String]) {
    std::fs::create_dir_all(dir).unwrap();
    run(Command::new("cc")
        .args(["-shared", "-fPIC", "-O1"])
        .arg(format!("-Wl,-soname,{soname}"))
        .args(defines)
        .arg("-o")
        .arg(dir.join(file))
        .arg(stub_source(source)));
}

/// A fresh root under the temp dir: the driver's libraries (version [`VERSION`]) in
/// [`LIBDIR`], the decoys (version 470.1) in `opt/old`, and `etc/ld.so.cache` over both, in
/// the given cache format (`new`, `old` or `compat`).
pub fn build(name: &str, format: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("rsing-gpu-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let defines = vec![
        format!("-DSTUB_VERSION=\"{VERSION}\""),
        "-DSTUB_GPUS=2".into(),
    ];
    for (dir, version) in [(LIBDIR, VERSION), ("opt/old", "470.1")] {
        let dir = root.join(dir);
        for (src, lib) in [("cuda.c", "libcuda"), ("nvml.c", "libnvidia-ml")] {
            let file = format!("{lib}.so.{version}");
            shared_lib(src, &dir, &file, &format!("{lib}.so.1"), &defines);
        }
    }
    // Not on the list: must never be injected.
    shared_lib(
        "cuda.c",
        &root.join(LIBDIR),
        &format!("libother.so.{VERSION}"),
        "libother.so.1",
        &[],
    );
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/ld.so.conf"),
        format!("/{LIBDIR}\n/opt/old\n"),
    )
    .unwrap();
    run(Command::new("ldconfig").arg("-r").arg(&root).args([
        "-c",
        format,
        "-C",
        "/etc/ld.so.cache",
        "-f",
        "/etc/ld.so.conf",
    ]));
    root
}
