//! Turning an OCI image into a SIF file, streamed: the layer tarballs are decoded and merged
//! newest first ([`flatten`]) straight into a SquashFS written in place inside the SIF file,
//! the `/.singularity.d` metadata is added ([`singularity_d`]), and the SIF header and small
//! objects are written last ([`sif_out`]). Nothing is unpacked to disk and the SquashFS is
//! never copied.

mod dir;
mod extract;
pub mod flatten;
pub mod ocisif;
pub mod seal;
mod sif_out;
pub mod singularity_d;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::sync::Arc;

use crate::oci::{LayerBlob, ResolvedImage};
use crate::squashfs::write::{Metadata, SquashfsWriter};
use crate::squashfs::Compressor;

use crate::contract::{paths, ImageFacts};
pub use sif_out::ImageSummary;
use singularity_d::Generated;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Flatten(#[from] flatten::Error),
    #[error("writing the SquashFS root: {0}")]
    Squashfs(#[from] crate::squashfs::write::Error),
    #[error("writing the SIF file: {0}")]
    Sif(#[from] crate::sif::Error),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("image config: {0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// How to build.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub compressor: Compressor,
    pub level: Option<i32>,
    /// SquashFS data block size: a power of two from 4 KiB to 1 MiB.
    pub block_size: u32,
    /// Compression threads (0: all cores).
    pub threads: usize,
    /// The definition file stored in the SIF (for registry sources a synthesised
    /// `Bootstrap: docker` header, as Apptainer writes).
    pub deffile: Vec<u8>,
    /// `SOURCE_DATE_EPOCH`: fixes every timestamp and the SIF UUID, so the same input gives a
    /// byte-identical image.
    pub source_date_epoch: Option<u32>,
}

/// What the caller is told while layers are converted.
pub trait Observer: Send + Sync {
    /// `done` compressed bytes of layer `index` (bottom first) have been read.
    fn layer_progress(&self, index: usize, done: u64);
}

/// Converts `image` into a SIF written to `out` (from offset 0). An OCI-SIF image (a
/// SquashFS layer) is copied, not merged: see [`ocisif`].
pub fn oci_to_sif(
    image: &ResolvedImage,
    out: &mut File,
    options: &ConvertOptions,
    observer: Arc<dyn Observer>,
) -> Result<ImageSummary> {
    if ocisif::is_squashfs_image(image) {
        return ocisif::squashfs_image_to_sif(image, out, options, observer);
    }
    let config = config_object(&image.config_raw)?;
    let facts = image_facts(&config);
    let arch = image.config.architecture().to_string();
    let layers: Vec<LayerInput> = image
        .layers
        .iter()
        .enumerate()
        .map(|(index, blob)| LayerInput {
            blob,
            index,
            observer: Arc::clone(&observer),
        })
        .collect();
    let sif_objects = sif_out::SmallObjects {
        deffile: options.deffile.clone(),
        oci_config: serde_json::to_vec_pretty(&config).unwrap_or_default(),
        inspect: sif_out::inspect_metadata(&facts, &options.deffile),
    };
    sif_out::write(out, &sif_objects, &arch, options, |writer| {
        let refs: Vec<&dyn flatten::Layer> =
            layers.iter().map(|l| l as &dyn flatten::Layer).collect();
        flatten::flatten(&refs, writer)?;
        add_metadata(writer, &facts, &options.deffile, options.source_date_epoch)
    })
}

/// Packs directory `root` (a sandbox) into a SIF written to `out`.
pub fn dir_to_sif(
    root: &std::path::Path,
    out: &mut File,
    options: &ConvertOptions,
) -> Result<ImageSummary> {
    dir_to_sif_owned(root, out, options, Vec::new(), &|_, st| {
        use std::os::unix::fs::MetadataExt;
        (st.uid(), st.gid())
    })
}

/// [`dir_to_sif`] with the owners of entries chosen by `owner` (a built tree: `rsing build`
/// from a recipe).
pub fn dir_to_sif_owned(
    root: &std::path::Path,
    out: &mut File,
    options: &ConvertOptions,
    oci_config: Vec<u8>,
    owner: dir::OwnerOf,
) -> Result<ImageSummary> {
    let objects = sif_out::SmallObjects {
        deffile: options.deffile.clone(),
        oci_config,
        inspect: Vec::new(),
    };
    sif_out::write(out, &objects, "", options, |writer| {
        dir::add_tree_owned(root, writer, owner)
    })
}

pub use dir::wrap_squashfs;
pub use extract::{extract, extract_owned};

/// The `config` object of an image config (what Apptainer stores as `oci-config.json`).
fn config_object(raw: &[u8]) -> Result<serde_json::Value> {
    let whole: serde_json::Value =
        serde_json::from_slice(raw).map_err(|e| Error::Config(e.to_string()))?;
    Ok(whole
        .get("config")
        .cloned()
        .unwrap_or(serde_json::Value::Object(Default::default())))
}

fn image_facts(config: &serde_json::Value) -> ImageFacts {
    let strings = |key: &str| -> Vec<String> {
        config
            .get(key)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let labels: BTreeMap<String, String> = config
        .get("Labels")
        .and_then(|v| v.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    ImageFacts {
        env: strings("Env"),
        entrypoint: strings("Entrypoint"),
        cmd: strings("Cmd"),
        labels,
    }
}

/// Adds `/.singularity.d` and the directories and files the runtime binds over, after the
/// layers (so ours replace any the layers had; what the layers have of the ensured paths is
/// kept).
fn add_metadata<W: io::Write + io::Seek>(
    writer: &mut SquashfsWriter<W>,
    facts: &ImageFacts,
    deffile: &[u8],
    epoch: Option<u32>,
) -> Result<()> {
    let mtime = epoch.unwrap_or_else(now);
    let meta = |mode: u16| Metadata {
        mode,
        uid: 0,
        gid: 0,
        mtime,
        xattrs: Vec::new(),
    };
    for dir in paths::ENSURED_DIRS {
        if !writer.contains(dir.as_bytes()) {
            let mode = if *dir == "/tmp" || *dir == "/var/tmp" {
                0o1777
            } else {
                0o755
            };
            writer.add_dir(dir.as_bytes(), meta(mode))?;
        }
    }
    for file in paths::ENSURED_FILES {
        if !writer.contains(file.as_bytes()) {
            writer.add_file(file.as_bytes(), meta(0o644), &mut io::empty())?;
        }
    }
    for item in singularity_d::metadata_tree(facts, deffile) {
        match item {
            Generated::Dir { path } => writer.add_dir(path.as_bytes(), meta(0o755))?,
            Generated::File {
                path,
                mode,
                content,
            } => writer.add_file(path.as_bytes(), meta(mode), &mut content.as_slice())?,
            Generated::Symlink { path, target } => {
                writer.add_symlink(path.as_bytes(), meta(0o777), target.as_bytes())?
            }
        }
    }
    Ok(())
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32)
        .unwrap_or(0)
}

/// A layer blob as the flattener reads it, reporting compressed bytes read as progress.
struct LayerInput<'a> {
    blob: &'a LayerBlob,
    index: usize,
    observer: Arc<dyn Observer>,
}

impl flatten::Layer for LayerInput<'_> {
    fn name(&self) -> String {
        format!("layer {} ({})", self.index + 1, self.blob.describe())
    }

    fn open_tar(&self) -> io::Result<Box<dyn Read + Send>> {
        let counting = Counting {
            inner: self.blob.open()?,
            done: 0,
            index: self.index,
            observer: Arc::clone(&self.observer),
        };
        crate::oci::decompress(Box::new(counting), &self.blob.media_type)
    }
}

struct Counting {
    inner: Box<dyn Read + Send>,
    done: u64,
    index: usize,
    observer: Arc<dyn Observer>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        self.observer.layer_progress(self.index, self.done);
        Ok(n)
    }
}
