//! SquashFS 4.0 writer: builds an image from a stream of entries (e.g. the
//! members of OCI layer tarballs) without unpacking anything to disk.
//!
//! Only metadata is kept in memory (the entry tree and each file's block
//! list). File contents are streamed: full blocks are compressed on a pool
//! of `threads` worker threads (at most `2 × threads` blocks in flight) and
//! written in order; file tails share fragment blocks; identical files are
//! stored once (see the `data` submodule for the de-duplication key and its odds).
//!
//! Layout, as mksquashfs writes it (all positions relative to the image
//! start, which is the writer's position when [`SquashfsWriter::new`] is
//! called): superblock, compressor options (lz4 only), data and fragment
//! blocks, inode table, directory table, fragment table, export table, id
//! table, xattr tables; the image is padded to a multiple of 4096 bytes.
//!
//! Inode numbers are assigned depth-first, children (in name order) before
//! their directory, the root last; output is byte-identical for the same
//! sequence of calls whatever the thread count.
//!
//! Paths are absolute byte strings; missing parent directories are created
//! implicitly with mode 0755, no xattrs, and the uid, gid and mtime of their
//! own parent (the root starts as 0755, uid 0, gid 0, mtime = `mkfs_time`).
//! Adding an existing path replaces it, except that adding a directory over
//! a directory only updates its metadata (children are kept). A path whose
//! ancestor exists but is not a directory (e.g. a symlink) is an error.

mod compress;
mod data;
mod tables;
mod tree;

#[cfg(test)]
mod tests;

use crate::squashfs::format::{flags, itype, MAGIC, NO_FRAGMENT, NO_XATTR, SUPERBLOCK_SIZE};
use crate::squashfs::{Compressor, FileKind};
use std::io::{Read, Seek, SeekFrom, Write};
use tables::{DirEnt, Ids, MetaWriter, PutLe, Xattrs};
use tree::{Body, Tree, ROOT};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o error writing SquashFS image: {0}")]
    Io(#[from] std::io::Error),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("invalid path {0:?}: {1}")]
    InvalidPath(String, String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: no such entry")]
    NotFound(String),
    #[error("{0}: is a directory (directories cannot be hard linked)")]
    IsADirectory(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("SquashFS writer: {0}")]
    Other(String),
    #[error("SquashFS writer is unusable after an earlier error")]
    Failed,
}

/// Image-wide options.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Gzip, Xz, Lz4 or Zstd (Lzo and Lzma are rejected).
    pub compressor: Compressor,
    /// Compression level (gzip 1-9, default 9; xz 0-9, default 6; zstd
    /// 1-22, default 15; ignored for lz4).
    pub level: Option<i32>,
    /// Power of two in 4 KiB..=1 MiB.
    pub block_size: u32,
    /// Compression threads; 0 = all cores.
    pub threads: usize,
    /// Superblock creation time.
    pub mkfs_time: u32,
}

impl Default for WriterOptions {
    /// Gzip, 128 KiB blocks, all cores, and `mkfs_time` from
    /// `SOURCE_DATE_EPOCH` when set (else the current time).
    fn default() -> Self {
        let mkfs_time = std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32)
                    .unwrap_or(0)
            });
        WriterOptions {
            compressor: Compressor::Gzip,
            level: None,
            block_size: 131072,
            threads: 0,
            mkfs_time,
        }
    }
}

