//! A Dockerfile stage as a stack of layers, mounted with the kernel's overlayfs inside a user
//! namespace, so that a cached step is reused without copying its tree and a step's changes
//! become its cache entry by a rename (Docker's layers, without a daemon):
//!
//! ```text
//! rsing                                   holder (user + mount namespace)
//!   fork ───────────────────────────────▶ unshare(USER|NS); "U"
//!   maps (own id, or newuidmap for subid)
//!   "G" ────────────────────────────────▶ mount overlay lowerdir=L3:L2:L1,upperdir=U,
//!                                               workdir=W,userxattr  on  MNT
//!   ◀──────────────────────────────────── "M" (or the error text)
//!   view: /proc/HOLDER/root/MNT           waits until rsing closes the release pipe
//!   steps setns() into the holder's namespaces and chroot into MNT
//! ```
//!
//! The upper directory holds exactly what the step changed, with overlayfs' whiteouts
//! (character devices 0:0) and opaque directories (`user.overlay.opaque`); later mounts honour
//! them in lower layers, and the image is packed through a mount of all layers, so the kernel
//! applies them and the packer sees an ordinary tree. Host-side work on a mounted stage
//! (COPY, WORKDIR, the image metadata, the ownership walk) goes through the view path,
//! which reaches the holder's mount namespace through `/proc`.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::subid::wait;
use super::userns::Userns;

/// An overlay mount held by a holder process; unmounted (the holder exits) on drop.
#[derive(Debug)]
pub struct Mounted {
    pid: nix::unistd::Pid,
    release: Option<OwnedFd>,
    mountpoint: PathBuf,
    workdir: Option<PathBuf>,
}

impl Mounted {
    /// Mounts `lowers` (bottom first) with `upper` (made if missing) at a new directory in
    /// `scratch`, in a user namespace of mode `userns`. `scratch` must be on the file system
    /// of `upper` (overlayfs' work directory is made there).
    pub fn mount(
        lowers: &[PathBuf],
        upper: &Path,
        scratch: &Path,
        userns: &Userns,
    ) -> io::Result<Mounted> {
        let n = next_id();
        let mountpoint = scratch.join(format!("mnt-{n}"));
        let workdir = scratch.join(format!("ovl-work-{n}"));
        for dir in [&mountpoint, &workdir] {
            std::fs::create_dir(dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        }
        if !upper.is_dir() {
            std::fs::create_dir(upper)?;
        }
        let mut all: Vec<&Path> = lowers.iter().map(PathBuf::as_path).collect();
        all.push(upper);
        all.push(&workdir);
        let base = common_parent(&all);
        let rel = |p: &Path| escape(p.strip_prefix(&base).unwrap_or(p));
        let lowerdir: Vec<String> = lowers.iter().rev().map(|l| rel(l)).collect();
        let options = format!(
            "lowerdir={},upperdir={},workdir={},userxattr",
            lowerdir.join(":"),
            rel(upper),
            rel(&workdir)
        );
        // The kernel takes one page of mount options.
        if options.len() >= 4000 {
            return Err(io::Error::other(format!(
                "{} layers are more than one overlay mount can stack",
                lowers.len()
            )));
        }
        let mounted = hold(&base, &mountpoint, &options, userns);
        match mounted {
            Ok((pid, release)) => Ok(Mounted {
                pid,
                release: Some(release),
                mountpoint,
                workdir: Some(workdir),
            }),
            Err(e) => {
                let _ = std::fs::remove_dir(&mountpoint);
                super::copy::remove_tree(&workdir);
                Err(e)
            }
        }
    }

    /// The path the steps see as their root, inside the holder's mount namespace.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The merged tree as rsing itself reaches it.
    pub fn view(&self) -> PathBuf {
        let inner = self
            .mountpoint
            .strip_prefix("/")
            .unwrap_or(&self.mountpoint);
        PathBuf::from(format!("/proc/{}/root", self.pid)).join(inner)
    }

    /// The holder's process id, whose namespaces the steps join.
    pub fn holder(&self) -> i32 {
        self.pid.as_raw()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        drop(self.release.take());
        let _ = wait(self.pid);
        let _ = std::fs::remove_dir(&self.mountpoint);
        if let Some(w) = self.workdir.take() {
            super::copy::remove_tree(&w);
        }
    }
}

/// A stage's writable tree: its layers mounted, or, where the kernel refuses the mount (an
/// upper directory on NFS, Lustre, GPFS…) or `RSING_BUILD_LAYERS=copy` asks for it, a plain
/// copy of them, saved afterwards as one full layer.
#[derive(Debug)]
pub enum Tree {
    Mounted(Mounted),
    Copy(PathBuf),
}

impl Tree {
    /// The tree as rsing reaches it.
    pub fn path(&self) -> PathBuf {
        match self {
            Tree::Mounted(m) => m.view(),
            Tree::Copy(dir) => dir.clone(),
        }
    }

