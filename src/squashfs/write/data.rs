//! Data blocks and fragments: streamed, compressed on a thread pool, written
//! in submission order, with whole-file de-duplication.
//!
//! Every full block of a file is handed to a worker, which hashes it, detects
//! an all-zero block (stored as a hole: size 0 in the block list) and
//! compresses it (kept uncompressed, bit 24 set, when that does not shrink
//! it). Results are written to the output strictly in submission order, so
//! the image is identical whatever the number of threads or their timing.
//! At most `2 × threads` blocks are in flight (queued, being compressed, or
//! waiting for their turn to be written).
//!
//! The tail of a file (< block size) goes into the shared fragment buffer,
//! which is compressed and written as a fragment block when the next tail
//! does not fit (or at the end).
//!
//! De-duplication: a file's key is (size, 128-bit hash of its content) where
//! the hash is two SipHash-1-3 instances with different fixed keys over the
//! per-block hashes and the tail. Content cannot be compared byte by byte
//! once streamed, so two different files are merged only on a full 128-bit
//! collision of same-size files: about n²/2¹²⁹ for n files of the same size
//! (≈ 10⁻²⁷ for a million files). The fixed keys make deliberate collisions
//! possible in principle for someone who controls the input, which can only
//! make the image show a file content the same input already contains.
//! When a duplicate is detected after its blocks were written, the output is
//! rewound to the start of those blocks (they are overwritten by what
//! follows), and the earlier file's blocks and fragment are reused.

use super::compress::Encoder;
use super::{Error, Result};
use crate::squashfs::Compressor;
use std::collections::{BTreeMap, HashMap};
use std::hash::Hasher;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

const UNCOMPRESSED: u32 = 1 << 24;

/// Where a regular file's content lives in the image.
#[derive(Debug)]
pub(crate) struct FileData {
    pub(crate) size: u64,
    /// Image-relative position of the first data block.
    pub(crate) blocks_start: u64,
    /// On-disk size of each full block (0 = hole; bit 24 = uncompressed).
    pub(crate) blocks: Vec<u32>,
    /// (fragment index, offset inside the fragment block) of the tail.
    pub(crate) fragment: Option<(u32, u32)>,
    /// Bytes covered by holes.
    pub(crate) sparse: u64,
}

#[derive(Clone, Copy)]
enum Kind {
    Block,
    Fragment(u32),
}

struct Job {
    seq: u64,
    kind: Kind,
    data: Vec<u8>,
}

enum Packed {
    Hole,
    Data { bytes: Vec<u8>, size_field: u32 },
}

struct Done {
    seq: u64,
    kind: Kind,
    hash: [u64; 2],
    result: std::io::Result<Packed>,
}

fn hasher(seed: u64) -> std::hash::DefaultHasher {
    // DefaultHasher::new() uses fixed keys: deterministic within a build.
    let mut h = std::hash::DefaultHasher::new();
    h.write_u64(seed);
    h
}

const SEED_A: u64 = 0x9e37_79b9_7f4a_7c15;
const SEED_B: u64 = 0xc2b2_ae3d_27d4_eb4f;

fn hash_pair(data: &[u8]) -> [u64; 2] {
    let mut a = hasher(SEED_A);
    let mut b = hasher(SEED_B);
    a.write(data);
    b.write(data);
    [a.finish(), b.finish()]
}

/// Compresses `data`, keeping it raw when compression does not shrink it.
pub(crate) fn pack(enc: &mut Encoder, data: Vec<u8>) -> std::io::Result<(Vec<u8>, bool)> {
    let c = enc.compress(&data)?;
    if c.len() < data.len() {
        Ok((c, true))
    } else {
        Ok((data, false))
    }
}

fn process(enc: &mut Encoder, job: Job) -> Done {
    let Job { seq, kind, data } = job;
    let (hash, hole) = match kind {
        Kind::Block => {
            let hole = data.iter().all(|&b| b == 0);
            (if hole { [0, 0] } else { hash_pair(&data) }, hole)
        }
        Kind::Fragment(_) => ([0, 0], false),
    };
    let result = if hole {
        Ok(Packed::Hole)
    } else {
        pack(enc, data).map(|(bytes, compressed)| {
            let mut size_field = bytes.len() as u32;
            if !compressed {
                size_field |= UNCOMPRESSED;
            }
            Packed::Data { bytes, size_field }
        })
    };
    Done {
        seq,
        kind,
        hash,
        result,
    }
}

