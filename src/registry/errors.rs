//! Turning `oci-client` failures into one clear line, deciding which of them are worth another
//! try, and the retry loop with exponential backoff.

use super::{Error, Observer};
use oci_client::errors::{DigestError, OciDistributionError as OciError, OciErrorCode};
use std::future::Future;
use std::time::Duration;

/// How many times a failing request is tried in all.
pub(crate) const ATTEMPTS: u32 = 5;
/// The longest pause between two tries.
const MAX_PAUSE: Duration = Duration::from_secs(30);

/// Where a failure happened, for the message: `registry HOST: SUBJECT: …`.
pub(crate) struct Context<'a> {
    pub registry: &'a str,
    pub subject: &'a str,
    /// Whether credentials were sent: changes what a 401 means.
    pub authenticated: bool,
}

impl Context<'_> {
    fn error(&self, code: Option<u16>, message: String) -> Error {
        Error::Registry {
            registry: self.registry.to_string(),
            subject: self.subject.to_string(),
            code,
            message,
        }
    }

    fn login_hint(&self) -> String {
        format!("run 'rsing registry login {}'", self.registry)
    }

    /// The one-line message for a status, with what to do about it.
    fn status(&self, code: u16, what: Option<&str>) -> Error {
        let message = match code {
            401 if self.authenticated => format!(
                "credentials rejected (401): check them with 'rsing registry login {}'",
                self.registry
            ),
            401 => format!(
                "{} (401): {}",
                what.unwrap_or("authentication required"),
                self.login_hint()
            ),
            403 => format!(
                "{} (403): {} with an account that may pull this image",
                what.unwrap_or("access denied"),
                self.login_hint()
            ),
            429 => format!(
                "{} (429): the registry is rate-limiting pulls; wait, or {} to raise the limit",
                what.unwrap_or("too many requests"),
                self.login_hint()
            ),
            c => format!("{} ({c})", what.unwrap_or(reason_phrase(c))),
        };
        self.error(Some(code), message)
    }

    /// Maps an `oci-client` error to ours.
    pub fn map(&self, e: &OciError) -> Error {
        match e {
            OciError::UnauthorizedError { .. } => self.status(401, None),
            OciError::AuthenticationFailure(reason) => self.error(
                Some(401),
                format!(
                    "the token service refused the credentials: {}: check them with 'rsing \
                     registry login {}'",
                    first_line(reason),
                    self.registry
                ),
            ),
            OciError::RegistryError { envelope, .. } => {
                let first = envelope.errors.first();
                let (code, text) = first
                    .map(|err| code_status(&err.code))
                    .unwrap_or((None, "error"));
                let detail = first
                    .map(|err| err.message.as_str())
                    .filter(|m| !m.is_empty() && !m.eq_ignore_ascii_case(text))
                    .map(|m| format!("{text}: {}", first_line(m)))
                    .unwrap_or_else(|| text.to_string());
                match code {
                    Some(c) => self.status(c, Some(&detail)),
                    None => self.error(None, detail),
                }
            }
            OciError::ServerError { code, message, .. } => {
                // Bodies of these are boilerplate or HTML; the status says it better.
                let text = first_line(message);
                let useless =
                    text.is_empty() || text.starts_with('<') || [401, 403, 429].contains(code);
                self.status(*code, (!useless).then_some(text.as_str()))
            }
            // `oci-client` turns some statuses (a blob `HEAD` before a push) into a request
            // error: the status says it better than the URL does.
            OciError::RequestError(err) => match err.status() {
                Some(code) => self.status(code.as_u16(), None),
                None => self.error(None, format!("request failed: {}", chain(err))),
            },
            OciError::IoError(err) => self.error(None, format!("connection failed: {err}")),
            OciError::DigestError(DigestError::VerificationError { expected, actual }) => self
                .error(
                    None,
                    format!(
                    "content does not match its digest {expected} (got {actual}); nothing was kept"
                ),
                ),
            other => self.error(None, first_line(&chain(other))),
        }
    }
}

