//! `rsing build --userns-mode`: `subid` gives %post real ids through newuidmap/newgidmap
//! (a `chown` really changes the owner, `su` really switches, apt drops to `_apt` for real) and
//! the SquashFS records the ownership the step left; without newuidmap `subid` fails with one
//! line naming it and `auto` falls back to the seccomp fakes. `run-tests` grants the test
//! user a range in /etc/subuid and /etc/subgid.

use crate::recipe::{assert_no_staging, build, unsquashfs_lln, DEBIAN};
use crate::util::{have_tools, missing, TestEnv};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Whether /etc/subuid and /etc/subgid grant the calling user a range.
pub(crate) fn has_ranges() -> bool {
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    ["/etc/subuid", "/etc/subgid"].iter().all(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| {
                let who = l.split(':').next().unwrap_or("");
                !who.is_empty() && (who == name || who == uid.to_string())
            })
    })
}

fn debian_ready() -> bool {
    if !Path::new(DEBIAN).join("index.json").exists() || !have_tools(&["unsquashfs"]) {
        return missing(&format!(
            "{DEBIAN} (made by tests/services/debian-base.sh) or unsquashfs"
        ));
    }
    true
}

/// The %post of both tests: a user, a chown to it, and what the step itself sees.
const POST: &str = "%post\n    useradd -u 2345 -m builder\n    touch /opt/owned\n    \
chown builder:builder /opt/owned\n    stat -c %u:%g /opt/owned > /opt/seen\n";

fn owner_in(tree: &str, name: &str) -> String {
    let line = tree
        .lines()
        .find(|l| l.ends_with(name))
        .unwrap_or_else(|| panic!("{name} not in the image:\n{tree}"));
    line.split_whitespace().nth(1).unwrap_or("").to_string()
}

#[test]
fn subid_mode_gives_real_ids_inside_and_records_them() {
    let t = TestEnv::new();
    if !debian_ready() {
        return;
    }
    if !have_tools(&["newuidmap", "newgidmap"]) || !has_ranges() {
        missing("newuidmap/newgidmap (package uidmap) and a range for the test user in /etc/subuid and /etc/subgid (run-tests grants it)");
        return;
    }
    // apt-get really drops to _apt (no APT::Sandbox setting), su really switches users.
    let def = t.write(
        "work/subid.def",
        &format!(
            "Bootstrap: oci\nFrom: {DEBIAN}:bookworm\n\n{POST}    \
test \"$(stat -c %u /home/builder)\" = 2345\n    \
su builder -c 'test $(id -u) = 2345 && touch /tmp/by-builder'\n    \
test \"$(stat -c %u:%g /tmp/by-builder)\" = 2345:2345\n    \
test ! -e /etc/apt/apt.conf.d/00rsing-build-sandbox\n    \
apt-get update -q\n    apt-get install -y -q --no-install-recommends hello\n"
        ),
    );
    let img = t.dir.join("subid.sif");
    let out = build(&t)
        .args(["--userns-mode", "subid"])
        .arg(&img)
        .arg(&def)
        .assert_exit(0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("subid mode"),
        "the mode is said"
    );
    assert_no_staging(&t);
    // Real ids inside the step: stat saw the new owner (the seccomp fakes would show 0:0).
    assert_eq!(t.exec(&img, ["cat", "/opt/seen"]).stdout_str(), "2345:2345");
    assert_eq!(t.exec(&img, ["hello"]).stdout_str(), "Hello, world!");
    let tree = unsquashfs_lln(&img);
    assert_eq!(owner_in(&tree, "squashfs-root/opt/owned"), "2345/2345");
    assert_eq!(owner_in(&tree, "squashfs-root/home/builder"), "2345/2345");
    assert_eq!(owner_in(&tree, "squashfs-root/tmp/by-builder"), "2345/2345");
    assert_eq!(owner_in(&tree, "squashfs-root/opt/seen"), "0/0");
    // Between steps the tree is the caller's alone: every cache file is the test user's.
    let me = nix::unistd::getuid().as_raw();
    let mut foreign = Vec::new();
    walk(&t.dir.join("cache/build"), &mut |p, st| {
        if st.uid() != me || st.gid() != nix::unistd::getgid().as_raw() {
            foreign.push(p.to_path_buf());
        }
    });
    assert!(
        foreign.is_empty(),
        "files not owned by the caller: {foreign:?}"
    );
    // A cached rebuild restores the snapshot and gives the same ownership.
    let again = t.dir.join("again.sif");
    let out = build(&t).arg(&again).arg(&def).assert_exit(0);
    assert!(String::from_utf8_lossy(&out.stderr).contains("cached"));
    assert_eq!(
        owner_in(&unsquashfs_lln(&again), "squashfs-root/opt/owned"),
        "2345/2345"
    );
}

fn walk(dir: &Path, visit: &mut dyn FnMut(&Path, &std::fs::Metadata)) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(st) = e.path().symlink_metadata() else {
            continue;
        };
        visit(&e.path(), &st);
        if st.is_dir() {
            walk(&e.path(), visit);
        }
    }
}

/// Without newuidmap on PATH: `subid` is refused in one line naming it, before anything is
/// made; `auto` builds with the seccomp fakes (the step saw 0:0, the image records 2345).
#[test]
fn subid_without_newuidmap_fails_and_auto_falls_back_to_seccomp() {
    let t = TestEnv::new();
    if !debian_ready() {
        return;
    }
    let def = t.write(
        "work/fallback.def",
        &format!("Bootstrap: oci\nFrom: {DEBIAN}:bookworm\n\n{POST}"),
    );
    let img = t.dir.join("fallback.sif");
    let no_tools = t.dir.join("empty-path");
    std::fs::create_dir_all(&no_tools).unwrap();
    let line = build(&t)
        .env("PATH", &no_tools)
        .args(["--userns-mode", "subid"])
        .arg(&img)
        .arg(&def)
        .assert_error_naming("newuidmap");
    assert!(line.contains("--userns-mode subid"), "{line}");
    assert!(!img.exists(), "no output after a refused mode");
    assert_no_staging(&t);
    let out = build(&t)
        .env("PATH", &no_tools)
        .arg(&img)
        .arg(&def)
        .assert_exit(0);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("seccomp mode"),
        "auto says it fell back: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(t.exec(&img, ["cat", "/opt/seen"]).stdout_str(), "0:0");
    assert_eq!(
        owner_in(&unsquashfs_lln(&img), "squashfs-root/opt/owned"),
        "2345/2345"
    );
}
