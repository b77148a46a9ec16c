//! Entering the user and mount namespaces that make the caller "root enough" to mount.

use nix::sched::{unshare, CloneFlags};

/// Why the namespaces could not be entered. Its own type (not `runtime::Error`): the image
/// server enters them too, and `share` must not depend on the launch's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "cannot create a user namespace: {0} (unprivileged user namespaces must be enabled: \
         sysctl kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0)"
    )]
    Unshare(#[source] nix::errno::Errno),
    #[error("cannot write {path}: {source}")]
    Map {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl From<Error> for super::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Unshare(errno) => super::Error::sys("cannot create a user namespace", errno)
                .hint(
                    "unprivileged user namespaces must be enabled: sysctl \
                     kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0",
                ),
            Error::Map { path, source } => {
                super::Error::sys_on("cannot write", path, super::error::errno_of(&source))
            }
        }
    }
}

/// Unshares user + mount namespaces and maps the caller's ids one-to-one: the caller
/// keeps their uid and gid inside (or appears as 0 with `--fakeroot`). `setgroups` is denied,
/// as the kernel requires before an unprivileged process may write its own gid map.
pub fn enter(uid_inside: u32, gid_inside: u32) -> Result<(), Error> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(Error::Unshare)?;
    write_proc("/proc/self/setgroups", "deny")?;
    write_proc("/proc/self/uid_map", &format!("{uid_inside} {uid} 1"))?;
    write_proc("/proc/self/gid_map", &format!("{gid_inside} {gid} 1"))?;
    Ok(())
}

fn write_proc(path: &'static str, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|source| Error::Map { path, source })
}
