//! Images that start before they are downloaded: `rsing exec oras://…` and `rsing exec
//! https://…/image.sif` on a node without the image.
//!
//! `prepare` makes a cache entry under `<cache>/lazy/`: a sparse file as large as the SIF
//! (`<key>.sif`), a map of the chunks present (`<key>.map`), what the image is and where it
//! comes from (`<key>.remote`, written last: an entry without it is not one), a lock file and a
//! log. It fetches the SIF header and its small objects (so `image::open` works on the sparse
//! file), and the container starts. The image server (or rsing itself, with sharing off) then
//! reads the SquashFS through a [`LazySource`]: the superblock and tables first, then the
//! blocks the command touches, each chunk by a range request. A background thread downloads
//! the rest; when the file is complete its digest is checked and it is renamed to its final
//! cache name (`blobs/sha256/<hex>` for `oras://`), which later starts use directly.
//!
//! Failures: a range that fails after retries is an EIO for the container and one warning line
//! (the image server has no terminal: lines go to `<key>.log`, and `rsing exec` prints those
//! written while its container ran, see [`Log`]). A digest mismatch removes the entry and is an
//! error for every container that used it.

mod at;
mod blocks;
pub mod ranges;
mod source;

pub use source::LazySource;

use crate::squashfs::{self, Archive};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use blocks::Blocks;
use ranges::{HttpRanges, OrasRanges, Ranges};

/// Bytes per chunk unless `RSING_LAZY_CHUNK_KIB` says otherwise: small enough that a start
/// reads little more than it needs, large enough that the background download is not all
/// round trips (it asks for 16 chunks at a time).
pub const DEFAULT_CHUNK: u64 = 256 << 10;

/// What a lazy entry is and where its bytes come from (`<key>.remote`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub origin: Origin,
    pub size: u64,
    pub chunk: u64,
    /// `sha256:<hex>` the complete file must have, where known (`oras://`).
    pub digest: Option<String>,
    /// Where the complete, verified file goes.
    pub final_path: PathBuf,
    /// The image as the user named it, for messages.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Origin {
    Oras {
        reference: String,
        digest: String,
        media_type: String,
        insecure: Vec<String>,
    },
    Http {
        url: String,
        etag: Option<String>,
    },
}

impl Meta {
    fn ranges(&self) -> Result<Box<dyn Ranges>, String> {
        Ok(match &self.origin {
            Origin::Oras {
                reference,
                digest,
                media_type,
                insecure,
            } => {
                let r = crate::registry::Reference::parse(reference).map_err(|e| e.to_string())?;
                let art = crate::registry::SifArtifact {
                    manifest_digest: crate::oci::Digest::of(b""),
                    digest: crate::oci::Digest::parse(digest).map_err(|e| e.to_string())?,
                    size: self.size,
                    media_type: media_type.clone(),
                    title: None,
                };
                Box::new(OrasRanges::new(r, art, insecure.clone()))
            }
            Origin::Http { url, etag } => Box::new(HttpRanges::new(url.clone(), etag.clone())),
        })
    }
}

/// The files of one entry, named after its data file `<key>.sif`.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub data: PathBuf,
    pub map: PathBuf,
    pub meta: PathBuf,
    pub lock: PathBuf,
    pub log: PathBuf,
}

impl Paths {
    fn of(data: &Path) -> Paths {
        Paths {
            data: data.to_path_buf(),
            map: data.with_extension("map"),
            meta: data.with_extension("remote"),
            lock: data.with_extension("lock"),
            log: data.with_extension("log"),
        }
    }

