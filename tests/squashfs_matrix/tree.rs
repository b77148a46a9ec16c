//! The content trees the matrix packs: every kind of entry and every size boundary a SquashFS
//! reader must get right, generated (pseudo-random bytes from a fixed seed, sparse files made
//! with `set_len`) so that nothing large is committed or downloaded.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

/// The block sizes of the matrix, 4 KiB to 1 MiB.
pub const BLOCK_SIZES: [u32; 5] = [4096, 8192, 65536, 131072, 1 << 20];

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Writes the small tree under `data`: sizes 0, 1, each block size and one byte more, a file
/// of several blocks with a tail, a small sparse file, 50 hard links, long, relative, absolute
/// and dangling symlinks, user xattrs, empty directories, a directory of 10,000 entries, odd
/// modes, a FIFO and spread-out mtimes.
pub fn small(data: &Path) {
    let mut rng = Rng(0x5eed);
    let sizes = dir(data, "sizes");
    write(&sizes.join("empty"), &[]);
    write(&sizes.join("one-byte"), b"x");
    for bs in BLOCK_SIZES {
        write(&sizes.join(format!("block-{bs}")), &rng.bytes(bs as usize));
        write(
            &sizes.join(format!("block-{bs}-plus-one")),
            &rng.bytes(bs as usize + 1),
        );
    }
    write(
        &sizes.join("several-blocks"),
        &rng.bytes(3 * MIB as usize + 12345),
    );
    let compressible: Vec<u8> = b"squashfs ".iter().cycle().take(700_000).copied().collect();
    write(&sizes.join("compressible"), &compressible);
    sparse(&sizes.join("hole-then-data"), 2 * MIB, &rng.bytes(10_000));

    let links = dir(data, "links");
    write(&links.join("original"), b"one inode, many names\n");
    for i in 0..50 {
        fs::hard_link(links.join("original"), links.join(format!("link-{i:02}"))).expect("link");
    }
    let long_target = "a-long-symlink-target/".repeat(200);
    symlink(&long_target[..3990], links.join("long-symlink")).expect("symlink");
    symlink("original", links.join("relative")).expect("symlink");
    symlink("/data/links/original", links.join("absolute")).expect("symlink");
    symlink("does/not/exist", links.join("dangling")).expect("symlink");
    symlink("../sizes", links.join("to-dir")).expect("symlink");

    let attrs = dir(data, "xattrs");
    write(&attrs.join("plain"), b"has xattrs\n");
    setxattr(&attrs.join("plain"), "user.name", b"value");
    setxattr(&attrs.join("plain"), "user.binary", &[0, 1, 2, 255, 254]);
    setxattr(&attrs.join("plain"), "user.long", &[b'v'; 1000]);
    setxattr(&attrs, "user.on-a-directory", b"yes");

    fs::create_dir_all(data.join("empty-dirs/a/b/c")).expect("mkdir");
    fs::create_dir_all(data.join("empty-dirs/d")).expect("mkdir");

    let many = dir(data, "ten-thousand");
    for i in 0..10_000 {
        let body = if i % 10 == 0 {
            String::new()
        } else {
            format!("{i}\n")
        };
        write(&many.join(format!("entry-{i:05}")), body.as_bytes());
    }

    let modes = dir(data, "modes");
    for (name, mode) in [("private", 0o600), ("read-only", 0o444), ("setuid", 0o4755)] {
        write(&modes.join(name), name.as_bytes());
        fs::set_permissions(modes.join(name), fs::Permissions::from_mode(mode)).expect("chmod");
    }
    let sticky = dir(&modes, "sticky");
    fs::set_permissions(&sticky, fs::Permissions::from_mode(0o1777)).expect("chmod");
    nix::unistd::mkfifo(
        &modes.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .expect("mkfifo");
    for (i, name) in ["private", "read-only", "setuid"].iter().enumerate() {
        let when = std::time::UNIX_EPOCH
            + std::time::Duration::from_secs(1_000_000_000 + i as u64 * 86_400 * 400);
        File::options()
            .write(true)
            .open(modes.join(name))
            .and_then(|f| f.set_modified(when))
            .ok();
    }
}

/// Adds the large files under `data`: 256 MiB + 1 byte of pseudo-random data (the size that
/// broke the reader), a 5 GiB sparse file with a little data in it, and a 3 GiB file whose
/// only data is its last MiB. Only the first takes real disk space.
pub fn large(data: &Path) {
    let large = dir(data, "large");
    let mut rng = Rng(0xb16);
    let mut f = File::create(large.join("random-256MiB-plus-one")).expect("create");
    for _ in 0..256 {
        f.write_all(&rng.bytes(MIB as usize)).expect("write");
    }
    f.write_all(b"!").expect("write");
    let five = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(large.join("sparse-5GiB"))
        .expect("create");
    five.set_len(5 * GIB).expect("set_len");
    for at in [0, 300 * MIB + 17, 4 * GIB + 12345] {
        (&five).seek(SeekFrom::Start(at)).expect("seek");
        (&five).write_all(&rng.bytes(100_000)).expect("write");
    }
    sparse(
        &large.join("data-at-end-3GiB"),
        3 * GIB - MIB,
        &rng.bytes(MIB as usize),
    );
}

fn dir(parent: &Path, name: &str) -> std::path::PathBuf {
    let d = parent.join(name);
    fs::create_dir_all(&d).expect("mkdir");
    d
}

fn write(path: &Path, bytes: &[u8]) {
    fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// A file of `hole` bytes of hole followed by `tail`.
fn sparse(path: &Path, hole: u64, tail: &[u8]) {
    let mut f = File::create(path).expect("create");
    f.seek(SeekFrom::Start(hole)).expect("seek");
    f.write_all(tail).expect("write");
}

fn setxattr(path: &Path, name: &str, value: &[u8]) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).expect("path");
    let n = CString::new(name).expect("name");
    // SAFETY: both strings are NUL-terminated and live across the call; value is a valid slice.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        rc,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// xorshift64*: fast, deterministic, and incompressible enough to defeat every compressor.
struct Rng(u64);

impl Rng {
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n + 8);
        while out.len() < n {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            out.extend_from_slice(&self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        out.truncate(n);
        out
    }
}
