//! rsing's FUSE server: serves a SquashFS archive to the kernel, read-only.
//!
//! The mount is made with mount(2) on an fd of /dev/fuse inside the user namespace (no
//! fusermount helper); the server runs on worker threads of the supervisor process. The image
//! never changes, so the kernel may cache everything for long: entries, attributes, negative
//! lookups, symlink targets, and file pages across opens (FOPEN_KEEP_CACHE).

mod fs;
mod report;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use nix::mount::{mount as mount2, MsFlags};

use crate::squashfs::Archive;

pub use fs::SquashFs;

/// A new connection to the kernel's FUSE device, close-on-exec, for [`mount`] and [`serve`].
/// Open it inside the user namespace that will mount: the kernel refuses a mount whose
/// `/dev/fuse` file was opened under another user namespace.
pub fn open_device() -> std::io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        "/dev/fuse",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?)
}

/// Mounts the FUSE filesystem of `fd` on `target`, read-only. `uid`/`gid` are the ids of the
/// only user allowed in (the caller, as seen inside the user namespace).
pub fn mount(fd: &OwnedFd, target: &Path, fsname: &str, uid: u32, gid: u32) -> nix::Result<()> {
    let data = format!(
        "fd={},rootmode=40000,user_id={uid},group_id={gid},default_permissions",
        fd.as_raw_fd()
    );
    // Commas would split the option string; the source name is informational only.
    let source = fsname.replace(',', "_");
    mount2(
        Some(source.as_str()),
        target,
        Some("fuse.rsing"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_RDONLY,
        Some(data.as_str()),
    )
}

/// Answers the kernel's INIT and serves requests on background threads until the process
/// exits (the connection ends with it). `clone_fd` gives each worker its own queue, but opens
/// `/dev/fuse` by path per worker: only for a server whose root stays the host's (an
/// in-process server's root is moved into the container by the payload's pivot_root).
/// `image` names the image in warnings about reads that fail.
pub fn serve(
    archive: Arc<Archive>,
    fd: OwnedFd,
    clone_fd: bool,
    image: &str,
) -> std::io::Result<()> {
    let fs = SquashFs::new(archive, image);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8);
    let mut config = fuser::Config::default();
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(threads);
    config.clone_fd = clone_fd;
    std::thread::Builder::new()
        .name("rsing-fuse".into())
        .spawn(
            move || match fuser::Session::from_fd(fs, fd, fuser::SessionACL::All, config) {
                Ok(session) => {
                    if let Err(e) = session.run() {
                        tracing::debug!("FUSE session ended: {e}");
                    }
                }
                Err(e) => tracing::error!("FUSE handshake failed: {e}"),
            },
        )?;
    Ok(())
}
