//! The SquashFS conformance matrix: every block size (4 KiB–1 MiB) × every compressor × every
//! writer (mksquashfs with and without fragments, `-always-use-fragments`, `-nopad`, tar2sqfs,
//! `rsing build`) over a tree with every size boundary and entry kind, plus images with a
//! 256 MiB + 1 byte file, a 5 GiB sparse file and a 3 GiB file with data only at its end.
//!
//! Each image is read twice: by squashfs-tools (`unsquashfs -lln` for owners, an extraction
//! for everything else) and through rsing's FUSE server inside a container, both listed by the
//! same probe (`probe.py`: modes, owners, sizes, link counts, mtimes, symlink targets, user
//! xattrs, sha256 of every file). The lists must be equal.
//!
//! Why this exists: the earlier tree test used one block size (128 KiB), two compressors and
//! files of at most 100 MB in an image with a large inode table, so a wrong bound on the block
//! list's length (compared with the *compressed* inode table size) never triggered; files over
//! 256 MiB and images with 4–8 KiB blocks gave EIO. Rows are spread so that every pair of
//! (block size, compressor), (writer, block size) and (writer, compressor) occurs.

mod tree;
mod writers;

use crate::fixtures::{busybox_rootfs, remove_tree};
use crate::util::{caller, have_tools, hex, scratch_root, TestEnv};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use tree::BLOCK_SIZES;
use writers::{run, Packed, Writer, COMPRESSORS, WRITERS};

const PROBE: &str = include_str!("probe.py");
/// Where the host's /usr appears in the container, so the probe runs as the host's python3.
const HOST_USR: &str = "/hostusr";

/// One image of the matrix.
struct Row {
    writer: Writer,
    block_size: u32,
    comp: &'static str,
}

/// The small tree in every compressor, packed by mksquashfs at `block_size`.
fn by_block_size(block_size: u32) {
    let rows = COMPRESSORS.map(|comp| Row {
        writer: Writer::Mksquashfs,
        block_size,
        comp,
    });
    check_rows(Tree::Small, &rows);
}

/// The small tree packed by `writer` at every block size, the compressor rotating so that
/// every writer meets every compressor.
fn by_writer(writer: Writer) {
    let w = WRITERS.iter().position(|&x| x == writer).expect("writer");
    let rows: Vec<Row> = BLOCK_SIZES
        .iter()
        .enumerate()
        .map(|(i, &block_size)| {
            let mut comp = COMPRESSORS[(i + w) % COMPRESSORS.len()];
            if !writer.writes(comp) {
                comp = COMPRESSORS[(i + w + 1) % COMPRESSORS.len()];
            }
            Row {
                writer,
                block_size,
                comp,
            }
        })
        .collect();
    check_rows(Tree::Small, &rows);
}

fn check_rows(tree: Tree, rows: &[Row]) {
    let t = TestEnv::new();
    let mut tools: Vec<&str> = vec!["unsquashfs", "python3", "tar"];
    tools.extend(
        rows.iter()
            .map(|r| r.writer.tool())
            .filter(|&t| t != "rsing"),
    );
    if !have_tools(&tools) || host_loader().is_none() {
        return;
    }
    let root = tree.root();
    for row in rows {
        let packed = row.writer.pack(&root, &t.dir, row.block_size, row.comp);
        let what = format!(
            "{:?} at {} byte blocks with {}",
            row.writer, row.block_size, row.comp
        );
        let expected = unsquashfs_listing(&t, &packed);
        let actual = container_listing(&t, &packed.path, &what);
        assert_same(&expected, &actual, &what);
        std::fs::remove_file(&packed.path).ok();
    }
}

