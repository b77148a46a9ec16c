//! The blob store side of a pull: `blob_dir/sha256/<hex>` files that are complete and verified
//! by construction.
//!
//! * A blob downloads into `<hex>.partial`, is hashed as it arrives, and is renamed to `<hex>`
//!   only after its sha256 matched, so nothing half-written ever has the final name.
//! * A `.partial` left by an interrupted pull is resumed with a `Range` request; a server that
//!   answers with the whole blob instead restarts it.
//! * `flock` on `<hex>.lock` serialises processes: in a 100-task job array one task downloads
//!   a blob while the others wait, then find it complete and reuse it.
//! * Layers download `Options::parallel` at a time, on scoped threads that each drive the
//!   shared tokio runtime with `block_on`.

use super::client::Conn;
use super::errors::{first_line, with_retries, Transient};
use super::{Error, Observer, Reference, Registry, Remote, RemoteLayer};
use crate::oci::Digest;
use futures_util::StreamExt;
use nix::fcntl::{Flock, FlockArg};
use oci_client::client::BlobResponse;
use oci_client::errors::{DigestError, OciDistributionError as OciError};
use oci_client::manifest::OciDescriptor;
use sha2::{Digest as _, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Why one download attempt stopped: the network (maybe worth another try) or something
/// final (local I/O, a digest mismatch).
enum Failure {
    Net(OciError),
    Final(Error),
}

impl Transient for Failure {
    fn transient(&self) -> bool {
        matches!(self, Failure::Net(e) if e.transient())
    }
    fn why(&self) -> String {
        match self {
            Failure::Net(e) => e.why(),
            Failure::Final(e) => first_line(&e.to_string()),
        }
    }
}

/// A `.partial` file being filled, with the hash of what it holds so far.
struct Partial {
    path: PathBuf,
    file: File,
    hasher: Sha256,
    len: u64,
}

impl Partial {
    /// Opens `path`, keeping (and hashing) what an earlier attempt left unless it is longer
    /// than the blob can be.
    fn open(path: PathBuf, size: u64) -> Result<Partial, Error> {
        let io = |e| Error::io(&path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)
            .map_err(io)?;
        let mut partial = Partial {
            hasher: Sha256::new(),
            len: 0,
            file: file.try_clone().map_err(io)?,
            path: path.clone(),
        };
        let existing = file.metadata().map_err(io)?.len();
        if existing > size {
            partial.restart()?;
            return Ok(partial);
        }
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            partial.hasher.update(&buf[..n]);
            partial.len += n as u64;
        }
        Ok(partial)
    }

    fn restart(&mut self) -> Result<(), Error> {
        let io = |e| Error::io(&self.path, e);
        self.file.set_len(0).map_err(io)?;
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io(&self.path, e))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn digest(&self) -> Digest {
        let hex: String = self
            .hasher
            .clone()
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Digest::parse(&format!("sha256:{hex}")).expect("a sha256 is a valid digest")
    }
}

/// One layer by reference, with named fields.
struct Layer<'a> {
    digest: &'a Digest,
    media_type: &'a str,
    size: u64,
}

/// True if `path` exists with `size` bytes. Only verified blobs ever get a final name, so the
/// size check catches only outside damage (a truncating copy, a full disk during a `cp`).
fn complete(path: &Path, size: u64) -> Result<bool, Error> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len() == size),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Takes the exclusive lock on `path` (created if needed), waiting for another process that
/// holds it.
fn lock(path: &Path) -> Result<Flock<File>, Error> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            tracing::info!(lock = %path.display(), "another rsing is downloading this blob; waiting");
            Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| Error::io(path, errno.into()))
        }
        Err((_, errno)) => Err(Error::io(path, errno.into())),
    }
}

/// One `fetch_blobs` call: what every blob download shares.
struct Fetch<'a> {
    reg: &'a Registry,
    conn: &'a Conn,
    r: &'a Reference,
    /// `blob_dir/sha256`.
    dir: &'a Path,
    observer: &'a dyn Observer,
}

