//! The launch plan: every mount, stub and generated file, decided before any namespace exists.
//!
//! Building the plan is pure apart from read-only lookups on the host and in the image, so all
//! user errors (a missing bind source, a forbidden path, a file bound onto a directory) are
//! reported while rsing is still an ordinary process, naming the host path at fault.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::binds::{self, BindSpec, FileDir};
use super::host::HostFacts;
use super::identity::{self, Identity};
use super::view::MountView;
use super::Error;
use crate::tree::{self, NodeKind, Tree};

/// One step of building the container's mount tree (interpreted by `mounts::apply`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// Recursive bind of a host path (seen under /oldroot) to a container path.
    Bind {
        src: PathBuf,
        dst: Vec<u8>,
        readonly: bool,
    },
    /// A fresh tmpfs (contained home and /tmp).
    Tmpfs { dst: Vec<u8>, mode: u32 },
    /// A new procfs for the container's own PID namespace.
    Proc { dst: Vec<u8> },
    /// A minimal /dev: a tmpfs with the harmless host nodes, devpts and shm.
    MinimalDev { dst: Vec<u8> },
    /// A file rsing generated (passwd, group), bound over `dst` (a private copy per container).
    Generated { name: String, dst: Vec<u8> },
    /// A bind onto a mount point that is created first (an empty file, or a directory for a
    /// directory source): for destinations inside a tmpfs this plan mounted earlier (device
    /// nodes in `--contain`'s /dev, files of a [`FileDir`]).
    BindNew {
        src: PathBuf,
        dst: Vec<u8>,
        readonly: bool,
    },
}

impl MountOp {
    pub(super) fn dst(&self) -> &[u8] {
        match self {
            MountOp::Bind { dst, .. }
            | MountOp::Tmpfs { dst, .. }
            | MountOp::Proc { dst }
            | MountOp::MinimalDev { dst }
            | MountOp::Generated { dst, .. }
            | MountOp::BindNew { dst, .. } => dst,
        }
    }
}

/// A mount point the image lacks; served from a small tmpfs layer under the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stub {
    pub path: Vec<u8>,
    pub dir: bool,
}

/// How the container should look, as chosen by the user and the site.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub binds: Vec<BindSpec>,
    /// Site default binds (`bind path` in rsing.conf); skipped under `--contain`.
    pub site_binds: Vec<BindSpec>,
    /// `--home SRC[:DST]`.
    pub home: Option<(PathBuf, String)>,
    pub mount_home: bool,
    pub mount_tmp: bool,
    pub contain: bool,
    pub pid_ns: bool,
    pub pwd: Option<String>,
    pub writable_tmpfs: bool,
    pub fakeroot: bool,
    /// Host device nodes for the container (GPUs, CDI). Under `--contain` they are bound into
    /// the minimal /dev; otherwise the host's /dev is there already, and a node must be at the
    /// same path on the host.
    pub devices: Vec<BindSpec>,
    /// Directories of single host files (the GPU libraries), after all other mounts.
    pub file_dirs: Vec<FileDir>,
}

/// Everything the payload needs to build the container and start the command.
#[derive(Debug, Clone)]
pub struct Plan {
    pub ops: Vec<MountOp>,
    pub stubs: Vec<Stub>,
    /// The image directories that hold the stubs (for each stub, its deepest ancestor that the
    /// image has), without any that lie below another. Only these are overlaid with the stub
    /// layer; the rest of the image is served without overlayfs in the way.
    pub stub_anchors: Vec<Vec<u8>>,
    /// Files written into rsing's tmpfs before the mounts: (name, content).
    pub files: Vec<(String, Vec<u8>)>,
    /// Container working directory.
    pub cwd: String,
    /// HOME inside the container.
    pub home: String,
    pub uid_inside: u32,
    pub gid_inside: u32,
}

const HOST_ETC_FILES: [&str; 3] = ["/etc/resolv.conf", "/etc/hosts", "/etc/localtime"];