#[test]
fn matrix_4k_blocks_every_compressor() {
    by_block_size(4096);
}
#[test]
fn matrix_8k_blocks_every_compressor() {
    by_block_size(8192);
}
#[test]
fn matrix_64k_blocks_every_compressor() {
    by_block_size(65536);
}
#[test]
fn matrix_128k_blocks_every_compressor() {
    by_block_size(131072);
}
#[test]
fn matrix_1m_blocks_every_compressor() {
    by_block_size(1 << 20);
}
#[test]
fn matrix_mksquashfs_no_fragments() {
    by_writer(Writer::MksquashfsNoFragments);
}
#[test]
fn matrix_mksquashfs_always_use_fragments() {
    by_writer(Writer::MksquashfsAlwaysFragments);
}
#[test]
fn matrix_mksquashfs_nopad() {
    by_writer(Writer::MksquashfsNoPad);
}
#[test]
fn matrix_tar2sqfs() {
    by_writer(Writer::Tar2sqfs);
}
#[test]
fn matrix_rsing_build() {
    by_writer(Writer::RsingBuild);
}

/// The large files at the smallest block size: the 5 GiB file's block list has 1.3 million
/// entries spanning hundreds of metadata blocks.
#[test]
fn matrix_large_files_4k_blocks() {
    check_rows(
        Tree::Large,
        &[Row {
            writer: Writer::Mksquashfs,
            block_size: 4096,
            comp: "zstd",
        }],
    );
}

#[test]
fn matrix_large_files_1m_blocks() {
    check_rows(
        Tree::Large,
        &[Row {
            writer: Writer::MksquashfsNoFragments,
            block_size: 1 << 20,
            comp: "gzip",
        }],
    );
}

#[test]
fn matrix_large_files_rsing_build() {
    check_rows(
        Tree::Large,
        &[Row {
            writer: Writer::RsingBuild,
            block_size: 131072,
            comp: "lz4",
        }],
    );
}

#[derive(Clone, Copy, Debug)]
enum Tree {
    Small,
    Large,
}

impl Tree {
    /// The tree's root (busybox plus /data), built once and kept in the scratch dir.
    fn root(self) -> PathBuf {
        static SMALL: OnceLock<PathBuf> = OnceLock::new();
        static LARGE: OnceLock<PathBuf> = OnceLock::new();
        let cell = match self {
            Tree::Small => &SMALL,
            Tree::Large => &LARGE,
        };
        cell.get_or_init(|| {
            let digest = hex(&Sha256::digest(include_str!("tree.rs").as_bytes()));
            let base = scratch_root().join(format!("squashfs-matrix-{}", &digest[..12]));
            let dest = base.join(format!("{self:?}"));
            if dest.exists() {
                return dest;
            }
            let work = base.join(format!(".staging-{self:?}-{}", std::process::id()));
            if work.exists() {
                remove_tree(&work);
            }
            std::fs::create_dir_all(&work).expect("staging dir");
            let root = busybox_rootfs(&work);
            let data = root.join("data");
            tree::small(&data);
            if let Tree::Large = self {
                tree::large(&data);
            }
            std::fs::rename(&root, &dest).expect("publishing the matrix tree");
            remove_tree(&work);
            dest
        })
        .clone()
    }
}

/// Listing by squashfs-tools: an extraction of /data probed on the host, with owners and
/// mode bits from `unsquashfs -lln` (an unprivileged extraction can set neither the owners nor
/// the setuid bit).
fn unsquashfs_listing(t: &TestEnv, packed: &Packed) -> Listing {
    let offset = packed.offset.to_string();
    let out = t.dir.join("extracted");
    let mut extract = Command::new("unsquashfs");
    extract
        .args(["-q", "-n", "-o", &offset, "-d"])
        .arg(&out)
        .arg(&packed.path)
        .arg("data");
    run(&mut extract);
    let mut list = Command::new("unsquashfs");
    list.args(["-lln", "-o", &offset, "-d", ""])
        .arg(&packed.path)
        .arg("data");
    let owners = parse_owners(&run(&mut list));
    let mut probe = Command::new("python3");
    probe.arg("-c").arg(PROBE).arg(out.join("data"));
    let mut listing = parse_probe(&run(&mut probe));
    let me = caller();
    for (path, entry) in listing.iter_mut() {
        let (uid, gid, mode) = owners
            .get(path)
            .unwrap_or_else(|| panic!("{path} extracted but not listed by unsquashfs -lln"));
        entry.insert("mode".into(), format!("0o{mode:o}").into());
        // Inside the container only the caller's ids are mapped; the kernel shows the rest
        // as the overflow id.
        entry.insert("uid".into(), mapped(*uid, me.uid).into());
        entry.insert("gid".into(), mapped(*gid, me.gid).into());
    }
    remove_tree(&out);
    listing
}

