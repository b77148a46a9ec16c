//! Why joining, starting or running an image server failed. The variants carry the operation,
//! the path and the OS error (`errno` inside the `io::Error`); the sentence is made only when
//! shown: a start that cannot join logs it and serves the image in-process, a server that
//! cannot start prints it to the start that launched it.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a file or directory failed.
    #[error("{op} {}: {source}", path.display())]
    Path {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A system call that names no file failed.
    #[error("{op}: {source}")]
    Call {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the image server runs as another user")]
    ServerOfAnotherUser,
    #[error("client of another user")]
    ClientOfAnotherUser,
    #[error("the image server refused the connection")]
    Refused,
    #[error("the image server did not answer in time")]
    NoAnswer,
    /// The server's own words (`error: …` on its stdout), or nothing if it died first.
    #[error("the image server did not start: {0}")]
    NotStarted(String),
    /// The server was started by an rsing speaking another protocol version.
    #[error("image server protocol version {found}, this rsing speaks {expected}")]
    Version { found: u64, expected: u64 },
    #[error("image server arguments: {0}")]
    Arguments(#[source] serde_json::Error),
    #[error("{0}")]
    Image(#[from] crate::squashfs::Error),
    #[error(transparent)]
    Namespace(#[from] crate::runtime::userns::Error),
}

impl Error {
    /// A failed call on `path` (for `map_err` closures: nothing is built on success).
    pub(super) fn at(op: &'static str, path: &Path, source: io::Error) -> Error {
        Error::Path {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// A failed call that names no file.
    pub(super) fn call(op: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Call { op, source }
    }

    /// A failed `nix` call that names no file.
    pub(super) fn failed(op: &'static str, errno: nix::errno::Errno) -> Error {
        Error::Call {
            op,
            source: errno.into(),
        }
    }

    /// The OS error number behind the failure, where there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Path { source, .. } | Error::Call { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
