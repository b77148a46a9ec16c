//! `rsing build OUT.sif LOCAL`: a directory is packed, a SquashFS file wrapped and a SIF file
//! copied into a new SIF file.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::fetch::{deffile_for, ConvertArgs};
use super::progress::Progress;
use crate::convert;

/// Writes the SIF made from `source` to `out`.
pub fn pack(
    source: &Path,
    out: &mut std::fs::File,
    args: &ConvertArgs,
    progress: &Arc<Progress>,
) -> anyhow::Result<()> {
    let meta = std::fs::metadata(source).with_context(|| {
        format!(
            "build source {}: not a file or directory, and not docker://, oci:, oci-archive: or docker-archive:",
            source.display()
        )
    })?;
    let options = args.options(deffile_for(&source.to_string_lossy()))?;
    if meta.is_dir() {
        progress.say(&format!("packing directory {}", source.display()));
        convert::dir_to_sif(source, out, &options)
            .with_context(|| format!("packing {}", source.display()))?;
    } else {
        let mut magic = [0u8; 64];
        let n = crate::sif::open_image_file(source)
            .and_then(|mut f| f.read(&mut magic))
            .with_context(|| format!("cannot read {}", source.display()))?;
        let magic = &magic[..n];
        if magic.starts_with(b"hsqs") {
            convert::wrap_squashfs(source, out, &options)
                .with_context(|| format!("wrapping {}", source.display()))?;
        } else if crate::sif::is_sif(magic) {
            let mut from = crate::sif::open_image_file(source)
                .with_context(|| format!("cannot read {}", source.display()))?;
            std::io::copy(&mut from, out).context("writing the image")?;
        } else {
            bail!(
                "build source {}: not a SIF or SquashFS file",
                source.display()
            );
        }
    }
    Ok(())
}
