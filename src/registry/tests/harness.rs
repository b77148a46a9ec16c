//! Shared pieces of the registry tests: a test registry in a private directory, a client with
//! short retry pauses, and an observer that records what it is told.

use super::super::*;
use crate::oci::Platform;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

#[path = "../../../tests/util/registry.rs"]
pub(super) mod test_registry;
pub(super) use test_registry::{noise, TestImage, WrittenLayout};
use test_registry::{write_layout, TestRegistry};

/// A test's directory and registry (stopped before the directory is removed).
pub(super) struct Env {
    pub reg: TestRegistry,
    pub dir: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Env {
    pub(super) fn new(name: &str, creds: Option<(&str, &str)>) -> Option<Env> {
        let tools = [
            "/usr/bin/docker-registry",
            "/usr/bin/skopeo",
            "/usr/bin/htpasswd",
        ];
        if let Some(missing) = tools.iter().find(|t| !Path::new(t).exists()) {
            eprintln!("SKIP: {missing} is missing (run install-deps); registry test skipped");
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("rsing-registry-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let reg = TestRegistry::start(&dir.join("registry"), creds);
        Some(Env { reg, dir })
    }

    /// Writes a layout of `images`, pushes it as `repo_tag`, returns what was written.
    pub(super) fn push(&self, repo_tag: &str, images: &[TestImage]) -> WrittenLayout {
        let layout = self
            .dir
            .join(format!("layout-{}", repo_tag.replace([':', '/'], "-")));
        let written = write_layout(&layout, "t", images);
        self.reg.push_layout(&layout, "t", repo_tag);
        written
    }

    /// Pushes a one-platform (host) image with these layers as `repo_tag`.
    pub(super) fn push_layers(
        &self,
        repo_tag: &str,
        layers: Vec<Vec<(&'static str, Vec<u8>)>>,
    ) -> WrittenLayout {
        self.push(repo_tag, &[image(&host_arch(), layers)])
    }

    pub(super) fn reference(&self, repo_tag: &str) -> Reference {
        Reference::parse(&format!("docker://{}", self.reg.reference(repo_tag))).unwrap()
    }

    /// How many blob GETs for `digest` the registry has answered.
    pub(super) fn blob_gets(&self, digest: &str) -> usize {
        let needle = format!("/blobs/{digest}");
        self.reg
            .log()
            .lines()
            .filter(|l| {
                l.contains("response completed") && l.contains("method=GET") && l.contains(&needle)
            })
            .count()
    }
}

pub(super) fn client(platform: &str) -> Registry {
    let mut reg = Registry::new(Options {
        platform: Platform::parse(platform).unwrap(),
        ..Options::default()
    })
    .unwrap();
    reg.backoff = Duration::from_millis(10);
    reg
}

/// A client for `r`'s platform-independent tests, and what it resolved `r` to.
pub(super) fn resolved(r: &Reference) -> (Registry, Remote) {
    let reg = client(&Platform::host().to_string());
    let remote = reg.resolve(r).unwrap();
    (reg, remote)
}

pub(super) fn host_arch() -> String {
    Platform::host().architecture
}

pub(super) fn image(arch: &str, layers: Vec<Vec<(&'static str, Vec<u8>)>>) -> TestImage<'static> {
    TestImage {
        arch: Box::leak(arch.to_string().into_boxed_str()),
        layers,
    }
}

pub(super) fn sha256_of(path: &Path) -> String {
    Digest::of(&std::fs::read(path).unwrap()).to_string()
}

/// Names in `blob_dir/sha256`, sorted.
pub(super) fn stored(blob_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(blob_dir.join("sha256"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Records observer calls: `progress` values per digest, and retries.
#[derive(Default)]
pub(super) struct Record {
    pub progress: Mutex<HashMap<String, Vec<u64>>>,
    pub finished: AtomicUsize,
    pub retries: Mutex<Vec<String>>,
}

impl Observer for Record {
    fn started(&self, _: &Digest, _: u64) {}
    fn progress(&self, digest: &Digest, done: u64) {
        let mut p = self.progress.lock().unwrap();
        p.entry(digest.to_string()).or_default().push(done);
    }
    fn finished(&self, _: &Digest) {
        self.finished.fetch_add(1, Ordering::SeqCst);
    }
    fn retrying(&self, what: &str, attempt: u32, why: &str) {
        self.retries
            .lock()
            .unwrap()
            .push(format!("{what} #{attempt}: {why}"));
    }
}