    pub fn mounted(&self) -> Option<&Mounted> {
        match self {
            Tree::Mounted(m) => Some(m),
            Tree::Copy(_) => None,
        }
    }
}

/// Copies `layers` (bottom first) into directory `dest` as overlayfs would show them:
/// whiteouts (character devices 0:0) remove what is below, opaque directories
/// (`user.overlay.opaque=y`) hide it.
pub fn merge_into(layers: &[PathBuf], dest: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for layer in layers {
        merge(layer, dest)?;
    }
    Ok(())
}

fn merge(src: &Path, dest: &Path) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let (s, d) = (entry.path(), dest.join(entry.file_name()));
        let st = std::fs::symlink_metadata(&s)?;
        let ft = st.file_type();
        let there = std::fs::symlink_metadata(&d).ok();
        if ft.is_char_device() && st.rdev() == 0 {
            remove(&d, there.as_ref());
        } else if ft.is_dir() {
            if there.as_ref().is_some_and(|t| !t.is_dir()) || opaque(&s) {
                remove(&d, there.as_ref());
            }
            if !d.is_dir() {
                std::fs::create_dir(&d)?;
            }
            merge(&s, &d)?;
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(st.mode() | 0o700))?;
        } else {
            if there.as_ref().is_some_and(|t| t.is_dir()) {
                remove(&d, there.as_ref());
            }
            super::copy::copy_tree(&s, &d)?;
        }
    }
    Ok(())
}

fn remove(path: &Path, st: Option<&std::fs::Metadata>) {
    match st {
        Some(st) if st.is_dir() => super::copy::remove_tree(path),
        Some(_) => {
            let _ = std::fs::remove_file(path);
        }
        None => {}
    }
}

fn opaque(dir: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut value = [0u8; 4];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"user.overlay.opaque".as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    n == 1 && value[0] == b'y'
}

fn next_id() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The deepest directory above all of `paths` (the holder works from there, so that the
/// mount options name the layers by short relative paths).
fn common_parent(paths: &[&Path]) -> PathBuf {
    let mut base: PathBuf = paths
        .first()
        .and_then(|p| p.parent())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    while !paths.iter().all(|p| p.starts_with(&base) && *p != base) {
        if !base.pop() {
            return PathBuf::from("/");
        }
    }
    base
}

/// A path in overlayfs' option syntax: `,`, `:` and `\` escaped.
fn escape(p: &Path) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(p.as_os_str().as_bytes()).chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Forks the holder and waits until its overlay is mounted; returns its id and the pipe
/// whose closing lets it exit.
fn hold(
    base: &Path,
    mountpoint: &Path,
    options: &str,
    userns: &Userns,
) -> io::Result<(nix::unistd::Pid, OwnedFd)> {
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (up_r, up_w) = nix::unistd::pipe2(cloexec).map_err(io::Error::from)?;
    let (go_r, go_w) = nix::unistd::pipe2(cloexec).map_err(io::Error::from)?;
    let (rel_r, rel_w) = nix::unistd::pipe2(cloexec).map_err(io::Error::from)?;
    let base = std::ffi::CString::new(base.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("NUL byte in a path"))?;
    let target = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("NUL byte in a path"))?;
    let data = std::ffi::CString::new(options).map_err(|_| io::Error::other("NUL byte"))?;
    // SAFETY: the child only makes system calls before _exit (see holder_main).
    let pid = match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Child => {
            drop((up_r, go_w, rel_w));
            let code = holder_main(&base, &target, &data, up_w, go_r, rel_r);
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop((up_w, go_r, rel_r));
    let fail = |e: io::Error| {
        let _ = wait(pid);
        Err(e)
    };
    let mut up = std::fs::File::from(up_r);
    let mut byte = [0u8; 1];
    if up.read(&mut byte).unwrap_or(0) != 1 {
        return fail(io::Error::other(
            "cannot create a user namespace for the layers",
        ));
    }
    let maps = match userns {
        Userns::Seccomp => own_maps(child_pid(pid)),
        Userns::Subid(map) => super::subid::write_maps(child_pid(pid), map),
    };
    let mut go = std::fs::File::from(go_w);
    if let Err(e) = maps {
        drop(go);
        return fail(e);
    }
    let _ = go.write_all(b"G");
    drop(go);
    let mut answer = Vec::new();
    let _ = up.read_to_end(&mut answer);
    if answer != b"M" {
        let text = String::from_utf8_lossy(&answer).trim().to_string();
        drop(rel_w);
        return fail(io::Error::other(if text.is_empty() {
            "the overlay holder died".to_string()
        } else {
            text
        }));
    }
    Ok((pid, rel_w))
}

fn child_pid(pid: nix::unistd::Pid) -> i32 {
    pid.as_raw()
}

/// Maps namespace root to the caller alone (seccomp mode).
fn own_maps(pid: i32) -> io::Result<()> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    for (file, text) in [
        ("setgroups", "deny".to_string()),
        ("uid_map", format!("0 {uid} 1")),
        ("gid_map", format!("0 {gid} 1")),
    ] {
        std::fs::write(format!("/proc/{pid}/{file}"), text).map_err(|e| {
            io::Error::new(e.kind(), format!("writing the {file} of the layers: {e}"))
        })?;
    }
    Ok(())
}

