//! Persistent overlays (--overlay DIR, DIR:ro, FILE.sqfs), their lock, and --writable on a
//! sandbox directory (docs/overlays.md).

use std::path::Path;
use std::process::Command;

use crate::fixtures::{Fixture, BUSYBOX};
use crate::util::{have_tools, sha256_file, TestEnv};

fn ov(dir: &Path) -> String {
    dir.display().to_string()
}

#[test]
fn directory_overlay_keeps_changes_and_the_image_is_unchanged() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let before = sha256_file(&img);
    let d = t.dir.join("ov");
    std::fs::create_dir(&d).unwrap();
    let o = ["--overlay", &ov(&d)];
    t.sh_with(o, &img, "echo kept > /kept");
    // As root in the overlay: delete an image file, replace an image directory (opaque).
    let script = "rm /bin/true && rm -rf /suid && mkdir /suid && echo new > /suid/only";
    t.sh_with(["--fakeroot", "--overlay", &ov(&d)], &img, script);
    let script = "cat /kept; test -e /bin/true || echo gone; ls /suid";
    assert_eq!(t.sh_with(o, &img, script), "kept\ngone\nonly");
    assert!(d.join("upper/kept").is_file() && d.join("work").is_dir());
    assert_eq!(sha256_file(&img), before, "the image file changed");
    // Without the overlay the image is as it was.
    assert_eq!(t.sh(&img, "test -e /kept || echo clean"), "clean");
}

#[test]
fn read_only_layers_stack_below_the_writable_one() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let (a, b) = (t.dir.join("a"), t.dir.join("b"));
    for d in [&a, &b] {
        std::fs::create_dir(d).unwrap();
    }
    t.sh_with(
        ["--overlay", &ov(&a)],
        &img,
        "echo from-a > /f; echo a > /only-a",
    );
    let ro = format!("{}:ro", ov(&a));
    t.exec_with(["--overlay", &ro], &img, ["sh", "-c", "echo x > /g"])
        .assert_fails_naming("Read-only file system");
    let o = ["--overlay", &ro, "--overlay", &ov(&b)];
    assert_eq!(
        t.sh_with(o, &img, "cat /f; echo from-b > /f; cat /f /only-a"),
        "from-a\nfrom-b\na"
    );
    assert_eq!(
        std::fs::read_to_string(a.join("upper/f")).unwrap(),
        "from-a\n"
    );
    assert_eq!(
        std::fs::read_to_string(b.join("upper/f")).unwrap(),
        "from-b\n"
    );
    // Two writable overlays: the last takes the writes, the first is read-only below it.
    let o = ["--overlay", &ov(&a), "--overlay", &ov(&b)];
    assert_eq!(t.sh_with(o, &img, "echo 2 > /two; cat /f"), "from-b");
    assert!(b.join("upper/two").exists() && !a.join("upper/two").exists());
}

#[test]
fn squashfs_layer_of_an_overlay_keeps_its_whiteouts() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    if !have_tools(&["mksquashfs"]) {
        return;
    }
    let d = t.dir.join("ov");
    std::fs::create_dir(&d).unwrap();
    let script = "echo layer > /layer-file && rm /bin/true && rm -rf /suid && mkdir /suid && echo x > /suid/only";
    t.sh_with(["--fakeroot", "--overlay", &ov(&d)], &img, script);
    let sqfs = t.dir.join("layer.sqfs");
    // The Apptainer layout (upper/ and work/ at the root) as well as the bare upper directory.
    for (src, name) in [(d.clone(), "layout"), (d.join("upper"), "bare")] {
        let _ = std::fs::remove_file(&sqfs);
        let st = Command::new("mksquashfs")
            .args([src.as_os_str(), sqfs.as_os_str()])
            .args(["-quiet", "-no-progress"])
            .status()
            .unwrap();
        assert!(st.success());
        let script = "cat /layer-file; test -e /bin/true || echo gone; ls /suid";
        let out = t.sh_with(["--overlay", &ov(&sqfs)], &img, script);
        assert_eq!(out, "layer\ngone\nonly", "{name}");
    }
}

