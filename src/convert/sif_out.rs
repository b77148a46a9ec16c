//! The SIF container around a SquashFS that is written in place: the small objects (the
//! definition file, `inspect-metadata.json`, `oci-config.json`) come first, as in the SIF files
//! `apptainer build` writes; the partition is last and aligned to 4096, so its offset is known
//! before the SquashFS exists, and the header is written once its size is known.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom};

use serde_json::json;

use super::singularity_d;
use super::{ConvertOptions, Result};
use crate::contract::{paths, sif_objects, ImageFacts};
use crate::sif::{self, Arch, FsType, Object, ObjectSource, PartType, SifWriter};
use crate::squashfs::write::{SquashfsWriter, Summary, WriterOptions};

/// The metadata objects of the SIF file.
pub struct SmallObjects {
    pub deffile: Vec<u8>,
    pub oci_config: Vec<u8>,
    pub inspect: Vec<u8>,
}

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct ImageSummary {
    pub squashfs: Summary,
    /// Where the SquashFS partition starts in the SIF file.
    pub partition_offset: u64,
    pub sif_size: u64,
}

/// The JSON Apptainer stores as `inspect-metadata.json` (what `apptainer inspect --all
/// --json` prints): labels, environment, runscript and definition file.
pub fn inspect_metadata(facts: &ImageFacts, deffile: &[u8]) -> Vec<u8> {
    let value = json!({
        "data": {
            "attributes": {
                "labels": facts.labels,
                "environment": {
                    (paths::ENV_DOCKER): singularity_d::env_script(&facts.env),
                },
                "runscript": singularity_d::runscript(&facts.entrypoint, &facts.cmd),
                "deffile": String::from_utf8_lossy(deffile),
            }
        },
        "type": "container"
    });
    serde_json::to_vec(&value).unwrap_or_default()
}

/// Writes the SIF to `out`: `fill` adds the root filesystem's entries to the SquashFS writer.
pub fn write(
    out: &mut File,
    objects: &SmallObjects,
    go_arch: &str,
    options: &ConvertOptions,
    fill: impl FnOnce(&mut SquashfsWriter<BufWriter<&mut File>>) -> Result<()>,
) -> Result<ImageSummary> {
    let arch = arch_of(go_arch);
    let sif_options = sif_options(options);
    let plan = |len: u64| sif_layout(&sif_options, objects, arch, len);
    let (_, descriptors) = plan(0).plan()?;
    let partition_offset = descriptors.last().map(|d| d.offset).unwrap_or_default();

    out.seek(SeekFrom::Start(partition_offset))?;
    let mut squashfs_options = WriterOptions {
        compressor: options.compressor,
        level: options.level,
        block_size: options.block_size,
        threads: options.threads,
        ..WriterOptions::default()
    };
    if let Some(epoch) = options.source_date_epoch {
        squashfs_options.mkfs_time = epoch;
    }
    let mut writer = SquashfsWriter::new(
        BufWriter::with_capacity(1 << 20, &mut *out),
        squashfs_options,
    )?;
    fill(&mut writer)?;
    let (buffered, summary) = writer.finish()?;
    buffered.into_inner().map_err(|e| e.into_error())?;

    plan(summary.image_size).write_to(out)?;
    Ok(ImageSummary {
        partition_offset,
        sif_size: partition_offset + summary.image_size,
        squashfs: summary,
    })
}

/// SIF writer settings for a build: deterministic with `SOURCE_DATE_EPOCH`.
/// The SIF's objects in their order: the small metadata objects that are not empty, then the
/// root filesystem partition of `len` bytes, written in place after them.
pub fn sif_layout(
    sif_options: &sif::WriterOptions,
    objects: &SmallObjects,
    arch: Arch,
    len: u64,
) -> SifWriter {
    let mut sif = SifWriter::new(sif_options.clone());
    let small = [
        (sif_objects::DEFFILE, &objects.deffile),
        (sif_objects::INSPECT_METADATA, &objects.inspect),
        (sif_objects::OCI_CONFIG, &objects.oci_config),
    ];
    for (object, data) in small {
        if !data.is_empty() {
            sif.add_object(Object::bytes(object.data_type, object.name, data.clone()));
        }
    }
    sif.add_object(Object::partition(
        FsType::Squashfs,
        PartType::PrimSys,
        arch,
        ObjectSource::InPlace { len },
    ));
    sif
}

pub fn sif_options(options: &ConvertOptions) -> sif::WriterOptions {
    sif::WriterOptions {
        deterministic: options.source_date_epoch.is_some(),
        created_at: options.source_date_epoch.map(i64::from),
        launch_script: sif_objects::LAUNCH_SCRIPT.to_vec(),
        layout: sif::Layout::V2,
    }
}

/// The SIF architecture code of a Go architecture name, else this host's.
pub fn arch_of(go_arch: &str) -> Arch {
    Arch::from_go_name(go_arch)
        .or_else(|| Arch::from_go_name(&crate::oci::Platform::host().architecture))
        .unwrap_or(Arch::UNKNOWN)
}
