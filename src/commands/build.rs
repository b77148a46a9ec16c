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
    /// Write a directory (a sandbox image) instead of a SIF file
    #[arg(short, long)]
    pub(super) sandbox: bool,
    /// Overwrite an existing target
    #[arg(short = 'F', long)]
    pub(super) force: bool,
    #[command(flatten)]
    pub(super) convert: ConvertArgs,
    #[command(flatten)]
    pub(super) recipe: super::recipe::RecipeArgs,
    /// The SIF file (or, with --sandbox, the directory) to write
    pub(super) target: PathBuf,
    /// docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:TAG], a
    /// directory, a SquashFS file, a SIF file, or a definition file (recipe.def)
    pub(super) source: String,
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
    /// docker://[REGISTRY/]REPO[:TAG|@DIGEST], oras://[REGISTRY/]REPO[:TAG] (a SIF artifact),
    /// or any `rsing build` source
    source: Option<String>,
}

pub fn build(global: &Global, args: &BuildArgs) -> anyhow::Result<i32> {
    let progress = Arc::new(Progress::new(Mode::detect(global.quiet)));
    if super::recipe::is_dockerfile(&args.source) {
        super::recipe::build_dockerfile(args, &progress)?;
        return Ok(0);
    }
    if super::recipe::is_recipe(&args.source) {
        super::recipe::build(args, &progress)?;
        return Ok(0);
    }
    let write = if args.sandbox {
        write_sandbox
    } else {
        write_image
    };
    write(
        &args.source,
        &args.target,
        args.force,
        &args.convert,
        &progress,
    )?;
    Ok(0)
}

/// `build --sandbox`: the image is converted to a SIF first (the cached one for `docker://`,
/// an anonymous temporary file otherwise), then unpacked into a hidden directory beside the
/// target that is renamed into place when complete.
fn write_sandbox(
    source: &str,
    target: &Path,
    force: bool,
    convert: &ConvertArgs,
    progress: &Arc<Progress>,
) -> anyhow::Result<()> {
    refuse_existing(target, force)?;
    if Path::new(source).is_dir() {
        bail!("build source {source} is a directory already: it is a sandbox as it is");
    }
    let staged = crate::cache::hidden_name(target);
    progress.say(&format!("unpacking into {}", target.display()));
    unpack_source(source, &staged, convert, progress)?;
    // An old target (with --force) goes only once the new tree is complete.
    let old = crate::cache::hidden_name(target);
    let replacing = std::fs::rename(target, &old).is_ok();
    if let Err(e) = std::fs::rename(&staged, target) {
        if replacing {
            let _ = std::fs::rename(&old, target);
        }
        let _ = std::fs::remove_dir_all(&staged);
        return Err(e).with_context(|| format!("cannot create {}", target.display()));
    }
    if replacing {
        std::fs::remove_dir_all(&old)
            .or_else(|_| std::fs::remove_file(&old))
            .with_context(|| format!("cannot remove the old {}", target.display()))?;
    }
    progress.clear();
    progress.say(&format!("wrote {}", target.display()));
    Ok(())
}

/// Unpacks image `source` (any `build` source but a directory) into new directory `dest`:
/// the image is converted to a SIF first (the cached one for `docker://`, an anonymous
/// temporary file beside `dest` otherwise). A partial `dest` is removed on failure.
pub(super) fn unpack_source(
    source: &str,
    dest: &Path,
    convert: &ConvertArgs,
    progress: &Arc<Progress>,
) -> anyhow::Result<Unpacked> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut scratch = AtomicFile::create(&parent.join(".rsing-sandbox.sif"), 0o600)
        .with_context(|| format!("cannot create a temporary file in {}", parent.display()))?;
    let mut _in_use = None;
    let sif = match source.strip_prefix("docker://") {
        Some(reference) => {
            // The cache entry stays in use (not cleaned) while it is read.
            let (cached, in_use) = fetch::cached_image(reference, convert, progress)?;
            _in_use = Some(in_use);
            std::fs::File::open(cached)?
        }
        None => {
            write_into(source, scratch.file(), convert, progress)?;
            scratch.file().try_clone()?
        }
    };
    let image = crate::sif::SifFile::read(&sif).context("reading the converted image")?;
    let config = crate::contract::sif_objects::OCI_CONFIG
        .find(&image)
        .and_then(|d| image.read_object(&sif, d).ok());
    let offset = image
        .primary_partition()
        .context("reading the converted image")?
        .offset;
    let archive =
        crate::squashfs::Archive::open(sif, offset).context("reading the converted image")?;
    let owners = match crate::convert::extract_owned(&archive, dest) {
        Ok(owners) => owners,
        Err(e) => {
            // Directories are owner-writable after extraction, so the partial tree is removable.
            let _ = std::fs::remove_dir_all(dest);
            return Err(e).with_context(|| format!("unpacking into {}", dest.display()));
        }
    };
    drop(scratch);
    Ok(Unpacked { config, owners })
}

/// What [`unpack_source`] learnt: the image's `oci-config.json` and the owners that the
/// unprivileged unpack could not keep (`(path, uid, gid)`, entries not owned by root).
pub(super) struct Unpacked {
    pub config: Option<Vec<u8>>,
    pub owners: Vec<(String, u32, u32)>,
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
    refuse_existing(target, force)?;
    if target.is_dir() {
        bail!("{} is a directory", target.display());
    }
    if let Some(reference) = source.strip_prefix("docker://") {
        let (cached, _in_use) = fetch::cached_image(reference, convert, progress)?;
        publish_copy(&cached, target)?;
    } else if source.starts_with("oras://") {
        let cached = super::oras::cached_sif(source, convert.insecure, progress)?;
        publish_copy(&cached, target)?;
    } else if source.starts_with("http://") || source.starts_with("https://") {
        let cached = super::oras::cached_http(source)?;
        publish_copy(&cached, target)?;
    } else {
        let mut out = AtomicFile::create(target, 0o755)
            .with_context(|| format!("cannot create {}", target.display()))?;
        write_into(source, out.file(), convert, progress)?;
        out.commit()
            .with_context(|| format!("cannot write {}", target.display()))?;
    }
    progress.clear();
    progress.say(&format!("wrote {}", target.display()));
    Ok(())
}

/// An existing target is only replaced with `--force`.
pub(super) fn refuse_existing(target: &Path, force: bool) -> anyhow::Result<()> {
    if target.symlink_metadata().is_ok() && !force {
        bail!(
            "{} already exists (use --force to replace it)",
            target.display()
        );
    }
    Ok(())
}

/// Converts a local source (OCI layout or archive, directory, SquashFS, SIF) into `out`.
fn write_into(
    source: &str,
    out: &mut std::fs::File,
    convert: &ConvertArgs,
    progress: &Arc<Progress>,
) -> anyhow::Result<()> {
    if fetch::is_oci_source(source) {
        let image = fetch::resolve_local(source, convert)?;
        fetch::convert_into(&image, out, convert, progress, &fetch::deffile_for(source))?;
        Ok(())
    } else {
        super::pack::pack(Path::new(source), out, convert, progress)
    }
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
