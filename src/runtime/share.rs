//! The shared image server: one FUSE mount per user, image and node, shared by every container
//! of that image, and kept alive a few seconds after the last one exits.
//!
//! Why: a FUSE mount starts with a cold page cache, so a runtime that mounts the image afresh
//! for every start reads and decompresses the same blocks (the shell, libc, python) every
//! time. When the server of the image is already running, a start joins its user namespace
//! and receives a clone of its FUSE mount (`open_tree`), so the kernel's page, dentry and
//! attribute caches are warm. This is also how the MPI ranks of one job step on a node share
//! one mount and one user namespace (under Slurm a server serves one job step only: see
//! [`ShareSpec::scoped`]).
//!
//! Protocol: the server listens on `<rundir>/<key>.sock` (a private 0700 directory). A client
//! connects, checks that the peer is its own uid, and receives two fds (the server's user
//! namespace and a detached clone of the mount) plus `ok`. It keeps the connection open for as
//! long as its container runs, and once it has its own mount namespace it sends that too
//! (`ns`, [`lend_namespace`]). A client ends when its process has exited (a pidfd), or when
//! it closes the connection where pidfds are missing. The server serves until every client has
//! gone and the linger time has passed, then removes its socket and exits. Starting a server is serialised by a
//! lock file, so that a hundred containers starting at once spawn one server, not a hundred.

use std::io::{BufRead, BufReader, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::squashfs::Archive;

/// The client/server protocol's version, part of the socket's name: a client never meets a
/// server of another version (an older server would take the `ns` message for a hang-up).
const PROTOCOL: &str = "2";

/// How to find or start the server of one image.
#[derive(Debug, Clone)]
pub struct ShareSpec {
    pub image: PathBuf,
    pub offset: u64,
    pub uid_inside: u32,
    pub gid_inside: u32,
    pub fsname: String,
    /// Seconds the server stays after its last client.
    pub linger: u64,
    pub socket: PathBuf,
    pub lock: PathBuf,
}

impl ShareSpec {
    /// The same image's server for one `scope` only (a batch-system job step, see
    /// `commands::exec`): another scope hashes to another socket and lock. Empty: unchanged.
    pub fn scoped(mut self, scope: &str) -> ShareSpec {
        if !scope.is_empty() {
            let mut h = Fnv::new();
            h.write(self.socket.as_os_str().as_encoded_bytes());
            h.write(scope.as_bytes());
            self.socket.set_file_name(format!("{:016x}.sock", h.0));
            self.lock.set_file_name(format!("{:016x}.lock", h.0));
        }
        self
    }
}

/// A joined server: its user namespace, a mount of the image, and the connection that keeps
/// the server serving (close-on-exec: only this process holds it).
pub struct Joined {
    pub userns: OwnedFd,
    pub mount: OwnedFd,
    pub _connection: UnixStream,
    /// The server's warnings file and its length when this container joined.
    warnings: (PathBuf, u64),
}

impl Joined {
    /// The number of the fd of the (not yet attached) mount: `/proc/self/fd/N` reads the image
    /// through it. The FUSE server lets this process in, as its uid is the mount's user.
    pub fn mount_fd(&self) -> i32 {
        self.mount.as_raw_fd()
    }

    /// Copies to stderr the warnings the server wrote while this container ran (reads it
    /// could not serve): the server has no terminal, the user of the container should see them.
    pub fn print_new_warnings(&self) {
        use std::io::{Read, Seek, SeekFrom, Write};
        let (path, start) = &self.warnings;
        let Ok(mut file) = std::fs::File::open(path) else {
            return;
        };
        let mut text = Vec::new();
        if file.seek(SeekFrom::Start(*start)).is_ok()
            && file.take(64 << 10).read_to_end(&mut text).is_ok()
            && !text.is_empty()
        {
            let _ = std::io::stderr().write_all(&text);
        }
    }
}

/// Where the server of `socket` writes its warnings (its stderr).
fn warnings_path(socket: &Path) -> PathBuf {
    socket.with_extension("warnings")
}

/// The per-user directory for sockets and locks: `$XDG_RUNTIME_DIR/rsing` when that is a
/// private directory of ours, else `/tmp/rsing-UID`. Refused (sharing off) when it is not a
/// directory owned by us with mode 0700: another user must not be able to plant a socket.
pub fn runtime_dir(xdg_runtime_dir: Option<&str>) -> Option<PathBuf> {
    let uid = nix::unistd::getuid().as_raw();
    let dir = match xdg_runtime_dir.map(PathBuf::from) {
        Some(x) if private_dir(&x, uid) => x.join("rsing"),
        _ => PathBuf::from(format!("/tmp/rsing-{uid}")),
    };
    if let Err(e) = std::fs::create_dir(&dir) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return None;
        }
    } else {
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    private_dir(&dir, uid).then_some(dir)
}

