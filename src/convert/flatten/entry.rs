//! One tar member as the flattener needs it: its type, its metadata (header fields with PAX
//! overrides and `SCHILY.xattr.*` records) and, for regular files, a content stream, PAX sparse
//! files (GNU tar `--sparse --format=posix`, all three formats) expanded with zeros.
//! GNU long names, PAX paths and sizes and old GNU sparse members are handled by the `tar`
//! crate.

use crate::squashfs::write::{encode_rdev, Error as WriteError, Metadata, SquashfsWriter};
use crate::squashfs::FileKind;
use std::io::{self, Read, Seek, Write};

/// What a member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum What {
    Dir,
    File,
    Symlink(Vec<u8>),
    /// A hard link, with its raw target name.
    Link(Vec<u8>),
    /// A block or char device (with its SquashFS-encoded number) or a fifo.
    Device(FileKind, u32),
    /// Not an entry of the image (a PAX global header, a volume label).
    Ignore,
    /// An entry type the image cannot hold: skipped with a warning saying why.
    Skip(String),
}

/// Where a PAX sparse file's map is.
#[derive(Debug, Clone)]
enum Sparse {
    /// Formats 0.0 and 0.1: in the PAX records.
    Map(Vec<(u64, u64)>),
    /// Format 1.0: at the start of the member's data, in 512-byte blocks.
    InData,
}

#[derive(Debug, Clone)]
pub(super) struct Parsed {
    /// The member name as recorded (not normalised).
    pub path: Vec<u8>,
    pub what: What,
    pub meta: Metadata,
    /// Logical size of a regular file.
    pub size: u64,
    sparse: Option<Sparse>,
}

#[derive(Default)]
struct Pax {
    mtime: Option<u32>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    sparse_major: Option<u64>,
    sparse_name: Option<Vec<u8>>,
    sparse_size: Option<u64>,
    sparse_map: Option<Vec<u64>>,
    /// Format 0.0 repeats `GNU.sparse.offset` / `GNU.sparse.numbytes` records.
    sparse_pairs: Vec<u64>,
}

fn number(v: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            format!(
                "bad number {:?} in a PAX record",
                String::from_utf8_lossy(v)
            )
        })
}

/// A PAX time (`SECONDS[.FRACTION]`, maybe negative), clamped to what SquashFS stores.
fn pax_time(v: &[u8]) -> Result<u32, String> {
    let s = std::str::from_utf8(v).map_err(|_| "PAX mtime is not text".to_string())?;
    let whole = s.trim().split('.').next().unwrap_or("");
    let secs: i64 = match whole {
        "" | "-" => 0,
        w => w.parse().map_err(|_| format!("bad PAX mtime {s:?}"))?,
    };
    Ok(secs.clamp(0, i64::from(u32::MAX)) as u32)
}

fn read_pax<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Pax, String> {
    let mut pax = Pax::default();
    let Some(exts) = entry.pax_extensions().map_err(|e| e.to_string())? else {
        return Ok(pax);
    };
    for ext in exts {
        let ext = ext.map_err(|e| format!("bad PAX record: {e}"))?;
        let (k, v) = (ext.key_bytes(), ext.value_bytes());
        if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
            pax.xattrs.push((name.to_vec(), v.to_vec()));
            continue;
        }
        match k {
            b"mtime" => pax.mtime = Some(pax_time(v)?),
            b"GNU.sparse.major" => pax.sparse_major = Some(number(v)?),
            b"GNU.sparse.name" => pax.sparse_name = Some(v.to_vec()),
            b"GNU.sparse.realsize" | b"GNU.sparse.size" => pax.sparse_size = Some(number(v)?),
            b"GNU.sparse.map" => {
                let nums: Result<Vec<u64>, String> = v
                    .split(|&b| b == b',')
                    .filter(|s| !s.is_empty())
                    .map(number)
                    .collect();
                pax.sparse_map = Some(nums?);
            }
            b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => pax.sparse_pairs.push(number(v)?),
            _ => {}
        }
    }
    Ok(pax)
}

