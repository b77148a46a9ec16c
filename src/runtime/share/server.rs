//! The server's side (`rsing __serve`): open the image, mount it with FUSE in namespaces of
//! its own, hand a clone of the mount to each client, keep track of the clients, and leave
//! once the last one has been gone for the linger time.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, MsgFlags};

use super::blocks;
use super::protocol::{self, NS, OK};
use super::{warnings_path, Error, ShareSpec};
use crate::runtime::sys;
use crate::squashfs::Archive;

/// Where the server mounts its private tmpfs and, under it, the image (`image/`), in its own
/// mount namespace. /tmp, like the container's base: always present.
const BASE: &str = "/tmp";

/// What the server does beyond serving a local file; `commands` passes those of the `lazy`
/// module, for images that are still downloading.
pub struct ServeHooks {
    /// Opens the image (before the server enters its namespaces and forks: no threads).
    pub open: fn(&Path, u64) -> Result<Archive, crate::squashfs::Error>,
    /// Called after the last client has gone, before the server exits.
    pub leaving: fn(),
    /// The directory of the user's block files (`squashfs::BlockFile`), or `None` to go
    /// without (switched off, or no cache directory).
    pub block_dir: fn() -> Option<PathBuf>,
}

/// The server process, started with the one argument a client made of its [`ShareSpec`]
/// (see `protocol::encode_spec`): prints `ready` (or `error: …`) on stdout, then serves until
/// it has been idle for the linger time. Never returns.
pub fn serve(arg: &str, hooks: ServeHooks) -> ! {
    let prepared = protocol::decode_spec(arg).and_then(|spec| {
        let prepared = prepare_server(&spec, &hooks)?;
        Ok((spec, prepared))
    });
    let (spec, (archive, listener, dev_fuse, userns, entry, blocks)) = match prepared {
        Ok(ready) => ready,
        Err(e) => {
            println!("error: {e}");
            std::process::exit(1)
        }
    };
    println!("ready");
    // Detach: the parent (waited for by the starting rsing) exits, the server lives on
    // in a process group of its own, away from the terminal's signals.
    // SAFETY: still single-threaded.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Parent { .. }) => std::process::exit(0),
        Ok(nix::unistd::ForkResult::Child) => {}
        Err(_) => std::process::exit(1),
    }
    // A process group of its own keeps the terminal's Ctrl-C and Ctrl-Z away from the server;
    // it stays in the caller's session. Not `setsid`: with autogroup scheduling (the default of
    // Debian's and Ubuntu's kernels) a new session is a scheduling group of its own, and under
    // load every FUSE round trip then waits for that group to win the CPU back (a first
    // `import numpy` took 1.9× as long on a loaded 2-core machine; docs/design.md).
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    // Signals sent to a whole process group or cgroup (scancel --full, systemd's
    // control-group kill) must not take the image away from containers that are still
    // cleaning up: the server leaves by itself once its last client is gone.
    // The terminal's stop signals too: a stopped server would stop every container of the image.
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGTSTP,
        nix::sys::signal::Signal::SIGTTIN,
        nix::sys::signal::Signal::SIGTTOU,
    ] {
        // SAFETY: setting a signal to SIG_IGN installs no handler code.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
    }
    // Every client holds a pidfd and its mount namespace here, and the FUSE workers
    // one /dev/fuse fd per core: a node full of MPI ranks must not hit the soft limit.
    raise_fd_limit();
    // Hold no directory of the user's busy (an NFS cwd could not be unmounted).
    let _ = std::env::set_current_dir("/");
    // SAFETY: closing our stdout (the pipe to the starter) so it sees EOF.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        libc::dup2(null, 1);
    }
    // Warnings (reads the server cannot serve) go to a file that each client copies
    // to its own stderr when its container ends.
    // The path is opened through the run directory's fd: /tmp is no longer the
    // host's in the server's mount namespace.
    let name = warnings_path(Path::new(&entry.name));
    if let Ok(fd) = nix::fcntl::openat(
        &entry.dir,
        &name,
        nix::fcntl::OFlag::O_WRONLY
            | nix::fcntl::OFlag::O_CREAT
            | nix::fcntl::OFlag::O_TRUNC
            | nix::fcntl::OFlag::O_APPEND
            | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    ) {
        // SAFETY: dup2 onto our own stderr; `fd` stays open until then.
        unsafe { libc::dup2(fd.as_raw_fd(), 2) };
    }
    let mut saver = blocks.map(|b| b.saver(archive.clone()));
    if crate::fuse::serve(archive, dev_fuse, true, &spec.fsname).is_err() {
        std::process::exit(1);
    }
    control_loop(&spec, listener, userns, &entry, &mut saver);
    (hooks.leaving)();
    std::process::exit(0)
}

type Prepared = (
    Arc<Archive>,
    UnixListener,
    OwnedFd,
    OwnedFd,
    SocketEntry,
    Option<blocks::Blocks>,
);

/// The socket's directory entry, reachable after the server has mounted its own tmpfs over
/// /tmp (where the run directory usually is): a directory fd opened before, and the name.
struct SocketEntry {
    dir: std::fs::File,
    name: std::ffi::OsString,
    inode: u64,
}

