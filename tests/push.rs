//! `rsing push IMG.sif docker://…`: a SIF as an OCI-SIF image (an OCI image whose one layer is
//! the SIF's SquashFS, media type `application/vnd.sylabs.image.layer.v1.squashfs`), and
//! `pull`/`exec docker://` of such an image, which copies the layer into a SIF without any tar
//! conversion. Against Debian's docker-registry on 127.0.0.1.

use crate::fixtures::{Comp, Fixture};
use crate::util::http::{Backend, Fault, HttpServer};
use crate::util::oci::{self, Layout};
use crate::util::registry::{TestRegistry, REGISTRY_TOOLS};
use crate::util::{have_tools, sha256_hex, RsingCmd, TestEnv};
use std::path::Path;
use std::process::Command;

const SQUASHFS_LAYER: &str = "application/vnd.sylabs.image.layer.v1.squashfs";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const USER: &str = "carol";
const PASSWORD: &str = "push pass";

fn rsing(t: &TestEnv, cache: &str) -> RsingCmd {
    t.rsing_cached(cache)
}

/// A registry holding the busybox image (a gzip tar layer) with an environment variable, a
/// command and a label in its config, pulled into `busybox.sif` by rsing: a SIF with an
/// `oci-config.json`. `None` (a skip) without the fixtures or tools.
fn pulled_busybox(t: &TestEnv, creds: Option<(&str, &str)>) -> Option<(TestRegistry, String)> {
    let sandbox = crate::fixtures::get(Fixture::Sandbox)?;
    if !have_tools(REGISTRY_TOOLS) {
        return None;
    }
    let registry = TestRegistry::start(&t.dir.join("registry"), creds);
    let layout = Layout::create(&t.dir.join("layout"));
    let mut image = oci::busybox_image(&sandbox);
    image.config.env.push("OCISIF_MARK=from-the-config".into());
    image.config.cmd = Some(vec!["/bin/sh".into(), "-c".into(), "echo ran-cmd".into()]);
    image
        .config
        .labels
        .insert("org.example.test".into(), "push".into());
    layout.add_image("1", &image);
    registry.push_layout(&layout.dir, "1", "busybox:1");
    let uri = format!("docker://{}", registry.reference("busybox:1"));
    let pull = rsing(t, "pull-cache").args(["pull", "--name", "busybox.sif", &uri]);
    with_creds(pull, creds).assert_exit(0);
    Some((registry, uri))
}

fn with_creds(cmd: RsingCmd, creds: Option<(&str, &str)>) -> RsingCmd {
    match creds {
        Some((u, p)) => cmd
            .env("RSING_DOCKER_USERNAME", u)
            .env("RSING_DOCKER_PASSWORD", p),
        None => cmd,
    }
}

/// `skopeo inspect --raw` (or `--config`) of `docker://REF`.
fn skopeo(registry: &TestRegistry, repo_tag: &str, what: &str) -> serde_json::Value {
    let out = Command::new("skopeo")
        .env("HOME", &registry.dir)
        .args(["inspect", what, "--tls-verify=false"])
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

/// The sha256 of the last `len` bytes of `sif`: the SquashFS partition, which rsing writes last.
fn tail_hex(sif: &Path, len: u64) -> String {
    let bytes = std::fs::read(sif).unwrap();
    assert!(bytes.len() as u64 >= len, "{} is too short", sif.display());
    sha256_hex(&bytes[bytes.len() - len as usize..])
}

/// Every file of the image with its size and content hash, and every symlink with its target.
const TREE: &str = "cd / && find bin etc .singularity.d \\( -type f -o -type l \\) | sort | \
     while read f; do if [ -L \"$f\" ]; then echo \"$f -> $(readlink \"$f\")\"; \
     else echo \"$f $(md5sum < \"$f\")\"; fi; done";

#[test]
fn push_docker_writes_an_ocisif_image_and_pull_copies_its_squashfs() {
    let t = TestEnv::new();
    let Some((registry, _)) = pulled_busybox(&t, None) else {
        return;
    };
    let sif = t.cwd.join("busybox.sif");
    let target = format!("docker://{}", registry.reference("ocisif/busybox:2"));
    rsing(&t, "push-cache")
        .args(["push", "busybox.sif", &target])
        .assert_exit(0);

    let m = skopeo(&registry, "ocisif/busybox:2", "--raw");
    eprintln!("REPORT: pushed manifest {m}");
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(m["config"]["mediaType"], OCI_CONFIG);
    let layers = m["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["mediaType"], SQUASHFS_LAYER);
    let layer_digest = layers[0]["digest"].as_str().unwrap().to_string();
    let layer_size = layers[0]["size"].as_u64().unwrap();
    // The layer is the SIF's SquashFS partition, byte for byte.
    assert_eq!(
        format!("sha256:{}", tail_hex(&sif, layer_size)),
        layer_digest
    );
    let config = skopeo(&registry, "ocisif/busybox:2", "--config");
    eprintln!("REPORT: pushed config {config}");
    assert_eq!(config["rootfs"]["diff_ids"][0], layer_digest.as_str());
    assert_eq!(config["os"], "linux");
    let env: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"OCISIF_MARK=from-the-config"), "{env:?}");
    assert_eq!(config["config"]["Cmd"][2], "echo ran-cmd");
    assert_eq!(config["config"]["Labels"]["org.example.test"], "push");

    // pull: the SquashFS is copied as it is (the same bytes), with no conversion.
    let out = rsing(&t, "cache2")
        .args(["pull", "--name", "back.sif", &target])
        .assert_exit(0);
    eprintln!("REPORT: pull said {}", String::from_utf8_lossy(&out.stderr));
    let back = t.cwd.join("back.sif");
    assert_eq!(
        format!("sha256:{}", tail_hex(&back, layer_size)),
        layer_digest
    );
    assert_eq!(t.sh(&back, TREE), t.sh(&sif, TREE));
    assert_eq!(
        t.exec(&back, ["/bin/sh", "-c", "echo $OCISIF_MARK"])
            .stdout_str(),
        "from-the-config"
    );
    let labels = rsing(&t, "cache2")
        .args(["inspect", "--labels", "back.sif"])
        .stdout_str();
    assert!(labels.contains("org.example.test"), "{labels}");

    // exec and run of docker:// through a fresh cache.
    assert_eq!(
        rsing(&t, "cache3")
            .args(["exec", &target, "/bin/sh", "-c", "echo hi $OCISIF_MARK"])
            .stdout_str(),
        "hi from-the-config"
    );
    assert_eq!(
        rsing(&t, "cache3").args(["run", &target]).stdout_str(),
        "ran-cmd"
    );

    // Pushing again uploads nothing new and gives the same manifest (the config is made
    // from the SIF alone).
    rsing(&t, "push-cache")
        .args(["push", "busybox.sif", &target])
        .assert_exit(0);
    assert_eq!(skopeo(&registry, "ocisif/busybox:2", "--raw"), m);
}

