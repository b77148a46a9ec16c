//! The child after the fork: builds the container's root and becomes the command.
//!
//! Runs single-threaded in a copy of the supervisor's memory. Every failure is reported over
//! the report pipe as one line and ends this process; nothing here returns.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::{umount2, MntFlags};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{chdir, fork, pivot_root, ForkResult, Pid};

use super::mounts::{self, NEWROOT, OLDROOT};
use super::overlay;
use super::plan::{RootOp, Stub};
use super::process::{self, Reporter};
use super::{Container, BASE};

/// Exit code for a command that cannot be found, as shells use.
const NOT_FOUND: i32 = 127;
/// Exit code for a command found but not executable.
const NOT_EXECUTABLE: i32 = 126;
/// rsing's own failures.
const SETUP_FAILED: i32 = 255;

/// `gate`: with FUSE helpers (ext3 overlays), a pipe that brings one byte once they have
/// mounted, or EOF if they failed (the supervisor reports that).
pub fn run(
    container: &Container,
    supervisor: Pid,
    fuse_fds: &[RawFd],
    gate: Option<RawFd>,
    report: Reporter,
) -> ! {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    if nix::unistd::getppid() != supervisor {
        // The supervisor died before PDEATHSIG was armed.
        unsafe { libc::_exit(SETUP_FAILED) };
    }
    for fd in fuse_fds {
        // SAFETY: this process's copies of /dev/fuse; only the supervisor serves them.
        unsafe { libc::close(*fd) };
    }
    if let Some(fd) = gate {
        let mut byte = [0u8; 1];
        // SAFETY: reading into a one-byte buffer from this process's copy of the pipe.
        if unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) } != 1 {
            unsafe { libc::_exit(SETUP_FAILED) };
        }
        unsafe { libc::close(fd) };
    }
    let report = if container.plan.pid_ns {
        enter_pid_namespace(report)
    } else {
        report
    };
    tracing::debug!("payload started");
    for op in &container.plan.root {
        if let Err(e) = apply(op) {
            report.fail(SETUP_FAILED, &e);
        }
    }
    tracing::debug!("container root built");
    if container.plan.pid_ns {
        become_init_then_exec(container, report)
    }
    exec(container, &report)
}

/// `--containall`: a new PID namespace. The supervisor cannot create it itself (a process
/// that unshared CLONE_NEWPID can no longer start threads, and it serves FUSE on threads), so
/// this process does, and its child becomes the namespace's PID 1; this process only relays
/// signals to it and passes its exit status on.
fn enter_pid_namespace(report: Reporter) -> Reporter {
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        report.fail(SETUP_FAILED, &format!("cannot create a PID namespace: {e}"));
    }
    fork_supervised(report, "cannot fork into the PID namespace")
}

/// Forks. The child returns (with PDEATHSIG armed) and carries on; this process stays as the
/// child's supervisor, relaying signals and reaping, and exits with the child's status.
fn fork_supervised(report: Reporter, what: &str) -> Reporter {
    // SAFETY: single-threaded process.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // SAFETY: prctl with integer arguments. (getppid() may be 0 here: in a new PID
            // namespace the parent lives outside it.)
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            }
            report
        }
        Ok(ForkResult::Parent { child }) => {
            drop(report);
            let code = process::supervise(child);
            unsafe { libc::_exit(code) }
        }
        Err(e) => report.fail(SETUP_FAILED, &format!("{what}: {e}")),
    }
}

/// Carries out one step of the plan's root part. No nested mount namespace is made: the first
/// pivot_root also moves the supervisor's root into the container, which is fine, because
/// after the fork the supervisor uses no paths (it serves FUSE from an open fd, and reads
/// pipes and signals); copying the mount tree would cost tens of microseconds on every start.
fn apply(op: &RootOp) -> Result<(), String> {
    match op {
        RootOp::EnterBase => {
            let oldroot = format!("{BASE}{OLDROOT}");
            pivot_root(BASE, oldroot.as_str())
                .map_err(|e| format!("pivot_root into {BASE}: {e}"))?;
            chdir("/").map_err(|e| format!("chdir /: {e}"))
        }
        RootOp::BindImageDir(dir) => {
            let src = Path::new(OLDROOT).join(dir.strip_prefix("/").unwrap_or(dir));
            mounts::bind(&src, Path::new("/image"), false, &dir.to_string_lossy())
        }
        RootOp::Overlay {
            lower,
            upper,
            target,
            userxattr,
            kept,
        } => {
            let upper = upper.as_ref().map(|(u, w)| (u.as_str(), w.as_str()));
            mounts::overlay(lower, upper, target, *userxattr).map_err(|e| match kept {
                Some((dir, given)) => overlay::refused(
                    &overlay::Upper {
                        dir: dir.clone(),
                        given: given.clone(),
                        ext3: false,
                        offset: 0,
                    },
                    &e,
                ),
                None => e,
            })
        }
        RootOp::BindImage { readonly } => mounts::bind(
            Path::new("/image"),
            Path::new(NEWROOT),
            *readonly,
            "the image",
        ),
        RootOp::BindMerged { src, readonly } => mounts::bind(
            Path::new(src),
            Path::new(NEWROOT),
            *readonly,
            "the merged root",
        ),
        RootOp::SandboxStub(stub) => sandbox_stub(stub),
        RootOp::Mount(m) => mounts::apply(m),
        RootOp::EnterContainer => {
            chdir(NEWROOT).map_err(|e| format!("chdir {NEWROOT}: {e}"))?;
            pivot_root(".", ".").map_err(|e| format!("pivot_root into the container: {e}"))?;
            // Detaching rsing's tmpfs takes everything mounted below it along, the host's
            // root at /oldroot included: one umount instead of two.
            umount2(".", MntFlags::MNT_DETACH)
                .map_err(|e| format!("cannot detach rsing's tmpfs and the host root: {e}"))
        }
        RootOp::Chdir {
            dir,
            home,
            required,
        } => enter_cwd(dir, home, *required),
    }
}

