//! What a client and its image server say to each other: the server's arguments (once, when
//! a client starts it) and the messages on the socket.
//!
//! Both are versioned by [`VERSION`], which is also hashed into the socket's name
//! ([`super::spec`]): a client only ever meets a server of its own version, and a server
//! started with arguments of another version refuses them rather than misreading them.
//!
//! Messages are a two-byte tag with descriptors attached: [`OK`] (server → client: its user
//! namespace and a mount) and [`NS`] (client → server: the container's mount namespace).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{self, ControlMessage, ControlMessageOwned, MsgFlags};
use serde::{Deserialize, Serialize};

use super::{Error, ShareSpec};

/// The protocol's version. 3: the server's arguments are one JSON [`ShareSpec`]; 2: the `ns`
/// message (an older server would take it for a hang-up).
pub const VERSION: u64 = 3;

/// Server → client: the server's user namespace and a detached clone of its mount.
pub const OK: &[u8; 2] = b"ok";
/// Client → server: the container's mount namespace (see [`super::lend_namespace`]).
pub const NS: &[u8; 2] = b"ns";

/// The server's arguments as sent: the version first, then the spec's fields.
#[derive(Serialize)]
struct Envelope<'a> {
    protocol: u64,
    #[serde(flatten)]
    spec: &'a ShareSpec,
}

/// Read before the rest, so that arguments of another version are refused for their version,
/// whatever else changed in them.
#[derive(Deserialize)]
struct Version {
    protocol: u64,
}

/// The one argument of `rsing __serve` that carries `spec`.
pub fn encode_spec(spec: &ShareSpec) -> String {
    let envelope = Envelope {
        protocol: VERSION,
        spec,
    };
    // Plain integers, strings and byte lists: serialising them cannot fail.
    serde_json::to_string(&envelope).expect("a ShareSpec serialises")
}

/// The spec `rsing __serve` was started with ([`encode_spec`]); refused when the starter
/// speaks another version.
pub fn decode_spec(arg: &str) -> Result<ShareSpec, Error> {
    let Version { protocol } = serde_json::from_str(arg).map_err(Error::Arguments)?;
    if protocol != VERSION {
        return Err(Error::Version {
            found: protocol,
            expected: VERSION,
        });
    }
    serde_json::from_str(arg).map_err(Error::Arguments)
}

/// Sends one message: `tag` with `fds` attached.
pub fn send(stream: &UnixStream, tag: &[u8; 2], fds: &[RawFd], flags: MsgFlags) -> nix::Result<()> {
    socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(tag)],
        &[ControlMessage::ScmRights(fds)],
        flags,
        None,
    )
    .map(drop)
}

/// Receives one message (see [`send`]); its descriptors are close-on-exec. A hang-up reads as
/// an error.
pub fn receive(stream: &UnixStream) -> nix::Result<([u8; 2], Vec<OwnedFd>)> {
    let mut tag = [0u8; 2];
    let mut iov = [IoSliceMut::new(&mut tag)];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let msg = socket::recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: the kernel just installed these descriptors in our table for us.
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    if msg.bytes != tag.len() {
        return Err(nix::errno::Errno::ECONNRESET);
    }
    Ok((tag, fds))
}

/// Paths in the arguments, losslessly: a string when they are UTF-8 (readable in `ps`), else
/// their bytes (a Unix path need not be text).
pub mod os_path {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Repr<'a> {
        Text(std::borrow::Cow<'a, str>),
        Bytes(Vec<u8>),
    }

    pub fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        match path.to_str() {
            Some(text) => Repr::Text(text.into()),
            None => Repr::Bytes(path.as_os_str().as_bytes().to_vec()),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(match Repr::deserialize(d)? {
            Repr::Text(text) => PathBuf::from(text.into_owned()),
            Repr::Bytes(bytes) => PathBuf::from(OsString::from_vec(bytes)),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::path::{Path, PathBuf};

    use super::*;

    fn spec() -> ShareSpec {
        let image = std::env::current_exe().unwrap();
        super::super::spec(
            &image,
            4096,
            1000,
            100,
            "/img, with a comma",
            7,
            Path::new("/r"),
        )
        .unwrap()
        .scoped("slurm:12.0")
    }

    #[test]
    fn arguments_round_trip() {
        let s = spec();
        let arg = encode_spec(&s);
        assert!(
            arg.starts_with(&format!("{{\"protocol\":{VERSION},\"image\":\"")),
            "{arg}"
        );
        assert_eq!(decode_spec(&arg).unwrap(), s);
    }

    #[test]
    fn paths_that_are_not_text_round_trip() {
        let mut s = spec();
        s.image = PathBuf::from(OsStr::from_bytes(b"/data/\xff\xfe.sif"));
        let arg = encode_spec(&s);
        assert_eq!(decode_spec(&arg).unwrap(), s);
    }

    #[test]
    fn another_version_is_refused_for_its_version() {
        let arg = encode_spec(&spec()).replacen(
            &format!("\"protocol\":{VERSION}"),
            &format!("\"protocol\":{}", VERSION + 1),
            1,
        );
        match decode_spec(&arg) {
            Err(Error::Version { found, expected }) => {
                assert_eq!((found, expected), (VERSION + 1, VERSION))
            }
            other => panic!("accepted another version: {other:?}"),
        }
        // Even when the rest has changed shape.
        let other = format!("{{\"protocol\":{},\"images\":[1]}}", VERSION - 1);
        assert!(matches!(decode_spec(&other), Err(Error::Version { .. })));
    }

    #[test]
    fn malformed_or_unversioned_arguments_are_refused() {
        let bare = format!("{{\"protocol\":{VERSION}}}");
        for bad in ["", "/img.sif", "{}", "{\"image\":\"/x\"}", bare.as_str()] {
            assert!(
                matches!(decode_spec(bad), Err(Error::Arguments(_))),
                "accepted {bad:?}"
            );
        }
    }

    #[test]
    fn messages_carry_their_tag_and_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/proc/self/ns/mnt").unwrap();
        send(&a, NS, &[file.as_raw_fd()], MsgFlags::empty()).unwrap();
        let (tag, fds) = receive(&b).unwrap();
        assert_eq!(&tag, NS);
        assert_eq!(fds.len(), 1);
        drop(a);
        assert!(receive(&b).is_err(), "a hang-up must read as an error");
    }
}
