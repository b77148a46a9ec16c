//! Runs one build step (`%post`, `RUN`, `%test`) as uid 0 inside a user namespace over a
//! writable root directory, with no helper and no subuid ranges:
//!
//! ```text
//! rsing (supervisor)                      step child
//!   socketpair; fork ──────────────────▶  unshare(USER|NS); setgroups deny;
//!                                          uid_map "0 UID 1", gid_map "0 GID 1"
//!                                          rbind host /dev /proc /sys, bind resolv.conf, hosts
//!                                          chroot(root); chdir(cwd)
//!   recvmsg: the listener fd  ◀──────────  seccomp filter (NEW_LISTENER); send its fd
//!   serve chown notifications:             execve(argv)
//!   record (inode → uid, gid), answer 0
//!   until the child exits; waitpid
//! ```
//!
//! The child is forked from a process that may have threads (progress bars): it only makes
//! system calls and small allocations before `execve`, and reports a failure on stderr with
//! exit status 126.

use std::ffi::CString;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};

use super::owners::InodeOwners;
use crate::seccomp;

/// What to run.
#[derive(Debug, Clone)]
pub struct Step<'a> {
    /// The image root (a directory owned by the caller).
    pub root: &'a Path,
    pub argv: Vec<String>,
    /// The whole environment of the step.
    pub env: Vec<(String, String)>,
    /// Working directory inside the root.
    pub cwd: String,
    /// Which ids the step gets ([`super::userns`]).
    pub userns: &'a super::userns::Userns,
    /// The layers `root` is a view of: the step joins their holder's namespaces and runs
    /// in the mount itself ([`super::layers`]).
    pub mounted: Option<&'a super::layers::Mounted>,
}

/// Exit status of a step child that could not start the command.
pub const SETUP_FAILED: i32 = 126;

