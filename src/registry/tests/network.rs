//! Misbehaving networks: retries after 503s and dropped connections, redirects, and the
//! bearer-token challenge.

use super::super::*;
use super::harness::*;
use super::proxy::{faulty_proxy, redirector, token_front};

#[test]
fn retries_server_errors_and_resumes_dropped_downloads() {
    let Some(env) = Env::new("faults", None) else {
        return;
    };
    let written = env.push_layers(
        "test/flaky:v1",
        vec![vec![("big.bin", noise(1_000_000, 5))]],
    );
    let layer = written.layers[0][0].clone();
    let proxy = faulty_proxy(env.reg.addr.clone(), layer.clone(), 300_000);
    let r = Reference::parse(&format!("{proxy}/test/flaky:v1")).unwrap();
    let reg = client("amd64");
    let rec = Record::default();
    let remote = reg.resolve(&r).unwrap();
    let paths = reg
        .fetch_blobs(&r, &remote, &env.dir.join("blobs"), &rec)
        .unwrap();
    assert_eq!(sha256_of(&paths[0]), layer);
    let retries = rec.retries.lock().unwrap().clone();
    assert_eq!(retries.len(), 1, "{retries:?}");
    assert!(retries[0].contains("blob"), "{retries:?}");
    assert!(
        env.reg.log().contains("status=206"),
        "the retry resumed with a Range request"
    );
}

#[test]
fn redirects_are_followed() {
    let Some(env) = Env::new("redirect", None) else {
        return;
    };
    let written = env.push_layers("test/moved:v1", vec![vec![("f", b"x".to_vec())]]);
    let r = Reference::parse(&format!(
        "{}/test/moved:v1",
        redirector(env.reg.addr.clone())
    ))
    .unwrap();
    let (reg, remote) = resolved(&r);
    let paths = reg
        .fetch_blobs(&r, &remote, &env.dir.join("blobs"), &Quiet)
        .unwrap();
    assert_eq!(sha256_of(&paths[0]), written.layers[0][0]);
}

#[test]
fn bearer_token_challenge() {
    let Some(env) = Env::new("token", None) else {
        return;
    };
    let written = env.push_layers("test/tok:v1", vec![vec![("f", b"x".to_vec())]]);
    // Anonymous tokens, as for public images on Docker Hub.
    let open = token_front(env.reg.addr.clone(), None);
    let r = Reference::parse(&format!("{}/test/tok:v1", open.addr)).unwrap();
    let (reg, remote) = resolved(&r);
    let paths = reg
        .fetch_blobs(&r, &remote, &env.dir.join("blobs"), &Quiet)
        .unwrap();
    assert_eq!(sha256_of(&paths[0]), written.layers[0][0]);
    let queries = open.token_queries.lock().unwrap().clone();
    assert!(!queries.is_empty());
    assert!(
        queries
            .iter()
            .all(|q| q.contains("service=test") && q.contains("test%2Ftok%3Apull")),
        "{queries:?}"
    );

    // A token service that wants credentials.
    let closed = token_front(env.reg.addr.clone(), Some("bob:pw"));
    let host = closed.addr.clone();
    let r = Reference::parse(&format!("{host}/test/tok:v1")).unwrap();
    let err = reg.resolve(&r).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("registry {host}: test/tok:v1: authentication required (401): run 'rsing registry login {host}'")
    );
    let creds = |password: &str| Credentials {
        username: "bob".into(),
        password: password.into(),
    };
    let err = reg.check_credentials(&host, &creds("nope")).unwrap_err();
    assert_eq!(err.status(), Some(401));
    assert!(err.to_string().contains("token service refused"), "{err}");
    reg.check_credentials(&host, &creds("pw")).unwrap();
    reg.set_credentials(&host, Some(creds("pw")));
    assert_eq!(
        reg.resolve(&r).unwrap().manifest_digest.to_string(),
        written.manifests[0]
    );
}
