//! Where an [`Archive`](super::Archive) reads its bytes from: a local file, or anything else
//! that can answer positioned reads (a SIF still being downloaded: the `lazy` module).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Positioned reads of an image's bytes, from any thread.
pub trait ReadAt: Send + Sync {
    /// Fills `buf` with the bytes at `pos`; `UnexpectedEof` past the end.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// The length of the whole source (the SIF or SquashFS file), in bytes.
    fn size(&self) -> io::Result<u64>;
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, pos)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
}

/// The cause of an I/O error that the byte source has already told the user about (a lazy
/// download's range that failed after retries): readers answer EIO without a second warning.
#[derive(Debug)]
pub struct AlreadyReported;

impl std::fmt::Display for AlreadyReported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("input/output error (reported by the image source)")
    }
}

impl std::error::Error for AlreadyReported {}

impl AlreadyReported {
    /// The error a source returns after reporting a failed read itself.
    pub fn io_error() -> io::Error {
        io::Error::other(AlreadyReported)
    }

    /// Whether `e` is such an error.
    pub fn is(e: &io::Error) -> bool {
        e.get_ref()
            .is_some_and(|inner| inner.is::<AlreadyReported>())
    }
}