impl Registry {
    /// Downloads the layers of `remote` into `blob_dir/sha256/<hex>` (skipping those already
    /// there) and returns their paths in layer order. See the module doc for the guarantees.
    pub fn fetch_blobs(
        &self,
        r: &Reference,
        remote: &Remote,
        blob_dir: &Path,
        observer: &dyn Observer,
    ) -> Result<Vec<PathBuf>, Error> {
        self.fetch_layers(r, &remote.layers, blob_dir, observer)
    }

    /// [`Registry::fetch_blobs`] for any list of blobs of `r` (an ORAS artifact's SIF layer).
    pub fn fetch_layers(
        &self,
        r: &Reference,
        layers: &[RemoteLayer],
        blob_dir: &Path,
        observer: &dyn Observer,
    ) -> Result<Vec<PathBuf>, Error> {
        let conn = self.conn(&r.registry)?;
        let dir = blob_dir.join("sha256");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let fetch = Fetch {
            reg: self,
            conn: &conn,
            r,
            dir: &dir,
            observer,
        };
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let results: Vec<Mutex<Option<Result<PathBuf, Error>>>> =
            layers.iter().map(|_| Mutex::new(None)).collect();
        let workers = self.opts.parallel.clamp(1, layers.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    while !failed.load(Ordering::Relaxed) {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((digest, media_type, size)) = layers.get(i) else {
                            break;
                        };
                        let layer = Layer {
                            digest,
                            media_type,
                            size: *size,
                        };
                        let result = fetch.one(&layer);
                        if result.is_err() {
                            failed.store(true, Ordering::Relaxed);
                        }
                        *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
                    }
                });
            }
        });
        // The first failure in layer order; layers after it may not have been tried.
        let mut paths = Vec::with_capacity(layers.len());
        for slot in results {
            match slot.into_inner().unwrap_or_else(|p| p.into_inner()) {
                Some(Ok(path)) => paths.push(path),
                Some(Err(e)) => return Err(e),
                None => {}
            }
        }
        Ok(paths)
    }
}