fn private_dir(dir: &Path, uid: u32) -> bool {
    match std::fs::symlink_metadata(dir) {
        Ok(m) => m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0,
        Err(_) => false,
    }
}

/// The server identity of an image: the same file (device, inode, size, mtime), partition
/// offset and id mapping, and the same rsing version.
pub fn spec(
    image: &Path,
    offset: u64,
    uid_inside: u32,
    gid_inside: u32,
    fsname: &str,
    linger: u64,
    rundir: &Path,
) -> Option<ShareSpec> {
    let meta = std::fs::metadata(image).ok()?;
    let mut h = Fnv::new();
    h.write(image.as_os_str().as_encoded_bytes());
    for n in [
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime() as u64,
        meta.mtime_nsec() as u64,
        offset,
        uid_inside as u64,
        gid_inside as u64,
    ] {
        h.write(&n.to_le_bytes());
    }
    h.write(env!("CARGO_PKG_VERSION").as_bytes());
    h.write(PROTOCOL.as_bytes());
    let key = format!("{:016x}", h.0);
    Some(ShareSpec {
        image: image.to_path_buf(),
        offset,
        uid_inside,
        gid_inside,
        fsname: fsname.to_string(),
        linger,
        socket: rundir.join(format!("{key}.sock")),
        lock: rundir.join(format!("{key}.lock")),
    })
}

/// 64-bit FNV-1a: enough to tell images apart in a private directory.
struct Fnv(u64);
impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= *b as u64;
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
        self.0 ^= 0xff;
    }
}

/// Joins the image's server, starting one if none answers.
pub fn join(spec: &ShareSpec) -> Result<Joined, String> {
    if let Ok(joined) = connect(spec) {
        return Ok(joined);
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&spec.lock)
        .map_err(|e| format!("lock {}: {e}", spec.lock.display()))?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("lock {}: {e}", spec.lock.display()))?;
    // Another start may have brought a server up while we waited for the lock.
    if let Ok(joined) = connect(spec) {
        return Ok(joined);
    }
    start_server(spec)?;
    connect(spec)
}

/// How long a client waits for the server's answer before it serves the image itself.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(spec: &ShareSpec) -> Result<Joined, String> {
    let stream = UnixStream::connect(&spec.socket).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(|e| format!("connect: {e}"))?;
    let creds = socket::getsockopt(&stream, socket::sockopt::PeerCredentials)
        .map_err(|e| format!("peer credentials: {e}"))?;
    if creds.uid() != nix::unistd::getuid().as_raw() {
        return Err("the image server runs as another user".into());
    }
    let (tag, mut fds) = receive(&stream).map_err(|e| format!("receive: {e}"))?;
    if &tag != b"ok" || fds.len() != 2 {
        return Err("the image server refused the connection".into());
    }
    let mount = fds.pop().expect("two fds");
    let userns = fds.pop().expect("two fds");
    let warnings = warnings_path(&spec.socket);
    let seen = std::fs::metadata(&warnings).map(|m| m.len()).unwrap_or(0);
    Ok(Joined {
        userns,
        mount,
        _connection: stream,
        warnings: (warnings, seen),
    })
}

/// Gives the server a reference to the caller's (the container's) mount namespace, to drop
/// once the caller has exited. The last process to leave a mount namespace tears down every
/// mount in it, and that is on its exit path, which the user waits for: a tenth of a
/// container start here. Held by the server, the namespace dies there instead, after the
/// supervisor's exit has been reported. Best effort: on any failure the supervisor pays.
pub fn lend_namespace(joined: &Joined) {
    let Ok(ns) = std::fs::File::open("/proc/self/ns/mnt") else {
        return;
    };
    let _ = send(
        &joined._connection,
        b"ns",
        &[ns.as_raw_fd()],
        MsgFlags::MSG_DONTWAIT,
    );
}

/// How long a start waits for a new image server to say `ready` (it opens the image, creates
/// its namespaces and mounts: milliseconds normally).
const STARTUP_TIMEOUT_MS: u16 = 20_000;

