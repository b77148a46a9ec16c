//! The shared image server: containers of one image share one FUSE mount (so the kernel's
//! caches stay warm across starts), the server goes away after its linger time, and
//! `RSING_SHARE=no` serves in-process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fixtures::BUSYBOX;
use crate::util::{image_servers, Running, TestEnv};

/// A private copy of the busybox image, so that no other test's server serves it.
fn private_image(t: &TestEnv, fixture: &Path) -> PathBuf {
    let copy = t.dir.join("private.sqfs");
    std::fs::copy(fixture, &copy).expect("copying the image");
    copy
}

fn servers_of(image: &Path) -> usize {
    image_servers(image).len()
}

fn server_pids(image: &Path) -> Vec<u32> {
    image_servers(image)
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// Runs `true` in the image with sharing `on` or off, lingering long enough for the next start.
fn start(t: &TestEnv, image: &Path, share: &str) {
    t.exec(image, ["true"])
        .env("RSING_SHARE", share)
        .env("RSING_SHARE_LINGER", "30")
        .assert_exit(0);
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts a container that says `ready` and then waits until a line is written to the
/// returned fifo (in $HOME, which is bound into the container).
fn start_waiting(t: &TestEnv, image: &Path, linger: &str) -> (Running, PathBuf) {
    let fifo = t.home.join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let script = format!("echo ready; read line < {}; echo got $line", fifo.display());
    let mut running = t
        .exec(image, ["sh", "-c", &script])
        .env("RSING_SHARE_LINGER", linger)
        .spawn();
    running.wait_for_line("ready");
    (running, fifo)
}

#[test]
fn consecutive_starts_share_one_server() {
    let t = TestEnv::new();
    let img = private_image(&t, &image!(BUSYBOX));
    start(&t, &img, "yes");
    let first = server_pids(&img);
    assert_eq!(
        first.len(),
        1,
        "the first start should leave its server lingering"
    );
    start(&t, &img, "yes");
    assert_eq!(
        server_pids(&img),
        first,
        "the second start did not join the first server"
    );
}

#[test]
fn without_sharing_no_server_is_started() {
    let t = TestEnv::new();
    let img = private_image(&t, &image!(BUSYBOX));
    start(&t, &img, "no");
    assert_eq!(servers_of(&img), 0, "RSING_SHARE=no started a server");
}

#[test]
fn concurrent_containers_share_the_server_and_it_leaves_after_linger() {
    let t = TestEnv::new();
    let img = private_image(&t, &image!(BUSYBOX));
    let (running, fifo) = start_waiting(&t, &img, "1");
    let out = t
        .exec(&img, ["echo", "second"])
        .env("RSING_SHARE_LINGER", "1")
        .stdout_str();
    assert_eq!(out, "second");
    let servers = image_servers(&img);
    assert_eq!(
        servers.len(),
        1,
        "two containers of one image should share one server"
    );
    // The server's command line names its socket.
    let socket = servers[0].1.clone();
    assert!(socket.exists(), "no socket at {}", socket.display());
    std::fs::write(&fifo, "go\n").expect("releasing the first container");
    running.assert_exit(0);
    wait_until(
        "the server exits after its linger time",
        Duration::from_secs(10),
        || servers_of(&img) == 0,
    );
    assert!(
        !socket.exists(),
        "the server left its socket behind: {}",
        socket.display()
    );
}

/// Mount namespaces the process holds open (`mnt:[…]` links in /proc/PID/fd).
fn mount_namespaces_held(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("mnt:"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn the_server_holds_a_running_containers_mounts_and_releases_them_after_it() {
    let t = TestEnv::new();
    let img = private_image(&t, &image!(BUSYBOX));
    let (running, fifo) = start_waiting(&t, &img, "30");
    let server = server_pids(&img);
    assert_eq!(server.len(), 1, "one server expected");
    assert_eq!(
        mount_namespaces_held(server[0]),
        1,
        "the supervisor should have lent its mount namespace to the server"
    );
    std::fs::write(&fifo, "go\n").expect("releasing the container");
    running.assert_exit(0);
    wait_until(
        "the server drops the ended container's mount namespace",
        Duration::from_secs(10),
        || mount_namespaces_held(server[0]) == 0,
    );
    assert_eq!(server_pids(&img), server, "the server should still linger");
}

/// `RSING_SHARE_LINGER=0` ends the server with its last container, but containers that
/// overlap still share one: the new server waits for the start that launched it.
#[test]
fn a_linger_of_zero_still_shares_one_server_between_overlapping_containers() {
    let t = TestEnv::new();
    let img = private_image(&t, &image!(BUSYBOX));
    let (running, fifo) = start_waiting(&t, &img, "0");
    let first = server_pids(&img);
    assert_eq!(
        first.len(),
        1,
        "the first container should be served by a server"
    );
    let out = t
        .exec(&img, ["echo", "second"])
        .env("RSING_SHARE_LINGER", "0")
        .stdout_str();
    assert_eq!(out, "second");
    assert_eq!(
        server_pids(&img),
        first,
        "the second container did not join the server"
    );
    std::fs::write(&fifo, "go\n").expect("releasing the first container");
    running.assert_exit(0);
    wait_until(
        "the server exits with its last container",
        Duration::from_secs(5),
        || servers_of(&img) == 0,
    );
}

/// The block files (`$RSING_CACHEDIR/blocks/*.blocks`) in the test's default cache.
fn block_files(t: &TestEnv) -> Vec<PathBuf> {
    let dir = t.home.join(".cache/rsing/blocks");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "blocks"));
    files
}

/// Every file's checksum and every entry's metadata, as the container sees them.
const LISTING: &str = "ls -lanR /bin /etc /.singularity.d 2>&1; \
    find / -xdev -type f 2>/dev/null | sort | xargs sha256sum";

/// A first start after the server has gone reads the blocks the previous server decompressed
/// from its block file (issue 16), and sees exactly the same files; so does a start whose block
/// file is damaged (ignored) or switched off.
#[test]
fn a_first_start_from_the_block_file_sees_identical_contents() {
    let t = TestEnv::new();
    let img = private_image(&t, &image!(BUSYBOX));
    let first_start = |extra: &[(&str, &str)]| {
        let mut cmd = t
            .exec(&img, ["sh", "-c", LISTING])
            .env("RSING_SHARE_LINGER", "0");
        for (k, v) in extra {
            cmd = cmd.env(k, v);
        }
        let out = cmd.stdout_str();
        wait_until(
            "the server has gone (and written its block file)",
            Duration::from_secs(20),
            || servers_of(&img) == 0,
        );
        out
    };
    let cold = first_start(&[]);
    assert!(cold.contains("/bin/busybox"), "listing: {cold}");
    let files = block_files(&t);
    assert_eq!(files.len(), 1, "one block file per image: {files:?}");
    let written = std::fs::read(&files[0]).expect("reading the block file");
    assert!(
        written.len() > 100_000,
        "block file of {} bytes",
        written.len()
    );

    // Served from the block file: the same bytes. (The file stays, or grows when readahead
    // happened to touch another block.)
    assert_eq!(first_start(&[]), cold);
    let kept = std::fs::read(&files[0]).unwrap();
    assert!(kept.len() >= written.len(), "block file shrank");

    // Damaged block data (past the header and index): those blocks come from the image again.
    let mut damaged = written.clone();
    let n = damaged.len();
    for b in &mut damaged[n / 2..] {
        *b ^= 0x5a;
    }
    std::fs::write(&files[0], &damaged).unwrap();
    assert_eq!(first_start(&[]), cold);
    // A damaged index: the whole file is ignored (and replaced by a good one).
    std::fs::write(&files[0], &written[..200]).unwrap();
    assert_eq!(first_start(&[]), cold);
    let again = std::fs::read(&files[0]).unwrap();
    assert!(
        again.len() > 100_000,
        "not rewritten: {} bytes",
        again.len()
    );

    // Switched off: neither read nor written.
    std::fs::remove_file(&files[0]).unwrap();
    assert_eq!(first_start(&[("RSING_BLOCK_CACHE", "no")]), cold);
    assert!(
        block_files(&t).is_empty(),
        "RSING_BLOCK_CACHE=no wrote a block file"
    );
}
