//! `rsing __serve`: the shared image server, started by `exec`/`run`/`shell` (hidden).

use std::path::PathBuf;

use crate::runtime::share::{self, ServeHooks};

/// One argument: the server's arguments as the starting rsing encoded them
/// (`runtime::share` declares, encodes and checks them; a version mismatch is refused there).
#[derive(Debug, clap::Args)]
pub struct ServeCli {
    spec: String,
}

pub fn run(cli: ServeCli) -> ! {
    share::serve(
        &cli.spec,
        // An image still downloading (`oras://`, `https://`) finishes before the server leaves.
        ServeHooks {
            open: crate::lazy::archive_path,
            leaving: crate::lazy::finish_background,
            block_dir,
        },
    )
}

/// `$RSING_CACHEDIR/blocks` (the server inherits its starter's environment), unless
/// `RSING_BLOCK_CACHE=no`.
fn block_dir() -> Option<PathBuf> {
    if matches!(
        std::env::var("RSING_BLOCK_CACHE").as_deref(),
        Ok("no" | "0" | "false")
    ) {
        return None;
    }
    Some(crate::cache::Cache::locate().ok()?.root().join("blocks"))
}
