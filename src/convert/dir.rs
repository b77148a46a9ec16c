//! Packing a directory (a sandbox image) into the SquashFS of a SIF, and wrapping an existing
//! SquashFS file into a SIF: `rsing build OUT.sif DIR` and `rsing build OUT.sif IMG.sqfs`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::{ConvertOptions, Error, Result};
use crate::squashfs::write::{encode_rdev, Metadata, SquashfsWriter};
use crate::squashfs::FileKind;

/// The owner `(uid, gid)` an entry gets in the image, from its path (`/etc/x`) and metadata:
/// a built tree belongs to the caller on disk but to the owners its build asked for.
pub type OwnerOf<'a> = &'a dyn Fn(&[u8], &std::fs::Metadata) -> (u32, u32);

/// Adds every entry under `root` (not following symlinks) to `writer`, owned as `owner`
/// says; files with several links inside the tree stay hard links.
pub fn add_tree_owned<W: Write + Seek>(
    root: &Path,
    writer: &mut SquashfsWriter<W>,
    owner: OwnerOf,
) -> Result<()> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| io_at(root, e))?;
    if !meta.is_dir() {
        return Err(Error::Config(format!(
            "{} is not a directory",
            root.display()
        )));
    }
    writer.add_dir(b"/", metadata_of(&meta, owner(b"/", &meta)))?;
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    walk(root, b"", writer, &mut links, owner)
}

fn walk<W: Write + Seek>(
    dir: &Path,
    prefix: &[u8],
    writer: &mut SquashfsWriter<W>,
    links: &mut HashMap<(u64, u64), Vec<u8>>,
    owner: OwnerOf,
) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| io_at(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_at(dir, e))?;
        let host = entry.path();
        let mut path = prefix.to_vec();
        path.push(b'/');
        path.extend_from_slice(entry.file_name().as_bytes());
        let st = std::fs::symlink_metadata(&host).map_err(|e| io_at(&host, e))?;
        let meta = metadata_of(&st, owner(&path, &st));
        let kind = st.file_type();
        if kind.is_dir() {
            writer.add_dir(&path, meta)?;
            walk(&host, &path, writer, links, owner)?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&host).map_err(|e| io_at(&host, e))?;
            writer.add_symlink(&path, meta, target.as_os_str().as_bytes())?;
        } else if kind.is_file() {
            if st.nlink() > 1 {
                if let Some(first) = links.get(&(st.dev(), st.ino())) {
                    writer.add_hardlink(&path, first)?;
                    continue;
                }
                links.insert((st.dev(), st.ino()), path.clone());
            }
            let mut file = File::open(&host).map_err(|e| io_at(&host, e))?;
            writer.add_file(&path, meta, &mut file)?;
        } else {
            let (kind, rdev) = special(kind, st.rdev());
            writer.add_device(&path, meta, kind, rdev)?;
        }
    }
    Ok(())
}

/// The SquashFS kind and stored device number of an entry that is not a directory, a regular
/// file or a symlink (shared with `seal`).
pub(super) fn special(kind: std::fs::FileType, rdev: u64) -> (FileKind, u32) {
    let device = || encode_rdev(libc::major(rdev), libc::minor(rdev));
    if kind.is_block_device() {
        (FileKind::BlockDevice, device())
    } else if kind.is_char_device() {
        (FileKind::CharDevice, device())
    } else if kind.is_fifo() {
        (FileKind::Fifo, 0)
    } else {
        (FileKind::Socket, 0)
    }
}

fn metadata_of(st: &std::fs::Metadata, (uid, gid): (u32, u32)) -> Metadata {
    Metadata {
        mode: (st.mode() & 0o7777) as u16,
        uid,
        gid,
        mtime: st.mtime().clamp(0, i64::from(u32::MAX)) as u32,
        xattrs: Vec::new(),
    }
}

pub(super) fn io_at(path: &Path, e: io::Error) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// Wraps SquashFS file `squashfs` (whole) into a SIF written to `out`.
pub fn wrap_squashfs(squashfs: &Path, out: &mut File, options: &ConvertOptions) -> Result<u64> {
    use crate::contract::sif_objects::DEFFILE;
    use crate::sif::{FsType, Object, ObjectSource, PartType, SifWriter};
    let file = File::open(squashfs).map_err(|e| io_at(squashfs, e))?;
    let len = file.metadata().map_err(|e| io_at(squashfs, e))?.len();
    let mut sif = SifWriter::new(super::sif_out::sif_options(options));
    sif.add_object(Object::bytes(
        DEFFILE.data_type,
        DEFFILE.name,
        options.deffile.clone(),
    ));
    sif.add_object(Object::partition(
        FsType::Squashfs,
        PartType::PrimSys,
        super::sif_out::arch_of(""),
        ObjectSource::File {
            file,
            offset: 0,
            len,
        },
    ));
    sif.write_to(out)?;
    Ok(out.stream_position()?)
}
