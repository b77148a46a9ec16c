//! Writer tests: images are checked with the real `unsquashfs` (listing,
//! superblock, extraction), with `rdsquashfs -x` for xattrs when present,
//! with the crate's own reader, and with the kernel when running as root.

use super::*;
use crate::squashfs::testutil::{have_tool, TempDir};
use crate::squashfs::Archive;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

const T0: u32 = 1_700_000_000;

fn prng(seed: u32, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if (i / 3000) % 3 == 0 {
                b"lorem ipsum dolor sit amet "[i % 27]
            } else {
                (x >> 11) as u8
            }
        })
        .collect()
}

/// Incompressible bytes (blocks and fragments end up stored uncompressed).
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn meta(mode: u16, uid: u32, gid: u32, mtime: u32) -> Metadata {
    Metadata {
        mode,
        uid,
        gid,
        mtime,
        xattrs: Vec::new(),
    }
}

/// Hands out data in odd-sized pieces, to exercise short reads.
struct Chunky<'a>(&'a [u8], usize);

impl std::io::Read for Chunky<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.1 += 1;
        let n = buf
            .len()
            .min(self.0.len())
            .min(1000 + (self.1 * 7919) % 70000);
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[derive(Clone, Debug)]
struct Exp {
    kind: FileKind,
    meta: Metadata,
    content: Arc<Vec<u8>>,
    target: Vec<u8>,
    rdev: (u32, u32),
    /// Identity of the inode (shared by hard links).
    id: usize,
}

/// A writer plus the model of what the image must contain.
struct Img {
    w: SquashfsWriter<File>,
    exp: BTreeMap<Vec<u8>, Exp>,
    next_id: usize,
}

impl Img {
    fn new(file: File, opts: WriterOptions) -> Img {
        let mut exp = BTreeMap::new();
        exp.insert(
            b"/".to_vec(),
            Exp {
                kind: FileKind::Directory,
                meta: meta(0o755, 0, 0, opts.mkfs_time),
                content: Arc::default(),
                target: Vec::new(),
                rdev: (0, 0),
                id: 0,
            },
        );
        Img {
            w: SquashfsWriter::new(file, opts).unwrap(),
            exp,
            next_id: 1,
        }
    }

    fn drop_sub(&mut self, path: &[u8]) {
        let mut prefix = path.to_vec();
        prefix.push(b'/');
        self.exp
            .retain(|k, _| k.as_slice() != path && !k.starts_with(&prefix));
    }

    fn put(&mut self, path: &[u8], kind: FileKind, meta: Metadata) -> &mut Exp {
        let id = self.next_id;
        self.next_id += 1;
        self.drop_sub(path);
        self.exp.entry(path.to_vec()).or_insert(Exp {
            kind,
            meta,
            content: Arc::default(),
            target: Vec::new(),
            rdev: (0, 0),
            id,
        })
    }

    fn dir(&mut self, path: &[u8], m: Metadata) {
        self.w.add_dir(path, m.clone()).unwrap();
        match self.exp.get_mut(path) {
            Some(e) if e.kind == FileKind::Directory => e.meta = m,
            _ => {
                self.put(path, FileKind::Directory, m);
            }
        }
    }

    fn file(&mut self, path: &[u8], m: Metadata, content: Vec<u8>) {
        self.w
            .add_file(path, m.clone(), &mut Chunky(&content, 0))
            .unwrap();
        self.put(path, FileKind::File, m).content = Arc::new(content);
    }

    fn symlink(&mut self, path: &[u8], m: Metadata, target: &[u8]) {
        self.w.add_symlink(path, m.clone(), target).unwrap();
        self.put(path, FileKind::Symlink, m).target = target.to_vec();
    }

    fn device(&mut self, path: &[u8], m: Metadata, kind: FileKind, major: u32, minor: u32) {
        self.w
            .add_device(path, m.clone(), kind, encode_rdev(major, minor))
            .unwrap();
        let rdev = match kind {
            FileKind::BlockDevice | FileKind::CharDevice => (major, minor),
            _ => (0, 0),
        };
        self.put(path, kind, m).rdev = rdev;
    }

    fn hardlink(&mut self, path: &[u8], target: &[u8]) {
        self.w.add_hardlink(path, target).unwrap();
        let e = self.exp[target].clone();
        self.drop_sub(path);
        self.exp.insert(path.to_vec(), e);
    }

    fn remove(&mut self, path: &[u8]) -> bool {
        let r = self.w.remove(path).unwrap();
        assert_eq!(r, self.exp.contains_key(path));
        self.drop_sub(path);
        r
    }

    fn finish(self) -> (BTreeMap<Vec<u8>, Exp>, Summary) {
        let (_f, s) = self.w.finish().unwrap();
        (self.exp, s)
    }
}

fn opts(c: Compressor, threads: usize) -> WriterOptions {
    WriterOptions {
        compressor: c,
        level: None,
        block_size: 131072,
        threads,
        mkfs_time: T0,
    }
}

