//! The SquashFS writers of the matrix: squashfs-tools' `mksquashfs` with its layout options,
//! squashfs-tools-ng's `tar2sqfs`, and `rsing build` (whose SquashFS sits inside a SIF).

use crate::util::rsing_bin;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Every compressor a SquashFS 4.0 reader must handle (lzma is legacy and left out, as
/// mksquashfs no longer writes it).
pub const COMPRESSORS: [&str; 5] = ["gzip", "xz", "lzo", "lz4", "zstd"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    Mksquashfs,
    MksquashfsNoFragments,
    MksquashfsAlwaysFragments,
    MksquashfsNoPad,
    Tar2sqfs,
    RsingBuild,
}

pub const WRITERS: [Writer; 6] = [
    Writer::Mksquashfs,
    Writer::MksquashfsNoFragments,
    Writer::MksquashfsAlwaysFragments,
    Writer::MksquashfsNoPad,
    Writer::Tar2sqfs,
    Writer::RsingBuild,
];

/// A packed image and where its SquashFS starts in the file.
pub struct Packed {
    pub path: PathBuf,
    pub offset: u64,
}

impl Writer {
    pub fn tool(self) -> &'static str {
        match self {
            Writer::Tar2sqfs => "tar2sqfs",
            Writer::RsingBuild => "rsing",
            _ => "mksquashfs",
        }
    }

    /// Whether this writer's `comp` images can be compared: rsing's writer has no lzo
    /// encoder, and squashfs-tools 4.5 cannot read tar2sqfs's lz4 images ("failed to read id
    /// table block"), so there is no reference for them (rsing reads them).
    pub fn writes(self, comp: &str) -> bool {
        !matches!(
            (self, comp),
            (Writer::RsingBuild, "lzo") | (Writer::Tar2sqfs, "lz4")
        )
    }

    /// Packs `root` into an image under `dir`.
    pub fn pack(self, root: &Path, dir: &Path, block_size: u32, comp: &str) -> Packed {
        let name = format!("{self:?}-{block_size}-{comp}");
        let out = dir.join(format!("{name}.img"));
        let bs = block_size.to_string();
        match self {
            Writer::Tar2sqfs => {
                let mut tar = Command::new("tar")
                    .arg("-C")
                    .arg(root)
                    .args([
                        "--numeric-owner",
                        "--sparse",
                        "--xattrs",
                        "--xattrs-include=user.*",
                    ])
                    .args(["--format=pax", "-cf", "-", "."])
                    .stdout(Stdio::piped())
                    .spawn()
                    .expect("starting tar");
                let stdin = tar.stdout.take().expect("tar stdout");
                let mut pack = Command::new("tar2sqfs");
                pack.args(["-q", "-f", "-c", comp, "-b", &bs])
                    .arg(&out)
                    .stdin(stdin);
                run(&mut pack);
                assert!(tar.wait().expect("tar").success(), "tar failed");
                Packed {
                    path: out,
                    offset: 0,
                }
            }
            Writer::RsingBuild => {
                let mut build = Command::new(rsing_bin());
                build
                    .args(["build", "-q", "--compress", comp, "--block-size", &bs])
                    .arg(&out)
                    .arg(root);
                run(&mut build);
                let offset = sif_partition_offset(&out);
                Packed { path: out, offset }
            }
            _ => {
                let mut cmd = Command::new("mksquashfs");
                cmd.arg(root).arg(&out).args([
                    "-noappend",
                    "-quiet",
                    "-no-progress",
                    "-comp",
                    comp,
                    "-b",
                    &bs,
                ]);
                cmd.args(match self {
                    Writer::MksquashfsNoFragments => &["-no-fragments"][..],
                    Writer::MksquashfsAlwaysFragments => &["-always-use-fragments"],
                    Writer::MksquashfsNoPad => &["-nopad"],
                    _ => &[],
                });
                run(&mut cmd);
                Packed {
                    path: out,
                    offset: 0,
                }
            }
        }
    }
}

/// The offset of the SquashFS partition, from `rsing sif list`'s "SIF POSITION" column.
fn sif_partition_offset(sif: &Path) -> u64 {
    let out = Command::new(rsing_bin())
        .args(["sif", "list"])
        .arg(sif)
        .output()
        .expect("sif list");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.contains("Squashfs"))
        .and_then(|l| l.split('|').nth(3))
        .and_then(|pos| pos.trim().split('-').next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no SquashFS partition in `rsing sif list {}`:\n{text}",
                sif.display()
            )
        })
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
