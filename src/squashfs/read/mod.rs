//! The SquashFS reader's parts; [`super::Archive`] and the types it hands out are in the
//! parent module, which these files extend (`impl Archive` blocks) through `super::`.

// What these files name through `super::`: the reader's core types and the shared format.
use super::*;

pub(super) mod blockfile;
pub(super) mod blocks;
pub(super) mod cache;
pub(super) mod compress;
mod dir;
mod file;
mod inode;
pub(super) mod metadata;
pub(super) mod source;
pub(super) mod warm;
mod xattr;

#[cfg(test)]
mod tests;
