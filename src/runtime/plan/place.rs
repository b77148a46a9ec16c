//! Destinations resolved inside the container root, and the mount points the image lacks.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{MountOp, Stub};
use crate::runtime::binds;
use crate::runtime::error::Error;
use crate::runtime::view::MountView;
use crate::tree::{self, NodeKind, Tree};

pub(super) fn image_lookup(path: &str, e: std::io::Error) -> Error {
    Error::Image(format!("cannot resolve {path} in the image: {e}"))
}

/// True when `path` lies at or below the destination of an op already planned.
pub(super) fn covered(ops: &[MountOp], path: &[u8]) -> bool {
    let path = Path::new(OsStr::from_bytes(path));
    ops.iter().any(|op| {
        let dst = Path::new(OsStr::from_bytes(op.dst()));
        binds::is_within(path, dst)
    })
}

/// The minimal set of existing image directories under which all stubs lie.
pub(super) fn anchors(stubs: &[Stub], tree: &dyn Tree) -> std::io::Result<Vec<Vec<u8>>> {
    let mut found: Vec<Vec<u8>> = Vec::new();
    for stub in stubs {
        let mut dir = parent(&stub.path);
        while tree.lstat(&dir)? != Some(NodeKind::Dir) {
            dir = parent(&dir);
        }
        found.push(dir);
    }
    found.sort();
    found.dedup();
    let all = found.clone();
    found.retain(|a| !all.iter().any(|b| b != a && is_below(a, b)));
    Ok(found)
}

fn parent(path: &[u8]) -> Vec<u8> {
    match path.iter().rposition(|b| *b == b'/') {
        Some(0) | None => b"/".to_vec(),
        Some(i) => path[..i].to_vec(),
    }
}

/// True when `path` lies strictly below `dir` (component-wise).
fn is_below(path: &[u8], dir: &[u8]) -> bool {
    dir == b"/" || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
}

/// Resolves every destination inside the container root (through the image's symlinks and
/// those of host directories bound earlier, see [`MountView`]) and lists the mount points the
/// image lacks. A destination below an earlier mount lives on that mount, not in the image.
pub(super) fn place(wanted: Vec<MountOp>, tree: &dyn Tree) -> Result<(Vec<MountOp>, Vec<Stub>), Error> {
    let mut ops: Vec<MountOp> = Vec::with_capacity(wanted.len());
    let mut stubs: Vec<Stub> = Vec::new();
    for mut op in wanted {
        let dst = String::from_utf8_lossy(op.dst()).into_owned();
        let view = MountView {
            ops: &ops,
            image: tree,
        };
        let resolved = tree::resolve(&view, op.dst()).map_err(|e| image_lookup(&dst, e))?;
        let nested = covered(&ops, &resolved.path);
        let src_is_dir = match &op {
            MountOp::Bind { src, .. } | MountOp::BindNew { src, .. } => src.is_dir(),
            MountOp::Generated { .. } => false,
            _ => true,
        };
        if nested {
            let creates = matches!(op, MountOp::BindNew { .. });
            if resolved.kind.is_none() && !creates {
                if let Some((src, at)) = view.host_bind_over(&resolved.path) {
                    let what = match &op {
                        MountOp::Generated { name, .. } => format!("generated /etc/{name}"),
                        MountOp::Bind { src, .. } => format!("bind of {}", src.display()),
                        _ => "mount".to_string(),
                    };
                    return Err(Error::Image(format!(
                        "cannot place the {what} at {dst}: {} lies inside the bind of {} at {}, \
                         which has no such file or directory",
                        String::from_utf8_lossy(&resolved.path),
                        src.display(),
                        String::from_utf8_lossy(at)
                    )));
                }
            }
            op.set_dst(resolved.path);
        } else {
            let found = resolved;
            match (found.kind, src_is_dir) {
                (None, dir) if !stubs.iter().any(|s| s.path == found.path) => {
                    stubs.push(Stub {
                        path: found.path.clone(),
                        dir,
                    });
                }
                (None, _) => {}
                (Some(NodeKind::Dir), false) => {
                    return Err(Error::Image(format!(
                        "cannot bind a file onto {dst}: it is a directory in the image"
                    )))
                }
                (Some(NodeKind::File | NodeKind::Other), true) => {
                    return Err(Error::Image(format!(
                        "cannot bind a directory onto {dst}: it is a file in the image"
                    )))
                }
                _ => {}
            }
            op.set_dst(found.path);
        }
        ops.push(op);
    }
    Ok((ops, stubs))
}