/// Everything but device nodes (those cannot be extracted unprivileged).
fn rich(img: &mut Img, bs: usize, big: bool) {
    img.dir(b"/", meta(0o755, 0, 0, T0 + 1));
    img.dir(b"/etc", meta(0o755, 0, 0, T0 + 2));
    img.file(
        b"/etc/passwd",
        meta(0o644, 0, 0, T0 + 3),
        b"root:x:0:0::/root:/bin/sh\n".to_vec(),
    );
    img.dir(b"/home", meta(0o755, 0, 0, T0 + 4));
    img.dir(b"/home/user", meta(0o700, 1000, 1000, T0 + 5));
    img.file(
        b"/home/user/.bashrc",
        meta(0o644, 1000, 1000, T0 + 6),
        b"export PS1='$ '\n".to_vec(),
    );
    let mut p = Vec::new();
    for (i, c) in [b"a", b"b", b"c", b"d", b"e"].iter().enumerate() {
        p.push(b'/');
        p.extend_from_slice(*c);
        img.dir(&p, meta(0o751, 1, 2, T0 + 10 + i as u32));
    }
    p.extend_from_slice(b"/deep.txt");
    img.file(&p, meta(0o640, 3, 4, T0 + 20), b"deep\n".to_vec());

    img.dir(b"/big", meta(0o755, 0, 0, T0 + 30));
    for i in 0..3000u32 {
        let name = format!("/big/entry-{i:05}-{}", "x".repeat(i as usize % 23));
        let content = if i % 10 == 0 {
            prng(i, 5000)
        } else {
            name.clone().into_bytes()
        };
        img.file(name.as_bytes(), meta(0o644, i % 7, i % 5, T0 + i), content);
    }

    img.dir(b"/links", meta(0o755, 0, 0, T0));
    img.file(
        b"/links/h1",
        meta(0o644, 0, 0, T0),
        b"hard linked\n".to_vec(),
    );
    img.hardlink(b"/links/h2", b"/links/h1");
    img.file(b"/links/t1", meta(0o600, 5, 6, T0 + 7), prng(77, bs + 10));
    img.hardlink(b"/links/t2", b"/links/t1");
    img.hardlink(b"/links/t3", b"/links/t2");
    img.symlink(b"/links/sl", meta(0o777, 0, 0, T0), b"h1");
    img.hardlink(b"/links/sl2", b"/links/sl");

    img.dir(b"/sym", meta(0o755, 0, 0, T0));
    img.symlink(b"/sym/short", meta(0o777, 0, 0, T0 + 1), b"../etc/passwd");
    let long: Vec<u8> = (0..4000)
        .map(|i| if i % 10 == 9 { b'/' } else { b'd' })
        .collect();
    img.symlink(b"/sym/long", meta(0o777, 7, 8, T0 + 2), &long);

    img.dir(b"/names", meta(0o755, 0, 0, T0));
    let mut n255 = b"/names/".to_vec();
    n255.extend(std::iter::repeat_n(b'n', 255));
    img.file(&n255, meta(0o644, 0, 0, T0), b"long name".to_vec());
    img.file(
        b"/names/caf\xe9-latin1",
        meta(0o644, 0, 0, T0),
        b"not utf-8".to_vec(),
    );

    img.dir(b"/files", meta(0o755, 0, 0, T0));
    img.file(b"/files/empty", meta(0o644, 0, 0, T0), Vec::new());
    img.file(b"/files/exact", meta(0o644, 0, 0, T0), prng(1, bs));
    img.file(
        b"/files/three_half",
        meta(0o644, 0, 0, T0),
        prng(2, bs * 7 / 2),
    );
    img.file(
        b"/files/zeros",
        meta(0o644, 0, 0, T0),
        vec![0u8; bs * 5 / 2],
    );
    img.file(
        b"/files/random",
        meta(0o644, 0, 0, T0),
        noise(6, bs * 5 / 2),
    );
    if big {
        let mut sparse = vec![0u8; 20 << 20];
        sparse[..3 << 19].copy_from_slice(&prng(3, 3 << 19));
        let n = sparse.len();
        sparse[n - (1 << 20) - 123..].copy_from_slice(&prng(4, (1 << 20) + 123));
        img.file(b"/files/sparse20", meta(0o644, 0, 0, T0), sparse);
    }

    img.dir(b"/perm", meta(0o755, 0, 0, T0));
    img.file(
        b"/perm/setuid",
        meta(0o4755, 0, 0, T0),
        b"#!/bin/sh\n".to_vec(),
    );
    img.dir(b"/perm/sticky", meta(0o1777, 0, 0, T0));
    img.dir(b"/perm/setgid", meta(0o2750, 0, 0, T0));
    img.file(b"/perm/private", meta(0o600, 0, 0, T0), b"secret".to_vec());

    let mut xm = meta(0o755, 0, 0, T0);
    xm.xattrs = vec![
        (b"user.test".to_vec(), b"hello".to_vec()),
        (
            b"security.capability".to_vec(),
            vec![
                1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        ),
    ];
    img.dir(b"/xattr", meta(0o755, 0, 0, T0));
    img.file(b"/xattr/cap", xm.clone(), b"binary".to_vec());
    let mut dm = meta(0o755, 0, 0, T0);
    dm.xattrs = vec![(b"user.dir".to_vec(), prng(9, 3000))];
    img.dir(b"/xattr/d", dm);
    img.file(b"/xattr/same", xm, b"other binary".to_vec());
    let mut sm = meta(0o777, 0, 0, T0);
    sm.xattrs = vec![(b"trusted.sl".to_vec(), b"v".to_vec())];
    img.symlink(b"/xattr/sl", sm, b"cap");

    img.dir(b"/dup", meta(0o755, 0, 0, T0));
    let d = prng(5, bs * 3 + 999);
    img.file(b"/dup/one", meta(0o644, 0, 0, T0), d.clone());
    img.file(b"/dup/two", meta(0o600, 1, 1, T0 + 1), d);
    img.file(b"/dup/s1", meta(0o644, 0, 0, T0), b"same small".to_vec());
    img.file(b"/dup/s2", meta(0o644, 0, 0, T0), b"same small".to_vec());
}

fn kind_char(k: FileKind) -> char {
    match k {
        FileKind::Directory => 'd',
        FileKind::File => '-',
        FileKind::Symlink => 'l',
        FileKind::BlockDevice => 'b',
        FileKind::CharDevice => 'c',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
    }
}

fn perm_string(k: FileKind, mode: u16) -> String {
    let mut s = String::new();
    s.push(kind_char(k));
    let bit = |m: u16, c: char| if mode & m != 0 { c } else { '-' };
    let special = |x: u16, sp: u16, lower: char, upper: char| match (mode & x != 0, mode & sp != 0)
    {
        (true, true) => lower,
        (false, true) => upper,
        (true, false) => 'x',
        (false, false) => '-',
    };
    s.push(bit(0o400, 'r'));
    s.push(bit(0o200, 'w'));
    s.push(special(0o100, 0o4000, 's', 'S'));
    s.push(bit(0o040, 'r'));
    s.push(bit(0o020, 'w'));
    s.push(special(0o010, 0o2000, 's', 'S'));
    s.push(bit(0o004, 'r'));
    s.push(bit(0o002, 'w'));
    s.push(special(0o001, 0o1000, 't', 'T'));
    s
}

/// "YYYY-MM-DD HH:MM" in UTC.
fn utc(t: u32) -> String {
    let t = crate::civil::Utc::at(i64::from(t));
    format!("{} {}", t.date(), t.hour_minute())
}

/// The listing line unsquashfs -lln -UTC prints for an entry, split into
/// (perms, owner, size-or-dev, date time, target).
fn expected_line(e: &Exp) -> (String, String, String, String, Vec<u8>) {
    let size = match e.kind {
        FileKind::Directory => String::new(),
        FileKind::File => e.content.len().to_string(),
        FileKind::Symlink => e.target.len().to_string(),
        // unsquashfs 4.5 lists the stored value as (rdev >> 8, rdev & 0xff).
        FileKind::BlockDevice | FileKind::CharDevice => {
            let r = encode_rdev(e.rdev.0, e.rdev.1);
            format!("{},{}", r >> 8, r & 0xff)
        }
        _ => "0".into(),
    };
    (
        perm_string(e.kind, e.meta.mode),
        format!("{}/{}", e.meta.uid, e.meta.gid),
        size,
        utc(e.meta.mtime),
        e.target.clone(),
    )
}

fn unsquashfs(args: &[&OsStr]) -> Vec<u8> {
    let out = Command::new("unsquashfs")
        .args(args)
        .output()
        .expect("run unsquashfs");
    assert!(
        out.status.success(),
        "unsquashfs {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn check_lln(img: &Path, offset: u64, exp: &BTreeMap<Vec<u8>, Exp>) {
    let off = offset.to_string();
    let out = unsquashfs(&[
        OsStr::new("-UTC"),
        OsStr::new("-o"),
        OsStr::new(&off),
        OsStr::new("-lln"),
        img.as_os_str(),
    ]);
    let mut got = BTreeMap::new();
    for line in out.split(|&b| b == b'\n') {
        let mut rest = line;
        let mut tok = || {
            while rest.first() == Some(&b' ') {
                rest = &rest[1..];
            }
            let end = rest.iter().position(|&b| b == b' ').unwrap_or(rest.len());
            let t = String::from_utf8_lossy(&rest[..end]).into_owned();
            rest = &rest[end..];
            t
        };
        let perms = tok();
        if perms.len() != 10 || !"dlbcps-".contains(&perms[..1]) {
            continue;
        }
        let owner = tok();
        let mut size = tok();
        if (perms.starts_with('b') || perms.starts_with('c')) && size.ends_with(',') {
            size.push_str(&tok());
        }
        let date = format!("{} {}", tok(), tok());
        let path = &rest[1..];
        let (path, target) = match path.windows(4).position(|w| w == b" -> ") {
            Some(i) if perms.starts_with('l') => (&path[..i], path[i + 4..].to_vec()),
            _ => (path, Vec::new()),
        };
        let key = match path.strip_prefix(b"squashfs-root") {
            Some(b"") => b"/".to_vec(),
            Some(p) => p.to_vec(),
            None => panic!("unexpected path {}", String::from_utf8_lossy(path)),
        };
        if perms.starts_with('d') {
            size.clear();
        }
        got.insert(key, (perms, owner, size, date, target));
    }
    let want: BTreeMap<Vec<u8>, _> = exp
        .iter()
        .map(|(k, e)| (k.clone(), expected_line(e)))
        .collect();
    for (k, w) in &want {
        assert_eq!(
            got.get(k),
            Some(w),
            "unsquashfs -lln entry {}",
            String::from_utf8_lossy(k)
        );
    }
    assert_eq!(got.len(), want.len(), "unsquashfs -lln lists extra entries");
}

fn check_extract(img: &Path, offset: u64, exp: &BTreeMap<Vec<u8>, Exp>) {
    let dir = TempDir::new("x");
    let dest = dir.0.join("root");
    let off = offset.to_string();
    unsquashfs(&[
        OsStr::new("-q"),
        OsStr::new("-n"),
        OsStr::new("-no-xattrs"),
        OsStr::new("-o"),
        OsStr::new(&off),
        OsStr::new("-d"),
        dest.as_os_str(),
        img.as_os_str(),
    ]);
    check_tree(&dest, exp, true);
}

/// Compares a directory tree on disk (extracted or mounted) with the model.
fn check_tree(root: &Path, exp: &BTreeMap<Vec<u8>, Exp>, check_dir_mtime: bool) {
    check_tree_x(root, exp, check_dir_mtime, false)
}

/// Reads one xattr of `p` (not following symlinks).
fn lgetxattr(p: &Path, name: &[u8]) -> Option<Vec<u8>> {
    let cp = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid NUL-terminated strings and buffer.
    let n =
        unsafe { libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn check_tree_x(root: &Path, exp: &BTreeMap<Vec<u8>, Exp>, check_dir_mtime: bool, xattrs: bool) {
    let euid = unsafe { libc::geteuid() };
    let mut inos: BTreeMap<usize, u64> = BTreeMap::new();
    let mut count = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            count += 1;
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert_eq!(count + 1, exp.len(), "number of entries on disk");
    for (k, e) in exp {
        let p = if k == b"/" {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&k[1..]))
        };
        let what = String::from_utf8_lossy(k);
        let md = std::fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("{what}: {err}"));
        let ft = md.file_type();
        let kind_ok = match e.kind {
            FileKind::Directory => ft.is_dir(),
            FileKind::File => ft.is_file(),
            FileKind::Symlink => ft.is_symlink(),
            FileKind::BlockDevice => ft.is_block_device(),
            FileKind::CharDevice => ft.is_char_device(),
            FileKind::Fifo => ft.is_fifo(),
            FileKind::Socket => ft.is_socket(),
        };
        assert!(kind_ok, "{what}: type");
        if e.kind != FileKind::Symlink {
            assert_eq!(md.mode() & 0o7777, u32::from(e.meta.mode), "{what}: mode");
        }
        if euid == 0 {
            assert_eq!(
                (md.uid(), md.gid()),
                (e.meta.uid, e.meta.gid),
                "{what}: owner"
            );
        }
        if e.kind == FileKind::File || (check_dir_mtime && e.kind == FileKind::Directory) {
            assert_eq!(md.mtime(), i64::from(e.meta.mtime), "{what}: mtime");
        }
        match e.kind {
            FileKind::File if xattrs && !e.meta.xattrs.is_empty() => {
                check_xattrs(&p, e);
                let data = std::fs::read(&p).unwrap();
                assert!(data == *e.content, "{what}: content differs");
            }
            FileKind::File => {
                let data = std::fs::read(&p).unwrap();
                assert!(data == *e.content, "{what}: content differs");
                let links = exp.values().filter(|o| o.id == e.id).count() as u64;
                assert_eq!(md.nlink(), links, "{what}: nlink");
                let prev = *inos.entry(e.id).or_insert(md.ino());
                assert_eq!(prev, md.ino(), "{what}: hard link inode");
            }
            FileKind::Symlink => {
                let t = std::fs::read_link(&p).unwrap();
                assert_eq!(
                    t.as_os_str().as_bytes(),
                    e.target.as_slice(),
                    "{what}: target"
                );
            }
            _ => {}
        }
    }
}

fn check_reader(img: &Path, offset: u64, exp: &BTreeMap<Vec<u8>, Exp>, s: &Summary) {
    let ar = Archive::open_path(img, offset).unwrap();
    assert_eq!(u64::from(ar.superblock().inode_count), u64::from(s.inodes));
    assert_eq!(ar.superblock().bytes_used, s.bytes_used);
    // Walk everything through read_dir.
    let mut seen = vec![b"/".to_vec()];
    let mut stack = vec![(b"".to_vec(), ar.root().unwrap())];
    while let Some((path, dir)) = stack.pop() {
        let entries = ar.read_dir(&dir).unwrap();
        assert!(entries.windows(2).all(|w| w[0].name < w[1].name), "sorted");
        let subdirs = entries
            .iter()
            .filter(|e| e.kind == FileKind::Directory)
            .count() as u32;
        assert_eq!(dir.nlink, 2 + subdirs);
        for e in entries {
            let mut p = path.clone();
            p.push(b'/');
            p.extend_from_slice(&e.name);
            let inode = ar.inode(e.inode_ref).unwrap();
            assert_eq!(inode.number, e.number);
            assert_eq!(inode.kind, e.kind);
            seen.push(p.clone());
            if inode.is_dir() {
                stack.push((p, inode));
            }
        }
    }
    seen.sort();
    let want: Vec<Vec<u8>> = exp.keys().cloned().collect();
    assert_eq!(seen, want, "reader listing");
    let mut numbers: BTreeMap<usize, u32> = BTreeMap::new();
    let mut all_numbers = std::collections::BTreeSet::new();
    for (k, e) in exp {
        let what = String::from_utf8_lossy(k);
        let inode = ar
            .resolve(k)
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: lookup"));
        assert_eq!(inode.kind, e.kind, "{what}");
        assert_eq!(inode.mode, e.meta.mode, "{what}: mode");
        assert_eq!(
            (inode.uid, inode.gid),
            (e.meta.uid, e.meta.gid),
            "{what}: owner"
        );
        assert_eq!(inode.mtime, e.meta.mtime, "{what}: mtime");
        let mut want_x = e.meta.xattrs.clone();
        want_x.sort();
        let mut got_x = ar.xattrs(&inode).unwrap();
        got_x.sort();
        assert_eq!(got_x, want_x, "{what}: xattrs");
        assert_eq!(
            ar.inode_ref_by_number(inode.number).unwrap(),
            Some(inode.inode_ref),
            "{what}: export table"
        );
        let prev = *numbers.entry(e.id).or_insert(inode.number);
        assert_eq!(prev, inode.number, "{what}: hard link number");
        all_numbers.insert(inode.number);
        match e.kind {
            FileKind::File => {
                assert_eq!(inode.size, e.content.len() as u64, "{what}: size");
                assert!(
                    ar.read_file(&inode).unwrap() == *e.content,
                    "{what}: content"
                );
                let links = exp.values().filter(|o| o.id == e.id).count() as u32;
                assert_eq!(inode.nlink, links, "{what}: nlink");
            }
            FileKind::Symlink => {
                assert_eq!(ar.read_link(&inode).unwrap(), e.target, "{what}: target");
                let links = exp.values().filter(|o| o.id == e.id).count() as u32;
                assert_eq!(inode.nlink, links, "{what}: nlink");
            }
            FileKind::BlockDevice | FileKind::CharDevice => {
                assert_eq!(
                    (inode.rdev_major(), inode.rdev_minor()),
                    e.rdev,
                    "{what}: rdev"
                );
            }
            _ => {}
        }
    }
    assert_eq!(
        all_numbers.len() as u32,
        s.inodes,
        "inode numbers are distinct"
    );
    assert_eq!(*all_numbers.iter().next_back().unwrap(), s.inodes);
    assert_eq!(
        ar.root().unwrap().number,
        s.inodes,
        "root is the last inode"
    );
}

fn check_xattrs(p: &Path, e: &Exp) {
    for (name, value) in &e.meta.xattrs {
        assert_eq!(
            lgetxattr(p, name).as_ref(),
            Some(value),
            "{}: xattr {name:?}",
            p.display()
        );
    }
}

/// Details of the rich image only visible through the reader internals.
fn check_structure(img: &Path) {
    use crate::squashfs::InodeData;
    let ar = Archive::open_path(img, 0).unwrap();
    let big = ar.resolve(b"/big").unwrap().unwrap();
    match big.data {
        InodeData::Dir { index_count, .. } => assert!(index_count >= 5, "{index_count}"),
        _ => panic!("not a dir"),
    }
    let sparse = ar.resolve(b"/files/sparse20").unwrap().unwrap();
    let holes = (20u64 << 20) / 131072 - 12 - 9;
    assert_eq!(sparse.sparse_bytes(), holes * 131072);
    assert!(ar.superblock().bytes_used < 8 << 20);
    let random = ar.resolve(b"/files/random").unwrap().unwrap();
    assert!(ar.read_file(&random).unwrap() == noise(6, 131072 * 5 / 2));
    assert!(ar.superblock().flags & flags::EXPORTABLE != 0);
}

/// `rdsquashfs -x` (squashfs-tools-ng) as a second xattr reader, if present.
fn check_rdsquashfs_xattrs(img: &Path, exp: &BTreeMap<Vec<u8>, Exp>) {
    if Command::new("rdsquashfs").arg("-h").output().is_err() {
        return;
    }
    for (k, e) in exp {
        if e.meta.xattrs.is_empty() {
            continue;
        }
        let out = Command::new("rdsquashfs")
            .arg("-x")
            .arg(OsStr::from_bytes(k))
            .arg(img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rdsquashfs -x {}",
            String::from_utf8_lossy(k)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        for (name, _) in &e.meta.xattrs {
            assert!(
                text.contains(&*String::from_utf8_lossy(name)),
                "rdsquashfs -x {}: {name:?} missing in {text}",
                String::from_utf8_lossy(k)
            );
        }
    }
}

fn check_superblock(img: &Path, offset: u64, comp: &str, s: &Summary) {
    let off = offset.to_string();
    let out = unsquashfs(&[
        OsStr::new("-o"),
        OsStr::new(&off),
        OsStr::new("-s"),
        img.as_os_str(),
    ]);
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains(&format!("Compression {comp}")), "{text}");
    assert!(text.contains("Block size 131072"), "{text}");
    assert!(
        text.contains(&format!("Number of inodes {}", s.inodes)),
        "{text}"
    );
    assert!(
        text.contains(&format!("Filesystem size {} bytes", s.bytes_used)),
        "{text}"
    );
    assert!(text.contains("Filesystem is exportable via NFS"), "{text}");
}

fn new_file(dir: &TempDir, name: &str) -> (PathBuf, File) {
    let p = dir.0.join(name);
    let f = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    (p, f)
}

#[test]
fn rich_image_all_codecs() {
    let tools = have_tool("unsquashfs");
    let dir = TempDir::new("rich");
    for (c, name) in [
        (Compressor::Gzip, "gzip"),
        (Compressor::Xz, "xz"),
        (Compressor::Lz4, "lz4"),
        (Compressor::Zstd, "zstd"),
    ] {
        let (path, f) = new_file(&dir, &format!("{name}.sqfs"));
        let mut img = Img::new(f, opts(c, 2));
        rich(&mut img, 131072, true);
        let (exp, s) = img.finish();
        assert_eq!(std::fs::metadata(&path).unwrap().len() % 4096, 0);
        assert_eq!(s.duplicate_files, 2, "{name}");
        assert_eq!(s.hard_links, 4, "{name}");
        check_reader(&path, 0, &exp, &s);
        check_structure(&path);
        if tools {
            check_superblock(&path, 0, name, &s);
            check_lln(&path, 0, &exp);
            check_extract(&path, 0, &exp);
            check_rdsquashfs_xattrs(&path, &exp);
        }
        kernel_mount_check(&path, &exp);
    }
}

#[test]
fn devices_fifo_socket() {
    let dir = TempDir::new("dev");
    let (path, f) = new_file(&dir, "dev.sqfs");
    let mut img = Img::new(f, opts(Compressor::Zstd, 1));
    img.dir(b"/dev", meta(0o755, 0, 0, T0));
    img.device(
        b"/dev/null",
        meta(0o666, 0, 0, T0 + 1),
        FileKind::CharDevice,
        1,
        3,
    );
    img.device(
        b"/dev/sda1",
        meta(0o660, 0, 6, T0 + 2),
        FileKind::BlockDevice,
        8,
        1,
    );
    img.device(
        b"/dev/big",
        meta(0o600, 0, 0, T0 + 3),
        FileKind::CharDevice,
        4000,
        300000,
    );
    img.device(
        b"/dev/fifo",
        meta(0o640, 1, 1, T0 + 4),
        FileKind::Fifo,
        0,
        0,
    );
    img.device(
        b"/dev/sock",
        meta(0o755, 2, 2, T0 + 5),
        FileKind::Socket,
        0,
        0,
    );
    let mut xm = meta(0o600, 0, 0, T0);
    xm.xattrs = vec![(
        b"security.selinux".to_vec(),
        b"system_u:object_r:null_device_t:s0".to_vec(),
    )];
    img.device(b"/dev/xnull", xm, FileKind::CharDevice, 1, 3);
    img.hardlink(b"/dev/null2", b"/dev/null");
    let (exp, s) = img.finish();
    assert_eq!(s.specials, 6);
    check_reader(&path, 0, &exp, &s);
    if have_tool("unsquashfs") {
        check_lln(&path, 0, &exp);
    }
    kernel_mount_check(&path, &exp);
}

#[test]
fn prefix_offset() {
    let dir = TempDir::new("off");
    let (path, mut f) = new_file(&dir, "off.img");
    let prefix: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
    std::io::Write::write_all(&mut f, &prefix).unwrap();
    let mut img = Img::new(f, opts(Compressor::Gzip, 2));
    img.dir(b"/d", meta(0o755, 0, 0, T0));
    img.file(b"/d/f", meta(0o644, 0, 0, T0), prng(8, 300_000));
    img.file(b"/d/g", meta(0o644, 0, 0, T0), b"small".to_vec());
    img.symlink(b"/d/l", meta(0o777, 0, 0, T0), b"f");
    let (exp, s) = img.finish();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..4096], &prefix[..]);
    assert_eq!(&bytes[4096..4100], b"hsqs");
    assert_eq!(bytes.len() as u64, 4096 + s.image_size);
    assert_eq!(s.image_size % 4096, 0);
    check_reader(&path, 4096, &exp, &s);
    if have_tool("unsquashfs") {
        check_superblock(&path, 4096, "gzip", &s);
        check_lln(&path, 4096, &exp);
        check_extract(&path, 4096, &exp);
    }
    kernel_mount_check_at(&path, 4096, &exp);
}

