//! Writing a new SIF file (what `siftool new` + `siftool add` or `apptainer build` produce).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use super::format::{
    self, Arch, DataType, Descriptor, FsType, Header, Link, PartType, DEFAULT_DESCRIPTORS_OFFSET,
    DEFAULT_DESCRIPTORS_TOTAL, DESCRIPTOR_LEN, EXTRA_LEN, GO_ZERO_TIME, GROUP_FLAG,
    LAUNCH_SCRIPT_LEN, LEGACY_DATA_OFFSET, NAME_LEN, PARTITION_ALIGNMENT, VERSION,
};
use super::{Error, Result};

/// Where data starts and how objects are aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// sif v2 (Apptainer, siftool): data right after the descriptor table (32176 with 48
    /// descriptors); only partitions are aligned to 4096.
    #[default]
    V2,
    /// Singularity ≤ 3.8 (sif v1): data at 32768, every object aligned to 4096.
    Legacy,
}

/// Image-wide writer settings.
#[derive(Debug, Clone, Default)]
pub struct WriterOptions {
    /// Nil UUID, and timestamps = Go's zero time (-62135596800) unless `created_at` is given.
    pub deterministic: bool,
    /// Timestamp for the header and all descriptors (default: now, or Go's zero time when
    /// deterministic).
    pub created_at: Option<i64>,
    /// Launch script (shorter than 32 bytes), e.g. `#!/usr/bin/env run-singularity\n`.
    pub launch_script: Vec<u8>,
    pub layout: Layout,
}

/// Where an object's data comes from.
#[derive(Debug)]
pub enum ObjectSource {
    Bytes(Vec<u8>),
    /// `len` bytes of `file` starting at `offset` (read with positioned reads).
    File {
        file: File,
        offset: u64,
        len: u64,
    },
    /// `len` bytes already written to the output at the object's planned offset (a partition
    /// streamed straight into place before the header is written); `write_to` skips over them.
    InPlace {
        len: u64,
    },
}

impl ObjectSource {
    fn len(&self) -> u64 {
        match self {
            ObjectSource::Bytes(b) => b.len() as u64,
            ObjectSource::File { len, .. } => *len,
            ObjectSource::InPlace { len } => *len,
        }
    }
}

/// One data object to add.
#[derive(Debug)]
pub struct Object {
    pub data_type: DataType,
    pub name: String,
    /// Group number (without the 0xF0000000 flag); `None` = in no group. Default `Some(1)`.
    pub group: Option<u32>,
    /// Link to another object or group.
    pub link: Link,
    /// Filesystem, role and architecture; required for (and only for) `DataType::Partition`.
    pub partition: Option<(FsType, PartType, Arch)>,
    /// Raw `Extra` bytes for non-partition objects (at most 384).
    pub extra: Vec<u8>,
    /// Alignment override (default from the layout).
    pub alignment: Option<u64>,
    pub source: ObjectSource,
}

impl Object {
    /// An object in group 1 with no link and no extra.
    pub fn new(data_type: DataType, name: impl Into<String>, source: ObjectSource) -> Object {
        Object {
            data_type,
            name: name.into(),
            group: Some(1),
            link: Link::None,
            partition: None,
            extra: Vec::new(),
            alignment: None,
            source,
        }
    }

    /// An in-memory object.
    pub fn bytes(data_type: DataType, name: impl Into<String>, data: Vec<u8>) -> Object {
        Object::new(data_type, name, ObjectSource::Bytes(data))
    }

    /// A partition (unnamed, group 1).
    pub fn partition(fs: FsType, part: PartType, arch: Arch, source: ObjectSource) -> Object {
        let mut o = Object::new(DataType::Partition, "", source);
        o.partition = Some((fs, part, arch));
        o
    }
}

/// Builds a SIF file from objects, in order (object *i* gets ID *i*+1).
#[derive(Debug, Default)]
pub struct SifWriter {
    options: WriterOptions,
    objects: Vec<Object>,
}

impl SifWriter {
    pub fn new(options: WriterOptions) -> Self {
        SifWriter {
            options,
            objects: Vec::new(),
        }
    }

