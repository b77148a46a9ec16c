//! Instances (issue 14): `instance start|list|stop|logs` and `exec instance://NAME`, with a
//! busybox httpd as the service.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::fixtures::{rootfs, BUSYBOX};
use crate::util::{have_tools, host_mounts_mentioning, TestEnv};

/// A SquashFS image whose start script serves /www with busybox httpd on port `$1`.
fn httpd_image(t: &TestEnv) -> Option<PathBuf> {
    if !have_tools(&["mksquashfs"]) {
        return None;
    }
    let root = crate::fixtures::busybox_rootfs(&t.dir);
    std::fs::create_dir_all(root.join("www")).unwrap();
    rootfs::write(&root, "www/index.html", "hello from the instance\n", 0o644);
    let script =
        "#!/bin/sh\necho \"httpd starting on $1\"\nexec httpd -f -vv -p 127.0.0.1:$1 -h /www\n";
    rootfs::write(&root, ".singularity.d/startscript", script, 0o755);
    let img = t.dir.join("httpd.sqfs");
    let st = Command::new("mksquashfs")
        .args([root.as_os_str(), img.as_os_str()])
        .args(["-quiet", "-no-progress", "-all-root"])
        .status()
        .unwrap();
    assert!(st.success());
    Some(img)
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    l.local_addr().unwrap().port()
}

fn get_page(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connecting to the instance");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    s.read_to_string(&mut page).unwrap();
    page
}

/// Our live (not zombie) processes in the PID namespace `ns` (a /proc/PID/ns/pid link).
fn live_in_namespace(ns: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(link) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        if link.to_string_lossy() == ns && !zombie {
            found.push(format!("{pid}: {stat}"));
        }
    }
    found
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn json_field(list: &str, key: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(list).expect("instance list --json");
    v[0][key].clone()
}

#[test]
fn httpd_instance_serves_is_joined_and_stops_cleanly() {
    let t = TestEnv::new();
    let Some(img) = httpd_image(&t) else { return };
    let port = free_port().to_string();
    t.rsing()
        .args(["instance", "start"])
        .arg(&img)
        .args(["web", &port])
        .assert_exit(0);
    let stop = || t.rsing().args(["instance", "stop", "-t", "5", "web"]).run();

    let table = t.rsing().args(["instance", "list"]).stdout_str();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web ") && l.contains(&img.to_string_lossy().to_string())),
        "{table}"
    );
    let json = t.rsing().args(["instance", "list", "--json"]).stdout_str();
    let init = json_field(&json, "init_pid").as_i64().expect("init_pid") as i32;
    let ns = std::fs::read_link(format!("/proc/{init}/ns/pid"))
        .unwrap()
        .to_string_lossy()
        .into_owned();

    let page = get_page(port.parse().unwrap());
    assert!(page.contains("hello from the instance"), "{page}");

    // A second start of the taken name is refused.
    t.rsing()
        .args(["instance", "start"])
        .arg(&img)
        .args(["web", &port])
        .assert_error_naming("web");

    // Joined: its processes (httpd among them, as seen from inside) and its files.
    let ps = t
        .rsing()
        .args(["exec", "instance://web", "ps"])
        .stdout_str();
    assert!(ps.lines().any(|l| l.contains("httpd -f")), "{ps}");
    assert!(ps.lines().any(|l| l.trim_start().starts_with("1 ")), "{ps}");
    let ls = t
        .rsing()
        .args(["exec", "instance://web", "ls", "/www"])
        .stdout_str();
    assert_eq!(ls, "index.html");
    // Same mount namespace: a file written to /tmp by one join is read by the next.
    t.rsing()
        .args([
            "exec",
            "instance://web",
            "sh",
            "-c",
            "echo shared > /tmp/mark",
        ])
        .assert_exit(0);
    let mark = t
        .rsing()
        .args(["exec", "instance://web", "cat", "/tmp/mark"])
        .stdout_str();
    assert_eq!(mark, "shared");
    let code = t
        .rsing()
        .args(["exec", "instance://web", "sh", "-c", "exit 7"])
        .run();
    assert_eq!(code.status.code(), Some(7));

    let out = stop();
    assert!(out.status.success(), "{out:?}");
    assert!(
        wait_until(Duration::from_secs(5), || live_in_namespace(&ns).is_empty()),
        "left running: {:?}",
        live_in_namespace(&ns)
    );
    assert!(host_mounts_mentioning(&img).is_empty());
    let table = t.rsing().args(["instance", "list"]).stdout_str();
    assert_eq!(table.lines().count(), 1, "{table}");
    assert!(TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap())).is_err());

    let logs = t.rsing().args(["instance", "logs", "web"]).run();
    let logs =
        String::from_utf8_lossy(&logs.stdout).into_owned() + &String::from_utf8_lossy(&logs.stderr);
    assert!(
        logs.contains(&format!("httpd starting on {port}")),
        "{logs}"
    );
    assert!(
        logs.contains("response:200"),
        "httpd's own log lines: {logs}"
    );

    // Stopped: joining and stopping again say so in one line each.
    t.rsing()
        .args(["exec", "instance://web", "true"])
        .assert_error_naming("web");
    t.rsing()
        .args(["instance", "stop", "web"])
        .assert_error_naming("web");
}

