//! Bind mounts: -B/--bind (ro/rw, comma lists, files, new destinations), RSING_BIND, --home,
//! --no-home, --pwd, and the default binds (HOME, cwd, /tmp, /var/tmp, /proc, /sys, /dev, and
//! host files such as /etc/resolv.conf the image lacks).

use crate::fixtures::BUSYBOX;
use crate::util::{sha256_hex, TestEnv};

/// A host dir `rel` holding `file` with `contents`; returns the dir's path as a string.
fn dir_with_file(t: &TestEnv, rel: &str, file: &str, contents: &str) -> String {
    t.write(&format!("{rel}/{file}"), contents);
    t.dir.join(rel).to_str().unwrap().to_string()
}

#[test]
fn bind_is_read_write_and_creates_a_missing_destination() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let src = dir_with_file(&t, "src", "in", "host data");
    let script = "cat /mnt/new/data/in && echo inside > /mnt/new/data/out";
    for flag in ["-B", "--bind"] {
        let bind = format!("{src}:/mnt/new/data");
        assert_eq!(t.sh_with([flag, &bind], &img, script), "host data");
        assert_eq!(
            std::fs::read_to_string(t.dir.join("src/out")).unwrap(),
            "inside\n"
        );
    }
    let rw = format!("{src}:/mnt/rw:rw");
    t.sh_with(["-B", &rw], &img, "echo again > /mnt/rw/out");
    assert_eq!(
        std::fs::read_to_string(t.dir.join("src/out")).unwrap(),
        "again\n"
    );
}

#[test]
fn read_only_bind_refuses_writes() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let src = dir_with_file(&t, "src", "in", "host data");
    let bind = format!("{src}:/ro:ro");
    assert_eq!(t.sh_with(["-B", &bind], &img, "cat /ro/in"), "host data");
    let cmd = t.exec_with(["-B", &bind], &img, ["touch", "/ro/new"]);
    cmd.assert_fails_naming("Read-only file system");
    assert!(!t.dir.join("src/new").exists());
}

#[test]
fn bind_without_destination_uses_the_same_path() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let src = dir_with_file(&t, "same", "in", "same path");
    assert_eq!(
        t.sh_with(["-B", &src], &img, &format!("cat {src}/in")),
        "same path"
    );
}

#[test]
fn bind_lists_from_flags_and_environment_combine() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let (a, b, c) = (
        dir_with_file(&t, "a", "f", "A"),
        dir_with_file(&t, "b", "f", "B"),
        dir_with_file(&t, "c", "f", "C"),
    );
    let list = format!("{a}:/a,{b}:/b:ro");
    let cmd = t.exec_with(
        ["-B", &list, "--bind", &format!("{c}:/c")],
        &img,
        ["cat", "/a/f", "/b/f", "/c/f"],
    );
    assert_eq!(cmd.stdout_str(), "ABC");
    let cmd = t.exec_with(
        ["-B", &format!("{c}:/c")],
        &img,
        ["cat", "/a/f", "/b/f", "/c/f"],
    );
    assert_eq!(cmd.env("RSING_BIND", &list).stdout_str(), "ABC");
}

#[test]
fn a_file_can_be_bound() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let file = t.write("custom.conf", "setting = 1\n");
    let bind = format!("{}:/etc/custom.conf", file.display());
    assert_eq!(
        t.sh_with(["-B", &bind], &img, "cat /etc/custom.conf"),
        "setting = 1"
    );
}

#[test]
fn home_is_bound_and_writable() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    t.write("home/from-host", "hello home");
    assert_eq!(
        t.sh(&img, "cat $HOME/from-host && echo out > $HOME/from-inside"),
        "hello home"
    );
    assert_eq!(
        std::fs::read_to_string(t.home.join("from-inside")).unwrap(),
        "out\n"
    );
}

#[test]
fn working_directory_is_kept() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    t.write("work/here", "cwd file");
    assert_eq!(
        t.sh(&img, "pwd; cat here"),
        format!("{}\ncwd file", t.cwd.display())
    );
}

#[test]
fn no_home_hides_the_home_directory() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let secret = t.write("home/secret", "x");
    let script = format!(
        "test -e {} && echo visible || echo hidden",
        secret.display()
    );
    assert_eq!(t.sh_with(["--no-home"], &img, &script), "hidden");
}

#[test]
fn home_option_binds_another_directory() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let other = dir_with_file(&t, "other-home", "f", "other");
    let script = "echo $HOME; cat $HOME/f";
    assert_eq!(
        t.sh_with(["--home", &other], &img, script),
        format!("{other}\nother")
    );
    let spec = format!("{other}:/home/custom");
    assert_eq!(
        t.sh_with(["--home", &spec], &img, script),
        "/home/custom\nother"
    );
}

#[test]
fn pwd_option_sets_the_working_directory() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    assert_eq!(t.sh_with(["--pwd", "/etc"], &img, "pwd"), "/etc");
}

#[test]
fn tmp_is_the_hosts() {
    let mut t = TestEnv::new();
    let img = image!(BUSYBOX);
    let (file, back) = (t.host_tmp_path("in"), t.host_tmp_path("back"));
    std::fs::write(&file, "host tmp").unwrap();
    let script = format!("cat {} && cp {0} {}", file.display(), back.display());
    assert_eq!(t.sh(&img, &script), "host tmp");
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "host tmp",
        "copy made inside /tmp"
    );
}

#[test]
fn system_directories_are_available() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let script = "test -d /var/tmp && test -d /sys/kernel && test -r /proc/self/status \
                  && echo x > /dev/null && head -c 4 /dev/zero | wc -c";
    assert_eq!(t.sh(&img, script), "4");
    let pid = t.sh(&img, "cut -d' ' -f1 /proc/self/stat");
    assert!(pid.parse::<u32>().is_ok(), "/proc/self/stat: {pid}");
}

#[test]
fn host_network_and_time_files_are_provided() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    for file in ["/etc/resolv.conf", "/etc/hosts", "/etc/localtime"] {
        let Ok(host) = std::fs::read(file) else {
            crate::util::skip(&format!("{file} does not exist on this host"));
            continue;
        };
        let inside = t.exec(&img, ["sha256sum", file]).stdout_str();
        assert_eq!(
            inside.split_whitespace().next(),
            Some(sha256_hex(&host).as_str()),
            "{file}"
        );
    }
}

/// One directory bound twice (RSING_BIND and -B, as a Slurm script and a site profile may
/// both do) at a path whose parents the image lacks: the later bind lands on the earlier.
#[test]
fn the_same_bind_given_twice_is_fine() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let dir = t.cwd.join("twice");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join("file"), "both\n").expect("write");
    let d = dir.to_string_lossy().into_owned();
    let out = t
        .exec_with(["--contain", "-B", &d], &img, ["cat", &format!("{d}/file")])
        .env("RSING_BIND", &d)
        .stdout_str();
    assert_eq!(out, "both");
}