    pub fn add_object(&mut self, obj: Object) {
        self.objects.push(obj);
    }

    /// Compute the header and descriptors without writing anything.
    pub fn plan(&self) -> Result<(Header, Vec<Descriptor>)> {
        let opts = &self.options;
        if opts.launch_script.len() >= LAUNCH_SCRIPT_LEN {
            return Err(Error::InvalidObject(format!(
                "launch script must be shorter than {LAUNCH_SCRIPT_LEN} bytes"
            )));
        }
        let time = opts.created_at.unwrap_or_else(|| {
            if opts.deterministic {
                GO_ZERO_TIME
            } else {
                now()
            }
        });
        let id = if opts.deterministic {
            [0u8; 16]
        } else {
            random_uuid_v4()?
        };

        let n = self.objects.len() as u64;
        let total = n.max(DEFAULT_DESCRIPTORS_TOTAL);
        let table_end = DEFAULT_DESCRIPTORS_OFFSET + total * DESCRIPTOR_LEN as u64;
        let data_offset = match opts.layout {
            Layout::V2 => table_end,
            Layout::Legacy => LEGACY_DATA_OFFSET.max(align_up(table_end, PARTITION_ALIGNMENT)),
        };

        let mut arch = Arch::UNKNOWN;
        let mut have_primary = false;
        let mut cur = data_offset;
        let mut descriptors = Vec::with_capacity(self.objects.len());
        for (i, o) in self.objects.iter().enumerate() {
            let oid = i as u32 + 1;
            if o.name.len() >= NAME_LEN {
                return Err(Error::InvalidObject(format!(
                    "object {oid}: name must be shorter than {NAME_LEN} bytes"
                )));
            }
            let group_id = match o.group {
                None => GROUP_FLAG,
                Some(g) if g == 0 || g & GROUP_FLAG != 0 => {
                    return Err(Error::InvalidObject(format!(
                        "object {oid}: bad group number {g}"
                    )))
                }
                Some(g) => g | GROUP_FLAG,
            };
            let extra = match (o.data_type, o.partition) {
                (DataType::Partition, Some((fs, part, parch))) => {
                    if part == PartType::PrimSys {
                        if have_primary {
                            return Err(Error::InvalidObject(
                                "image already contains a primary partition".into(),
                            ));
                        }
                        have_primary = true;
                        arch = parch;
                    }
                    format::partition_extra(fs, part, parch)
                }
                (DataType::Partition, None) => {
                    return Err(Error::InvalidObject(format!(
                        "object {oid}: partition without filesystem/type/arch"
                    )))
                }
                (_, Some(_)) => {
                    return Err(Error::InvalidObject(format!(
                        "object {oid}: partition info on a non-partition object"
                    )))
                }
                (_, None) => {
                    if o.extra.len() > EXTRA_LEN {
                        return Err(Error::InvalidObject(format!(
                            "object {oid}: extra longer than {EXTRA_LEN} bytes"
                        )));
                    }
                    let mut e = o.extra.clone();
                    e.resize(EXTRA_LEN, 0);
                    e
                }
            };
            let alignment = o.alignment.unwrap_or(match (opts.layout, o.data_type) {
                (Layout::Legacy, _) | (Layout::V2, DataType::Partition) => PARTITION_ALIGNMENT,
                (Layout::V2, _) => 1,
            });
            let size = o.source.len();
            let offset = align_up(cur, alignment.max(1));
            let end = offset
                .checked_add(size)
                .filter(|&e| e <= i64::MAX as u64)
                .ok_or_else(|| Error::InvalidObject(format!("object {oid}: too large")))?;
            let swp = end - cur;
            cur = end;
            let raw = format::RawDescriptor {
                data_type: o.data_type.code(),
                id: oid,
                group_id,
                linked_id: o.link.raw(),
                offset: offset as i64,
                size: size as i64,
                size_with_padding: swp as i64,
                created_at: time,
                modified_at: time,
                name: o.name.clone(),
                extra,
            };
            descriptors.push(Descriptor::from_raw(raw, offset, size, swp));
        }

        let header = Header {
            launch_script: opts.launch_script.clone(),
            version: VERSION.to_string(),
            arch,
            id,
            created_at: time,
            modified_at: time,
            descriptors_free: (total - n) as i64,
            descriptors_total: total as i64,
            descriptors_offset: DEFAULT_DESCRIPTORS_OFFSET as i64,
            descriptors_size: (total * DESCRIPTOR_LEN as u64) as i64,
            data_offset: data_offset as i64,
            data_size: (cur - data_offset) as i64,
        };
        Ok((header, descriptors))
    }

