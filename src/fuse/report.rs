//! Warnings about image reads the FUSE server cannot serve.
//!
//! A container that hits a corrupt block only sees an errno (EIO). The user needs to know
//! which image and which file, once: the warning names both, in rsing's one-line warning
//! format, with bytes from the image escaped. Paths are not tracked on the hot path (no table
//! of node → name): they are searched for when a read fails, which is rare.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::sync::Mutex;

use crate::squashfs::{Archive, Error, InodeRef};

/// Distinct failing inodes reported before the rest are only counted.
const MAX_REPORTED: usize = 20;
/// Directory entries visited at most when searching a failing inode's path.
const MAX_SEARCHED: usize = 200_000;

pub struct FailureReport {
    image: String,
    seen: Mutex<HashSet<u64>>,
}

impl FailureReport {
    pub fn new(image: &str) -> Self {
        FailureReport {
            image: image.to_string(),
            seen: Mutex::new(HashSet::new()),
        }
    }

    /// Prints `rsing: warning: IMAGE: cannot read PATH: CAUSE` the first time inode `r` fails.
    pub fn report(&self, archive: &Archive, r: InodeRef, e: &Error) {
        if let Error::Io(io) = e {
            if crate::squashfs::AlreadyReported::is(io) {
                return;
            }
        }
        let count = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() > MAX_REPORTED || !seen.insert(r.0) {
                return;
            }
            seen.len()
        };
        let line = if count > MAX_REPORTED {
            format!(
                "{}: more reads failed; further failures are not reported",
                self.image
            )
        } else {
            let path = path_of(archive, r)
                .map(|p| String::from_utf8_lossy(&p).into_owned())
                .unwrap_or_else(|| format!("inode reference {:#x}", r.0));
            format!("{}: cannot read {path}: {e}", self.image)
        };
        // One write, so that lines of concurrent workers never interleave.
        let _ = std::io::stderr()
            .write_all(format!("rsing: warning: {}\n", one_line(&line)).as_bytes());
    }
}

/// The path of inode `r` in the image, searched breadth first from the root.
fn path_of(archive: &Archive, r: InodeRef) -> Option<Vec<u8>> {
    if r == archive.root_ref() {
        return Some(b"/".to_vec());
    }
    let mut queue = VecDeque::from([(archive.root().ok()?, Vec::new())]);
    let mut visited = 0;
    while let Some((dir, path)) = queue.pop_front() {
        let Ok(entries) = archive.read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            visited += 1;
            if visited > MAX_SEARCHED {
                return None;
            }
            let mut child = path.clone();
            child.push(b'/');
            child.extend_from_slice(&entry.name);
            if entry.inode_ref == r {
                return Some(child);
            }
            if entry.kind == crate::squashfs::FileKind::Directory {
                if let Ok(inode) = archive.inode(entry.inode_ref) {
                    queue.push_back((inode, child));
                }
            }
        }
    }
    None
}

/// Control characters escaped (`\e`, `\n`, `\x7f`, …), so that names and bytes from a hostile
/// image cannot move the cursor or forge extra lines on the user's terminal.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x1b' => out.push_str("\\e"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            one_line("a\x1b[2Jb\nrsing: error: forged\r\u{9b}"),
            "a\\e[2Jb\\nrsing: error: forged\\r\\x9b"
        );
    }
}
