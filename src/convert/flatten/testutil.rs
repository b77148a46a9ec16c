//! Test helpers: layer tars built in memory, flattened into a real image, read back with
//! rsing's reader and checked against `unsquashfs -lln`.

use super::{flatten, Error, FlattenStats, Layer, SquashfsWriter};
use crate::squashfs::write::{Summary, WriterOptions};
use crate::squashfs::{Archive, Compressor, FileKind, Inode};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use tar::{EntryType, Header};

pub(super) const T0: u64 = 1_600_000_000;

/// A layer held in memory; counts how often it is opened.
pub(super) struct MemLayer {
    pub name: String,
    pub tar: Vec<u8>,
    pub opens: AtomicUsize,
}

impl Layer for MemLayer {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn open_tar(&self) -> io::Result<Box<dyn Read + Send>> {
        self.opens.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(io::Cursor::new(self.tar.clone())))
    }
}

/// Builds one layer tar. Names are written as given (absolute, `..`): long ones through a
/// PAX `path` record.
pub(super) struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    pub fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    /// Appends a member; `pax` records go in a PAX header before it.
    #[allow(clippy::too_many_arguments)]
    pub fn raw(
        mut self,
        ty: EntryType,
        name: &str,
        link: &str,
        data: &[u8],
        mode: u32,
        ids: (u64, u64),
        mtime: u64,
        pax: &[(&str, &[u8])],
    ) -> Tar {
        let mut pax: Vec<(&str, &[u8])> = pax.to_vec();
        let mut h = Header::new_ustar();
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_uid(ids.0);
        h.set_gid(ids.1);
        h.set_mtime(mtime);
        h.set_size(data.len() as u64);
        if name.len() <= 100 {
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        } else {
            pax.push(("path", name.as_bytes()));
        }
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        if !pax.is_empty() {
            self.0.append_pax_extensions(pax).unwrap();
        }
        self.0.append(&h, data).unwrap();
        self
    }

    pub fn dir(self, name: &str, mode: u32) -> Tar {
        self.raw(EntryType::Directory, name, "", b"", mode, (0, 0), T0, &[])
    }
    pub fn file(self, name: &str, data: &[u8]) -> Tar {
        self.raw(EntryType::Regular, name, "", data, 0o644, (0, 0), T0, &[])
    }
    pub fn symlink(self, name: &str, target: &str) -> Tar {
        self.raw(
            EntryType::Symlink,
            name,
            target,
            b"",
            0o777,
            (0, 0),
            T0,
            &[],
        )
    }
    pub fn link(self, name: &str, target: &str) -> Tar {
        self.raw(EntryType::Link, name, target, b"", 0o644, (0, 0), T0, &[])
    }
    /// A whiteout (or opaque) marker, as Docker writes them: an empty regular file.
    pub fn marker(self, name: &str) -> Tar {
        self.file(name, b"")
    }
    /// Appends raw bytes to the stream (data the headers do not announce).
    pub fn bytes(mut self, b: &[u8]) -> Tar {
        self.0.get_mut().extend_from_slice(b);
        self
    }
    pub fn done(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

pub(super) fn layers(tars: Vec<Vec<u8>>) -> Vec<MemLayer> {
    tars.into_iter()
        .enumerate()
        .map(|(i, tar)| MemLayer {
            name: format!("layer {}", i + 1),
            tar,
            opens: AtomicUsize::new(0),
        })
        .collect()
}

/// An image file in the temp dir, removed on drop.
pub(super) struct Image {
    pub path: PathBuf,
    pub archive: Archive,
    pub summary: Summary,
    pub stats: FlattenStats,
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn temp_path() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "rsing-flatten-{}-{}.sqfs",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

pub(super) fn try_flatten(ls: &[MemLayer]) -> Result<Image, Error> {
    let path = temp_path();
    let file = std::fs::File::create(&path).unwrap();
    let opts = WriterOptions {
        compressor: Compressor::Gzip,
        level: Some(1),
        block_size: 131072,
        threads: 1,
        mkfs_time: T0 as u32,
    };
    let mut w = SquashfsWriter::new(file, opts).unwrap();
    let refs: Vec<&dyn Layer> = ls.iter().map(|l| l as &dyn Layer).collect();
    let stats = match flatten(&refs, &mut w) {
        Ok(s) => s,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let (_, summary) = w.finish().unwrap();
    let archive = Archive::open_path(&path, 0).unwrap();
    Ok(Image {
        path,
        archive,
        summary,
        stats,
    })
}

/// Flattens and checks the result against `unsquashfs -lln`.
pub(super) fn flat(tars: Vec<Vec<u8>>) -> Image {
    let img = try_flatten(&layers(tars)).unwrap();
    check_with_unsquashfs(&img);
    img
}

/// One entry of an image, as the reader sees it (the inode's fields through `Deref`).
#[derive(Debug, Clone)]
pub(super) struct Got {
    pub inode: Inode,
    /// File content or symlink target.
    pub data: Vec<u8>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl std::ops::Deref for Got {
    type Target = Inode;
    fn deref(&self) -> &Inode {
        &self.inode
    }
}

impl Got {
    pub fn rdev(&self) -> (u32, u32) {
        (self.rdev_major(), self.rdev_minor())
    }
}

impl Image {
    /// Every entry, by absolute path ("/" for the root).
    pub fn all(&self) -> BTreeMap<String, Got> {
        let mut out = BTreeMap::new();
        let root = self.archive.root().unwrap();
        self.walk(String::new(), root, &mut out);
        out
    }

    fn walk(&self, path: String, inode: Inode, out: &mut BTreeMap<String, Got>) {
        let a = &self.archive;
        let data = match inode.kind {
            FileKind::File => a.read_file(&inode).unwrap(),
            FileKind::Symlink => a.read_link(&inode).unwrap(),
            _ => Vec::new(),
        };
        let got = Got {
            data,
            xattrs: a.xattrs(&inode).unwrap(),
            inode: inode.clone(),
        };
        if inode.kind == FileKind::Directory {
            for e in a.read_dir(&inode).unwrap() {
                let child = a.inode(e.inode_ref).unwrap();
                let name = String::from_utf8(e.name).unwrap();
                self.walk(format!("{path}/{name}"), child, out);
            }
        }
        let key = if path.is_empty() { "/".into() } else { path };
        out.insert(key, got);
    }

    pub fn get(&self, path: &str) -> Option<Got> {
        self.all().remove(path)
    }

    /// The sorted paths.
    pub fn paths(&self) -> Vec<String> {
        self.all().into_keys().collect()
    }

    pub fn content(&self, path: &str) -> Vec<u8> {
        let g = self.get(path).unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!(g.kind, FileKind::File, "{path}");
        g.data
    }
}

/// `ls -l` style type and permission letters.
fn ls_mode(kind: FileKind, mode: u16) -> String {
    let t = match kind {
        FileKind::Directory => 'd',
        FileKind::File => '-',
        FileKind::Symlink => 'l',
        FileKind::CharDevice => 'c',
        FileKind::BlockDevice => 'b',
        FileKind::Fifo => 'p',
        FileKind::Socket => 's',
    };
    let mut s = String::from(t);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        let bit = 0o400 >> i;
        let mut ch = if mode & bit != 0 { c } else { '-' };
        let special = match i {
            2 => mode & 0o4000 != 0,
            5 => mode & 0o2000 != 0,
            8 => mode & 0o1000 != 0,
            _ => false,
        };
        if special {
            let (set, unset) = if i == 8 { ('t', 'T') } else { ('s', 'S') };
            ch = if mode & bit != 0 { set } else { unset };
        }
        s.push(ch);
    }
    s
}

/// Whether `unsquashfs` runs; under CI=true it must.
fn have_unsquashfs() -> bool {
    let found = std::process::Command::new("unsquashfs")
        .arg("-version")
        .output()
        .is_ok();
    if !found {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "unsquashfs is required under CI"
        );
        eprintln!("note: unsquashfs not found, skipping the listing checks");
    }
    found
}

/// The paths, types, modes and owners that `unsquashfs -lln` lists equal the reader's.
fn check_with_unsquashfs(img: &Image) {
    if !have_unsquashfs() {
        return;
    }
    let out = std::process::Command::new("unsquashfs")
        .args(["-lln", "-d", ""])
        .arg(&img.path)
        .output()
        .expect("run unsquashfs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut listed = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || !f[1].contains('/') {
            continue;
        }
        // Devices list "MAJ, MIN" where files list a size: the path follows the time.
        let at = f
            .iter()
            .position(|w| w.len() == 5 && w.as_bytes()[2] == b':')
            .unwrap();
        let path = f.get(at + 1).map_or("/".into(), |p| p.to_string());
        listed.insert(path, (f[0].to_string(), f[1].to_string()));
    }
    let mine: BTreeMap<String, (String, String)> = img
        .all()
        .into_iter()
        .map(|(p, g)| (p, (ls_mode(g.kind, g.mode), format!("{}/{}", g.uid, g.gid))))
        .collect();
    assert_eq!(listed, mine, "unsquashfs -lln disagrees with the reader");
}
