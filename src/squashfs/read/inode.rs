//! Inode table decoding.

use super::format::{corrupt, itype, METADATA_SIZE, NO_FRAGMENT, NO_XATTR};
use super::metadata::MetaReader;
use super::{Archive, FileKind, Inode, InodeData, InodeRef, Result};

/// Longest symlink target we accept.
const MAX_SYMLINK: u32 = 65535;

impl Archive {
    pub(crate) fn parse_inode(&self, r: InodeRef) -> Result<Inode> {
        let sb = &self.sb;
        let table = sb.inode_table_start;
        let limit = sb.directory_table_start;
        let block = r.block();
        let offset = usize::from(r.offset());
        if offset >= METADATA_SIZE || block >= limit - table {
            return Err(corrupt(format!(
                "inode reference {:#x} outside the inode table",
                r.0
            )));
        }
        let mut m = MetaReader::new(self, table + block, offset, limit)?;
        let ty = m.u16()?;
        let kind = FileKind::from_type(ty)
            .ok_or_else(|| corrupt(format!("inode {:#x} has unknown type {ty}", r.0)))?;
        let mode = m.u16()? & 0o7777;
        let uid = self.id(m.u16()?)?;
        let gid = self.id(m.u16()?)?;
        let mtime = m.u32()?;
        let number = m.u32()?;
        if number == 0 || number > sb.inode_count {
            return Err(corrupt(format!(
                "inode {:#x} has number {number} outside 1..={}",
                r.0, sb.inode_count
            )));
        }
        let mut inode = Inode {
            inode_ref: r,
            number,
            kind,
            mode,
            uid,
            gid,
            mtime,
            nlink: 1,
            size: 0,
            rdev: 0,
            xattr: NO_XATTR,
            data: InodeData::Other,
        };
        match ty {
            itype::DIR => {
                let start_block = m.u32()?;
                inode.nlink = m.u32()?;
                inode.size = u64::from(m.u16()?);
                let offset = m.u16()?;
                let parent = m.u32()?;
                inode.data = InodeData::Dir {
                    start_block,
                    offset,
                    index_count: 0,
                    index_pos: m.position(),
                    parent,
                };
            }
            itype::LDIR => {
                inode.nlink = m.u32()?;
                inode.size = u64::from(m.u32()?);
                let start_block = m.u32()?;
                let parent = m.u32()?;
                let index_count = u32::from(m.u16()?);
                let offset = m.u16()?;
                inode.xattr = m.u32()?;
                inode.data = InodeData::Dir {
                    start_block,
                    offset,
                    index_count,
                    index_pos: m.position(),
                    parent,
                };
            }
            itype::FILE | itype::LFILE => {
                let (blocks_start, size, sparse, fragment, frag_offset);
                if ty == itype::FILE {
                    blocks_start = u64::from(m.u32()?);
                    fragment = m.u32()?;
                    frag_offset = m.u32()?;
                    size = u64::from(m.u32()?);
                    sparse = 0;
                } else {
                    blocks_start = m.u64()?;
                    size = m.u64()?;
                    sparse = m.u64()?;
                    inode.nlink = m.u32()?;
                    fragment = m.u32()?;
                    frag_offset = m.u32()?;
                    inode.xattr = m.u32()?;
                }
                let bs = u64::from(sb.block_size);
                let block_count = if fragment == NO_FRAGMENT {
                    size.div_ceil(bs)
                } else {
                    size / bs
                };
                // The block list lives in the inode table, so it cannot be longer than the
                // table decompressed: each metadata block takes at least 3 bytes on disk
                // (header and one byte) and holds at most METADATA_SIZE bytes.
                let table_capacity = (limit - table) / 3 * METADATA_SIZE as u64;
                if block_count.saturating_mul(4) > table_capacity {
                    return Err(corrupt(format!(
                        "file inode {number} claims {size} bytes ({block_count} blocks), more than the inode table can list"
                    )));
                }
                if fragment != NO_FRAGMENT {
                    if fragment >= sb.fragment_count {
                        return Err(corrupt(format!(
                            "file inode {number} has fragment index {fragment} out of range ({} fragments)",
                            sb.fragment_count
                        )));
                    }
                    if u64::from(frag_offset) + size % bs > bs {
                        return Err(corrupt(format!(
                            "file inode {number} has fragment offset {frag_offset} out of range"
                        )));
                    }
                }
                if blocks_start > sb.bytes_used {
                    return Err(corrupt(format!(
                        "file inode {number} data starts at {blocks_start}, past end of archive"
                    )));
                }
                inode.size = size;
                inode.data = InodeData::File {
                    blocks_start,
                    fragment,
                    frag_offset,
                    block_count,
                    list_pos: m.position(),
                    sparse,
                };
            }
            itype::SYMLINK | itype::LSYMLINK => {
                inode.nlink = m.u32()?;
                let len = m.u32()?;
                if len > MAX_SYMLINK {
                    return Err(corrupt(format!(
                        "symlink inode {number} has target length {len}"
                    )));
                }
                let target = m.read_vec(len as usize)?;
                if ty == itype::LSYMLINK {
                    inode.xattr = m.u32()?;
                }
                inode.size = u64::from(len);
                inode.data = InodeData::Symlink {
                    target: target.into(),
                };
            }
            itype::BLKDEV | itype::CHRDEV | itype::LBLKDEV | itype::LCHRDEV => {
                inode.nlink = m.u32()?;
                inode.rdev = m.u32()?;
                if ty >= itype::LDIR {
                    inode.xattr = m.u32()?;
                }
            }
            itype::FIFO | itype::SOCKET | itype::LFIFO | itype::LSOCKET => {
                inode.nlink = m.u32()?;
                if ty >= itype::LDIR {
                    inode.xattr = m.u32()?;
                }
            }
            _ => return Err(corrupt(format!("inode {:#x} has unknown type {ty}", r.0))),
        }
        Ok(inode)
    }
}
