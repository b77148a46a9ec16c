//! Drop-in for Apptainer users (issue 11): homes and binds reached through symlinks, the site
//! policy, Apptainer's environment variables, flags and commands, and typical job-script lines.

use crate::fixtures::BUSYBOX;
use crate::util::slurm::cluster;
use crate::util::TestEnv;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A home reached through an absolute symlink, as on clusters where `/home -> /gpfs/home`:
/// `<dir>/realhomes/me` holds a marker file, `<link>` points at `<dir>/realhomes`, and the
/// returned HOME is `<link>/me`.
fn symlinked_home(t: &TestEnv, link: &Path) -> PathBuf {
    t.write("realhomes/me/marker", "in the real home");
    std::os::unix::fs::symlink(t.dir.join("realhomes"), link).expect("creating the home link");
    link.join("me")
}

/// exec, run and shell with HOME through a symlink in the test dir and one in /tmp (the
/// second lies inside the /tmp bind, so the destination itself resolves through the link).
#[test]
fn home_reached_through_a_symlink_works_for_exec_run_and_shell() {
    let mut t = TestEnv::new();
    let img = image!(BUSYBOX);
    let in_tmp = t.host_tmp_path("homes");
    for link in [t.dir.join("homes"), in_tmp] {
        let home = symlinked_home(&t, &link);
        let script = "cd && cat marker && echo && echo \"$HOME\" && echo written > out";
        let out = t
            .exec(&img, ["/bin/sh", "-c", script])
            .env("HOME", &home)
            .stdout_str();
        assert_eq!(out, format!("in the real home\n{}", home.display()));
        assert_eq!(
            std::fs::read_to_string(t.dir.join("realhomes/me/out")).unwrap(),
            "written\n"
        );
        let run = t.rsing().arg("run").arg(&img).arg("x").env("HOME", &home);
        assert_eq!(run.stdout_str(), "runscript-args: x");
        let shell = t.rsing().arg("shell").arg(&img).env("HOME", &home);
        let out = shell.stdin("cat ~/marker\nexit 0\n").stdout_str();
        assert!(out.contains("in the real home"), "{out}");
        // The same path given with -B and --home.
        let bind = format!("{}:/mnt/h", home.display());
        assert_eq!(
            t.sh_with(["-B", &bind], &img, "cat /mnt/h/marker"),
            "in the real home"
        );
        let out = t.sh_with(["--home", home.to_str().unwrap()], &img, "cat ~/marker");
        assert_eq!(out, "in the real home");
        std::fs::remove_file(&link).unwrap();
        std::fs::remove_file(t.dir.join("realhomes/me/out")).unwrap();
    }
}

/// The same under Slurm: a batch job whose HOME is reached through a symlink.
#[test]
fn slurm_job_with_a_symlinked_home() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let Some(slurm) = cluster() else { return };
    let home = symlinked_home(&t, &t.dir.join("homes"));
    let script = t.write(
        "job.sbatch",
        "#!/bin/sh\nexec rsing exec \"$IMAGE\" sh -c 'cat ~/marker'\n",
    );
    let cmd = slurm
        .cmd(&t, "sbatch")
        .args(["--parsable", "-o"])
        .arg(t.cwd.join("job.out"))
        .arg(format!("--export=ALL,IMAGE={}", img.display()))
        .env("HOME", &home)
        .arg(&script);
    let id = slurm.submit(cmd);
    let job = slurm.wait_done(&t, id, Duration::from_secs(60));
    let out = std::fs::read_to_string(t.cwd.join("job.out")).unwrap_or_default();
    assert_eq!(job.field("JobState"), "COMPLETED", "{job:#?}\n{out}");
    assert!(out.contains("in the real home"), "{out}");
}

/// A config file with `text`, in the test dir.
fn config(t: &TestEnv, text: &str) -> PathBuf {
    t.write("rsing.conf", text)
}