#[test]
fn remove_and_replace() {
    let dir = TempDir::new("rm");
    let (path, f) = new_file(&dir, "rm.sqfs");
    let mut img = Img::new(f, opts(Compressor::Xz, 2));
    img.dir(b"/a", meta(0o755, 0, 0, T0));
    img.dir(b"/a/sub", meta(0o755, 0, 0, T0));
    img.dir(b"/a/sub/deeper", meta(0o755, 0, 0, T0));
    img.file(b"/a/sub/deeper/x", meta(0o644, 0, 0, T0), b"x".to_vec());
    img.file(b"/a/sub/y", meta(0o644, 0, 0, T0), prng(1, 200_000));
    img.file(b"/a/keep", meta(0o644, 0, 0, T0), b"keep".to_vec());
    img.file(b"/a/gone", meta(0o644, 0, 0, T0), b"gone".to_vec());
    img.file(
        b"/a/becomes_dir",
        meta(0o644, 0, 0, T0),
        b"was a file".to_vec(),
    );
    img.dir(b"/a/becomes_file", meta(0o755, 0, 0, T0));
    img.file(
        b"/a/becomes_file/child",
        meta(0o644, 0, 0, T0),
        b"child".to_vec(),
    );
    img.file(b"/a/linked", meta(0o644, 0, 0, T0), b"linked".to_vec());
    img.hardlink(b"/a/sub/link_in_removed_dir", b"/a/linked");
    img.hardlink(b"/a/link2", b"/a/linked");
    img.file(b"/a/replaced", meta(0o644, 0, 0, T0), b"old".to_vec());

    assert!(img.remove(b"/a/gone"));
    assert!(!img.remove(b"/a/gone"));
    assert!(!img.remove(b"/nope/deeper"));
    assert!(img.remove(b"/a/sub"));
    assert!(!img.w.contains(b"/a/sub/deeper/x"));
    assert!(img.w.contains(b"/a/keep"));
    img.dir(b"/a/becomes_dir", meta(0o700, 1, 1, T0 + 5));
    img.file(
        b"/a/becomes_dir/inside",
        meta(0o644, 0, 0, T0),
        b"in".to_vec(),
    );
    img.file(
        b"/a/becomes_file",
        meta(0o600, 0, 0, T0 + 6),
        b"now a file".to_vec(),
    );
    img.file(
        b"/a/replaced",
        meta(0o640, 2, 2, T0 + 7),
        b"new content".to_vec(),
    );
    // add_dir on an existing directory keeps its children.
    img.dir(b"/a", meta(0o750, 3, 3, T0 + 8));
    assert!(img.w.contains(b"/a/keep"));
    // A replaced hard link name: the other names keep the inode.
    img.symlink(b"/a/link2", meta(0o777, 0, 0, T0), b"linked");
    // Errors: parent is a file; hard link to a directory; missing target.
    assert!(matches!(
        img.w
            .add_file(b"/a/keep/x", meta(0o644, 0, 0, T0), &mut &b""[..]),
        Err(Error::NotADirectory(_))
    ));
    assert!(matches!(
        img.w.add_hardlink(b"/h", b"/a"),
        Err(Error::IsADirectory(_))
    ));
    assert!(matches!(
        img.w.add_hardlink(b"/h", b"/zz"),
        Err(Error::NotFound(_))
    ));
    assert!(img.w.add_dir(b"/a/../b", meta(0o755, 0, 0, T0)).is_err());
    // Whole-root clear (opaque whiteout of "/") then rebuild.
    img.dir(b"/tmp", meta(0o1777, 0, 0, T0));
    img.file(b"/tmp/t", meta(0o644, 0, 0, T0), b"t".to_vec());
    assert!(img.w.clear_dir(b"/tmp").unwrap());
    img.drop_sub(b"/tmp");
    img.exp.insert(
        b"/tmp".to_vec(),
        Exp {
            kind: FileKind::Directory,
            meta: meta(0o1777, 0, 0, T0),
            content: Arc::default(),
            target: Vec::new(),
            rdev: (0, 0),
            id: 999_999,
        },
    );
    let (exp, s) = img.finish();
    check_reader(&path, 0, &exp, &s);
    if have_tool("unsquashfs") {
        check_lln(&path, 0, &exp);
        check_extract(&path, 0, &exp);
    }
    kernel_mount_check(&path, &exp);
}

