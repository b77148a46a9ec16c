//! `--bind src[:dst[:ro|rw]]` specifications.

use std::path::{Component, Path, PathBuf};

/// One user- or site-requested bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindSpec {
    /// Absolute host path.
    pub src: PathBuf,
    /// Absolute container path.
    pub dst: String,
    pub readonly: bool,
}

/// A directory rsing fills with single host files (the GPU libraries in
/// `/.singularity.d/libs`): a fresh tmpfs at `dst` holding a read-only bind of each file, so
/// the image's own directory content never mixes with the host's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDir {
    /// Absolute container path.
    pub dst: String,
    /// (file name in the directory, absolute host path).
    pub files: Vec<(String, PathBuf)>,
}

/// Parses one spec. Relative sources are taken from `cwd`; a missing destination is the source.
pub fn parse(spec: &str, cwd: &Path) -> Result<BindSpec, String> {
    let mut parts = spec.splitn(3, ':');
    let src = parts.next().unwrap_or_default();
    if src.is_empty() {
        return Err(format!("invalid bind specification '{spec}': empty source"));
    }
    let dst = parts.next().filter(|d| !d.is_empty());
    let readonly = match parts.next() {
        None | Some("rw") | Some("") => false,
        Some("ro") => true,
        Some(other) => {
            return Err(format!(
                "invalid bind specification '{spec}': unknown option '{other}' (use ro or rw)"
            ))
        }
    };
    let src = normalize(&cwd.join(src));
    let dst = match dst {
        Some(d) if d.starts_with('/') => checked_destination(spec, d)?,
        Some(d) => {
            return Err(format!(
                "invalid bind specification '{spec}': destination '{d}' is not absolute"
            ))
        }
        None => checked_destination(spec, &src.to_string_lossy())?,
    };
    Ok(BindSpec { src, dst, readonly })
}

/// Refuses a destination that is the container root (the root is the image: a bind there
/// would hide it, and rsing's own files, entirely) or whose `..` climb above it.
pub fn checked_destination(spec: &str, dst: &str) -> Result<String, String> {
    let mut depth = 0usize;
    for part in dst.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            if depth == 0 {
                return Err(format!(
                    "bind '{spec}': destination '{dst}' leaves the container root"
                ));
            }
            depth -= 1;
        } else {
            depth += 1;
        }
    }
    if depth == 0 {
        return Err(format!(
            "bind '{spec}': cannot bind onto the container root /; bind onto a directory \
             such as /mnt instead"
        ));
    }
    Ok(dst.to_string())
}

/// Splits comma lists (`-B a,b:/c`) and parses every element.
pub fn parse_list(specs: &[String], cwd: &Path) -> Result<Vec<BindSpec>, String> {
    specs
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.trim().is_empty())
        .map(|s| parse(s.trim(), cwd))
        .collect()
}

/// Removes `.` and `..` lexically (the path need not exist).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// True when `path` is `prefix` or lies below it (component-wise).
pub fn is_within(path: &Path, prefix: &Path) -> bool {
    path.starts_with(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let cwd = Path::new("/work");
        assert_eq!(
            parse("/data", cwd).unwrap(),
            BindSpec {
                src: "/data".into(),
                dst: "/data".into(),
                readonly: false
            }
        );
        assert_eq!(
            parse("in:/mnt:ro", cwd).unwrap(),
            BindSpec {
                src: "/work/in".into(),
                dst: "/mnt".into(),
                readonly: true
            }
        );
        assert!(parse("/a:/b:xx", cwd).is_err());
        assert!(parse("/a:rel", cwd).is_err());
        assert!(parse("/tmp:/", cwd)
            .unwrap_err()
            .contains("container root /"));
        assert!(parse("/tmp:/mnt/..", cwd).is_err());
        let err = parse("/a:/mnt/../../oldroot/etc", cwd).unwrap_err();
        assert!(err.contains("leaves the container root"), "{err}");
        assert!(parse("/", cwd).is_err());
        let list = parse_list(&["/a,/b:/c".into(), "/d".into()], cwd).unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[1].dst, "/c");
    }

    #[test]
    fn within() {
        assert!(is_within(Path::new("/etc/ssh"), Path::new("/etc")));
        assert!(!is_within(Path::new("/etcx"), Path::new("/etc")));
    }
}
