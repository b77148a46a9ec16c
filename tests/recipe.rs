//! `rsing build OUT.sif recipe.def` as the unprivileged user: sections, metadata, multi-stage
//! `%files from`, `%arguments`, the seccomp-faked `chown` recorded in the SquashFS, a real
//! `apt-get install` from deb.debian.org, and bad inputs that leave nothing behind.

use crate::fixtures::Fixture;
use crate::util::{have_tools, missing, TestEnv};
use std::path::{Path, PathBuf};

/// The Debian base made by tests/services/debian-base.sh (install-deps runs it as root).
pub(crate) const DEBIAN: &str = "/var/cache/rsing-test/debian";

/// `rsing build` with a per-test cache.
pub(crate) fn build(t: &TestEnv) -> crate::util::RsingCmd {
    t.rsing_cached("cache")
        .timeout(std::time::Duration::from_secs(600))
        .arg("build")
}

/// Whether the local Debian base and unsquashfs are there (else a visible skip).
fn debian_base() -> bool {
    let there = Path::new(DEBIAN).join("index.json").exists() && have_tools(&["unsquashfs"]);
    if !there {
        missing(&format!(
            "{DEBIAN} (made by tests/services/debian-base.sh) or unsquashfs"
        ));
    }
    there
}

pub(crate) fn p(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// The staging area must be empty after every build, good or bad.
pub(crate) fn assert_no_staging(t: &TestEnv) {
    let dir = t.dir.join("cache/build");
    let list = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    // `steps/` is the build cache; a half-written cache entry is a `.tmp-*` in it.
    let left: Vec<PathBuf> = list(&dir)
        .into_iter()
        .filter(|p| !p.ends_with("steps"))
        .chain(list(&dir.join("steps")).into_iter().filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        }))
        .collect();
    assert!(left.is_empty(), "staging directories left behind: {left:?}");
}

