//! One layer blob: where it is, and readers over its compressed bytes and its tar stream.

use std::io::{self, Cursor, Read};
use std::path::PathBuf;

use flate2::read::MultiGzDecoder;

use super::store::{with_path, Location};
use super::{Digest, VerifyingReader};

/// A layer of a resolved image. It can be opened any number of times; every reader checks the
/// content against `digest` and `size`.
#[derive(Clone, Debug)]
pub struct LayerBlob {
    pub digest: Digest,
    pub media_type: String,
    /// Size of the stored (possibly compressed) blob.
    pub size: u64,
    location: Location,
}

impl LayerBlob {
    /// A layer stored in a file of its own (a registry download, a layout's blob).
    pub fn from_file(
        path: impl Into<PathBuf>,
        digest: Digest,
        media_type: impl Into<String>,
        size: u64,
    ) -> LayerBlob {
        LayerBlob::at(Location::File(path.into()), digest, media_type.into(), size)
    }

    pub(crate) fn at(location: Location, digest: Digest, media_type: String, size: u64) -> Self {
        LayerBlob {
            digest,
            media_type,
            size,
            location,
        }
    }

    /// The blob's bytes as stored (compressed), verified: the read that reaches the end fails
    /// with `InvalidData` if the digest or size is wrong.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        let raw = self
            .location
            .open()
            .map_err(|e| with_path(e, &self.location))?;
        Ok(Box::new(VerifyingReader::new(
            raw,
            self.digest.clone(),
            Some(self.size),
        )))
    }

    /// The layer's tar stream, decompressed (see [`decompress`]), verified against the
    /// digest when the stream ends. A caller that stops at the tar's end-of-archive blocks
    /// should read on to the end (`io::copy(&mut r, &mut io::sink())`) to get that check.
    pub fn open_tar(&self) -> io::Result<Box<dyn Read + Send>> {
        decompress(self.open()?, &self.media_type)
            .map_err(|e| io::Error::new(e.kind(), format!("layer {}: {e}", self.describe())))
    }

    /// A short name for messages: `sha256:` and 12 hex digits.
    pub fn describe(&self) -> String {
        self.digest.short()
    }
}

/// A tar stream from a layer blob's bytes: the compression is taken from the first bytes
/// (gzip, zstd, or none for a tar), and from `media_type` when the blob is too short to tell;
/// others (bzip2, xz…) are refused. When the decompressed stream ends, the rest of `raw` is
/// read, so a verifying `raw` checks its digest and trailing bytes are not ignored.
pub fn decompress(
    mut raw: Box<dyn Read + Send>,
    media_type: &str,
) -> io::Result<Box<dyn Read + Send>> {
    let mut magic = Vec::with_capacity(MAGIC_LEN);
    (&mut raw).take(MAGIC_LEN as u64).read_to_end(&mut magic)?;
    let compression = Compression::detect(&magic)
        .or_else(|| Compression::from_media_type(media_type).filter(|_| magic.len() < MAGIC_LEN))
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "unsupported compression (first bytes {}, media type {media_type}); gzip, zstd and plain tar are supported",
                    hex_bytes(&magic)
                ),
            )
        })?;
    let src = Cursor::new(magic).chain(raw);
    Ok(match compression {
        Compression::None => Box::new(src),
        Compression::Gzip => Box::new(Drained(MultiGzDecoder::new(src))),
        Compression::Zstd => Box::new(Drained(zstd::stream::read::Decoder::new(src)?)),
    })
}

/// Enough bytes to tell the formats in [`Compression::detect`] apart.
const MAGIC_LEN: usize = 10;

