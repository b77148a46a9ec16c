//! Privileges (issue 15): nothing in the container has more than the caller has on the host.
//! A setuid-root binary runs as the caller with empty capability sets, `--fakeroot` is root
//! only over the container's own namespaces, the image cannot be changed from inside, and
//! `/proc` and `/dev` give no more than the host gives the caller.

use crate::fixtures::{Fixture, BUSYBOX};
use crate::util::{caller, sha256_file, TestEnv};
use std::path::Path;

/// The `Cap*:` lines of /proc/self/status as (name, mask).
fn caps(status: &str) -> Vec<(String, u64)> {
    status
        .lines()
        .filter_map(|l| l.strip_prefix("Cap"))
        .filter_map(|l| {
            let (name, hex) = l.split_once(':')?;
            Some((name.to_string(), u64::from_str_radix(hex.trim(), 16).ok()?))
        })
        .collect()
}

#[test]
fn setuid_root_binary_runs_as_the_caller_without_capabilities() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let uid = caller().uid.to_string();
    let out = t.sh(
        &img,
        "/suid/busybox id -u; /suid/busybox cat /proc/self/status",
    );
    let (id, status) = out.split_once('\n').unwrap();
    assert_eq!(id, uid, "the setuid-root binary runs as the caller");
    let caps = caps(status);
    for set in ["Inh", "Prm", "Eff", "Amb"] {
        let mask = caps.iter().find(|(n, _)| n == set).map(|(_, m)| *m);
        assert_eq!(mask, Some(0), "Cap{set} is not empty: {status}");
    }
}

#[test]
fn fakeroot_has_no_power_over_the_host() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    // Root in its own user namespace: every try at a host resource must fail.
    let script = "hostname rsing-evil-name 2>/dev/null && echo hostname-changed; \
                  mknod /tmp/null-copy c 1 3 2>/dev/null && echo mknod-worked; \
                  cat /proc/1/environ >/dev/null 2>&1 && echo host-init-environ; \
                  echo 3 > /proc/sys/vm/drop_caches 2>/dev/null && echo sysctl-written; \
                  id -u";
    let out = t.sh_with(["--fakeroot"], &img, script);
    assert_eq!(out, "0", "fakeroot reached a host resource: {out}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_name
    );
}

#[test]
fn image_cannot_be_modified_from_inside() {
    let t = TestEnv::new();
    for fixture in [BUSYBOX, Fixture::Sif] {
        let img = image!(fixture);
        let before = sha256_file(&img);
        for opts in [vec![], vec!["--fakeroot"]] {
            let script = "for f in /bin/busybox /etc/new-file /new-file; do \
                            (echo x >> $f) 2>/dev/null && echo wrote $f; done; \
                          rm -f /bin/sh 2>/dev/null; test -e /bin/sh || echo removed; \
                          mkdir /newdir 2>/dev/null && echo mkdir; \
                          chmod 777 /bin 2>/dev/null && echo chmod; echo done";
            let out = t.sh_with(&opts, &img, script);
            assert_eq!(out, "done", "{opts:?} changed the image: {out}");
        }
        assert_eq!(sha256_file(&img), before, "the image file is unchanged");
    }
}

/// `stat -c '%n %t:%T'` lines as (path, major:minor).
fn device_nodes(listing: &str) -> Vec<(String, String)> {
    listing
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

#[test]
fn dev_and_proc_give_no_more_than_the_host() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    // Every device node in the container's /dev is one the host has, with the same numbers.
    let inside = t.sh(
        &img,
        "find /dev -xdev \\( -type c -o -type b \\) -exec stat -c '%n %t:%T' {} + 2>/dev/null; true",
    );
    let nodes = device_nodes(&inside);
    assert!(
        nodes.iter().any(|(p, _)| p == "/dev/null"),
        "the listing found the container's device nodes: {inside}"
    );
    for (path, rdev) in nodes {
        let host = std::process::Command::new("stat")
            .args(["-c", "%t:%T", &path])
            .output()
            .unwrap();
        assert!(
            host.status.success(),
            "{path} exists in the container but not on the host"
        );
        assert_eq!(
            String::from_utf8_lossy(&host.stdout).trim(),
            rdev,
            "{path} is another device than the host's"
        );
    }
    // What the caller cannot read on the host stays unreadable inside. (Not /proc/PID: with
    // a PID namespace those are the container's own processes.)
    let closed: Vec<&str> = [
        "/proc/kcore",
        "/proc/kmsg",
        "/proc/vmallocinfo",
        "/proc/slabinfo",
        "/proc/pagetypeinfo",
        "/proc/timer_list",
        "/sys/kernel/debug",
    ]
    .into_iter()
    .filter(|p| Path::new(p).exists())
    .filter(|p| std::fs::read(p).is_err() && std::fs::read_dir(p).is_err())
    .collect();
    assert!(
        !closed.is_empty(),
        "no closed /proc file to check on this host"
    );
    let script = closed
        .iter()
        .map(|p| {
            format!(
                "if [ -d {p} ]; then ls {p}; else head -c1 {p}; fi >/dev/null 2>&1 && echo {p}; "
            )
        })
        .collect::<String>()
        + "true";
    for opts in [vec![], vec!["--fakeroot"], vec!["--containall"]] {
        let out = t.sh_with(&opts, &img, &script);
        assert_eq!(out, "", "readable inside with {opts:?} but not on the host");
    }
    // Kernel addresses stay hidden as they are from the caller on the host.
    let host_first = std::fs::read_to_string("/proc/kallsyms")
        .ok()
        .and_then(|k| k.split_whitespace().next().map(str::to_string));
    if let Some(host_first) = host_first {
        let inside = t.sh_with(
            ["--fakeroot"],
            &img,
            "head -n1 /proc/kallsyms | cut -d' ' -f1",
        );
        assert_eq!(inside, host_first, "/proc/kallsyms shows more inside");
    }
    // Writes to kernel settings fail as they do on the host.
    let out = t.sh_with(
        ["--fakeroot"],
        &img,
        "echo 1 > /proc/sys/kernel/sysrq 2>/dev/null && echo written; \
         echo c > /proc/sysrq-trigger 2>/dev/null && echo triggered; true",
    );
    assert_eq!(out, "");
}
