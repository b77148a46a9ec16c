//! What an image path is, and the metadata rsing needs from it before running it.
//!
//! An image is a SIF file (its primary system partition holds the SquashFS root), a plain
//! SquashFS file, or a directory (a sandbox). Detection reads the first bytes, never the name.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::contract::{sif_objects, OciConfig, SifObject};
use crate::sif::{self, Arch, FsType, SifFile};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("image {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("image {path} is not a SIF file, a SquashFS file or a directory")]
    UnknownFormat { path: PathBuf },
    #[error("image {path}: {source}")]
    Sif {
        path: PathBuf,
        #[source]
        source: sif::Error,
    },
    #[error("image {path}: its architecture ({image}) cannot run on this host ({host})")]
    WrongArch {
        path: PathBuf,
        image: String,
        host: String,
    },
    #[error("image {path}: primary partition (descriptor {id}) {why}")]
    BadPartition { path: PathBuf, id: u32, why: String },
    #[error("image {path}: the root partition is {fs}, only SquashFS is supported")]
    UnsupportedFs { path: PathBuf, fs: String },
}

/// Where the root filesystem of an image is.
#[derive(Debug)]
pub enum Root {
    /// A SquashFS archive at `offset` in `file` (0 for a plain SquashFS file).
    Squashfs {
        file: File,
        offset: u64,
    },
    Directory(PathBuf),
}

/// An image ready to be run.
#[derive(Debug)]
pub struct OpenedImage {
    /// Absolute path of the image.
    pub path: PathBuf,
    /// Its file name, as `RSING_NAME` and the shell prompt show it.
    pub name: String,
    pub root: Root,
    /// The run-time part of the SIF's `oci-config.json`.
    pub oci_config: Option<OciConfig>,
    /// What `open` parsed of a SIF (its validated header and descriptors, its OCI config), so
    /// that other readers (`inspect`) do not parse the file again; `None` for other images.
    pub sif: Option<SifMeta>,
}

/// What [`open`] read of a SIF file besides its root partition.
#[derive(Debug)]
pub struct SifMeta {
    pub file: SifFile,
    /// The whole `oci-config.json` object, when it is JSON.
    pub oci_config: Option<serde_json::Value>,
}

impl OpenedImage {
    /// Where a SIF's ext3 overlay partition starts (`apptainer overlay create img.sif`, in the
    /// root's group); `None` for other images and a SIF without one.
    pub fn overlay_partition(&self) -> Option<u64> {
        let meta = self.sif.as_ref()?;
        crate::sif::append::overlay_partition(&meta.file).map(|d| d.offset)
    }

    /// The data of `object` in a SIF image; `None` for other images and for an object that is
    /// missing or cannot be read.
    pub fn sif_object(&self, object: SifObject) -> Option<Vec<u8>> {
        let (Some(meta), Root::Squashfs { file, .. }) = (&self.sif, &self.root) else {
            return None;
        };
        let descriptor = object.find(&meta.file)?;
        meta.file.read_object(file, descriptor).ok()
    }
}

const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";

/// Opens `path` and finds its root filesystem.
pub fn open(path: &Path) -> Result<OpenedImage, Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let abs = std::path::absolute(path).map_err(io)?;
    let name = abs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| abs.to_string_lossy().into_owned());
    let meta = std::fs::metadata(&abs).map_err(io)?;
    if meta.is_dir() {
        return Ok(OpenedImage {
            path: abs.clone(),
            name,
            root: Root::Directory(abs),
            oci_config: None,
            sif: None,
        });
    }
    let mut file = sif::open_image_file(&abs).map_err(io)?;
    let mut head = Vec::with_capacity(2048);
    (&mut file).take(2048).read_to_end(&mut head).map_err(io)?;
    if head.starts_with(SQUASHFS_MAGIC) {
        return Ok(OpenedImage {
            path: abs,
            name,
            root: Root::Squashfs { file, offset: 0 },
            oci_config: None,
            sif: None,
        });
    }
    if !sif::is_sif(&head) {
        return Err(Error::UnknownFormat { path: abs });
    }
    let sif_err = |source| Error::Sif {
        path: abs.clone(),
        source,
    };
    let sif = SifFile::read(&file).map_err(sif_err)?;
    let part = sif.primary_partition().map_err(sif_err)?;
    if let Some(info) = &part.partition {
        if info.fs_type != FsType::Squashfs {
            return Err(Error::UnsupportedFs {
                path: abs,
                fs: info.fs_type.to_string(),
            });
        }
        if !info.arch.is_unknown() && info.arch != Arch::host() {
            return Err(Error::WrongArch {
                path: abs,
                image: info.arch.go_name().to_string(),
                host: Arch::host().go_name().to_string(),
            });
        }
    }
    check_primary(&file, part).map_err(|why| Error::BadPartition {
        path: abs.clone(),
        id: part.id,
        why,
    })?;
    let offset = part.offset;
    let oci_json = sif_objects::OCI_CONFIG
        .find(&sif)
        .and_then(|d| sif.read_object(&file, d).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let oci_config = oci_json
        .as_ref()
        .and_then(|json| OciConfig::deserialize(json).ok());
    Ok(OpenedImage {
        path: abs,
        name,
        root: Root::Squashfs { file, offset },
        oci_config,
        sif: Some(SifMeta {
            file: sif,
            oci_config: oci_json,
        }),
    })
}

/// Where `bytes_used` (the archive's own size) sits in a SquashFS superblock.
const BYTES_USED_AT: usize = 40;

/// Checks that the primary partition's data holds the SquashFS it claims to: not empty,
/// starting with the SquashFS magic, and at least as long as the archive says it is. The
/// SquashFS reader trusts the archive's own size, so without this a descriptor of size 0 (or
/// one cut short) would run whatever follows it in the file.
fn check_primary(file: &File, part: &sif::Descriptor) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    if part.size == 0 {
        return Err("is empty (size 0)".into());
    }
    let mut sb = [0u8; BYTES_USED_AT + 8];
    if part.size < sb.len() as u64 {
        return Err(format!(
            "is {} bytes, too small for a SquashFS superblock",
            part.size
        ));
    }
    file.read_exact_at(&mut sb, part.offset)
        .map_err(|e| format!("cannot be read: {e}"))?;
    if !sb.starts_with(SQUASHFS_MAGIC) {
        return Err("does not hold a SquashFS (no SquashFS magic at its start)".into());
    }
    let mut used = [0u8; 8];
    used.copy_from_slice(&sb[BYTES_USED_AT..]);
    let bytes_used = u64::from_le_bytes(used);
    if bytes_used > part.size {
        return Err(format!(
            "is {} bytes but holds a SquashFS of {bytes_used} bytes (truncated or corrupt SIF)",
            part.size
        ));
    }
    Ok(())
}