/// `deny bind path` holds for every way of binding a parent of the denied path: -B, RSING_BIND,
/// APPTAINER_BIND, --home, `-B /`; a sibling of the denied path stays allowed.
#[test]
fn denied_path_cannot_be_reached_through_a_parent() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    t.write("srv/secret/key", "secret");
    t.write("srv/open/f", "open");
    let srv = t.dir.join("srv");
    let secret = srv.join("secret");
    let conf = config(&t, &format!("deny bind path = {}\n", secret.display()));
    let srv_s = srv.to_str().unwrap();
    /// Options, and a host variable, for one attempt.
    type Attempt<'a> = (Vec<String>, Option<(&'a str, String)>);
    let attempts: Vec<Attempt> = vec![
        (vec!["-B".into(), format!("{srv_s}:/mnt")], None),
        (vec!["-B".into(), "/:/host".into()], None),
        (vec!["--home".into(), srv_s.into()], None),
        (vec![], Some(("RSING_BIND", format!("{srv_s}:/mnt")))),
        (vec![], Some(("APPTAINER_BIND", format!("{srv_s}:/mnt")))),
        (vec![], Some(("SINGULARITY_BINDPATH", srv_s.to_string()))),
    ];
    for (opts, var) in attempts {
        let mut cmd = t
            .rsing()
            .arg("--config")
            .arg(&conf)
            .arg("exec")
            .args(&opts)
            .arg(&img)
            .args(["cat", "/mnt/secret/key"]);
        if let Some((k, v)) = &var {
            cmd = cmd.env(k, v);
        }
        let err = cmd.assert_error_naming(secret.to_str().unwrap());
        assert!(err.contains("not allowed"), "{opts:?} {var:?}: {err}");
    }
    let open = format!("{srv_s}/open:/mnt");
    let cmd = t
        .rsing()
        .arg("--config")
        .arg(&conf)
        .arg("exec")
        .args(["-B", &open]);
    assert_eq!(cmd.arg(&img).args(["cat", "/mnt/f"]).stdout_str(), "open");
}

/// The system file's restrictions hold whatever user file is given: a copy of rsing in
/// `<prefix>/bin` reads `<prefix>/etc/rsing/rsing.conf` as the system file, and
/// `--config /dev/null` (or a user file that says `mount home = yes`) changes nothing of it.
#[test]
fn user_config_cannot_relax_the_system_config() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    t.write("denied/f", "x");
    let denied = t.dir.join("denied");
    let prefix = t.dir.join("prefix");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::fs::copy(crate::util::rsing_bin(), prefix.join("bin/rsing")).unwrap();
    t.write(
        "prefix/etc/rsing/rsing.conf",
        &format!("deny bind path = {}\nmount home = no\n", denied.display()),
    );
    let user = t.write("user.conf", "mount home = yes\nshare linger = 0\n");
    let rsing = |conf: &Path| {
        crate::util::RsingCmd::new(&prefix.join("bin/rsing"), vec![], &t.cwd)
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", &t.home)
            .arg("--config")
            .arg(conf)
    };
    let bind = format!("{}:/mnt", denied.display());
    for conf in [Path::new("/dev/null"), &user] {
        rsing(conf)
            .args(["exec", "-B", &bind])
            .arg(&img)
            .arg("true")
            .assert_fails_naming(denied.to_str().unwrap());
    }
    t.write("home/marker", "m");
    let out = rsing(&user)
        .arg("exec")
        .arg(&img)
        .args([
            "sh",
            "-c",
            "cat \"$HOME/marker\" 2>/dev/null || echo no-home",
        ])
        .run();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no-home");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("'mount home = yes' ignored"), "{stderr}");
}

