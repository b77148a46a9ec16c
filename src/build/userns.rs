//! Which user namespace a build step runs in (`rsing build --userns-mode`):
//!
//! * `seccomp`: uid 0 and gid 0 map to the caller only (any user may write such maps); the
//!   ownership calls are faked and recorded ([`super::seccomp`], [`super::runner`]).
//! * `subid`: uid/gid 0 map to the caller and 1..=N to the range `/etc/subuid` and
//!   `/etc/subgid` grant, written by the setuid `newuidmap`/`newgidmap` (Debian's `uidmap`);
//!   ownership calls are real ([`super::subid`]).
//! * `auto`: `subid` where the caller has both ranges and both tools, else `seccomp`.

use std::path::{Path, PathBuf};

/// What `--userns-mode` asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Requested {
    /// subid where /etc/subuid and /etc/subgid grant you a range and newuidmap exists, else
    /// seccomp
    #[default]
    Auto,
    /// uid 0 is only you; chown and setuid calls are faked by a seccomp filter and recorded
    Seccomp,
    /// real ids: 0 is you, 1..N your /etc/subuid and /etc/subgid range (newuidmap/newgidmap)
    Subid,
}

/// The mode a build runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Userns {
    Seccomp,
    Subid(SubidMap),
}

/// The caller's ids and subordinate ranges, and the tools that write the maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubidMap {
    pub uid: u32,
    pub gid: u32,
    /// `(first host id, count)`: namespace ids 1..=count map to first..first+count.
    pub uids: (u32, u32),
    pub gids: (u32, u32),
    pub newuidmap: PathBuf,
    pub newgidmap: PathBuf,
}

impl SubidMap {
    /// Whether namespace id `id` is mapped (0 is the caller, 1..=count the range).
    pub fn maps_uid(&self, id: u32) -> bool {
        id <= self.uids.1
    }

    pub fn maps_gid(&self, id: u32) -> bool {
        id <= self.gids.1
    }
}

/// Why `--userns-mode subid` cannot be had.
#[derive(Debug, thiserror::Error)]
#[error("--userns-mode subid: {0}")]
pub struct Unavailable(pub String);

/// Resolves the request for the calling user.
pub fn choose(requested: Requested) -> Result<Userns, Unavailable> {
    if requested == Requested::Seccomp {
        return Ok(Userns::Seccomp);
    }
    match subid_map() {
        Ok(map) => Ok(Userns::Subid(map)),
        Err(_) if requested == Requested::Auto => Ok(Userns::Seccomp),
        Err(e) => Err(e),
    }
}

fn subid_map() -> Result<SubidMap, Unavailable> {
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let who = if name.is_empty() {
        format!("uid {uid}")
    } else {
        format!("{name} (uid {uid})")
    };
    let range = |file: &str, id: u32| -> Result<(u32, u32), Unavailable> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Unavailable(format!("cannot read {file}: {e}")))?;
        find_range(&text, &name, id)
            .ok_or_else(|| Unavailable(format!("{file} grants {who} no range")))
    };
    let uids = range("/etc/subuid", uid)?;
    let gids = range("/etc/subgid", uid)?;
    let tool = |name: &str| {
        find_on_path(name).ok_or_else(|| {
            Unavailable(format!(
                "{name} not found on PATH (install the uidmap package)"
            ))
        })
    };
    Ok(SubidMap {
        uid,
        gid,
        uids,
        gids,
        newuidmap: tool("newuidmap")?,
        newgidmap: tool("newgidmap")?,
    })
}

/// The first `NAME:FIRST:COUNT` (or `UID:FIRST:COUNT`) line for the user, with COUNT ≥ 1.
pub fn find_range(text: &str, name: &str, uid: u32) -> Option<(u32, u32)> {
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let who = f.next()?;
        if who != uid.to_string() && (name.is_empty() || who != name) {
            return None;
        }
        let first: u32 = f.next()?.trim().parse().ok()?;
        let count: u32 = f.next()?.trim().parse().ok()?;
        (count >= 1 && first.checked_add(count).is_some()).then_some((first, count))
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_by_name_or_uid_first_match_wins() {
        let text = "alice:100000:65536\n1001:200000:10\nbob:300000:0\nbob:400000:5\n";
        assert_eq!(find_range(text, "alice", 1000), Some((100000, 65536)));
        assert_eq!(find_range(text, "carol", 1001), Some((200000, 10)));
        // A zero count is no range; the next line is used.
        assert_eq!(find_range(text, "bob", 1002), Some((400000, 5)));
        assert_eq!(find_range(text, "dave", 1003), None);
        assert_eq!(find_range("bad line\nx:y:z\n", "x", 1), None);
        assert_eq!(find_range("x:4294967295:2\n", "x", 1), None);
    }

    #[test]
    fn seccomp_needs_nothing() {
        assert_eq!(choose(Requested::Seccomp).unwrap(), Userns::Seccomp);
    }
}
