//! Persistent overlays (`--overlay`): layers stacked over the image root.
//!
//! A writable directory overlay is a kernel overlayfs upper layer kept on disk, laid out as
//! Apptainer lays it out (`DIR/upper`, `DIR/work`, created on first use), so the same
//! directory works with both. Read-only layers are directories (`DIR:ro`, or a writable
//! overlay that a later `--overlay` replaces as the writable one) and SquashFS files, which
//! rsing's own FUSE server serves like the image itself. Everything is mounted with
//! `userxattr`: inside a user namespace the kernel cannot write `trusted.overlay.*`, so opaque
//! directories are recorded as `user.overlay.opaque` and read back from lower layers the same way.
//!
//! Two containers writing one upper directory corrupt it, so a writable overlay is held under
//! an exclusive `flock` on `DIR` for the container's lifetime, and read-only directory layers
//! under a shared one (a writer never changes a layer that another container reads).

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::squashfs::Archive;
use crate::tree::{NodeKind, Tree};

/// Why an `--overlay` cannot be used; each names the path as the user gave it.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("overlay {given}: {source}")]
    Io {
        given: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "overlay {given} is not an overlay: expected a directory, a SquashFS file or an ext3 image"
    )]
    NotAnOverlay { given: String },
    #[error("overlay {given} is in use by another rsing (a writable overlay has one user at a time); wait for it to end, or add :ro to share it read-only")]
    Busy { given: String },
    #[error("overlay {given} lies on {fs}, where the kernel cannot keep an overlay's upper directory; use a file overlay instead: rsing overlay create --size 1024 FILE.img, then --overlay FILE.img")]
    Unsupported { given: String, fs: &'static str },
    #[error("overlay {given}: {what}")]
    Other { given: String, what: String },
}

/// One `--overlay` argument: `PATH[:ro|:rw]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: PathBuf,
    pub readonly: bool,
    /// As the user wrote it, for messages.
    pub given: String,
}

/// Parses `PATH[:ro|:rw]`, relative paths against `cwd`.
pub fn parse(spec: &str, cwd: &Path) -> Request {
    let (path, readonly) = match spec.rsplit_once(':') {
        Some((p, "ro")) => (p, true),
        Some((p, "rw")) => (p, false),
        _ => (spec, false),
    };
    Request {
        path: cwd.join(path),
        readonly,
        given: path.to_string(),
    }
}

/// Where a read-only layer's files come from.
pub enum LayerSource {
    /// A host directory (the payload sees it under `/oldroot`).
    Dir(PathBuf),
    /// A SquashFS file served by rsing's FUSE server; `subdir` is `Some("/upper")` for an
    /// Apptainer-style overlay whose content lives below `/upper`.
    Squashfs {
        archive: Arc<Archive>,
        subdir: Option<&'static str>,
    },
    /// An ext3 overlay image at `offset` in the file `image` (0, or a SIF's overlay
    /// partition), served read-only by `fuse2fs` at `BASE/ext/INDEX` (helpers' view); its
    /// content is its `/upper` directory (Apptainer's layout).
    Ext { image: PathBuf, offset: u64 },
}

pub struct Layer {
    pub source: LayerSource,
    /// The path as given, for messages.
    pub given: String,
}

/// The writable layer: `dir/upper` and `dir/work` of a directory, or the same two
/// directories at the top of an ext3 image (`ext3`: `dir` is the image file then).
pub struct Upper {
    pub dir: PathBuf,
    pub given: String,
    /// An ext3 image, served read-write by `fuse2fs`. The kernel refuses a FUSE upper layer
    /// (no tmpfile, no RENAME_WHITEOUT through libfuse 2's high-level API), so such a root is
    /// merged by `fuse-overlayfs` instead of the kernel, as Apptainer does unprivileged.
    pub ext3: bool,
    /// Where the ext3 file system starts in the file (a SIF's overlay partition), else 0.
    pub offset: u64,
}

/// All overlay layers of one container, and the locks that keep them consistent.
#[derive(Default)]
pub struct Overlays {
    /// Read-only layers, topmost first.
    pub lower: Vec<Layer>,
    pub upper: Option<Upper>,
    /// Held (close-on-exec) until the supervisor exits.
    locks: Vec<File>,
}

impl Overlays {
    pub fn is_empty(&self) -> bool {
        self.lower.is_empty() && self.upper.is_none()
    }