/// An apptainer.conf copied as is: unknown keys give one warning line and the container runs;
/// a bad value of a known key and a relative `bind path` are errors naming file and line.
#[test]
fn unknown_config_keys_warn_once_and_bad_lines_name_file_and_line() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let conf = config(
        &t,
        "allow setuid = yes\nmax loop devices = 256\nmount home = yes\nenable overlay = try\n",
    );
    let out = t
        .rsing()
        .arg("--config")
        .arg(&conf)
        .arg("exec")
        .arg(&img)
        .args(["echo", "ran"])
        .run();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ran\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].starts_with("rsing: warning: config "),
        "{stderr}"
    );
    assert!(warnings[0].contains("'allow setuid'") && warnings[0].contains("'enable overlay'"));
    let bad = [
        ("# x\nmount tmp = maybe\n", "line 2"),
        ("bind path = relative/dir\n", "line 1"),
    ];
    for (text, line) in bad {
        let conf = config(&t, text);
        let cmd = t
            .rsing()
            .arg("--config")
            .arg(&conf)
            .arg("exec")
            .arg(&img)
            .arg("true");
        let err = cmd.assert_error_naming(conf.to_str().unwrap());
        assert!(err.contains(line), "{err}");
    }
}

/// Binding onto `/`, or onto a destination whose `..` climb out of the root, is refused with a
/// message naming the bind.
#[test]
fn bind_onto_the_root_or_out_of_it_is_refused() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    for spec in [
        "/tmp:/",
        "/tmp:/mnt/../..",
        "/tmp:/mnt/../../../oldroot/etc",
    ] {
        let err = t
            .exec_with(["-B", spec], &img, ["true"])
            .assert_error_naming(spec);
        assert!(err.contains("container root"), "{spec}: {err}");
    }
}

/// A destination through an image symlink that climbs with `..` stays inside the container
/// root (resolved as the container sees it), so the bind is where the container looks.
#[test]
fn bind_destination_through_a_symlink_stays_in_the_container() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    t.write("data/f", "bound");
    t.write("site/link-target/.keep", "");
    // A host directory bound first, holding an absolute and a climbing symlink.
    std::os::unix::fs::symlink("/opt/abs", t.dir.join("site/abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../../../../opt/rel", t.dir.join("site/rel")).unwrap();
    let site = format!("{}:/site", t.dir.join("site").display());
    for (link, seen) in [("/site/abs", "/opt/abs/f"), ("/site/rel", "/opt/rel/f")] {
        let data = format!("{}:{link}", t.dir.join("data").display());
        let out = t.sh_with(["-B", &site, "-B", &data], &img, &format!("cat {seen}"));
        assert_eq!(out, "bound", "{link}");
    }
}

/// `--env 'PATH=$PATH:/extra'` is evaluated once in the container (sh is still found);
/// `--no-eval` keeps it literal; comma lists set several variables.
#[test]
fn env_values_are_evaluated_and_split_like_apptainer() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let out = t.sh_with(["--env", "PATH=$PATH:/extra"], &img, "echo \"$PATH\"");
    assert_eq!(
        out,
        "/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/extra"
    );
    let out = t.sh_with(
        ["--env", "A=1,B=2", "--env", "L=x,y"],
        &img,
        "echo $A $B $L",
    );
    assert_eq!(out, "1 2 x,y");
    let cmd = t.exec_with(
        ["--no-eval", "--env", "V=$HOME"],
        &img,
        ["/bin/sh", "-c", "echo \"$V\""],
    );
    assert_eq!(cmd.stdout_str(), "$HOME");
    let cmd = t.exec_with(
        ["--env", "V=${IMGVAR}-x"],
        &img,
        ["/bin/sh", "-c", "echo \"$V\""],
    );
    assert_eq!(cmd.stdout_str(), "from-image-x");
}

/// `--writable-tmpfs` is capped at `sessiondir max size` (64 MiB unless configured).
#[test]
fn writable_tmpfs_is_capped() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let write = |mib: u32| {
        format!("dd if=/dev/zero of=/big bs=1M count={mib} 2>/dev/null && echo fits || echo full")
    };
    let out = t.sh_with(["--writable-tmpfs"], &img, &write(70));
    assert_eq!(out, "full");
    let out = t.sh_with(["--writable-tmpfs"], &img, &write(40));
    assert_eq!(out, "fits");
    let conf = config(&t, "sessiondir max size = 8\n");
    let cmd = t
        .rsing()
        .arg("--config")
        .arg(&conf)
        .args(["exec", "--writable-tmpfs"]);
    let out = cmd.arg(&img).args(["sh", "-c", &write(10)]).stdout_str();
    assert_eq!(out, "full");
}

