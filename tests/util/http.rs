//! A small HTTP/1.1 server for the lazy-start tests, on 127.0.0.1 at a free port: it serves one
//! file with range requests (`File`), or forwards every request to a registry (`Proxy`). It
//! counts the body bytes of blob and file responses, and can break: cut responses after some
//! bytes (a connection dropped mid-range), or refuse everything.
//!
//! As a proxy it can also misbehave the ways a real registry cannot be made to ([`Fault`]):
//! answer a status forever, redirect in a loop, serve another blob than the one asked for, or
//! send a manifest of any size.
//!
//! One request per connection (`Connection: close`), a thread per connection: simple, and what
//! clients must cope with anyway.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub enum Backend {
    File(PathBuf),
    /// `127.0.0.1:PORT` of the upstream server.
    Proxy(String),
}

/// A proxy's misbehaviour, for requests whose path contains `path`.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `code` with these extra headers, forever.
    Status {
        path: String,
        code: u16,
        headers: Vec<(String, String)>,
    },
    /// Answer 307 with the request's own path as `Location`, forever.
    RedirectLoop { path: String },
    /// Forward the request for blob `asked` (`sha256:…`) as a request for blob `serve`.
    SwapBlob { asked: String, serve: String },
    /// Answer 200 with a JSON manifest of `size` bytes (mostly one long annotation), without
    /// `Content-Length`: it ends when the connection closes. Its bytes count in `body_bytes`.
    HugeManifest { path: String, size: u64 },
}

/// What the server has done, and how it misbehaves (change it while it runs).
#[derive(Default)]
pub struct Control {
    /// Body bytes sent in responses to blob (`/blobs/`) or file requests.
    pub body_bytes: AtomicU64,
    /// `METHOD PATH RANGE` of every request.
    pub requests: Mutex<Vec<String>>,
    /// The next this many responses with a body are cut after `cut_after` body bytes.
    pub cuts_left: AtomicU64,
    pub cut_after: AtomicU64,
    /// Close every blob (or file) request's connection at once, answering nothing.
    pub broken: AtomicBool,
    pub fault: Mutex<Option<Fault>>,
}

pub struct HttpServer {
    pub addr: String,
    pub control: Arc<Control>,
}

impl HttpServer {
    pub fn start(backend: Backend) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a port");
        let addr = listener.local_addr().unwrap().to_string();
        let control = Arc::new(Control::default());
        let backend = Arc::new(backend);
        let c = control.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (c, backend) = (c.clone(), backend.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, &backend, &c);
                });
            }
        });
        HttpServer { addr, control }
    }

    pub fn body_bytes(&self) -> u64 {
        self.control.body_bytes.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<String> {
        self.control.requests.lock().unwrap().clone()
    }

    /// Cuts the next `n` responses after `after` body bytes.
    pub fn cut(&self, n: u64, after: u64) {
        self.control.cut_after.store(after, Ordering::SeqCst);
        self.control.cuts_left.store(n, Ordering::SeqCst);
    }

    pub fn set_broken(&self, broken: bool) {
        self.control.broken.store(broken, Ordering::SeqCst);
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        *self.control.fault.lock().unwrap() = fault;
    }
}

/// Answers with `fault` if it applies to `path`; `Some(new request line)` to forward instead,
/// `None` when it answered (or does not apply: then the line is unchanged).
fn apply_fault(
    fault: &Fault,
    out: &mut TcpStream,
    first: &str,
    path: &str,
    c: &Control,
) -> std::io::Result<Option<String>> {
    match fault {
        Fault::Status {
            path: p,
            code,
            headers,
        } if path.contains(p.as_str()) => {
            let mut head = format!(
                "HTTP/1.1 {code} Fault\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\
                 Connection: close\r\n"
            );
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("\r\nfault");
            out.write_all(head.as_bytes())?;
            Ok(None)
        }
        Fault::RedirectLoop { path: p } if path.contains(p.as_str()) => {
            out.write_all(
                format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {path}\r\nContent-Length: 0\r\n\
                     Connection: close\r\n\r\n"
                )
                .as_bytes(),
            )?;
            Ok(None)
        }
        Fault::SwapBlob { asked, serve } if path.ends_with(&format!("/blobs/{asked}")) => {
            Ok(Some(first.replace(asked.as_str(), serve)))
        }
        Fault::HugeManifest { path: p, size } if path.contains(p.as_str()) => {
            out.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n\
                  Connection: close\r\n\r\n",
            )?;
            let head = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{"x":""#;
            out.write_all(head)?;
            let chunk = vec![b'a'; 64 << 10];
            let mut sent = head.len() as u64;
            while sent < *size {
                let n = chunk.len().min((*size - sent) as usize);
                if out.write_all(&chunk[..n]).is_err() {
                    return Ok(None);
                }
                sent += n as u64;
                c.body_bytes.fetch_add(n as u64, Ordering::SeqCst);
            }
            let _ = out.write_all(br#""}}"#);
            Ok(None)
        }
        _ => Ok(Some(first.to_string())),
    }
}

