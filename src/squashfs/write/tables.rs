//! Metadata tables: inodes, directories, fragments, export, ids, xattrs and
//! the superblock.

use super::compress::Encoder;
use super::data::pack;
use super::{Error, Result};
use crate::squashfs::format::{METADATA_SIZE, META_UNCOMPRESSED, NO_XATTR};
use std::collections::HashMap;

/// A stream of metadata blocks (8 KiB uncompressed each, with a 2-byte
/// header), built in memory.
pub(crate) struct MetaWriter {
    /// Finished (compressed) blocks, headers included.
    pub(crate) out: Vec<u8>,
    buf: Vec<u8>,
    /// Start (in `out`) of every finished block.
    pub(crate) block_starts: Vec<u64>,
}

impl MetaWriter {
    pub(crate) fn new() -> MetaWriter {
        MetaWriter {
            out: Vec::new(),
            buf: Vec::with_capacity(METADATA_SIZE),
            block_starts: Vec::new(),
        }
    }

    /// Current position: (start of the block being filled, offset in it).
    pub(crate) fn pos(&self) -> (u64, u16) {
        (self.out.len() as u64, self.buf.len() as u16)
    }

    /// Total uncompressed bytes written so far.
    pub(crate) fn uncompressed_len(&self) -> u64 {
        self.block_starts.len() as u64 * METADATA_SIZE as u64 + self.buf.len() as u64
    }

    /// Start of the block holding uncompressed byte `u` (already written or
    /// in the block being filled).
    pub(crate) fn block_of(&self, u: u64) -> u64 {
        let b = (u / METADATA_SIZE as u64) as usize;
        self.block_starts
            .get(b)
            .copied()
            .unwrap_or(self.out.len() as u64)
    }

    pub(crate) fn write(&mut self, enc: &mut Encoder, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let n = (METADATA_SIZE - self.buf.len()).min(bytes.len());
            self.buf.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.buf.len() == METADATA_SIZE {
                self.flush(enc)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, enc: &mut Encoder) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.block_starts.push(self.out.len() as u64);
        let raw = std::mem::replace(&mut self.buf, Vec::with_capacity(METADATA_SIZE));
        let (bytes, compressed) = pack(enc, raw)?;
        let mut hdr = bytes.len() as u16;
        if !compressed {
            hdr |= META_UNCOMPRESSED;
        }
        self.out.extend_from_slice(&hdr.to_le_bytes());
        self.out.extend_from_slice(&bytes);
        Ok(())
    }

    /// Flushes the last partial block and returns the bytes and block starts.
    pub(crate) fn finish(mut self, enc: &mut Encoder) -> Result<(Vec<u8>, Vec<u64>)> {
        self.flush(enc)?;
        Ok((self.out, self.block_starts))
    }
}

/// A lookup table (fragment, export, id, xattr id): the metadata blocks, and
/// the list of their positions once placed at `at` in the image.
pub(crate) fn lookup_table(
    enc: &mut Encoder,
    entries: &[u8],
    at: u64,
) -> Result<(Vec<u8>, Vec<u8>)> {
    let mut m = MetaWriter::new();
    m.write(enc, entries)?;
    let (blocks, starts) = m.finish(enc)?;
    let mut index = Vec::with_capacity(starts.len() * 8);
    for s in starts {
        index.extend_from_slice(&(at + s).to_le_bytes());
    }
    Ok((blocks, index))
}

/// The uid/gid table.
#[derive(Default)]
pub(crate) struct Ids {
    map: HashMap<u32, u16>,
    pub(crate) list: Vec<u32>,
}

impl Ids {
    pub(crate) fn get(&mut self, id: u32) -> Result<u16> {
        if let Some(&i) = self.map.get(&id) {
            return Ok(i);
        }
        let i = u16::try_from(self.list.len())
            .map_err(|_| Error::Unsupported("more than 65536 distinct uids/gids".into()))?;
        self.map.insert(id, i);
        self.list.push(id);
        Ok(i)
    }
}

