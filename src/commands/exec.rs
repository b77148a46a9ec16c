//! `rsing exec`, `run` and `shell`: finds and opens the image, then hands the rest to the
//! launch assembler ([`crate::launch`]) and the runtime.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::site as siteconf;
use super::Global;
use crate::image::{self, OpenedImage};
use crate::launch::{self, Assembled, Request};
pub use crate::launch::{Action, UserOptions as RuntimeArgs};
use crate::runtime::{self, host::HostFacts};

/// Runs `action` in `image_arg` and returns the exit status for rsing.
pub fn run(
    global: &Global,
    args: &RuntimeArgs,
    image_arg: &str,
    action: Action,
) -> anyhow::Result<i32> {
    // `instance://NAME`: the instance's image, planned as usual, then joined instead of started.
    let (image_arg, join) = match image_arg.strip_prefix("instance://") {
        Some(name) => {
            let running = super::instance::running(name)?;
            (running.image.clone(), Some(running.init_pid))
        }
        None => (image_arg.to_string(), None),
    };
    let site = siteconf::load_for(global)?;
    let host = HostFacts::gather().context("cannot read the calling process's state")?;
    let opened = open(global, &image_arg)?;
    let request = Request {
        options: args.clone(),
        action,
        join,
        quiet: global.quiet,
    };
    match launch::assemble(&site, &host, &opened, request)? {
        Assembled::NoTestScript => {
            // Apptainer's answer, and its status: an image without tests passes.
            println!("No test script found in container, exiting");
            Ok(0)
        }
        Assembled::Join {
            init,
            launch,
            cwd,
            home,
        } => Ok(runtime::join::run(init, &launch, &cwd, &home)?),
        Assembled::Start { container, hooks } => {
            launch::gpu::run_hooks(&hooks, &opened.path)?;
            let lazy_log = crate::lazy::Log::mark(&opened.path);
            let status = runtime::run(*container);
            // What went wrong reading an image still downloading, whatever the container's fate.
            if let Some(Err(refused)) = lazy_log.map(|log| log.report()) {
                if status.is_ok() {
                    bail!("{refused}");
                }
                eprintln!("rsing: error: {refused}");
            }
            Ok(status?)
        }
    }
}

/// Opens the image the user named: a file or directory, `docker://` (pulled into the cache
/// first), `oras://` or an `http(s)://` SIF (started lazily).
fn open(global: &Global, image_arg: &str) -> anyhow::Result<OpenedImage> {
    let remote = super::oras::is_remote_sif(image_arg);
    // A pulled image's cache lock is held until the image is open (`cache clean` waits).
    let (image_path, in_use) = match image_arg.strip_prefix("docker://") {
        Some(reference) => {
            let (path, in_use) = pulled(global, reference)?;
            (path, Some(in_use))
        }
        None if remote => (super::oras::for_exec(global, image_arg)?, None),
        // Canonical, so that RSING_CONTAINER and the image server's key name the file once.
        None => (
            std::fs::canonicalize(image_arg).unwrap_or_else(|_| PathBuf::from(image_arg)),
            None,
        ),
    };
    let mut opened = image::open(&image_path)?;
    drop(in_use);
    // The name the user gave (a symlink's, not its target's): RSING_NAME and the prompt.
    if !image_arg.starts_with("docker://") && !remote {
        if let Some(given) = Path::new(image_arg).file_name() {
            opened.name = given.to_string_lossy().into_owned();
        }
    }
    Ok(opened)
}

/// The cached SIF of `docker://REFERENCE`, pulled and converted first when missing (progress
/// on stderr, so the command's own output stays clean).
fn pulled(global: &Global, reference: &str) -> anyhow::Result<(PathBuf, crate::cache::UseLock)> {
    use super::progress::{Mode, Progress};
    let progress = std::sync::Arc::new(Progress::new(Mode::detect(global.quiet)));
    let args = super::fetch::ConvertArgs {
        arch: None,
        compress: "zstd".into(),
        block_size: 128 * 1024,
        insecure: false,
    };
    let pulled = super::fetch::cached_image(reference, &args, &progress)?;
    progress.clear();
    Ok(pulled)
}
