//! The namespace probe: a forked child tries, for real, what every `rsing exec` does first:
//! create a user and mount namespace, mount a tmpfs, open `/dev/fuse` inside the namespace and
//! mount a FUSE filesystem from it, and mount an overlay (read-only with two lower layers, and
//! writable with an upper layer, as `--writable-tmpfs` does). Everything happens in the child's
//! own namespaces, on its own tmpfs, so nothing is left on the host; the child reports each
//! step's outcome through a pipe and exits.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde::{Deserialize, Serialize};

/// What one step did: `Ok(())` or the error text (with the errno name first, so callers can
/// match on it).
pub type Step = Result<(), String>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// unshare(CLONE_NEWUSER | CLONE_NEWNS).
    pub userns: Step,
    /// setgroups deny, uid_map and gid_map of one id each.
    pub id_maps: Step,
    /// A tmpfs in the new mount namespace (needs CAP_SYS_ADMIN there: AppArmor's userns
    /// restriction takes it away).
    pub tmpfs: Step,
    /// open("/dev/fuse") inside the namespace and mount(2) of a FUSE filesystem on its fd.
    pub fuse_open: Step,
    pub fuse_mount: Step,
    /// Overlay of two lower directories (rsing's stub layer over the image), read-only.
    pub overlay_ro: Step,
    /// Overlay with an upper directory on tmpfs (`--writable-tmpfs`).
    pub overlay_rw: Step,
}

const SKIPPED: &str = "not tried: an earlier step failed";

impl Outcome {
    fn skipped() -> Outcome {
        Outcome::failed(SKIPPED)
    }

    /// Every step failed with `why` (the probe itself could not run or report).
    pub fn failed(why: &str) -> Outcome {
        let s = || Err(why.to_string());
        Outcome {
            userns: s(),
            id_maps: s(),
            tmpfs: s(),
            fuse_open: s(),
            fuse_mount: s(),
            overlay_ro: s(),
            overlay_rw: s(),
        }
    }
}

/// `errno name: description` for a nix error.
fn errno(e: nix::Error) -> String {
    format!("{e:?}: {}", e.desc())
}

/// Runs the probe in a forked child. Must be called while the process has one thread (as
/// `rsing doctor` does): after fork only the calling thread exists.
pub fn run(fuse_path: &Path) -> std::io::Result<Outcome> {
    let (read_end, write_end) = nix::unistd::pipe()?;
    // SAFETY: rsing doctor is single-threaded here; the child only runs the probe and _exits.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            drop(read_end);
            let outcome = probe(fuse_path);
            let mut w = std::fs::File::from(write_end);
            let _ = w.write_all(&serde_json::to_vec(&outcome).unwrap_or_default());
            drop(w);
            // SAFETY: _exit skips the parent's atexit handlers and buffered output.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(write_end);
            let mut text = Vec::new();
            std::fs::File::from(read_end).read_to_end(&mut text)?;
            let status = nix::sys::wait::waitpid(child, None)?;
            serde_json::from_slice(&text).map_err(|e| {
                std::io::Error::other(format!(
                    "the namespace probe died without a report ({status:?}): {e}"
                ))
            })
        }
    }
}

fn probe(fuse_path: &Path) -> Outcome {
    let mut out = Outcome::skipped();
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    out.userns = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(errno);
    if out.userns.is_err() {
        return out;
    }
    out.id_maps = (|| {
        let write = |file: &str, text: String| {
            std::fs::write(format!("/proc/self/{file}"), text)
                .map_err(|e| format!("{}: /proc/self/{file}: {e}", io_errno(&e)))
        };
        write("setgroups", "deny".into())?;
        write("uid_map", format!("{uid} {uid} 1"))?;
        write("gid_map", format!("{gid} {gid} 1"))
    })();
    if out.id_maps.is_err() {
        return out;
    }
    let base = Path::new("/tmp");
    out.tmpfs = mount(
        Some("tmpfs"),
        base,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(errno);
    if out.tmpfs.is_err() {
        return out;
    }
    for d in ["f", "l1", "l2", "m", "u", "w", "m2"] {
        let _ = std::fs::create_dir(base.join(d));
    }
    out.fuse_open = Ok(());
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(fuse_path)
    {
        Err(e) => {
            out.fuse_open = Err(format!("{}: {}: {e}", io_errno(&e), fuse_path.display()));
        }
        Ok(file) => {
            let fd = OwnedFd::from(file);
            // The options and flags of rsing's own FUSE mount (src/fuse/mod.rs; `commands`
            // may not call `fuse` directly, docs/design.md). Nothing reads the device
            // afterwards: the kernel queues its INIT request and the mount exists.
            let data = format!(
                "fd={},rootmode=40000,user_id={uid},group_id={gid},default_permissions",
                fd.as_raw_fd()
            );
            out.fuse_mount = mount(
                Some("rsing-doctor"),
                &base.join("f"),
                Some("fuse.rsing"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
                Some(data.as_str()),
            )
            .map_err(errno);
        }
    }
    out.overlay_ro = mount(
        Some("overlay"),
        &base.join("m"),
        Some("overlay"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        Some("lowerdir=/tmp/l1:/tmp/l2"),
    )
    .map_err(errno);
    out.overlay_rw = mount(
        Some("overlay"),
        &base.join("m2"),
        Some("overlay"),
        MsFlags::MS_NODEV,
        Some("lowerdir=/tmp/l1,upperdir=/tmp/u,workdir=/tmp/w"),
    )
    .map_err(errno);
    out
}

/// The errno name of an I/O error (`EACCES`), for matching, or "error".
pub fn io_errno(e: &std::io::Error) -> String {
    e.raw_os_error()
        .map(|n| format!("{:?}", nix::errno::Errno::from_raw(n)))
        .unwrap_or_else(|| "error".into())
}
