//! The start's skeleton around the mounts: rsing's tmpfs (the base), the image attach, the
//! container root, the second pivot and the working directory.
//!
//! The root is the image with the stub layer (mount points the image lacks) overlaid only on
//! the directories that need it: overlayfs costs on every lookup through it (a Python import
//! does thousands), so the image is bound directly where it can be. A stub right under /,
//! `--writable-tmpfs` or `--overlay` puts one overlay over the whole root; `--writable` on a
//! sandbox binds it read-write and creates the mount points in it.

use std::path::Path;

use super::{BaseOp, HelperOp, ImageKind, MountOp, Options, RootOp, Stub};
use crate::runtime::helpers::{EXT_AFTER_PIVOT, EXT_DIR, MERGED};
use crate::runtime::mounts::{NEWROOT, OLDROOT};
use crate::runtime::overlay::Overlays;
use crate::runtime::BASE;

/// The supervisor's steps: the base's directories, generated files, stubs, FUSE layers, image.
pub(super) fn base(
    options: &Options,
    overlays: &Overlays,
    files: Vec<(String, Vec<u8>)>,
    stubs: &[Stub],
) -> Vec<BaseOp> {
    let mut ops = vec![BaseOp::Tmpfs];
    let dir = |d: &str| BaseOp::Dir(d.to_string());
    ops.extend(["image", "newroot", "oldroot", "stubs", "files"].map(dir));
    // The overlay's upper and work directories only when the root is writable: every mkdir
    // here is part of each start.
    if options.writable_tmpfs {
        ops.push(dir("rw"));
        ops.push(BaseOp::SizedTmpfs {
            dir: "rw".into(),
            mib: options.tmpfs_size_mib,
        });
        ops.extend(["rw/upper", "rw/work"].map(dir));
    }
    let layers: Vec<usize> = overlays.squashfs_layers().map(|(i, _)| i).collect();
    if !layers.is_empty() {
        ops.push(dir("layers"));
        ops.extend(layers.iter().map(|i| dir(&format!("layers/{i}"))));
    }
    ops.extend(
        files
            .into_iter()
            .map(|(name, content)| BaseOp::File { name, content }),
    );
    // A writable sandbox gets its mount points in itself ([`RootOp::SandboxStub`]).
    if !options.writable {
        ops.extend(stubs.iter().cloned().map(BaseOp::Stub));
    }
    ops.extend(layers.into_iter().map(|index| BaseOp::MountLayer { index }));
    if options.image == ImageKind::Mounted {
        ops.push(BaseOp::AttachImage);
    }
    ops
}

/// The FUSE helpers: `fuse2fs` for each ext3 image, and `fuse-overlayfs` merging the whole
/// root (stubs, read-only layers, the image) under the writable layer, as Apptainer does
/// unprivileged. The kernel's overlay cannot take an ext3 image as its upper layer (it refuses
/// FUSE there), and as a lower one it would misread what fuse-overlayfs wrote into it: a file
/// deleted by a user who is not root inside is recorded as a `.wh.NAME` file, which only
/// fuse-overlayfs understands. So any ext3 image in the stack makes fuse-overlayfs the root.
pub(super) fn helpers(options: &Options, overlays: &Overlays, has_stubs: bool) -> Vec<HelperOp> {
    let mut ops: Vec<HelperOp> = overlays
        .ext_layers()
        .map(|(i, image, offset)| HelperOp::Ext3 {
            image: image.to_path_buf(),
            offset,
            mount: format!("{EXT_DIR}/{i}"),
            readonly: true,
            given: overlays.lower[i].given.clone(),
        })
        .collect();
    let ext_upper = overlays.upper.as_ref().filter(|u| u.ext3);
    // The image named in the mount table and in messages: the writable one, else the topmost.
    let Some((image, given)) = ext_upper
        .map(|u| (u.dir.as_path(), u.given.as_str()))
        .or_else(|| {
            let (i, image, _) = overlays.ext_layers().next()?;
            Some((image, overlays.lower[i].given.as_str()))
        })
    else {
        return ops;
    };
    let upper = if let Some(u) = ext_upper {
        let mount = format!("{EXT_DIR}/upper");
        ops.push(HelperOp::Ext3 {
            image: u.dir.clone(),
            offset: u.offset,
            mount: mount.clone(),
            readonly: false,
            given: u.given.clone(),
        });
        Some((format!("{mount}/upper"), format!("{mount}/work")))
    } else if let Some(u) = &overlays.upper {
        let dir = u.dir.to_string_lossy();
        Some((format!("{dir}/upper"), format!("{dir}/work")))
    } else {
        options
            .writable_tmpfs
            .then(|| (format!("{BASE}/rw/upper"), format!("{BASE}/rw/work")))
    };
    let mut lower = Vec::new();
    if has_stubs {
        lower.push(format!("{BASE}/stubs"));
    }
    // The helpers' view: rsing's tmpfs at BASE, host paths as they are.
    lower.extend(overlays.lower_dirs(BASE, "", EXT_DIR));
    lower.push(match &options.image {
        ImageKind::Mounted => format!("{BASE}/image"),
        ImageKind::Directory(dir) => dir.to_string_lossy().into_owned(),
    });
    ops.push(HelperOp::FuseOverlay {
        lower,
        upper,
        mount: format!("{EXT_DIR}/{MERGED}"),
        fsname: image.to_string_lossy().into_owned(),
        given: given.to_string(),
    });
    ops
}

