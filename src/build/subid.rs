//! A build step with real ids (`--userns-mode subid`): uid/gid 0 map to the caller and
//! 1..=N to the caller's `/etc/subuid`/`/etc/subgid` range, written by `newuidmap` and
//! `newgidmap`, so `chown`, `setuid` and `setgroups` really happen.
//!
//! ```text
//! rsing                                  holder (user namespace)          step
//!   fork ───────────────────────────▶   unshare(USER); "U" ──▶
//!   newuidmap PID 0 UID 1 1 FIRST N
//!   newgidmap PID 0 GID 1 1 FIRST N
//!   "G" ─────────────────────────────▶  chown the recorded owners in
//!                                        fork ─────────────────────────▶ unshare(NS); binds;
//!                                                                        chroot; execve
//!                                        waitpid; walk the root: record
//!                                        every non-root owner, chown
//!   read the record  ◀───────────────── it back to 0:0 (the caller)
//! ```
//!
//! Between steps the tree on the host belongs to the caller alone, as in seccomp mode: the
//! build cache copies it, `rsing` packs it and removes it without entering the namespace, and
//! the ownership the step made travels in the same [`Owners`] record, read from the real
//! ownership when the step ends and put back before the next one starts.
//!
//! The holder is forked from a process that may have threads; glibc makes `malloc` usable in
//! the child of a fork, and the holder takes no other lock.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::owners::Owners;
use super::runner::{self, Prepared, Step, SETUP_FAILED};
use super::userns::SubidMap;

/// Runs `step` with real ids; `owners` is put on the tree before and read back after.
pub fn run(step: &Step, map: &SubidMap, owners: &mut Owners) -> io::Result<i32> {
    let prepared = Prepared::new(step)?;
    let cloexec = nix::fcntl::OFlag::O_CLOEXEC;
    let (up_r, up_w) = nix::unistd::pipe2(cloexec).map_err(io::Error::from)?;
    let (go_r, go_w) = nix::unistd::pipe2(cloexec).map_err(io::Error::from)?;
    let (rec_r, rec_w) = nix::unistd::pipe2(cloexec).map_err(io::Error::from)?;
    // SAFETY: the child makes system calls and allocations only (see the module comment)
    // before execve or _exit.
    let pid = match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Child => {
            drop((up_r, go_w, rec_r));
            let code = holder(&prepared, map, owners, up_w, go_r, rec_w);
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop((up_w, go_r, rec_w));
    let mut up = std::fs::File::from(up_r);
    let mut byte = [0u8; 1];
    if up.read(&mut byte).unwrap_or(0) != 1 {
        // The holder could not make the namespace; it said why on stderr.
        return wait(pid);
    }
    let mut go = std::fs::File::from(go_w);
    let maps = if prepared.join.is_some() {
        Ok(())
    } else {
        write_maps(pid.as_raw(), map)
    };
    if let Err(e) = maps {
        drop(go);
        let _ = wait(pid);
        return Err(e);
    }
    let _ = go.write_all(b"G");
    drop(go);
    let mut record = Vec::new();
    let _ = std::fs::File::from(rec_r).read_to_end(&mut record);
    let status = wait(pid)?;
    if status == SETUP_FAILED && record.is_empty() {
        return Ok(status);
    }
    *owners = serde_json::from_slice(&record).map_err(|_| {
        io::Error::other("the step's ownership could not be read back (the namespace holder died)")
    })?;
    Ok(status)
}

/// waitpid until `pid` ends: its exit code, or 128 + the signal that killed it.
pub(super) fn wait(pid: nix::unistd::Pid) -> io::Result<i32> {
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// `newuidmap PID 0 UID 1 1 FIRST COUNT` and the same for groups.
pub(super) fn write_maps(pid: i32, map: &SubidMap) -> io::Result<()> {
    for (tool, own, (first, count)) in [
        (&map.newuidmap, map.uid, map.uids),
        (&map.newgidmap, map.gid, map.gids),
    ] {
        let args = [
            pid.to_string(),
            "0".into(),
            own.to_string(),
            "1".into(),
            "1".into(),
            first.to_string(),
            count.to_string(),
        ];
        let out = std::process::Command::new(tool)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot run {}: {e}", tool.display())))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(io::Error::other(format!(
                "{} {} failed: {}",
                tool.display(),
                args.join(" "),
                err.trim()
            )));
        }
    }
    Ok(())
}

