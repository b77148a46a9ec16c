//! [`Registry`]: one `oci-client` per registry host (with its credentials and token cache),
//! a private tokio runtime, and the blocking `resolve` that turns a reference into a verified
//! manifest, config and layer list for the requested platform.

use super::auth::{self, Credentials};
use super::errors::{with_retries, Context};
use super::manifest::{Authz, GetError};
use super::reference::{endpoint_of, normalise_host, Reference};
use super::{Error, Quiet};
use crate::oci::{self, Digest, LayerBlob, Platform, ResolvedImage};
use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use oci_spec::image::ImageConfiguration;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Manifest types rsing asks for: OCI and Docker schema 2 manifests and indexes.
const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

const USER_AGENT: &str = concat!("rsing/", env!("CARGO_PKG_VERSION"));

/// How a [`Registry`] talks to registries.
#[derive(Debug, Clone)]
pub struct Options {
    /// Registries (`host` or `host:port`) reached over plain HTTP. Loopback registries
    /// (127.0.0.0/8, ::1, localhost) always are; everything else uses HTTPS.
    pub insecure: Vec<String>,
    /// Which image of a multi-platform index to use.
    pub platform: Platform,
    /// Blobs downloaded at the same time.
    pub parallel: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            insecure: Vec::new(),
            platform: Platform::host(),
            parallel: 4,
        }
    }
}

/// One layer as the manifest lists it: digest, media type, size.
pub type RemoteLayer = (Digest, String, u64);

/// A resolved remote image: everything but the layer blobs, all verified against digests.
#[derive(Debug, Clone)]
pub struct Remote {
    /// The platform manifest's digest (not the index's).
    pub manifest_digest: Digest,
    pub config_digest: Digest,
    /// The config exactly as stored.
    pub config_raw: Vec<u8>,
    pub config: ImageConfiguration,
    /// Layers in manifest order: `layers[0]` is the base.
    pub layers: Vec<RemoteLayer>,
}

impl Remote {
    /// The image as `convert` takes it, given the blob files [`Registry::fetch_blobs`] returned
    /// (same order as `layers`). `source` is what the user named.
    pub fn into_resolved(self, source: String, blobs: Vec<PathBuf>) -> ResolvedImage {
        let layers = self
            .layers
            .into_iter()
            .zip(blobs)
            .map(|((digest, media_type, size), path)| {
                LayerBlob::from_file(path, digest, media_type, size)
            })
            .collect();
        ResolvedImage {
            source,
            manifest_digest: Some(self.manifest_digest),
            config_digest: self.config_digest,
            config_raw: self.config_raw,
            config: self.config,
            layers,
        }
    }
}

/// A client for one registry host: the `oci-client` (whose token cache is per client) and the
/// credentials it sends.
pub(crate) struct Conn {
    pub client: oci_client::Client,
    pub auth: RegistryAuth,
    /// The registry as the user names it (`docker.io`), for messages and credentials.
    pub registry: String,
    /// For the requests rsing makes itself (manifests: see [`super::manifest`]), with the
    /// same time-outs and user agent as `client`'s.
    pub http: reqwest::Client,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Credentials for manifest requests, per repository.
    tokens: Mutex<HashMap<String, Authz>>,
}

impl Conn {
    pub(crate) fn lock_tokens(&self) -> std::sync::MutexGuard<'_, HashMap<String, Authz>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An `oci-client` reference to `repository` at `target` (a tag or a digest).
    pub fn reference(&self, repository: &str, target: &str) -> oci_client::Reference {
        let endpoint = endpoint_of(&self.registry).to_string();
        if target.starts_with("sha256:") {
            oci_client::Reference::with_digest(endpoint, repository.to_string(), target.into())
        } else {
            oci_client::Reference::with_tag(endpoint, repository.to_string(), target.into())
        }
    }

    pub fn context<'a>(&'a self, subject: &'a str) -> Context<'a> {
        Context {
            registry: &self.registry,
            subject,
            authenticated: self.auth != RegistryAuth::Anonymous,
        }
    }
}

/// The distribution client. Blocking: each call runs on the private runtime.
pub struct Registry {
    pub(crate) opts: Options,
    pub(crate) rt: tokio::runtime::Runtime,
    conns: Mutex<HashMap<String, Arc<Conn>>>,
    /// The first pause between retries (tests shorten it).
    pub(crate) backoff: Duration,
    /// When a blob transfer counts as stalled (tests shorten it).
    pub(crate) low_speed: super::LowSpeed,
    /// A blob store (`sha256/<hex>`) where image configs are looked up before they are
    /// fetched, and kept after: a repeated pull then costs one manifest request.
    config_store: Option<PathBuf>,
}

