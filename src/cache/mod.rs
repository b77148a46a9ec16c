//! rsing's cache: content-addressed blobs and converted images under `$RSING_CACHEDIR`
//! (default `${XDG_CACHE_HOME:-~/.cache}/rsing`).
//!
//! ```text
//! blobs/sha256/<hex>        layer and config blobs, named by their verified digest
//! images/<key>.sif          converted images, keyed by manifest digest and build options
//! images/<key>.lock         flock: one process converts, concurrent ones wait and reuse
//! http/<key>.sif            SIF files downloaded from http(s):// URLs, complete and checked
//! lazy/<key>.*              SIF files still downloading (lazy starts, see docs/oras.md)
//! ```
//!
//! Everything appears atomically ([`AtomicFile`], rename), so a killed pull leaves no entry
//! that looks complete. Entries are never modified in place, only added or removed, so a
//! running container keeps its image even while `cache clean` removes the name.

mod atomic;

pub use atomic::{hidden_name, AtomicFile};

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Makes `to` share `from`'s extents (FICLONE); whether the filesystem could.
pub fn reflink(from: &File, to: &File) -> bool {
    use std::os::fd::AsRawFd;
    // FICLONE = _IOW(0x94, 9, int)
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: both descriptors are open for the duration of the call.
    // `as _`: the request's type is c_ulong on glibc and c_int on musl.
    unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) == 0 }
}

/// The cache directory of this user.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// One entry of `rsing cache list`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: &'static str,
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    /// Last use (access time where the filesystem records it, else modification time).
    pub used: SystemTime,
}

/// An exclusive lock on a cache key, released on drop.
pub struct KeyLock {
    _lock: nix::fcntl::Flock<File>,
}

/// The cache-wide lock on `in-use.lock`: shared while a pull or build uses the cache (from
/// resolving to opening its image), exclusive while `clean` removes entries, so a clean never
/// takes a blob or image from under a pull; it waits for running pulls instead.
pub struct UseLock {
    _lock: nix::fcntl::Flock<File>,
}

