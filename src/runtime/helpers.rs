//! FUSE helper programs for ext3 overlay images ([`HelperOp`]s of the plan): Debian's
//! `fuse2fs` serves each image (read-write for the writable one), and `fuse-overlayfs`
//! merges the whole root over them. The kernel's overlay refuses a FUSE upper layer (no
//! tmpfile, no RENAME_WHITEOUT), and would misread the `.wh.` whiteouts fuse-overlayfs writes
//! for a user who is not root inside. This is what Apptainer does unprivileged, so images and
//! their contents are interchangeable with it.
//!
//! They run as children of the supervisor inside the container's user and mount namespaces
//! (so they mount with mount(2), no setuid fusermount), started after the fork once the image
//! is served, before the payload builds the root; the supervisor stops them after the command
//! and its orphans are gone, so an image is closed before rsing exits and releases its lock.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::plan::HelperOp;
use super::{Container, Error, BASE};

/// The helpers see a copy of the host's mount tree (`mount --rbind / BASE/hostroot`) as their
/// root, never rsing's tmpfs itself: the payload's two `pivot_root`s move the root of every
/// process whose root is the one being replaced, and a helper moved into the container root
/// it serves would resolve its own paths through itself.
const HOSTROOT: &str = "/tmp/hostroot";
/// Where the helpers mount, in their own view (BASE is /tmp there too).
pub const EXT_DIR: &str = "/tmp/ext";
/// The same mounts as the payload sees them after its first pivot_root into BASE.
pub const EXT_AFTER_PIVOT: &str = "/hostroot/tmp/ext";
/// The `fuse-overlayfs` root's mount point, in `EXT_DIR`.
pub const MERGED: &str = "root";

/// Creates the helpers' mount points and their root: called once rsing's tmpfs and the image
/// and SquashFS layers are mounted, so that the copy of the mount tree includes them.
pub fn prepare_root() -> Result<(), String> {
    debug_assert_eq!(BASE, "/tmp");
    for dir in [HOSTROOT, EXT_DIR] {
        std::fs::create_dir(dir).map_err(|e| format!("cannot create {dir}: {e}"))?;
    }
    nix::mount::mount(
        Some("/"),
        HOSTROOT,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND | nix::mount::MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| format!("cannot bind the host root for the overlay helpers: {e}"))
}

/// A path of the helpers' view, as the supervisor sees it.
fn outside(path: &str) -> PathBuf {
    PathBuf::from(format!("{HOSTROOT}{path}"))
}

/// Starts the plan's helpers in order. On failure, those already started are stopped.
pub fn start_for(c: &Container) -> Result<Vec<Helper>, Error> {
    let mut started = Vec::new();
    let result = start_into(c, &mut started);
    if result.is_err() {
        stop(&started);
    }
    result.map(|_| started)
}

fn start_into(c: &Container, started: &mut Vec<Helper>) -> Result<(), Error> {
    for op in &c.plan.helpers {
        match op {
            HelperOp::Ext3 {
                image,
                offset,
                mount,
                readonly,
                given,
            } => {
                let fuse2fs = tool("fuse2fs", given)?;
                make_mount_point(mount)?;
                // fakeroot: fuse2fs checks no permissions itself (the kernel's
                // default_permissions does); files keep the owner the caller gives them.
                let mut options = if *readonly { "fakeroot,ro" } else { "fakeroot" }.to_string();
                if *offset > 0 {
                    options += &format!(",offset={offset}");
                }
                let args =
                    ["-f", "-o", &options, &image.to_string_lossy(), mount].map(String::from);
                let log = outside(&format!("{mount}.log"));
                let helper = start("fuse2fs", &fuse2fs, &args, &outside(mount), &log)
                    .map_err(|e| Error::Setup(format!("overlay {given}: {e}")))?;
                started.push(helper);
                let needed: &[&str] = if *readonly {
                    &["upper"]
                } else {
                    &["upper", "work"]
                };
                if needed
                    .iter()
                    .any(|d| !outside(&format!("{mount}/{d}")).is_dir())
                {
                    return Err(Error::Setup(format!(
                        "overlay {given}: the image has no {} director{} at its top (rsing \
                         overlay create and apptainer overlay create make them)",
                        needed.join("/ and ") + "/",
                        if needed.len() > 1 { "ies" } else { "y" }
                    )));
                }
            }
            HelperOp::FuseOverlay {
                lower,
                upper,
                mount,
                fsname,
                given,
            } => {
                let program = tool("fuse-overlayfs", given)?;
                make_mount_point(mount)?;
                let lower: Vec<String> = lower.iter().map(|d| escape(d)).collect();
                // noacl: with ACLs on, the kernel asks the merged file system for
                // system.posix_acl_access before an exec, fuse-overlayfs passes the lower
                // layer's EOPNOTSUPP on (rsing's FUSE image has no ACLs), and every exec fails
                // with it. default_permissions: the kernel checks permissions against the
                // merged attributes, as on the kernel overlay. fsname: the image's path in the
                // mount table and on the helper's command line.
                let mut options = format!(
                    "noacl,default_permissions,fsname={},lowerdir={}",
                    escape(fsname),
                    lower.join(":")
                );
                if let Some((upper, work)) = upper {
                    options += &format!(",upperdir={},workdir={}", escape(upper), escape(work));
                }
                let args = ["-f", "-o", &options, mount].map(String::from);
                let log = outside(&format!("{mount}.log"));
                let helper = start("fuse-overlayfs", &program, &args, &outside(mount), &log)
                    .map_err(|e| Error::Setup(format!("overlay {given}: {e}")))?;
                started.push(helper);
            }
        }
    }
    Ok(())
}

