//! Hostile and broken inputs (issue 15's corpus): each case ends in bounded time with a
//! non-zero exit and one short `rsing: error:` line that names the input and the problem,
//! never writes control bytes from the input to the terminal, and leaves nothing behind.
//! Registry cases are in the library's tests (src/registry/tests/hostile.rs) and tests/pull.rs.

use crate::fixtures::{Fixture, BUSYBOX};
use crate::util::{sha256_hex, TestEnv};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bytes no message may carry to the terminal: ESC, BEL, CR, C1 CSI, NUL.
const FORBIDDEN: &[u8] = b"\x1b\x07\r\0";

/// Checks stderr: exactly one line, the error, naming `thing`, no raw control bytes, short.
fn assert_one_safe_line(out: &std::process::Output, thing: &str) -> String {
    let stderr = &out.stderr;
    let text = String::from_utf8_lossy(stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got success; stderr: {text}"
    );
    assert!(
        !stderr.iter().any(|b| FORBIDDEN.contains(b)),
        "raw control bytes reached the terminal: {:?}",
        text
    );
    assert!(
        !text.contains("\u{9b}"),
        "C1 CSI reached the terminal: {text:?}"
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "exactly one line: {text:?}");
    assert!(lines[0].starts_with("rsing: error: "), "{text:?}");
    assert!(lines[0].contains(thing), "names {thing}: {text:?}");
    assert!(lines[0].len() < 2200, "short: {} bytes", lines[0].len());
    eprintln!("REPORT: {}", lines[0]);
    lines[0].to_string()
}

/// An OCI layout at `dir` with one image tagged `t`: `config` and these raw layer blobs (with
/// their media types), written as given (no checks, no compression).
fn raw_layout(dir: &Path, config: &[u8], layers: &[(&[u8], &str)]) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    };
    let layers: Vec<_> = layers
        .iter()
        .map(|(b, t)| json!({"mediaType": t, "digest": put(b), "size": b.len()}))
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": put(config), "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": put(&manifest), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": "t"},
    }]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    format!("oci:{}:t", dir.display())
}

fn config_json() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": crate::util::oci::host_arch(), "os": "linux",
        "config": {}, "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap()
}

/// A tar with one entry of `kind` named `name` (raw bytes), linking to `link`.
fn tar_with(name: &[u8], kind: tar::EntryType, link: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(0);
    h.set_mode(0o644);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend([0u8; 1024]);
    tar
}

/// `rsing build OUT SOURCE` with a per-test cache; checks nothing is left at OUT.
fn build_fails(t: &TestEnv, source: &str, thing: &str) -> String {
    let out = t.dir.join("out.sif");
    let started = Instant::now();
    let result = t
        .rsing()
        .env("RSING_CACHEDIR", t.dir.join("cache"))
        .args(["build", &out.to_string_lossy(), source])
        .timeout(Duration::from_secs(60))
        .run();
    assert!(started.elapsed() < Duration::from_secs(60));
    let line = assert_one_safe_line(&result, thing);
    assert!(!out.exists(), "nothing at the output path");
    assert_no_partial_files(&t.dir.join("cache"));
    line
}

/// No `.partial`, staging or temporary files anywhere under `dir`.
fn assert_no_partial_files(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".partial") && !name.contains(".tmp") && !name.starts_with(".stage"),
            "left behind: {}",
            e.path().display()
        );
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            assert_no_partial_files(&e.path());
        }
    }
}

#[test]
fn hostile_tar_names_are_escaped() {
    let t = TestEnv::new();
    let name = b"evil\x1b]0;pwned\x07\x1b[2J\rrsing: error: forged\xff";
    let tar = tar_with(name, tar::EntryType::Link, b"missing\x1b[31m\nx");
    let src = raw_layout(
        &t.dir.join("layout"),
        &config_json(),
        &[(&tar, "application/vnd.oci.image.layer.v1.tar")],
    );
    let line = build_fails(&t, &src, "layout");
    assert!(line.contains("\\x1b"), "the ESC is shown escaped: {line}");
}

#[test]
fn non_gzip_layer_bytes_are_escaped() {
    let t = TestEnv::new();
    let junk = b"\x1b]0;pwned\x07\x1b[2J\r\nrsing: error: forged line\x9b31m";
    let src = raw_layout(
        &t.dir.join("layout"),
        &config_json(),
        &[(junk, "application/vnd.oci.image.layer.v1.tar+gzip")],
    );
    build_fails(&t, &src, "layer 1");
}

