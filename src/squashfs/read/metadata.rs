//! Metadata blocks (inode, directory, id, fragment, export and xattr tables)
//! and a reader that streams across block boundaries.

use super::blockfile::Kind;
use super::format::{corrupt, METADATA_SIZE, META_UNCOMPRESSED};
use super::warm::Held;
use super::{Archive, Result};
use std::sync::Arc;

/// One decompressed metadata block.
pub(crate) struct MetaBlock {
    pub(crate) data: Vec<u8>,
    /// Position (archive-relative) of the block that follows this one.
    pub(crate) next: u64,
}

impl Archive {
    /// Reads (or fetches from cache) the metadata block whose header is at
    /// archive position `pos`. The block must end at or before `limit`.
    pub(crate) fn meta_block(&self, pos: u64, limit: u64) -> Result<Arc<MetaBlock>> {
        if let Some(b) = self.meta_cache.get(&pos) {
            return Ok(b);
        }
        let limit = limit.min(self.sb.bytes_used);
        if let Some((data, aux)) = self.warm_block(Kind::Meta, pos) {
            let end = pos + u64::from(aux);
            // The same bounds as a block read from the image: a block file never widens them.
            if aux > 2 && end <= limit && aux as usize <= METADATA_SIZE + 2 {
                let block = Arc::new(MetaBlock { data, next: end });
                self.meta_cache
                    .insert(pos, block.clone(), block.data.len() + 64);
                return Ok(block);
            }
        }
        if pos >= limit || limit - pos < 2 {
            return Err(corrupt(format!(
                "metadata block at {pos} extends past end of its table"
            )));
        }
        let mut hdr = [0u8; 2];
        self.read_exact_at(pos, &mut hdr)?;
        let hdr = u16::from_le_bytes(hdr);
        let len = (hdr & !META_UNCOMPRESSED) as usize;
        let compressed = hdr & META_UNCOMPRESSED == 0;
        if len == 0 || len > METADATA_SIZE {
            return Err(corrupt(format!(
                "metadata block at {pos} has invalid length {len}"
            )));
        }
        let end = pos + 2 + len as u64;
        if end > limit {
            return Err(corrupt(format!(
                "metadata block at {pos} extends past end of its table"
            )));
        }
        let mut raw = vec![0u8; len];
        self.read_exact_at(pos + 2, &mut raw)?;
        let data = if compressed {
            self.sb
                .compressor
                .decompress(&raw, METADATA_SIZE, &|| format!("metadata block at {pos}"))?
        } else {
            raw
        };
        let block = Arc::new(MetaBlock { data, next: end });
        self.meta_cache
            .insert(pos, block.clone(), block.data.len() + 64);
        if compressed {
            self.record(
                Kind::Meta,
                pos,
                (end - pos) as u32,
                Held::Meta(block.clone()),
            );
        }
        Ok(block)
    }
}

/// A cursor over a chain of metadata blocks.
pub(crate) struct MetaReader<'a> {
    ar: &'a Archive,
    pos: u64,
    block: Arc<MetaBlock>,
    off: usize,
    limit: u64,
}

impl<'a> MetaReader<'a> {
    /// Starts reading at byte `off` of the (decompressed) block at `pos`.
    pub(crate) fn new(ar: &'a Archive, pos: u64, off: usize, limit: u64) -> Result<Self> {
        let block = ar.meta_block(pos, limit)?;
        if off > block.data.len() {
            return Err(corrupt(format!(
                "offset {off} past the end of metadata block at {pos} ({} bytes)",
                block.data.len()
            )));
        }
        Ok(MetaReader {
            ar,
            pos,
            block,
            off,
            limit,
        })
    }

    /// Current position as (block position, offset within block).
    pub(crate) fn position(&self) -> (u64, usize) {
        (self.pos, self.off)
    }

    fn advance_block(&mut self) -> Result<()> {
        let next = self.block.next;
        if next >= self.limit {
            return Err(corrupt(format!(
                "metadata read runs past end of table (block at {}, limit {})",
                self.pos, self.limit
            )));
        }
        self.block = self.ar.meta_block(next, self.limit)?;
        self.pos = next;
        self.off = 0;
        Ok(())
    }

    pub(crate) fn read(&mut self, mut out: &mut [u8]) -> Result<()> {
        while !out.is_empty() {
            if self.off == self.block.data.len() {
                self.advance_block()?;
            }
            let avail = &self.block.data[self.off..];
            let n = avail.len().min(out.len());
            out[..n].copy_from_slice(&avail[..n]);
            self.off += n;
            out = &mut out[n..];
        }
        Ok(())
    }

    pub(crate) fn read_vec(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut v = vec![0u8; n];
        self.read(&mut v)?;
        Ok(v)
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        let mut b = [0u8; 2];
        self.read(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.read(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
}