#[test]
fn a_tampered_squashfs_layer_is_refused() {
    let t = TestEnv::new();
    let Some((registry, _)) = pulled_busybox(&t, None) else {
        return;
    };
    let target = format!("docker://{}", registry.reference("ocisif/busybox:bad"));
    rsing(&t, "push-cache")
        .args(["push", "busybox.sif", &target])
        .assert_exit(0);
    let m = skopeo(&registry, "ocisif/busybox:bad", "--raw");
    let digest = m["layers"][0]["digest"].as_str().unwrap().to_string();
    let data = registry.blob_data(&digest);
    let mut bytes = std::fs::read(&data).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let hex = &digest["sha256:".len()..];
    let line = rsing(&t, "cache")
        .args(["pull", "--name", "bad.sif", &target])
        .assert_error_naming(&hex[..12]);
    eprintln!("REPORT: {line}");
    assert!(!t.cwd.join("bad.sif").exists());
}

#[test]
fn push_docker_errors_are_one_line() {
    let t = TestEnv::new();
    let Some((registry, _)) = pulled_busybox(&t, Some((USER, PASSWORD))) else {
        return;
    };
    // Not a SIF.
    t.write("work/notes.txt", "not an image\n");
    let target = format!("docker://{}", registry.reference("x/y:1"));
    let line = rsing(&t, "cache")
        .args(["push", "notes.txt", &target])
        .assert_error_naming("notes.txt");
    assert!(line.contains("not a SIF"), "{line}");
    eprintln!("REPORT: {line}");
    // A SquashFS is not a SIF either.
    let sqfs = image!(Fixture::Sqfs(Comp::Zstd));
    let line = rsing(&t, "cache")
        .arg("push")
        .arg(&sqfs)
        .arg(&target)
        .assert_error_naming("not a SIF");
    eprintln!("REPORT: {line}");
    // A scheme push does not know.
    rsing(&t, "cache")
        .args(["push", "busybox.sif", "library://x/y:1"])
        .assert_error_naming("docker://");

    // 401: the registry wants credentials and none are given.
    let line = rsing(&t, "cache")
        .args(["push", "busybox.sif", &target])
        .assert_error_naming(&registry.addr);
    eprintln!("REPORT: {line}");
    // With them it works.
    with_creds(
        rsing(&t, "cache").args(["push", "busybox.sif", &target]),
        Some((USER, PASSWORD)),
    )
    .assert_exit(0);

    // 404 for everything under /v2/.
    let proxy = HttpServer::start(Backend::Proxy(registry.addr.clone()));
    proxy.set_fault(Some(Fault::Status {
        path: "/v2/".into(),
        code: 404,
        headers: Vec::new(),
    }));
    let through = target.replace(&registry.addr, &proxy.addr);
    let line = with_creds(
        rsing(&t, "cache").args(["push", "busybox.sif", &through]),
        Some((USER, PASSWORD)),
    )
    .assert_error_naming(&proxy.addr);
    eprintln!("REPORT: {line}");
}
