//! `oci-archive:FILE[:TAG]` and `docker-archive:FILE[:REF]`: image tars read in place. The tar
//! is walked once to record where each member's data lies; blobs are then byte ranges of the
//! archive, so nothing is extracted. Compressed archives (`.tar.gz`) are refused: a range of a
//! compressed stream cannot be read in place.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;

use super::layout::{resolve_store, warn_if_foreign};
use super::manifest::{parse_config_in, parse_json, DOCKER_LAYER_TAR};
use super::store::{exists, split_tag, Location, Store};
use super::{Digest, Error, LayerBlob, Platform, ResolvedImage, MAX_JSON_SIZE};

/// Symlink and hard-link chains longer than this are taken as loops.
const MAX_LINKS: usize = 8;

enum Member {
    Data { offset: u64, len: u64 },
    Link(String),
}

/// The members of an uncompressed tar, by normalised path.
pub(crate) struct TarStore {
    archive: Arc<PathBuf>,
    members: HashMap<String, Member>,
}

/// `a/./b/../c` → `a/c`, without a leading `/` or `./`: member names as the manifests use them.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// What a compressed archive starts with, to refuse it by name.
fn compression_of(magic: &[u8]) -> Option<&'static str> {
    [
        (&[0x1f, 0x8b][..], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd][..], "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0][..], "xz"),
        (&b"BZh"[..], "bzip2"),
    ]
    .into_iter()
    .find(|(m, _)| magic.starts_with(m))
    .map(|(_, name)| name)
}

/// Opens an archive without blocking on a FIFO or device named by mistake (`O_NONBLOCK`, then
/// `fstat` of what was opened): only regular files are archives.
fn open_regular(path: &str) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a FIFO, socket or device cannot be an image archive)",
        ));
    }
    Ok(file)
}

impl TarStore {
    pub(crate) fn open(path: &str) -> Result<TarStore, Error> {
        let fail = |e| Error::io(path, e);
        let mut file = open_regular(path).map_err(fail)?;
        let mut magic = Vec::new();
        (&mut file).take(6).read_to_end(&mut magic).map_err(fail)?;
        if let Some(c) = compression_of(&magic) {
            return Err(Error::Unsupported(format!(
                "{path}: is a {c}-compressed archive; rsing reads image archives in place and needs the plain tar (decompress it first)"
            )));
        }
        let file = File::open(path).map_err(fail)?;
        let mut tar = tar::Archive::new(BufReader::new(file));
        let mut members = HashMap::new();
        for entry in tar.entries_with_seek().map_err(fail)? {
            let entry = entry.map_err(fail)?;
            let name = normalize(&String::from_utf8_lossy(&entry.path_bytes()));
            let link = || {
                let target = entry.link_name_bytes().unwrap_or_default();
                String::from_utf8_lossy(&target).into_owned()
            };
            let member = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => Member::Data {
                    offset: entry.raw_file_position(),
                    len: entry.size(),
                },
                // Relative to the link's directory (skopeo writes `ID/layer.tar -> ../X.tar`).
                tar::EntryType::Symlink => {
                    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                    Member::Link(normalize(&format!("{dir}/{}", link())))
                }
                tar::EntryType::Link => Member::Link(normalize(&link())),
                _ => continue,
            };
            members.insert(name, member);
        }
        tracing::debug!("{path}: {} archive members", members.len());
        Ok(TarStore {
            archive: Arc::new(PathBuf::from(path)),
            members,
        })
    }
}

impl Store for TarStore {
    fn name(&self) -> String {
        self.archive.display().to_string()
    }

    fn locate(&self, member: &str) -> Option<Location> {
        let mut name = normalize(member);
        for _ in 0..MAX_LINKS {
            match self.members.get(&name)? {
                Member::Link(target) => name = target.clone(),
                Member::Data { offset, len } => {
                    return Some(Location::Range {
                        archive: self.archive.clone(),
                        member: name,
                        offset: *offset,
                        len: *len,
                    })
                }
            }
        }
        None
    }
}

