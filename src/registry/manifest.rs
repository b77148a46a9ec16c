//! Manifests and indexes read with a bound. `oci-client`'s `pull_manifest_raw` reads the whole
//! body before its size can be checked, so a registry (or anything on the way to it) answering
//! with 100 MiB would have all of it in memory. Here the body is streamed and the read stops
//! at [`oci::MAX_JSON_SIZE`] (4 MiB, the size containerd allows), or before the first byte when
//! `Content-Length` already says more.
//!
//! Authentication stays `oci-client`'s: its `auth` does the `WWW-Authenticate` dance once per
//! repository, and the token it hands out is kept on the [`Conn`] for later manifest requests
//! (a 401 drops it and asks again once). Redirects are followed as `reqwest` does by default
//! (at most 10, credentials dropped on another host), as for every other request.

use super::client::Conn;
use super::errors::{first_line, Transient};
use crate::oci;
use oci_client::errors::{DigestError, OciDistributionError as OciError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use reqwest::StatusCode;

/// How much of an error response's body is read: enough for the JSON error envelope.
const ERROR_BODY_LIMIT: usize = 64 << 10;

/// What a manifest request sends to prove who it is, per repository.
#[derive(Clone)]
pub(crate) enum Authz {
    Anonymous,
    Bearer(String),
    Basic(String, String),
}

/// Why one manifest request failed.
#[derive(Debug)]
pub(crate) enum GetError {
    Oci(OciError),
    /// The body is larger than rsing reads; its size when the response said.
    TooBig(Option<u64>),
}

impl From<OciError> for GetError {
    fn from(e: OciError) -> GetError {
        GetError::Oci(e)
    }
}

impl From<reqwest::Error> for GetError {
    fn from(e: reqwest::Error) -> GetError {
        GetError::Oci(e.into())
    }
}

impl Transient for GetError {
    fn transient(&self) -> bool {
        matches!(self, GetError::Oci(e) if e.transient())
    }
    fn why(&self) -> String {
        match self {
            GetError::Oci(e) => e.why(),
            GetError::TooBig(_) => "too big".into(),
        }
    }
}

impl GetError {
    /// The message for [`super::Error::Registry`] when the body was too big.
    pub(crate) fn too_big_message(size: Option<u64>) -> String {
        let max = oci::MAX_JSON_SIZE;
        match size {
            Some(n) => format!("manifest of {n} bytes, more than the {max} bytes rsing reads"),
            None => format!("manifest of more than the {max} bytes rsing reads"),
        }
    }
}

/// The URL of `oref`'s manifest.
fn url(conn: &Conn, oref: &oci_client::Reference) -> String {
    let target = oref.digest().or(oref.tag()).unwrap_or("latest");
    format!(
        "{}://{}/v2/{}/manifests/{target}",
        conn.scheme,
        oref.resolve_registry(),
        oref.repository()
    )
}

/// The credentials for `oref`'s repository: cached, or from `oci-client`'s token dance.
async fn authz(conn: &Conn, oref: &oci_client::Reference, fresh: bool) -> Result<Authz, OciError> {
    let repo = oref.repository().to_string();
    if !fresh {
        if let Some(a) = conn.lock_tokens().get(&repo) {
            return Ok(a.clone());
        }
    }
    let a = match conn
        .client
        .auth(oref, &conn.auth, RegistryOperation::Pull)
        .await
    {
        Ok(Some(token)) => Authz::Bearer(token),
        Ok(None) => match &conn.auth {
            RegistryAuth::Basic(user, password) => Authz::Basic(user.clone(), password.clone()),
            _ => Authz::Anonymous,
        },
        // A network failure is retried like the request itself.
        Err(e) if e.transient() => return Err(e),
        // A refused token: the request goes without one, and its 401 says what to do, as
        // for every request `oci-client` makes (it ignores token failures the same way).
        Err(e) => {
            tracing::debug!("token for {}: {e}", oref.repository());
            return Ok(Authz::Anonymous);
        }
    };
    conn.lock_tokens().insert(repo, a.clone());
    Ok(a)
}

/// Sends the request `make` builds, authorized for `oref`; after a 401 answered to a cached
/// token (an expired one), once more with a fresh token.
async fn send_authorized(
    conn: &Conn,
    oref: &oci_client::Reference,
    make: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, OciError> {
    let mut fresh = false;
    loop {
        let request = match authz(conn, oref, fresh).await? {
            Authz::Anonymous => make(),
            Authz::Bearer(token) => make().bearer_auth(token),
            Authz::Basic(user, password) => make().basic_auth(user, Some(password)),
        };
        let res = request.send().await?;
        if res.status() == StatusCode::UNAUTHORIZED && !fresh {
            fresh = true;
            continue;
        }
        return Ok(res);
    }
}

/// One GET of `oref`'s manifest accepting `accept`, read up to [`oci::MAX_JSON_SIZE`]. Checks
/// a `Docker-Content-Digest` header against the body, as `oci-client` does.
pub(crate) async fn get(
    conn: &Conn,
    oref: &oci_client::Reference,
    accept: &[&str],
) -> Result<Vec<u8>, GetError> {
    let url = url(conn, oref);
    let mut res = send_authorized(conn, oref, || {
        conn.http
            .get(&url)
            .header(reqwest::header::ACCEPT, accept.join(", "))
    })
    .await?;
    let status = res.status();
    if status != StatusCode::OK {
        let body = read_bounded(&mut res, ERROR_BODY_LIMIT).await?.0;
        return Err(status_error(status, &body, &url).into());
    }
    let max = oci::MAX_JSON_SIZE;
    if let Some(n) = res.content_length().filter(|&n| n > max) {
        return Err(GetError::TooBig(Some(n)));
    }
    let declared = res.content_length();
    let digest_header = res
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (body, complete) = read_bounded(&mut res, max as usize).await?;
    if !complete {
        return Err(GetError::TooBig(declared));
    }
    if let Some(expected) = digest_header.filter(|h| h.starts_with("sha256:")) {
        let actual = crate::oci::Digest::of(&body).to_string();
        if expected != actual {
            return Err(
                OciError::DigestError(DigestError::VerificationError { expected, actual }).into(),
            );
        }
    }
    Ok(body)
}

/// Bytes `[offset, offset + len)` of blob `digest` of `oref`'s repository: one `GET` with a
/// `Range` header, with the repository's cached credentials. Not `oci-client`'s
/// `pull_blob_stream_partial`: for a registry without tokens (anonymous, or basic auth
/// answered without one) that one probes `GET /v2/` before every request, doubling the round
/// trips of a lazy start that reads a hundred chunks one after the other. A registry that
/// ignores ranges (200) has the part cut out of the whole blob, read no further than needed.
pub(crate) async fn get_range(
    conn: &Conn,
    oref: &oci_client::Reference,
    digest: &str,
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, OciError> {
    let url = format!(
        "{}://{}/v2/{}/blobs/{digest}",
        conn.scheme,
        oref.resolve_registry(),
        oref.repository()
    );
    let range = format!("bytes={offset}-{}", offset + len.max(1) - 1);
    let mut res = send_authorized(conn, oref, || {
        conn.http.get(&url).header(reqwest::header::RANGE, &range)
    })
    .await?;
    let status = res.status();
    let skip = match status {
        StatusCode::PARTIAL_CONTENT => 0,
        StatusCode::OK => offset,
        _ => {
            let body = match read_bounded(&mut res, ERROR_BODY_LIMIT).await {
                Ok((b, _)) => b,
                Err(_) => Vec::new(),
            };
            return Err(status_error(status, &body, &url));
        }
    };
    let mut out = Vec::with_capacity(len as usize);
    let mut pos = 0u64;
    while (out.len() as u64) < len {
        let Some(chunk) = res.chunk().await? else {
            break;
        };
        let start = skip.saturating_sub(pos).min(chunk.len() as u64) as usize;
        pos += chunk.len() as u64;
        let take = (chunk.len() - start).min(len as usize - out.len());
        out.extend_from_slice(&chunk[start..start + take]);
    }
    if (out.len() as u64) < len {
        return Err(OciError::IoError(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("connection closed after {} of {len} bytes", out.len()),
        )));
    }
    Ok(out)
}

/// Reads `res`'s body up to `limit` bytes; `false` when there was more (the rest is left
/// unread: dropping the response closes the connection).
async fn read_bounded(
    res: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), GetError> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        if body.len() + chunk.len() > limit {
            let room = limit - body.len();
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// The error for a non-200 answer, as `oci-client` builds it (so the messages and the retry
/// rules of [`super::errors`] apply unchanged).
fn status_error(status: StatusCode, body: &[u8], url: &str) -> OciError {
    let code = status.as_u16();
    match status {
        StatusCode::UNAUTHORIZED => OciError::UnauthorizedError {
            url: url.to_string(),
        },
        s if s.is_success() => {
            OciError::SpecViolationError(format!("expected HTTP status 200, got {code} instead"))
        }
        s if s.is_client_error() => match serde_json::from_slice::<OciEnvelope>(body) {
            Ok(envelope) => OciError::RegistryError {
                envelope,
                url: url.to_string(),
            },
            Err(_) => OciError::ServerError {
                code,
                url: url.to_string(),
                message: first_line(&String::from_utf8_lossy(body)),
            },
        },
        _ => OciError::ServerError {
            code,
            url: url.to_string(),
            message: first_line(&String::from_utf8_lossy(body)),
        },
    }
}
