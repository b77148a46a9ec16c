//! End-to-end tests of the client against a real registry (Debian's `docker-registry`, started
//! on 127.0.0.1 by the integration tests' helper), with images pushed by skopeo. Skipped with a
//! note when the tools are missing.

mod harness;
mod hostile;
mod network;
mod proxy;

use super::*;
use crate::oci::Platform;
use harness::*;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

#[test]
fn single_arch_resolve_fetch_and_reuse() {
    let Some(env) = Env::new("single", None) else {
        return;
    };
    let written = env.push_layers(
        "test/single:v1",
        vec![
            vec![("hello.txt", b"hello".to_vec())],
            vec![("big.bin", noise(300_000, 1))],
        ],
    );
    let r = env.reference("test/single:v1");
    let reg = client(&Platform::host().to_string());
    let remote = reg.resolve(&r).unwrap();
    assert_eq!(remote.manifest_digest.to_string(), written.manifests[0]);
    assert_eq!(remote.config_digest.to_string(), written.configs[0]);
    assert_eq!(Digest::of(&remote.config_raw), remote.config_digest);
    assert_eq!(remote.config.architecture().to_string(), host_arch());
    let layer_digests: Vec<String> = remote.layers.iter().map(|l| l.0.to_string()).collect();
    assert_eq!(layer_digests, written.layers[0]);

    let blobs = env.dir.join("blobs");
    let rec = Record::default();
    let paths = reg.fetch_blobs(&r, &remote, &blobs, &rec).unwrap();
    for (path, (digest, _, size)) in paths.iter().zip(&remote.layers) {
        assert_eq!(*path, blobs.join("sha256").join(digest.hex()));
        assert_eq!(sha256_of(path), digest.to_string());
        assert_eq!(std::fs::metadata(path).unwrap().len(), *size);
    }
    assert_eq!(rec.finished.load(Ordering::SeqCst), 2);
    let mut hexes: Vec<String> = remote
        .layers
        .iter()
        .map(|l| l.0.hex().to_string())
        .collect();
    hexes.sort();
    assert_eq!(stored(&blobs), hexes, "no .partial or .lock files left");

    // Present blobs are reused without a request; a digest reference resolves the same image.
    let gets = env.blob_gets(&layer_digests[1]);
    assert_eq!(gets, 1);
    let by_digest = env.reference(&format!("test/single@{}", written.manifests[0]));
    let again = reg.resolve(&by_digest).unwrap();
    assert_eq!(again.layers, remote.layers);
    reg.fetch_blobs(&by_digest, &again, &blobs, &Quiet).unwrap();
    assert_eq!(env.blob_gets(&layer_digests[1]), gets);
    let image = again.into_resolved("docker://x".into(), paths);
    assert_eq!(image.layers.len(), 2);
}

#[test]
fn multi_arch_index_by_platform() {
    let Some(env) = Env::new("multi", None) else {
        return;
    };
    let written = env.push(
        "test/multi:v1",
        &[
            image("amd64", vec![vec![("arch", b"amd64".to_vec())]]),
            image("arm64", vec![vec![("arch", b"arm64".to_vec())]]),
        ],
    );
    let r = env.reference("test/multi:v1");
    for (i, arch) in ["amd64", "arm64"].iter().enumerate() {
        let remote = client(arch).resolve(&r).unwrap();
        assert_eq!(
            remote.manifest_digest.to_string(),
            written.manifests[i],
            "{arch}"
        );
        assert_eq!(remote.config.architecture().to_string(), *arch);
        assert_eq!(remote.layers[0].0.to_string(), written.layers[i][0]);
    }
    let err = client("ppc64le").resolve(&r).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "registry {}: test/multi:v1: image index: no image for linux/ppc64le; available: \
             linux/amd64, linux/arm64",
            env.reg.addr
        )
    );
    // The index's own digest pins it too.
    let pinned = env.reference(&format!("test/multi@{}", written.index.clone().unwrap()));
    assert_eq!(
        client("arm64")
            .resolve(&pinned)
            .unwrap()
            .manifest_digest
            .to_string(),
        written.manifests[1]
    );
}

#[test]
fn basic_auth() {
    let Some(env) = Env::new("auth", Some(("alice", "s3cret"))) else {
        return;
    };
    env.push_layers("test/auth:v1", vec![vec![("f", b"x".to_vec())]]);
    let r = env.reference("test/auth:v1");
    let addr = &env.reg.addr;
    let reg = client("amd64");
    let err = reg.resolve(&r).unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert_eq!(
        err.to_string(),
        format!(
            "registry {addr}: test/auth:v1: authentication required (401): run 'rsing registry \
             login {addr}'"
        )
    );
    let wrong = Credentials {
        username: "alice".into(),
        password: "nope".into(),
    };
    reg.set_credentials(addr, Some(wrong.clone()));
    let err = reg.resolve(&r).unwrap_err().to_string();
    assert!(err.contains("credentials rejected (401)"), "{err}");
    let err = reg.check_credentials(addr, &wrong).unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");

    let store = env.dir.join("config/auth.json");
    let err = auth::login_into(&store, addr, "alice", "nope", &Options::default()).unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert!(!store.exists(), "nothing stored after a failed login");
    auth::login_into(&store, addr, "alice", "s3cret", &Options::default()).unwrap();
    let sources = auth::Sources {
        store: Some(store),
        ..Default::default()
    };
    assert_eq!(sources.lookup(addr).unwrap().unwrap().password, "s3cret");

    let right = Credentials {
        username: "alice".into(),
        password: "s3cret".into(),
    };
    reg.check_credentials(addr, &right).unwrap();
    reg.set_credentials(addr, Some(right));
    let remote = reg.resolve(&r).unwrap();
    let paths = reg
        .fetch_blobs(&r, &remote, &env.dir.join("blobs"), &Quiet)
        .unwrap();
    assert_eq!(paths.len(), 1);
}

