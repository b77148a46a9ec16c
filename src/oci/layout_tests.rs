//! `oci:` layouts built by testutil and by umoci.

use std::io::{self, Read};

use serde_json::json;

use super::super::store::split_tag;
use super::super::testutil::{
    run_tool, tar_of, tool_available, Compression as C, ImageSpec, Layout, TempDir,
};
use super::super::{resolve_local, LayerBlob, Platform, ResolvedImage};

/// The member names of a layer, read to the end so the digest is checked.
pub(crate) fn layer_names(layer: &LayerBlob) -> io::Result<Vec<String>> {
    let mut archive = tar::Archive::new(layer.open_tar()?);
    let mut names = Vec::new();
    for entry in archive.entries()? {
        names.push(entry?.path()?.display().to_string());
    }
    io::copy(&mut archive.into_inner(), &mut io::sink())?;
    Ok(names)
}

pub(crate) fn resolve(source: &str) -> ResolvedImage {
    resolve_local(source, &Platform::host()).unwrap_or_else(|e| panic!("{source}: {e}"))
}

/// The error for `source` on `platform`, checked to be one line naming `names`.
pub(crate) fn error_of(source: &str, platform: &str, names: &str) -> String {
    let msg = match resolve_local(source, &Platform::parse(platform).unwrap()) {
        Ok(_) => panic!("{source} resolved"),
        Err(e) => e.to_string(),
    };
    assert!(!msg.contains('\n'), "{msg}");
    assert!(msg.contains(names), "{msg:?} does not name {names}");
    msg
}

/// [`error_of`] on the host's platform.
pub(crate) fn fails(source: &str, names: &str) -> String {
    error_of(source, &Platform::host().to_string(), names)
}

fn three_layers() -> ImageSpec {
    ImageSpec::new(vec![
        (
            tar_of(&[("bin/sh", b"#!"), ("etc/os-release", b"ID=test\n")]),
            C::Gzip,
        ),
        (tar_of(&[("etc/hostname", b"box\n")]), C::Zstd),
        (tar_of(&[("app/run", b"go")]), C::None),
    ])
}

#[test]
fn single_image_resolves_with_layers_in_order() {
    let dir = TempDir::new("single");
    let layout = Layout::single(&dir.0, &three_layers(), None);
    let m = &layout.image(&three_layers()); // the same blobs again: the same descriptor
    let source = format!("oci:{}", dir.0.display());
    let image = resolve(&source);
    assert_eq!(image.source, source);
    assert_eq!(
        image.manifest_digest.as_ref().unwrap().to_string(),
        m["digest"]
    );
    assert_eq!(
        image
            .config
            .config()
            .as_ref()
            .unwrap()
            .env()
            .as_ref()
            .unwrap(),
        &["PATH=/bin"]
    );
    assert_eq!(
        super::super::Digest::of(&image.config_raw),
        image.config_digest
    );
    let names: Vec<Vec<String>> = image
        .layers
        .iter()
        .map(|l| layer_names(l).unwrap())
        .collect();
    assert_eq!(
        names,
        [
            vec!["bin/sh", "etc/os-release"],
            vec!["etc/hostname"],
            vec!["app/run"]
        ]
    );
    assert!(image.layers[0].media_type.ends_with("+gzip"));
    // layers can be read again
    assert_eq!(layer_names(&image.layers[1]).unwrap(), ["etc/hostname"]);
    // a tag on an untagged layout is an error that says there are no tags
    fails(
        &format!("{source}:v1"),
        "no image tagged 'v1' (it has no tags)",
    );
}

#[test]
fn tags_select_and_are_listed() {
    let dir = TempDir::new("tags");
    let mut layout = Layout::new(&dir.0);
    for (tag, file) in [("one", "1"), ("two", "2")] {
        let spec = ImageSpec::new(vec![(tar_of(&[(file, b"x")]), C::Gzip)]);
        let m = layout.image(&spec);
        layout.add(m, Some(tag));
    }
    let base = dir.0.display().to_string();
    let image = resolve(&format!("oci:{base}:two"));
    assert_eq!(layer_names(&image.layers[0]).unwrap(), ["2"]);
    assert_eq!(
        layer_names(&resolve(&format!("oci:{base}:one")).layers[0]).unwrap(),
        ["1"]
    );
    fails(
        &format!("oci:{base}"),
        "holds 2 images; name one with :TAG (tags: one, two)",
    );
    fails(
        &format!("oci:{base}:three"),
        "index.json: no image tagged 'three' (tags: one, two)",
    );
}

