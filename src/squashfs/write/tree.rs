//! The in-memory entry tree: names, metadata and inode bodies (no file
//! contents: regular files only keep their block list).
//!
//! Nodes live in an arena; a directory maps names to node indexes. A hard
//! link is a second name for the same (non-directory) node. Removed nodes
//! become [`Body::Dead`] once no name refers to them any more.

use super::data::FileData;
use super::{Error, Metadata, Result};
use crate::squashfs::FileKind;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest accepted file name (Linux `NAME_MAX`).
pub(crate) const MAX_NAME_LEN: usize = 255;

pub(crate) const ROOT: usize = 0;

pub(crate) enum Body {
    /// Children sorted by name (byte order, as SquashFS requires).
    Dir(BTreeMap<Vec<u8>, usize>),
    File(Arc<FileData>),
    Symlink(Vec<u8>),
    /// Block/char device (with its encoded rdev), fifo or socket.
    Special(FileKind, u32),
    /// Unreachable (removed) node.
    Dead,
}

pub(crate) struct Node {
    pub(crate) meta: Metadata,
    pub(crate) body: Body,
    /// Names referring to this node (for freeing removed nodes).
    links: u32,
}

impl Node {
    pub(crate) fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir(_))
    }
}

pub(crate) struct Tree {
    pub(crate) nodes: Vec<Node>,
}

/// Splits an absolute path into its components. Leading, repeated and
/// trailing slashes and `.` components are ignored; `..`, NUL bytes and
/// names longer than 255 bytes are rejected. `"/"` gives no components.
pub(crate) fn split(path: &[u8]) -> Result<Vec<&[u8]>> {
    let bad =
        |why: &str| Error::InvalidPath(String::from_utf8_lossy(path).into_owned(), why.into());
    if path.contains(&0) {
        return Err(bad("contains a NUL byte"));
    }
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(bad("contains a '..' component")),
            _ if c.len() > MAX_NAME_LEN => return Err(bad("has a name longer than 255 bytes")),
            _ => out.push(c),
        }
    }
    Ok(out)
}

