//! GPUs: `--nv` driver injection, device selection under `--contain`, `--device` with CDI
//! specs, and `rsing gpu`. On a machine without a GPU they run against the stub driver that
//! `tests/services/gpu-stub.sh` builds (its rsing.conf via RSING_CONFIG); on a GPU machine,
//! without that service, against the real driver and the system's configuration. Every
//! expectation comes from what the host has (`rsing gpu --json`, the probe run on the host).

use std::path::{Path, PathBuf};

use crate::util::gpu::{gpu_host, probe_image, GpuHost};
use crate::util::{missing, RsingCmd, TestEnv};

const LIBS: &str = "/.singularity.d/libs";

/// The host's driver and the probe image, or return (a skip; a failure under CI).
macro_rules! gpu_setup {
    ($t:expr) => {{
        let Some(image) = probe_image() else { return };
        let Some(host) = gpu_host(&$t) else { return };
        (host, image)
    }};
}

/// `rsing [--config stub] exec OPTS IMAGE CMD...`
fn exec(t: &TestEnv, host: &GpuHost, opts: &[&str], image: &Path, cmd: &[&str]) -> RsingCmd {
    with_config(t.exec_with(opts, image, cmd), host.config.as_deref())
}

fn with_config(cmd: RsingCmd, config: Option<&Path>) -> RsingCmd {
    match config {
        Some(c) => cmd.env("RSING_CONFIG", c),
        None => cmd,
    }
}

fn sh(t: &TestEnv, host: &GpuHost, opts: &[&str], image: &Path, script: &str) -> String {
    exec(t, host, opts, image, &["/bin/sh", "-c", script]).stdout_str()
}

fn nv_contained(t: &TestEnv, host: &GpuHost, image: &Path, script: &str) -> String {
    sh(t, host, &["--nv", "--contain"], image, script)
}

#[test]
fn nv_makes_libcuda_loadable_with_the_hosts_driver_version() {
    let t = TestEnv::new();
    let (host, image) = gpu_setup!(t);
    let out = exec(&t, &host, &["--nv"], &image, &["/usr/local/bin/probe"]).stdout_str();
    assert!(
        out.starts_with(&format!("cuda {} devices", host.cuda)),
        "probe under --nv: {out}"
    );
    // Without --nv the image has no libcuda.
    let out = exec(&t, &host, &[], &image, &["/usr/local/bin/probe"]).assert_exit(2);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no libcuda"));
}

#[test]
fn libs_dir_holds_exactly_the_running_drivers_libraries_read_only() {
    let t = TestEnv::new();
    let (host, image) = gpu_setup!(t);
    let listed = sh(&t, &host, &["--nv"], &image, &format!("ls {LIBS}"));
    let mut inside: Vec<&str> = listed.lines().collect();
    inside.sort();
    let mut expected: Vec<String> = host.report["libraries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let c = l["container"].as_str().unwrap();
            c.strip_prefix(&format!("{LIBS}/")).unwrap().to_string()
        })
        .collect();
    expected.sort();
    assert_eq!(inside, expected);
    for name in ["libcuda.so.1", "libnvidia-ml.so.1"] {
        assert!(inside.contains(&name), "{name} missing: {inside:?}");
    }
    for name in &inside {
        // Real file names carry the driver's version; SONAMEs end in one number.
        let version = name.split_once(".so.").map(|(_, v)| v).unwrap_or("");
        assert!(
            !version.contains('.') || version == host.driver,
            "{name} is not of driver version {}",
            host.driver
        );
        if let Some(decoy) = &host.decoy {
            assert!(!name.ends_with(decoy.as_str()), "decoy {name} injected");
        }
    }
    if host.decoy.is_some() {
        // The stub has libnvidia-ptxjitcompiler only in the decoy version.
        assert!(!inside
            .iter()
            .any(|n| n.starts_with("libnvidia-ptxjitcompiler")));
    }
    let out = exec(
        &t,
        &host,
        &["--nv"],
        &image,
        &["/bin/sh", "-c", &format!("echo x > {LIBS}/libcuda.so.1")],
    )
    .run();
    assert!(!out.status.success(), "the libraries must be read-only");
}

#[test]
fn nvidia_smi_runs_from_usr_bin() {
    let t = TestEnv::new();
    let (host, image) = gpu_setup!(t);
    let out = nv_contained(&t, &host, &image, "command -v nvidia-smi && nvidia-smi");
    assert!(out.starts_with("/usr/bin/nvidia-smi\n"), "{out}");
    assert!(
        out.contains(&format!("Driver Version: {}", host.driver)),
        "{out}"
    );
}