#[test]
fn oversized_manifest_in_a_layout_is_refused() {
    let t = TestEnv::new();
    let dir = t.dir.join("layout");
    let src = raw_layout(&dir, &config_json(), &[]);
    // Replace the manifest by a 5 MiB one (digest and size in the index updated to match).
    let mut big = br#"{"schemaVersion":2,"annotations":{"x":""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', 5 << 20));
    big.extend(br#""}}"#);
    let hex = sha256_hex(&big);
    std::fs::write(dir.join("blobs/sha256").join(&hex), &big).unwrap();
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{hex}"), "size": big.len(),
        "annotations": {"org.opencontainers.image.ref.name": "t"},
    }]});
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    let line = build_fails(&t, &src, "4194304 bytes");
    assert!(
        line.contains(&hex[..12]) || line.contains("layout"),
        "{line}"
    );
}

#[test]
fn fifo_image_does_not_hang() {
    let t = TestEnv::new();
    let fifo = t.dir.join("image.sif");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for args in [
        vec![
            "exec".to_string(),
            fifo.display().to_string(),
            "/bin/true".into(),
        ],
        vec!["sif".into(), "list".into(), fifo.display().to_string()],
        vec!["inspect".into(), fifo.display().to_string()],
        vec![
            "build".into(),
            t.dir.join("o.sif").display().to_string(),
            format!("oci-archive:{}", fifo.display()),
        ],
    ] {
        let started = Instant::now();
        let out = t.rsing().args(&args).timeout(Duration::from_secs(20)).run();
        assert!(started.elapsed() < Duration::from_secs(15), "{args:?} hung");
        let line = assert_one_safe_line(&out, "image.sif");
        assert!(
            line.contains("FIFO") || line.contains("not a regular file"),
            "{args:?}: {line}"
        );
    }
}

/// The busybox SIF with its primary partition's descriptor size set by `size`.
fn sif_with_partition_size(t: &TestEnv, name: &str, size: impl Fn(i64) -> i64) -> PathBuf {
    let sif = image_or_skip(Fixture::Sif);
    let Some(sif) = sif else {
        return PathBuf::new();
    };
    let mut bytes = std::fs::read(&sif).unwrap();
    let le = |b: &[u8], at: usize| i64::from_le_bytes(b[at..at + 8].try_into().unwrap());
    let total = le(&bytes, 88) as usize;
    let table = le(&bytes, 96) as usize;
    let len = (le(&bytes, 104) as usize) / total.max(1);
    let mut patched = false;
    for slot in 0..total {
        let d = table + slot * len;
        let data_type = i32::from_le_bytes(bytes[d..d + 4].try_into().unwrap());
        if bytes[d + 4] == 1 && data_type == 0x4004 {
            let new = size(le(&bytes, d + 25));
            bytes[d + 25..d + 33].copy_from_slice(&new.to_le_bytes());
            patched = true;
        }
    }
    assert!(patched, "the fixture has a partition descriptor");
    let out = t.dir.join(name);
    std::fs::write(&out, bytes).unwrap();
    out
}

fn image_or_skip(f: Fixture) -> Option<PathBuf> {
    crate::fixtures::get(f)
}

#[test]
fn sif_partition_smaller_than_its_squashfs_is_refused() {
    let t = TestEnv::new();
    for (name, size, why) in [
        ("zero.sif", 0i64, "is empty (size 0)"),
        ("short.sif", 8192, "holds a SquashFS of"),
        ("tiny.sif", 20, "too small for a SquashFS superblock"),
    ] {
        let img = sif_with_partition_size(&t, name, |_| size);
        if img.as_os_str().is_empty() {
            return;
        }
        let out = t
            .exec(&img, ["/bin/true", &t.marker()])
            .timeout(Duration::from_secs(30))
            .run();
        let line = assert_one_safe_line(&out, name);
        assert!(
            line.contains("primary partition") && line.contains(why),
            "{line}"
        );
        t.assert_host_clean(&t.marker(), &img);
    }
}

/// SquashFS superblock field offsets (little-endian u64).
const DIRECTORY_TABLE_START: usize = 72;

#[test]
fn corrupt_directory_table_names_the_image_and_the_problem() {
    let t = TestEnv::new();
    let Some(sqfs) = image_or_skip(BUSYBOX) else {
        return;
    };
    let mut bytes = std::fs::read(&sqfs).unwrap();
    let at = u64::from_le_bytes(
        bytes[DIRECTORY_TABLE_START..DIRECTORY_TABLE_START + 8]
            .try_into()
            .unwrap(),
    ) as usize;
    // The first metadata block's payload: garbage for every compressor.
    for (i, b) in bytes[at + 2..at + 66].iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37) ^ 0x5a;
    }
    let img = t.dir.join("corrupt-dirs.sqfs");
    std::fs::write(&img, bytes).unwrap();
    let out = t
        .exec(&img, ["/bin/true", &t.marker()])
        .timeout(Duration::from_secs(60))
        .run();
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{text}");
    let error = text
        .lines()
        .find(|l| l.starts_with("rsing: error: "))
        .unwrap_or_else(|| panic!("no error line: {text}"));
    assert!(
        error.contains("corrupt-dirs.sqfs"),
        "names the image: {error}"
    );
    assert!(
        error.contains("corrupt SquashFS") && !error.ends_with("Input/output error"),
        "says what is wrong, not just EIO: {error}"
    );
    eprintln!("REPORT: {error}");
    t.assert_host_clean(&t.marker(), &img);
}