/// Splits `FILE[:REF]`. A reference may contain ':' (`name:tag`), so the file is the shortest
/// prefix that exists; if none does, the layout rule applies (and opening names the file).
fn split_file_ref(spec: &str) -> (&str, Option<&str>) {
    if exists(spec) {
        return (spec, None);
    }
    spec.match_indices(':')
        .map(|(at, _)| (&spec[..at], &spec[at + 1..]))
        .find(|(file, r)| !r.is_empty() && exists(file))
        .map(|(file, r)| (file, Some(r)))
        .unwrap_or_else(|| split_tag(spec))
}

/// Resolves `FILE[:TAG]` (the text after `oci-archive:`): a tar of an OCI image layout.
pub fn resolve_oci_archive(spec: &str, platform: &Platform) -> Result<ResolvedImage, Error> {
    let (file, tag) = split_file_ref(spec);
    let store = TarStore::open(file)?;
    let mut image = resolve_store(&store, tag, platform)?;
    image.source = format!("oci-archive:{spec}");
    Ok(image)
}

/// One image of a `docker save` archive's `manifest.json`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// `busybox` → `busybox:latest`, `docker.io/library/x:1` → `x:1`: references as docker
/// writes and users type them, compared in one spelling.
fn normalize_ref(r: &str) -> String {
    let mut r = r;
    for prefix in ["docker.io/", "index.docker.io/"] {
        r = r.strip_prefix(prefix).unwrap_or(r);
    }
    let r = r.strip_prefix("library/").unwrap_or(r);
    let last = r.rsplit('/').next().unwrap_or(r);
    if last.contains(':') || last.contains('@') {
        r.to_string()
    } else {
        format!("{r}:latest")
    }
}

fn choose_entry<'a>(
    entries: &'a [DockerEntry],
    reference: Option<&str>,
    name: &str,
) -> Result<&'a DockerEntry, Error> {
    let tags = || {
        let t: Vec<&str> = entries
            .iter()
            .flat_map(|e| e.repo_tags.iter().flatten().map(String::as_str))
            .collect();
        if t.is_empty() {
            "it has no tags".to_string()
        } else {
            format!("tags: {}", t.join(", "))
        }
    };
    match reference {
        None if entries.len() == 1 => Ok(&entries[0]),
        None if entries.is_empty() => Err(Error::Invalid(format!("{name}: lists no image"))),
        None => Err(Error::Invalid(format!(
            "{name}: holds {} images; name one with :REF or :@N ({})",
            entries.len(),
            tags()
        ))),
        Some(r) => {
            let by_index = r.strip_prefix('@').and_then(|n| n.parse::<usize>().ok());
            let wanted = normalize_ref(r);
            let found = match by_index {
                Some(n) => entries.get(n),
                None => entries.iter().find(|e| {
                    e.repo_tags
                        .iter()
                        .flatten()
                        .any(|t| normalize_ref(t) == wanted)
                }),
            };
            found.ok_or_else(|| Error::Invalid(format!("{name}: no image '{r}' ({})", tags())))
        }
    }
}

