//! Where a lazily started image's bytes come from: range requests to a registry (`oras://`,
//! through the registry client and its credentials) or to a web server (`http(s)://`).
//!
//! Threads: rsing reads an image's first bytes (superblock, tables, the tree it plans with)
//! on its main thread before it enters a user namespace, and the image server does so before it
//! forks; `unshare(CLONE_NEWUSER)` refuses a multi-threaded process and a fork keeps only the
//! calling thread. So on the main thread a client (a current-thread tokio runtime: no threads
//! of its own) is made for each request and dropped after it, which joins any thread it
//! started (a DNS lookup). Other threads (FUSE workers, the background download) borrow clients
//! from a pool, one thread per client at a time, with their connections. The pool is filled
//! when the image is opened: rsing serving an image in-process reads it from inside the
//! container's root, where the host's CA certificates and credentials are out of sight.

use crate::oci::Platform;
use crate::registry::{self, Reference, Registry, SifArtifact};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// The longest one range request may take; a stalled connection fails, it never hangs a read.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Clients made when an image is opened (FUSE threads plus the background download).
const PREFILL: usize = 4;

/// Byte ranges of one remote file.
pub trait Ranges: Send + Sync {
    /// Bytes `[offset, offset + len)`, or one line saying why not.
    fn fetch(&self, offset: u64, len: u64) -> Result<Vec<u8>, String>;
}

/// Whether the caller is the process's main thread (see the module doc).
pub fn on_main_thread() -> bool {
    // rsing has its own `main` symbol, so std does not name this thread "main".
    nix::unistd::gettid() == nix::unistd::getpid()
}

type Make<T> = Box<dyn Fn() -> Result<T, String> + Send + Sync>;

/// Clients lent to one thread at a time (see the module doc).
struct Pool<T> {
    idle: Mutex<Vec<T>>,
    returned: Condvar,
    make: Make<T>,
}

impl<T> Pool<T> {
    fn new(make: Make<T>) -> Self {
        let idle = (0..PREFILL).filter_map(|_| make().ok()).collect();
        Pool {
            idle: Mutex::new(idle),
            returned: Condvar::new(),
            make,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&T) -> R) -> Result<R, String> {
        if on_main_thread() {
            return Ok(f(&(self.make)()?));
        }
        let lent = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let client = match lent {
            Some(c) => c,
            None => {
                match (self.make)() {
                    Ok(c) => c,
                    // Cannot make one here (inside the container): wait for one to come back.
                    Err(e) => {
                        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                        let (mut idle, _) = self
                            .returned
                            .wait_timeout_while(idle, REQUEST_TIMEOUT, |v| v.is_empty())
                            .unwrap_or_else(|p| p.into_inner());
                        idle.pop().ok_or(e)?
                    }
                }
            }
        };
        let result = f(&client);
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(client);
        self.returned.notify_one();
        Ok(result)
    }
}

/// The SIF layer of an ORAS artifact.
pub struct OrasRanges {
    reference: Reference,
    art: SifArtifact,
    registries: Pool<Registry>,
}

impl OrasRanges {
    pub fn new(reference: Reference, art: SifArtifact, insecure: Vec<String>) -> OrasRanges {
        let host = reference.registry.clone();
        let make: Make<Registry> = Box::new(move || {
            let reg = Registry::new_current_thread(registry::Options {
                insecure: insecure.clone(),
                platform: Platform::host(),
                parallel: 1,
            })
            .map_err(|e| e.to_string())?;
            reg.connect(&host).map_err(|e| e.to_string())?;
            Ok(reg)
        });
        OrasRanges {
            reference,
            art,
            registries: Pool::new(make),
        }
    }
}

impl Ranges for OrasRanges {
    fn fetch(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        self.registries
            .with(|reg| reg.read_range(&self.reference, &self.art, offset, len, REQUEST_TIMEOUT))?
    }
}

/// A file on a web server that answers range requests.
pub struct HttpRanges {
    url: String,
    /// The validator the file had when the download started: a range of another version of
    /// the file is refused (`If-Range`), never mixed in.
    etag: Option<String>,
    clients: Pool<(tokio::runtime::Runtime, reqwest::Client)>,
}

/// What a `HEAD` says about a URL.
#[derive(Debug, Clone)]
pub struct HttpHead {
    pub size: u64,
    pub etag: Option<String>,
}

fn http_client() -> Result<(tokio::runtime::Runtime, reqwest::Client), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let client = registry::roots::reqwest_builder(reqwest::Client::builder())
        .user_agent(concat!("rsing/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    Ok((rt, client))
}

/// `HEAD url`: the size and validator of the file (for the cache key and `If-Range`).
pub fn http_head(url: &str) -> Result<HttpHead, String> {
    let (rt, client) = http_client()?;
    let head = rt.block_on(async {
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, client.head(url).send())
            .await
            .map_err(|_| "no answer in time".to_string())?
            .map_err(|e| error_line(&e))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        let size = resp
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .ok_or("the server does not say how large the file is")?;
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .or_else(|| resp.headers().get(reqwest::header::LAST_MODIFIED))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        Ok(HttpHead { size, etag })
    });
    head
}

/// reqwest's error with its causes, on one line.
fn error_line(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

impl HttpRanges {
    pub fn new(url: String, etag: Option<String>) -> HttpRanges {
        HttpRanges {
            url,
            etag,
            clients: Pool::new(Box::new(http_client)),
        }
    }
}

impl Ranges for HttpRanges {
    fn fetch(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        self.clients
            .with(|(rt, client)| self.fetch_with(rt, client, offset, len))?
    }
}

impl HttpRanges {
    fn fetch_with(
        &self,
        rt: &tokio::runtime::Runtime,
        client: &reqwest::Client,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, String> {
        rt.block_on(async {
            let mut req = client
                .get(&self.url)
                .header(
                    reqwest::header::RANGE,
                    format!("bytes={offset}-{}", offset + len - 1),
                )
                .timeout(REQUEST_TIMEOUT);
            if let Some(tag) = &self.etag {
                req = req.header(reqwest::header::IF_RANGE, tag);
            }
            let resp = req.send().await.map_err(|e| error_line(&e))?;
            match resp.status().as_u16() {
                206 => {}
                200 => {
                    return Err(
                        "the server sent the whole file, not the range asked for (it changed \
                         on the server, or it does not support ranges)"
                            .into(),
                    )
                }
                code => return Err(format!("HTTP {code}")),
            }
            let body = resp.bytes().await.map_err(|e| error_line(&e))?;
            if body.len() as u64 != len {
                return Err(format!(
                    "connection closed after {} of {len} bytes",
                    body.len()
                ));
            }
            Ok(body.to_vec())
        })
    }
}