#[test]
fn a_second_writer_is_refused_while_the_first_runs() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let d = t.dir.join("ov");
    std::fs::create_dir(&d).unwrap();
    let mut first = t
        .exec_with(
            ["--overlay", &ov(&d)],
            &img,
            ["sh", "-c", "echo ready; exec sleep 60"],
        )
        .spawn();
    first.wait_for_line("ready");
    t.exec_with(["--overlay", &ov(&d)], &img, ["true"])
        .assert_error_naming("is in use by another rsing");
    let ro = format!("{}:ro", ov(&d));
    t.exec_with(["--overlay", &ro], &img, ["true"])
        .assert_error_naming("is in use by another rsing");
    first.signal(nix::sys::signal::Signal::SIGTERM);
    first.assert_exit(143);
    t.exec_with(["--overlay", &ov(&d)], &img, ["true"])
        .assert_exit(0);
}

#[test]
fn bad_overlays_are_one_line_each() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let missing = t.dir.join("missing");
    t.exec_with(["--overlay", &ov(&missing)], &img, ["true"])
        .assert_error_naming(&format!("overlay {}", missing.display()));
    let junk = t.write("junk.img", "not an overlay image");
    t.exec_with(["--overlay", &ov(&junk)], &img, ["true"])
        .assert_error_naming("is not an overlay");
    t.exec_with(["--writable"], &img, ["true"])
        .assert_error_naming("--writable-tmpfs");
}

#[test]
fn an_upper_directory_on_fuse_is_refused_with_a_hint() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    if !have_tools(&["squashfuse", "fusermount3", "mksquashfs"]) {
        return;
    }
    let src = t.mkdir("src/d");
    let _ = src;
    let sqfs = t.dir.join("src.sqfs");
    let st = Command::new("mksquashfs")
        .args([
            t.dir.join("src").as_os_str(),
            sqfs.as_os_str(),
            "-quiet".as_ref(),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let mnt = t.mkdir("mnt");
    let st = Command::new("squashfuse")
        .arg(&sqfs)
        .arg(&mnt)
        .status()
        .unwrap();
    if !st.success() {
        crate::util::missing("a working squashfuse mount");
        return;
    }
    let out = t
        .exec_with(["--overlay", &ov(&mnt.join("d"))], &img, ["true"])
        .run();
    let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(
        err.contains("FUSE") && err.contains("rsing overlay create"),
        "{err}"
    );
}

#[test]
fn writable_sandbox_is_written() {
    let t = TestEnv::new();
    let sandbox = image!(Fixture::Sandbox);
    let mine = t.dir.join("sandbox");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&sandbox)
        .arg(&mine)
        .status()
        .unwrap();
    assert!(st.success());
    let o = ["--writable"];
    t.sh_with(o, &mine, "echo hello > /written");
    assert_eq!(
        std::fs::read_to_string(mine.join("written")).unwrap(),
        "hello\n"
    );
    assert_eq!(t.sh_with(o, &mine, "cat /written"), "hello");
}

/// `rsing overlay create`, or a visible skip where e2fsprogs or fuse2fs are missing.
fn ext_overlay(t: &TestEnv, name: &str) -> Option<std::path::PathBuf> {
    if !have_tools(&["fuse2fs", "mkfs.ext3", "debugfs"]) {
        return None;
    }
    let img = t.dir.join(name);
    t.rsing()
        .args([
            "overlay",
            "create",
            "--size",
            "32",
            "--create-dir",
            "/opt/tools",
        ])
        .arg(&img)
        .assert_exit(0);
    Some(img)
}

#[test]
fn ext3_overlay_image_stacks_read_only() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let Some(file) = ext_overlay(&t, "ov.img") else {
        return;
    };
    // Put a file into the image's upper/ without mounting it (debugfs writes the ext3 file).
    let src = t.write("hello.txt", "from the image\n");
    let st = Command::new("debugfs")
        .args(["-w", "-R"])
        .arg(format!("write {} /upper/hello.txt", src.display()))
        .arg(&file)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let ro = format!("{}:ro", ov(&file));
    let script = "cat /hello.txt; test -d /opt/tools && echo dir";
    assert_eq!(
        t.sh_with(["--overlay", &ro], &img, script),
        "from the image\ndir"
    );
    // Twice: the image is closed cleanly and nothing of fuse2fs outlives rsing.
    assert_eq!(
        t.sh_with(["--overlay", &ro], &img, "cat /hello.txt"),
        "from the image"
    );
    let left = crate::util::processes_matching(&file.display().to_string());
    assert!(left.is_empty(), "fuse2fs left running: {left:?}");
    t.rsing()
        .args(["overlay", "create"])
        .arg(&file)
        .assert_error_naming("exists already");
}

