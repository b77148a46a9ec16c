//! The `rsing overlay` commands (`create`, `seal`): see docs/overlays.md. What `--overlay`
//! does to a launch is [`crate::launch`]'s.

use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::runtime::overlay;

/// `rsing overlay …`
#[derive(Debug, clap::Subcommand)]
pub enum OverlayCommand {
    /// Create an ext3 overlay image (upper/ and work/ inside, as Apptainer's `overlay create`)
    Create(CreateArgs),
    /// Pack a directory overlay into a read-only SquashFS layer for --overlay OUT.sqfs
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
    /// The image file to create (must not exist)
    pub file: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct SealArgs {
    /// Compression: zstd, gzip, xz or lz4
    #[arg(long, default_value = "zstd")]
    pub compress: String,
    /// The overlay directory (its upper/ if it has one)
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
        bail!(
            "{} exists already; rsing overlay create makes a new file",
            file.display()
        );
    }
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
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
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
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&seed);
    if result.is_err() {
        let _ = std::fs::remove_file(file);
    }
    result.with_context(|| format!("overlay image {}", file.display()))?;
    Ok(0)
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
fn seal(args: &SealArgs) -> anyhow::Result<i32> {
    use crate::squashfs::write::{SquashfsWriter, WriterOptions};
    use crate::squashfs::Compressor;
    let meta = std::fs::metadata(&args.overlay)
        .with_context(|| format!("overlay {}", args.overlay.display()))?;
    if !meta.is_dir() {
        bail!(
            "overlay {}: only a directory overlay can be sealed (an image file: copy its upper/ \
             out first)",
            args.overlay.display()
        );
    }
    let upper = args.overlay.join("upper");
    let src = if upper.is_dir() {
        upper
    } else {
        args.overlay.clone()
    };
    let compressor = match args.compress.as_str() {
        "zstd" => Compressor::Zstd,
        "gzip" => Compressor::Gzip,
        "xz" => Compressor::Xz,
        "lz4" => Compressor::Lz4,
        other => bail!("--compress {other}: expected zstd, gzip, xz or lz4"),
    };
    // The layer must not change while it is read: hold the overlay's lock.
    let request = overlay::Request {
        path: args.overlay.clone(),
        readonly: true,
        given: args.overlay.display().to_string(),
    };
    let _held = overlay::open(std::slice::from_ref(&request))?;
    let mut out = crate::cache::AtomicFile::create(&args.out, 0o644)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let options = WriterOptions {
        compressor,
        level: (compressor == Compressor::Zstd).then_some(3),
        ..WriterOptions::default()
    };
    let mut writer = SquashfsWriter::new(out.file(), options)?;
    crate::convert::seal::seal(&src, &mut writer)
        .with_context(|| format!("sealing {}", args.overlay.display()))?;
    writer.finish()?;
    out.commit()
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    Ok(0)
}
