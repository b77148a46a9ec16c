//! Checks of the user's side of the host: cgroups, subordinate ids, the home directory and the
//! cache directory's file system. None of these stops `exec`; each can degrade a feature.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::report::Check;

/// cgroup v2 (unified) or v1, and whether the user's own cgroup is delegated (writable), which
/// is what resource limits on containers would need. rsing starts no cgroups itself; under
/// Slurm the job's cgroup confines the container already.
pub fn cgroup() -> Check {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let path = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or("")
        .to_string();
    if !v2 {
        return Check::ok(
            "cgroup",
            "cgroup v1 (legacy): containers stay in the caller's cgroups (fine under Slurm)",
        );
    }
    let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    let uid = nix::unistd::getuid().as_raw();
    // Delegated: the user owns the cgroup (systemd's user@.service) or one of its parents.
    let delegated = dir
        .ancestors()
        .take_while(|d| d.starts_with("/sys/fs/cgroup") && *d != Path::new("/sys/fs/cgroup"))
        .any(|d| std::fs::metadata(d).is_ok_and(|m| m.uid() == uid));
    Check::ok(
        "cgroup",
        format!(
            "cgroup v2, own cgroup {}{}",
            if path.is_empty() { "/" } else { &path },
            if delegated {
                " (delegated to you)"
            } else {
                " (not delegated: containers share the caller's cgroup, as under Slurm)"
            }
        ),
    )
}

/// Subordinate id ranges: rsing maps only the caller's own uid and gid (and uid 0 for
/// `--fakeroot`), so it needs none to run; `rsing build` uses them where granted
/// (`--userns-mode auto`), and they are reported for sites comparing with Apptainer's
/// `--fakeroot`, which does use them.
pub fn subuid(user: &str, uid: u32) -> Check {
    let ranges = |file: &str| -> Vec<String> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                let first = l.split(':').next().unwrap_or("");
                first == user || first == uid.to_string()
            })
            .map(|l| l.split(':').skip(1).collect::<Vec<_>>().join(":"))
            .collect()
    };
    let (u, g) = (ranges("/etc/subuid"), ranges("/etc/subgid"));
    let show = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(",")
        }
    };
    Check::ok(
        "subuid",
        format!(
            "subuid {} / subgid {}: not needed to run (rsing maps only your own ids; --fakeroot \
             maps uid 0 to you); where granted, `rsing build` gives %post/RUN real ids",
            show(&u),
            show(&g)
        ),
    )
}

/// `$HOME`: it must exist to be bound; symlinks in its path (e.g. /home → /gpfs/home) are
/// resolved for the bind source, while the container sees the path the user knows.
pub fn home(home: &Path) -> Check {
    match std::fs::canonicalize(home) {
        Err(e) => Check::warn(
            "home",
            format!("home directory {} is not usable ({e})", home.display()),
            "set HOME to an existing directory, or run with --no-home or --home DIR",
        ),
        Ok(real) if real != home => Check::ok(
            "home",
            format!(
                "{} (resolves to {}; bound at {} inside)",
                home.display(),
                real.display(),
                home.display()
            ),
        ),
        Ok(_) => Check::ok("home", format!("{}", home.display())),
    }
}

/// A mount from /proc/self/mountinfo: mount point, file system type, mount and super options.
#[derive(Debug, Clone, PartialEq)]
pub struct MountInfo {
    pub point: PathBuf,
    pub fstype: String,
    pub options: String,
}

/// The mount that holds `path` (the longest mount point that is a prefix of it).
pub fn mount_of(mountinfo: &str, path: &Path) -> Option<MountInfo> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let sep = f.iter().position(|x| *x == "-")?;
            let point = PathBuf::from(unescape(f.get(4)?));
            Some(MountInfo {
                point,
                fstype: f.get(sep + 1)?.to_string(),
                options: format!("{},{}", f.get(5)?, f.get(sep + 3).unwrap_or(&"")),
            })
        })
        .filter(|m| path.starts_with(&m.point))
        .max_by_key(|m| m.point.as_os_str().len())
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Whether the mount's locks are only node-local, from its options: NFS without the lock
/// manager (`nolock`, `local_lock=flock|all`), Lustre with `localflock`, or without `flock`.
pub fn node_local_locks(m: &MountInfo) -> Option<&'static str> {
    let has = |o: &str| m.options.split(',').any(|x| x == o);
    match m.fstype.as_str() {
        "nfs" | "nfs4" if has("nolock") || has("local_lock=flock") || has("local_lock=all") => {
            Some("NFS mounted without the network lock manager (nolock/local_lock)")
        }
        "lustre" if has("localflock") => Some("Lustre mounted with localflock"),
        "lustre" if !has("flock") => Some("Lustre mounted without the flock option"),
        _ => None,
    }
}

/// The cache directory's file system, and a real flock(2) on a file in it (or in its nearest
/// existing parent, when the cache does not exist yet).
pub fn cache(root: &Path) -> Check {
    let existing = root
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let real = std::fs::canonicalize(&existing).unwrap_or(existing.clone());
    let mount = mount_of(&mountinfo, &real);
    let fstype = mount
        .as_ref()
        .map(|m| m.fstype.clone())
        .unwrap_or_else(|| "?".into());
    let where_ = format!("{} ({fstype})", root.display());
    let lock = try_lock(&existing);
    let env_fix = "set RSING_CACHEDIR to a directory on a local disk (e.g. /tmp or node-local \
                   scratch), or ask for the file system to be mounted with working locks";
    match (lock, mount.as_ref().and_then(node_local_locks)) {
        (Err(e), _) => Check::warn(
            "cache",
            format!(
                "cache {where_}: flock fails ({e}): pulls of docker:// images into the cache \
                 will fail"
            ),
            env_fix,
        ),
        (Ok(()), Some(why)) => Check::warn(
            "cache",
            format!(
                "cache {where_}: {why}: locks work only within one node, so tasks on \
                 several nodes may convert the same image at once"
            ),
            env_fix,
        ),
        (Ok(()), None) => Check::ok("cache", format!("cache {where_}: locks work")),
    }
}

/// flock on a temporary file in `dir`. A directory the user cannot write is an error too: the
/// cache could not be created there either.
fn try_lock(dir: &Path) -> Result<(), String> {
    let path = dir.join(format!(".rsing-doctor-{}", std::process::id()));
    let file = match std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let _ = std::fs::remove_file(&path);
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map(drop)
        .map_err(|(_, e)| format!("{e:?}: {}", e.desc()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /home rw,relatime shared:2 - nfs4 srv:/home rw,vers=4.2,local_lock=none
31 22 0:41 / /scratch rw shared:3 - lustre 10.0.0.1@o2ib:/fs rw,localflock
32 22 0:42 / /my\\040dir rw - nfs srv:/x rw,nolock
";

    #[test]
    fn finds_the_longest_mount_and_node_local_locks() {
        let m = mount_of(INFO, Path::new("/home/u/.cache/rsing")).unwrap();
        assert_eq!(
            (m.point.to_str(), m.fstype.as_str()),
            (Some("/home"), "nfs4")
        );
        assert_eq!(node_local_locks(&m), None);
        let s = mount_of(INFO, Path::new("/scratch/x")).unwrap();
        assert!(node_local_locks(&s).unwrap().contains("localflock"));
        let d = mount_of(INFO, Path::new("/my dir/c")).unwrap();
        assert!(node_local_locks(&d).unwrap().contains("NFS"));
        let r = mount_of(INFO, Path::new("/var")).unwrap();
        assert_eq!(r.fstype, "ext4");
    }
}