/// No helper of `file` runs any more (fuse2fs and fuse-overlayfs both name the image on
/// their command lines), waiting up to 10 s for those a killed rsing left to end.
fn assert_no_helpers_left(file: &Path) {
    let marker = file.display().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: Vec<_> = crate::util::processes_matching(&marker)
            .into_iter()
            .filter(|(_, cmd)| cmd.contains("fuse2fs") || cmd.contains("fuse-overlayfs"))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "helpers left running: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `e2fsck -fn`: the image was closed cleanly (skipped where e2fsck is missing).
fn assert_clean_ext3(file: &Path) {
    if !have_tools(&["e2fsck"]) {
        return;
    }
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// A writable ext3 image (fuse2fs read-write under fuse-overlayfs): changes kept across runs,
/// in the image's `upper/`, the image file system clean after each run, the SIF unchanged.
#[test]
fn ext3_overlay_image_keeps_changes() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    if !have_tools(&["fuse-overlayfs"]) {
        return;
    }
    let Some(file) = ext_overlay(&t, "rw.img") else {
        return;
    };
    let before = sha256_file(&img);
    let o = ["--overlay", &ov(&file)];
    let script = "echo kept > /kept && mkdir -p /opt/tools/bin && echo t > /opt/tools/bin/t && \
                  ln -s kept /link && rm /link";
    t.sh_with(o, &img, script);
    assert_no_helpers_left(&file);
    assert_clean_ext3(&file);
    let script = "cat /kept /opt/tools/bin/t; test -e /link || echo no-link; ls /bin/sh";
    assert_eq!(t.sh_with(o, &img, script), "kept\nt\nno-link\n/bin/sh");
    assert_no_helpers_left(&file);
    assert_clean_ext3(&file);
    assert_eq!(sha256_file(&img), before, "the image file changed");
    // What was written sits in the image's upper/, read back read-only through the kernel.
    let ro = format!("{}:ro", ov(&file));
    assert_eq!(t.sh_with(["--overlay", &ro], &img, "cat /kept"), "kept");
    // Without the overlay the image is as it was.
    assert_eq!(t.sh(&img, "test -e /kept || echo clean"), "clean");
    // Stacked on a read-only directory layer, which is seen through it.
    let d = t.dir.join("below");
    std::fs::create_dir(&d).unwrap();
    t.sh_with(["--overlay", &ov(&d)], &img, "echo below > /below");
    let o = [
        "--overlay",
        &format!("{}:ro", ov(&d)),
        "--overlay",
        &ov(&file),
    ];
    assert_eq!(
        t.sh_with(o, &img, "cat /below /kept; echo top > /top"),
        "below\nkept"
    );
    assert!(!d.join("upper/top").exists());
    assert_eq!(
        t.sh_with(["--overlay", &ov(&file)], &img, "cat /top"),
        "top"
    );
    // A lower file deleted through the image: fuse-overlayfs records a `.wh.below` file,
    // which hides /below again when the image is stacked read-only.
    t.sh_with(o, &img, "rm /below");
    let o = ["--overlay", &format!("{}:ro", ov(&d)), "--overlay", &ro];
    let script = "test -e /below || echo gone; ls -a / | grep -c wh || true";
    assert_eq!(t.sh_with(o, &img, script), "gone\n0");
    assert_no_helpers_left(&file);
}

/// `overlay create --fakeroot`: an image whose directories are root's, for `--fakeroot`,
/// where root deletes an image file and replaces an image directory; read back read-only,
/// and sealed into the same layer.
#[test]
fn fakeroot_ext3_overlay_image_takes_roots_changes() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    if !have_tools(&["fuse-overlayfs", "fuse2fs", "mkfs.ext3", "debugfs"]) {
        return;
    }
    let file = t.dir.join("root.img");
    t.rsing()
        .args(["overlay", "create", "--fakeroot", "--size", "16"])
        .arg(&file)
        .assert_exit(0);
    let o = ["--fakeroot", "--overlay", &ov(&file)];
    let script = "rm /bin/true && rm -rf /suid && mkdir /suid && echo new > /suid/only && \
                  echo r > /rootfile && stat -c %u /rootfile";
    assert_eq!(t.sh_with(o, &img, script), "0");
    assert_clean_ext3(&file);
    let check = "test -e /bin/true || echo gone; ls /suid; cat /rootfile";
    let ro = format!("{}:ro", ov(&file));
    assert_eq!(
        t.sh_with(["--fakeroot", "--overlay", &ro], &img, check),
        "gone\nonly\nr"
    );
    let layer = t.dir.join("root.sqfs");
    t.rsing()
        .args(["overlay", "seal"])
        .arg(&file)
        .arg(&layer)
        .assert_exit(0);
    assert_eq!(
        t.sh_with(["--overlay", &ov(&layer)], &img, check),
        "gone\nonly\nr"
    );
    assert_no_helpers_left(&file);
}

