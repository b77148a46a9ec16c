//! The list of what `--nv` injects (`nvliblist.conf`), in Apptainer's format so that an
//! administrator's edited copy carries over: one entry per line, `#` comments.
//!
//! * an entry containing `.so` is a library name prefix (`libcuda.so` matches the cache names
//!   `libcuda.so.1` and `libcuda.so`);
//! * an absolute path is a file or directory bound at the same path when the host has it
//!   (`%v` in it stands for the driver version);
//! * anything else is a program looked up on the host and bound into the container's /usr/bin.

use std::path::PathBuf;

/// The list shipped with rsing (`etc/nvliblist.conf`), used when no file is installed.
pub const BUILTIN: &str = include_str!("../../etc/nvliblist.conf");

/// Where an installed, editable copy is looked for unless the site config names one.
pub const DEFAULT_PATH: &str = "/etc/rsing/nvliblist.conf";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LibList {
    /// Library name prefixes, in file order.
    pub libs: Vec<String>,
    /// Program names.
    pub binaries: Vec<String>,
    /// Absolute paths (may contain `%v`).
    pub files: Vec<PathBuf>,
}

impl LibList {
    pub fn parse(text: &str) -> LibList {
        let mut list = LibList::default();
        for line in text.lines() {
            let entry = line.split('#').next().unwrap_or_default().trim();
            if entry.is_empty() {
                continue;
            }
            if entry.starts_with('/') {
                list.files.push(PathBuf::from(entry));
            } else if entry.contains(".so") {
                list.libs.push(entry.to_string());
            } else if !entry.contains('/') {
                list.binaries.push(entry.to_string());
            }
        }
        list
    }

    /// True when the cache name `name` is one of the listed libraries.
    pub fn wants_library(&self, name: &str) -> bool {
        self.libs
            .iter()
            .any(|prefix| name.starts_with(prefix.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_kinds() {
        let list = LibList::parse(
            "# comment\nnvidia-smi\n\nlibcuda.so  # trailing\n/usr/share/nvidia/x.json\n\
             /lib/firmware/nvidia/%v\nweird/relative\nlibnvidia-ml.so\n",
        );
        assert_eq!(list.binaries, vec!["nvidia-smi"]);
        assert_eq!(list.libs, vec!["libcuda.so", "libnvidia-ml.so"]);
        assert_eq!(
            list.files,
            vec![
                PathBuf::from("/usr/share/nvidia/x.json"),
                PathBuf::from("/lib/firmware/nvidia/%v")
            ]
        );
        assert!(list.wants_library("libcuda.so.1"));
        assert!(list.wants_library("libcuda.so"));
        assert!(!list.wants_library("libcudart.so.12"));
    }

    #[test]
    fn builtin_list_has_the_core_entries() {
        let list = LibList::parse(BUILTIN);
        for lib in [
            "libcuda.so",
            "libnvidia-ml.so",
            "libnvidia-ptxjitcompiler.so",
        ] {
            assert!(list.libs.iter().any(|l| l == lib), "{lib} missing");
        }
        for bin in ["nvidia-smi", "nvidia-cuda-mps-control"] {
            assert!(list.binaries.iter().any(|b| b == bin), "{bin} missing");
        }
    }
}