/// Metadata of one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Permission bits including setuid/setgid/sticky (type bits ignored).
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    /// Full names (`user.*`, `trusted.*`, `security.*`; others are skipped).
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What [`SquashfsWriter::finish`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Size of the image proper (the superblock's `bytes_used`).
    pub bytes_used: u64,
    /// Bytes from the image start to the writer's final position: padded to
    /// a multiple of 4096 (and zero-filled past any bytes written earlier
    /// and rewound for de-duplication).
    pub image_size: u64,
    pub inodes: u32,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Block/char devices, fifos and sockets.
    pub specials: u64,
    /// Names that are extra hard links of an inode.
    pub hard_links: u64,
    pub fragments: u32,
    /// Regular files whose content was found identical to an earlier one.
    pub duplicate_files: u64,
    /// Bytes of data and fragment blocks.
    pub data_bytes: u64,
    pub ids: u16,
    pub xattr_ids: u32,
}

/// Encodes a device number as SquashFS stores it (Linux `new_encode_dev`).
pub fn encode_rdev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

pub struct SquashfsWriter<W: Write + Seek> {
    data: data::DataWriter<W>,
    tree: Tree,
    opts: WriterOptions,
    level: i32,
}

/// Maximum symlink target length (the kernel rejects targets > PAGE_SIZE,
/// and Linux `symlink()` accepts at most PATH_MAX - 1).
const MAX_SYMLINK: usize = 4095;

impl<W: Write + Seek> SquashfsWriter<W> {
    /// Starts an image at the current position of `out`.
    pub fn new(mut out: W, options: WriterOptions) -> Result<Self> {
        let level = compress::effective_level(options.compressor, options.level)?;
        let bs = options.block_size;
        if !(4096..=(1 << 20)).contains(&bs) || !bs.is_power_of_two() {
            return Err(Error::Invalid(format!(
                "block size {bs} is not a power of two in 4096..=1048576"
            )));
        }
        let threads = if options.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            options.threads
        };
        let base = out.stream_position()?;
        let mut data = data::DataWriter::new(out, base, 0, threads, options.compressor, level, bs)?;
        // Superblock placeholder, then compressor options: the kernel and
        // unsquashfs require them for lz4 (version 1 = legacy, flags 0).
        data.write_raw(&[0u8; SUPERBLOCK_SIZE])?;
        if options.compressor == Compressor::Lz4 {
            let mut b = Vec::new();
            b.u16(8 | crate::squashfs::format::META_UNCOMPRESSED);
            b.u32(1);
            b.u32(0);
            data.write_raw(&b)?;
        }
        let root = Metadata {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: options.mkfs_time,
            xattrs: Vec::new(),
        };
        Ok(SquashfsWriter {
            data,
            tree: Tree::new(root),
            opts: options,
            level,
        })
    }

    /// Adds a directory (or updates the metadata of an existing one; `"/"`
    /// sets the root's metadata).
    pub fn add_dir(&mut self, path: &[u8], meta: Metadata) -> Result<()> {
        let comps = tree::split(path)?;
        self.tree
            .add(&comps, meta, Body::Dir(Default::default()))
            .map(|_| ())
    }

    /// Adds a regular file, streaming `content` to the image.
    pub fn add_file(&mut self, path: &[u8], meta: Metadata, content: &mut dyn Read) -> Result<()> {
        let comps = tree::split(path)?;
        if comps.is_empty() {
            return Err(Error::InvalidPath(
                "/".into(),
                "the root must be a directory".into(),
            ));
        }
        // Validate the parents before writing any data.
        self.check_parents(&comps)?;
        let fd = self.data.write_file(content)?;
        self.tree.add(&comps, meta, Body::File(fd)).map(|_| ())
    }

    pub fn add_symlink(&mut self, path: &[u8], meta: Metadata, target: &[u8]) -> Result<()> {
        let comps = tree::split(path)?;
        if target.is_empty() || target.len() > MAX_SYMLINK || target.contains(&0) {
            return Err(Error::Invalid(format!(
                "symlink target of {} bytes (must be 1..={MAX_SYMLINK}, no NUL)",
                target.len()
            )));
        }
        self.tree
            .add(&comps, meta, Body::Symlink(target.to_vec()))
            .map(|_| ())
    }

    /// Adds `path` as another name of the existing non-directory `target`.
    pub fn add_hardlink(&mut self, path: &[u8], target: &[u8]) -> Result<()> {
        let comps = tree::split(path)?;
        let tcomps = tree::split(target)?;
        let lossy = || String::from_utf8_lossy(target).into_owned();
        let t = self
            .tree
            .lookup(&tcomps)
            .ok_or_else(|| Error::NotFound(lossy()))?;
        if self.tree.nodes[t].is_dir() {
            return Err(Error::IsADirectory(lossy()));
        }
        self.tree.link(&comps, t)
    }

    /// Adds a block/char device (`rdev` as encoded by [`encode_rdev`]), a
    /// fifo or a socket (`rdev` ignored).
    pub fn add_device(
        &mut self,
        path: &[u8],
        meta: Metadata,
        kind: FileKind,
        rdev: u32,
    ) -> Result<()> {
        let comps = tree::split(path)?;
        let rdev = match kind {
            FileKind::BlockDevice | FileKind::CharDevice => rdev,
            FileKind::Fifo | FileKind::Socket => 0,
            _ => return Err(Error::Invalid(format!("add_device with kind {kind:?}"))),
        };
        self.tree
            .add(&comps, meta, Body::Special(kind, rdev))
            .map(|_| ())
    }

    /// Removes an entry (a directory with its subtree); `"/"` removes all
    /// children of the root. Data already written stays in the image.
    pub fn remove(&mut self, path: &[u8]) -> Result<bool> {
        let comps = tree::split(path)?;
        Ok(self.tree.remove(&comps))
    }

    /// Removes all children of directory `path` (OCI opaque whiteouts);
    /// returns whether it had any. Not a directory / missing: `Ok(false)`.
    pub fn clear_dir(&mut self, path: &[u8]) -> Result<bool> {
        let comps = tree::split(path)?;
        Ok(match self.tree.lookup(&comps) {
            Some(n) => self.tree.clear(n),
            None => false,
        })
    }

    pub fn contains(&self, path: &[u8]) -> bool {
        match tree::split(path) {
            Ok(c) => self.tree.lookup(&c).is_some(),
            Err(_) => false,
        }
    }

    /// Metadata of an entry added earlier (symlinks are not followed).
    pub fn metadata(&self, path: &[u8]) -> Option<&Metadata> {
        let c = tree::split(path).ok()?;
        self.tree.lookup(&c).map(|n| &self.tree.nodes[n].meta)
    }

    fn check_parents(&self, comps: &[&[u8]]) -> Result<()> {
        let mut cur = ROOT;
        for (i, c) in comps[..comps.len() - 1].iter().enumerate() {
            let Body::Dir(m) = &self.tree.nodes[cur].body else {
                unreachable!("walk only enters directories")
            };
            match m.get(*c) {
                None => return Ok(()),
                Some(&n) if self.tree.nodes[n].is_dir() => cur = n,
                Some(_) => {
                    let mut s = String::new();
                    for c in &comps[..=i] {
                        s.push('/');
                        s.push_str(&String::from_utf8_lossy(c));
                    }
                    return Err(Error::NotADirectory(s));
                }
            }
        }
        Ok(())
    }

    /// Writes the remaining fragments and all tables and the superblock.
    /// Returns the output (positioned at the end of the padded image).
    pub fn finish(mut self) -> Result<(W, Summary)> {
        self.data.finish_data()?;
        let mut enc =
            compress::Encoder::new(self.opts.compressor, self.level, self.opts.block_size)?;
        let tree = &self.tree;
        let n = tree.nodes.len();
        let mut summary = Summary::default();

        // Pass 1: inode numbers (post-order, children in name order, each
        // inode once) and name counts (nlink of non-directories).
        let mut numbers = vec![0u32; n];
        let mut names = vec![0u32; n];
        let mut next = 1u32;
        {
            let mut stack = vec![(ROOT, tree.entries(ROOT), 0usize)];
            while let Some((dir, children, i)) = stack.last_mut() {
                if let Some(&(_, c)) = children.get(*i) {
                    *i += 1;
                    names[c] += 1;
                    if tree.nodes[c].is_dir() {
                        stack.push((c, tree.entries(c), 0));
                    } else if numbers[c] == 0 {
                        numbers[c] = next;
                        next = next
                            .checked_add(1)
                            .ok_or_else(|| Error::Unsupported("too many inodes".into()))?;
                    }
                } else {
                    numbers[*dir] = next;
                    next = next
                        .checked_add(1)
                        .ok_or_else(|| Error::Unsupported("too many inodes".into()))?;
                    stack.pop();
                }
            }
        }
        let inode_count = next - 1;

        // Pass 2: inodes and directory listings, in the same order.
        let mut inodes = MetaWriter::new();
        let mut dirs = MetaWriter::new();
        let mut ids = Ids::default();
        let mut xattrs = Xattrs::default();
        let mut refs = vec![u64::MAX; n];
        let mut export = vec![0u64; inode_count as usize];
        let mut buf = Vec::new();
        let mut stack = vec![(ROOT, tree.entries(ROOT), 0usize)];
        let mut root_ref = 0u64;
        while let Some((dir, children, i)) = stack.last_mut() {
            if let Some(&(_, c)) = children.get(*i) {
                *i += 1;
                if tree.nodes[c].is_dir() {
                    stack.push((c, tree.entries(c), 0));
                    continue;
                }
                if refs[c] != u64::MAX {
                    summary.hard_links += 1;
                    continue;
                }
                buf.clear();
                encode_leaf(
                    &mut buf,
                    tree,
                    c,
                    numbers[c],
                    names[c],
                    &mut ids,
                    &mut xattrs,
                    &mut enc,
                    &mut summary,
                )?;
                let r = write_inode(&mut inodes, &mut enc, &buf)?;
                refs[c] = r;
                export[numbers[c] as usize - 1] = r;
                continue;
            }
            // All children written: the listing, then the directory inode.
            let dir = *dir;
            let entries: Vec<DirEnt> = children
                .iter()
                .map(|&(name, c)| DirEnt {
                    name,
                    block: (refs[c] >> 16) as u32,
                    offset: (refs[c] & 0xffff) as u16,
                    number: numbers[c],
                    ty: basic_type(&tree.nodes[c].body),
                })
                .collect();
            let subdirs = children
                .iter()
                .filter(|&&(_, c)| tree.nodes[c].is_dir())
                .count() as u32;
            let listing = tables::write_listing(&mut dirs, &mut enc, &entries)?;
            drop(entries);
            stack.pop();
            let parent = match stack.last() {
                Some(&(p, _, _)) => numbers[p],
                None => inode_count + 1,
            };
            let node = &tree.nodes[dir];
            let m = &node.meta;
            let uid = ids.get(m.uid)?;
            let gid = ids.get(m.gid)?;
            let xattr = xattrs.get(&mut enc, &m.xattrs)?;
            let file_size = listing.size + 3;
            buf.clear();
            if xattr == NO_XATTR && listing.index.is_empty() && file_size <= 0xffff {
                tables::inode_header(
                    &mut buf,
                    itype::DIR,
                    m.mode,
                    uid,
                    gid,
                    m.mtime,
                    numbers[dir],
                );
                buf.u32(listing.start_block);
                buf.u32(2 + subdirs);
                buf.u16(file_size as u16);
                buf.u16(listing.offset);
                buf.u32(parent);
            } else {
                let file_size = u32::try_from(file_size).map_err(|_| {
                    Error::Unsupported("directory listing larger than 4 GiB".into())
                })?;
                let icount = u16::try_from(listing.index.len())
                    .map_err(|_| Error::Unsupported("directory too large".into()))?;
                tables::inode_header(
                    &mut buf,
                    itype::LDIR,
                    m.mode,
                    uid,
                    gid,
                    m.mtime,
                    numbers[dir],
                );
                buf.u32(2 + subdirs);
                buf.u32(file_size);
                buf.u32(listing.start_block);
                buf.u32(parent);
                buf.u16(icount);
                buf.u16(listing.offset);
                buf.u32(xattr);
                for (index, start, name) in &listing.index {
                    buf.u32(*index);
                    buf.u32(*start);
                    buf.u32(name.len() as u32 - 1);
                    buf.extend_from_slice(name);
                }
            }
            let r = write_inode(&mut inodes, &mut enc, &buf)?;
            refs[dir] = r;
            export[numbers[dir] as usize - 1] = r;
            summary.dirs += 1;
            if dir == ROOT {
                root_ref = r;
            }
        }

        // Tables, in mksquashfs order.
        let d = &mut self.data;
        let (inode_bytes, _) = inodes.finish(&mut enc)?;
        let inode_table_start = d.pos;
        d.write_raw(&inode_bytes)?;
        drop(inode_bytes);
        let (dir_bytes, _) = dirs.finish(&mut enc)?;
        let directory_table_start = d.pos;
        d.write_raw(&dir_bytes)?;
        drop(dir_bytes);

        let mut frag_entries = Vec::with_capacity(d.fragments.len() * 16);
        for &(start, size) in &d.fragments {
            frag_entries.u64(start);
            frag_entries.u32(size);
            frag_entries.u32(0);
        }
        let fragment_table_start = write_lookup(d, &mut enc, &frag_entries)?;

        let mut export_entries = Vec::with_capacity(export.len() * 8);
        for r in &export {
            export_entries.u64(*r);
        }
        let export_table_start = write_lookup(d, &mut enc, &export_entries)?;

        let mut id_entries = Vec::with_capacity(ids.list.len() * 4);
        for id in &ids.list {
            id_entries.u32(*id);
        }
        let id_table_start = write_lookup(d, &mut enc, &id_entries)?;

        let xattr_id_table_start = if xattrs.count > 0 {
            let kv = xattrs.take_kv(&mut enc)?;
            let kv_start = d.pos;
            d.write_raw(&kv)?;
            let ids_at = d.pos;
            let (blocks, index) = tables::lookup_table(&mut enc, &xattrs.ids, ids_at)?;
            d.write_raw(&blocks)?;
            let start = d.pos;
            let mut hdr = Vec::new();
            hdr.u64(kv_start);
            hdr.u32(xattrs.count);
            hdr.u32(0);
            d.write_raw(&hdr)?;
            d.write_raw(&index)?;
            start
        } else {
            u64::MAX
        };
        let bytes_used = d.pos;

        // Padding to 4 KiB (and over stale bytes of a rewound duplicate).
        let end = bytes_used.max(d.high_water).next_multiple_of(4096);
        let zeros = vec![0u8; 65536];
        while d.pos < end {
            let k = ((end - d.pos) as usize).min(zeros.len());
            d.write_raw(&zeros[..k])?;
        }

        let mut fl = flags::DUPLICATES | flags::EXPORTABLE;
        if xattrs.count == 0 {
            fl |= flags::NO_XATTRS;
        }
        if self.opts.compressor == Compressor::Lz4 {
            fl |= flags::COMPRESSOR_OPTIONS;
        }
        let fragment_count = d.fragments.len() as u32;
        let mut sb = Vec::with_capacity(SUPERBLOCK_SIZE);
        sb.u32(MAGIC);
        sb.u32(inode_count);
        sb.u32(self.opts.mkfs_time);
        sb.u32(self.opts.block_size);
        sb.u32(fragment_count);
        sb.u16(self.opts.compressor.id());
        sb.u16(self.opts.block_size.trailing_zeros() as u16);
        sb.u16(fl);
        sb.u16(ids.list.len() as u16);
        sb.u16(4);
        sb.u16(0);
        sb.u64(root_ref);
        sb.u64(bytes_used);
        sb.u64(id_table_start);
        sb.u64(xattr_id_table_start);
        sb.u64(inode_table_start);
        sb.u64(directory_table_start);
        sb.u64(fragment_table_start);
        sb.u64(export_table_start);
        debug_assert_eq!(sb.len(), SUPERBLOCK_SIZE);
        d.out.seek(SeekFrom::Start(d.base))?;
        d.out.write_all(&sb)?;
        d.out.seek(SeekFrom::Start(d.base + end))?;
        d.out.flush()?;

        summary.bytes_used = bytes_used;
        summary.image_size = end;
        summary.inodes = inode_count;
        summary.fragments = fragment_count;
        summary.duplicate_files = d.duplicates;
        summary.data_bytes = d.data_bytes;
        summary.ids = ids.list.len() as u16;
        summary.xattr_ids = xattrs.count;
        tracing::debug!(?summary, "squashfs image written");
        // Move the output out of the writer (the worker pool is dropped).
        let SquashfsWriter { data, .. } = self;
        Ok((data.into_output(), summary))
    }
}

