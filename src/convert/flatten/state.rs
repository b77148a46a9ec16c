//! What the layers above the current one decided, per path: the overlay state that says
//! whether an entry of a lower layer still lands.
//!
//! Layers are identified by their *level*: index + 1, so that 0 means "no layer" and "an upper
//! layer did X" is `level_of_x > current`. Each path keeps the topmost layer that placed
//! something there (an entry, or a directory implied by an entry below it), the topmost layer
//! whose whiteout hides it and the topmost layer that made it opaque. Because layers are
//! processed top first, the first layer to set one of these is the topmost, except for the
//! same-layer replacements that tar semantics allow.
//!
//! The paths live in a tree of components (each name stored once, not whole paths), which also
//! makes the ancestor checks one walk from the root.

use super::paths::components;
use std::collections::BTreeMap;

const ROOT: usize = 0;

/// No source entry recorded (see [`Placed::src`]).
pub(super) const NO_SRC: u64 = u64::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A directory from an explicit entry.
    Dir,
    /// A directory that exists only because an entry below it was placed: the first explicit
    /// entry of a lower layer still gives it its metadata.
    ImplicitDir,
    /// Anything else.
    Other,
}

/// A path as placed by a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Placed {
    pub level: u32,
    pub kind: Kind,
    /// For a non-directory: the index, in its layer's tar stream, of the entry whose content it
    /// holds (hard links included), or [`NO_SRC`] while its content is pending.
    pub src: u64,
}

struct Node {
    children: BTreeMap<Box<[u8]>, u32>,
    /// 0 if nothing was placed here (the node exists for a whiteout or opaque marker).
    placed: u32,
    kind: Kind,
    src: u64,
    whiteout: u32,
    opaque: u32,
}

impl Node {
    fn new() -> Node {
        Node {
            children: BTreeMap::new(),
            placed: 0,
            kind: Kind::ImplicitDir,
            src: NO_SRC,
            whiteout: 0,
            opaque: 0,
        }
    }
}

/// Whether an entry of the current layer lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Add it: the path is new, or was placed by an earlier entry of the same layer (which it
    /// replaces, as tar extraction would).
    Land,
    /// A directory entry for a directory an upper layer created only implicitly: it gives the
    /// directory its metadata.
    Meta,
    /// Hidden by an upper layer: the path or an ancestor was added, whited out or made opaque
    /// above.
    Shadowed,
    /// An earlier entry of the same layer made an ancestor a non-directory.
    UnderNonDir,
}

pub(super) struct State {
    nodes: Vec<Node>,
}

impl State {
    pub(super) fn new() -> State {
        State {
            nodes: vec![Node::new()],
        }
    }

    fn find(&self, path: &[u8]) -> Option<usize> {
        let mut n = ROOT;
        for c in components(path) {
            n = *self.nodes[n].children.get(c)? as usize;
        }
        Some(n)
    }

    /// The node for `path`, created (with nothing placed) if missing.
    fn make(&mut self, path: &[u8]) -> usize {
        let mut n = ROOT;
        for c in components(path) {
            n = self.child(n, c);
        }
        n
    }

    fn child(&mut self, n: usize, name: &[u8]) -> usize {
        if let Some(&c) = self.nodes[n].children.get(name) {
            return c as usize;
        }
        let c = self.nodes.len();
        self.nodes.push(Node::new());
        // More than 4 billion paths would not fit a SquashFS image anyway.
        self.nodes[n].children.insert(name.into(), c as u32);
        c
    }

    /// Decides an entry of the layer at `level` for `path`.
    pub(super) fn verdict(&self, path: &[u8], level: u32, is_dir: bool) -> Verdict {
        let mut n = ROOT;
        for c in components(path) {
            let a = &self.nodes[n]; // an ancestor of `path`
            if a.opaque > level {
                return Verdict::Shadowed;
            }
            if n != ROOT {
                if a.whiteout > level {
                    return Verdict::Shadowed;
                }
                if a.placed != 0 && a.kind == Kind::Other {
                    if a.placed > level {
                        return Verdict::Shadowed;
                    }
                    return Verdict::UnderNonDir;
                }
            }
            match a.children.get(c) {
                Some(&next) => n = next as usize,
                // Nothing is known below here.
                None => return Verdict::Land,
            }
        }
        let p = &self.nodes[n];
        if p.whiteout > level {
            Verdict::Shadowed
        } else if p.placed > level {
            if is_dir && p.kind == Kind::ImplicitDir {
                Verdict::Meta
            } else {
                Verdict::Shadowed
            }
        } else {
            Verdict::Land
        }
    }

