//! Content digests (sha256 only) and a reader that checks one while the content streams.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use super::Error;

/// A sha256 content digest: 64 lowercase hex digits. Other algorithms are refused when parsed,
/// so a `Digest` can always be checked and used as a file name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`.
    pub fn parse(s: &str) -> Result<Digest, Error> {
        let hex = s
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .ok_or_else(|| Error::Digest(s.to_string()))?;
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_sha256(&Sha256::digest(bytes))
    }

    /// From a finished sha256 hash.
    pub(crate) fn from_sha256(hash: &[u8]) -> Digest {
        Digest { hex: to_hex(hash) }
    }

    /// The 64 hex digits, without `sha256:` (the blob's file name in a layout).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// `sha256:` and the first 12 hex digits, for messages.
    pub fn short(&self) -> String {
        format!("sha256:{}", &self.hex[..12])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest, Error> {
        Digest::parse(s)
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = Error;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Digest, Error> {
        Digest::parse(d.as_ref())
    }
}

/// Hashes what passes through and, at the end of the content, fails with
/// [`io::ErrorKind::InvalidData`] naming the digest when the bytes or their count are not the
/// expected ones. Reading more than the expected size fails at once; after a failure every
/// read fails again, so a caller that retries cannot mistake a bad blob for a short one.
pub struct VerifyingReader<R: Read> {
    inner: R,
    expected: Digest,
    size: Option<u64>,
    hasher: Sha256,
    seen: u64,
    state: State,
}

#[derive(Clone, PartialEq)]
enum State {
    Reading,
    Verified,
    Failed(String),
}

impl<R: Read> VerifyingReader<R> {
    /// Checks `inner` against `expected`, and against `size` bytes when given.
    pub fn new(inner: R, expected: Digest, size: Option<u64>) -> VerifyingReader<R> {
        VerifyingReader {
            inner,
            expected,
            size,
            hasher: Sha256::new(),
            seen: 0,
            state: State::Reading,
        }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.seen
    }

    fn fail(&mut self, message: String) -> io::Error {
        self.state = State::Failed(message.clone());
        io::Error::new(io::ErrorKind::InvalidData, message)
    }

    fn finish(&mut self) -> io::Result<()> {
        if let Some(size) = self.size.filter(|s| *s != self.seen) {
            let msg = format!(
                "blob {} is {} bytes, expected {size} (truncated or wrong blob)",
                self.expected, self.seen
            );
            return Err(self.fail(msg));
        }
        let got = to_hex(&std::mem::take(&mut self.hasher).finalize());
        if got != self.expected.hex {
            let msg = format!(
                "blob {} has the wrong content (its digest is sha256:{got})",
                self.expected
            );
            return Err(self.fail(msg));
        }
        self.state = State::Verified;
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.state {
            State::Failed(msg) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, msg.clone()))
            }
            State::Verified => return Ok(0),
            State::Reading if buf.is_empty() => return Ok(0),
            State::Reading => {}
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.finish()?;
            return Ok(0);
        }
        self.hasher.update(&buf[..n]);
        self.seen += n as u64;
        if let Some(size) = self.size.filter(|s| self.seen > *s) {
            let msg = format!(
                "blob {} is longer than the expected {size} bytes",
                self.expected
            );
            return Err(self.fail(msg));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parse_and_print() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.hex(), &EMPTY[7..]);
        assert_eq!(d.short(), "sha256:e3b0c44298fc");
        assert_eq!(Digest::of(b""), d);
        for bad in [
            "sha512:abcd",
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            "sha256:e3b0",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "sha256:../../../etc/passwd",
        ] {
            let msg = Digest::parse(bad).unwrap_err().to_string();
            assert!(msg.contains(bad) && msg.contains("sha256"), "{msg}");
        }
    }

    fn read_all(data: &[u8], digest: &Digest, size: Option<u64>) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        VerifyingReader::new(data, digest.clone(), size).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn verifies_at_eof() {
        let data = b"hello world".repeat(1000);
        let d = Digest::of(&data);
        assert_eq!(read_all(&data, &d, Some(data.len() as u64)).unwrap(), data);
        assert_eq!(read_all(&data, &d, None).unwrap(), data);

        let mut bad = data.clone();
        bad[5] ^= 1;
        let err = read_all(&bad, &d, None).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains(&d.to_string()), "{err}");

        let err = read_all(&data[..100], &d, Some(data.len() as u64)).unwrap_err();
        assert!(
            err.to_string().contains("is 100 bytes, expected 11000"),
            "{err}"
        );
        let err = read_all(&data, &d, Some(10)).unwrap_err();
        assert!(
            err.to_string().contains("longer than the expected 10"),
            "{err}"
        );
    }

    #[test]
    fn failure_sticks() {
        let d = Digest::of(b"abc");
        let mut r = VerifyingReader::new(&b"abd"[..], d, None);
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap(), 3);
        assert!(r.read(&mut buf).is_err());
        assert!(r.read(&mut buf).is_err());
    }
}