/// The HTTP status and text the distribution spec gives each error code.
fn code_status(code: &OciErrorCode) -> (Option<u16>, &'static str) {
    match code {
        OciErrorCode::ManifestUnknown => (Some(404), "manifest unknown"),
        OciErrorCode::BlobUnknown => (Some(404), "blob unknown"),
        OciErrorCode::NameUnknown => (Some(404), "repository name not known to registry"),
        OciErrorCode::NotFound => (Some(404), "not found"),
        OciErrorCode::Unauthorized => (Some(401), "authentication required"),
        OciErrorCode::Denied => (Some(403), "access denied"),
        OciErrorCode::Toomanyrequests => (Some(429), "too many requests"),
        OciErrorCode::NameInvalid => (None, "invalid repository name"),
        OciErrorCode::TagInvalid => (None, "invalid tag"),
        OciErrorCode::ManifestInvalid => (None, "invalid manifest"),
        OciErrorCode::DigestInvalid => (None, "invalid digest"),
        OciErrorCode::Unsupported => (None, "operation not supported"),
        _ => (None, "registry error"),
    }
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        404 => "not found",
        500 => "internal server error",
        502 => "bad gateway",
        503 => "service unavailable",
        504 => "gateway timeout",
        _ => "request failed",
    }
}

/// The first non-empty line of `s`, at most 200 characters: registries sometimes answer with
/// a whole HTML page.
pub(crate) fn first_line(s: &str) -> String {
    let line = s
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(200).collect()
}

/// An error and its causes, joined with ": " (reqwest hides the useful part in `source`).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// Worth another try: server errors, rate limits, and connections that failed or dropped.
pub(crate) fn retryable(e: &OciError) -> bool {
    match e {
        OciError::ServerError { code, .. } => *code >= 500 || *code == 429,
        OciError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|err| matches!(err.code, OciErrorCode::Toomanyrequests)),
        OciError::RequestError(err) => !err.is_builder() && !err.is_redirect(),
        OciError::IoError(_) => true,
        _ => false,
    }
}

