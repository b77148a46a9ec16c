//! `rsing push … oras://`, `pull|exec|run oras://`, and lazy starts (`exec` before the image is
//! downloaded) from a real registry (Debian's docker-registry) and from an `http://` URL, with
//! a proxy that counts the bytes fetched and drops connections on demand.

use crate::fixtures::Fixture;
use crate::util::http::{Backend, HttpServer};
use crate::util::registry::{TestRegistry, REGISTRY_TOOLS};
use crate::util::{have_tools, sha256_file, RsingCmd, TestEnv};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const USER: &str = "bob";
const PASSWORD: &str = "oras pass";
const SIF_LAYER: &str = "application/vnd.sylabs.sif.layer.v1.sif";
const SIF_CONFIG: &str = "application/vnd.sylabs.sif.config.v1+json";

/// `rsing` with the cache at `<test dir>/<cache>`, small chunks (the busybox image is ~1 MB,
/// so that "fetched before the command ends" means something), and credentials when given.
fn rsing(t: &TestEnv, cache: &str) -> RsingCmd {
    t.rsing_cached(cache).env("RSING_LAZY_CHUNK_KIB", "16")
}

fn with_auth(cmd: RsingCmd) -> RsingCmd {
    cmd.env("RSING_DOCKER_USERNAME", USER)
        .env("RSING_DOCKER_PASSWORD", PASSWORD)
}

/// The Apptainer-layout busybox SIF, if it and the registry tools are there (else a skip).
fn prerequisites() -> Option<PathBuf> {
    let sif = crate::fixtures::get(Fixture::SifApptainer)?;
    have_tools(REGISTRY_TOOLS).then_some(sif)
}

/// A SIF of the busybox sandbox plus `/big`, 3 MiB that do not compress: a file whose blocks
/// a first start does not read.
fn big_sif(t: &TestEnv) -> Option<PathBuf> {
    let sandbox = crate::fixtures::get(Fixture::Sandbox)?;
    let root = t.dir.join("big-root");
    let ok = Command::new("cp")
        .arg("-a")
        .arg(&sandbox)
        .arg(&root)
        .status()
        .unwrap()
        .success();
    assert!(ok, "copying the sandbox");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..3 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(root.join("big"), bytes).unwrap();
    let out = t.dir.join("big.sif");
    t.rsing()
        .args(["build".as_ref(), out.as_os_str(), root.as_os_str()])
        .assert_exit(0);
    Some(out)
}