struct Pool {
    tx: Option<Sender<Job>>,
    rx: Receiver<Done>,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize, comp: Compressor, level: i32, block_size: u32) -> Result<Pool> {
        let (job_tx, job_rx) = channel::<Job>();
        let (done_tx, done_rx) = channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let mut enc = Encoder::new(comp, level, block_size)?;
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("sqfs-comp-{i}"))
                .spawn(move || loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    if done_tx.send(process(&mut enc, job)).is_err() {
                        return;
                    }
                })
                .map_err(Error::Io)?;
            handles.push(h);
        }
        Ok(Pool {
            tx: Some(job_tx),
            rx: done_rx,
            handles,
        })
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.tx = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// State of the file being streamed.
struct Current {
    start: Option<u64>,
    blocks: Vec<u32>,
    sparse: u64,
    hash: [std::hash::DefaultHasher; 2],
}

impl Current {
    fn new() -> Current {
        Current {
            start: None,
            blocks: Vec::new(),
            sparse: 0,
            hash: [hasher(SEED_A), hasher(SEED_B)],
        }
    }
}

pub(crate) struct DataWriter<W: Write + Seek> {
    pub(crate) out: W,
    /// Absolute position of the image start in `out`.
    pub(crate) base: u64,
    /// Current image-relative write position.
    pub(crate) pos: u64,
    /// Highest position ever written (rewinds can leave stale bytes below).
    pub(crate) high_water: u64,
    block_size: usize,
    pool: Pool,
    next_seq: u64,
    next_write: u64,
    in_flight: usize,
    max_in_flight: usize,
    pending: BTreeMap<u64, Done>,
    cur: Current,
    frag_buf: Vec<u8>,
    /// (position, size field) of every fragment block.
    pub(crate) fragments: Vec<(u64, u32)>,
    dedup: HashMap<(u64, u64, u64), Arc<FileData>>,
    pub(crate) duplicates: u64,
    /// Bytes of data and fragment blocks kept in the image.
    pub(crate) data_bytes: u64,
    failed: bool,
}

impl<W: Write + Seek> DataWriter<W> {
    pub(crate) fn new(
        out: W,
        base: u64,
        pos: u64,
        threads: usize,
        comp: Compressor,
        level: i32,
        block_size: u32,
    ) -> Result<Self> {
        Ok(DataWriter {
            out,
            base,
            pos,
            high_water: pos,
            block_size: block_size as usize,
            pool: Pool::new(threads, comp, level, block_size)?,
            next_seq: 0,
            next_write: 0,
            in_flight: 0,
            max_in_flight: 2 * threads.max(1),
            pending: BTreeMap::new(),
            cur: Current::new(),
            frag_buf: Vec::new(),
            fragments: Vec::new(),
            dedup: HashMap::new(),
            duplicates: 0,
            data_bytes: 0,
            failed: false,
        })
    }

    fn check(&self) -> Result<()> {
        if self.failed {
            return Err(Error::Failed);
        }
        Ok(())
    }

