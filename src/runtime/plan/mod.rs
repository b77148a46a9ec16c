//! The launch plan: every step of a start, decided before any namespace exists.
//!
//! Building the plan is pure apart from read-only lookups on the host and in the image, so all
//! user errors (a missing bind source, a forbidden path, a file bound onto a directory) are
//! reported while rsing is still an ordinary process, naming the host path at fault. The
//! result is the whole program of the start ([`ops`]): `-vv` prints it, unit tests check it,
//! and the runtime only interprets it.
//!
//! - [`wanted`]: the mounts the caller, the site and the devices ask for, in mount order;
//! - [`place`]: their destinations resolved inside the container root, and the mount points
//!   the image lacks (stubs), with the image directories that hold them (anchors);
//! - [`assemble`]: rsing's tmpfs (base), the image attach, the root (direct bind, stub
//!   overlays, a whole-root overlay or a writable sandbox), the second pivot, the cwd.

mod assemble;
pub mod ops;
mod place;
#[cfg(test)]
mod tests;
mod wanted;

use std::fmt;
use std::path::PathBuf;

use super::binds::{BindSpec, FileDir};
use super::error::Error;
use super::host::HostFacts;
use super::overlay::Overlays;
use crate::tree::Tree;
pub use ops::{BaseOp, HelperOp, MountOp, RootOp, Stub};

/// Where the image's root comes from, as far as the plan cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ImageKind {
    /// Mounted by the supervisor on the base's `image/` (FUSE, or the shared server's mount).
    #[default]
    Mounted,
    /// A sandbox directory on the host, bound after the pivot.
    Directory(PathBuf),
}

/// How the container should look, as chosen by the user and the site.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub binds: Vec<BindSpec>,
    /// Site default binds (`bind path` in rsing.conf); skipped under `--contain`.
    pub site_binds: Vec<BindSpec>,
    /// `--home SRC[:DST]`.
    pub home: Option<(PathBuf, String)>,
    pub mount_home: bool,
    pub mount_tmp: bool,
    pub contain: bool,
    pub pid_ns: bool,
    pub pwd: Option<String>,
    pub writable_tmpfs: bool,
    pub fakeroot: bool,
    /// Host device nodes for the container (GPUs, CDI). Under `--contain` they are bound into
    /// the minimal /dev; otherwise the host's /dev is there already, and a node must be at the
    /// same path on the host.
    pub devices: Vec<BindSpec>,
    /// Directories of single host files (the GPU libraries), after all other mounts.
    pub file_dirs: Vec<FileDir>,
    pub image: ImageKind,
    /// `--writable` on a sandbox directory: the image itself is written.
    pub writable: bool,
    /// Size limit of the `--writable-tmpfs` tmpfs in MiB (site `sessiondir max size`): without
    /// one, a container could fill the node's memory.
    pub tmpfs_size_mib: u64,
}

/// Everything the supervisor and the payload do to start the container, in order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The supervisor's steps before the fork.
    pub base: Vec<BaseOp>,
    /// FUSE helper programs the supervisor starts after the fork (ext3 overlay images); the
    /// payload waits for them before its first step.
    pub helpers: Vec<HelperOp>,
    /// The payload's steps after the fork, up to the command's working directory.
    pub root: Vec<RootOp>,
    /// The payload creates a PID namespace first and becomes its init's parent (`--pid`,
    /// `--containall`).
    pub pid_ns: bool,
    /// Container working directory.
    pub cwd: String,
    /// HOME inside the container.
    pub home: String,
    pub uid_inside: u32,
    pub gid_inside: u32,
}

impl Plan {
    /// The FUSE layer indices the supervisor mounts (each needs a /dev/fuse of its own).
    pub fn fuse_layers(&self) -> impl Iterator<Item = usize> + '_ {
        self.base.iter().filter_map(|op| match op {
            BaseOp::MountLayer { index } => Some(*index),
            _ => None,
        })
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "ids inside {}:{}, HOME {}{}",
            self.uid_inside,
            self.gid_inside,
            self.home,
            if self.pid_ns {
                ", own PID namespace"
            } else {
                ""
            }
        )?;
        for op in &self.base {
            writeln!(f, "  base: {op}")?;
        }
        for op in &self.helpers {
            writeln!(f, "  helper: {op}")?;
        }
        for op in &self.root {
            writeln!(f, "  root: {op}")?;
        }
        Ok(())
    }
}

/// Builds the plan for `host` running the image whose root is `tree`, with `overlays` stacked.
pub fn build(
    options: &Options,
    host: &HostFacts,
    tree: &dyn Tree,
    overlays: &Overlays,
) -> Result<Plan, Error> {
    let (uid_inside, gid_inside) = host.ids_inside(options.fakeroot);
    let home = match (&options.home, options.fakeroot) {
        (Some((_, dst)), _) => dst.clone(),
        (None, true) => "/root".to_string(),
        (None, false) => host.home.to_string_lossy().into_owned(),
    };
    let wanted = wanted::wanted(options, host, tree, (uid_inside, gid_inside), &home)?;
    let (mounts, stubs) = place::place(wanted.mounts, tree)?;
    let anchors =
        place::anchors(&stubs, tree).map_err(|e| place::image_lookup("a mount point", e))?;
    let base = assemble::base(options, overlays, wanted.files, &stubs);
    let helpers = assemble::helpers(options, overlays, !stubs.is_empty());
    let root = assemble::root(
        options,
        overlays,
        mounts,
        stubs,
        &anchors,
        (&wanted.cwd, &home),
    );
    Ok(Plan {
        base,
        helpers,
        root,
        pid_ns: options.pid_ns,
        cwd: wanted.cwd,
        home,
        uid_inside,
        gid_inside,
    })
}
