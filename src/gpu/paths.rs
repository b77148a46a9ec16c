//! Path helpers: symlink resolution that stays inside a driver root, and file-type checks.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Program directories, searched after PATH (or alone, under a driver root).
pub const STANDARD_BIN_DIRS: [&str; 6] = [
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];

/// The host path of the file that `path` (as seen inside `root`) finally names, following
/// symlinks as a process chrooted to `root` would: absolute link targets start again at
/// `root`, and `..` never climbs above it. `None` when something is missing or links loop.
pub fn resolve_in_root(root: &Path, path: &str) -> Option<PathBuf> {
    if root == Path::new("/") {
        return std::fs::canonicalize(path).ok();
    }
    // Components still to walk, last first; the resolved prefix inside the root.
    let mut todo: Vec<String> = components(path).into_iter().rev().collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        done.push(part);
        let host = host_path(root, &done);
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > 40 {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            let target = target.to_str()?;
            done.pop();
            if target.starts_with('/') {
                done.clear();
            }
            todo.extend(components(target).into_iter().rev());
        }
    }
    Some(host_path(root, &done))
}

fn components(path: &str) -> Vec<String> {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            Component::ParentDir => Some("..".to_string()),
            _ => None,
        })
        .collect()
}

fn host_path(root: &Path, parts: &[String]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

pub fn is_executable(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

pub fn is_char_device(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_stay_inside_the_root() {
        let root = std::env::temp_dir().join(format!("rsing-gpu-paths-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("usr/lib/x")).unwrap();
        std::fs::write(root.join("usr/lib/x/libfoo.so.1.2"), b"").unwrap();
        std::os::unix::fs::symlink("libfoo.so.1.2", root.join("usr/lib/x/libfoo.so.1")).unwrap();
        std::os::unix::fs::symlink("/usr/lib", root.join("lib")).unwrap();
        std::os::unix::fs::symlink("../../../../etc/passwd", root.join("usr/lib/x/esc")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let got = resolve_in_root(&root, "/lib/x/libfoo.so.1").unwrap();
        assert_eq!(got, root.join("usr/lib/x/libfoo.so.1.2"));
        // `..` stops at the root: /etc/passwd inside it does not exist.
        assert_eq!(resolve_in_root(&root, "/usr/lib/x/esc"), None);
        assert_eq!(resolve_in_root(&root, "/loop"), None);
        assert_eq!(resolve_in_root(&root, "/missing"), None);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
