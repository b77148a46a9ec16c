//! [`LazySource`]: the bytes of an image being downloaded, as the SquashFS reader sees them.
//! A read whose chunks are missing fetches them (range requests, retried), stores them in the
//! block cache and then reads the file; a background thread fetches the rest in order and,
//! when every chunk is there, checks the whole file against the image's digest and renames it
//! to its cache entry.

use super::at::At;
use super::blocks::Blocks;
use super::ranges::Ranges;
use super::Meta;
use crate::squashfs::ReadAt;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Tries of one range before a read fails with EIO, and the pauses between them.
const PAUSES_MS: &[u64] = &[100, 400, 1600];
/// Chunks the background download asks for in one request.
const BACKGROUND_GROUP: u64 = 16;
/// Default of `RSING_LAZY_READAHEAD_KIB`: what a read that continues an earlier one fetches
/// past its own chunk, in KiB (see `Inner::ensure`).
const READAHEAD_KIB: u64 = 768;

/// Bytes fetched past a sequential read's own chunk: `RSING_LAZY_READAHEAD_KIB` (0 turns it
/// off), read once per process.
fn readahead_bytes() -> u64 {
    static BYTES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        std::env::var("RSING_LAZY_READAHEAD_KIB")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(READAHEAD_KIB)
            .min(64 << 10)
            * 1024
    })
}

pub(crate) struct Inner {
    pub blocks: Blocks,
    ranges: Box<dyn Ranges>,
    pub meta: Meta,
    pub at: At,
    /// One warning line per process for failed reads.
    warned: AtomicBool,
    /// The download turned out not to be the image (digest mismatch): every read fails.
    poisoned: AtomicBool,
    background: Mutex<Option<std::thread::JoinHandle<()>>>,
    started: AtomicBool,
}

/// An image being downloaded (cheap to clone; clones share everything).
#[derive(Clone)]
pub struct LazySource(pub(crate) Arc<Inner>);

/// EIO, as the container sees it (the reason goes to the log, once).
fn eio(why: String) -> io::Error {
    tracing::debug!("lazy read failed: {why}");
    crate::squashfs::AlreadyReported::io_error()
}

impl LazySource {
    pub(crate) fn new(blocks: Blocks, ranges: Box<dyn Ranges>, meta: Meta, at: At) -> Self {
        LazySource(Arc::new(Inner {
            blocks,
            ranges,
            meta,
            at,
            warned: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            background: Mutex::new(None),
            started: AtomicBool::new(false),
        }))
    }

    /// Starts the background download in this process (once), unless
    /// `RSING_LAZY_BACKGROUND=no` (then only what containers read is fetched).
    pub fn start_background(&self) {
        if self.0.started.swap(true, Ordering::Relaxed) {
            return;
        }
        if matches!(
            std::env::var("RSING_LAZY_BACKGROUND").as_deref(),
            Ok("no" | "0" | "false")
        ) {
            return;
        }
        let mut slot = self.0.background.lock().unwrap_or_else(|p| p.into_inner());
        let inner = self.0.clone();
        *slot = std::thread::Builder::new()
            .name("rsing-lazy".into())
            .spawn(move || inner.background())
            .ok();
    }

    /// Keeps this source from starting a background download (unit tests read from threads
    /// that are not the main one).
    #[cfg(test)]
    pub(crate) fn without_background(self) -> Self {
        self.0.started.store(true, Ordering::Relaxed);
        self
    }

    /// Waits for the background download of this process, if one runs.
    pub fn join_background(&self) {
        let handle = self
            .0
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Fetches every missing chunk and finishes the entry, in this thread.
    pub fn download_all(&self) -> Result<(), String> {
        self.0.fetch_missing(0, self.0.blocks.chunks())?;
        self.0.finish()
    }
}

impl Inner {
    /// Bytes `[start, start + len)` from the remote, tried `PAUSES_MS.len() + 1` times.
    fn fetch_retrying(&self, start: u64, len: u64) -> Result<Vec<u8>, String> {
        let mut last = String::new();
        for attempt in 0..=PAUSES_MS.len() {
            match self.ranges.fetch(start, len) {
                Ok(bytes) if bytes.len() as u64 == len => return Ok(bytes),
                Ok(bytes) => last = format!("got {} of {len} bytes", bytes.len()),
                Err(e) => last = e,
            }
            tracing::debug!(start, len, attempt, "range request failed: {last}");
            if let Some(ms) = PAUSES_MS.get(attempt) {
                std::thread::sleep(Duration::from_millis(*ms));
            }
        }
        Err(last)
    }

