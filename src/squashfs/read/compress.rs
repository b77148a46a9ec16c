//! Block decompression for the six SquashFS codecs.
//!
//! Every decoder is bounded: the caller says how many bytes the block may
//! decompress to at most (metadata: 8 KiB, data: the block size) and a larger
//! result is reported as corruption instead of growing memory. A decompression bomb (a few
//! bytes that expand to gigabytes) therefore costs at most one block's worth of memory and
//! of decoding time: every decoder writes into a buffer of `max` (+1) bytes and stops when
//! it is full, and all of them report it in the same words ([`too_big`]).

use super::{Error, Result};
use std::cell::RefCell;

/// The compression algorithm of an archive (superblock `compression_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compressor {
    /// id 1: zlib stream (deflate with zlib header).
    Gzip,
    /// id 2: legacy `.lzma` ("lzma alone") stream.
    Lzma,
    /// id 3: raw LZO1X.
    Lzo,
    /// id 4: `.xz` stream.
    Xz,
    /// id 5: raw LZ4 block.
    Lz4,
    /// id 6: zstd frame.
    Zstd,
}

impl Compressor {
    /// Maps the on-disk id; `None` for unknown ids.
    pub fn from_id(id: u16) -> Option<Compressor> {
        Some(match id {
            1 => Compressor::Gzip,
            2 => Compressor::Lzma,
            3 => Compressor::Lzo,
            4 => Compressor::Xz,
            5 => Compressor::Lz4,
            6 => Compressor::Zstd,
            _ => return None,
        })
    }

    /// The on-disk id.
    pub fn id(self) -> u16 {
        match self {
            Compressor::Gzip => 1,
            Compressor::Lzma => 2,
            Compressor::Lzo => 3,
            Compressor::Xz => 4,
            Compressor::Lz4 => 5,
            Compressor::Zstd => 6,
        }
    }

    /// Lower-case name as used by mksquashfs (`-comp NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Compressor::Gzip => "gzip",
            Compressor::Lzma => "lzma",
            Compressor::Lzo => "lzo",
            Compressor::Xz => "xz",
            Compressor::Lz4 => "lz4",
            Compressor::Zstd => "zstd",
        }
    }

    /// Decompresses one block. `max` is the largest permitted output; `what`
    /// names the block for error messages (e.g. "data block at 1234").
    pub fn decompress(
        self,
        input: &[u8],
        max: usize,
        what: &dyn Fn() -> String,
    ) -> Result<Vec<u8>> {
        let r = match self {
            Compressor::Gzip => gzip(input, max),
            Compressor::Xz => xz(input, max, false),
            Compressor::Lzma => xz(input, max, true),
            Compressor::Lzo => lzo1x(input, max),
            Compressor::Lz4 => lz4(input, max),
            Compressor::Zstd => zstd(input, max),
        };
        r.map_err(|e| {
            Error::Corrupt(format!(
                "{} ({}) failed to decompress: {}",
                what(),
                self.name(),
                e
            ))
        })
    }
}

type DResult = std::result::Result<Vec<u8>, String>;

/// The one wording for a block that expands past its limit, whatever the codec.
fn too_big(max: usize) -> String {
    format!("expands to more than the {max} bytes a block may hold (decompression bomb?)")
}

/// Runs a streaming decoder over `input` into a buffer bounded by `max` bytes. `step` feeds
/// the unread input and the unfilled output to the decoder and returns its running totals
/// (bytes read, bytes written) and whether the stream ended. A step that makes no progress is
/// a truncated stream, except, with `lenient_end`, once all input is used (legacy lzma streams
/// written without an end marker just stop).
fn drive(
    input: &[u8],
    max: usize,
    lenient_end: bool,
    mut step: impl FnMut(&[u8], &mut [u8]) -> std::result::Result<(usize, usize, bool), String>,
) -> DResult {
    let mut out = vec![0u8; max + 1];
    let (mut in_pos, mut out_pos) = (0, 0);
    loop {
        let (read, written, ended) = step(&input[in_pos..], &mut out[out_pos..])?;
        if written > max {
            return Err(too_big(max));
        }
        let stalled = read == in_pos && written == out_pos;
        if ended || (stalled && lenient_end && read == input.len() && written > 0) {
            out.truncate(written);
            return Ok(out);
        }
        if stalled {
            return Err("truncated stream".into());
        }
        (in_pos, out_pos) = (read, written);
    }
}