/// Builds the plan for `host` running the image whose root is `tree`.
pub fn build(options: &Options, host: &HostFacts, tree: &dyn Tree) -> Result<Plan, Error> {
    let (uid_inside, gid_inside) = if options.fakeroot {
        (0, 0)
    } else {
        (host.uid, host.gid)
    };
    let home = match (&options.home, options.fakeroot) {
        (Some((_, dst)), _) => dst.clone(),
        (None, true) => "/root".to_string(),
        (None, false) => host.home.to_string_lossy().into_owned(),
    };

    let mut wanted: Vec<MountOp> = Vec::new();
    wanted.push(if options.pid_ns {
        MountOp::Proc {
            dst: b"/proc".to_vec(),
        }
    } else {
        bind_host("/proc", "/proc", false)
    });
    wanted.push(bind_host("/sys", "/sys", false));
    wanted.push(if options.contain {
        MountOp::MinimalDev {
            dst: b"/dev".to_vec(),
        }
    } else {
        bind_host("/dev", "/dev", false)
    });
    if options.mount_tmp {
        for dir in ["/tmp", "/var/tmp"] {
            if options.contain {
                wanted.push(MountOp::Tmpfs {
                    dst: dir.as_bytes().to_vec(),
                    mode: 0o1777,
                });
            } else if Path::new(dir).is_dir() {
                wanted.push(bind_host(dir, dir, false));
            }
        }
    }
    if options.mount_home {
        match &options.home {
            Some((src, dst)) => {
                check_source(src)?;
                wanted.push(MountOp::Bind {
                    src: src.clone(),
                    dst: dst.as_bytes().to_vec(),
                    readonly: false,
                });
            }
            None if options.contain => {
                wanted.push(MountOp::Tmpfs {
                    dst: home.as_bytes().to_vec(),
                    mode: 0o700,
                });
            }
            None => {
                if host.home.is_dir() {
                    wanted.push(MountOp::Bind {
                        src: host.home.clone(),
                        dst: home.as_bytes().to_vec(),
                        readonly: false,
                    });
                }
            }
        }
    }
    for file in HOST_ETC_FILES {
        if Path::new(file).exists() {
            let src = std::fs::canonicalize(file).map_err(|e| Error::Host {
                what: format!("cannot resolve {file}"),
                source: e,
            })?;
            // Not remounted read-only: root owns these host files, so their own permissions
            // already keep the caller from writing them (and a remount is two more syscalls on
            // every start).
            wanted.push(MountOp::Bind {
                src,
                dst: file.as_bytes().to_vec(),
                readonly: false,
            });
        }
    }
    let site = if options.contain {
        &[][..]
    } else {
        &options.site_binds[..]
    };
    for spec in site.iter().chain(options.binds.iter()) {
        check_source(&spec.src)?;
        wanted.push(MountOp::Bind {
            src: spec.src.clone(),
            dst: spec.dst.as_bytes().to_vec(),
            readonly: spec.readonly,
        });
    }

    devices(options, &mut wanted)?;
    for dir in &options.file_dirs {
        wanted.push(MountOp::Tmpfs {
            dst: dir.dst.as_bytes().to_vec(),
            mode: 0o755,
        });
        for (name, src) in &dir.files {
            check_source(src)?;
            wanted.push(MountOp::BindNew {
                src: src.clone(),
                dst: format!("{}/{name}", dir.dst.trim_end_matches('/')).into_bytes(),
                readonly: true,
            });
        }
    }

    let cwd = match &options.pwd {
        Some(p) => p.clone(),
        None if options.contain => home.clone(),
        None => host.cwd.to_string_lossy().into_owned(),
    };
    if options.pwd.is_none() && !options.contain && !covered(&wanted, cwd.as_bytes()) {
        let found = tree::resolve(tree, cwd.as_bytes()).map_err(|e| image_lookup(&cwd, e))?;
        if found.kind.is_none() {
            wanted.push(bind_host(&cwd, &cwd, false));
        }
    }

    let who = Identity {
        name: host.name.clone(),
        uid: uid_inside,
        gid: gid_inside,
        gecos: host.gecos.clone(),
        home: home.clone(),
        shell: host.shell.clone(),
        group_name: host.group_name.clone(),
    };
    let image_text = |path: &[u8]| -> String {
        tree.read_file(path, 16 << 20)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let files = vec![
        (
            "passwd".to_string(),
            identity::passwd(&image_text(b"/etc/passwd"), &who).into_bytes(),
        ),
        (
            "group".to_string(),
            identity::group(&image_text(b"/etc/group"), &who).into_bytes(),
        ),
    ];
    wanted.push(MountOp::Generated {
        name: "passwd".into(),
        dst: b"/etc/passwd".to_vec(),
    });
    wanted.push(MountOp::Generated {
        name: "group".into(),
        dst: b"/etc/group".to_vec(),
    });

    resolve_sources(&mut wanted)?;
    let (ops, stubs) = place(wanted, tree)?;
    let stub_anchors = anchors(&stubs, tree).map_err(|e| image_lookup("a mount point", e))?;
    Ok(Plan {
        ops,
        stubs,
        stub_anchors,
        files,
        cwd,
        home,
        uid_inside,
        gid_inside,
    })
}

/// Device binds: into `--contain`'s minimal /dev, or, with the host's /dev, nothing to do for a
/// node that is already there and an error for one that is not (rsing cannot add to it).
fn devices(options: &Options, wanted: &mut Vec<MountOp>) -> Result<(), Error> {
    for dev in &options.devices {
        check_source(&dev.src)?;
        let under_dev = Path::new(&dev.dst).starts_with("/dev");
        if !options.contain && under_dev {
            if dev.src == Path::new(&dev.dst) {
                continue;
            }
            return Err(Error::Image(format!(
                "device {} cannot be added as {} to the host's /dev; use --contain (a minimal \
                 /dev that rsing fills)",
                dev.src.display(),
                dev.dst
            )));
        }
        wanted.push(MountOp::BindNew {
            src: dev.src.clone(),
            dst: dev.dst.as_bytes().to_vec(),
            readonly: dev.readonly,
        });
    }
    Ok(())
}

fn bind_host(src: &str, dst: &str, readonly: bool) -> MountOp {
    MountOp::Bind {
        src: PathBuf::from(src),
        dst: dst.as_bytes().to_vec(),
        readonly,
    }
}

fn check_source(src: &Path) -> Result<(), Error> {
    match std::fs::metadata(src) {
        Ok(_) => Ok(()),
        Err(e) => Err(Error::Host {
            what: format!("bind source {}", src.display()),
            source: e,
        }),
    }
}

/// Replaces every bind source by its canonical host path. The payload reaches the host under
/// `/oldroot`, where an absolute symlink on the way (`/home -> /gpfs/home`, common on
/// clusters) would resolve against rsing's staging root instead of the host's: the bind then
/// failed with ENOENT. Only the source is resolved; the destination keeps the name the user
/// gave (`$HOME` inside stays `$HOME`), as in Apptainer.
fn resolve_sources(ops: &mut [MountOp]) -> Result<(), Error> {
    for op in ops.iter_mut() {
        if let MountOp::Bind { src, .. } | MountOp::BindNew { src, .. } = op {
            *src = std::fs::canonicalize(&*src).map_err(|e| Error::Host {
                what: format!("bind source {}", src.display()),
                source: e,
            })?;
        }
    }
    Ok(())
}

fn image_lookup(path: &str, e: std::io::Error) -> Error {
    Error::Image(format!("cannot resolve {path} in the image: {e}"))
}

/// True when `path` lies at or below the destination of an op already planned.
fn covered(ops: &[MountOp], path: &[u8]) -> bool {
    let path = Path::new(OsStr::from_bytes(path));
    ops.iter().any(|op| {
        let dst = Path::new(OsStr::from_bytes(op.dst()));
        binds::is_within(path, dst)
    })
}

/// The minimal set of existing image directories under which all stubs lie.
fn anchors(stubs: &[Stub], tree: &dyn Tree) -> std::io::Result<Vec<Vec<u8>>> {
    let mut found: Vec<Vec<u8>> = Vec::new();
    for stub in stubs {
        let mut dir = parent(&stub.path);
        while tree.lstat(&dir)? != Some(NodeKind::Dir) {
            dir = parent(&dir);
        }
        found.push(dir);
    }
    found.sort();
    found.dedup();
    let all = found.clone();
    found.retain(|a| !all.iter().any(|b| b != a && is_below(a, b)));
    Ok(found)
}

fn parent(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|b| *b == b'/') {
        Some(0) | None => b"/".to_vec(),
        Some(i) => path[..i].to_vec(),
    }
}

