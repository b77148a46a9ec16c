//! Faults (issue 15): SIGKILL at many points of a pull and a build, a full disk, `cache clean`
//! during a pull, many simultaneous pulls and starts, and a killed image server. After each,
//! nothing partial is at the destination, the cache holds no corrupt entry and the next run
//! works.

use crate::fixtures::{Fixture, BUSYBOX};
use crate::util::oci::{self, Layout};
use crate::util::registry::TestRegistry;
use crate::util::{have_tools, sha256_file, RsingCmd, TestEnv};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn busybox_registry(t: &TestEnv) -> Option<(TestRegistry, oci::Written, String)> {
    crate::util::setup::busybox_registry(t, None)
}

fn rsing(t: &TestEnv, cache: &Path) -> RsingCmd {
    t.rsing_cached(cache)
}

/// Every cache entry is intact: each blob hashes to its name, each image is a SIF that the
/// next exec can use (checked by the caller), and only in-progress files (`.partial`,
/// `.lock`) are anything else.
fn assert_cache_intact(cache: &Path) {
    let blobs = cache.join("blobs/sha256");
    if let Ok(rd) = std::fs::read_dir(&blobs) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".partial") || name.ends_with(".lock") {
                continue;
            }
            assert_eq!(
                sha256_file(&e.path()),
                name,
                "blob {name} does not match its name"
            );
        }
    }
    if let Ok(rd) = std::fs::read_dir(cache.join("images")) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                name.ends_with(".sif") || name.ends_with(".lock") || name.ends_with(".json"),
                "unexpected file in images/: {name}"
            );
        }
    }
}

/// The blob GETs in the registry's access log.
fn blob_gets(log: &str, digest: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{digest}")))
        .count()
}

/// Times one cold run of `cmd(cache, out)`, then for kill points spread over that time: runs
/// it cold in a new cache, SIGKILLs its whole process group at the point, checks that nothing
/// is at `out` (unless that run had finished) and that the cache holds no corrupt entry, then
/// runs it again in the same cache, which must succeed.
fn kill_at_points(t: &TestEnv, what: &str, cmd: impl Fn(&Path, &Path) -> RsingCmd) {
    let out = t.dir.join(format!("{what}.sif"));
    let started = Instant::now();
    cmd(&t.dir.join("cache-timing"), &out)
        .timeout(Duration::from_secs(300))
        .assert_exit(0);
    let full = started.elapsed();
    let mut points: Vec<Duration> = (1..=12).map(|k| full * k / 13).collect();
    points.insert(0, Duration::from_millis(2));
    let mut killed = 0;
    for (i, at) in points.iter().enumerate() {
        let cache = t.dir.join(format!("cache-{i}"));
        let _ = std::fs::remove_file(&out);
        let running = cmd(&cache, &out).timeout(Duration::from_secs(300)).spawn();
        std::thread::sleep(*at);
        running.kill_group();
        let result = running.wait();
        let was_killed = result.status.code().is_none();
        killed += usize::from(was_killed);
        if out.exists() {
            assert!(
                !was_killed,
                "{what}: a run killed at {at:?} left {}",
                out.display()
            );
        }
        assert_cache_intact(&cache);
        let _ = std::fs::remove_file(&out);
        cmd(&cache, &out)
            .timeout(Duration::from_secs(300))
            .assert_exit(0);
        assert!(
            out.exists(),
            "{what}: the run after the kill at {at:?} wrote its output"
        );
        assert_cache_intact(&cache);
        let _ = std::fs::remove_dir_all(&cache);
    }
    eprintln!(
        "REPORT: {what}: a cold run takes {full:?}; killed {killed} of {} runs at points up to {:?}",
        points.len(),
        points.last().unwrap()
    );
    assert!(
        killed >= points.len() / 2,
        "{what}: most runs ended before their kill point"
    );
}

#[test]
fn pull_killed_at_many_points_recovers() {
    let t = TestEnv::new();
    let Some((_registry, _written, uri)) = busybox_registry(&t) else {
        return;
    };
    kill_at_points(&t, "pull", |cache, out| {
        rsing(&t, cache).args(["pull", &out.to_string_lossy(), &uri])
    });
    let img = t.dir.join("pull.sif");
    assert_eq!(
        t.exec(&img, ["/bin/busybox", "echo", "ok"]).stdout_str(),
        "ok"
    );
}