#[test]
fn ld_library_path_gets_the_libs_dir_and_path_is_unchanged() {
    let t = TestEnv::new();
    let (host, image) = gpu_setup!(t);
    let script = "echo \"$LD_LIBRARY_PATH\"; echo \"$PATH\"";
    let with = sh(&t, &host, &["--nv"], &image, script);
    let without = sh(&t, &host, &[], &image, script);
    let (ld, path) = with.split_once('\n').unwrap();
    assert_eq!(ld, LIBS);
    assert_eq!(path, without.lines().nth(1).unwrap());
    let user = sh(
        &t,
        &host,
        &["--nv", "--env", "LD_LIBRARY_PATH=/opt/mine"],
        &image,
        "echo \"$LD_LIBRARY_PATH\"",
    );
    assert_eq!(user, format!("/opt/mine:{LIBS}"));
}

#[test]
fn contain_binds_the_control_nodes_and_every_gpu() {
    let t = TestEnv::new();
    let (host, image) = gpu_setup!(t);
    let script = "for d in /dev/nvidia*; do [ -c $d ] && echo $d; done";
    let out = nv_contained(&t, &host, &image, script);
    let mut expected: Vec<String> = host.control.clone();
    expected.extend(host.gpus.iter().map(|(_, m)| format!("/dev/nvidia{m}")));
    expected.sort();
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    assert_eq!(got, expected);
}

#[test]
fn cuda_visible_devices_picks_the_gpu_and_is_renumbered_inside() {
    let t = TestEnv::new();
    let (host, image) = gpu_setup!(t);
    let Some(&(index, minor)) = host.gpus.last() else {
        missing("GPU device nodes");
        return;
    };
    let script = "ls -d /dev/nvidia[0-9]*; echo CVD=$CUDA_VISIBLE_DEVICES; /usr/local/bin/probe";
    let out = exec(
        &t,
        &host,
        &["--nv", "--contain"],
        &image,
        &["/bin/sh", "-c", script],
    )
    .env("CUDA_VISIBLE_DEVICES", index.to_string())
    .stdout_str();
    assert_eq!(
        out,
        format!("/dev/nvidia{minor}\nCVD=0\ncuda {} devices 1", host.cuda)
    );
}

#[test]
fn slurm_allocation_limits_the_gpus() {
    let t = TestEnv::new();
    let (host, image) = gpu_setup!(t);
    if host.gpus.len() < 2 {
        missing("a second GPU");
        return;
    }
    // Slurm allocated the second GPU and, constraining devices, numbers it 0.
    let (_, minor) = host.gpus[1];
    let out = exec(
        &t,
        &host,
        &["--nv", "--contain"],
        &image,
        &[
            "/bin/sh",
            "-c",
            "ls -d /dev/nvidia[0-9]*; echo $CUDA_VISIBLE_DEVICES",
        ],
    )
    .env("SLURM_STEP_GPUS", "1")
    .env("SLURM_JOB_GPUS", "1")
    .env("CUDA_VISIBLE_DEVICES", "0")
    .stdout_str();
    assert_eq!(out, format!("/dev/nvidia{minor}\n0"));
}