/// One writer per image: a second writer, or a reader, fails in one line while the first
/// runs; a SIGKILLed rsing leaves no helper behind and the image usable, with what it wrote.
#[test]
fn ext3_overlay_image_has_one_writer() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    if !have_tools(&["fuse-overlayfs"]) {
        return;
    }
    let Some(file) = ext_overlay(&t, "one.img") else {
        return;
    };
    let o = ["--overlay", &ov(&file)];
    let mut first = t
        .exec_with(
            o,
            &img,
            ["sh", "-c", "echo 1 > /first; echo ready; exec sleep 60"],
        )
        .spawn();
    first.wait_for_line("ready");
    t.exec_with(o, &img, ["true"])
        .assert_error_naming("is in use by another rsing");
    let ro = format!("{}:ro", ov(&file));
    t.exec_with(["--overlay", &ro], &img, ["true"])
        .assert_error_naming("is in use by another rsing");
    first.signal(nix::sys::signal::Signal::SIGTERM);
    first.assert_exit(143);
    assert_no_helpers_left(&file);
    assert_clean_ext3(&file);
    // SIGKILL of rsing itself: its helpers end (parent-death signal) and close the image.
    let mut killed = t
        .exec_with(
            o,
            &img,
            ["sh", "-c", "echo 2 > /second; echo ready; exec sleep 60"],
        )
        .spawn();
    killed.wait_for_line("ready");
    killed.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = killed.wait();
    assert_no_helpers_left(&file);
    assert_clean_ext3(&file);
    assert_eq!(t.sh_with(o, &img, "cat /first /second"), "1\n2");
    // Ctrl-C reaches the whole foreground process group: a command that ignores it goes on,
    // and the helpers, in a group of their own, keep serving its root.
    let script = "trap '' INT; echo ready; sleep 1; cat /first";
    let mut run = t.exec_with(o, &img, ["sh", "-c", script]).spawn();
    run.wait_for_line("ready");
    let group = nix::unistd::Pid::from_raw(run.pid());
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = run.assert_exit(0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n1\n");
    assert_no_helpers_left(&file);
    assert_clean_ext3(&file);
}

/// A SIF's own overlay partition, as `apptainer overlay create img.sif` adds it: applied
/// read-only to every run of the SIF, written with `--writable`, one writer at a time.
#[test]
fn sif_overlay_partition_is_read_only_unless_writable() {
    let t = TestEnv::new();
    let img = image!(Fixture::SifApptainer);
    if !have_tools(&["fuse-overlayfs", "fuse2fs", "mkfs.ext3"]) {
        return;
    }
    let before = sha256_file(&img);
    let sif = t.dir.join("with-overlay.sif");
    std::fs::copy(&img, &sif).unwrap();
    t.rsing()
        .args(["overlay", "create", "--size", "16"])
        .arg(&sif)
        .assert_exit(0);
    t.rsing()
        .args(["overlay", "create", "--size", "16"])
        .arg(&sif)
        .assert_error_naming("has an overlay partition already");
    if have_tools(&["siftool"]) {
        let out = Command::new("siftool")
            .arg("list")
            .arg(&sif)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Ext3/Overlay/amd64"), "{text}");
    }
    t.exec_with(None::<&str>, &sif, ["sh", "-c", "echo x > /x"])
        .assert_fails_naming("Read-only file system");
    t.sh_with(["--writable"], &sif, "echo in-sif > /kept");
    assert_eq!(t.sh(&sif, "cat /kept"), "in-sif");
    assert_no_helpers_left(&sif);
    // One writer: a second run, even a read-only one, waits for none and fails clearly.
    let mut first = t
        .exec_with(
            ["--writable"],
            &sif,
            ["sh", "-c", "echo ready; exec sleep 60"],
        )
        .spawn();
    first.wait_for_line("ready");
    t.exec_with(None::<&str>, &sif, ["true"])
        .assert_error_naming("is in use by another rsing");
    first.signal(nix::sys::signal::Signal::SIGTERM);
    first.assert_exit(143);
    assert_eq!(t.sh(&sif, "cat /kept"), "in-sif");
    assert_eq!(sha256_file(&img), before, "the original image changed");
    assert_eq!(t.sh(&img, "test -e /kept || echo clean"), "clean");
    // A job script's `apptainer overlay create -f -s N img.sif` (rsing installed as
    // `apptainer`), then `--fakeroot --writable`: root writes into the partition.
    let bin = t.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(crate::util::rsing_bin(), bin.join("apptainer")).unwrap();
    let root_sif = t.dir.join("root.sif");
    std::fs::copy(&img, &root_sif).unwrap();
    crate::util::RsingCmd::new(&bin.join("apptainer"), vec![], &t.cwd)
        .env("HOME", &t.home)
        .env("PATH", "/usr/bin:/bin:/usr/sbin:/sbin")
        .args(["overlay", "create", "-f", "-s", "16"])
        .arg(&root_sif)
        .assert_exit(0);
    let o = ["--fakeroot", "--writable"];
    t.sh_with(o, &root_sif, "rm /bin/true && echo r > /etc/by-root");
    let check = "test -e /bin/true || echo gone; cat /etc/by-root";
    assert_eq!(t.sh_with(["--fakeroot"], &root_sif, check), "gone\nr");
    assert_no_helpers_left(&root_sif);
}