#[test]
fn missing_tag_and_repository() {
    let Some(env) = Env::new("missing", None) else {
        return;
    };
    env.push_layers("test/img:v1", vec![vec![("f", b"x".to_vec())]]);
    let addr = &env.reg.addr;
    let err = client("amd64")
        .resolve(&env.reference("test/img:nope"))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("registry {addr}: test/img:nope: manifest unknown (404)")
    );
    let err = client("amd64")
        .resolve(&env.reference("test/none:v1"))
        .unwrap_err();
    assert_eq!(err.status(), Some(404));
    assert!(!err.to_string().contains('\n'));
}

#[test]
fn corrupt_blobs_are_refused_and_not_kept() {
    let Some(env) = Env::new("corrupt", None) else {
        return;
    };
    let written = env.push_layers("test/bad:v1", vec![vec![("big.bin", noise(200_000, 2))]]);
    let layer = &written.layers[0][0];
    let data = env.reg.blob_data(layer);
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[1000] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let r = env.reference("test/bad:v1");
    let (reg, remote) = resolved(&r);
    let blobs = env.dir.join("blobs");
    let err = reg.fetch_blobs(&r, &remote, &blobs, &Quiet).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(err.to_string().contains(layer.as_str()), "{err}");
    assert!(
        stored(&blobs).iter().all(|n| n.ends_with(".lock")),
        "{:?}",
        stored(&blobs)
    );

    // A damaged config fails the resolve, naming the config.
    let config = env.reg.blob_data(&written.configs[0]);
    let mut text = std::fs::read(&config).unwrap();
    text[2] ^= 1;
    std::fs::write(&config, &text).unwrap();
    let err = reg.resolve(&r).unwrap_err().to_string();
    assert!(
        err.contains(&written.configs[0]) && err.contains("does not match"),
        "{err}"
    );
}

#[test]
fn partial_files_resume_or_restart() {
    let Some(env) = Env::new("resume", None) else {
        return;
    };
    let written = env.push_layers("test/big:v1", vec![vec![("big.bin", noise(2_000_000, 3))]]);
    let layer = written.layers[0][0].clone();
    let full = std::fs::read(env.reg.blob_data(&layer)).unwrap();
    let r = env.reference("test/big:v1");
    let (reg, remote) = resolved(&r);
    let half = full.len() / 2;
    let cases: [(&str, Vec<u8>, bool); 3] = [
        ("good prefix", full[..half].to_vec(), true),
        ("bad prefix", noise(half, 9), false),
        (
            "too long",
            [full.clone(), b"extra".to_vec()].concat(),
            false,
        ),
    ];
    for (i, (case, partial, resumes)) in cases.into_iter().enumerate() {
        let blobs = env.dir.join(format!("blobs{i}"));
        std::fs::create_dir_all(blobs.join("sha256")).unwrap();
        let hex = layer.trim_start_matches("sha256:");
        std::fs::write(
            blobs.join("sha256").join(format!("{hex}.partial")),
            &partial,
        )
        .unwrap();
        let rec = Record::default();
        let paths = reg.fetch_blobs(&r, &remote, &blobs, &rec).unwrap();
        assert_eq!(std::fs::read(&paths[0]).unwrap(), full, "{case}");
        assert_eq!(stored(&blobs), vec![hex.to_string()], "{case}");
        let progress = rec.progress.lock().unwrap()[&layer].clone();
        let never_below_half = progress.iter().all(|p| *p >= half as u64);
        assert_eq!(never_below_half, resumes, "{case}: {progress:?}");
    }
    assert!(
        env.reg.log().contains("status=206"),
        "a Range request was answered"
    );
}

#[test]
fn concurrent_fetches_download_once() {
    let Some(env) = Env::new("concurrent", None) else {
        return;
    };
    let written = env.push_layers(
        "test/conc:v1",
        vec![
            vec![("big.bin", noise(8_000_000, 4))],
            vec![("s", b"s".to_vec())],
        ],
    );
    let r = env.reference("test/conc:v1");
    let remote = client("amd64").resolve(&r).unwrap();
    let blobs = env.dir.join("blobs");
    let barrier = std::sync::Barrier::new(3);
    let results: Vec<Vec<PathBuf>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let reg = client("amd64");
                    barrier.wait();
                    reg.fetch_blobs(&r, &remote, &blobs, &Quiet).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    for layer in &written.layers[0] {
        assert_eq!(env.blob_gets(layer), 1, "{layer} downloaded once");
        assert_eq!(sha256_of(&blobs.join("sha256").join(&layer[7..])), *layer);
    }
}
