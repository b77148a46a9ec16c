//! Building images from recipes, as the unprivileged user: Apptainer definition files
//! ([`deffile`]) today. A stage's base is unpacked into a staging directory by the caller
//! (`commands::recipe`); this module runs the recipe's steps on it ([`runner`], with the
//! [`crate::seccomp`] fakes and the [`owners`] record), writes `/.singularity.d` ([`metadata`]), and
//! hands the tree back to be packed into SquashFS/SIF with the recorded ownership.

pub mod cache;
pub mod copy;
pub mod deffile;
pub mod docker;
pub mod dockerfile;
pub mod download;
pub mod glob;
pub mod layers;
pub mod metadata;
pub mod owners;
pub mod runner;
mod stage;
pub mod subid;
pub mod userns;

pub use stage::{run_stage, run_test, sources as files_sources, StageDirs};

/// A build failure, with the step it happened in.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Parse(#[from] deffile::ParseError),
    #[error("{what} failed with exit status {status} ({file}:{line})")]
    StepFailed {
        what: String,
        status: i32,
        file: String,
        line: usize,
    },
    #[error("{file}:{line}: in %files: {message}")]
    Files {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}:{line}: {message}")]
    Step {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}
