//! Hard links whose target's content is not (or no longer) the node the writer holds at the
//! target path.
//!
//! A hard link of layer L names content: the latest entry for its target earlier in L's tar
//! stream, or else whatever the layers below L show at the target. That content is found in
//! one of three ways:
//!
//! * it landed (the writer holds it at a path): `add_hardlink` right away;
//! * it is entry `k` of some layer's tar stream but was shadowed: the link waits in a *group*
//!   keyed by that entry, and after that layer's first pass a second pass reads entry `k` again
//!   and writes it at the group's first path, the others becoming hard links to it;
//! * it is in a lower layer, not processed yet: the link waits in a *pending* group keyed by
//!   (its layer, target) until a lower layer turns out to have the target (then one of the two
//!   cases above), or hides it (whiteout, opaque directory, non-directory ancestor: an error,
//!   as is a target that no layer has).
//!
//! Only paths of links and of the current layer's shadowed entries are kept in memory.

use super::paths::{is_self_or_ancestor, is_strict_ancestor, split_last};
use super::state::{Kind, State};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Where a link's content comes from, when it is not a path of the writer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Key {
    /// The content entry with this index in the tar stream of the layer at this level.
    Entry(u32, u64),
    /// Whatever the layers below this level show at this path.
    Below(u32, Box<[u8]>),
}

/// The resolution of a link target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Source {
    /// The writer holds the content at this path, from entry `src` of the current layer.
    Path(Box<[u8]>, u64),
    /// The content is not in the writer (yet).
    Key(Key),
    /// The target is a directory.
    Dir,
    /// The current layer has nothing there: the layers below decide.
    Missing,
}

/// A shadowed entry of the current layer, remembered for links to it.
enum Local {
    Dir,
    Content { key: Key, hint: Option<Box<[u8]>> },
}

/// Links waiting for a lower layer (keyed by their level and target).
#[derive(Default)]
struct Pending {
    paths: Vec<Box<[u8]>>,
    /// Why the layers processed since then hide the target, if they do.
    hidden: Option<String>,
}

#[derive(Default)]
pub(super) struct Links {
    /// Content entries to read again: (level, index) -> the paths that get that content.
    groups: HashMap<(u32, u64), Vec<Box<[u8]>>>,
    pending: BTreeMap<(u32, Box<[u8]>), Pending>,
    /// The targets of the links pending from upper layers, and all their ancestors: the paths
    /// where an entry of the current layer may hide a target.
    watch: HashSet<Box<[u8]>>,
    /// Every waiting path: the level of the link that placed it, and its group.
    waiting: HashMap<Box<[u8]>, (u32, Key)>,
    /// The current layer's shadowed entries.
    local: HashMap<Box<[u8]>, Local>,
}

/// A link that cannot be made: (level of the link, link path, target, why).
pub(super) type LinkFailure = (u32, Box<[u8]>, Box<[u8]>, String);

/// Links to add now: (link path, path of the writer that holds the content).
pub(super) type Ready = Vec<(Box<[u8]>, Box<[u8]>)>;

impl Links {
    /// Starts the first pass of the layer at `level`.
    pub(super) fn begin_layer(&mut self, level: u32) {
        self.local.clear();
        self.watch.clear();
        for ((l, target), p) in &self.pending {
            if *l > level && !p.paths.is_empty() {
                let mut t: &[u8] = target;
                loop {
                    self.watch.insert(t.into());
                    if t.is_empty() {
                        break;
                    }
                    t = split_last(t).0;
                }
            }
        }
    }

    /// An entry of the current layer landed at `path`: a link of the same layer waiting there
    /// is replaced by it (tar semantics), and so are those below it when a non-directory
    /// replaces a directory (`subtree`).
    pub(super) fn landed(&mut self, path: &[u8], level: u32, subtree: bool) {
        if self.waiting.is_empty() {
            return;
        }
        let gone: Vec<Box<[u8]>> = if subtree {
            self.waiting
                .iter()
                .filter(|(p, (l, _))| *l == level && is_self_or_ancestor(path, p))
                .map(|(p, _)| p.clone())
                .collect()
        } else if self.waiting.get(path).is_some_and(|(l, _)| *l == level) {
            vec![path.into()]
        } else {
            return;
        };
        for p in gone {
            self.unwait(&p);
        }
    }

    fn unwait(&mut self, path: &[u8]) {
        let Some((_, key)) = self.waiting.remove(path) else {
            return;
        };
        let drop_path = |v: &mut Vec<Box<[u8]>>| v.retain(|p| &**p != path);
        match key {
            Key::Entry(l, k) => {
                if let Some(v) = self.groups.get_mut(&(l, k)) {
                    drop_path(v);
                }
            }
            Key::Below(l, t) => {
                if let Some(p) = self.pending.get_mut(&(l, t)) {
                    drop_path(&mut p.paths);
                }
            }
        }
    }

    /// A shadowed directory entry of the current layer.
    pub(super) fn shadowed_dir(&mut self, path: &[u8]) {
        self.local.insert(path.into(), Local::Dir);
    }

    /// A shadowed content entry (index `index`) of the current layer.
    pub(super) fn shadowed_content(&mut self, path: &[u8], level: u32, index: u64) {
        let key = Key::Entry(level, index);
        self.local
            .insert(path.into(), Local::Content { key, hint: None });
    }

