//! The `fuser::Filesystem` adapter: FUSE requests → SquashFS archive calls.
//!
//! FUSE node ids are derived from SquashFS inode references (no table to build, so start-up
//! does not grow with the image): the root is node 1, every other inode is its reference + 2.
//! Hard links share one reference, hence one node.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, Generation, INodeNo, InitFlags,
    KernelConfig, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyXattr, Request,
};

use super::report::FailureReport;
use crate::squashfs::{Archive, DirEntry, FileKind, Inode, InodeRef};

/// The image is immutable: cached answers never go stale.
const TTL: Duration = Duration::from_secs(3600);

/// Directory listings kept decoded (the kernel caches directory pages itself; this only spares
/// re-decoding while one large directory is paged through).
const LISTINGS_KEPT: usize = 64;

pub struct SquashFs {
    archive: Arc<Archive>,
    /// Reads that failed, reported once each (`report`).
    failures: FailureReport,
    /// Recently listed directories (by node id), so that paging through a large directory
    /// decodes it once, not once per READDIR.
    listings: Mutex<HashMap<u64, Arc<Vec<DirEntry>>>>,
}

impl SquashFs {
    pub fn new(archive: Arc<Archive>, image: &str) -> Self {
        SquashFs {
            failures: FailureReport::new(image),
            archive,
            listings: Mutex::new(HashMap::new()),
        }
    }

    fn node_of(&self, r: InodeRef) -> INodeNo {
        if r == self.archive.root_ref() {
            INodeNo::ROOT
        } else {
            INodeNo(r.0 + 2)
        }
    }

    fn ref_of(&self, ino: INodeNo) -> InodeRef {
        if ino == INodeNo::ROOT {
            self.archive.root_ref()
        } else {
            InodeRef(ino.0.wrapping_sub(2))
        }
    }

    fn inode(&self, ino: INodeNo) -> Result<Inode, Errno> {
        let r = self.ref_of(ino);
        self.archive.inode(r).map_err(|e| self.failed(r, e))
    }

    /// The errno for a failed read of inode `r`, after a warning that names the image and the
    /// inode's path (once per inode).
    fn failed(&self, r: InodeRef, e: crate::squashfs::Error) -> Errno {
        self.failures.report(&self.archive, r, &e);
        Errno::from_i32(e.errno())
    }

    fn attr(&self, inode: &Inode) -> FileAttr {
        let time = UNIX_EPOCH + Duration::from_secs(inode.mtime as u64);
        FileAttr {
            ino: self.node_of(inode.inode_ref),
            size: inode.size,
            blocks: inode.size.div_ceil(512),
            atime: time,
            mtime: time,
            ctime: time,
            crtime: time,
            kind: file_type(inode.kind),
            perm: inode.mode & 0o7777,
            nlink: inode.nlink.max(1),
            uid: inode.uid,
            gid: inode.gid,
            rdev: inode.rdev,
            blksize: self.archive.superblock().block_size,
            flags: 0,
        }
    }

    fn listing(&self, ino: INodeNo) -> Result<Arc<Vec<DirEntry>>, Errno> {
        if let Some(list) = self
            .listings
            .lock()
            .ok()
            .and_then(|m| m.get(&ino.0).cloned())
        {
            return Ok(list);
        }
        let dir = self.inode(ino)?;
        let list = Arc::new(
            self.archive
                .read_dir(&dir)
                .map_err(|e| self.failed(dir.inode_ref, e))?,
        );
        if let Ok(mut map) = self.listings.lock() {
            if map.len() >= LISTINGS_KEPT {
                map.clear();
            }
            map.insert(ino.0, list.clone());
        }
        Ok(list)
    }
}

fn file_type(kind: FileKind) -> FileType {
    match kind {
        FileKind::Directory => FileType::Directory,
        FileKind::File => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
    }
}

