//! Tests against images built at test time with mksquashfs / tar2sqfs.

use super::format::{DATA_SIZE_MASK, DATA_UNCOMPRESSED, META_UNCOMPRESSED};
use super::*;
use crate::squashfs::testutil::{have_tool, TempDir};
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};

const BS: usize = 131072;

fn prng_bytes(seed: u32, n: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            // Partially compressible: runs of text-like data and noise.
            if (i / 4096) % 3 == 0 {
                b"the quick brown fox "[i % 20]
            } else {
                (x >> 11) as u8
            }
        })
        .collect()
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a valid buffer.
    unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        ) == 0
    }
}

struct Tree {
    _dir: TempDir,
    root: PathBuf,
    has_xattrs: bool,
}

const BIG_DIR_ENTRIES: usize = 3000;
const LONG_TARGET_LEN: usize = 3000;

fn build_tree() -> Tree {
    use std::fs;
    let dir = TempDir::new("src");
    let root = dir.0.join("root");
    fs::create_dir(&root).unwrap();
    let r = |p: &str| root.join(p);

    fs::create_dir_all(r("a/b/c")).unwrap();
    fs::write(r("a/b/c/deep.txt"), b"deep\n").unwrap();
    fs::write(r("a/one.txt"), b"1").unwrap();

    fs::create_dir(r("big")).unwrap();
    for i in 0..BIG_DIR_ENTRIES {
        let name = format!("entry-{i:05}-{}", "x".repeat(i % 23));
        fs::write(r("big").join(&name), name.as_bytes()).unwrap();
    }

    fs::write(r("hard1"), b"hard linked contents\n").unwrap();
    fs::hard_link(r("hard1"), r("hard2")).unwrap();
    std::os::unix::fs::symlink("a/b", r("link_short")).unwrap();
    let long_target: String = (0..LONG_TARGET_LEN)
        .map(|i| if i % 10 == 9 { '/' } else { 'd' })
        .collect();
    std::os::unix::fs::symlink(&long_target, r("link_long")).unwrap();
    std::os::unix::fs::symlink("a/b/c/deep.txt", r("a/link_to_deep")).unwrap();

    fs::write(r(&"n".repeat(255)), b"long name").unwrap();
    fs::write(
        root.join(OsStr::from_bytes(b"caf\xe9-latin1")),
        b"not utf-8 name",
    )
    .unwrap();
    fs::write(r("empty"), b"").unwrap();
    fs::write(r("exact_block"), prng_bytes(1, BS)).unwrap();
    fs::write(r("three_and_half"), prng_bytes(2, BS * 7 / 2)).unwrap();
    fs::write(r("small_random"), prng_bytes(3, 1234)).unwrap();
    fs::write(r("zeros_exact"), vec![0u8; BS * 2]).unwrap();

    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::File::create(r("sparse")).unwrap();
        f.set_len(10 << 20).unwrap();
        f.seek(SeekFrom::Start(5_000_000)).unwrap();
        f.write_all(&prng_bytes(4, 5000)).unwrap();
    }

    let fifo = CString::new(r("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);

    fs::write(r("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(r("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::create_dir(r("sticky")).unwrap();
    fs::set_permissions(r("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir(r("setgid")).unwrap();
    fs::set_permissions(r("setgid"), fs::Permissions::from_mode(0o2750)).unwrap();
    fs::write(r("private"), b"secret").unwrap();
    fs::set_permissions(r("private"), fs::Permissions::from_mode(0o600)).unwrap();

    fs::write(r("xattr_file"), b"has xattrs").unwrap();
    fs::write(r("xattr_file2"), b"has xattrs too").unwrap();
    let big_value = prng_bytes(5, 2000);
    let has_xattrs = set_xattr(&r("xattr_file"), "user.test", b"hello")
        && set_xattr(&r("xattr_file"), "user.shared", &big_value)
        && set_xattr(&r("xattr_file2"), "user.shared", &big_value)
        && set_xattr(&r("a"), "user.dir", b"on a directory");
    if !has_xattrs {
        eprintln!(
            "note: cannot set user xattrs in {}, skipping xattr checks",
            root.display()
        );
    }
    Tree {
        _dir: dir,
        root,
        has_xattrs,
    }
}

/// The test tree packed by mksquashfs with `args`: (tree, the temp dir holding the image, the
/// image path); `None` when mksquashfs is not installed (see `have_tool`).
fn tree_image(args: &[&str]) -> Option<(Tree, TempDir, PathBuf)> {
    if !have_tool("mksquashfs") {
        return None;
    }
    let tree = build_tree();
    let out = TempDir::new("img");
    let img = out.0.join("test.sqfs");
    mksquashfs(&tree.root, &img, args);
    Some((tree, out, img))
}

fn mksquashfs(src: &Path, img: &Path, args: &[&str]) {
    let st = Command::new("mksquashfs")
        .arg(src)
        .arg(img)
        .args(["-noappend", "-quiet", "-no-progress"])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("run mksquashfs");
    assert!(st.success(), "mksquashfs {args:?} failed");
}

fn tar2sqfs(src: &Path, img: &Path, comp: &str) {
    let mut tar = Command::new("tar")
        .args([
            "--xattrs",
            "--xattrs-include=*",
            "--format=pax",
            "-cf",
            "-",
            "-C",
        ])
        .arg(src)
        .arg(".")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tar");
    let st = Command::new("tar2sqfs")
        .args(["-q", "-f", "-c", comp])
        .arg(img)
        .stdin(tar.stdout.take().unwrap())
        .stdout(Stdio::null())
        .status()
        .expect("run tar2sqfs");
    assert!(tar.wait().unwrap().success(), "tar failed");
    assert!(st.success(), "tar2sqfs failed");
}

struct Expect {
    sparse_holes: bool,
    xattrs: bool,
    dir_index: bool,
}

fn kind_of(md: &std::fs::Metadata) -> FileKind {
    let ft = md.file_type();
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        FileKind::Directory
    } else if ft.is_file() {
        FileKind::File
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_socket() {
        FileKind::Socket
    } else if ft.is_block_device() {
        FileKind::BlockDevice
    } else {
        FileKind::CharDevice
    }
}

fn check_content(ar: &Archive, ino: &Inode, path: &Path) {
    let want = std::fs::read(path).unwrap();
    assert_eq!(ino.size, want.len() as u64, "{}", path.display());
    // Whole file, then odd-sized chunks crossing block boundaries.
    assert_eq!(ar.read_file(ino).unwrap(), want, "{}", path.display());
    let mut buf = vec![0u8; 100_003];
    let mut off = 0usize;
    while off < want.len() {
        let n = ar.read_at(ino, off as u64, &mut buf).unwrap();
        assert!(n > 0);
        assert_eq!(
            &buf[..n],
            &want[off..off + n],
            "{} at {off}",
            path.display()
        );
        off += n;
    }
    assert_eq!(ar.read_at(ino, want.len() as u64, &mut buf).unwrap(), 0);
    assert_eq!(
        ar.read_at(ino, want.len() as u64 + 10, &mut buf).unwrap(),
        0
    );
    if !want.is_empty() {
        let mut one = [0u8; 1];
        assert_eq!(ar.read_at(ino, want.len() as u64 - 1, &mut one).unwrap(), 1);
        assert_eq!(one[0], want[want.len() - 1]);
    }
}

fn check_attrs(ino: &Inode, md: &std::fs::Metadata, path: &Path) {
    let what = path.display();
    assert_eq!(ino.kind, kind_of(md), "{what}");
    assert_eq!(u32::from(ino.mode), md.mode() & 0o7777, "{what}");
    assert_eq!(ino.st_mode(), md.mode(), "{what}");
    assert_eq!(ino.uid, md.uid(), "{what}");
    assert_eq!(ino.gid, md.gid(), "{what}");
    assert_eq!(i64::from(ino.mtime), md.mtime(), "{what}");
    if ino.kind != FileKind::Directory {
        assert_eq!(u64::from(ino.nlink), md.nlink(), "{what}");
    }
}

fn compare_dir(ar: &Archive, dir: &Inode, path: &Path, rel: &[u8], exp: &Expect, seen: &mut usize) {
    let entries = ar.read_dir(dir).unwrap();
    let mut names: Vec<Vec<u8>> = std::fs::read_dir(path)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_vec())
        .collect();
    names.sort();
    let got: Vec<Vec<u8>> = entries.iter().map(|e| e.name.clone()).collect();
    assert_eq!(got, names, "listing of {}", path.display());
    for e in entries {
        *seen += 1;
        let p = path.join(OsStr::from_bytes(&e.name));
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ino = ar.inode(e.inode_ref).unwrap();
        assert_eq!(ino.number, e.number, "{}", p.display());
        assert_eq!(ino.kind, e.kind, "{}", p.display());
        assert_eq!(ino.inode_ref, e.inode_ref);
        check_attrs(&ino, &md, &p);
        let found = ar
            .lookup(dir, &e.name)
            .unwrap()
            .expect("lookup finds listed entry");
        assert_eq!(found.inode_ref, e.inode_ref);
        let mut full = rel.to_vec();
        full.push(b'/');
        full.extend_from_slice(&e.name);
        let resolved = ar
            .resolve(&full)
            .unwrap()
            .expect("resolve finds listed entry");
        assert_eq!(resolved.inode_ref, e.inode_ref);
        match ino.kind {
            FileKind::Directory => {
                assert!(ar.read_at(&ino, 0, &mut [0u8; 4]).is_err());
                compare_dir(ar, &ino, &p, &full, exp, seen);
            }
            FileKind::File => check_content(ar, &ino, &p),
            FileKind::Symlink => {
                let target = std::fs::read_link(&p).unwrap().into_os_string().into_vec();
                assert_eq!(ar.read_link(&ino).unwrap(), target);
                assert_eq!(ino.size, target.len() as u64);
            }
            _ => assert_eq!(ino.size, 0),
        }
        if ino.kind != FileKind::Symlink {
            assert!(matches!(ar.read_link(&ino), Err(Error::NotASymlink)));
        }
        if ino.kind != FileKind::Directory {
            assert!(matches!(ar.read_dir(&ino), Err(Error::NotADirectory)));
            assert!(matches!(ar.lookup(&ino, b"x"), Err(Error::NotADirectory)));
        }
        if exp.xattrs {
            let got = ar.xattrs(&ino).unwrap();
            let mut want = Vec::new();
            match e.name.as_slice() {
                b"xattr_file" => {
                    want.push((b"user.shared".to_vec(), prng_bytes(5, 2000)));
                    want.push((b"user.test".to_vec(), b"hello".to_vec()));
                }
                b"xattr_file2" => want.push((b"user.shared".to_vec(), prng_bytes(5, 2000))),
                b"a" if rel.is_empty() => {
                    want.push((b"user.dir".to_vec(), b"on a directory".to_vec()))
                }
                _ => {}
            }
            let mut got_user: Vec<_> = got
                .into_iter()
                .filter(|(k, _)| k.starts_with(b"user."))
                .collect();
            got_user.sort();
            assert_eq!(got_user, want, "xattrs of {}", p.display());
        }
    }
}

/// Full comparison of an archive against its source tree.
fn check_archive(ar: &Archive, tree: &Tree, exp: &Expect) {
    let root = ar.root().unwrap();
    assert!(root.is_dir());
    assert_eq!(ar.resolve(b"").unwrap().unwrap().inode_ref, ar.root_ref());
    assert_eq!(ar.resolve(b"/").unwrap().unwrap().inode_ref, ar.root_ref());
    let mut seen = 0;
    compare_dir(ar, &root, &tree.root, b"", exp, &mut seen);
    assert!(seen > BIG_DIR_ENTRIES);

    // Hard links share one inode.
    let h1 = ar.resolve(b"/hard1").unwrap().unwrap();
    let h2 = ar.resolve(b"/hard2").unwrap().unwrap();
    assert_eq!(h1.inode_ref, h2.inode_ref);
    assert_eq!(h1.nlink, 2);

    // resolve() does not follow symlinks, neither at the end nor in the middle.
    let l = ar.resolve(b"/link_short").unwrap().unwrap();
    assert!(l.is_symlink());
    assert!(ar.resolve(b"/link_short/c").unwrap().is_none());
    assert!(ar.resolve(b"/a/b/c/deep.txt").unwrap().unwrap().is_file());
    assert!(ar
        .resolve(b"a/b/../b/./c/deep.txt")
        .unwrap()
        .unwrap()
        .is_file());
    assert!(ar.resolve(b"/a/one.txt/x").unwrap().is_none());
    assert!(ar.resolve(b"/missing").unwrap().is_none());
    assert!(ar.resolve(b"/a/missing/deeper").unwrap().is_none());

    // Large directory: lookups of absent names around and between entries.
    let big = ar.resolve(b"/big").unwrap().unwrap();
    if exp.dir_index {
        match big.data {
            InodeData::Dir { index_count, .. } => assert!(index_count > 0, "big dir has an index"),
            _ => unreachable!(),
        }
    }
    for absent in [
        &b"a"[..],
        b"entry-",
        b"entry-00000-x",
        b"entry-01500-x",
        b"entry-02999-xxxxxxxxxxxxxxxxxxxxxxxx",
        b"entry-03000-",
        b"zzzz",
        b"\xff",
    ] {
        assert!(
            ar.lookup(&big, absent).unwrap().is_none(),
            "{:?}",
            String::from_utf8_lossy(absent)
        );
    }
    for i in [0usize, 1, 511, 1500, 2047, 2998, 2999] {
        let name = format!("entry-{i:05}-{}", "x".repeat(i % 23));
        let e = ar.lookup(&big, name.as_bytes()).unwrap().expect("present");
        let ino = ar.inode(e.inode_ref).unwrap();
        assert_eq!(ar.read_file(&ino).unwrap(), name.as_bytes());
    }

    let sparse = ar.resolve(b"/sparse").unwrap().unwrap();
    if exp.sparse_holes {
        assert!(sparse.sparse_bytes() > 0, "sparse file has holes");
    }

    // Export table (mksquashfs writes one by default).
    if ar.superblock().has_export_table() {
        for r in [ar.root_ref(), h1.inode_ref, sparse.inode_ref] {
            let n = ar.inode(r).unwrap().number;
            assert_eq!(ar.inode_ref_by_number(n).unwrap(), Some(r));
        }
    }
    assert!(matches!(ar.read_link(&root), Err(Error::NotASymlink)));
}

fn mksquashfs_roundtrip(args: &[&str], expect_comp: Compressor) {
    let Some((tree, _out, img)) = tree_image(args) else {
        return;
    };
    let ar = Archive::open_path(&img, 0).unwrap();
    // Opening touches only the id table and the root inode's block.
    assert!(
        ar.meta_cache.len() <= 2,
        "open read {} metadata blocks",
        ar.meta_cache.len()
    );
    assert_eq!(ar.superblock().compressor, expect_comp);
    assert_eq!(ar.superblock().block_size as usize, BS);
    check_archive(
        &ar,
        &tree,
        &Expect {
            sparse_holes: true,
            xattrs: tree.has_xattrs,
            dir_index: true,
        },
    );
}

#[test]
fn mksquashfs_gzip() {
    mksquashfs_roundtrip(&["-comp", "gzip"], Compressor::Gzip);
}

#[test]
fn mksquashfs_xz() {
    mksquashfs_roundtrip(&["-comp", "xz", "-Xbcj", "x86"], Compressor::Xz);
}

#[test]
fn mksquashfs_lzo() {
    mksquashfs_roundtrip(&["-comp", "lzo"], Compressor::Lzo);
}

#[test]
fn mksquashfs_lz4() {
    mksquashfs_roundtrip(&["-comp", "lz4", "-Xhc"], Compressor::Lz4);
}

#[test]
fn mksquashfs_zstd() {
    mksquashfs_roundtrip(&["-comp", "zstd"], Compressor::Zstd);
}

#[test]
fn mksquashfs_uncompressed() {
    mksquashfs_roundtrip(
        &["-comp", "gzip", "-noI", "-noD", "-noF", "-noX"],
        Compressor::Gzip,
    );
}

#[test]
fn mksquashfs_small_blocks_no_tail_fragments() {
    let Some((tree, _out, img)) = tree_image(&["-comp", "zstd", "-b", "4096", "-no-fragments"])
    else {
        return;
    };
    let ar = Archive::open_path(&img, 0).unwrap();
    assert_eq!(ar.superblock().block_size, 4096);
    let mut seen = 0;
    let exp = Expect {
        sparse_holes: true,
        xattrs: tree.has_xattrs,
        dir_index: true,
    };
    compare_dir(&ar, &ar.root().unwrap(), &tree.root, b"", &exp, &mut seen);
}

fn tar2sqfs_roundtrip(comp: &str, expect_comp: Compressor) {
    if !have_tool("tar2sqfs") || !have_tool("tar") {
        return;
    }
    let tree = build_tree();
    let out = TempDir::new("img");
    let img = out.0.join("test.sqfs");
    tar2sqfs(&tree.root, &img, comp);
    let ar = Archive::open_path(&img, 0).unwrap();
    assert_eq!(ar.superblock().compressor, expect_comp);
    check_archive(
        &ar,
        &tree,
        &Expect {
            sparse_holes: false,
            xattrs: tree.has_xattrs,
            dir_index: true,
        },
    );
}

#[test]
fn tar2sqfs_xz() {
    tar2sqfs_roundtrip("xz", Compressor::Xz);
}

#[test]
fn tar2sqfs_lzma() {
    tar2sqfs_roundtrip("lzma", Compressor::Lzma);
}

#[test]
fn tar2sqfs_gzip() {
    tar2sqfs_roundtrip("gzip", Compressor::Gzip);
}

#[test]
fn archive_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Archive>();
}

#[test]
fn not_squashfs() {
    let dir = TempDir::new("bad");
    let p = dir.0.join("text");
    std::fs::write(
        &p,
        b"this is definitely not a squashfs image, just some text".repeat(10),
    )
    .unwrap();
    assert!(matches!(Archive::open_path(&p, 0), Err(Error::NotSquashfs)));
    let e = dir.0.join("empty");
    std::fs::write(&e, b"").unwrap();
    assert!(matches!(Archive::open_path(&e, 0), Err(Error::NotSquashfs)));
    assert!(matches!(
        Archive::open_path(&p, 100_000),
        Err(Error::NotSquashfs)
    ));
    let msg = Error::NotSquashfs.to_string();
    assert_eq!(msg, "not a SquashFS file (bad magic)");
}

/// Opens `img`, then walks and reads everything, ignoring errors; must not
/// panic or loop.
fn walk_ignoring_errors(ar: &Archive) {
    let Ok(root) = ar.root() else { return };
    let mut stack = vec![(root, 0usize)];
    let mut budget = 20_000usize;
    let mut buf = vec![0u8; 200_000];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = ar.read_dir(&dir) else {
            continue;
        };
        for e in entries {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return;
            }
            let _ = ar.lookup(&dir, &e.name);
            let Ok(ino) = ar.inode(e.inode_ref) else {
                continue;
            };
            let _ = ar.xattrs(&ino);
            match ino.kind {
                FileKind::Directory if depth < 16 => stack.push((ino, depth + 1)),
                FileKind::File => {
                    let mut off = 0u64;
                    while off < ino.size.min(32 << 20) {
                        match ar.read_at(&ino, off, &mut buf) {
                            Ok(n) if n > 0 => off += n as u64,
                            _ => break,
                        }
                    }
                }
                FileKind::Symlink => {
                    let _ = ar.read_link(&ino);
                }
                _ => {}
            }
        }
    }
}

#[test]
fn truncated_and_corrupted_images_do_not_panic() {
    let Some((_tree, out, img)) = tree_image(&["-comp", "gzip"]) else {
        return;
    };
    let data = std::fs::read(&img).unwrap();

    // Truncated to half: open fails with a corruption error.
    let t = out.0.join("trunc.sqfs");
    std::fs::write(&t, &data[..data.len() / 2]).unwrap();
    match Archive::open_path(&t, 0) {
        Err(Error::Corrupt(msg)) => assert!(msg.contains("truncated"), "{msg}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("truncated image opened"),
    }
    // Only the superblock's first bytes.
    std::fs::write(&t, &data[..40]).unwrap();
    assert!(matches!(Archive::open_path(&t, 0), Err(Error::Corrupt(_))));

    // Bad version / compressor.
    let mut v = data.clone();
    v[28] = 3;
    std::fs::write(&t, &v).unwrap();
    assert!(matches!(
        Archive::open_path(&t, 0),
        Err(Error::UnsupportedVersion { major: 3, minor: 0 })
    ));
    let mut v = data.clone();
    v[20] = 9;
    std::fs::write(&t, &v).unwrap();
    assert!(matches!(
        Archive::open_path(&t, 0),
        Err(Error::UnsupportedCompressor(9))
    ));

    // Random byte corruption after the superblock.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let c = out.0.join("corrupt.sqfs");
    for round in 0..40 {
        let mut v = data.clone();
        let hits = 1 + (next() % 16) as usize;
        // Alternate between the whole image and the metadata tail (tables).
        let lo = if round % 2 == 0 {
            96
        } else {
            data.len() * 3 / 4
        };
        for _ in 0..hits {
            let pos = lo + (next() as usize) % (data.len() - lo);
            v[pos] = next() as u8;
        }
        std::fs::write(&c, &v).unwrap();
        if let Ok(ar) = Archive::open_path(&c, 0) {
            walk_ignoring_errors(&ar);
        }
    }
}

#[test]
fn open_at_offset_and_concurrent_reads() {
    let Some((tree, out, img)) = tree_image(&["-comp", "zstd"]) else {
        return;
    };
    let mut data = vec![0xa5u8; 4096];
    data.extend_from_slice(&std::fs::read(&img).unwrap());
    let emb = out.0.join("embedded.sif");
    std::fs::write(&emb, &data).unwrap();
    assert!(matches!(
        Archive::open_path(&emb, 0),
        Err(Error::NotSquashfs)
    ));
    let ar = Arc::new(Archive::open_path(&emb, 4096).unwrap());
    assert_eq!(ar.offset(), 4096);
    check_archive(
        &ar,
        &tree,
        &Expect {
            sparse_holes: true,
            xattrs: tree.has_xattrs,
            dir_index: true,
        },
    );

    // Several threads reading the same and different files concurrently.
    let files: Vec<&[u8]> = vec![
        b"/three_and_half",
        b"/exact_block",
        b"/sparse",
        b"/small_random",
        b"/hard1",
    ];
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let ar = ar.clone();
            let root = tree.root.clone();
            let files: Vec<Vec<u8>> = files.iter().map(|f| f.to_vec()).collect();
            std::thread::spawn(move || {
                for round in 0..3 {
                    for i in 0..files.len() {
                        let f = &files[(i + t + round) % files.len()];
                        let ino = ar.resolve(f).unwrap().unwrap();
                        let want = std::fs::read(root.join(OsStr::from_bytes(&f[1..]))).unwrap();
                        let mut got = vec![0u8; want.len()];
                        let mut off = 0;
                        while off < got.len() {
                            let end = (off + 131072).min(got.len());
                            let n = ar.read_at(&ino, off as u64, &mut got[off..end]).unwrap();
                            assert!(n > 0);
                            off += n;
                        }
                        assert!(
                            got == want,
                            "thread {t} file {:?}",
                            String::from_utf8_lossy(f)
                        );
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn devices_sockets_and_fifos_from_pseudo_definitions() {
    if !have_tool("mksquashfs") {
        return;
    }
    let src = TempDir::new("pseudo-src");
    std::fs::write(src.0.join("f"), b"hi").unwrap();
    let out = TempDir::new("img");
    let img = out.0.join("test.sqfs");
    mksquashfs(
        &src.0,
        &img,
        &[
            "-p",
            "chr c 644 0 0 1 3",
            "-p",
            "blk b 600 0 0 8 1",
            "-p",
            "sock i 755 0 0 s",
            "-p",
            "pipe i 700 0 0 f",
            "-p",
            "minor c 640 12 34 4 300",
        ],
    );
    let ar = Archive::open_path(&img, 0).unwrap();
    let get = |p: &[u8]| ar.resolve(p).unwrap().unwrap();
    let chr = get(b"/chr");
    assert_eq!(chr.kind, FileKind::CharDevice);
    assert_eq!(
        (chr.rdev_major(), chr.rdev_minor(), chr.rdev),
        (1, 3, 0x103)
    );
    assert_eq!(chr.mode, 0o644);
    assert_eq!(chr.st_mode(), libc::S_IFCHR | 0o644);
    let blk = get(b"/blk");
    assert_eq!(blk.kind, FileKind::BlockDevice);
    assert_eq!((blk.rdev_major(), blk.rdev_minor()), (8, 1));
    assert_eq!(blk.mode, 0o600);
    let m = get(b"/minor");
    assert_eq!((m.rdev_major(), m.rdev_minor()), (4, 300));
    assert_eq!((m.uid, m.gid), (12, 34));
    let sock = get(b"/sock");
    assert_eq!(sock.kind, FileKind::Socket);
    assert_eq!(sock.mode, 0o755);
    let pipe = get(b"/pipe");
    assert_eq!(pipe.kind, FileKind::Fifo);
    assert_eq!(pipe.mode, 0o700);
    for i in [&chr, &blk, &sock, &pipe] {
        assert_eq!(i.size, 0);
        assert_eq!(i.nlink, 1);
        assert!(matches!(
            ar.read_at(i, 0, &mut [0u8; 4]),
            Err(Error::NotAFile)
        ));
    }
    let kinds: Vec<(Vec<u8>, FileKind)> = ar
        .read_dir(&ar.root().unwrap())
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.kind))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (b"blk".to_vec(), FileKind::BlockDevice),
            (b"chr".to_vec(), FileKind::CharDevice),
            (b"f".to_vec(), FileKind::File),
            (b"minor".to_vec(), FileKind::CharDevice),
            (b"pipe".to_vec(), FileKind::Fifo),
            (b"sock".to_vec(), FileKind::Socket),
        ]
    );
}

/// A block list of thousands of entries across many metadata blocks and several index chunks
/// (`blocks::CHUNK`), with holes, read out of order: every byte equals the source. This is the
/// case that gave EIO before the list was indexed (4 KiB blocks, a tiny inode table).
#[test]
fn long_block_lists_are_read_anywhere() {
    if !have_tool("mksquashfs") {
        return;
    }
    let dir = TempDir::new("blocklist");
    let src = dir.0.join("src");
    std::fs::create_dir_all(&src).unwrap();
    // 2,600 blocks of 4 KiB: five index chunks; every 7th block a hole.
    let mut body = prng_bytes(7, 2600 * 4096 + 123);
    for (i, block) in body.chunks_mut(4096).enumerate() {
        if i % 7 == 3 {
            block.fill(0);
        }
    }
    std::fs::write(src.join("f"), &body).unwrap();
    let img = dir.0.join("img");
    mksquashfs(
        &src,
        &img,
        &["-b", "4096", "-comp", "zstd", "-no-fragments"],
    );
    let ar = Archive::open_path(&img, 0).unwrap();
    let ino = ar.resolve(b"/f").unwrap().unwrap();
    assert_eq!(ino.size, body.len() as u64);
    let chunk = super::blocks::CHUNK as usize * 4096;
    // Far chunks first (the index is built lazily), then boundaries, then the tail.
    for &(at, len) in &[
        (4 * chunk + 5, 10_000),
        (chunk - 3, 9),
        (0, 4096),
        (2 * chunk - 4096, 3 * 4096),
        (body.len() - 200, 500),
        (3 * 4096 + 1, 4096),
    ] {
        let mut buf = vec![0u8; len];
        let n = ar.read_at(&ino, at as u64, &mut buf).unwrap();
        let end = (at + len).min(body.len());
        assert_eq!(n, end - at, "read at {at}");
        assert_eq!(&buf[..n], &body[at..end], "bytes at {at}");
    }
    assert_eq!(ar.read_file(&ino).unwrap(), body);
}

/// Where [`bomb_image`] puts its decompression bomb.
#[derive(Clone, Copy, Debug, PartialEq)]
enum BombIn {
    Data,
    Fragment,
    Metadata,
}

const BOMB_BS: usize = 65536;

fn le_u64(b: &[u8], at: usize) -> usize {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap()) as usize
}

/// An image by mksquashfs with `comp` that stores everything uncompressed (`-noI -noD -noF`),
/// so each block lies where the test can find it: `big` (one full 64 KiB block), `small` (a
/// 60000-byte tail, alone in the only fragment block) and 300 empty files (a full first inode
/// block). Then one of those blocks is overwritten by a `comp` stream that expands to 128
/// times its limit, and its size field marked compressed: what a hostile writer would ship.
/// Returns the image and the limit the reader must enforce.
fn bomb_image(comp: Compressor, kind: BombIn) -> Option<(TempDir, PathBuf, usize)> {
    if !have_tool("mksquashfs") {
        return None;
    }
    let dir = TempDir::new("bomb");
    let src = dir.0.join("src");
    std::fs::create_dir(&src).unwrap();
    let big = prng_bytes(11, BOMB_BS);
    std::fs::write(src.join("big"), &big).unwrap();
    std::fs::write(src.join("small"), prng_bytes(12, 60000)).unwrap();
    for i in 0..300 {
        std::fs::write(src.join(format!("f{i:03}")), b"").unwrap();
    }
    let img = dir.0.join(format!("{}-{kind:?}.sqfs", comp.name()));
    let block = BOMB_BS.to_string();
    mksquashfs(
        &src,
        &img,
        &[
            "-comp",
            comp.name(),
            "-b",
            &block,
            "-noI",
            "-noD",
            "-noF",
            "-noX",
        ],
    );
    let mut b = std::fs::read(&img).unwrap();
    let (inodes, dirs, frags) = (le_u64(&b, 64), le_u64(&b, 72), le_u64(&b, 80));
    let limit = if kind == BombIn::Metadata {
        8192
    } else {
        BOMB_BS
    };
    let bomb = compress::bomb(comp, 128 * limit, false);
    let (at, room) = match kind {
        BombIn::Data => {
            // The block list entry of `big`: one stored (uncompressed) full block.
            let field = (BOMB_BS as u32 | DATA_UNCOMPRESSED).to_le_bytes();
            let table = &b[inodes..dirs];
            let hits: Vec<usize> = (0..table.len() - 3)
                .filter(|&i| table[i..i + 4] == field)
                .collect();
            assert_eq!(hits.len(), 1, "one stored full block in the inode table");
            let at = inodes + hits[0];
            b[at..at + 4].copy_from_slice(&(bomb.len() as u32).to_le_bytes());
            let data = b.windows(64).position(|w| w == &big[..64]).unwrap();
            (data, BOMB_BS)
        }
        BombIn::Fragment => {
            // The fragment table's first metadata block (stored: a 2-byte header) holds the
            // one entry: start (u64), size field (u32).
            let entry = le_u64(&b, frags) + 2;
            let start = le_u64(&b, entry);
            let size = u32::from_le_bytes(b[entry + 8..entry + 12].try_into().unwrap());
            assert!(size & DATA_UNCOMPRESSED != 0, "stored fragment block");
            b[entry + 8..entry + 12].copy_from_slice(&(bomb.len() as u32).to_le_bytes());
            (start, (size & DATA_SIZE_MASK) as usize)
        }
        BombIn::Metadata => {
            let hdr = u16::from_le_bytes(b[inodes..inodes + 2].try_into().unwrap());
            assert_eq!(
                hdr,
                META_UNCOMPRESSED | 8192,
                "a full, stored first inode block"
            );
            b[inodes..inodes + 2].copy_from_slice(&(bomb.len() as u16).to_le_bytes());
            (inodes + 2, 8192)
        }
    };
    assert!(bomb.len() <= room, "{comp:?} bomb of {} bytes", bomb.len());
    b[at..at + bomb.len()].copy_from_slice(&bomb);
    std::fs::write(&img, &b).unwrap();
    Some((dir, img, limit))
}

/// The first error met opening `img`, listing its root and reading every file in full.
fn first_error(img: &Path) -> Option<String> {
    let run = || -> Result<()> {
        let ar = Archive::open_path(img, 0)?;
        let root = ar.root()?;
        let mut buf = vec![0u8; BOMB_BS];
        for e in ar.read_dir(&root)? {
            let ino = ar.inode(e.inode_ref)?;
            let mut off = 0;
            while off < ino.size {
                off += ar.read_at(&ino, off, &mut buf)? as u64;
            }
        }
        Ok(())
    };
    run().err().map(|e| e.to_string())
}

/// Decompression bombs in data, fragment and metadata blocks, for each compressor mksquashfs
/// writes: refused at once, naming the block, the codec and the limit (the reader never
/// allocates more than one block for them).
#[test]
fn decompression_bombs_in_every_block_kind_are_refused() {
    for comp in [
        Compressor::Gzip,
        Compressor::Xz,
        Compressor::Lzo,
        Compressor::Lz4,
        Compressor::Zstd,
    ] {
        for kind in [BombIn::Data, BombIn::Fragment, BombIn::Metadata] {
            let Some((_dir, img, limit)) = bomb_image(comp, kind) else {
                return;
            };
            let started = std::time::Instant::now();
            let err = first_error(&img).unwrap_or_else(|| panic!("{comp:?} {kind:?} read"));
            let took = started.elapsed();
            let block = match kind {
                BombIn::Data => "data block 0 of inode",
                BombIn::Fragment => "fragment block 0 at",
                BombIn::Metadata => "metadata block at",
            };
            assert!(
                err.contains(block)
                    && err.contains(&format!("({})", comp.name()))
                    && err.contains(&format!("more than the {limit} bytes")),
                "{comp:?} {kind:?}: {err}"
            );
            assert!(!err.contains('\n'), "{err}");
            assert!(
                took < std::time::Duration::from_secs(2),
                "{comp:?} {kind:?}: {took:?}"
            );
        }
    }
}
