//! `rsing build` and `rsing pull`: any supported source becomes one SIF file.
//!
//! Sources: `docker://` (through the cache: blobs and the converted image are kept, keyed by
//! the manifest digest and the build options), `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
//! `docker-archive:FILE[:TAG]` (converted straight into the target), a directory (packed as
//! is), a SquashFS file (wrapped) or a SIF file (copied). The target appears atomically.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

use super::fetch::{self, ConvertArgs};
use super::progress::{Mode, Progress};
use super::Global;
use crate::cache::AtomicFile;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Overwrite an existing target
    #[arg(short = 'F', long)]
    force: bool,
    #[command(flatten)]
    convert: ConvertArgs,
    /// The SIF file to write
    target: PathBuf,
    /// docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:TAG], a
    /// directory, a SquashFS file or a SIF file
    source: String,
}

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// The SIF file to write (default: NAME_TAG.sif from the reference)
    #[arg(long, value_name = "FILE")]
    name: Option<PathBuf>,
    /// Overwrite an existing target
    #[arg(short = 'F', long)]
    force: bool,
    #[command(flatten)]
    convert: ConvertArgs,
    /// Target file, as `apptainer pull OUT.sif URI` (same as --name)
    #[arg(value_name = "OUT.sif", required = false)]
    output: Option<PathBuf>,
    /// docker://[REGISTRY/]REPO[:TAG|@DIGEST] (or any `rsing build` source)
    source: Option<String>,
}

pub fn build(global: &Global, args: &BuildArgs) -> anyhow::Result<i32> {
    let progress = Arc::new(Progress::new(Mode::detect(global.quiet)));
    write_image(
        &args.source,
        &args.target,
        args.force,
        &args.convert,
        &progress,
    )?;
    Ok(0)
}

pub fn pull(global: &Global, args: &PullArgs) -> anyhow::Result<i32> {
    // `pull URI` or `pull OUT.sif URI`: clap fills `output` first.
    let (output, source) = match (&args.output, &args.source) {
        (Some(only), None) => (None, only.to_string_lossy().into_owned()),
        (out, Some(src)) => (out.clone(), src.clone()),
        (None, None) => bail!("pull: which image? e.g. rsing pull docker://alpine:3.20"),
    };
    let target = match args.name.clone().or(output) {
        Some(t) => t,
        None => PathBuf::from(fetch::default_name(&source)?),
    };
    let progress = Arc::new(Progress::new(Mode::detect(global.quiet)));
    write_image(&source, &target, args.force, &args.convert, &progress)?;
    Ok(0)
}

/// Converts `source` into `target` (refusing to overwrite without `force`).
fn write_image(
    source: &str,
    target: &Path,
    force: bool,
    convert: &ConvertArgs,
    progress: &Arc<Progress>,
) -> anyhow::Result<()> {
    if target.exists() && !force {
        bail!(
            "{} already exists (use --force to overwrite)",
            target.display()
        );
    }
    if target.is_dir() {
        bail!("{} is a directory", target.display());
    }
    if let Some(reference) = source.strip_prefix("docker://") {
        let cached = fetch::cached_image(reference, convert, progress)?;
        publish_copy(&cached, target)?;
    } else if fetch::is_oci_source(source) {
        let image = fetch::resolve_local(source, convert)?;
        let mut out = AtomicFile::create(target, 0o755)
            .with_context(|| format!("cannot create {}", target.display()))?;
        fetch::convert_into(
            &image,
            out.file(),
            convert,
            progress,
            &fetch::deffile_for(source),
        )?;
        out.commit()
            .with_context(|| format!("cannot write {}", target.display()))?;
    } else {
        super::pack::pack(Path::new(source), target, convert, progress)?;
    }
    progress.clear();
    progress.say(&format!("wrote {}", target.display()));
    Ok(())
}

/// Puts a copy of cache entry `cached` at `target`, atomically: a reflink where the
/// filesystem shares extents (btrfs, XFS: instant), else a copy. Never a hard link: SIF files
/// are edited in place by signing and overlay tools, which must not change the cache.
pub fn publish_copy(cached: &Path, target: &Path) -> anyhow::Result<()> {
    let mut from = std::fs::File::open(cached)
        .with_context(|| format!("cannot read cached image {}", cached.display()))?;
    let mut out = AtomicFile::create(target, 0o755)
        .with_context(|| format!("cannot create {}", target.display()))?;
    if !crate::cache::reflink(&from, out.file()) {
        std::io::copy(&mut from, out.file())
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    out.commit()
        .with_context(|| format!("cannot write {}", target.display()))
}