#[test]
fn sealed_overlay_stacks_read_only() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let d = t.dir.join("ov");
    std::fs::create_dir(&d).unwrap();
    let script = "echo sealed > /sealed && rm /bin/true && rm -rf /suid && mkdir /suid && echo x > /suid/only";
    t.sh_with(["--fakeroot", "--overlay", &ov(&d)], &img, script);
    let out = t.dir.join("layer.sqfs");
    t.rsing()
        .args(["overlay", "seal"])
        .arg(&d)
        .arg(&out)
        .assert_exit(0);
    let top = t.dir.join("top");
    std::fs::create_dir(&top).unwrap();
    let o = ["--overlay", &ov(&out), "--overlay", &ov(&top)];
    let script = "cat /sealed; test -e /bin/true || echo gone; ls /suid; echo more > /more";
    assert_eq!(t.sh_with(o, &img, script), "sealed\ngone\nonly");
    assert!(top.join("upper/more").exists());
    t.rsing()
        .args(["overlay", "seal"])
        .arg(t.dir.join("nope"))
        .arg(t.dir.join("x.sqfs"))
        .assert_error_naming("nope");
    assert!(!t.dir.join("x.sqfs").exists());
}

/// `overlay seal FILE.img`: an ext3 overlay image (populated by `mkfs.ext3 -d`, with the
/// kernel's whiteout and opaque marks, which fuse-overlayfs does not write) becomes the same
/// SquashFS layer `seal DIR` makes: its whiteout (a 0:0 character device) hides an image file, its opaque directory
/// (`user.overlay.opaque`) replaces one, and other xattrs and the owner are kept. An image made
/// by `overlay create` and written with debugfs seals too.
#[test]
fn ext3_image_is_sealed_like_a_directory() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    if !have_tools(&["fuse2fs", "mkfs.ext3", "debugfs", "setfattr", "unsquashfs"]) {
        return;
    }
    let seed = t.mkdir("seed");
    t.mkdir("seed/work");
    t.mkdir("seed/upper/bin");
    t.mkdir("seed/upper/suid");
    t.write("seed/upper/new", "from the image\n");
    t.write("seed/upper/suid/only", "x\n");
    // Unprivileged: the kernel lets anyone create a whiteout device.
    nix::sys::stat::mknod(
        &seed.join("upper/bin/true"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o644),
        0,
    )
    .expect("mknod of a whiteout");
    for (path, name, value) in [
        ("upper/suid", "user.overlay.opaque", "y"),
        ("upper/new", "user.note", "kept"),
    ] {
        let st = Command::new("setfattr")
            .args(["-n", name, "-v", value])
            .arg(seed.join(path))
            .status()
            .unwrap();
        assert!(st.success());
    }
    let file = t.dir.join("seeded.img");
    let st = Command::new("mkfs.ext3")
        .args(["-q", "-F", "-d"])
        .arg(&seed)
        .arg(&file)
        .arg("16M")
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let from_img = t.dir.join("img.sqfs");
    let from_dir = t.dir.join("dir.sqfs");
    for (src, out) in [(&file, &from_img), (&seed, &from_dir)] {
        t.rsing()
            .args(["overlay", "seal"])
            .arg(src)
            .arg(out)
            .assert_exit(0);
    }
    // Same entries, kinds, modes and owners as `seal DIR` of the seed (times may differ).
    let listing = |sqfs: &Path| {
        let out = Command::new("unsquashfs")
            .arg("-lls")
            .arg(sqfs)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .filter(|l| l.contains("squashfs-root"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                format!("{} {} {}", f[0], f[1], f[f.len() - 1])
            })
            .collect::<Vec<_>>()
    };
    let listed = listing(&from_img);
    assert_eq!(listed, listing(&from_dir));
    let owner = format!("{}/", crate::util::caller().name);
    assert!(
        listed
            .iter()
            .any(|l| l.starts_with('c') && l.contains(&owner) && l.ends_with("bin/true")),
        "{listed:?}"
    );
    let script = "cat /new; test -e /bin/true || echo gone; ls /suid";
    let out = t.sh_with(["--overlay", &ov(&from_img)], &img, script);
    assert_eq!(out, "from the image\ngone\nonly");

    // An image as `overlay create` makes it, written by debugfs.
    let Some(created) = ext_overlay(&t, "created.img") else {
        return;
    };
    let src = t.write("hello.txt", "hello sealed\n");
    let st = Command::new("debugfs")
        .args(["-w", "-R"])
        .arg(format!("write {} /upper/hello.txt", src.display()))
        .arg(&created)
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let layer = t.dir.join("created.sqfs");
    t.rsing()
        .args(["overlay", "seal"])
        .arg(&created)
        .arg(&layer)
        .assert_exit(0);
    let out = t.sh_with(
        ["--overlay", &ov(&layer)],
        &img,
        "cat /hello.txt; test -d /opt/tools && echo dir",
    );
    assert_eq!(out, "hello sealed\ndir");
    let left = crate::util::processes_matching(&created.display().to_string());
    assert!(left.is_empty(), "fuse2fs left running: {left:?}");

    // Not an overlay: one line, and no output file.
    let junk = t.write("junk.img", "junk");
    let bad = t.dir.join("bad.sqfs");
    t.rsing()
        .args(["overlay", "seal"])
        .arg(&junk)
        .arg(&bad)
        .assert_error_naming("junk.img");
    assert!(!bad.exists());
}

