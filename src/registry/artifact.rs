//! SIF files as ORAS artifacts (`oras://`), in the layout Apptainer pushes and pulls: an OCI
//! image manifest whose config is the empty JSON object with media type
//! [`SIF_CONFIG_MEDIA_TYPE`], and one layer, the SIF file itself, with media type
//! [`SIF_LAYER_MEDIA_TYPE`] and its file name as `org.opencontainers.image.title`.
//!
//! Pushing uploads the SIF (skipped when the registry has it already), the 2-byte config and
//! the manifest. Resolving reads the manifest and checks that it is such an artifact; the layer
//! itself is downloaded like any blob ([`Registry::fetch_layers`]), or read in ranges by a lazy
//! start ([`Registry::read_range`]).

use super::client::{check_digest, Conn};
use super::errors::with_retries;
use super::{Error, Observer, Quiet, Reference, Registry};
use crate::oci::Digest;
use oci_client::errors::OciDistributionError as OciError;
use oci_client::RegistryOperation;
use serde::Deserialize;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The config media type Apptainer writes (and reads) for a SIF artifact.
pub const SIF_CONFIG_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.config.v1+json";
/// The layer media type of the SIF file.
pub const SIF_LAYER_MEDIA_TYPE: &str = "application/vnd.sylabs.sif.layer.v1.sif";
/// Layer media types of SIF artifacts pushed by Singularity < 3.7 (sic: "appliciation").
const LEGACY_LAYER_MEDIA_TYPES: &[&str] = &[
    "appliciation/vnd.sylabs.sif.layer.tar",
    "application/vnd.sylabs.sif.layer.tar",
];
/// The annotation carrying the SIF's file name.
pub const TITLE_ANNOTATION: &str = "org.opencontainers.image.title";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config of every SIF artifact: the empty JSON object.
const EMPTY_CONFIG: &[u8] = b"{}";

/// A SIF artifact as its manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SifArtifact {
    pub manifest_digest: Digest,
    /// The SIF file's digest and size.
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    /// The file name it was pushed from, if the manifest says.
    pub title: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    #[serde(default)]
    media_type: Option<String>,
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: std::collections::BTreeMap<String, String>,
}

/// The manifest Apptainer pushes for a SIF of `size` bytes with digest `digest`.
pub fn sif_manifest(digest: &Digest, size: u64, title: &str) -> Vec<u8> {
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": SIF_CONFIG_MEDIA_TYPE,
            "digest": Digest::of(EMPTY_CONFIG).to_string(),
            "size": EMPTY_CONFIG.len(),
        },
        "layers": [{
            "mediaType": SIF_LAYER_MEDIA_TYPE,
            "digest": digest.to_string(),
            "size": size,
            "annotations": { TITLE_ANNOTATION: title },
        }],
    });
    serde_json::to_vec(&manifest).expect("a JSON value serialises")
}

/// Reads a manifest as a SIF artifact; `Err` says why it is not one.
pub fn parse_sif_manifest(bytes: &[u8], manifest_digest: Digest) -> Result<SifArtifact, String> {
    let m: Manifest =
        serde_json::from_slice(bytes).map_err(|e| format!("not an OCI manifest ({e})"))?;
    if let Some(t) = &m.media_type {
        if t.contains("index") || t.contains("manifest.list") {
            return Err(format!("an image index ({t}), not a SIF artifact"));
        }
    }
    let sif_layers: Vec<&Descriptor> = m
        .layers
        .iter()
        .filter(|l| {
            l.media_type == SIF_LAYER_MEDIA_TYPE
                || LEGACY_LAYER_MEDIA_TYPES.contains(&l.media_type.as_str())
        })
        .collect();
    let layer = match sif_layers.as_slice() {
        [one] => *one,
        [] if m
            .config
            .media_type
            .starts_with("application/vnd.oci.image.config")
            || m.config
                .media_type
                .starts_with("application/vnd.docker.container.image") =>
        {
            return Err("a container image, not a SIF artifact: use docker:// for it".into())
        }
        [] => {
            return Err(format!(
                "no layer of type {SIF_LAYER_MEDIA_TYPE} (config type {})",
                m.config.media_type
            ))
        }
        _ => return Err(format!("{} SIF layers, expected one", sif_layers.len())),
    };
    let digest = Digest::parse(&layer.digest).map_err(|e| format!("layer digest: {e}"))?;
    Ok(SifArtifact {
        manifest_digest,
        digest,
        size: layer.size,
        media_type: layer.media_type.clone(),
        title: layer.annotations.get(TITLE_ANNOTATION).cloned(),
    })
}

