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
    supervise_with(child, &[])
}

/// [`supervise`], where `helpers` (FUSE daemons the container's file systems need) do not
/// count as left over: once `child` and every other child have ended, they are stopped.
pub fn supervise_with(child: Pid, helpers: &[super::helpers::Helper]) -> i32 {
    let set = supervised_set();
    let mut child_code: Option<i32> = None;
    loop {
        // Reap whatever has exited.
        loop {
            match waitpid(
                None::<Pid>,
                Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
            ) {
                Ok(WaitStatus::StillAlive) => {
                    if !helpers.is_empty()
                        && child_code.is_some()
                        && !super::helpers::others_alive(helpers)
                    {
                        super::helpers::stop(helpers);
                        return child_code.unwrap_or(255);
                    }
                    break;
                }
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
        let mut text = format!("{code} {message}");
        // One write of at most PIPE_BUF bytes never blocks on an empty pipe, and the reader
        // may not read before this process exits (Spawn::SharedMemory).
        let mut end = text.len().min(libc::PIPE_BUF);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
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

/// How the payload process is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spawn {
    /// fork(2): the child gets a copy of this process's memory. Needed when this process goes on
    /// working while the child sets up (it serves FUSE to it), or when the child outlives its
    /// set-up without exec (it becomes a PID-namespace supervisor).
    Fork,
    /// clone(2) with CLONE_VM | CLONE_VFORK, as posix_spawn does: the child runs in this
    /// process's memory on a stack of its own, and this process sleeps until the child has
    /// called execve or exited. Nothing is copied, so there is no page-table copy, no
    /// copy-on-write fault on either side, and exec does not tear down a copy of rsing's
    /// address space: about a tenth of a container start on a small VM.
    SharedMemory,
}

/// Stack for a [`Spawn::SharedMemory`] child. Pages are faulted in only when touched.
const CHILD_STACK: usize = 2 << 20;

/// Starts `child` in a new process and returns its pid. `child` is not meant to return: it ends in
/// execve or `_exit`. With [`Spawn::SharedMemory`] it must not touch anything this process
/// still relies on after this call returns except through the heap allocator (whose calls it
/// completes before exec) and file descriptors of its own fd table.
pub fn spawn(how: Spawn, child: &mut dyn FnMut()) -> nix::Result<Pid> {
    match how {
        Spawn::Fork => {
            // SAFETY: the callers fork only while this process is single-threaded.
            match unsafe { nix::unistd::fork() }? {
                nix::unistd::ForkResult::Child => run_child(child),
                nix::unistd::ForkResult::Parent { child } => Ok(child),
            }
        }
        Spawn::SharedMemory => spawn_shared_memory(child),
    }
}

/// Runs the child's code and ends the process, whatever it does: a panic must neither unwind
/// into the parent's frames (a forked copy would run the caller's code twice) nor off the end
/// of a clone stack. The panic hook has already printed the message.
fn run_child(child: &mut dyn FnMut()) -> ! {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child));
    // SAFETY: plain _exit; `child` is not meant to return.
    unsafe { libc::_exit(255) }
}

fn spawn_shared_memory(child: &mut dyn FnMut()) -> nix::Result<Pid> {
    extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the `&mut &mut dyn FnMut` passed below, alive while the parent
        // sleeps in clone (CLONE_VFORK).
        let child = unsafe { &mut *arg.cast::<&mut dyn FnMut()>() };
        run_child(*child)
    }
    let page = 4096;
    // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            CHILD_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(nix::errno::Errno::last());
    }
    // A guard page at the bottom turns an overflow into a fault instead of corrupting the heap.
    // SAFETY: the first page of the mapping made above.
    unsafe { libc::mprotect(stack, page, libc::PROT_NONE) };
    // A stop signal (Ctrl-Z) would stop the child while this process waits in the kernel for
    // it, unstoppable: the shell would never get the terminal back. Blocked here, it stays
    // pending until the child execs (which empties the mask first, `reset_signals`) and until
    // this process unblocks it below, and then stops both, as it would after a fork.
    let mut stops = SigSet::empty();
    for sig in [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU] {
        stops.add(sig);
    }
    let mut old_mask = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&stops), Some(&mut old_mask))?;
    let mut arg: &mut dyn FnMut() = child;
    // SAFETY: the stack top is 16-byte aligned and inside the mapping; with CLONE_VFORK this
    // call returns only after the child has exec'd or exited, so `arg` and the stack outlive
    // every use the child makes of them.
    let pid = unsafe {
        libc::clone(
            trampoline,
            stack.cast::<u8>().add(CHILD_STACK).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut arg as *mut &mut dyn FnMut()).cast(),
        )
    };
    let result = if pid < 0 {
        Err(nix::errno::Errno::last())
    } else {
        Ok(Pid::from_raw(pid))
    };
    // SAFETY: the child no longer runs on this stack (it has exec'd or exited).
    unsafe { libc::munmap(stack, CHILD_STACK) };
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None);
    result
}