/// `--contain --no-home`: the warning says where the command really starts.
#[test]
fn contain_without_home_says_where_it_starts() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let out = t.exec_with(["--contain", "--no-home"], &img, ["pwd"]).run();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("starting in /\n") || stderr.ends_with("starting in /"),
        "{stderr}"
    );
}

/// RSING_CONTAINER, APPTAINER_CONTAINER and inspect's `image` are canonical absolute paths.
#[test]
fn image_paths_are_canonical() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let dir = img.parent().unwrap();
    let name = img.file_name().unwrap().to_str().unwrap();
    let dotted = format!(
        "{}/../{}/{name}",
        dir.display(),
        dir.file_name().unwrap().to_str().unwrap()
    );
    let cmd = t.rsing().arg("exec").arg(&dotted).args([
        "sh",
        "-c",
        "echo $RSING_CONTAINER $APPTAINER_CONTAINER",
    ]);
    let expected = format!("{0} {0}", img.display());
    assert_eq!(cmd.stdout_str(), expected);
    let json = t.rsing().args(["inspect", "--json", &dotted]).stdout_str();
    assert!(
        json.contains(&format!("\"image\": \"{}\"", img.display())),
        "{json}"
    );
    // Through a symlink: the container is the target, the name the one the user gave.
    let link = t.dir.join("link.sqfs");
    std::os::unix::fs::symlink(&img, &link).unwrap();
    let cmd = t.exec(&link, ["sh", "-c", "echo $RSING_CONTAINER $RSING_NAME"]);
    assert_eq!(cmd.stdout_str(), format!("{} link.sqfs", img.display()));
}

/// `cache clean`: --dry-run lists and removes nothing; without a terminal and without a flag
/// it refuses; --type picks one kind; -f removes without asking.
#[test]
fn cache_clean_asks_lists_and_filters() {
    let t = TestEnv::new();
    let cache = t.dir.join("cache");
    let blob = cache.join("blobs/sha256").join("ab".repeat(32));
    let image = cache.join("images/k.sif");
    for f in [&blob, &image] {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, "x").unwrap();
    }
    let clean = |args: &[&str]| {
        t.rsing()
            .env("RSING_CACHEDIR", &cache)
            .args(["cache", "clean"])
            .args(args)
    };
    let out = clean(&["--dry-run"]).stdout_str();
    assert!(out.contains("would remove 2 entries"), "{out}");
    assert!(blob.exists() && image.exists());
    clean(&[]).assert_error_naming("--force");
    assert!(blob.exists() && image.exists());
    clean(&["--type", "image"]).stdout_str();
    assert!(blob.exists() && !image.exists());
    clean(&["-f"]).stdout_str();
    assert!(!blob.exists());
}