/// Starts `rsing __serve` for the image, detached, and waits until it listens.
fn start_server(spec: &ShareSpec) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
    let mut child = Command::new(exe)
        .arg("__serve")
        .arg(&spec.image)
        .arg(spec.offset.to_string())
        .arg(spec.uid_inside.to_string())
        .arg(spec.gid_inside.to_string())
        .arg(spec.linger.to_string())
        .arg(&spec.socket)
        .arg(&spec.fsname)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the image server: {e}"))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        // A server that neither answers nor exits must not hang this start: give up after
        // STARTUP_TIMEOUT, stop it, and serve the image in-process instead.
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(out.as_fd(), PollFlags::POLLIN)];
        let answered = poll(&mut fds, PollTimeout::from(STARTUP_TIMEOUT_MS)).is_ok_and(|n| n > 0);
        if !answered {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the image server did not answer in time".into());
        }
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let _ = child.wait();
    match line.trim() {
        "ready" => Ok(()),
        other => Err(format!("the image server did not start: {other}")),
    }
}

/// Arguments of the hidden `rsing __serve` command (see [`start_server`]).
pub struct ServeArgs {
    pub image: PathBuf,
    pub offset: u64,
    pub uid_inside: u32,
    pub gid_inside: u32,
    pub linger: u64,
    pub socket: PathBuf,
    pub fsname: String,
}

/// The server process: prints `ready` (or `error: …`) on stdout, then serves until it has been
/// idle for the linger time. Never returns.
pub fn serve(args: ServeArgs) -> ! {
    match prepare_server(&args) {
        Ok((archive, listener, dev_fuse, userns, entry)) => {
            println!("ready");
            // Detach: the parent (waited for by the starting rsing) exits, the server lives on
            // in a new session, away from the terminal's signals.
            // SAFETY: still single-threaded.
            match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Parent { .. }) => std::process::exit(0),
                Ok(nix::unistd::ForkResult::Child) => {}
                Err(_) => std::process::exit(1),
            }
            let _ = nix::unistd::setsid();
            // Signals sent to a whole process group or cgroup (scancel --full, systemd's
            // control-group kill) must not take the image away from containers that are still
            // cleaning up: the server leaves by itself once its last client is gone.
            for sig in [
                nix::sys::signal::Signal::SIGTERM,
                nix::sys::signal::Signal::SIGINT,
                nix::sys::signal::Signal::SIGHUP,
            ] {
                // SAFETY: setting a signal to SIG_IGN installs no handler code.
                let _ =
                    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
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
            if crate::fuse::serve(archive, dev_fuse, true, &args.fsname).is_err() {
                std::process::exit(1);
            }
            control_loop(&args, listener, userns, &entry);
            std::process::exit(0)
        }
        Err(e) => {
            println!("error: {e}");
            std::process::exit(1)
        }
    }
}

type Prepared = (Arc<Archive>, UnixListener, OwnedFd, OwnedFd, SocketEntry);

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

