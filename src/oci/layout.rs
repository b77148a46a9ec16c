//! `oci:DIR[:TAG]`: OCI image layouts, and the resolution from `index.json` to config and
//! layers that `oci-archive:` shares through [`Store`].

use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex};

use super::manifest::{kind_of, parse_config_in, parse_json, parse_manifest_in, Kind};
use super::platform::{select_from, select_manifest_in};
use super::store::{descriptor_digest, split_tag, DirStore, Store};
use super::{Error, LayerBlob, Platform, ResolvedImage, MAX_JSON_SIZE};

/// The annotation that holds a tag in an OCI layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd and nerdctl also record the full reference.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// Indexes inside indexes deeper than this are taken as a loop.
const MAX_NESTING: usize = 8;

/// Resolves `DIR[:TAG]` (the text after `oci:`), an OCI image layout directory.
pub fn resolve_layout(spec: &str, platform: &Platform) -> Result<ResolvedImage, Error> {
    let (dir, tag) = if Path::new(spec).is_dir() {
        (spec, None) // a directory whose name has a ':'
    } else {
        split_tag(spec)
    };
    if !Path::new(dir).is_dir() {
        let why = if Path::new(dir).exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        return Err(Error::Invalid(format!(
            "{dir}: {why} (oci: needs an OCI image layout directory)"
        )));
    }
    let mut image = resolve_store(&DirStore(PathBuf::from(dir)), tag, platform)?;
    image.source = format!("oci:{spec}");
    Ok(image)
}

/// From a layout's `oci-layout` and `index.json` to the image for `tag` and `platform`.
pub(crate) fn resolve_store(
    store: &dyn Store,
    tag: Option<&str>,
    platform: &Platform,
) -> Result<ResolvedImage, Error> {
    let marker = store.require("oci-layout").map_err(|_| {
        Error::Invalid(format!(
            "{}: not an OCI image layout (no oci-layout file)",
            store.name()
        ))
    })?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Marker {
        image_layout_version: String,
    }
    let name = marker.describe();
    let version = parse_json::<Marker>(&marker.read_all(None, MAX_JSON_SIZE)?, &name)?;
    if !version.image_layout_version.starts_with("1.") {
        return Err(Error::Unsupported(format!(
            "{name}: image layout version {} is not supported (1.x is)",
            version.image_layout_version
        )));
    }
    let index_at = store.require("index.json")?;
    let name = index_at.describe();
    let index: ImageIndex = parse_json(&index_at.read_all(None, MAX_JSON_SIZE)?, &name)?;
    let chosen = choose(index.manifests(), tag, platform, &name)?;
    resolve_descriptor(store, chosen, platform)
}

fn tag_of(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(REF_NAME).map(String::as_str)
}

fn has_name(d: &Descriptor, tag: &str) -> bool {
    tag_of(d) == Some(tag)
        || d.annotations()
            .as_ref()
            .and_then(|a| a.get(CONTAINERD_NAME))
            .is_some_and(|n| n == tag)
}

/// The `index.json` entry for `tag`; without a tag, the only entry, or the platform's entry
/// when all are untagged per-platform manifests.
fn choose(
    manifests: &[Descriptor],
    tag: Option<&str>,
    platform: &Platform,
    name: &str,
) -> Result<Descriptor, Error> {
    let tags = || {
        let mut t: Vec<&str> = manifests.iter().filter_map(tag_of).collect();
        t.sort_unstable();
        t.dedup();
        if t.is_empty() {
            "it has no tags".to_string()
        } else {
            format!("tags: {}", t.join(", "))
        }
    };
    let candidates: Vec<Descriptor> = match tag {
        Some(tag) => manifests
            .iter()
            .filter(|d| has_name(d, tag))
            .cloned()
            .collect(),
        None => manifests.to_vec(),
    };
    match (candidates.len(), tag) {
        (0, Some(tag)) => Err(Error::Invalid(format!(
            "{name}: no image tagged '{tag}' ({})",
            tags()
        ))),
        (0, None) => Err(Error::Invalid(format!("{name}: the layout holds no image"))),
        (1, _) => Ok(candidates.into_iter().next().expect("one candidate")),
        // Several entries for one tag, or untagged ones: a per-platform list.
        (_, Some(_)) => select_from(&candidates, platform, name),
        (_, None) if candidates.iter().all(|d| tag_of(d).is_none()) => {
            select_from(&candidates, platform, name)
        }
        (n, None) => Err(Error::Invalid(format!(
            "{name}: the layout holds {n} images; name one with :TAG ({})",
            tags()
        ))),
    }
}

/// Follows indexes down to the platform's manifest, then reads its config and finds its
/// layers.
pub(crate) fn resolve_descriptor(
    store: &dyn Store,
    mut desc: Descriptor,
    platform: &Platform,
) -> Result<ResolvedImage, Error> {
    for _ in 0..MAX_NESTING {
        let digest = descriptor_digest(&desc, &store.name())?;
        let blob_name = format!("{}: blob {digest}", store.name());
        let (_, bytes) = store.read_blob(&desc)?;
        match kind_of(desc.media_type().as_ref(), &blob_name)? {
            Kind::Index => desc = select_manifest_in(&bytes, platform, &blob_name)?,
            Kind::Manifest => {
                let manifest = parse_manifest_in(&bytes, &blob_name)?;
                let (config_digest, config_raw) = store.read_blob(manifest.config())?;
                let config = parse_config_in(
                    &config_raw,
                    &format!("{}: config {config_digest}", store.name()),
                )?;
                warn_if_foreign(&config, platform, &store.name());
                let layers = manifest
                    .layers()
                    .iter()
                    .map(|l| layer(store, l))
                    .collect::<Result<_, _>>()?;
                return Ok(ResolvedImage {
                    source: store.name(),
                    manifest_digest: Some(digest),
                    config_digest,
                    config_raw,
                    config,
                    layers,
                });
            }
        }
    }
    Err(Error::Invalid(format!(
        "{}: image indexes nested more than {MAX_NESTING} deep",
        store.name()
    )))
}

/// A layer's blob, which must be present with the size the manifest gives.
fn layer(store: &dyn Store, d: &Descriptor) -> Result<LayerBlob, Error> {
    let digest = descriptor_digest(d, &store.name())?;
    let at = store.blob(&digest)?;
    let len = at.len().map_err(|e| Error::io(at.describe(), e))?;
    if len != d.size() {
        return Err(Error::Invalid(format!(
            "{}: blob is {len} bytes, the manifest says {}",
            at.describe(),
            d.size()
        )));
    }
    Ok(LayerBlob::at(
        at,
        digest,
        d.media_type().to_string(),
        d.size(),
    ))
}

/// An image for another platform than the one asked for may still be wanted (an emulator, a
/// mislabelled image), so this only warns.
pub(crate) fn warn_if_foreign(config: &ImageConfiguration, platform: &Platform, name: &str) {
    let (os, arch) = (config.os().to_string(), config.architecture().to_string());
    if os != platform.os || arch != platform.architecture {
        tracing::warn!("{name}: the image is for {os}/{arch}, not {platform}");
    }
}

#[cfg(test)]
#[path = "layout_tests.rs"]
pub(crate) mod tests;
