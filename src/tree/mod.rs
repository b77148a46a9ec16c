//! A read-only view of an image's root tree, whatever stores it.
//!
//! The runtime and the image layer both need to look inside an image before any namespace
//! exists: to resolve bind destinations (following the image's own symlinks), to find the
//! runscript and environment scripts, to read `/etc/passwd`. A SquashFS archive and a sandbox
//! directory answer those questions through this one trait, so the callers never care which.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::squashfs::{Archive, FileKind};

/// What kind of node sits at a path (no symlink following).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File,
    Symlink,
    /// Devices, fifos and sockets: they exist, but are neither dirs nor regular files.
    Other,
}

/// Lookups on an image's root filesystem. Paths are absolute byte strings inside the image.
pub trait Tree: Send + Sync {
    /// The kind of node at `path`, without following a final symlink; `None` when absent.
    /// Intermediate components must already be real directories (see [`resolve`]).
    fn lstat(&self, path: &[u8]) -> io::Result<Option<NodeKind>>;
    /// The target of the symlink at `path`.
    fn read_link(&self, path: &[u8]) -> io::Result<Vec<u8>>;
    /// The whole content of the regular file at `path`, refusing more than `limit` bytes.
    fn read_file(&self, path: &[u8], limit: usize) -> io::Result<Vec<u8>>;
    /// Names in the directory at `path` (no `.` or `..`), unsorted.
    fn list_dir(&self, path: &[u8]) -> io::Result<Vec<Vec<u8>>>;
}

fn kind_of(kind: FileKind) -> NodeKind {
    match kind {
        FileKind::Directory => NodeKind::Dir,
        FileKind::File => NodeKind::File,
        FileKind::Symlink => NodeKind::Symlink,
        _ => NodeKind::Other,
    }
}

fn to_io(err: crate::squashfs::Error) -> io::Error {
    io::Error::other(err.to_string())
}

fn not_found(path: &[u8]) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found in image", String::from_utf8_lossy(path)),
    )
}

impl Tree for Archive {
    fn lstat(&self, path: &[u8]) -> io::Result<Option<NodeKind>> {
        Ok(self.resolve(path).map_err(to_io)?.map(|i| kind_of(i.kind)))
    }

    fn read_link(&self, path: &[u8]) -> io::Result<Vec<u8>> {
        let inode = self
            .resolve(path)
            .map_err(to_io)?
            .ok_or_else(|| not_found(path))?;
        Archive::read_link(self, &inode).map_err(to_io)
    }

    fn read_file(&self, path: &[u8], limit: usize) -> io::Result<Vec<u8>> {
        let inode = self
            .resolve(path)
            .map_err(to_io)?
            .ok_or_else(|| not_found(path))?;
        if inode.size > limit as u64 {
            return Err(io::Error::other(format!(
                "{} is larger than {limit} bytes",
                String::from_utf8_lossy(path)
            )));
        }
        let mut buf = vec![0u8; inode.size as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = self
                .read_at(&inode, done as u64, &mut buf[done..])
                .map_err(to_io)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    fn list_dir(&self, path: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let inode = self
            .resolve(path)
            .map_err(to_io)?
            .ok_or_else(|| not_found(path))?;
        Ok(self
            .read_dir(&inode)
            .map_err(to_io)?
            .into_iter()
            .map(|e| e.name)
            .collect())
    }
}

/// A sandbox directory used as an image root.
pub struct DirTree {
    root: PathBuf,
    /// The root opened once (`O_PATH`): every lookup is relative to it, so a root given as
    /// `/proc/self/fd/N` (the image server's mount) is not re-resolved through /proc for each
    /// of the plan's few dozen lookups. `None` when the root cannot be opened: lookups then use
    /// joined paths and report the error themselves.
    dir: Option<std::os::fd::OwnedFd>,
}

impl DirTree {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let dir = nix::fcntl::open(
            &root,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok();
        DirTree { root, dir }
    }

    fn host_path(&self, path: &[u8]) -> PathBuf {
        let rel = Path::new(std::ffi::OsStr::from_bytes(path));
        self.root.join(rel.strip_prefix("/").unwrap_or(rel))
    }

    /// `path` relative to the root (`.` for the root itself).
    fn relative(path: &[u8]) -> &Path {
        let rel = Path::new(std::ffi::OsStr::from_bytes(path));
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        }
    }

    /// Opens `path` (no final symlink followed for `O_PATH` callers) below the root.
    fn open(&self, path: &[u8], flags: nix::fcntl::OFlag) -> io::Result<std::fs::File> {
        let flags = flags | nix::fcntl::OFlag::O_CLOEXEC;
        let fd = match &self.dir {
            Some(dir) => nix::fcntl::openat(
                dir,
                Self::relative(path),
                flags,
                nix::sys::stat::Mode::empty(),
            ),
            None => nix::fcntl::open(&self.host_path(path), flags, nix::sys::stat::Mode::empty()),
        }?;
        Ok(std::fs::File::from(fd))
    }
}

impl Tree for DirTree {
    fn lstat(&self, path: &[u8]) -> io::Result<Option<NodeKind>> {
        use nix::sys::stat::SFlag;
        let st = match &self.dir {
            Some(dir) => nix::sys::stat::fstatat(
                dir,
                Self::relative(path),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ),
            None => nix::sys::stat::lstat(&self.host_path(path)),
        };
        match st {
            Ok(st) => {
                let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                Ok(Some(if kind == SFlag::S_IFDIR {
                    NodeKind::Dir
                } else if kind == SFlag::S_IFREG {
                    NodeKind::File
                } else if kind == SFlag::S_IFLNK {
                    NodeKind::Symlink
                } else {
                    NodeKind::Other
                }))
            }
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn read_link(&self, path: &[u8]) -> io::Result<Vec<u8>> {
        let target = match &self.dir {
            Some(dir) => nix::fcntl::readlinkat(dir, Self::relative(path))?,
            None => nix::fcntl::readlink(&self.host_path(path))?,
        };
        Ok(target.as_bytes().to_vec())
    }

    fn read_file(&self, path: &[u8], limit: usize) -> io::Result<Vec<u8>> {
        use std::io::Read;
        let mut out = Vec::new();
        self.open(path, nix::fcntl::OFlag::O_RDONLY)?
            .take(limit as u64 + 1)
            .read_to_end(&mut out)?;
        if out.len() > limit {
            return Err(io::Error::other(format!(
                "{} is larger than {limit} bytes",
                String::from_utf8_lossy(path)
            )));
        }
        Ok(out)
    }

    fn list_dir(&self, path: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        let dir = self.open(
            path,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        )?;
        let mut entries = nix::dir::Dir::from_fd(dir.into())?;
        let mut names = Vec::new();
        for entry in entries.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(name);
            }
        }
        Ok(names)
    }
}

/// Where a path leads inside the image once the image's own symlinks are followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The canonical absolute path inside the image (no symlinks, no `.` or `..`).
    pub path: Vec<u8>,
    /// The kind of node there, or `None` when that path (or a parent) does not exist.
    pub kind: Option<NodeKind>,
}

