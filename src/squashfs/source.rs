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