/// `--fakeroot --overlay DIR` (no subid ranges: the seccomp fake root) lets `apt-get install`
/// put a real Debian package into the overlay: apt's drop to `_apt`, dpkg's chowns and
/// setgroups succeed as fakes. The package is there in the next run, not in the image.
#[test]
fn fakeroot_overlay_takes_an_apt_get_install() {
    let t = TestEnv::new();
    let debian = crate::recipe::DEBIAN;
    if !Path::new(debian).join("index.json").exists() {
        crate::util::missing(&format!("{debian} (made by tests/services/debian-base.sh)"));
        return;
    }
    let img = t.dir.join("debian.sif");
    crate::recipe::build(&t)
        .arg("-q")
        .arg(&img)
        .arg(format!("oci:{debian}:bookworm"))
        .stdout_str();
    let before = sha256_file(&img);
    let d = t.dir.join("ov");
    std::fs::create_dir(&d).unwrap();
    let fakeroot = ["--fakeroot", "--overlay", &ov(&d)];
    // The fakes: a chown to an id the namespace does not map succeeds (and changes nothing).
    let script = "chown 1234:1234 /etc/hostname && echo faked; stat -c %u /etc/hostname";
    assert_eq!(t.sh_with(fakeroot, &img, script), "faked\n0");
    let install = "apt-get update -q >/dev/null && \
                   apt-get install -y -q --no-install-recommends hello >/dev/null && echo done";
    let out = t
        .exec_with(fakeroot, &img, ["/bin/sh", "-c", install])
        .timeout(std::time::Duration::from_secs(600))
        .stdout_str();
    assert_eq!(out, "done");
    // As the user, in the next run: the package is in the overlay.
    let o = ["--overlay", &ov(&d)];
    assert_eq!(t.sh_with(o, &img, "hello"), "Hello, world!");
    assert_eq!(t.sh(&img, "command -v hello || echo absent"), "absent");
    assert_eq!(sha256_file(&img), before, "the image file changed");
}
