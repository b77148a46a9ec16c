//! Tests of the SIF reader/writer against the apptainer/sif golden files
//! (tests/fixtures/sif) and, when installed, Debian's `siftool`.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::format::{GO_ZERO_TIME, GROUP_FLAG, V2_DATA_OFFSET};
use super::*;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sif")
}

fn fixture(name: &str) -> PathBuf {
    fixture_dir().join(name)
}

fn open_fixture(name: &str) -> (File, SifFile) {
    SifFile::open_path(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A scratch directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "rsing-sif-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn create(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap()
}

fn write_file(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap();
}

fn read_path(path: &Path) -> Result<SifFile> {
    SifFile::open_path(path).map(|(_, s)| s)
}

// ---------------------------------------------------------------------------------------------
// Fixtures

#[test]
fn every_fixture_reads() {
    let mut count = 0;
    for entry in fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("sif") {
            continue;
        }
        count += 1;
        let (_, sif) = SifFile::open_path(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        let h = &sif.header;
        assert_eq!(h.version, "01");
        assert_eq!(h.descriptors_total, 48);
        assert_eq!(h.descriptors_offset, 4096);
        assert_eq!(h.descriptors_size, 48 * 585);
        assert_eq!(
            h.descriptors_free,
            48 - sif.descriptors.len() as i64,
            "{path:?}"
        );
        let len = fs::metadata(&path).unwrap().len() as i64;
        assert_eq!(h.data_offset + h.data_size, len, "{path:?}");
        let mut buf = vec![0u8; 2048];
        let n = crate::sif::read::read_full_at(&File::open(&path).unwrap(), &mut buf, 0).unwrap();
        assert!(is_sif(&buf[..n]));
    }
    assert!(count >= 15, "only {count} fixtures found");
}

#[test]
fn empty_fixtures() {
    let (_, sif) = open_fixture("empty.sif");
    assert!(sif.descriptors.is_empty());
    assert_eq!(sif.header.id, [0; 16]);
    assert_eq!(sif.header.created_at, GO_ZERO_TIME);
    assert_eq!(sif.header.modified_at, GO_ZERO_TIME);
    assert_eq!(sif.header.arch, Arch::UNKNOWN);
    assert_eq!(sif.header.data_offset, 32176);
    assert_eq!(sif.header.data_size, 0);
    assert!(sif.header.launch_script.is_empty());
    assert!(matches!(
        sif.primary_partition(),
        Err(Error::NoPrimaryPartition)
    ));
    assert_eq!(
        sif.primary_partition().unwrap_err().to_string(),
        "SIF has no primary system partition"
    );

    let (_, sif) = open_fixture("empty-id.sif");
    assert_eq!(
        sif.header.id_string(),
        "3fa802cc-358b-45e3-bcc0-69dc7a45f9f8"
    );

    let (_, sif) = open_fixture("empty-launch-script.sif");
    assert_eq!(sif.header.launch_script, b"#!/usr/bin/env run-script\n");
}

#[test]
fn one_group_fixture() {
    // siftool list one-group.sif:
    // 1    |1       |NONE    |32768-32772               |FS (Raw/System/386)
    // 2    |1       |NONE    |36864-40960               |FS (Squashfs/*System/386)
    let (file, sif) = open_fixture("one-group.sif");
    assert_eq!(sif.header.arch, Arch::I386);
    assert_eq!(sif.header.arch.go_name(), "386");
    assert_eq!(sif.header.descriptors_free, 46);
    assert_eq!(sif.header.data_offset, 32176);
    assert_eq!(sif.descriptors.len(), 2);

    let d1 = &sif.descriptors[0];
    assert_eq!(d1.id, 1);
    assert_eq!(d1.group_id, 0xF000_0001);
    assert_eq!(d1.group(), Some(1));
    assert_eq!(d1.linked_id, 0);
    assert_eq!(d1.link(), Link::None);
    assert_eq!((d1.offset, d1.size), (32768, 4));
    assert_eq!(d1.size_with_padding, 32768 - 32176 + 4);
    assert_eq!(d1.name, "");
    assert_eq!(
        d1.partition,
        Some(PartitionInfo {
            fs_type: FsType::Raw,
            part_type: PartType::System,
            arch: Arch::I386
        })
    );
    assert_eq!(d1.type_label(), "FS (Raw/System/386)");

    let d2 = &sif.descriptors[1];
    assert_eq!(d2.id, 2);
    assert_eq!((d2.offset, d2.size), (36864, 4096));
    assert_eq!(d2.type_label(), "FS (Squashfs/*System/386)");

    let prim = sif.primary_partition().unwrap();
    assert_eq!(prim.id, 2);
    let data = sif.read_object(&file, prim).unwrap();
    assert_eq!(data.len(), 4096);
    assert_eq!(&data[..4], b"hsqs");
    assert!(sif.find(DataType::Partition, "").is_some());
    assert!(sif.find(DataType::Deffile, "").is_none());
    assert_eq!(sif.get(1), Some(d1));
}

#[test]
fn two_groups_fixture() {
    let (_, sif) = open_fixture("two-groups.sif");
    assert_eq!(sif.descriptors.len(), 3);
    let d3 = &sif.descriptors[2];
    assert_eq!(d3.group_id, 0xF000_0002);
    assert_eq!((d3.offset, d3.size), (40960, 262144));
    assert_eq!(d3.type_label(), "FS (Ext3/System/amd64)");
    assert_eq!(sif.primary_partition().unwrap().id, 2);
}

#[test]
fn legacy_signed_fixture() {
    let (_, sif) = open_fixture("one-group-signed-legacy.sif");
    let h = &sif.header;
    assert_eq!(h.launch_script, b"#!/usr/bin/env run-singularity\n");
    assert_eq!(h.id_string(), "6ecc76b7-a497-4f7f-9ebd-8da2a04c6be1");
    assert_eq!(h.created_at, 1590175859); // 2020-05-22 19:30:59 UTC
    assert_eq!(h.modified_at, 1592684199); // 2020-06-20 20:16:39 UTC
    assert_eq!(h.data_offset, 32768);
    assert_eq!(h.descriptors_free, 45);
    let sig = &sif.descriptors[2];
    assert_eq!(sig.data_type, DataType::Signature);
    assert_eq!((sig.offset, sig.end()), (40960, 41569));
    assert_eq!(sig.link(), Link::Object(2));
    assert_eq!(sig.signature.as_ref().unwrap().hash_type, HashType::Sha384);
    assert_eq!(sig.type_label(), "Signature (SHA-384)");

    let (_, sif) = open_fixture("one-group-signed-legacy-group.sif");
    let sig = sif.descriptors.last().unwrap();
    assert_eq!(sig.group_id, GROUP_FLAG);
    assert_eq!(sig.group(), None);
    assert_eq!(sig.link(), Link::Group(1));
}

#[test]
fn signed_pgp_fixture() {
    // siftool info 3 one-group-signed-pgp.sif: Linked ID 1 (G), SHA-256, entity 12045C8C…
    let (file, sif) = open_fixture("one-group-signed-pgp.sif");
    let sig = sif.get(3).unwrap();
    assert_eq!(sig.group(), None);
    assert_eq!(sig.link(), Link::Group(1));
    assert_eq!((sig.offset, sig.size), (40960, 1048));
    let info = sig.signature.as_ref().unwrap();
    assert_eq!(info.hash_type, HashType::Sha256);
    let fp: String = info
        .fingerprint
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect();
    assert_eq!(fp, "12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84");
    let body = sif.read_object(&file, sig).unwrap();
    assert!(body.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----"));
}

#[test]
fn one_object_fixtures() {
    let (file, sif) = open_fixture("one-object-time.sif");
    assert_eq!(sif.header.created_at, 1593475316); // 2020-06-30T00:01:56Z
    let d = sif.find(DataType::GenericJson, "data.json").unwrap();
    assert_eq!((d.offset, d.size), (V2_DATA_OFFSET, 2));
    assert_eq!(d.created_at, 1593475316);
    assert_eq!(sif.read_object(&file, d).unwrap(), b"{}");
    assert_eq!(d.type_label(), "JSON.Generic");

    let (_, sif) = open_fixture("one-object-crypt-message.sif");
    let d = &sif.descriptors[0];
    assert_eq!(
        d.type_label(),
        "Cryptographic Message (OpenPGP/Clear Signature)"
    );
    assert_eq!(d.size, 4);

    let (_, sif) = open_fixture("one-object-sbom.sif");
    assert_eq!(sif.descriptors[0].type_label(), "SBOM (cyclonedx-json)");
    assert_eq!(sif.descriptors[0].end(), 32630);

    let (_, sif) = open_fixture("one-object-oci-blob.sif");
    let d = &sif.descriptors[0];
    assert_eq!(d.data_type, DataType::OciBlob);
    assert_eq!(d.size, 847);
    let digest = d.oci_digest.as_deref().unwrap();
    assert!(digest.starts_with("sha256:a88b15e95042f7d5"), "{digest}");
    assert_eq!(digest.len(), 7 + 64);

    let (_, sif) = open_fixture("one-object-oci-root-index.sif");
    assert_eq!(sif.descriptors[0].data_type, DataType::OciRootIndex);
}

// ---------------------------------------------------------------------------------------------
// Writer

fn deterministic(layout: Layout) -> WriterOptions {
    WriterOptions {
        deterministic: true,
        layout,
        ..Default::default()
    }
}

fn write_sif(path: &Path, w: SifWriter) {
    let mut f = create(path);
    w.write_to(&mut f).unwrap();
}

#[test]
fn writer_matches_golden_files() {
    let dir = TempDir::new("golden");

    // Nothing: identical to empty.sif.
    let p = dir.path("empty.sif");
    write_sif(&p, SifWriter::new(deterministic(Layout::V2)));
    assert_eq!(
        fs::read(&p).unwrap(),
        fs::read(fixture("empty.sif")).unwrap()
    );

    // One GenericJSON object.
    let p = dir.path("json.sif");
    let mut w = SifWriter::new(deterministic(Layout::V2));
    w.add_object(Object::bytes(
        DataType::GenericJson,
        "data.json",
        b"{}".to_vec(),
    ));
    write_sif(&p, w);
    assert_eq!(
        fs::read(&p).unwrap(),
        fs::read(fixture("one-object-generic-json.sif")).unwrap()
    );

    // one-group.sif rebuilt from its own objects.
    let (file, src) = open_fixture("one-group.sif");
    let p = dir.path("one-group.sif");
    let mut w = SifWriter::new(deterministic(Layout::V2));
    for d in &src.descriptors {
        let pi = d.partition.unwrap();
        w.add_object(Object::partition(
            pi.fs_type,
            pi.part_type,
            pi.arch,
            ObjectSource::Bytes(src.read_object(&file, d).unwrap()),
        ));
    }
    write_sif(&p, w);
    assert_eq!(
        fs::read(&p).unwrap(),
        fs::read(fixture("one-group.sif")).unwrap()
    );
}

/// Payload file: 10000 bytes, the object is bytes 100..5100.
fn payload(dir: &TempDir) -> (File, Vec<u8>) {
    let data: Vec<u8> = (0..10000u32).map(|i| (i * 7 % 251) as u8).collect();
    let p = dir.path("payload");
    write_file(&p, &data);
    (File::open(&p).unwrap(), data[100..5100].to_vec())
}

fn sample_writer(dir: &TempDir, opts: WriterOptions) -> (SifWriter, Vec<u8>) {
    let (pf, part) = payload(dir);
    let mut w = SifWriter::new(opts);
    w.add_object(Object::bytes(
        DataType::Deffile,
        "",
        b"Bootstrap: docker\nFrom: busybox\n".to_vec(),
    ));
    w.add_object(Object::bytes(
        DataType::GenericJson,
        "inspect-metadata.json",
        b"{\"a\":1}".to_vec(),
    ));
    w.add_object(Object::bytes(
        DataType::GenericJson,
        "oci-config.json",
        b"{}".to_vec(),
    ));
    w.add_object(Object::partition(
        FsType::Squashfs,
        PartType::PrimSys,
        Arch::ARM64,
        ObjectSource::File {
            file: pf,
            offset: 100,
            len: 5000,
        },
    ));
    (w, part)
}

fn check_sample(path: &Path, layout: Layout, part: &[u8]) -> SifFile {
    let (file, sif) = SifFile::open_path(path).unwrap();
    let h = &sif.header;
    assert_eq!(h.arch, Arch::ARM64);
    assert_eq!(sif.descriptors.len(), 4);
    assert_eq!(h.descriptors_free, 44);
    let len = fs::metadata(path).unwrap().len();
    assert_eq!((h.data_offset + h.data_size) as u64, len);
    let ids: Vec<u32> = sif.descriptors.iter().map(|d| d.id).collect();
    assert_eq!(ids, [1, 2, 3, 4]);
    assert!(sif.descriptors.iter().all(|d| d.group_id == 0xF000_0001));

    let def = sif.find(DataType::Deffile, "").unwrap();
    assert_eq!(
        sif.read_object(&file, def).unwrap(),
        b"Bootstrap: docker\nFrom: busybox\n"
    );
    let cfg = sif.find(DataType::GenericJson, "oci-config.json").unwrap();
    assert_eq!(sif.read_object(&file, cfg).unwrap(), b"{}");
    let prim = sif.primary_partition().unwrap();
    assert_eq!(prim.id, 4);
    assert_eq!(sif.read_object(&file, prim).unwrap(), part);
    assert_eq!(prim.offset % 4096, 0);

    let mut prev_end = h.data_offset as u64;
    for d in &sif.descriptors {
        assert_eq!(d.size_with_padding, d.end() - prev_end);
        prev_end = d.end();
    }
    match layout {
        Layout::V2 => {
            assert_eq!(h.data_offset, 32176);
            assert_eq!(def.offset, 32176);
            assert_eq!(
                sif.descriptors[1].offset,
                32176 + b"Bootstrap: docker\nFrom: busybox\n".len() as u64
            );
            assert_eq!(prim.offset, 32768);
        }
        Layout::Legacy => {
            assert_eq!(h.data_offset, 32768);
            let offs: Vec<u64> = sif.descriptors.iter().map(|d| d.offset).collect();
            assert_eq!(offs, [32768, 36864, 40960, 45056]);
        }
    }
    sif
}

#[test]
fn round_trip_both_layouts() {
    for layout in [Layout::V2, Layout::Legacy] {
        let dir = TempDir::new("rt");
        let opts = WriterOptions {
            launch_script: b"#!/usr/bin/env run-singularity\n".to_vec(),
            layout,
            ..Default::default()
        };
        let (w, part) = sample_writer(&dir, opts);
        let p = dir.path("out.sif");
        write_sif(&p, w);
        let sif = check_sample(&p, layout, &part);
        let h = &sif.header;
        assert_eq!(h.launch_script, b"#!/usr/bin/env run-singularity\n");
        assert_ne!(h.id, [0; 16]);
        assert_eq!(h.id[6] >> 4, 4, "UUID version 4");
        assert_eq!(h.id[8] & 0xc0, 0x80, "RFC 4122 variant");
        assert!(h.created_at > 1_700_000_000);
        assert_eq!(sif.descriptors[0].created_at, h.created_at);
    }
}

#[test]
fn deterministic_output_is_identical() {
    for layout in [Layout::V2, Layout::Legacy] {
        let dir = TempDir::new("det");
        let mut outs = Vec::new();
        for i in 0..2 {
            let (w, part) = sample_writer(&dir, deterministic(layout));
            let p = dir.path(&format!("out{i}.sif"));
            write_sif(&p, w);
            let sif = check_sample(&p, layout, &part);
            assert_eq!(sif.header.id, [0; 16]);
            assert_eq!(sif.header.created_at, GO_ZERO_TIME);
            outs.push(fs::read(&p).unwrap());
        }
        assert_eq!(outs[0], outs[1]);
    }
}

#[test]
fn writer_overwrites_longer_file_and_honours_created_at() {
    let dir = TempDir::new("over");
    let p = dir.path("out.sif");
    write_file(&p, &vec![0xAAu8; 100_000]);
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    let mut w = SifWriter::new(WriterOptions {
        deterministic: true,
        created_at: Some(1_600_000_000),
        ..Default::default()
    });
    w.add_object(Object::bytes(DataType::Generic, "x", vec![1, 2, 3]));
    w.write_to(&mut f).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 32176 + 3);
    let sif = read_path(&p).unwrap();
    assert_eq!(sif.header.created_at, 1_600_000_000);
    assert_eq!(sif.descriptors[0].modified_at, 1_600_000_000);
    // Padding between header and descriptor table is zero again.
    let bytes = fs::read(&p).unwrap();
    assert!(bytes[128..4096].iter().all(|&b| b == 0));
}

#[test]
fn writer_rejects_bad_objects() {
    let dir = TempDir::new("bad-w");
    let p = dir.path("x.sif");
    let try_write = |w: SifWriter| {
        let mut f = create(&p);
        w.write_to(&mut f)
    };

    let mut w = SifWriter::new(WriterOptions::default());
    for _ in 0..2 {
        w.add_object(Object::partition(
            FsType::Squashfs,
            PartType::PrimSys,
            Arch::AMD64,
            ObjectSource::Bytes(vec![0; 10]),
        ));
    }
    assert!(matches!(try_write(w), Err(Error::InvalidObject(_))));

    let mut w = SifWriter::new(WriterOptions::default());
    w.add_object(Object::bytes(DataType::Partition, "", vec![1]));
    assert!(matches!(try_write(w), Err(Error::InvalidObject(_))));

    let w = SifWriter::new(WriterOptions {
        launch_script: vec![b'#'; 32],
        ..Default::default()
    });
    assert!(matches!(try_write(w), Err(Error::InvalidObject(_))));

    let mut w = SifWriter::new(WriterOptions::default());
    w.add_object(Object::bytes(DataType::Generic, "n".repeat(128), vec![1]));
    assert!(matches!(try_write(w), Err(Error::InvalidObject(_))));

    // A file source shorter than the requested range.
    let (pf, _) = payload(&dir);
    let mut w = SifWriter::new(WriterOptions::default());
    w.add_object(Object::new(
        DataType::Generic,
        "",
        ObjectSource::File {
            file: pf,
            offset: 9000,
            len: 5000,
        },
    ));
    assert!(matches!(try_write(w), Err(Error::InvalidObject(_))));
}

#[test]
fn writer_grows_descriptor_table() {
    let dir = TempDir::new("many");
    for layout in [Layout::V2, Layout::Legacy] {
        let p = dir.path("many.sif");
        let mut w = SifWriter::new(deterministic(layout));
        for i in 0..60u8 {
            w.add_object(Object::bytes(DataType::Generic, format!("o{i}"), vec![i]));
        }
        write_sif(&p, w);
        let (file, sif) = SifFile::open_path(&p).unwrap();
        assert_eq!(sif.header.descriptors_total, 60);
        assert_eq!(sif.header.descriptors_free, 0);
        assert!(sif.header.data_offset >= 4096 + 60 * 585);
        let d = sif.find(DataType::Generic, "o59").unwrap();
        assert_eq!(sif.read_object(&file, d).unwrap(), [59]);
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[test]
fn bad_inputs_give_errors() {
    let dir = TempDir::new("bad");
    let one_group = fs::read(fixture("one-group.sif")).unwrap();

    let p = dir.path("zero");
    write_file(&p, b"");
    assert!(matches!(read_path(&p), Err(Error::NotSif)));
    assert_eq!(read_path(&p).unwrap_err().to_string(), "not a SIF file");

    let p = dir.path("text");
    write_file(&p, "hello world\n".repeat(500).as_bytes());
    assert!(matches!(read_path(&p), Err(Error::NotSif)));

    let p = dir.path("short-header");
    write_file(&p, &one_group[..60]);
    assert!(matches!(read_path(&p), Err(Error::Corrupt(_))));

    let p = dir.path("cut-in-table");
    write_file(&p, &one_group[..10000]);
    let e = read_path(&p).unwrap_err();
    assert!(matches!(e, Error::Corrupt(_)), "{e}");
    assert_eq!(
        e.to_string(),
        "corrupt SIF: descriptor table extends past end of file"
    );

    let p = dir.path("cut-in-data");
    write_file(&p, &one_group[..40000]);
    let e = read_path(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        "corrupt SIF: descriptor 2 points past end of file"
    );

    let mut b = one_group.clone();
    b[4096 + 585 + 17..4096 + 585 + 25].copy_from_slice(&i64::MAX.to_le_bytes());
    let p = dir.path("huge-offset");
    write_file(&p, &b);
    let e = read_path(&p).unwrap_err();
    assert_eq!(
        e.to_string(),
        "corrupt SIF: descriptor 2 points past end of file"
    );

    let mut b = one_group.clone();
    b[4096 + 25..4096 + 33].copy_from_slice(&(-1i64).to_le_bytes());
    let p = dir.path("negative-size");
    write_file(&p, &b);
    assert!(matches!(read_path(&p), Err(Error::Corrupt(_))));

    let mut b = one_group.clone();
    b[42..45].copy_from_slice(b"02\0");
    let p = dir.path("version");
    write_file(&p, &b);
    let e = read_path(&p).unwrap_err();
    assert!(
        matches!(&e, Error::UnsupportedVersion(v) if v == "02"),
        "{e}"
    );

    let mut b = one_group.clone();
    b[88..96].copy_from_slice(&(1i64 << 40).to_le_bytes());
    let p = dir.path("many-descriptors");
    write_file(&p, &b);
    assert!(matches!(read_path(&p), Err(Error::Corrupt(_))));

    let mut b = one_group.clone();
    b[96..104].copy_from_slice(&(-5i64).to_le_bytes());
    let p = dir.path("negative-table-offset");
    write_file(&p, &b);
    assert!(matches!(read_path(&p), Err(Error::Corrupt(_))));

    // Duplicate IDs.
    let mut b = one_group.clone();
    b[4096 + 585 + 5..4096 + 585 + 9].copy_from_slice(&1u32.to_le_bytes());
    let p = dir.path("dup-id");
    write_file(&p, &b);
    assert!(matches!(read_path(&p), Err(Error::Corrupt(_))));

    // Two primary partitions.
    let mut b = one_group.clone();
    b[4096 + 201 + 4..4096 + 201 + 8].copy_from_slice(&2i32.to_le_bytes());
    let p = dir.path("two-prim");
    write_file(&p, &b);
    let sif = read_path(&p).unwrap();
    assert!(matches!(
        sif.primary_partition(),
        Err(Error::MultiplePrimaryPartitions)
    ));

    let p = dir.path("dir");
    fs::create_dir(&p).unwrap();
    assert!(read_path(&p).is_err());
    assert!(matches!(read_path(&dir.path("missing")), Err(Error::Io(_))));
}

#[test]
fn read_object_refuses_huge_objects() {
    let (file, sif) = open_fixture("one-group.sif");
    let mut d = sif.descriptors[1].clone();
    d.size = MAX_OBJECT_READ + 1;
    assert!(matches!(
        sif.read_object(&file, &d),
        Err(Error::TooLarge { id: 2, .. })
    ));
    // A descriptor that (no longer) fits the file.
    let mut d = sif.descriptors[1].clone();
    d.offset = 40000;
    assert!(matches!(sif.read_object(&file, &d), Err(Error::Corrupt(_))));
}

#[test]
fn mutated_files_never_panic() {
    let dir = TempDir::new("fuzz");
    let base = fs::read(fixture("one-group-signed-pgp.sif")).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let p = dir.path("m.sif");
    for _ in 0..300 {
        let mut b = base.clone();
        for _ in 0..(next() % 8 + 1) {
            // Mostly the header and the first descriptors.
            let pos = if next() % 2 == 0 {
                (next() % 128) as usize
            } else {
                4096 + (next() % (3 * 585)) as usize
            };
            b[pos] = next() as u8;
        }
        if next() % 4 == 0 {
            b.truncate((next() as usize) % b.len());
        }
        write_file(&p, &b);
        if let Ok((f, sif)) = SifFile::open_path(&p) {
            for d in &sif.descriptors {
                let _ = sif.read_object(&f, d);
                let _ = d.type_label();
            }
            let _ = sif.primary_partition();
        }
    }
}

#[test]
fn sniffing() {
    let b = fs::read(fixture("empty.sif")).unwrap();
    assert!(is_sif(&b));
    assert!(is_sif(&b[..64]));
    assert!(!is_sif(&b[..40]));
    assert!(!is_sif(b"#!/bin/sh\necho hi\n"));
    assert!(!is_sif(b""));
    let mut v = vec![b' '; 4096];
    v[2039..2048].copy_from_slice(b"SIF_MAGIC");
    assert!(is_sif(&v));
    let mut v = vec![b' '; 4096];
    v[2040..2049].copy_from_slice(b"SIF_MAGIC");
    assert!(!is_sif(&v));
}

// ---------------------------------------------------------------------------------------------
// Cross-checks with siftool

/// `true` when `siftool` can be run; otherwise skips (or fails when CI=true).
fn have_tool(tool: &str, arg: &str) -> bool {
    let ok = Command::new(tool)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required when CI=true");
        }
        eprintln!("note: {tool} not installed; skipping cross-check");
    }
    ok
}

fn run(tool: &str, args: &[&str]) -> String {
    let o = Command::new(tool).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// Parse `siftool list` rows: (id, group, link, start, end, type).
fn siftool_list(path: &Path) -> Vec<(String, String, String, u64, u64, String)> {
    let out = run("siftool", &["list", path.to_str().unwrap()]);
    out.lines()
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            let (s, e) = f[3].split_once('-').unwrap();
            (
                f[0].to_string(),
                f[1].to_string(),
                f[2].to_string(),
                s.parse().unwrap(),
                e.parse().unwrap(),
                f[4].to_string(),
            )
        })
        .collect()
}

