//! Extended attributes.

use super::format::{corrupt, Le, NO_XATTR};
use super::metadata::MetaReader;
use super::{Archive, Inode, Result, XattrTable};

/// Key type flag: the value is stored out of line (a reference to it).
const XATTR_VALUE_OOL: u16 = 0x100;
/// Largest accepted value (Linux XATTR_SIZE_MAX).
const MAX_VALUE: u32 = 65536;
/// Largest accepted number of xattrs on one inode.
const MAX_COUNT: u32 = 65536;

impl Archive {
    pub(crate) fn read_xattr_header(&self) -> Result<XattrTable> {
        let start = self.sb.xattr_id_table_start;
        let mut hdr = [0u8; 16];
        self.read_exact_at(start, &mut hdr)?;
        let mut r = Le::new(&hdr);
        let kv_start = r.u64();
        let count = r.u32();
        if kv_start > start {
            return Err(corrupt(format!(
                "xattr table start {kv_start} after its id table"
            )));
        }
        let index = self.read_lookup_index_after(start, count as usize)?;
        Ok(XattrTable {
            kv_start,
            count,
            index,
        })
    }

    fn read_lookup_index_after(&self, id_table: u64, count: usize) -> Result<Vec<u64>> {
        let blocks = (count * 16).div_ceil(super::format::METADATA_SIZE);
        let bytes = blocks as u64 * 8;
        let at = id_table + 16;
        if at > self.sb.bytes_used || self.sb.bytes_used - at < bytes {
            return Err(corrupt("xattr id index extends past end of archive".into()));
        }
        let mut raw = vec![0u8; bytes as usize];
        self.read_exact_at(at, &mut raw)?;
        let ptrs: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if ptrs.iter().any(|&p| p >= id_table) {
            return Err(corrupt("xattr id block pointer outside the table".into()));
        }
        Ok(ptrs)
    }

    /// All extended attributes of `inode` as (full name, value) pairs.
    pub fn xattrs(&self, inode: &Inode) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let Some(table) = &self.xattr else {
            return Ok(Vec::new());
        };
        if inode.xattr == NO_XATTR {
            return Ok(Vec::new());
        }
        let idx = inode.xattr;
        if idx >= table.count {
            return Err(corrupt(format!(
                "inode {} has xattr index {idx} out of range",
                inode.number
            )));
        }
        let i = idx as usize;
        let id_limit = self.sb.xattr_id_table_start;
        let mut m = MetaReader::new(self, table.index[i / 512], (i % 512) * 16, id_limit)?;
        let xref = m.u64()?;
        let count = m.u32()?;
        let _size = m.u32()?;
        if count > MAX_COUNT {
            return Err(corrupt(format!("xattr id {idx} has {count} entries")));
        }
        let kv_limit = table
            .index
            .iter()
            .copied()
            .min()
            .unwrap_or(id_limit)
            .min(id_limit);
        let open = |r: u64| -> Result<MetaReader<'_>> {
            let block = r >> 16;
            if block >= kv_limit.saturating_sub(table.kv_start) {
                return Err(corrupt(format!(
                    "xattr reference {r:#x} outside the xattr table"
                )));
            }
            MetaReader::new(
                self,
                table.kv_start + block,
                (r & 0xffff) as usize,
                kv_limit,
            )
        };
        let mut m = open(xref)?;
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let ty = m.u16()?;
            let name_len = m.u16()?;
            let prefix: &[u8] = match ty & 0xff {
                0 => b"user.",
                1 => b"trusted.",
                2 => b"security.",
                t => {
                    return Err(corrupt(format!(
                        "xattr id {idx} has unknown prefix type {t}"
                    )))
                }
            };
            let mut name = prefix.to_vec();
            name.extend_from_slice(&m.read_vec(usize::from(name_len))?);
            let vsize = m.u32()?;
            let value = if ty & XATTR_VALUE_OOL != 0 {
                if vsize != 8 {
                    return Err(corrupt(format!(
                        "xattr id {idx}: out-of-line value reference of size {vsize}"
                    )));
                }
                let vref = m.u64()?;
                let mut v = open(vref)?;
                let len = v.u32()?;
                if len > MAX_VALUE {
                    return Err(corrupt(format!("xattr id {idx}: value of {len} bytes")));
                }
                v.read_vec(len as usize)?
            } else {
                if vsize > MAX_VALUE {
                    return Err(corrupt(format!("xattr id {idx}: value of {vsize} bytes")));
                }
                m.read_vec(vsize as usize)?
            };
            out.push((name, value));
        }
        Ok(out)
    }
}
