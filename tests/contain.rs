//! Isolation options: --contain (fresh HOME and /tmp, minimal /dev), --containall (plus
//! --cleanenv and a PID namespace), --writable-tmpfs (a throw-away writable root).

use crate::fixtures::BUSYBOX;
use crate::util::TestEnv;

#[test]
fn contain_gives_an_empty_home_and_tmp() {
    let mut t = TestEnv::new();
    let img = image!(BUSYBOX);
    t.write("home/host-file", "x");
    let tmp_file = t.host_tmp_path("f");
    std::fs::write(&tmp_file, "x").unwrap();
    let script = format!(
        "ls -A \"$HOME\" | wc -l; test -e {} && echo visible || echo hidden; touch $HOME/w /tmp/w",
        tmp_file.display()
    );
    for flag in ["-c", "--contain"] {
        assert_eq!(t.sh_with([flag], &img, &script), "0\nhidden", "with {flag}");
    }
    assert!(
        !t.home.join("w").exists(),
        "--contain wrote into the host HOME"
    );
}

#[test]
fn contain_has_a_minimal_dev() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let host_only: Vec<&str> = ["/dev/fuse", "/dev/loop-control", "/dev/mem"]
        .into_iter()
        .filter(|d| std::path::Path::new(d).exists())
        .collect();
    let script = format!(
        "echo x > /dev/null && head -c 1 /dev/zero | wc -c; for d in {}; do test -e $d && echo $d; done; true",
        host_only.join(" ")
    );
    assert_eq!(t.sh_with(["--contain"], &img, &script), "1");
}

#[test]
fn containall_cleans_the_environment_and_has_its_own_pids() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    for flag in ["-C", "--containall"] {
        let script = "echo \"FOO=[$FOO]\"; echo $$; ls /proc | grep -c '^[0-9]'";
        let cmd = t
            .exec_with([flag], &img, ["sh", "-c", script])
            .env("FOO", "bar");
        let out = cmd.stdout_str();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.first(), Some(&"FOO=[]"), "{flag}: {out}");
        let small = |s: &&str| s.parse::<u32>().is_ok_and(|n| n < 10);
        assert!(
            lines.len() == 3 && small(&lines[1]) && small(&lines[2]),
            "{flag}: pids {out}"
        );
    }
}

#[test]
fn writable_tmpfs_allows_changes_that_vanish() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    // As the caller, only places the caller may write to are writable (the root directory of
    // the overlay is theirs); image directories owned by root need --fakeroot as well.
    let script = "touch /newfile && echo changed > /newfile && cat /newfile";
    assert_eq!(t.sh_with(["--writable-tmpfs"], &img, script), "changed");
    t.exec_with(["--writable-tmpfs"], &img, ["mkdir", "/bin/newdir"])
        .assert_fails_naming("Permission denied");
    let script = "mkdir /bin/newdir && echo changed > /root/f && cat /root/f";
    assert_eq!(
        t.sh_with(["--fakeroot", "--writable-tmpfs"], &img, script),
        "changed"
    );
    let script = "for p in /newfile /bin/newdir /root/f; do test -e $p && echo kept $p; done; true";
    assert_eq!(t.sh(&img, script), "");
}

#[test]
fn root_is_read_only_by_default() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    t.exec(&img, ["touch", "/newfile"])
        .assert_fails_naming("Read-only file system");
}