    /// Removes the entry (not its lock or log).
    fn remove(&self) {
        let _ = std::fs::remove_file(&self.meta);
        let _ = std::fs::remove_file(&self.data);
        let _ = std::fs::remove_file(&self.map);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("image {name}: {why}")]
    Remote { name: String, why: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The exclusive `flock` of an entry: creating, finishing and removing it.
pub(crate) fn lock_entry(path: &Path) -> io::Result<Flock<File>> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
}

/// The sha256 of a whole file, as `sha256:<hex>`.
pub(crate) fn digest_of(file: &File) -> io::Result<String> {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut pos = 0u64;
    loop {
        let n = file.read_at(&mut buf, pos)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        pos += n as u64;
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("sha256:{hex}"))
}

/// The chunk size of new entries.
pub fn chunk_size() -> u64 {
    std::env::var("RSING_LAZY_CHUNK_KIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&k| (4..=65536).contains(&k))
        .map_or(DEFAULT_CHUNK, |k| k << 10)
}

/// What `prepare` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    /// The image is in the cache, complete and verified.
    Cached(PathBuf),
    /// A lazy entry: this sparse file, read through [`archive`]/[`archive_path`].
    Lazy(PathBuf),
}

impl Prepared {
    pub fn path(&self) -> &Path {
        match self {
            Prepared::Cached(p) | Prepared::Lazy(p) => p,
        }
    }
}

/// Finds or makes the entry `key` (under `lazy_dir`) for the image `meta` describes, and
/// fetches what `image::open` reads: the SIF header, descriptors and small objects.
pub fn prepare(lazy_dir: &Path, key: &str, mut meta: Meta) -> Result<Prepared, Error> {
    if is_complete(&meta) {
        return Ok(Prepared::Cached(meta.final_path));
    }
    std::fs::create_dir_all(lazy_dir).map_err(io_err(lazy_dir))?;
    if let Some(dir) = meta.final_path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let paths = Paths::of(&lazy_dir.join(format!("{key}.sif")));
    let lock = lock_entry(&paths.lock).map_err(io_err(&paths.lock))?;
    if is_complete(&meta) {
        return Ok(Prepared::Cached(meta.final_path));
    }
    // An entry of another chunk size is kept as it is (its map is in those chunks).
    let existing = read_meta(&paths.meta).filter(|m| {
        m.origin == meta.origin
            && m.size == meta.size
            && m.digest == meta.digest
            && m.final_path == meta.final_path
    });
    match existing {
        Some(m) if Blocks::open(&paths.data, &paths.map, m.size, m.chunk).is_ok() => {
            meta.chunk = m.chunk
        }
        _ => {
            paths.remove();
            Blocks::create(&paths.data, &paths.map, meta.size, meta.chunk)
                .map_err(io_err(&paths.data))?;
            let staged = paths
                .meta
                .with_extension(format!("remote.{}", std::process::id()));
            let json = serde_json::to_vec_pretty(&meta).expect("serialisable");
            std::fs::write(&staged, json).map_err(io_err(&staged))?;
            std::fs::rename(&staged, &paths.meta).map_err(io_err(&paths.meta))?;
        }
    }
    drop(lock);
    let source = open_source(&paths.data).map_err(|e| Error::Remote {
        name: meta.name.clone(),
        why: e.to_string(),
    })?;
    prefetch_metadata(&source).map_err(|e| Error::Remote {
        name: meta.name.clone(),
        why: format!("cannot read the image's header: {e}"),
    })?;
    Ok(Prepared::Lazy(paths.data))
}

fn is_complete(meta: &Meta) -> bool {
    std::fs::metadata(&meta.final_path).is_ok_and(|m| m.len() == meta.size)
}

fn read_meta(path: &Path) -> Option<Meta> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The SIF header and descriptor table, every object but the root partition, and the
/// SquashFS superblock: what opening the image reads before the container starts.
fn prefetch_metadata(source: &LazySource) -> io::Result<()> {
    let size = source.len_bytes();
    let head_len = size.min(1 << 20);
    let mut head = vec![0u8; head_len as usize];
    source.read_exact_at(&mut head, 0)?;
    if !crate::sif::is_sif(&head) {
        return Ok(()); // a plain SquashFS: its superblock is in the head
    }
    let sif = crate::sif::SifFile::read(source.0.blocks.data())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let primary = sif.primary_partition().ok().map(|p| p.id);
    for d in &sif.descriptors {
        let (off, len) = (d.offset, d.size);
        let len = if Some(d.id) == primary {
            len.min(4096) // the superblock
        } else {
            len
        };
        if len > 0 && off + len <= size {
            let mut buf = vec![0u8; len as usize];
            source.read_exact_at(&mut buf, off)?;
        }
    }
    Ok(())
}

use crate::squashfs::ReadAt as _;

impl LazySource {
    fn len_bytes(&self) -> u64 {
        self.0.blocks.size
    }
}

/// The lazy source of the entry whose data file is `data`, if it is one.
fn open_source(data: &Path) -> io::Result<LazySource> {
    let paths = Paths::of(data);
    let meta = read_meta(&paths.meta).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "not a lazy entry (or it was removed)",
        )
    })?;
    let blocks = Blocks::open(&paths.data, &paths.map, meta.size, meta.chunk)?;
    let ranges = meta.ranges().map_err(io::Error::other)?;
    let at = at::At::open(&paths.data, &meta.final_path)?;
    Ok(LazySource::new(blocks, ranges, meta, at))
}

