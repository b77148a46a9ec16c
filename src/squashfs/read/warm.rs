//! The archive's side of the block file (`blockfile`): serving blocks from it, and recording
//! the blocks decompressed while it serves, for the next block file.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::blockfile::{self, BlockFile, Kind};
use super::format::{METADATA_SIZE, SUPERBLOCK_SIZE};
use super::metadata::MetaBlock;
use super::{Archive, Result};

/// A block held for the next block file: the very buffers the caches hold (no copy).
pub(crate) enum Held {
    Meta(Arc<MetaBlock>),
    Data(Arc<Vec<u8>>),
}

impl Held {
    fn bytes(&self) -> &[u8] {
        match self {
            Held::Meta(m) => &m.data,
            Held::Data(d) => d,
        }
    }
}

/// The blocks decompressed since the server started, in the order they were first needed (the
/// start's access profile), up to a byte budget.
pub(crate) struct Recorder {
    blocks: Vec<(Kind, u64, u32, Held)>,
    /// The keys of `blocks` (a block evicted from the caches and decompressed again is kept once).
    seen: HashSet<(Kind, u64)>,
    bytes: usize,
    budget: usize,
    /// Recorded since the last [`Archive::block_file_bytes`].
    dirty: bool,
}

/// What an archive does with block files (none of it by default).
#[derive(Default)]
pub(crate) struct Warm {
    file: Option<BlockFile>,
    recorder: Option<Mutex<Recorder>>,
}

impl Archive {
    /// A hash naming this image for block files: its superblock, its offset in the file, and
    /// `extra` (the caller's facts about the file: size, mtime).
    pub fn block_identity(&self, extra: &[u8]) -> Result<[u8; 32]> {
        let mut sb = [0u8; SUPERBLOCK_SIZE];
        self.file.read_exact_at(&mut sb, self.offset)?;
        let mut h = Sha256::new();
        h.update(b"rsing block file v1\0");
        h.update(sb);
        h.update(self.offset.to_le_bytes());
        h.update(extra);
        Ok(h.finalize().into())
    }

    /// Serves blocks from `file` (made for this image: see [`BlockFile::load`]) before
    /// decompressing them from the image.
    pub fn use_block_file(&mut self, file: BlockFile) {
        self.warm.file = Some(file);
    }

    /// The block file in use, if any.
    pub fn block_file(&self) -> Option<&BlockFile> {
        self.warm.file.as_ref()
    }

    /// Records every block decompressed from now on, up to `budget` bytes, for
    /// [`Archive::block_file_bytes`].
    pub fn record_blocks(&mut self, budget: usize) {
        self.warm.recorder = Some(Mutex::new(Recorder {
            blocks: Vec::new(),
            seen: HashSet::new(),
            bytes: 0,
            budget,
            dirty: false,
        }));
    }

    /// The largest block of each kind a block file may hold for this image.
    pub fn block_limits(&self) -> (u32, u32) {
        (self.sb.block_size, METADATA_SIZE as u32)
    }

    /// A new block file's bytes, `identity` as from [`Archive::block_identity`]: the blocks of
    /// the file in use and those recorded since; `None` when nothing was recorded since the
    /// last call (the file on disk is already complete).
    pub fn block_file_bytes(&self, identity: &[u8; 32]) -> Option<Vec<u8>> {
        let rec = self.warm.recorder.as_ref()?;
        let mut rec = rec.lock().unwrap_or_else(|e| e.into_inner());
        if !rec.dirty {
            return None;
        }
        rec.dirty = false;
        let old = self
            .warm
            .file
            .as_ref()
            .map(BlockFile::all)
            .unwrap_or_default();
        // The old file's good blocks, except those decompressed again (their copy there
        // failed its checksum), then the new ones.
        let mut blocks: Vec<(Kind, u64, u32, &[u8])> = old
            .iter()
            .filter(|(k, p, _, _)| !rec.seen.contains(&(*k, *p)))
            .map(|(k, p, a, d)| (*k, *p, *a, d.as_slice()))
            .collect();
        blocks.extend(
            rec.blocks
                .iter()
                .map(|(k, p, a, h)| (*k, *p, *a, h.bytes())),
        );
        Some(blockfile::encode(identity, &blocks))
    }

    /// A block from the block file, checked against the limits of its kind.
    pub(crate) fn warm_block(&self, kind: Kind, pos: u64) -> Option<(Vec<u8>, u32)> {
        let (data, aux) = self.warm.file.as_ref()?.get(kind, pos)?;
        let max = match kind {
            Kind::Meta => METADATA_SIZE,
            Kind::Data => self.sb.block_size as usize,
        };
        (data.len() <= max).then_some((data, aux))
    }

