//! Launching a container: namespaces, mounts, and the supervisor/payload process pair.
//!
//! ```text
//! rsing (P0)                              payload (P1)
//!   plan (pure, errors name host paths)
//!   join the image server's userns, or unshare user+mount and write id maps
//!   tmpfs at BASE: image/ stubs/ files/ ...
//!   attach the server's mount (or mount FUSE) on BASE/image
//!   fork ──────────────────────────────▶  [--containall: new PID ns, fork, child is PID 1]
//!                                           pivot_root(BASE) (same mount namespace)
//!   [in-process: serve FUSE on threads]    image → /newroot, stub overlays, apply mounts
//!   read report pipe until exec            second pivot, chdir, NO_NEW_PRIVS, execve
//!   relay signals, reap, exit with the command's status
//! ```
//! The runtime knows nothing about registries or SIF: `commands` hands it a [`Container`].

mod base;
pub mod binds;
pub mod environ;
pub mod error;
mod helpers;
pub mod host;
pub mod identity;
pub mod join;
pub mod mounts;
pub mod overlay;
mod payload;
pub mod plan;
mod process;
pub mod share;
mod sys;
mod userns;
mod view;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use nix::sched::CloneFlags;

use crate::squashfs::Archive;

/// Where rsing's private tmpfs is mounted in its own mount namespace before the first pivot.
/// It is /tmp, as in bubblewrap: always present, and after pivot_root the host's own /tmp is
/// again visible under /oldroot/tmp for binding.
pub const BASE: &str = "/tmp";

pub use error::Error;

/// The image's root filesystem.
pub enum RootSource {
    /// Served by rsing's FUSE server from a SquashFS archive (a SIF partition or a plain file).
    Squashfs { archive: Arc<Archive> },
    /// A sandbox directory on the host.
    Directory(PathBuf),
    /// The image's shared server (already joined): its mount is attached instead of serving.
    Shared(share::Joined),
}

/// Everything needed to start one container: where the image comes from, the plan (every
/// step of the start), the command with its environment, the overlay layers to serve.
pub struct Container {
    pub root: RootSource,
    /// Shown as the FUSE mount's source (e.g. the image path).
    pub fsname: String,
    pub plan: plan::Plan,
    pub launch: environ::Launch,
    /// `--overlay` layers (empty without the option): the SquashFS ones are served by this
    /// process, the ext3 ones by fuse2fs helpers; their locks are held until rsing exits.
    pub overlays: overlay::Overlays,
}