    /// The SquashFS layers, each with its index (its FUSE mount is `BASE/layers/INDEX`).
    pub fn squashfs_layers(&self) -> impl Iterator<Item = (usize, &Arc<Archive>)> {
        self.lower
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match &l.source {
                LayerSource::Squashfs { archive, .. } => Some((i, archive)),
                _ => None,
            })
    }

    /// The read-only ext3 layers, each with its index (`BASE/ext/INDEX`).
    pub fn ext_layers(&self) -> impl Iterator<Item = (usize, &Path, u64)> {
        self.lower
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match &l.source {
                LayerSource::Ext { image, offset } => Some((i, image.as_path(), *offset)),
                _ => None,
            })
    }

    /// The read-only layers' directories, topmost first, for an overlay mount: `base` is where
    /// rsing's tmpfs is seen (its `layers/`), `host` where the host's root is, `ext` where the
    /// ext3 images' mounts are.
    pub fn lower_dirs(&self, base: &str, host: &str, ext: &str) -> Vec<String> {
        self.lower
            .iter()
            .enumerate()
            .map(|(i, layer)| match &layer.source {
                LayerSource::Dir(dir) => {
                    format!("{host}{}", dir.to_string_lossy()).replace("//", "/")
                }
                LayerSource::Squashfs { subdir, .. } => {
                    format!("{base}/layers/{i}{}", subdir.unwrap_or(""))
                }
                LayerSource::Ext { .. } => format!("{ext}/{i}/upper"),
            })
            .collect()
    }
}

/// What kind of file an overlay argument names, by magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Squashfs,
    Ext,
    Sif,
    Unknown,
}

/// Reads the magic bytes of an overlay file.
pub fn file_kind(file: &mut File) -> std::io::Result<FileKind> {
    let mut head = vec![0u8; 2048];
    let mut got = 0;
    while got < head.len() {
        match file.read(&mut head[got..])? {
            0 => break,
            n => got += n,
        }
    }
    head.truncate(got);
    Ok(if head.starts_with(b"hsqs") {
        FileKind::Squashfs
    } else if head.len() >= 1082 && head[1080..1082] == [0x53, 0xef] {
        FileKind::Ext
    } else if head.windows(10).take(64).any(|w| w == b"SIF_MAGIC\0") {
        FileKind::Sif
    } else {
        FileKind::Unknown
    })
}

/// Opens every requested layer: creates a writable overlay's `upper` and `work` on first use,
/// takes the locks, and opens SquashFS layers. The last writable directory takes the writes;
/// earlier writable ones stack read-only. Later arguments lie above earlier ones.
pub fn open(requests: &[Request]) -> Result<Overlays, OverlayError> {
    let last_writable = requests
        .iter()
        .rposition(|r| !r.readonly && writable_kind(&r.path));
    let mut out = Overlays::default();
    let mut lower = Vec::new();
    for (i, req) in requests.iter().enumerate() {
        let io = |source| OverlayError::Io {
            given: req.given.clone(),
            source,
        };
        let meta = std::fs::metadata(&req.path).map_err(io)?;
        if meta.is_dir() && req.path.to_string_lossy().contains([':', ',']) {
            // The kernel's overlay options separate layers with ':' and options with ','.
            return Err(OverlayError::Other {
                given: req.given.clone(),
                what: "a directory overlay's path cannot contain ':' or ','".into(),
            });
        }
        if meta.is_dir() {
            if Some(i) == last_writable {
                check_upper_fs(req)?;
                for sub in ["upper", "work"] {
                    match std::fs::create_dir(req.path.join(sub)) {
                        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                            return Err(io(e))
                        }
                        _ => {}
                    }
                }
                out.locks.push(lock(req, true)?);
                out.upper = Some(Upper {
                    dir: req.path.clone(),
                    given: req.given.clone(),
                    ext3: false,
                    offset: 0,
                });
            } else {
                out.locks.push(lock(req, false)?);
                let upper = req.path.join("upper");
                let dir = if upper.is_dir() {
                    upper
                } else {
                    req.path.clone()
                };
                lower.push(Layer {
                    source: LayerSource::Dir(dir),
                    given: req.given.clone(),
                });
            }
            continue;
        }
        let mut file = File::open(&req.path).map_err(io)?;
        match file_kind(&mut file).map_err(io)? {
            FileKind::Squashfs => {
                let archive = Archive::open(file, 0).map_err(|e| OverlayError::Other {
                    given: req.given.clone(),
                    what: e.to_string(),
                })?;
                let subdir = apptainer_layout(&archive).then_some("/upper");
                lower.push(Layer {
                    source: LayerSource::Squashfs {
                        archive: Arc::new(archive),
                        subdir,
                    },
                    given: req.given.clone(),
                });
            }
            FileKind::Ext => {
                let writable = Some(i) == last_writable;
                for tool in ["fuse2fs", "fuse-overlayfs"] {
                    if super::helpers::find(tool).is_none() {
                        return Err(OverlayError::Other {
                            given: req.given.clone(),
                            what: format!(
                                "an ext3 overlay image needs {tool} (Debian package {tool}), \
                                 which is not installed"
                            ),
                        });
                    }
                }
                // The image file itself is locked: an ext3 file system mounted twice read-write
                // is corrupted, and a reader would see it change underneath.
                out.locks.push(lock(req, writable)?);
                if writable
                    && nix::unistd::access(&req.path, nix::unistd::AccessFlags::W_OK).is_err()
                {
                    return Err(OverlayError::Other {
                        given: req.given.clone(),
                        what: "you cannot write to this image file; add :ro to use it read-only"
                            .into(),
                    });
                }
                if writable {
                    out.upper = Some(Upper {
                        dir: req.path.clone(),
                        given: req.given.clone(),
                        ext3: true,
                        offset: 0,
                    });
                } else {
                    lower.push(Layer {
                        source: LayerSource::Ext {
                            image: req.path.clone(),
                            offset: 0,
                        },
                        given: req.given.clone(),
                    });
                }
            }
            FileKind::Sif => {
                return Err(OverlayError::Other {
                    given: req.given.clone(),
                    what: "a SIF image is not an overlay of another image; a SIF's own overlay \
                           partition is used when that SIF runs (--writable writes into it)"
                        .into(),
                })
            }
            FileKind::Unknown => {
                return Err(OverlayError::NotAnOverlay {
                    given: req.given.clone(),
                })
            }
        }
    }
    lower.reverse();
    out.lower = lower;
    Ok(out)
}