fn gzip(input: &[u8], max: usize) -> DResult {
    use flate2::{Decompress, FlushDecompress, Status};
    let mut d = Decompress::new(true);
    drive(input, max, false, |i, o| {
        let status = d
            .decompress(i, o, FlushDecompress::Finish)
            .map_err(|e| e.to_string())?;
        Ok((
            d.total_in() as usize,
            d.total_out() as usize,
            status == Status::StreamEnd,
        ))
    })
}

fn xz(input: &[u8], max: usize, legacy_lzma: bool) -> DResult {
    use liblzma::stream::{Action, Status, Stream};
    // The decoder's dictionary is allocated up front at the size the stream's header asks
    // for. SquashFS writers use at most the block size (1 MiB), so 64 MiB refuses only a
    // hostile header, before it costs memory.
    const MEMLIMIT: u64 = 64 << 20;
    let mut s = if legacy_lzma {
        Stream::new_lzma_decoder(MEMLIMIT)
    } else {
        Stream::new_stream_decoder(MEMLIMIT, 0)
    }
    .map_err(|e| e.to_string())?;
    drive(input, max, legacy_lzma, |i, o| {
        let status = s.process(i, o, Action::Finish).map_err(|e| e.to_string())?;
        Ok((
            s.total_in() as usize,
            s.total_out() as usize,
            status == Status::StreamEnd,
        ))
    })
}

fn lz4(input: &[u8], max: usize) -> DResult {
    use lz4_flex::block::DecompressError;
    let mut out = vec![0u8; max];
    let n = lz4_flex::block::decompress_into(input, &mut out).map_err(|e| match e {
        DecompressError::OutputTooSmall { .. } => too_big(max),
        e => e.to_string(),
    })?;
    out.truncate(n);
    Ok(out)
}

thread_local! {
    static ZSTD: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn zstd(input: &[u8], max: usize) -> DResult {
    // A frame that declares its size is refused before any decoding.
    if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(input) {
        if n > max as u64 {
            return Err(too_big(max));
        }
    }
    ZSTD.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let d = slot.as_mut().expect("initialised above");
        let mut out = Vec::with_capacity(max);
        match d.decompress_to_buffer(input, &mut out) {
            Ok(n) => {
                out.truncate(n);
                Ok(out)
            }
            Err(e) => {
                // A failed frame can leave the context in a bad state.
                *slot = None;
                // zstd's name for ZSTD_error_dstSize_tooSmall: the frame did not fit.
                if e.to_string().contains("Destination buffer is too small") {
                    Err(too_big(max))
                } else {
                    Err(e.to_string())
                }
            }
        }
    })
}

