//! Test images: OCI layout directories and archives built from layer tars, without tools.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::{json, Value};

use super::Digest;

/// A scratch directory for one test, removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("rsing-oci-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a test directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether a command-line tool is installed; prints a note when a test skips for its lack.
pub(crate) fn tool_available(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("note: {tool} is not installed; skipping the part of this test that needs it");
    }
    found
}

/// Runs a tool that must succeed.
pub(crate) fn run_tool(tool: &str, args: &[&str]) {
    let out = std::process::Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

pub(crate) fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => tar.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(tar).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
    }
}

/// A tar of regular files (mode 0644), in the order given.
pub(crate) fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// An image to write into a layout.
#[derive(Clone)]
pub(crate) struct ImageSpec {
    pub(crate) layers: Vec<(Vec<u8>, Compression)>,
    pub(crate) architecture: String,
    pub(crate) variant: Option<String>,
    /// The config's `config` object (`Env`, `Cmd`, `Entrypoint`, `WorkingDir`, `User`,
    /// `Labels`…), as JSON.
    pub(crate) config: Value,
}

impl ImageSpec {
    /// An image of the host's architecture with these layer tars.
    pub(crate) fn new(layers: Vec<(Vec<u8>, Compression)>) -> ImageSpec {
        let host = super::Platform::host();
        ImageSpec {
            layers,
            architecture: host.architecture,
            variant: host.variant,
            config: json!({"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]}),
        }
    }

    fn platform(&self) -> Value {
        let mut p = json!({"os": "linux", "architecture": self.architecture});
        if let Some(v) = &self.variant {
            p["variant"] = json!(v);
        }
        p
    }
}

fn media(c: Compression) -> &'static str {
    match c {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

/// An OCI image layout being written: blobs as they are added, `index.json` on every tag.
pub(crate) struct Layout {
    pub(crate) dir: PathBuf,
    index: Vec<Value>,
}

impl Layout {
    pub(crate) fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let layout = Layout {
            dir: dir.to_path_buf(),
            index: Vec::new(),
        };
        layout.write_index();
        layout
    }

    /// Stores a blob; returns its descriptor with `media_type`.
    pub(crate) fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let d = Digest::of(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(d.hex()), bytes).unwrap();
        json!({"mediaType": media_type, "digest": d.to_string(), "size": bytes.len()})
    }

    /// Stores an image's layers, config and manifest; returns the manifest's descriptor
    /// (with the image's platform, as an index entry).
    pub(crate) fn image(&self, spec: &ImageSpec) -> Value {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, c) in &spec.layers {
            layers.push(self.blob(media(*c), &compress(tar, *c)));
            diff_ids.push(Digest::of(tar).to_string());
        }
        let mut config = json!({
            "architecture": spec.architecture, "os": "linux",
            "config": spec.config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        if let Some(v) = &spec.variant {
            config["variant"] = json!(v);
        }
        let config = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).unwrap(),
        );
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": layers,
        });
        let mut d = self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        );
        d["platform"] = spec.platform();
        d
    }

    /// Stores an index over `manifests`; returns its descriptor.
    pub(crate) fn index(&self, manifests: Vec<Value>) -> Value {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        self.blob(
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index).unwrap(),
        )
    }

    /// A layout holding just `spec`, tagged `tag` if given.
    pub(crate) fn single(dir: &Path, spec: &ImageSpec, tag: Option<&str>) -> Layout {
        let mut layout = Layout::new(dir);
        let manifest = layout.image(spec);
        layout.add(manifest, tag);
        layout
    }

    /// Lists `descriptor` in `index.json`, tagged `tag` if given.
    pub(crate) fn add(&mut self, mut descriptor: Value, tag: Option<&str>) {
        if let Some(tag) = tag {
            descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        }
        self.index.push(descriptor);
        self.write_index();
    }

    fn write_index(&self) {
        let index = json!({"schemaVersion": 2, "manifests": self.index});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).unwrap(),
        )
        .unwrap();
    }

    /// Writes the layout as a tar (an `oci-archive`), members in sorted order.
    pub(crate) fn archive(&self, out: &Path) {
        let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
        b.append_dir_all(".", &self.dir).unwrap();
        b.finish().unwrap();
    }
}
