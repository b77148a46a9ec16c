//! Files that appear whole or not at all: an image being built is written to an anonymous
//! file (`O_TMPFILE`) in the destination's directory and linked into place only when it is
//! complete, so an interrupted or failed build (even one killed by a signal) leaves nothing
//! at the destination or beside it. On filesystems without `O_TMPFILE` a hidden named file is
//! used instead and removed on drop.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A file being written for `dest`.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    dest: PathBuf,
    /// The hidden name of a named temporary (fallback), `None` for an anonymous file.
    named: Option<PathBuf>,
}

impl AtomicFile {
    /// Starts a file that will become `dest` (mode `mode`, less the umask) on [`commit`].
    ///
    /// [`commit`]: AtomicFile::commit
    pub fn create(dest: &Path, mode: u32) -> io::Result<AtomicFile> {
        let dir = parent_dir(dest);
        let anonymous = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .mode(mode)
            .custom_flags(libc::O_TMPFILE)
            .open(&dir);
        match anonymous {
            Ok(file) => Ok(AtomicFile {
                file,
                dest: dest.to_path_buf(),
                named: None,
            }),
            Err(e) if tmpfile_unsupported(&e) => {
                let named = hidden_name(dest);
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(&named)?;
                Ok(AtomicFile {
                    file,
                    dest: dest.to_path_buf(),
                    named: Some(named),
                })
            }
            Err(e) => Err(e),
        }
    }

    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Flushes the data to disk and puts the file at its destination, replacing what was
    /// there.
    pub fn commit(mut self) -> io::Result<()> {
        self.file.sync_all()?;
        match self.named.take() {
            Some(named) => {
                std::fs::rename(&named, &self.dest).inspect_err(|_| {
                    let _ = std::fs::remove_file(&named);
                })?;
            }
            None => {
                // linkat cannot replace a file: link under a hidden name, then rename over.
                let staged = hidden_name(&self.dest);
                let proc_path = format!("/proc/self/fd/{}\0", self.file.as_raw_fd());
                let mut staged_c = staged.as_os_str().as_bytes().to_vec();
                staged_c.push(0);
                // SAFETY: both paths are NUL-terminated byte strings that outlive the call.
                let rc = unsafe {
                    libc::linkat(
                        libc::AT_FDCWD,
                        proc_path.as_ptr().cast(),
                        libc::AT_FDCWD,
                        staged_c.as_ptr().cast(),
                        libc::AT_SYMLINK_FOLLOW,
                    )
                };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                std::fs::rename(&staged, &self.dest).inspect_err(|_| {
                    let _ = std::fs::remove_file(&staged);
                })?;
            }
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if let Some(named) = self.named.take() {
            let _ = std::fs::remove_file(named);
        }
    }
}

fn parent_dir(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Errors with which filesystems (or old kernels) refuse `O_TMPFILE`.
fn tmpfile_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
    )
}

/// `.NAME.rsing-PID-NANOS` beside `dest`: where a file or directory is staged before it is
/// renamed into place.
pub fn hidden_name(dest: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut name = OsString::from(".");
    name.push(dest.file_name().unwrap_or_default());
    name.push(format!(".rsing-{}-{nanos}", std::process::id()));
    parent_dir(dest).join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rsing-atomic-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn nothing_appears_until_commit_and_a_dropped_file_leaves_nothing() {
        let dir = scratch("drop");
        let dest = dir.join("out.sif");
        let mut f = AtomicFile::create(&dest, 0o644).unwrap();
        f.file().write_all(b"half").unwrap();
        assert!(!dest.exists());
        drop(f);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn commit_replaces_the_destination() {
        let dir = scratch("commit");
        let dest = dir.join("out.sif");
        std::fs::write(&dest, b"old").unwrap();
        let mut f = AtomicFile::create(&dest, 0o644).unwrap();
        f.file().write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
