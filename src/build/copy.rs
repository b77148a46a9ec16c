//! Copying host paths (or paths of an earlier stage) into a stage root: `%files`, `COPY`.
//! Symlinks are copied as symlinks, directories recursively, files with their modes.

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Joins `inside` (absolute or relative to `/`) to `root` without letting `..` climb out.
pub fn in_root(root: &Path, inside: &str) -> PathBuf {
    let mut out = root.to_path_buf();
    let mut depth = 0usize;
    for c in Path::new(inside).components() {
        match c {
            Component::Normal(n) => {
                out.push(n);
                depth += 1;
            }
            Component::ParentDir if depth > 0 => {
                out.pop();
                depth -= 1;
            }
            _ => {}
        }
    }
    out
}

/// Copies `src` to `dest`: into `dest` when it is an existing directory (or ends in `/`),
/// else as `dest`. Missing parents of `dest` are created.
pub fn copy_into(src: &Path, dest: &Path, dest_is_dir: bool) -> io::Result<()> {
    let st = fs::symlink_metadata(src)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
    let _ = &st;
    let target = if dest_is_dir || dest.is_dir() {
        fs::create_dir_all(dest)?;
        dest.join(src.file_name().unwrap_or_default())
    } else {
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        dest.to_path_buf()
    };
    copy_tree(src, &target)
}

/// Copies `src` (any kind) to `dest`, merging into an existing directory.
pub fn copy_tree(src: &Path, dest: &Path) -> io::Result<()> {
    let st = fs::symlink_metadata(src)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", src.display())))?;
    let ft = st.file_type();
    if ft.is_dir() {
        if !dest.is_dir() {
            let _ = fs::remove_file(dest);
            fs::create_dir(dest)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dest.display())))?;
        }
        for entry in fs::read_dir(src)? {
            let entry = entry?;
            copy_tree(&entry.path(), &dest.join(entry.file_name()))?;
        }
        fs::set_permissions(
            dest,
            fs::Permissions::from_mode(st.permissions().mode() | 0o700),
        )?;
    } else if ft.is_symlink() {
        let _ = fs::remove_file(dest);
        symlink(fs::read_link(src)?, dest)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dest.display())))?;
    } else {
        if dest.symlink_metadata().is_ok() {
            fs::remove_file(dest)?;
        }
        fs::copy(src, dest)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dest.display())))?;
        // `fs::copy` sets the mode before writing, and the write clears set-id bits.
        let mode = st.permissions().mode();
        if mode & 0o6000 != 0 {
            fs::set_permissions(dest, fs::Permissions::from_mode(mode & 0o7777))?;
        }
    }
    Ok(())
}

/// Removes a staging tree even where steps left directories without write permission.
pub fn remove_tree(path: &Path) {
    if fs::remove_dir_all(path).is_ok() || fs::symlink_metadata(path).is_err() {
        return;
    }
    fn open_up(p: &Path) {
        if let Ok(st) = fs::symlink_metadata(p) {
            if st.is_dir() {
                let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o700));
                if let Ok(rd) = fs::read_dir(p) {
                    for e in rd.flatten() {
                        open_up(&e.path());
                    }
                }
            }
        }
    }
    open_up(path);
    let _ = fs::remove_dir_all(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_root_never_leaves_the_root() {
        let r = Path::new("/r");
        assert_eq!(in_root(r, "/a/../../b"), Path::new("/r/b"));
        assert_eq!(in_root(r, "../../etc/passwd"), Path::new("/r/etc/passwd"));
        assert_eq!(in_root(r, "a/./b/.."), Path::new("/r/a"));
    }
}
