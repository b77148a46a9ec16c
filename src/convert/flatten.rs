//! Flattens an OCI image's layers (tar streams) into one SquashFS tree, **newest layer first**,
//! streaming every file's content from its tar member straight into the SquashFS writer: no
//! member overwritten or deleted by a later layer is ever written, and nothing is unpacked to
//! disk. Only paths and metadata are kept in memory.
//!
//! The result is what applying the layers bottom first would give (OCI image spec, "Applying
//! Changesets"), with these rules:
//!
//! * Paths lose leading `/` and `./`; an empty path or `.` is the root; a `..` component is an
//!   error (never resolved). Symlink targets are stored verbatim.
//! * An entry of layer L at P lands unless an upper layer added P, whited out P or an ancestor
//!   (`DIR/.wh.NAME`), made an ancestor opaque (`DIR/.wh..wh..opq`), or added an ancestor as a
//!   non-directory. Whiteouts never land and never hide their own layer's entries. Within one
//!   layer a later member for a path replaces the earlier one, as tar extraction does.
//! * A directory takes its metadata from the topmost layer with an entry for it; one created
//!   only for an upper layer's children takes the first lower explicit entry's.
//! * A non-directory shadowed by an upper directory still hides what the layers below it have
//!   at that path (bottom first, it replaced them).
//! * Hard links link to the content the link saw in its own layer, read again from that layer
//!   or a lower one when the path no longer holds it (see the `links` submodule).
//! * Sockets cannot be in a tar; unknown member types and unknown `.wh.` names are skipped with
//!   a warning; PAX global headers are ignored.
//!
//! Memory: one small node per path name (the writer keeps one too), plus the current layer's
//! shadowed paths and the paths of hard links still waiting for content. Each first pass reads
//! its stream to the very end (past the end-of-archive blocks), so that a reader checking a
//! digest at end of stream sees every byte.

mod entry;
mod links;
mod paths;
mod state;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_links;
#[cfg(test)]
mod testutil;

use crate::squashfs::write::{Error as WriteError, SquashfsWriter};
use entry::{Parsed, What};
use links::{Key, LinkFailure, Links, Source};
use paths::{show, Name};
use state::{Kind, State, Verdict, NO_SRC};
use std::collections::BTreeMap;
use std::io::{self, BufReader, Read, Seek, Write};

/// One layer as the flattener sees it: a name for messages and its decompressed tar stream,
/// which may be opened more than once (rare second passes for hard links whose target was
/// shadowed by an upper layer) and must then give the same bytes. A second pass starts after
/// the first one has ended and stops once it has what it needs.
pub trait Layer: Sync {
    fn name(&self) -> String;
    fn open_tar(&self) -> io::Result<Box<dyn Read + Send>>;
}

/// What [`flatten`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlattenStats {
    /// Entries added to the image (directories, files, links, ...).
    pub entries: u64,
    /// Entries left out because an upper layer replaced or deleted them.
    pub skipped_shadowed: u64,
    /// Whiteout and opaque markers read.
    pub whiteouts: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{layer}: cannot open its tar stream: {source}")]
    Open {
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error("{layer}: bad tar stream ({at}): {source}")]
    Tar {
        layer: String,
        /// "at its start" or "after /PATH".
        at: String,
        #[source]
        source: io::Error,
    },
    #[error("{layer}: {path}: {why}")]
    Entry {
        layer: String,
        path: String,
        why: String,
    },
    #[error("{layer}: {path}: {source}")]
    Write {
        layer: String,
        path: String,
        #[source]
        source: WriteError,
    },
    #[error("{layer}: hard link {path} -> {target}: {why}")]
    Link {
        layer: String,
        path: String,
        target: String,
        why: String,
    },
    #[error("{layer}: the tar stream differs when read a second time ({why})")]
    Changed { layer: String, why: String },
    #[error("too many layers ({0})")]
    TooManyLayers(usize),
}

/// Read-ahead for the tar streams (headers are read 512 bytes at a time).
const BUFFER: usize = 256 * 1024;

/// Merges `layers` (bottom first, manifest order) into `writer`, processing the top layer first.
pub fn flatten<W: Write + Seek>(
    layers: &[&dyn Layer],
    writer: &mut SquashfsWriter<W>,
) -> Result<FlattenStats, Error> {
    if layers.len() >= u32::MAX as usize {
        return Err(Error::TooManyLayers(layers.len()));
    }
    let mut run = Run {
        writer,
        state: State::new(),
        links: Links::default(),
        stats: FlattenStats::default(),
    };
    let link_error = |(level, path, target, why): LinkFailure| Error::Link {
        layer: layers[level as usize - 1].name(),
        path: show(&path),
        target: show(&target),
        why,
    };
    for (i, layer) in layers.iter().enumerate().rev() {
        let level = i as u32 + 1;
        let name = layer.name();
        run.first_pass(*layer, &name, level)?;
        // Links of upper layers whose target this layer has.
        for (path, target) in run.links.settle(&run.state, level).map_err(link_error)? {
            run.writer
                .add_hardlink(&path, &target)
                .map_err(|source| write_error(&name, &path, source))?;
            run.stats.entries += 1;
        }
        let groups = run.links.take_groups(level);
        if !groups.is_empty() {
            run.second_pass(*layer, &name, groups)?;
        }
    }
    if let Some(failure) = run.links.unresolved() {
        return Err(link_error(failure));
    }
    tracing::debug!(stats = ?run.stats, "layers flattened");
    Ok(run.stats)
}

