//! `rsing build`: OCI layouts, archives, directories and SquashFS files become SIF files that
//! run, whose tree equals what `umoci unpack` makes of the same image, that other tools read,
//! and that are reproducible under SOURCE_DATE_EPOCH. Failures leave nothing behind.

use crate::fixtures::{Fixture, BUSYBOX};
use crate::util::oci::{self, Compression, Config, Image, Layer, Layout};
use crate::util::oci::{dir, file, hardlink, opaque, symlink, whiteout};
use crate::util::{have_tools, sha256_file, TestEnv};
use std::path::{Path, PathBuf};

/// Entries that rsing adds to every image when the layers lack them (bind targets and the
/// Apptainer metadata); the tree comparison ignores them there.
const ADDED: &[&str] = &[
    "/dev",
    "/proc",
    "/sys",
    "/root",
    "/home",
    "/tmp",
    "/var",
    "/var/tmp",
    "/etc",
    "/mnt",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/singularity",
    "/environment",
];

/// `rsing build` with a per-test cache; `args` are the options, target and source.
fn build<I, S>(t: &TestEnv, args: I) -> crate::util::RsingCmd
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    t.rsing()
        .env("RSING_CACHEDIR", t.dir.join("cache"))
        .arg("build")
        .args(args)
}

/// A layout at `<test dir>/<name>` holding the one-layer busybox image with `config` as `1`.
fn busybox_layout(t: &TestEnv, sandbox: &Path, name: &str, config: Config) -> Layout {
    let layout = Layout::create(&t.dir.join(name));
    let mut image = oci::busybox_image(sandbox);
    image.config = config;
    layout.add_image("1", &image);
    layout
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn oci_layout_builds_a_sif_that_runs() {
    let t = TestEnv::new();
    let Some(sandbox) = prerequisites(&["siftool"]) else {
        return;
    };
    let mut config = Config::default();
    config.env.push("FOO=bar baz".into());
    config.entrypoint = Some(vec!["/bin/echo".into(), "ep".into()]);
    config.cmd = Some(vec!["default".into(), "cmd".into()]);
    config
        .labels
        .insert("org.example.color".into(), "blue".into());
    let layout = busybox_layout(&t, &sandbox, "layout", config);
    let out = t.cwd.join("out.sif");
    build(&t, ["out.sif", &layout.reference("1")]).assert_exit(0);

    let list = oci::tool("siftool", &["list".as_ref(), out.as_os_str()]);
    assert!(
        list.contains("Def.FILE") && list.matches("JSON.Generic").count() == 2,
        "{list}"
    );
    let offset = oci::squashfs_offset(&out);
    assert_eq!(
        offset % 4096,
        0,
        "partition at {offset} is not 4096-aligned:\n{list}"
    );
    let ours = t.rsing().args(["sif", "list"]).arg(&out).stdout_str();
    assert_eq!(
        ours,
        list.trim_end(),
        "rsing sif list differs from siftool list"
    );

    let hi = t.exec(&out, ["/bin/busybox", "echo", "hi"]).stdout_str();
    assert_eq!(hi, "hi");
    let run = |args: &[&str]| t.rsing().arg("run").arg(&out).args(args).stdout_str();
    assert_eq!(
        run(&[]),
        "ep default cmd",
        "run without arguments: Entrypoint + Cmd"
    );
    assert_eq!(run(&["a", "b c"]), "ep a b c", "arguments replace Cmd");
    assert_eq!(t.sh(&out, "echo \"$FOO\""), "bar baz");

    let json = t.rsing().args(["inspect", "--json"]).arg(&out).stdout_str();
    let v: serde_json::Value = serde_json::from_str(&json).expect("inspect --json prints JSON");
    assert_eq!(v["labels"]["org.example.color"], "blue", "{json}");

    let objects = oci::sif_objects(&out);
    let deffile = String::from_utf8_lossy(&objects["Def.FILE"]).into_owned();
    assert!(
        deffile.contains(&layout.dir.to_string_lossy().into_owned()),
        "{deffile}"
    );
    let oci_config: serde_json::Value =
        serde_json::from_slice(&objects["oci-config.json"]).expect("oci-config.json is JSON");
    assert_eq!(
        oci_config["Entrypoint"],
        serde_json::json!(["/bin/echo", "ep"])
    );
    assert_eq!(oci_config["Env"][1], "FOO=bar baz");
    assert_eq!(oci_config["Labels"]["org.example.color"], "blue");
    let inspect: serde_json::Value = serde_json::from_slice(&objects["inspect-metadata.json"])
        .expect("inspect-metadata.json is JSON");
    assert!(inspect.is_object(), "{inspect}");
}

/// The multi-layer image: every kind of change between layers. The layers are gzip, `middle`
/// and plain tar (umoci 0.4 and docker-archive do not take zstd, so tests that compare with
/// them use gzip there).
fn layered_image(sandbox: &Path, middle: Compression) -> Image {
    let mut base = oci::busybox_entries(sandbox);
    base.extend([
        dir("data").mtime(1_600_000_000),
        file("data/keep", "kept\n").mtime(1_500_000_001),
        file("data/gone", "deleted by layer 2\n"),
        dir("data/gonedir"),
        file("data/gonedir/inner", "deleted with its dir\n"),
        dir("data/opq").mode(0o775),
        file("data/opq/a", "hidden by the opaque marker\n"),
        dir("data/opq/sub"),
        file("data/opq/sub/b", "hidden too\n"),
        file("data/becomes-dir", "a file replaced by a directory\n"),
        dir("data/becomes-file"),
        file("data/becomes-file/x", "a directory replaced by a file\n"),
        file("data/target", "linked from layer 2\n").mtime(1_400_000_000),
        file("data/h1", "two names in one layer\n").mode(0o600),
        hardlink("data/h2", "data/h1"),
        file("data/recreate", "old\n"),
        file("data/suid", "#!/bin/sh\n").mode(0o4755),
        file("data/sgid", "#!/bin/sh\n").mode(0o2711),
        dir("data/sticky").mode(0o1777),
        dir("data/modedir").mode(0o755),
        dir("data/reborn"),
        file("data/reborn/old", "hidden by the whiteout of its dir\n"),
        file("data/t2", "v1\n"),
        file(
            &format!("data/{}", "long-name-".repeat(15)),
            "a GNU long name\n",
        ),
        symlink("data/long-target", &format!("/{}", "target-".repeat(20))),
        file("data/ünïcödé ünd spaces", "utf-8\n"),
    ]);
    let layer2 = vec![
        whiteout("data/gone"),
        whiteout("data/gonedir"),
        opaque("data/opq"),
        file("data/opq/c", "the only file left in opq\n").mtime(1_234_567_890),
        dir("data/becomes-dir"),
        file("data/becomes-dir/inside", "now a directory\n"),
        file("data/becomes-file", "now a file\n"),
        hardlink("data/hl", "data/target"),
        symlink("data/rel", "keep"),
        symlink("data/abs", "/data/keep"),
        symlink("data/dangling", "/no/such/file"),
        whiteout("data/recreate"),
        dir("data/modedir").mode(0o700).mtime(1_300_000_000),
        whiteout("data/never-existed"),
        file("data/big", vec![b'z'; 300_000]).mode(0o640),
        // A whiteout hides only the lower layers: the same layer may recreate the dir.
        whiteout("data/reborn"),
        dir("data/reborn").mtime(1_100_000_000),
        file("data/reborn/new", "recreated in the whiteout's layer\n"),
        hardlink("data/hl2", "data/t2"),
    ];
    let layer3 = vec![
        file("data/recreate", "new\n").mtime(1_650_000_000),
        file("data/keep2", "").mode(0o400),
        // Replacing a file that a layer-2 hard link names leaves the link with the old data.
        file("data/t2", "v3\n"),
    ];
    Image {
        config: Config::default(),
        layers: vec![
            Layer::new(Compression::Gzip, base),
            Layer::new(middle, layer2),
            Layer::new(Compression::Plain, layer3),
        ],
    }
}

/// A layout with the multi-layer image as `layered` (gzip) and `zstd` (zstd middle layer).
fn layered_layout(t: &TestEnv, sandbox: &Path) -> Layout {
    let layout = Layout::create(&t.dir.join("layout"));
    layout.add_image("layered", &layered_image(sandbox, Compression::Gzip));
    layout.add_image("zstd", &layered_image(sandbox, Compression::Zstd));
    layout
}

/// The listing of a SIF's extracted tree without what rsing adds on top of the layers
/// (`oci` is the layers' own tree): /.singularity.d, and the ADDED entries where the layers
/// lack them. Where the layers have an ADDED directory, its mtime may change (rsing puts
/// files into it) and is left out on both sides.
fn comparable(sif: oci::Listing, oci_tree: &mut oci::Listing) -> oci::Listing {
    for path in ADDED {
        if let Some(line) = oci_tree.get_mut(*path) {
            *line = strip_mtime(line);
        }
    }
    sif.into_iter()
        .filter(|(p, _)| p != "/.singularity.d" && !p.starts_with("/.singularity.d/"))
        .filter(|(p, _)| !ADDED.contains(&p.as_str()) || oci_tree.contains_key(p))
        .map(|(p, l)| {
            let l = if ADDED.contains(&p.as_str()) {
                strip_mtime(&l)
            } else {
                l
            };
            (p, l)
        })
        .collect()
}

fn strip_mtime(line: &str) -> String {
    line.split('|')
        .filter(|f| !f.starts_with("mtime="))
        .collect::<Vec<_>>()
        .join("|")
}

/// Builds `source` into `<test dir>/<name>.sif` (with `SOURCE_DATE_EPOCH`, so that what
/// rsing adds has the same time in every build) and lists its extracted partition.
fn build_and_list(t: &TestEnv, name: &str, source: &str) -> (PathBuf, oci::Listing) {
    let sif = t.dir.join(format!("{name}.sif"));
    build(t, [path_arg(&sif), source.to_string()])
        .env("SOURCE_DATE_EPOCH", "1750000000")
        .assert_exit(0);
    let listed = oci::sif_listing(&sif, &t.dir.join(format!("{name}-root")));
    (sif, listed)
}

#[test]
fn layered_tree_matches_umoci_unpack() {
    let t = TestEnv::new();
    let Some(sandbox) = prerequisites(&["umoci", "unsquashfs", "siftool"]) else {
        return;
    };
    let layout = layered_layout(&t, &sandbox);
    let rootfs = oci::umoci_unpack(&layout, "layered", &t.dir.join("bundle"));
    let mut expected = oci::listing(&rootfs);
    // The zstd variant has the same tars, so the same expected tree.
    let (_, listed) = build_and_list(&t, "zstd", &layout.reference("zstd"));
    let actual = comparable(listed, &mut expected);
    oci::assert_same_listing("umoci", &expected, "rsing build (zstd layer)", &actual);
    let (sif, listed) = build_and_list(&t, "layered", &layout.reference("layered"));
    let actual = comparable(listed, &mut expected);
    oci::assert_same_listing("umoci", &expected, "rsing build", &actual);
    // The same tree is what rsing serves at run time.
    let probe =
        "cat /data/keep /data/recreate /data/hl /data/hl2 /data/t2; ls -A /data/opq; ls -A \
                 /data/reborn; stat -c %a /data/suid; test ! -e /data/gone && echo gone";
    assert_eq!(
        t.sh(&sif, probe),
        "kept\nnew\nlinked from layer 2\nv1\nv3\nc\nnew\n4755\ngone"
    );
}

#[test]
fn compress_option_picks_the_squashfs_compressor() {
    let t = TestEnv::new();
    let Some(sandbox) = prerequisites(&["unsquashfs", "siftool"]) else {
        return;
    };
    let layout = busybox_layout(&t, &sandbox, "layout", Config::default());
    for (option, expected) in [
        (None, "zstd"),
        (Some("gzip"), "gzip"),
        (Some("xz"), "xz"),
        (Some("lz4"), "lz4"),
        (Some("zstd:19"), "zstd"),
    ] {
        let out = t.dir.join(format!("{expected}-{}.sif", option.is_some()));
        let mut args: Vec<String> = Vec::new();
        if let Some(o) = option {
            args.extend(["--compress".into(), o.into()]);
        }
        args.extend([path_arg(&out), layout.reference("1")]);
        build(&t, &args).assert_exit(0);
        let stat = oci::unsquashfs_sif(&out, &["-s"], &[]);
        assert!(
            stat.contains(&format!("Compression {expected}")),
            "--compress {option:?}: {stat}"
        );
        let hi = t.exec(&out, ["/bin/busybox", "echo", "hi"]).stdout_str();
        assert_eq!(hi, "hi", "--compress {option:?}");
    }
}

#[test]
fn archives_give_the_same_tree_as_the_layout() {
    let t = TestEnv::new();
    let Some(sandbox) = prerequisites(&["skopeo", "unsquashfs", "siftool"]) else {
        return;
    };
    let layout = layered_layout(&t, &sandbox);
    let oci_archive = t.dir.join("image-oci.tar");
    let docker_archive = t.dir.join("image-docker.tar");
    let src = layout.reference("layered");
    let to_oci = format!("oci-archive:{}:layered", oci_archive.display());
    let to_docker = format!(
        "docker-archive:{}:example/layered:v1",
        docker_archive.display()
    );
    for dest in [&to_oci, &to_docker] {
        oci::tool(
            "skopeo",
            &["copy".as_ref(), "-q".as_ref(), src.as_ref(), dest.as_ref()],
        );
    }
    // The definition file names the source; everything else must be equal.
    let without_deffile = |mut l: oci::Listing| {
        l.remove("/.singularity.d/Singularity");
        l
    };
    let (_, from_layout) = build_and_list(&t, "layout", &src);
    let from_layout = without_deffile(from_layout);
    for (name, source) in [
        ("oci-archive", to_oci.clone()),
        (
            "oci-archive-untagged",
            format!("oci-archive:{}", oci_archive.display()),
        ),
        ("docker-archive", to_docker.clone()),
        (
            "docker-archive-untagged",
            format!("docker-archive:{}", docker_archive.display()),
        ),
    ] {
        let (_, listed) = build_and_list(&t, name, &source);
        oci::assert_same_listing("oci:", &from_layout, name, &without_deffile(listed));
    }
}

/// The busybox sandbox fixture, if it and `tools` are there (else the test is skipped).
fn prerequisites(tools: &[&str]) -> Option<PathBuf> {
    let sandbox = crate::fixtures::get(Fixture::Sandbox)?;
    have_tools(tools).then_some(sandbox)
}

#[test]
fn arch_option_picks_the_manifest_of_a_multiarch_index() {
    let t = TestEnv::new();
    let Some(sandbox) = prerequisites(&["unsquashfs", "siftool"]) else {
        return;
    };
    let layout = Layout::create(&t.dir.join("multi"));
    layout.add_multiarch("multi", &oci::busybox_per_arch(&sandbox));
    let source = layout.reference("multi");
    let host = t.dir.join("host.sif");
    build(&t, [path_arg(&host), source.clone()]).assert_exit(0);
    assert_eq!(
        t.exec(&host, ["cat", "/arch.txt"]).stdout_str(),
        oci::host_arch()
    );
    for arch in ["arm64", "amd64"] {
        let out = t.dir.join(format!("{arch}.sif"));
        build(&t, ["--arch", arch, &path_arg(&out), &source]).assert_exit(0);
        let cat = oci::unsquashfs_sif(&out, &["-cat"], &["/arch.txt"]);
        assert_eq!(cat.trim_end(), arch, "--arch {arch}");
        let list = oci::tool("siftool", &["list".as_ref(), out.as_os_str()]);
        assert!(
            list.contains(&format!("System/{arch})")),
            "--arch {arch}:\n{list}"
        );
    }
    let out_dir = t.mkdir("absent");
    build(
        &t,
        [
            "--arch",
            "s390x",
            &path_arg(&out_dir.join("s.sif")),
            &source,
        ],
    )
    .assert_error_naming("s390x");
    oci::assert_dir_empty(&out_dir);
}

#[test]
fn source_date_epoch_makes_builds_byte_identical() {
    let t = TestEnv::new();
    let Some(sandbox) = prerequisites(&["unsquashfs", "siftool"]) else {
        return;
    };
    let layout = layered_layout(&t, &sandbox);
    let epoch = "1234567890";
    let outs: Vec<PathBuf> = ["a", "b"]
        .iter()
        .map(|d| t.mkdir(d).join("image.sif"))
        .collect();
    for out in &outs {
        build(&t, [path_arg(out), layout.reference("zstd")])
            .env("SOURCE_DATE_EPOCH", epoch)
            .assert_exit(0);
    }
    assert_eq!(
        sha256_file(&outs[0]),
        sha256_file(&outs[1]),
        "two builds with SOURCE_DATE_EPOCH={epoch} differ (cmp {} {})",
        outs[0].display(),
        outs[1].display()
    );
    let time = oci::unsquashfs_sif(&outs[0], &["-mkfs-time"], &[]);
    assert_eq!(time.trim(), epoch, "SquashFS creation time");
}

#[test]
fn directory_squashfs_and_sif_sources_build_images_that_run() {
    let t = TestEnv::new();
    let sandbox = image!(Fixture::Sandbox);
    let sqfs = image!(BUSYBOX);
    let sif = image!(Fixture::SifApptainer);
    if !have_tools(&["siftool"]) {
        return;
    }
    for (name, source) in [("dir", &sandbox), ("sqfs", &sqfs), ("sif", &sif)] {
        let out = t.dir.join(format!("{name}.sif"));
        build(&t, [&out, source]).assert_exit(0);
        oci::tool("siftool", &["list".as_ref(), out.as_os_str()]);
        let run = t.rsing().arg("run").arg(&out).arg("x").stdout_str();
        assert_eq!(run, "runscript-args: x", "built from the {name} source");
        let cat = t.exec(&out, ["cat", "/etc/group"]).stdout_str();
        assert!(
            cat.starts_with("root:x:0:"),
            "built from the {name} source: {cat}"
        );
    }
}

/// `rsing build <out>/image.sif SOURCE` fails naming `thing` and leaves `<out>` empty.
fn assert_build_refused(t: &TestEnv, source: &str, thing: &str) -> String {
    let out = t.mkdir(&format!(
        "out-{}",
        crate::util::sha256_hex(source.as_bytes())
    ));
    let cmd = build(t, [&path_arg(&out.join("image.sif")), source]);
    // Whatever the message, a failure must leave nothing; then the message is checked.
    cmd.assert_exit(255);
    oci::assert_dir_empty(&out);
    cmd.assert_error_naming(thing)
}

#[test]
fn bad_sources_are_named_and_leave_nothing() {
    let t = TestEnv::new();
    let sandbox = image!(Fixture::Sandbox);
    let layout = busybox_layout(&t, &sandbox, "layout", Config::default());
    let missing = t.dir.join("no-such-layout");
    assert_build_refused(
        &t,
        &format!("oci:{}:1", missing.display()),
        "no-such-layout",
    );
    assert_build_refused(&t, &layout.reference("no-such-tag"), "no-such-tag");
    assert_build_refused(&t, "nosuchscheme://x/y", "nosuchscheme://x/y");
    let no_file = path_arg(&t.dir.join("no-such-image.sqfs"));
    assert_build_refused(&t, &no_file, "no-such-image.sqfs");
    let not_image = t.write("not-an-image.txt", "just text\n");
    assert_build_refused(&t, &path_arg(&not_image), "not-an-image.txt");
}

/// A layer blob whose bytes are a valid gzip tar, but not the one the manifest names: only a
/// digest check can tell.
#[test]
fn layer_blob_with_wrong_digest_is_refused() {
    let t = TestEnv::new();
    let sandbox = image!(Fixture::Sandbox);
    let layout = Layout::create(&t.dir.join("layout"));
    let mut image = oci::busybox_image(&sandbox);
    image
        .layers
        .push(Layer::new(Compression::Gzip, vec![file("x", "good\n")]));
    let written = layout.add_image("1", &image);
    let digest = &written.layers[1];
    let evil = Layer::new(Compression::Gzip, vec![file("x", "evil\n")]);
    std::fs::write(layout.blob_path(digest), evil.blob(&evil.tar()).0).unwrap();
    let hex = &digest["sha256:".len()..];
    let line = assert_build_refused(&t, &layout.reference("1"), &hex[..12]);
    assert!(line.to_lowercase().contains("digest"), "{line}");
}

#[test]
fn existing_target_needs_force() {
    let t = TestEnv::new();
    let sandbox = image!(Fixture::Sandbox);
    let layout = busybox_layout(&t, &sandbox, "layout", Config::default());
    let out_dir = t.mkdir("out");
    let target = out_dir.join("exists.sif");
    std::fs::write(&target, "old contents\n").unwrap();
    build(&t, [&path_arg(&target), &layout.reference("1")]).assert_error_naming("exists.sif");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "old contents\n");
    build(&t, ["--force", &path_arg(&target), &layout.reference("1")]).assert_exit(0);
    let hi = t.exec(&target, ["/bin/busybox", "echo", "hi"]).stdout_str();
    assert_eq!(hi, "hi");
    let names: Vec<_> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["exists.sif"],
        "only the target is left in {}",
        out_dir.display()
    );
}

