//! `oras://` images: `rsing push IMG.sif oras://REF` (and `docker://REF`, an OCI-SIF image:
//! see [`crate::convert::ocisif`]), and the SIF of an `oras://` reference in the cache for
//! `pull`, `build`, `exec` and `run`.
//!
//! The cache keeps the SIF as the blob it is (`blobs/sha256/<hex>`, verified by digest before
//! it gets that name): a second node-local start, or a `docker://` image sharing nothing with
//! it, costs one manifest request.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};

use super::progress::{Mode, Progress};
use super::Global;
use crate::cache::Cache;
use crate::lazy;
use crate::oci::Platform;
use crate::registry::{self, Reference, Registry, SifArtifact};

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Use plain HTTP for this registry (also RSING_INSECURE_REGISTRIES=host:port,…)
    #[arg(long)]
    insecure: bool,
    /// The SIF file to push
    image: PathBuf,
    /// oras://[REGISTRY/]REPO[:TAG] (the SIF as an ORAS artifact, as Apptainer pushes it) or
    /// docker://[REGISTRY/]REPO[:TAG] (an OCI image whose one layer is the SIF's SquashFS, as
    /// SingularityCE 4 pushes OCI-SIF images)
    uri: String,
}

/// A registry client for `reference` (plain HTTP where allowed: see `fetch`).
pub fn client(reference: &Reference, insecure: bool) -> anyhow::Result<Registry> {
    Ok(Registry::new(registry::Options {
        insecure: super::fetch::insecure_list(insecure, reference),
        platform: Platform::host(),
        parallel: 1,
    })?)
}

/// The reference of an `oras://` URI.
pub fn reference(uri: &str) -> anyhow::Result<Reference> {
    match uri.strip_prefix("oras://") {
        Some(r) => Ok(Reference::parse(r)?),
        None => bail!("{uri}: expected oras://[REGISTRY/]REPO[:TAG]"),
    }
}

pub fn push(global: &Global, args: &PushArgs) -> anyhow::Result<i32> {
    let (reference, ocisif) = match args.uri.strip_prefix("docker://") {
        Some(r) => (Reference::parse(r)?, true),
        None => (
            reference(&args.uri).map_err(|_| {
                anyhow::anyhow!(
                    "{}: expected oras://[REGISTRY/]REPO[:TAG] or docker://[REGISTRY/]REPO[:TAG]",
                    args.uri
                )
            })?,
            false,
        ),
    };
    let head = read_head(&args.image)?;
    if !crate::sif::is_sif(&head) {
        bail!(
            "{}: not a SIF file (only SIF images can be pushed; build one with `rsing build`)",
            args.image.display()
        );
    }
    let progress = Progress::new(Mode::detect(global.quiet));
    // No "pushing" line first: a refusal is then the only line printed.
    let client = client(&reference, args.insecure)?;
    let digest = if ocisif {
        let image = crate::convert::ocisif::from_sif(&args.image)
            .with_context(|| format!("cannot push {}", args.image.display()))?;
        let blobs = [
            registry::PushBlob {
                digest: crate::oci::Digest::of(&image.config),
                size: image.config.len() as u64,
                data: registry::PushData::Bytes(image.config.clone()),
            },
            registry::PushBlob {
                digest: image.layer_digest.clone(),
                size: image.layer_size,
                data: registry::PushData::File {
                    path: args.image.clone(),
                    offset: image.layer_offset,
                },
            },
        ];
        client.push_image(&reference, &blobs, image.manifest)?
    } else {
        client.push_sif(&reference, &args.image)?
    };
    progress.say(&format!("pushed {} ({digest})", args.uri));
    Ok(0)
}

/// The first 64 bytes of `path` (fewer for a shorter file), enough to tell a SIF.
fn read_head(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        bail!("{}: is a directory, not a SIF file", path.display());
    }
    let mut head = Vec::with_capacity(64);
    file.take(64)
        .read_to_end(&mut head)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(head)
}

/// The cache and the blob store in it.
pub fn blob_dir() -> anyhow::Result<(Cache, PathBuf)> {
    let cache = Cache::locate().context("cache")?;
    let dir = cache
        .blob_dir()
        .with_context(|| format!("cache {}", cache.root().display()))?;
    Ok((cache, dir))
}

/// The artifact `uri` names, resolved (one manifest request).
pub fn resolve(uri: &str, insecure: bool) -> anyhow::Result<(Reference, Registry, SifArtifact)> {
    let reference = reference(uri)?;
    let client = client(&reference, insecure)?;
    let art = client.resolve_sif(&reference)?;
    Ok((reference, client, art))
}

/// The SIF of `oras://REF` in the cache, downloaded first when missing.
pub fn cached_sif(uri: &str, insecure: bool, progress: &Arc<Progress>) -> anyhow::Result<PathBuf> {
    let (reference, client, art) = resolve(uri, insecure)?;
    let (_, dir) = blob_dir()?;
    Ok(client.fetch_sif(&reference, &art, &dir, progress.as_ref())?)
}