    /// Records an entry that landed (after [`Verdict::Land`] or [`Verdict::Meta`]); its
    /// unplaced ancestors become implicit directories of the same layer.
    pub(super) fn place(&mut self, path: &[u8], level: u32, kind: Kind, src: u64) {
        let mut n = ROOT;
        for c in components(path) {
            let a = &mut self.nodes[n];
            if a.placed == 0 {
                a.placed = level;
                a.kind = Kind::ImplicitDir;
            }
            n = self.child(n, c);
        }
        let p = &mut self.nodes[n];
        if p.placed > level {
            p.kind = Kind::Dir;
        } else {
            p.placed = level;
            p.kind = kind;
            p.src = src;
        }
    }

    /// What is placed at `path`, if anything.
    pub(super) fn placed(&self, path: &[u8]) -> Option<Placed> {
        let n = &self.nodes[self.find(path)?];
        (n.placed != 0).then_some(Placed {
            level: n.placed,
            kind: n.kind,
            src: n.src,
        })
    }

    /// A whiteout of the layer at `level`: `path` and everything below it are hidden in the
    /// layers below.
    pub(super) fn whiteout(&mut self, path: &[u8], level: u32) {
        let n = self.make(path);
        let w = &mut self.nodes[n].whiteout;
        *w = (*w).max(level);
    }

    /// An opaque marker of the layer at `level`: the children of `path` are hidden in the
    /// layers below.
    pub(super) fn opaque(&mut self, path: &[u8], level: u32) {
        let n = self.make(path);
        let o = &mut self.nodes[n].opaque;
        *o = (*o).max(level);
    }

    /// A non-directory of the layer at `level` that an upper layer shadowed: when the layers are
    /// applied bottom first, it replaced whatever the layers below had at `path`, so it hides
    /// that as a whiteout would (this matters when the upper layer has a directory there).
    pub(super) fn shadowed_non_dir(&mut self, path: &[u8], level: u32) {
        if let Some(n) = self.find(path) {
            let w = &mut self.nodes[n].whiteout;
            *w = (*w).max(level);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        let mut s = State::new();
        // Layer 3 (top): a/b/file, whiteout of c, opaque d, e is a file.
        s.place(b"a/b/file", 3, Kind::Other, 0);
        s.whiteout(b"c", 3);
        s.opaque(b"d", 3);
        s.place(b"e", 3, Kind::Other, 1);
        assert_eq!(s.verdict(b"a/b/file", 2, false), Verdict::Shadowed);
        assert_eq!(s.verdict(b"a/b/file", 3, false), Verdict::Land);
        assert_eq!(s.verdict(b"a/b", 2, true), Verdict::Meta);
        assert_eq!(s.verdict(b"a/b", 2, false), Verdict::Shadowed);
        assert_eq!(s.verdict(b"a/b/other", 2, false), Verdict::Land);
        assert_eq!(s.verdict(b"c", 2, true), Verdict::Shadowed);
        assert_eq!(s.verdict(b"c/x", 2, false), Verdict::Shadowed);
        assert_eq!(s.verdict(b"c/x", 3, false), Verdict::Land);
        assert_eq!(s.verdict(b"d", 2, true), Verdict::Land);
        assert_eq!(s.verdict(b"d/x", 2, false), Verdict::Shadowed);
        assert_eq!(s.verdict(b"e/x", 2, false), Verdict::Shadowed);
        assert_eq!(s.verdict(b"e/x", 3, false), Verdict::UnderNonDir);
        s.place(b"a/b", 2, Kind::Dir, NO_SRC);
        assert_eq!(s.verdict(b"a/b", 1, true), Verdict::Shadowed);
        assert_eq!(s.placed(b"a/b").unwrap().level, 3);
        assert_eq!(s.placed(b"a/b").unwrap().kind, Kind::Dir);
        assert_eq!(s.placed(b"c"), None);
        // The root: opaque at the top hides every lower entry but not the root itself.
        s.opaque(b"", 3);
        assert_eq!(s.verdict(b"zzz", 2, false), Verdict::Shadowed);
        assert_eq!(s.verdict(b"", 2, true), Verdict::Meta);
    }
}
