//! Process plumbing shared by the supervisor, the payload and the PID-namespace init:
//! signal masks, waiting, the child→parent failure report, and exit-status conventions.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Signals relayed to the command. The rest keep their default action.
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGQUIT,
    Signal::SIGALRM,
];

/// The forwarded signals plus SIGCHLD: what a supervising process waits for.
pub fn supervised_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    set
}

/// Blocks the supervised signals so that they queue until `sigwaitinfo` takes them.
pub fn block_supervised() -> nix::Result<()> {
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&supervised_set()), None)
}

/// Gives the command the signal state rsing was started with: the blocked mask emptied and
/// SIGPIPE back to its default.
pub fn reset_signals() {
    // Only SIGPIPE: Rust's runtime ignores it, and an ignored disposition survives execve.
    // Dispositions rsing itself inherited stay as they were (a command under `nohup rsing …`
    // must keep ignoring SIGHUP), as std::process::Command does.
    // SAFETY: restoring the default disposition is async-signal-safe and has no Rust state.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

/// Exit status as a shell reports it: the code, or 128 + the signal number.
pub fn status_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Waits for supervised signals, forwarding user-sent ones to `child`, reaping every child
/// (the caller is a subreaper or a PID-namespace init), until none is left. Returns the exit
/// status of `child`.
pub fn supervise(child: Pid) -> i32 {
    let set = supervised_set();
    let mut child_code: Option<i32> = None;
    loop {
        // Reap whatever has exited.
        loop {
            match waitpid(
                None::<Pid>,
                Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
            ) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(status) => {
                    if status.pid() == Some(child) {
                        child_code = status_code(status).or(child_code);
                    }
                }
                Err(nix::errno::Errno::ECHILD) => return child_code.unwrap_or(255),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return child_code.unwrap_or(255),
            }
        }
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset and `info` a valid out-pointer.
        let sig = unsafe { libc::sigwaitinfo(set.as_ref(), &mut info) };
        if sig < 0 || sig == libc::SIGCHLD {
            continue;
        }
        // Terminal-generated signals (SI_KERNEL) already reached the whole foreground process
        // group, the command included: relaying them would deliver them twice.
        let from_user = info.si_code <= 0;
        if from_user && child_code.is_none() {
            // SAFETY: plain kill(2) on our own child.
            unsafe {
                libc::kill(child.as_raw(), sig);
            }
        }
    }
}

/// The write end of the failure report pipe, held by the payload until exec.
pub struct Reporter(pub OwnedFd);

impl Reporter {
    /// Reports a failure (one line) and ends the process with `code`.
    pub fn fail(&self, code: i32, message: &str) -> ! {
        let text = format!("{code} {message}");
        // SAFETY: writing a buffer to an fd we own; errors are irrelevant, we exit next.
        unsafe {
            libc::write(self.0.as_raw_fd(), text.as_ptr().cast(), text.len());
            libc::_exit(code);
        }
    }
}

/// Reads the payload's report until EOF (which exec or exit causes): `None` when the command
/// started, or the (exit code, message) of the failure.
pub fn read_report(fd: OwnedFd) -> Option<(i32, String)> {
    let mut file = std::fs::File::from(fd);
    let mut text = String::new();
    loop {
        match file.read_to_string(&mut text) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if text.is_empty() {
        return None;
    }
    let (code, message) = text.split_once(' ').unwrap_or(("255", text.as_str()));
    Some((code.parse().unwrap_or(255), message.trim().to_string()))
}
