//! rsing: a rootless container runner for HPC clusters.
//!
//! Layers (dependencies point down only; `tests/architecture.rs` checks this, module by
//! module):
//!
//! ```text
//! main → cli → commands → launch → runtime → { tree, fuse } → squashfs
//!              commands → { build → convert, lazy, registry } → { oci, sif, squashfs }
//!              commands, launch → { image, gpu, siteconf, cache }
//!              image, convert, build, runtime → contract → sif
//!              civil (dates): commands, the squashfs writer tests, build.rs (by path)
//! ```
//!
//! * `cli`: argument parsing, error printing, exit codes.
//! * `commands`: one module per subcommand; parses arguments and calls the layers below.
//! * `launch`: the launch assembler (commands → launch → runtime): site config, host facts,
//!   the opened image and the user's options become one plain-data launch description.
//! * `runtime`: namespaces, mounts, the supervisor/payload process pair, the image server.
//! * `image`: finds out what an image path is (SIF, SquashFS, directory) and reads its metadata.
//! * `contract`: the Apptainer image contract: `/.singularity.d` paths, SIF object names, the
//!   OCI-config subset (names and types only, no I/O).
//! * `siteconf`: the site configuration file (system and user), a leaf below the commands.
//! * `build`, `convert`: definition-file and Dockerfile builds; OCI images, directories and
//!   SquashFS files into SIF.
//! * `registry`, `oci`, `lazy`, `cache`: registries (docker://, oras://), OCI layouts and
//!   manifests, lazy starts from a registry or URL, the user cache.
//! * `gpu`: what `--nv` and `--device` inject (driver libraries, CDI specs).
//! * `tree`: one read interface over a SquashFS archive or a directory.
//! * `fuse`: serves a SquashFS archive to the kernel (adapter over `squashfs`).
//! * `sif`, `squashfs` (`read/`, `write/`): the on-disk formats, no I/O policy.
//! * `civil`: Unix time to a UTC date (no date crate).

pub mod build;
pub mod cache;
pub mod civil;
pub mod cli;
pub mod commands;
pub mod contract;
pub mod convert;
pub mod fuse;
#[doc(hidden)]
pub mod fuzzing;
pub mod gpu;
pub mod image;
pub mod launch;
pub mod lazy;
pub mod oci;
pub mod registry;
pub mod runtime;
pub mod seccomp;
pub mod sif;
pub mod siteconf;
pub mod squashfs;
pub mod tree;

/// The layering check runs with the unit tests (as the building user, who can read `src/`).
#[cfg(test)]
#[path = "../tests/architecture.rs"]
mod architecture;