#[test]
fn build_killed_at_many_points_recovers() {
    let t = TestEnv::new();
    let Some(sandbox) = crate::fixtures::get(Fixture::Sandbox) else {
        return;
    };
    let layout = Layout::create(&t.dir.join("layout"));
    layout.add_image("1", &oci::busybox_image(&sandbox));
    let src = layout.reference("1");
    kill_at_points(&t, "build", |cache, out| {
        rsing(&t, cache).args(["build", &out.to_string_lossy(), &src])
    });
    let img = t.dir.join("build.sif");
    assert_eq!(
        t.exec(&img, ["/bin/busybox", "echo", "ok"]).stdout_str(),
        "ok"
    );
}

#[test]
fn simultaneous_pulls_fetch_each_blob_once() {
    let t = TestEnv::new();
    let Some((registry, written, uri)) = busybox_registry(&t) else {
        return;
    };
    let cache = t.dir.join("cache");
    let running: Vec<_> = (0..32)
        .map(|i| {
            let out = t.dir.join(format!("p{i}.sif"));
            rsing(&t, &cache)
                .args(["pull", &out.to_string_lossy(), &uri])
                .timeout(Duration::from_secs(300))
                .spawn()
        })
        .collect();
    for r in running {
        r.assert_exit(0);
    }
    let log = registry.log();
    for layer in &written.layers {
        assert_eq!(blob_gets(&log, layer), 1, "layer {layer} fetched once");
    }
    let first = sha256_file(&t.dir.join("p0.sif"));
    for i in 1..32 {
        assert_eq!(
            sha256_file(&t.dir.join(format!("p{i}.sif"))),
            first,
            "p{i}.sif"
        );
    }
    assert_cache_intact(&cache);
}

#[test]
fn cache_clean_during_a_pull_does_not_break_it() {
    let t = TestEnv::new();
    let Some((_registry, _written, uri)) = busybox_registry(&t) else {
        return;
    };
    let cache = t.dir.join("cache");
    for round in 0..3 {
        let out = t.dir.join(format!("c{round}.sif"));
        let pull = rsing(&t, &cache)
            .args(["pull", &out.to_string_lossy(), &uri])
            .timeout(Duration::from_secs(120))
            .spawn();
        let started = Instant::now();
        while started.elapsed() < Duration::from_millis(1500) {
            rsing(&t, &cache)
                .args(["cache", "clean", "--force"])
                .assert_exit(0);
            std::thread::sleep(Duration::from_millis(30));
        }
        pull.assert_exit(0);
        assert_eq!(
            t.exec(&out, ["/bin/busybox", "echo", "ok"]).stdout_str(),
            "ok"
        );
    }
}

/// `unshare -rm` (a user and mount namespace of the caller's own) with a size-limited tmpfs at
/// `dir`: a full disk without root.
#[test]
fn full_disk_gives_a_clear_error_and_nothing_corrupt() {
    let t = TestEnv::new();
    let Some((_registry, _written, uri)) = busybox_registry(&t) else {
        return;
    };
    if !have_tools(&["unshare"]) {
        return;
    }
    let small = t.dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let bin = crate::util::rsing_bin();
    for size in ["64k", "700k", "1500k"] {
        let script = format!(
            "mount -t tmpfs -o size={size} rsing-full {d} && cd {d} && \
             RSING_CACHEDIR={d}/cache {bin} pull {d}/out.sif {uri}; echo status=$?; \
             ls -a {d} {d}/cache/images 2>/dev/null | tr '\\n' ' '",
            d = small.display(),
            bin = bin.display()
        );
        let out = std::process::Command::new("unshare")
            .args(["-rm", "sh", "-c", &script])
            .env("HOME", &t.home)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("unshare failed") || stderr.contains("Operation not permitted") {
            assert!(
                std::env::var("CI").is_err(),
                "unshare -rm is refused: {stderr}"
            );
            eprintln!("SKIP: unshare -rm is refused here: {stderr}");
            return;
        }
        if stdout.contains("status=0") {
            // Big enough after all: nothing to check at this size.
            continue;
        }
        assert!(stdout.contains("status=255"), "{size}: {stdout} {stderr}");
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("rsing: error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{size}: {stderr}");
        assert!(
            errors[0].contains("No space left on device"),
            "{size}: the error says the disk is full: {}",
            errors[0]
        );
        assert!(
            !stdout.contains("out.sif"),
            "{size}: no partial output: {stdout}"
        );
    }
}

/// A private copy of the busybox image (no other test's server serves it).
fn private_image(t: &TestEnv) -> Option<PathBuf> {
    let img = crate::fixtures::get(BUSYBOX)?;
    let copy = t.dir.join("private.sqfs");
    std::fs::copy(img, &copy).unwrap();
    Some(copy)
}

