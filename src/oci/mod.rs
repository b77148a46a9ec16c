//! The OCI image format, offline: platforms, digests, manifests and configs, and the local
//! sources (`oci:` layout directories, `oci-archive:` and `docker-archive:` tars) resolved to
//! a config plus the ordered layer blobs. Nothing here touches the network; `registry` fetches
//! blobs and reuses [`parse_manifest`], [`parse_config`] and [`select_manifest`].
//!
//! Layer blobs stay where they are (a file, or a byte range inside an archive) and are opened
//! on demand, verified against their digest as they are read.

mod archive;
mod digest;
mod layer;
mod layout;
mod manifest;
mod platform;
mod store;
#[cfg(test)]
pub(crate) mod testutil;

pub use archive::{resolve_docker_archive, resolve_oci_archive};
pub use digest::{Digest, VerifyingReader};
pub use layer::{decompress, LayerBlob};
pub use layout::resolve_layout;
pub use manifest::{parse_config, parse_manifest, MAX_JSON_SIZE, SQUASHFS_LAYER};
pub use platform::{select_manifest, select_manifest_in, Platform};

/// An image found in a local source: its config and its layers, bottom first.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// What the user named (`oci:/path:tag`).
    pub source: String,
    /// The manifest's digest; `None` for a `docker-archive`, which has no manifest.
    pub manifest_digest: Option<Digest>,
    pub config_digest: Digest,
    /// The config exactly as stored (its digest is `config_digest`).
    pub config_raw: Vec<u8>,
    pub config: oci_spec::image::ImageConfiguration,
    /// Layers in manifest order: `layers[0]` is the base.
    pub layers: Vec<LayerBlob>,
}

/// Everything that can go wrong reading a local image or its metadata. Each message is one
/// line and names the file, blob or value it is about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}: invalid JSON: {source}")]
    Json {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid digest '{0}': only sha256:<64 lowercase hex digits> is supported")]
    Digest(String),
    #[error("unknown platform '{0}' (try amd64, arm64, arm/v7, ppc64le, s390x, riscv64, 386 or os/arch[/variant])")]
    Platform(String),
    #[error("{name}: no image for {wanted}; available: {available}")]
    NoPlatform {
        name: String,
        wanted: String,
        available: String,
    },
    /// A well-formed image that uses something rsing cannot run (schema 1, foreign layers, an
    /// artifact that is not a container image, an unknown compression).
    #[error("{0}")]
    Unsupported(String),
    /// A source that is not what it claims (no `oci-layout`, an unknown tag, a missing blob).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Error {
        Error::Io {
            path: path.to_string(),
            source,
        }
    }
}

/// Resolves `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or `docker-archive:FILE[:REF]` for
/// `platform`.
pub fn resolve_local(source: &str, platform: &Platform) -> Result<ResolvedImage, Error> {
    let resolved = if let Some(rest) = source.strip_prefix("oci:") {
        resolve_layout(rest, platform)
    } else if let Some(rest) = source.strip_prefix("oci-archive:") {
        resolve_oci_archive(rest, platform)
    } else if let Some(rest) = source.strip_prefix("docker-archive:") {
        resolve_docker_archive(rest, platform)
    } else {
        return Err(Error::Invalid(format!(
            "{source}: not a local image source (expected oci:, oci-archive: or docker-archive:)"
        )));
    };
    let mut image = resolved?;
    image.source = source.to_string();
    Ok(image)
}