pub(crate) fn unsquashfs_lln(image: &Path) -> String {
    let out = std::process::Command::new("unsquashfs")
        .args(["-lln", "-o"])
        .arg(sif_offset(image))
        .arg(image)
        .output()
        .expect("unsquashfs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Offset of the SquashFS partition in a SIF file (its magic, found by search).
fn sif_offset(image: &Path) -> String {
    let bytes = std::fs::read(image).expect("reading the image");
    let at = bytes
        .windows(4)
        .enumerate()
        .skip(4096)
        .find(|(_, w)| *w == b"hsqs")
        .map(|(i, _)| i)
        .expect("a SquashFS partition");
    at.to_string()
}

pub(crate) fn sandbox() -> Option<PathBuf> {
    let sandbox = crate::fixtures::get(Fixture::Sandbox)?;
    have_tools(&["unsquashfs"]).then_some(sandbox)
}

#[test]
fn deffile_sections_stages_arguments_and_recorded_chown() {
    let t = TestEnv::new();
    let Some(base) = sandbox() else { return };
    t.write("work/data/hello.txt", "hello file\n");
    let def = t.write(
        "work/recipe.def",
        &format!(
            "# a two-stage recipe on the busybox sandbox\n\
Bootstrap: localimage\nFrom: {base}\nStage: one\n\n\
%post\n    mkdir -p /opt/tool\n    echo built-in-one > /opt/tool/out\n    ln -s out /opt/tool/link\n\n\
Bootstrap: localimage\nFrom: {base}\nStage: final\n\n\
%arguments\n    WHO=nobody\n\n\
%setup\n    echo from-setup > \"$APPTAINER_ROOTFS/setup.txt\"\n\n\
%files\n    data/hello.txt /opt/hello.txt\n\n\
%files from one\n    /opt/tool /opt/tool\n\n\
%post\n    echo 'export FROM_POST=posted-{{{{ WHO }}}}' >> $APPTAINER_ENVIRONMENT\n    echo 'post.label yes' >> $APPTAINER_LABELS\n    touch /owned\n    chown 1234:4321 /owned\n    mkdir /d && touch /d/f.new && chown 77 /d/f.new && mv /d/f.new /d/f\n\n\
%environment\n    export GREETING=\"hi {{{{ WHO }}}}\"\n\n\
%runscript\n    echo \"run: $GREETING $*\"\n\n\
%labels\n    org.example.kind recipe-test\n\n\
%test\n    test \"$GREETING\" = \"hi someone\"\n\n\
%help\n    How to use this image.\n",
            base = p(&base)
        ),
    );
    let img = t.dir.join("out.sif");
    // The seccomp mode's chown record (with auto, a user with subid ranges gets real ids:
    // tests/recipe_userns.rs).
    build(&t)
        .args(["--userns-mode", "seccomp"])
        .args(["--build-arg", "WHO=someone"])
        .arg(&img)
        .arg(&def)
        .assert_exit(0);
    assert_no_staging(&t);
    assert_eq!(
        t.exec(&img, ["cat", "/setup.txt"]).stdout_str(),
        "from-setup"
    );
    assert_eq!(
        t.exec(&img, ["cat", "/opt/hello.txt"]).stdout_str(),
        "hello file"
    );
    assert_eq!(
        t.exec(&img, ["cat", "/opt/tool/link"]).stdout_str(),
        "built-in-one"
    );
    assert_eq!(
        t.exec(&img, ["readlink", "/opt/tool/link"]).stdout_str(),
        "out"
    );
    assert_eq!(
        t.sh(&img, "echo $FROM_POST $GREETING"),
        "posted-someone hi someone"
    );
    assert_eq!(
        t.rsing().arg("run").arg(&img).args(["a", "b"]).stdout_str(),
        "run: hi someone a b"
    );
    assert_eq!(
        t.rsing().arg("run-help").arg(&img).stdout_str().trim(),
        "How to use this image."
    );
    t.rsing().arg("test").arg(&img).assert_exit(0);
    let labels = t
        .rsing()
        .args(["inspect", "--labels"])
        .arg(&img)
        .stdout_str();
    assert!(
        labels.contains("org.example.kind") && labels.contains("recipe-test"),
        "{labels}"
    );
    assert!(labels.contains("post.label"), "{labels}");
    let deffile = t
        .rsing()
        .args(["inspect", "--deffile"])
        .arg(&img)
        .stdout_str();
    assert!(deffile.contains("%files from one"), "{deffile}");
    let tree = unsquashfs_lln(&img);
    let line = |name: &str| {
        tree.lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not in the image:\n{tree}"))
            .to_string()
    };
    assert!(
        line("squashfs-root/owned").contains(" 1234/4321 "),
        "{}",
        line("/owned")
    );
    // chown of a temporary name, then rename (what dpkg does): the owner follows the file.
    assert!(
        line("squashfs-root/d/f").contains(" 77/0 "),
        "{}",
        line("/d/f")
    );
    assert!(line("squashfs-root/opt/hello.txt").contains(" 0/0 "));
}

#[test]
fn failing_test_section_fails_the_build_unless_notest() {
    let t = TestEnv::new();
    let Some(base) = sandbox() else { return };
    let def = t.write(
        "work/t.def",
        &format!(
            "Bootstrap: localimage\nFrom: {}\n%test\n    exit 3\n",
            p(&base)
        ),
    );
    let img = t.dir.join("t.sif");
    build(&t).arg(&img).arg(&def).assert_fails_naming("%test");
    assert!(!img.exists());
    assert_no_staging(&t);
    build(&t).arg("--notest").arg(&img).arg(&def).assert_exit(0);
    assert!(img.exists());
    // `rsing test` runs the same script and passes its status through.
    t.rsing().arg("test").arg(&img).assert_exit(3);
}

#[test]
fn bad_recipes_fail_with_one_error_and_leave_nothing() {
    let t = TestEnv::new();
    let Some(base) = sandbox() else { return };
    let base = p(&base);
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "section",
            format!("Bootstrap: localimage\nFrom: {base}\n%pots\n"),
            "bad.def:3: unknown section %pots",
        ),
        (
            "header",
            "Bootstrap: yum\nFrom: x\n".to_string(),
            "bad.def:1: unsupported Bootstrap: yum",
        ),
        (
            "from",
            "Bootstrap: docker\n%post\n  true\n".to_string(),
            "bad.def:1: Bootstrap: docker needs a From: line",
        ),
        (
            "brace",
            format!("Bootstrap: localimage\nFrom: {base}\n%post\n  echo {{{{ X\n"),
            "bad.def:4: unterminated `{{`",
        ),
        (
            "files",
            format!("Bootstrap: localimage\nFrom: {base}\n%files\n  missing.txt /x\n"),
            "bad.def:4: in %files: missing.txt: no such file",
        ),
    ];
    for (what, text, message) in cases {
        let def = t.write("work/bad.def", &text);
        let img = t.dir.join(format!("{what}.sif"));
        let line = build(&t)
            .arg("-q")
            .arg(&img)
            .arg(&def)
            .assert_error_naming(message);
        assert!(line.contains(message), "{what}: {line}");
        assert!(!img.exists(), "{what}: output written");
        assert_no_staging(&t);
    }
    // A failing %post: its output is shown and the step is named.
    let def = t.write(
        "work/post.def",
        &format!("Bootstrap: localimage\nFrom: {base}\n%post\n  echo step-output-here\n  exit 7\n"),
    );
    let img = t.dir.join("post.sif");
    let out = build(&t)
        .arg(&img)
        .arg(&def)
        .assert_fails_naming("%post failed with exit status 7 (");
    let all =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(all.contains("step-output-here"), "{all}");
    assert!(!img.exists());
    assert_no_staging(&t);
}