/// Apptainer's variables: APPTAINERENV_/SINGULARITYENV_ (APPTAINERENV wins, RSINGENV over
/// both), PREPEND/APPEND_PATH, the bind and flag variables (RSING_* wins), and the
/// container's own APPTAINER_*/SINGULARITY_* variables.
#[test]
fn apptainer_variables_are_understood() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    t.write("a/f", "A");
    t.write("r/f", "R");
    let sh = |script: &str| t.exec(&img, ["sh", "-c", script]);
    let out = sh("echo $X $Y $Z")
        .env("SINGULARITYENV_X", "s")
        .env("APPTAINERENV_X", "a")
        .env("SINGULARITYENV_Y", "s")
        .env("APPTAINERENV_Z", "a")
        .env("RSINGENV_Z", "r")
        .stdout_str();
    assert_eq!(out, "a s r");
    let out = sh("echo $PATH")
        .env("APPTAINERENV_PREPEND_PATH", "/pre")
        .env("SINGULARITYENV_APPEND_PATH", "/post")
        .stdout_str();
    assert_eq!(
        out,
        "/pre:/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/post"
    );
    let a = format!("{}:/data", t.dir.join("a").display());
    let r = format!("{}:/data", t.dir.join("r").display());
    assert_eq!(
        sh("cat /data/f").env("APPTAINER_BIND", &a).stdout_str(),
        "A"
    );
    assert_eq!(
        sh("cat /data/f").env("SINGULARITY_BIND", &a).stdout_str(),
        "A"
    );
    let both = sh("cat /data/f")
        .env("APPTAINER_BIND", &a)
        .env("RSING_BIND", &r);
    assert_eq!(both.stdout_str(), "R");
    let inside = "echo $APPTAINER_NAME $SINGULARITY_NAME $APPTAINER_BIND; \
                  [ \"$SINGULARITY_CONTAINER\" = \"$RSING_CONTAINER\" ] && echo same";
    let out = sh(inside).env("APPTAINER_BIND", &a).stdout_str();
    assert_eq!(out, format!("busybox.sqfs busybox.sqfs {a}\nsame"));
    // Flag variables: APPTAINER_CONTAIN gives a fresh /tmp; APPTAINER_CLEANENV drops FOO.
    let mut t2 = TestEnv::new();
    let tmp_file = t2.host_tmp_path("seen");
    std::fs::write(&tmp_file, "x").unwrap();
    let probe = format!(
        "test -e {} && echo host-tmp || echo fresh-tmp; echo \"[$FOO]\"",
        tmp_file.display()
    );
    let out = t2
        .exec(&img, ["sh", "-c", &probe])
        .env("FOO", "f")
        .env("APPTAINER_CONTAIN", "1")
        .env("SINGULARITY_CLEANENV", "true")
        .stdout_str();
    assert_eq!(out, "fresh-tmp\n[]");
    let out = t2
        .exec(&img, ["sh", "-c", &probe])
        .env("FOO", "f")
        .env("APPTAINER_CONTAIN", "1")
        .env("RSING_CONTAIN", "0")
        .stdout_str();
    assert_eq!(out, "host-tmp\n[f]");
    let out = t2
        .exec(&img, ["pwd"])
        .env("APPTAINER_PWD", "/etc")
        .stdout_str();
    assert_eq!(out, "/etc");
}

/// Short flags users type: -H (--home), -f (--fakeroot), --cwd; -w on an image file is refused
/// with a pointer to --writable-tmpfs (tests/overlay.rs has -w on a sandbox).
#[test]
fn apptainer_short_flags() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    t.write("other/f", "other");
    let other = t.dir.join("other");
    let out = t.sh_with(
        ["-H", &format!("{}:/home/x", other.display())],
        &img,
        "cat ~/f",
    );
    assert_eq!(out, "other");
    assert_eq!(t.exec_with(["-f"], &img, ["id", "-u"]).stdout_str(), "0");
    assert_eq!(
        t.exec_with(["--cwd", "/etc"], &img, ["pwd"]).stdout_str(),
        "/etc"
    );
    t.exec_with(["-w"], &img, ["true"])
        .assert_error_naming("--writable-tmpfs");
}

