//! Where a lazily started image's bytes come from: range requests to a registry (`oras://`,
//! through the registry client and its credentials) or to a web server (`http(s)://`).
//!
//! Both are used from the FUSE worker threads of the image server, which is forked after it
//! opened the image: a tokio runtime made before the fork has no threads in the child. So each
//! client remembers the process it was made in and is made again in a new one.

use crate::oci::Platform;
use crate::registry::{self, Reference, Registry, SifArtifact};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The longest one range request may take; a stalled connection fails, it never hangs a read.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Byte ranges of one remote file.
pub trait Ranges: Send + Sync {
    /// Bytes `[offset, offset + len)`, or one line saying why not.
    fn fetch(&self, offset: u64, len: u64) -> Result<Vec<u8>, String>;
}

/// A value made per process (see the module doc); the one of a parent process is leaked, as
/// dropping it would wait for threads that do not exist here.
struct PerProcess<T> {
    slot: Mutex<Option<(u32, Arc<T>)>>,
}

impl<T> PerProcess<T> {
    fn new() -> Self {
        PerProcess {
            slot: Mutex::new(None),
        }
    }

    fn get(&self, make: impl FnOnce() -> Result<T, String>) -> Result<Arc<T>, String> {
        let pid = std::process::id();
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, v)) = &*slot {
            if *p == pid {
                return Ok(v.clone());
            }
        }
        if let Some(old) = slot.take() {
            std::mem::forget(old);
        }
        let v = Arc::new(make()?);
        *slot = Some((pid, v.clone()));
        Ok(v)
    }
}

/// The SIF layer of an ORAS artifact.
pub struct OrasRanges {
    reference: Reference,
    art: SifArtifact,
    insecure: Vec<String>,
    registry: PerProcess<Registry>,
}

impl OrasRanges {
    pub fn new(reference: Reference, art: SifArtifact, insecure: Vec<String>) -> OrasRanges {
        OrasRanges {
            reference,
            art,
            insecure,
            registry: PerProcess::new(),
        }
    }
}

impl Ranges for OrasRanges {
    fn fetch(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        let reg = self.registry.get(|| {
            Registry::new(registry::Options {
                insecure: self.insecure.clone(),
                platform: Platform::host(),
                parallel: 1,
            })
            .map_err(|e| e.to_string())
        })?;
        reg.read_range(&self.reference, &self.art, offset, len, REQUEST_TIMEOUT)
    }
}

/// A file on a web server that answers range requests.
pub struct HttpRanges {
    url: String,
    /// The validator the file had when the download started: a range of another version of
    /// the file is refused (`If-Range`), never mixed in.
    etag: Option<String>,
    client: PerProcess<(tokio::runtime::Runtime, reqwest::Client)>,
}

/// What a `HEAD` says about a URL.
#[derive(Debug, Clone)]
pub struct HttpHead {
    pub size: u64,
    pub etag: Option<String>,
}

fn http_client() -> Result<(tokio::runtime::Runtime, reqwest::Client), String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("rsing-http")
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let client = reqwest::Client::builder()
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
    // The runtime's threads are idle; shutting it down here does not wait for anything.
    rt.shutdown_background();
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
            client: PerProcess::new(),
        }
    }
}

impl Ranges for HttpRanges {
    fn fetch(&self, offset: u64, len: u64) -> Result<Vec<u8>, String> {
        let c = self.client.get(http_client)?;
        let (rt, client) = (&c.0, &c.1);
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