/// The holder: the namespace, the owners in, the step, the owners out. Returns its exit
/// status (the step's).
fn holder(
    p: &Prepared,
    map: &SubidMap,
    owners: &Owners,
    up: OwnedFd,
    go: OwnedFd,
    record: OwnedFd,
) -> i32 {
    use nix::sched::{setns, unshare, CloneFlags};
    // Over build layers, the holder's namespace already has the maps: join it and its mount.
    let entered = match &p.join {
        Some((user, mnt)) => setns(user, CloneFlags::CLONE_NEWUSER)
            .and_then(|()| setns(mnt, CloneFlags::CLONE_NEWNS)),
        None => unshare(CloneFlags::CLONE_NEWUSER),
    };
    if let Err(e) = entered {
        eprintln!("rsing: error: build step: cannot create a user namespace: {e}");
        return SETUP_FAILED;
    }
    let _ = std::fs::File::from(up).write_all(b"U");
    let mut byte = [0u8; 1];
    if std::fs::File::from(go).read(&mut byte).unwrap_or(0) != 1 {
        return SETUP_FAILED; // the maps could not be written; rsing reports it
    }
    if let Err(e) = apply(&p.root, map, owners) {
        eprintln!("rsing: error: build step: restoring ownership: {e}");
        return SETUP_FAILED;
    }
    // SAFETY: as for the holder itself.
    let status = match unsafe { nix::unistd::fork() } {
        Err(e) => {
            eprintln!("rsing: error: build step: fork: {e}");
            SETUP_FAILED
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(record);
            let err = step_child(p);
            eprintln!("rsing: error: build step: {err}");
            // SAFETY: leaving the forked child.
            unsafe { libc::_exit(SETUP_FAILED) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            // Ctrl-C reaches the step; the holder still hands the tree back.
            for sig in [
                nix::sys::signal::Signal::SIGINT,
                nix::sys::signal::Signal::SIGTERM,
                nix::sys::signal::Signal::SIGHUP,
                nix::sys::signal::Signal::SIGQUIT,
            ] {
                // SAFETY: SIG_IGN installs no handler code.
                let _ =
                    unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn) };
            }
            wait(child).unwrap_or(SETUP_FAILED)
        }
    };
    match settle(&p.root, map, owners) {
        Ok(after) => {
            let bytes = serde_json::to_vec(&after).unwrap_or_default();
            let _ = std::fs::File::from(record).write_all(&bytes);
            status
        }
        Err(e) => {
            eprintln!("rsing: error: build step: reading ownership back: {e}");
            SETUP_FAILED
        }
    }
}

/// The step: its own mount namespace, the root, exec. Returns only on failure.
fn step_child(p: &Prepared) -> String {
    if let Err(e) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS) {
        return format!("cannot create a mount namespace: {e}");
    }
    if let Err(e) = runner::enter_root(p) {
        return e;
    }
    let program = runner::resolve(&p.argv[0], &p.env);
    let e = nix::unistd::execve(&program, &p.argv, &p.env).unwrap_err();
    format!("cannot run {:?}: {e}", p.argv[0])
}

/// `chown` that keeps the set-id bits, which the kernel clears on a change of owner.
fn chown_keep_mode(path: &Path, st: &std::fs::Metadata, uid: u32, gid: u32) -> io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    let mode = st.mode();
    if !st.file_type().is_symlink() && mode & 0o6000 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    Ok(())
}

