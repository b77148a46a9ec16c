use super::*;

fn config(root: &Path) -> Config {
    Config::for_root(root, LibList::parse(liblist::BUILTIN))
}

#[test]
fn discovers_the_stub_driver_and_skips_other_versions() {
    if !testroot::have_tools() {
        return;
    }
    let root = testroot::build("discover", "new");
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    let smi = root.join("usr/bin/nvidia-smi");
    std::fs::write(&smi, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir_all(root.join("usr/share/nvidia")).unwrap();
    std::fs::write(root.join("usr/share/nvidia/nvoptix.bin"), b"x").unwrap();

    let inv = discover(&config(&root)).unwrap();
    assert_eq!(inv.version, testroot::VERSION);
    let lib = |name: &str| {
        inv.libraries
            .iter()
            .find(|l| l.names.iter().any(|n| n == name))
            .unwrap_or_else(|| panic!("{name} not found in {:#?}", inv.libraries))
    };
    let cuda = lib("libcuda.so.1");
    assert_eq!(
        cuda.host,
        root.join(testroot::LIBDIR).join("libcuda.so.550.54.15")
    );
    assert_eq!(cuda.names.first().map(String::as_str), Some("libcuda.so.1"));
    assert!(cuda.names.iter().any(|n| n == "libcuda.so.550.54.15"));
    lib("libnvidia-ml.so.1");
    for l in &inv.libraries {
        let host = l.host.to_string_lossy();
        assert!(
            !host.contains("470") && !host.contains("libother"),
            "{host}"
        );
    }
    assert_eq!(inv.binaries.len(), 1);
    assert_eq!(inv.binaries[0].container, "/usr/bin/nvidia-smi");
    assert_eq!(inv.binaries[0].host, smi);
    assert_eq!(inv.files.len(), 1);
    assert_eq!(inv.files[0].container, "/usr/share/nvidia/nvoptix.bin");
    // No device nodes in this root (mknod needs root): no GPUs.
    assert!(inv.gpu_devices.is_empty() && inv.gpus.is_empty());
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn version_filter_decides_what_is_injected() {
    if !testroot::have_tools() {
        return;
    }
    let root = testroot::build("versions", "new");
    let bytes = std::fs::read(root.join("etc/ld.so.cache")).unwrap();
    let entries = ldcache::parse(&bytes).unwrap();
    let old = libraries(&entries, &config(&root), "470.1");
    assert!(old.iter().all(|l| l.host.starts_with(root.join("opt/old"))));
    assert_eq!(old.len(), 2, "{old:#?}");
    assert!(libraries(&entries, &config(&root), "999.9").is_empty());
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn no_driver_is_an_error_naming_what_is_missing() {
    let root = std::env::temp_dir().join(format!("rsing-gpu-none-{}", std::process::id()));
    let err = discover(&config(&root)).unwrap_err();
    assert!(err.to_string().contains("ld.so.cache"), "{err}");
    if !testroot::have_tools() {
        return;
    }
    // A cache without libnvidia-ml.
    let root = testroot::build("nonvml", "new");
    for dir in [testroot::LIBDIR, "opt/old"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            if e.file_name().to_string_lossy().starts_with("libnvidia-ml") {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
    testroot::run(
        std::process::Command::new("ldconfig")
            .arg("-r")
            .arg(&root)
            .args(["-C", "/etc/ld.so.cache", "-f", "/etc/ld.so.conf"]),
    );
    let err = discover(&config(&root)).unwrap_err();
    assert!(matches!(err, Error::NoNvml(_)), "{err}");
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn gpus_follow_nvml_and_need_a_node() {
    let node = |n: u32| {
        (
            n,
            HostFile {
                host: format!("/dev/nvidia{n}").into(),
                container: format!("/dev/nvidia{n}"),
            },
        )
    };
    let nvml = vec![
        Gpu {
            index: 0,
            minor: 1,
            uuid: Some("GPU-a".into()),
            name: None,
        },
        Gpu {
            index: 1,
            minor: 5,
            uuid: None,
            name: None,
        },
    ];
    let got = gpus_with_nodes(nvml, &[node(1)]);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].uuid.as_deref(), Some("GPU-a"));
    let got = gpus_with_nodes(Vec::new(), &[node(0), node(3)]);
    assert_eq!(
        got.iter().map(|g| (g.index, g.minor)).collect::<Vec<_>>(),
        vec![(0, 0), (1, 3)]
    );
}
