//! Who the command runs as: the caller's ids and names, generated passwd/group entries,
//! PR_SET_NO_NEW_PRIVS, and --fakeroot.

use crate::fixtures::rootfs_passwd_root_line;
use crate::fixtures::BUSYBOX;
use crate::util::{caller, TestEnv};

#[test]
fn ids_and_name_are_the_callers() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let me = caller();
    let out = t.sh(&img, "id -u; id -g; id -un");
    assert_eq!(out, format!("{}\n{}\n{}", me.uid, me.gid, me.name));
}

#[test]
fn passwd_keeps_the_image_root_and_adds_the_caller() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let me = caller();
    let passwd = t.exec(&img, ["cat", "/etc/passwd"]).stdout_str();
    assert!(
        passwd.lines().any(|l| l == rootfs_passwd_root_line()),
        "{passwd}"
    );
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{}:", me.name)))
        .unwrap_or_else(|| panic!("no line for {} in /etc/passwd:\n{passwd}", me.name));
    let fields: Vec<&str> = line.split(':').collect();
    assert_eq!(fields.len(), 7, "{line}");
    assert_eq!(
        (fields[2], fields[3]),
        (me.uid.to_string().as_str(), me.gid.to_string().as_str())
    );
    assert_eq!(fields[5], t.home.to_str().unwrap(), "home field of {line}");
}

#[test]
fn group_has_the_callers_group() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let me = caller();
    let group = t.exec(&img, ["cat", "/etc/group"]).stdout_str();
    let prefix = format!("{}:x:{}:", me.group, me.gid);
    assert!(
        group.lines().any(|l| l.starts_with(&prefix)),
        "no `{prefix}` line:\n{group}"
    );
    assert_eq!(t.exec(&img, ["id", "-gn"]).stdout_str(), me.group);
}

#[test]
fn home_variable_is_the_callers() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    assert_eq!(t.sh(&img, "echo $HOME"), t.home.to_str().unwrap());
}

#[test]
fn setuid_binaries_gain_nothing() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let uid = caller().uid.to_string();
    assert_eq!(
        t.exec(&img, ["/suid/busybox", "id", "-u"]).stdout_str(),
        uid
    );
    let status = t
        .exec(&img, ["grep", "NoNewPrivs", "/proc/self/status"])
        .stdout_str();
    assert_eq!(
        status.split_whitespace().collect::<Vec<_>>(),
        ["NoNewPrivs:", "1"]
    );
}

#[test]
fn fakeroot_maps_the_caller_to_root() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    assert_eq!(t.sh_with(["--fakeroot"], &img, "id -u; id -g"), "0\n0");
    let script = "touch /root-owned-file && stat -c %u /root-owned-file";
    assert_eq!(
        t.sh_with(["--fakeroot", "--writable-tmpfs"], &img, script),
        "0"
    );
}