impl Cache {
    /// `$RSING_CACHEDIR`, else `$APPTAINER_CACHEDIR/rsing` (or `$SINGULARITY_CACHEDIR/rsing`:
    /// sites point those at scratch space because of home quotas; the subdirectory keeps
    /// Apptainer's own cache apart), else `$XDG_CACHE_HOME/rsing`, else `$HOME/.cache/rsing`.
    pub fn locate() -> io::Result<Cache> {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let root = if let Some(dir) = env("RSING_CACHEDIR") {
            PathBuf::from(dir)
        } else if let Some(dir) = env("APPTAINER_CACHEDIR").or_else(|| env("SINGULARITY_CACHEDIR"))
        {
            PathBuf::from(dir).join("rsing")
        } else if let Some(xdg) = env("XDG_CACHE_HOME") {
            PathBuf::from(xdg).join("rsing")
        } else if let Some(home) = env("HOME") {
            PathBuf::from(home).join(".cache").join("rsing")
        } else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no cache directory: set RSING_CACHEDIR or HOME",
            ));
        };
        Ok(Cache::at(root))
    }

    pub fn at(root: PathBuf) -> Cache {
        Cache { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The blob store (`blobs/`, holding `sha256/<hex>`), created if missing.
    pub fn blob_dir(&self) -> io::Result<PathBuf> {
        let dir = self.root.join("blobs");
        std::fs::create_dir_all(dir.join("sha256"))?;
        Ok(dir)
    }

    /// Where the converted image for `key` lives (it may not exist yet).
    pub fn image_path(&self, key: &str) -> io::Result<PathBuf> {
        let dir = self.root.join("images");
        std::fs::create_dir_all(&dir)?;
        Ok(dir.join(format!("{key}.sif")))
    }

    /// Waits for the exclusive lock of `key` (one converter per image at a time).
    pub fn lock(&self, key: &str) -> io::Result<KeyLock> {
        let path = self.image_path(key)?.with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io::Error::from(e))?;
        Ok(KeyLock { _lock: lock })
    }

    /// Shares the cache with other pulls; waits only while a `clean` runs.
    pub fn in_use(&self) -> io::Result<UseLock> {
        self.use_lock(nix::fcntl::FlockArg::LockShared)
    }

    fn use_lock(&self, how: nix::fcntl::FlockArg) -> io::Result<UseLock> {
        std::fs::create_dir_all(&self.root)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join("in-use.lock"))?;
        let nonblock = match how {
            nix::fcntl::FlockArg::LockShared => nix::fcntl::FlockArg::LockSharedNonblock,
            _ => nix::fcntl::FlockArg::LockExclusiveNonblock,
        };
        let file = match nix::fcntl::Flock::lock(file, nonblock) {
            Ok(lock) => return Ok(UseLock { _lock: lock }),
            Err((file, nix::errno::Errno::EWOULDBLOCK)) => file,
            Err((_, e)) => return Err(e.into()),
        };
        tracing::warn!(
            "the cache {} is busy (a pull or a clean is running); waiting",
            self.root.display()
        );
        let lock = nix::fcntl::Flock::lock(file, how).map_err(|(_, e)| io::Error::from(e))?;
        Ok(UseLock { _lock: lock })
    }

    /// Every blob and image in the cache.
    pub fn list(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        collect(&self.root.join("blobs/sha256"), "blob", None, &mut out)?;
        collect(&self.root.join("images"), "image", Some("sif"), &mut out)?;
        collect(&self.root.join("http"), "image", Some("sif"), &mut out)?;
        collect_build_steps(&self.root.join("build/steps"), &mut out)?;
        out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        Ok(out)
    }

    /// Removes entries unused for `older_than` (all entries when `None`); returns what was
    /// removed. Leftovers of interrupted downloads (`*.partial`) go too.
    /// Waits for running pulls and builds to finish (see [`UseLock`]).
    pub fn clean(&self, older_than: Option<Duration>) -> io::Result<Vec<Entry>> {
        let _exclusive = self.use_lock(nix::fcntl::FlockArg::LockExclusive)?;
        let now = SystemTime::now();
        let chosen: Vec<Entry> = self
            .list()?
            .into_iter()
            .filter(|e| {
                let age = now.duration_since(e.used).unwrap_or_default();
                older_than.is_none_or(|limit| age >= limit)
            })
            .collect();
        let leftovers: &[&str] = if older_than.is_none() {
            &["blob", "image"]
        } else {
            &[]
        };
        self.remove_locked(&chosen, leftovers)?;
        Ok(chosen)
    }

    /// Removes `entries` (from [`Cache::list`]) and, for each kind in `leftovers_of`, whatever
    /// else lies in that kind's directories (interrupted downloads, lock files). Waits for
    /// running pulls and builds first, as [`Cache::clean`] does: a pull's `.partial` file is
    /// never removed under it. Returns the bytes freed.
    pub fn remove(&self, entries: &[Entry], leftovers_of: &[&str]) -> io::Result<u64> {
        let _exclusive = self.use_lock(nix::fcntl::FlockArg::LockExclusive)?;
        self.remove_locked(entries, leftovers_of)
    }

    fn remove_locked(&self, entries: &[Entry], leftovers_of: &[&str]) -> io::Result<u64> {
        let mut freed = 0;
        for entry in entries {
            let gone = if entry.path.is_dir() {
                std::fs::remove_dir_all(&entry.path)
            } else {
                std::fs::remove_file(&entry.path)
            };
            match gone {
                Ok(()) => freed += entry.size,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("removing {}: {e}", entry.path.display()),
                    ))
                }
            }
        }
        for kind in leftovers_of {
            let dirs: &[&str] = match *kind {
                "blob" => &["blobs/sha256"],
                "image" => &["images", "http", "lazy"],
                _ => &[],
            };
            // A running container keeps its open file.
            for dir in dirs.iter().map(|d| self.root.join(d)) {
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    if !e.path().is_dir() {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        Ok(freed)
    }
}

/// Build-cache snapshots (`build/steps/<key>/`, see `build::cache`): one entry each, sized by
/// the files in it, used when its `owners.json` was last read.
fn collect_build_steps(dir: &Path, out: &mut Vec<Entry>) -> io::Result<()> {
    fn size(p: &Path) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return 0;
        };
        if !meta.is_dir() {
            return meta.len();
        }
        std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| size(&e.path())).sum())
            .unwrap_or(0)
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(meta) = std::fs::metadata(e.path().join("owners.json")) else {
            continue;
        };
        let used = last_used(&meta);
        out.push(Entry {
            kind: "build",
            size: size(&e.path()),
            name,
            path: e.path(),
            used,
        });
    }
    Ok(())
}

/// When an entry was last used: its access time, or its modification time if later (a
/// `noatime` mount never updates the first).
fn last_used(meta: &std::fs::Metadata) -> SystemTime {
    meta.accessed()
        .ok()
        .max(meta.modified().ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn collect(
    dir: &Path,
    kind: &'static str,
    ext: Option<&str>,
    out: &mut Vec<Entry>,
) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        let wanted = match ext {
            Some(ext) => path.extension().is_some_and(|x| x == ext),
            None => !name.contains('.') || name.ends_with(".partial"),
        };
        let Ok(meta) = e.metadata() else { continue };
        if !wanted || !meta.is_file() {
            continue;
        }
        let used = last_used(&meta);
        out.push(Entry {
            kind,
            name,
            path,
            size: meta.len(),
            used,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_and_clean_by_age() {
        let root = std::env::temp_dir().join(format!("rsing-cache-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let cache = Cache::at(root.clone());
        let blobs = cache.blob_dir().unwrap();
        std::fs::write(blobs.join("sha256").join("ab".repeat(32)), b"blob").unwrap();
        std::fs::write(cache.image_path("k1").unwrap(), b"sif").unwrap();
        let listed = cache.list().unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(cache
            .clean(Some(Duration::from_secs(3600)))
            .unwrap()
            .is_empty());
        assert_eq!(cache.clean(None).unwrap().len(), 2);
        assert!(cache.list().unwrap().is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_key_lock_excludes_a_second_holder() {
        let root = std::env::temp_dir().join(format!("rsing-cachelock-{}", std::process::id()));
        let cache = Cache::at(root.clone());
        let held = cache.lock("k").unwrap();
        let path = cache.image_path("k").unwrap().with_extension("lock");
        let other = File::open(&path).unwrap();
        assert!(
            nix::fcntl::Flock::lock(other, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
        );
        drop(held);
        std::fs::remove_dir_all(root).unwrap();
    }
}
