//! The block file: decompressed blocks of one image, kept on disk so that the next image
//! server of that image starts warm.
//!
//! Why: a new FUSE mount starts with an empty page cache, so the first container after the
//! image server has gone (linger expired, a new job) decompresses again every block its start
//! reads: the shell, libc, python, numpy's libraries. Profiling `import numpy` in such a
//! container showed decompression as the biggest share of the server's time (37% of it with
//! zstd, more with gzip). The server therefore records the blocks it decompresses (the start's
//! access profile, with the data) and, when it leaves, writes them to one file per image under
//! the user's cache. The next server of the image serves those blocks from the file: a `pread`
//! from the page cache and a CRC check instead of a read and a decompression.
//!
//! Format (little-endian), written once and never modified in place:
//!
//! ```text
//! header  "RSBLKS\0\x01" | identity [32] | count u32 | index crc32 u32 | reserved u64
//! index   count × { kind u8, 0 u8 × 3, len u32, pos u64, off u64, crc32 u32, aux u32 }
//! data    the blocks, decompressed, at their `off`
//! ```
//!
//! `kind` is 1 for a metadata block, 2 for a data or fragment block; `pos` is the block's
//! position in the archive; `aux` is, for metadata blocks, the distance to the next block
//! (2 + its compressed length). `identity` is a hash of the image's superblock, the archive's
//! offset and the file's size and mtime: a file of another image is never used.
//!
//! Safety under concurrent servers (two job steps of one image on a node): each writes a
//! complete file under a private temporary name and renames it into place, so a reader sees
//! the old file or the new one, never a mix; a reader keeps its descriptor, so a file replaced
//! or evicted under it stays readable. A damaged file is ignored: the header, the index (CRC)
//! and every entry's bounds are checked at open, and each block's CRC when it is read; a block
//! that fails is decompressed from the image instead.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::time::{Duration, SystemTime};

const MAGIC: &[u8; 8] = b"RSBLKS\x00\x01";
const HEADER: usize = 8 + 32 + 4 + 4 + 8;
const ENTRY: usize = 32;
/// Files whose name ends so are block files (eviction looks at nothing else).
pub const SUFFIX: &str = ".blocks";

/// What a block is, which decides how its `aux` is used and how large it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Meta = 1,
    Data = 2,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    off: u64,
    len: u32,
    crc: u32,
    aux: u32,
}

/// An open block file: its index in memory, the blocks read on demand.
pub struct BlockFile {
    file: File,
    index: HashMap<(Kind, u64), Entry>,
}

impl std::fmt::Debug for BlockFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockFile")
            .field("blocks", &self.index.len())
            .finish()
    }
}

impl BlockFile {
    /// Reads and checks the header and index of `file`. `Err` says why the file is not used
    /// (another image, damaged, truncated); the caller then goes without it.
    pub fn load(
        file: File,
        identity: &[u8; 32],
        max_data: u32,
        max_meta: u32,
    ) -> Result<BlockFile, String> {
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut head = [0u8; HEADER];
        file.read_exact_at(&mut head, 0)
            .map_err(|_| "shorter than its header".to_string())?;
        if &head[..8] != MAGIC {
            return Err("not a block file of this rsing version".into());
        }
        if &head[8..40] != identity {
            return Err("made from another image".into());
        }
        let count = u32::from_le_bytes(head[40..44].try_into().unwrap()) as u64;
        let index_crc = u32::from_le_bytes(head[44..48].try_into().unwrap());
        let data_start = HEADER as u64 + count * ENTRY as u64;
        if data_start > len {
            return Err(format!("index of {count} entries runs past the end"));
        }
        let mut raw = vec![0u8; count as usize * ENTRY];
        file.read_exact_at(&mut raw, HEADER as u64)
            .map_err(|e| e.to_string())?;
        if crc32fast::hash(&raw) != index_crc {
            return Err("index checksum mismatch".into());
        }
        let mut index = HashMap::with_capacity(count as usize);
        for e in raw.chunks_exact(ENTRY) {
            let u32_at = |i: usize| u32::from_le_bytes(e[i..i + 4].try_into().unwrap());
            let u64_at = |i: usize| u64::from_le_bytes(e[i..i + 8].try_into().unwrap());
            let (kind, max) = match e[0] {
                1 => (Kind::Meta, max_meta),
                2 => (Kind::Data, max_data),
                k => return Err(format!("unknown block kind {k}")),
            };
            let entry = Entry {
                len: u32_at(4),
                off: u64_at(16),
                crc: u32_at(24),
                aux: u32_at(28),
            };
            let end = entry.off.checked_add(u64::from(entry.len));
            if entry.len == 0
                || entry.len > max
                || entry.off < data_start
                || end.is_none_or(|end| end > len)
            {
                return Err(format!("entry for block at {} out of bounds", u64_at(8)));
            }
            index.insert((kind, u64_at(8)), entry);
        }
        Ok(BlockFile { file, index })
    }

