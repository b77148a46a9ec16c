//! Registries that misbehave (issue 15): the real `docker-registry` behind a proxy from the
//! test harness (`util::http`, [`Fault`]) that answers 500 or 429 forever, redirects in a loop,
//! serves another blob than the one asked for, or sends a 100 MiB manifest. Each pull ends in
//! bounded time (the retries are limited) with a non-zero exit and one `rsing: error:` line
//! naming the reference and the problem, and leaves nothing at the output path and nothing
//! unverified in the cache. Lines before the error are the retry notes batch mode prints.

use crate::fixtures::Fixture;
use crate::util::http::{Backend, Fault, HttpServer};
use crate::util::oci::{self, Layout};
use crate::util::registry::{TestRegistry, REGISTRY_TOOLS};
use crate::util::{have_tools, sha256_file, TestEnv};
use std::path::Path;
use std::time::{Duration, Instant};

/// The busybox image as `busybox:1` in a real registry, and a proxy in front of it.
fn proxied_busybox(t: &TestEnv) -> Option<(TestRegistry, HttpServer, oci::Written)> {
    let sandbox = crate::fixtures::get(Fixture::Sandbox)?;
    if !have_tools(REGISTRY_TOOLS) {
        return None;
    }
    let registry = TestRegistry::start(&t.dir.join("registry"), None);
    let layout = Layout::create(&t.dir.join("layout"));
    let written = layout.add_image("1", &oci::busybox_image(&sandbox));
    registry.push_layout(&layout.dir, "1", "busybox:1");
    let proxy = HttpServer::start(Backend::Proxy(registry.addr.clone()));
    Some((registry, proxy, written))
}

/// Nothing but verified blobs in `cache`, no image, and nothing in `cwd` but `keep`.
fn assert_nothing_left(cache: &Path, cwd: &Path, keep: &[&str]) {
    if let Ok(rd) = std::fs::read_dir(cache.join("blobs/sha256")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".lock") {
                continue;
            }
            assert!(!name.ends_with(".partial"), "partial blob left: {name}");
            assert_eq!(sha256_file(&e.path()), name, "unverified blob {name}");
        }
    }
    if let Ok(rd) = std::fs::read_dir(cache.join("images")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(!name.ends_with(".sif"), "image cached: {name}");
        }
    }
    for e in std::fs::read_dir(cwd).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            keep.contains(&name.as_str()),
            "left in the working directory: {name}"
        );
    }
}

/// Pulls `busybox:1` through `proxy` set to `fault` into a fresh cache; checks the outcome
/// and returns the error line.
fn pull_fails(t: &TestEnv, proxy: &HttpServer, case: &str, fault: Fault) -> String {
    proxy.set_fault(Some(fault));
    let cache = t.dir.join(format!("cache-{case}"));
    let reference = format!("{}/busybox:1", proxy.addr);
    let before: Vec<String> = std::fs::read_dir(&t.cwd)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let started = Instant::now();
    let out = t
        .rsing()
        .env("RSING_CACHEDIR", &cache)
        .args([
            "pull",
            "--name",
            "out.sif",
            &format!("docker://{reference}"),
        ])
        .timeout(Duration::from_secs(90))
        .run();
    let took = started.elapsed();
    proxy.set_fault(None);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{case}: pulled anyway: {stderr}");
    assert!(
        took < Duration::from_secs(30),
        "{case}: took {took:?}: {stderr}"
    );
    assert!(
        !stderr.bytes().any(|b| b"\x1b\x07\r\0".contains(&b)),
        "{case}: control bytes: {stderr:?}"
    );
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("rsing: error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{case}: one error line: {stderr}");
    let line = errors[0].to_string();
    assert!(
        line.contains("busybox:1"),
        "{case}: names the reference: {line}"
    );
    assert!(line.len() < 400, "{case}: short: {line}");
    let keep: Vec<&str> = before.iter().map(String::as_str).collect();
    assert_nothing_left(&cache, &t.cwd, &keep);
    eprintln!("REPORT: {case} ({took:.1?}): {line}");
    line
}