/// The sha256 and size of the file at `path`, read once.
fn digest_file(path: &Path) -> Result<(Digest, u64), Error> {
    use sha2::Digest as _;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((
        Digest::parse(&format!("sha256:{hex}")).expect("a sha256"),
        size,
    ))
}

/// `len` bytes of the file at `path` from `offset`, as a stream of 8 MiB chunks, for
/// `push_blob_stream` (a SIF's SquashFS partition is pushed from inside the SIF, not copied).
fn file_stream(
    path: PathBuf,
    offset: u64,
    len: u64,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, OciError>> + Send + 'static {
    use std::io::{Seek, SeekFrom};
    let file = std::fs::File::open(&path).and_then(|mut f| {
        f.seek(SeekFrom::Start(offset))?;
        Ok(f.take(len))
    });
    futures_util::stream::unfold(Some(file), |state| async move {
        let mut file = match state? {
            Ok(f) => f,
            Err(e) => return Some((Err(OciError::IoError(e)), None)),
        };
        let mut buf = vec![0u8; 8 << 20];
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => return Some((Err(OciError::IoError(e)), None)),
            }
        }
        if filled == 0 {
            return None;
        }
        buf.truncate(filled);
        Some((Ok(bytes::Bytes::from(buf)), Some(Ok(file))))
    })
}

/// One blob to push: its digest and size, and where its bytes are.
#[derive(Debug, Clone)]
pub struct PushBlob {
    pub digest: Digest,
    pub size: u64,
    pub data: PushData,
}

/// The bytes of a [`PushBlob`].
#[derive(Debug, Clone)]
pub enum PushData {
    /// Small blobs (configs), in memory.
    Bytes(Vec<u8>),
    /// `size` bytes of a file from `offset` (a whole SIF, or the SquashFS inside one).
    File { path: PathBuf, offset: u64 },
}