/// One inode's xattrs: (prefix type, name without prefix, value), sorted.
type XattrSet = Vec<(u16, Vec<u8>, Vec<u8>)>;

/// Xattr sets, de-duplicated, in order of first use.
#[derive(Default)]
pub(crate) struct Xattrs {
    map: HashMap<XattrSet, u32>,
    /// Key/value metadata stream.
    kv: Option<MetaWriter>,
    /// Xattr id entries (16 bytes each).
    pub(crate) ids: Vec<u8>,
    pub(crate) count: u32,
}

fn split_xattr_name(name: &[u8]) -> Option<(u16, &[u8])> {
    for (prefix, ty) in [
        (&b"user."[..], 0u16),
        (&b"trusted."[..], 1),
        (&b"security."[..], 2),
    ] {
        if let Some(rest) = name.strip_prefix(prefix) {
            if !rest.is_empty() {
                return Some((ty, rest));
            }
        }
    }
    None
}

impl Xattrs {
    /// The xattr index of a set of (full name, value) pairs, or `NO_XATTR`
    /// for an empty set. Names outside user./trusted./security. cannot be
    /// stored in SquashFS and are skipped with a warning; for repeated names
    /// the last value wins.
    pub(crate) fn get(&mut self, enc: &mut Encoder, xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<u32> {
        if xattrs.is_empty() {
            return Ok(NO_XATTR);
        }
        let mut set: XattrSet = Vec::with_capacity(xattrs.len());
        for (name, value) in xattrs {
            let Some((ty, rest)) = split_xattr_name(name) else {
                tracing::warn!(
                    name = %String::from_utf8_lossy(name),
                    "xattr namespace not supported by SquashFS, skipped"
                );
                continue;
            };
            if rest.len() > u16::MAX as usize || value.len() > u32::MAX as usize {
                return Err(Error::Unsupported("xattr name or value too long".into()));
            }
            set.retain(|(t, n, _)| !(*t == ty && n == rest));
            set.push((ty, rest.to_vec(), value.clone()));
        }
        if set.is_empty() {
            return Ok(NO_XATTR);
        }
        set.sort();
        if let Some(&i) = self.map.get(&set) {
            return Ok(i);
        }
        let kv = self.kv.get_or_insert_with(MetaWriter::new);
        let (block, offset) = kv.pos();
        let mut bytes = Vec::new();
        for (ty, name, value) in &set {
            bytes.extend_from_slice(&ty.to_le_bytes());
            bytes.extend_from_slice(&(name.len() as u16).to_le_bytes());
            bytes.extend_from_slice(name);
            bytes.extend_from_slice(&(value.len() as u32).to_le_bytes());
            bytes.extend_from_slice(value);
        }
        kv.write(enc, &bytes)?;
        let xref = (block << 16) | u64::from(offset);
        self.ids.extend_from_slice(&xref.to_le_bytes());
        self.ids
            .extend_from_slice(&(set.len() as u32).to_le_bytes());
        self.ids
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        let i = self.count;
        self.count += 1;
        self.map.insert(set, i);
        Ok(i)
    }

    /// The key/value blocks (empty if there are no xattrs).
    pub(crate) fn take_kv(&mut self, enc: &mut Encoder) -> Result<Vec<u8>> {
        match self.kv.take() {
            Some(kv) => Ok(kv.finish(enc)?.0),
            None => Ok(Vec::new()),
        }
    }
}

/// One directory entry to write.
pub(crate) struct DirEnt<'a> {
    pub(crate) name: &'a [u8],
    /// Inode reference: (inode table block, offset).
    pub(crate) block: u32,
    pub(crate) offset: u16,
    pub(crate) number: u32,
    /// Basic inode type (1..=7).
    pub(crate) ty: u16,
}

/// Where a directory listing was written, and its index.
pub(crate) struct Listing {
    pub(crate) start_block: u32,
    pub(crate) offset: u16,
    /// Listing size in bytes (the inode's file_size is this + 3).
    pub(crate) size: u64,
    /// Directory index entries: (offset of the header in the listing,
    /// directory table block holding it, first name of that header).
    pub(crate) index: Vec<(u32, u32, Vec<u8>)>,
}

