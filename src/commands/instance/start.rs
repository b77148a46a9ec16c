//! `instance start` / `instance run`: launch detached, wait until it runs, record it.
//!
//! ```text
//! rsing instance start (foreground)
//!   lock NAME.lock, open NAME.out/.err
//!   fork ─▶ A: setsid, fork ─▶ B: stdin /dev/null, stdout/stderr → logs,
//!   │           exit           sends its PID, then runs the normal launch path (`exec`)
//!   │                          with a PID namespace: B is the supervisor, its grandchild
//!   │                          the namespace's init, whose child runs the start script
//!   wait until B's init exists, then 1 s more: B dead → failed (log tail shown)
//!   write NAME.json atomically, return 0
//! ```
//! The detached launch runs in this process's image (no re-exec): rsing has started no
//! thread yet, so the fork is safe and the launch behaves exactly as `rsing exec` does.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::unistd::{fork, ForkResult};

use super::state::{self, State};
use super::StartArgs;
use crate::commands::exec::{self, Action};
use crate::commands::Global;

/// How long a start may take until the instance's init exists (pulling is done before).
const SETUP_LIMIT: Duration = Duration::from_secs(60);
/// How long the start command must keep running to count as started.
const SETTLE: Duration = Duration::from_millis(1000);

pub fn start(global: &Global, a: StartArgs, runscript: bool) -> anyhow::Result<i32> {
    state::check_name(&a.name)?;
    let dir = state::dir()?;
    create_private_dir(&dir)?;
    let lock_path = state::path(&dir, &a.name, "lock");
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    // Held by the instance's processes (inherited over fork) for as long as they live: a plain
    // flock(2), released when the last descriptor closes (not unlocked by this process's exit).
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "an instance named {} is already running (see 'rsing instance list')",
            a.name
        );
    }
    if let Some(old) = state::load(&dir, &a.name) {
        if old.running() {
            bail!(
                "an instance named {} is already running (pid {})",
                a.name,
                old.pid
            );
        }
    }
    let _ = std::fs::remove_file(state::path(&dir, &a.name, "json"));
    let out = log_file(&dir, &a.name, "out")?;
    let err = log_file(&dir, &a.name, "err")?;
    // The image as the instance records it: canonical, so `instance://` finds the same file
    // from any directory.
    let image = if a.image.contains("://") {
        a.image.clone()
    } else {
        std::fs::canonicalize(&a.image)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| a.image.clone())
    };
    let mut runtime = a.runtime.clone();
    runtime.pid = true;
    let action = if runscript {
        Action::Run(a.args.clone())
    } else {
        Action::Start(a.args.clone())
    };
    let (pid_read, pid_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("cannot create a pipe")?;
    // SAFETY: no thread has been started in this process (see the module comment).
    match unsafe { fork() }.context("cannot fork")? {
        ForkResult::Child => {
            drop(pid_read);
            let _ = nix::unistd::setsid();
            // SAFETY: as above; the intermediate process only exits.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => {}
                _ => unsafe { libc::_exit(0) },
            }
            detach_stdio(&out, &err);
            let me = std::process::id().to_string();
            // Before the container's processes exist, so that they all start inside it.
            let cgroup = super::cgroup::enter(&a.name);
            let _ = nix::unistd::write(&pid_write, me.as_bytes());
            drop(pid_write);
            let code = match exec::run(global, &runtime, &image, action) {
                Ok(code) => code,
                Err(e) => {
                    let line = crate::commands::term::one_line(&format!("{e:#}"));
                    eprintln!("rsing: error: {line}");
                    255
                }
            };
            // The record is ours to remove once the instance has ended.
            if state::load(&dir, &a.name).is_some_and(|s| s.pid == std::process::id() as i32) {
                let _ = std::fs::remove_file(state::path(&dir, &a.name, "json"));
            }
            if let Some(dir) = &cgroup {
                super::cgroup::leave(dir);
            }
            drop(lock);
            std::process::exit(code)
        }
        ForkResult::Parent { child } => {
            drop(pid_write);
            let _ = nix::sys::wait::waitpid(child, None);
            let mut text = String::new();
            File::from(pid_read).read_to_string(&mut text)?;
            let pid: i32 = text
                .trim()
                .parse()
                .with_context(|| format!("instance {} did not start", a.name))?;
            let recorded = wait_started(pid, &a.name, &dir)?;
            let st = State {
                name: a.name.clone(),
                pid,
                pid_start: recorded.0,
                init_pid: recorded.1,
                init_start: recorded.2,
                image,
                started: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                args: a.args.clone(),
                binds: a.runtime.bind.clone(),
                cgroup: own_cgroup(pid, &a.name),
            };
            st.save(&dir)?;
            if !global.quiet {
                eprintln!("rsing: instance {} started (pid {pid})", a.name);
            }
            Ok(0)
        }
    }
}

