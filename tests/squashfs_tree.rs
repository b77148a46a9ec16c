//! The tree rsing serves equals what squashfs-tools read from the same image: names, types,
//! mode bits, sizes, link counts, mtimes and symlink targets as `unsquashfs -lln` and an
//! `unsquashfs -d` extraction report them, and the sha256 of every regular file.

use crate::fixtures::{remove_tree, Comp, Fixture};
use crate::util::{have_tools, sha256_file, TestEnv};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One entry: `path|mode|size|nlink|mtime|target|sha256`; directory size and link count are
/// left out (file systems legitimately differ there), as is a symlink's mtime.
type Listing = BTreeMap<String, String>;

/// Prints `path|mode|size|nlink|mtime` per entry, `L path|target` per symlink and
/// `H sha256  path` per regular file, using busybox inside the container.
const PROBE: &str = "find /data -exec stat -c '%n|%A|%s|%h|%Y' {} + && \
    find /data -type l | while read -r l; do echo \"L $l|$(readlink \"$l\")\"; done && \
    find /data -type f -exec sha256sum {} + | sed 's/^/H /'";

fn assert_tree_matches(comp: Comp) {
    let t = TestEnv::new();
    let img = image!(Fixture::Big(comp));
    if !have_tools(&["unsquashfs"]) {
        return;
    }
    let expected = expected_listing(&t, &img);
    let cmd = t
        .exec(&img, ["sh", "-c", PROBE])
        .timeout(Duration::from_secs(600));
    let actual = parse_probe(&cmd.stdout_str());
    assert!(
        expected.len() > 10_000,
        "the big image has only {} entries",
        expected.len()
    );
    assert_same(&expected, &actual);
}

#[test]
fn zstd_tree_matches_unsquashfs() {
    assert_tree_matches(Comp::Zstd);
}

#[test]
fn gzip_tree_matches_unsquashfs() {
    assert_tree_matches(Comp::Gzip);
}

fn parse_probe(out: &str) -> Listing {
    let mut fields: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut targets = BTreeMap::new();
    let mut hashes = BTreeMap::new();
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("L ") {
            let (path, target) = rest.split_once('|').expect("L line");
            targets.insert(path.to_string(), target.to_string());
        } else if let Some(rest) = line.strip_prefix("H ") {
            let (hash, path) = rest.split_once("  ").expect("H line");
            hashes.insert(path.to_string(), hash.to_string());
        } else {
            let parts: Vec<&str> = line.rsplitn(5, '|').collect();
            assert_eq!(parts.len(), 5, "unexpected probe line: {line}");
            let path = parts[4].to_string();
            fields.insert(
                path,
                parts[..4].iter().rev().map(|s| s.to_string()).collect(),
            );
        }
    }
    fields
        .into_iter()
        .map(|(path, f)| {
            let (mode, size, nlink, mtime) = (&f[0], &f[1], &f[2], &f[3]);
            let line = entry(
                mode,
                size,
                nlink,
                mtime,
                targets.get(&path),
                hashes.get(&path),
            );
            (path, line)
        })
        .collect()
}

/// Reads the image with squashfs-tools: `-lln` for names, modes, sizes and link targets; an
/// extraction of /data for link counts, mtimes and contents.
fn expected_listing(t: &TestEnv, img: &Path) -> Listing {
    let data = OsStr::new("data");
    let listing = unsquashfs([
        OsStr::new("-lln"),
        OsStr::new("-d"),
        OsStr::new(""),
        img.as_os_str(),
        data,
    ]);
    let extracted = t.dir.join("extracted");
    unsquashfs([
        OsStr::new("-d"),
        extracted.as_os_str(),
        img.as_os_str(),
        data,
    ]);
    let result = listing
        .lines()
        .filter_map(parse_lln)
        .map(|(mode, size, path, target)| {
            let meta = std::fs::symlink_metadata(extracted.join(path.trim_start_matches('/')))
                .unwrap_or_else(|e| panic!("{path} listed but not extracted: {e}"));
            let hash = meta
                .is_file()
                .then(|| sha256_file(&extracted.join(&path[1..])));
            let line = entry(
                &mode,
                &size,
                &meta.nlink().to_string(),
                &meta.mtime().to_string(),
                target.as_ref(),
                hash.as_ref(),
            );
            (path, line)
        })
        .collect();
    remove_tree(&extracted);
    result
}

/// Parses `-rw-r--r-- 0/0 12 2024-01-01 10:00 /data/f` (or `... /data/l -> target`);
/// `None` for lines outside /data.
fn parse_lln(line: &str) -> Option<(String, String, String, Option<String>)> {
    let fields: Vec<&str> = line.split_whitespace().take(5).collect();
    if fields.len() < 5 {
        return None;
    }
    // The name follows the date and time; names may contain spaces.
    let stamp = format!("{} {} ", fields[3], fields[4]);
    let name = &line[line.find(&stamp)? + stamp.len()..];
    let (path, target) = match fields[0].starts_with('l') {
        true => name
            .split_once(" -> ")
            .map(|(p, t)| (p, Some(t.to_string())))?,
        false => (name, None),
    };
    path.starts_with("/data").then(|| {
        (
            fields[0].to_string(),
            fields[2].to_string(),
            path.to_string(),
            target,
        )
    })
}

fn entry(
    mode: &str,
    size: &str,
    nlink: &str,
    mtime: &str,
    target: Option<&String>,
    hash: Option<&String>,
) -> String {
    let dir = mode.starts_with('d');
    let link = mode.starts_with('l');
    format!(
        "{mode}|size={}|nlink={}|mtime={}|target={}|sha256={}",
        if dir { "-" } else { size },
        if dir { "-" } else { nlink },
        if link { "-" } else { mtime },
        target.map_or("-", |s| s.as_str()),
        hash.map_or("-", |s| s.as_str()),
    )
}

fn assert_same(expected: &Listing, actual: &Listing) {
    let mut diffs = Vec::new();
    for (path, want) in expected {
        match actual.get(path) {
            Some(got) if got == want => {}
            Some(got) => diffs.push(format!(
                "  {path}\n    unsquashfs: {want}\n    rsing:      {got}"
            )),
            None => diffs.push(format!("  missing in rsing: {path} ({want})")),
        }
    }
    let extra = actual.keys().filter(|p| !expected.contains_key(*p));
    diffs.extend(extra.map(|p| format!("  only in rsing: {p} ({})", actual[p])));
    if !diffs.is_empty() {
        let shown = diffs
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "tree differs in {} of {} entries:\n{shown}",
            diffs.len(),
            expected.len()
        );
    }
}

fn unsquashfs<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> String {
    let mut cmd = Command::new("unsquashfs");
    let out = cmd.args(args).output().expect("running unsquashfs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
