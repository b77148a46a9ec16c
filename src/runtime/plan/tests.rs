//! Plans for flag combinations, checked as data: no namespaces, no mocks.

use std::path::Path;

use super::place::anchors;
use super::*;
use crate::tree::DirTree;

fn host(home: &Path, cwd: &Path) -> HostFacts {
    HostFacts {
        uid: 1000,
        gid: 1000,
        name: "alice".into(),
        gecos: String::new(),
        shell: "/bin/sh".into(),
        group_name: Some("alice".into()),
        home: home.into(),
        cwd: cwd.into(),
        env: vec![],
    }
}

/// A small image directory: /etc/passwd, /usr/bin, and /proc /sys /dev /tmp unless `bare`.
fn image(name: &str, bare: bool) -> (PathBuf, DirTree) {
    let dir = std::env::temp_dir().join(format!("rsing-plan-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
    if !bare {
        for d in ["proc", "sys", "dev", "tmp", "var/tmp", "root"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    (dir.clone(), DirTree::new(dir))
}

fn plan_for(opts: &Options, tree: &DirTree) -> Plan {
    build(
        opts,
        &host(&std::env::temp_dir(), Path::new("/usr/bin")),
        tree,
        &Overlays::default(),
    )
    .unwrap()
}

fn mounts(plan: &Plan) -> Vec<&MountOp> {
    plan.root
        .iter()
        .filter_map(|op| match op {
            RootOp::Mount(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn defaults() -> Options {
    Options {
        mount_home: true,
        mount_tmp: true,
        tmpfs_size_mib: 64,
        ..Default::default()
    }
}

#[test]
fn default_plan_binds_home_and_stubs_missing_targets() {
    let (dir, tree) = image("default", true);
    let home = std::env::temp_dir();
    let plan = plan_for(&defaults(), &tree);
    assert!(mounts(&plan).iter().any(
        |op| matches!(op, MountOp::Bind { dst, .. } if dst == home.to_str().unwrap().as_bytes())
    ));
    // /usr/bin exists in the image: the cwd is not bound over it.
    assert!(!mounts(&plan)
        .iter()
        .any(|op| matches!(op, MountOp::Bind { dst, .. } if dst == b"/usr/bin")));
    assert!(plan
        .base
        .iter()
        .any(|op| matches!(op, BaseOp::Stub(s) if s.path == b"/proc" && s.dir)));
    // /proc is missing at the top of the image: the whole root needs the stub layer.
    assert!(matches!(
        &plan.root[1],
        RootOp::Overlay { lower, upper: None, target, .. }
            if lower == &["/stubs", "/image"] && target == "/newroot"
    ));
    let passwd = plan.base.iter().find_map(|op| match op {
        BaseOp::File { name, content } if name == "passwd" => Some(content.clone()),
        _ => None,
    });
    assert!(String::from_utf8(passwd.unwrap())
        .unwrap()
        .contains("alice:x:1000:1000"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_plan_is_the_whole_program_in_order() {
    let (dir, tree) = image("order", false);
    let plan = plan_for(&defaults(), &tree);
    // The base: tmpfs first, the image attached last.
    assert_eq!(plan.base.first(), Some(&BaseOp::Tmpfs));
    assert_eq!(plan.base.last(), Some(&BaseOp::AttachImage));
    // The root: first pivot, image, mounts, second pivot, cwd.
    assert!(matches!(plan.root.first(), Some(RootOp::EnterBase)));
    assert!(matches!(plan.root[1], RootOp::BindImage { readonly: true }));
    let n = plan.root.len();
    assert!(matches!(plan.root[n - 2], RootOp::EnterContainer));
    assert!(matches!(
        &plan.root[n - 1],
        RootOp::Chdir { dir, required: false, .. } if dir == "/usr/bin"
    ));
    // Printed for -vv, one line per step.
    let text = plan.to_string();
    assert!(text.contains("base: attach the image at image/"), "{text}");
    assert!(text.contains("root: bind /proc -> /proc"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stubs_below_the_top_overlay_only_their_directory() {
    let (dir, tree) = image("anchor", false);
    // /etc/resolv.conf and /etc/hosts are missing in the image: only /etc gets the stub layer.
    let plan = plan_for(&defaults(), &tree);
    let anchored: Vec<&String> = plan
        .root
        .iter()
        .filter_map(|op| match op {
            RootOp::Overlay { target, .. } => Some(target),
            _ => None,
        })
        .collect();
    if Path::new("/etc/resolv.conf").exists() {
        assert_eq!(anchored, vec!["/newroot/etc"]);
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn writable_tmpfs_gets_a_sized_upper_layer_over_the_whole_root() {
    let (dir, tree) = image("wtmpfs", false);
    let opts = Options {
        writable_tmpfs: true,
        ..defaults()
    };
    let plan = plan_for(&opts, &tree);
    assert!(plan.base.contains(&BaseOp::SizedTmpfs {
        dir: "rw".into(),
        mib: 64
    }));
    assert!(plan.root.iter().any(|op| matches!(op,
        RootOp::Overlay { upper: Some((u, w)), target, .. }
            if u == "/rw/upper" && w == "/rw/work" && target == "/newroot")));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn contain_pid_and_fakeroot() {
    let (dir, tree) = image("contain", false);
    let opts = Options {
        contain: true,
        pid_ns: true,
        fakeroot: true,
        ..defaults()
    };
    let plan = plan_for(&opts, &tree);
    assert!(plan.pid_ns);
    assert_eq!((plan.uid_inside, plan.gid_inside), (0, 0));
    assert_eq!(plan.home, "/root");
    let m = mounts(&plan);
    assert!(m.iter().any(|op| matches!(op, MountOp::Proc { .. })));
    assert!(m.iter().any(|op| matches!(op, MountOp::MinimalDev { .. })));
    assert!(m
        .iter()
        .any(|op| matches!(op, MountOp::Tmpfs { dst, mode: 0o1777 } if dst == b"/tmp")));
    // --contain starts in the (fresh) home.
    assert!(matches!(plan.root.last(), Some(RootOp::Chdir { dir, .. }) if dir == "/root"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_writable_sandbox_is_bound_read_write_and_gets_its_mount_points() {
    let (dir, tree) = image("sandbox", true);
    let opts = Options {
        writable: true,
        image: ImageKind::Directory(dir.clone()),
        pwd: Some("/work".into()),
        ..defaults()
    };
    let plan = plan_for(&opts, &tree);
    assert!(!plan.base.contains(&BaseOp::AttachImage));
    assert!(!plan.base.iter().any(|op| matches!(op, BaseOp::Stub(_))));
    assert!(matches!(&plan.root[1], RootOp::BindImageDir(d) if d == &dir));
    assert!(matches!(
        plan.root[2],
        RootOp::BindImage { readonly: false }
    ));
    assert!(plan
        .root
        .iter()
        .any(|op| matches!(op, RootOp::SandboxStub(s) if s.path == b"/proc")));
    // --pwd: failing to enter it is an error.
    assert!(matches!(
        plan.root.last(),
        Some(RootOp::Chdir { required: true, .. })
    ));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn anchors_are_the_deepest_existing_directories() {
    let (dir, tree) = image("anchors", true);
    let stub = |p: &str| Stub {
        path: p.as_bytes().to_vec(),
        dir: true,
    };
    let stubs = [
        stub("/usr/bin/x/y"),
        stub("/usr/z"),
        stub("/etc/resolv.conf"),
    ];
    let found = anchors(&stubs, &tree).unwrap();
    assert_eq!(found, vec![b"/etc".to_vec(), b"/usr".to_vec()]);
    let found = anchors(&[stub("/usr/bin/x"), stub("/home/a")], &tree).unwrap();
    assert_eq!(found, vec![b"/".to_vec()]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn missing_bind_source_names_the_path() {
    let (dir, tree) = image("missing", true);
    let opts = Options {
        binds: vec![BindSpec {
            src: "/no/such/dir".into(),
            dst: "/x".into(),
            readonly: false,
        }],
        ..Default::default()
    };
    let err = build(
        &opts,
        &host(Path::new("/"), Path::new("/")),
        &tree,
        &Overlays::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("/no/such/dir"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_writable_ext3_image_is_merged_by_helpers_over_the_whole_root() {
    let (dir, tree) = image("ext3", true);
    let mut overlays = Overlays::default();
    overlays.upper = Some(crate::runtime::overlay::Upper {
        dir: "/data/my.img".into(),
        given: "my.img".into(),
        ext3: true,
        offset: 0,
    });
    let plan = build(
        &defaults(),
        &host(&std::env::temp_dir(), Path::new("/usr/bin")),
        &tree,
        &overlays,
    )
    .unwrap();
    assert_eq!(
        plan.helpers,
        vec![
            HelperOp::Ext3 {
                image: "/data/my.img".into(),
                offset: 0,
                mount: "/tmp/ext/upper".into(),
                readonly: false,
                given: "my.img".into(),
            },
            HelperOp::FuseOverlay {
                lower: vec!["/tmp/stubs".into(), "/tmp/image".into()],
                upper: Some(("/tmp/ext/upper/upper".into(), "/tmp/ext/upper/work".into())),
                mount: "/tmp/ext/root".into(),
                fsname: "/data/my.img".into(),
                given: "my.img".into(),
            },
        ]
    );
    // No kernel overlay: the helpers' root is bound read-write, the mounts go on top of it.
    assert!(!plan
        .root
        .iter()
        .any(|op| matches!(op, RootOp::Overlay { .. } | RootOp::BindImage { .. })));
    assert!(plan.root.iter().any(|op| matches!(
        op,
        RootOp::BindMerged { src, readonly: false } if src == "/hostroot/tmp/ext/root"
    )));
    assert!(plan
        .to_string()
        .contains("helper: fuse2fs /data/my.img -> /tmp/ext/upper (rw)"));
    // Without overlays, no helpers.
    assert!(plan_for(&defaults(), &tree).helpers.is_empty());
    std::fs::remove_dir_all(dir).unwrap();
}