/// Runs `step`, recording the ownership it asks for into `owners`; returns the exit status
/// (128 + N for a signal).
pub fn run(step: &Step, owners: &mut InodeOwners) -> io::Result<i32> {
    let (parent_sock, child_sock) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    let prepared = Prepared::new(step)?;
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let root_fd = nix::fcntl::open(
        step.root,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(io::Error::from)?;
    // SAFETY: the child only calls async-signal-safe functions and small allocations (see the
    // module comment) before execve or _exit.
    let pid = match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Child => {
            drop(parent_sock);
            let err = child(&prepared, uid, gid, child_sock.as_raw_fd());
            eprintln!("rsing: error: build step: {err}");
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(SETUP_FAILED) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(child_sock);
    let listener = receive_fd(parent_sock.as_raw_fd());
    if let Some(listener) = listener {
        supervise(&listener, pid, &prepared.root, &root_fd, owners);
    }
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Everything the child needs, allocated before the fork.
pub(super) struct Prepared {
    /// The root as the step sees it (a mount point in the layers' namespace when joined).
    pub(super) root: PathBuf,
    /// The user and mount namespaces of the layers' holder, to join instead of making new
    /// ones.
    pub(super) join: Option<(OwnedFd, OwnedFd)>,
    pub(super) argv: Vec<CString>,
    pub(super) env: Vec<CString>,
    cwd: CString,
}

impl Prepared {
    pub(super) fn new(step: &Step) -> io::Result<Prepared> {
        let c = |s: &str| {
            CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
        };
        if step.argv.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
        }
        let join = match step.mounted {
            Some(m) => {
                let ns = |kind: &str| -> io::Result<OwnedFd> {
                    let f = std::fs::File::open(format!("/proc/{}/ns/{kind}", m.holder()))?;
                    Ok(OwnedFd::from(f))
                };
                Some((ns("user")?, ns("mnt")?))
            }
            None => None,
        };
        Ok(Prepared {
            root: step
                .mounted
                .map(|m| m.mountpoint().to_path_buf())
                .unwrap_or_else(|| step.root.to_path_buf()),
            join,
            argv: step.argv.iter().map(|a| c(a)).collect::<io::Result<_>>()?,
            env: step
                .env
                .iter()
                .map(|(k, v)| c(&format!("{k}={v}")))
                .collect::<io::Result<_>>()?,
            cwd: c(&step.cwd)?,
        })
    }
}

/// The child's side: namespaces, mounts, chroot, filter, exec. Returns only on failure.
fn child(p: &Prepared, uid: u32, gid: u32, sock: RawFd) -> String {
    use nix::sched::{unshare, CloneFlags};
    let step = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    if let Some((user, mnt)) = &p.join {
        if let Err(e) = join(user, mnt) {
            return step("cannot enter the namespaces of the build layers", &e);
        }
    } else if let Err(e) = unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS) {
        return step(
            "cannot create a user namespace (unprivileged user namespaces disabled?)",
            &e,
        );
    }
    let maps = if p.join.is_some() {
        &[][..]
    } else {
        &[
            ("/proc/self/setgroups", "deny".to_string()),
            ("/proc/self/uid_map", format!("0 {uid} 1")),
            ("/proc/self/gid_map", format!("0 {gid} 1")),
        ][..]
    };
    for (file, text) in maps {
        if let Err(e) = std::fs::write(file, text) {
            return step(&format!("writing {file}"), &e);
        }
    }
    if let Err(e) = enter_root(p) {
        return e;
    }
    let listener = match seccomp::install() {
        Ok(fd) => fd,
        Err(e) => return step("installing the seccomp filter", &e),
    };
    let fds = [listener.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    if let Err(e) = sendmsg::<()>(
        sock,
        &[io::IoSlice::new(b"L")],
        &cmsg,
        MsgFlags::empty(),
        None,
    ) {
        return step("passing the seccomp listener", &e);
    }
    drop(listener);
    let program = resolve(&p.argv[0], &p.env);
    let e = nix::unistd::execve(&program, &p.argv, &p.env).unwrap_err();
    step(&format!("cannot run {:?}", p.argv[0]), &e)
}

/// Joins the user and mount namespaces of a layers holder, then makes a mount namespace of
/// the step's own (its binds stay out of the holder's).
pub(super) fn join(user: &OwnedFd, mnt: &OwnedFd) -> nix::Result<()> {
    use nix::sched::{setns, unshare, CloneFlags};
    setns(user, CloneFlags::CLONE_NEWUSER)?;
    setns(mnt, CloneFlags::CLONE_NEWNS)?;
    unshare(CloneFlags::CLONE_NEWNS)
}

/// In the caller's own (already unshared) mount namespace: the host's `/dev`, `/proc`, `/sys`, resolv.conf
/// and hosts bound into the root, then `chroot` and `chdir`, stdin from `/dev/null`. Shared by
/// both user-namespace modes ([`super::subid`]).
pub(super) fn enter_root(p: &Prepared) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    let step = |what: &str, e: &dyn std::fmt::Display| format!("{what}: {e}");
    if let Err(e) = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    ) {
        return Err(step("making mounts private", &e));
    }
    for dir in ["dev", "proc", "sys"] {
        let target = p.root.join(dir);
        let _ = std::fs::create_dir(&target);
        if let Err(e) = mount(
            Some(Path::new("/").join(dir).as_path()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        ) {
            return Err(step(&format!("binding /{dir}"), &e));
        }
    }
    for file in ["etc/resolv.conf", "etc/hosts"] {
        let host = Path::new("/").join(file);
        let target = p.root.join(file);
        if !host.exists() || !p.root.join("etc").is_dir() {
            continue;
        }
        // A symlink (systemd's stub resolv.conf) is replaced by a plain file for the step.
        if target
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            continue;
        }
        if !target.exists() && std::fs::write(&target, "").is_err() {
            continue;
        }
        if let Err(e) = mount(
            Some(&host),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            return Err(step(&format!("binding {}", host.display()), &e));
        }
    }
    if let Err(e) = nix::unistd::chroot(&p.root) {
        return Err(step("chroot", &e));
    }
    if let Err(e) = nix::unistd::chdir(p.cwd.as_c_str()) {
        return Err(step(&format!("working directory {:?}", p.cwd), &e));
    }
    if let Ok(null) = std::fs::File::open("/dev/null") {
        // SAFETY: dup2 onto stdin of this process.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
    Ok(())
}

/// `argv[0]` searched on the step's PATH when it has no slash.
pub(super) fn resolve(arg0: &CString, env: &[CString]) -> CString {
    let name = arg0.to_string_lossy();
    if name.contains('/') {
        return arg0.clone();
    }
    let path = env
        .iter()
        .find_map(|e| e.to_str().ok()?.strip_prefix("PATH=").map(str::to_string))
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in path.split(':') {
        let candidate = Path::new(dir).join(&*name);
        if candidate.is_file() {
            if let Ok(c) = CString::new(candidate.to_string_lossy().as_bytes()) {
                return c;
            }
        }
    }
    arg0.clone()
}

fn receive_fd(sock: RawFd) -> Option<OwnedFd> {
    let mut buf = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).ok()?;
    for c in msg.cmsgs().ok()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: the kernel installed these descriptors for us.
            return fds.first().map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) });
        }
    }
    None
}

