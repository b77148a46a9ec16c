//! SquashFS 4.0: a reader and a writer, sharing the on-disk format.
//!
//! * Here and in `read/`: [`Archive`] reads an image (possibly embedded in a larger file at a
//!   byte offset, as in SIF) with positioned reads only, so it can be shared by many FUSE
//!   worker threads (`Archive: Send + Sync`). Opening reads the superblock and the small
//!   tables (id table, fragment/xattr/export indexes) plus the root inode; everything else is
//!   read on demand and cached in bounded LRU caches (metadata blocks, inodes, block lists,
//!   data/fragment blocks). Decompression always happens outside the cache locks. All
//!   on-disk input is bounds-checked: corrupt images produce [`Error::Corrupt`], never a
//!   panic. The reader's core types (`Archive`, `Inode`, `Error`) stay in this file; its
//!   parts (inodes, directories, files, block lists, xattrs, caches, decompression) are in
//!   `read/`.
//! * [`write`]: [`write::SquashfsWriter`], which `rsing build` and the converters use.
//! * `format`: the on-disk layout (superblock, inode types, flags, sizes) both sides use.

mod format;
mod read;
pub mod write;

#[cfg(test)]
pub(crate) mod testutil;

// The reader's parts under their old names, for this file and for `format` and `write`.
use read::{blockfile, blocks, cache, compress, metadata, source, warm};

pub use blockfile::{BlockDir, BlockFile};
pub use compress::Compressor;
pub use format::{flags, Superblock};
pub use source::{AlreadyReported, ReadAt};

use cache::Lru;
use format::{corrupt, SUPERBLOCK_SIZE};
use metadata::{MetaBlock, MetaReader};
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("i/o error reading SquashFS archive: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a SquashFS file (bad magic)")]
    NotSquashfs,
    #[error("unsupported SquashFS version {major}.{minor} (only 4.0 is supported)")]
    UnsupportedVersion { major: u16, minor: u16 },
    #[error("unsupported SquashFS compressor (id {0})")]
    UnsupportedCompressor(u16),
    #[error("corrupt SquashFS: {0}")]
    Corrupt(String),
    #[error("not a directory")]
    NotADirectory,
    #[error("not a regular file")]
    NotAFile,
    #[error("not a symbolic link")]
    NotASymlink,
}

impl Error {
    /// The closest errno, for FUSE replies.
    pub fn errno(&self) -> i32 {
        match self {
            Error::NotADirectory => libc::ENOTDIR,
            Error::NotAFile => libc::EISDIR,
            Error::NotASymlink => libc::EINVAL,
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }
}

/// A SquashFS inode reference: `(metadata block start << 16) | offset`,
/// the block start being relative to the inode table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InodeRef(pub u64);

impl InodeRef {
    /// Metadata block position relative to the inode table start.
    pub fn block(self) -> u64 {
        self.0 >> 16
    }
    /// Byte offset inside the decompressed metadata block.
    pub fn offset(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    File,
    Symlink,
    BlockDevice,
    CharDevice,
    Fifo,
    Socket,
}

impl FileKind {
    /// From an inode type (basic 1..=7 or extended 8..=14).
    pub(crate) fn from_type(t: u16) -> Option<FileKind> {
        Some(match t {
            1 | 8 => FileKind::Directory,
            2 | 9 => FileKind::File,
            3 | 10 => FileKind::Symlink,
            4 | 11 => FileKind::BlockDevice,
            5 | 12 => FileKind::CharDevice,
            6 | 13 => FileKind::Fifo,
            7 | 14 => FileKind::Socket,
            _ => return None,
        })
    }