impl SocketEntry {
    /// Removes the socket if it is still ours (a newer server may have replaced it).
    fn remove_if_ours(&self) {
        use nix::fcntl::AtFlags;
        let still_ours = nix::sys::stat::fstatat(
            &self.dir,
            self.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok_and(|st| st.st_ino == self.inode);
        if still_ours {
            let _ = nix::unistd::unlinkat(
                &self.dir,
                self.name.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
            // The warnings file goes with the socket (a client that still reads it holds it open).
            let _ = nix::unistd::unlinkat(
                &self.dir,
                &warnings_path(Path::new(&self.name)),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

fn prepare_server(spec: &ShareSpec, hooks: &ServeHooks) -> Result<Prepared, Error> {
    let mut archive = (hooks.open)(&spec.image, spec.offset)?;
    // Before the namespaces: the cache directory may be under the /tmp that the server's own
    // tmpfs hides.
    let blocks =
        (hooks.block_dir)().and_then(|dir| blocks::Blocks::open(&dir, &spec.image, &mut archive));
    let archive = Arc::new(archive);
    // Bind under a private name, then rename into place: a stale socket of a dead server is
    // replaced atomically, never unlinked under a live one's feet.
    let socket = &spec.socket;
    let tmp = socket.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| Error::at("bind", &tmp, e))?;
    std::fs::rename(&tmp, socket).map_err(|e| Error::at("rename", socket, e))?;
    let dir = socket.parent().unwrap_or(Path::new("/"));
    let entry = SocketEntry {
        dir: std::fs::File::open(dir).map_err(|e| Error::at("open the run directory", dir, e))?,
        name: socket.file_name().unwrap_or_default().to_os_string(),
        inode: std::fs::metadata(socket)
            .map(|m| m.ino())
            .map_err(|e| Error::at("stat", socket, e))?,
    };
    match mount_for_clients(spec) {
        Ok((dev_fuse, userns)) => Ok((archive, listener, dev_fuse, userns, entry, blocks)),
        Err(e) => {
            entry.remove_if_ours();
            Err(e)
        }
    }
}

/// The server's mount of the image, which every client receives a clone of.
fn image_mount() -> PathBuf {
    Path::new(BASE).join("image")
}

/// The server's own namespaces and FUSE mount: (the /dev/fuse fd, its user namespace fd).
fn mount_for_clients(spec: &ShareSpec) -> Result<(OwnedFd, OwnedFd), Error> {
    use nix::mount::{mount, MsFlags};
    super::super::userns::enter(spec.uid_inside, spec.gid_inside)?;
    // Opened inside the user namespace: the kernel refuses a FUSE mount whose /dev/fuse file
    // was opened under another user namespace.
    let dev_fuse =
        crate::fuse::open_device().map_err(|e| Error::at("open", Path::new("/dev/fuse"), e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::failed("make the mount tree private", e))?;
    mount(
        Some("tmpfs"),
        BASE,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=700"),
    )
    .map_err(|e| Error::at("mount tmpfs on", Path::new(BASE), e.into()))?;
    let target = image_mount();
    std::fs::create_dir(&target).map_err(|e| Error::at("mkdir", &target, e))?;
    crate::fuse::mount(
        &dev_fuse,
        &target,
        &spec.fsname,
        spec.uid_inside,
        spec.gid_inside,
    )
    .map_err(|e| Error::at("FUSE mount on", &target, e.into()))?;
    let userns = nix::fcntl::open(
        "/proc/self/ns/user",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::at("open", Path::new("/proc/self/ns/user"), e.into()))?;
    Ok((dev_fuse, userns))
}

/// One container of the image: the connection its supervisor holds, a pidfd of that
/// supervisor, and the container's mount namespace once the supervisor has lent it.
struct Client {
    /// `None` once the supervisor closed it (at exit, or never: it is close-on-exec).
    stream: Option<UnixStream>,
    /// Readable once the supervisor has exited completely. `None` where pidfds are missing
    /// (Linux < 5.3): the client then ends with its connection.
    pidfd: Option<OwnedFd>,
    /// Dropped when the client ends, so that the container's mounts are torn down here, off
    /// the exit path of the supervisor (see [`super::lend_namespace`]).
    _mount_ns: Option<OwnedFd>,
}

impl Client {
    fn new(stream: UnixStream) -> Client {
        let pidfd = peer_pidfd(&stream);
        Client {
            stream: Some(stream),
            pidfd,
            _mount_ns: None,
        }
    }

    /// Takes what the supervisor sent (its mount namespace) or notes that it closed the
    /// connection. Returns whether the client has ended.
    fn read(&mut self) -> bool {
        let Some(stream) = &self.stream else {
            return false;
        };
        match protocol::receive(stream) {
            Ok((tag, fds)) if &tag == NS => {
                self._mount_ns = fds.into_iter().next();
                if self.pidfd.is_some() {
                    // The pidfd says when the client ends: one descriptor fewer per client.
                    self.stream = None;
                }
                false
            }
            _ => {
                self.stream = None;
                self.pidfd.is_none()
            }
        }
    }
}

/// Raises the soft limit on open files to the hard limit.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// A pidfd of the peer of `stream`: the very process that connected where the kernel can say
/// (`SO_PEERPIDFD`), else one opened from its pid (`SO_PEERCRED`), which could meet a reused
/// pid if that process is already gone.
fn peer_pidfd(stream: &UnixStream) -> Option<OwnedFd> {
    sys::peer_pidfd(stream.as_fd()).ok().or_else(|| {
        socket::getsockopt(stream, socket::sockopt::PeerCredentials)
            .ok()
            .and_then(|creds| sys::pidfd_open(creds.pid()).ok())
    })
}

/// Accepts clients, hands each a clone of the mount, and returns once no client has been
/// connected for the linger time.
///
/// On the way out the socket is unlinked *before* the listener closes, and clients that
/// connected in between are still served: a socket that exists always has a live listener
/// behind it, so a starting container never meets a refused connection.
fn control_loop(
    spec: &ShareSpec,
    listener: UnixListener,
    userns: OwnedFd,
    entry: &SocketEntry,
    saver: &mut Option<blocks::Saver>,
) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let linger = Duration::from_secs(spec.linger);
    // Until its first client (the start that launched it) has connected, the server waits at
    // least FIRST_CLIENT_GRACE even with a linger of 0: else it would leave before that client
    // arrives, and every container of a burst would start a server of its own.
    let mut wait = linger.max(FIRST_CLIENT_GRACE);
    let mut clients: Vec<Client> = Vec::new();
    let mut idle_since = Instant::now();
    loop {
        let timeout = if clients.is_empty() {
            let left = wait.saturating_sub(idle_since.elapsed());
            if left.is_zero() {
                // The block file is complete before the socket goes: the next server (a
                // start that finds no socket) then finds it.
                if let Some(saver) = saver.as_mut() {
                    saver.finish();
                }
                entry.remove_if_ours();
                if !accept_pending(&listener, &userns, spec.uid_inside, &mut clients) {
                    break;
                }
                continue;
            }
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX)
        } else {
            PollTimeout::NONE
        };
        // Slot 0 is the listener; then each client's open connection and its pidfd.
        let mut fds: Vec<PollFd> = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let mut slots: Vec<(usize, bool)> = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            if let Some(stream) = &c.stream {
                fds.push(PollFd::new(stream.as_fd(), PollFlags::POLLIN));
                slots.push((i, false));
            }
            if let Some(pidfd) = &c.pidfd {
                fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
                slots.push((i, true));
            }
        }
        if poll(&mut fds, timeout).is_err() {
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let before = clients.len();
        let mut ended = vec![false; before];
        for (&(i, is_pidfd), _) in slots.iter().zip(&ready[1..]).filter(|(_, r)| **r) {
            ended[i] |= is_pidfd || clients[i].read();
        }
        for i in (0..before).rev() {
            if ended[i] {
                clients.swap_remove(i);
            }
        }
        if ready[0] {
            match listener.accept() {
                Ok((stream, _)) => {
                    if hand_over(&stream, &userns, spec.uid_inside).is_ok() {
                        clients.push(Client::new(stream));
                    }
                }
                // Out of descriptors, say: the listener stays readable, so do not spin on it.
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        if !clients.is_empty() {
            wait = linger;
        }
        if clients.is_empty() && before > 0 {
            idle_since = Instant::now();
            // The start(s) just served have read what they need: write it down now, in the
            // background, rather than only when the server leaves (Slurm may kill it first).
            if let Some(saver) = saver.as_mut() {
                saver.kick();
            }
        }
    }
}

/// How long a new server waits for its first client whatever the linger (see control_loop).
const FIRST_CLIENT_GRACE: Duration = Duration::from_secs(2);

/// Serves the connections already queued on the listener, without waiting; whether any was.
fn accept_pending(
    listener: &UnixListener,
    userns: &OwnedFd,
    uid_inside: u32,
    clients: &mut Vec<Client>,
) -> bool {
    if listener.set_nonblocking(true).is_err() {
        return false;
    }
    while let Ok((stream, _)) = listener.accept() {
        let _ = stream.set_nonblocking(false);
        if hand_over(&stream, userns, uid_inside).is_ok() {
            clients.push(Client::new(stream));
        }
    }
    !clients.is_empty()
}

/// Sends a client of our own user the server's user namespace and a fresh clone of the mount.
fn hand_over(stream: &UnixStream, userns: &OwnedFd, uid_inside: u32) -> Result<(), Error> {
    let creds = socket::getsockopt(stream, socket::sockopt::PeerCredentials)
        .map_err(|e| Error::failed("peer credentials", e))?;
    if creds.uid() != uid_inside {
        return Err(Error::ClientOfAnotherUser);
    }
    let target = image_mount();
    let mount = sys::open_tree_clone(&target).map_err(|e| Error::at("open_tree", &target, e))?;
    protocol::send(
        stream,
        OK,
        &[userns.as_raw_fd(), mount.as_raw_fd()],
        MsgFlags::empty(),
    )
    .map_err(|e| Error::failed("send", e))
}