fn prepare_server(args: &ServeArgs) -> Result<Prepared, String> {
    let archive =
        Arc::new(Archive::open_path(&args.image, args.offset).map_err(|e| e.to_string())?);
    // Bind under a private name, then rename into place: a stale socket of a dead server is
    // replaced atomically, never unlinked under a live one's feet.
    let tmp = args
        .socket
        .with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(|e| format!("bind {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &args.socket)
        .map_err(|e| format!("rename {}: {e}", args.socket.display()))?;
    let entry = SocketEntry {
        dir: std::fs::File::open(args.socket.parent().unwrap_or(Path::new("/")))
            .map_err(|e| format!("run directory: {e}"))?,
        name: args.socket.file_name().unwrap_or_default().to_os_string(),
        inode: std::fs::metadata(&args.socket)
            .map(|m| m.ino())
            .map_err(|e| e.to_string())?,
    };
    match mount_for_clients(args) {
        Ok((dev_fuse, userns)) => Ok((archive, listener, dev_fuse, userns, entry)),
        Err(e) => {
            entry.remove_if_ours();
            Err(e)
        }
    }
}

/// The server's own namespaces and FUSE mount: (the /dev/fuse fd, its user namespace fd).
fn mount_for_clients(args: &ServeArgs) -> Result<(OwnedFd, OwnedFd), String> {
    super::userns::enter(args.uid_inside, args.gid_inside).map_err(|e| e.to_string())?;
    let dev_fuse = super::open_dev_fuse().map_err(|e| e.to_string())?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("private mount tree: {e}"))?;
    super::mounts::tmpfs(Path::new(super::BASE), 0o700)?;
    let target = Path::new(super::BASE).join("image");
    std::fs::create_dir(&target).map_err(|e| format!("mkdir: {e}"))?;
    crate::fuse::mount(
        &dev_fuse,
        &target,
        &args.fsname,
        args.uid_inside,
        args.gid_inside,
    )
    .map_err(|e| format!("FUSE mount: {e}"))?;
    let userns = nix::fcntl::open(
        "/proc/self/ns/user",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("own user namespace: {e}"))?;
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
    /// the exit path of the supervisor (see [`lend_namespace`]).
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
        match receive(stream) {
            Ok((tag, fds)) if &tag == b"ns" => {
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

/// Messages are a two-byte tag with descriptors attached: `ok` (server → client: its user
/// namespace and a mount) and `ns` (client → server: the container's mount namespace).
fn send(stream: &UnixStream, tag: &[u8; 2], fds: &[RawFd], flags: MsgFlags) -> nix::Result<()> {
    socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(tag)],
        &[ControlMessage::ScmRights(fds)],
        flags,
        None,
    )
    .map(drop)
}

/// Receives one message (see [`send`]). A hang-up reads as an error.
fn receive(stream: &UnixStream) -> nix::Result<([u8; 2], Vec<OwnedFd>)> {
    let mut tag = [0u8; 2];
    let mut iov = [IoSliceMut::new(&mut tag)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = socket::recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel just installed these descriptors in our table for us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.bytes != tag.len() {
        return Err(nix::errno::Errno::ECONNRESET);
    }
    Ok((tag, fds))
}

/// Raises the soft limit on open files to the hard limit.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// A pidfd of the peer of `stream`: `SO_PEERPIDFD` (Linux 6.5) names the very process that
/// connected, while `pidfd_open` of the `SO_PEERCRED` pid could meet a reused pid if that
/// process is already gone.
fn peer_pidfd(stream: &UnixStream) -> Option<OwnedFd> {
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt with a valid socket and an int-sized out-buffer.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 && fd >= 0 {
        // SAFETY: the kernel made this descriptor for us.
        return Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    socket::getsockopt(stream, socket::sockopt::PeerCredentials)
        .ok()
        .and_then(|creds| pidfd_open(creds.pid()))
}

fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open with a pid and no flags; returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a new descriptor that we now own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Accepts clients, hands each a clone of the mount, and returns once no client has been
/// connected for the linger time.
///
/// On the way out the socket is unlinked *before* the listener closes, and clients that
/// connected in between are still served: a socket that exists always has a live listener
/// behind it, so a starting container never meets a refused connection.
fn control_loop(args: &ServeArgs, listener: UnixListener, userns: OwnedFd, entry: &SocketEntry) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let linger = Duration::from_secs(args.linger);
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
                entry.remove_if_ours();
                if !accept_pending(&listener, &userns, args.uid_inside, &mut clients) {
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
                    if hand_over(&stream, &userns, args.uid_inside).is_ok() {
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

fn hand_over(stream: &UnixStream, userns: &OwnedFd, uid_inside: u32) -> Result<(), String> {
    let creds =
        socket::getsockopt(stream, socket::sockopt::PeerCredentials).map_err(|e| e.to_string())?;
    if creds.uid() != uid_inside {
        return Err("client of another user".into());
    }
    let mount = open_tree_clone(&Path::new(super::BASE).join("image"))?;
    send(
        stream,
        b"ok",
        &[userns.as_raw_fd(), mount.as_raw_fd()],
        MsgFlags::empty(),
    )
    .map_err(|e| e.to_string())
}

/// A detached copy of the mount at `path` (open_tree(2) with OPEN_TREE_CLONE).
fn open_tree_clone(path: &Path) -> Result<OwnedFd, String> {
    let c = super::mounts::cstring(path);
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // SAFETY: open_tree with a valid C path; returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(format!("open_tree: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: the syscall returned a new descriptor that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Attaches a detached mount (from the server) at `target` (move_mount(2)).
pub fn attach(mount: &OwnedFd, target: &Path) -> Result<(), String> {
    let c = super::mounts::cstring(target);
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    // SAFETY: move_mount with a valid fd, an empty source path and a valid C target path.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(format!(
            "move_mount onto {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