/// The busybox sandbox as a zstd SquashFS with its inode table stored uncompressed (`-noI`),
/// and inode blocks replaced by a zstd frame of 1 MiB of zeros (about 50 bytes, not declaring
/// its size) marked compressed: 128 times the 8 KiB a metadata block may hold. `at_root`: the
/// block holding the root inode (met when the image is opened); else every other block (met
/// by the lookups inside the running container).
fn metadata_bomb_image(t: &TestEnv, name: &str, at_root: bool) -> Option<PathBuf> {
    let sandbox = crate::fixtures::get(Fixture::Sandbox)?;
    if !crate::util::have_tools(&["mksquashfs"]) {
        return None;
    }
    let img = t.dir.join(name);
    let st = std::process::Command::new("mksquashfs")
        .arg(&sandbox)
        .arg(&img)
        .args([
            "-noappend",
            "-quiet",
            "-no-progress",
            "-comp",
            "zstd",
            "-noI",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let bomb = zstd::stream::encode_all(&vec![0u8; 1 << 20][..], 3).unwrap();
    let mut b = std::fs::read(&img).unwrap();
    let le = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize;
    let (start, end) = (le(&b, 64), le(&b, DIRECTORY_TABLE_START));
    let root = start + (le(&b, 32) >> 16);
    let (mut at, mut bombed) = (start, 0);
    while at + 2 < end {
        let hdr = u16::from_le_bytes([b[at], b[at + 1]]);
        let len = usize::from(hdr & 0x7fff);
        assert!(hdr & 0x8000 != 0, "stored inode block");
        if (at == root) == at_root && len >= bomb.len() {
            b[at..at + 2].copy_from_slice(&(bomb.len() as u16).to_le_bytes());
            b[at + 2..at + 2 + bomb.len()].copy_from_slice(&bomb);
            bombed += 1;
        }
        at += 2 + len;
    }
    assert!(bombed > 0, "an inode block to put the bomb in");
    std::fs::write(&img, b).unwrap();
    Some(img)
}

/// `rsing exec IMG /bin/true`, which must end (however) within 20 s.
fn true_in_bounded_time(t: &TestEnv, img: &std::path::Path) -> std::process::Output {
    let started = Instant::now();
    let out = t
        .exec(img, ["/bin/true", &t.marker()])
        .timeout(Duration::from_secs(60))
        .run();
    assert!(started.elapsed() < Duration::from_secs(20), "bounded time");
    out
}

/// A bomb met when the image is opened: one line naming the image, the block and the limit.
#[test]
fn decompression_bomb_in_the_image_is_one_line_and_no_hang() {
    let t = TestEnv::new();
    let Some(img) = metadata_bomb_image(&t, "bomb.sqfs", true) else {
        return;
    };
    let out = true_in_bounded_time(&t, &img);
    let line = assert_one_safe_line(&out, "bomb.sqfs");
    assert!(
        line.contains("metadata block") && line.contains("more than the 8192 bytes"),
        "{line}"
    );
    t.assert_host_clean(&t.marker(), &img);
}

/// Bombs met by reads inside the running container: the image server answers EIO at once
/// (no hang), each failure is one `rsing: warning:` line naming the image and the bomb, and
/// the command fails.
#[test]
fn decompression_bombs_met_inside_the_container_fail_fast() {
    let t = TestEnv::new();
    let Some(img) = metadata_bomb_image(&t, "inner-bomb.sqfs", false) else {
        return;
    };
    let out = true_in_bounded_time(&t, &img);
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(
        !out.stderr.iter().any(|b| FORBIDDEN.contains(b)),
        "{text:?}"
    );
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().all(|l| l.starts_with("rsing: ")),
        "one format: {text}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("rsing: warning: ")
            && l.contains("inner-bomb.sqfs")
            && l.contains("more than the 8192 bytes")),
        "names the image and the bomb: {text}"
    );
    let mut unique = lines.clone();
    unique.dedup();
    assert_eq!(unique.len(), lines.len(), "each warning once: {text}");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("rsing: error: ") && l.contains("inner-bomb.sqfs")),
        "the error names the image: {text}"
    );
    t.assert_host_clean(&t.marker(), &img);
}