#[test]
fn implicit_parents() {
    let dir = TempDir::new("impl");
    let (path, f) = new_file(&dir, "impl.sqfs");
    let mut w = SquashfsWriter::new(f, opts(Compressor::Gzip, 1)).unwrap();
    w.add_dir(b"/opt", meta(0o700, 10, 20, T0 + 100)).unwrap();
    w.add_file(b"/opt/x/y/file", meta(0o644, 1, 2, T0), &mut &b"data"[..])
        .unwrap();
    w.add_symlink(b"/top/l", meta(0o777, 0, 0, T0), b"target")
        .unwrap();
    let (_f, s) = w.finish().unwrap();
    let ar = Archive::open_path(&path, 0).unwrap();
    for p in [&b"/opt/x"[..], b"/opt/x/y"] {
        let i = ar.resolve(p).unwrap().unwrap();
        assert!(i.is_dir());
        assert_eq!((i.mode, i.uid, i.gid, i.mtime), (0o755, 10, 20, T0 + 100));
    }
    let i = ar.resolve(b"/top").unwrap().unwrap();
    assert_eq!((i.mode, i.uid, i.gid, i.mtime), (0o755, 0, 0, T0));
    assert_eq!(s.dirs, 5);
    assert_eq!(s.inodes, 7);
}