/// Whether `path` is the data file of a lazy entry still downloading.
pub fn is_lazy(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "sif") && Paths::of(path).meta.exists()
}

/// Sources opened by [`archive_path`], for [`finish_background`].
static OPENED: Mutex<Vec<LazySource>> = Mutex::new(Vec::new());

/// The archive at `offset` in the image at `path`: through a [`LazySource`] for a lazy entry,
/// else the file. The background download starts with the first read of a FUSE thread (see
/// `source`); [`finish_background`] waits for it.
pub fn archive_path(path: &Path, offset: u64) -> squashfs::Result<Archive> {
    if !is_lazy(path) {
        return Archive::open_path(path, offset);
    }
    let source = open_source(path)?;
    OPENED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(source.clone());
    Archive::open_source(Box::new(source), offset)
}

/// [`archive_path`] for an image already open as `file` (rsing serving it in-process).
pub fn archive(path: &Path, file: File, offset: u64) -> squashfs::Result<Archive> {
    if !is_lazy(path) {
        return Archive::open(file, offset);
    }
    Archive::open_source(Box::new(open_source(path)?), offset)
}

/// Waits for the background downloads this process runs (the image server, before it exits).
pub fn finish_background() {
    let sources: Vec<LazySource> = OPENED.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for s in sources {
        s.join_background();
    }
}

/// Downloads the rest of the entry at `data` now and returns the final path.
pub fn download_all(data: &Path) -> Result<PathBuf, Error> {
    let source = open_source(data).map_err(io_err(data))?;
    let name = source.0.meta.name.clone();
    source
        .download_all()
        .map_err(|why| Error::Remote { name, why })?;
    Ok(source.0.meta.final_path.clone())
}

/// The log of a lazy entry, from a mark on: what went wrong while a container ran. Kept open:
/// after the container, rsing may be in a mount namespace where the cache's path leads nowhere.
pub struct Log {
    file: File,
    start: u64,
}

