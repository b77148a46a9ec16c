//! `ADD https://URL DEST` of a Dockerfile: the file is downloaded (mode 0600, as Docker
//! documents for remote files), and the step's cache key takes its content like any copied
//! file's, so a changed file re-runs the step and an unchanged one does not.
//!
//! With the build cache on, the last body and its `ETag` are kept in
//! `build/steps/url-<sha256(URL)>/` (listed and cleaned with the step snapshots: it holds an
//! `owners.json`); the next build asks with `If-None-Match` and a `304` reuses the body without
//! transferring it again. A server without `ETag` is asked for the whole file every time.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::cache::StepCache;
use super::copy::remove_tree;

/// Whether an ADD source is a URL.
pub fn is_url(src: &str) -> bool {
    src.starts_with("http://") || src.starts_with("https://")
}

/// The file name Docker gives a download: the last segment of the URL's path.
pub fn file_name(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = rest.split(['?', '#']).next().unwrap_or("");
    let last = path
        .split_once('/')
        .map(|(_, p)| p.rsplit('/').next().unwrap_or(""))
        .unwrap_or("");
    if last.is_empty() || last == "." || last == ".." {
        "download".to_string()
    } else {
        last.to_string()
    }
}

/// Downloads `url` into directory `into` (created); returns the file. Errors are one line
/// naming the URL.
pub fn fetch(url: &str, cache: &StepCache, into: &Path) -> Result<PathBuf, String> {
    let fail = |what: String| format!("ADD {url}: {what}");
    std::fs::create_dir_all(into).map_err(|e| fail(format!("{}: {e}", into.display())))?;
    let dest = into.join(file_name(url));
    let entry = cache.dir().map(|d| d.join(format!("url-{}", hex(url))));
    let cached_tag = entry.as_ref().and_then(|e| {
        e.join("body").is_file().then_some(())?;
        std::fs::read_to_string(e.join("etag")).ok()
    });
    let outcome = get(url, cached_tag.as_deref(), &dest).map_err(fail)?;
    match (outcome, &entry) {
        (Outcome::NotModified, Some(e)) => {
            std::fs::copy(e.join("body"), &dest)
                .map_err(|err| fail(format!("reusing the cached body: {err}")))?;
            // Use time, for `rsing cache clean --days`.
            let _ = std::fs::File::open(e.join("owners.json"));
        }
        (Outcome::NotModified, None) => return Err(fail("unexpected 304 Not Modified".into())),
        (Outcome::Body { etag }, Some(e)) => {
            if let Some(tag) = etag {
                save(e, &dest, &tag);
            }
        }
        (Outcome::Body { .. }, None) => {}
    }
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| fail(format!("{}: {e}", dest.display())))?;
    Ok(dest)
}

fn hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

enum Outcome {
    NotModified,
    Body { etag: Option<String> },
}

/// `GET url` (conditional on `etag`) into `dest`.
fn get(url: &str, etag: Option<&str>, dest: &Path) -> Result<Outcome, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let client = reqwest::Client::builder()
        .user_agent(concat!("rsing/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(120))
        .build()
        .map_err(|e| format!("HTTP client: {}", error_line(&e)))?;
    rt.block_on(async {
        let mut req = client.get(url);
        if let Some(tag) = etag {
            req = req.header(reqwest::header::IF_NONE_MATCH, tag);
        }
        let mut resp = req.send().await.map_err(|e| error_line(&e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Outcome::NotModified);
        }
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let tag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut out =
            std::fs::File::create(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        while let Some(chunk) = resp.chunk().await.map_err(|e| error_line(&e))? {
            out.write_all(&chunk)
                .map_err(|e| format!("{}: {e}", dest.display()))?;
        }
        Ok(Outcome::Body { etag: tag })
    })
}

/// Stores `body` and `etag` as cache entry `entry`, replacing an older one. Failures only
/// lose the entry.
fn save(entry: &Path, body: &Path, etag: &str) {
    let Some(dir) = entry.parent() else { return };
    let name = entry.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".tmp-{name}-{}", std::process::id()));
    let old = dir.join(format!(".old-{name}-{}", std::process::id()));
    let ok = std::fs::create_dir_all(&tmp).is_ok()
        && std::fs::copy(body, tmp.join("body")).is_ok()
        && std::fs::write(tmp.join("etag"), etag).is_ok()
        && std::fs::write(tmp.join("owners.json"), "{\"by_path\":{}}").is_ok();
    if !ok {
        remove_tree(&tmp);
        return;
    }
    let replacing = std::fs::rename(entry, &old).is_ok();
    if std::fs::rename(&tmp, entry).is_err() {
        remove_tree(&tmp);
    }
    if replacing {
        remove_tree(&old);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_as_docker_gives_them() {
        assert_eq!(
            file_name("https://example.org/a/b/tool.tar.gz"),
            "tool.tar.gz"
        );
        assert_eq!(file_name("http://h:8080/x?y=1#z"), "x");
        assert_eq!(file_name("https://example.org/"), "download");
        assert_eq!(file_name("https://example.org"), "download");
        assert!(is_url("https://x/y") && !is_url("httpx/y"));
    }
}
