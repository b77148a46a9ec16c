//! Block encoders for the writer (gzip, xz, lz4, zstd).
//!
//! Every encoder produces exactly what the kernel's SquashFS decompressors
//! (and `unsquashfs`) accept: a zlib stream, an `.xz` stream with a single
//! LZMA2 filter, CRC32 check and a dictionary no larger than the block size
//! (the kernel preallocates a dictionary of `block_size` bytes), a raw LZ4
//! block (legacy format) and a zstd frame.

use super::{Error, Result};
use crate::squashfs::Compressor;
use std::io::Write;

/// Default levels, as mksquashfs uses them.
const GZIP_DEFAULT: i32 = 9;
const XZ_DEFAULT: i32 = 6;
const ZSTD_DEFAULT: i32 = 15;

/// Validates the compressor/level pair and returns the effective level.
pub(crate) fn effective_level(c: Compressor, level: Option<i32>) -> Result<i32> {
    let (range, default) = match c {
        Compressor::Gzip => (1..=9, GZIP_DEFAULT),
        Compressor::Xz => (0..=9, XZ_DEFAULT),
        Compressor::Zstd => (1..=22, ZSTD_DEFAULT),
        // lz4_flex has a single (fast) mode; a level is accepted and ignored.
        Compressor::Lz4 => (i32::MIN..=i32::MAX, 0),
        Compressor::Lzo | Compressor::Lzma => {
            return Err(Error::Unsupported(format!(
                "compressor {} is unsupported for writing",
                c.name()
            )))
        }
    };
    let l = level.unwrap_or(default);
    if !range.contains(&l) {
        return Err(Error::Unsupported(format!(
            "compression level {l} out of range for {}",
            c.name()
        )));
    }
    Ok(l)
}

/// One encoder per thread (zstd keeps a reusable context).
pub(crate) struct Encoder {
    kind: Compressor,
    level: i32,
    dict_size: u32,
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Encoder {
    /// `kind`/`level` must have passed [`effective_level`].
    pub(crate) fn new(kind: Compressor, level: i32, block_size: u32) -> Result<Encoder> {
        let zstd = if kind == Compressor::Zstd {
            Some(zstd::bulk::Compressor::new(level).map_err(Error::Io)?)
        } else {
            None
        };
        Ok(Encoder {
            kind,
            level,
            dict_size: block_size,
            zstd,
        })
    }

    /// Compresses `input`; the caller decides whether the result is used
    /// (only when it is smaller than the input).
    pub(crate) fn compress(&mut self, input: &[u8]) -> std::io::Result<Vec<u8>> {
        match self.kind {
            Compressor::Gzip => {
                let mut e = flate2::write::ZlibEncoder::new(
                    Vec::with_capacity(input.len() / 2 + 64),
                    flate2::Compression::new(self.level as u32),
                );
                e.write_all(input)?;
                e.finish()
            }
            Compressor::Xz => {
                use liblzma::stream::{Check, Filters, LzmaOptions, Stream};
                let mut opts = LzmaOptions::new_preset(self.level as u32).map_err(io_err)?;
                opts.dict_size(self.dict_size);
                let mut filters = Filters::new();
                filters.lzma2(&opts);
                let stream = Stream::new_stream_encoder(&filters, Check::Crc32).map_err(io_err)?;
                let mut e = liblzma::write::XzEncoder::new_stream(
                    Vec::with_capacity(input.len() / 2 + 64),
                    stream,
                );
                e.write_all(input)?;
                e.finish()
            }
            Compressor::Lz4 => Ok(lz4_flex::block::compress(input)),
            Compressor::Zstd => self
                .zstd
                .as_mut()
                .expect("zstd encoder created in new()")
                .compress(input),
            Compressor::Lzo | Compressor::Lzma => {
                Err(std::io::Error::other("compressor unsupported for writing"))
            }
        }
    }
}

fn io_err(e: liblzma::stream::Error) -> std::io::Error {
    std::io::Error::other(e)
}
