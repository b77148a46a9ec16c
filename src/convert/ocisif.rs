//! SingularityCE 4's OCI-SIF idea in a registry: a container image whose one layer is a
//! SquashFS root file system (media type [`SQUASHFS_LAYER`]) instead of a tar, under an
//! ordinary OCI image config. Both directions are here:
//!
//! - [`from_sif`]: a SIF → the config, manifest and layer to push (`rsing push IMG.sif
//!   docker://…`). The layer is the SIF's SquashFS partition byte for byte, pushed from inside
//!   the SIF; the config carries the `Env`/`Entrypoint`/`Cmd`/`Labels` of the SIF's
//!   `oci-config.json` (or the labels of `inspect-metadata.json`), so other OCI tools see them.
//! - [`squashfs_image_to_sif`]: such an image → a SIF (`pull`/`exec docker://…`): the layer is
//!   copied into the partition as it is, with no tar conversion, verified against its digest
//!   while it is copied; the config becomes `oci-config.json`, as for any `docker://` image.
//!
//! A SquashFS layer is its own uncompressed form, so its digest is also its diff ID
//! (`sylabs/oci-tools`' `squashfsLayer` reports the same hash for both), and [`from_sif`]
//! writes it so. Only single-layer images are taken: a multi-layer OCI-SIF (SingularityCE's
//! `--keep-layers`) would need its layers stacked with overlayfs whiteouts, which rsing does not
//! do; such an image gets a clear error.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};

use super::{sif_out, ConvertOptions, Error, ImageSummary, Observer, Result};
use crate::contract::sif_objects;
use crate::oci::{Digest, ResolvedImage, SQUASHFS_LAYER};
use crate::sif::{FsType, SifFile};

/// The manifest media type of every OCI-SIF push.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// The config media type: an ordinary OCI image config.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// What `push … docker://` sends: the config and manifest documents, and where the layer's
/// bytes are in the SIF.
#[derive(Debug, Clone)]
pub struct OciSifPush {
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    /// The SquashFS partition: its offset and size in the SIF, and its digest.
    pub layer_offset: u64,
    pub layer_size: u64,
    pub layer_digest: Digest,
}

/// The OCI-SIF image of the SIF at `path`: reads its descriptors and metadata objects, and
/// hashes its SquashFS partition (one read of it).
pub fn from_sif(path: &Path) -> Result<OciSifPush> {
    let io_at = |e: io::Error| super::dir::io_at(path, e);
    let file = File::open(path).map_err(io_at)?;
    let sif = SifFile::read(&file)?;
    let part = sif.primary_partition()?;
    let arch = match &part.partition {
        Some(info) if info.fs_type != FsType::Squashfs => {
            return Err(Error::Config(format!(
                "{}: the root partition is {}, not SquashFS: only SquashFS images can be pushed as OCI-SIF",
                path.display(),
                info.fs_type
            )))
        }
        Some(info) if !info.arch.is_unknown() => info.arch.go_name().to_string(),
        _ => sif.header.arch.go_name().to_string(),
    };
    let arch = if arch.is_empty() || arch == "unknown" {
        crate::oci::Platform::host().architecture
    } else {
        arch
    };
    let (offset, size) = (part.offset, part.size);
    let layer_digest = digest_range(&file, offset, size).map_err(io_at)?;
    let object = |o: sif_objects::SifObject| {
        o.find(&sif)
            .and_then(|d| sif.read_object(&file, d).ok())
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    };
    let config = run_config(
        object(sif_objects::OCI_CONFIG),
        object(sif_objects::INSPECT_METADATA),
    );
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let config = image_config(&config, &arch, sif.header.created_at, &layer_digest, &name);
    let manifest = manifest(&config, &layer_digest, size);
    Ok(OciSifPush {
        config,
        manifest,
        layer_offset: offset,
        layer_size: size,
        layer_digest,
    })
}