fn mapped(id: u32, mine: u32) -> u32 {
    if id == mine {
        id
    } else {
        65534
    }
}

/// Listing through rsing: the probe runs in a container of the image, as the host's python3
/// through the host's dynamic loader (the image has only busybox), started from the image's
/// own /bin/sh.
fn container_listing(t: &TestEnv, image: &Path, what: &str) -> Listing {
    let loader = host_loader().expect("checked by the caller");
    let in_container =
        |p: &Path| format!("{HOST_USR}/{}", p.strip_prefix("/usr").unwrap().display());
    let cmd = t
        .rsing()
        .args(["exec", "-B", &format!("/usr:{HOST_USR}")])
        .arg(image)
        .args(["/bin/sh", "-c", "exec \"$@\"", "sh"])
        .arg(in_container(&loader))
        .arg("--library-path")
        .arg(in_container(loader.parent().unwrap()))
        .arg(format!("{HOST_USR}/bin/python3"))
        .args(["-c", PROBE, "/data"])
        .env("PYTHONHOME", HOST_USR)
        .timeout(Duration::from_secs(1800));
    let out = cmd.run();
    assert!(
        out.status.success(),
        "probing {what} through rsing failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_probe(&String::from_utf8_lossy(&out.stdout))
}

/// The host's dynamic loader under /usr (merged-/usr Debian), to run host programs in images.
fn host_loader() -> Option<PathBuf> {
    static LOADER: OnceLock<Option<PathBuf>> = OnceLock::new();
    LOADER
        .get_or_init(|| {
            let found = std::fs::read_dir("/usr/lib").ok()?.flatten().find_map(|d| {
                let dir = d.path();
                std::fs::read_dir(&dir)
                    .ok()?
                    .flatten()
                    .map(|f| f.path())
                    .find(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("ld-linux") && n.contains(".so"))
                    })
            });
            if found.is_none() {
                crate::util::missing("a dynamic loader under /usr/lib/<triplet>/");
            }
            found
        })
        .clone()
}

type Entry = BTreeMap<String, serde_json::Value>;
type Listing = BTreeMap<String, Entry>;

fn parse_probe(out: &str) -> Listing {
    out.lines()
        .map(|line| {
            let mut e: Entry = serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("bad probe line {line:?}: {err}"));
            let path = e
                .remove("path")
                .and_then(|p| p.as_str().map(String::from))
                .expect("path");
            (path, e)
        })
        .collect()
}

/// `path → (uid, gid, permission bits)` from `unsquashfs -lln -d ""` lines such as
/// `-rwsr-xr-x 1000/1000  5 2026-01-01 00:00 /data/x`.
fn parse_owners(lln: &str) -> BTreeMap<String, (u32, u32, u32)> {
    lln.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (uid, gid) = fields.get(1)?.split_once('/')?;
            let path = fields.get(5)?.strip_prefix("/data")?;
            let rel = match path.strip_prefix('/') {
                Some(rest) => rest.to_string(),
                None => ".".to_string(),
            };
            let mode = permission_bits(fields[0])?;
            Some((rel, (uid.parse().ok()?, gid.parse().ok()?, mode)))
        })
        .collect()
}

