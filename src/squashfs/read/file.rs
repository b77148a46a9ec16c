//! Regular file contents: data blocks, sparse holes and tail-end fragments.

use super::blockfile::Kind;
use super::blocks::{BlockCursor, BlockListRef};
use super::format::{corrupt, DATA_SIZE_MASK, DATA_UNCOMPRESSED};
use super::metadata::MetaReader;
use super::warm::Held;
use super::{Archive, Error, Inode, InodeData, Result};
use std::sync::Arc;

impl Archive {
    /// Decompressed contents of the block at `pos` with size field `size`
    /// (compressed; cached).
    fn cached_block(&self, pos: u64, size: u32, what: &dyn Fn() -> String) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.data_cache.get(&pos) {
            return Ok(b);
        }
        if let Some((data, _)) = self.warm_block(Kind::Data, pos) {
            let data = Arc::new(data);
            self.data_cache.insert(pos, data.clone(), data.len() + 64);
            return Ok(data);
        }
        let csize = (size & DATA_SIZE_MASK) as usize;
        let mut raw = vec![0u8; csize];
        self.read_exact_at(pos, &mut raw)?;
        let stored = size & DATA_UNCOMPRESSED != 0;
        let data = if stored {
            raw
        } else {
            self.sb
                .compressor
                .decompress(&raw, self.sb.block_size as usize, what)?
        };
        let data = Arc::new(data);
        self.data_cache.insert(pos, data.clone(), data.len() + 64);
        if !stored {
            self.record(Kind::Data, pos, 0, Held::Data(data.clone()));
        }
        Ok(data)
    }

    /// The decompressed fragment block with index `idx`.
    fn fragment_block(&self, idx: u32) -> Result<Arc<Vec<u8>>> {
        if idx >= self.sb.fragment_count {
            return Err(corrupt(format!("fragment index {idx} out of range")));
        }
        let i = idx as usize;
        let ptr = *self
            .fragment_index
            .get(i / 512)
            .ok_or_else(|| corrupt(format!("fragment index {idx} out of range")))?;
        let mut m = MetaReader::new(self, ptr, (i % 512) * 16, self.sb.fragment_table_start)?;
        let start = m.u64()?;
        let size = m.u32()?;
        let csize = size & DATA_SIZE_MASK;
        if size & !(DATA_SIZE_MASK | DATA_UNCOMPRESSED) != 0
            || csize == 0
            || csize > self.sb.block_size
        {
            return Err(corrupt(format!(
                "fragment {idx} has invalid size field {size:#x}"
            )));
        }
        if start > self.sb.bytes_used || self.sb.bytes_used - start < u64::from(csize) {
            return Err(corrupt(format!(
                "fragment {idx} at {start} extends past end of archive"
            )));
        }
        self.cached_block(start, size, &|| format!("fragment block {idx} at {start}"))
    }

    /// Reads file contents like `pread`: returns the number of bytes read,
    /// 0 at or past end of file.
    pub fn read_at(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let InodeData::File {
            blocks_start,
            fragment,
            frag_offset,
            block_count,
            list_pos,
            ..
        } = inode.data
        else {
            return Err(Error::NotAFile);
        };
        if offset >= inode.size || buf.is_empty() {
            return Ok(0);
        }
        let want = (inode.size - offset).min(buf.len() as u64) as usize;
        let bs = u64::from(self.sb.block_size);
        let mut blocks = BlockCursor::new(
            self,
            BlockListRef {
                inode,
                list_pos,
                blocks_start,
                count: block_count,
            },
        );
        let mut done = 0usize;
        while done < want {
            let pos = offset + done as u64;
            let bi = pos / bs;
            let within = (pos % bs) as usize;
            let out = &mut buf[done..want];
            let n;
            if bi < block_count {
                let expected = (inode.size - bi * bs).min(bs) as usize;
                n = (expected - within).min(out.len());
                let loc = blocks.location(bi)?;
                if loc.size == 0 {
                    out[..n].fill(0);
                } else {
                    let (bpos, size) = (loc.pos, loc.size);
                    let csize = (size & DATA_SIZE_MASK) as usize;
                    if size & DATA_UNCOMPRESSED != 0 && csize == expected {
                        // Stored block: read straight into the caller's buffer.
                        self.read_exact_at(bpos + within as u64, &mut out[..n])?;
                    } else {
                        let number = inode.number;
                        let data = self.cached_block(bpos, size, &|| {
                            format!("data block {bi} of inode {number} at {bpos}")
                        })?;
                        if data.len() < within + n {
                            return Err(corrupt(format!(
                                "data block {bi} of inode {} at {bpos} is {} bytes, expected {expected}",
                                inode.number,
                                data.len()
                            )));
                        }
                        out[..n].copy_from_slice(&data[within..within + n]);
                    }
                }
            } else {
                // Tail end in a fragment.
                if fragment == super::format::NO_FRAGMENT {
                    return Err(corrupt(format!(
                        "file inode {} has no data for offset {pos}",
                        inode.number
                    )));
                }
                let frag = self.fragment_block(fragment)?;
                let tail_pos = (pos - block_count * bs) as usize;
                let start = frag_offset as usize + tail_pos;
                let tail_len = (inode.size - block_count * bs) as usize;
                n = (tail_len - tail_pos).min(out.len());
                if start + n > frag.len() {
                    return Err(corrupt(format!(
                        "file inode {}: tail extends past fragment {fragment} ({} bytes)",
                        inode.number,
                        frag.len()
                    )));
                }
                out[..n].copy_from_slice(&frag[start..start + n]);
            }
            if n == 0 {
                return Err(corrupt(format!(
                    "file inode {}: no progress reading at {pos}",
                    inode.number
                )));
            }
            done += n;
        }
        Ok(done)
    }

    /// Reads the whole file into memory (convenience for small files).
    pub fn read_file(&self, inode: &Inode) -> Result<Vec<u8>> {
        if !inode.is_file() {
            return Err(Error::NotAFile);
        }
        let len = usize::try_from(inode.size).map_err(|_| corrupt("file too large".into()))?;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            let n = self.read_at(inode, done as u64, &mut buf[done..])?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }
}
