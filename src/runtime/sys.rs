//! The raw system calls of the runtime that neither `libc` nor `nix` wraps, in one place, each
//! with the reason it is sound.
//!
//! Why a module of their own: a raw `syscall(2)` has no type checking at all (argument count,
//! widths and ownership of returned descriptors are the caller's promise), so they are kept
//! small, documented and out of the logic that uses them. Each function is one call (or a
//! few) that hands back owned descriptors and `io::Error`s; [`raise_ambient`] allocates
//! nothing, as it runs between fork and exec.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A path for a system call; a path with a NUL byte inside cannot name a file (`EINVAL`).
fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Takes ownership of the descriptor a system call returned, or its error.
fn owned_fd(ret: libc::c_long) -> io::Result<OwnedFd> {
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just installed this descriptor in our table; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// A detached copy of the mount at `path`, close-on-exec (open_tree(2) with
/// `OPEN_TREE_CLONE`, Linux 5.2): another process attaches it with [`move_mount_fd`].
pub fn open_tree_clone(path: &Path) -> io::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let c = c_path(path)?;
    // SAFETY: open_tree(dirfd, pathname, flags) with AT_FDCWD, a NUL-terminated path that
    // lives across the call, and valid flags; it returns a new descriptor or -1.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    owned_fd(ret)
}

/// Attaches the detached mount `mount` (from [`open_tree_clone`]) at `target`
/// (move_mount(2) with `MOVE_MOUNT_F_EMPTY_PATH`: the source is the descriptor itself).
pub fn move_mount_fd(mount: BorrowedFd<'_>, target: &Path) -> io::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let c = c_path(target)?;
    // SAFETY: move_mount(from_dirfd, from_path, to_dirfd, to_path, flags) with a descriptor
    // borrowed for the call, an empty source path (with the EMPTY_PATH flag), AT_FDCWD and a
    // NUL-terminated target that lives across the call. It only returns a status.
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
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A descriptor that becomes readable when process `pid` has exited (pidfd_open(2), Linux 5.3).
/// It can name another process if `pid` has already been reused: prefer [`peer_pidfd`].
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open(pid, flags) with flags 0; it returns a new descriptor or -1.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    owned_fd(ret)
}

/// A pidfd of the process that connected the Unix socket `socket` (`SO_PEERPIDFD`, Linux
/// 6.5): unlike `pidfd_open` of the `SO_PEERCRED` pid, it cannot meet a reused pid.
pub fn peer_pidfd(socket: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    const SO_PEERPIDFD: libc::c_int = 77;
    let mut fd: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt on a socket borrowed for the call, with an int-sized out-buffer and
    // its length, as SO_PEERPIDFD defines.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    owned_fd(fd as libc::c_long)
}

/// Makes the capabilities `caps` (numbers, as in `<linux/capability.h>`) inheritable and
/// raises them as ambient capabilities, so that they survive an `execve` by a process that
/// is not uid 0. Raw syscalls only, no allocation: it runs between fork and exec.
pub fn raise_ambient(caps: &[u32]) -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget(header, data) with a v3 header and the two data words v3 defines, both
    // living across the call.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for cap in caps {
        data[(cap / 32) as usize].inheritable |= 1 << (cap % 32);
    }
    // SAFETY: capset(header, data) with the same v3 header and data words.
    if unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for &cap in caps {
        // SAFETY: prctl with integer arguments only. Best effort, as before: a capability the
        // process lacks is simply not raised.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                cap as libc::c_ulong,
                0,
                0,
            );
        }
    }
    Ok(())
}
