//! A lazy entry's files reached through open directories. The image server, and rsing itself
//! when it serves an image in-process, read the image after they changed mount namespace:
//! there the cache's path may lead nowhere (the server mounts a tmpfs over /tmp). Everything a
//! [`LazySource`](super::LazySource) does to files after it was opened goes through these.

use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

pub(crate) struct At {
    /// The `lazy/` directory and the entry's key (`<key>.sif`, `.map`, …).
    dir: File,
    key: String,
    /// Where the complete file goes.
    final_dir: File,
    final_name: String,
}

fn open_dir(path: &Path) -> io::Result<File> {
    File::open(path)
}

impl At {
    /// For the entry whose data file is `data`, finishing at `final_path` (its directory must
    /// exist).
    pub fn open(data: &Path, final_path: &Path) -> io::Result<At> {
        let bad = || io::Error::new(io::ErrorKind::InvalidInput, "not a file path");
        let key = data
            .file_stem()
            .ok_or_else(bad)?
            .to_string_lossy()
            .into_owned();
        let final_name = final_path
            .file_name()
            .ok_or_else(bad)?
            .to_string_lossy()
            .into_owned();
        Ok(At {
            dir: open_dir(data.parent().ok_or_else(bad)?)?,
            key,
            final_dir: open_dir(final_path.parent().ok_or_else(bad)?)?,
            final_name,
        })
    }

    fn name(&self, ext: &str) -> String {
        format!("{}.{ext}", self.key)
    }

    fn open_file(&self, ext: &str, flags: OFlag) -> io::Result<File> {
        let fd = nix::fcntl::openat(
            &self.dir,
            self.name(ext).as_str(),
            flags | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )?;
        Ok(File::from(fd))
    }

    /// Whether the entry's `<key>.EXT` exists.
    pub fn exists(&self, ext: &str) -> bool {
        nix::sys::stat::fstatat(
            &self.dir,
            self.name(ext).as_str(),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }

    /// The entry's exclusive `flock` (made, finished, removed under it).
    pub fn lock(&self) -> io::Result<Flock<File>> {
        let f = self.open_file("lock", OFlag::O_WRONLY | OFlag::O_CREAT)?;
        Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| io::Error::from(e))
    }

    fn unlink(&self, ext: &str) {
        let _ = nix::unistd::unlinkat(
            &self.dir,
            self.name(ext).as_str(),
            UnlinkatFlags::NoRemoveDir,
        );
    }

    /// Removes the entry (its description first: without it the rest is not an entry).
    pub fn remove(&self) {
        for ext in ["remote", "sif", "map"] {
            self.unlink(ext);
        }
    }

    /// Renames the complete data file to its final name and removes the rest of the entry.
    pub fn publish(&self) -> io::Result<()> {
        nix::fcntl::renameat(
            &self.dir,
            self.name("sif").as_str(),
            &self.final_dir,
            self.final_name.as_str(),
        )?;
        let _ = self.final_dir.sync_all();
        self.unlink("map");
        self.unlink("remote");
        Ok(())
    }

    /// Appends one line to the entry's log (see `Log`).
    pub fn log(&self, line: &str) {
        tracing::debug!("{line}");
        if let Ok(mut f) = self.open_file("log", OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}
