//! The start's side: join the image's server (starting it if none answers), lend it the
//! container's mount namespace, attach the mount it sent, and show its warnings.
//!
//! A joined start is on every container's critical path: nothing here may cost a system call
//! that the start does not need.

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::socket::{self, MsgFlags};

use super::protocol::{self, NS, OK};
use super::{Error, ShareSpec};

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

/// Joins the image's server, starting one if none answers.
pub fn join(spec: &ShareSpec) -> Result<Joined, Error> {
    if let Ok(joined) = connect(spec) {
        return Ok(joined);
    }
    let path = spec.lock();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::at("lock", &path, e))?;
    let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::at("lock", &path, e.into()))?;
    // Another start may have brought a server up while we waited for the lock.
    if let Ok(joined) = connect(spec) {
        return Ok(joined);
    }
    start_server(spec)?;
    connect(spec)
}

/// How long a client waits for the server's answer before it serves the image itself.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(spec: &ShareSpec) -> Result<Joined, Error> {
    let stream =
        UnixStream::connect(&spec.socket).map_err(|e| Error::at("connect", &spec.socket, e))?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
        .map_err(Error::call("connect"))?;
    let creds = socket::getsockopt(&stream, socket::sockopt::PeerCredentials)
        .map_err(|e| Error::failed("peer credentials", e))?;
    if creds.uid() != nix::unistd::getuid().as_raw() {
        return Err(Error::ServerOfAnotherUser);
    }
    let (tag, mut fds) = protocol::receive(&stream).map_err(|e| Error::failed("receive", e))?;
    if &tag != OK || fds.len() != 2 {
        return Err(Error::Refused);
    }
    let mount = fds.pop().expect("two fds");
    let userns = fds.pop().expect("two fds");
    let warnings = spec.warnings();
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
    let _ = protocol::send(
        &joined._connection,
        NS,
        &[ns.as_raw_fd()],
        MsgFlags::MSG_DONTWAIT,
    );
}

/// Attaches the server's mount (a detached clone, [`Joined::mount`]) at `target`.
pub fn attach(mount: &OwnedFd, target: &Path) -> Result<(), Error> {
    crate::runtime::sys::move_mount_fd(mount.as_fd(), target)
        .map_err(|e| Error::at("move_mount onto", target, e))
}

/// How long a start waits for a new image server to say `ready` (it opens the image, creates
/// its namespaces and mounts: milliseconds normally).
const STARTUP_TIMEOUT_MS: u16 = 20_000;

/// Starts `rsing __serve` for the image, detached, and waits until it listens.
fn start_server(spec: &ShareSpec) -> Result<(), Error> {
    let exe = std::env::current_exe().map_err(Error::call("own executable"))?;
    let mut child = Command::new(exe)
        .arg("__serve")
        .arg(protocol::encode_spec(spec))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(Error::call("starting the image server"))?;
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
            return Err(Error::NoAnswer);
        }
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let _ = child.wait();
    match line.trim() {
        "ready" => Ok(()),
        other => Err(Error::NotStarted(other.to_string())),
    }
}