    /// The `S_IFMT` bits for this kind.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileKind::Directory => libc::S_IFDIR,
            FileKind::File => libc::S_IFREG,
            FileKind::Symlink => libc::S_IFLNK,
            FileKind::BlockDevice => libc::S_IFBLK,
            FileKind::CharDevice => libc::S_IFCHR,
            FileKind::Fifo => libc::S_IFIFO,
            FileKind::Socket => libc::S_IFSOCK,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Inode {
    pub inode_ref: InodeRef,
    /// SquashFS inode number (1-based).
    pub number: u32,
    pub kind: FileKind,
    /// Permission bits incl. setuid/setgid/sticky (low 12 bits), no type bits.
    pub mode: u16,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub nlink: u32,
    /// File: byte size; symlink: target length; dir: squashfs file_size
    /// (listing size + 3); devices/ipc: 0.
    pub size: u64,
    /// Device number for block/char devices (as stored), else 0.
    pub rdev: u32,
    pub(crate) xattr: u32,
    pub(crate) data: InodeData,
}

#[derive(Debug, Clone)]
pub(crate) enum InodeData {
    Dir {
        /// Directory table block (relative to the directory table start).
        start_block: u32,
        offset: u16,
        /// Number of directory index entries (extended dirs).
        index_count: u32,
        /// Where the index entries start (inode table metadata position).
        index_pos: (u64, usize),
        parent: u32,
    },
    File {
        /// Archive position of the first data block.
        blocks_start: u64,
        fragment: u32,
        frag_offset: u32,
        block_count: u64,
        /// Where the block size list starts (inode table metadata position).
        list_pos: (u64, usize),
        sparse: u64,
    },
    Symlink {
        target: Arc<[u8]>,
    },
    Other,
}

impl Inode {
    pub fn is_dir(&self) -> bool {
        self.kind == FileKind::Directory
    }
    pub fn is_file(&self) -> bool {
        self.kind == FileKind::File
    }
    pub fn is_symlink(&self) -> bool {
        self.kind == FileKind::Symlink
    }
    /// Full `st_mode` (type bits | permission bits).
    pub fn st_mode(&self) -> u32 {
        self.kind.mode_bits() | u32::from(self.mode)
    }
    /// Major device number of a block/char device (Linux `new_decode_dev`
    /// layout, which is how SquashFS stores `rdev`).
    pub fn rdev_major(&self) -> u32 {
        (self.rdev & 0xfff00) >> 8
    }
    /// Minor device number of a block/char device.
    pub fn rdev_minor(&self) -> u32 {
        (self.rdev & 0xff) | ((self.rdev >> 12) & 0xfff00)
    }
    /// Whether the inode has extended attributes.
    pub fn has_xattrs(&self) -> bool {
        self.xattr != format::NO_XATTR
    }
    /// Inode number of the parent directory (directories only; the root's
    /// parent is reported as `inode_count + 1` by mksquashfs).
    pub fn parent_number(&self) -> Option<u32> {
        match self.data {
            InodeData::Dir { parent, .. } => Some(parent),
            _ => None,
        }
    }
    /// Bytes of the file that are sparse holes, as recorded (extended file
    /// inodes only; 0 otherwise).
    pub fn sparse_bytes(&self) -> u64 {
        match self.data {
            InodeData::File { sparse, .. } => sparse,
            _ => 0,
        }
    }
}

#[derive(Debug, Clone)]
pub struct DirEntry {
    pub name: Vec<u8>,
    pub inode_ref: InodeRef,
    pub number: u32,
    pub kind: FileKind,
}

pub(crate) struct XattrTable {
    pub(crate) kv_start: u64,
    pub(crate) count: u32,
    pub(crate) index: Vec<u64>,
}

/// An open SquashFS archive. Cheap to share between threads (`Arc<Archive>`).
pub struct Archive {
    file: Box<dyn ReadAt>,
    offset: u64,
    sb: Superblock,
    ids: Vec<u32>,
    fragment_index: Vec<u64>,
    export_index: Vec<u64>,
    xattr: Option<XattrTable>,
    /// Sorted, de-duplicated starts of all tables (for table end limits).
    table_starts: Vec<u64>,
    meta_cache: Lru<u64, Arc<MetaBlock>>,
    inode_cache: Lru<InodeRef, Inode>,
    /// Per-file indexes of block-list chunks, and the decoded chunks (`squashfs::blocks`).
    block_index_cache: Lru<InodeRef, Arc<blocks::BlockIndex>>,
    block_chunk_cache: Lru<(InodeRef, u64), Arc<blocks::Chunk>>,
    data_cache: Lru<u64, Arc<Vec<u8>>>,
    /// Block files: blocks served from one, blocks recorded for the next (`read/warm.rs`).
    warm: warm::Warm,
}

const META_CACHE_BYTES: usize = 16 << 20;
/// Inodes are weighed at ~128 bytes plus their symlink target.
const INODE_CACHE_BYTES: usize = 4 << 20;
const BLOCK_INDEX_CACHE_BYTES: usize = 4 << 20;
const BLOCK_CHUNK_CACHE_BYTES: usize = 8 << 20;
const DATA_CACHE_BYTES: usize = 48 << 20;

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Archive")
            .field("offset", &self.offset)
            .field("superblock", &self.sb)
            .finish()
    }
}

impl Archive {
    /// Opens the archive that starts `offset` bytes into `file`.
    pub fn open(file: File, offset: u64) -> Result<Archive> {
        Archive::open_source(Box::new(file), offset)
    }