#[test]
fn multi_platform_index_follows_the_platform() {
    let dir = TempDir::new("multi");
    let mut layout = Layout::new(&dir.0);
    let mut entries = Vec::new();
    for (arch, variant) in [("amd64", None), ("arm64", Some("v8")), ("s390x", None)] {
        let mut spec = ImageSpec::new(vec![(tar_of(&[(arch, b"x")]), C::Gzip)]);
        spec.architecture = arch.to_string();
        spec.variant = variant.map(str::to_string);
        entries.push(layout.image(&spec));
    }
    // an attestation manifest, as BuildKit adds them
    let mut att = layout.blob("application/vnd.oci.image.manifest.v1+json", b"{}");
    att["platform"] = json!({"os": "unknown", "architecture": "unknown"});
    entries.insert(0, att);
    let index = layout.index(entries);
    layout.add(index, Some("latest"));
    let source = format!("oci:{}:latest", dir.0.display());
    for arch in ["amd64", "arm64", "s390x"] {
        let image = resolve_local(&source, &Platform::parse(arch).unwrap()).unwrap();
        assert_eq!(layer_names(&image.layers[0]).unwrap(), [arch]);
        assert_eq!(image.config.architecture().to_string(), arch);
    }
    error_of(
        &source,
        "riscv64",
        "no image for linux/riscv64; available: linux/amd64, linux/arm64/v8, linux/s390x",
    );
}

#[test]
fn untagged_per_platform_entries_are_selected_by_platform() {
    let dir = TempDir::new("untagged");
    let mut layout = Layout::new(&dir.0);
    for arch in ["arm64", "amd64", "ppc64le", "s390x", "riscv64", "386"] {
        let mut spec = ImageSpec::new(vec![(tar_of(&[(arch, b"x")]), C::None)]);
        spec.architecture = arch.to_string();
        spec.variant = None;
        let m = layout.image(&spec);
        layout.add(m, None);
    }
    let image = resolve(&format!("oci:{}", dir.0.display()));
    assert_eq!(
        layer_names(&image.layers[0]).unwrap(),
        [Platform::host().architecture]
    );
}

/// A layout with one gzip layer, and the path of that layer's blob.
fn one_layer_layout(dir: &TempDir) -> (Layout, std::path::PathBuf, serde_json::Value) {
    let spec = ImageSpec::new(vec![(tar_of(&[("a", b"1")]), C::Gzip)]);
    let layout = Layout::single(&dir.0, &spec, None);
    let m = layout.image(&spec);
    let image = resolve(&format!("oci:{}", dir.0.display()));
    let blob = dir
        .0
        .join("blobs/sha256")
        .join(image.layers[0].digest.hex());
    (layout, blob, m)
}

#[test]
fn corrupt_layer_fails_when_read_naming_the_digest() {
    let dir = TempDir::new("corrupt");
    let (_, blob, _) = one_layer_layout(&dir);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[4] ^= 0xff; // gzip's MTIME: the decoder ignores it, only the digest sees it
    std::fs::write(&blob, &bytes).unwrap();
    let image = resolve(&format!("oci:{}", dir.0.display()));
    let layer = &image.layers[0];
    let err = layer_names(layer).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let mut raw = Vec::new();
    let err = layer
        .open()
        .unwrap()
        .read_to_end(&mut raw)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&layer.digest.to_string()) && err.contains("wrong content"),
        "{err}"
    );
}

