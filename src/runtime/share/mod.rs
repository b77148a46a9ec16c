//! The shared image server: one FUSE mount per user, image and node, shared by every container
//! of that image, and kept alive a few seconds after the last one exits.
//!
//! Why: a FUSE mount starts with a cold page cache, so a runtime that mounts the image afresh
//! for every start reads and decompresses the same blocks (the shell, libc, python) every
//! time. When the server of the image is already running, a start joins its user namespace
//! and receives a clone of its FUSE mount (`open_tree`), so the kernel's page, dentry and
//! attribute caches are warm. This is also how the MPI ranks of one job step on a node share
//! one mount and one user namespace (under Slurm a server serves one job step only: see
//! [`ShareSpec::scoped`]).
//!
//! The parts: this module names a server ([`spec`], [`runtime_dir`]); [`client`] joins or
//! starts one; [`server`] is the `rsing __serve` process; [`protocol`] is what the two say to
//! each other, including the server's arguments ([`ShareSpec`], serialised once).
//!
//! Protocol: the server listens on `<rundir>/<key>.sock` (a private 0700 directory). A client
//! connects, checks that the peer is its own uid, and receives two fds (the server's user
//! namespace and a detached clone of the mount) plus `ok`. It keeps the connection open for as
//! long as its container runs, and once it has its own mount namespace it sends that too
//! (`ns`, [`lend_namespace`]). A client ends when its process has exited (a pidfd), or when
//! it closes the connection where pidfds are missing. The server serves until every client has
//! gone and the linger time has passed, then removes its socket and exits. Starting a server
//! is serialised by a lock file, so that a hundred containers starting at once spawn one
//! server, not a hundred.

mod blocks;
mod client;
mod error;
mod protocol;
mod server;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use client::{attach, join, lend_namespace, Joined};
pub use error::Error;
pub use server::{serve, ServeHooks};

/// How to find or start the server of one image, and everything the server is started with:
/// the client serialises this very struct to `rsing __serve` (see [`protocol::encode_spec`]),
/// so the server's arguments are declared here only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareSpec {
    /// Listed first: `ps` shows which image a server serves.
    #[serde(with = "protocol::os_path")]
    image: PathBuf,
    offset: u64,
    uid_inside: u32,
    gid_inside: u32,
    /// Shown as the FUSE mount's source and in the server's warnings.
    fsname: String,
    /// Seconds the server stays after its last client.
    linger: u64,
    #[serde(with = "protocol::os_path")]
    socket: PathBuf,
}

impl ShareSpec {
    /// The same image's server for one `scope` only (a batch-system job step, see
    /// `commands::exec`): another scope hashes to another socket and lock. Empty: unchanged.
    pub fn scoped(mut self, scope: &str) -> ShareSpec {
        if !scope.is_empty() {
            let mut h = Fnv::new();
            h.write(self.socket.as_os_str().as_encoded_bytes());
            h.write(scope.as_bytes());
            self.socket.set_file_name(format!("{:016x}.sock", h.0));
        }
        self
    }

    /// The lock that serialises starting this server: beside its socket, with the same key.
    fn lock(&self) -> PathBuf {
        self.socket.with_extension("lock")
    }

    /// Where the server writes its warnings (its stderr): beside its socket.
    fn warnings(&self) -> PathBuf {
        warnings_path(&self.socket)
    }
}

/// Where the server of socket `socket` writes its warnings; `socket` may be a bare name
/// (the server reaches its directory through a descriptor).
fn warnings_path(socket: &Path) -> PathBuf {
    socket.with_extension("warnings")
}

/// The per-user directory for sockets and locks: `$XDG_RUNTIME_DIR/rsing` when that is a
/// private directory of ours, else `/tmp/rsing-UID`. Refused (sharing off) when it is not a
/// directory owned by us with mode 0700: another user must not be able to plant a socket.
pub fn runtime_dir(xdg_runtime_dir: Option<&str>) -> Option<PathBuf> {
    let uid = nix::unistd::getuid().as_raw();
    let dir = match xdg_runtime_dir.map(PathBuf::from) {
        Some(x) if private_dir(&x, uid) => x.join("rsing"),
        _ => PathBuf::from(format!("/tmp/rsing-{uid}")),
    };
    if let Err(e) = std::fs::create_dir(&dir) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return None;
        }
    } else {
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    private_dir(&dir, uid).then_some(dir)
}

fn private_dir(dir: &Path, uid: u32) -> bool {
    match std::fs::symlink_metadata(dir) {
        Ok(m) => m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0,
        Err(_) => false,
    }
}

/// The server identity of an image: the same file (device, inode, size, mtime), partition
/// offset and id mapping, and the same rsing and protocol version (a client never meets a
/// server that would misread it).
pub fn spec(
    image: &Path,
    offset: u64,
    uid_inside: u32,
    gid_inside: u32,
    fsname: &str,
    linger: u64,
    rundir: &Path,
) -> Option<ShareSpec> {
    let meta = std::fs::metadata(image).ok()?;
    let mut h = Fnv::new();
    h.write(image.as_os_str().as_encoded_bytes());
    for n in [
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime() as u64,
        meta.mtime_nsec() as u64,
        offset,
        uid_inside as u64,
        gid_inside as u64,
    ] {
        h.write(&n.to_le_bytes());
    }
    h.write(env!("CARGO_PKG_VERSION").as_bytes());
    h.write(&protocol::VERSION.to_le_bytes());
    Some(ShareSpec {
        image: image.to_path_buf(),
        offset,
        uid_inside,
        gid_inside,
        fsname: fsname.to_string(),
        linger,
        socket: rundir.join(format!("{:016x}.sock", h.0)),
    })
}

/// 64-bit FNV-1a: enough to tell images apart in a private directory.
struct Fnv(u64);
impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
        self.0 ^= 0xff;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rundir: &Path) -> ShareSpec {
        let image = std::env::current_exe().unwrap();
        spec(&image, 4096, 1000, 100, "img", 10, rundir).unwrap()
    }

    #[test]
    fn socket_lock_and_warnings_share_one_key() {
        let s = sample(Path::new("/run/x"));
        assert_eq!(s.socket.parent(), Some(Path::new("/run/x")));
        assert_eq!(s.lock(), s.socket.with_extension("lock"));
        assert_eq!(s.warnings(), s.socket.with_extension("warnings"));
    }

    #[test]
    fn a_scope_moves_socket_and_lock_and_no_scope_keeps_them() {
        let s = sample(Path::new("/run/x"));
        assert_eq!(s.clone().scoped(""), s);
        let a = s.clone().scoped("slurm:1.0");
        let b = s.clone().scoped("slurm:1.1");
        assert_ne!(a.socket, s.socket);
        assert_ne!(a.socket, b.socket);
        assert_ne!(a.lock(), s.lock());
        assert_eq!(a.socket.parent(), s.socket.parent());
    }

    #[test]
    fn another_id_map_is_another_server() {
        let image = std::env::current_exe().unwrap();
        let rundir = Path::new("/run/x");
        let user = spec(&image, 0, 1000, 100, "img", 10, rundir).unwrap();
        let fakeroot = spec(&image, 0, 0, 0, "img", 10, rundir).unwrap();
        assert_ne!(user.socket, fakeroot.socket);
        assert!(spec(Path::new("/nonexistent/img"), 0, 0, 0, "img", 10, rundir).is_none());
    }
}
