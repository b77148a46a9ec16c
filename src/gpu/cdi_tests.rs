use super::*;
use crate::gpu::cdi_edits;

const JSON: &str = r#"{
  "cdiVersion": "0.5.0",
  "kind": "vendor.example/gpu",
  "containerEdits": {"env": ["SPEC_WIDE=1"], "deviceNodes": [{"path": "/dev/null"}]},
  "devices": [
    {"name": "0", "containerEdits": {"env": ["WHICH=0"],
      "mounts": [{"hostPath": "/etc/hostname", "containerPath": "/opt/x/hostname",
                  "options": ["ro", "nosuid", "nodev", "bind"]}]}},
    {"name": "1", "containerEdits": {"env": ["WHICH=1"],
      "deviceNodes": [{"path": "/dev/gpu1", "hostPath": "/dev/zero", "type": "c"}]}}
  ]
}"#;

const YAML: &str = r#"
cdiVersion: 0.6.0
kind: vendor.example/gpu
devices:
- name: all
  containerEdits:
    env:
    - FROM_YAML=yes
    mounts:
    - hostPath: /etc/hostname
      containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15
      options: [ro, nosuid, nodev, bind]
containerEdits:
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, create-symlinks, --link, libcuda.so.550.54.15::/usr/lib/x86_64-linux-gnu/libcuda.so.1]
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, update-ldcache, --folder, /usr/lib/x86_64-linux-gnu]
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, enable-cuda-compat, --host-driver-version=550.54.15]
  - hookName: createRuntime
    path: /bin/true
  - hookName: startContainer
    path: /usr/bin/other-hook
"#;

fn p(s: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(s)
}

#[test]
fn parses_json_and_yaml() {
    let spec = parse(JSON, false, &p("a.json")).unwrap();
    assert_eq!(spec.kind, "vendor.example/gpu");
    assert_eq!(spec.devices.len(), 2);
    assert_eq!(spec.devices[0].container_edits.mounts[0].options[0], "ro");
    assert_eq!(
        spec.devices[1].container_edits.device_nodes[0]
            .kind
            .as_deref(),
        Some("c")
    );
    let spec = parse(YAML, true, &p("b.yaml")).unwrap();
    assert_eq!(spec.devices[0].name, "all");
    assert_eq!(spec.container_edits.hooks.len(), 5);
}

#[test]
fn rejects_what_a_consumer_must_reject() {
    let cases = [
        (
            r#"{"cdiVersion":"0.2.0","kind":"a/b","devices":[{"name":"x"}]}"#,
            "older",
        ),
        (
            r#"{"cdiVersion":"x","kind":"a/b","devices":[{"name":"x"}]}"#,
            "not a version",
        ),
        (
            r#"{"cdiVersion":"0.3.0","kind":"ab","devices":[{"name":"x"}]}"#,
            "vendor/class",
        ),
        (
            r#"{"cdiVersion":"0.3.0","kind":"a/b","devices":[]}"#,
            "no devices",
        ),
        (
            r#"{"cdiVersion":"0.3.0","kind":"a/b","devices":[{"name":"a b"}]}"#,
            "invalid device",
        ),
        (r#"{"kind":"a/b"}"#, "cdiVersion"),
    ];
    for (text, want) in cases {
        let err = parse(text, false, &p("/etc/cdi/x.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(want) && err.contains("/etc/cdi/x.json"),
            "{err}"
        );
    }
    assert!(parse("{{{", true, &p("y.yaml")).is_err());
}

fn registry(specs: &[(usize, &str, &str, bool)]) -> Registry {
    Registry {
        specs: specs
            .iter()
            .map(|(prio, name, text, yaml)| (*prio, p(name), parse(text, *yaml, &p(name)).unwrap()))
            .collect(),
    }
}

#[test]
fn resolves_requests() {
    let reg = registry(&[(0, "a.json", JSON, false)]);
    let got = reg.resolve(&["vendor.example/gpu=1".into()]).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].device_edits.len(), 1);
    assert_eq!(got[0].device_edits[0].env, vec!["WHICH=1"]);
    // No device named "all" in this spec: every device.
    let all = reg.resolve(&["vendor.example/gpu=all".into()]).unwrap();
    assert_eq!(all[0].device_edits.len(), 2);
    for bad in ["vendor.example/gpu=7", "other.example/x=0", "no-equals"] {
        assert!(reg.resolve(&[bad.into()]).is_err(), "{bad}");
    }
    // Same name at the same priority: a conflict; a later directory wins otherwise.
    let twice = registry(&[(0, "a.json", JSON, false), (0, "b.json", JSON, false)]);
    assert!(twice.resolve(&["vendor.example/gpu=0".into()]).is_err());
    let later = registry(&[(0, "a.json", JSON, false), (1, "b.json", JSON, false)]);
    let got = later.resolve(&["vendor.example/gpu=0".into()]).unwrap();
    assert_eq!(got[0].spec, p("b.json"));
}

