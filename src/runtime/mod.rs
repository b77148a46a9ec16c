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

pub mod binds;
pub mod environ;
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
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sched::CloneFlags;

use crate::squashfs::Archive;

/// Where rsing's private tmpfs is mounted in its own mount namespace before the first pivot.
/// It is /tmp, as in bubblewrap: always present, and after pivot_root the host's own /tmp is
/// again visible under /oldroot/tmp for binding.
pub const BASE: &str = "/tmp";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Host {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Image(String),
    #[error("{0}")]
    Setup(String),
    /// The payload failed after the fork; `code` is the exit status rsing should end with.
    #[error("{message}")]
    Payload { code: i32, message: String },
}

/// The image's root filesystem.
pub enum RootSource {
    /// Served by rsing's FUSE server from a SquashFS archive (a SIF partition or a plain file).
    Squashfs { archive: Arc<Archive> },
    /// A sandbox directory on the host.
    Directory(PathBuf),
    /// The image's shared server (already joined): its mount is attached instead of serving.
    Shared(share::Joined),
}

/// Everything needed to start one container.
pub struct Container {
    pub root: RootSource,
    /// Shown as the FUSE mount's source (e.g. the image path).
    pub fsname: String,
    pub plan: plan::Plan,
    pub launch: environ::Launch,
    pub pid_ns: bool,
    pub writable_tmpfs: bool,
    /// `--overlay` layers (empty without the option).
    pub overlays: overlay::Overlays,
    /// `--writable` on a sandbox directory: the image is bound read-write.
    pub writable: bool,
    /// Size limit of the `--writable-tmpfs` tmpfs in MiB (site `sessiondir max size`): without
    /// one, a container could fill the node's memory.
    pub tmpfs_size_mib: u64,
    /// `--pwd` was given: failing to enter it is an error, not a warning.
    pub cwd_required: bool,
}

