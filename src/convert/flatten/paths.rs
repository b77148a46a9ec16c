//! Layer paths: normalisation and the meaning of whiteout names.
//!
//! A normalised path has no leading slash and no empty, `.` or `..` components, its components
//! joined by single slashes; the root is the empty path. The SquashFS writer takes such paths
//! as they are (it ignores a missing leading slash).

/// Normalises a tar member name or hard-link target. A `..` component is refused, never
/// resolved: layers are applied inside the image only.
pub(super) fn normalize(raw: &[u8]) -> Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(raw.len());
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("has a '..' component (refused, never resolved)"),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

/// The components of a normalised path (none for the root).
pub(super) fn components(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty())
}

/// `(parent, name)` of a normalised path; the root's parent is the root.
pub(super) fn split_last(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// Whether normalised path `a` is a directory above `b` (not `b` itself).
pub(super) fn is_strict_ancestor(a: &[u8], b: &[u8]) -> bool {
    a.len() < b.len() && (a.is_empty() || (b.starts_with(a) && b[a.len()] == b'/'))
}

/// Whether normalised path `a` is `b` or a directory above it.
pub(super) fn is_self_or_ancestor(a: &[u8], b: &[u8]) -> bool {
    a == b || is_strict_ancestor(a, b)
}

/// For messages: the path as the container will see it.
pub(super) fn show(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}

/// What a member name means for the overlay (OCI image spec, "Whiteouts").
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Name<'a> {
    /// An ordinary entry.
    Plain,
    /// `DIR/.wh.NAME`: hides `DIR/NAME` and everything below it in lower layers.
    Whiteout(Vec<u8>),
    /// `DIR/.wh..wh..opq`: hides every lower-layer child of `DIR` (not `DIR` itself).
    Opaque(&'a [u8]),
    /// A `.wh.` name with no meaning in the OCI spec (AUFS metadata such as `.wh..wh.plnk`, or
    /// a whiteout name used as a directory): ignored.
    Unknown,
}

pub(super) fn classify(path: &[u8]) -> Name<'_> {
    const WH: &[u8] = b".wh.";
    let (parent, name) = split_last(path);
    if components(parent).any(|c| c.starts_with(WH)) {
        return Name::Unknown;
    }
    if name == b".wh..wh..opq" {
        return Name::Opaque(parent);
    }
    if name.starts_with(b".wh..wh.") {
        return Name::Unknown;
    }
    match name.strip_prefix(WH) {
        None => Name::Plain,
        Some(b"" | b"." | b"..") => Name::Unknown,
        Some(hidden) => {
            let mut p = parent.to_vec();
            if !p.is_empty() {
                p.push(b'/');
            }
            p.extend_from_slice(hidden);
            Name::Whiteout(p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_strips_and_refuses() {
        assert_eq!(normalize(b"./a//b/./c/").unwrap(), b"a/b/c");
        assert_eq!(normalize(b"/etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(normalize(b"./").unwrap(), b"");
        assert_eq!(normalize(b".").unwrap(), b"");
        assert!(normalize(b"a/../b").is_err());
        assert!(normalize(b"..").is_err());
        assert_eq!(normalize(b"a/..b").unwrap(), b"a/..b");
    }

    #[test]
    fn ancestors() {
        assert!(is_strict_ancestor(b"", b"a"));
        assert!(!is_strict_ancestor(b"", b""));
        assert!(is_strict_ancestor(b"a", b"a/b"));
        assert!(!is_strict_ancestor(b"a", b"ab/c"));
        assert!(!is_strict_ancestor(b"a/b", b"a/b"));
        assert!(is_self_or_ancestor(b"a/b", b"a/b"));
        assert!(is_self_or_ancestor(b"", b""));
    }

    #[test]
    fn whiteout_names() {
        assert_eq!(classify(b"a/b"), Name::Plain);
        assert_eq!(classify(b"a/.wh.b"), Name::Whiteout(b"a/b".to_vec()));
        assert_eq!(classify(b".wh.etc"), Name::Whiteout(b"etc".to_vec()));
        assert_eq!(classify(b"a/.wh..wh..opq"), Name::Opaque(b"a"));
        assert_eq!(classify(b".wh..wh..opq"), Name::Opaque(b""));
        assert_eq!(classify(b".wh..wh.plnk"), Name::Unknown);
        assert_eq!(classify(b".wh..wh.plnk/1.2"), Name::Unknown);
        assert_eq!(classify(b"a/.wh."), Name::Unknown);
        assert_eq!(classify(b"a/.wh.x/y"), Name::Unknown);
    }
}