#[test]
fn a_start_command_that_exits_at_once_is_reported_with_its_log() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    // No start script: the runscript runs, which echoes its arguments and exits.
    let out = t
        .rsing()
        .args(["instance", "start"])
        .arg(&img)
        .args(["quick", "some-arg"])
        .assert_fails_naming("quick");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed to start"), "{stderr}");
    assert!(
        stderr.contains("runscript-args: some-arg"),
        "log tail: {stderr}"
    );
    let table = t.rsing().args(["instance", "list"]).stdout_str();
    assert_eq!(table.lines().count(), 1, "{table}");
}

#[test]
fn unknown_instances_give_one_clear_line() {
    let t = TestEnv::new();
    t.rsing()
        .args(["instance", "stop", "nosuch"])
        .assert_error_naming("nosuch");
    t.rsing()
        .args(["exec", "instance://nosuch", "true"])
        .assert_error_naming("nosuch");
    t.rsing()
        .args(["instance", "logs", "nosuch"])
        .assert_error_naming("nosuch");
    t.rsing()
        .args(["instance", "start", "/nonexistent.sif", "../bad"])
        .assert_error_naming("../bad");
}

/// `instance stop --all` with a signal the start command ignores: SIGKILL after -t.
#[test]
fn stop_all_kills_what_ignores_the_signal() {
    let t = TestEnv::new();
    let root = crate::fixtures::busybox_rootfs(&t.dir);
    let script = "#!/bin/sh\ntrap '' TERM\necho ignoring\nwhile true; do sleep 1; done\n";
    rootfs::write(&root, ".singularity.d/startscript", script, 0o755);
    for name in ["a", "b"] {
        t.rsing()
            .args(["instance", "start"])
            .arg(&root)
            .arg(name)
            .assert_exit(0);
    }
    let json = t.rsing().args(["instance", "list", "--json"]).stdout_str();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().map(|a| a.len()), Some(2), "{json}");
    let pids: Vec<i64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["init_pid"].as_i64().unwrap())
        .collect();
    let started = Instant::now();
    t.rsing()
        .args(["instance", "stop", "--all", "-t", "1"])
        .assert_exit(0);
    assert!(started.elapsed() < Duration::from_secs(10));
    for pid in pids {
        let gone = wait_until(Duration::from_secs(5), || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit(')')
                        .next()
                        .is_some_and(|r| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true)
        });
        assert!(gone, "init {pid} still runs");
    }
}

/// Through the shared image server (a private XDG_RUNTIME_DIR) and with --fakeroot: the joined
/// command is root in the instance's user namespace and sees the same processes.
#[test]
fn fakeroot_instance_through_the_image_server_is_joined_as_root() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestEnv::new();
    let Some(img) = httpd_image(&t) else { return };
    let xdg = t.dir.join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    let port = free_port().to_string();
    let rsing = || {
        t.rsing()
            .env("XDG_RUNTIME_DIR", &xdg)
            .env("RSING_SHARE_LINGER", "1")
    };
    rsing()
        .args(["instance", "start", "--fakeroot"])
        .arg(&img)
        .args(["srv", &port])
        .assert_exit(0);
    let out = rsing()
        .args(["exec", "instance://srv", "sh", "-c", "id -u; ps"])
        .run();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    rsing().args(["instance", "stop", "srv"]).assert_exit(0);
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("0\n"), "{text}");
    assert!(text.contains("httpd -f"), "{text}");
}

