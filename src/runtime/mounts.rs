//! The only code that calls mount(2) to build a container: the interpreter of [`MountOp`]s.
//!
//! Runs in the payload after the first pivot_root: the host is reachable under `/oldroot`,
//! the container root is being assembled at `/newroot`.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sys::statvfs::{statvfs, FsFlags};

use super::plan::MountOp;

pub const OLDROOT: &str = "/oldroot";
pub const NEWROOT: &str = "/newroot";
/// Where rsing's generated files live in its tmpfs.
pub const FILES: &str = "/files";

/// A failed step, with the paths involved.
pub type StepResult = Result<(), String>;

fn in_newroot(dst: &[u8]) -> std::path::PathBuf {
    let mut p = NEWROOT.as_bytes().to_vec();
    p.extend_from_slice(dst);
    std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&p))
}

fn in_oldroot(src: &Path) -> std::path::PathBuf {
    Path::new(OLDROOT).join(src.strip_prefix("/").unwrap_or(src))
}

/// Applies one op.
pub fn apply(op: &MountOp) -> StepResult {
    match op {
        MountOp::Bind { src, dst, readonly } => bind(
            &in_oldroot(src),
            &in_newroot(dst),
            *readonly,
            &src.to_string_lossy(),
        ),
        MountOp::Tmpfs { dst, mode } => tmpfs(&in_newroot(dst), *mode),
        MountOp::Proc { dst } => {
            let target = in_newroot(dst);
            mount(
                Some("proc"),
                &target,
                Some("proc"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(|e| format!("cannot mount proc on {}: {e}", target.display()))
        }
        MountOp::MinimalDev { dst } => minimal_dev(&in_newroot(dst)),
        MountOp::BindNew { src, dst, readonly } => {
            let (src_host, target) = (in_oldroot(src), in_newroot(dst));
            make_mount_point(&target, src_host.is_dir())?;
            bind(&src_host, &target, *readonly, &src.to_string_lossy())
        }
        // Not remounted read-only: they are this container's private copies.
        MountOp::Generated { name, dst } => bind(
            &Path::new(FILES).join(name),
            &in_newroot(dst),
            false,
            &format!("generated {name}"),
        ),
    }
}

/// Creates `target` (and its parents) unless it exists: an empty file, or a directory.
pub(super) fn make_mount_point(target: &Path, dir: bool) -> StepResult {
    if target.symlink_metadata().is_ok() {
        return Ok(());
    }
    let made = match (dir, target.parent()) {
        (true, _) => std::fs::create_dir_all(target),
        (false, Some(parent)) => {
            std::fs::create_dir_all(parent).and_then(|_| std::fs::write(target, b""))
        }
        (false, None) => Ok(()),
    };
    made.map_err(|e| format!("cannot create mount point {}: {e}", display_dst(target)))
}

/// Recursive bind; read-only by a second remount that keeps the flags the kernel locks for
/// mounts inherited from a more privileged namespace (nosuid, nodev, noexec, atime).
pub fn bind(src: &Path, dst: &Path, readonly: bool, what: &str) -> StepResult {
    mount(
        Some(src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("cannot bind {what} onto {}: {e}", display_dst(dst)))?;
    if readonly {
        remount_readonly(dst)
            .map_err(|e| format!("cannot make {} read-only: {e}", display_dst(dst)))?;
    }
    Ok(())
}

/// Makes the mount at `dst` read-only, preserving its locked flags.
pub fn remount_readonly(dst: &Path) -> nix::Result<()> {
    let mut flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    let current = statvfs(dst)?.flags();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        // ST_RELATIME (4096) by value: nix defines it for glibc only, not musl.
        (FsFlags::from_bits_retain(4096), MsFlags::MS_RELATIME),
    ] {
        if current.contains(fs) {
            flags |= ms;
        }
    }
    mount(None::<&str>, dst, None::<&str>, flags, None::<&str>)
}

pub fn tmpfs(dst: &Path, mode: u32) -> StepResult {
    mount(
        Some("tmpfs"),
        dst,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode={mode:o}").as_str()),
    )
    .map_err(|e| format!("cannot mount tmpfs on {}: {e}", display_dst(dst)))
}

/// A tmpfs of at most `mib` MiB (the `--writable-tmpfs` upper layer).
pub fn tmpfs_sized(dst: &Path, mode: u32, mib: u64) -> StepResult {
    mount(
        Some("tmpfs"),
        dst,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("mode={mode:o},size={mib}m").as_str()),
    )
    .map_err(|e| format!("cannot mount tmpfs on {}: {e}", display_dst(dst)))
}

/// `--contain`'s /dev: only the nodes every program expects, a private devpts and /dev/shm.
fn minimal_dev(dev: &Path) -> StepResult {
    tmpfs(dev, 0o755)?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let host = Path::new(OLDROOT).join("dev").join(node);
        if !host.exists() {
            continue;
        }
        let target = dev.join(node);
        std::fs::write(&target, b"")
            .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
        bind(&host, &target, false, &format!("/dev/{node}"))?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ] {
        std::os::unix::fs::symlink(to, dev.join(link))
            .map_err(|e| format!("cannot create /dev/{link}: {e}"))?;
    }
    for dir in ["pts", "shm"] {
        std::fs::create_dir(dev.join(dir)).map_err(|e| format!("cannot create /dev/{dir}: {e}"))?;
    }
    mount(
        Some("devpts"),
        &dev.join("pts"),
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    )
    .map_err(|e| format!("cannot mount devpts: {e}"))?;
    tmpfs(&dev.join("shm"), 0o1777)
}

fn display_dst(dst: &Path) -> String {
    let s = dst.to_string_lossy();
    s.strip_prefix(NEWROOT)
        .map(str::to_string)
        .unwrap_or_else(|| s.into_owned())
}

/// Mounts an overlay of `lower` layers (first is topmost): the stub layer over the image or one
/// of its directories, with `--writable-tmpfs` also a tmpfs upper layer. Read-only without one.
/// `userxattr` keeps overlayfs's own marks in `user.overlay.*` (persistent overlays).
pub fn overlay(
    lower: &[String],
    upper: Option<(&str, &str)>,
    target: &str,
    userxattr: bool,
) -> StepResult {
    let mut data = format!("lowerdir={}", lower.join(":"));
    if let Some((up, work)) = upper {
        data.push_str(&format!(",upperdir={up},workdir={work}"));
    }
    if userxattr {
        data.push_str(",userxattr");
    }
    let flags = if upper.is_some() {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    mount(
        Some("overlay"),
        target,
        Some("overlay"),
        flags | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|e| format!("cannot mount the container root (overlay {data}): {e}"))
}

/// Converts a path for a raw syscall.
pub fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}