/// A negative entry: node id 0 tells the kernel to cache "does not exist" for the TTL.
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for SquashFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // No FUSE_DO_READDIRPLUS: READDIRPLUS makes the kernel build an inode and a dentry for
        // every entry listed, and the server decode every entry's inode, which costs more than
        // the LOOKUPs it spares: a first `find /usr` (9,067 entries, 982 directories) took
        // 172 ms with it and 110 ms without (medians of 15; docs/performance.md, issue 16), and
        // `import numpy` was no slower without it.
        for flag in [
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ASYNC_READ,
            InitFlags::FUSE_NO_OPEN_SUPPORT,
            InitFlags::FUSE_NO_OPENDIR_SUPPORT,
        ] {
            let _ = config.add_capabilities(flag);
        }
        let _ = config
            .set_max_readahead(1 << 20)
            .or_else(|max| config.set_max_readahead(max));
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let dir = match self.inode(parent) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        if dir.kind != FileKind::Directory {
            return reply.error(Errno::ENOTDIR);
        }
        match self.archive.lookup(&dir, name.as_bytes()) {
            Ok(Some(entry)) => match self.archive.inode(entry.inode_ref) {
                Ok(inode) => reply.entry(&TTL, &self.attr(&inode), Generation(0)),
                Err(e) => reply.error(self.failed(entry.inode_ref, e)),
            },
            Ok(None) => reply.entry(&TTL, &negative_attr(), Generation(0)),
            Err(e) => reply.error(self.failed(dir.inode_ref, e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.inode(ino) {
            Ok(inode) => reply.attr(&TTL, &self.attr(&inode)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.inode(ino).and_then(|i| {
            self.archive
                .read_link(&i)
                .map_err(|e| self.failed(i.inode_ref, e))
        }) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(e),
        }
    }

    /// ENOSYS with FUSE_NO_OPEN_SUPPORT: the kernel stops sending OPEN and RELEASE (two round
    /// trips per file) and keeps file pages cached across opens (FOPEN_KEEP_CACHE by default).
    /// Writes never get here: the mount is read-only.
    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let inode = match self.inode(ino) {
            Ok(i) => i,
            Err(e) => return reply.error(e),
        };
        let len = (size as u64).min(inode.size.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; len];
        let mut done = 0;
        while done < len {
            match self
                .archive
                .read_at(&inode, offset + done as u64, &mut buf[done..])
            {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) => return reply.error(self.failed(inode.inode_ref, e)),
            }
        }
        reply.data(&buf[..done]);
    }

    /// ENOSYS with FUSE_NO_OPENDIR_SUPPORT: no OPENDIR/RELEASEDIR round trips, and the kernel
    /// caches directory contents (FOPEN_CACHE_DIR by default). Listings are decoded on the
    /// first READDIR and kept in a small cache for the calls that page through a large one.
    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let list = match self.listing(ino) {
            Ok(l) => l,
            Err(e) => return reply.error(e),
        };
        // Offsets: 1 = ".", 2 = "..", n + 3 = entry n.
        let dots = [(".", ino), ("..", ino)];
        for (i, (name, node)) in dots.iter().enumerate().skip(offset as usize) {
            if reply.add(*node, i as u64 + 1, FileType::Directory, name) {
                return reply.ok();
            }
        }
        let start = (offset as usize).saturating_sub(2);
        for (i, entry) in list.iter().enumerate().skip(start) {
            let node = self.node_of(entry.inode_ref);
            if reply.add(
                node,
                i as u64 + 3,
                file_type(entry.kind),
                OsStr::from_bytes(&entry.name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let sb = self.archive.superblock();
        let bsize = sb.block_size.max(1);
        reply.statfs(
            sb.bytes_used.div_ceil(bsize as u64),
            0,
            0,
            sb.inode_count as u64,
            0,
            bsize,
            255,
            bsize,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let xattrs = match self.inode(ino).and_then(|i| {
            self.archive
                .xattrs(&i)
                .map_err(|e| self.failed(i.inode_ref, e))
        }) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        match xattrs.iter().find(|(k, _)| k.as_slice() == name.as_bytes()) {
            None => reply.error(Errno::from_i32(libc::ENODATA)),
            Some((_, value)) => reply_sized(reply, size, value),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let xattrs = match self.inode(ino).and_then(|i| {
            self.archive
                .xattrs(&i)
                .map_err(|e| self.failed(i.inode_ref, e))
        }) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let mut names = Vec::new();
        for (k, _) in &xattrs {
            names.extend_from_slice(k);
            names.push(0);
        }
        reply_sized(reply, size, &names);
    }
}

/// getxattr/listxattr protocol: size 0 asks for the length, a short buffer is ERANGE.
fn reply_sized(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if (size as usize) < data.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}
