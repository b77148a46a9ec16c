//! An instance's own cgroup v2, where the user's cgroup is delegated to them (a systemd user
//! session's `user@UID.service`, a container manager's delegated subtree): `instance start`
//! moves the supervisor into a child cgroup `rsing-instance-NAME` before the container is
//! set up, so everything of the instance, and only that, is accounted there. Elsewhere (cgroup
//! v1, a root-owned cgroup, a Slurm step's cgroup) nothing is created and `instance stats`
//! sums /proc instead.

use std::path::{Path, PathBuf};

/// The cgroup v2 mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid host).
fn v2_root() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next() == Some("cgroup2"))
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// The cgroup v2 directory of process `pid` (`self` for this one).
pub fn of(pid: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(v2_root()?.join(rel.trim_start_matches('/')))
}

fn writable(p: &Path) -> bool {
    nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// Moves this process into a new child cgroup for instance `name` when the current cgroup is
/// delegated to the user; returns the new cgroup's directory, or None (nothing changed).
pub fn enter(name: &str) -> Option<PathBuf> {
    let current = of("self")?;
    if !writable(&current) || !writable(&current.join("cgroup.procs")) {
        return None;
    }
    let dir = current.join(format!("rsing-instance-{name}"));
    // A left-over of an instance that was killed: empty, or it would still hold the name's lock.
    let _ = std::fs::remove_dir(&dir);
    std::fs::create_dir(&dir).ok()?;
    let me = std::process::id().to_string();
    if std::fs::write(dir.join("cgroup.procs"), &me).is_err() {
        let _ = std::fs::remove_dir(&dir);
        return None;
    }
    Some(dir)
}

/// Moves this process back to the parent cgroup and removes the instance's cgroup (which
/// fails harmlessly while other processes are still in it).
pub fn leave(dir: &Path) {
    if let Some(parent) = dir.parent() {
        let _ = std::fs::write(parent.join("cgroup.procs"), std::process::id().to_string());
    }
    let _ = std::fs::remove_dir(dir);
}

/// Usage as the cgroup accounts it: (CPU seconds, memory bytes if the memory controller is
/// enabled there, process ids).
pub fn usage(dir: &Path) -> Option<(f64, Option<u64>, Vec<i32>)> {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let usec: u64 = read("cpu.stat")?
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))?
        .trim()
        .parse()
        .ok()?;
    let memory = read("memory.current").and_then(|m| m.trim().parse().ok());
    let pids = read("cgroup.procs")?
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    Some((usec as f64 / 1e6, memory, pids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cgroup_is_found_on_a_v2_host() {
        // On a cgroup v1-only host there is no v2 directory; on any other, ours exists.
        if v2_root().is_some() {
            let mine = of("self").expect("a 0:: line in /proc/self/cgroup");
            assert!(mine.is_dir(), "{}", mine.display());
        }
    }
}