#[test]
fn corrupt_or_missing_metadata_is_named() {
    let dir = TempDir::new("meta");
    let (layout, blob, m) = one_layer_layout(&dir);
    let source = format!("oci:{}", dir.0.display());
    let hex = blob.file_name().unwrap().to_string_lossy().to_string();

    // a layer blob of the wrong size is caught when resolving
    std::fs::write(&blob, b"short").unwrap();
    fails(
        &source,
        &format!("{}: blob is 5 bytes, the manifest says", blob.display()),
    );
    std::fs::remove_file(&blob).unwrap();
    fails(&source, &format!("blob sha256:{hex} is missing"));

    // the manifest blob with other content
    let manifest = dir
        .0
        .join("blobs/sha256")
        .join(&m["digest"].as_str().unwrap()[7..]);
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[0] = b' ';
    std::fs::write(&manifest, &bytes).unwrap();
    let msg = fails(&source, &manifest.display().to_string());
    assert!(msg.contains("wrong content"), "{msg}");

    // a manifest that is not JSON, stored under its true digest
    let bad = layout.blob("application/vnd.oci.image.manifest.v1+json", b"{not json");
    std::fs::write(
        dir.0.join("index.json"),
        json!({"schemaVersion": 2, "manifests": [bad]}).to_string(),
    )
    .unwrap();
    fails(
        &source,
        &format!("blob {}: invalid JSON", bad["digest"].as_str().unwrap()),
    );

    std::fs::write(dir.0.join("index.json"), b"[").unwrap();
    fails(
        &source,
        &format!("{}: invalid JSON", dir.0.join("index.json").display()),
    );
    std::fs::remove_file(dir.0.join("index.json")).unwrap();
    fails(&source, "index.json is missing");
    std::fs::remove_file(dir.0.join("oci-layout")).unwrap();
    fails(&source, "not an OCI image layout (no oci-layout file)");
    fails("oci:/nonexistent/dir", "/nonexistent/dir: does not exist");
    fails("docker://x", "not a local image source");
}

#[test]
fn dir_and_tag_split_at_the_last_colon_without_slash() {
    assert_eq!(split_tag("/data/img:v1"), ("/data/img", Some("v1")));
    assert_eq!(split_tag("/data/img"), ("/data/img", None));
    assert_eq!(split_tag("/a:b/c"), ("/a:b/c", None));
    assert_eq!(split_tag("img:"), ("img", None));
    assert_eq!(split_tag("a:b:c"), ("a:b", Some("c")));
}

#[test]
fn umoci_layout_resolves() {
    if !tool_available("umoci") {
        return;
    }
    let dir = TempDir::new("umoci");
    let layout = dir.0.join("layout");
    let image = format!("{}:t", layout.display());
    let bundle = dir.0.join("bundle");
    let b = bundle.display().to_string();
    // `umoci insert` (0.4.7) writes a tar without its final padding, which GNU tar rejects
    // too; unpack + repack writes a complete one.
    run_tool(
        "umoci",
        &["init", "--layout", &layout.display().to_string()],
    );
    run_tool("umoci", &["new", "--image", &image]);
    run_tool("umoci", &["unpack", "--rootless", "--image", &image, &b]);
    std::fs::create_dir_all(bundle.join("rootfs/data/sub")).unwrap();
    std::fs::write(bundle.join("rootfs/data/sub/file"), b"hello").unwrap();
    run_tool("umoci", &["repack", "--image", &image, &b]);
    run_tool(
        "umoci",
        &[
            "config",
            "--image",
            &image,
            "--config.env",
            "A=1",
            "--config.cmd",
            "/bin/true",
        ],
    );
    let resolved = resolve(&format!("oci:{image}"));
    assert_eq!(resolved.layers.len(), 1);
    let names = layer_names(&resolved.layers[0]).unwrap();
    assert!(
        names
            .iter()
            .any(|n| n.trim_end_matches('/') == "data/sub/file"),
        "{names:?}"
    );
    let config = resolved.config.config().as_ref().unwrap();
    assert!(config.env().as_ref().unwrap().contains(&"A=1".to_string()));
    assert_eq!(config.cmd().as_ref().unwrap(), &["/bin/true"]);
}