/// Puts the recorded owners on the tree (ids outside the map stay recorded only).
fn apply(root: &Path, map: &SubidMap, owners: &Owners) -> io::Result<()> {
    for (path, (uid, gid)) in &owners.by_path {
        if !map.maps_uid(*uid) || !map.maps_gid(*gid) {
            continue;
        }
        let on_disk = root.join(path.trim_start_matches('/'));
        if let Ok(st) = std::fs::symlink_metadata(&on_disk) {
            chown_keep_mode(&on_disk, &st, *uid, *gid)
                .map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))?;
        }
    }
    Ok(())
}

/// Records every owner other than 0:0 and gives the entry back to 0:0 (the caller on the
/// host). Records of ids outside the map, which [`apply`] could not put on, are kept.
fn settle(root: &Path, map: &SubidMap, before: &Owners) -> io::Result<Owners> {
    let mut after = Owners::default();
    walk(root, &mut Vec::new(), &mut |rel, path, st| {
        let ids = (st.uid(), st.gid());
        if ids != (0, 0) {
            after.by_path.insert(rel.to_string(), ids);
            chown_keep_mode(path, st, 0, 0)
                .map_err(|e| io::Error::new(e.kind(), format!("{rel}: {e}")))?;
        }
        Ok(())
    })?;
    keep_unmapped(&mut after, before, map, &|path| {
        std::fs::symlink_metadata(root.join(path.trim_start_matches('/'))).is_ok()
    });
    Ok(after)
}

/// Adds to `after` the records of `before` whose ids the map cannot hold, for paths that
/// still exist and that the step did not give an owner.
fn keep_unmapped(
    after: &mut Owners,
    before: &Owners,
    map: &SubidMap,
    exists: &dyn Fn(&str) -> bool,
) {
    for (path, ids) in &before.by_path {
        let unmapped = !map.maps_uid(ids.0) || !map.maps_gid(ids.1);
        if unmapped && !after.by_path.contains_key(path) && exists(path) {
            after.by_path.insert(path.clone(), *ids);
        }
    }
}

type Visit<'a> = dyn FnMut(&str, &Path, &std::fs::Metadata) -> io::Result<()> + 'a;

/// Visits every entry under `dir` (not following symlinks) with its path inside the root
/// (`/etc/x`).
fn walk(dir: &Path, rel: &mut Vec<u8>, visit: &mut Visit) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let len = rel.len();
        rel.push(b'/');
        rel.extend_from_slice(entry.file_name().as_bytes());
        let path = entry.path();
        let st = std::fs::symlink_metadata(&path)?;
        visit(&String::from_utf8_lossy(rel), &path, &st)?;
        if st.is_dir() {
            walk(&path, rel, visit)?;
        }
        rel.truncate(len);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(count: u32) -> SubidMap {
        SubidMap {
            uid: 1000,
            gid: 1000,
            uids: (100000, count),
            gids: (100000, count),
            newuidmap: "/usr/bin/newuidmap".into(),
            newgidmap: "/usr/bin/newgidmap".into(),
        }
    }

    #[test]
    fn unmappable_records_of_existing_paths_are_kept() {
        let mut before = Owners::default();
        before.by_path.insert("/a/f".into(), (70000, 70000));
        before.by_path.insert("/a/gone".into(), (70000, 70000));
        before.by_path.insert("/a/g".into(), (5, 70000));
        before.by_path.insert("/a".into(), (5, 5));
        before.by_path.insert("/b".into(), (70000, 1));
        let mut after = Owners::default();
        after.by_path.insert("/b".into(), (7, 7));
        keep_unmapped(&mut after, &before, &map(65536), &|p| p != "/a/gone");
        assert_eq!(after.owner("/a/f"), (70000, 70000));
        assert_eq!(after.owner("/a/g"), (5, 70000));
        assert_eq!(after.by_path.get("/a/gone"), None);
        // Mappable records are what the step left on disk: not carried over.
        assert_eq!(after.by_path.get("/a"), None);
        // What the step set wins.
        assert_eq!(after.owner("/b"), (7, 7));
        assert!(map(65536).maps_uid(65536) && !map(65536).maps_uid(65537));
    }
}
