//! `rsing sif list|dump`: the objects of a SIF file, as Apptainer's `sif` (siftool) shows them.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};

use crate::sif::{Link, SifFile};

#[derive(Debug, clap::Subcommand)]
pub enum SifCommand {
    /// List the objects of a SIF file
    List {
        /// SIF file
        image: PathBuf,
    },
    /// Write one object's data to standard output
    Dump {
        /// Object ID (see `rsing sif list`)
        id: u32,
        /// SIF file
        image: PathBuf,
    },
}

pub fn run(cmd: SifCommand) -> anyhow::Result<i32> {
    match cmd {
        SifCommand::List { image } => {
            let (_, sif) = open(&image)?;
            print!("{}", listing(&sif));
        }
        SifCommand::Dump { id, image } => {
            let (file, sif) = open(&image)?;
            let Some(d) = sif.get(id) else {
                bail!("{}: no object with ID {id}", image.display());
            };
            let data = sif
                .read_object(&file, d)
                .with_context(|| format!("{}: object {id}", image.display()))?;
            std::io::stdout()
                .write_all(&data)
                .context("writing to standard output")?;
        }
    }
    Ok(0)
}

fn open(image: &std::path::Path) -> anyhow::Result<(std::fs::File, SifFile)> {
    SifFile::open_path(image).with_context(|| format!("image {}", image.display()))
}

/// The table `siftool list` prints: ID, group, link, byte range and type of each object.
pub fn listing(sif: &SifFile) -> String {
    let rule = "-".repeat(78);
    let mut out = format!(
        "{rule}\n{:<5}|{:<8}|{:<8}|{:<26}|TYPE\n{rule}\n",
        "ID", "GROUP", "LINK", "SIF POSITION (start-end)"
    );
    for d in &sif.descriptors {
        let group = d.group().map_or("NONE".to_string(), |g| g.to_string());
        let link = match d.link() {
            Link::None => "NONE".to_string(),
            Link::Object(id) => id.to_string(),
            Link::Group(g) => format!("{g} (G)"),
        };
        let position = format!("{}-{}", d.offset, d.offset + d.size);
        out.push_str(&format!(
            "{:<5}|{:<8}|{:<8}|{:<26}|{}\n",
            d.id,
            group,
            link,
            position,
            d.type_label()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same table as siftool 2.8 prints for the SIF project's own fixture.
    #[test]
    fn lists_like_siftool() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sif/one-group.sif"
        );
        let (_, sif) = SifFile::open_path(std::path::Path::new(path)).unwrap();
        let text = listing(&sif);
        assert!(
            text.contains("1    |1       |NONE    |32768-32772               |FS (Raw/System/386)"),
            "{text}"
        );
        assert!(
            text.contains(
                "2    |1       |NONE    |36864-40960               |FS (Squashfs/*System/386)"
            ),
            "{text}"
        );
    }
}