/// Runs the container to completion and returns the exit status rsing should end with.
pub fn run(container: Container) -> Result<i32, Error> {
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Setup(format!("cannot create a pipe: {e}")))?;
    let joined = match &container.root {
        RootSource::Shared(j) => Some(j),
        _ => None,
    };
    tracing::debug!(shared = joined.is_some(), "image server consulted");
    process::block_supervised().map_err(|e| Error::Setup(format!("cannot block signals: {e}")))?;
    let dev_fuse = match (&joined, &container.root) {
        (Some(j), _) => {
            nix::sched::setns(&j.userns, CloneFlags::CLONE_NEWUSER).map_err(|e| {
                Error::Setup(format!(
                    "cannot join the image server's user namespace: {e}"
                ))
            })?;
            nix::sched::unshare(CloneFlags::CLONE_NEWNS)
                .map_err(|e| Error::Setup(format!("cannot create a mount namespace: {e}")))?;
            share::lend_namespace(j);
            None
        }
        (None, RootSource::Squashfs { .. }) => {
            userns::enter(container.plan.uid_inside, container.plan.gid_inside)?;
            // Opened inside the user namespace: the kernel refuses a FUSE mount whose
            // /dev/fuse file was opened under another user namespace.
            Some(open_dev_fuse()?)
        }
        (None, _) => {
            userns::enter(container.plan.uid_inside, container.plan.gid_inside)?;
            None
        }
    };
    // Opened inside the user namespace, like the image's.
    let layer_fuse: Vec<(usize, OwnedFd)> = container
        .overlays
        .squashfs_layers()
        .map(|(i, _)| open_dev_fuse().map(|fd| (i, fd)))
        .collect::<Result<_, _>>()?;
    prepare_base(&container)?;
    tracing::debug!("base prepared");
    for (i, fd) in &layer_fuse {
        let given = &container.overlays.lower[*i].given;
        crate::fuse::mount(
            fd,
            Path::new(&format!("{BASE}/layers/{i}")),
            given,
            container.plan.uid_inside,
            container.plan.gid_inside,
        )
        .map_err(|e| Error::Setup(format!("cannot mount overlay {given} with FUSE: {e}")))?;
    }
    if let Some(j) = &joined {
        share::attach(&j.mount, Path::new(&format!("{BASE}/image")))
            .map_err(|e| Error::Setup(e.to_string()))?;
    } else if let (Some(fd), RootSource::Squashfs { .. }) = (&dev_fuse, &container.root) {
        crate::fuse::mount(
            fd,
            Path::new(&format!("{BASE}/image")),
            &container.fsname,
            container.plan.uid_inside,
            container.plan.gid_inside,
        )
        .map_err(|e| Error::Setup(format!("cannot mount the image with FUSE: {e}")))?;
    }
    // fuse2fs and fuse-overlayfs start after the fork, once the image is served; the payload
    // waits for them on `gate` before it builds the root.
    let needs_helpers = helpers::needed(&container.overlays);
    if needs_helpers {
        helpers::prepare_root().map_err(Error::Setup)?;
    }
    let (gate_read, gate_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Setup(format!("cannot create a pipe: {e}")))?;
    let gate = needs_helpers.then(|| gate_read.as_raw_fd());
    let supervisor = nix::unistd::getpid();
    // This process serves FUSE to the payload only for an unshared SquashFS image; a
    // PID-namespace payload stays alive as the namespace's supervisor. Otherwise the payload
    // can borrow this process's memory until it execs.
    let serves_fuse =
        matches!(container.root, RootSource::Squashfs { .. }) || !layer_fuse.is_empty();
    let how = if serves_fuse || container.pid_ns || needs_helpers {
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
    let child =
        process::spawn(how, &mut payload).map_err(|e| Error::Setup(format!("cannot fork: {e}")))?;
    drop(report_write);
    if let (Some(fd), RootSource::Squashfs { archive }) = (dev_fuse, &container.root) {
        crate::fuse::serve(archive.clone(), fd, false, &container.fsname)
            .map_err(|e| Error::Setup(format!("cannot start the FUSE server: {e}")))?;
    }
    let archives: Vec<_> = container
        .overlays
        .squashfs_layers()
        .map(|(_, a)| a.clone())
        .collect();
    for ((_, fd), archive) in layer_fuse.into_iter().zip(archives) {
        crate::fuse::serve(archive, fd, false, &container.fsname)
            .map_err(|e| Error::Setup(format!("cannot start the FUSE server: {e}")))?;
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

pub(crate) fn open_dev_fuse() -> Result<OwnedFd, Error> {
    let fd = nix::fcntl::open(
        "/dev/fuse",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| {
        Error::Setup(format!(
            "cannot open /dev/fuse: {e} (the fuse module must be loaded and /dev/fuse mode 0666)"
        ))
    })?;
    Ok(fd)
}

/// Mounts rsing's tmpfs at [`BASE`] and fills it: the
/// mount-point stubs, the generated files and the directories the payload mounts onto.
fn prepare_base(c: &Container) -> Result<(), Error> {
    let setup = |what: &str, e: &dyn std::fmt::Display| Error::Setup(format!("{what}: {e}"));
    // No `mount --make-rslave /`: in a mount namespace owned by a less privileged user
    // namespace than its parent's, the kernel has already turned shared mounts into slaves, so
    // nothing mounted here propagates to the host.

    mounts::tmpfs(Path::new(BASE), 0o755).map_err(|e| setup("rsing's tmpfs", &e))?;
    // The overlay's upper and work directories only when the root is writable: every mkdir
    // here is part of each start.
    let writable: &[&str] = if c.writable_tmpfs {
        &["rw", "rw/upper", "rw/work"]
    } else {
        &[]
    };
    let layers: Vec<String> = match c.overlays.squashfs_layers().count() {
        0 => Vec::new(),
        _ => std::iter::once("layers".to_string())
            .chain(
                c.overlays
                    .squashfs_layers()
                    .map(|(i, _)| format!("layers/{i}")),
            )
            .collect(),
    };
    for dir in ["image", "newroot", "oldroot", "stubs", "files"]
        .iter()
        .chain(writable)
        .map(|d| d.to_string())
        .chain(layers)
    {
        std::fs::create_dir(format!("{BASE}/{dir}"))
            .map_err(|e| setup(&format!("cannot create {BASE}/{dir}"), &e))?;
        if dir == "rw" {
            mounts::tmpfs_sized(Path::new(&format!("{BASE}/rw")), 0o755, c.tmpfs_size_mib)
                .map_err(|e| setup("the --writable-tmpfs tmpfs", &e))?;
        }
    }
    for (name, content) in &c.plan.files {
        std::fs::write(format!("{BASE}/files/{name}"), content)
            .map_err(|e| setup(&format!("cannot write {name}"), &e))?;
    }
    for stub in &c.plan.stubs {
        let mut p = format!("{BASE}/stubs").into_bytes();
        p.extend_from_slice(&stub.path);
        let p = PathBuf::from(std::ffi::OsString::from(
            String::from_utf8_lossy(&p).into_owned(),
        ));
        let made = if stub.dir {
            std::fs::create_dir_all(&p)
        } else {
            p.parent()
                .map(std::fs::create_dir_all)
                .unwrap_or(Ok(()))
                .and_then(|_| std::fs::write(&p, b""))
        };
        made.map_err(|e| setup(&format!("cannot create mount point {}", p.display()), &e))?;
    }
    Ok(())
}
