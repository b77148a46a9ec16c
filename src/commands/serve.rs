//! `rsing __serve`: the shared image server, started by `exec`/`run`/`shell` (hidden).

use std::path::PathBuf;

use crate::runtime::share::{self, ServeArgs, ServeHooks};

/// Arguments, in the order `runtime::share` passes them.
#[derive(Debug, clap::Args)]
pub struct ServeCli {
    image: PathBuf,
    offset: u64,
    uid_inside: u32,
    gid_inside: u32,
    linger: u64,
    socket: PathBuf,
    fsname: String,
}

pub fn run(cli: ServeCli) -> ! {
    share::serve(ServeArgs {
        image: cli.image,
        offset: cli.offset,
        uid_inside: cli.uid_inside,
        gid_inside: cli.gid_inside,
        linger: cli.linger,
        socket: cli.socket,
        fsname: cli.fsname,
        // An image still downloading (`oras://`, `https://`) finishes before the server leaves.
        hooks: ServeHooks {
            open: crate::lazy::archive_path,
            leaving: crate::lazy::finish_background,
        },
    })
}
