//! The build cache: a snapshot of a stage root after a step, keyed by everything the step
//! depended on (the previous key, the instruction, the content of copied files, build
//! arguments). Rebuilding after editing the last step restores the snapshot of the step before
//! it and runs only that step (Docker's layer cache, Charliecloud's build cache).
//!
//! Layout: `<dir>/<key>/{root/,owners.json,config.json}`, written under `<dir>/.tmp-<key>-PID`
//! and renamed into place, so a killed build leaves no half entry. Definition-file stages are
//! snapshots, copies (`copy_file_range`, which shares extents where the file system can).
//! Dockerfile steps are layers ([`super::layers`]): `<key>/{layer/,lowers,owners.json}`,
//! `layer` the overlayfs upper directory of the step, moved in by a rename, and `lowers` the
//! keys of the layers below it, bottom first; an entry whose lowers were cleaned away is a
//! miss.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::copy::{copy_tree, remove_tree};
use super::owners::Owners;

/// The cache, or none (`--no-cache`).
#[derive(Debug, Clone)]
pub struct StepCache {
    dir: Option<PathBuf>,
}

/// A running key.
pub fn key(prev: &str, parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes the names, modes, link targets and contents of `paths` (recursively).
pub fn content_hash(paths: &[PathBuf]) -> String {
    use std::os::unix::fs::PermissionsExt;
    let mut h = Sha256::new();
    // Names relative to each given path: staging directories differ from build to build.
    fn walk(p: &Path, name: &Path, h: &mut Sha256) {
        let Ok(st) = std::fs::symlink_metadata(p) else {
            return;
        };
        h.update(name.as_os_str().as_encoded_bytes());
        h.update(st.permissions().mode().to_le_bytes());
        if st.file_type().is_symlink() {
            if let Ok(t) = std::fs::read_link(p) {
                h.update(t.as_os_str().as_encoded_bytes());
            }
        } else if st.is_dir() {
            let mut names: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            names.sort();
            for n in names {
                let child = name.join(n.file_name().unwrap_or_default());
                walk(&n, &child, h);
            }
        } else if let Ok(mut f) = std::fs::File::open(p) {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n) = std::io::Read::read(&mut f, &mut buf) {
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
    }
    for p in paths {
        walk(p, Path::new(p.file_name().unwrap_or_default()), &mut h);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl StepCache {
    pub fn new(dir: Option<PathBuf>) -> StepCache {
        StepCache { dir }
    }

    /// The cache directory, or none with `--no-cache`.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    fn entry(&self, key: &str) -> Option<PathBuf> {
        let e = self.dir.as_ref()?.join(key);
        e.join("owners.json").exists().then_some(e)
    }

    /// Whether `key` has a snapshot (a root) or a config-only entry.
    pub fn has(&self, key: &str) -> bool {
        self.entry(key).is_some()
    }

    /// The config stored with `key`.
    pub fn config(&self, key: &str) -> Option<serde_json::Value> {
        let bytes = std::fs::read(self.entry(key)?.join("config.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Copies the snapshot of `key` to new directory `dest`; returns its owners.
    pub fn restore(&self, key: &str, dest: &Path) -> std::io::Result<Owners> {
        let entry = self
            .entry(key)
            .ok_or_else(|| std::io::Error::other("cache entry vanished"))?;
        copy_tree(&entry.join("root"), dest)?;
        // Use time, for `rsing cache clean --days`.
        let _ = std::fs::File::open(entry.join("owners.json"));
        Owners::load(&entry.join("owners.json"))
    }

    /// The layer directories of `key` and the ones below it (bottom first) and its owners,
    /// when the entry and all its lowers are there.
    pub fn layers(&self, key: &str) -> Option<(Vec<(String, PathBuf)>, Owners)> {
        let dir = self.dir.as_ref()?;
        let entry = self.entry(key)?;
        let lowers: Vec<String> =
            serde_json::from_slice(&std::fs::read(entry.join("lowers")).ok()?).ok()?;
        let mut out = Vec::new();
        for k in lowers.iter().chain(std::iter::once(&key.to_string())) {
            let layer = dir.join(k).join("layer");
            if !layer.is_dir() || !dir.join(k).join("owners.json").exists() {
                return None;
            }
            // Use time, for `rsing cache clean --days`.
            let _ = std::fs::File::open(dir.join(k).join("owners.json"));
            out.push((k.clone(), layer));
        }
        let owners = Owners::load(&entry.join("owners.json")).ok()?;
        Some((out, owners))
    }

    /// Moves layer directory `layer` (on the cache's file system) into the cache as `key`
    /// over the layers `lowers`; returns its new place, or `None` when it stays where it is
    /// (no cache, another build stored it first, or a failure: not fatal to a build).
    pub fn save_layer(
        &self,
        key: &str,
        layer: &Path,
        lowers: &[String],
        owners: &Owners,
        config: Option<&serde_json::Value>,
    ) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        if self.has(key) || std::fs::create_dir_all(dir).is_err() {
            return None;
        }
        let tmp = dir.join(format!(".tmp-{key}-{}", std::process::id()));
        let ok = std::fs::create_dir(&tmp).is_ok()
            && std::fs::write(
                tmp.join("lowers"),
                serde_json::to_vec(lowers).unwrap_or_default(),
            )
            .is_ok()
            && write_meta(&tmp, config, owners)
            && std::fs::rename(layer, tmp.join("layer")).is_ok();
        if ok && std::fs::rename(&tmp, dir.join(key)).is_ok() {
            return Some(dir.join(key).join("layer"));
        }
        // Put the layer back for this build.
        let _ = std::fs::rename(tmp.join("layer"), layer);
        remove_tree(&tmp);
        None
    }

    /// Stores `root` (or, with `None`, only the config) under `key`. Failures are not fatal
    /// to a build: the entry is simply missing next time.
    pub fn save(
        &self,
        key: &str,
        root: Option<&Path>,
        owners: &Owners,
        config: Option<&serde_json::Value>,
    ) {
        let Some(dir) = &self.dir else { return };
        if self.has(key) || std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let tmp = dir.join(format!(".tmp-{key}-{}", std::process::id()));
        let ok = std::fs::create_dir(&tmp).is_ok()
            && root.is_none_or(|r| copy_tree(r, &tmp.join("root")).is_ok())
            && write_meta(&tmp, config, owners)
            && std::fs::rename(&tmp, dir.join(key)).is_ok();
        if !ok {
            remove_tree(&tmp);
        }
    }
}

/// Writes an entry's image config (where there is one) and ownership record into `tmp`.
fn write_meta(tmp: &Path, config: Option<&serde_json::Value>, owners: &Owners) -> bool {
    config.is_none_or(|c| {
        std::fs::write(
            tmp.join("config.json"),
            serde_json::to_vec(c).unwrap_or_default(),
        )
        .is_ok()
    }) && owners.save(&tmp.join("owners.json")).is_ok()
}
