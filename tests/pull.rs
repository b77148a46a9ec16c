//! `rsing pull` and `rsing exec docker://` against a local registry (Debian's docker-registry on
//! 127.0.0.1, spoken to over plain HTTP): default names, the blob and image cache (a second
//! pull downloads nothing; concurrent first uses convert once), multi-arch indexes, basic auth
//! from the environment and from ~/.docker/config.json, and failures that leave nothing.

use crate::fixtures::Fixture;
use crate::util::oci::{self, Layout};
use crate::util::registry::{TestRegistry, REGISTRY_TOOLS};
use crate::util::{have_tools, RsingCmd, TestEnv};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

const USER: &str = "alice";
const PASSWORD: &str = "s3cret pass";

/// The busybox sandbox fixture, if it and the registry tools are there (else a skip).
fn prerequisites() -> Option<PathBuf> {
    let sandbox = crate::fixtures::get(Fixture::Sandbox)?;
    have_tools(REGISTRY_TOOLS).then_some(sandbox)
}

/// The busybox registry of [`crate::util::setup::busybox_registry`], with basic auth for
/// `auth`.
fn busybox_registry(t: &TestEnv, auth: bool) -> Option<(TestRegistry, oci::Written, String)> {
    crate::util::setup::busybox_registry(t, auth.then_some((USER, PASSWORD)))
}

/// `rsing` with the cache at `<test dir>/<cache>`.
fn rsing(t: &TestEnv, cache: &str) -> RsingCmd {
    t.rsing_cached(cache)
}

