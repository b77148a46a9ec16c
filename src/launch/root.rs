//! Where the image's root comes from (the shared server's mount, rsing's own FUSE server, or a
//! sandbox directory), a view of it for planning, and planning errors explained by the image.

use std::sync::Arc;

use anyhow::Context;

use super::sharing::share_spec;
use crate::image::{OpenedImage, Root};
use crate::runtime::host::HostFacts;
use crate::runtime::{plan, share, RootSource};
use crate::siteconf::SiteConfig;
use crate::squashfs::Archive;
use crate::tree::{DirTree, Tree};

/// Where the image's root comes from, and a view of it for planning. With a shared image
/// server the view reads through the server's mount (fd received from it), whose lookups and
/// pages the kernel already has cached; otherwise rsing opens the SquashFS itself (and will
/// serve it in-process).
pub(super) fn root_and_tree(
    opened: &OpenedImage,
    site: &SiteConfig,
    host: &HostFacts,
    options: &plan::Options,
    share: bool,
) -> anyhow::Result<(RootSource, Box<dyn TreeRef>)> {
    let (file, offset) = match &opened.root {
        Root::Directory(dir) => {
            return Ok((
                RootSource::Directory(dir.clone()),
                Box::new(Arc::new(DirTree::new(dir))),
            ))
        }
        Root::Squashfs { file, offset } => (file, *offset),
    };
    if let Some(spec) = share
        .then(|| share_spec(site, host, opened, options))
        .flatten()
    {
        match share::join(&spec) {
            Ok(joined) => {
                let view = DirTree::new(format!("/proc/self/fd/{}", joined.mount_fd()));
                return Ok((RootSource::Shared(joined), Box::new(Arc::new(view))));
            }
            Err(e) => {
                tracing::info!("image server unavailable ({e}); serving the image in-process")
            }
        }
    }
    let file = file
        .try_clone()
        .context("cannot duplicate the image file handle")?;
    let archive = Arc::new(
        crate::lazy::archive(&opened.path, file, offset)
            .with_context(|| format!("image {}", opened.path.display()))?,
    );
    Ok((
        RootSource::Squashfs {
            archive: archive.clone(),
        },
        Box::new(archive),
    ))
}

/// A tree behind whatever owns it (an `Arc<Archive>` or an `Arc<DirTree>`).
pub(super) trait TreeRef {
    fn tree(&self) -> &dyn Tree;
}
impl<T: Tree + 'static> TreeRef for Arc<T> {
    fn tree(&self) -> &dyn Tree {
        self.as_ref()
    }
}

/// A planning error with the image named, and for a SquashFS image whose tables fail to read
/// the reader's own account of what is wrong: through the tree a corrupt table is only EIO
/// ("cannot resolve /etc/passwd in the image: Input/output error"). Only runs on failure.
pub(super) fn explain(opened: &OpenedImage, e: crate::runtime::Error) -> anyhow::Error {
    let path = opened.path.display();
    if let (Root::Squashfs { file, offset }, crate::runtime::Error::Image(_)) = (&opened.root, &e) {
        let diagnosis = file
            .try_clone()
            .ok()
            .and_then(|f| match Archive::open(f, *offset) {
                Err(se) => Some(se.to_string()),
                Ok(archive) => archive.root().err().map(|se| se.to_string()).or_else(|| {
                    ["/etc/passwd", "/etc/group", "/etc", "/"]
                        .iter()
                        .find_map(|p| archive.resolve(p.as_bytes()).err())
                        .map(|se| se.to_string())
                }),
            });
        if let Some(why) = diagnosis {
            // The reader's errors say "corrupt SquashFS: …" themselves.
            return anyhow::anyhow!("image {path}: {why}");
        }
    }
    match e {
        crate::runtime::Error::Image(_) => anyhow::Error::new(e).context(format!("image {path}")),
        e => anyhow::Error::new(e),
    }
}