/// A helper program, or the one error that names its Debian package.
fn tool(name: &str, given: &str) -> Result<PathBuf, Error> {
    find(name).ok_or_else(|| {
        Error::Setup(format!(
            "overlay {given}: {name} is needed (Debian package {name}), and it is not installed"
        ))
    })
}

fn make_mount_point(mount: &str) -> Result<(), Error> {
    std::fs::create_dir(outside(mount))
        .map_err(|e| Error::Setup(format!("cannot create {mount}: {e}")))
}

/// A path inside a FUSE `-o` option list: libfuse splits options at ',' unless escaped.
fn escape(path: &str) -> String {
    path.replace('\\', "\\\\").replace(',', "\\,")
}

/// FUSE_SUPER_MAGIC.
const FUSE_MAGIC: i64 = 0x6573_5546;
/// How long a helper may take to mount (Apptainer waits 10 s for squashfuse too).
const MOUNT_WAIT: Duration = Duration::from_secs(10);
/// How long a helper may take to exit after SIGTERM before it is killed.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// A running helper.
pub struct Helper {
    pub pid: Pid,
    pub name: &'static str,
}

/// Finds a helper program in PATH or the usual system directories.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Starts `program args…` in the foreground mode of a FUSE daemon and waits until `target`
/// is a FUSE mount. Its stderr goes to `log` (shown in the error if it fails).
pub fn start(
    name: &'static str,
    program: &Path,
    args: &[String],
    target: &Path,
    log: &Path,
) -> Result<Helper, String> {
    start_rooted(name, program, args, target, log, true)
}

/// As [`start`], but in this process's own root (no chroot into the host-root copy): for a
/// helper that a command other than a container launch runs in its own user and mount
/// namespaces (`rsing overlay seal FILE.img`).
pub fn start_here(
    name: &'static str,
    program: &Path,
    args: &[String],
    target: &Path,
    log: &Path,
) -> Result<Helper, String> {
    start_rooted(name, program, args, target, log, false)
}