fn pairs(nums: &[u64]) -> Result<Vec<(u64, u64)>, String> {
    if nums.len() % 2 != 0 {
        return Err("odd number of values in a PAX sparse map".into());
    }
    Ok(nums.chunks(2).map(|c| (c[0], c[1])).collect())
}

/// Reads a member's header and PAX records (not its data).
pub(super) fn parse<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Parsed, String> {
    let pax = read_pax(entry)?;
    let h = entry.header();
    let field = |what: &str, e: io::Error| format!("bad {what} in the tar header: {e}");
    // Some writers leave numeric fields blank (all NULs or spaces): that reads as 0.
    let num = |what: &str, raw: &[u8], v: io::Result<u64>| match v {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(e) => Err(field(what, e)),
    };
    let id = |what: &str, raw: &[u8], v: io::Result<u64>| {
        let v = num(what, raw, v)?;
        u32::try_from(v).map_err(|_| format!("{what} {v} does not fit in 32 bits"))
    };
    let old = h.as_old();
    let mode = num("mode", &old.mode, h.mode().map(u64::from))?;
    let meta = Metadata {
        mode: (mode & 0o7777) as u16,
        uid: id("uid", &old.uid, h.uid())?,
        gid: id("gid", &old.gid, h.gid())?,
        mtime: match pax.mtime {
            Some(t) => t,
            None => num("mtime", &old.mtime, h.mtime())?.min(u64::from(u32::MAX)) as u32,
        },
        xattrs: pax.xattrs,
    };
    let mut path = entry.path_bytes().into_owned();
    let link = || {
        entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .filter(|l| !l.is_empty())
            .ok_or_else(|| "link member without a target".to_string())
    };
    let dev = |kind: FileKind| -> Result<What, String> {
        let major = h.device_major().map_err(|e| field("device major", e))?;
        let minor = h.device_minor().map_err(|e| field("device minor", e))?;
        Ok(What::Device(
            kind,
            encode_rdev(major.unwrap_or(0), minor.unwrap_or(0)),
        ))
    };
    let mut sparse = None;
    let mut size = entry.size();
    let what = match h.entry_type().as_byte() {
        // V7 tar marks directories with a trailing slash on a regular member.
        b'\0' | b'0' if path.ends_with(b"/") => What::Dir,
        b'\0' | b'0' | b'7' | b'S' => {
            if pax.sparse_major == Some(1) {
                sparse = Some(Sparse::InData);
            } else if let Some(map) = &pax.sparse_map {
                sparse = Some(Sparse::Map(pairs(map)?));
            } else if !pax.sparse_pairs.is_empty() {
                sparse = Some(Sparse::Map(pairs(&pax.sparse_pairs)?));
            }
            if sparse.is_some() {
                size = pax
                    .sparse_size
                    .ok_or("PAX sparse file without GNU.sparse.realsize")?;
                if let Some(name) = pax.sparse_name {
                    path = name;
                }
            }
            What::File
        }
        b'5' | b'D' => What::Dir,
        b'1' => What::Link(link()?),
        b'2' => What::Symlink(link()?),
        b'3' => dev(FileKind::CharDevice)?,
        b'4' => dev(FileKind::BlockDevice)?,
        b'6' => What::Device(FileKind::Fifo, 0),
        b'g' | b'V' => What::Ignore,
        t => What::Skip(format!("unsupported tar member type {:?}", t as char)),
    };
    Ok(Parsed {
        path,
        what,
        meta,
        size,
        sparse,
    })
}

