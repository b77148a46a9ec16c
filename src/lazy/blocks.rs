//! The node-local block cache of one image being downloaded: a sparse file as large as the
//! image (`<key>.sif`) and a map with one byte per chunk (`<key>.map`, 1 = the chunk's bytes
//! are in the file).
//!
//! Shared by every rsing process of the user on the node. A chunk is fetched under an
//! open-file-description lock (`F_OFD_SETLKW`) on its byte of the map, which excludes other
//! processes, and a set of the chunks this process is fetching, which excludes its other
//! threads (they share the one description, so its locks do not exclude them). Locks are
//! released explicitly, so a child that inherited the descriptor cannot keep them. Nothing is
//! opened by path after [`Blocks::open`]: see `at`. The data is written before the map byte, so a chunk marked present is complete;
//! a crash between the two costs a second fetch. Whatever happens, the whole file is checked
//! against the image's digest before it becomes a cache entry (see `source`).

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

/// The chunks of one image and which of them are here.
pub struct Blocks {
    data: File,
    map: File,
    /// Chunks a thread of this process holds the lock of.
    busy: Mutex<HashSet<u64>>,
    freed: Condvar,
    pub chunk: u64,
    pub size: u64,
    present: Vec<AtomicBool>,
}

/// An exclusive lock on chunks `[first, first + count)`, released on drop.
pub struct ChunkLock<'a> {
    blocks: &'a Blocks,
    first: u64,
    count: u64,
}

fn ofd_lock(file: &File, kind: libc::c_short, first: u64, count: u64) -> io::Result<()> {
    // SAFETY: an all-zero flock is valid; the fields are set below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = first as libc::off_t;
    fl.l_len = count as libc::off_t;
    loop {
        // SAFETY: `fl` lives across the call; the descriptor is open.
        let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLKW, &fl) };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Drop for ChunkLock<'_> {
    fn drop(&mut self) {
        let b = self.blocks;
        let _ = ofd_lock(
            &b.map,
            libc::F_UNLCK as libc::c_short,
            self.first,
            self.count,
        );
        b.release(self.first, self.count);
    }
}

/// The fixed modification time of a data file: writing chunks must not change the identity
/// the image server is found by (`runtime::share::spec` hashes the mtime).
const FIXED_MTIME: libc::timespec = libc::timespec {
    tv_sec: 1,
    tv_nsec: 0,
};

fn pin_mtime(file: &File) {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        FIXED_MTIME,
    ];
    // SAFETY: `times` is two valid timespecs; the descriptor is open.
    unsafe { libc::futimens(file.as_raw_fd(), times.as_ptr()) };
}

impl Blocks {
    /// Creates (or truncates) the sparse data file and an empty map for `size` bytes.
    pub fn create(data: &Path, map: &Path, size: u64, chunk: u64) -> io::Result<()> {
        let open = |p: &Path| {
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(p)
        };
        let d = open(data)?;
        d.set_len(size)?;
        pin_mtime(&d);
        open(map)?.set_len(size.div_ceil(chunk))?;
        Ok(())
    }

    pub fn open(data: &Path, map: &Path, size: u64, chunk: u64) -> io::Result<Blocks> {
        let rw = |p: &Path| OpenOptions::new().read(true).write(true).open(p);
        let data_file = rw(data)?;
        let map_file = rw(map)?;
        let n = size.div_ceil(chunk);
        if data_file.metadata()?.len() != size || map_file.metadata()?.len() != n {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the block cache files do not have the image's size",
            ));
        }
        Ok(Blocks {
            data: data_file,
            map: map_file,
            busy: Mutex::new(HashSet::new()),
            freed: Condvar::new(),
            chunk,
            size,
            present: (0..n).map(|_| AtomicBool::new(false)).collect(),
        })
    }

    pub fn chunks(&self) -> u64 {
        self.present.len() as u64
    }

    /// Byte range `[start, end)` of chunk `i`.
    pub fn range(&self, i: u64) -> (u64, u64) {
        let start = i * self.chunk;
        (start, (start + self.chunk).min(self.size))
    }

    /// Whether chunk `i` is in the data file (fetched by this or another process).
    pub fn is_present(&self, i: u64) -> bool {
        let flag = &self.present[i as usize];
        if flag.load(Ordering::Acquire) {
            return true;
        }
        let mut b = [0u8];
        if self.map.read_exact_at(&mut b, i).is_ok() && b[0] == 1 {
            flag.store(true, Ordering::Release);
            return true;
        }
        false
    }

    /// Waits for the exclusive lock on chunks `[first, first + count)`.
    pub fn lock(&self, first: u64, count: u64) -> io::Result<ChunkLock<'_>> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        while (first..first + count).any(|c| busy.contains(&c)) {
            busy = self.freed.wait(busy).unwrap_or_else(|p| p.into_inner());
        }
        busy.extend(first..first + count);
        drop(busy);
        if let Err(e) = ofd_lock(&self.map, libc::F_WRLCK as libc::c_short, first, count) {
            self.release(first, count);
            return Err(e);
        }
        Ok(ChunkLock {
            blocks: self,
            first,
            count,
        })
    }

    fn release(&self, first: u64, count: u64) {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        for c in first..first + count {
            busy.remove(&c);
        }
        drop(busy);
        self.freed.notify_all();
    }

    /// Stores the bytes of chunk `i` (hold its lock).
    pub fn store(&self, i: u64, bytes: &[u8]) -> io::Result<()> {
        let (start, end) = self.range(i);
        debug_assert_eq!(bytes.len() as u64, end - start);
        self.data.write_all_at(bytes, start)?;
        pin_mtime(&self.data);
        self.map.write_all_at(&[1], i)?;
        self.present[i as usize].store(true, Ordering::Release);
        Ok(())
    }

    /// Reads bytes that are present.
    pub fn read(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.data.read_exact_at(buf, pos)
    }

    pub fn data(&self) -> &File {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_stored_and_seen_by_another_opener() {
        let dir = super::super::tests::TempDir::new("lazy-blocks");
        let (d, m) = (dir.0.join("x.sif"), dir.0.join("x.map"));
        Blocks::create(&d, &m, 10, 4).unwrap();
        let a = Blocks::open(&d, &m, 10, 4).unwrap();
        let b = Blocks::open(&d, &m, 10, 4).unwrap();
        assert_eq!(a.chunks(), 3);
        assert_eq!(a.range(2), (8, 10));
        assert!(!b.is_present(2));
        {
            let _l = a.lock(2, 1).unwrap();
            a.store(2, b"xy").unwrap();
        }
        assert!(b.is_present(2));
        let mut buf = [0u8; 2];
        b.read(&mut buf, 8).unwrap();
        assert_eq!(&buf, b"xy");
        let mtime = std::fs::metadata(&d).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(mtime.mtime(), 1);
    }

    #[test]
    fn chunk_locks_exclude_threads_of_one_process() {
        let dir = super::super::tests::TempDir::new("lazy-blocks");
        let (d, m) = (dir.0.join("x.sif"), dir.0.join("x.map"));
        Blocks::create(&d, &m, 8, 4).unwrap();
        let a = std::sync::Arc::new(Blocks::open(&d, &m, 8, 4).unwrap());
        let held = a.lock(0, 1).unwrap();
        let b = a.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let _l = b.lock(0, 1).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        // Another chunk is free meanwhile.
        drop(a.lock(1, 1).unwrap());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }
}
