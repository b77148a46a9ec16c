//! The supervisor's interpreter of [`BaseOp`]s: rsing's tmpfs at [`BASE`] and what goes on it
//! before the fork (directories, generated files, mount-point stubs, the FUSE mounts).
//!
//! No `mount --make-rslave /` is needed first: in a mount namespace owned by a less privileged
//! user namespace than its parent's, the kernel has already turned shared mounts into slaves,
//! so nothing mounted here propagates to the host.

use std::path::{Path, PathBuf};

use super::error::{errno_of, Error};
use super::plan::BaseOp;
use super::{mounts, share, Container, Served, BASE};

/// Carries out one step.
pub(super) fn apply(op: &BaseOp, c: &Container, served: &Served) -> Result<(), Error> {
    let at = |rel: &str| format!("{BASE}/{rel}");
    match op {
        BaseOp::Tmpfs => mounts::tmpfs(Path::new(BASE), 0o755)
            .map_err(|e| Error::Setup(format!("rsing's tmpfs: {e}"))),
        BaseOp::Dir(rel) => std::fs::create_dir(at(rel))
            .map_err(|e| Error::sys_on("cannot create", at(rel), errno_of(&e))),
        BaseOp::SizedTmpfs { dir, mib } => mounts::tmpfs_sized(Path::new(&at(dir)), 0o755, *mib)
            .map_err(|e| Error::Setup(format!("the --writable-tmpfs tmpfs: {e}"))),
        BaseOp::File { name, content } => std::fs::write(at(&format!("files/{name}")), content)
            .map_err(|e| Error::sys_on("cannot write", name.clone(), errno_of(&e))),
        BaseOp::Stub(stub) => {
            let mut p = format!("{BASE}/stubs").into_bytes();
            p.extend_from_slice(&stub.path);
            let p = PathBuf::from(String::from_utf8_lossy(&p).into_owned());
            mounts::make_mount_point(&p, stub.dir).map_err(Error::Setup)
        }
        BaseOp::MountLayer { index } => {
            let given = &c.overlays.lower[*index].given;
            let fd = served
                .layers
                .iter()
                .find(|(i, _)| i == index)
                .map(|(_, fd)| fd)
                .ok_or_else(|| Error::Setup(format!("overlay {given}: no FUSE device opened")))?;
            crate::fuse::mount(
                fd,
                Path::new(&at(&format!("layers/{index}"))),
                given,
                c.plan.uid_inside,
                c.plan.gid_inside,
            )
            .map_err(|e| Error::Setup(format!("cannot mount overlay {given} with FUSE: {e}")))
        }
        BaseOp::AttachImage => match (served.joined, served.image) {
            (Some(j), _) => share::attach(&j.mount, Path::new(&at("image")))
                .map_err(|e| Error::Setup(e.to_string())),
            (None, Some(fd)) => crate::fuse::mount(
                fd,
                Path::new(&at("image")),
                &c.fsname,
                c.plan.uid_inside,
                c.plan.gid_inside,
            )
            .map_err(|e| Error::sys("cannot mount the image with FUSE", e)),
            (None, None) => Err(Error::Setup(
                "the image has neither a server to join nor a FUSE device".into(),
            )),
        },
    }
}