fn servers_of(image: &Path) -> Vec<(u32, PathBuf)> {
    crate::util::image_servers(image)
}

#[test]
fn burst_of_first_starts_starts_one_server() {
    let t = TestEnv::new();
    let Some(img) = private_image(&t) else {
        return;
    };
    let barrier = std::sync::Barrier::new(16);
    std::thread::scope(|s| {
        for i in 0..16 {
            let (t, img, barrier) = (&t, &img, &barrier);
            s.spawn(move || {
                let cmd = t
                    .exec(img, ["echo", &format!("n{i}")])
                    .env("RSING_SHARE", "yes")
                    .env("RSING_SHARE_LINGER", "20")
                    .timeout(Duration::from_secs(120));
                barrier.wait();
                assert_eq!(cmd.stdout_str(), format!("n{i}"));
            });
        }
    });
    assert_eq!(servers_of(&img).len(), 1, "{:?}", servers_of(&img));
}

#[test]
fn sixty_four_simultaneous_execs_of_one_sif() {
    let t = TestEnv::new();
    let img = image!(Fixture::Sif);
    let running: Vec<_> = (0..64)
        .map(|i| {
            t.exec(&img, ["/bin/busybox", "echo", &format!("n{i}")])
                .timeout(Duration::from_secs(300))
                .spawn()
        })
        .collect();
    for (i, r) in running.into_iter().enumerate() {
        let out = r.assert_exit(0);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("n{i}"));
    }
}

#[test]
fn server_killed_with_sigkill_leaves_the_next_exec_working() {
    let t = TestEnv::new();
    let Some(img) = private_image(&t) else {
        return;
    };
    let start = || {
        t.exec(&img, ["echo", "up"])
            .env("RSING_SHARE", "yes")
            .env("RSING_SHARE_LINGER", "30")
            .stdout_str()
    };
    assert_eq!(start(), "up");
    let servers = servers_of(&img);
    assert_eq!(servers.len(), 1);
    let pid = nix::unistd::Pid::from_raw(servers[0].0 as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let started = Instant::now();
    while !servers_of(&img).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the server did not die"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        start(),
        "up",
        "the next exec works after the server was killed"
    );
    let again = servers_of(&img);
    assert_eq!(again.len(), 1, "a new server replaced the killed one");
    assert_ne!(again[0].0, servers[0].0);
}

/// Asks the other-user probe (tests/services/otheruser.sh) to connect to `socket` as
/// `rsingtest2`; returns its answer.
fn probe_as_other_user(probe: &Path, socket: &Path) -> String {
    let result = probe.join("result");
    let _ = std::fs::remove_file(&result);
    std::fs::write(probe.join("request"), format!("{}\n", socket.display())).unwrap();
    let started = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&result) {
            return text.trim().to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the probe did not answer"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn another_user_cannot_reach_the_image_server() {
    let t = TestEnv::new();
    let Some(probe) = std::env::var_os("RSING_TEST_OTHER_USER_PROBE").map(PathBuf::from) else {
        crate::util::missing(
            "the second user rsingtest2 (tests/services/otheruser.sh via run-tests)",
        );
        return;
    };
    let Some(img) = private_image(&t) else {
        return;
    };
    // The probe itself works: a socket anyone may use, in its own world-readable dir.
    let open = probe.join(format!("open-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&open);
    let listener = std::os::unix::net::UnixListener::bind(&open).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert_eq!(probe_as_other_user(&probe, &open), "connected");
    drop(listener);
    let _ = std::fs::remove_file(&open);

    let out = t
        .exec(&img, ["echo", "up"])
        .env("RSING_SHARE", "yes")
        .env("RSING_SHARE_LINGER", "30")
        .stdout_str();
    assert_eq!(out, "up");
    let servers = servers_of(&img);
    assert_eq!(servers.len(), 1);
    let socket = servers[0].1.clone();
    let answer = probe_as_other_user(&probe, &socket);
    assert!(
        answer.starts_with("refused"),
        "rsingtest2 reached the server: {answer}"
    );
    // Its directory is the caller's alone, so no one else can plant or replace a socket there.
    use std::os::unix::fs::MetadataExt;
    let dir = std::fs::metadata(socket.parent().unwrap()).unwrap();
    assert_eq!(dir.uid(), crate::util::caller().uid);
    assert_eq!(dir.mode() & 0o077, 0, "the socket directory is private");
}