/// Waits until the supervisor `pid` has a PID-namespace init, then [`SETTLE`] more; returns
/// (supervisor start, init pid, init start), or the failure with the tail of the logs.
fn wait_started(pid: i32, name: &str, dir: &Path) -> anyhow::Result<(u64, i32, u64)> {
    let failed = || {
        let tail = log_tail(dir, name);
        eprint!("{tail}");
        anyhow::anyhow!(
            "instance {name} failed to start: its start command ended at once (log: {})",
            state::path(dir, name, "err").display()
        )
    };
    let Some(pid_start) = state::start_time(pid) else {
        return Err(failed());
    };
    let begun = Instant::now();
    let init = loop {
        if !state::alive(pid, pid_start) {
            return Err(failed());
        }
        if let Some(init) = find_init(pid) {
            break init;
        }
        if begun.elapsed() > SETUP_LIMIT {
            bail!(
                "instance {name} did not start within {}s",
                SETUP_LIMIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let init_start = state::start_time(init).unwrap_or(0);
    std::thread::sleep(SETTLE);
    if !state::alive(pid, pid_start) || !state::alive(init, init_start) {
        return Err(failed());
    }
    Ok((pid_start, init, init_start))
}

/// The cgroup the supervisor `pid` made for instance `name` (see `cgroup::enter`), if any.
fn own_cgroup(pid: i32, name: &str) -> Option<String> {
    let dir = super::cgroup::of(&pid.to_string())?;
    (dir.file_name()? == format!("rsing-instance-{name}").as_str())
        .then(|| dir.to_string_lossy().into_owned())
}

/// The descendant of `supervisor` that is PID 1 of its own PID namespace.
fn find_init(supervisor: i32) -> Option<i32> {
    let mut queue = vec![(supervisor, 0)];
    while let Some((pid, depth)) = queue.pop() {
        if pid != supervisor && is_ns_init(pid) {
            return Some(pid);
        }
        if depth >= 4 {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            queue.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse().ok())
                    .map(|c| (c, depth + 1)),
            );
        }
    }
    None
}

fn is_ns_init(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|ids| {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            ids.len() > 1 && ids.last() == Some(&"1")
        })
        .unwrap_or(false)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

fn log_file(dir: &Path, name: &str, ext: &str) -> anyhow::Result<File> {
    let p = state::path(dir, name, ext);
    OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&p)
        .with_context(|| format!("cannot open log {}", p.display()))
}

/// stdin from /dev/null, stdout and stderr into the logs: nothing ties the instance to the
/// terminal that started it.
fn detach_stdio(out: &File, err: &File) {
    if let Ok(null) = File::open("/dev/null") {
        // SAFETY: dup2 onto the standard descriptors, which this process owns.
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
    // SAFETY: as above.
    unsafe {
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(err.as_raw_fd(), 2);
    }
}

/// The last lines of both logs, for a failed start.
fn log_tail(dir: &Path, name: &str) -> String {
    let mut text = String::new();
    for ext in ["out", "err"] {
        let Ok(mut f) = File::open(state::path(dir, name, ext)) else {
            continue;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = f.seek(SeekFrom::Start(len.saturating_sub(2048)));
        let mut buf = Vec::new();
        let _ = f.read_to_end(&mut buf);
        let s = String::from_utf8_lossy(&buf);
        let lines: Vec<&str> = s.lines().collect();
        for l in &lines[lines.len().saturating_sub(10)..] {
            text.push_str(&format!("{name}.{ext}: {l}\n"));
        }
    }
    text
}
