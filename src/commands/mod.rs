//! One module per subcommand: turns parsed arguments into calls on `image`, `runtime`,
//! `convert`, `registry` and `cache`.

pub mod build;
pub mod cache;
pub use crate::launch::compat;
pub mod doctor;
pub mod exec;
mod fetch;
pub mod gpu;
pub mod inspect;
pub mod instance;
pub mod manpages;
pub mod module;
pub mod oras;
pub mod overlay;
mod pack;
mod progress;
pub mod recipe;
pub mod registry;
pub mod serve;
pub mod sif;
pub mod site;
pub mod term;

/// Options every command shares.
#[derive(Debug, Clone, Default)]
pub struct Global {
    pub quiet: bool,
    pub config: Option<std::path::PathBuf>,
}
