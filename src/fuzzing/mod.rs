//! Entry points that feed arbitrary bytes to rsing's parsers and walk everything they accept,
//! for the cargo-fuzz targets in `fuzz/` and the byte-flip test of the regular test run. Each
//! one must return (never panic, never hang) whatever the input: errors are the expected
//! outcome and are ignored. What a walk reads is bounded ([`Budget`]), so a mutant that claims
//! a file of 2^60 bytes or a directory loop costs a bounded time, and a hang is a bug.
//!
//! Not part of the product: `#[doc(hidden)]` in `lib.rs`.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Cursor, Read, Write};
use std::os::fd::FromRawFd;
use std::path::Path;

use crate::squashfs::{Archive, FileKind, Inode};

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod flip_tests;

/// What one walk may read: entries visited and file bytes.
pub struct Budget {
    pub entries: usize,
    pub bytes_per_file: u64,
    pub bytes: u64,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            entries: 4096,
            bytes_per_file: 256 << 10,
            bytes: 8 << 20,
        }
    }
}

/// `data` as a file (a memfd: no disk, gone when dropped).
pub fn memfile(data: &[u8]) -> std::io::Result<File> {
    // SAFETY: a NUL-terminated name and valid flags; the fd is owned by the File from here.
    let fd = unsafe { libc::memfd_create(c"rsing-fuzz".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and is owned by nothing else.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(data)?;
    Ok(file)
}

/// Walks a SquashFS archive: every directory (each once: loops end), inode, symlink target,
/// xattr list and file content within `budget`. Returns what went wrong first, if anything.
pub fn walk(archive: &Archive, budget: &Budget) -> Result<usize, crate::squashfs::Error> {
    let root = archive.root()?;
    let mut seen = HashSet::new();
    let mut stack: Vec<Inode> = vec![root];
    let (mut entries, mut bytes) = (0usize, 0u64);
    let mut buf = vec![0u8; 64 << 10];
    while let Some(dir) = stack.pop() {
        if !seen.insert(dir.inode_ref) {
            continue;
        }
        for entry in archive.read_dir(&dir)? {
            entries += 1;
            if entries > budget.entries {
                return Ok(entries);
            }
            let inode = archive.inode(entry.inode_ref)?;
            let _ = archive.xattrs(&inode)?;
            match inode.kind {
                FileKind::Directory => stack.push(inode),
                FileKind::Symlink => {
                    archive.read_link(&inode)?;
                }
                FileKind::File => {
                    let mut offset = 0u64;
                    let limit = inode.size.min(budget.bytes_per_file);
                    while offset < limit && bytes < budget.bytes {
                        let want = buf.len().min((limit - offset) as usize);
                        let n = archive.read_at(&inode, offset, &mut buf[..want])?;
                        if n == 0 {
                            break;
                        }
                        offset += n as u64;
                        bytes += n as u64;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(entries)
}

/// A SquashFS image: open, then walk. Whether it was read in full without an error.
pub fn squashfs(data: &[u8]) -> bool {
    let Ok(file) = memfile(data) else {
        return false;
    };
    let Ok(archive) = Archive::open(file, 0) else {
        return false;
    };
    let _ = archive.resolve(b"/etc/passwd");
    let _ = archive.resolve(b"/a/../b/./c");
    walk(&archive, &Budget::default()).is_ok()
}

/// A SIF file: header, descriptors, primary partition, every object (bounded), and the
/// SquashFS in the partition. Whether the partition was read in full without an error.
pub fn sif(data: &[u8]) -> bool {
    let Ok(file) = memfile(data) else {
        return false;
    };
    let Ok(sif) = crate::sif::SifFile::read(&file) else {
        return false;
    };
    for d in &sif.descriptors {
        let _ = sif.read_object(&file, d);
    }
    let Ok(part) = sif.primary_partition() else {
        return false;
    };
    match Archive::open(file, part.offset) {
        Ok(archive) => walk(&archive, &Budget::default()).is_ok(),
        Err(_) => false,
    }
}

/// A layer blob (`data` as given: plain, gzip or zstd tar).
struct BytesLayer<'a>(&'a [u8]);

impl crate::convert::flatten::Layer for BytesLayer<'_> {
    fn name(&self) -> String {
        "layer".into()
    }
    fn open_tar(&self) -> std::io::Result<Box<dyn Read + Send>> {
        // Through the decompression sniffing, as real layer blobs go.
        crate::oci::decompress(
            Box::new(Cursor::new(self.0.to_vec())),
            "application/vnd.oci.image.layer.v1.tar",
        )
    }
}

/// The layer merger: `data` split at its first `\0\0SPLIT\0\0` into a lower and an upper tar
/// layer (one layer without it), merged into a SquashFS, which is then read back and walked.
pub fn layers(data: &[u8]) {
    const SPLIT: &[u8] = b"\0\0SPLIT\0\0";
    let parts: Vec<&[u8]> = match data.windows(SPLIT.len()).position(|w| w == SPLIT) {
        Some(at) => vec![&data[..at], &data[at + SPLIT.len()..]],
        None => vec![data],
    };
    let layers: Vec<BytesLayer> = parts.into_iter().map(BytesLayer).collect();
    let refs: Vec<&dyn crate::convert::flatten::Layer> = layers
        .iter()
        .map(|l| l as &dyn crate::convert::flatten::Layer)
        .collect();
    let options = crate::squashfs::write::WriterOptions {
        threads: 1,
        level: Some(1),
        mkfs_time: 0,
        ..Default::default()
    };
    let Ok(mut writer) =
        crate::squashfs::write::SquashfsWriter::new(Cursor::new(Vec::new()), options)
    else {
        return;
    };
    if crate::convert::flatten::flatten(&refs, &mut writer).is_err() {
        return;
    }
    let Ok((out, _)) = writer.finish() else {
        return;
    };
    // What the merger wrote must read back: an error here is a bug, not bad input.
    let file = memfile(&out.into_inner()).expect("a memfd");
    let archive = Archive::open(file, 0).expect("the merged image opens");
    walk(&archive, &Budget::default()).expect("the merged image reads back");
}

/// Manifests, indexes and configs as the registry and layout code parse them.
pub fn manifest(data: &[u8]) {
    let _ = crate::oci::parse_manifest(data);
    let _ = crate::oci::parse_config(data);
    let _ = crate::oci::select_manifest(data, &crate::oci::Platform::host());
}

/// The site configuration file (`/etc/rsing/rsing.conf`) parser.
pub fn siteconf(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::siteconf::parse(&text, Path::new("fuzz.conf"));
}