/// `skopeo inspect --raw` of `docker://REF`: the manifest as the registry stores it.
fn raw_manifest(registry: &TestRegistry, repo_tag: &str, auth: bool) -> serde_json::Value {
    let mut cmd = Command::new("skopeo");
    cmd.env("HOME", &registry.dir)
        .args(["inspect", "--raw", "--tls-verify=false"]);
    if auth {
        cmd.arg(format!("--creds={USER}:{PASSWORD}"));
    }
    let out = cmd
        .arg(format!("docker://{}", registry.reference(repo_tag)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits (up to 60 s) until `path` exists.
fn wait_for(path: &Path) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn lazy_entries(t: &TestEnv, cache: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(t.dir.join(cache).join("lazy"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn hex_of(path: &Path) -> String {
    sha256_file(path)
}

#[test]
fn push_writes_apptainers_layout_and_pull_reads_it_back() {
    let t = TestEnv::new();
    let Some(sif) = prerequisites() else {
        return;
    };
    let registry = TestRegistry::start(&t.dir.join("registry"), None);
    let uri = format!("oras://{}", registry.reference("tools/busybox:1.0"));
    let local = t.cwd.join("busybox_app.sif");
    std::fs::copy(&sif, &local).unwrap();
    rsing(&t, "cache")
        .args(["push", "busybox_app.sif", &uri])
        .assert_exit(0);
    let m = raw_manifest(&registry, "tools/busybox:1.0", false);
    eprintln!("REPORT: pushed manifest {m}");
    let hex = hex_of(&sif);
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["config"]["mediaType"], SIF_CONFIG);
    assert_eq!(
        m["config"]["digest"],
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], SIF_LAYER);
    assert_eq!(layers[0]["digest"], format!("sha256:{hex}"));
    assert_eq!(
        layers[0]["annotations"]["org.opencontainers.image.title"],
        "busybox_app.sif"
    );
    // Pushing again uploads nothing new and changes nothing.
    rsing(&t, "cache")
        .args(["push", "busybox_app.sif", &uri])
        .assert_exit(0);

    // pull: the default name (NAME_TAG.sif), the same bytes, and a second pull from the cache.
    rsing(&t, "cache").args(["pull", &uri]).assert_exit(0);
    let pulled = t.cwd.join("busybox_1.0.sif");
    assert_eq!(hex_of(&pulled), hex);
    rsing(&t, "cache")
        .args(["pull", "again.sif", &uri])
        .assert_exit(0);
    assert_eq!(hex_of(&t.cwd.join("again.sif")), hex);
    let cached = t.dir.join("cache/blobs/sha256").join(&hex);
    assert_eq!(hex_of(&cached), hex);
    // exec and run from the cache (complete: no lazy entry is made).
    let out = rsing(&t, "cache")
        .args(["exec", &uri, "/bin/busybox", "echo", "from-oras"])
        .stdout_str();
    assert_eq!(out, "from-oras");
    assert!(
        lazy_entries(&t, "cache").is_empty(),
        "{:?}",
        lazy_entries(&t, "cache")
    );

    // A container image (here the same SIF pushed as an OCI-SIF image) is not a SIF
    // artifact: one line that says to use docker://.
    let line = rsing(&t, "cache")
        .args(["pull", "x.sif", "oras://127.0.0.1:1/none:1"])
        .run();
    assert_ne!(line.status.code(), Some(0));
    let image = registry.reference("x:1");
    rsing(&t, "cache")
        .args(["push", "busybox_app.sif", &format!("docker://{image}")])
        .assert_exit(0);
    let line = rsing(&t, "cache")
        .args(["pull", "x.sif", &format!("oras://{image}")])
        .assert_error_naming("docker://");
    eprintln!("REPORT: {line}");
    // push takes oras:// and docker:// (tests/push.rs), nothing else.
    let line = rsing(&t, "cache")
        .args(["push", "busybox_app.sif", "library://x/y:1"])
        .assert_error_naming("oras://");
    eprintln!("REPORT: {line}");
}

#[test]
fn pull_of_a_corrupt_artifact_is_refused() {
    let t = TestEnv::new();
    let Some(sif) = prerequisites() else {
        return;
    };
    let registry = TestRegistry::start(&t.dir.join("registry"), None);
    let uri = format!("oras://{}", registry.reference("busybox:c"));
    rsing(&t, "cache")
        .arg("push")
        .arg(&sif)
        .arg(&uri)
        .assert_exit(0);
    let hex = hex_of(&sif);
    let data = registry.blob_data(&hex);
    let mut bytes = std::fs::read(&data).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let line = rsing(&t, "cache")
        .args(["pull", "c.sif", &uri])
        .assert_error_naming(&hex[..12]);
    eprintln!("REPORT: {line}");
    assert!(!t.cwd.join("c.sif").exists());
    assert!(!t.dir.join("cache/blobs/sha256").join(&hex).exists());
}

/// Pushes `sif` as `repo_tag` (with credentials when `auth`), returns the `oras://` URI.
fn pushed(t: &TestEnv, registry: &TestRegistry, sif: &Path, repo_tag: &str, auth: bool) -> String {
    let uri = format!("oras://{}", registry.reference(repo_tag));
    let cmd = rsing(t, "push-cache").arg("push").arg(sif).arg(&uri);
    if auth { with_auth(cmd) } else { cmd }.assert_exit(0);
    uri
}

/// The big SIF pushed to a fresh registry as `repo_tag` (with basic auth for `auth`): the
/// registry, the SIF and its `oras://` URI; `None` (a skip) without the prerequisites.
fn pushed_big_sif(
    t: &TestEnv,
    repo_tag: &str,
    auth: bool,
) -> Option<(TestRegistry, PathBuf, String)> {
    prerequisites()?;
    let sif = big_sif(t)?;
    let registry = TestRegistry::start(&t.dir.join("registry"), auth.then_some((USER, PASSWORD)));
    let uri = pushed(t, &registry, &sif, repo_tag, auth);
    Some((registry, sif, uri))
}

/// A proxy in front of `registry` (it counts requests and can drop them) and `uri` through it.
fn through_proxy(registry: &TestRegistry, uri: &str) -> (HttpServer, String) {
    let proxy = HttpServer::start(Backend::Proxy(registry.addr.clone()));
    let through = uri.replace(&registry.addr, &proxy.addr);
    (proxy, through)
}

fn lazy_exec_round(auth: bool) {
    let t = TestEnv::new();
    let Some((registry, sif, direct)) = pushed_big_sif(&t, "lazy/big:1", auth) else {
        return;
    };
    let (proxy, uri) = through_proxy(&registry, &direct);
    let size = std::fs::metadata(&sif).unwrap().len();
    let hex = hex_of(&sif);
    // Without the background download: what the start itself reads. /big (3 MiB of ~5) is not
    // needed, so the command ran long before the image could have been downloaded.
    let cmd = rsing(&t, "cache")
        .env("RSING_LAZY_BACKGROUND", "no")
        .env("RSING_SHARE_LINGER", "0")
        .args(["exec", &uri, "/bin/busybox", "echo", "lazy"]);
    let out = if auth { with_auth(cmd) } else { cmd }.stdout_str();
    assert_eq!(out, "lazy");
    let before_end = proxy.body_bytes();
    eprintln!(
        "REPORT: lazy exec (auth={auth}) fetched {before_end} of {size} bytes before it ended"
    );
    assert!(before_end < size / 2, "{before_end} of {size}");
    // A second start reads the same blocks from the node's block cache, and its image server
    // downloads the rest, checks it and renames it into the blob store.
    let cmd = rsing(&t, "cache").args(["exec", &uri, "/bin/busybox", "echo", "again"]);
    let out = if auth { with_auth(cmd) } else { cmd }.stdout_str();
    assert_eq!(out, "again");
    let final_path = t.dir.join("cache/blobs/sha256").join(&hex);
    assert!(
        wait_for(&final_path),
        "not completed: {:?}",
        lazy_entries(&t, "cache")
    );
    assert_eq!(hex_of(&final_path), hex);
    assert_eq!(proxy.body_bytes(), size, "each byte is fetched once");
    // Later starts use the complete file (no blob request).
    let cmd = rsing(&t, "cache").args(["exec", &uri, "/bin/busybox", "wc", "-c", "/big"]);
    let out = if auth { with_auth(cmd) } else { cmd }.stdout_str();
    assert_eq!(out, format!("{} /big", 3 << 20));
    assert_eq!(proxy.body_bytes(), size);
}

#[test]
fn lazy_exec_from_the_registry() {
    lazy_exec_round(false);
}

#[test]
fn lazy_exec_from_the_registry_with_basic_auth() {
    lazy_exec_round(true);
}

#[test]
fn dropped_connections_are_retried_and_lasting_failures_are_eio() {
    let t = TestEnv::new();
    let Some((registry, _sif, direct)) = pushed_big_sif(&t, "lazy/drop:1", false) else {
        return;
    };
    let (proxy, uri) = through_proxy(&registry, &direct);
    // In-process serving without the background download: reads are all there is.
    let run = |cmd: &[&str]| {
        rsing(&t, "cache")
            .env("RSING_SHARE", "no")
            .env("RSING_LAZY_BACKGROUND", "no")
            .arg("exec")
            .arg(&uri)
            .args(cmd)
            .timeout(Duration::from_secs(120))
            .run()
    };
    // The first three blob responses are cut short: retried, the command works.
    proxy.cut(3, 1000);
    let out = run(&["/bin/busybox", "echo", "ok"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok", "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Now the network is gone: reading /big fails with EIO in the container, one warning
    // line, and no hang.
    proxy.set_broken(true);
    let start = Instant::now();
    let out = run(&["/bin/busybox", "cat", "/big"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("REPORT: {stderr}");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("I/O error") || stderr.contains("Input/output error"),
        "{stderr}"
    );
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("rsing: warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains(&uri), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_digest_mismatch_after_the_download_is_refused_and_removed() {
    let t = TestEnv::new();
    let Some((registry, sif, uri)) = pushed_big_sif(&t, "lazy/bad:1", false) else {
        return;
    };
    let hex = hex_of(&sif);
    // A byte of /big changes in the registry's storage: the start does not read it, the
    // background download does.
    let data = registry.blob_data(&hex);
    let mut bytes = std::fs::read(&data).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    // The container runs until the test has seen the background download refused.
    let running = rsing(&t, "cache")
        .args(["exec", &uri, "/bin/busybox", "sh", "-c"])
        .arg("while [ ! -e done ]; do /bin/busybox sleep 0.1; done")
        .spawn();
    let start = Instant::now();
    let refused = loop {
        let logged = lazy_entries(&t, "cache")
            .iter()
            .filter(|n| n.ends_with(".log"))
            .any(|n| {
                std::fs::read_to_string(t.dir.join("cache/lazy").join(n))
                    .is_ok_and(|s| s.contains("refused"))
            });
        if logged || start.elapsed() > Duration::from_secs(60) {
            break logged;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::fs::write(t.cwd.join("done"), "").unwrap();
    assert!(refused, "the background download was not refused");
    let out = running.assert_exit(255);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("REPORT: {stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("rsing: error: ") && lines[0].contains("digest"),
        "{stderr}"
    );
    assert!(!t.dir.join("cache/blobs/sha256").join(&hex).exists());
    let left: Vec<String> = lazy_entries(&t, "cache")
        .into_iter()
        .filter(|n| !n.ends_with(".lock") && !n.ends_with(".log"))
        .collect();
    assert!(left.is_empty(), "entry left: {left:?}");
}

#[test]
fn concurrent_lazy_starts_fetch_each_block_once() {
    let t = TestEnv::new();
    let Some((registry, sif, direct)) = pushed_big_sif(&t, "lazy/eight:1", false) else {
        return;
    };
    let (proxy, uri) = through_proxy(&registry, &direct);
    let running: Vec<_> = (0..8)
        .map(|i| {
            rsing(&t, "cache")
                .args(["exec", &uri, "/bin/busybox", "echo", &format!("hi-{i}")])
                .spawn()
        })
        .collect();
    for (i, r) in running.into_iter().enumerate() {
        let out = r.assert_exit(0);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("hi-{i}")
        );
    }
    let hex = hex_of(&sif);
    let final_path = t.dir.join("cache/blobs/sha256").join(&hex);
    assert!(wait_for(&final_path));
    let size = std::fs::metadata(&sif).unwrap().len();
    let ranges = proxy
        .requests()
        .iter()
        .filter(|r| r.contains("/blobs/"))
        .count();
    eprintln!(
        "REPORT: 8 concurrent lazy starts: {} blob bytes in {ranges} range requests for a {size}-byte image",
        proxy.body_bytes()
    );
    assert_eq!(proxy.body_bytes(), size, "some block was fetched twice");
}

#[test]
fn exec_and_pull_of_an_http_url() {
    let t = TestEnv::new();
    let Some(_) = prerequisites() else {
        return;
    };
    let Some(sif) = big_sif(&t) else {
        return;
    };
    let server = HttpServer::start(Backend::File(sif.clone()));
    let url = format!("http://{}/images/big.sif", server.addr);
    let size = std::fs::metadata(&sif).unwrap().len();
    let out = rsing(&t, "cache")
        .env("RSING_LAZY_BACKGROUND", "no")
        .args(["exec", &url, "/bin/busybox", "echo", "over-http"])
        .stdout_str();
    assert_eq!(out, "over-http");
    eprintln!(
        "REPORT: exec http:// fetched {} of {size} bytes before it ended",
        server.body_bytes()
    );
    assert!(server.body_bytes() < size / 2);
    // With its digest given (#sha256:…), a pull checks it; the default name is the URL's.
    let hex = hex_of(&sif);
    rsing(&t, "cache2")
        .args(["pull", &format!("{url}#sha256:{hex}")])
        .assert_exit(0);
    assert_eq!(hex_of(&t.cwd.join("big.sif")), hex);
    let wrong = format!("{url}#sha256:{}", "0".repeat(64));
    let line = rsing(&t, "cache3")
        .args(["pull", "wrong.sif", &wrong])
        .assert_error_naming("digest");
    eprintln!("REPORT: {line}");
    assert!(!t.cwd.join("wrong.sif").exists());
}