    /// Notes a block that was just decompressed (nothing when not recording, when it was
    /// recorded already, or past the budget). A block the block file holds is decompressed
    /// only when its copy there failed its checksum: it is recorded, and replaces that copy.
    pub(crate) fn record(&self, kind: Kind, pos: u64, aux: u32, held: Held) {
        let Some(rec) = &self.warm.recorder else {
            return;
        };
        let mut rec = rec.lock().unwrap_or_else(|e| e.into_inner());
        let len = held.bytes().len();
        if rec.bytes + len > rec.budget || !rec.seen.insert((kind, pos)) {
            return;
        }
        rec.bytes += len;
        rec.dirty = true;
        rec.blocks.push((kind, pos, aux, held));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::squashfs::testutil::TempDir;
    use crate::squashfs::write::{Metadata, SquashfsWriter, WriterOptions};
    use crate::squashfs::Compressor;
    use std::fs::File;

    fn content(seed: u32, n: usize) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|i| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                if i % 3 == 0 {
                    b'a' + (i % 7) as u8
                } else {
                    (x >> 16) as u8
                }
            })
            .collect()
    }

    /// An image with several files: multi-block, a tail in a fragment, small ones.
    fn image(dir: &TempDir) -> (std::path::PathBuf, Vec<(String, Vec<u8>)>) {
        let path = dir.0.join("img.sqfs");
        let opts = WriterOptions {
            compressor: Compressor::Zstd,
            block_size: 4096,
            ..WriterOptions::default()
        };
        let mut w = SquashfsWriter::new(File::create(&path).unwrap(), opts).unwrap();
        let meta = Metadata {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
            xattrs: Vec::new(),
        };
        let mut files = Vec::new();
        for (i, n) in [0usize, 10, 4096, 4097, 50_000, 123_457].iter().enumerate() {
            let name = format!("/d{}/f{i}", i % 2);
            let data = content(i as u32 + 1, *n);
            w.add_file(name.as_bytes(), meta.clone(), &mut &data[..])
                .unwrap();
            files.push((name, data));
        }
        w.finish().unwrap();
        (path, files)
    }

    fn read_all(ar: &Archive, files: &[(String, Vec<u8>)]) {
        for (name, data) in files {
            let inode = ar.resolve(name.as_bytes()).unwrap().unwrap();
            assert_eq!(&ar.read_file(&inode).unwrap(), data, "{name}");
        }
    }

    fn record(path: &std::path::Path, files: &[(String, Vec<u8>)], id: &[u8; 32]) -> Vec<u8> {
        let mut ar = Archive::open_path(path, 0).unwrap();
        ar.record_blocks(64 << 20);
        read_all(&ar, files);
        let bytes = ar.block_file_bytes(id).expect("blocks were recorded");
        assert!(ar.block_file_bytes(id).is_none(), "nothing new since");
        bytes
    }

    #[test]
    fn a_block_file_serves_the_same_contents() {
        let dir = TempDir::new("warm");
        let (path, files) = image(&dir);
        let id = Archive::open_path(&path, 0)
            .unwrap()
            .block_identity(b"x")
            .unwrap();
        let bytes = record(&path, &files, &id);
        let bf_path = dir.0.join("img.blocks");
        std::fs::write(&bf_path, &bytes).unwrap();

        let mut ar = Archive::open_path(&path, 0).unwrap();
        let (d, m) = ar.block_limits();
        let bf = BlockFile::load(File::open(&bf_path).unwrap(), &id, d, m).unwrap();
        let n = bf.len();
        assert!(n > 30, "data and metadata blocks recorded: {n}");
        ar.use_block_file(bf);
        ar.record_blocks(64 << 20);
        read_all(&ar, &files);
        // Everything came from the file: nothing new to write.
        assert!(ar.block_file_bytes(&id).is_none());
    }

    #[test]
    fn damaged_blocks_fall_back_to_the_image() {
        let dir = TempDir::new("warm-bad");
        let (path, files) = image(&dir);
        let id = Archive::open_path(&path, 0)
            .unwrap()
            .block_identity(b"")
            .unwrap();
        let mut bytes = record(&path, &files, &id);
        // Garble the whole data area (the index stays valid): every block fails its checksum.
        let count = u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as usize;
        let data_start = 56 + count * 32;
        for b in &mut bytes[data_start..] {
            *b = b.wrapping_add(1);
        }
        let bf_path = dir.0.join("img.blocks");
        std::fs::write(&bf_path, &bytes).unwrap();
        let mut ar = Archive::open_path(&path, 0).unwrap();
        let (d, m) = ar.block_limits();
        ar.use_block_file(BlockFile::load(File::open(&bf_path).unwrap(), &id, d, m).unwrap());
        ar.record_blocks(64 << 20);
        read_all(&ar, &files);
        // The blocks decompressed again replace the damaged copies in the next file.
        let repaired = ar
            .block_file_bytes(&id)
            .expect("damaged blocks were recorded");
        let rp = dir.0.join("repaired.blocks");
        std::fs::write(&rp, &repaired).unwrap();
        let good = BlockFile::load(File::open(&rp).unwrap(), &id, d, m).unwrap();
        assert_eq!(good.all().len(), good.len());
        assert_eq!(good.len(), count);
        // Another identity (another image, or the same one rewritten) is not used at all.
        let other = Archive::open_path(&path, 0)
            .unwrap()
            .block_identity(b"y")
            .unwrap();
        assert_ne!(other, id);
        assert!(BlockFile::load(File::open(&bf_path).unwrap(), &other, d, m).is_err());
    }

    #[test]
    fn recording_stops_at_the_budget() {
        let dir = TempDir::new("warm-budget");
        let (path, files) = image(&dir);
        let mut ar = Archive::open_path(&path, 0).unwrap();
        ar.record_blocks(10_000);
        read_all(&ar, &files);
        let rec = ar.warm.recorder.as_ref().unwrap().lock().unwrap();
        assert!(rec.bytes <= 10_000 && rec.bytes > 0, "{}", rec.bytes);
    }
}