/// Writes a directory listing (entries sorted by name), like mksquashfs: a
/// new header for every 256 entries, change of inode block, or inode number
/// delta outside i16, and an index entry (with a new header) every time the
/// listing since the last index point would exceed 8 KiB.
pub(crate) fn write_listing(
    dirs: &mut MetaWriter,
    enc: &mut Encoder,
    entries: &[DirEnt],
) -> Result<Listing> {
    let (start_block, offset) = dirs.pos();
    let start_u = dirs.uncompressed_len();
    let mut buf: Vec<u8> = Vec::new();
    let mut index_points: Vec<(usize, &[u8])> = Vec::new();
    let mut index_base = 0usize;
    // (position of the count field, inode block, base number, count)
    let mut hdr: Option<(usize, u32, u32, u32)> = None;
    for e in entries {
        let esize = 8 + e.name.len();
        let delta = hdr.map(|(_, _, base, _)| i64::from(e.number) - i64::from(base));
        let need_index = hdr.is_some() && buf.len() + esize - index_base > METADATA_SIZE;
        let new_hdr = match hdr {
            None => true,
            Some((_, block, _, count)) => {
                count == 256
                    || block != e.block
                    || !(-32768..=32767).contains(&delta.unwrap_or(0))
                    || need_index
            }
        };
        if new_hdr {
            if let Some((at, _, _, count)) = hdr {
                buf[at..at + 4].copy_from_slice(&(count - 1).to_le_bytes());
            }
            if need_index {
                index_points.push((buf.len(), e.name));
                index_base = buf.len();
            }
            let at = buf.len();
            buf.extend_from_slice(&0u32.to_le_bytes());
            buf.extend_from_slice(&e.block.to_le_bytes());
            buf.extend_from_slice(&e.number.to_le_bytes());
            hdr = Some((at, e.block, e.number, 0));
        }
        let (at, block, base, count) = hdr.expect("header started above");
        let delta = (i64::from(e.number) - i64::from(base)) as i16;
        buf.extend_from_slice(&e.offset.to_le_bytes());
        buf.extend_from_slice(&delta.to_le_bytes());
        buf.extend_from_slice(&e.ty.to_le_bytes());
        buf.extend_from_slice(&((e.name.len() - 1) as u16).to_le_bytes());
        buf.extend_from_slice(e.name);
        hdr = Some((at, block, base, count + 1));
    }
    if let Some((at, _, _, count)) = hdr {
        buf[at..at + 4].copy_from_slice(&(count - 1).to_le_bytes());
    }
    dirs.write(enc, &buf)?;
    let to_u32 = |v: u64| {
        u32::try_from(v).map_err(|_| Error::Unsupported("directory table larger than 4 GiB".into()))
    };
    let mut index = Vec::with_capacity(index_points.len());
    for (at, name) in index_points {
        let block = dirs.block_of(start_u + at as u64);
        index.push((at as u32, to_u32(block)?, name.to_vec()));
    }
    Ok(Listing {
        start_block: to_u32(start_block)?,
        offset,
        size: buf.len() as u64,
        index,
    })
}

/// The common 16-byte inode header.
pub(crate) fn inode_header(
    buf: &mut Vec<u8>,
    ty: u16,
    mode: u16,
    uid: u16,
    gid: u16,
    mtime: u32,
    number: u32,
) {
    buf.extend_from_slice(&ty.to_le_bytes());
    buf.extend_from_slice(&(mode & 0o7777).to_le_bytes());
    buf.extend_from_slice(&uid.to_le_bytes());
    buf.extend_from_slice(&gid.to_le_bytes());
    buf.extend_from_slice(&mtime.to_le_bytes());
    buf.extend_from_slice(&number.to_le_bytes());
}

pub(crate) trait PutLe {
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn u64(&mut self, v: u64);
}

impl PutLe for Vec<u8> {
    fn u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
}
