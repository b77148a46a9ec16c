//! The GPU tests' view of the host: the stub driver of `tests/services/gpu-stub.sh` (its
//! `RSING_TEST_GPU_*` variables), else a real NVIDIA driver (the system's configuration, found
//! by `rsing gpu`). Expectations are derived from whichever is there, so the same tests run on
//! a GPU machine. Also the probe image: a sandbox directory with a dynamically linked program
//! that dlopens libcuda.so.1, its ldd closure, and busybox.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::guard::{find_tool, missing};
use super::{scratch_root, sha256_hex, TestEnv};

/// What the tests may expect of the host's driver.
#[derive(Debug, Clone)]
pub struct GpuHost {
    /// The rsing.conf to use (the stub's), or none for the system's.
    pub config: Option<PathBuf>,
    pub driver: String,
    /// `cuDriverGetVersion`'s answer, as the probe prints it on the host.
    pub cuda: String,
    /// (NVML index, minor number) of each GPU with a node, from `rsing gpu --json`.
    pub gpus: Vec<(u64, u64)>,
    /// The decoy version the stub has next to the real one (none on a real host).
    pub decoy: Option<String>,
    /// Control nodes the host has (container paths).
    pub control: Vec<String>,
    /// `rsing gpu --json` as it reported the host.
    pub report: serde_json::Value,
}

/// The stub or real driver, or None (a skip; a failure under CI=true).
pub fn gpu_host(t: &TestEnv) -> Option<GpuHost> {
    let config = std::env::var_os("RSING_TEST_GPU_CONF").map(PathBuf::from);
    if config.is_none() && !Path::new("/dev/nvidiactl").exists() {
        missing(
            "an NVIDIA driver or the stub driver (tests/services/gpu-stub.sh, run-tests as root)",
        );
        return None;
    }
    let mut cmd = t.rsing().args(["gpu", "--json"]);
    if let Some(c) = &config {
        cmd = cmd.env("RSING_CONFIG", c);
    }
    let out = cmd.run();
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("rsing gpu --json prints JSON");
    let driver = report["driver_version"]
        .as_str()
        .unwrap_or_else(|| panic!("rsing gpu found no driver: {report}"))
        .to_string();
    if let Ok(want) = std::env::var("RSING_TEST_GPU_DRIVER") {
        assert_eq!(driver, want, "rsing gpu reports the stub's version");
    }
    let cuda = match std::env::var("RSING_TEST_GPU_CUDA") {
        Ok(v) => v,
        Err(_) => host_probe_cuda(),
    };
    let gpus: Vec<(u64, u64)> = report["gpus"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|g| (g["index"].as_u64().unwrap(), g["minor"].as_u64().unwrap()))
                .collect()
        })
        .unwrap_or_default();
    let control: Vec<String> = report["devices"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["container"].as_str())
                .filter(|c| {
                    !c.trim_start_matches("/dev/nvidia")
                        .chars()
                        .all(|ch| ch.is_ascii_digit())
                })
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    check_stub_devices(&gpus, &control);
    Some(GpuHost {
        config,
        driver,
        cuda,
        gpus,
        decoy: std::env::var("RSING_TEST_GPU_DECOY").ok(),
        control,
        report,
    })
}

/// On a real host: the CUDA version the probe reads outside any container.
fn host_probe_cuda() -> String {
    let image = probe_image().expect("the probe image");
    let out = Command::new(image.join("usr/local/bin/probe"))
        .output()
        .expect("running the probe on the host");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("the probe on the host: {text}"))
        .to_string()
}

/// The probe image (built once per run), or None when cc or busybox is missing.
pub fn probe_image() -> Option<PathBuf> {
    static IMAGE: OnceLock<Option<PathBuf>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let (Some(cc), Some(busybox)) = (find_tool("cc"), find_tool("busybox")) else {
                missing("cc and busybox (for the GPU probe image)");
                return None;
            };
            Some(build_probe_image(&cc, &busybox))
        })
        .clone()
}

fn build_probe_image(cc: &Path, busybox: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/services/gpu-stub/probe.c");
    let text = std::fs::read(&source).expect("reading probe.c");
    let target = scratch_root().join(format!("gpu-probe-{}", &sha256_hex(&text)[..12]));
    if target.is_dir() {
        return target;
    }
    let stage = scratch_root().join(format!(".gpu-probe-stage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    for dir in [
        "bin",
        "usr/bin",
        "usr/local/bin",
        "etc",
        "tmp",
        ".singularity.d/libs",
    ] {
        std::fs::create_dir_all(stage.join(dir)).unwrap();
    }
    let probe = stage.join("usr/local/bin/probe");
    let out = Command::new(cc)
        .arg("-O1")
        .arg("-o")
        .arg(&probe)
        .arg(&source)
        .arg("-ldl")
        .output()
        .expect("running cc");
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for lib in ldd_closure(&probe) {
        let dst = stage.join(lib.strip_prefix("/").unwrap());
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&lib, &dst).unwrap();
    }
    std::fs::copy(busybox, stage.join("bin/busybox")).unwrap();
    let applets = Command::new(busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", stage.join("bin").join(applet));
        }
    }
    std::fs::write(stage.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(stage.join("etc/group"), "root:x:0:\n").unwrap();
    match std::fs::rename(&stage, &target) {
        Ok(()) => {}
        Err(_) if target.is_dir() => {
            let _ = std::fs::remove_dir_all(&stage);
        }
        Err(e) => panic!("placing the probe image: {e}"),
    }
    target
}

/// Absolute paths of the libraries (and the loader) `bin` needs, as ldd lists them.
fn ldd_closure(bin: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(bin).output().expect("running ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, right)) => right.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// With the stub driver, what `rsing gpu` found must be what the stub made (the device
/// expectations of the tests come from that report, so it must not be trusted blindly): its
/// `RSING_TEST_GPU_COUNT` GPU nodes, numbered from 0, and the four control nodes. A stub
/// without device nodes (no mknod here) leaves the device tests nothing to check: under
/// CI=true that is a failure.
fn check_stub_devices(gpus: &[(u64, u64)], control: &[String]) {
    let Some(count) = std::env::var("RSING_TEST_GPU_COUNT")
        .ok()
        .and_then(|n| n.parse::<u64>().ok())
    else {
        return;
    };
    if count == 0 {
        missing("the stub driver's fake device nodes (mknod was refused)");
        return;
    }
    let minors: Vec<u64> = gpus.iter().map(|&(_, minor)| minor).collect();
    assert_eq!(
        minors,
        (0..count).collect::<Vec<_>>(),
        "rsing gpu must report the stub's {count} GPU nodes"
    );
    let mut control: Vec<&str> = control.iter().map(String::as_str).collect();
    control.sort();
    assert_eq!(
        control,
        [
            "/dev/nvidia-modeset",
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools",
            "/dev/nvidiactl"
        ],
        "rsing gpu must report the stub's control nodes"
    );
}
