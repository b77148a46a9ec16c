//! The server's block file (`squashfs::BlockFile`): found and used when the server starts,
//! written when its clients have gone, so that the first container of the next server of the
//! image does not decompress again what this one did (docs/design.md, "Warm first starts").

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::squashfs::{Archive, BlockDir, BlockFile};

/// Bytes of decompressed blocks one server records (and one block file holds, with the blocks
/// of the file it started from): a start's profile, not the whole image. `import numpy`
/// decompresses about 30 MB.
const RECORD_BUDGET: usize = 128 << 20;
/// Bytes of block files a user keeps; the least recently used go first.
const MAX_TOTAL: u64 = 1 << 30;

/// Where this image's block file is, and what it is checked against.
pub(super) struct Blocks {
    dir: Arc<BlockDir>,
    name: OsString,
    identity: [u8; 32],
}

impl Blocks {
    /// Sets `archive` up to serve from the image's block file in `dir` (when there is a good
    /// one) and to record what it decompresses. `None` when the directory cannot be used.
    pub(super) fn open(dir: &Path, image: &Path, archive: &mut Archive) -> Option<Blocks> {
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir);
        let meta = std::fs::metadata(image).ok()?;
        let mut extra = Vec::new();
        for n in [meta.size(), meta.mtime() as u64, meta.mtime_nsec() as u64] {
            extra.extend_from_slice(&n.to_le_bytes());
        }
        let identity = archive.block_identity(&extra).ok()?;
        let dir = BlockDir::new(std::fs::File::open(dir).ok()?);
        let name = BlockDir::name_for(&identity);
        if let Some(file) = dir.open(&name) {
            let (max_data, max_meta) = archive.block_limits();
            match BlockFile::load(file, &identity, max_data, max_meta) {
                Ok(bf) => {
                    tracing::debug!(blocks = bf.len(), "serving from the image's block file");
                    bf.prefetch();
                    archive.use_block_file(bf);
                }
                Err(why) => tracing::debug!("block file {name:?} not used: {why}"),
            }
        }
        archive.record_blocks(RECORD_BUDGET);
        Some(Blocks {
            dir: Arc::new(dir),
            name,
            identity,
        })
    }

    pub(super) fn saver(self, archive: Arc<Archive>) -> Saver {
        Saver {
            archive,
            blocks: Arc::new(self),
            running: None,
        }
    }

    /// Writes the block file if blocks were recorded since the last time, then keeps the
    /// user's block files within their bound.
    fn save(&self, archive: &Archive) {
        let Some(bytes) = archive.block_file_bytes(&self.identity) else {
            return;
        };
        match self.dir.store(&self.name, &bytes) {
            Ok(()) => {
                let _ = self.dir.evict(MAX_TOTAL, &self.name);
            }
            Err(e) => tracing::debug!("cannot write the block file: {e}"),
        }
    }
}

/// Writes the block file off the control loop's thread.
pub(super) struct Saver {
    archive: Arc<Archive>,
    blocks: Arc<Blocks>,
    running: Option<JoinHandle<()>>,
}

impl Saver {
    /// Starts a write in the background, unless one is still running.
    pub(super) fn kick(&mut self) {
        if self.running.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let (archive, blocks) = (self.archive.clone(), self.blocks.clone());
        self.running = std::thread::Builder::new()
            .name("rsing-blocks".into())
            .spawn(move || blocks.save(&archive))
            .ok();
    }

    /// Waits for a running write, then writes what was recorded after it.
    pub(super) fn finish(&mut self) {
        if let Some(h) = self.running.take() {
            let _ = h.join();
        }
        self.blocks.save(&self.archive);
    }
}