    /// Write the whole image to `out` from offset 0 (truncating anything after the end).
    /// File sources are streamed (`copy_file_range` where the kernel allows it).
    pub fn write_to(self, out: &mut File) -> Result<()> {
        let (header, descriptors) = self.plan()?;

        // Refuse short file sources before writing anything.
        for (o, d) in self.objects.iter().zip(&descriptors) {
            if let ObjectSource::File { file, offset, len } = &o.source {
                let meta = file.metadata()?;
                if meta.is_file() && offset.saturating_add(*len) > meta.len() {
                    return Err(Error::InvalidObject(format!(
                        "object {}: source file is shorter than offset {offset} + length {len}",
                        d.id
                    )));
                }
            }
        }

        let data_offset = header.data_offset as u64;
        let mut head = vec![0u8; data_offset as usize];
        head[..format::HEADER_LEN].copy_from_slice(&header.encode());
        let mut pos = header.descriptors_offset as usize;
        for d in &descriptors {
            head[pos..pos + DESCRIPTOR_LEN].copy_from_slice(&d.encode());
            pos += DESCRIPTOR_LEN;
        }

        out.seek(SeekFrom::Start(0))?;
        out.write_all(&head)?;
        let mut cur = data_offset;
        let zeros = [0u8; PARTITION_ALIGNMENT as usize];
        for (o, d) in self.objects.iter().zip(&descriptors) {
            let mut pad = d.offset - cur;
            while pad > 0 {
                let k = pad.min(zeros.len() as u64) as usize;
                out.write_all(&zeros[..k])?;
                pad -= k as u64;
            }
            match &o.source {
                ObjectSource::Bytes(b) => out.write_all(b)?,
                ObjectSource::File { file, offset, len } => copy_range(file, *offset, *len, out)?,
                ObjectSource::InPlace { .. } => {
                    out.seek(SeekFrom::Start(d.end()))?;
                }
            }
            cur = d.end();
        }
        out.flush()?;
        if out.metadata()?.is_file() {
            out.set_len(cur)?;
        }
        Ok(())
    }
}

/// Copy `len` bytes of `src` at `offset` to `out`'s current position.
fn copy_range(src: &File, offset: u64, len: u64, out: &mut File) -> io::Result<()> {
    let mut off = offset;
    let end = offset + len;
    // Fast path: copy_file_range (in-kernel, reflinks where possible).
    while off < end {
        let chunk = (end - off).min(1 << 30) as usize;
        let mut off_in = off as libc::loff_t;
        // SAFETY: valid fds for the duration of the call; off_in points to a live local;
        // a null off_out means "use and advance out's file offset".
        let r = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                out.as_raw_fd(),
                std::ptr::null_mut(),
                chunk,
                0,
            )
        };
        if r > 0 {
            off += r as u64;
            continue;
        }
        if r == 0 {
            return Err(short_source());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(
                libc::ENOSYS
                | libc::EXDEV
                | libc::EINVAL
                | libc::EOPNOTSUPP
                | libc::EPERM
                | libc::EBADF
                | libc::ETXTBSY,
            ) => break,
            _ => return Err(err),
        }
    }
    // Fallback: positioned reads + writes.
    let mut buf = vec![0u8; (end - off).min(1 << 20) as usize];
    while off < end {
        let k = (end - off).min(buf.len() as u64) as usize;
        let n = match src.read_at(&mut buf[..k], off) {
            Ok(0) => return Err(short_source()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        off += n as u64;
    }
    Ok(())
}

fn short_source() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "SIF object source ended before its length",
    )
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

fn now() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// A random (version 4, RFC 4122 variant) UUID from /dev/urandom.
pub fn random_uuid_v4() -> io::Result<[u8; 16]> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(b)
}
