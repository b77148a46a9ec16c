//! OCI image layouts built by hand, for the build and pull tests: layers from a declarative list
//! of entries (directories, files, symlinks, hard links, whiteouts, opaque markers), plain,
//! gzip or zstd; a config with env, entrypoint, cmd, labels and architecture; a tagged
//! `index.json`, or a tagged nested index for a multi-arch image. Writing the layout ourselves
//! (rather than with a tool) lets a test put exactly the tar entries it wants into each layer.
//! [`compare`] holds the independent side of the tree comparisons.

mod compare;

pub use compare::{assert_dir_empty, assert_same_listing, listing, sif_listing, sif_objects};
pub use compare::{squashfs_offset, tool};
pub use compare::{umoci_unpack, unsquashfs_sif, Listing};

use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The mtime of entries that do not set their own, so that a layout is byte-reproducible.
pub const MTIME: u64 = 1_700_000_000;

/// What a layer entry is.
#[derive(Clone, Debug)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    /// A hard link to `target` (a path in this or a lower layer, without a leading slash).
    HardLink(String),
}

/// One tar entry of a layer; `path` is relative (no leading slash).
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: String,
    pub kind: Kind,
    pub mode: u32,
    pub mtime: u64,
}

impl Entry {
    fn new(path: &str, kind: Kind, mode: u32) -> Entry {
        Entry {
            path: path.trim_start_matches('/').to_string(),
            kind,
            mode,
            mtime: MTIME,
        }
    }

    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }

    pub fn mtime(mut self, mtime: u64) -> Entry {
        self.mtime = mtime;
        self
    }
}

pub fn dir(path: &str) -> Entry {
    Entry::new(path, Kind::Dir, 0o755)
}

pub fn file(path: &str, data: impl Into<Vec<u8>>) -> Entry {
    Entry::new(path, Kind::File(data.into()), 0o644)
}

pub fn symlink(path: &str, target: &str) -> Entry {
    Entry::new(path, Kind::Symlink(target.to_string()), 0o777)
}

pub fn hardlink(path: &str, target: &str) -> Entry {
    let target = target.trim_start_matches('/').to_string();
    Entry::new(path, Kind::HardLink(target), 0o644)
}

/// The whiteout that deletes `path` of the lower layers: an empty `.wh.<name>` beside it.
pub fn whiteout(path: &str) -> Entry {
    let path = path.trim_start_matches('/');
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    let marker = match parent {
        "" => format!(".wh.{name}"),
        p => format!("{p}/.wh.{name}"),
    };
    Entry::new(&marker, Kind::File(Vec::new()), 0o644)
}

/// The marker that hides everything the lower layers have in `dir`.
pub fn opaque(dir: &str) -> Entry {
    let dir = dir.trim_matches('/');
    Entry::new(
        &format!("{dir}/.wh..wh..opq"),
        Kind::File(Vec::new()),
        0o644,
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
    Zstd,
}

#[derive(Clone, Debug)]
pub struct Layer {
    pub compression: Compression,
    pub entries: Vec<Entry>,
}

impl Layer {
    pub fn new(compression: Compression, entries: Vec<Entry>) -> Layer {
        Layer {
            compression,
            entries,
        }
    }

    /// The uncompressed tar, entries in the order given, owned by 0:0.
    pub fn tar(&self) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(e.mode);
            h.set_mtime(e.mtime);
            h.set_uid(0);
            h.set_gid(0);
            let done = match &e.kind {
                Kind::Dir => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{}/", e.path), &[][..])
                }
                Kind::File(data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, &e.path, &data[..])
                }
                Kind::Symlink(target) | Kind::HardLink(target) => {
                    let symlink = matches!(e.kind, Kind::Symlink(_));
                    h.set_entry_type(match symlink {
                        true => tar::EntryType::Symlink,
                        false => tar::EntryType::Link,
                    });
                    h.set_size(0);
                    b.append_link(&mut h, &e.path, target)
                }
            };
            done.unwrap_or_else(|err| panic!("adding {} to a layer tar: {err}", e.path));
        }
        b.into_inner().expect("finishing a layer tar")
    }

    /// The blob made of `tar` (this layer's), and its media type.
    pub fn blob(&self, tar: &[u8]) -> (Vec<u8>, &'static str) {
        match self.compression {
            Compression::Plain => (tar.to_vec(), "application/vnd.oci.image.layer.v1.tar"),
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).expect("gzip");
                let gz = e.finish().expect("gzip");
                (gz, "application/vnd.oci.image.layer.v1.tar+gzip")
            }
            Compression::Zstd => {
                let zst = zstd::encode_all(tar, 3).expect("zstd");
                (zst, "application/vnd.oci.image.layer.v1.tar+zstd")
            }
        }
    }
}