/// The `config` object of the image config: the SIF's `oci-config.json` (what rsing and
/// Apptainer store when converting an OCI image), else just the labels Apptainer's builder
/// records in `inspect-metadata.json`, else nothing.
fn run_config(oci_config: Option<Value>, inspect: Option<Value>) -> Value {
    if let Some(Value::Object(m)) = oci_config {
        let keep = [
            "User",
            "Env",
            "Entrypoint",
            "Cmd",
            "WorkingDir",
            "Labels",
            "ExposedPorts",
            "Volumes",
            "StopSignal",
        ];
        let kept: serde_json::Map<String, Value> = m
            .into_iter()
            .filter(|(k, v)| keep.contains(&k.as_str()) && !v.is_null())
            .collect();
        return Value::Object(kept);
    }
    let labels = inspect
        .as_ref()
        .and_then(|v| v.pointer("/data/attributes/labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.is_string())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<serde_json::Map<_, _>>()
        })
        .filter(|m| !m.is_empty());
    match labels {
        Some(l) => json!({ "Labels": l }),
        None => json!({}),
    }
}

/// RFC 3339 of Unix time `secs` (the SIF's creation time: the same SIF gives the same config).
fn rfc3339(secs: i64) -> String {
    let t = crate::civil::Utc::at(secs.max(0));
    format!(
        "{}T{:02}:{:02}:{:02}Z",
        t.date(),
        t.hour,
        t.minute,
        t.second
    )
}

/// The OCI image config of the pushed image.
fn image_config(config: &Value, arch: &str, created: i64, layer: &Digest, name: &str) -> Vec<u8> {
    let created = rfc3339(created);
    let doc = json!({
        "created": created,
        "architecture": arch,
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": [layer.to_string()] },
        "history": [{
            "created": created,
            "created_by": format!("rsing push: the SquashFS root file system of {name}"),
        }],
    });
    serde_json::to_vec(&doc).expect("a JSON value serialises")
}

/// The OCI image manifest: the config and the one SquashFS layer.
fn manifest(config: &[u8], layer: &Digest, size: u64) -> Vec<u8> {
    let doc = json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {
            "mediaType": CONFIG_MEDIA_TYPE,
            "digest": Digest::of(config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": SQUASHFS_LAYER,
            "digest": layer.to_string(),
            "size": size,
        }],
    });
    serde_json::to_vec(&doc).expect("a JSON value serialises")
}

/// The sha256 of `len` bytes of `file` from `offset`.
fn digest_range(file: &File, offset: u64, len: u64) -> io::Result<Digest> {
    use sha2::Digest as _;
    let mut f = file;
    f.seek(SeekFrom::Start(offset))?;
    let mut r = f.take(len);
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        done += n as u64;
    }
    if done != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the SquashFS partition ends after {done} of {len} bytes"),
        ));
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Digest::parse(&format!("sha256:{hex}")).expect("a sha256"))
}

/// Whether `image` is an OCI-SIF image (any layer is a SquashFS): [`squashfs_image_to_sif`]
/// converts it, not the tar merge.
pub fn is_squashfs_image(image: &ResolvedImage) -> bool {
    image.layers.iter().any(|l| l.media_type == SQUASHFS_LAYER)
}

/// The SquashFS magic and where `bytes_used` sits in the superblock.
const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";
const SUPERBLOCK_CHECKED: usize = 48;

