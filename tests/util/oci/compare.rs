//! The independent side of the tree comparisons of the build tests: `umoci unpack`,
//! `unsquashfs` on a SIF's system partition (its offset from `siftool list`), and a listing of
//! a host directory tree that both sides are reduced to.

use super::Layout;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs a tool that must succeed; returns its stdout.
pub fn tool(program: &str, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Panics unless `dir` has no entries at all (no target, no hidden temporary file).
pub fn assert_dir_empty(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .expect("reading the output dir")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "files left in {}: {left:?}", dir.display());
}

/// The SIF's objects other than partitions, by name (JSON) or type (deffile), read with
/// `siftool info` and `siftool dump`.
pub fn sif_objects(sif: &Path) -> BTreeMap<String, Vec<u8>> {
    let list = tool("siftool", &["list".as_ref(), sif.as_os_str()]);
    let mut objects = BTreeMap::new();
    for line in list
        .lines()
        .filter(|l| l.contains("Def.FILE") || l.contains("JSON"))
    {
        let id = line.split('|').next().unwrap().trim();
        let info = tool("siftool", &["info".as_ref(), id.as_ref(), sif.as_os_str()]);
        let name = info
            .lines()
            .find_map(|l| l.trim().strip_prefix("Name:"))
            .map(str::trim)
            .unwrap_or_default();
        let key = if line.contains("Def.FILE") {
            "Def.FILE"
        } else {
            name
        };
        let out = std::process::Command::new("siftool")
            .args(["dump", id])
            .arg(sif)
            .output()
            .expect("siftool dump");
        objects.insert(key.to_string(), out.stdout);
    }
    objects
}

/// `umoci unpack --rootless` of `layout:tag` into `bundle`; returns the rootfs path.
pub fn umoci_unpack(layout: &Layout, tag: &str, bundle: &Path) -> PathBuf {
    let image = format!("{}:{tag}", layout.dir.display());
    tool(
        "umoci",
        &[
            "unpack".as_ref(),
            "--rootless".as_ref(),
            "--image".as_ref(),
            image.as_ref(),
            bundle.as_ref(),
        ],
    );
    bundle.join("rootfs")
}

/// The byte offset of the SquashFS system partition in `sif`, from `siftool list`.
pub fn squashfs_offset(sif: &Path) -> u64 {
    let list = tool("siftool", &["list".as_ref(), sif.as_os_str()]);
    let line = list
        .lines()
        .find(|l| l.contains("FS (Squashfs"))
        .unwrap_or_else(|| panic!("no SquashFS partition in {}:\n{list}", sif.display()));
    let position = line.split('|').nth(3).expect("a position column").trim();
    let start = position.split('-').next().unwrap();
    start
        .parse()
        .unwrap_or_else(|_| panic!("bad position in `{line}`"))
}

/// `unsquashfs ARGS... -o OFFSET SIF` on the SIF's system partition.
pub fn unsquashfs_sif(sif: &Path, args: &[&str], paths: &[&str]) -> String {
    let offset = squashfs_offset(sif).to_string();
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    all.extend(["-o".as_ref(), offset.as_ref(), sif.as_os_str()]);
    all.extend(paths.iter().map(std::ffi::OsStr::new));
    tool("unsquashfs", &all)
}

/// Extracts the SIF's system partition into `dest` (which must not exist).
fn extract_sif(sif: &Path, dest: &Path) -> PathBuf {
    let dest_s = dest.to_string_lossy();
    unsquashfs_sif(sif, &["-q", "-n", "-d", &dest_s], &[]);
    dest.to_path_buf()
}

/// The listing of the SIF's system partition, extracted into `dest`. Modes come from
/// `unsquashfs -lln`: an unprivileged extraction drops the setuid and setgid bits.
pub fn sif_listing(sif: &Path, dest: &Path) -> Listing {
    let mut listed = listing(&extract_sif(sif, dest));
    let lln = unsquashfs_sif(sif, &["-lln", "-d", ""], &[]);
    for line in lln.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 || fields[0].starts_with('l') {
            continue;
        }
        let stamp = format!("{} {} ", fields[3], fields[4]);
        let Some(at) = line.find(&stamp) else {
            continue;
        };
        let path = &line[at + stamp.len()..];
        if let Some(entry) = listed.get_mut(path) {
            let mode = format!("{:o}", symbolic_mode(fields[0]));
            let rest = entry.split_once('|').map_or("", |(_, r)| r).to_string();
            *entry = format!("{}{mode}|{rest}", &entry[..1]);
        }
    }
    listed
}