fn write_error(layer: &str, path: &[u8], source: WriteError) -> Error {
    Error::Write {
        layer: layer.into(),
        path: show(path),
        source,
    }
}

fn tar_error(layer: &str, at: String, source: io::Error) -> Error {
    Error::Tar {
        layer: layer.into(),
        at,
        source,
    }
}

/// Where in a first pass: after the last member read.
fn after(last: Option<&[u8]>) -> String {
    last.map_or_else(|| "at its start".into(), |p| format!("after {}", show(p)))
}

fn open(
    layer: &dyn Layer,
    name: &str,
) -> Result<tar::Archive<BufReader<Box<dyn Read + Send>>>, Error> {
    let reader = layer.open_tar().map_err(|source| Error::Open {
        layer: name.into(),
        source,
    })?;
    Ok(tar::Archive::new(BufReader::with_capacity(BUFFER, reader)))
}

struct Run<'w, W: Write + Seek> {
    writer: &'w mut SquashfsWriter<W>,
    state: State,
    links: Links,
    stats: FlattenStats,
}

/// The layer being read: its name and level (index + 1).
#[derive(Clone, Copy)]
struct Ctx<'a> {
    name: &'a str,
    level: u32,
}

/// A member of the first pass: its index in the stream, normalised path and header.
#[derive(Clone, Copy)]
struct Member<'a> {
    index: u64,
    path: &'a [u8],
    p: &'a Parsed,
}