fn header_field(out: &str, key: &str) -> Option<String> {
    out.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|r| r.trim_start_matches(':').trim().to_string())
}

/// Our reading agrees with `siftool list` for a file.
fn assert_agrees_with_siftool(path: &Path) {
    let sif = read_path(path).unwrap();
    let rows = siftool_list(path);
    assert_eq!(rows.len(), sif.descriptors.len(), "{path:?}");
    for (row, d) in rows.iter().zip(&sif.descriptors) {
        assert_eq!(row.0, d.id.to_string());
        let group = d.group().map_or("NONE".to_string(), |g| g.to_string());
        assert_eq!(row.1, group);
        assert_eq!((row.3, row.4), (d.offset, d.end()), "{path:?} id {}", d.id);
        if !matches!(d.data_type, DataType::OciBlob | DataType::OciRootIndex) {
            assert_eq!(row.5, d.type_label(), "{path:?}");
        }
        let link = match d.link() {
            Link::None => "NONE".to_string(),
            Link::Object(id) => id.to_string(),
            Link::Group(g) => format!("{g:<4}(G)"),
        };
        assert_eq!(row.2, link);
    }
    let hdr = run("siftool", &["header", path.to_str().unwrap()]);
    let arch = header_field(&hdr, "Primary Architecture");
    if sif.header.arch.is_unknown() {
        assert_eq!(arch, None);
    } else {
        assert_eq!(arch.as_deref(), Some(sif.header.arch.go_name()));
    }
    assert_eq!(
        header_field(&hdr, "Descriptors Free").unwrap(),
        sif.header.descriptors_free.to_string()
    );
    assert_eq!(
        header_field(&hdr, "Data Offset").unwrap(),
        sif.header.data_offset.to_string()
    );
    if sif.header.id != [0; 16] {
        assert_eq!(header_field(&hdr, "ID").unwrap(), sif.header.id_string());
    }
}