/// `-rwsr-x--T` → 0o5750.
fn symbolic_mode(s: &str) -> u32 {
    let c: Vec<char> = s.chars().collect();
    assert!(c.len() >= 10, "not an ls mode: {s}");
    let mut mode = 0;
    for (i, special) in [(1, 0o4000), (4, 0o2000), (7, 0o1000)] {
        let shift = 6 - (i - 1) as u32;
        mode |= u32::from(c[i] == 'r') << (shift + 2);
        mode |= u32::from(c[i + 1] == 'w') << (shift + 1);
        mode |= u32::from(matches!(c[i + 2], 'x' | 's' | 't')) << shift;
        if matches!(c[i + 2], 's' | 'S' | 't' | 'T') {
            mode |= special;
        }
    }
    mode
}

/// Path (`/x/y`) → `kind+mode|size|mtime|target|sha256|link group` for every entry under
/// `root` (not `root` itself). A link group is the first path (in sorted order) of the same
/// inode, so hard links show as equal groups on both sides.
pub type Listing = BTreeMap<String, String>;

pub fn listing(root: &Path) -> Listing {
    let mut paths = Vec::new();
    collect(root, root, &mut paths);
    paths.sort();
    let mut first_of_inode: HashMap<u64, String> = HashMap::new();
    let mut out = Listing::new();
    for (rel, path) in paths {
        let meta = std::fs::symlink_metadata(&path).expect("stat");
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            'd'
        } else if ft.is_symlink() {
            'l'
        } else if ft.is_file() {
            '-'
        } else {
            '?'
        };
        let target = match ft.is_symlink() {
            true => std::fs::read_link(&path)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
            false => "-".into(),
        };
        let (size, hash, group) = if ft.is_file() {
            let group = first_of_inode
                .entry(meta.ino())
                .or_insert_with(|| rel.clone());
            (
                meta.len().to_string(),
                crate::util::sha256_file(&path),
                group.clone(),
            )
        } else {
            ("-".into(), "-".into(), "-".into())
        };
        // A symlink's own mode and mtime are not meaningful after extraction.
        let (mode, mtime) = match ft.is_symlink() {
            true => ("-".to_string(), "-".to_string()),
            false => (
                format!("{:o}", meta.mode() & 0o7777),
                meta.mtime().to_string(),
            ),
        };
        let line = format!(
            "{kind}{mode}|size={size}|mtime={mtime}|target={target}|sha256={hash}|link={group}"
        );
        out.insert(rel, line);
    }
    out
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let rel = format!("/{}", path.strip_prefix(root).unwrap().to_string_lossy());
        let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
        out.push((rel, path.clone()));
        if is_dir {
            collect(root, &path, out);
        }
    }
}

/// Panics with the differing entries (at most 30 shown) unless the listings are equal.
pub fn assert_same_listing(
    expected_from: &str,
    expected: &Listing,
    actual_from: &str,
    actual: &Listing,
) {
    let mut diffs = Vec::new();
    for (path, want) in expected {
        match actual.get(path) {
            Some(got) if got == want => {}
            Some(got) => diffs.push(format!(
                "  {path}\n    {expected_from}: {want}\n    {actual_from}: {got}"
            )),
            None => diffs.push(format!("  missing in {actual_from}: {path} ({want})")),
        }
    }
    let extra = actual.keys().filter(|p| !expected.contains_key(*p));
    diffs.extend(extra.map(|p| format!("  only in {actual_from}: {p} ({})", actual[p])));
    if !diffs.is_empty() {
        let shown: Vec<String> = diffs.iter().take(30).cloned().collect();
        panic!(
            "trees differ in {} entries ({expected_from} has {}):\n{}",
            diffs.len(),
            expected.len(),
            shown.join("\n")
        );
    }
}
