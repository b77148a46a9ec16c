//! `oci-archive:` and `docker-archive:` tars built here and by skopeo.

use std::path::Path;

use serde_json::json;

use super::super::layout::tests::{fails, layer_names, resolve};
use super::super::testutil::{
    run_tool, tar_of, tool_available, Compression as C, ImageSpec, Layout, TempDir,
};
use super::super::{Digest, Platform};
use super::split_file_ref;

/// A layout tagged `t` with a gzip and a plain layer.
fn layout_in(dir: &Path) -> Layout {
    let spec = ImageSpec::new(vec![
        (
            tar_of(&[
                ("bin/sh", b"#!"),
                ("etc/passwd", b"root:x:0:0::/:/bin/sh\n"),
            ]),
            C::Gzip,
        ),
        (tar_of(&[("etc/hostname", b"box\n")]), C::None),
    ]);
    Layout::single(dir, &spec, Some("t"))
}

fn expected_names() -> Vec<Vec<String>> {
    vec![
        vec!["bin/sh".into(), "etc/passwd".into()],
        vec!["etc/hostname".into()],
    ]
}

fn names_of(source: &str) -> Vec<Vec<String>> {
    let image = resolve(source);
    image
        .layers
        .iter()
        .map(|l| layer_names(l).unwrap())
        .collect()
}

#[test]
fn oci_archive_is_read_in_place() {
    let dir = TempDir::new("ociarch");
    let layout = layout_in(&dir.0.join("layout"));
    let tar = dir.0.join("image.tar");
    layout.archive(&tar);
    let direct = resolve(&format!("oci:{}:t", layout.dir.display()));
    for source in [
        format!("oci-archive:{}", tar.display()),
        format!("oci-archive:{}:t", tar.display()),
    ] {
        let image = resolve(&source);
        assert_eq!(image.source, source);
        assert_eq!(image.manifest_digest, direct.manifest_digest);
        assert_eq!(image.config_raw, direct.config_raw);
        assert_eq!(names_of(&source), expected_names());
    }
    fails(
        &format!("oci-archive:{}:nope", tar.display()),
        "image.tar:index.json: no image tagged 'nope' (tags: t)",
    );
}

#[test]
fn bad_archives_are_named() {
    let dir = TempDir::new("badarch");
    let layout = layout_in(&dir.0.join("layout"));
    let tar = dir.0.join("image.tar");
    layout.archive(&tar);
    let gz = dir.0.join("image.tar.gz");
    std::fs::write(
        &gz,
        super::super::testutil::compress(&std::fs::read(&tar).unwrap(), C::Gzip),
    )
    .unwrap();
    fails(
        &format!("oci-archive:{}", gz.display()),
        &format!("{}: is a gzip-compressed archive", gz.display()),
    );
    fails(
        &format!("docker-archive:{}", gz.display()),
        "gzip-compressed",
    );
    fails(
        "oci-archive:/nonexistent.tar",
        "/nonexistent.tar: No such file",
    );
    // an OCI archive is not a docker archive
    fails(
        &format!("docker-archive:{}", tar.display()),
        "image.tar: manifest.json is missing",
    );
    // a truncated archive: the blobs at the end are gone
    let bytes = std::fs::read(&tar).unwrap();
    let cut = dir.0.join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    fails(&format!("oci-archive:{}", cut.display()), "cut.tar");
}

#[test]
fn file_and_reference_split() {
    let dir = TempDir::new("split");
    let file = dir.0.join("a:b.tar");
    std::fs::write(&file, b"").unwrap();
    let f = file.display().to_string();
    assert_eq!(split_file_ref(&f), (f.as_str(), None));
    let with_ref = format!("{f}:name:tag");
    assert_eq!(split_file_ref(&with_ref), (f.as_str(), Some("name:tag")));
    assert_eq!(
        split_file_ref("/no/such.tar:x"),
        ("/no/such.tar", Some("x"))
    );
}