fn hex_bytes(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// By magic number; a tar has no magic at offset 0 (its `ustar` is at 257), so anything
    /// that is not a known compressor and not another known format is taken as a tar, and the
    /// tar reader judges it.
    fn detect(magic: &[u8]) -> Option<Compression> {
        const OTHER: &[&[u8]] = &[
            &[0xfd, b'7', b'z', b'X', b'Z', 0], // xz
            &[0x5d, 0, 0],                      // lzma
            &[0x04, 0x22, 0x4d, 0x18],          // lz4 frame
        ];
        let bzip2 = magic.starts_with(b"BZh") && magic.get(4..10) == Some(b"1AY&SY");
        if magic.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if bzip2 || magic.len() < MAGIC_LEN || OTHER.iter().any(|m| magic.starts_with(m)) {
            None
        } else {
            Some(Compression::None)
        }
    }

    fn from_media_type(t: &str) -> Option<Compression> {
        if t.ends_with("gzip") {
            Some(Compression::Gzip)
        } else if t.ends_with("zstd") {
            Some(Compression::Zstd)
        } else if t.ends_with("tar") {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// A decoder over a verified blob that, at the end of the decompressed stream, reads what is
/// left of the blob so the digest check runs (and trailing bytes are counted).
struct Drained<D>(D);

/// Decoders that hand out their source.
trait Source {
    fn source(&mut self) -> &mut dyn Read;
}

impl<R: Read> Source for MultiGzDecoder<R> {
    fn source(&mut self) -> &mut dyn Read {
        self.get_mut()
    }
}

impl<R: io::BufRead> Source for zstd::stream::read::Decoder<'_, R> {
    fn source(&mut self) -> &mut dyn Read {
        self.get_mut()
    }
}

impl<D: Read + Source> Read for Drained<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.0.read(buf)?;
        if n == 0 && !buf.is_empty() {
            io::copy(self.0.source(), &mut io::sink())?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{compress, tar_of, Compression as C, TempDir};
    use super::*;

    fn blob_of(dir: &TempDir, bytes: &[u8], media_type: &str) -> LayerBlob {
        let path = dir.0.join(format!("blob{}", bytes.len()));
        std::fs::write(&path, bytes).unwrap();
        LayerBlob::from_file(path, Digest::of(bytes), media_type, bytes.len() as u64)
    }

    fn names(r: Box<dyn Read + Send>) -> Vec<String> {
        let mut a = tar::Archive::new(r);
        let list = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        io::copy(&mut a.into_inner(), &mut io::sink()).unwrap();
        list
    }

    #[test]
    fn every_compression_reads_twice() {
        let dir = TempDir::new("layer");
        let tar = tar_of(&[("etc/hostname", b"box\n"), ("bin/sh", b"#!")]);
        for c in [C::None, C::Gzip, C::Zstd] {
            let blob = blob_of(
                &dir,
                &compress(&tar, c),
                "application/vnd.oci.image.layer.v1.tar",
            );
            for _ in 0..2 {
                assert_eq!(names(blob.open_tar().unwrap()), ["etc/hostname", "bin/sh"]);
            }
            let mut raw = Vec::new();
            blob.open().unwrap().read_to_end(&mut raw).unwrap();
            assert_eq!(raw, compress(&tar, c));
        }
    }

    #[test]
    fn corrupt_blob_fails_at_the_end() {
        let dir = TempDir::new("layer-bad");
        let tar = tar_of(&[("a", b"1")]);
        for c in [C::None, C::Gzip, C::Zstd] {
            let good = compress(&tar, c);
            let path = dir.0.join("blob");
            let mut bad = good.clone();
            bad.extend_from_slice(b"junk"); // trailing bytes the decoder never asks for
            std::fs::write(&path, &bad).unwrap();
            let blob = LayerBlob::from_file(&path, Digest::of(&good), "x", good.len() as u64);
            let mut out = Vec::new();
            let err = blob.open_tar().unwrap().read_to_end(&mut out).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{c:?}: {err}");
            if c != C::Gzip {
                // gzip reads the junk as a bad second member; the others report the digest
                assert!(err.to_string().contains(&blob.digest.to_string()), "{err}");
            }
        }
    }

    #[test]
    fn unknown_compression_is_refused() {
        let dir = TempDir::new("layer-bz");
        let blob = blob_of(
            &dir,
            b"BZh91AY&SY",
            "application/vnd.oci.image.layer.v1.tar",
        );
        let err = blob.open_tar().err().unwrap().to_string();
        assert!(
            err.contains("unsupported compression") && err.contains(&blob.describe()),
            "{err}"
        );
        // too short to tell: the media type decides
        let blob = blob_of(&dir, b"", "application/vnd.oci.image.layer.v1.tar");
        let mut out = Vec::new();
        blob.open_tar().unwrap().read_to_end(&mut out).unwrap();
    }

    #[test]
    fn missing_file_is_named() {
        let blob = LayerBlob::from_file("/nonexistent/blob", Digest::of(b""), "x", 0);
        let err = blob.open().err().unwrap().to_string();
        assert!(err.starts_with("/nonexistent/blob: "), "{err}");
    }
}