impl Overlays {
    /// A SIF image's own overlay partition (`apptainer overlay create img.sif`) at `offset`
    /// in `sif`: the bottom read-only layer, or with `writable` (`--writable`) the one that
    /// takes the writes. The SIF file is locked like an overlay image.
    pub fn add_sif_partition(
        &mut self,
        sif: &Path,
        offset: u64,
        writable: bool,
    ) -> Result<(), OverlayError> {
        let req = Request {
            path: sif.to_path_buf(),
            readonly: !writable,
            given: format!("{} (its overlay partition)", sif.display()),
        };
        for tool in ["fuse2fs", "fuse-overlayfs"] {
            if super::helpers::find(tool).is_none() {
                return Err(OverlayError::Other {
                    given: req.given,
                    what: format!(
                        "an ext3 overlay partition needs {tool} (Debian package {tool}), which \
                         is not installed"
                    ),
                });
            }
        }
        if writable && nix::unistd::access(sif, nix::unistd::AccessFlags::W_OK).is_err() {
            return Err(OverlayError::Other {
                given: req.given,
                what: "--writable: you cannot write to this image file".into(),
            });
        }
        self.locks.push(lock(&req, writable)?);
        if writable {
            self.upper = Some(Upper {
                dir: req.path,
                given: req.given,
                ext3: true,
                offset,
            });
        } else {
            self.lower.push(Layer {
                source: LayerSource::Ext {
                    image: req.path,
                    offset,
                },
                given: req.given,
            });
        }
        Ok(())
    }
}

/// Runs `f` on the content (`upper/`) of the ext3 overlay image `req`, read-only, outside any
/// container (see `helpers::in_mounted_image`): for `rsing overlay seal FILE.img`.
pub fn with_image_content(
    req: &Request,
    f: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), OverlayError> {
    super::helpers::in_mounted_image(&req.path, |root| {
        let upper = root.join("upper");
        if !upper.is_dir() {
            return Err(
                "the image has no upper/ directory (rsing overlay create makes one)".into(),
            );
        }
        f(&upper)
    })
    .map_err(|what| OverlayError::Other {
        given: req.given.clone(),
        what,
    })
}

/// A directory or an ext3 image: what can take writes.
fn writable_kind(path: &Path) -> bool {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => true,
        Ok(m) if m.is_file() => File::open(path)
            .and_then(|mut f| file_kind(&mut f))
            .is_ok_and(|k| k == FileKind::Ext),
        _ => false,
    }
}

/// True for a SquashFS whose root holds only `upper` (and `work`): an Apptainer-style overlay
/// packed as it was on disk, whose content is `upper`.
fn apptainer_layout(archive: &Archive) -> bool {
    let Ok(names) = archive.list_dir(b"/") else {
        return false;
    };
    names.iter().any(|n| n == b"upper")
        && names.iter().all(|n| n == b"upper" || n == b"work")
        && matches!(archive.lstat(b"/upper"), Ok(Some(NodeKind::Dir)))
}

