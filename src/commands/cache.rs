//! `rsing cache list` and `rsing cache clean`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::Context;
use indicatif::HumanBytes;

use crate::cache::Cache;

#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// List cached blobs and converted images
    List,
    /// Remove cache entries (asks first on a terminal unless -f; --dry-run only lists them)
    Clean {
        /// Only entries not used for N days
        #[arg(long, value_name = "N", conflicts_with = "all")]
        days: Option<u64>,
        /// Everything (the default when --days is not given)
        #[arg(long)]
        all: bool,
        /// Only this kind of entry: blob (downloaded layers), image (converted SIFs) or all
        #[arg(short = 'T', long = "type", value_name = "KIND", default_value = "all",
              value_parser = ["blob", "image", "all"])]
        kind: String,
        /// List what would be removed, remove nothing
        #[arg(short = 'n', long)]
        dry_run: bool,
        /// Do not ask
        #[arg(short = 'f', long)]
        force: bool,
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
        CacheCommand::Clean {
            days,
            all,
            kind,
            dry_run,
            force,
        } => {
            let older = days.map(|d| Duration::from_secs(d * 86_400));
            let now = std::time::SystemTime::now();
            let chosen: Vec<_> = cache
                .list()
                .with_context(|| format!("cache {}", cache.root().display()))?
                .into_iter()
                .filter(|e| kind == "all" || e.kind == kind.as_str())
                .filter(|e| {
                    let age = now.duration_since(e.used).unwrap_or_default();
                    older.is_none_or(|limit| age >= limit)
                })
                .collect();
            let size: u64 = chosen.iter().map(|e| e.size).sum();
            if *dry_run {
                for e in &chosen {
                    println!(
                        "would remove {} {} ({})",
                        e.kind,
                        e.name,
                        HumanBytes(e.size)
                    );
                }
                println!(
                    "would remove {} entries, {} freed",
                    chosen.len(),
                    HumanBytes(size)
                );
                return Ok(0);
            }
            let explicit = *all || days.is_some() || kind != "all";
            if !*force && !chosen.is_empty() {
                let what = format!(
                    "{} entries ({}) from {}",
                    chosen.len(),
                    HumanBytes(size),
                    cache.root().display()
                );
                if std::io::stdin().is_terminal() {
                    if !confirm(&format!("Remove {what}? [y/N] "))? {
                        println!("nothing removed");
                        return Ok(0);
                    }
                } else if !explicit {
                    anyhow::bail!(
                        "cache clean would remove {what}: give -f/--force (or --all) to do so \
                         without a terminal to ask on, or --dry-run to list them"
                    );
                }
            }
            // Under the cache's exclusive lock: running pulls and builds finish first.
            let leftovers: Vec<&str> = match (older.is_none(), kind.as_str()) {
                (false, _) => vec![],
                (true, "all") => vec!["blob", "image"],
                (true, k) => vec![k],
            };
            let freed = cache
                .remove(&chosen, &leftovers)
                .with_context(|| format!("cache {}", cache.root().display()))?;
            println!(
                "removed {} entries, {} freed",
                chosen.len(),
                HumanBytes(freed)
            );
        }
    }
    Ok(0)
}

/// Asks `question` on the terminal; true for y/yes.
fn confirm(question: &str) -> anyhow::Result<bool> {
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