/// `drwxr-sr-t` → 0o3755: the permission bits of an `ls -l` mode string.
fn permission_bits(text: &str) -> Option<u32> {
    let c: Vec<char> = text.chars().collect();
    if c.len() != 10 {
        return None;
    }
    let mut mode = 0;
    for (i, special) in [(1usize, 0o4000), (4, 0o2000), (7, 0o1000)] {
        let bit = 0o400 >> (i - 1);
        if c[i] == 'r' {
            mode |= bit;
        }
        if c[i + 1] == 'w' {
            mode |= bit >> 1;
        }
        match c[i + 2] {
            'x' => mode |= bit >> 2,
            's' | 't' => mode |= (bit >> 2) | special,
            'S' | 'T' => mode |= special,
            _ => {}
        }
    }
    Some(mode)
}

fn assert_same(expected: &Listing, actual: &Listing, what: &str) {
    assert!(
        expected.len() > 10_000,
        "{what}: only {} entries extracted",
        expected.len()
    );
    let mut problems = Vec::new();
    for (path, want) in expected {
        match actual.get(path) {
            None => problems.push(format!("{path}: missing through rsing")),
            Some(got) if got != want => problems.push(format!(
                "{path}: unsquashfs {} / rsing {}",
                serde_json::to_string(want).unwrap(),
                serde_json::to_string(got).unwrap()
            )),
            Some(_) => {}
        }
    }
    for path in actual.keys().filter(|p| !expected.contains_key(*p)) {
        problems.push(format!("{path}: only through rsing"));
    }
    assert!(
        problems.is_empty(),
        "{what}: {} differences, the first ones:\n{}",
        problems.len(),
        problems
            .iter()
            .take(20)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A data block that does not decompress: the read fails with EIO (not a hang), and rsing
/// prints one warning that names the image and the file's path in the image.
#[test]
fn a_corrupt_data_block_gives_eio_and_one_warning_naming_image_and_path() {
    let t = TestEnv::new();
    if !have_tools(&["mksquashfs"]) || host_loader().is_none() {
        return;
    }
    let root = t.dir.join("root");
    std::fs::create_dir_all(root.join("data")).expect("mkdir");
    let body: Vec<u8> = b"compressible "
        .iter()
        .cycle()
        .take(300_000)
        .copied()
        .collect();
    std::fs::write(root.join("data/victim"), &body).expect("write");
    let image = t.dir.join("corrupt.sqfs");
    run(Command::new("mksquashfs").arg(&root).arg(&image).args([
        "-noappend",
        "-quiet",
        "-no-progress",
        "-comp",
        "gzip",
    ]));
    // The only file's first data block follows the 96-byte superblock.
    let mut bytes = std::fs::read(&image).expect("read");
    for b in &mut bytes[96 + 8..96 + 40] {
        *b ^= 0x5a;
    }
    std::fs::write(&image, &bytes).expect("write");
    let loader = host_loader().expect("checked");
    let in_container =
        |p: &Path| format!("{HOST_USR}/{}", p.strip_prefix("/usr").unwrap().display());
    let out = t
        .rsing()
        .args(["exec", "-B", &format!("/usr:{HOST_USR}")])
        .arg(&image)
        .arg(in_container(&loader))
        .arg("--library-path")
        .arg(in_container(loader.parent().unwrap()))
        .arg(format!("{HOST_USR}/bin/cat"))
        .arg("/data/victim")
        .timeout(Duration::from_secs(60))
        .run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "reading a corrupt block succeeded: {stderr}"
    );
    assert!(stderr.contains("Input/output error"), "{stderr}");
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("rsing: warning:"))
        .collect();
    assert_eq!(warnings.len(), 1, "expected one warning line:\n{stderr}");
    assert!(
        warnings[0].contains(&image.display().to_string())
            && warnings[0].contains("cannot read /data/victim"),
        "the warning must name the image and the path: {stderr}"
    );
    assert!(!stderr.contains("WARN"), "tracing-style line: {stderr}");
}
