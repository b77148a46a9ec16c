//! `instance://NAME`: a command joins a running instance instead of starting a container.
//!
//! The instance's PID-namespace init (its PID 1) holds everything the command must share:
//! the user namespace (same ids), the mount namespace (same root, same /tmp) and the PID
//! namespace (its processes visible). This process joins the user and mount namespaces, takes
//! the init's root, joins the PID namespace for its next child and forks; the child becomes the
//! command and this process supervises it (signals relayed, exit status passed on). As
//! `nsenter` does, every namespace file and the root are opened before the first `setns`,
//! while this process can still read the init's /proc entries.

use std::os::fd::OwnedFd;

use nix::sched::{setns, CloneFlags};
use nix::unistd::{fork, ForkResult};

use super::{environ::Launch, process, Error};

/// Runs `launch` inside the namespaces of process `init` (a host PID) with working directory
/// `cwd` (or `home`, or `/`), and returns the command's exit status. The caller must be
/// single-threaded: the kernel refuses to move a threaded process into a user namespace.
pub fn run(init: i32, launch: &Launch, cwd: &str, home: &str) -> Result<i32, Error> {
    let open = |what: &str| -> Result<OwnedFd, Error> {
        let path = format!("/proc/{init}/{what}");
        nix::fcntl::open(
            path.as_str(),
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::Host {
            what: format!("cannot open {path}"),
            source: e.into(),
        })
    };
    let user = open("ns/user")?;
    let mnt = open("ns/mnt")?;
    let pid = open("ns/pid")?;
    let root = open("root")?;
    let join = |fd: &OwnedFd, flag: CloneFlags, what: &str| {
        setns(fd, flag)
            .map_err(|e| Error::sys_on("cannot join the instance's", format!("{what} namespace"), e))
    };
    // Joining our own user namespace again is refused (EINVAL): an instance run without one.
    let own_user = std::fs::read_link("/proc/self/ns/user").ok();
    if own_user != std::fs::read_link(format!("/proc/{init}/ns/user")).ok() {
        join(&user, CloneFlags::CLONE_NEWUSER, "user")?;
    }
    join(&mnt, CloneFlags::CLONE_NEWNS, "mount")?;
    // The init's root, as `nsenter --root`: a mount namespace's own root may lie below it.
    nix::unistd::fchdir(&root)
        .and_then(|_| nix::unistd::chroot("."))
        .map_err(|e| Error::sys("cannot enter the instance's root", e))?;
    join(&pid, CloneFlags::CLONE_NEWPID, "PID")?;
    process::block_supervised().map_err(|e| Error::sys("cannot block signals", e))?;
    // SAFETY: single-threaded (see above); the child only calls async-signal-safe functions
    // and allocation-free libc before execve, or _exit.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => exec(launch, cwd, home),
        Ok(ForkResult::Parent { child }) => Ok(process::supervise(child)),
        Err(e) => Err(Error::sys("cannot fork into the instance", e)),
    }
}

fn exec(launch: &Launch, cwd: &str, home: &str) -> ! {
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    if nix::unistd::chdir(cwd).is_err() && nix::unistd::chdir(home).is_err() {
        let _ = nix::unistd::chdir("/");
    }
    let fail = |code: i32, msg: String| -> ! {
        eprintln!("rsing: error: {msg}");
        // SAFETY: ending the child without running the parent's destructors.
        unsafe { libc::_exit(code) }
    };
    let Some(program) = launch.argv.first() else {
        fail(255, "no command given".into())
    };
    let path_var = launch
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(super::environ::DEFAULT_PATH);
    let Some(path) = super::payload::find_program(program, path_var) else {
        fail(127, format!("command not found in the instance: {program}"))
    };
    let err = super::payload::exec_launch(&path, launch);
    let code = if err.raw_os_error() == Some(libc::ENOENT) {
        127
    } else {
        126
    };
    fail(
        code,
        format!("cannot execute {program} in the instance: {err}"),
    )
}