/// True when a helper merges the root ([`helpers`]).
fn merged_by_helper(overlays: &Overlays) -> bool {
    overlays.upper.as_ref().is_some_and(|u| u.ext3) || overlays.ext_layers().next().is_some()
}

/// The payload's steps, from the first pivot to the working directory.
pub(super) fn root(
    options: &Options,
    overlays: &Overlays,
    mounts: Vec<MountOp>,
    stubs: Vec<Stub>,
    anchors: &[Vec<u8>],
    (cwd, home): (&str, &str),
) -> Vec<RootOp> {
    let mut ops = vec![RootOp::EnterBase];
    if let ImageKind::Directory(dir) = &options.image {
        ops.push(RootOp::BindImageDir(dir.clone()));
    }
    let whole_root = options.writable_tmpfs
        || !overlays.is_empty()
        || anchors.iter().any(|a| a.as_slice() == b"/");
    if options.writable {
        ops.push(RootOp::BindImage { readonly: false });
        ops.extend(stubs.into_iter().map(RootOp::SandboxStub));
    } else if merged_by_helper(overlays) {
        ops.push(RootOp::BindMerged {
            src: format!("{EXT_AFTER_PIVOT}/{MERGED}"),
            readonly: overlays.upper.is_none() && !options.writable_tmpfs,
        });
    } else if whole_root {
        ops.push(whole_root_overlay(options, overlays, !stubs.is_empty()));
    } else {
        ops.push(RootOp::BindImage { readonly: true });
        for anchor in anchors {
            let dir = String::from_utf8_lossy(anchor);
            let target = format!("{NEWROOT}{dir}");
            ops.push(RootOp::Overlay {
                lower: vec![format!("/stubs{dir}"), target.clone()],
                upper: None,
                target,
                userxattr: false,
                kept: None,
            });
        }
    }
    ops.extend(mounts.into_iter().map(RootOp::Mount));
    ops.push(RootOp::EnterContainer);
    ops.push(RootOp::Chdir {
        dir: cwd.to_string(),
        home: home.to_string(),
        required: options.pwd.is_some(),
    });
    ops
}

/// One overlay over the whole root: stubs, `--overlay` layers, the image; the upper layer is
/// the last writable `--overlay` or `--writable-tmpfs`'s tmpfs.
fn whole_root_overlay(options: &Options, overlays: &Overlays, has_stubs: bool) -> RootOp {
    let kept = overlays
        .upper
        .as_ref()
        .map(|u| (u.dir.clone(), u.given.clone()));
    let upper = match &kept {
        Some((dir, _)) => {
            let dir = Path::new(OLDROOT).join(dir.strip_prefix("/").unwrap_or(dir));
            Some((
                dir.join("upper").to_string_lossy().into_owned(),
                dir.join("work").to_string_lossy().into_owned(),
            ))
        }
        None => options
            .writable_tmpfs
            .then(|| ("/rw/upper".to_string(), "/rw/work".to_string())),
    };
    let mut lower = Vec::new();
    if has_stubs {
        lower.push("/stubs".to_string());
    }
    lower.extend(overlays.lower_dirs("", OLDROOT, EXT_AFTER_PIVOT));
    lower.push("/image".to_string());
    RootOp::Overlay {
        lower,
        upper,
        target: NEWROOT.to_string(),
        // user.overlay.* xattrs: the only ones a user namespace can write (opaque directories
        // in a kept upper layer) and read back from a kept layer stacked read-only.
        userxattr: !overlays.is_empty(),
        kept,
    }
}
