//! Getting an OCI image and converting it: the part of `build`, `pull` and `exec docker://`
//! they share. Registry images go through the cache (blobs by digest, converted images by
//! manifest digest and options), under a per-image lock, so that a 100-task job array that
//! starts the same `docker://` image at once downloads and converts it once.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::progress::{ConvertProgress, Progress};
use crate::cache::{AtomicFile, Cache, UseLock};
use crate::convert::{self, ConvertOptions};
use crate::oci::{Digest, Platform, ResolvedImage};
use crate::registry::{self, Reference, Registry};
use crate::squashfs::Compressor;

/// Options of every command that converts an image.
#[derive(Debug, Clone, clap::Args)]
pub struct ConvertArgs {
    /// Platform to pull from a multi-arch image (amd64, arm64, arm/v7, ppc64le, …; default:
    /// this host's)
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// SquashFS compression: zstd (default), gzip (for the oldest Apptainer installs), xz,
    /// lz4; optionally with a level, e.g. zstd:19
    #[arg(long, value_name = "ALG[:LEVEL]", default_value = "zstd")]
    pub compress: String,
    /// SquashFS block size, a power of two from 4K to 1M (as `mksquashfs -b`): larger blocks
    /// compress better, smaller ones waste less on random reads
    #[arg(long, value_name = "SIZE", default_value = "128K", value_parser = parse_block_size)]
    pub block_size: u32,
    /// Use plain HTTP for this registry (also RSING_INSECURE_REGISTRIES=host:port,…)
    #[arg(long)]
    pub insecure: bool,
}

impl ConvertArgs {
    fn platform(&self) -> anyhow::Result<Platform> {
        match &self.arch {
            Some(a) => Platform::parse(a).with_context(|| format!("--arch {a}")),
            None => Ok(Platform::host()),
        }
    }

    pub(super) fn options(&self, deffile: Vec<u8>) -> anyhow::Result<ConvertOptions> {
        let (name, level) = match self.compress.split_once(':') {
            Some((n, l)) => (
                n,
                Some(
                    l.parse::<i32>()
                        .with_context(|| format!("--compress {}: bad level", self.compress))?,
                ),
            ),
            None => (self.compress.as_str(), None),
        };
        let compressor = match name {
            "zstd" => Compressor::Zstd,
            "gzip" => Compressor::Gzip,
            "xz" => Compressor::Xz,
            "lz4" => Compressor::Lz4,
            other => bail!("--compress {other}: expected zstd, gzip, xz or lz4"),
        };
        // zstd level 3 decodes as fast as any and is what `mksquashfs -comp zstd` users
        // compare with; the writer's own default (15) is for archival.
        let level = level.or((compressor == Compressor::Zstd).then_some(3));
        Ok(ConvertOptions {
            compressor,
            level,
            block_size: self.block_size,
            threads: 0,
            deffile,
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
        })
    }
}

/// `--block-size`: bytes, or a number with K or M, a power of two from 4 KiB to 1 MiB.
fn parse_block_size(text: &str) -> Result<u32, String> {
    let upper = text.trim().to_ascii_uppercase();
    let (digits, unit) = match upper.strip_suffix('K') {
        Some(d) => (d, 1024),
        None => match upper.strip_suffix('M') {
            Some(d) => (d, 1024 * 1024),
            None => (upper.as_str(), 1),
        },
    };
    let size = digits
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| format!("'{text}' is not a size (e.g. 4K, 128K, 1M)"))?;
    if !size.is_power_of_two() || !(4096..=1 << 20).contains(&size) {
        return Err(format!("'{text}' is not a power of two from 4K to 1M"));
    }
    Ok(size)
}

/// `oci:`, `oci-archive:` or `docker-archive:`.
pub fn is_oci_source(source: &str) -> bool {
    ["oci:", "oci-archive:", "docker-archive:"]
        .iter()
        .any(|p| source.starts_with(p))
}

/// The definition file stored with an image built from `source`, as Apptainer synthesises it.
pub fn deffile_for(source: &str) -> Vec<u8> {
    match source.split_once(':') {
        Some((scheme, rest)) => {
            let from = rest.trim_start_matches("//");
            let bootstrap = match scheme {
                "docker" => "docker",
                "oci" => "oci",
                "oci-archive" => "oci-archive",
                "docker-archive" => "docker-archive",
                _ => "localimage",
            };
            format!("bootstrap: {bootstrap}\nfrom: {from}\n").into_bytes()
        }
        None => format!("bootstrap: localimage\nfrom: {source}\n").into_bytes(),
    }
}

/// The default file name of `rsing pull SOURCE`.
pub fn default_name(source: &str) -> anyhow::Result<String> {
    match source.strip_prefix("docker://") {
        Some(r) => Ok(Reference::parse(r)?.default_sif_name()),
        None => {
            bail!("pull {source}: give the target file name with --name for non-docker:// sources")
        }
    }
}

/// A local OCI source, resolved for the requested platform.
pub fn resolve_local(source: &str, args: &ConvertArgs) -> anyhow::Result<ResolvedImage> {
    Ok(crate::oci::resolve_local(source, &args.platform()?)?)
}