fn basic_type(body: &Body) -> u16 {
    match body {
        Body::Dir(_) => itype::DIR,
        Body::File(_) => itype::FILE,
        Body::Symlink(_) => itype::SYMLINK,
        Body::Special(FileKind::BlockDevice, _) => itype::BLKDEV,
        Body::Special(FileKind::CharDevice, _) => itype::CHRDEV,
        Body::Special(FileKind::Fifo, _) => itype::FIFO,
        Body::Special(_, _) => itype::SOCKET,
        Body::Dead => unreachable!("dead nodes are unreachable"),
    }
}

/// Appends `bytes` (one inode) to the inode table; returns its reference.
fn write_inode(inodes: &mut MetaWriter, enc: &mut compress::Encoder, bytes: &[u8]) -> Result<u64> {
    let (block, offset) = inodes.pos();
    if block >= 1 << 32 {
        return Err(Error::Unsupported("inode table larger than 4 GiB".into()));
    }
    inodes.write(enc, bytes)?;
    Ok((block << 16) | u64::from(offset))
}

/// Writes a lookup table's blocks then its index; returns the index start.
fn write_lookup<W: Write + Seek>(
    d: &mut data::DataWriter<W>,
    enc: &mut compress::Encoder,
    entries: &[u8],
) -> Result<u64> {
    let (blocks, index) = tables::lookup_table(enc, entries, d.pos)?;
    d.write_raw(&blocks)?;
    let start = d.pos;
    d.write_raw(&index)?;
    Ok(start)
}

