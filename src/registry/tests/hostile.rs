//! Hostile registries that no real registry software can play: a server that answers what the
//! test tells it to (huge manifests and indexes, configs longer than declared, blobs trickled a
//! byte at a time). No docker-registry needed.

use super::super::*;
use super::harness::*;
use crate::oci::Platform;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

/// What the server sends for one path: content type, body, and a pause between bytes (a
/// trickle) or none.
#[derive(Clone)]
struct Answer {
    content_type: &'static str,
    body: Vec<u8>,
    trickle: Option<Duration>,
}

fn json(body: Vec<u8>, content_type: &'static str) -> Answer {
    Answer {
        content_type,
        body,
        trickle: None,
    }
}

/// Serves `routes` (path → answer; `/v2/` answers `{}`, anything else 404) on 127.0.0.1,
/// one thread per connection, `Connection: close`.
fn serve(routes: Vec<(String, Answer)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let routes = routes.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    return;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
                let head_only = request.starts_with("HEAD");
                let answer = if path == "/v2/" {
                    Some(json(b"{}".to_vec(), "application/json"))
                } else {
                    routes
                        .iter()
                        .find(|(p, _)| *p == path)
                        .map(|(_, a)| a.clone())
                };
                let mut out = conn;
                let Some(a) = answer else {
                    let _ = out.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                    return;
                };
                let _ = write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    a.content_type,
                    a.body.len()
                );
                if head_only {
                    return;
                }
                match a.trickle {
                    None => {
                        let _ = out.write_all(&a.body);
                    }
                    Some(pause) => {
                        for b in &a.body {
                            if out.write_all(&[*b]).is_err() {
                                return;
                            }
                            std::thread::sleep(pause);
                        }
                    }
                }
            });
        }
    });
    addr
}

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";

fn config_json() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": Platform::host().architecture,
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": []},
        "config": {}
    }))
    .unwrap()
}

fn manifest_json(config: &[u8], declared_config: usize, layer: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": Digest::of(config).to_string(),
            "size": declared_config,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": Digest::of(layer).to_string(),
            "size": layer.len(),
        }],
    }))
    .unwrap()
}

#[test]
fn huge_manifests_are_refused() {
    let mut big = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 5 << 20));
    big.extend(br#""}}"#);
    let addr = serve(vec![("/v2/t/big/manifests/v1".into(), json(big, MANIFEST))]);
    let r = Reference::parse(&format!("{addr}/t/big:v1")).unwrap();
    let started = Instant::now();
    let err = client("amd64").resolve(&r).unwrap_err().to_string();
    assert!(
        err.contains("manifest of 5242995 bytes, more than the 4194304 bytes rsing reads")
            || err.contains("more than the 4194304 bytes rsing reads"),
        "{err}"
    );
    assert!(err.len() < 300 && !err.contains('\n'), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn huge_foreign_index_gives_a_short_error() {
    let entry = |i: usize| {
        serde_json::json!({
            "mediaType": MANIFEST,
            "digest": format!("sha256:{i:064x}"),
            "size": 100,
            "platform": {"os": "linux", "architecture": "s390x"},
        })
    };
    let n = 15_000;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": (0..n).map(entry).collect::<Vec<_>>(),
    }))
    .unwrap();
    assert!(index.len() < 4 << 20);
    let addr = serve(vec![("/v2/t/idx/manifests/v1".into(), json(index, INDEX))]);
    let r = Reference::parse(&format!("{addr}/t/idx:v1")).unwrap();
    let err = client("amd64").resolve(&r).unwrap_err().to_string();
    assert!(
        err.ends_with(
            "no image for linux/amd64; available: 15000 entries for 1 other platform: linux/s390x"
        ),
        "{err}"
    );
}

#[test]
fn configs_longer_than_declared_are_cut_off() {
    let config = config_json();
    let layer = b"layer".to_vec();
    // Declared at 10 bytes: the registry sends all of it; rsing stops after 10.
    let manifest = manifest_json(&config, 10, &layer);
    let cfg_path = format!("/v2/t/cfg/blobs/{}", Digest::of(&config));
    let addr = serve(vec![
        ("/v2/t/cfg/manifests/v1".into(), json(manifest, MANIFEST)),
        (cfg_path, json(config, "application/octet-stream")),
    ]);
    let r = Reference::parse(&format!("{addr}/t/cfg:v1")).unwrap();
    let err = client("amd64").resolve(&r).unwrap_err().to_string();
    assert!(
        err.contains("is longer than the 10 bytes expected"),
        "{err}"
    );
}

#[test]
fn trickling_blobs_hit_the_low_speed_limit() {
    let config = config_json();
    let layer = noise(100_000, 7);
    let manifest = manifest_json(&config, config.len(), &layer);
    let addr = serve(vec![
        ("/v2/t/slow/manifests/v1".into(), json(manifest, MANIFEST)),
        (
            format!("/v2/t/slow/blobs/{}", Digest::of(&config)),
            json(config.clone(), "application/octet-stream"),
        ),
        (
            format!("/v2/t/slow/blobs/{}", Digest::of(&layer)),
            Answer {
                content_type: "application/octet-stream",
                body: layer.clone(),
                trickle: Some(Duration::from_millis(20)),
            },
        ),
    ]);
    let r = Reference::parse(&format!("{addr}/t/slow:v1")).unwrap();
    let mut reg = client(&Platform::host().to_string());
    reg.low_speed = LowSpeed {
        limit: 1000,
        time: Duration::from_secs(1),
    };
    let remote = reg.resolve(&r).unwrap();
    let dir = std::env::temp_dir().join(format!("rsing-trickle-{}", std::process::id()));
    let rec = Record::default();
    let started = Instant::now();
    let err = reg
        .fetch_blobs(&r, &remote, &dir, &rec)
        .unwrap_err()
        .to_string();
    let took = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.contains("transfer too slow"), "{err}");
    assert!(!err.contains('\n'), "{err}");
    let retries = rec.retries.lock().unwrap().clone();
    assert!(!retries.is_empty(), "each stall is reported: {retries:?}");
    assert!(
        retries.iter().all(|r| r.contains("too slow")),
        "{retries:?}"
    );
    assert!(took < Duration::from_secs(30), "bounded: {took:?}");
}

/// A 100 MiB manifest sent without `Content-Length` (it ends when the connection closes):
/// the client stops reading at its limit and drops the connection, so the server gets to
/// write only that plus what the sockets buffer, never the 100 MiB.
#[test]
fn endless_manifests_are_cut_off_at_the_limit() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut out = conn;
                if request.contains(" /v2/ ") {
                    let _ = out.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                    );
                    return;
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {MANIFEST}\r\nConnection: close\r\n\r\n\
                     {{\"schemaVersion\":2,\"annotations\":{{\"x\":\""
                );
                let _ = out.write_all(head.as_bytes());
                let chunk = vec![b'a'; 1 << 20];
                for _ in 0..100 {
                    if out.write_all(&chunk).is_err() {
                        return;
                    }
                    counter.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
                let _ = out.write_all(b"\"}}");
            });
        }
    });
    let r = Reference::parse(&format!("{addr}/t/endless:v1")).unwrap();
    let started = Instant::now();
    let err = client("amd64").resolve(&r).unwrap_err().to_string();
    assert!(
        err.ends_with("manifest of more than the 4194304 bytes rsing reads"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    let sent = sent.load(Ordering::SeqCst);
    assert!(sent < 32 << 20, "the server wrote {sent} bytes");
}