/// The real thing: apt-get install from deb.debian.org, useradd and chown to the new user,
/// as the unprivileged user with no subuid range.
#[test]
fn apt_get_install_useradd_and_chown_on_debian() {
    let t = TestEnv::new();
    if !debian_base() {
        return;
    }
    let def = t.write(
        "work/apt.def",
        &format!(
            "Bootstrap: oci\nFrom: {DEBIAN}:bookworm\n\n\
%post\n    apt-get update -q\n    apt-get install -y -q --no-install-recommends hello\n    \
useradd -u 2345 -m builder\n    touch /opt/owned\n    chown builder:builder /opt/owned\n    \
echo 'export FROM_POST=yes' >> $APPTAINER_ENVIRONMENT\n\n\
%runscript\n    exec hello -g \"$@\"\n\n%test\n    hello | grep -q 'Hello, world'\n"
        ),
    );
    let img = t.dir.join("apt.sif");
    build(&t)
        .args(["--userns-mode", "seccomp"])
        .arg(&img)
        .arg(&def)
        .assert_exit(0);
    assert_no_staging(&t);
    assert_eq!(t.exec(&img, ["hello"]).stdout_str(), "Hello, world!");
    assert_eq!(
        t.rsing().arg("run").arg(&img).arg("hi there").stdout_str(),
        "hi there"
    );
    assert_eq!(t.sh(&img, "echo $FROM_POST"), "yes");
    assert!(t
        .exec(&img, ["grep", "^builder:x:2345:", "/etc/passwd"])
        .run()
        .status
        .success());
    let tree = unsquashfs_lln(&img);
    let owned = tree
        .lines()
        .find(|l| l.ends_with("/opt/owned"))
        .expect("/opt/owned");
    assert!(owned.contains(" 2345/2345 "), "{owned}");
    let home = tree
        .lines()
        .find(|l| l.ends_with("squashfs-root/home/builder"))
        .expect("home");
    assert!(
        home.contains(" 2345/2345 "),
        "useradd -m chowns the home: {home}"
    );
    // apt's own cache directory belongs to _apt (chowned by apt's maintainer scripts).
    assert!(
        !tree.contains("00rsing-build-sandbox"),
        "the apt setting must not stay in the image"
    );
}