impl Registry {
    /// Pushes the SIF at `path` to `r` in Apptainer's ORAS layout; returns the manifest digest.
    pub fn push_sif(&self, r: &Reference, path: &Path) -> Result<Digest, Error> {
        let (digest, size) = digest_file(path)?;
        let title = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "image.sif".into());
        let manifest = sif_manifest(&digest, size, &title);
        let blobs = [
            PushBlob {
                digest: Digest::of(EMPTY_CONFIG),
                size: EMPTY_CONFIG.len() as u64,
                data: PushData::Bytes(EMPTY_CONFIG.to_vec()),
            },
            PushBlob {
                digest,
                size,
                data: PushData::File {
                    path: path.to_path_buf(),
                    offset: 0,
                },
            },
        ];
        self.push_image(r, &blobs, manifest)
    }

    /// Pushes `blobs` (each skipped when the registry has it already: a `HEAD` first), then
    /// `manifest` (an OCI image manifest naming them) as `r`'s tag; returns the manifest's
    /// digest.
    pub fn push_image(
        &self,
        r: &Reference,
        blobs: &[PushBlob],
        manifest: Vec<u8>,
    ) -> Result<Digest, Error> {
        let conn = self.conn(&r.registry)?;
        let subject = r.short();
        let oref = conn.reference(&r.repository, &r.target());
        let ctx = conn.context(&subject);
        self.rt.block_on(async {
            with_retries("push", self.backoff, &Quiet, || {
                conn.client.auth(&oref, &conn.auth, RegistryOperation::Push)
            })
            .await
            .map_err(|e| ctx.map(&e))?;
            for blob in blobs {
                let what = format!("blob {}", blob.digest.short());
                let blob_str = blob.digest.to_string();
                let exists = with_retries(&what, self.backoff, &Quiet, || {
                    conn.client.blob_exists(&oref, &blob_str)
                })
                .await
                .map_err(|e| ctx.map(&e))?;
                if exists {
                    tracing::info!(blob = %blob.digest, "already in the registry");
                    continue;
                }
                tracing::info!(blob = %blob.digest, size = blob.size, "uploading");
                // A stream cannot be replayed, so a failed upload is not retried here.
                let result = match &blob.data {
                    PushData::File { path, offset } => {
                        conn.client
                            .push_blob_stream(
                                &oref,
                                file_stream(path.clone(), *offset, blob.size),
                                &blob_str,
                                Some(blob.size),
                            )
                            .await
                    }
                    PushData::Bytes(bytes) => {
                        conn.client.push_blob(&oref, bytes.clone(), &blob_str).await
                    }
                };
                result.map_err(|e| ctx.map(&e))?;
            }
            let content_type = MANIFEST_MEDIA_TYPE.parse().expect("a valid header value");
            conn.client
                .push_manifest_raw(&oref, manifest.clone(), content_type)
                .await
                .map_err(|e| ctx.map(&e))?;
            Ok(Digest::of(&manifest))
        })
    }

    /// Reads the manifest `r` names and checks that it is a SIF artifact.
    pub fn resolve_sif(&self, r: &Reference) -> Result<SifArtifact, Error> {
        let conn = self.conn(&r.registry)?;
        let subject = r.short();
        let bytes = self.rt.block_on(self.manifest_bytes(
            &conn,
            r,
            &r.target(),
            &[MANIFEST_MEDIA_TYPE],
            &subject,
        ))?;
        let digest = Digest::of(&bytes);
        if let Some(want) = &r.digest {
            check_digest(r, "manifest", want, &digest)?;
        }
        parse_sif_manifest(&bytes, digest).map_err(|why| Error::Registry {
            registry: r.registry.clone(),
            subject,
            code: None,
            message: why,
        })
    }

    /// Downloads the SIF of `art` into the blob store (resumable, verified, once per node:
    /// see `fetch`) and returns its path.
    pub fn fetch_sif(
        &self,
        r: &Reference,
        art: &SifArtifact,
        blob_dir: &Path,
        observer: &dyn Observer,
    ) -> Result<PathBuf, Error> {
        let layers = [(art.digest.clone(), art.media_type.clone(), art.size)];
        let mut paths = self.fetch_layers(r, &layers, blob_dir, observer)?;
        paths
            .pop()
            .ok_or_else(|| Error::Setup("no blob fetched".into()))
    }

    /// Bytes `[offset, offset + len)` of the SIF of `art` (one range request taking at most
    /// `timeout`, no retries: the caller decides). Blocking; callable from any thread but not from inside this
    /// registry's own runtime.
    pub fn read_range(
        &self,
        r: &Reference,
        art: &SifArtifact,
        offset: u64,
        len: u64,
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>, String> {
        let conn = self.conn(&r.registry).map_err(|e| e.to_string())?;
        self.rt
            .block_on(async {
                tokio::time::timeout(timeout, read_range_async(&conn, r, art, offset, len)).await
            })
            .map_err(|_| format!("no answer within {} s", timeout.as_secs()))?
            .map_err(|e| first_line_of(&e))
    }
}

fn first_line_of(e: &OciError) -> String {
    super::errors::first_line(&e.to_string())
}

async fn read_range_async(
    conn: &Conn,
    r: &Reference,
    art: &SifArtifact,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, OciError> {
    let oref = conn.reference(&r.repository, &r.target());
    super::manifest::get_range(conn, &oref, &art.digest.to_string(), offset, len).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_matches_apptainer() {
        let digest = Digest::of(b"sif");
        let bytes = sif_manifest(&digest, 3, "x.sif");
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(v["config"]["mediaType"], SIF_CONFIG_MEDIA_TYPE);
        assert_eq!(v["layers"][0]["mediaType"], SIF_LAYER_MEDIA_TYPE);
        assert_eq!(v["layers"][0]["annotations"][TITLE_ANNOTATION], "x.sif");
        let art = parse_sif_manifest(&bytes, Digest::of(&bytes)).unwrap();
        assert_eq!(art.digest, digest);
        assert_eq!(art.size, 3);
        assert_eq!(art.title.as_deref(), Some("x.sif"));
    }

    #[test]
    fn container_images_and_indexes_are_not_sif_artifacts() {
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}]}"#;
        let e = parse_sif_manifest(image, Digest::of(image)).unwrap_err();
        assert!(e.contains("docker://"), "{e}");
        let index = br#"{"mediaType":"application/vnd.oci.image.index.v1+json","config":{"mediaType":"x","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2}}"#;
        assert!(parse_sif_manifest(index, Digest::of(index)).is_err());
    }
}