/// True when `path` lies strictly below `dir` (component-wise).
fn is_below(path: &[u8], dir: &[u8]) -> bool {
    dir == b"/" || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
}

/// Resolves every destination inside the container root (through the image's symlinks and
/// those of host directories bound earlier, see [`MountView`]) and lists the mount points the
/// image lacks. A destination below an earlier mount lives on that mount, not in the image.
fn place(wanted: Vec<MountOp>, tree: &dyn Tree) -> Result<(Vec<MountOp>, Vec<Stub>), Error> {
    let mut ops: Vec<MountOp> = Vec::with_capacity(wanted.len());
    let mut stubs: Vec<Stub> = Vec::new();
    for mut op in wanted {
        let dst = String::from_utf8_lossy(op.dst()).into_owned();
        let view = MountView {
            ops: &ops,
            image: tree,
        };
        let resolved = tree::resolve(&view, op.dst()).map_err(|e| image_lookup(&dst, e))?;
        let nested = covered(&ops, &resolved.path);
        let src_is_dir = match &op {
            MountOp::Bind { src, .. } | MountOp::BindNew { src, .. } => src.is_dir(),
            MountOp::Generated { .. } => false,
            _ => true,
        };
        if nested {
            let creates = matches!(op, MountOp::BindNew { .. });
            if resolved.kind.is_none() && !creates {
                if let Some((src, at)) = view.host_bind_over(&resolved.path) {
                    let what = match &op {
                        MountOp::Generated { name, .. } => format!("generated /etc/{name}"),
                        MountOp::Bind { src, .. } => format!("bind of {}", src.display()),
                        _ => "mount".to_string(),
                    };
                    return Err(Error::Image(format!(
                        "cannot place the {what} at {dst}: {} lies inside the bind of {} at {}, \
                         which has no such file or directory",
                        String::from_utf8_lossy(&resolved.path),
                        src.display(),
                        String::from_utf8_lossy(at)
                    )));
                }
            }
            set_dst(&mut op, resolved.path);
        } else {
            let found = resolved;
            match (found.kind, src_is_dir) {
                (None, dir) if !stubs.iter().any(|s| s.path == found.path) => {
                    stubs.push(Stub {
                        path: found.path.clone(),
                        dir,
                    });
                }
                (None, _) => {}
                (Some(NodeKind::Dir), false) => {
                    return Err(Error::Image(format!(
                        "cannot bind a file onto {dst}: it is a directory in the image"
                    )))
                }
                (Some(NodeKind::File | NodeKind::Other), true) => {
                    return Err(Error::Image(format!(
                        "cannot bind a directory onto {dst}: it is a file in the image"
                    )))
                }
                _ => {}
            }
            set_dst(&mut op, found.path);
        }
        ops.push(op);
    }
    Ok((ops, stubs))
}