    /// Writes raw bytes at the current position.
    pub(crate) fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        self.high_water = self.high_water.max(self.pos);
        Ok(())
    }

    fn submit(&mut self, kind: Kind, data: Vec<u8>) -> Result<()> {
        while self.in_flight >= self.max_in_flight {
            self.wait_one()?;
        }
        let job = Job {
            seq: self.next_seq,
            kind,
            data,
        };
        let sent = self.pool.tx.as_ref().map(|tx| tx.send(job).is_ok());
        if sent != Some(true) {
            return Err(self.fail(Error::Other("compression worker exited".into())));
        }
        self.next_seq += 1;
        self.in_flight += 1;
        Ok(())
    }

    fn fail(&mut self, e: Error) -> Error {
        self.failed = true;
        e
    }

    fn wait_one(&mut self) -> Result<()> {
        let d = match self.pool.rx.recv() {
            Ok(d) => d,
            Err(_) => return Err(self.fail(Error::Other("compression worker exited".into()))),
        };
        self.pending.insert(d.seq, d);
        while let Some(d) = self.pending.remove(&self.next_write) {
            self.next_write += 1;
            self.in_flight -= 1;
            if let Err(e) = self.write_done(d) {
                return Err(self.fail(e));
            }
        }
        Ok(())
    }

    fn drain(&mut self) -> Result<()> {
        while self.in_flight > 0 {
            self.wait_one()?;
        }
        Ok(())
    }

    fn write_done(&mut self, d: Done) -> Result<()> {
        let packed = d.result?;
        match d.kind {
            Kind::Block => {
                self.cur.hash[0].write_u64(d.hash[0]);
                self.cur.hash[1].write_u64(d.hash[1]);
                match packed {
                    Packed::Hole => {
                        self.cur.blocks.push(0);
                        self.cur.sparse += self.block_size as u64;
                    }
                    Packed::Data { bytes, size_field } => {
                        if self.cur.start.is_none() {
                            self.cur.start = Some(self.pos);
                        }
                        self.cur.blocks.push(size_field);
                        self.write_raw(&bytes)?;
                        self.data_bytes += bytes.len() as u64;
                    }
                }
            }
            Kind::Fragment(i) => {
                let Packed::Data { bytes, size_field } = packed else {
                    unreachable!("fragments are never holes")
                };
                self.fragments[i as usize] = (self.pos, size_field);
                self.write_raw(&bytes)?;
                self.data_bytes += bytes.len() as u64;
            }
        }
        Ok(())
    }

    /// Forgets the blocks of the current file written so far.
    fn rewind_current(&mut self) -> Result<()> {
        if let Some(start) = self.cur.start.take() {
            self.data_bytes -= self.pos - start;
            self.out.seek(SeekFrom::Start(self.base + start))?;
            self.pos = start;
        }
        Ok(())
    }

    /// Streams one file's content; returns where it lives in the image.
    pub(crate) fn write_file(&mut self, content: &mut dyn Read) -> Result<Arc<FileData>> {
        self.check()?;
        self.cur = Current::new();
        let bs = self.block_size;
        let mut size = 0u64;
        let mut nblocks = 0u64;
        let tail = loop {
            let mut buf = vec![0u8; bs];
            let n = match read_full(content, &mut buf) {
                Ok(n) => n,
                Err(e) => {
                    // Abandon the file: its written blocks become dead bytes
                    // that the next file overwrites.
                    self.drain()?;
                    self.rewind_current()?;
                    return Err(Error::Io(e));
                }
            };
            size += n as u64;
            if n == bs {
                self.submit(Kind::Block, buf)?;
                nblocks += 1;
            } else {
                buf.truncate(n);
                break buf;
            }
        };
        if nblocks > 0 {
            self.drain()?;
        }
        let [mut ha, mut hb] = std::mem::replace(&mut self.cur.hash, [hasher(0), hasher(0)]);
        ha.write(&tail);
        hb.write(&tail);
        let key = (size, ha.finish(), hb.finish());
        if let Some(fd) = self.dedup.get(&key) {
            let fd = Arc::clone(fd);
            self.rewind_current()?;
            if size > 0 {
                self.duplicates += 1;
            }
            return Ok(fd);
        }
        let fragment = if tail.is_empty() {
            None
        } else {
            Some(self.add_fragment(&tail)?)
        };
        let fd = Arc::new(FileData {
            size,
            blocks_start: self.cur.start.unwrap_or(self.pos),
            blocks: std::mem::take(&mut self.cur.blocks),
            fragment,
            sparse: self.cur.sparse,
        });
        self.dedup.insert(key, Arc::clone(&fd));
        Ok(fd)
    }

    fn add_fragment(&mut self, tail: &[u8]) -> Result<(u32, u32)> {
        if self.frag_buf.len() + tail.len() > self.block_size {
            self.flush_fragment()?;
        }
        let index = u32::try_from(self.fragments.len())
            .map_err(|_| Error::Other("too many fragment blocks".into()))?;
        let offset = self.frag_buf.len() as u32;
        self.frag_buf.extend_from_slice(tail);
        Ok((index, offset))
    }

    fn flush_fragment(&mut self) -> Result<()> {
        if self.frag_buf.is_empty() {
            return Ok(());
        }
        let index = self.fragments.len() as u32;
        self.fragments.push((0, 0));
        let buf = std::mem::replace(&mut self.frag_buf, Vec::with_capacity(self.block_size));
        self.submit(Kind::Fragment(index), buf)
    }

    /// The output, once everything is written (stops the workers).
    pub(crate) fn into_output(self) -> W {
        self.out
    }

    /// Writes the last fragment block and waits for all blocks.
    pub(crate) fn finish_data(&mut self) -> Result<()> {
        self.check()?;
        self.flush_fragment()?;
        self.drain()
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