/// `run-help`, `test`, and inspect's --test, --helpfile, --all and `--format apptainer`, on an
/// image with Apptainer's /.singularity.d/runscript.help and /.singularity.d/test.
#[test]
fn run_help_test_and_inspect_sections() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let root = crate::fixtures::rootfs::busybox(&t.dir);
    let write =
        |rel: &str, text: &str, mode: u32| crate::fixtures::rootfs::write(&root, rel, text, mode);
    write(".singularity.d/runscript.help", "Usage: run me\n", 0o644);
    write(
        ".singularity.d/test",
        "#!/bin/sh\necho test-args: \"$@\"\nexit 3\n",
        0o755,
    );
    let rsing = |args: &[&str], image: &Path| t.rsing().args(args).arg(image);
    assert_eq!(rsing(&["run-help"], &root).stdout_str(), "Usage: run me");
    let out = t
        .rsing()
        .arg("test")
        .arg(&root)
        .args(["a", "b"])
        .assert_exit(3);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "test-args: a b\n");
    // An image without them: Apptainer's messages, status 0.
    assert_eq!(
        rsing(&["run-help"], &img).stdout_str(),
        "No help sections were defined for this image"
    );
    assert_eq!(
        rsing(&["test"], &img).stdout_str(),
        "No test script found in container, exiting"
    );
    assert!(rsing(&["inspect", "--test"], &root)
        .stdout_str()
        .contains("echo test-args"));
    assert_eq!(
        rsing(&["inspect", "-H"], &root).stdout_str(),
        "Usage: run me"
    );
    let all: serde_json::Value =
        serde_json::from_str(&rsing(&["inspect", "--all"], &root).stdout_str()).unwrap();
    assert_eq!(all["helpfile"], "Usage: run me\n");
    assert!(all["runscript"]
        .as_str()
        .unwrap()
        .contains("runscript-args"));
    let app: serde_json::Value = serde_json::from_str(
        &rsing(
            &[
                "inspect",
                "--json",
                "--format",
                "apptainer",
                "--runscript",
                "-H",
            ],
            &root,
        )
        .stdout_str(),
    )
    .unwrap();
    let attrs = &app["data"]["attributes"];
    assert_eq!(attrs["helpfile"], "Usage: run me\n");
    assert!(attrs["runscript"]
        .as_str()
        .unwrap()
        .contains("runscript-args"));
    assert_eq!(app["data"]["type"], "container");
}

/// rsing linked as `apptainer` or `singularity` runs their verbs, and names the rsing
/// equivalent (or says it is unsupported) for the others.
#[test]
fn rsing_named_apptainer_or_singularity() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let bin = t.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in ["apptainer", "singularity"] {
        std::os::unix::fs::symlink(crate::util::rsing_bin(), bin.join(name)).unwrap();
        let cmd = |args: &[&str]| {
            crate::util::RsingCmd::new(&bin.join(name), vec![], &t.cwd)
                .env("HOME", &t.home)
                .env("PATH", "/usr/bin:/bin")
                .args(args)
        };
        let out = cmd(&["--silent", "exec"])
            .arg(&img)
            .args(["echo", "ok"])
            .stdout_str();
        assert_eq!(out, "ok", "{name}");
        assert_eq!(
            cmd(&["run"]).arg(&img).arg("x").stdout_str(),
            "runscript-args: x"
        );
        assert!(cmd(&["inspect"]).arg(&img).run().status.success());
        assert!(cmd(&["cache", "list"]).run().status.success());
        let out = cmd(&["instance", "start"]).arg(&img).arg("x").run();
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!("rsing: error: {name} instance:"))
                && err.contains("rsing exec"),
            "{err}"
        );
        let err = cmd(&["frobnicate"]).run();
        assert!(String::from_utf8_lossy(&err.stderr).contains("unknown command"));
    }
}

