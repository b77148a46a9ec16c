//! A real OCI distribution registry for tests: Debian's `docker-registry` (distribution 2.8)
//! on 127.0.0.1 at a free port, filesystem storage in the test's directory, optional htpasswd
//! basic auth; plus a small OCI layout writer and `skopeo copy` to push layouts into it.
//!
//! Self-contained (std, sha2, serde_json, flate2, tar) so the registry module's unit tests can
//! include it with `#[path]` as well. Works as an unprivileged user.

#![allow(dead_code)]

use sha2::{Digest as _, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Tools these helpers run (check them with `have_tools` first).
pub const REGISTRY_TOOLS: &[&str] = &["docker-registry", "skopeo", "htpasswd"];

/// A running registry; killed on drop.
pub struct TestRegistry {
    /// `127.0.0.1:PORT`, the registry part of references to it.
    pub addr: String,
    /// Where the config, log, htpasswd and storage live.
    pub dir: PathBuf,
    /// `user:password` when started with basic auth.
    pub creds: Option<String>,
    child: Child,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl TestRegistry {
    /// Starts a registry storing under `dir` (created), with basic auth for `creds`
    /// (`(user, password)`) when given, and waits until `/v2/` answers.
    pub fn start(dir: &Path, creds: Option<(&str, &str)>) -> TestRegistry {
        std::fs::create_dir_all(dir).expect("creating the registry dir");
        let dir = dir.canonicalize().expect("canonical registry dir");
        let auth = match creds {
            Some((user, password)) => {
                let line = run(Command::new("htpasswd").args(["-Bbn", user, password]));
                let file = dir.join("htpasswd");
                std::fs::write(&file, line).expect("writing htpasswd");
                format!(
                    "auth:\n  htpasswd:\n    realm: rsing-test\n    path: {}\n",
                    file.display()
                )
            }
            None => String::new(),
        };
        let mut last_log = String::new();
        // A port picked free can be taken before the registry binds it: try a few.
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      \
                 enabled: false\nhttp:\n  addr: {addr}\n{auth}",
                dir.join("storage").display()
            );
            let config_path = dir.join("config.yml");
            std::fs::write(&config_path, config).expect("writing the registry config");
            let log = std::fs::File::create(dir.join("registry.log")).expect("registry log");
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .spawn()
                .expect("starting docker-registry");
            let mut reg = TestRegistry {
                addr,
                dir: dir.clone(),
                creds: creds.map(|(u, p)| format!("{u}:{p}")),
                child,
            };
            if reg.wait_ready() {
                return reg;
            }
            last_log = reg.log();
        }
        panic!("docker-registry did not start; its log:\n{last_log}");
    }

    /// Polls `/v2/` until it answers (200, or 401 with auth) or the registry exits.
    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Some(status) = self.get_status("/v2/") {
                if status == 200 || status == 401 {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The HTTP status of an anonymous GET of `path`, or `None` if the connection failed.
    pub fn get_status(&self, path: &str) -> Option<u16> {
        let mut stream = TcpStream::connect(&self.addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr);
        stream.write_all(request.as_bytes()).ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    }

    /// Everything the registry logged (requests included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }

    /// `127.0.0.1:PORT/REPO:TAG` for a `repo_tag` of `REPO:TAG`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.addr)
    }

    /// Pushes the image (or index) tagged `tag_ref` in the OCI layout `layout` as
    /// `REPO:TAG` (`repo_tag`), every platform included.
    pub fn push_layout(&self, layout: &Path, tag_ref: &str, repo_tag: &str) {
        let mut cmd = Command::new("skopeo");
        // Its blob-info cache goes under $HOME: keep it in the registry's directory.
        cmd.env("HOME", &self.dir)
            .args(["--insecure-policy", "copy", "--quiet", "--all"])
            .arg("--dest-tls-verify=false");
        if let Some(creds) = &self.creds {
            cmd.arg("--dest-creds").arg(creds);
        }
        cmd.arg(format!("oci:{}:{tag_ref}", layout.display()))
            .arg(format!("docker://{}", self.reference(repo_tag)));
        run(&mut cmd);
    }

    /// The file holding blob `digest` (`sha256:…`) in the registry's storage, for tests that
    /// damage it.
    pub fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One platform's image for [`write_layout`]: its architecture (`amd64`, `arm64`…) and one
/// layer per entry of `layers`, each a list of `(path, content)` files.
pub struct TestImage<'a> {
    pub arch: &'a str,
    pub layers: Vec<Vec<(&'a str, Vec<u8>)>>,
}

/// What [`write_layout`] wrote: digests as `sha256:…`.
#[derive(Debug, Clone)]
pub struct WrittenLayout {
    /// The index's digest when there are several images.
    pub index: Option<String>,
    /// Per image, in order: the manifest, config and layer digests.
    pub manifests: Vec<String>,
    pub configs: Vec<String>,
    pub layers: Vec<Vec<String>>,
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Stores `data` as a blob of the layout at `dir`; returns its descriptor.
fn put_blob(dir: &Path, media_type: &str, data: &[u8]) -> serde_json::Value {
    let hex = sha256_hex(data);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("layout blobs dir");
    std::fs::write(blobs.join(&hex), data).expect("writing a blob");
    serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": data.len()})
}

/// A gzip-compressed tar of `files` (regular files, mode 0644, mtime 0), and the digest of
/// the uncompressed tar (the config's diff_id).
fn layer_tar(files: &[(&str, Vec<u8>)]) -> (Vec<u8>, String) {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, &content[..])
            .expect("appending to a layer tar");
    }
    let tar = builder.into_inner().expect("finishing a layer tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).expect("gzip");
    (
        gz.finish().expect("gzip"),
        format!("sha256:{}", sha256_hex(&tar)),
    )
}

/// Writes an OCI layout at `dir` whose `index.json` names `tag`: one image manifest, or an
/// image index over several (one per platform) when `images` has more than one.
pub fn write_layout(dir: &Path, tag: &str, images: &[TestImage]) -> WrittenLayout {
    std::fs::create_dir_all(dir).expect("layout dir");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    let mut out = WrittenLayout {
        index: None,
        manifests: Vec::new(),
        configs: Vec::new(),
        layers: Vec::new(),
    };
    let mut descriptors = Vec::new();
    for image in images {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        for files in &image.layers {
            let (blob, diff_id) = layer_tar(files);
            layer_descs.push(put_blob(
                dir,
                "application/vnd.oci.image.layer.v1.tar+gzip",
                &blob,
            ));
            diff_ids.push(diff_id);
        }
        let config = serde_json::json!({
            "architecture": image.arch,
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config_desc = put_blob(
            dir,
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).expect("config JSON"),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": layer_descs,
        });
        let mut desc = put_blob(
            dir,
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).expect("manifest JSON"),
        );
        desc["platform"] = serde_json::json!({"os": "linux", "architecture": image.arch});
        out.manifests
            .push(desc["digest"].as_str().unwrap_or_default().to_string());
        out.configs.push(
            config_desc["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
        out.layers.push(
            layer_descs
                .iter()
                .map(|d| d["digest"].as_str().unwrap_or_default().to_string())
                .collect(),
        );
        descriptors.push(desc);
    }
    let mut top = if descriptors.len() == 1 {
        descriptors.remove(0)
    } else {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": descriptors,
        });
        let desc = put_blob(
            dir,
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index).expect("index JSON"),
        );
        out.index = Some(desc["digest"].as_str().unwrap_or_default().to_string());
        desc
    };
    if let Some(obj) = top.as_object_mut() {
        obj.remove("platform");
    }
    top["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [top]});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&index).expect("index.json"),
    )
    .expect("writing index.json");
    out
}

/// `len` bytes that do not compress (a sha256 chain), so a layer's blob is about `len` long.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(seed.to_le_bytes());
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}