/// The holder: namespaces, the mount, then waiting. Returns its exit status.
fn holder_main(
    base: &std::ffi::CStr,
    target: &std::ffi::CStr,
    data: &std::ffi::CStr,
    up: OwnedFd,
    go: OwnedFd,
    release: OwnedFd,
) -> i32 {
    use nix::mount::{mount, MsFlags};
    use std::os::fd::AsRawFd;
    // SAFETY: prctl with integer arguments; the holder dies with rsing.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    // Other holders' release pipes came along with the fork: holding them would keep those
    // holders alive after rsing lets them go.
    close_others(&[up.as_raw_fd(), go.as_raw_fd(), release.as_raw_fd()]);
    let mut up = std::fs::File::from(up);
    if nix::sched::unshare(
        nix::sched::CloneFlags::CLONE_NEWUSER | nix::sched::CloneFlags::CLONE_NEWNS,
    )
    .is_err()
    {
        return 1;
    }
    let _ = up.write_all(b"U");
    let mut byte = [0u8; 1];
    if std::fs::File::from(go).read(&mut byte).unwrap_or(0) != 1 {
        return 1;
    }
    let result = mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .and_then(|()| nix::unistd::chdir(base))
    .and_then(|()| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
        )
    });
    if let Err(e) = result {
        let _ = write!(up, "cannot mount the build layers (overlayfs): {e}");
        return 1;
    }
    let _ = up.write_all(b"M");
    drop(up);
    let mut rest = Vec::new();
    let _ = std::fs::File::from(release).read_to_end(&mut rest);
    0
}

/// Closes every descriptor above stderr but `keep` (`close_range`, Linux 5.9).
fn close_others(keep: &[i32]) {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut from = 3u32;
    for fd in keep {
        let fd = fd as u32;
        if fd > from {
            // SAFETY: closes descriptors of this (forked, single-threaded) process only.
            unsafe { libc::syscall(libc::SYS_close_range, from, fd - 1, 0) };
        }
        from = from.max(fd + 1);
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, u32::MAX, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_parent_and_escapes() {
        let a = Path::new("/c/build/steps/k1/layer");
        let b = Path::new("/c/build/tmp-1/upper-0");
        assert_eq!(common_parent(&[a, b]), Path::new("/c/build"));
        assert_eq!(common_parent(&[a]), Path::new("/c/build/steps/k1"));
        assert_eq!(escape(Path::new("a:b,c\\d")), "a\\:b\\,c\\\\d");
    }

    #[test]
    fn merge_applies_whiteouts_and_opaque_dirs() {
        let dir = std::env::temp_dir().join(format!("rsing-layers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (low, up, out) = (dir.join("low"), dir.join("up"), dir.join("out"));
        for d in ["a", "b", "c"] {
            std::fs::create_dir_all(low.join(d)).unwrap();
        }
        std::fs::write(low.join("a/gone"), "1").unwrap();
        std::fs::write(low.join("a/kept"), "2").unwrap();
        std::fs::write(low.join("b/hidden"), "3").unwrap();
        std::fs::write(low.join("c/inner"), "4").unwrap();
        std::fs::create_dir_all(up.join("a")).unwrap();
        std::fs::create_dir_all(up.join("b")).unwrap();
        std::fs::write(up.join("b/new"), "5").unwrap();
        std::fs::write(up.join("c"), "now a file").unwrap();
        // A whiteout: a character device 0:0 (unprivileged since Linux 5.8).
        let whiteout = std::ffi::CString::new(up.join("a/gone").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path; mknod only creates the node.
        let made = unsafe { libc::mknod(whiteout.as_ptr(), libc::S_IFCHR, 0) } == 0;
        let b = std::ffi::CString::new(up.join("b").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C strings and value.
        let marked = unsafe {
            libc::setxattr(
                b.as_ptr(),
                c"user.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        } == 0;
        merge_into(&[low.clone(), up.clone()], &out).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("a/kept")).unwrap(), "2");
        if made {
            assert!(out.join("a/gone").symlink_metadata().is_err());
        }
        if marked {
            assert!(out.join("b/hidden").symlink_metadata().is_err());
        }
        assert_eq!(std::fs::read_to_string(out.join("b/new")).unwrap(), "5");
        assert_eq!(
            std::fs::read_to_string(out.join("c")).unwrap(),
            "now a file"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
