//! Where a file's data blocks lie: the block list, read in chunks and indexed.
//!
//! A file inode is followed in the inode table by one 32-bit size field per data block. The
//! list can be long (a 5 GiB file at 4 KiB blocks has 1.3 million entries, 5 MiB of metadata
//! spanning hundreds of metadata blocks) and a block's position in the archive is the sum of
//! all the sizes before it. So the list is never loaded whole: it is split into chunks of
//! [`CHUNK`] blocks, and a per-file [`BlockIndex`] remembers, for every chunk reached so far,
//! where its size fields start in the inode table and where its first block's data starts.
//! A read decodes (and caches) only the chunk it needs; reaching chunk `k` the first time
//! walks the chunks before it once, which a sequential read does anyway. Memory per file is
//! 24 bytes per chunk for the index plus the cached chunks, both bounded by LRU caches.

use super::format::{corrupt, DATA_SIZE_MASK, DATA_UNCOMPRESSED};
use super::metadata::MetaReader;
use super::{Archive, Inode, InodeRef, Result};
use std::sync::{Arc, Mutex};

/// Blocks per chunk of the block list (2 KiB of size fields).
pub(crate) const CHUNK: u64 = 512;

/// Where chunk `k` of a block list starts.
#[derive(Clone, Copy, Debug)]
struct Checkpoint {
    /// Position of its first size field in the inode table (metadata block, offset).
    meta: (u64, usize),
    /// Archive position of its first block's data.
    data: u64,
}

/// The checkpoints of one file's block list found so far (chunk 0 is known from the inode).
pub(crate) struct BlockIndex {
    checkpoints: Mutex<Vec<Checkpoint>>,
}

/// The decoded size fields of one chunk and the archive position of each block's data.
pub(crate) struct Chunk {
    sizes: Vec<u32>,
    starts: Vec<u64>,
    /// Where the next chunk starts.
    end: Checkpoint,
}

/// One data block of a file: where it lies and its size field as stored (0 = a sparse hole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BlockLocation {
    pub(crate) pos: u64,
    pub(crate) size: u32,
}

impl Chunk {
    fn location(&self, i: usize) -> BlockLocation {
        BlockLocation {
            pos: self.starts[i],
            size: self.sizes[i],
        }
    }
}

/// A file's block list as the reader needs it: the inode, the list's start and length.
pub(crate) struct BlockListRef<'a> {
    pub(crate) inode: &'a Inode,
    pub(crate) list_pos: (u64, usize),
    pub(crate) blocks_start: u64,
    pub(crate) count: u64,
}

/// A cursor over a file's blocks that keeps the current chunk, so that a read spanning many
/// blocks looks the caches up once per chunk.
pub(crate) struct BlockCursor<'a> {
    ar: &'a Archive,
    list: BlockListRef<'a>,
    index: Option<Arc<BlockIndex>>,
    chunk: Option<(u64, Arc<Chunk>)>,
}

impl<'a> BlockCursor<'a> {
    pub(crate) fn new(ar: &'a Archive, list: BlockListRef<'a>) -> Self {
        BlockCursor {
            ar,
            list,
            index: None,
            chunk: None,
        }
    }

    /// The location of block `bi` (which must be below the block count).
    pub(crate) fn location(&mut self, bi: u64) -> Result<BlockLocation> {
        debug_assert!(bi < self.list.count);
        let k = bi / CHUNK;
        let i = (bi % CHUNK) as usize;
        if let Some((ck, chunk)) = &self.chunk {
            if *ck == k {
                return Ok(chunk.location(i));
            }
        }
        let key = (self.list.inode.inode_ref, k);
        let chunk = match self.ar.block_chunk_cache.get(&key) {
            Some(c) => c,
            None => {
                let index = match &self.index {
                    Some(ix) => ix.clone(),
                    None => {
                        let ix = self.ar.block_index(self.list.inode.inode_ref, &self.list);
                        self.index = Some(ix.clone());
                        ix
                    }
                };
                self.ar.load_chunk(&self.list, &index, k)?
            }
        };
        let loc = chunk.location(i);
        self.chunk = Some((k, chunk));
        Ok(loc)
    }
}

impl Archive {
    /// The (cached) index of a file's block list; a new one knows chunk 0.
    fn block_index(&self, r: InodeRef, list: &BlockListRef) -> Arc<BlockIndex> {
        if let Some(ix) = self.block_index_cache.get(&r) {
            return ix;
        }
        let ix = Arc::new(BlockIndex {
            checkpoints: Mutex::new(vec![Checkpoint {
                meta: list.list_pos,
                data: list.blocks_start,
            }]),
        });
        let chunks = list.count.div_ceil(CHUNK) as usize;
        self.block_index_cache
            .insert(r, ix.clone(), 64 + chunks.min(1 << 20) * 24);
        ix
    }

    /// Decodes chunk `k`, walking (and caching) the chunks before it that the index has not
    /// reached yet.
    fn load_chunk(&self, list: &BlockListRef, index: &BlockIndex, k: u64) -> Result<Arc<Chunk>> {
        let mut checkpoints = index.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let known = checkpoints.len() as u64;
            let next = if known > k { k } else { known - 1 };
            let key = (list.inode.inode_ref, next);
            let chunk = match self.block_chunk_cache.get(&key) {
                Some(c) => c,
                None => {
                    let chunk =
                        Arc::new(self.decode_chunk(list, next, checkpoints[next as usize])?);
                    let weight = chunk.sizes.len() * 12 + 64;
                    self.block_chunk_cache.insert(key, chunk.clone(), weight);
                    chunk
                }
            };
            if next + 1 == known && (next + 1) * CHUNK < list.count {
                checkpoints.push(chunk.end);
            }
            if next == k {
                return Ok(chunk);
            }
        }
    }

    /// Reads and checks the size fields of chunk `k`, which starts at `cp`.
    fn decode_chunk(&self, list: &BlockListRef, k: u64, cp: Checkpoint) -> Result<Chunk> {
        let first = k * CHUNK;
        let n = (list.count - first).min(CHUNK) as usize;
        let mut m = MetaReader::new(self, cp.meta.0, cp.meta.1, self.sb.directory_table_start)?;
        let mut sizes = Vec::with_capacity(n);
        let mut starts = Vec::with_capacity(n);
        let mut pos = cp.data;
        for i in 0..n {
            let s = m.u32()?;
            let csize = s & DATA_SIZE_MASK;
            if s & !(DATA_SIZE_MASK | DATA_UNCOMPRESSED) != 0 || csize > self.sb.block_size {
                return Err(corrupt(format!(
                    "file inode {} block {} has invalid size field {s:#x}",
                    list.inode.number,
                    first + i as u64
                )));
            }
            starts.push(pos);
            pos += u64::from(csize);
            if pos > self.sb.bytes_used {
                return Err(corrupt(format!(
                    "file inode {} data blocks extend past end of archive",
                    list.inode.number
                )));
            }
            sizes.push(s);
        }
        let end = Checkpoint {
            meta: m.position(),
            data: pos,
        };
        Ok(Chunk { sizes, starts, end })
    }
}