    /// A shadowed hard link of the current layer, whose target resolved to `src`.
    pub(super) fn shadowed_link(&mut self, path: &[u8], level: u32, target: &[u8], src: Source) {
        let local = match src {
            Source::Path(p, index) => Local::Content {
                key: Key::Entry(level, index),
                hint: Some(p),
            },
            Source::Key(key) => Local::Content { key, hint: None },
            Source::Dir => Local::Dir,
            Source::Missing => Local::Content {
                key: Key::Below(level, target.into()),
                hint: None,
            },
        };
        self.local.insert(path.into(), local);
    }

    /// What `target` holds for a link of the layer at `level`, given that layer's entries so
    /// far (or all of them, at the end of its first pass).
    pub(super) fn source(&self, state: &State, level: u32, target: &[u8]) -> Source {
        if let Some(p) = state.placed(target).filter(|p| p.level == level) {
            if p.kind != Kind::Other {
                return Source::Dir;
            }
            return match self.waiting.get(target) {
                Some((l, key)) if *l == level => Source::Key(key.clone()),
                _ => Source::Path(target.into(), p.src),
            };
        }
        match self.local.get(target) {
            None => Source::Missing,
            Some(Local::Dir) => Source::Dir,
            Some(Local::Content { key, hint }) => {
                // The hint is the path that held this content when the link was read; it still
                // does if no later entry of the layer replaced it.
                if let (Some(h), Key::Entry(_, index)) = (hint, key) {
                    let same = state.placed(h).is_some_and(|p| {
                        p.level == level && p.kind == Kind::Other && p.src == *index
                    }) && !self.waiting.contains_key(h);
                    if same {
                        return Source::Path(h.clone(), *index);
                    }
                }
                Source::Key(key.clone())
            }
        }
    }

    /// Makes the landed link `path` (of the layer at `level`) wait for `key`'s content.
    pub(super) fn wait(&mut self, path: &[u8], level: u32, key: Key) {
        match &key {
            Key::Entry(l, k) => self.groups.entry((*l, *k)).or_default().push(path.into()),
            Key::Below(l, t) => self
                .pending
                .entry((*l, t.clone()))
                .or_default()
                .paths
                .push(path.into()),
        }
        self.waiting.insert(path.into(), (level, key));
    }

    /// Notes an event of the layer at `level` that hides what the layers below have at
    /// `path` (`inclusive`: `path` itself too, else only below it) from pending links.
    pub(super) fn hides(
        &mut self,
        level: u32,
        path: &[u8],
        inclusive: bool,
        why: impl Fn() -> String,
    ) {
        if !self.watch.contains(path) {
            return;
        }
        for ((l, target), p) in self.pending.iter_mut() {
            let hit = if inclusive {
                is_self_or_ancestor(path, target)
            } else {
                is_strict_ancestor(path, target)
            };
            if *l > level && p.hidden.is_none() && hit {
                p.hidden = Some(why());
            }
        }
    }

    /// At the end of the first pass of the layer at `level`: the pending links this layer
    /// answers. Returns the links to add now as (link path, writer path), or a failure.
    pub(super) fn settle(&mut self, state: &State, level: u32) -> Result<Ready, LinkFailure> {
        let mut now = Vec::new();
        let keys: Vec<(u32, Box<[u8]>)> = self
            .pending
            .iter()
            .filter(|((l, _), p)| *l > level && !p.paths.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        for key in keys {
            let src = self.source(state, level, &key.1);
            if src == Source::Missing && self.pending[&key].hidden.is_none() {
                continue; // for a lower layer to answer
            }
            let Some(p) = self.pending.remove(&key) else {
                continue;
            };
            let fail = |why: String| (key.0, p.paths[0].clone(), key.1.clone(), why);
            match src {
                Source::Missing => return Err(fail(p.hidden.clone().unwrap_or_default())),
                Source::Dir => return Err(fail("the target is a directory".into())),
                Source::Path(t, _) => {
                    for path in p.paths {
                        self.waiting.remove(&path);
                        now.push((path, t.clone()));
                    }
                }
                Source::Key(k) => {
                    for path in p.paths {
                        let l = self.waiting.remove(&path).map_or(key.0, |(l, _)| l);
                        self.wait(&path, l, k.clone());
                    }
                }
            }
        }
        Ok(now)
    }

    /// Takes the groups whose content is in the layer at `level`: entry index -> paths.
    pub(super) fn take_groups(&mut self, level: u32) -> BTreeMap<u64, Vec<Box<[u8]>>> {
        let keys: Vec<(u32, u64)> = self
            .groups
            .keys()
            .filter(|(l, _)| *l == level)
            .copied()
            .collect();
        let mut out = BTreeMap::new();
        for key in keys {
            if let Some(paths) = self.groups.remove(&key).filter(|p| !p.is_empty()) {
                for p in &paths {
                    self.waiting.remove(p);
                }
                out.insert(key.1, paths);
            }
        }
        out
    }

    /// After the last layer: the first link whose target no layer has.
    pub(super) fn unresolved(&self) -> Option<LinkFailure> {
        let (key, p) = self.pending.iter().find(|(_, p)| !p.paths.is_empty())?;
        let why = p
            .hidden
            .clone()
            .unwrap_or_else(|| "no layer below has the target".into());
        Some((key.0, p.paths[0].clone(), key.1.clone(), why))
    }
}