    /// Opens the archive that starts `offset` bytes into `file`, any [`ReadAt`] source.
    pub fn open_source(file: Box<dyn ReadAt>, offset: u64) -> Result<Archive> {
        let file_len = file.size()?;
        if offset >= file_len || file_len - offset < 4 {
            return Err(Error::NotSquashfs);
        }
        let avail = file_len - offset;
        let mut buf = [0u8; SUPERBLOCK_SIZE];
        if avail < SUPERBLOCK_SIZE as u64 {
            let mut magic = [0u8; 4];
            file.read_exact_at(&mut magic, offset)?;
            if u32::from_le_bytes(magic) != format::MAGIC {
                return Err(Error::NotSquashfs);
            }
            return Err(corrupt(format!(
                "archive truncated: only {avail} bytes, superblock needs 96"
            )));
        }
        file.read_exact_at(&mut buf, offset)?;
        let sb = Superblock::parse(&buf, avail)?;

        let mut table_starts = vec![
            sb.inode_table_start,
            sb.directory_table_start,
            sb.id_table_start,
            sb.bytes_used,
        ];
        if sb.fragment_count > 0 {
            table_starts.push(sb.fragment_table_start);
        }
        if sb.has_xattrs() {
            table_starts.push(sb.xattr_id_table_start);
        }
        if sb.has_export_table() {
            table_starts.push(sb.export_table_start);
        }
        table_starts.sort_unstable();
        table_starts.dedup();

        let mut ar = Archive {
            file,
            offset,
            sb,
            ids: Vec::new(),
            fragment_index: Vec::new(),
            export_index: Vec::new(),
            xattr: None,
            table_starts,
            meta_cache: Lru::new(META_CACHE_BYTES),
            inode_cache: Lru::new(INODE_CACHE_BYTES),
            block_index_cache: Lru::new(BLOCK_INDEX_CACHE_BYTES),
            block_chunk_cache: Lru::new(BLOCK_CHUNK_CACHE_BYTES),
            data_cache: Lru::new(DATA_CACHE_BYTES),
            warm: warm::Warm::default(),
        };

        // id table: read entirely (at most 64 Ki entries).
        let id_count = usize::from(ar.sb.id_count);
        let id_index = ar.read_lookup_index(ar.sb.id_table_start, id_count, 4, "id table")?;
        let mut ids = Vec::with_capacity(id_count);
        for (i, &ptr) in id_index.iter().enumerate() {
            let in_block = (id_count - i * 2048).min(2048);
            let mut r = MetaReader::new(&ar, ptr, 0, ar.sb.id_table_start)?;
            for _ in 0..in_block {
                ids.push(r.u32()?);
            }
        }
        ar.ids = ids;

        if ar.sb.fragment_count > 0 {
            ar.fragment_index = ar.read_lookup_index(
                ar.sb.fragment_table_start,
                ar.sb.fragment_count as usize,
                16,
                "fragment table",
            )?;
        }
        if ar.sb.has_export_table() {
            ar.export_index = ar.read_lookup_index(
                ar.sb.export_table_start,
                ar.sb.inode_count as usize,
                8,
                "export table",
            )?;
        }
        if ar.sb.has_xattrs() {
            ar.xattr = Some(ar.read_xattr_header()?);
        }

        let root = ar.inode(ar.root_ref())?;
        if !root.is_dir() {
            return Err(corrupt("root inode is not a directory".into()));
        }
        tracing::debug!(
            compressor = ar.sb.compressor.name(),
            block_size = ar.sb.block_size,
            inodes = ar.sb.inode_count,
            offset,
            "opened squashfs archive"
        );
        Ok(ar)
    }