    /// Makes chunk `i` present: fetched here, or by whoever held its lock. When the chunk
    /// before it is already here (a read going on where an earlier one stopped: a file's
    /// blocks, a directory's modules), the missing chunks after it come in the same request,
    /// up to [`readahead_bytes`] of them: a start pays one round trip for them instead of several.
    fn ensure(&self, i: u64) -> io::Result<()> {
        if self.blocks.is_present(i) {
            return Ok(());
        }
        let sequential = i > 0 && self.blocks.is_present(i - 1);
        let mut count = 1;
        if sequential {
            let more = readahead_bytes() / self.blocks.chunk.max(1);
            let limit = (i + 1 + more).min(self.blocks.chunks());
            while i + count < limit && !self.blocks.is_present(i + count) {
                count += 1;
            }
        }
        let _lock = self.blocks.lock(i, count)?;
        if self.blocks.is_present(i) {
            return Ok(());
        }
        // Another process may have fetched some of the rest meanwhile: only the missing run.
        while count > 1 && self.blocks.is_present(i + count - 1) {
            count -= 1;
        }
        let (start, _) = self.blocks.range(i);
        let (_, end) = self.blocks.range(i + count - 1);
        match self.fetch_retrying(start, end - start) {
            Ok(bytes) => {
                for c in i..i + count {
                    let (s, e) = self.blocks.range(c);
                    self.blocks
                        .store(c, &bytes[(s - start) as usize..(e - start) as usize])?;
                }
                Ok(())
            }
            Err(why) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    self.at.log(&format!(
                        "rsing: warning: image {}: cannot read bytes {start}-{end}: {why} \
                             (the container got an I/O error)",
                        self.meta.name
                    ));
                }
                Err(eio(why))
            }
        }
    }

    /// Fetches the missing chunks of `[first, end)`, `BACKGROUND_GROUP` at a time, each run of
    /// missing chunks in one request.
    fn fetch_missing(&self, first: u64, end: u64) -> Result<(), String> {
        let mut i = first;
        while i < end {
            if self.poisoned.load(Ordering::Relaxed) {
                return Err("the download was refused".into());
            }
            let group_end = (i + BACKGROUND_GROUP).min(end);
            if (i..group_end).all(|c| self.blocks.is_present(c)) {
                i = group_end;
                continue;
            }
            let _lock = self
                .blocks
                .lock(i, group_end - i)
                .map_err(|e| e.to_string())?;
            let mut j = i;
            while j < group_end {
                if self.blocks.is_present(j) {
                    j += 1;
                    continue;
                }
                let mut k = j;
                while k < group_end && !self.blocks.is_present(k) {
                    k += 1;
                }
                let (start, _) = self.blocks.range(j);
                let (_, stop) = self.blocks.range(k - 1);
                let bytes = self.fetch_retrying(start, stop - start)?;
                for c in j..k {
                    let (s, e) = self.blocks.range(c);
                    let part = &bytes[(s - start) as usize..(e - start) as usize];
                    self.blocks.store(c, part).map_err(|e| e.to_string())?;
                }
                j = k;
            }
            i = group_end;
        }
        Ok(())
    }

    fn background(&self) {
        let result = self
            .fetch_missing(0, self.blocks.chunks())
            .and_then(|()| self.finish());
        if let Err(why) = result {
            tracing::info!(image = %self.meta.name, "background download stopped: {why}");
        }
    }

    /// Every chunk is here: checks the file against the digest and renames it into the
    /// cache, or removes the entry. Once per entry, whichever process gets here first.
    fn finish(&self) -> Result<(), String> {
        let _lock = self.at.lock().map_err(|e| e.to_string())?;
        if !self.at.exists("remote") {
            return Ok(()); // finished (or refused) by another process
        }
        let actual = super::digest_of(self.blocks.data()).map_err(|e| e.to_string())?;
        if let Some(want) = &self.meta.digest {
            if *want != actual {
                self.poisoned.store(true, Ordering::Relaxed);
                self.at.remove();
                let line = format!(
                    "rsing: error: image {}: the downloaded file has digest {actual}, not {want} \
                     (corrupt or tampered); refused, and removed from the cache",
                    self.meta.name
                );
                self.at.log(&line);
                return Err(line);
            }
        }
        let dest = &self.meta.final_path;
        self.blocks.data().sync_all().map_err(|e| e.to_string())?;
        self.at
            .publish()
            .map_err(|e| format!("{}: {e}", dest.display()))?;
        tracing::info!(image = %self.meta.name, path = %dest.display(), "download complete and verified");
        Ok(())
    }
}

impl ReadAt for LazySource {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let inner = &self.0;
        let end = pos.saturating_add(buf.len() as u64);
        if end > inner.blocks.size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the image",
            ));
        }
        if inner.poisoned.load(Ordering::Relaxed) {
            return Err(eio("the image failed its digest check".into()));
        }
        if buf.is_empty() {
            return Ok(());
        }
        // The first read of a FUSE thread: rsing has entered its namespaces (and the image
        // server has forked), so threads may be started now, not before (see `ranges`).
        if !super::ranges::on_main_thread() {
            self.start_background();
        }
        let chunk = inner.blocks.chunk;
        for i in pos / chunk..=(end - 1) / chunk {
            inner.ensure(i)?;
        }
        inner.blocks.read(buf, pos)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.0.blocks.size)
    }
}