impl<W: Write + Seek> Run<'_, W> {
    fn first_pass(&mut self, layer: &dyn Layer, name: &str, level: u32) -> Result<(), Error> {
        let ctx = Ctx { name, level };
        self.links.begin_layer(level);
        let mut ar = open(layer, name)?;
        let mut last: Option<Vec<u8>> = None;
        let entries = ar.entries().map_err(|e| tar_error(name, after(None), e))?;
        for (index, e) in entries.enumerate() {
            let mut e = e.map_err(|e| tar_error(name, after(last.as_deref()), e))?;
            let p = entry::parse(&mut e).map_err(|why| Error::Entry {
                layer: name.into(),
                path: String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                why,
            })?;
            let path = paths::normalize(&p.path).map_err(|why| Error::Entry {
                layer: name.into(),
                path: String::from_utf8_lossy(&p.path).into_owned(),
                why: why.into(),
            })?;
            let m = Member {
                index: index as u64,
                path: &path,
                p: &p,
            };
            self.entry(ctx, m, &mut e)?;
            last = Some(path);
        }
        // Read to the end, so that a reader checking a digest at end of stream sees all of it.
        io::copy(&mut ar.into_inner(), &mut io::sink())
            .map_err(|e| tar_error(name, after(last.as_deref()), e))?;
        tracing::debug!(layer = name, stats = ?self.stats, "layer read");
        Ok(())
    }

    /// One member of the first pass, `path` normalised.
    fn entry(&mut self, ctx: Ctx, m: Member, data: &mut dyn Read) -> Result<(), Error> {
        let (layer, level, path, p) = (ctx.name, ctx.level, m.path, m.p);
        if p.what == What::Ignore {
            return Ok(());
        }
        match paths::classify(path) {
            Name::Plain => {}
            Name::Opaque(dir) => {
                self.stats.whiteouts += 1;
                self.state.opaque(dir, level);
                self.links.hides(level, dir, false, || {
                    format!("{layer} makes {} opaque", show(dir))
                });
                return Ok(());
            }
            Name::Whiteout(hidden) => {
                self.stats.whiteouts += 1;
                self.state.whiteout(&hidden, level);
                self.links
                    .hides(level, &hidden, true, || format!("{layer} whites it out"));
                return Ok(());
            }
            Name::Unknown => {
                tracing::warn!(layer, path = %show(path), "unknown whiteout name, ignored");
                return Ok(());
            }
        }
        let is_dir = match &p.what {
            What::Skip(why) => {
                tracing::warn!(layer, path = %show(path), "{why}: skipped");
                return Ok(());
            }
            What::Dir => true,
            _ if path.is_empty() => {
                tracing::warn!(layer, "a non-directory entry for the root: skipped");
                return Ok(());
            }
            _ => false,
        };
        if !is_dir {
            self.links.hides(level, path, false, || {
                format!("{layer} has {} as a non-directory", show(path))
            });
        }
        match self.state.verdict(path, level, is_dir) {
            Verdict::UnderNonDir => {
                tracing::warn!(layer, path = %show(path),
                    "an earlier entry of the layer made a parent a non-directory: skipped");
                self.stats.skipped_shadowed += 1;
                Ok(())
            }
            Verdict::Shadowed => {
                self.stats.skipped_shadowed += 1;
                self.shadowed(ctx, m)
            }
            Verdict::Land | Verdict::Meta => {
                // A non-directory replacing a directory of this same layer drops its subtree.
                let subtree = !is_dir
                    && self
                        .state
                        .placed(path)
                        .is_some_and(|q| q.level == level && q.kind != Kind::Other);
                self.links.landed(path, level, subtree);
                self.land(ctx, m, data)
            }
        }
    }

    /// Remembers a shadowed entry for links of the same layer to it.
    fn shadowed(&mut self, ctx: Ctx, m: Member) -> Result<(), Error> {
        let path = m.path;
        match &m.p.what {
            What::Dir => {
                self.links.shadowed_dir(path);
                return Ok(());
            }
            What::Link(raw) => {
                let target = self.link_target(ctx, path, raw)?;
                let src = self.links.source(&self.state, ctx.level, &target);
                self.links.shadowed_link(path, ctx.level, &target, src);
            }
            _ => self.links.shadowed_content(path, ctx.level, m.index),
        }
        self.state.shadowed_non_dir(path, ctx.level);
        Ok(())
    }

    fn land(&mut self, ctx: Ctx, m: Member, data: &mut dyn Read) -> Result<(), Error> {
        let (level, path, p) = (ctx.level, m.path, m.p);
        let err = |source| write_error(ctx.name, path, source);
        match &p.what {
            What::Dir => {
                self.writer.add_dir(path, p.meta.clone()).map_err(err)?;
                self.state.place(path, level, Kind::Dir, NO_SRC);
            }
            What::Link(raw) => {
                let target = self.link_target(ctx, path, raw)?;
                let key = match self.links.source(&self.state, level, &target) {
                    Source::Path(t, src) => {
                        self.writer.add_hardlink(path, &t).map_err(err)?;
                        self.state.place(path, level, Kind::Other, src);
                        self.stats.entries += 1;
                        return Ok(());
                    }
                    Source::Dir => {
                        return Err(Error::Link {
                            layer: ctx.name.into(),
                            path: show(path),
                            target: show(&target),
                            why: "the target is a directory".into(),
                        })
                    }
                    Source::Key(key) => key,
                    Source::Missing => Key::Below(level, target.into()),
                };
                // Counted when its content is written. An earlier same-layer entry at this
                // path is replaced now, so the image never shows it.
                self.writer.remove(path).map_err(err)?;
                self.links.wait(path, level, key);
                self.state.place(path, level, Kind::Other, NO_SRC);
                return Ok(());
            }
            _ => {
                self.stats.bytes +=
                    entry::write_content(self.writer, path, p, data).map_err(err)?;
                self.state.place(path, level, Kind::Other, m.index);
            }
        }
        self.stats.entries += 1;
        Ok(())
    }

    fn link_target(&self, ctx: Ctx, path: &[u8], raw: &[u8]) -> Result<Vec<u8>, Error> {
        paths::normalize(raw).map_err(|why| Error::Link {
            layer: ctx.name.into(),
            path: show(path),
            target: String::from_utf8_lossy(raw).into_owned(),
            why: format!("the target {why}"),
        })
    }

    /// Reads `layer` again for the content entries that hard links need (index -> paths).
    fn second_pass(
        &mut self,
        layer: &dyn Layer,
        name: &str,
        mut groups: BTreeMap<u64, Vec<Box<[u8]>>>,
    ) -> Result<(), Error> {
        tracing::debug!(
            layer = name,
            entries = groups.len(),
            "second pass for hard links"
        );
        let changed = |why: String| Error::Changed {
            layer: name.into(),
            why,
        };
        let mut ar = open(layer, name)?;
        let second = |index: usize| format!("second read, member {index}");
        let entries = ar.entries().map_err(|e| tar_error(name, second(0), e))?;
        for (index, e) in entries.enumerate() {
            if groups.is_empty() {
                break;
            }
            let mut e = e.map_err(|e| tar_error(name, second(index), e))?;
            let Some(paths) = groups.remove(&(index as u64)) else {
                continue;
            };
            let p = entry::parse(&mut e).map_err(|why| changed(format!("entry {index}: {why}")))?;
            if !matches!(p.what, What::File | What::Symlink(_) | What::Device(..)) {
                return Err(changed(format!("entry {index} is no longer a file")));
            }
            let first = &paths[0];
            self.stats.bytes += entry::write_content(self.writer, first, &p, &mut e)
                .map_err(|source| write_error(name, first, source))?;
            for other in &paths[1..] {
                self.writer
                    .add_hardlink(other, first)
                    .map_err(|source| write_error(name, other, source))?;
            }
            self.stats.entries += paths.len() as u64;
        }
        match groups.keys().next() {
            Some(index) => Err(changed(format!("entry {index} is missing"))),
            None => Ok(()),
        }
    }
}
