//! `--overlay` and `--writable`: the layers stacked over the image, and whether the image
//! itself is written (docs/overlays.md).

use anyhow::bail;

use super::UserOptions;
use crate::image::{OpenedImage, Root};
use crate::runtime::host::HostFacts;
use crate::runtime::overlay::{self, Overlays};

/// The overlay layers of a launch; `--writable` checked (a sandbox the caller can write).
pub(super) fn for_launch(
    args: &UserOptions,
    opened: &OpenedImage,
    host: &HostFacts,
) -> anyhow::Result<Overlays> {
    // A SIF's own overlay partition (`apptainer overlay create img.sif`).
    let partition = opened.overlay_partition();
    if args.writable && partition.is_some() {
        if !args.overlay.is_empty() {
            bail!("--writable and --overlay cannot be combined");
        }
    } else if args.writable {
        let Root::Directory(dir) = &opened.root else {
            bail!(
                "--writable needs a sandbox directory, and {} is a read-only image file; use \
                 --writable-tmpfs (changes discarded at exit) or --overlay DIR (changes kept in DIR)",
                opened.path.display()
            );
        };
        if nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err() {
            bail!(
                "--writable: you cannot write to the sandbox {}; use --writable-tmpfs or \
                 --overlay DIR",
                dir.display()
            );
        }
        if !args.overlay.is_empty() {
            bail!("--writable and --overlay cannot be combined");
        }
    }
    let requests: Vec<overlay::Request> = args
        .overlay
        .iter()
        .map(|s| overlay::parse(s, &host.cwd))
        .collect();
    let mut overlays = overlay::open(&requests)?;
    if let Some(offset) = partition {
        overlays.add_sif_partition(&opened.path, offset, args.writable)?;
    }
    Ok(overlays)
}