fn lossy(comps: &[&[u8]]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(&String::from_utf8_lossy(c));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

impl Tree {
    pub(crate) fn new(root_meta: Metadata) -> Tree {
        Tree {
            nodes: vec![Node {
                meta: root_meta,
                body: Body::Dir(BTreeMap::new()),
                links: 1,
            }],
        }
    }

    fn children(&self, dir: usize) -> Option<&BTreeMap<Vec<u8>, usize>> {
        match &self.nodes[dir].body {
            Body::Dir(c) => Some(c),
            _ => None,
        }
    }

    fn children_mut(&mut self, dir: usize) -> &mut BTreeMap<Vec<u8>, usize> {
        match &mut self.nodes[dir].body {
            Body::Dir(c) => c,
            _ => unreachable!("children_mut on a non-directory"),
        }
    }

    /// The node at `comps`, if it exists (no symlinks are followed).
    pub(crate) fn lookup(&self, comps: &[&[u8]]) -> Option<usize> {
        let mut cur = ROOT;
        for c in comps {
            cur = *self.children(cur)?.get(*c)?;
        }
        Some(cur)
    }

    /// The directory that will hold `comps`' last component, creating
    /// missing ancestors as directories with mode 0755, no xattrs, and the
    /// uid, gid and mtime of their own parent. Fails if an ancestor exists
    /// and is not a directory.
    pub(crate) fn parent_dir(&mut self, comps: &[&[u8]]) -> Result<usize> {
        let mut cur = ROOT;
        for (i, c) in comps[..comps.len().saturating_sub(1)].iter().enumerate() {
            let next = self.children(cur).and_then(|m| m.get(*c)).copied();
            cur = match next {
                Some(n) if self.nodes[n].is_dir() => n,
                Some(_) => return Err(Error::NotADirectory(lossy(&comps[..=i]))),
                None => {
                    let p = &self.nodes[cur].meta;
                    let meta = Metadata {
                        mode: 0o755,
                        uid: p.uid,
                        gid: p.gid,
                        mtime: p.mtime,
                        xattrs: Vec::new(),
                    };
                    self.insert_new(cur, c, meta, Body::Dir(BTreeMap::new()))
                }
            };
        }
        Ok(cur)
    }

    fn insert_new(&mut self, dir: usize, name: &[u8], meta: Metadata, body: Body) -> usize {
        let id = self.nodes.len();
        self.nodes.push(Node {
            meta,
            body,
            links: 1,
        });
        let old = self.children_mut(dir).insert(name.to_vec(), id);
        if let Some(old) = old {
            self.unlink(old);
        }
        id
    }

    /// Adds (or replaces) `comps` with a new node. A directory added over an
    /// existing directory keeps its children and only takes the new
    /// metadata. Returns the node index.
    pub(crate) fn add(&mut self, comps: &[&[u8]], meta: Metadata, body: Body) -> Result<usize> {
        let Some(name) = comps.last() else {
            // The root itself.
            if matches!(body, Body::Dir(_)) {
                self.nodes[ROOT].meta = meta;
                return Ok(ROOT);
            }
            return Err(Error::InvalidPath(
                "/".into(),
                "the root must be a directory".into(),
            ));
        };
        let parent = self.parent_dir(comps)?;
        if matches!(body, Body::Dir(_)) {
            if let Some(&old) = self.children(parent).and_then(|m| m.get(*name)) {
                if self.nodes[old].is_dir() {
                    self.nodes[old].meta = meta;
                    return Ok(old);
                }
            }
        }
        Ok(self.insert_new(parent, name, meta, body))
    }

    /// Adds `comps` as a second name of `target` (a non-directory node).
    pub(crate) fn link(&mut self, comps: &[&[u8]], target: usize) -> Result<()> {
        let Some(name) = comps.last() else {
            return Err(Error::InvalidPath(
                "/".into(),
                "cannot replace the root".into(),
            ));
        };
        let parent = self.parent_dir(comps)?;
        // Linking a name to itself is a no-op.
        if self.children(parent).and_then(|m| m.get(*name)) == Some(&target) {
            return Ok(());
        }
        self.nodes[target].links += 1;
        let old = self.children_mut(parent).insert(name.to_vec(), target);
        if let Some(old) = old {
            self.unlink(old);
        }
        Ok(())
    }

    /// Removes `comps` (a directory with its subtree). The root cannot be
    /// removed: removing `/` empties it instead. Returns whether anything
    /// was removed.
    pub(crate) fn remove(&mut self, comps: &[&[u8]]) -> bool {
        let Some(name) = comps.last() else {
            return self.clear(ROOT);
        };
        let Some(parent) = self.lookup(&comps[..comps.len() - 1]) else {
            return false;
        };
        let removed = match &mut self.nodes[parent].body {
            Body::Dir(m) => m.remove(*name),
            _ => None,
        };
        match removed {
            Some(n) => {
                self.unlink(n);
                true
            }
            None => false,
        }
    }

    /// Removes all children of directory `dir`; whether it had any.
    pub(crate) fn clear(&mut self, dir: usize) -> bool {
        let children = match &mut self.nodes[dir].body {
            Body::Dir(m) => std::mem::take(m),
            _ => return false,
        };
        let any = !children.is_empty();
        for (_, n) in children {
            self.unlink(n);
        }
        any
    }

    /// Drops one name of node `n`; frees it (and a directory's subtree) when
    /// no name is left.
    fn unlink(&mut self, n: usize) {
        let mut stack = vec![n];
        while let Some(n) = stack.pop() {
            let node = &mut self.nodes[n];
            node.links -= 1;
            if node.links > 0 {
                continue;
            }
            node.meta.xattrs = Vec::new();
            if let Body::Dir(m) = std::mem::replace(&mut node.body, Body::Dead) {
                stack.extend(m.into_values());
            }
        }
    }

    /// The sorted children of a directory node (empty for others).
    pub(crate) fn entries(&self, dir: usize) -> Vec<(&[u8], usize)> {
        match &self.nodes[dir].body {
            Body::Dir(m) => m.iter().map(|(k, &v)| (k.as_slice(), v)).collect(),
            _ => Vec::new(),
        }
    }
}