impl Log {
    /// Marks the end of the log of the entry at `image` (None unless it is lazy).
    pub fn mark(image: &Path) -> Option<Log> {
        if !is_lazy(image) {
            return None;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(Paths::of(image).log)
            .ok()?;
        let start = file.metadata().map_or(0, |m| m.len());
        Some(Log { file, start })
    }

    /// Prints the lines written since the mark on stderr; `Err` with the first error line if
    /// the image was refused.
    pub fn report(&self) -> Result<(), String> {
        let len = self.file.metadata().map_or(0, |m| m.len());
        let mut text = vec![0u8; len.saturating_sub(self.start) as usize];
        if FileExt::read_exact_at(&self.file, &mut text, self.start).is_err() {
            return Ok(());
        }
        let new = String::from_utf8_lossy(&text);
        let mut error = None;
        for line in new.lines() {
            match line.strip_prefix("rsing: error: ") {
                Some(e) if error.is_none() => error = Some(e.to_string()),
                _ => eprintln!("{line}"),
            }
        }
        error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    pub use crate::squashfs::testutil::TempDir;

    /// Ranges of an in-memory file; counts bytes served; fails the first `fail` requests.
    struct Mem {
        bytes: Vec<u8>,
        served: Arc<AtomicU64>,
        fail: AtomicU64,
    }

    impl Ranges for Mem {
        fn fetch(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
            if self
                .fail
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                .is_ok()
            {
                return Err("connection reset".into());
            }
            self.served.fetch_add(len, Ordering::SeqCst);
            Ok(self.bytes[offset as usize..(offset + len) as usize].to_vec())
        }
    }

    fn entry(dir: &Path, bytes: &[u8], digest: String, fail: u64) -> (LazySource, Arc<AtomicU64>) {
        let data = dir.join("k.sif");
        let paths = Paths::of(&data);
        Blocks::create(&paths.data, &paths.map, bytes.len() as u64, 4).unwrap();
        let meta = Meta {
            origin: Origin::Http {
                url: "mem:".into(),
                etag: None,
            },
            size: bytes.len() as u64,
            chunk: 4,
            digest: Some(digest),
            final_path: dir.join("final.sif"),
            name: "mem:k".into(),
        };
        std::fs::write(&paths.meta, serde_json::to_vec(&meta).unwrap()).unwrap();
        let at = at::At::open(&paths.data, &meta.final_path).unwrap();
        let served = Arc::new(AtomicU64::new(0));
        let blocks = Blocks::open(&paths.data, &paths.map, meta.size, 4).unwrap();
        let mem = Mem {
            bytes: bytes.to_vec(),
            served: served.clone(),
            fail: AtomicU64::new(fail),
        };
        let source = LazySource::new(blocks, Box::new(mem), meta, at).without_background();
        (source, served)
    }

    fn sha(bytes: &[u8]) -> String {
        crate::oci::Digest::of(bytes).to_string()
    }

    #[test]
    fn reads_fetch_only_their_chunks_then_the_rest_completes() {
        let dir = TempDir::new("lazy");
        let bytes: Vec<u8> = (0..40u8).collect();
        let (src, served) = entry(&dir.0, &bytes, sha(&bytes), 0);
        let mut buf = [0u8; 3];
        src.read_exact_at(&mut buf, 9).unwrap();
        assert_eq!(buf, [9, 10, 11]);
        assert_eq!(served.load(Ordering::SeqCst), 4);
        src.read_exact_at(&mut buf, 9).unwrap();
        assert_eq!(
            served.load(Ordering::SeqCst),
            4,
            "a present chunk is not fetched again"
        );
        src.download_all().unwrap();
        assert_eq!(served.load(Ordering::SeqCst), 40, "each byte fetched once");
        assert_eq!(std::fs::read(dir.0.join("final.sif")).unwrap(), bytes);
        assert!(!dir.0.join("k.remote").exists() && !dir.0.join("k.sif").exists());
    }

    #[test]
    fn a_read_continuing_an_earlier_one_fetches_ahead_up_to_a_present_chunk() {
        let dir = TempDir::new("lazy");
        let bytes: Vec<u8> = (0..40u8).collect();
        let (src, served) = entry(&dir.0, &bytes, sha(&bytes), 0);
        let mut buf = [0u8; 2];
        src.read_exact_at(&mut buf, 0).unwrap();
        src.read_exact_at(&mut buf, 20).unwrap();
        assert_eq!(
            served.load(Ordering::SeqCst),
            8,
            "no chunk before: no read-ahead"
        );
        // Chunk 1 follows chunk 0: chunks 1-4 come in one request, up to chunk 5 (present).
        src.read_exact_at(&mut buf, 4).unwrap();
        assert_eq!(buf, [4, 5]);
        assert_eq!(served.load(Ordering::SeqCst), 24);
        src.read_exact_at(&mut buf, 16).unwrap();
        assert_eq!(buf, [16, 17]);
        assert_eq!(served.load(Ordering::SeqCst), 24, "already fetched ahead");
        src.download_all().unwrap();
        assert_eq!(served.load(Ordering::SeqCst), 40, "each byte fetched once");
        assert_eq!(std::fs::read(dir.0.join("final.sif")).unwrap(), bytes);
    }

    #[test]
    fn transient_failures_are_retried_and_lasting_ones_are_eio() {
        let dir = TempDir::new("lazy");
        let bytes = vec![7u8; 8];
        let (src, _) = entry(&dir.0, &bytes, sha(&bytes), 2);
        let mut buf = [0u8; 2];
        src.read_exact_at(&mut buf, 0).unwrap();
        let dir2 = TempDir::new("lazy");
        let (bad, _) = entry(&dir2.0, &bytes, sha(&bytes), 100);
        let e = bad.read_exact_at(&mut buf, 4).unwrap_err();
        // Reported once here; the FUSE server answers EIO without a warning of its own.
        assert!(crate::squashfs::AlreadyReported::is(&e), "{e}");
        assert_eq!(crate::squashfs::Error::Io(e).errno(), libc::EIO);
        let log = std::fs::read_to_string(dir2.0.join("k.log")).unwrap();
        assert_eq!(log.lines().count(), 1, "{log}");
        assert!(log.contains("connection reset"), "{log}");
    }

    #[test]
    fn a_digest_mismatch_removes_the_entry_and_fails_reads() {
        let dir = TempDir::new("lazy");
        let bytes = vec![1u8; 10];
        let (src, _) = entry(&dir.0, &bytes, sha(b"something else"), 0);
        std::fs::write(dir.0.join("k.log"), "").unwrap();
        let mark = Log {
            file: std::fs::File::open(dir.0.join("k.log")).unwrap(),
            start: 0,
        };
        let e = src.download_all().unwrap_err();
        assert!(e.contains("digest"), "{e}");
        assert!(!dir.0.join("k.sif").exists() && !dir.0.join("final.sif").exists());
        let mut buf = [0u8; 1];
        assert!(src.read_exact_at(&mut buf, 0).is_err());
        assert!(mark.report().unwrap_err().contains("refused"));
    }
}
