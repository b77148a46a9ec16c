//! Manifests, indexes and configs: parsing with the `oci-spec` types, and which OCI and Docker
//! schema 2 media types rsing accepts.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageManifest};
use serde::de::DeserializeOwned;

use super::{Digest, Error};

/// The largest manifest, index or config read into memory: 4 MiB, containerd's limit
/// (configs with a long history are the big ones, a few hundred KiB in practice). Bounds what
/// a hostile registry, layout or archive can make rsing hold and parse.
pub const MAX_JSON_SIZE: u64 = 4 << 20;

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// `docker save` tars carry plain tar layers under this (unofficial but common) type.
pub(crate) const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// The layer of an OCI-SIF image (SingularityCE 4, `sylabs/oci-tools`): a SquashFS root file
/// system, stored uncompressed-as-is (its digest is also its diff ID). `convert` copies it into
/// a SIF instead of reading it as a tar.
pub const SQUASHFS_LAYER: &str = "application/vnd.sylabs.image.layer.v1.squashfs";

/// Layer media types whose blobs are tars rsing can unpack (the compression is detected from
/// the content anyway; the type is the fallback).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    DOCKER_LAYER_TAR,
];

/// What a manifest-like document is, from its descriptor's or its own `mediaType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Manifest,
    Index,
}

/// Classifies a manifest-level media type; schema 1 and anything else get a clear error.
pub(crate) fn kind_of(media_type: &str, name: &str) -> Result<Kind, Error> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(Kind::Manifest),
        OCI_INDEX | DOCKER_LIST => Ok(Kind::Index),
        t if t.starts_with("application/vnd.docker.distribution.manifest.v1") => Err(schema1(name)),
        t => Err(Error::Unsupported(format!(
            "{name}: media type {t} is not an image manifest or index"
        ))),
    }
}

fn schema1(name: &str) -> Error {
    Error::Unsupported(format!(
        "{name}: Docker schema 1 manifests are not supported (re-push the image with a current Docker or skopeo)"
    ))
}

/// Parses JSON, naming `name` in the error.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8], name: &str) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Json {
        name: name.to_string(),
        source,
    })
}

/// Parses an image manifest (OCI or Docker schema 2) and checks that rsing can use it: a
/// container config and layers that are (possibly compressed) tars.
pub fn parse_manifest(bytes: &[u8]) -> Result<ImageManifest, Error> {
    parse_manifest_in(bytes, "image manifest")
}

/// [`parse_manifest`] with the file or URL to name in errors.
pub(crate) fn parse_manifest_in(bytes: &[u8], name: &str) -> Result<ImageManifest, Error> {
    /// Just enough to tell schema 1 and indexes from a manifest before the strict parse.
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        schema_version: Option<u32>,
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let head: Head = parse_json(bytes, name)?;
    if head.schema_version == Some(1) {
        return Err(schema1(name));
    }
    if let Some(t) = &head.media_type {
        if kind_of(t, name)? == Kind::Index {
            return Err(Error::Invalid(format!(
                "{name}: is an image index, not a manifest"
            )));
        }
    } else if head.manifests.is_some() {
        return Err(Error::Invalid(format!(
            "{name}: is an image index, not a manifest"
        )));
    }
    let manifest: ImageManifest = parse_json(bytes, name)?;
    check_config_type(manifest.config(), name)?;
    for layer in manifest.layers() {
        check_layer(layer, name)?;
    }
    Ok(manifest)
}

fn check_config_type(config: &Descriptor, name: &str) -> Result<(), Error> {
    let t = config.media_type().to_string();
    if t == OCI_CONFIG || t == DOCKER_CONFIG {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "{name}: not a container image (config media type {t}; an artifact such as a Helm chart or signature?)"
    )))
}

/// A layer must be a tar rsing can read, and its blob must be one a client can have: foreign
/// (non-distributable) layers live outside any registry rsing can reach.
fn check_layer(layer: &Descriptor, name: &str) -> Result<(), Error> {
    let t = layer.media_type().to_string();
    Digest::try_from(layer.digest())?;
    if t.contains(".foreign.") || t.contains(".nondistributable.") {
        return Err(Error::Unsupported(format!(
            "{name}: layer {} is a foreign (non-distributable) layer of type {t}, which rsing cannot fetch (Windows base layers are like this)",
            layer.digest()
        )));
    }
    if !LAYER_TYPES.contains(&t.as_str()) && t != SQUASHFS_LAYER {
        return Err(Error::Unsupported(format!(
            "{name}: layer {} has media type {t}, which is not a tar layer (nor an OCI-SIF SquashFS)",
            layer.digest()
        )));
    }
    Ok(())
}

/// Parses an image config (OCI, or Docker's `container.image.v1`, which has the same fields).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, Error> {
    parse_config_in(bytes, "image config")
}

/// [`parse_config`] with the file or blob to name in errors.
pub(crate) fn parse_config_in(bytes: &[u8], name: &str) -> Result<ImageConfiguration, Error> {
    parse_json(bytes, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(config_type: &str, layer_type: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": config_type, "size": 2, "digest": format!("sha256:{:064x}", 1)},
            "layers": [{"mediaType": layer_type, "size": 3, "digest": format!("sha256:{:064x}", 2)}],
        }))
        .unwrap()
    }

    #[test]
    fn docker_and_oci_manifests() {
        let m = parse_manifest(&manifest(
            DOCKER_CONFIG,
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
        ))
        .unwrap();
        assert_eq!(m.layers().len(), 1);
        parse_manifest(&manifest(
            OCI_CONFIG,
            "application/vnd.oci.image.layer.v1.tar+zstd",
        ))
        .unwrap();
    }

    #[test]
    fn unusable_manifests_say_why() {
        let cases: &[(Vec<u8>, &str)] = &[
            (
                br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#.to_vec(),
                "schema 1",
            ),
            (
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#
                    .to_vec(),
                "is an image index",
            ),
            (
                manifest(
                    DOCKER_CONFIG,
                    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                ),
                "foreign",
            ),
            (
                manifest("application/vnd.cncf.helm.config.v1+json", DOCKER_LAYER_TAR),
                "not a container image",
            ),
            (manifest(OCI_CONFIG, "application/x-bzip2"), "not a tar layer"),
            (b"{".to_vec(), "invalid JSON"),
        ];
        for (bytes, want) in cases {
            let msg = parse_manifest(bytes).unwrap_err().to_string();
            assert!(
                msg.starts_with("image manifest") || msg.starts_with("invalid"),
                "{msg}"
            );
            assert!(msg.contains(want), "{msg} lacks {want}");
            assert!(!msg.contains('\n'));
        }
    }

    #[test]
    fn config_parses() {
        let c = parse_config(
            br#"{"architecture":"amd64","os":"linux","config":{"Env":["A=1"]},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.architecture().to_string(), "amd64");
        assert!(parse_config(b"[]")
            .unwrap_err()
            .to_string()
            .contains("image config"));
    }
}