/// Typical lines of Apptainer job scripts, run through rsing started as `apptainer`: what the
/// container sees must be what Apptainer documents. Each row: host variables, the options
/// before the image, the shell command inside, the expected output. `@D` stands for the test's
/// data directory (holding `f` with "data").
#[test]
fn typical_apptainer_job_script_lines() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let data = t.dir.join("data");
    t.write("data/f", "data");
    let bin = t.dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(crate::util::rsing_bin(), bin.join("apptainer")).unwrap();
    type Row = (
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
        &'static str,
        &'static str,
    );
    let rows: &[Row] = &[
        (
            &[("APPTAINERENV_OMP_NUM_THREADS", "4")],
            &[],
            "echo $OMP_NUM_THREADS",
            "4",
        ),
        (
            &[("SINGULARITYENV_OMP_NUM_THREADS", "2")],
            &[],
            "echo $OMP_NUM_THREADS",
            "2",
        ),
        (
            &[("APPTAINERENV_LD_LIBRARY_PATH", "/opt/lib")],
            &[],
            "echo $LD_LIBRARY_PATH",
            "/opt/lib",
        ),
        (
            &[("APPTAINERENV_PREPEND_PATH", "/opt/bin")],
            &[],
            "echo $PATH",
            "/opt/bin:/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin",
        ),
        (
            &[("APPTAINERENV_APPEND_PATH", "/opt/bin")],
            &[],
            "echo $PATH",
            "/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/opt/bin",
        ),
        (
            &[],
            &["--env", "PREPEND_PATH=/opt/bin"],
            "echo $PATH",
            "/opt/bin:/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin",
        ),
        (
            &[("APPTAINER_BINDPATH", "@D:/mnt/d")],
            &[],
            "cat /mnt/d/f",
            "data",
        ),
        (
            &[("APPTAINER_BIND", "@D:/a,@D:/b:ro")],
            &[],
            "cat /a/f /b/f",
            "datadata",
        ),
        (&[("SINGULARITY_BIND", "@D")], &[], "cat @D/f", "data"),
        (&[], &["-B", "@D:/a,@D:/b"], "cat /a/f /b/f", "datadata"),
        (
            &[],
            &["--bind", "@D:/in:ro"],
            "touch /in/x 2>/dev/null || echo ro",
            "ro",
        ),
        (
            &[],
            &["--env", "PATH=$PATH:/extra"],
            "echo $PATH",
            "/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin:/extra",
        ),
        (&[], &["--env", "A=1,B=2"], "echo $A$B", "12"),
        (
            &[("FOO", "host")],
            &["--cleanenv", "--env", "BAR=x"],
            "echo [$FOO$BAR]",
            "[x]",
        ),
        (&[("FOO", "host")], &[], "echo $FOO", "host"),
        (&[], &["--pwd", "/etc"], "pwd", "/etc"),
        (&[], &["--containall"], "echo $$", "2"),
        (
            &[("APPTAINER_CLEANENV", "1"), ("FOO", "host")],
            &[],
            "echo [$FOO]",
            "[]",
        ),
        (
            &[],
            &["-H", "@D:/home/u"],
            "cat ~/f; echo; echo $HOME",
            "data\n/home/u",
        ),
        (&[], &[], "echo $APPTAINER_NAME", "busybox.sqfs"),
        (
            &[],
            &[],
            "test -n \"$SINGULARITY_CONTAINER\" && echo in",
            "in",
        ),
    ];
    let d = data.to_str().unwrap();
    for (vars, opts, script, expected) in rows {
        let mut cmd = crate::util::RsingCmd::new(&bin.join("apptainer"), vec![], &t.cwd)
            .env("HOME", &t.home)
            .env("PATH", "/usr/bin:/bin")
            .arg("exec")
            .args(opts.iter().map(|o| o.replace("@D", d)));
        for (k, v) in *vars {
            cmd = cmd.env(k, v.replace("@D", d));
        }
        let script = script.replace("@D", d);
        let out = cmd.arg(&img).args(["sh", "-c", &script]).stdout_str();
        assert_eq!(out, *expected, "vars {vars:?} opts {opts:?}: {script}");
    }
}

