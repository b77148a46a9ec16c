//! On-disk constants and the superblock (SquashFS 4.0, little endian).

use super::compress::Compressor;
use super::{Error, Result};

pub(crate) const MAGIC: u32 = 0x7371_7368; // "hsqs"
pub(crate) const SUPERBLOCK_SIZE: usize = 96;
/// Decompressed size of a full metadata block.
pub(crate) const METADATA_SIZE: usize = 8192;
pub(crate) const NO_FRAGMENT: u32 = 0xFFFF_FFFF;
pub(crate) const NO_XATTR: u32 = 0xFFFF_FFFF;
pub(crate) const NO_TABLE: u64 = u64::MAX;
/// Data block / fragment size field: set = stored uncompressed.
pub(crate) const DATA_UNCOMPRESSED: u32 = 1 << 24;
pub(crate) const DATA_SIZE_MASK: u32 = DATA_UNCOMPRESSED - 1;
/// Metadata block header: set = stored uncompressed.
pub(crate) const META_UNCOMPRESSED: u16 = 1 << 15;
/// Largest directory entry name (name_size + 1).
pub(crate) const MAX_NAME: usize = 256;
/// Largest entry count of one directory header (count + 1).
pub(crate) const MAX_DIR_COUNT: usize = 256;

/// Superblock flag bits.
pub mod flags {
    pub const UNCOMPRESSED_INODES: u16 = 0x0001;
    pub const UNCOMPRESSED_DATA: u16 = 0x0002;
    pub const CHECK: u16 = 0x0004;
    pub const UNCOMPRESSED_FRAGMENTS: u16 = 0x0008;
    pub const NO_FRAGMENTS: u16 = 0x0010;
    pub const ALWAYS_FRAGMENTS: u16 = 0x0020;
    pub const DUPLICATES: u16 = 0x0040;
    pub const EXPORTABLE: u16 = 0x0080;
    pub const UNCOMPRESSED_XATTRS: u16 = 0x0100;
    pub const NO_XATTRS: u16 = 0x0200;
    pub const COMPRESSOR_OPTIONS: u16 = 0x0400;
    pub const UNCOMPRESSED_IDS: u16 = 0x0800;
}

/// Inode types as stored in inode headers (1..=7 basic, 8..=14 extended).
pub(crate) mod itype {
    pub const DIR: u16 = 1;
    pub const FILE: u16 = 2;
    pub const SYMLINK: u16 = 3;
    pub const BLKDEV: u16 = 4;
    pub const CHRDEV: u16 = 5;
    pub const FIFO: u16 = 6;
    pub const SOCKET: u16 = 7;
    pub const LDIR: u16 = 8;
    pub const LFILE: u16 = 9;
    pub const LSYMLINK: u16 = 10;
    pub const LBLKDEV: u16 = 11;
    pub const LCHRDEV: u16 = 12;
    pub const LFIFO: u16 = 13;
    pub const LSOCKET: u16 = 14;
}

/// The decoded superblock. Table positions are relative to the start of the
/// archive (the `offset` given to [`super::Archive::open`]); absent optional
/// tables are `u64::MAX`.
#[derive(Debug, Clone)]
pub struct Superblock {
    pub inode_count: u32,
    pub mkfs_time: u32,
    pub block_size: u32,
    pub fragment_count: u32,
    pub compressor: Compressor,
    pub block_log: u16,
    pub flags: u16,
    pub id_count: u16,
    pub root_inode: u64,
    pub bytes_used: u64,
    pub id_table_start: u64,
    pub xattr_id_table_start: u64,
    pub inode_table_start: u64,
    pub directory_table_start: u64,
    pub fragment_table_start: u64,
    pub export_table_start: u64,
}

/// Little-endian cursor over a byte slice (callers guarantee the length).
pub(crate) struct Le<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Le<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Le { buf, pos: 0 }
    }
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        a
    }
    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    pub(crate) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