#[test]
fn siftool_reads_fixtures_like_we_do() {
    if !have_tool("siftool", "version") {
        return;
    }
    for entry in fs::read_dir(fixture_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) == Some("sif") {
            assert_agrees_with_siftool(&path);
        }
    }
}

#[test]
fn siftool_reads_our_files() {
    if !have_tool("siftool", "version") {
        return;
    }
    for (layout, det) in [
        (Layout::V2, false),
        (Layout::Legacy, false),
        (Layout::V2, true),
        (Layout::Legacy, true),
    ] {
        let dir = TempDir::new("st-ours");
        let opts = WriterOptions {
            deterministic: det,
            layout,
            launch_script: b"#!/usr/bin/env run-singularity\n".to_vec(),
            ..Default::default()
        };
        let (mut w, _) = sample_writer(&dir, opts);
        let mut sig = Object::bytes(DataType::Signature, "", b"sig".to_vec());
        sig.group = None;
        sig.link = Link::Group(1);
        sig.extra = {
            let mut e = 1i32.to_le_bytes().to_vec();
            e.extend_from_slice(&[0xAB; 20]);
            e
        };
        w.add_object(sig);
        let p = dir.path("ours.sif");
        write_sif(&p, w);
        assert_agrees_with_siftool(&p);

        let rows = siftool_list(&p);
        assert_eq!(rows[3].5, "FS (Squashfs/*System/arm64)");
        assert_eq!(rows[4].5, "Signature (SHA-256)");
        let hdr = run("siftool", &["header", p.to_str().unwrap()]);
        assert_eq!(
            header_field(&hdr, "Launch Script").as_deref(),
            Some("#!/usr/bin/env run-singularity")
        );
        let info = run("siftool", &["info", "2", p.to_str().unwrap()]);
        assert!(info.contains("JSON.Generic"), "{info}");
        // siftool can dump an object back byte for byte.
        let dumped = Command::new("siftool")
            .args(["dump", "2", p.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(dumped.stdout, b"{\"a\":1}");
    }
}

#[test]
fn we_read_siftool_files() {
    if !have_tool("siftool", "version") {
        return;
    }
    let dir = TempDir::new("st-theirs");
    let p = dir.path("theirs.sif");
    let ps = p.to_str().unwrap();
    let def = dir.path("recipe.def");
    write_file(&def, b"Bootstrap: scratch\n");
    let json = dir.path("config.json");
    write_file(&json, b"{\"x\":true}");

    // A real squashfs when mksquashfs is there, else some bytes standing in for one.
    let sq = dir.path("root.sqfs");
    let root = dir.path("root");
    fs::create_dir_all(root.join("etc")).unwrap();
    write_file(&root.join("etc/hello.txt"), b"hello from squashfs\n");
    let made = Command::new("mksquashfs")
        .args([root.to_str().unwrap(), sq.to_str().unwrap(), "-noappend"])
        .args(["-quiet", "-no-progress"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !made {
        eprintln!("note: mksquashfs not available; using a stand-in payload");
        write_file(&sq, &b"hsqs".repeat(3000));
    }

    run("siftool", &["new", ps]);
    run(
        "siftool",
        &["add", "--datatype", "1", ps, def.to_str().unwrap()],
    );
    run(
        "siftool",
        &[
            "add",
            "--datatype",
            "6",
            "--groupid",
            "1",
            "--filename",
            "oci-config.json",
            ps,
            json.to_str().unwrap(),
        ],
    );
    run(
        "siftool",
        &[
            "add",
            "--datatype",
            "4",
            "--parttype",
            "2",
            "--partfs",
            "1",
            "--partarch",
            "2",
            "--groupid",
            "1",
            ps,
            sq.to_str().unwrap(),
        ],
    );
    assert_agrees_with_siftool(&p);

    let (file, sif) = SifFile::open_path(&p).unwrap();
    assert_eq!(sif.header.arch, Arch::AMD64);
    assert_eq!(sif.header.data_offset, 32176);
    // siftool 2.8 names objects only when given --filename.
    let def_d = sif.find(DataType::Deffile, "").unwrap();
    assert_eq!(def_d.offset, 32176);
    assert_eq!(def_d.group(), None);
    assert_eq!(
        sif.read_object(&file, def_d).unwrap(),
        b"Bootstrap: scratch\n"
    );
    let cfg = sif.find(DataType::GenericJson, "oci-config.json").unwrap();
    assert_eq!(cfg.group(), Some(1));
    assert_eq!(sif.read_object(&file, cfg).unwrap(), b"{\"x\":true}");
    let prim = sif.primary_partition().unwrap();
    assert_eq!(prim.offset, 32768);
    assert_eq!(
        sif.read_object(&file, prim).unwrap(),
        fs::read(&sq).unwrap()
    );
    assert_eq!(
        prim.partition.unwrap(),
        PartitionInfo {
            fs_type: FsType::Squashfs,
            part_type: PartType::PrimSys,
            arch: Arch::AMD64
        }
    );
    assert!(sif.header.created_at > 1_600_000_000);
    assert_ne!(sif.header.id, [0; 16]);
}

#[test]
fn an_overlay_partition_is_appended_in_place() {
    let dir = TempDir::new("append");
    let (w, part) = sample_writer(&dir, deterministic(Layout::V2));
    let p = dir.path("out.sif");
    write_sif(&p, w);
    let ext3: Vec<u8> = (0..9000u32).map(|i| (i % 13) as u8).collect();
    let data_path = dir.path("ext3");
    write_file(&data_path, &ext3);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    let data = File::open(&data_path).unwrap();
    let added = super::append::add_overlay_partition(&file, &data).unwrap();
    // Readable as before, with one more descriptor: the overlay, in the root's group.
    let (file, sif) = SifFile::open_path(&p).unwrap();
    assert_eq!(sif.header.descriptors_free, 43);
    assert_eq!(sif.descriptors.len(), 5);
    let d = super::append::overlay_partition(&sif).unwrap();
    assert_eq!(d.id, added.id);
    assert_eq!(d.id, 5);
    assert_eq!(d.group_id, 0xF000_0001);
    assert_eq!(d.offset % 4096, 0);
    let info = d.partition.unwrap();
    assert_eq!(
        (info.fs_type, info.part_type, info.arch),
        (FsType::Ext3, PartType::Overlay, Arch::ARM64)
    );
    assert_eq!(sif.read_object(&file, d).unwrap(), ext3);
    let prim = sif.primary_partition().unwrap();
    assert_eq!(sif.read_object(&file, prim).unwrap(), part);
    let h = &sif.header;
    assert_eq!((h.data_offset + h.data_size) as u64, d.end());
    assert_eq!(fs::metadata(&p).unwrap().len(), d.end());
    let mut prev_end = h.data_offset as u64;
    for d in &sif.descriptors {
        assert_eq!(d.size_with_padding, d.end() - prev_end);
        prev_end = d.end();
    }
    // A second one is refused, and the file is left as it was.
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    assert!(super::append::add_overlay_partition(&file, &data).is_err());
    assert_eq!(SifFile::open_path(&p).unwrap().1, sif);
}
