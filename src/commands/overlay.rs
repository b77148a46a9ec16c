//! The `rsing overlay` commands (`create`, `seal`): see docs/overlays.md. What `--overlay`
//! does to a launch is [`crate::launch`]'s.

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::runtime::overlay::{self, LayerSource};

/// `rsing overlay …`
#[derive(Debug, clap::Subcommand)]
pub enum OverlayCommand {
    /// Create an ext3 overlay image (upper/ and work/ inside, as Apptainer's `overlay create`)
    Create(CreateArgs),
    /// Pack a directory overlay or an ext3 overlay image into a read-only SquashFS layer for
    /// --overlay OUT.sqfs
    Seal(SealArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Size of the image in MiB
    #[arg(short = 's', long, default_value_t = 64, value_name = "MiB")]
    pub size: u64,
    /// Leave the file sparse (blocks are allocated on first write)
    #[arg(short = 'S', long)]
    pub sparse: bool,
    /// Also create this directory in the overlay (repeatable)
    #[arg(long = "create-dir", value_name = "DIR")]
    pub create_dir: Vec<String>,
    /// Make the directories root's, for use with `exec --fakeroot` (as Apptainer's
    /// `overlay create --fakeroot`): an image keeps the ids inside the container
    #[arg(short = 'f', long)]
    pub fakeroot: bool,
    /// The image file to create (must not exist), or a SIF image to add an overlay
    /// partition to (as `apptainer overlay create img.sif`)
    pub file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SealArgs {
    /// Compression: zstd, gzip, xz or lz4
    #[arg(long, default_value = "zstd")]
    pub compress: String,
    /// The overlay directory (its upper/ if it has one) or ext3 overlay image (its upper/)
    pub overlay: PathBuf,
    /// The SquashFS file to write
    pub out: PathBuf,
}

pub fn run(cmd: &OverlayCommand) -> anyhow::Result<i32> {
    match cmd {
        OverlayCommand::Create(args) => create(args),
        OverlayCommand::Seal(args) => seal(args),
    }
}

/// The ext3 image, made by e2fsprogs' `mkfs.ext3 -d` from a seed directory, so nothing needs
/// to be mounted and the directories are owned by the caller.
fn create(args: &CreateArgs) -> anyhow::Result<i32> {
    let file = &args.file;
    if args.size < 1 {
        bail!("--size must be at least 1 MiB");
    }
    if file.symlink_metadata().is_ok() {
        if is_sif(file) {
            return add_to_sif(args);
        }
        bail!(
            "{} exists already; rsing overlay create makes a new file (or adds an overlay \
             partition to a SIF image)",
            file.display()
        );
    }
    make_ext3(args, file)?;
    Ok(0)
}

fn is_sif(file: &std::path::Path) -> bool {
    let mut head = [0u8; 64];
    std::fs::File::open(file)
        .and_then(|f| std::os::unix::fs::FileExt::read_at(&f, &mut head, 0))
        .is_ok_and(|n| crate::sif::is_sif(&head[..n]))
}

/// `overlay create IMG.sif`: an ext3 image made as for a file, then appended to the SIF as an
/// overlay partition in its root's group (Apptainer's layout), while the SIF is locked as a
/// writable overlay is, so no container reads or writes a partition being added.
fn add_to_sif(args: &CreateArgs) -> anyhow::Result<i32> {
    let sif_path = &args.file;
    let sif = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(sif_path)
        .with_context(|| format!("cannot open {} for writing", sif_path.display()))?;
    // SAFETY: flock on an fd this function owns.
    if unsafe { libc::flock(sif.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "{} is in use by another rsing; wait for it to end",
            sif_path.display()
        );
    }
    let parsed = crate::sif::SifFile::read(&sif)
        .with_context(|| format!("{} is not a usable SIF image", sif_path.display()))?;
    if crate::sif::append::overlay_partition(&parsed).is_some() {
        bail!("{} has an overlay partition already", sif_path.display());
    }
    let name = format!(
        ".{}.overlay.{}",
        sif_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    );
    let temp = sif_path.with_file_name(name);
    let _ = std::fs::remove_file(&temp);
    let result = make_ext3(args, &temp).and_then(|()| {
        let data = std::fs::File::open(&temp)?;
        crate::sif::append::add_overlay_partition(&sif, &data)
            .with_context(|| format!("cannot add the overlay partition to {}", sif_path.display()))
    });
    let _ = std::fs::remove_file(&temp);
    result?;
    Ok(0)
}

/// Makes the ext3 image `file` (which must not exist).
fn make_ext3(args: &CreateArgs, file: &std::path::Path) -> anyhow::Result<()> {
    let mkfs = find_sbin("mkfs.ext3").with_context(|| {
        "mkfs.ext3 not found (install e2fsprogs) to create an ext3 overlay image"
    })?;
    let seed = tempdir_near(file)?;
    let result = (|| -> anyhow::Result<()> {
        for dir in ["upper", "work"] {
            std::fs::create_dir(seed.join(dir))?;
        }
        for dir in &args.create_dir {
            let rel = dir.trim_start_matches('/');
            if rel.is_empty() || rel.split('/').any(|c| c == "..") {
                bail!("--create-dir {dir}: expected a path inside the container");
            }
            std::fs::create_dir_all(seed.join("upper").join(rel))?;
        }
        let out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(file)
            .with_context(|| format!("cannot create {}", file.display()))?;
        let bytes = args.size << 20;
        if args.sparse {
            out.set_len(bytes)?;
        } else {
            nix::fcntl::posix_fallocate(&out, 0, bytes as i64).with_context(|| {
                format!("cannot allocate {} MiB for {}", args.size, file.display())
            })?;
        }
        drop(out);
        let (uid, gid) = if args.fakeroot {
            (0, 0)
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        };
        let done = std::process::Command::new(&mkfs)
            .args(["-q", "-F", "-E"])
            .arg(format!("root_owner={uid}:{gid}"))
            .arg("-d")
            .arg(&seed)
            .arg(file)
            .stdin(std::process::Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", mkfs.display()))?;
        if !done.status.success() {
            let text = String::from_utf8_lossy(&done.stderr);
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            bail!("mkfs.ext3 failed: {first}");
        }
        if args.fakeroot {
            give_to_root(file, &seed)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&seed);
    if result.is_err() {
        let _ = std::fs::remove_file(file);
    }
    result.with_context(|| format!("overlay image {}", file.display()))
}

/// `--fakeroot`: every directory copied from `seed` owned by 0:0 in the image. `mkfs.ext3 -d`
/// copies the seed's owner (the caller), and only root may chown on the host, so debugfs sets
/// the owner in the image instead.
fn give_to_root(file: &std::path::Path, seed: &std::path::Path) -> anyhow::Result<()> {
    let debugfs = find_sbin("debugfs")
        .context("debugfs not found (install e2fsprogs) to create a --fakeroot overlay image")?;
    let mut script = String::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(seed.join(&rel))? {
            let rel = rel.join(entry?.file_name());
            let path = format!("/{}", rel.display());
            if path.contains(['"', '\n']) {
                bail!("{path}: a directory name debugfs cannot take");
            }
            for field in ["uid", "gid"] {
                script += &format!("set_inode_field \"{path}\" {field} 0\n");
            }
            stack.push(rel);
        }
    }
    let mut child = std::process::Command::new(&debugfs)
        .args(["-w", "-f", "-"])
        .arg(file)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {}", debugfs.display()))?;
    use std::io::Write;
    child
        .stdin
        .take()
        .context("debugfs's stdin")?
        .write_all(script.as_bytes())?;
    let done = child.wait_with_output()?;
    // debugfs exits 0 whatever its commands did; its only line on success is its banner.
    let text = String::from_utf8_lossy(&done.stderr);
    if let Some(line) = text.lines().find(|l| !l.starts_with("debugfs ")) {
        bail!("debugfs failed: {line}");
    }
    if !done.status.success() {
        bail!("debugfs failed ({})", done.status);
    }
    Ok(())
}

/// A fresh private directory next to `file` (same file system, removed by the caller).
fn tempdir_near(file: &std::path::Path) -> anyhow::Result<PathBuf> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let dir = parent.join(format!(".rsing-overlay-seed.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

/// A system tool that may live in an sbin directory missing from a user's PATH.
fn find_sbin(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// SquashFS from the overlay's upper directory, whiteouts and opaque marks converted
/// (`convert::seal`), written under a temporary name and renamed: never a half-written layer.
/// An ext3 image is read through `fuse2fs` in a private user namespace (see
/// docs/overlays.md for why not `debugfs rdump`), then sealed exactly as a directory is.
fn seal(args: &SealArgs) -> anyhow::Result<i32> {
    use crate::squashfs::Compressor;
    let compressor = match args.compress.as_str() {
        "zstd" => Compressor::Zstd,
        "gzip" => Compressor::Gzip,
        "xz" => Compressor::Xz,
        "lz4" => Compressor::Lz4,
        other => bail!("--compress {other}: expected zstd, gzip, xz or lz4"),
    };
    // The layer must not change while it is read: hold the overlay's lock (shared).
    let request = overlay::Request {
        path: args.overlay.clone(),
        readonly: true,
        given: args.overlay.display().to_string(),
    };
    let held = overlay::open(std::slice::from_ref(&request))?;
    match held.lower.first().map(|l| &l.source) {
        Some(LayerSource::Ext { .. }) => {
            overlay::with_image_content(&request, |upper| {
                write_layer(upper, args, compressor).map_err(|e| format!("{e:#}"))
            })?;
        }
        Some(LayerSource::Dir(_)) => {
            let upper = args.overlay.join("upper");
            let src = if upper.is_dir() {
                upper
            } else {
                args.overlay.clone()
            };
            write_layer(&src, args, compressor)?;
        }
        _ => bail!(
            "overlay {} is a SquashFS file already: stack it with --overlay as it is",
            args.overlay.display()
        ),
    }
    Ok(0)
}

fn write_layer(
    src: &std::path::Path,
    args: &SealArgs,
    compressor: crate::squashfs::Compressor,
) -> anyhow::Result<()> {
    use crate::squashfs::write::{SquashfsWriter, WriterOptions};
    use crate::squashfs::Compressor;
    let mut out = crate::cache::AtomicFile::create(&args.out, 0o644)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let options = WriterOptions {
        compressor,
        level: (compressor == Compressor::Zstd).then_some(3),
        ..WriterOptions::default()
    };
    let mut writer = SquashfsWriter::new(out.file(), options)?;
    crate::convert::seal::seal(src, &mut writer)
        .with_context(|| format!("sealing {}", args.overlay.display()))?;
    writer.finish()?;
    out.commit()
        .with_context(|| format!("cannot write {}", args.out.display()))
}
