//! What the container should have mounted, before any destination is resolved: the host's
//! /proc, /sys, /dev, /tmp, the home, the host's resolv.conf/hosts/localtime, site and user
//! binds, devices, the GPU library directory, the cwd when the image lacks it, and the
//! generated passwd and group files.

use std::path::{Path, PathBuf};

use super::{place, MountOp, Options};
use crate::runtime::error::Error;
use crate::runtime::host::HostFacts;
use crate::runtime::identity::{self, Identity};
use crate::tree::{self, NodeKind, Tree};

/// The wanted mounts (in mount order), the generated files, the working directory.
pub(super) struct Wanted {
    pub mounts: Vec<MountOp>,
    pub files: Vec<(String, Vec<u8>)>,
    pub cwd: String,
}

const HOST_ETC_FILES: [&str; 3] = ["/etc/resolv.conf", "/etc/hosts", "/etc/localtime"];

/// The mounts and generated files of a container, in mount order, destinations as given, and
/// the working directory.
/// Where apt reads its configuration parts.
const APT_CONF_DIR: &[u8] = b"/etc/apt/apt.conf.d";

pub(super) fn wanted(
    options: &Options,
    host: &HostFacts,
    tree: &dyn Tree,
    ids: (u32, u32),
    home: &str,
) -> Result<Wanted, Error> {
    let (uid_inside, gid_inside) = ids;

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
        None if options.contain => home.to_string(),
        None => host.cwd.to_string_lossy().into_owned(),
    };
    if options.pwd.is_none() && !options.contain && !place::covered(&wanted, cwd.as_bytes()) {
        let found =
            tree::resolve(tree, cwd.as_bytes()).map_err(|e| place::image_lookup(&cwd, e))?;
        if found.kind.is_none() {
            wanted.push(bind_host(&cwd, &cwd, false));
        }
    }

    let who = Identity {
        name: host.name.clone(),
        uid: uid_inside,
        gid: gid_inside,
        gecos: host.gecos.clone(),
        home: home.to_string(),
        shell: host.shell.clone(),
        group_name: host.group_name.clone(),
    };
    let image_text = |path: &[u8]| -> String {
        tree.read_file(path, 16 << 20)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let mut files = vec![
        (
            "passwd".to_string(),
            identity::passwd(&image_text(b"/etc/passwd"), &who).into_bytes(),
        ),
        (
            "group".to_string(),
            identity::group(&image_text(b"/etc/group"), &who).into_bytes(),
        ),
    ];
    // `--fakeroot` (one id, seccomp fakes): apt drops to `_apt` and checks that it worked,
    // which the fakes cannot make true, so apt stays root, as in a build (`build::stage`).
    if options.fakeroot && matches!(tree.lstat(APT_CONF_DIR), Ok(Some(NodeKind::Dir))) {
        files.push((
            "apt-fakeroot".to_string(),
            b"APT::Sandbox::User \"root\";\n".to_vec(),
        ));
        wanted.push(MountOp::Generated {
            name: "apt-fakeroot".into(),
            dst: [APT_CONF_DIR, b"/00rsing-fakeroot"].concat(),
        });
    }
    wanted.push(MountOp::Generated {
        name: "passwd".into(),
        dst: b"/etc/passwd".to_vec(),
    });
    wanted.push(MountOp::Generated {
        name: "group".into(),
        dst: b"/etc/group".to_vec(),
    });

    resolve_sources(&mut wanted)?;
    Ok(Wanted {
        mounts: wanted,
        files,
        cwd,
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