#[test]
fn dedup_adds_no_data() {
    let dir = TempDir::new("dedup");
    let data = prng(42, 1 << 20);
    let build = |copies: usize| {
        let (path, f) = new_file(&dir, &format!("d{copies}.sqfs"));
        let mut w = SquashfsWriter::new(f, opts(Compressor::Zstd, 2)).unwrap();
        for i in 0..copies {
            let name = format!("/copy{i}");
            w.add_file(
                name.as_bytes(),
                meta(0o644, 0, 0, T0),
                &mut Chunky(&data, 0),
            )
            .unwrap();
            w.add_file(
                format!("/small{i}").as_bytes(),
                meta(0o644, 0, 0, T0),
                &mut &b"tiny"[..],
            )
            .unwrap();
        }
        let (_f, s) = w.finish().unwrap();
        (path, s)
    };
    let (_p1, s1) = build(1);
    let (p5, s5) = build(5);
    assert_eq!(s5.duplicate_files, 8);
    assert_eq!(s5.data_bytes, s1.data_bytes);
    assert!(
        s5.bytes_used - s1.bytes_used < 1024,
        "{} vs {}",
        s5.bytes_used,
        s1.bytes_used
    );
    let ar = Archive::open_path(&p5, 0).unwrap();
    for i in 0..5 {
        let f = ar.resolve(format!("/copy{i}").as_bytes()).unwrap().unwrap();
        assert!(ar.read_file(&f).unwrap() == data);
    }
    if have_tool("unsquashfs") {
        let x = TempDir::new("dedupx");
        let dest = x.0.join("r");
        unsquashfs(&[
            OsStr::new("-q"),
            OsStr::new("-n"),
            OsStr::new("-d"),
            dest.as_os_str(),
            p5.as_os_str(),
        ]);
        for i in 0..5 {
            assert!(std::fs::read(dest.join(format!("copy{i}"))).unwrap() == data);
            assert_eq!(
                std::fs::read(dest.join(format!("small{i}"))).unwrap(),
                b"tiny"
            );
        }
    }
}