    /// Opens the archive at `offset` bytes into the file at `path`.
    pub fn open_path(path: &Path, offset: u64) -> Result<Archive> {
        Archive::open(File::open(path)?, offset)
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Byte offset of the archive inside its file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn root_ref(&self) -> InodeRef {
        InodeRef(self.sb.root_inode)
    }

    /// The root directory inode.
    pub fn root(&self) -> Result<Inode> {
        self.inode(self.root_ref())
    }

    /// Reads (cached) the inode at `r`.
    pub fn inode(&self, r: InodeRef) -> Result<Inode> {
        if let Some(i) = self.inode_cache.get(&r) {
            return Ok(i);
        }
        let inode = self.parse_inode(r)?;
        let weight = 128
            + match &inode.data {
                InodeData::Symlink { target } => target.len(),
                _ => 0,
            };
        self.inode_cache.insert(r, inode.clone(), weight);
        Ok(inode)
    }

    /// The inode reference of inode `number`, through the export table;
    /// `Ok(None)` if the archive has no export table.
    pub fn inode_ref_by_number(&self, number: u32) -> Result<Option<InodeRef>> {
        if self.export_index.is_empty() {
            return Ok(None);
        }
        if number == 0 || number > self.sb.inode_count {
            return Err(corrupt(format!("inode number {number} out of range")));
        }
        let i = (number - 1) as usize;
        let ptr = self.export_index[i / 1024];
        let mut r = MetaReader::new(self, ptr, (i % 1024) * 8, self.sb.export_table_start)?;
        Ok(Some(InodeRef(r.u64()?)))
    }

    /// Walks an absolute path from the root without following symlinks.
    /// `""` and `"/"` give the root; `.` components are ignored and `..`
    /// goes up lexically. Returns `Ok(None)` if a component does not exist or
    /// an intermediate component is not a directory (e.g. a symlink).
    pub fn resolve(&self, path: &[u8]) -> Result<Option<Inode>> {
        let mut stack = vec![self.root()?];
        for comp in path.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => continue,
                b".." => {
                    if stack.len() > 1 {
                        stack.pop();
                    }
                    continue;
                }
                _ => {}
            }
            let cur = stack.last().expect("stack never empty");
            if !cur.is_dir() {
                return Ok(None);
            }
            match self.lookup(cur, comp)? {
                Some(e) => {
                    let inode = self.inode(e.inode_ref)?;
                    stack.push(inode);
                }
                None => return Ok(None),
            }
        }
        Ok(stack.pop())
    }

    // ----- internal helpers -------------------------------------------------

    /// Positioned read of archive bytes `[pos, pos + buf.len())`, which must
    /// lie within `bytes_used`.
    pub(crate) fn read_exact_at(&self, pos: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        if pos > self.sb.bytes_used || self.sb.bytes_used - pos < len {
            return Err(corrupt(format!(
                "read of {len} bytes at {pos} extends past end of archive"
            )));
        }
        match self.file.read_exact_at(buf, self.offset + pos) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(corrupt(format!(
                "unexpected end of file reading {len} bytes at {pos}"
            ))),
            Err(e) => Err(Error::Io(e)),
        }
    }

    /// End of the table starting at `start`: the next table start after it.
    pub(crate) fn table_end(&self, start: u64) -> u64 {
        self.table_starts
            .iter()
            .copied()
            .find(|&s| s > start)
            .unwrap_or(self.sb.bytes_used)
    }

    /// Reads the u64 block pointers of a lookup table with `count` entries of
    /// `entry_size` bytes. Pointers must lie before the index itself.
    fn read_lookup_index(
        &self,
        start: u64,
        count: usize,
        entry_size: usize,
        what: &str,
    ) -> Result<Vec<u64>> {
        let blocks = (count * entry_size).div_ceil(format::METADATA_SIZE);
        let bytes = blocks as u64 * 8;
        if start.checked_add(bytes).is_none() || start + bytes > self.sb.bytes_used {
            return Err(corrupt(format!(
                "{what} index at {start} extends past end of archive"
            )));
        }
        let mut raw = vec![0u8; bytes as usize];
        self.read_exact_at(start, &mut raw)?;
        let ptrs: Vec<u64> = raw
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        for &p in &ptrs {
            if p >= start {
                return Err(corrupt(format!(
                    "{what} block pointer {p} outside the table"
                )));
            }
        }
        Ok(ptrs)
    }

    pub(crate) fn id(&self, idx: u16) -> Result<u32> {
        self.ids.get(usize::from(idx)).copied().ok_or_else(|| {
            corrupt(format!(
                "id index {idx} out of range ({} ids)",
                self.ids.len()
            ))
        })
    }
}
