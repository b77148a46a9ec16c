//! `rsing overlay seal`: a writable overlay's upper directory packed into a read-only SquashFS
//! layer that stacks with `--overlay OUT.sqfs`.
//!
//! The layer keeps overlayfs's own marks in the form that the kernel reads from a lower layer
//! mounted with `userxattr` (as rsing mounts every overlay): a deleted file is a character
//! device 0:0 and a directory that replaced an image directory carries
//! `user.overlay.opaque=y`. Overlays written elsewhere mark the same things differently, and
//! those are converted: `trusted.overlay.opaque` (kernel overlayfs as real root, Apptainer's
//! setuid mode), `user.fuseoverlayfs.opaque` and `.wh.NAME` / `.wh..wh..opq` files
//! (fuse-overlayfs without mknod). Other overlayfs bookkeeping (`*.overlay.origin`, `impure`,
//! `redirect`…) refers to inodes of the writable overlay's own file systems and is dropped.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::dir::io_at;
use super::{Error, Result};
use crate::squashfs::write::{Metadata, SquashfsWriter};
use crate::squashfs::FileKind;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
const OPAQUE: &[u8] = b"user.overlay.opaque";

/// Packs the overlay content `upper` into `writer`.
pub fn seal<W: Write + Seek>(upper: &Path, writer: &mut SquashfsWriter<W>) -> Result<()> {
    let st = std::fs::symlink_metadata(upper).map_err(|e| io_at(upper, e))?;
    if !st.is_dir() {
        return Err(Error::Config(format!(
            "{} is not a directory",
            upper.display()
        )));
    }
    let mut links = HashMap::new();
    let meta = metadata(upper, &st, false)?;
    writer.add_dir(b"/", meta)?;
    walk(upper, b"", writer, &mut links)
}

fn walk<W: Write + Seek>(
    dir: &Path,
    prefix: &[u8],
    writer: &mut SquashfsWriter<W>,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| io_at(dir, e))?
        .collect::<io::Result<_>>()
        .map_err(|e| io_at(dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let name = name.as_bytes();
        if name == OPAQUE_MARKER {
            continue;
        }
        let host = entry.path();
        let st = std::fs::symlink_metadata(&host).map_err(|e| io_at(&host, e))?;
        let join = |n: &[u8]| [prefix, b"/", n].concat();
        if let Some(deleted) = name.strip_prefix(WHITEOUT_PREFIX) {
            let meta = Metadata {
                mode: 0,
                uid: st.uid(),
                gid: st.gid(),
                mtime: mtime(&st),
                xattrs: Vec::new(),
            };
            writer.add_device(&join(deleted), meta, FileKind::CharDevice, 0)?;
            continue;
        }
        let path = join(name);
        let kind = st.file_type();
        if kind.is_dir() {
            let child_marker = host
                .join(std::ffi::OsStr::from_bytes(OPAQUE_MARKER))
                .exists();
            writer.add_dir(&path, metadata(&host, &st, child_marker)?)?;
            walk(&host, &path, writer, links)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&host).map_err(|e| io_at(&host, e))?;
            writer.add_symlink(
                &path,
                metadata(&host, &st, false)?,
                target.as_os_str().as_bytes(),
            )?;
        } else if kind.is_file() {
            if st.nlink() > 1 {
                if let Some(first) = links.get(&(st.dev(), st.ino())) {
                    writer.add_hardlink(&path, first)?;
                    continue;
                }
                links.insert((st.dev(), st.ino()), path.clone());
            }
            let meta = metadata(&host, &st, false)?;
            let mut file = File::open(&host).map_err(|e| io_at(&host, e))?;
            writer.add_file(&path, meta, &mut file)?;
        } else {
            let (kind, rdev) = super::dir::special(kind, st.rdev());
            writer.add_device(&path, metadata(&host, &st, false)?, kind, rdev)?;
        }
    }
    Ok(())
}

fn mtime(st: &std::fs::Metadata) -> u32 {
    st.mtime().clamp(0, i64::from(u32::MAX)) as u32
}

/// Owner, mode, time and xattrs, with the opaque marks of every overlay flavour turned into
/// `user.overlay.opaque=y` and the rest of overlayfs's bookkeeping dropped.
fn metadata(path: &Path, st: &std::fs::Metadata, opaque_marker: bool) -> Result<Metadata> {
    let mut xattrs = Vec::new();
    let mut opaque = opaque_marker;
    for (name, value) in read_xattrs(path)? {
        let overlay_mark = [
            &b"trusted.overlay."[..],
            b"user.overlay.",
            b"user.fuseoverlayfs.",
        ]
        .iter()
        .find_map(|p| name.strip_prefix(*p));
        match overlay_mark {
            Some(b"opaque") => opaque |= value == b"y",
            Some(_) => {}
            None => xattrs.push((name, value)),
        }
    }
    if opaque {
        xattrs.push((OPAQUE.to_vec(), b"y".to_vec()));
    }
    Ok(Metadata {
        mode: (st.mode() & 0o7777) as u16,
        uid: st.uid(),
        gid: st.gid(),
        mtime: mtime(st),
        xattrs,
    })
}

/// The xattrs of `path` (not following a symlink) that can be read; names the kernel refuses
/// to show this user (`trusted.*` outside a namespace that owns them) are simply absent.
fn read_xattrs(path: &Path) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Config(format!("{}: NUL in path", path.display())))?;
    let mut names = vec![0u8; 4096];
    // SAFETY: valid C string and a buffer of the given length.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(io_at(path, e)),
        };
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::CString::new(name).unwrap_or_default();
        let mut value = vec![0u8; 65536];
        // SAFETY: valid C strings and a buffer of the given length.
        let len = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if len >= 0 {
            value.truncate(len as usize);
            out.push((name.to_vec(), value));
        }
    }
    Ok(out)
}