/// `pull --arch` of an image that has no such platform (a single-platform manifest) is an
/// error naming the platform there is, and writes nothing.
#[test]
fn pull_arch_of_a_missing_platform_fails() {
    use crate::util::oci::{self, Layout};
    use crate::util::registry::{TestRegistry, REGISTRY_TOOLS};
    let t = TestEnv::new();
    let Some(sandbox) = crate::fixtures::get(crate::fixtures::Fixture::Sandbox) else {
        return;
    };
    if !crate::util::have_tools(REGISTRY_TOOLS) {
        return;
    }
    let registry = TestRegistry::start(&t.dir.join("registry"), None);
    let layout = Layout::create(&t.dir.join("layout"));
    layout.add_image("1", &oci::busybox_image(&sandbox));
    registry.push_layout(&layout.dir, "1", "busybox:1");
    let uri = format!("docker://{}", registry.reference("busybox:1"));
    let cmd = t
        .rsing()
        .env("RSING_CACHEDIR", t.dir.join("cache"))
        .args(["pull", "--arch", "s390x", "--name", "out.sif", &uri]);
    let out = cmd.assert_fails_naming("linux/s390x");
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("rsing: error: "))
        .unwrap_or_default();
    assert!(
        line.contains(&format!(
            "only platform there is linux/{}",
            oci::host_arch()
        )),
        "{err}"
    );
    assert!(!err.contains("fetched"), "layers were downloaded: {err}");
    assert!(!t.cwd.join("out.sif").exists());
}

/// Destinations through the image's own symlinks are resolved inside the container root: a
/// link that climbs with `..` stays in the container, and a bind that hides a file rsing must
/// place there is refused with a message naming the bind.
#[test]
fn bind_destination_through_an_image_symlink() {
    let t = TestEnv::new();
    let _ = image!(BUSYBOX);
    let root = crate::fixtures::rootfs::busybox(&t.dir);
    std::fs::create_dir_all(root.join("mnt")).unwrap();
    std::os::unix::fs::symlink("../../../../oldroot/etc", root.join("mnt/rel")).unwrap();
    std::os::unix::fs::symlink("/etc", root.join("mnt/abs")).unwrap();
    t.write("data/f", "bound");
    let data = t.dir.join("data");
    let bind = format!("{}:/mnt/rel", data.display());
    let out = t.sh_with(["-B", &bind], &root, "cat /oldroot/etc/f; cat /mnt/rel/f");
    assert_eq!(out, "boundbound");
    let bind = format!("{}:/mnt/abs", data.display());
    let err = t
        .exec_with(["-B", &bind], &root, ["true"])
        .assert_error_naming(data.to_str().unwrap());
    assert!(err.contains("/etc/passwd"), "{err}");
}

/// On a terminal, `cache clean` asks first: "n" removes nothing, "y" removes everything.
#[test]
fn cache_clean_asks_on_a_terminal() {
    let t = TestEnv::new();
    if !crate::util::have_tools(&["script"]) {
        return;
    }
    let cache = t.dir.join("cache");
    let image = cache.join("images/k.sif");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    std::fs::write(&image, "x").unwrap();
    let clean = |answer: &str| {
        t.rsing()
            .env("RSING_CACHEDIR", &cache)
            .args(["cache", "clean"])
            .on_tty()
            .stdin(answer)
            .stdout_str()
    };
    let out = clean("n\n");
    assert!(
        out.contains("Remove 1 entries") && out.contains("nothing removed"),
        "{out}"
    );
    assert!(image.exists());
    let out = clean("y\n");
    assert!(out.contains("removed 1 entries"), "{out}");
    assert!(!image.exists());
}

/// APPTAINER_CACHEDIR (and SINGULARITY_CACHEDIR) place rsing's cache in `<dir>/rsing`;
/// RSING_CACHEDIR wins.
#[test]
fn apptainer_cachedir_is_used() {
    let t = TestEnv::new();
    let dir = t.dir.join("acache");
    for var in ["APPTAINER_CACHEDIR", "SINGULARITY_CACHEDIR"] {
        let out = t
            .rsing()
            .env(var, &dir)
            .args(["cache", "list"])
            .stdout_str();
        assert!(
            out.ends_with(&format!("in {}/rsing", dir.display())),
            "{var}: {out}"
        );
    }
    let own = t.dir.join("own");
    let cmd = t
        .rsing()
        .env("APPTAINER_CACHEDIR", &dir)
        .env("RSING_CACHEDIR", &own);
    let out = cmd.args(["cache", "list"]).stdout_str();
    assert!(out.ends_with(&format!("in {}", own.display())), "{out}");
}