/// `flock` on the overlay directory or image file: exclusive for the writer, shared for
/// readers.
fn lock(req: &Request, exclusive: bool) -> Result<File, OverlayError> {
    let dir = File::open(&req.path).map_err(|source| OverlayError::Io {
        given: req.given.clone(),
        source,
    })?;
    let how = if exclusive {
        libc::LOCK_EX
    } else {
        libc::LOCK_SH
    };
    // SAFETY: flock on an fd this function owns.
    if unsafe { libc::flock(dir.as_raw_fd(), how | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            OverlayError::Busy {
                given: req.given.clone(),
            }
        } else {
            OverlayError::Io {
                given: req.given.clone(),
                source: e,
            }
        });
    }
    Ok(dir)
}

/// File systems known to refuse being an overlayfs upper layer (no suitable xattrs, d_type or
/// whiteout support): checked before the launch so the error names the cause.
const NO_UPPER: [(i64, &str); 8] = [
    (0x6969, "NFS"),
    (0x0BD0_0BD0, "Lustre"),
    (0x4750_4653, "GPFS"),
    (0x1983_0326, "BeeGFS"),
    (0x6573_5546, "a FUSE file system"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB"),
    (0x7461_636f, "OCFS2"),
];

// f_type's width varies by architecture.
#[allow(clippy::unnecessary_cast)]
fn check_upper_fs(req: &Request) -> Result<(), OverlayError> {
    let st = nix::sys::statfs::statfs(&req.path).map_err(|e| OverlayError::Io {
        given: req.given.clone(),
        source: e.into(),
    })?;
    let kind = st.filesystem_type().0 as i64;
    match NO_UPPER.iter().find(|(magic, _)| *magic == kind) {
        Some((_, fs)) => Err(OverlayError::Unsupported {
            given: req.given.clone(),
            fs,
        }),
        None => Ok(()),
    }
}

/// The message for a kernel refusal of the overlay mount with a persistent upper layer.
pub fn refused(upper: &Upper, mount_error: &str) -> String {
    format!(
        "{mount_error}; the kernel refuses {} as an overlay upper directory: use a file overlay \
         instead (rsing overlay create --size 1024 FILE.img, then --overlay FILE.img)",
        upper.given
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_suffixes() {
        let cwd = Path::new("/work");
        assert_eq!(parse("d", cwd).path, PathBuf::from("/work/d"));
        assert!(!parse("d", cwd).readonly);
        assert!(parse("/x/d:ro", cwd).readonly);
        let rw = parse("/x/d:rw", cwd);
        assert!(!rw.readonly);
        assert_eq!(rw.path, PathBuf::from("/x/d"));
        assert_eq!(parse("/x/a:b", cwd).path, PathBuf::from("/x/a:b"));
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rsing-ovl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn last_writable_takes_writes_and_is_locked() {
        let d = scratch("last");
        let (a, b, c) = (d.join("a"), d.join("b"), d.join("c"));
        for p in [&a, &b, &c] {
            std::fs::create_dir(p).unwrap();
        }
        let reqs: Vec<Request> = ["a", "b:ro", "c"].iter().map(|s| parse(s, &d)).collect();
        let o = open(&reqs).unwrap();
        assert_eq!(o.upper.as_ref().unwrap().dir, c);
        assert!(c.join("upper").is_dir() && c.join("work").is_dir());
        assert!(!a.join("upper").exists());
        // Topmost first: b above a.
        let dirs: Vec<&Path> = o
            .lower
            .iter()
            .map(|l| match &l.source {
                LayerSource::Dir(p) => p.as_path(),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(dirs, vec![b.as_path(), a.as_path()]);
        let again = open(&[parse("c", &d)]);
        assert!(matches!(again, Err(OverlayError::Busy { .. })));
        drop(o);
        assert!(open(&[parse("c", &d)]).is_ok());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn bad_inputs_name_the_path() {
        let d = scratch("bad");
        let err = open(&[parse("missing", &d)]).err().unwrap();
        assert!(err.to_string().starts_with("overlay missing: "), "{err}");
        std::fs::write(d.join("junk"), b"not an image").unwrap();
        let err = open(&[parse("junk", &d)]).err().unwrap();
        assert!(matches!(err, OverlayError::NotAnOverlay { .. }), "{err}");
        std::fs::remove_dir_all(d).unwrap();
    }
}