const MAX_SYMLINK_HOPS: usize = 40;

/// Follows `path` through the image as the kernel would inside the container: absolute
/// symlinks restart at the image root, never at the host's. A missing component ends the walk:
/// the rest is appended unresolved, and the caller creates it as a mount-point stub.
pub fn resolve(tree: &dyn Tree, path: &[u8]) -> io::Result<Resolved> {
    let mut pending: Vec<Vec<u8>> = components(path);
    pending.reverse();
    let mut current: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    while let Some(name) = pending.pop() {
        if name == b".." {
            current.pop();
            continue;
        }
        current.push(name);
        let here = join(&current);
        match tree.lstat(&here)? {
            Some(NodeKind::Dir) => {}
            Some(NodeKind::Symlink) => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return Err(io::Error::other(format!(
                        "too many symlinks resolving {} in image",
                        String::from_utf8_lossy(path)
                    )));
                }
                let target = tree.read_link(&here)?;
                current.pop();
                if target.first() == Some(&b'/') {
                    current.clear();
                }
                for part in components(&target).into_iter().rev() {
                    pending.push(part);
                }
            }
            Some(kind) => {
                if !pending.is_empty() {
                    // A file in the middle of the path: the kernel would say ENOTDIR.
                    return Err(io::Error::other(format!(
                        "{} is not a directory in the image",
                        String::from_utf8_lossy(&here)
                    )));
                }
                return Ok(Resolved {
                    path: here,
                    kind: Some(kind),
                });
            }
            None => {
                for part in pending.into_iter().rev() {
                    if part != b".." {
                        current.push(part);
                    }
                }
                return Ok(Resolved {
                    path: join(&current),
                    kind: None,
                });
            }
        }
    }
    Ok(Resolved {
        path: join(&current),
        kind: Some(NodeKind::Dir),
    })
}

fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| c.to_vec())
        .collect()
}

fn join(parts: &[Vec<u8>]) -> Vec<u8> {
    if parts.is_empty() {
        return b"/".to_vec();
    }
    let mut out = Vec::new();
    for p in parts {
        out.push(b'/');
        out.extend_from_slice(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn sandbox() -> (PathBuf, DirTree) {
        let dir = std::env::temp_dir().join(format!(
            "rsing-tree-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(dir.join("usr/home")).unwrap();
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(dir.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        symlink("/usr/home", dir.join("home")).unwrap();
        symlink("../etc", dir.join("usr/etc")).unwrap();
        symlink("loop", dir.join("loop")).unwrap();
        (dir.clone(), DirTree::new(dir))
    }

    #[test]
    fn follows_absolute_symlinks_inside_the_image() {
        let (dir, tree) = sandbox();
        let r = resolve(&tree, b"/home/alice/work").unwrap();
        assert_eq!(r.path, b"/usr/home/alice/work");
        assert_eq!(r.kind, None);
        let r = resolve(&tree, b"/usr/etc/passwd").unwrap();
        assert_eq!(r.path, b"/etc/passwd");
        assert_eq!(r.kind, Some(NodeKind::File));
        assert_eq!(resolve(&tree, b"/").unwrap().kind, Some(NodeKind::Dir));
        assert!(resolve(&tree, b"/loop/x").is_err());
        assert!(resolve(&tree, b"/etc/passwd/x").is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