/// `-p/--pid` in the foreground: an own PID namespace, the host environment still passed.
#[test]
fn pid_option_gives_an_own_pid_namespace_without_cleanenv() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let out = t
        .exec_with(["--pid"], &img, ["sh", "-c", "echo $$; echo $MARK"])
        .env("MARK", "kept")
        .stdout_str();
    assert_eq!(out, "2\nkept");
}

/// `instance logs -f` prints what the instance writes while it runs and ends with it.
#[test]
fn logs_follow_until_the_instance_stops() {
    let t = TestEnv::new();
    let root = crate::fixtures::busybox_rootfs(&t.dir);
    let script = "#!/bin/sh\ni=0\nwhile true; do echo tick $i; i=$((i+1)); sleep 0.2; done\n";
    rootfs::write(&root, ".singularity.d/startscript", script, 0o755);
    t.rsing()
        .args(["instance", "start"])
        .arg(&root)
        .arg("ticker")
        .assert_exit(0);
    let mut follow = t.rsing().args(["instance", "logs", "-f", "ticker"]).spawn();
    follow.wait_for_line("tick 8");
    t.rsing()
        .args(["instance", "stop", "ticker"])
        .assert_exit(0);
    follow.assert_exit(0);
}

/// `instance stats`: the instance's processes, CPU time (a busy loop the start script ran
/// before its server counts, reaped by the init) and memory, and the source it read them
/// from; `instance list` shows the port the server listens on and the binds as given.
#[test]
fn stats_and_list_show_usage_ports_and_binds() {
    let t = TestEnv::new();
    let root = crate::fixtures::busybox_rootfs(&t.dir);
    std::fs::create_dir_all(root.join("www")).unwrap();
    rootfs::write(&root, "www/index.html", "busy\n", 0o644);
    let script = "#!/bin/sh\nsh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'\n\
                  exec httpd -f -p 127.0.0.1:$1 -h /www\n";
    rootfs::write(&root, ".singularity.d/startscript", script, 0o755);
    let data = t.mkdir("data");
    let bind = format!("{}:/data", data.display());
    let port: u16 = free_port();
    t.rsing()
        .args(["instance", "start", "-B", &bind])
        .arg(&root)
        .args(["busy", &port.to_string()])
        .assert_exit(0);
    let stop = || {
        t.rsing()
            .args(["instance", "stop", "-t", "5", "busy"])
            .run()
    };
    let listening = wait_until(Duration::from_secs(30), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let stats = t
        .rsing()
        .args(["instance", "stats", "--json", "busy"])
        .run();
    let text = t.rsing().args(["instance", "stats", "busy"]).run();
    let table = t.rsing().args(["instance", "list"]).stdout_str();
    let list = t.rsing().args(["instance", "list", "--json"]).stdout_str();
    let joined = t
        .rsing()
        .args(["exec", "instance://busy", "sleep", "0"])
        .run();
    stop();
    assert!(listening, "the server never listened on {port}");
    assert!(joined.status.success(), "{joined:?}");
    let v: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("stats --json");
    // The init, the start script (now httpd): at least two, and nothing of the host.
    let procs = v["processes"].as_u64().unwrap();
    assert!((2..10).contains(&procs), "{v}");
    assert!(v["cpu_seconds"].as_f64().unwrap() > 0.05, "{v}");
    assert!(v["memory_bytes"].as_u64().unwrap() > 100 * 1024, "{v}");
    let source = v["source"].as_str().unwrap();
    assert!(source == "proc" || source == "cgroup", "{v}");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("SOURCE") && text.contains("PROCESSES"),
        "{text}"
    );

    let want_port = format!("127.0.0.1:{port}/tcp");
    let line = table.lines().find(|l| l.starts_with("busy ")).unwrap_or("");
    assert!(line.contains(&want_port) && line.contains(&bind), "{table}");
    assert!(table.lines().next().unwrap().contains("PORTS"), "{table}");
    assert_eq!(json_field(&list, "ports"), serde_json::json!([want_port]));
    assert_eq!(json_field(&list, "binds"), serde_json::json!([bind]));
    assert!(json_field(&list, "init_pid").is_i64(), "{list}");

    // Stopped: stats of it is one clear line.
    t.rsing()
        .args(["instance", "stats", "busy"])
        .assert_error_naming("busy");
}