/// Safe, bounded LZO1X decompressor (the format produced by
/// `lzo1x_999_compress` as used by mksquashfs).
pub(crate) fn lzo1x(input: &[u8], max: usize) -> DResult {
    struct In<'a> {
        data: &'a [u8],
        pos: usize,
    }
    impl In<'_> {
        fn byte(&mut self) -> std::result::Result<usize, String> {
            let b = *self.data.get(self.pos).ok_or("input overrun")?;
            self.pos += 1;
            Ok(b as usize)
        }
        fn le16(&mut self) -> std::result::Result<usize, String> {
            Ok(self.byte()? | (self.byte()? << 8))
        }
        /// Length extension: a run of zero bytes (255 each) plus a final byte.
        fn ext_len(&mut self, base: usize) -> std::result::Result<usize, String> {
            let mut n = base;
            loop {
                let b = self.byte()?;
                if b == 0 {
                    n += 255;
                    if n > (1 << 30) {
                        return Err("length overflow".into());
                    }
                } else {
                    return Ok(n + b);
                }
            }
        }
    }
    fn literals(
        inp: &mut In,
        out: &mut Vec<u8>,
        n: usize,
        max: usize,
    ) -> std::result::Result<(), String> {
        let end = inp.pos.checked_add(n).ok_or("input overrun")?;
        let src = inp.data.get(inp.pos..end).ok_or("input overrun")?;
        if out.len() + n > max {
            return Err(too_big(max));
        }
        out.extend_from_slice(src);
        inp.pos = end;
        Ok(())
    }
    fn copy_match(
        out: &mut Vec<u8>,
        dist: usize,
        len: usize,
        max: usize,
    ) -> std::result::Result<(), String> {
        if dist == 0 || dist > out.len() {
            return Err("lookbehind overrun".into());
        }
        if out.len() + len > max {
            return Err(too_big(max));
        }
        let start = out.len() - dist;
        if dist >= len {
            out.extend_from_within(start..start + len);
        } else {
            for i in 0..len {
                let b = out[start + i];
                out.push(b);
            }
        }
        Ok(())
    }

    let mut inp = In {
        data: input,
        pos: 0,
    };
    let mut out: Vec<u8> = Vec::with_capacity(max);
    let mut state: usize = 0;

    let first = *input.first().ok_or("empty input")? as usize;
    if first >= 22 {
        inp.pos = 1;
        literals(&mut inp, &mut out, first - 17, max)?;
        state = 4;
    } else if first >= 18 {
        inp.pos = 1;
        state = first - 17;
        literals(&mut inp, &mut out, state, max)?;
    }
    loop {
        let inst = inp.byte()?;
        let (dist, len, next_state);
        if inst >= 64 {
            // M2
            let h = inp.byte()?;
            dist = (h << 3) + ((inst >> 2) & 7) + 1;
            len = (inst >> 5) + 1;
            next_state = inst & 3;
        } else if inst >= 32 {
            // M3
            let mut l = (inst & 0x1f) + 2;
            if l == 2 {
                l = inp.ext_len(31)? + 2;
            }
            let v = inp.le16()?;
            dist = (v >> 2) + 1;
            len = l;
            next_state = v & 3;
        } else if inst >= 16 {
            // M4 (or end of stream)
            let mut l = (inst & 7) + 2;
            if l == 2 {
                l = inp.ext_len(7)? + 2;
            }
            let v = inp.le16()?;
            let d = ((inst & 8) << 11) + (v >> 2);
            if d == 0 {
                break;
            }
            dist = d + 16384;
            len = l;
            next_state = v & 3;
        } else if state == 0 {
            // long literal run
            let mut l = inst + 3;
            if l == 3 {
                l = inp.ext_len(15)? + 3;
            }
            literals(&mut inp, &mut out, l, max)?;
            state = 4;
            continue;
        } else if state != 4 {
            let h = inp.byte()?;
            dist = (inst >> 2) + (h << 2) + 1;
            len = 2;
            next_state = inst & 3;
        } else {
            let h = inp.byte()?;
            dist = (inst >> 2) + (h << 2) + 2049;
            len = 3;
            next_state = inst & 3;
        }
        copy_match(&mut out, dist, len, max)?;
        state = next_state;
        literals(&mut inp, &mut out, next_state, max)?;
    }
    Ok(out)
}