/// The pause before attempt `attempt` (2, 3, …): `base`, doubling, capped, with up to 25%
/// jitter so a job array's tasks do not retry in lockstep.
pub(crate) fn pause(base: Duration, attempt: u32) -> Duration {
    let doubled = base.saturating_mul(1 << (attempt.saturating_sub(2)).min(16));
    let capped = doubled.min(MAX_PAUSE);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    capped + capped.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

/// A failure that may be worth another try.
pub(crate) trait Transient {
    fn transient(&self) -> bool;
    fn why(&self) -> String;
}

impl Transient for OciError {
    fn transient(&self) -> bool {
        retryable(self)
    }
    fn why(&self) -> String {
        first_line(&chain(self))
    }
}

/// Runs `op` until it succeeds, fails for good, or has been tried [`ATTEMPTS`] times,
/// sleeping [`pause`] between tries and telling `observer` about each retry.
pub(crate) async fn with_retries<T, E, F, Fut>(
    what: &str,
    base: Duration,
    observer: &dyn Observer,
    mut op: F,
) -> Result<T, E>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < ATTEMPTS && e.transient() => {
                attempt += 1;
                let why = e.why();
                tracing::info!(what, attempt, why, "retrying");
                observer.retrying(what, attempt, &why);
                tokio::time::sleep(pause(base, attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::errors::{OciEnvelope, OciError as EnvError};

    fn ctx(authenticated: bool) -> Context<'static> {
        Context {
            registry: "127.0.0.1:5000",
            subject: "foo/bar:nope",
            authenticated,
        }
    }

    fn envelope(code: OciErrorCode, message: &str) -> OciError {
        OciError::RegistryError {
            envelope: OciEnvelope {
                errors: vec![EnvError {
                    code,
                    message: message.to_string(),
                    detail: serde_json::Value::Null,
                }],
            },
            url: "http://x/v2/".into(),
        }
    }

    fn server(code: u16, message: &str) -> OciError {
        OciError::ServerError {
            code,
            url: "http://x/v2/".into(),
            message: message.into(),
        }
    }

    #[test]
    fn one_clear_line_per_status() {
        let msg = |e: OciError, auth| ctx(auth).map(&e).to_string();
        assert_eq!(
            msg(
                envelope(OciErrorCode::ManifestUnknown, "manifest unknown"),
                false
            ),
            "registry 127.0.0.1:5000: foo/bar:nope: manifest unknown (404)"
        );
        assert_eq!(
            msg(OciError::UnauthorizedError { url: "u".into() }, false),
            "registry 127.0.0.1:5000: foo/bar:nope: authentication required (401): run \
             'rsing registry login 127.0.0.1:5000'"
        );
        assert!(msg(OciError::UnauthorizedError { url: "u".into() }, true).contains("rejected"));
        assert!(msg(
            envelope(
                OciErrorCode::Denied,
                "requested access to the resource is denied"
            ),
            false
        )
        .contains("access denied: requested access to the resource is denied (403)"));
        assert!(msg(server(429, ""), false).contains("too many requests (429)"));
        assert!(msg(envelope(OciErrorCode::Toomanyrequests, "slow down"), false).contains("(429)"));
        assert!(
            msg(server(503, "<html>\n<b>down</b>"), false).ends_with("service unavailable (503)")
        );
        assert!(
            msg(server(404, "404 page not found\n"), false).ends_with(": 404 page not found (404)")
        );
        assert!(msg(server(500, ""), false).ends_with("internal server error (500)"));
        for e in [server(500, "x\ny"), envelope(OciErrorCode::NameUnknown, "")] {
            assert!(!msg(e, false).contains('\n'));
        }
        assert_eq!(ctx(false).map(&server(404, "")).status(), Some(404));
    }

    #[test]
    fn what_is_retried() {
        assert!(retryable(&server(500, "")));
        assert!(retryable(&server(503, "")));
        assert!(retryable(&server(429, "")));
        assert!(retryable(&envelope(OciErrorCode::Toomanyrequests, "")));
        assert!(retryable(&OciError::IoError(std::io::Error::other(
            "reset"
        ))));
        assert!(!retryable(&server(404, "")));
        assert!(!retryable(&envelope(OciErrorCode::ManifestUnknown, "")));
        assert!(!retryable(&OciError::UnauthorizedError { url: "u".into() }));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(100);
        let p2 = pause(base, 2);
        assert!(p2 >= base && p2 <= base.mul_f64(1.25));
        let p4 = pause(base, 4);
        assert!(p4 >= base * 4 && p4 <= (base * 4).mul_f64(1.25));
        assert!(pause(Duration::from_secs(1), 30) <= MAX_PAUSE.mul_f64(1.25));
    }

    struct Count(std::sync::atomic::AtomicU32);
    impl Observer for Count {
        fn started(&self, _: &crate::oci::Digest, _: u64) {}
        fn progress(&self, _: &crate::oci::Digest, _: u64) {}
        fn finished(&self, _: &crate::oci::Digest) {}
        fn retrying(&self, _: &str, _: u32, _: &str) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn retries_until_success_or_the_limit() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let obs = Count(0.into());
        let mut calls = 0;
        let result = rt.block_on(with_retries("x", Duration::from_millis(1), &obs, || {
            calls += 1;
            let fail = calls < 3;
            async move {
                if fail {
                    Err(server(503, ""))
                } else {
                    Ok(calls)
                }
            }
        }));
        assert_eq!(result.unwrap(), 3);
        assert_eq!(obs.0.load(std::sync::atomic::Ordering::SeqCst), 2);

        let failing = |code| {
            let mut calls = 0;
            let result: Result<(), OciError> =
                rt.block_on(with_retries("x", Duration::from_millis(1), &obs, || {
                    calls += 1;
                    async move { Err(server(code, "")) }
                }));
            assert!(result.is_err());
            calls
        };
        assert_eq!(failing(502), ATTEMPTS);
        let calls = failing(404);
        assert_eq!(calls, 1, "a 404 is final");
    }
}