/// Runs the container to completion and returns the exit status rsing should end with.
pub fn run(container: Container) -> Result<i32, Error> {
    if tracing::enabled!(tracing::Level::DEBUG) {
        // `-vv`: the whole program of this start, one step a line.
        for line in container.plan.to_string().lines() {
            tracing::debug!("plan: {line}");
        }
    }
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("cannot create a pipe", e))?;
    let joined = match &container.root {
        RootSource::Shared(j) => Some(j),
        _ => None,
    };
    tracing::debug!(shared = joined.is_some(), "image server consulted");
    process::block_supervised().map_err(|e| Error::sys("cannot block signals", e))?;
    let plan = &container.plan;
    let dev_fuse = match (&joined, &container.root) {
        (Some(j), _) => {
            nix::sched::setns(&j.userns, CloneFlags::CLONE_NEWUSER)
                .map_err(|e| Error::sys("cannot join the image server's user namespace", e))?;
            nix::sched::unshare(CloneFlags::CLONE_NEWNS)
                .map_err(|e| Error::sys("cannot create a mount namespace", e))?;
            share::lend_namespace(j);
            None
        }
        (None, RootSource::Squashfs { .. }) => {
            userns::enter(plan.uid_inside, plan.gid_inside)?;
            // Opened inside the user namespace: the kernel refuses a FUSE mount whose
            // /dev/fuse file was opened under another user namespace.
            Some(open_dev_fuse()?)
        }
        (None, _) => {
            userns::enter(plan.uid_inside, plan.gid_inside)?;
            None
        }
    };
    // Opened inside the user namespace, like the image's.
    let layer_fuse: Vec<(usize, OwnedFd)> = plan
        .fuse_layers()
        .map(|i| open_dev_fuse().map(|fd| (i, fd)))
        .collect::<Result<_, _>>()?;
    let served = Served {
        image: dev_fuse.as_ref(),
        joined,
        layers: &layer_fuse,
    };
    for op in &plan.base {
        base::apply(op, &container, &served)?;
    }
    tracing::debug!("base prepared");
    // fuse2fs and fuse-overlayfs start after the fork, once the image is served; the payload
    // waits for them on `gate` before it builds the root.
    let needs_helpers = !plan.helpers.is_empty();
    if needs_helpers {
        helpers::prepare_root().map_err(Error::Setup)?;
    }
    let (gate_read, gate_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("cannot create a pipe", e))?;
    let gate = needs_helpers.then(|| gate_read.as_raw_fd());
    let supervisor = nix::unistd::getpid();
    // This process serves FUSE to the payload only for an unshared SquashFS image; a
    // PID-namespace payload stays alive as the namespace's supervisor. Otherwise the payload
    // can borrow this process's memory until it execs.
    let serves_fuse =
        matches!(container.root, RootSource::Squashfs { .. }) || !layer_fuse.is_empty();
    let how = if serves_fuse || plan.pid_ns || needs_helpers {
        process::Spawn::Fork
    } else {
        process::Spawn::SharedMemory
    };
    let (read_fd, write_fd) = (report_read.as_raw_fd(), report_write.as_raw_fd());
    let fuse_fds: Vec<i32> = dev_fuse
        .iter()
        .chain(layer_fuse.iter().map(|(_, fd)| fd))
        .map(|fd| fd.as_raw_fd())
        .collect();
    // The child owns copies of these descriptors in its own fd table (no CLONE_FILES); it ends
    // in exec or _exit, so the OwnedFd made here is never dropped by this process.
    let gate_write_fd = gate_write.as_raw_fd();
    let mut payload = || {
        // SAFETY: the child's copy of the gate's write end: it must see EOF if the supervisor
        // gives up.
        unsafe { libc::close(gate_write_fd) };
        // SAFETY: closing the child's copy of the read end; the parent keeps its own.
        unsafe { libc::close(read_fd) };
        // SAFETY: the child's copy of the write end, owned by the reporter from here on.
        let report = process::Reporter(unsafe { OwnedFd::from_raw_fd(write_fd) });
        payload::run(&container, supervisor, &fuse_fds, gate, report)
    };
    // Before the spawn: with SharedMemory the command runs before this process wakes up, and
    // the orphans of a command that forks and exits at once must come back here.
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    // No other thread exists yet (the FUSE workers start after the fork).
    let child = process::spawn(how, &mut payload).map_err(|e| Error::sys("cannot fork", e))?;
    drop(report_write);
    if let (Some(fd), RootSource::Squashfs { archive }) = (dev_fuse, &container.root) {
        crate::fuse::serve(archive.clone(), fd, false, &container.fsname)
            .map_err(|e| Error::sys("cannot start the FUSE server", error::errno_of(&e)))?;
    }
    let archives: Vec<_> = container
        .overlays
        .squashfs_layers()
        .map(|(_, a)| a.clone())
        .collect();
    for ((_, fd), archive) in layer_fuse.into_iter().zip(archives) {
        crate::fuse::serve(archive, fd, false, &container.fsname)
            .map_err(|e| Error::sys("cannot start the FUSE server", error::errno_of(&e)))?;
    }
    drop(gate_read);
    let helpers = if needs_helpers {
        match helpers::start_for(&container) {
            Ok(started) => {
                let _ = nix::unistd::write(&gate_write, b"1");
                started
            }
            Err(e) => {
                // The payload reads EOF on the gate and exits without a word.
                drop(gate_write);
                process::supervise(child);
                return Err(e);
            }
        }
    } else {
        Vec::new()
    };
    let failure = process::read_report(report_read);
    let code = process::supervise_with(child, &helpers);
    if let Some(j) = &joined {
        j.print_new_warnings();
    }
    match failure {
        Some((code, message)) => Err(Error::Payload { code, message }),
        None => Ok(code),
    }
}

/// The FUSE descriptors and the joined server the base's mount steps use.
struct Served<'a> {
    /// /dev/fuse for rsing's own mount of the image (not joined).
    image: Option<&'a OwnedFd>,
    joined: Option<&'a share::Joined>,
    /// /dev/fuse per SquashFS overlay layer, by layer index.
    layers: &'a [(usize, OwnedFd)],
}

pub(crate) fn open_dev_fuse() -> Result<OwnedFd, Error> {
    crate::fuse::open_device().map_err(|e| {
        Error::sys_on("cannot open", "/dev/fuse", error::errno_of(&e))
            .hint("the fuse module must be loaded and /dev/fuse mode 0666")
    })
}