/// The same through a Dockerfile: two stages (COPY --from with a symlink), RUN apt-get,
/// ARG/--build-arg, ENV, COPY globs and .dockerignore, --chown to a user made by RUN,
/// WORKDIR, USER, LABEL, ENTRYPOINT + CMD.
#[test]
fn dockerfile_two_stages_apt_copy_chown_entrypoint() {
    let t = TestEnv::new();
    if !debian_base() {
        return;
    }
    t.write(
        "work/ctx/Dockerfile",
        &format!(
            "ARG BASE=oci:{DEBIAN}:bookworm\n\
FROM ${{BASE}} AS build\n\
RUN apt-get update -q && apt-get install -y -q --no-install-recommends hello\n\
RUN mkdir -p /out && cp /usr/bin/hello /out/ && ln -s hello /out/hi\n\n\
FROM ${{BASE}}\n\
ARG GREETING=hey\n\
ENV GREETING=$GREETING\n\
COPY --from=build /out /opt/bin\n\
COPY *.txt /data/\n\
RUN [\"useradd\", \"-u\", \"3456\", \"app\"]\n\
COPY --chown=app:app owned.dat /data/owned.dat\n\
WORKDIR /data\n\
USER app\n\
LABEL org.example.x=y\n\
EXPOSE 8080\n\
ENTRYPOINT [\"/opt/bin/hello\", \"-g\"]\n\
CMD [\"default greeting\"]\n"
        ),
    );
    t.write("work/ctx/a.txt", "a\n");
    t.write("work/ctx/b.txt", "b\n");
    t.write("work/ctx/secret.txt", "no\n");
    t.write("work/ctx/.dockerignore", "# not this one\nsecret.txt\n");
    t.write("work/ctx/owned.dat", "o\n");
    let img = t.dir.join("d.sif");
    build(&t)
        .args(["--build-arg", "GREETING=hello"])
        .arg(&img)
        .arg(t.dir.join("work/ctx/Dockerfile"))
        .assert_exit(0);
    assert_no_staging(&t);
    assert_eq!(
        t.rsing().arg("run").arg(&img).stdout_str(),
        "default greeting"
    );
    assert_eq!(
        t.rsing().arg("run").arg(&img).arg("given").stdout_str(),
        "given"
    );
    assert_eq!(
        t.sh(
            &img,
            "ls /data | tr '\\n' ' '; echo $GREETING; readlink /opt/bin/hi"
        ),
        "a.txt b.txt owned.dat hello\nhello"
    );
    let labels = t
        .rsing()
        .args(["inspect", "--labels"])
        .arg(&img)
        .stdout_str();
    assert!(labels.contains("org.example.x"), "{labels}");
    let config = t
        .rsing()
        .args(["inspect", "--oci-config"])
        .arg(&img)
        .stdout_str();
    assert!(
        config.contains("8080/tcp") && config.contains("\"User\": \"app\""),
        "{config}"
    );
    let tree = unsquashfs_lln(&img);
    let owned = tree
        .lines()
        .find(|l| l.ends_with("/data/owned.dat"))
        .expect("owned.dat");
    assert!(owned.contains(" 3456/3456 "), "{owned}");
}

#[test]
fn bad_dockerfiles_fail_with_one_error_and_leave_nothing() {
    let t = TestEnv::new();
    let Some(sif) = crate::fixtures::get(Fixture::Sif) else {
        return;
    };
    let from = format!("FROM {}\n", p(&sif));
    t.write("work/ctx/present.txt", "x\n");
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "instr",
            format!("{from}FROBNICATE x\n"),
            "Dockerfile:2: unsupported instruction FROBNICATE",
        ),
        (
            "nofrom",
            "RUN true\n".into(),
            "Dockerfile:1: the first instruction must be FROM",
        ),
        (
            "missing",
            format!("{from}COPY missing.txt /x\n"),
            "Dockerfile:2: COPY missing.txt: no such file or directory",
        ),
        (
            "escape",
            format!("{from}COPY ../outside /x\n"),
            "Dockerfile:2: COPY ../outside: outside the build context",
        ),
        (
            "run",
            format!("{from}RUN echo run-output-here; exit 5\n"),
            "RUN echo run-output-here; exit 5 failed with exit status 5 (ctx/Dockerfile:2)",
        ),
    ];
    for (what, text, message) in cases {
        t.write("work/ctx/Dockerfile", &text);
        let img = t.dir.join(format!("{what}.sif"));
        let out = build(&t)
            .arg("-q")
            .arg(&img)
            .arg("ctx/Dockerfile")
            .assert_fails_naming(message);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("rsing: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{what}: {stderr}");
        assert!(!img.exists(), "{what}: output written");
        assert_no_staging(&t);
    }
}