/// Adds a non-directory, non-link member at `path`, reading a file's content from `data` (the
/// member's data stream). Returns the content bytes added.
pub(super) fn write_content<W: Write + Seek>(
    writer: &mut SquashfsWriter<W>,
    path: &[u8],
    p: &Parsed,
    data: &mut dyn Read,
) -> Result<u64, WriteError> {
    let meta = p.meta.clone();
    match &p.what {
        What::File => {
            match &p.sparse {
                None => writer.add_file(path, meta, data)?,
                Some(s) => {
                    let segments = match s {
                        Sparse::Map(m) => m.clone(),
                        Sparse::InData => read_sparse_map(data)?,
                    };
                    let mut r = SparseReader::new(data, segments, p.size)?;
                    writer.add_file(path, meta, &mut r)?
                }
            }
            Ok(p.size)
        }
        What::Symlink(target) => writer.add_symlink(path, meta, target).map(|_| 0),
        What::Device(kind, rdev) => writer.add_device(path, meta, *kind, *rdev).map(|_| 0),
        other => Err(WriteError::Invalid(format!(
            "internal: write_content for {other:?}"
        ))),
    }
}

fn bad_data(msg: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("PAX sparse file: {msg}"),
    )
}

/// Reads a format 1.0 sparse map: decimal numbers, one a line (the count, then offset/size
/// pairs), padded to a 512-byte block.
fn read_sparse_map(r: &mut dyn Read) -> io::Result<Vec<(u64, u64)>> {
    let mut block = [0u8; 512];
    let mut nums: Vec<u64> = Vec::new();
    let mut cur: Option<u64> = None;
    loop {
        r.read_exact(&mut block)?;
        for &b in &block {
            match b {
                b'0'..=b'9' => {
                    let v = cur
                        .unwrap_or(0)
                        .checked_mul(10)
                        .and_then(|v| v.checked_add(u64::from(b - b'0')))
                        .ok_or_else(|| bad_data("number too large in the map"))?;
                    cur = Some(v);
                }
                b'\n' => {
                    nums.push(
                        cur.take()
                            .ok_or_else(|| bad_data("empty line in the map"))?,
                    );
                    let count = nums[0];
                    // Each pair takes at least 4 bytes of map: a bound against absurd counts.
                    if count > (1 << 28) {
                        return Err(bad_data("too many segments"));
                    }
                    if nums.len() as u64 == 1 + 2 * count {
                        let segs = nums[1..].chunks(2).map(|c| (c[0], c[1])).collect();
                        return Ok(segs);
                    }
                }
                _ => return Err(bad_data("unexpected byte in the map")),
            }
        }
    }
}

/// A sparse file's logical content: its data segments at their offsets, zeros elsewhere.
struct SparseReader<'a> {
    inner: &'a mut dyn Read,
    segments: Vec<(u64, u64)>,
    next: usize,
    pos: u64,
    size: u64,
}

impl<'a> SparseReader<'a> {
    fn new(inner: &'a mut dyn Read, segments: Vec<(u64, u64)>, size: u64) -> io::Result<Self> {
        let mut end = 0u64;
        for &(off, len) in &segments {
            let stop = off
                .checked_add(len)
                .ok_or_else(|| bad_data("segment overflows"))?;
            if off < end || stop > size {
                return Err(bad_data(
                    "segments overlap, are out of order or past the end",
                ));
            }
            end = stop;
        }
        Ok(SparseReader {
            inner,
            segments,
            next: 0,
            pos: 0,
            size,
        })
    }
}

impl Read for SparseReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos >= self.size || buf.is_empty() {
                return Ok(0);
            }
            let (off, len) = self
                .segments
                .get(self.next)
                .copied()
                .unwrap_or((self.size, 0));
            if self.pos < off {
                let n = buf
                    .len()
                    .min((off - self.pos).min(usize::MAX as u64) as usize);
                buf[..n].fill(0);
                self.pos += n as u64;
                return Ok(n);
            }
            if self.pos < off + len {
                let want = buf
                    .len()
                    .min((off + len - self.pos).min(usize::MAX as u64) as usize);
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                self.pos += n as u64;
                return Ok(n);
            }
            self.next += 1;
        }
    }
}
