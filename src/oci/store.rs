//! Where blobs are: a file, or a byte range of an archive member. The layout and archive
//! sources share the resolution logic through [`Store`], which only has to find members.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_spec::image::Descriptor;

use super::{Digest, Error, VerifyingReader};

/// Read buffer for blobs: tar readers ask for 512-byte blocks, which would otherwise be one
/// syscall each.
const BUFFER: usize = 256 << 10;

/// The bytes of one blob or metadata file.
#[derive(Clone, Debug)]
pub(crate) enum Location {
    File(PathBuf),
    /// `len` bytes at `offset` of `archive`, the data of tar member `member`.
    Range {
        archive: Arc<PathBuf>,
        member: String,
        offset: u64,
        len: u64,
    },
}

impl Location {
    /// Opens the bytes, unverified (errors do not name the file: see [`with_path`]).
    pub(crate) fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match self {
            Location::File(path) => Ok(Box::new(BufReader::with_capacity(
                BUFFER,
                File::open(path)?,
            ))),
            Location::Range {
                archive,
                offset,
                len,
                ..
            } => {
                let mut f = File::open(archive.as_path())?;
                f.seek(SeekFrom::Start(*offset))?;
                Ok(Box::new(BufReader::with_capacity(BUFFER, f).take(*len)))
            }
        }
    }

    /// The stored length.
    pub(crate) fn len(&self) -> io::Result<u64> {
        match self {
            Location::File(path) => Ok(std::fs::metadata(path)?.len()),
            Location::Range { len, .. } => Ok(*len),
        }
    }

    /// The file, or `archive:member`, for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Location::File(path) => path.display().to_string(),
            Location::Range {
                archive, member, ..
            } => format!("{}:{member}", archive.display()),
        }
    }

    /// Reads it all, at most `limit` bytes, verifying the content against `digest` if given.
    pub(crate) fn read_all(
        &self,
        digest: Option<(&Digest, u64)>,
        limit: u64,
    ) -> Result<Vec<u8>, Error> {
        let fail = |e| Error::io(self.describe(), e);
        let len = self.len().map_err(fail)?;
        if len > limit {
            return Err(Error::Invalid(format!(
                "{}: {len} bytes, more than the {limit} bytes allowed for a JSON document",
                self.describe()
            )));
        }
        let mut out = Vec::with_capacity(len as usize);
        let raw = self.open().map_err(fail)?;
        match digest {
            Some((d, size)) => {
                VerifyingReader::new(raw, d.clone(), Some(size)).read_to_end(&mut out)
            }
            None => raw.take(limit).read_to_end(&mut out),
        }
        .map_err(fail)?;
        Ok(out)
    }
}

/// An `io::Error` whose message says which file it was about, for readers handed to callers
/// that only see `io::Error`.
pub(crate) fn with_path(e: io::Error, at: &Location) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", at.describe()))
}

/// A layout-shaped container of members (`oci-layout`, `index.json`, `blobs/sha256/…`).
pub(crate) trait Store {
    /// The directory or archive, for messages.
    fn name(&self) -> String;
    /// The member at a relative path, if present.
    fn locate(&self, member: &str) -> Option<Location>;

    /// A member that must exist, as an error naming the store otherwise.
    fn require(&self, member: &str) -> Result<Location, Error> {
        self.locate(member)
            .ok_or_else(|| Error::Invalid(format!("{}: {member} is missing", self.name())))
    }

    /// The blob a descriptor points to, present or an error naming it.
    fn blob(&self, digest: &Digest) -> Result<Location, Error> {
        self.locate(&format!("blobs/sha256/{}", digest.hex()))
            .ok_or_else(|| Error::Invalid(format!("{}: blob {digest} is missing", self.name())))
    }

    /// A small JSON blob (manifest, index, config), verified.
    fn read_blob(&self, d: &Descriptor) -> Result<(Digest, Vec<u8>), Error> {
        let digest = descriptor_digest(d, &self.name())?;
        let bytes = self
            .blob(&digest)?
            .read_all(Some((&digest, d.size())), super::MAX_JSON_SIZE)?;
        Ok((digest, bytes))
    }
}

/// The descriptor's digest as a sha256 [`Digest`], or an error naming `name`.
pub(crate) fn descriptor_digest(d: &Descriptor, name: &str) -> Result<Digest, Error> {
    Digest::try_from(d.digest()).map_err(|e| Error::Unsupported(format!("{name}: {e}")))
}

/// An OCI image layout directory.
pub(crate) struct DirStore(pub(crate) PathBuf);

impl Store for DirStore {
    fn name(&self) -> String {
        self.0.display().to_string()
    }
    fn locate(&self, member: &str) -> Option<Location> {
        let path = self.0.join(member);
        path.is_file().then_some(Location::File(path))
    }
}

/// Splits `PATH[:TAG]` at the last ':' when what follows names no path (has no '/'), so
/// `oci:/data/img:v1` is `/data/img` tag `v1` and `oci:/a:b/c` is the directory `/a:b/c`.
pub(crate) fn split_tag(spec: &str) -> (&str, Option<&str>) {
    match spec.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') && !path.is_empty() => {
            (path, (!tag.is_empty()).then_some(tag))
        }
        _ => (spec, None),
    }
}

/// Whether `path` exists, for choosing between readings of an ambiguous `FILE:REF`.
pub(crate) fn exists(path: &str) -> bool {
    Path::new(path).exists()
}
