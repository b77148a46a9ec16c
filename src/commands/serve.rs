//! `rsing __serve`: the shared image server, started by `exec`/`run`/`shell` (hidden).

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
        },
    )
}