#[test]
fn deterministic_across_thread_counts() {
    let dir = TempDir::new("det");
    let mut images = Vec::new();
    for threads in [1, 4] {
        let (path, f) = new_file(&dir, &format!("t{threads}.sqfs"));
        let mut o = opts(Compressor::Zstd, threads);
        o.block_size = 4096;
        let mut img = Img::new(f, o);
        rich(&mut img, 4096, false);
        img.file(
            b"/files/many_blocks",
            meta(0o644, 0, 0, T0),
            prng(11, 4096 * 300 + 5),
        );
        let (exp, s) = img.finish();
        if threads == 4 {
            check_reader(&path, 0, &exp, &s);
        }
        images.push(std::fs::read(&path).unwrap());
    }
    assert!(
        images[0] == images[1],
        "images differ between 1 and 4 threads"
    );
}

#[test]
fn rejects_unsupported_options() {
    let dir = TempDir::new("bad");
    for c in [Compressor::Lzo, Compressor::Lzma] {
        let (_p, f) = new_file(&dir, "x");
        let e = SquashfsWriter::new(f, opts(c, 1)).err().unwrap();
        assert!(e.to_string().contains("unsupported for writing"), "{e}");
    }
    let (_p, f) = new_file(&dir, "y");
    let mut o = opts(Compressor::Gzip, 1);
    o.block_size = 3000;
    assert!(SquashfsWriter::new(f, o).is_err());
    let (_p, f) = new_file(&dir, "z");
    let mut w = SquashfsWriter::new(f, opts(Compressor::Gzip, 1)).unwrap();
    assert!(w.add_symlink(b"/s", meta(0o777, 0, 0, 0), b"").is_err());
    let long = vec![b'n'; 256];
    let mut p = b"/".to_vec();
    p.extend_from_slice(&long);
    assert!(w.add_dir(&p, meta(0o755, 0, 0, 0)).is_err());
    assert!(w
        .add_file(b"/", meta(0o755, 0, 0, 0), &mut &b""[..])
        .is_err());
    // A failing reader leaves the writer usable.
    struct Fail(usize);
    impl std::io::Read for Fail {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("boom"));
            }
            self.0 -= 1;
            buf.fill(7);
            Ok(buf.len())
        }
    }
    assert!(w
        .add_file(b"/f", meta(0o644, 0, 0, 0), &mut Fail(3))
        .is_err());
    assert!(!w.contains(b"/f"));
    w.add_file(b"/g", meta(0o644, 0, 0, 0), &mut &b"ok"[..])
        .unwrap();
    let (_f, s) = w.finish().unwrap();
    assert_eq!(s.files, 1);
}

/// As root, mounts the image with the kernel driver and compares the tree;
/// silently does nothing when that is not possible.
fn kernel_mount_check(img: &Path, exp: &BTreeMap<Vec<u8>, Exp>) {
    kernel_mount_check_at(img, 0, exp)
}

fn kernel_mount_check_at(img: &Path, offset: u64, exp: &BTreeMap<Vec<u8>, Exp>) {
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let mnt = TempDir::new("mnt");
    let ok = Command::new("mount")
        .args(["-t", "squashfs", "-o", &format!("loop,ro,offset={offset}")])
        .arg(img)
        .arg(&mnt.0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return;
    }
    let r = std::panic::catch_unwind(|| {
        check_tree_x(&mnt.0, exp, true, true);
        for (k, e) in exp {
            if k != b"/" && e.kind != FileKind::File {
                check_xattrs(&mnt.0.join(OsStr::from_bytes(&k[1..])), e);
            }
        }
    });
    let _ = Command::new("umount").arg(&mnt.0).status();
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
    eprintln!("kernel mount check passed for {}", img.display());
}