impl Fetch<'_> {
    /// One blob, under its lock.
    fn one(&self, layer: &Layer<'_>) -> Result<PathBuf, Error> {
        let hex = layer.digest.hex();
        let path = self.dir.join(hex);
        let reuse = || {
            tracing::debug!(blob = %layer.digest, "already downloaded");
            self.observer.started(layer.digest, layer.size);
            self.observer.progress(layer.digest, layer.size);
            self.observer.finished(layer.digest);
        };
        if complete(&path, layer.size)? {
            reuse();
            return Ok(path);
        }
        let lock_path = self.dir.join(format!("{hex}.lock"));
        let lock = lock(&lock_path)?;
        if complete(&path, layer.size)? {
            reuse();
            return Ok(path);
        }
        if path.exists() {
            tracing::warn!(blob = %path.display(), "stored blob has the wrong size; downloading it again");
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
        self.reg.rt.block_on(self.download(layer, &path))?;
        // Removed while still held: a process that opened this file before sees the blob
        // once it gets the lock; one that comes later sees the blob before locking.
        let _ = std::fs::remove_file(&lock_path);
        drop(lock);
        Ok(path)
    }

    /// Fills `<hex>.partial` (resuming what is there), checks its digest, renames it to `path`.
    async fn download(&self, layer: &Layer<'_>, path: &Path) -> Result<(), Error> {
        let hex = layer.digest.hex();
        let partial = Partial::open(self.dir.join(format!("{hex}.partial")), layer.size)?;
        let resumed = partial.len > 0;
        self.observer.started(layer.digest, layer.size);
        if resumed {
            tracing::info!(blob = %layer.digest, have = partial.len, "resuming download");
            self.observer.progress(layer.digest, partial.len);
        }
        // Shared by the retried attempts (each a new future borrowing it).
        let mut shared = tokio::sync::Mutex::new(partial);
        let what = format!("blob {}", layer.digest.short());
        let mut restarted = false;
        loop {
            let result = with_retries(&what, self.reg.backoff, self.observer, || {
                self.receive(layer, &shared)
            })
            .await;
            let partial = shared.get_mut();
            // A failure that left nothing to resume leaves no `.partial` either.
            if result.is_err() && partial.len == 0 {
                let _ = std::fs::remove_file(&partial.path);
            }
            let partial_digest = match result {
                Ok(()) => partial.digest(),
                Err(Failure::Net(e)) => return Err(self.context_error(layer, &e)),
                Err(Failure::Final(e)) => return Err(e),
            };
            if partial_digest == *layer.digest {
                break;
            }
            // A resumed file may have carried bad bytes from an earlier run: one clean try.
            if resumed && !restarted {
                tracing::warn!(blob = %layer.digest, "digest mismatch after resuming; downloading from the start");
                restarted = true;
                partial.restart()?;
                continue;
            }
            let _ = std::fs::remove_file(&partial.path);
            return Err(Error::DigestMismatch {
                registry: self.conn.registry.clone(),
                subject: self.r.short(),
                what: "blob",
                expected: layer.digest.clone(),
                actual: partial_digest,
            });
        }
        let partial = shared.into_inner();
        let io = |e| Error::io(&partial.path, e);
        partial.file.sync_all().map_err(io)?;
        std::fs::rename(&partial.path, path).map_err(io)?;
        if let Ok(d) = File::open(self.dir) {
            let _ = d.sync_all();
        }
        self.observer.finished(layer.digest);
        Ok(())
    }

    fn context_error(&self, layer: &Layer<'_>, e: &OciError) -> Error {
        let subject = format!("{}: blob {}", self.r.short(), layer.digest);
        self.conn.context(&subject).map(e)
    }

    /// One attempt: asks for the bytes after what `partial` holds and appends them until the
    /// blob's size is reached.
    async fn receive(
        &self,
        layer: &Layer<'_>,
        partial: &tokio::sync::Mutex<Partial>,
    ) -> Result<(), Failure> {
        let mut partial = partial.lock().await;
        if partial.len == layer.size {
            return Ok(());
        }
        let oref = self.conn.reference(&self.r.repository, &self.r.target());
        let desc = OciDescriptor {
            media_type: layer.media_type.to_string(),
            digest: layer.digest.to_string(),
            size: layer.size as i64,
            ..Default::default()
        };
        let response = self
            .conn
            .client
            .pull_blob_stream_partial(&oref, &desc, partial.len, None)
            .await
            .map_err(Failure::Net)?;
        let mut stream = match response {
            BlobResponse::Partial(s) => s,
            BlobResponse::Full(s) => {
                if partial.len > 0 {
                    tracing::info!(blob = %layer.digest, "server ignored the range request; restarting");
                    partial.restart().map_err(Failure::Final)?;
                }
                s
            }
        };
        let mut speed = self.reg.low_speed.watch();
        loop {
            // Wakes at the end of each window even when nothing arrives, so a stall is seen.
            let next = tokio::time::timeout(speed.wait(), stream.next()).await;
            let got = match &next {
                Ok(Some(Ok(b))) => b.len() as u64,
                _ => 0,
            };
            if let Err(why) = speed.check(got) {
                return Err(Failure::Net(OciError::IoError(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    why,
                ))));
            }
            let chunk = match next {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(_) => continue,
            };
            let bytes = match chunk {
                Ok(bytes) => bytes,
                // oci-client's own check at the end of a full response: ours follows.
                Err(e) if partial.len == layer.size && is_digest_error(&e) => break,
                Err(e) => return Err(Failure::Net(OciError::IoError(e))),
            };
            if partial.len + bytes.len() as u64 > layer.size {
                let _ = std::fs::remove_file(&partial.path);
                let why = format!(
                    "the registry sent more than the {} bytes the manifest lists; nothing was kept",
                    layer.size
                );
                let e = self.context_error(layer, &OciError::SpecViolationError(why));
                return Err(Failure::Final(e));
            }
            partial.append(&bytes).map_err(Failure::Final)?;
            self.observer.progress(layer.digest, partial.len);
        }
        if partial.len < layer.size {
            let why = format!(
                "connection closed after {} of {} bytes",
                partial.len, layer.size
            );
            return Err(Failure::Net(OciError::IoError(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                why,
            ))));
        }
        Ok(())
    }
}

fn is_digest_error(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<DigestError>())
}
