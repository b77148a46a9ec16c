//! Reading a SIF file: header and descriptor validation, object access.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::format::{self, Descriptor, Header, DESCRIPTOR_LEN, HEADER_LEN, MAGIC, VERSION};
use super::{DataType, Error, PartType, Result};

/// Largest object [`SifFile::read_object`] reads into memory.
pub const MAX_OBJECT_READ: u64 = 64 << 20;

/// Refuse descriptor tables with more slots than this (28 MiB of descriptors).
const MAX_DESCRIPTORS: i64 = 50_000;

/// Opens `path` for reading an image from it, never blocking: a FIFO, socket or character
/// device named as an image would otherwise hang `open` or the first read forever. Opened with
/// `O_NONBLOCK` (no effect on regular files) and checked with `fstat` on the opened file, so a
/// path swapped between a check and the open is caught too. Regular files and block devices
/// pass.
pub fn open_image_file(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    let what = if kind.is_file() || kind.is_block_device() {
        return Ok(file);
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("is {what}, not an image file"),
    ))
}

/// A validated SIF header and its used descriptors (in slot order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SifFile {
    pub header: Header,
    pub descriptors: Vec<Descriptor>,
}

impl SifFile {
    /// Read and validate the header and descriptor table with positioned reads (the file's
    /// cursor is not used). Checks the magic, the version, that the descriptor table lies
    /// within the file and that every used descriptor's data lies within the file.
    pub fn read(file: &File) -> Result<SifFile> {
        let file_len = file.metadata()?.len();

        let mut hb = [0u8; HEADER_LEN];
        let n = read_full_at(file, &mut hb, 0)?;
        if n < HEADER_LEN {
            return Err(if super::is_sif(&hb[..n]) {
                Error::Corrupt("header is truncated".into())
            } else {
                Error::NotSif
            });
        }
        if &hb[32..42] != MAGIC {
            return Err(Error::NotSif);
        }
        if &hb[42..45] != b"01\0" {
            let v = String::from_utf8_lossy(format::trim_nul(&hb[42..45])).into_owned();
            return Err(Error::UnsupportedVersion(v));
        }
        let header = Header::decode(&hb);
        debug_assert_eq!(header.version, VERSION);

        let total = header.descriptors_total;
        let doff = header.descriptors_offset;
        if !(0..=MAX_DESCRIPTORS).contains(&total) {
            return Err(Error::Corrupt(format!("bad descriptor count {total}")));
        }
        if doff < HEADER_LEN as i64 {
            return Err(Error::Corrupt(format!(
                "bad descriptor table offset {doff}"
            )));
        }
        let table_len = total as u64 * DESCRIPTOR_LEN as u64;
        let table_end = (doff as u64)
            .checked_add(table_len)
            .ok_or_else(|| Error::Corrupt("descriptor table offset overflows".into()))?;
        if table_end > file_len {
            return Err(Error::Corrupt(
                "descriptor table extends past end of file".into(),
            ));
        }

        let mut table = vec![0u8; table_len as usize];
        let n = read_full_at(file, &mut table, doff as u64)?;
        if n < table.len() {
            return Err(Error::Corrupt(
                "descriptor table extends past end of file".into(),
            ));
        }

        let mut descriptors = Vec::new();
        for (slot, chunk) in table.chunks_exact(DESCRIPTOR_LEN).enumerate() {
            let Some(raw) = Descriptor::decode(chunk) else {
                continue;
            };
            let id = raw.id;
            if raw.offset < 0 || raw.size < 0 || raw.size_with_padding < 0 {
                return Err(Error::Corrupt(format!(
                    "descriptor {id} has a negative offset or size"
                )));
            }
            let (offset, size) = (raw.offset as u64, raw.size as u64);
            match offset.checked_add(size) {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(Error::Corrupt(format!(
                        "descriptor {id} points past end of file"
                    )))
                }
            }
            if id == 0 {
                return Err(Error::Corrupt(format!(
                    "descriptor in slot {slot} has ID 0"
                )));
            }
            if descriptors.iter().any(|d: &Descriptor| d.id == id) {
                return Err(Error::Corrupt(format!("duplicate descriptor ID {id}")));
            }
            let swp = raw.size_with_padding as u64;
            descriptors.push(Descriptor::from_raw(raw, offset, size, swp));
        }

        Ok(SifFile {
            header,
            descriptors,
        })
    }

    /// Open `path` read-only and read it.
    pub fn open_path(path: &Path) -> Result<(File, SifFile)> {
        let file = open_image_file(path)?;
        let sif = SifFile::read(&file)?;
        Ok((file, sif))
    }

    /// The unique partition with part type PrimSys (the container's root filesystem).
    pub fn primary_partition(&self) -> Result<&Descriptor> {
        let mut found = self.descriptors.iter().filter(|d| {
            d.data_type == DataType::Partition
                && d.partition
                    .is_some_and(|p| p.part_type == PartType::PrimSys)
        });
        let first = found.next().ok_or(Error::NoPrimaryPartition)?;
        if found.next().is_some() {
            return Err(Error::MultiplePrimaryPartitions);
        }
        Ok(first)
    }

    /// First used descriptor with this data type and name.
    pub fn find(&self, data_type: DataType, name: &str) -> Option<&Descriptor> {
        self.descriptors
            .iter()
            .find(|d| d.data_type == data_type && d.name == name)
    }

    /// Descriptor by object ID.
    pub fn get(&self, id: u32) -> Option<&Descriptor> {
        self.descriptors.iter().find(|d| d.id == id)
    }

    /// Read one object's data into memory; refuses objects over [`MAX_OBJECT_READ`].
    pub fn read_object(&self, file: &File, d: &Descriptor) -> Result<Vec<u8>> {
        if d.size > MAX_OBJECT_READ {
            return Err(Error::TooLarge {
                id: d.id,
                size: d.size,
                limit: MAX_OBJECT_READ,
            });
        }
        let mut buf = vec![0u8; d.size as usize];
        let n = read_full_at(file, &mut buf, d.offset)?;
        if n < buf.len() {
            return Err(Error::Corrupt(format!(
                "descriptor {} points past end of file",
                d.id
            )));
        }
        Ok(buf)
    }
}

/// `read_at` until `buf` is full or EOF; returns the number of bytes read.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