/// Answers chown notifications until the step child has exited.
fn supervise(
    listener: &OwnedFd,
    pid: nix::unistd::Pid,
    root: &Path,
    root_fd: &OwnedFd,
    owners: &mut InodeOwners,
) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(200u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {
                // Stop when the direct child is gone (daemons it left are not waited for).
                if matches!(
                    nix::sys::wait::waitpid(pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG | nix::sys::wait::WaitPidFlag::WNOWAIT | nix::sys::wait::WaitPidFlag::WEXITED)),
                    Ok(s) if s != nix::sys::wait::WaitStatus::StillAlive
                ) {
                    return;
                }
                continue;
            }
            Err(_) => return,
            Ok(_) => {}
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.contains(PollFlags::POLLIN) {
            if let Ok(n) = seccomp::receive(listener.as_raw_fd()) {
                if let Some((key, uid, gid)) = target_of(&n, root, root_fd) {
                    owners.chown(key, uid, gid);
                }
                let _ = seccomp::succeed(listener.as_raw_fd(), n.id);
            }
        } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            return;
        }
    }
}

/// The inode a chown call names, and the ids it asks for.
fn target_of(n: &seccomp::Notif, root: &Path, root_fd: &OwnedFd) -> Option<((u64, u64), u32, u32)> {
    let a = n.data.args;
    let nr = i64::from(n.data.nr);
    let pid = n.pid;
    let ids = |u: u64, g: u64| (u as u32, g as u32);
    #[cfg(target_arch = "x86_64")]
    {
        if nr == libc::SYS_chown || nr == libc::SYS_lchown {
            let path = read_path(pid, a[0])?;
            let st = stat_in(
                pid,
                root,
                root_fd,
                libc::AT_FDCWD,
                &path,
                nr == libc::SYS_chown,
            )?;
            let (u, g) = ids(a[1], a[2]);
            return Some((st, u, g));
        }
    }
    if nr == libc::SYS_fchown {
        let st = std::fs::metadata(format!("/proc/{pid}/fd/{}", a[0] as i32)).ok()?;
        let (u, g) = ids(a[1], a[2]);
        return Some(((st.dev(), st.ino()), u, g));
    }
    if nr == libc::SYS_fchownat {
        let flags = a[4] as i32;
        let path = read_path(pid, a[1])?;
        let (u, g) = ids(a[2], a[3]);
        if path.is_empty() && flags & libc::AT_EMPTY_PATH != 0 {
            let st = std::fs::metadata(format!("/proc/{pid}/fd/{}", a[0] as i32)).ok()?;
            return Some(((st.dev(), st.ino()), u, g));
        }
        let follow = flags & libc::AT_SYMLINK_NOFOLLOW == 0;
        let st = stat_in(pid, root, root_fd, a[0] as i32, &path, follow)?;
        return Some((st, u, g));
    }
    None
}

/// Reads a NUL-terminated path from the step's memory.
fn read_path(pid: u32, addr: u64) -> Option<String> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut out = Vec::new();
    let mut chunk = [0u8; 256];
    while out.len() < 4096 {
        // Stop at page boundaries so a read never crosses into an unmapped page.
        let at = addr + out.len() as u64;
        let room = (4096 - (at % 4096)).min(chunk.len() as u64) as usize;
        let n = mem.read_at(&mut chunk[..room], at).ok()?;
        if n == 0 {
            return None;
        }
        if let Some(end) = chunk[..n].iter().position(|b| *b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return String::from_utf8(out).ok();
        }
        out.extend_from_slice(&chunk[..n]);
    }
    None
}

/// `(dev, ino)` of `path` as the step process sees it: relative to its working directory or
/// `dirfd`, absolute paths and symlinks resolved inside the root (openat2 RESOLVE_IN_ROOT).
fn stat_in(
    pid: u32,
    root: &Path,
    root_fd: &OwnedFd,
    dirfd: i32,
    path: &str,
    follow: bool,
) -> Option<(u64, u64)> {
    let inside = if path.starts_with('/') {
        path.to_string()
    } else {
        let base = if dirfd == libc::AT_FDCWD {
            format!("/proc/{pid}/cwd")
        } else {
            format!("/proc/{pid}/fd/{dirfd}")
        };
        let host = std::fs::read_link(base).ok()?;
        let rel = host.strip_prefix(root).ok()?;
        format!("/{}/{path}", rel.display())
    };
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_IN_ROOT: u64 = 0x10;
    let mut flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    if !follow {
        flags |= libc::O_NOFOLLOW as u64;
    }
    let how = OpenHow {
        flags,
        mode: 0,
        resolve: RESOLVE_IN_ROOT,
    };
    let c = CString::new(inside.trim_start_matches('/')).ok()?;
    let c = if c.as_bytes().is_empty() {
        CString::new(".").ok()?
    } else {
        c
    };
    // SAFETY: valid pointers for the call; the result is a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_fd.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let st = nix::sys::stat::fstat(&fd).ok()?;
    Some((st.st_dev, st.st_ino))
}