/// `oras://REF` → `NAME_TAG.sif`, as Apptainer names it; `https://HOST/…/NAME` → `NAME`.
pub fn default_name(uri: &str) -> anyhow::Result<String> {
    if uri.starts_with("oras://") {
        return Ok(reference(uri)?.default_sif_name());
    }
    let path = uri.split(['#', '?']).next().unwrap_or(uri);
    match path.rsplit_once('/') {
        Some((_, name)) if !name.is_empty() && !path.ends_with("//") => Ok(name.to_string()),
        _ => bail!("pull {uri}: give the target file name with --name"),
    }
}

/// Whether `exec` takes `image` for a SIF to fetch (`oras://`, `http://`, `https://`).
pub fn is_remote_sif(image: &str) -> bool {
    ["oras://", "http://", "https://"]
        .iter()
        .any(|p| image.starts_with(p))
}

/// Whether starts may begin before the download ends (`RSING_LAZY=no` turns it off).
fn lazy_enabled() -> bool {
    !matches!(
        std::env::var("RSING_LAZY").as_deref(),
        Ok("no" | "0" | "false")
    )
}

/// The lazy-start description of a remote SIF: its cache key and [`lazy::Meta`].
fn lazy_meta(uri: &str, insecure: bool) -> anyhow::Result<(String, lazy::Meta)> {
    let (cache, blobs) = blob_dir()?;
    let chunk = lazy::chunk_size();
    if uri.starts_with("oras://") {
        let (reference, _client, art) = resolve(uri, insecure)?;
        let key = art.digest.hex().to_string();
        let meta = lazy::Meta {
            origin: lazy::Origin::Oras {
                reference: reference.to_string(),
                digest: art.digest.to_string(),
                media_type: art.media_type.clone(),
                insecure: super::fetch::insecure_list(insecure, &reference),
            },
            size: art.size,
            chunk,
            digest: Some(art.digest.to_string()),
            final_path: blobs.join("sha256").join(&key),
            name: uri.to_string(),
        };
        return Ok((key, meta));
    }
    // http(s)://HOST/PATH[#sha256:HEX]: the fragment, never sent, is the digest to check.
    let (url, digest) = match uri.split_once('#') {
        Some((u, d)) => (
            u,
            Some(
                crate::oci::Digest::parse(d)
                    .with_context(|| {
                        format!("{uri}: the part after # must be a digest (sha256:HEX)")
                    })?
                    .to_string(),
            ),
        ),
        None => (uri, None),
    };
    let head = lazy::ranges::http_head(url).map_err(|why| anyhow::anyhow!("image {url}: {why}"))?;
    let key = {
        use sha2::Digest as _;
        let text = format!("{url}\n{:?}\n{}\n{:?}", head.etag, head.size, digest);
        let h = sha2::Sha256::digest(text.as_bytes());
        h.iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let meta = lazy::Meta {
        origin: lazy::Origin::Http {
            url: url.to_string(),
            etag: head.etag,
        },
        size: head.size,
        chunk,
        digest,
        final_path: cache.root().join("http").join(format!("{key}.sif")),
        name: uri.to_string(),
    };
    Ok((format!("http-{key}"), meta))
}

/// The cache entry of a remote SIF, started lazily: the complete file when the cache has it,
/// else a lazy entry whose header is here (see `crate::lazy`).
fn prepared(uri: &str, insecure: bool) -> anyhow::Result<lazy::Prepared> {
    let (key, meta) = lazy_meta(uri, insecure)?;
    let (cache, _) = blob_dir()?;
    Ok(lazy::prepare(&cache.root().join("lazy"), &key, meta)?)
}

/// The SIF of an `http(s)://` URL in the cache, downloaded first when missing.
pub fn cached_http(uri: &str) -> anyhow::Result<PathBuf> {
    match prepared(uri, false)? {
        lazy::Prepared::Cached(p) => Ok(p),
        lazy::Prepared::Lazy(data) => Ok(lazy::download_all(&data)?),
    }
}

/// The local SIF `exec`/`run` start for a remote one: the cached file; else, unless
/// `RSING_LAZY=no`, a lazy entry that starts before the download ends; else the file
/// downloaded first (progress on stderr).
pub fn for_exec(global: &Global, uri: &str) -> anyhow::Result<PathBuf> {
    if lazy_enabled() {
        let prepared = prepared(uri, false)?;
        if let lazy::Prepared::Lazy(p) = &prepared {
            tracing::info!("starting {uri} before it is downloaded ({})", p.display());
        }
        return Ok(prepared.path().to_path_buf());
    }
    if !uri.starts_with("oras://") {
        return cached_http(uri);
    }
    let progress = Arc::new(Progress::new(Mode::detect(global.quiet)));
    let path = cached_sif(uri, false, &progress)?;
    progress.clear();
    Ok(path)
}