/// `n` zero bytes compressed by `c` as a SquashFS writer would store a block: a
/// decompression bomb when `n` is far above the block's limit. With `sized`, a zstd frame
/// declares its content size (without, only decoding finds it out).
#[cfg(test)]
pub(crate) fn bomb(c: Compressor, n: usize, sized: bool) -> Vec<u8> {
    use std::io::Write;
    let zeros = vec![0u8; n];
    match c {
        Compressor::Gzip => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
            e.write_all(&zeros).unwrap();
            e.finish().unwrap()
        }
        Compressor::Xz | Compressor::Lzma => {
            use liblzma::stream::{Check, LzmaOptions, Stream};
            let opts = LzmaOptions::new_preset(6).unwrap();
            let stream = if c == Compressor::Xz {
                Stream::new_easy_encoder(6, Check::Crc32).unwrap()
            } else {
                Stream::new_lzma_encoder(&opts).unwrap()
            };
            let mut e = liblzma::write::XzEncoder::new_stream(Vec::new(), stream);
            e.write_all(&zeros).unwrap();
            e.finish().unwrap()
        }
        Compressor::Lzo => lzokay_native::compress(&zeros).unwrap(),
        Compressor::Lz4 => lz4_flex::block::compress(&zeros),
        Compressor::Zstd if sized => zstd::bulk::compress(&zeros, 3).unwrap(),
        Compressor::Zstd => zstd::stream::encode_all(&zeros[..], 3).unwrap(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compressor; 6] = [
        Compressor::Gzip,
        Compressor::Lzma,
        Compressor::Lzo,
        Compressor::Xz,
        Compressor::Lz4,
        Compressor::Zstd,
    ];

    /// A block that expands to 16 MiB is refused for the 8 KiB metadata limit and the 1 MiB
    /// largest data block alike, quickly and in the same words, for every codec (and both
    /// kinds of zstd frame); a block of exactly the limit still decodes.
    #[test]
    fn decompression_bombs_are_refused_for_every_codec() {
        for c in ALL {
            for sized in [true, false] {
                if !sized && c != Compressor::Zstd {
                    continue;
                }
                let bomb = bomb(c, 16 << 20, sized);
                assert!(bomb.len() < 1 << 20, "{c:?}: {} bytes", bomb.len());
                for max in [8192, 1 << 20] {
                    let started = std::time::Instant::now();
                    let err = c
                        .decompress(&bomb, max, &|| "data block at 96".into())
                        .unwrap_err()
                        .to_string();
                    let took = started.elapsed();
                    assert!(
                        err.contains("data block at 96")
                            && err.contains(c.name())
                            && err.contains(&format!("more than the {max} bytes")),
                        "{c:?} sized={sized}: {err}"
                    );
                    assert!(took < std::time::Duration::from_secs(2), "{c:?}: {took:?}");
                }
                let exact = super::bomb(c, 8192, sized);
                assert_eq!(
                    c.decompress(&exact, 8192, &|| "x".into()).unwrap().len(),
                    8192
                );
            }
        }
    }

    #[test]
    fn lzo_roundtrip_against_lzokay() {
        let mut data = Vec::new();
        let mut x: u32 = 12345;
        for i in 0..200_000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // mix of compressible and random content
            data.push(if (i / 1000) % 2 == 0 {
                (i % 7) as u8
            } else {
                x as u8
            });
        }
        let c = lzokay_native::compress(&data).unwrap();
        let d = lzo1x(&c, data.len()).unwrap();
        assert_eq!(d, data);
        assert!(lzo1x(&c, data.len() - 1).is_err());
        // truncated / garbage input must not panic
        for cut in [0, 1, 2, 10, c.len() / 2, c.len() - 1] {
            let _ = lzo1x(&c[..cut], data.len());
        }
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        let _ = lzo1x(&garbage, 8192);
    }

    #[test]
    fn codecs_reject_garbage_without_panicking() {
        let garbage: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 7) as u8)
            .collect();
        for c in ALL {
            let _ = c.decompress(&garbage, 8192, &|| "test".into());
            let _ = c.decompress(&[], 8192, &|| "test".into());
        }
    }
}