fn set_dst(op: &mut MountOp, new: Vec<u8>) {
    match op {
        MountOp::Bind { dst, .. }
        | MountOp::Tmpfs { dst, .. }
        | MountOp::Proc { dst }
        | MountOp::MinimalDev { dst }
        | MountOp::Generated { dst, .. }
        | MountOp::BindNew { dst, .. } => *dst = new,
    }
}

#[cfg(test)]
mod tests {
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

    fn image(name: &str) -> (PathBuf, DirTree) {
        let dir = std::env::temp_dir().join(format!("rsing-plan-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
        std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        (dir.clone(), DirTree::new(dir))
    }

    #[test]
    fn default_plan_binds_home_and_stubs_missing_targets() {
        let (dir, tree) = image("default");
        let home = std::env::temp_dir();
        let opts = Options {
            mount_home: true,
            mount_tmp: true,
            ..Default::default()
        };
        let plan = build(&opts, &host(&home, Path::new("/usr/bin")), &tree).unwrap();
        assert!(plan.ops.iter().any(
            |op| matches!(op, MountOp::Bind { dst, .. } if dst == home.to_str().unwrap().as_bytes())
        ));
        // /usr/bin exists in the image: the cwd is not bound over it.
        assert!(!plan
            .ops
            .iter()
            .any(|op| matches!(op, MountOp::Bind { dst, .. } if dst == b"/usr/bin")));
        assert!(plan.stubs.iter().any(|s| s.path == b"/proc" && s.dir));
        // /proc is missing at the top of the image: the whole root needs the stub layer.
        assert_eq!(plan.stub_anchors, vec![b"/".to_vec()]);
        let passwd = String::from_utf8(plan.files[0].1.clone()).unwrap();
        assert!(passwd.contains("alice:x:1000:1000"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn anchors_are_the_deepest_existing_directories() {
        let (dir, tree) = image("anchors");
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
        let (dir, tree) = image("missing");
        let opts = Options {
            binds: vec![BindSpec {
                src: "/no/such/dir".into(),
                dst: "/x".into(),
                readonly: false,
            }],
            ..Default::default()
        };
        let err = build(&opts, &host(Path::new("/"), Path::new("/")), &tree).unwrap_err();
        assert!(err.to_string().contains("/no/such/dir"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
