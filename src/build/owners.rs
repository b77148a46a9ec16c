//! The ownership a build asked for. In a user namespace that maps only the caller, every file
//! a step creates belongs to the caller on disk, and `chown` only pretends ([`super::seccomp`]).
//! What the step asked for is recorded here and written into the SquashFS; everything else is
//! owned by root (0:0) in the image, as it would be after a real root build.
//!
//! During a step records are keyed by inode, because package managers `chown` a temporary
//! name and rename it into place (dpkg's `.dpkg-new`); between steps they are keyed by path
//! (inodes change when a cached root is copied). An inode freed and reused within one step
//! could inherit a stale record: a documented limitation.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `(uid, gid)` by path inside the root (`/etc/x`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owners {
    pub by_path: BTreeMap<String, (u32, u32)>,
}

/// Records of one step, by `(dev, ino)`.
#[derive(Debug, Default)]
pub struct InodeOwners {
    pub by_inode: HashMap<(u64, u64), (u32, u32)>,
}

impl InodeOwners {
    /// Applies a `chown(uid, gid)` (either may be `u32::MAX`: unchanged) to inode `key`.
    pub fn chown(&mut self, key: (u64, u64), uid: u32, gid: u32) {
        let entry = self.by_inode.entry(key).or_insert((0, 0));
        if uid != u32::MAX {
            entry.0 = uid;
        }
        if gid != u32::MAX {
            entry.1 = gid;
        }
    }
}

impl Owners {
    pub fn load(file: &Path) -> std::io::Result<Owners> {
        match std::fs::read(file) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Owners::default()),
            Err(e) => Err(e),
        }
    }

    pub fn save(&self, file: &Path) -> std::io::Result<()> {
        std::fs::write(
            file,
            serde_json::to_vec(self).expect("a map of strings serialises"),
        )
    }

    /// The records as inodes of tree `root` (paths that no longer exist are dropped).
    pub fn to_inodes(&self, root: &Path) -> InodeOwners {
        let mut out = InodeOwners::default();
        for (path, owner) in &self.by_path {
            if let Ok(st) = std::fs::symlink_metadata(root.join(path.trim_start_matches('/'))) {
                out.by_inode.insert((st.dev(), st.ino()), *owner);
            }
        }
        out
    }

    /// Walks `root` and names every recorded inode by its paths (all of a hard link's).
    pub fn from_inodes(root: &Path, inodes: &InodeOwners) -> std::io::Result<Owners> {
        let mut out = Owners::default();
        if inodes.by_inode.is_empty() {
            return Ok(out);
        }
        walk(root, "", &mut |path, st| {
            if let Some(owner) = inodes.by_inode.get(&(st.dev(), st.ino())) {
                out.by_path.insert(path.to_string(), *owner);
            }
        })?;
        Ok(out)
    }

    /// The owner of `path` in the image.
    pub fn owner(&self, path: &str) -> (u32, u32) {
        self.by_path.get(path).copied().unwrap_or((0, 0))
    }
}

fn walk(
    dir: &Path,
    prefix: &str,
    visit: &mut dyn FnMut(&str, &std::fs::Metadata),
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let path = format!("{prefix}/{}", String::from_utf8_lossy(name.as_bytes()));
        let st = entry.metadata()?;
        visit(&path, &st);
        if st.is_dir() {
            walk(&entry.path(), &path, visit)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_follow_renames_between_path_and_inode_form() {
        let dir = std::env::temp_dir().join(format!("rsing-owners-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/a.new"), "x").unwrap();
        let st = std::fs::metadata(dir.join("etc/a.new")).unwrap();
        let mut inodes = InodeOwners::default();
        inodes.chown((st.dev(), st.ino()), 1000, u32::MAX);
        inodes.chown((st.dev(), st.ino()), u32::MAX, 42);
        std::fs::rename(dir.join("etc/a.new"), dir.join("etc/a")).unwrap();
        let owners = Owners::from_inodes(&dir, &inodes).unwrap();
        assert_eq!(owners.owner("/etc/a"), (1000, 42));
        assert_eq!(owners.owner("/etc"), (0, 0));
        let back = owners.to_inodes(&dir);
        assert_eq!(back.by_inode.get(&(st.dev(), st.ino())), Some(&(1000, 42)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
