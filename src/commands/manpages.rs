//! `rsing man --dir DIR` (hidden; used by install.sh and the packages): writes `rsing.1` and
//! one page per visible subcommand (`rsing-exec.1`, `rsing-cache-list.1`, ...) from the same
//! clap model that prints `--help`, so the pages always describe the binary that wrote them,
//! whatever commands and options were added since.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Writes the pages; returns the files written.
pub fn write_all(mut top: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // build() propagates global options and the version into every subcommand.
    top.build();
    let mut written = Vec::new();
    write_tree(&top, "rsing", dir, &mut written)?;
    Ok(written)
}

fn write_tree(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> anyhow::Result<()> {
    // clap takes a `&'static str` name unless its "string" feature is on; this command runs
    // once and exits, so leaking a few dozen short names is simpler than the feature.
    let static_name: &'static str = Box::leak(name.to_string().into_boxed_str());
    // The VERSION section gets the plain version: the multi-line --version text (commit,
    // features) would be run together into one paragraph.
    let page = cmd
        .clone()
        .name(static_name)
        .display_name(name.to_string())
        .long_version(None::<&'static str>);
    let mut text = Vec::new();
    clap_mangen::Man::new(page)
        .section("1")
        .manual("rsing manual")
        .source(format!("rsing {}", env!("CARGO_PKG_VERSION")))
        .render(&mut text)
        .with_context(|| format!("cannot render the page of {name}"))?;
    let path = dir.join(format!("{name}.1"));
    // Written beside and renamed: an interrupted run never leaves half a page.
    let tmp = dir.join(format!(".{name}.1.tmp"));
    std::fs::write(&tmp, &text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands() {
        if sub.is_hide_set() || sub.get_name() == "help" {
            continue;
        }
        write_tree(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
