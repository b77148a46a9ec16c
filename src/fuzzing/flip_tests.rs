//! The byte-flip test of the regular test run: a small SquashFS image (every inode kind,
//! fragments, multi-block files, xattrs, hard links) and the SIF around it are mutated a few
//! hundred times (a byte flipped, a field zeroed or maxed) and each mutant is opened and read
//! in full. Each must end, without a panic, within a bounded time. Deterministic (a fixed
//! xorshift seed) so a failure names a reproducible mutant.

use super::*;
use crate::sif::{Arch, DataType, FsType, Object, ObjectSource, PartType, SifWriter};
use crate::squashfs::write::{Metadata, SquashfsWriter, WriterOptions};
use crate::squashfs::Compressor;
use std::time::{Duration, Instant};

/// Mutants per image kind.
const MUTANTS: usize = 500;
/// The most one mutant may take (open and full read); the real figure is milliseconds.
const PER_MUTANT: Duration = Duration::from_secs(5);

fn meta(mode: u16) -> Metadata {
    Metadata {
        mode,
        uid: 1000,
        gid: 1000,
        mtime: 1,
        xattrs: Vec::new(),
    }
}

/// A small image with something of every kind the reader handles.
fn small_squashfs(compressor: Compressor) -> Vec<u8> {
    let options = WriterOptions {
        compressor,
        level: None,
        block_size: 4096,
        threads: 1,
        mkfs_time: 0,
    };
    let mut w = SquashfsWriter::new(Cursor::new(Vec::new()), options).unwrap();
    w.add_dir(b"/etc", meta(0o755)).unwrap();
    w.add_file(
        b"/etc/passwd",
        meta(0o644),
        &mut &b"root:x:0:0::/root:/bin/sh\n"[..],
    )
    .unwrap();
    let big: Vec<u8> = (0..20_000u32).map(|i| (i * 31 % 251) as u8).collect();
    w.add_file(b"/big", meta(0o755), &mut &big[..]).unwrap();
    w.add_file(b"/sparse", meta(0o644), &mut &vec![0u8; 9000][..])
        .unwrap();
    let mut x = meta(0o600);
    x.xattrs = vec![(b"user.k".to_vec(), b"v".to_vec())];
    w.add_file(b"/etc/x", x, &mut &b"xattr"[..]).unwrap();
    w.add_symlink(b"/etc/link", meta(0o777), b"../big").unwrap();
    w.add_hardlink(b"/etc/hard", b"/big").unwrap();
    let rdev = crate::squashfs::write::encode_rdev(1, 3);
    w.add_device(b"/null", meta(0o666), FileKind::CharDevice, rdev)
        .unwrap();
    w.add_dir(b"/d/e/f", meta(0o700)).unwrap();
    let (out, _) = w.finish().unwrap();
    out.into_inner()
}

fn sif_around(squashfs: &[u8]) -> Vec<u8> {
    let mut w = SifWriter::new(crate::sif::WriterOptions {
        deterministic: true,
        ..Default::default()
    });
    w.add_object(Object::bytes(
        DataType::GenericJson,
        "oci-config.json",
        b"{}".to_vec(),
    ));
    w.add_object(Object::partition(
        FsType::Squashfs,
        PartType::PrimSys,
        Arch::host(),
        ObjectSource::Bytes(squashfs.to_vec()),
    ));
    let mut file = memfile(b"").unwrap();
    w.write_to(&mut file).unwrap();
    let mut out = Vec::new();
    use std::io::Seek;
    file.rewind().unwrap();
    file.read_to_end(&mut out).unwrap();
    out
}

/// xorshift64: fixed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A mutant of `base`: one to four changes, a quarter of them in the first 256 bytes
/// (superblock, SIF header), where one byte changes the most.
fn mutant(base: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut m = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = if rng.below(4) == 0 {
            rng.below(m.len().min(256))
        } else {
            rng.below(m.len())
        };
        match rng.below(4) {
            0 => m[at] ^= 1 << rng.below(8),
            1 => m[at] = 0,
            2 => m[at] = 0xff,
            _ => m[at] = rng.next() as u8,
        }
    }
    m
}

/// Runs `check` on [`MUTANTS`] mutants of `base`; returns how many were still read in full.
fn run_mutants(what: &str, base: &[u8], seed: u64, check: fn(&[u8]) -> bool) -> usize {
    let mut rng = Rng(seed);
    let started = Instant::now();
    let mut whole = 0;
    for i in 0..MUTANTS {
        let m = mutant(base, &mut rng);
        let t = Instant::now();
        whole += usize::from(check(&m));
        let took = t.elapsed();
        assert!(
            took < PER_MUTANT,
            "{what} mutant {i} (seed {seed}) took {took:?}"
        );
    }
    eprintln!(
        "{what}: {MUTANTS} mutants in {:?}, {whole} still read in full",
        started.elapsed()
    );
    // The mutations must not all be caught at the first check, or the test reads nothing.
    assert!(
        whole > MUTANTS / 10,
        "{what}: only {whole} mutants got past the opening"
    );
    whole
}

#[test]
fn unmutated_images_walk_in_full() {
    for c in [
        Compressor::Gzip,
        Compressor::Zstd,
        Compressor::Xz,
        Compressor::Lz4,
    ] {
        let image = small_squashfs(c);
        let archive = Archive::open(memfile(&image).unwrap(), 0).unwrap();
        let entries = walk(&archive, &Budget::default()).unwrap();
        assert!(entries >= 10, "{c:?}: {entries}");
        assert!(super::squashfs(&image), "{c:?}");
        assert!(super::sif(&sif_around(&image)), "{c:?} in a SIF");
    }
}

#[test]
fn squashfs_mutants_end_without_panic() {
    for (seed, c) in [
        (1, Compressor::Gzip),
        (2, Compressor::Zstd),
        (3, Compressor::Xz),
    ] {
        run_mutants(
            &format!("{c:?} SquashFS"),
            &small_squashfs(c),
            seed,
            squashfs,
        );
    }
}

#[test]
fn sif_mutants_end_without_panic() {
    let sif = sif_around(&small_squashfs(Compressor::Gzip));
    run_mutants("SIF", &sif, 4, super::sif);
}