/// Files under `<cache>/<sub>` with their inode and mtime (ns); empty if there is no such dir.
fn cache_files(t: &TestEnv, cache: &str, sub: &str) -> BTreeMap<String, (u64, i64, i64)> {
    let dir = t.dir.join(cache).join(sub);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap())
        .map(|e| {
            let m = e.metadata().unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, (m.ino(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

fn sif_files(t: &TestEnv, cache: &str) -> Vec<String> {
    let files = cache_files(t, cache, "images");
    files.into_keys().filter(|n| n.ends_with(".sif")).collect()
}

/// The access-log lines of the registry log that fetch a blob (`"GET …/blobs/sha256:…`); the
/// registry logs each request twice, once in this format.
fn blob_gets(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn pull_writes_the_default_name_and_caches() {
    let t = TestEnv::new();
    let Some((registry, written, uri)) = busybox_registry(&t, false) else {
        return;
    };
    rsing(&t, "cache").args(["pull", &uri]).assert_exit(0);
    let default = t.cwd.join("busybox_1.sif");
    assert_eq!(
        t.exec(&default, ["/bin/busybox", "echo", "hi"])
            .stdout_str(),
        "hi"
    );

    let blobs = cache_files(&t, "cache", "blobs/sha256");
    let layer_hex = &written.layers[0]["sha256:".len()..];
    assert!(
        blobs.contains_key(layer_hex),
        "layer blob not cached: {blobs:?}"
    );
    assert_eq!(
        sif_files(&t, "cache").len(),
        1,
        "{:?}",
        cache_files(&t, "cache", "images")
    );

    // Again, into another name: everything comes from the cache.
    let log_before = registry.log().len();
    let started = Instant::now();
    rsing(&t, "cache")
        .args(["pull", "--name", "again.sif", &uri])
        .assert_exit(0);
    let elapsed = started.elapsed();
    eprintln!("REPORT: second pull of {uri} took {elapsed:?}");
    assert_eq!(
        cache_files(&t, "cache", "blobs/sha256"),
        blobs,
        "cached blobs were rewritten"
    );
    assert_eq!(sif_files(&t, "cache").len(), 1);
    let fetched = blob_gets(&registry.log()[log_before..]);
    let layers: Vec<&String> = fetched
        .iter()
        .filter(|l| l.contains(&written.layers[0]))
        .collect();
    assert!(
        layers.is_empty(),
        "the second pull fetched the layer again:\n{layers:?}"
    );
    assert_eq!(
        crate::util::sha256_file(&t.cwd.join("again.sif")),
        crate::util::sha256_file(&default),
        "the same image pulled twice differs"
    );
    let by_digest = format!(
        "docker://{}@{}",
        registry.reference("busybox"),
        written.manifest
    );
    rsing(&t, "cache")
        .args(["pull", "--name", "digest.sif", &by_digest])
        .assert_exit(0);
    // The positional target name, and --force over an existing file.
    rsing(&t, "cache")
        .args(["pull", "pos.sif", &uri])
        .assert_exit(0);
    rsing(&t, "cache")
        .args(["pull", "pos.sif", &uri])
        .assert_error_naming("pos.sif");
    rsing(&t, "cache")
        .args(["pull", "--force", "pos.sif", &uri])
        .assert_exit(0);
    let mut names: Vec<String> = std::fs::read_dir(&t.cwd)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();

    let list = rsing(&t, "cache").args(["cache", "list"]).stdout_str();
    assert!(
        list.contains(&layer_hex[..12]),
        "cache list does not show the layer:\n{list}"
    );
    rsing(&t, "cache")
        .args(["cache", "clean", "--all"])
        .assert_exit(0);
    let mut left = cache_files(&t, "cache", "blobs/sha256");
    left.extend(cache_files(&t, "cache", "images"));
    assert!(left.is_empty(), "cache clean --all left {left:?}");
    let list = rsing(&t, "cache").args(["cache", "list"]).stdout_str();
    assert!(list.contains("0 entries"), "{list}");
    // Last, so that the checks above run whatever these find. No temporary file is left
    // (`--force` onto a file that is already a link to the same cache entry included) ...
    let expected = ["again.sif", "busybox_1.sif", "digest.sif", "pos.sif"];
    assert_eq!(names, expected, "files in the cwd after the pulls");
    // ... and nothing at all (not even the small config blob) is fetched for a cached image.
    assert!(
        fetched.is_empty(),
        "the second pull fetched blobs:\n{}",
        fetched.join("\n")
    );
}

#[test]
fn exec_and_run_docker_refs_pull_into_the_cache() {
    let t = TestEnv::new();
    let Some(sandbox) = prerequisites() else {
        return;
    };
    let Some((registry, _, uri)) = busybox_registry(&t, false) else {
        return;
    };
    let cmd = rsing(&t, "cache").args(["exec", &uri, "/bin/busybox", "echo", "hi"]);
    assert_eq!(cmd.stdout_str(), "hi");
    let cmd = rsing(&t, "cache").args(["exec", &uri, "sh", "-c", "echo $PATH"]);
    assert_eq!(
        cmd.stdout_str(),
        "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"
    );
    assert_eq!(sif_files(&t, "cache").len(), 1);
    // The OCI entrypoint through `run docker://`, arguments replacing Cmd.
    let layout = Layout::create(&t.dir.join("run-layout"));
    let mut image = oci::busybox_image(&sandbox);
    image.config.entrypoint = Some(vec!["/bin/echo".into(), "from-run".into()]);
    image.config.cmd = Some(vec!["default".into()]);
    layout.add_image("run", &image);
    registry.push_layout(&layout.dir, "run", "busybox:run");
    let run_uri = format!("docker://{}", registry.reference("busybox:run"));
    let run = |args: &[&str]| {
        rsing(&t, "cache")
            .arg("run")
            .arg(&run_uri)
            .args(args)
            .stdout_str()
    };
    assert_eq!(run(&[]), "from-run default");
    assert_eq!(run(&["x", "y"]), "from-run x y");
    assert_eq!(sif_files(&t, "cache").len(), 2);
    let names: Vec<_> = std::fs::read_dir(&t.cwd).unwrap().collect();
    assert!(
        names.is_empty(),
        "exec docker:// wrote into the cwd: {names:?}"
    );
}

#[test]
fn multiarch_index_resolves_by_arch() {
    let t = TestEnv::new();
    let Some(sandbox) = prerequisites() else {
        return;
    };
    if !have_tools(&["unsquashfs", "siftool"]) {
        return;
    }
    let registry = TestRegistry::start(&t.dir.join("registry"), None);
    let layout = Layout::create(&t.dir.join("multi"));
    layout.add_multiarch("multi", &oci::busybox_per_arch(&sandbox));
    registry.push_layout(&layout.dir, "multi", "multi:1");
    let uri = format!("docker://{}", registry.reference("multi:1"));
    for arch in ["arm64", "amd64"] {
        let out = format!("{arch}.sif");
        rsing(&t, "cache")
            .args(["pull", "--arch", arch, "--name", &out, &uri])
            .assert_exit(0);
        let cat = oci::unsquashfs_sif(&t.cwd.join(&out), &["-cat"], &["/arch.txt"]);
        assert_eq!(cat.trim_end(), arch, "pull --arch {arch}");
    }
    let host = rsing(&t, "cache").args(["exec", &uri, "cat", "/arch.txt"]);
    assert_eq!(host.stdout_str(), oci::host_arch());
}

/// `~/.docker/config.json` with credentials for `registry`.
fn write_docker_config(t: &TestEnv, registry: &TestRegistry, user: &str, password: &str) {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = serde_json::json!({"auths": {registry.addr.clone(): {"auth": auth}}});
    let dir = t.home.join(".docker");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

#[test]
fn basic_auth_from_env_and_docker_config() {
    let t = TestEnv::new();
    let Some((registry, _, uri)) = busybox_registry(&t, true) else {
        return;
    };
    let line = rsing(&t, "cache-none")
        .args(["pull", "--name", "none.sif", &uri])
        .assert_error_naming(&registry.addr);
    eprintln!("REPORT: {line}");
    let lower = line.to_lowercase();
    assert!(
        ["401", "unauthorized", "authentication", "credentials"]
            .iter()
            .any(|w| lower.contains(w)),
        "the error does not say that credentials are needed: {line}"
    );
    let wrong = rsing(&t, "cache-wrong")
        .env("RSING_DOCKER_USERNAME", USER)
        .env("RSING_DOCKER_PASSWORD", "wrong")
        .args(["pull", "--name", "wrong.sif", &uri]);
    eprintln!("REPORT: {}", wrong.assert_error_naming(&registry.addr));
    assert!(!t.cwd.join("none.sif").exists() && !t.cwd.join("wrong.sif").exists());

    rsing(&t, "cache-env")
        .env("RSING_DOCKER_USERNAME", USER)
        .env("RSING_DOCKER_PASSWORD", PASSWORD)
        .args(["pull", "--name", "env.sif", &uri])
        .assert_exit(0);
    write_docker_config(&t, &registry, USER, PASSWORD);
    rsing(&t, "cache-config")
        .args(["pull", "--name", "config.sif", &uri])
        .assert_exit(0);
    let hi = t.exec(&t.cwd.join("config.sif"), ["/bin/busybox", "echo", "hi"]);
    assert_eq!(hi.stdout_str(), "hi");
}

#[test]
fn missing_tag_is_one_line_and_leaves_nothing() {
    let t = TestEnv::new();
    let Some((registry, _, _)) = busybox_registry(&t, false) else {
        return;
    };
    let uri = format!("docker://{}", registry.reference("busybox:nope"));
    let line = rsing(&t, "cache")
        .args(["pull", &uri])
        .assert_error_naming("busybox:nope");
    eprintln!("REPORT: {line}");
    let lower = line.to_lowercase();
    assert!(
        lower.contains("404") || lower.contains("not found") || lower.contains("unknown"),
        "the error does not say the tag is missing: {line}"
    );
    oci::assert_dir_empty(&t.cwd);
    assert!(sif_files(&t, "cache").is_empty());
}

#[test]
fn corrupt_registry_blob_is_refused_and_not_cached() {
    let t = TestEnv::new();
    let Some((registry, written, uri)) = busybox_registry(&t, false) else {
        return;
    };
    let digest = &written.layers[0];
    let data = registry.blob_data(digest);
    let mut bytes = std::fs::read(&data).expect("reading the stored blob");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();
    let hex = &digest["sha256:".len()..];
    let line = rsing(&t, "cache")
        .args(["pull", &uri])
        .assert_error_naming(&hex[..12]);
    eprintln!("REPORT: {line}");
    oci::assert_dir_empty(&t.cwd);
    let blobs = cache_files(&t, "cache", "blobs/sha256");
    assert!(
        !blobs.contains_key(hex),
        "the corrupt blob was cached: {blobs:?}"
    );
    eprintln!(
        "REPORT: cache blobs after a corrupt download: {:?}",
        blobs.keys()
    );
    assert!(sif_files(&t, "cache").is_empty());
}

#[test]
fn concurrent_first_execs_convert_once() {
    let t = TestEnv::new();
    let Some((registry, written, uri)) = busybox_registry(&t, false) else {
        return;
    };
    let running: Vec<_> = (0..8)
        .map(|i| {
            let echo = format!("hi-{i}");
            rsing(&t, "cache")
                .args(["exec", &uri, "/bin/busybox", "echo", &echo])
                .spawn()
        })
        .collect();
    for (i, r) in running.into_iter().enumerate() {
        let out = r.assert_exit(0);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim_end(),
            format!("hi-{i}")
        );
    }
    let images = cache_files(&t, "cache", "images");
    assert_eq!(
        sif_files(&t, "cache").len(),
        1,
        "images/: {:?}",
        images.keys()
    );
    eprintln!(
        "REPORT: images/ after 8 concurrent execs: {:?}",
        images.keys()
    );
    let layer = &written.layers[0];
    let gets: Vec<String> = blob_gets(&registry.log())
        .into_iter()
        .filter(|l| l.contains(layer.as_str()))
        .collect();
    assert!(
        gets.len() <= 1,
        "the layer was downloaded {} times:\n{}",
        gets.len(),
        gets.join("\n")
    );
}

/// A pulled file is the user's: changing it in place must not change the cached image that
/// later pulls and `exec docker://` use.
#[test]
fn writing_to_a_pulled_file_leaves_the_cache_alone() {
    let t = TestEnv::new();
    let Some((_registry, _, uri)) = busybox_registry(&t, false) else {
        return;
    };
    rsing(&t, "cache")
        .args(["pull", "--name", "mine.sif", &uri])
        .assert_exit(0);
    let mine = t.cwd.join("mine.sif");
    let original = crate::util::sha256_file(&mine);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&mine)
        .unwrap();
    std::io::Write::write_all(&mut f, b"user data appended in place").unwrap();
    drop(f);
    rsing(&t, "cache")
        .args(["pull", "--name", "fresh.sif", &uri])
        .assert_exit(0);
    assert_eq!(
        crate::util::sha256_file(&t.cwd.join("fresh.sif")),
        original,
        "a change to a pulled file showed up in the next pull (they share the cache's inode)"
    );
}

/// The definition file stored in a pulled SIF names what was pulled, also when the same
/// manifest was cached under another reference before.
#[test]
fn pull_by_digest_records_the_digest() {
    let t = TestEnv::new();
    let Some((registry, written, by_tag)) = busybox_registry(&t, false) else {
        return;
    };
    let by_digest = format!(
        "docker://{}@{}",
        registry.reference("busybox"),
        written.manifest
    );
    for (name, uri) in [("tag.sif", &by_tag), ("digest.sif", &by_digest)] {
        rsing(&t, "cache")
            .args(["pull", "--name", name, uri])
            .assert_exit(0);
    }
    let deffile = |name: &str| {
        let cmd = t
            .rsing()
            .args(["inspect", "--deffile"])
            .arg(t.cwd.join(name));
        cmd.stdout_str()
    };
    assert!(
        deffile("tag.sif").contains("busybox:1"),
        "{}",
        deffile("tag.sif")
    );
    let of_digest = deffile("digest.sif");
    assert!(
        of_digest.contains(&written.manifest),
        "pulled by digest, but: {of_digest}"
    );
}

#[test]
fn registry_login_checks_and_stores_credentials() {
    let t = TestEnv::new();
    let Some((registry, _, uri)) = busybox_registry(&t, true) else {
        return;
    };
    let store = t.dir.join("config");
    let login = |password: &str| {
        rsing(&t, "cache-login")
            .env("RSING_CONFIG_DIR", &store)
            .args([
                "registry",
                "login",
                "-u",
                USER,
                "--password-stdin",
                &registry.addr,
            ])
            .stdin(format!("{password}\n"))
    };
    let line = login("wrong").assert_error_naming(&registry.addr);
    eprintln!("REPORT: {line}");
    assert!(
        !store.join("auth.json").exists(),
        "wrong credentials were stored"
    );
    login(PASSWORD).assert_exit(0);
    let mode = std::fs::metadata(store.join("auth.json"))
        .expect("the credential store")
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the credential store is readable by others"
    );
    rsing(&t, "cache-login")
        .env("RSING_CONFIG_DIR", &store)
        .args(["pull", "--name", "login.sif", &uri])
        .assert_exit(0);
    rsing(&t, "cache-logout")
        .env("RSING_CONFIG_DIR", &store)
        .args(["registry", "logout", &registry.addr])
        .assert_exit(0);
    rsing(&t, "cache-logout")
        .env("RSING_CONFIG_DIR", &store)
        .args(["pull", "--name", "after.sif", &uri])
        .assert_error_naming(&registry.addr);
}