impl Superblock {
    /// Decodes and sanity-checks the 96-byte superblock. `archive_len` is the
    /// number of bytes available from the archive start to the end of file.
    pub(crate) fn parse(buf: &[u8; SUPERBLOCK_SIZE], archive_len: u64) -> Result<Superblock> {
        let mut r = Le::new(buf);
        if r.u32() != MAGIC {
            return Err(Error::NotSquashfs);
        }
        let inode_count = r.u32();
        let mkfs_time = r.u32();
        let block_size = r.u32();
        let fragment_count = r.u32();
        let compression_id = r.u16();
        let block_log = r.u16();
        let flags = r.u16();
        let id_count = r.u16();
        let major = r.u16();
        let minor = r.u16();
        let root_inode = r.u64();
        let bytes_used = r.u64();
        let id_table_start = r.u64();
        let xattr_id_table_start = r.u64();
        let inode_table_start = r.u64();
        let directory_table_start = r.u64();
        let fragment_table_start = r.u64();
        let export_table_start = r.u64();

        if (major, minor) != (4, 0) {
            return Err(Error::UnsupportedVersion { major, minor });
        }
        let compressor = Compressor::from_id(compression_id)
            .ok_or(Error::UnsupportedCompressor(compression_id))?;
        if !(4096..=(1 << 20)).contains(&block_size) || !block_size.is_power_of_two() {
            return Err(corrupt(format!("invalid block size {block_size}")));
        }
        if u32::from(block_log) >= 32 || 1u32 << block_log != block_size {
            return Err(corrupt(format!(
                "block log {block_log} does not match block size {block_size}"
            )));
        }
        if bytes_used < SUPERBLOCK_SIZE as u64 {
            return Err(corrupt(format!(
                "bytes used ({bytes_used}) smaller than the superblock"
            )));
        }
        if bytes_used > archive_len {
            return Err(corrupt(format!(
                "archive truncated: superblock says {bytes_used} bytes, only {archive_len} present"
            )));
        }
        if inode_count == 0 {
            return Err(corrupt("inode count is zero".into()));
        }
        if id_count == 0 {
            return Err(corrupt("id count is zero".into()));
        }
        let check = |name: &str, v: u64| -> Result<()> {
            if v < SUPERBLOCK_SIZE as u64 || v >= bytes_used {
                Err(corrupt(format!(
                    "{name} start {v} outside the archive ({bytes_used} bytes)"
                )))
            } else {
                Ok(())
            }
        };
        check("inode table", inode_table_start)?;
        check("directory table", directory_table_start)?;
        check("id table", id_table_start)?;
        if inode_table_start >= directory_table_start {
            return Err(corrupt(
                "inode table does not precede the directory table".into(),
            ));
        }
        if fragment_count > 0 {
            check("fragment table", fragment_table_start)?;
        }
        if xattr_id_table_start != NO_TABLE {
            check("xattr id table", xattr_id_table_start)?;
        }
        if export_table_start != NO_TABLE && flags & flags::EXPORTABLE != 0 {
            check("export table", export_table_start)?;
        }
        Ok(Superblock {
            inode_count,
            mkfs_time,
            block_size,
            fragment_count,
            compressor,
            block_log,
            flags,
            id_count,
            root_inode,
            bytes_used,
            id_table_start,
            xattr_id_table_start,
            inode_table_start,
            directory_table_start,
            fragment_table_start,
            export_table_start,
        })
    }

    /// Whether the archive has an export table (inode number -> inode ref).
    pub fn has_export_table(&self) -> bool {
        self.flags & flags::EXPORTABLE != 0 && self.export_table_start != NO_TABLE
    }

    /// Whether the archive has an xattr table.
    pub fn has_xattrs(&self) -> bool {
        self.xattr_id_table_start != NO_TABLE
    }
}

pub(crate) fn corrupt(msg: String) -> Error {
    Error::Corrupt(msg)
}