/// The examples in definitions/, each built with its Debian base swapped for the local one
/// (no registry is reachable from the tests) and its %test run by the build.
#[test]
fn definitions_examples_build_and_run() {
    let t = TestEnv::new();
    if !debian_base() {
        return;
    }
    let Some(sif) = crate::fixtures::get(Fixture::Sif) else {
        return;
    };
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("definitions");
    let localize = |name: &str| -> String {
        std::fs::read_to_string(repo.join(name))
            .expect("reading the example")
            .replace(
                "Bootstrap: docker\nFrom: debian:bookworm-slim",
                &format!("Bootstrap: oci\nFrom: {DEBIAN}:bookworm"),
            )
            .replace(
                "FROM debian:bookworm-slim",
                &format!("FROM oci:{DEBIAN}:bookworm"),
            )
            .replace(
                "BootStrap: docker\nFrom: busybox:1.36",
                &format!("Bootstrap: localimage\nFrom: {}", p(&sif)),
            )
    };
    let built = |name: &str, file: &str| -> PathBuf {
        let src = t.write(&format!("work/{file}"), &localize(name));
        let img = t.dir.join(format!("{name}.sif"));
        build(&t).arg(&img).arg(&src).assert_exit(0);
        assert_no_staging(&t);
        img
    };
    let bb = built("busybox.def", "busybox.def");
    assert_eq!(
        t.rsing().arg("run").arg(&bb).arg("x").stdout_str(),
        "hello from rsing: x"
    );
    let py = built("python-numpy.def", "python-numpy.def");
    t.write(
        "work/s.py",
        "import numpy, sys; print(int(numpy.ones(3).sum()), sys.argv[1])\n",
    );
    assert_eq!(
        t.rsing()
            .arg("run")
            .arg(&py)
            .args(["s.py", "arg"])
            .stdout_str(),
        "3 arg"
    );
    let pyd = built("python-numpy.Dockerfile", "py/python-numpy.Dockerfile");
    assert_eq!(
        t.rsing()
            .arg("run")
            .arg(&pyd)
            .args(["s.py", "d"])
            .stdout_str(),
        "3 d"
    );
    let ms = built("multi-stage.def", "multi-stage.def");
    assert_eq!(
        t.rsing().arg("run").arg(&ms).arg("rsing").stdout_str(),
        "hello from rsing"
    );
    assert!(
        !t.exec(&ms, ["sh", "-c", "command -v gcc"])
            .run()
            .status
            .success(),
        "the compiler stayed in the build stage"
    );
}

