//! The steps of a start, as data: the plan is the whole program, and the runtime only
//! interprets it (as bubblewrap turns its options into one list of set-up ops).
//!
//! Two lists, because two processes run them: [`BaseOp`]s run in the supervisor, in rsing's
//! own mount namespace before the fork (they need the FUSE descriptors it serves); [`RootOp`]s
//! run in the payload after the fork, from the first pivot into rsing's tmpfs to the working
//! directory of the command.

use std::fmt;
use std::path::PathBuf;

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
    /// nodes in `--contain`'s /dev, files of a [`FileDir`](crate::runtime::binds::FileDir)).
    BindNew {
        src: PathBuf,
        dst: Vec<u8>,
        readonly: bool,
    },
}

impl MountOp {
    pub fn dst(&self) -> &[u8] {
        match self {
            MountOp::Bind { dst, .. }
            | MountOp::Tmpfs { dst, .. }
            | MountOp::Proc { dst }
            | MountOp::MinimalDev { dst }
            | MountOp::Generated { dst, .. }
            | MountOp::BindNew { dst, .. } => dst,
        }
    }

    pub(super) fn set_dst(&mut self, new: Vec<u8>) {
        match self {
            MountOp::Bind { dst, .. }
            | MountOp::Tmpfs { dst, .. }
            | MountOp::Proc { dst }
            | MountOp::MinimalDev { dst }
            | MountOp::Generated { dst, .. }
            | MountOp::BindNew { dst, .. } => *dst = new,
        }
    }
}

/// A mount point the image lacks; served from a small tmpfs layer under the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stub {
    pub path: Vec<u8>,
    pub dir: bool,
}

/// A step of the supervisor before the fork, on rsing's tmpfs at `BASE` (paths relative to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseOp {
    /// rsing's private tmpfs at `BASE`.
    Tmpfs,
    /// A directory in it.
    Dir(String),
    /// A size-limited tmpfs on a directory made before (`--writable-tmpfs`'s upper layer).
    SizedTmpfs { dir: String, mib: u64 },
    /// A generated file in `files/`.
    File { name: String, content: Vec<u8> },
    /// A mount point in `stubs/`.
    Stub(Stub),
    /// The FUSE mount of SquashFS overlay layer `index` on `layers/INDEX`.
    MountLayer { index: usize },
    /// The image on `image/`: the shared server's mount attached, or rsing's own FUSE mount.
    /// (A directory image is bound after the pivot instead: [`RootOp::BindImageDir`].)
    AttachImage,
}

/// A FUSE helper program the supervisor starts after the fork, before the payload builds
/// the root (`runtime::helpers`). Paths are as the helper sees them: it runs in a copy of
/// the host's mount tree, where rsing's tmpfs is `/tmp` and host paths are themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperOp {
    /// `fuse2fs` serving the ext3 image `image` on `mount`.
    Ext3 {
        image: PathBuf,
        /// Where the file system starts in `image` (a SIF's overlay partition), else 0.
        offset: u64,
        mount: String,
        readonly: bool,
        given: String,
    },
    /// `fuse-overlayfs` merging `lower` (topmost first) on `mount`, under `upper` and `work`
    /// when writable (read-only without): the root of a container with an ext3 image in its
    /// stack. `fsname` names the mount (an image path).
    FuseOverlay {
        lower: Vec<String>,
        upper: Option<(String, String)>,
        mount: String,
        fsname: String,
        given: String,
    },
}

/// A step of the payload after the fork.
#[derive(Debug, Clone)]
pub enum RootOp {
    /// pivot_root into rsing's tmpfs; the host stays reachable under /oldroot.
    EnterBase,
    /// A sandbox directory image, bound at /image.
    BindImageDir(PathBuf),
    /// An overlay mount: `lower` layers topmost first, an upper and work directory when
    /// writable; `kept` is the persistent `--overlay` whose upper it is, as (directory, name
    /// given), so that the kernel's refusal can be explained by name.
    Overlay {
        lower: Vec<String>,
        upper: Option<(String, String)>,
        target: String,
        userxattr: bool,
        kept: Option<(PathBuf, String)>,
    },
    /// /image bound at /newroot, read-only unless a writable sandbox.
    BindImage { readonly: bool },
    /// A root merged by a helper ([`HelperOp::FuseOverlay`]), bound at /newroot.
    BindMerged { src: String, readonly: bool },
    /// A missing mount point created inside a `--writable` sandbox.
    SandboxStub(Stub),
    /// One mount of the container's tree.
    Mount(MountOp),
    /// The second pivot into /newroot, detaching rsing's tmpfs and the host root.
    EnterContainer,
    /// The command's working directory: failing is an error when `required` (`--pwd`), else
    /// a warning and a fallback to `home`, then /.
    Chdir {
        dir: String,
        home: String,
        required: bool,
    },
}

fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

impl fmt::Display for MountOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ro = |r: &bool| if *r { " (ro)" } else { "" };
        match self {
            MountOp::Bind { src, dst, readonly } => {
                write!(f, "bind {} -> {}{}", src.display(), show(dst), ro(readonly))
            }
            MountOp::BindNew { src, dst, readonly } => write!(
                f,
                "bind {} -> {} (new mount point){}",
                src.display(),
                show(dst),
                ro(readonly)
            ),
            MountOp::Tmpfs { dst, mode } => write!(f, "tmpfs {} mode {mode:o}", show(dst)),
            MountOp::Proc { dst } => write!(f, "proc {}", show(dst)),
            MountOp::MinimalDev { dst } => write!(f, "minimal dev {}", show(dst)),
            MountOp::Generated { name, dst } => write!(f, "generated {name} -> {}", show(dst)),
        }
    }
}

impl fmt::Display for BaseOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaseOp::Tmpfs => write!(f, "tmpfs (rsing's base)"),
            BaseOp::Dir(d) => write!(f, "mkdir {d}"),
            BaseOp::SizedTmpfs { dir, mib } => write!(f, "tmpfs {dir} size {mib} MiB"),
            BaseOp::File { name, content } => {
                write!(f, "write files/{name} ({} bytes)", content.len())
            }
            BaseOp::Stub(s) => write!(
                f,
                "stub {} {}",
                if s.dir { "dir" } else { "file" },
                show(&s.path)
            ),
            BaseOp::MountLayer { index } => write!(f, "fuse layers/{index}"),
            BaseOp::AttachImage => write!(f, "attach the image at image/"),
        }
    }
}

impl fmt::Display for HelperOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelperOp::Ext3 {
                image,
                mount,
                readonly,
                ..
            } => write!(
                f,
                "fuse2fs {} -> {mount} ({})",
                image.display(),
                if *readonly { "ro" } else { "rw" }
            ),
            HelperOp::FuseOverlay {
                lower,
                upper,
                mount,
                ..
            } => {
                write!(f, "fuse-overlayfs {mount} lower={}", lower.join(":"))?;
                match upper {
                    Some((up, work)) => write!(f, " upper={up} work={work}"),
                    None => write!(f, " (ro)"),
                }
            }
        }
    }
}

impl fmt::Display for RootOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootOp::EnterBase => write!(f, "pivot into the base (host at /oldroot)"),
            RootOp::BindImageDir(d) => write!(f, "bind sandbox {} -> /image", d.display()),
            RootOp::Overlay {
                lower,
                upper,
                target,
                userxattr,
                ..
            } => {
                write!(f, "overlay {target} lower={}", lower.join(":"))?;
                if let Some((up, work)) = upper {
                    write!(f, " upper={up} work={work}")?;
                }
                if *userxattr {
                    write!(f, " userxattr")?;
                }
                Ok(())
            }
            RootOp::BindImage { readonly } => write!(
                f,
                "bind /image -> /newroot{}",
                if *readonly { " (ro)" } else { "" }
            ),
            RootOp::BindMerged { src, readonly } => write!(
                f,
                "bind {src} -> /newroot (merged by a helper){}",
                if *readonly { " (ro)" } else { "" }
            ),
            RootOp::SandboxStub(s) => write!(f, "create {} in the sandbox", show(&s.path)),
            RootOp::Mount(m) => write!(f, "{m}"),
            RootOp::EnterContainer => write!(f, "pivot into /newroot, detach the base"),
            RootOp::Chdir {
                dir,
                home,
                required,
            } => write!(
                f,
                "chdir {dir}{}",
                if *required {
                    String::new()
                } else {
                    format!(" (else {home}, else /)")
                }
            ),
        }
    }
}