/// With `--arch`, refuses an image built for another architecture: a registry may answer a
/// single-platform manifest (no index to choose from), and writing an image that cannot run
/// where it was asked for, with exit 0, hides the mistake until a job fails on the target node.
fn check_architecture(
    source: &str,
    config: &oci_spec::image::ImageConfiguration,
    args: &ConvertArgs,
) -> anyhow::Result<()> {
    let Some(asked) = &args.arch else {
        return Ok(());
    };
    let wanted = args.platform()?;
    let arch = config.architecture().to_string();
    if arch != wanted.architecture {
        bail!(
            "{source}: no image for {wanted} (--arch {asked}): the only platform there is {}/{arch}",
            config.os()
        );
    }
    Ok(())
}

/// Converts `image` into `out`, with bars per layer.
pub fn convert_into(
    image: &ResolvedImage,
    out: &mut std::fs::File,
    args: &ConvertArgs,
    progress: &Arc<Progress>,
    deffile: &[u8],
) -> anyhow::Result<convert::ImageSummary> {
    check_architecture(&image.source, &image.config, args)?;
    let options = args.options(deffile.to_vec())?;
    let sizes = image.layers.iter().map(|l| l.size).collect();
    let observer = Arc::new(ConvertProgress::start(Arc::clone(progress), sizes));
    let summary = convert::oci_to_sif(image, out, &options, observer.clone())
        .with_context(|| format!("converting {}", image.source))?;
    observer.finish_all();
    Ok(summary)
}

/// The converted image of `docker://REFERENCE` in the cache, pulled and converted first if
/// it is not there.
pub fn cached_image(
    reference: &str,
    args: &ConvertArgs,
    progress: &Arc<Progress>,
) -> anyhow::Result<(PathBuf, UseLock)> {
    let reference = Reference::parse(reference)?;
    let platform = args.platform()?;
    let options = args.options(deffile_for(&format!("docker://{reference}")))?;
    let cache = Cache::locate().context("cache")?;
    // Held until the caller has opened the image: `cache clean` waits for it.
    let in_use = cache
        .in_use()
        .with_context(|| format!("cache {}", cache.root().display()))?;
    let blob_dir = cache
        .blob_dir()
        .with_context(|| format!("cache {}", cache.root().display()))?;
    let client = Registry::new(registry::Options {
        insecure: insecure_registries(args, &reference),
        platform: platform.clone(),
        parallel: 4,
    })?
    .with_config_store(blob_dir.clone());
    let remote = client.resolve(&reference)?;
    // Before any layer is downloaded.
    check_architecture(&format!("docker://{reference}"), &remote.config, args)?;
    let key = image_key(&remote.manifest_digest, &platform, &options);
    let path = cache
        .image_path(&key)
        .with_context(|| format!("cache {}", cache.root().display()))?;
    if path.exists() {
        tracing::info!("using cached image {}", path.display());
        return Ok((path, in_use));
    }
    let _lock = cache.lock(&key)?;
    if path.exists() {
        return Ok((path, in_use)); // converted by a concurrent rsing while we waited
    }
    let files = client.fetch_blobs(&reference, &remote, &blob_dir, progress.as_ref())?;
    let image = remote.into_resolved(format!("docker://{reference}"), files);
    let mut out =
        AtomicFile::create(&path, 0o755).with_context(|| format!("cache {}", path.display()))?;
    convert_into(&image, out.file(), args, progress, &options.deffile)?;
    out.commit()
        .with_context(|| format!("cache {}", path.display()))?;
    Ok((path, in_use))
}

/// Registries spoken to over plain HTTP: `--insecure` names this one; RSING_INSECURE_REGISTRIES
/// lists more (loopback registries always are).
fn insecure_registries(args: &ConvertArgs, reference: &Reference) -> Vec<String> {
    let mut list: Vec<String> = std::env::var("RSING_INSECURE_REGISTRIES")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if args.insecure {
        list.push(reference.registry.clone());
    }
    list
}

/// The cache key of a converted image: the manifest digest, the platform and every option
/// that changes the bytes written.
fn image_key(manifest: &Digest, platform: &Platform, options: &ConvertOptions) -> String {
    use sha2::Digest as _;
    let mut text = format!(
        "rsing-image-v1\n{manifest}\n{platform}\n{:?}:{:?}\n{:?}\n{}",
        options.compressor,
        options.level,
        options.source_date_epoch,
        String::from_utf8_lossy(&options.deffile)
    );
    // Added only when not the default, so that images cached before the option keep their key.
    if options.block_size != 128 * 1024 {
        text.push_str(&format!("\nblock size {}", options.block_size));
    }
    let hash = sha2::Sha256::digest(text.as_bytes());
    hash.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

impl registry::Observer for Progress {
    fn started(&self, digest: &Digest, size: u64) {
        let hex = digest.hex();
        self.start(
            hex,
            &format!("fetching {}", &hex[..12.min(hex.len())]),
            size,
        );
    }
    fn progress(&self, digest: &Digest, done: u64) {
        self.update(digest.hex(), done);
    }
    fn finished(&self, digest: &Digest) {
        let hex = digest.hex();
        self.finish(hex, &format!("fetched {}", &hex[..12.min(hex.len())]));
    }
    fn retrying(&self, what: &str, attempt: u32, why: &str) {
        self.say(&format!("retrying {what} (attempt {attempt}): {why}"));
    }
}