/// The build cache: a rebuild after editing the last step re-runs only that step (the earlier
/// steps' stamps stay the same), `--no-cache` re-runs everything, `rsing cache list` shows the
/// entries. Definition files are cached per stage.
#[test]
fn build_cache_reruns_only_the_changed_step() {
    let t = TestEnv::new();
    let Some(sif) = crate::fixtures::get(Fixture::Sif) else {
        return;
    };
    let stamp = |img: &Path, file: &str| t.exec(img, ["cat", file]).stdout_str();
    let dockerfile = |last: &str| {
        format!(
            "FROM {}\nRUN head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /stamp1\nCOPY data.txt /data.txt\nRUN echo {last} > /last\n",
            p(&sif)
        )
    };
    t.write("work/ctx/data.txt", "data\n");
    t.write("work/ctx/Dockerfile", &dockerfile("one"));
    let (a, b, c) = (
        t.dir.join("a.sif"),
        t.dir.join("b.sif"),
        t.dir.join("c.sif"),
    );
    build(&t).arg(&a).arg("ctx/Dockerfile").assert_exit(0);
    t.write("work/ctx/Dockerfile", &dockerfile("two"));
    let out = build(&t).arg(&b).arg("ctx/Dockerfile").assert_exit(0);
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("(cached)"), "{log}");
    assert_eq!(
        stamp(&a, "/stamp1"),
        stamp(&b, "/stamp1"),
        "the first RUN ran again"
    );
    assert_eq!(stamp(&b, "/last"), "two");
    build(&t)
        .args(["--no-cache"])
        .arg(&c)
        .arg("ctx/Dockerfile")
        .assert_exit(0);
    assert_ne!(
        stamp(&a, "/stamp1"),
        stamp(&c, "/stamp1"),
        "--no-cache used the cache"
    );
    // A changed COPY source invalidates the COPY and what follows, not the RUN before it.
    t.write("work/ctx/data.txt", "new data\n");
    build(&t)
        .arg("-F")
        .arg(&c)
        .arg("ctx/Dockerfile")
        .assert_exit(0);
    assert_eq!(stamp(&c, "/data.txt"), "new data");
    assert_eq!(stamp(&a, "/stamp1"), stamp(&c, "/stamp1"));
    let list = t.rsing_cached("cache").args(["cache", "list"]).stdout_str();
    assert!(list.contains("build"), "{list}");

    // Definition files: editing %runscript reuses the stage (its %post does not run again).
    let def = |run: &str| {
        format!(
            "Bootstrap: localimage\nFrom: {}\n%post\n    head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /stamp1\n%runscript\n    echo {run}\n",
            p(&sif)
        )
    };
    t.write("work/c.def", &def("one"));
    let (d, e) = (t.dir.join("d.sif"), t.dir.join("e.sif"));
    build(&t).arg(&d).arg("c.def").assert_exit(0);
    t.write("work/c.def", &def("two"));
    build(&t).arg(&e).arg("c.def").assert_exit(0);
    assert_eq!(stamp(&d, "/stamp1"), stamp(&e, "/stamp1"));
    assert_eq!(t.rsing().arg("run").arg(&e).stdout_str(), "two");
    assert_no_staging(&t);
}