/// Encodes the inode of non-directory node `c`.
#[allow(clippy::too_many_arguments)]
fn encode_leaf(
    buf: &mut Vec<u8>,
    tree: &Tree,
    c: usize,
    number: u32,
    nlink: u32,
    ids: &mut Ids,
    xattrs: &mut Xattrs,
    enc: &mut compress::Encoder,
    summary: &mut Summary,
) -> Result<()> {
    let node = &tree.nodes[c];
    let m = &node.meta;
    let uid = ids.get(m.uid)?;
    let gid = ids.get(m.gid)?;
    let xattr = xattrs.get(enc, &m.xattrs)?;
    let ext = xattr != NO_XATTR || nlink > 1;
    let hdr = |buf: &mut Vec<u8>, basic: u16| {
        let ty = if ext { basic + 7 } else { basic };
        tables::inode_header(buf, ty, m.mode, uid, gid, m.mtime, number);
    };
    match &node.body {
        Body::File(fd) => {
            summary.files += 1;
            let (frag, frag_off) = fd.fragment.unwrap_or((NO_FRAGMENT, 0));
            let basic_ok = !ext
                && fd.sparse == 0
                && fd.size <= u64::from(u32::MAX)
                && fd.blocks_start <= u64::from(u32::MAX);
            if basic_ok {
                hdr(buf, itype::FILE);
                buf.u32(fd.blocks_start as u32);
                buf.u32(frag);
                buf.u32(frag_off);
                buf.u32(fd.size as u32);
            } else {
                tables::inode_header(buf, itype::LFILE, m.mode, uid, gid, m.mtime, number);
                buf.u64(fd.blocks_start);
                buf.u64(fd.size);
                buf.u64(fd.sparse);
                buf.u32(nlink);
                buf.u32(frag);
                buf.u32(frag_off);
                buf.u32(xattr);
            }
            for &b in &fd.blocks {
                buf.u32(b);
            }
        }
        Body::Symlink(target) => {
            summary.symlinks += 1;
            hdr(buf, itype::SYMLINK);
            buf.u32(nlink);
            buf.u32(target.len() as u32);
            buf.extend_from_slice(target);
            if ext {
                buf.u32(xattr);
            }
        }
        Body::Special(kind, rdev) => {
            summary.specials += 1;
            let basic = match kind {
                FileKind::BlockDevice => itype::BLKDEV,
                FileKind::CharDevice => itype::CHRDEV,
                FileKind::Fifo => itype::FIFO,
                _ => itype::SOCKET,
            };
            hdr(buf, basic);
            buf.u32(nlink);
            if matches!(kind, FileKind::BlockDevice | FileKind::CharDevice) {
                buf.u32(*rdev);
            }
            if ext {
                buf.u32(xattr);
            }
        }
        Body::Dir(_) | Body::Dead => unreachable!("leaf inodes only"),
    }
    Ok(())
}