/// The request line and headers (lowercase names), up to the blank line.
fn read_head(r: &mut BufReader<TcpStream>) -> std::io::Result<(String, Vec<(String, String)>)> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let first = line.trim_end().to_string();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok((first, headers))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Sends `body` to `out`, counting it and cutting it where the control says.
fn send_body(out: &mut TcpStream, body: &mut dyn Read, c: &Control, count: bool) {
    // Only blob and file bodies are cut: manifests are not what these tests break.
    let cut = count
        && c.cuts_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    let limit = if cut {
        c.cut_after.load(Ordering::SeqCst)
    } else {
        u64::MAX
    };
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = (n as u64).min(limit - sent) as usize;
        if out.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
        if count {
            c.body_bytes.fetch_add(n as u64, Ordering::SeqCst);
        }
        if sent >= limit {
            break;
        }
    }
    let _ = out.flush();
    let _ = out.shutdown(Shutdown::Both);
}

fn handle(stream: TcpStream, backend: &Backend, c: &Control) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let (first, headers) = read_head(&mut r)?;
    let range = header(&headers, "range").unwrap_or("-").to_string();
    c.requests.lock().unwrap().push(format!("{first} {range}"));
    let mut parts = first.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("/").to_string();
    let blob = matches!(backend, Backend::File(_)) || path.contains("/blobs/");
    if blob && c.broken.load(Ordering::SeqCst) {
        let _ = out.shutdown(Shutdown::Both);
        return Ok(());
    }
    let fault = c.fault.lock().unwrap().clone();
    let first = match &fault {
        Some(f) => match apply_fault(f, &mut out, &first, &path, c)? {
            Some(line) => line,
            None => {
                let _ = out.shutdown(Shutdown::Both);
                return Ok(());
            }
        },
        None => first,
    };
    match backend {
        Backend::File(file) => serve_file(&mut out, file, &method, &headers, c),
        Backend::Proxy(upstream) => proxy(&mut out, &mut r, upstream, &first, &headers, &path, c),
    }
}

const ETAG: &str = "\"rsing-test-v1\"";

fn serve_file(
    out: &mut TcpStream,
    file: &PathBuf,
    method: &str,
    headers: &[(String, String)],
    c: &Control,
) -> std::io::Result<()> {
    let mut f = std::fs::File::open(file)?;
    let size = f.metadata()?.len();
    let if_range_ok = header(headers, "if-range").is_none_or(|v| v == ETAG);
    let range = header(headers, "range")
        .filter(|_| if_range_ok)
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .and_then(|(a, b)| {
            let a: u64 = a.parse().ok()?;
            let b: u64 = if b.is_empty() {
                size - 1
            } else {
                b.parse().ok()?
            };
            (a <= b && b < size).then_some((a, b))
        });
    let (status, start, len) = match range {
        Some((a, b)) => ("206 Partial Content", a, b - a + 1),
        None => ("200 OK", 0, size),
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {len}\r\nETag: {ETAG}\r\nAccept-Ranges: bytes\r\n\
         Connection: close\r\n"
    );
    if range.is_some() {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{size}\r\n",
            start + len - 1
        ));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    if method == "HEAD" {
        return Ok(());
    }
    use std::io::Seek;
    f.seek(std::io::SeekFrom::Start(start))?;
    send_body(out, &mut f.take(len), c, true);
    Ok(())
}

fn proxy(
    out: &mut TcpStream,
    r: &mut BufReader<TcpStream>,
    upstream: &str,
    first: &str,
    headers: &[(String, String)],
    path: &str,
    c: &Control,
) -> std::io::Result<()> {
    let mut up = TcpStream::connect(upstream)?;
    let mut req = format!("{first}\r\n");
    for (k, v) in headers {
        if k != "connection" {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    req.push_str("connection: close\r\n\r\n");
    up.write_all(req.as_bytes())?;
    if let Some(len) = header(headers, "content-length").and_then(|v| v.parse::<u64>().ok()) {
        std::io::copy(&mut r.by_ref().take(len), &mut up)?;
    }
    let mut ur = BufReader::new(up);
    // The response head, as is.
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if ur.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    out.write_all(&head)?;
    let count = path.contains("/blobs/");
    send_body(out, &mut ur, c, count);
    Ok(())
}