/// Writes a `docker save`-style tar: `manifest.json`, the config, and layers named by
/// `layer_name`, with `ID/layer.tar` as a symlink to the first layer when `links`.
fn docker_save(out: &Path, layers: &[Vec<u8>], diff_ids: &[String], tags: &[&str]) {
    let config = serde_json::to_vec(&json!({
        "architecture": Platform::host().architecture, "os": "linux",
        "config": {"Env": ["X=1"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let mut b = tar::Builder::new(std::fs::File::create(out).unwrap());
    let add = |b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&mut b, &config_name, &config);
    let mut names = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let name = format!("{i:064x}/layer.tar");
        add(&mut b, &name, layer);
        names.push(name);
    }
    // the first layer again behind a symlink, as skopeo writes them
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    b.append_link(&mut h, "link/layer.tar", format!("../{:064x}/layer.tar", 0))
        .unwrap();
    names[0] = "link/layer.tar".to_string();
    let manifest = json!([{"Config": config_name, "RepoTags": tags, "Layers": names}]);
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap(),
    );
    b.into_inner().unwrap();
}

#[test]
fn docker_save_layout_uses_diff_ids() {
    let dir = TempDir::new("dsave");
    let layers = vec![
        tar_of(&[("bin/sh", b"#!")]),
        tar_of(&[("etc/hostname", b"x")]),
    ];
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    let tar = dir.0.join("save.tar");
    docker_save(
        &tar,
        &layers,
        &diff_ids,
        &["busybox:latest", "example.com/x/y:1"],
    );
    let t = tar.display();
    for reference in [
        "",
        ":busybox",
        ":docker.io/library/busybox:latest",
        ":example.com/x/y:1",
        ":@0",
    ] {
        let image = resolve(&format!("docker-archive:{t}{reference}"));
        assert!(image.manifest_digest.is_none());
        assert_eq!(image.layers[0].digest.to_string(), diff_ids[0]);
        assert_eq!(
            image.layers[1].media_type,
            "application/vnd.docker.image.rootfs.diff.tar"
        );
        let names: Vec<Vec<String>> = image
            .layers
            .iter()
            .map(|l| layer_names(l).unwrap())
            .collect();
        assert_eq!(names, [["bin/sh"], ["etc/hostname"]]);
    }
    fails(
        &format!("docker-archive:{t}:other"),
        "save.tar:manifest.json: no image 'other' (tags: busybox:latest, example.com/x/y:1)",
    );

    // a diff_id that does not match the layer: found when the layer is read
    let mut wrong = diff_ids.clone();
    wrong[1] = Digest::of(b"other").to_string();
    docker_save(&tar, &layers, &wrong, &[]);
    let image = resolve(&format!("docker-archive:{t}"));
    let err = layer_names(&image.layers[1]).unwrap_err().to_string();
    assert!(err.contains(&wrong[1]), "{err}");
    docker_save(&tar, &layers, &diff_ids[..1], &[]);
    fails(
        &format!("docker-archive:{t}"),
        "2 layers listed, but the config's rootfs has 1 diff_ids",
    );
}

#[test]
fn docker_archive_with_oci_blobs_and_compressed_layers() {
    // Docker 25+ saves an OCI layout plus manifest.json pointing into blobs/
    let dir = TempDir::new("dblobs");
    let layout = layout_in(&dir.0.join("layout"));
    let image = resolve(&format!("oci:{}:t", layout.dir.display()));
    let layers: Vec<String> = image
        .layers
        .iter()
        .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
        .collect();
    let manifest = json!([{
        "Config": format!("blobs/sha256/{}", image.config_digest.hex()),
        "RepoTags": ["img:t"], "Layers": layers,
    }]);
    std::fs::write(layout.dir.join("manifest.json"), manifest.to_string()).unwrap();
    let tar = dir.0.join("d.tar");
    layout.archive(&tar);
    let source = format!("docker-archive:{}:img:t", tar.display());
    let from_docker = resolve(&source);
    assert_eq!(from_docker.config_digest, image.config_digest);
    assert_eq!(from_docker.layers[0].digest, image.layers[0].digest);
    assert!(from_docker.layers[0].media_type.ends_with("tar.gzip"));
    assert_eq!(names_of(&source), expected_names());
}

#[test]
fn skopeo_round_trips() {
    if !tool_available("skopeo") {
        return;
    }
    let dir = TempDir::new("skopeo");
    let layout = layout_in(&dir.0.join("layout"));
    let from = format!("oci:{}:t", layout.dir.display());
    let oci_tar = dir.0.join("b.tar");
    let docker_tar = dir.0.join("c.tar");
    let policy = dir.0.join("policy.json");
    std::fs::write(
        &policy,
        br#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
    )
    .unwrap();
    let policy = format!("--policy={}", policy.display());
    let skopeo = |to: String| {
        run_tool(
            "skopeo",
            &["--insecure-policy", &policy, "copy", "-q", &from, &to],
        )
    };
    skopeo(format!("oci-archive:{}:t", oci_tar.display()));
    skopeo(format!("docker-archive:{}:name:tag", docker_tar.display()));

    let direct = resolve(&from);
    let oci = resolve(&format!("oci-archive:{}:t", oci_tar.display()));
    assert_eq!(oci.config_digest, direct.config_digest);
    assert_eq!(
        names_of(&format!("oci-archive:{}", oci_tar.display())),
        expected_names()
    );

    for reference in ["", ":name:tag", ":docker.io/library/name:tag"] {
        let source = format!("docker-archive:{}{reference}", docker_tar.display());
        let docker = resolve(&source);
        let env = docker
            .config
            .config()
            .as_ref()
            .unwrap()
            .env()
            .clone()
            .unwrap();
        assert_eq!(env, ["PATH=/bin"]);
        // skopeo stores layers uncompressed: their digests are the config's diff_ids
        let diff_ids = docker.config.rootfs().diff_ids().clone();
        let digests: Vec<String> = docker.layers.iter().map(|l| l.digest.to_string()).collect();
        assert_eq!(digests, diff_ids);
        assert_eq!(names_of(&source), expected_names());
    }
}