/// Writes the SIF of OCI-SIF image `image` to `out`: the definition file, `oci-config.json`
/// and `inspect-metadata.json` as for any converted image, and the SquashFS layer copied into
/// the partition as it is, checked against its digest (and its diff ID) while it is copied.
pub fn squashfs_image_to_sif(
    image: &ResolvedImage,
    out: &mut File,
    options: &ConvertOptions,
    observer: Arc<dyn Observer>,
) -> Result<ImageSummary> {
    let layer = match image.layers.as_slice() {
        [one] if one.media_type == SQUASHFS_LAYER => one,
        layers => {
            let squashfs = layers
                .iter()
                .filter(|l| l.media_type == SQUASHFS_LAYER)
                .count();
            return Err(Error::Config(format!(
                "{}: an OCI-SIF image with {} layers ({squashfs} SquashFS): rsing reads only single-layer OCI-SIF images (squash it, e.g. `singularity pull --oci` without --keep-layers)",
                image.source,
                layers.len()
            )));
        }
    };
    let diff_ids = image.config.rootfs().diff_ids();
    if diff_ids.len() != 1 || diff_ids[0] != layer.digest.to_string() {
        return Err(Error::Config(format!(
            "{}: the config's diff IDs {diff_ids:?} do not name the SquashFS layer {} (a SquashFS layer is its own uncompressed form)",
            image.source, layer.digest
        )));
    }
    let config = super::config_object(&image.config_raw)?;
    let facts = super::image_facts(&config);
    let objects = sif_out::SmallObjects {
        deffile: options.deffile.clone(),
        oci_config: serde_json::to_vec_pretty(&config).unwrap_or_default(),
        inspect: sif_out::inspect_metadata(&facts, &options.deffile),
    };
    let arch = sif_out::arch_of(image.config.architecture().to_string().as_str());
    let sif_options = sif_out::sif_options(options);
    let plan = || sif_out::sif_layout(&sif_options, &objects, arch, layer.size);
    let (_, descriptors) = plan().plan()?;
    let partition_offset = descriptors.last().map(|d| d.offset).unwrap_or_default();
    out.seek(SeekFrom::Start(partition_offset))?;
    // The verifying reader fails the read that reaches the end when the digest or size is
    // wrong, so a tampered layer never gets a SIF header.
    let mut from = layer
        .open()
        .map_err(|e| io::Error::new(e.kind(), format!("layer {}: {e}", layer.describe())))?;
    let mut head = [0u8; SUPERBLOCK_CHECKED];
    from.read_exact(&mut head).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("layer {}: too short for a SquashFS ({e})", layer.describe()),
        )
    })?;
    let bytes_used = u64::from_le_bytes(head[40..48].try_into().expect("8 bytes"));
    if &head[..4] != SQUASHFS_MAGIC || bytes_used > layer.size {
        return Err(Error::Config(format!(
            "{}: layer {} has media type {SQUASHFS_LAYER} but does not hold a SquashFS",
            image.source,
            layer.describe()
        )));
    }
    let mut writer = io::BufWriter::with_capacity(1 << 20, &mut *out);
    writer.write_all(&head)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = head.len() as u64;
    loop {
        let n = from
            .read(&mut buf)
            .map_err(|e| io::Error::new(e.kind(), format!("layer {}: {e}", layer.describe())))?;
        if n == 0 {
            break;
        }
        writer.write_all(&buf[..n])?;
        done += n as u64;
        observer.layer_progress(0, done);
    }
    writer.into_inner().map_err(|e| e.into_error())?;
    plan().write_to(out)?;
    let summary = crate::squashfs::write::Summary {
        bytes_used,
        image_size: layer.size,
        ..Default::default()
    };
    Ok(ImageSummary {
        partition_offset,
        sif_size: partition_offset + layer.size,
        squashfs: summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_keeps_the_run_settings_and_names_the_layer() {
        let oci = json!({"Env": ["A=1"], "Cmd": ["sh"], "Labels": {"k": "v"}, "Junk": 1});
        let config = run_config(Some(oci), None);
        assert_eq!(
            config,
            json!({"Env": ["A=1"], "Cmd": ["sh"], "Labels": {"k": "v"}})
        );
        let layer = Digest::of(b"squashfs");
        let bytes = image_config(&config, "amd64", 86_400 + 61, &layer, "x.sif");
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["created"], "1970-01-02T00:01:01Z");
        assert_eq!(v["rootfs"]["diff_ids"][0], layer.to_string());
        assert_eq!(v["config"]["Env"][0], "A=1");
        let parsed = crate::oci::parse_config(&bytes).unwrap();
        assert_eq!(parsed.architecture().to_string(), "amd64");
        let m = manifest(&bytes, &layer, 8);
        let parsed = crate::oci::parse_manifest(&m).unwrap();
        assert_eq!(parsed.layers()[0].media_type().to_string(), SQUASHFS_LAYER);
        assert_eq!(
            parsed.config().digest().to_string(),
            Digest::of(&bytes).to_string()
        );
    }

    #[test]
    fn labels_come_from_inspect_metadata_without_an_oci_config() {
        let inspect = json!({"data": {"attributes": {"labels": {"org.x": "y"}}}});
        assert_eq!(
            run_config(None, Some(inspect)),
            json!({"Labels": {"org.x": "y"}})
        );
        assert_eq!(run_config(None, None), json!({}));
    }
}
