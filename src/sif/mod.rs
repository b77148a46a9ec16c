//! SIF (Singularity Image Format) reader and writer.
//!
//! * [`format`]: byte layout of the header and descriptors, enumerations.
//! * [`read`]: [`SifFile`], a validated view of a SIF file's header and used descriptors.
//! * [`write`]: [`SifWriter`], writes a new SIF in the sif v2 or the legacy (Singularity ≤ 3.8)
//!   layout.
//!
//! No I/O policy lives here: callers open files and decide what to do with the objects.

pub mod append;
pub mod format;
pub mod read;
pub mod write;

#[cfg(test)]
mod tests;

pub use format::{
    Arch, CryptoMessageInfo, DataType, Descriptor, FsType, HashType, Header, Link, PartType,
    PartitionInfo, SignatureInfo,
};
pub use read::{open_image_file, SifFile, MAX_OBJECT_READ};
pub use write::{Layout, Object, ObjectSource, SifWriter, WriterOptions};

/// Result of SIF operations.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of the SIF reader and writer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("not a SIF file")]
    NotSif,
    #[error("unsupported SIF version {0:?}")]
    UnsupportedVersion(String),
    #[error("corrupt SIF: {0}")]
    Corrupt(String),
    #[error("SIF has no primary system partition")]
    NoPrimaryPartition,
    #[error("SIF has more than one primary system partition")]
    MultiplePrimaryPartitions,
    #[error("SIF object {id} is too large to read into memory ({size} bytes, limit {limit})")]
    TooLarge { id: u32, size: u64, limit: u64 },
    #[error("invalid SIF object: {0}")]
    InvalidObject(String),
}

/// Apptainer's format sniff: `SIF_MAGIC` occurs within the first 2048 bytes.
///
/// Pass (at least) the first 2048 bytes of a file; shorter input is searched as a whole.
pub fn is_sif(first_bytes: &[u8]) -> bool {
    let b = &first_bytes[..first_bytes.len().min(format::SNIFF_LEN)];
    let magic = &format::MAGIC[..9];
    b.windows(magic.len()).any(|w| w == magic)
}
