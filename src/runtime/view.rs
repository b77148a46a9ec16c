//! The container's file tree as the plan has laid it out so far: the image, with the host
//! directories, tmpfs and generated files of earlier mount ops on top.
//!
//! Bind destinations are resolved through this view, the way the container itself will see
//! them: a symlink inside a bound host directory (a home reached through `/tmp/homes -> /home`)
//! is followed inside the container root, never through rsing's staging tree, and `..` stops
//! at the container root. Without it the kernel would resolve such a destination at mount time
//! relative to the staging root, so the bind failed or landed outside the container.

use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::plan::MountOp;
use crate::tree::{NodeKind, Tree};

/// The image `tree` under the mounts `ops` (destinations already resolved).
pub struct MountView<'a> {
    pub ops: &'a [MountOp],
    pub image: &'a dyn Tree,
}

/// Where a container path lives: in the image, or below one of the planned mounts.
enum Place<'a> {
    Image,
    /// Below a bind of this host path; the joined host path.
    Host(PathBuf),
    /// The root of a tmpfs, proc or generated file (its content is not known yet).
    Fresh(&'a MountOp, bool),
}

/// The rest of `path` below `dst`, when `path` is `dst` or lies below it.
fn below<'p>(path: &'p [u8], dst: &[u8]) -> Option<&'p [u8]> {
    if dst == b"/" {
        return Some(path.strip_prefix(b"/").unwrap_or(path));
    }
    let rest = path.strip_prefix(dst)?;
    match rest.first() {
        None => Some(rest),
        Some(b'/') => Some(&rest[1..]),
        Some(_) => None,
    }
}

impl MountView<'_> {
    /// The last planned mount that covers `path` (a later mount hides an earlier one).
    fn place(&self, path: &[u8]) -> Place<'_> {
        for op in self.ops.iter().rev() {
            let Some(rest) = below(path, op.dst()) else {
                continue;
            };
            return match op {
                MountOp::Bind { src, .. } | MountOp::BindNew { src, .. } => {
                    let rest = Path::new(std::ffi::OsStr::from_bytes(rest));
                    Place::Host(if rest.as_os_str().is_empty() {
                        src.clone()
                    } else {
                        src.join(rest)
                    })
                }
                _ => Place::Fresh(op, rest.is_empty()),
            };
        }
        Place::Image
    }
}

impl MountView<'_> {
    /// The host bind (source, destination) whose mount `path` lies on, if any.
    pub fn host_bind_over(&self, path: &[u8]) -> Option<(&Path, &[u8])> {
        let op = self
            .ops
            .iter()
            .rev()
            .find(|op| below(path, op.dst()).is_some())?;
        match op {
            MountOp::Bind { src, dst, .. } | MountOp::BindNew { src, dst, .. } => {
                Some((src.as_path(), dst.as_slice()))
            }
            _ => None,
        }
    }
}

impl Tree for MountView<'_> {
    fn lstat(&self, path: &[u8]) -> io::Result<Option<NodeKind>> {
        match self.place(path) {
            // A directory the image lacks but an earlier mount point lies below: it will be
            // a stub directory by then.
            Place::Image => match self.image.lstat(path)? {
                None if self
                    .ops
                    .iter()
                    .any(|op| below(op.dst(), path).is_some_and(|rest| !rest.is_empty())) =>
                {
                    Ok(Some(NodeKind::Dir))
                }
                other => Ok(other),
            },
            Place::Host(host) => match std::fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => Ok(Some(NodeKind::Symlink)),
                Ok(m) if m.is_dir() => Ok(Some(NodeKind::Dir)),
                Ok(m) if m.is_file() => Ok(Some(NodeKind::File)),
                Ok(_) => Ok(Some(NodeKind::Other)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("host path {}: {e}", host.display()),
                )),
            },
            Place::Fresh(MountOp::Generated { .. }, true) => Ok(Some(NodeKind::File)),
            Place::Fresh(_, true) => Ok(Some(NodeKind::Dir)),
            Place::Fresh(_, false) => Ok(None),
        }
    }

    fn read_link(&self, path: &[u8]) -> io::Result<Vec<u8>> {
        match self.place(path) {
            Place::Host(host) => Ok(std::fs::read_link(host)?.into_os_string().into_vec()),
            _ => self.image.read_link(path),
        }
    }

    fn read_file(&self, path: &[u8], limit: usize) -> io::Result<Vec<u8>> {
        self.image.read_file(path, limit)
    }

    fn list_dir(&self, path: &[u8]) -> io::Result<Vec<Vec<u8>>> {
        self.image.list_dir(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_is_component_wise() {
        assert_eq!(below(b"/tmp/a", b"/tmp"), Some(&b"a"[..]));
        assert_eq!(below(b"/tmp", b"/tmp"), Some(&b""[..]));
        assert_eq!(below(b"/tmpx", b"/tmp"), None);
        assert_eq!(below(b"/x/y", b"/"), Some(&b"x/y"[..]));
    }
}
