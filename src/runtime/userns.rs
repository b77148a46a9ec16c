//! Entering the user and mount namespaces that make the caller "root enough" to mount.

use nix::sched::{unshare, CloneFlags};

use super::error::{errno_of, Error};

/// Unshares user + mount namespaces and maps the caller's ids one-to-one: the caller
/// keeps their uid and gid inside (or appears as 0 with `--fakeroot`). `setgroups` is denied,
/// as the kernel requires before an unprivileged process may write its own gid map.
pub fn enter(uid_inside: u32, gid_inside: u32) -> Result<(), Error> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS).map_err(|e| {
        Error::sys("cannot create a user namespace", e).hint(
            "unprivileged user namespaces must be enabled: sysctl \
             kernel.unprivileged_userns_clone=1, user.max_user_namespaces > 0",
        )
    })?;
    write_proc("/proc/self/setgroups", "deny")?;
    write_proc("/proc/self/uid_map", &format!("{uid_inside} {uid} 1"))?;
    write_proc("/proc/self/gid_map", &format!("{gid_inside} {gid} 1"))?;
    Ok(())
}

fn write_proc(path: &str, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::sys_on("cannot write", path, errno_of(&e)))
}
