//! `rsing doctor` and `rsing --version`: on this host (everything exec needs works), and with
//! the host made unusable for real in a child namespace: /dev/fuse replaced by /dev/null
//! (bind mount), and a user namespace limit of 0 (user.max_user_namespaces written inside a
//! user namespace, which the kernel allows for that namespace and its children).

use crate::util::{have_tools, rsing_bin, TestEnv};
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .expect("checks array")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

#[test]
fn doctor_on_this_host_is_ok_with_fixes_for_every_warning() {
    let t = TestEnv::new();
    let out = t.rsing().args(["doctor", "--json"]).assert_exit(0);
    let report = json(&out);
    assert_eq!(report["ok"], true, "{report:#}");
    for name in ["userns", "fuse", "overlay", "config"] {
        assert_eq!(check(&report, name)["status"], "OK", "{report:#}");
    }
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for expected in [
        "userns", "fuse", "overlay", "config", "cgroup", "subuid", "home", "cache", "gpu", "cdi",
        "slurm",
    ] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
    for c in report["checks"].as_array().unwrap() {
        match c["status"].as_str().unwrap() {
            "OK" => assert!(c.get("fix").is_none(), "{c}"),
            "WARN" => assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "{c}"),
            other => panic!("unexpected status {other}: {c}"),
        }
    }
    assert!(check(&report, "fuse")["message"]
        .as_str()
        .unwrap()
        .contains("a FUSE mount in a user namespace works"));
    // The alias and the text form: one line per check, and a summary.
    let text = t.rsing().arg("info").stdout_str();
    assert!(text.lines().any(|l| l.starts_with("OK   userns")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("OK   fuse")), "{text}");
    assert!(text.lines().last().unwrap().contains(" 0 FAIL"), "{text}");
}

#[test]
fn doctor_warns_when_the_cache_cannot_be_created() {
    let t = TestEnv::new();
    // A cache under a directory this user cannot write: the flock probe cannot even create a
    // file there, so pulls would fail: WARN (exec of a SIF still works: exit 0).
    let out = t
        .rsing()
        .args(["doctor", "--json"])
        .env("RSING_CACHEDIR", "/proc/rsing-cache")
        .assert_exit(0);
    let report = json(&out);
    let cache = check(&report, "cache");
    assert_eq!(cache["status"], "WARN", "{report:#}");
    assert!(cache["message"]
        .as_str()
        .unwrap()
        .contains("/proc/rsing-cache"));
    assert!(cache["fix"].as_str().unwrap().contains("RSING_CACHEDIR"));
}

#[test]
fn doctor_fails_naming_dev_fuse_when_it_is_not_the_fuse_device() {
    if !have_tools(&["unshare", "mount"]) {
        return;
    }
    let t = TestEnv::new();
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    // /dev/null bound over /dev/fuse in a private mount namespace; then a second user
    // namespace maps the caller's own ids back, so doctor runs as this user again.
    let script = format!(
        "mount --bind /dev/null /dev/fuse && exec unshare -U --map-user={uid} --map-group={gid} \
         \"$0\" doctor \"$@\""
    );
    for json_mode in [true, false] {
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["-Urm", "sh", "-c", &script])
            .arg(rsing_bin())
            .env("HOME", &t.home)
            .current_dir(&t.cwd);
        if json_mode {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("unshare runs");
        assert_eq!(
            out.status.code(),
            Some(1),
            "doctor must exit 1 when exec cannot work: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if json_mode {
            let report = json(&out);
            assert_eq!(report["ok"], false);
            assert_eq!(check(&report, "userns")["status"], "OK", "{report:#}");
            let fuse = check(&report, "fuse");
            assert_eq!(fuse["status"], "FAIL", "{report:#}");
            let msg = fuse["message"].as_str().unwrap();
            assert!(msg.contains("/dev/fuse is not the FUSE device"), "{msg}");
            assert!(msg.contains("device 1:3"), "{msg}");
            assert!(fuse["fix"].as_str().unwrap().contains("c 10 229"), "{fuse}");
        } else {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.lines()
                    .any(|l| l.starts_with("FAIL fuse") && l.contains("/dev/fuse")),
                "{text}"
            );
            assert!(text.contains("fix: as root:"), "{text}");
            assert!(
                text.contains("1 FAIL: rsing exec will not work here"),
                "{text}"
            );
        }
    }
}

#[test]
fn doctor_fails_naming_the_user_namespace_limit() {
    if !have_tools(&["unshare"]) {
        return;
    }
    let t = TestEnv::new();
    // Inside a user namespace its owner may lower user.max_user_namespaces for it; doctor's
    // probe then cannot create the nested namespace exec needs.
    let out = std::process::Command::new("unshare")
        .args([
            "-Ur",
            "sh",
            "-c",
            "echo 0 > /proc/sys/user/max_user_namespaces || exit 99; exec \"$0\" doctor --json",
        ])
        .arg(rsing_bin())
        .env("HOME", &t.home)
        .current_dir(&t.cwd)
        .output()
        .expect("unshare runs");
    if out.status.code() == Some(99) {
        crate::util::missing("a kernel that lets a user namespace lower its own limit");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = json(&out);
    let userns = check(&report, "userns");
    assert_eq!(userns["status"], "FAIL", "{report:#}");
    let msg = userns["message"].as_str().unwrap();
    assert!(msg.contains("ENOSPC"), "{msg}");
    assert!(msg.contains("user.max_user_namespaces = 0"), "{msg}");
    assert!(userns["fix"]
        .as_str()
        .unwrap()
        .contains("sysctl -w user.max_user_namespaces="));
    // What depends on a user namespace says so instead of guessing.
    for dependent in ["fuse", "overlay"] {
        let c = check(&report, dependent);
        assert_eq!(c["status"], "FAIL");
        assert!(c["message"].as_str().unwrap().contains("see userns"), "{c}");
    }
}

#[test]
fn version_names_commit_build_date_target_and_features() {
    let t = TestEnv::new();
    let text = t.rsing().arg("--version").stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("rsing {}", env!("CARGO_PKG_VERSION")),
        "{text}"
    );
    let field = |name: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name}: line in {text}"))
            .trim()
            .to_string()
    };
    let commit = field("commit");
    assert!(
        commit == "unknown"
            || (commit.len() == 12 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{commit}"
    );
    // Where the checkout is readable, the commit is HEAD's (a stale build would show).
    let head = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "rev-parse",
            "--short=12",
            "HEAD",
        ])
        .output();
    if let Some(head) = head.ok().filter(|o| o.status.success()) {
        assert_eq!(
            commit,
            String::from_utf8_lossy(&head.stdout).trim(),
            "{text}"
        );
    }
    let date = field("built");
    assert!(
        date.len() >= 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
        "{date}"
    );
    assert!(field("target").contains("linux"), "{text}");
    assert!(field("features").contains("fuse"), "{text}");
    // -V stays one line, for scripts.
    assert_eq!(
        t.rsing().arg("-V").stdout_str(),
        format!("rsing {}", env!("CARGO_PKG_VERSION"))
    );
}