#[test]
fn applies_edits_and_replaces_nvidia_hooks() {
    let reg = registry(&[(0, "a.json", JSON, false)]);
    let got = reg.resolve(&["vendor.example/gpu=all".into()]).unwrap();
    let applied = cdi_edits::apply(&got).unwrap();
    let env: Vec<String> = applied
        .env
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    assert_eq!(env, vec!["SPEC_WIDE=1", "WHICH=1"]);
    let devices: Vec<&str> = applied
        .devices
        .iter()
        .map(|d| d.container.as_str())
        .collect();
    assert_eq!(devices, vec!["/dev/null", "/dev/gpu1"]);
    assert_eq!(applied.mounts.len(), 1);
    assert!(applied.mounts[0].1, "ro option");

    let reg = registry(&[(0, "n.yaml", YAML, true)]);
    let got = reg.resolve(&["vendor.example/gpu=all".into()]).unwrap();
    let applied = cdi_edits::apply(&got).unwrap();
    let libs: Vec<&str> = applied.libs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(libs, vec!["libcuda.so.550.54.15", "libcuda.so.1"]);
    assert!(applied.libs.iter().all(|(_, h)| h == &p("/etc/hostname")));
    assert_eq!(applied.host_hooks.len(), 1);
    assert_eq!(applied.host_hooks[0].path, "/bin/true");
    assert_eq!(applied.skipped.len(), 2, "{:?}", applied.skipped);
    assert!(applied.skipped.iter().any(|s| s.contains("other-hook")));
    cdi_edits::run_host_hook(&applied.host_hooks[0], "{}").unwrap();
}

#[test]
fn missing_resources_are_errors() {
    let text = r#"{"cdiVersion":"0.3.0","kind":"a/b","devices":[{"name":"x",
        "containerEdits":{"deviceNodes":[{"path":"/dev/nope-rsing"}]}}]}"#;
    let reg = registry(&[(0, "m.json", text, false)]);
    let got = reg.resolve(&["a/b=x".into()]).unwrap();
    let err = cdi_edits::apply(&got).unwrap_err().to_string();
    assert!(err.contains("/dev/nope-rsing"), "{err}");
    let text = r#"{"cdiVersion":"0.3.0","kind":"a/b","devices":[{"name":"x",
        "containerEdits":{"deviceNodes":[{"path":"/dev/null","type":"b"}]}}]}"#;
    let reg = registry(&[(0, "t.json", text, false)]);
    assert!(cdi_edits::apply(&reg.resolve(&["a/b=x".into()]).unwrap()).is_err());
}

#[test]
fn failing_and_slow_hooks_are_errors() {
    let hook = |path: &str, args: &[&str], timeout| Hook {
        hook_name: "createRuntime".into(),
        path: path.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![],
        timeout,
    };
    assert!(cdi_edits::run_host_hook(&hook("/bin/false", &[], None), "{}").is_err());
    let slow = hook("/bin/sleep", &["sleep", "5"], Some(1));
    let err = cdi_edits::run_host_hook(&slow, "{}").unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[test]
fn loads_spec_dirs_and_reports_bad_files() {
    let dir = std::env::temp_dir().join(format!("rsing-cdi-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.json"), JSON).unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        YAML.replace("vendor.example/gpu", "v.example/y"),
    )
    .unwrap();
    std::fs::write(dir.join("bad.json"), "{").unwrap();
    std::fs::write(dir.join("ignored.txt"), "{").unwrap();
    let (reg, errors) = load(&[dir.join("missing"), dir.clone()]);
    assert_eq!(reg.specs.len(), 2);
    assert!(reg.specs.iter().all(|(prio, _, _)| *prio == 1));
    assert_eq!(errors.len(), 1);
    assert!(errors[0].to_string().contains("bad.json"));
    std::fs::remove_dir_all(dir).unwrap();
}
