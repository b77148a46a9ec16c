//! The OCI distribution (v2) client behind `rsing pull docker://…` and `rsing registry login`.
//!
//! Built on `oci-client` (HTTP, the `WWW-Authenticate` bearer-token dance, basic auth, digest
//! headers), driven by a tokio runtime that lives inside [`Registry`]: everything exported
//! here is blocking, like the rest of rsing. What this module adds on top:
//!
//! * Docker's naming rules ([`Reference`]) and credential sources ([`auth`]);
//! * plain HTTP only for registries the caller marks insecure, or on loopback;
//! * retries with backoff on 5xx, 429, dropped connections and transfers below a minimum
//!   rate ([`LowSpeed`]);
//! * a blob store that resumes partial downloads, verifies every sha256 before a blob gets its
//!   final name, and serialises concurrent rsing processes with `flock` so a 100-task job
//!   array downloads each blob once;
//! * one-line errors that name the registry, the image and the HTTP status.

mod artifact;
pub mod auth;
mod client;
mod errors;
mod fetch;
mod manifest;
mod reference;
pub mod roots;
mod speed;
#[cfg(test)]
mod tests;

pub use artifact::{PushBlob, PushData, SifArtifact, SIF_CONFIG_MEDIA_TYPE, SIF_LAYER_MEDIA_TYPE};
pub use auth::{login, login_into, logout, Credentials};
pub use client::{Options, Registry, Remote, RemoteLayer};
pub use reference::{Reference, DOCKER_HUB};
pub use speed::LowSpeed;

use crate::oci::Digest;
use std::path::PathBuf;

/// Progress of blob downloads, reported from the download threads (hence `Sync`). `rsing pull`
/// draws progress bars from it; tests count calls.
pub trait Observer: Sync {
    /// A blob starts downloading (or is found complete: `finished` follows at once).
    fn started(&self, digest: &Digest, size: u64);
    /// `done` bytes of the blob are on disk (including any resumed part).
    fn progress(&self, digest: &Digest, done: u64);
    /// The blob is verified and stored under its final name.
    fn finished(&self, digest: &Digest);
    /// A request failed in a way worth retrying; attempt `attempt` follows after a pause.
    fn retrying(&self, what: &str, attempt: u32, why: &str);
}

/// An [`Observer`] that ignores everything.
pub struct Quiet;

impl Observer for Quiet {
    fn started(&self, _: &Digest, _: u64) {}
    fn progress(&self, _: &Digest, _: u64) {}
    fn finished(&self, _: &Digest) {}
    fn retrying(&self, _: &str, _: u32, _: &str) {}
}

/// Everything that can go wrong talking to a registry or storing what it sent. Each message is
/// one line naming the registry, the image or blob, and the file involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid image reference '{input}': {why}")]
    BadReference { input: String, why: String },
    /// A refusal or failure from the registry (or the way to it). `code` is the HTTP status
    /// when there was one; `message` already says what to do about it where we know.
    #[error("registry {registry}: {subject}: {message}")]
    Registry {
        registry: String,
        subject: String,
        code: Option<u16>,
        message: String,
    },
    /// Content whose sha256 is not the one it was asked for. Nothing was kept.
    #[error("registry {registry}: {subject}: {what} {expected}: content has digest {actual} (corrupt or tampered; nothing was kept)")]
    DigestMismatch {
        registry: String,
        /// The image it was fetched for (`repository:tag`).
        subject: String,
        what: &'static str,
        expected: Digest,
        actual: Digest,
    },
    /// A manifest or config that `oci` could not use (bad JSON, no image for the platform).
    #[error("registry {registry}: {subject}: {source}")]
    Image {
        registry: String,
        subject: String,
        #[source]
        source: crate::oci::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A credential file or variable that cannot be used.
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("cannot start the registry client: {0}")]
    Setup(String),
}

impl Error {
    fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// The HTTP status behind a registry error, if any (tests and callers that branch on 404).
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Registry { code, .. } => *code,
            _ => None,
        }
    }
}
