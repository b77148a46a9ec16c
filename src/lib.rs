//! rsing: a rootless container runner for HPC clusters.
//!
//! Layers (dependencies point down only; `tests/architecture.rs` checks this):
//!
//! ```text
//! main → cli → commands → { image, runtime } → { sif, squashfs, fuse }
//! ```
//!
//! * `cli`: argument parsing, error printing, exit codes.
//! * `commands`: one module per subcommand; maps image facts to runtime input.
//! * `image`: finds out what an image path is (SIF, SquashFS, directory) and reads its metadata.
//! * `runtime`: namespaces, mounts, the supervisor/payload process pair.
//! * `fuse`: serves a SquashFS archive to the kernel (adapter over `squashfs`).
//! * `sif`, `squashfs`: the on-disk formats, no I/O policy.

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
pub mod lazy;
pub mod oci;
pub mod registry;
pub mod runtime;
pub mod sif;
pub mod siteconf;
pub mod squashfs;
pub mod tree;

/// The layering check runs with the unit tests (as the building user, who can read `src/`).
#[cfg(test)]
#[path = "../tests/architecture.rs"]
mod architecture;
