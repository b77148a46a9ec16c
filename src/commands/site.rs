//! The command edge of the site configuration ([`crate::siteconf`]): loads it with the
//! options every command shares and prints its warnings.

pub use crate::siteconf::SiteConfig;

use super::Global;

/// Loads the configuration for a command and prints its warnings (once, unless `-q`).
pub fn load_for(global: &Global) -> anyhow::Result<SiteConfig> {
    let conf = crate::siteconf::load(global.config.as_deref())?;
    if !global.quiet {
        for w in &conf.warnings {
            eprintln!("rsing: warning: {w}");
        }
    }
    Ok(conf)
}
