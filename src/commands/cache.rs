//! `rsing cache list` and `rsing cache clean`.

use std::time::Duration;

use anyhow::Context;
use indicatif::HumanBytes;

use crate::cache::Cache;

#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// List cached blobs and converted images
    List,
    /// Remove cache entries
    Clean {
        /// Only entries not used for N days
        #[arg(long, value_name = "N", conflicts_with = "all")]
        days: Option<u64>,
        /// Everything (the default when --days is not given)
        #[arg(long)]
        all: bool,
    },
}

pub fn run(cmd: &CacheCommand) -> anyhow::Result<i32> {
    let cache = Cache::locate().context("cache")?;
    match cmd {
        CacheCommand::List => {
            let entries = cache
                .list()
                .with_context(|| format!("cache {}", cache.root().display()))?;
            let total: u64 = entries.iter().map(|e| e.size).sum();
            println!("{:<6} {:>10}  NAME", "KIND", "SIZE");
            for e in &entries {
                println!(
                    "{:<6} {:>10}  {}",
                    e.kind,
                    HumanBytes(e.size).to_string(),
                    e.name
                );
            }
            println!(
                "{} entries, {} in {}",
                entries.len(),
                HumanBytes(total),
                cache.root().display()
            );
        }
        CacheCommand::Clean { days, all: _ } => {
            let older = days.map(|d| Duration::from_secs(d * 86_400));
            let removed = cache
                .clean(older)
                .with_context(|| format!("cache {}", cache.root().display()))?;
            let freed: u64 = removed.iter().map(|e| e.size).sum();
            println!(
                "removed {} entries, {} freed",
                removed.len(),
                HumanBytes(freed)
            );
        }
    }
    Ok(0)
}
