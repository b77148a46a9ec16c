//! Directory table: listings and name lookup (with the directory index).

use super::format::{corrupt, MAX_DIR_COUNT, MAX_NAME, METADATA_SIZE};
use super::metadata::MetaReader;
use super::{Archive, DirEntry, Error, FileKind, Inode, InodeData, InodeRef, Result};
use std::cmp::Ordering;
use std::ops::ControlFlow;

/// Size of a directory header on disk.
const HEADER_SIZE: u64 = 12;
/// Size of a directory entry on disk, without the name.
const ENTRY_SIZE: u64 = 8;

struct DirInfo {
    start_block: u32,
    offset: u16,
    index_count: u32,
    index_pos: (u64, usize),
    /// Listing size in bytes (file_size - 3).
    listing: u64,
}

fn dir_info(dir: &Inode) -> Result<DirInfo> {
    match dir.data {
        InodeData::Dir {
            start_block,
            offset,
            index_count,
            index_pos,
            ..
        } => {
            if usize::from(offset) >= METADATA_SIZE {
                return Err(corrupt(format!(
                    "directory inode {} has listing offset {offset} out of range",
                    dir.number
                )));
            }
            Ok(DirInfo {
                start_block,
                offset,
                index_count,
                index_pos,
                listing: dir.size.saturating_sub(3),
            })
        }
        _ => Err(Error::NotADirectory),
    }
}

impl Archive {
    /// Scans `remaining` bytes of directory listing starting at directory
    /// table block `block` (relative), byte `offset`, calling `visit` for every
    /// entry until it breaks.
    fn scan_dir(
        &self,
        dir_number: u32,
        block: u64,
        offset: usize,
        mut remaining: u64,
        mut visit: impl FnMut(DirEntry) -> ControlFlow<()>,
    ) -> Result<()> {
        if remaining == 0 {
            return Ok(());
        }
        let table = self.sb.directory_table_start;
        let limit = self.table_end(table);
        if block >= limit - table {
            return Err(corrupt(format!(
                "directory inode {dir_number} listing starts outside the directory table"
            )));
        }
        let bad = |what: &str| corrupt(format!("directory inode {dir_number}: {what}"));
        let mut m = MetaReader::new(self, table + block, offset, limit)?;
        while remaining > 0 {
            if remaining < HEADER_SIZE {
                return Err(bad("listing size does not match its contents"));
            }
            let count = m.u32()? as usize + 1;
            let start_block = m.u32()?;
            let base = m.u32()?;
            remaining -= HEADER_SIZE;
            if count > MAX_DIR_COUNT {
                return Err(bad(&format!("directory header with {count} entries")));
            }
            for _ in 0..count {
                if remaining < ENTRY_SIZE {
                    return Err(bad("listing size does not match its contents"));
                }
                let off = m.u16()?;
                let delta = m.u16()? as i16;
                let ty = m.u16()?;
                let name_len = usize::from(m.u16()?) + 1;
                remaining -= ENTRY_SIZE;
                if name_len > MAX_NAME || (name_len as u64) > remaining {
                    return Err(bad(&format!("entry name length {name_len} invalid")));
                }
                let name = m.read_vec(name_len)?;
                remaining -= name_len as u64;
                if usize::from(off) >= METADATA_SIZE {
                    return Err(bad(&format!("entry inode offset {off} out of range")));
                }
                let kind = FileKind::from_type(ty)
                    .ok_or_else(|| bad(&format!("entry has unknown type {ty}")))?;
                let entry = DirEntry {
                    name,
                    inode_ref: InodeRef((u64::from(start_block) << 16) | u64::from(off)),
                    number: base.wrapping_add(delta as i32 as u32),
                    kind,
                };
                if visit(entry).is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// All entries of `dir` in on-disk (sorted) order, without `.`/`..`.
    pub fn read_dir(&self, dir: &Inode) -> Result<Vec<DirEntry>> {
        let info = dir_info(dir)?;
        let mut out = Vec::new();
        self.scan_dir(
            dir.number,
            u64::from(info.start_block),
            usize::from(info.offset),
            info.listing,
            |e| {
                out.push(e);
                ControlFlow::Continue(())
            },
        )?;
        Ok(out)
    }

    /// Looks up `name` in `dir`. Uses the directory index of large
    /// directories to start at the right metadata block.
    pub fn lookup(&self, dir: &Inode, name: &[u8]) -> Result<Option<DirEntry>> {
        let info = dir_info(dir)?;
        if name.is_empty() || name.len() > MAX_NAME || name.contains(&b'/') {
            return Ok(None);
        }
        let mut block = u64::from(info.start_block);
        let mut skipped: u64 = 0;
        let sorted_scan = info.index_count > 0;
        if info.index_count > 0 {
            let mut m = MetaReader::new(
                self,
                info.index_pos.0,
                info.index_pos.1,
                self.sb.directory_table_start,
            )?;
            for _ in 0..info.index_count {
                let index = m.u32()?;
                let start = m.u32()?;
                let len = m.u32()? as usize + 1;
                if len > MAX_NAME {
                    return Err(corrupt(format!(
                        "directory inode {}: index name length {len} invalid",
                        dir.number
                    )));
                }
                let iname = m.read_vec(len)?;
                if iname.as_slice() > name {
                    break;
                }
                skipped = u64::from(index);
                block = u64::from(start);
            }
            if skipped > info.listing {
                return Err(corrupt(format!(
                    "directory inode {}: index offset {skipped} past the listing",
                    dir.number
                )));
            }
        }
        let offset = ((u64::from(info.offset) + skipped) % METADATA_SIZE as u64) as usize;
        let mut found = None;
        self.scan_dir(dir.number, block, offset, info.listing - skipped, |e| {
            match e.name.as_slice().cmp(name) {
                Ordering::Equal => {
                    found = Some(e);
                    ControlFlow::Break(())
                }
                // Entries are sorted; past the name it cannot appear.
                Ordering::Greater if sorted_scan => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        })?;
        Ok(found)
    }

    /// Target of a symbolic link.
    pub fn read_link(&self, inode: &Inode) -> Result<Vec<u8>> {
        match &inode.data {
            InodeData::Symlink { target } => Ok(target.to_vec()),
            _ => Err(Error::NotASymlink),
        }
    }
}
