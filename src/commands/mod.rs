//! One module per subcommand: turns parsed arguments into calls on `image` and `runtime`.

pub mod exec;
pub mod inspect;
pub mod serve;
pub mod sif;
pub mod siteconf;

/// Options every command shares.
#[derive(Debug, Clone, Default)]
pub struct Global {
    pub quiet: bool,
    pub config: Option<std::path::PathBuf>,
}