/// The host part of `host[:port]` or `[v6]:port`.
fn host_part(registry: &str) -> &str {
    if let Some(rest) = registry.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match registry.rsplit_once(':') {
        Some((host, _)) if !host.contains(':') => host,
        _ => registry,
    }
}

/// Loopback registries (127.0.0.0/8, ::1, localhost) speak plain HTTP: nothing leaves the
/// machine, and that is where test and CI registries run.
fn is_loopback(registry: &str) -> bool {
    let host = host_part(registry);
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl Registry {
    pub fn new(opts: Options) -> Result<Registry, Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("rsing-registry")
            .enable_all()
            .build()
            .map_err(|e| Error::Setup(format!("tokio runtime: {e}")))?;
        Registry::with_runtime(opts, rt)
    }

    /// A client that runs on the calling thread only (a current-thread runtime): it starts no
    /// threads of its own, and dropping it leaves none behind (lazy starts read images with it
    /// before rsing enters a user namespace, which a multi-threaded process cannot).
    pub fn new_current_thread(opts: Options) -> Result<Registry, Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Setup(format!("tokio runtime: {e}")))?;
        Registry::with_runtime(opts, rt)
    }

    fn with_runtime(opts: Options, rt: tokio::runtime::Runtime) -> Result<Registry, Error> {
        // reqwest is built without a default TLS provider; another part of rsing may have
        // installed this one already, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Registry {
            opts,
            rt,
            conns: Mutex::new(HashMap::new()),
            backoff: Duration::from_secs(1),
            low_speed: super::LowSpeed::from_env(),
            config_store: None,
        })
    }

    /// Keeps image configs in (and reads them from) blob store `dir` (`dir/sha256/<hex>`).
    pub fn with_config_store(mut self, dir: PathBuf) -> Registry {
        self.config_store = Some(dir);
        self
    }

    /// The config blob from the store, if it is there and intact.
    fn stored_config(&self, digest: &Digest) -> Option<Vec<u8>> {
        let path = self
            .config_store
            .as_ref()?
            .join("sha256")
            .join(digest.hex());
        let bytes = std::fs::read(path).ok()?;
        (Digest::of(&bytes) == *digest).then_some(bytes)
    }

    /// Keeps a verified config blob in the store (best effort: a cache, never required).
    fn store_config(&self, digest: &Digest, bytes: &[u8]) {
        let Some(dir) = &self.config_store else {
            return;
        };
        let path = dir.join("sha256").join(digest.hex());
        let staged = path.with_extension(format!("config.{}", std::process::id()));
        if std::fs::write(&staged, bytes).is_ok() && std::fs::rename(&staged, &path).is_err() {
            let _ = std::fs::remove_file(&staged);
        }
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Whether `registry` is reached over plain HTTP.
    pub fn plain_http(&self, registry: &str) -> bool {
        let registry = normalise_host(registry);
        is_loopback(&registry)
            || self
                .opts
                .insecure
                .iter()
                .map(|i| normalise_host(i))
                .any(|i| i == registry || (!i.contains(':') && i == host_part(&registry)))
    }

    fn make_conn(&self, registry: &str, creds: Option<Credentials>) -> Result<Conn, Error> {
        let plain = self.plain_http(registry);
        let config = ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: USER_AGENT,
            tls_certs_only: super::roots::oci_client(),
            ..Default::default()
        };
        let client = oci_client::Client::try_from(config)
            .map_err(|e| Error::Setup(format!("HTTP client for {registry}: {e}")))?;
        let http = super::roots::reqwest_builder(reqwest::Client::builder())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(120))
            .user_agent(USER_AGENT)
            .build()
            .map_err(|e| Error::Setup(format!("HTTP client for {registry}: {e}")))?;
        tracing::debug!(
            registry,
            plain_http = plain,
            authenticated = creds.is_some(),
            "registry client"
        );
        Ok(Conn {
            client,
            auth: match creds {
                Some(c) => RegistryAuth::Basic(c.username, c.password),
                None => RegistryAuth::Anonymous,
            },
            registry: registry.to_string(),
            http,
            scheme: if plain { "http" } else { "https" },
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The client for `registry`, made on first use with the credentials found for it.
    pub(crate) fn conn(&self, registry: &str) -> Result<Arc<Conn>, Error> {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = conns.get(registry) {
            return Ok(c.clone());
        }
        let conn = Arc::new(self.make_conn(registry, auth::lookup(registry)?)?);
        conns.insert(registry.to_string(), conn.clone());
        Ok(conn)
    }

    /// Makes the client for `registry` now (credentials read, TLS roots loaded), so that later
    /// requests need no files (lazy starts read images from inside the container's root).
    pub fn connect(&self, registry: &str) -> Result<(), Error> {
        self.conn(registry).map(|_| ())
    }

    /// Uses `creds` for `registry` from now on (tests: no environment or files involved).
    #[cfg(test)]
    pub(crate) fn set_credentials(&self, registry: &str, creds: Option<Credentials>) {
        let conn = Arc::new(self.make_conn(registry, creds).expect("a registry client"));
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.insert(registry.to_string(), conn);
    }

    /// Finds the image `r` names for the configured platform: fetches the manifest (picking
    /// from an index), then the config; checks every document against its digest.
    pub fn resolve(&self, r: &Reference) -> Result<Remote, Error> {
        let conn = self.conn(&r.registry)?;
        self.rt.block_on(self.resolve_async(&conn, r))
    }

    async fn resolve_async(&self, conn: &Conn, r: &Reference) -> Result<Remote, Error> {
        let subject = r.short();
        let image_err = |source| Error::Image {
            registry: r.registry.clone(),
            subject: subject.clone(),
            source,
        };
        let (mut bytes, mut digest) = self.manifest(conn, r, &r.target(), &subject).await?;
        if let Some(want) = &r.digest {
            check_digest(r, "manifest", want, &digest)?;
        }
        if is_index(&bytes) {
            let chosen = oci::select_manifest_in(&bytes, &self.opts.platform, "image index")
                .map_err(image_err)?;
            let want = Digest::try_from(chosen.digest()).map_err(image_err)?;
            tracing::debug!(platform = %self.opts.platform, manifest = %want, "picked from the index");
            (bytes, digest) = self.manifest(conn, r, &want.to_string(), &subject).await?;
            check_digest(r, "manifest", &want, &digest)?;
        }
        let manifest = oci::parse_manifest(&bytes).map_err(image_err)?;
        let config_desc = manifest.config();
        let config_digest = Digest::try_from(config_desc.digest()).map_err(image_err)?;
        let config_size = config_desc.size();
        if config_size > oci::MAX_JSON_SIZE {
            return Err(conn.context(&subject).map(
                &oci_client::errors::OciDistributionError::SpecViolationError(format!(
                    "config {config_digest} is {config_size} bytes, more than rsing reads"
                )),
            ));
        }
        let config_raw = match self.stored_config(&config_digest) {
            Some(bytes) => bytes,
            None => {
                let bytes = self
                    .blob_bytes(
                        conn,
                        r,
                        &config_digest,
                        config_desc.media_type().to_string(),
                        config_size,
                        &subject,
                    )
                    .await?;
                check_digest(r, "config", &config_digest, &Digest::of(&bytes))?;
                self.store_config(&config_digest, &bytes);
                bytes
            }
        };
        let config = oci::parse_config(&config_raw).map_err(image_err)?;
        let arch = config.architecture().to_string();
        if arch != self.opts.platform.architecture {
            // A single-platform tag: nothing to choose from, so say what it is.
            tracing::warn!(
                "{r} is for {}/{arch}, not {}",
                config.os(),
                self.opts.platform
            );
        }
        let layers = manifest
            .layers()
            .iter()
            .map(|l| {
                Ok((
                    Digest::try_from(l.digest()).map_err(image_err)?,
                    l.media_type().to_string(),
                    l.size(),
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Remote {
            manifest_digest: digest,
            config_digest,
            config_raw,
            config,
            layers,
        })
    }

    /// One manifest (or index) by tag or digest, with the digest of the bytes received.
    async fn manifest(
        &self,
        conn: &Conn,
        r: &Reference,
        target: &str,
        subject: &str,
    ) -> Result<(Vec<u8>, Digest), Error> {
        let bytes = self
            .manifest_bytes(conn, r, target, ACCEPT, subject)
            .await?;
        let digest = Digest::of(&bytes);
        Ok((bytes, digest))
    }

    /// The manifest `target` of `r`'s repository (one of the `accept` types), read with a
    /// bound ([`super::manifest`]) and retried like every request.
    pub(crate) async fn manifest_bytes(
        &self,
        conn: &Conn,
        r: &Reference,
        target: &str,
        accept: &[&str],
        subject: &str,
    ) -> Result<Vec<u8>, Error> {
        let oref = conn.reference(&r.repository, target);
        let what = format!("manifest {}", r.short());
        with_retries(&what, self.backoff, &Quiet, || {
            super::manifest::get(conn, &oref, accept)
        })
        .await
        .map_err(|e| match e {
            GetError::Oci(e) => conn.context(subject).map(&e),
            GetError::TooBig(size) => Error::Registry {
                registry: r.registry.clone(),
                subject: subject.to_string(),
                code: None,
                message: GetError::too_big_message(size),
            },
        })
    }

    /// A small blob (the config) in memory.
    async fn blob_bytes(
        &self,
        conn: &Conn,
        r: &Reference,
        digest: &Digest,
        media_type: String,
        limit: u64,
        subject: &str,
    ) -> Result<Vec<u8>, Error> {
        let oref = conn.reference(&r.repository, &r.target());
        let desc = OciDescriptor {
            media_type,
            digest: digest.to_string(),
            ..Default::default()
        };
        let what = format!("config {}", digest.short());
        with_retries(&what, self.backoff, &Quiet, || async {
            // Streamed and capped: a registry that sends more than a config can be is cut
            // off, not buffered (the digest check after this catches anything else).
            let mut stream = conn.client.pull_blob_stream(&oref, &desc).await?;
            let mut buf = Vec::new();
            while let Some(chunk) = stream.next().await {
                let chunk = match chunk {
                    Ok(chunk) => chunk,
                    // oci-client's own digest check at the end: ours follows and says more.
                    Err(e)
                        if e.get_ref()
                            .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>()) =>
                    {
                        break
                    }
                    Err(e) => return Err(e.into()),
                };
                buf.extend_from_slice(&chunk);
                if buf.len() as u64 > limit {
                    return Err(
                        oci_client::errors::OciDistributionError::SpecViolationError(format!(
                            "config {digest} is longer than the {limit} bytes expected"
                        )),
                    );
                }
            }
            Ok(buf)
        })
        .await
        .map_err(|e| conn.context(subject).map(&e))
    }

    /// Checks that `registry` accepts `creds` (for `rsing registry login`): a bearer registry
    /// must hand out a token for them; a basic-auth registry must answer a request made
    /// with them with something other than 401.
    pub(crate) fn check_credentials(
        &self,
        registry: &str,
        creds: &Credentials,
    ) -> Result<(), Error> {
        let conn = self.make_conn(registry, Some(creds.clone()))?;
        let oref = conn.reference("rsing/login-check", "latest");
        let ctx = conn.context("login");
        self.rt.block_on(async {
            let token = with_retries("login", self.backoff, &Quiet, || {
                conn.client.auth(&oref, &conn.auth, RegistryOperation::Pull)
            })
            .await
            .map_err(|e| ctx.map(&e))?;
            if token.is_some() {
                return Ok(());
            }
            let probe = with_retries("login", self.backoff, &Quiet, || {
                conn.client.list_tags(&oref, &conn.auth, Some(1), None)
            })
            .await;
            match probe {
                Err(e @ oci_client::errors::OciDistributionError::UnauthorizedError { .. }) => {
                    Err(ctx.map(&e))
                }
                Err(e) => {
                    tracing::debug!("login probe: {e} (not an authentication failure)");
                    Ok(())
                }
                Ok(_) => Ok(()),
            }
        })
    }
}

/// An index or manifest list, by its `mediaType` or, without one, by its `manifests` key.
fn is_index(bytes: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Head {
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
    }
    match serde_json::from_slice::<Head>(bytes) {
        Ok(Head {
            media_type: Some(t),
            ..
        }) => t.contains("index") || t.contains("manifest.list"),
        Ok(Head { manifests, .. }) => manifests.is_some(),
        Err(_) => false,
    }
}

pub(crate) fn check_digest(
    r: &Reference,
    what: &'static str,
    expected: &Digest,
    actual: &Digest,
) -> Result<(), Error> {
    if expected == actual {
        return Ok(());
    }
    Err(Error::DigestMismatch {
        registry: r.registry.clone(),
        subject: r.short(),
        what,
        expected: expected.clone(),
        actual: actual.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback_or_when_marked() {
        let reg = Registry::new(Options {
            insecure: vec!["http://lab.example:5000".into(), "intranet".into()],
            ..Options::default()
        })
        .unwrap();
        for plain in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost",
            "LOCALHOST:5000",
            "[::1]:5000",
            "lab.example:5000",
            "intranet:443",
            "intranet",
        ] {
            assert!(reg.plain_http(plain), "{plain}");
        }
        for tls in [
            "docker.io",
            "lab.example",
            "lab.example:5001",
            "10.0.0.1:5000",
            "[::2]:5000",
        ] {
            assert!(!reg.plain_http(tls), "{tls}");
        }
    }

    #[test]
    fn index_detection() {
        assert!(is_index(
            br#"{"mediaType":"application/vnd.oci.image.index.v1+json"}"#
        ));
        assert!(is_index(
            br#"{"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json"}"#
        ));
        assert!(is_index(br#"{"schemaVersion":2,"manifests":[]}"#));
        assert!(!is_index(br#"{"schemaVersion":2,"config":{},"layers":[]}"#));
        assert!(!is_index(
            br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json","manifests":[]}"#
        ));
        assert!(!is_index(b"not json"));
    }
}