/// `--writable` on a sandbox directory the caller owns: the mount points it lacks are created
/// in it (an overlay would make their directories read-only).
fn sandbox_stub(stub: &Stub) -> Result<(), String> {
    let mut p = NEWROOT.as_bytes().to_vec();
    p.extend_from_slice(&stub.path);
    mounts::make_mount_point(Path::new(std::ffi::OsStr::from_bytes(&p)), stub.dir)
}

fn enter_cwd(cwd: &str, home: &str, required: bool) -> Result<(), String> {
    if chdir(cwd).is_ok() {
        return Ok(());
    }
    if required {
        return Err(format!(
            "cannot change to working directory {cwd} in the container"
        ));
    }
    // Say where the command really starts: the home directory may be missing too (--contain
    // --no-home), and then it is /.
    let fallback = if cwd != home && chdir(home).is_ok() {
        home
    } else {
        let _ = chdir("/");
        "/"
    };
    eprintln!("rsing: warning: {cwd} is not available in the container, starting in {fallback}");
    Ok(())
}

/// With `--containall` this process is PID 1 of the container: it forks the command and stays
/// as its init, relaying signals and reaping orphans; when the command ends, so does the
/// namespace (the kernel kills whatever is left).
fn become_init_then_exec(c: &Container, report: Reporter) -> ! {
    let report = fork_supervised(report, "cannot fork the container init");
    exec(c, &report)
}

fn exec(c: &Container, report: &Reporter) -> ! {
    let argv = &c.launch.argv;
    let Some(program) = argv.first() else {
        report.fail(SETUP_FAILED, "no command given")
    };
    let path_var = c
        .launch
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(super::environ::DEFAULT_PATH);
    let Some(path) = find_program(program, path_var) else {
        report.fail(
            NOT_FOUND,
            &format!("command not found in the image: {program}"),
        )
    };
    let err = exec_launch(&path, &c.launch);
    let code = if err.raw_os_error() == Some(libc::ENOENT) {
        NOT_FOUND
    } else {
        NOT_EXECUTABLE
    };
    // EIO here is the image failing to read (a corrupt block): name the image.
    let image = match err.raw_os_error() {
        Some(libc::EIO) => format!(" (reading the image {})", c.fsname),
        _ => String::new(),
    };
    report.fail(
        code,
        &format!("cannot execute {program} in the container: {err}{image}"),
    )
}

/// execvp's search, against the container's PATH.
pub(super) fn find_program(program: &str, path_var: &str) -> Option<std::path::PathBuf> {
    if program.contains('/') {
        return Some(program.into());
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            let c = mounts::cstring(p);
            // SAFETY: access(2) on a valid C string.
            p.is_file() && unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
        })
}

/// The last step of every start, here and when joining an instance: no new privileges (a
/// setuid binary in the image gains nothing), default signal state, then execve of `path`
/// with the launch's argv and environment. Returns only if execve failed, with its error.
pub(super) fn exec_launch(path: &Path, launch: &super::environ::Launch) -> std::io::Error {
    let to_c = |s: &str| CString::new(s).unwrap_or_default();
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap_or_default();
    let c_argv: Vec<CString> = launch.argv.iter().map(|a| to_c(a)).collect();
    let c_env: Vec<CString> = launch
        .env
        .iter()
        .map(|(k, v)| to_c(&format!("{k}={v}")))
        .collect();
    let mut argv_ptrs: Vec<*const libc::c_char> = c_argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = c_env.iter().map(|a| a.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    // `--fakeroot` without subid ranges: package managers' identity and chown calls succeed
    // (doing nothing) instead of failing, so `apt-get install` works in an overlay. A filter
    // that cannot be loaded leaves the calls failing as they would anyway.
    if crate::seccomp::is_one_id_root() {
        let _ = crate::seccomp::install_fake_root();
    }
    process::reset_signals();
    // SAFETY: NUL-terminated arrays of valid C strings that outlive the call.
    unsafe {
        libc::execve(c_path.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr());
    }
    std::io::Error::last_os_error()
}