    /// The block of `kind` at archive position `pos`, and its `aux`, if the file has it and
    /// its checksum matches.
    pub fn get(&self, kind: Kind, pos: u64) -> Option<(Vec<u8>, u32)> {
        let e = self.index.get(&(kind, pos))?;
        let mut buf = vec![0u8; e.len as usize];
        self.file.read_exact_at(&mut buf, e.off).ok()?;
        if crc32fast::hash(&buf) != e.crc {
            tracing::debug!(pos, "block file: checksum mismatch, decompressing instead");
            return None;
        }
        Some((buf, e.aux))
    }

    /// Whether the file holds that block (without reading it).
    pub fn contains(&self, kind: Kind, pos: u64) -> bool {
        self.index.contains_key(&(kind, pos))
    }

    /// How many blocks the file holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the file holds no block.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Every block of the file whose checksum is good, in file order.
    pub fn all(&self) -> Vec<(Kind, u64, u32, Vec<u8>)> {
        let mut keys: Vec<_> = self.index.iter().collect();
        keys.sort_by_key(|(_, e)| e.off);
        keys.into_iter()
            .filter_map(|(&(kind, pos), _)| {
                self.get(kind, pos)
                    .map(|(data, aux)| (kind, pos, aux, data))
            })
            .collect()
    }

    /// Asks the kernel to read the whole file in the background (after a dropped page cache,
    /// the blocks are then on their way before the first request needs them).
    pub fn prefetch(&self) {
        let _ = nix::fcntl::posix_fadvise(
            self.file.as_fd(),
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
    }
}

/// The bytes of a block file holding `blocks` (kind, pos, aux, data), for `identity`.
pub fn encode(identity: &[u8; 32], blocks: &[(Kind, u64, u32, &[u8])]) -> Vec<u8> {
    let data_start = HEADER + blocks.len() * ENTRY;
    let total: usize = data_start + blocks.iter().map(|b| b.3.len()).sum::<usize>();
    let mut index = Vec::with_capacity(blocks.len() * ENTRY);
    let mut off = data_start as u64;
    for &(kind, pos, aux, data) in blocks {
        index.push(kind as u8);
        index.extend_from_slice(&[0; 3]);
        index.extend_from_slice(&(data.len() as u32).to_le_bytes());
        index.extend_from_slice(&pos.to_le_bytes());
        index.extend_from_slice(&off.to_le_bytes());
        index.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
        index.extend_from_slice(&aux.to_le_bytes());
        off += data.len() as u64;
    }
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(identity);
    out.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&index).to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&index);
    for b in blocks {
        out.extend_from_slice(b.3);
    }
    out
}

/// The directory of block files (one per image), reached through a descriptor: the image
/// server opens it before it enters its own mount namespace.
pub struct BlockDir {
    dir: File,
}

impl BlockDir {
    pub fn new(dir: File) -> BlockDir {
        BlockDir { dir }
    }

    /// The file name for an image of `identity`.
    pub fn name_for(identity: &[u8; 32]) -> OsString {
        let hex: String = identity[..16].iter().map(|b| format!("{b:02x}")).collect();
        OsString::from(format!("{hex}{SUFFIX}"))
    }