/// The parts of an image config the tests set.
#[derive(Clone, Debug)]
pub struct Config {
    pub arch: String,
    pub env: Vec<String>,
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            arch: host_arch().to_string(),
            env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
            entrypoint: None,
            cmd: None,
            labels: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Image {
    pub config: Config,
    pub layers: Vec<Layer>,
}

/// The digests of what `Layout::add_image` wrote (`sha256:<hex>`).
#[derive(Clone, Debug)]
pub struct Written {
    pub manifest: String,
    pub layers: Vec<String>,
}

/// The OCI name of this host's architecture.
pub fn host_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

/// The busybox rootfs of the fixtures (`Fixture::Sandbox`, without its `/.singularity.d`) as
/// layer entries, in walk order, with the fixed mtime.
pub fn busybox_entries(sandbox: &Path) -> Vec<Entry> {
    let mut out = Vec::new();
    walk(sandbox, sandbox, &mut out);
    out
}

fn walk(root: &Path, at: &Path, out: &mut Vec<Entry>) {
    let mut children: Vec<PathBuf> = std::fs::read_dir(at)
        .unwrap_or_else(|e| panic!("reading {}: {e}", at.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    children.sort();
    for path in children {
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if rel == ".singularity.d" {
            continue;
        }
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            out.push(dir(&rel).mode(mode));
            walk(root, &path, out);
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).expect("readlink");
            out.push(symlink(&rel, &target.to_string_lossy()));
        } else {
            let data = std::fs::read(&path).expect("reading a rootfs file");
            out.push(file(&rel, data).mode(mode));
        }
    }
}

/// A one-layer (gzip) busybox image with the default config.
pub fn busybox_image(sandbox: &Path) -> Image {
    Image {
        config: Config::default(),
        layers: vec![Layer::new(Compression::Gzip, busybox_entries(sandbox))],
    }
}

/// Busybox images for amd64 and arm64 that differ in `/arch.txt` (the architecture's name),
/// for the multi-arch tests.
pub fn busybox_per_arch(sandbox: &Path) -> Vec<Image> {
    ["amd64", "arm64"]
        .into_iter()
        .map(|arch| {
            let mut image = busybox_image(sandbox);
            image.config.arch = arch.into();
            let marker = file("arch.txt", format!("{arch}\n"));
            image
                .layers
                .push(Layer::new(Compression::Gzip, vec![marker]));
            image
        })
        .collect()
}

fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", super::sha256_hex(bytes))
}

/// An OCI image layout directory being written.
pub struct Layout {
    pub dir: PathBuf,
}

impl Layout {
    /// An empty layout at `dir` (created).
    pub fn create(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("creating a layout");
        let layout = Layout {
            dir: dir.to_path_buf(),
        };
        layout.write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        layout.write_index(&[]);
        layout
    }

    /// `oci:DIR:TAG`, the rsing and skopeo name of a tagged image here.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }

    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.dir.join("blobs/sha256").join(hex)
    }

    /// Writes the image's blobs and tags its manifest as `tag`.
    pub fn add_image(&self, tag: &str, image: &Image) -> Written {
        let (written, descriptor) = self.put_image(image);
        self.tag(descriptor, tag);
        written
    }

    /// Writes each image and a nested index of their manifests (with platforms), tagged `tag`;
    /// returns the index digest.
    pub fn add_multiarch(&self, tag: &str, images: &[Image]) -> (String, Vec<Written>) {
        let mut descriptors = Vec::new();
        let mut written = Vec::new();
        for image in images {
            let (w, mut d) = self.put_image(image);
            d["platform"] = json!({"architecture": image.config.arch, "os": "linux"});
            descriptors.push(d);
            written.push(w);
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": descriptors,
        });
        let descriptor = self.put_json(&index, "application/vnd.oci.image.index.v1+json");
        let digest = descriptor["digest"].as_str().unwrap().to_string();
        self.tag(descriptor, tag);
        (digest, written)
    }

    fn put_image(&self, image: &Image) -> (Written, Value) {
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for layer in &image.layers {
            let tar = layer.tar();
            let (blob, media_type) = layer.blob(&tar);
            diff_ids.push(digest_of(&tar));
            layers.push(json!({
                "mediaType": media_type,
                "digest": self.put_blob(&blob),
                "size": blob.len(),
            }));
        }
        let c = &image.config;
        let mut inner = json!({"Env": c.env, "Labels": c.labels});
        if let Some(ep) = &c.entrypoint {
            inner["Entrypoint"] = json!(ep);
        }
        if let Some(cmd) = &c.cmd {
            inner["Cmd"] = json!(cmd);
        }
        let config = json!({
            "created": "2023-11-14T22:13:20Z",
            "architecture": c.arch,
            "os": "linux",
            "config": inner,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": image.layers.iter().map(|_| json!({"created_by": "tests/util/oci.rs"}))
                .collect::<Vec<_>>(),
        });
        let config = self.put_json(&config, "application/vnd.oci.image.config.v1+json");
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layers,
        });
        let descriptor = self.put_json(&manifest, "application/vnd.oci.image.manifest.v1+json");
        let digest = |v: &Value| v["digest"].as_str().unwrap().to_string();
        let written = Written {
            manifest: digest(&descriptor),
            layers: layers.iter().map(digest).collect(),
        };
        (written, descriptor)
    }

    /// Stores `value` as a blob; returns its descriptor.
    fn put_json(&self, value: &Value, media_type: &str) -> Value {
        let bytes = serde_json::to_vec(value).unwrap();
        json!({"mediaType": media_type, "digest": self.put_blob(&bytes), "size": bytes.len()})
    }

    fn put_blob(&self, bytes: &[u8]) -> String {
        let digest = digest_of(bytes);
        std::fs::write(self.blob_path(&digest), bytes).expect("writing a blob");
        digest
    }

    fn tag(&self, mut descriptor: Value, tag: &str) {
        descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        let index: Value = serde_json::from_slice(&self.read("index.json")).unwrap();
        let mut manifests = index["manifests"].as_array().cloned().unwrap_or_default();
        manifests.push(descriptor);
        self.write_index(&manifests);
    }

    fn write_index(&self, manifests: &[Value]) {
        let index = json!({"schemaVersion": 2, "manifests": manifests});
        self.write("index.json", &serde_json::to_vec(&index).unwrap());
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).expect("reading a layout file")
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.join(name), bytes).expect("writing a layout file");
    }
}