fn status(path: &str, code: u16, headers: &[(&str, &str)]) -> Fault {
    Fault::Status {
        path: path.into(),
        code,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[test]
fn server_errors_and_rate_limits_forever_give_up_in_bounded_time() {
    let t = TestEnv::new();
    let Some((_registry, proxy, _)) = proxied_busybox(&t) else {
        return;
    };
    for (case, fault, says) in [
        ("500-manifest", status("/manifests/", 500, &[]), "(500)"),
        ("503-blob", status("/blobs/", 503, &[]), "(503)"),
        ("429-manifest", status("/manifests/", 429, &[]), "(429)"),
        // An hour's Retry-After is not waited for: the retries stay bounded.
        (
            "429-retry-after-blob",
            status("/blobs/", 429, &[("Retry-After", "3600")]),
            "(429)",
        ),
    ] {
        let line = pull_fails(&t, &proxy, case, fault);
        assert!(line.contains(says), "{case}: {line}");
    }
}

#[test]
fn redirect_loops_are_refused() {
    let t = TestEnv::new();
    let Some((_registry, proxy, _)) = proxied_busybox(&t) else {
        return;
    };
    for (case, path) in [("loop-manifest", "/manifests/"), ("loop-blob", "/blobs/")] {
        let fault = Fault::RedirectLoop { path: path.into() };
        let line = pull_fails(&t, &proxy, case, fault);
        assert!(line.contains("redirect"), "{case}: {line}");
    }
}

/// A registry that answers the request for one layer with another of its blobs: real, with
/// its own valid digest, just not the one asked for, and larger (busybox plus 100 kB of
/// noise). rsing cuts it off as soon as it passes the size the manifest lists. (A blob of the
/// same size with other bytes is `pull::corrupt_registry_blob_is_refused_and_not_cached`.)
#[test]
fn a_different_blob_than_asked_is_refused_and_not_cached() {
    let t = TestEnv::new();
    let Some((registry, proxy, written)) = proxied_busybox(&t) else {
        return;
    };
    let sandbox = crate::fixtures::get(Fixture::Sandbox).unwrap();
    let layout = Layout::create(&t.dir.join("layout-other"));
    let mut entries = oci::busybox_entries(&sandbox);
    let noise = crate::util::registry::noise(100_000, 5);
    entries.push(oci::file("noise", noise));
    let image = oci::Image {
        config: oci::Config::default(),
        layers: vec![oci::Layer::new(oci::Compression::Gzip, entries)],
    };
    let other = layout.add_image("big", &image);
    registry.push_layout(&layout.dir, "big", "busybox:big");
    let asked = written.layers[0].clone();
    let fault = Fault::SwapBlob {
        asked: asked.clone(),
        serve: other.layers[0].clone(),
    };
    let line = pull_fails(&t, &proxy, "larger-blob", fault);
    assert!(line.contains(&asked), "names the blob: {line}");
    assert!(line.contains("more than the"), "says what is wrong: {line}");
}

#[test]
fn huge_manifest_is_cut_off_while_streaming() {
    let t = TestEnv::new();
    let Some((_registry, proxy, _)) = proxied_busybox(&t) else {
        return;
    };
    let fault = Fault::HugeManifest {
        path: "/manifests/".into(),
        size: 100 << 20,
    };
    let line = pull_fails(&t, &proxy, "huge-manifest", fault);
    assert!(
        line.contains("more than the 4194304 bytes rsing reads"),
        "{line}"
    );
    // rsing stopped reading at 4 MiB: what the proxy wrote beyond that sits in socket
    // buffers, far from the 100 MiB it had to send.
    std::thread::sleep(Duration::from_millis(300));
    let sent = proxy.body_bytes();
    assert!(sent < 32 << 20, "the proxy sent {sent} bytes");
}