/// Resolves `FILE[:REF]` (the text after `docker-archive:`): `docker save` output, with
/// either `ID/layer.tar` layers or (Docker 25+) an OCI `blobs/` tree. REF is a `RepoTags`
/// entry or `@N`, the N-th image.
pub fn resolve_docker_archive(spec: &str, platform: &Platform) -> Result<ResolvedImage, Error> {
    let (file, reference) = split_file_ref(spec);
    let store = TarStore::open(file)?;
    let at = store.require("manifest.json")?;
    let name = at.describe();
    let entries: Vec<DockerEntry> = parse_json(&at.read_all(None, MAX_JSON_SIZE)?, &name)?;
    let entry = choose_entry(&entries, reference, &name)?;

    let config_at = store.require(&entry.config)?;
    let config_raw = config_at.read_all(None, MAX_JSON_SIZE)?;
    let config_digest = Digest::of(&config_raw);
    if let Some(named) = digest_in_name(&entry.config).filter(|d| *d != config_digest) {
        return Err(Error::Invalid(format!(
            "{}: config has the wrong content (its digest is {config_digest}, not {named})",
            config_at.describe()
        )));
    }
    let config = parse_config_in(&config_raw, &config_at.describe())?;
    warn_if_foreign(&config, platform, &store.name());
    let diff_ids = config.rootfs().diff_ids();
    if !diff_ids.is_empty() && diff_ids.len() != entry.layers.len() {
        return Err(Error::Invalid(format!(
            "{name}: {} layers listed, but the config's rootfs has {} diff_ids",
            entry.layers.len(),
            diff_ids.len()
        )));
    }
    let layers = entry
        .layers
        .iter()
        .enumerate()
        .map(|(i, path)| docker_layer(&store, path, diff_ids.get(i)))
        .collect::<Result<_, _>>()?;
    Ok(ResolvedImage {
        source: format!("docker-archive:{spec}"),
        manifest_digest: None,
        config_digest,
        config_raw,
        config,
        layers,
    })
}

/// `blobs/sha256/HEX`, `HEX.json`, `HEX.tar`: names that state their content's digest.
fn digest_in_name(path: &str) -> Option<Digest> {
    let base = path.rsplit('/').next()?;
    let stem = base
        .strip_suffix(".json")
        .or_else(|| base.strip_suffix(".tar"))
        .unwrap_or(base);
    Digest::parse(&format!("sha256:{stem}")).ok()
}

/// A docker-archive layer. Its digest is the blob's own when the name states it; for an
/// uncompressed tar it is the config's diff_id; otherwise it is computed by reading the layer.
fn docker_layer(
    store: &TarStore,
    path: &str,
    diff_id: Option<&String>,
) -> Result<LayerBlob, Error> {
    let at = store.require(path)?;
    let fail = |e| Error::io(at.describe(), e);
    let len = at.len().map_err(fail)?;
    let mut magic = Vec::new();
    at.open()
        .map_err(fail)?
        .take(6)
        .read_to_end(&mut magic)
        .map_err(fail)?;
    let media_type = match compression_of(&magic) {
        Some("gzip") => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Some("zstd") => "application/vnd.docker.image.rootfs.diff.tar.zstd",
        Some(c) => {
            return Err(Error::Unsupported(format!(
                "{}: layer is {c}-compressed; gzip, zstd and plain tar are supported",
                at.describe()
            )))
        }
        None => DOCKER_LAYER_TAR,
    };
    let from_config = diff_id
        .filter(|_| media_type == DOCKER_LAYER_TAR)
        .map(|d| {
            Digest::parse(d).map_err(|e| Error::Invalid(format!("{}: config: {e}", store.name())))
        })
        .transpose()?;
    // A `blobs/sha256/` name is the blob's digest; an `X.tar` name only says what the
    // uncompressed tar hashes to.
    let named = digest_in_name(path)
        .filter(|_| normalize(path).starts_with("blobs/sha256/") || media_type == DOCKER_LAYER_TAR);
    let digest = match named.or(from_config) {
        Some(d) => d,
        None => {
            tracing::debug!("{}: hashing the layer to learn its digest", at.describe());
            let mut hasher = Hasher(sha2::Sha256::default());
            std::io::copy(&mut at.open().map_err(fail)?, &mut hasher).map_err(fail)?;
            hasher.finish()
        }
    };
    Ok(LayerBlob::at(at, digest, media_type.to_string(), len))
}

/// An `io::Write` that hashes.
struct Hasher(sha2::Sha256);

impl std::io::Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(&mut self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Hasher {
    fn finish(self) -> Digest {
        Digest::from_sha256(sha2::Digest::finalize(self.0).as_slice())
    }
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
