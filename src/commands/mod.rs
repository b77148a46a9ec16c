//! One module per subcommand: turns parsed arguments into calls on `image`, `runtime`,
//! `convert`, `registry` and `cache`.

pub mod build;
pub mod cache;
pub mod exec;
mod fetch;
pub mod gpu;
pub mod inspect;
pub mod module;
mod pack;
mod progress;
pub mod recipe;
pub mod registry;
pub mod serve;
pub mod sif;
pub mod siteconf;

/// Options every command shares.
#[derive(Debug, Clone, Default)]
pub struct Global {
    pub quiet: bool,
    pub config: Option<std::path::PathBuf>,
}