/// A CDI spec in `format` under the test's own spec dir, and an rsing.conf naming that dir.
fn cdi_setup(t: &TestEnv, host: &GpuHost, format: &str) -> PathBuf {
    let hook = t.write(
        "cdi-hook.sh",
        &format!("#!/bin/sh\ncat > {}/hook-state.json\n", t.dir.display()),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = t.write("cdi-data/hello.txt", "hello from CDI\n");
    let kind = format!("test.rsing.example/{format}");
    let spec = match format {
        "json" => serde_json::json!({
            "cdiVersion": "0.5.0",
            "kind": kind,
            "devices": [{"name": "probe", "containerEdits": {
                "deviceNodes": [{"path": "/dev/rsing-cdi", "hostPath": "/dev/null", "type": "c"}],
                "mounts": [{"hostPath": data, "containerPath": "/opt/cdi/hello.txt",
                            "options": ["ro", "nosuid", "nodev", "bind"]}],
                "env": ["RSING_CDI=json"]}}],
            "containerEdits": {"hooks": [
                {"hookName": "createRuntime", "path": hook},
                {"hookName": "createContainer", "path": "/usr/bin/some-oci-hook"}]}
        })
        .to_string(),
        _ => format!(
            "cdiVersion: 0.6.0\nkind: {kind}\ndevices:\n- name: probe\n  containerEdits:\n    \
             deviceNodes:\n    - path: /dev/rsing-cdi\n      hostPath: /dev/null\n    \
             mounts:\n    - hostPath: {}\n      containerPath: /opt/cdi/hello.txt\n      \
             options: [ro, bind]\n    env: [RSING_CDI=yaml]\ncontainerEdits:\n  hooks:\n  \
             - hookName: createRuntime\n    path: {}\n",
            data.display(),
            hook.display()
        ),
    };
    t.write(&format!("cdi/test.{format}"), &spec);
    let base = host
        .config
        .as_ref()
        .map(|c| std::fs::read_to_string(c).unwrap())
        .unwrap_or_default();
    t.write(
        "rsing.conf",
        &format!("{base}cdi spec dirs = {}\n", t.dir.join("cdi").display()),
    )
}

#[test]
fn cdi_specs_in_json_and_yaml_apply_device_mount_env_and_host_hook() {
    let t = TestEnv::new();
    let (host, image) = gpu_setup!(t);
    for format in ["json", "yaml"] {
        let conf = cdi_setup(&t, &host, format);
        let device = format!("test.rsing.example/{format}=probe");
        let script = "test -c /dev/rsing-cdi && cat /opt/cdi/hello.txt && echo $RSING_CDI";
        let cmd = t
            .exec_with(
                ["--contain", "--device", &device],
                &image,
                ["/bin/sh", "-c", script],
            )
            .env("RSING_CONFIG", &conf);
        let out = cmd.run();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("hello from CDI\n{format}\n")
        );
        let state = std::fs::read_to_string(t.dir.join("hook-state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state["status"], "creating");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if format == "json" {
            assert!(stderr.contains("some-oci-hook"), "{stderr}");
        }
        std::fs::remove_file(t.dir.join("hook-state.json")).unwrap();
        // The mount is read-only; without --contain the node cannot be added to /dev.
        let write = t
            .exec_with(
                ["--contain", "--device", &device],
                &image,
                ["/bin/sh", "-c", "echo x > /opt/cdi/hello.txt"],
            )
            .env("RSING_CONFIG", &conf)
            .run();
        assert!(!write.status.success());
        let outside = t
            .exec_with(["--device", &device], &image, ["true"])
            .env("RSING_CONFIG", &conf)
            .assert_exit(255);
        let stderr = String::from_utf8_lossy(&outside.stderr);
        assert!(
            stderr.contains("rsing: error:") && stderr.contains("--contain"),
            "{stderr}"
        );
    }
    let conf = cdi_setup(&t, &host, "json");
    t.exec_with(
        ["--device", "test.rsing.example/json=nope"],
        &image,
        ["true"],
    )
    .env("RSING_CONFIG", &conf)
    .assert_error_naming("test.rsing.example/json=nope");
    // A malformed spec: even with -q (no warnings), the error names the file it skipped.
    t.write("cdi/broken.json", "{\"cdiVersion\": \"0.5.0\", \"kind\": ");
    let line = t
        .exec_with(
            ["-q", "--device", "test.rsing.example/broken=probe"],
            &image,
            ["true"],
        )
        .env("RSING_CONFIG", &conf)
        .assert_error_naming("test.rsing.example/broken=probe");
    assert!(line.contains("broken.json"), "{line}");
}

#[test]
fn no_driver_is_one_warning_and_the_container_runs() {
    let t = TestEnv::new();
    let Some(image) = probe_image() else { return };
    let empty = t.mkdir("no-driver");
    let conf = t.write("none.conf", &format!("nvidia root = {}\n", empty.display()));
    let out = t
        .exec_with(["--nv"], &image, ["/bin/echo", "ran"])
        .env("RSING_CONFIG", &conf)
        .run();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("rsing: warning: --nv: no NVIDIA driver found"),
        "{stderr}"
    );
    let gpu = t.rsing().args(["gpu"]).env("RSING_CONFIG", &conf).run();
    assert_eq!(gpu.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gpu.stdout).contains("no NVIDIA driver found"));
}

#[test]
fn rsing_gpu_reports_version_libraries_binaries_and_devices() {
    let t = TestEnv::new();
    let (host, _image) = gpu_setup!(t);
    let text = with_config(t.rsing().arg("gpu"), host.config.as_deref()).stdout_str();
    assert!(
        text.contains(&format!("driver version: {}", host.driver)),
        "{text}"
    );
    assert!(text.contains(&format!(" → {LIBS}/libcuda.so.1")), "{text}");
    assert!(text.contains("/usr/bin/nvidia-smi"), "{text}");
    for (_, minor) in &host.gpus {
        assert!(text.contains(&format!("→ /dev/nvidia{minor}")), "{text}");
    }
    let libs = host.report["libraries"].as_array().unwrap();
    assert!(libs
        .iter()
        .all(|l| Path::new(l["host"].as_str().unwrap()).is_file()));
}
