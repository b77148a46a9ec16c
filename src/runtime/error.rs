//! The runtime's errors: typed where the kernel said no (operation, object, errno), so that the
//! words are chosen once, at the edge, when the error is shown.

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A host path the plan needs is missing or unreadable (a bind source, /etc/resolv.conf).
    #[error("{what}: {source}")]
    Host {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The image's contents conflict with the plan (a file where a directory must be bound).
    #[error("{0}")]
    Image(String),
    /// A system call failed while setting up: `op` names what rsing was doing, `object` what
    /// it was done to, `hint` how to fix the host when the cause is usually its configuration.
    #[error("{op}{}: {errno}{}", object_text(.object), hint_text(.hint))]
    Sys {
        op: &'static str,
        object: Option<String>,
        errno: Errno,
        hint: Option<&'static str>,
    },
    /// A helper program (fuse2fs) or another step whose failure is already a sentence.
    #[error("{0}")]
    Setup(String),
    /// The payload failed after the fork; `code` is the exit status rsing should end with.
    #[error("{message}")]
    Payload { code: i32, message: String },
}

impl Error {
    /// `op` failed with `errno`.
    pub fn sys(op: &'static str, errno: Errno) -> Error {
        Error::Sys {
            op,
            object: None,
            errno,
            hint: None,
        }
    }

    /// `op` on `object` failed with `errno`.
    pub fn sys_on(op: &'static str, object: impl Into<String>, errno: Errno) -> Error {
        Error::Sys {
            op,
            object: Some(object.into()),
            errno,
            hint: None,
        }
    }

    /// Adds how to fix the host to a [`Error::Sys`].
    pub fn hint(mut self, text: &'static str) -> Error {
        if let Error::Sys { hint, .. } = &mut self {
            *hint = Some(text);
        }
        self
    }
}

fn object_text(object: &Option<String>) -> String {
    object.as_ref().map(|o| format!(" {o}")).unwrap_or_default()
}

fn hint_text(hint: &Option<&'static str>) -> String {
    hint.map(|h| format!(" ({h})")).unwrap_or_default()
}

/// The errno of an I/O error (EIO when it carries none).
pub fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sys_errors_read_as_one_line() {
        let e = Error::sys_on("cannot write", "/proc/self/uid_map", Errno::EPERM);
        assert_eq!(
            e.to_string(),
            "cannot write /proc/self/uid_map: EPERM: Operation not permitted"
        );
        let e = Error::sys("cannot create a user namespace", Errno::ENOSPC).hint("raise it");
        assert!(e.to_string().ends_with("No space left on device (raise it)"), "{e}");
    }
}