/// Extracts the image's tree (`unsquashfs -d`) into `dir`.
fn unsquash(image: &Path, dir: &Path) {
    let out = std::process::Command::new("unsquashfs")
        .args(["-q", "-n", "-no-xattrs", "-o"])
        .arg(sif_offset(image))
        .arg("-d")
        .arg(dir)
        .arg(image)
        .output()
        .expect("unsquashfs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Dockerfile steps are overlayfs layers: a rebuild that reuses the cached layers and re-runs
/// only the changed last step gives the same tree as a `--no-cache` build (listing with
/// owners and modes, and contents), deletions in later steps (a base file, a directory of an
/// earlier step removed and made again, the base's /etc replaced) are right in the image, and
/// a `chown` in a cached step is still recorded. In both user namespace modes, and with the
/// cached layers (whiteouts, opaque directories) copied instead of mounted, as on file systems
/// that cannot hold an overlay's upper directory.
#[test]
fn cached_layers_give_the_same_tree_as_no_cache() {
    let t = TestEnv::new();
    let Some(sif) = crate::fixtures::get(Fixture::Sif) else {
        return;
    };
    // (name, --userns-mode, the cached rebuild copies the layers instead of mounting them)
    let mut variants = vec![("seccomp", "seccomp", false), ("copy", "seccomp", true)];
    if crate::recipe_userns::has_ranges() && have_tools(&["newuidmap", "newgidmap"]) {
        variants.push(("subid", "subid", false));
    }
    for (mode, userns, copy) in variants {
        let dockerfile = |last: &str| {
            format!(
                "FROM {}\n\
                 ENV MODE={mode}\n\
                 RUN mkdir -p /d/sub && echo a > /d/sub/f && echo keep > /keep && chown 12:34 /keep\n\
                 RUN rm /bin/sed && rm -rf /d && mkdir /d && echo b > /d/new \
                     && rm /etc/group && rm -rf /usr && mkdir -p /usr/bin && echo u > /usr/bin/new \
                     && chown 5:6 /usr/bin/new\n\
                 RUN echo {last} > /last\n",
                p(&sif)
            )
        };
        let ctx = format!("work/ctx-{mode}");
        t.write(&format!("{ctx}/Dockerfile"), &dockerfile("one"));
        let img = |n: &str| t.dir.join(format!("{mode}-{n}.sif"));
        let run = |out: &Path, extra: &[&str], copies: bool| {
            build(&t)
                .env("RSING_BUILD_LAYERS", if copies { "copy" } else { "mount" })
                .args(["--userns-mode", userns])
                .args(extra)
                .arg(out)
                .arg(format!("ctx-{mode}/Dockerfile"))
                .assert_exit(0)
        };
        run(&img("a"), &[], false);
        t.write(&format!("{ctx}/Dockerfile"), &dockerfile("two"));
        let out = run(&img("b"), &[], copy);
        let log = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(log.matches("(cached)").count(), 2, "{mode}: {log}");
        run(&img("c"), &["--no-cache"], false);
        // Modes, owners, sizes and names (file times differ from build to build).
        let listing = |img: &Path| -> String {
            unsquashfs_lln(img)
                .lines()
                .map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let name = f.get(5..).map(|n| n.join(" ")).unwrap_or_default();
                    format!("{} {} {} {name}\n", f[0], f[1], f[2])
                })
                .collect()
        };
        let (b, c) = (listing(&img("b")), listing(&img("c")));
        assert_eq!(b, c, "{mode}: cached and --no-cache listings differ");
        let named = |l: &str, path: &str| {
            l.ends_with(&format!(" {path}")) || l.contains(&format!(" {path} -> "))
        };
        let has = |path: &str| b.lines().any(|l| named(l, path));
        let line = |path: &str| {
            b.lines()
                .find(|l| named(l, path))
                .unwrap_or_else(|| panic!("{mode}: {path} missing:\n{b}"))
                .to_string()
        };
        assert!(
            line("squashfs-root/keep").contains(" 12/34 "),
            "{mode}: {b}"
        );
        assert!(
            line("squashfs-root/usr/bin/new").contains(" 5/6 "),
            "{mode}: {b}"
        );
        let usr: Vec<&str> = b
            .lines()
            .filter(|l| l.contains(" squashfs-root/usr/"))
            .collect();
        assert_eq!(usr.len(), 2, "{mode}: the base's /usr came back: {usr:?}");
        assert!(has("squashfs-root/d/new"), "{mode}: {b}");
        assert!(!has("squashfs-root/d/sub"), "{mode}: {b}");
        assert!(!has("squashfs-root/bin/sed"), "{mode}: {b}");
        assert!(!has("squashfs-root/etc/group"), "{mode}: {b}");
        assert!(has("squashfs-root/bin/sh"), "{mode}: {b}");
        let (db, dc) = (
            t.dir.join(format!("{mode}-tree-b")),
            t.dir.join(format!("{mode}-tree-c")),
        );
        unsquash(&img("b"), &db);
        unsquash(&img("c"), &dc);
        let diff = std::process::Command::new("diff")
            .args(["-r", "--no-dereference"])
            .arg(&db)
            .arg(&dc)
            .output()
            .expect("diff");
        assert!(
            diff.status.success(),
            "{mode}: contents differ:\n{}",
            String::from_utf8_lossy(&diff.stdout)
        );
        assert_eq!(std::fs::read_to_string(db.join("last")).unwrap(), "two\n");
        assert_eq!(std::fs::read_to_string(db.join("d/new")).unwrap(), "b\n");
    }
    assert_no_staging(&t);
}

/// Several named stages: each is kept mounted for `COPY --from` until the build ends, and the
/// build ends (their holders let go in any order).
#[test]
fn named_stages_as_layers_copy_from_each() {
    let t = TestEnv::new();
    let Some(sif) = crate::fixtures::get(Fixture::Sif) else {
        return;
    };
    let base = p(&sif);
    t.write(
        "work/ms/Dockerfile",
        &format!(
            "FROM {base} AS one\nRUN echo 1 > /one\nFROM {base} AS two\nRUN echo 2 > /two\n\
             FROM {base} AS three\nRUN echo 3 > /three\nFROM {base}\nCOPY --from=one /one /one\n\
             COPY --from=two /two /two\nCOPY --from=three /three /three\n"
        ),
    );
    let img = t.dir.join("ms.sif");
    build(&t).arg(&img).arg("ms/Dockerfile").assert_exit(0);
    let out = t.exec(&img, ["cat", "/one", "/two", "/three"]).stdout_str();
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["1", "2", "3"]);
    assert_no_staging(&t);
}