#[test]
fn sandbox_holds_the_same_tree_as_umoci_unpack_and_runs() {
    let t = TestEnv::new();
    let Some(sandbox) = prerequisites(&["umoci"]) else {
        return;
    };
    let layout = layered_layout(&t, &sandbox);
    let rootfs = oci::umoci_unpack(&layout, "layered", &t.dir.join("bundle"));
    let mut expected = oci::listing(&rootfs);
    let target = t.dir.join("sandbox");
    build(
        &t,
        [
            "--sandbox".to_string(),
            path_arg(&target),
            layout.reference("layered"),
        ],
    )
    .env("SOURCE_DATE_EPOCH", "1750000000")
    .assert_exit(0);
    let actual = comparable(oci::listing(&target), &mut expected);
    oci::assert_same_listing("umoci", &expected, "rsing build --sandbox", &actual);
    assert_eq!(t.exec(&target, ["cat", "/data/keep"]).stdout_str(), "kept");
    // An existing sandbox is only replaced with --force; nothing is left beside it.
    build(&t, [path_arg(&target), layout.reference("layered")])
        .arg("--sandbox")
        .assert_fails_naming(&path_arg(&target));
    std::fs::write(target.join("old-marker"), "old").expect("marking the old sandbox");
    build(&t, [path_arg(&target), layout.reference("layered")])
        .args(["--sandbox", "--force"])
        .assert_exit(0);
    assert!(
        !target.join("old-marker").exists(),
        "--force kept the old sandbox"
    );
    assert_eq!(t.exec(&target, ["cat", "/data/keep"]).stdout_str(), "kept");
    let leftovers: Vec<_> = std::fs::read_dir(&t.dir)
        .expect("test dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