    /// Opens `name` for reading; `None` when it does not exist. Its mtime is set to now, so
    /// that eviction keeps the files in use.
    pub fn open(&self, name: &OsStr) -> Option<File> {
        let fd = nix::fcntl::openat(
            &self.dir,
            name,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()?;
        let file = File::from(fd);
        let _ = file.set_modified(SystemTime::now());
        Some(file)
    }

    /// Writes `bytes` as `name`, atomically: a private temporary name, then a rename over the
    /// old file (readers of that one keep it).
    pub fn store(&self, name: &OsStr, bytes: &[u8]) -> io::Result<()> {
        use nix::fcntl::OFlag;
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let serial = SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut tmp = name.to_os_string();
        tmp.push(format!(".tmp.{}.{serial}", std::process::id()));
        let fd = nix::fcntl::openat(
            &self.dir,
            tmp.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )?;
        let written = File::from(fd).write_all(bytes);
        let renamed = written.and_then(|()| {
            nix::fcntl::renameat(&self.dir, tmp.as_os_str(), &self.dir, name)
                .map_err(io::Error::from)
        });
        if renamed.is_err() {
            let _ = nix::unistd::unlinkat(
                &self.dir,
                tmp.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
        renamed
    }

    /// Removes the least recently used block files until the rest take at most `max_total`
    /// bytes, and temporary files of writers that died (older than an hour). `keep` is never
    /// removed (the file just written).
    pub fn evict(&self, max_total: u64, keep: &OsStr) -> io::Result<()> {
        let Ok(dir) = nix::dir::Dir::openat(
            &self.dir,
            ".",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        ) else {
            return Ok(());
        };
        let mut files = Vec::new();
        let mut total = 0u64;
        let now = SystemTime::now();
        let mut dir = dir;
        for entry in dir.iter().flatten() {
            let name = OsStr::from_bytes(entry.file_name().to_bytes()).to_os_string();
            let Ok(st) = nix::sys::stat::fstatat(
                &self.dir,
                name.as_os_str(),
                nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
            ) else {
                continue;
            };
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                continue;
            }
            let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(st.st_mtime.max(0) as u64);
            let bytes = name.as_bytes();
            if bytes.windows(5).any(|w| w == b".tmp.") {
                if now.duration_since(mtime).unwrap_or_default() > Duration::from_secs(3600) {
                    self.unlink(&name);
                }
                continue;
            }
            if !bytes.ends_with(SUFFIX.as_bytes()) {
                continue;
            }
            total += st.st_size as u64;
            if name != keep {
                files.push((mtime, st.st_size as u64, name));
            }
        }
        files.sort();
        for (_, size, name) in files {
            if total <= max_total {
                break;
            }
            self.unlink(&name);
            total -= size;
        }
        Ok(())
    }

    fn unlink(&self, name: &OsStr) {
        let _ = nix::unistd::unlinkat(&self.dir, name, nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::squashfs::testutil::TempDir;

    const ID: [u8; 32] = [7; 32];

    fn sample() -> Vec<u8> {
        encode(
            &ID,
            &[
                (Kind::Meta, 96, 1234, &[1u8; 8192][..]),
                (Kind::Data, 4096, 0, &[2u8; 100][..]),
                (Kind::Data, 9000, 0, b"tail"),
            ],
        )
    }

    fn file_with(dir: &TempDir, bytes: &[u8]) -> File {
        let p = dir.0.join("f.blocks");
        std::fs::write(&p, bytes).unwrap();
        File::open(p).unwrap()
    }

    #[test]
    fn round_trip() {
        let dir = TempDir::new("bf-rt");
        let bf = BlockFile::load(file_with(&dir, &sample()), &ID, 131072, 8192).unwrap();
        assert_eq!(bf.len(), 3);
        assert_eq!(bf.get(Kind::Meta, 96), Some((vec![1u8; 8192], 1234)));
        assert_eq!(bf.get(Kind::Data, 4096), Some((vec![2u8; 100], 0)));
        assert_eq!(bf.get(Kind::Data, 9000).unwrap().0, b"tail");
        // Kinds are apart: a data block at a metadata position is not a metadata block.
        assert_eq!(bf.get(Kind::Meta, 4096), None);
        assert!(bf.contains(Kind::Data, 9000) && !bf.contains(Kind::Data, 96));
        let all = bf.all();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].1, 96);
    }

    #[test]
    fn another_image_or_format_is_refused() {
        let dir = TempDir::new("bf-id");
        let err = BlockFile::load(file_with(&dir, &sample()), &[8; 32], 131072, 8192).unwrap_err();
        assert!(err.contains("another image"), "{err}");
        let mut bytes = sample();
        bytes[7] = 2;
        assert!(BlockFile::load(file_with(&dir, &bytes), &ID, 131072, 8192).is_err());
        assert!(BlockFile::load(file_with(&dir, b"short"), &ID, 131072, 8192).is_err());
        assert!(BlockFile::load(file_with(&dir, b""), &ID, 131072, 8192).is_err());
    }

    #[test]
    fn damaged_index_or_truncation_is_refused() {
        let dir = TempDir::new("bf-bad");
        let good = sample();
        // A flipped bit in the index: the index checksum catches it.
        let mut bytes = good.clone();
        bytes[HEADER + 17] ^= 1;
        let err = BlockFile::load(file_with(&dir, &bytes), &ID, 131072, 8192).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
        // Cut short: an entry now points past the end.
        let err = BlockFile::load(file_with(&dir, &good[..good.len() - 2]), &ID, 131072, 8192)
            .unwrap_err();
        assert!(err.contains("out of bounds"), "{err}");
        // A count that claims more entries than the file holds.
        let mut bytes = good.clone();
        bytes[40..44].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(BlockFile::load(file_with(&dir, &bytes), &ID, 131072, 8192).is_err());
        // Blocks larger than the image's limits are refused with the file.
        let err = BlockFile::load(file_with(&dir, &good), &ID, 50, 8192).unwrap_err();
        assert!(err.contains("out of bounds"), "{err}");
    }

    #[test]
    fn a_damaged_block_is_not_served() {
        let dir = TempDir::new("bf-blk");
        let mut bytes = sample();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff; // inside "tail"
        let bf = BlockFile::load(file_with(&dir, &bytes), &ID, 131072, 8192).unwrap();
        assert_eq!(bf.get(Kind::Data, 9000), None);
        assert!(bf.get(Kind::Data, 4096).is_some());
        assert_eq!(bf.all().len(), 2);
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    use std::path::Path;

    #[test]
    fn store_is_atomic_and_eviction_keeps_the_bound() {
        let dir = TempDir::new("bf-dir");
        let bd = BlockDir::new(File::open(&dir.0).unwrap());
        let old = SystemTime::now() - Duration::from_secs(1000);
        for (i, name) in ["a.blocks", "b.blocks", "c.blocks"].iter().enumerate() {
            bd.store(OsStr::new(name), &vec![0u8; 1000]).unwrap();
            let f = File::options().write(true).open(dir.0.join(name)).unwrap();
            f.set_modified(old + Duration::from_secs(i as u64 * 10))
                .unwrap();
        }
        // A dead writer's temporary file, two hours old, and an unrelated file.
        std::fs::write(dir.0.join("d.blocks.tmp.1"), b"x").unwrap();
        File::options()
            .write(true)
            .open(dir.0.join("d.blocks.tmp.1"))
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        std::fs::write(dir.0.join("notes.txt"), vec![0u8; 5000]).unwrap();
        assert_eq!(
            names(&dir.0),
            [
                "a.blocks",
                "b.blocks",
                "c.blocks",
                "d.blocks.tmp.1",
                "notes.txt"
            ]
        );
        // 3000 bytes of block files, bound 2000: the oldest goes, unless it is `keep`.
        bd.evict(2000, OsStr::new("a.blocks")).unwrap();
        assert_eq!(names(&dir.0), ["a.blocks", "c.blocks", "notes.txt"]);
        bd.evict(0, OsStr::new("c.blocks")).unwrap();
        assert_eq!(names(&dir.0), ["c.blocks", "notes.txt"]);
        // Opening refreshes the mtime (the least recently *used* go first).
        let f = bd.open(OsStr::new("c.blocks")).unwrap();
        let age = f
            .metadata()
            .unwrap()
            .modified()
            .unwrap()
            .elapsed()
            .unwrap_or_default();
        assert!(age < Duration::from_secs(60));
        assert!(bd.open(OsStr::new("missing.blocks")).is_none());
    }

    #[test]
    fn concurrent_writers_leave_one_complete_file() {
        let dir = TempDir::new("bf-conc");
        let bd = std::sync::Arc::new(BlockDir::new(File::open(&dir.0).unwrap()));
        let name = BlockDir::name_for(&ID);
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let threads: Vec<_> = (0..4u8)
            .map(|t| {
                let (bd, name, big) = (bd.clone(), name.clone(), big.clone());
                std::thread::spawn(move || {
                    for round in 0..10u8 {
                        let mut data = big.clone();
                        data[0] = t;
                        data[1] = round;
                        let bytes = encode(&ID, &[(Kind::Data, 0, 0, &data[..100_000])]);
                        bd.store(&name, &bytes).unwrap();
                        // Whatever is there now is a whole file of one writer.
                        let f = bd.open(&name).unwrap();
                        let bf = BlockFile::load(f, &ID, 131072, 8192).unwrap();
                        let (got, _) = bf.get(Kind::Data, 0).unwrap();
                        assert_eq!(got[2..], big[2..100_000]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(names(&dir.0), [name.to_string_lossy().into_owned()]);
    }
}