fn start_rooted(
    name: &'static str,
    program: &Path,
    args: &[String],
    target: &Path,
    log: &Path,
    chroot: bool,
) -> Result<Helper, String> {
    let before = fs_type(target);
    let err_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM, 0, 0, 0);
            // A process group of its own: Ctrl-C (and a job's signal to rsing's group) must
            // not reach the helper, or it unmounts the root under a command that ignores it.
            // It ends by the supervisor's SIGTERM, or the parent-death signal.
            libc::setpgid(0, 0);
            super::process::reset_signals();
            if chroot
                && (libc::chroot(c"/tmp/hostroot".as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0)
            {
                return Err(std::io::Error::last_os_error());
            }
            super::sys::raise_ambient(&KEPT)
        });
    }
    let mut child: Child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let pid = Pid::from_raw(child.id() as i32);
    let started = Instant::now();
    loop {
        if fs_type(target) == Some(FUSE_MAGIC) && before != Some(FUSE_MAGIC) {
            return Ok(Helper { pid, name });
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let first = text
                .lines()
                .filter(|l| !l.contains("unknown argument ignored"))
                .find(|l| !l.trim().is_empty())
                .unwrap_or("no message")
                .to_string();
            return Err(format!("{name} failed ({status}): {first}"));
        }
        if started.elapsed() > MOUNT_WAIT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{name} did not mount within {} s",
                MOUNT_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The capabilities a FUSE daemon needs in the user namespace: to mount (a helper not running
/// as uid 0 there would lose every capability at execve, and libfuse would fall back to the
/// setuid `fusermount`, which cannot work here), and to read image files of any owner. Raised as ambient capabilities, as Apptainer does.
const KEPT: [u32; 6] = [
    21, // CAP_SYS_ADMIN
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    2,  // CAP_DAC_READ_SEARCH
    3,  // CAP_FOWNER
    27, // CAP_MKNOD
];

// f_type's width varies by architecture.
#[allow(clippy::unnecessary_cast)]
fn fs_type(path: &Path) -> Option<i64> {
    nix::sys::statfs::statfs(path)
        .ok()
        .map(|s| s.filesystem_type().0 as i64)
}

/// Stops the helpers, last started first, each with SIGTERM and, after [`STOP_WAIT`], SIGKILL;
/// waits for each so that its file system is closed before the next one goes.
pub fn stop(helpers: &[Helper]) {
    for h in helpers.iter().rev() {
        let _ = kill(h.pid, Signal::SIGTERM);
        let started = Instant::now();
        while let Ok(nix::sys::wait::WaitStatus::StillAlive) =
            nix::sys::wait::waitpid(h.pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG))
        {
            if started.elapsed() > STOP_WAIT {
                tracing::warn!("{} did not stop; killing it", h.name);
                let _ = kill(h.pid, Signal::SIGKILL);
                let _ = nix::sys::wait::waitpid(h.pid, None);
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// True when this process has children other than `helpers` (the command or its orphans,
/// reparented here). Reads `/proc/self/task/*/children`; where the kernel lacks it, assumes
/// none, so the helpers stop when the command itself ends.
pub fn others_alive(helpers: &[Helper]) -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    for task in tasks.flatten() {
        let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
            continue;
        };
        for pid in text
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            if !helpers.iter().any(|h| h.pid.as_raw() == pid) {
                return true;
            }
        }
    }
    false
}

/// Runs `f` on the root directory of the ext3 image `image`, served read-only by `fuse2fs`,
/// outside any container: in a forked child that enters its own user and mount namespaces
/// (the caller's ids mapped one-to-one, so files the caller owns in the image keep their
/// owner) and mounts the image at a private temporary directory. The child's error, if any,
/// comes back as the returned message; nothing stays mounted (the namespace ends with it).
///
/// Used by `rsing overlay seal FILE.img`. A fork, because `unshare(CLONE_NEWUSER)` needs a
/// single-threaded process and leaves the caller's own namespaces untouched.
pub fn in_mounted_image(
    image: &Path,
    f: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    use std::io::{Read, Write};
    let fuse2fs = find("fuse2fs")
        .ok_or("reading an ext3 overlay image needs fuse2fs (Debian package fuse2fs)")?;
    let base = std::env::temp_dir().join(format!("rsing-ext.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let mnt = base.join("mnt");
    std::fs::create_dir_all(&mnt).map_err(|e| format!("cannot create {}: {e}", mnt.display()))?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("cannot create a pipe: {e}"))?;
    // SAFETY: the child only uses this process's memory as a copy, then exits with _exit.
    let result = match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("cannot fork: {e}")),
        Ok(nix::unistd::ForkResult::Child) => {
            drop(read);
            let outcome = (|| -> Result<(), String> {
                let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
                super::userns::enter(uid.as_raw(), gid.as_raw()).map_err(|e| e.to_string())?;
                nix::mount::mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .map_err(|e| format!("cannot make the mounts private: {e}"))?;
                let args = [
                    "-f".to_string(),
                    "-o".to_string(),
                    "fakeroot,ro".to_string(),
                    image.to_string_lossy().into_owned(),
                    mnt.to_string_lossy().into_owned(),
                ];
                let helper = start_here("fuse2fs", &fuse2fs, &args, &mnt, &base.join("log"))?;
                let done = f(&mnt);
                stop(&[helper]);
                done
            })();
            let code = match outcome {
                Ok(()) => 0,
                Err(msg) => {
                    let _ = std::fs::File::from(write).write_all(msg.as_bytes());
                    1
                }
            };
            // SAFETY: ends the forked child without running the parent's exit handlers.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop(write);
            let mut msg = String::new();
            let _ = std::fs::File::from(read).read_to_string(&mut msg);
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
                Ok(status) if msg.is_empty() => Err(format!("the reader ended: {status:?}")),
                Err(e) => Err(format!("cannot wait for the reader: {e}")),
                Ok(_) => Err(msg),
            }
        }
    };
    let _ = std::fs::remove_dir_all(&base);
    result
}
