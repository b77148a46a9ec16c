//! Turns the namespace probe's outcome into the `userns`, `fuse` and `overlay` checks, naming
//! the sysctl, AppArmor rule, device mode or kernel version that explains a failure.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::probe::Outcome;
use super::report::Check;

/// A sysctl's value, if the file exists (`kernel.unprivileged_userns_clone` exists only on
/// Debian-patched and some hardened kernels).
fn sysctl(name: &str) -> Option<String> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// The kernel's `major.minor`.
pub fn kernel_version() -> Option<(u32, u32)> {
    let release = nix::sys::utsname::uname().ok()?;
    let release = release.release().to_string_lossy().into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Why user namespaces are blocked, from the sysctls that block them, or None.
fn userns_blocker() -> Option<(String, String)> {
    if sysctl("kernel.unprivileged_userns_clone").as_deref() == Some("0") {
        return Some((
            "kernel.unprivileged_userns_clone = 0 (Debian/hardened kernel)".into(),
            "as root: sysctl -w kernel.unprivileged_userns_clone=1, and persist it in \
             /etc/sysctl.d/90-rsing.conf"
                .into(),
        ));
    }
    if sysctl("user.max_user_namespaces").as_deref() == Some("0") {
        return Some((
            "user.max_user_namespaces = 0 (RHEL/Rocky 7 default, or set by the site)".into(),
            "as root: sysctl -w user.max_user_namespaces=15000, and persist it in \
             /etc/sysctl.d/90-rsing.conf (RHEL 7 also needs the boot option \
             namespace.unpriv_enable=1)"
                .into(),
        ));
    }
    None
}

fn apparmor_restricts() -> bool {
    sysctl("kernel.apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
}

const APPARMOR_FIX: &str = "install the AppArmor profile shipped with rsing \
    (/etc/apparmor.d/rsing, in the .deb; see docs/admin-guide.md) and run \
    'apparmor_parser -r /etc/apparmor.d/rsing', or as root: \
    sysctl -w kernel.apparmor_restrict_unprivileged_userns=0";

pub fn userns(o: &Outcome) -> Check {
    let restricted = apparmor_restricts();
    match (&o.userns, &o.id_maps, &o.tmpfs) {
        (Ok(()), Ok(()), Ok(())) => Check::ok(
            "userns",
            format!(
                "unprivileged user and mount namespaces work (user.max_user_namespaces = {}{})",
                sysctl("user.max_user_namespaces").unwrap_or_else(|| "?".into()),
                if restricted {
                    "; AppArmor restricts them, but not for rsing"
                } else {
                    ""
                }
            ),
        ),
        (Err(e), _, _) => {
            let (why, fix) = userns_blocker().unwrap_or_else(|| {
                if e.starts_with("ENOSPC") {
                    (
                        "the user namespace limit is reached (user.max_user_namespaces, or \
                         this is already a deeply nested namespace)"
                            .into(),
                        "as root: sysctl -w user.max_user_namespaces=15000".into(),
                    )
                } else {
                    (
                        "no sysctl forbids them: a seccomp filter (container runtime), \
                         SELinux policy or a kernel built without CONFIG_USER_NS blocks them"
                            .into(),
                        "run rsing on the host, not inside another container, or allow \
                         unshare(CLONE_NEWUSER) in that runtime's seccomp profile"
                            .into(),
                    )
                }
            });
            Check::fail(
                "userns",
                format!("cannot create a user namespace ({e}): {why}"),
                fix,
            )
        }
        (Ok(()), maps, tmpfs) => {
            let err = maps.as_ref().err().or(tmpfs.as_ref().err());
            let err = err.map(String::as_str).unwrap_or_default();
            if restricted {
                Check::fail(
                    "userns",
                    format!(
                        "a user namespace is created but has no privileges in it ({err}): \
                         kernel.apparmor_restrict_unprivileged_userns = 1 (Ubuntu 23.10+) and \
                         no AppArmor profile allows rsing"
                    ),
                    APPARMOR_FIX,
                )
            } else {
                Check::fail(
                    "userns",
                    format!("a user namespace is created but mounting in it fails ({err})"),
                    "check the LSM (SELinux/AppArmor) audit log for denials of mount or \
                     uid_map writes by rsing",
                )
            }
        }
    }
}

/// FUSE: the device node (a character device 10:229, readable and writable by the user),
/// the module, and the probe's real mount.
pub fn fuse(o: &Outcome, fuse_path: &Path) -> Check {
    let module = if Path::new("/sys/module/fuse").exists() {
        "fuse module loaded"
    } else if std::fs::read_to_string("/proc/filesystems")
        .map(|t| t.lines().any(|l| l.trim_end().ends_with("\tfuse")))
        .unwrap_or(false)
    {
        "fuse built into the kernel"
    } else {
        "fuse module not loaded"
    };
    let shown = fuse_path.display();
    let meta = match std::fs::metadata(fuse_path) {
        Ok(m) => m,
        Err(e) => {
            return Check::fail(
                "fuse",
                format!("{shown} is missing ({e}); {module}"),
                "as root: modprobe fuse (and add 'fuse' to /etc/modules-load.d/fuse.conf); \
                 inside a container runtime, pass the device (--device /dev/fuse)",
            )
        }
    };
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let mode = meta.mode() & 0o7777;
    let describe = format!("{shown} mode {mode:04o}, device {major}:{minor}, {module}");
    if !meta.file_type().is_char_device() || (major, minor) != (10, 229) {
        return Check::fail(
            "fuse",
            format!(
                "{shown} is not the FUSE device (expected character device 10:229): {describe}"
            ),
            format!("as root: rm {shown} && mknod -m 0666 {shown} c 10 229 (or modprobe fuse)"),
        );
    }
    match (&o.userns, &o.fuse_open, &o.fuse_mount) {
        (Ok(()), Ok(()), Ok(())) => Check::ok(
            "fuse",
            format!("{describe}; a FUSE mount in a user namespace works"),
        ),
        (Err(_), _, _) => Check::fail(
            "fuse",
            format!("{describe}; not tried: user namespaces do not work (see userns)"),
            "fix the userns check first",
        ),
        (_, Err(e), _) if e.starts_with("EACCES") || e.starts_with("EPERM") => Check::fail(
            "fuse",
            format!("cannot open {shown} ({e}): {describe}"),
            format!(
                "as root: chmod 0666 {shown}, and make it stay so with a udev rule: \
                 KERNEL==\"fuse\", MODE=\"0666\" in /etc/udev/rules.d/99-fuse.rules"
            ),
        ),
        (_, Err(e), _) | (_, _, Err(e)) => {
            let skipped = e.starts_with("not tried");
            Check::fail(
                "fuse",
                format!("a FUSE mount in a user namespace fails ({e}): {describe}"),
                if skipped {
                    "fix the userns check first".to_string()
                } else {
                    format!(
                        "Linux >= 4.18 allows FUSE mounts in user namespaces; check that {shown} \
                         is the real device and not blocked by the LSM or a container runtime"
                    )
                },
            )
        }
    }
}

pub fn overlay(o: &Outcome) -> Check {
    let kernel = kernel_version()
        .map(|(a, b)| format!("Linux {a}.{b}"))
        .unwrap_or_else(|| "Linux ?".into());
    let old = kernel_version().is_some_and(|v| v < (5, 11));
    match (&o.userns, &o.overlay_ro, &o.overlay_rw) {
        (Err(_), _, _) => Check::fail(
            "overlay",
            "not tried: user namespaces do not work (see userns)",
            "fix the userns check first",
        ),
        (_, Ok(()), Ok(())) => Check::ok(
            "overlay",
            format!("{kernel}: overlayfs in a user namespace works (read-only and writable)"),
        ),
        (_, Err(e), _) | (_, _, Err(e)) => Check::fail(
            "overlay",
            format!(
                "{kernel}: overlayfs in a user namespace fails ({e}); binds onto paths the image \
                 lacks at its top level and --writable-tmpfs need it"
            ),
            if old {
                "unprivileged overlayfs needs Linux >= 5.11 (Ubuntu's kernels had it earlier); \
                 upgrade the kernel (RHEL/Rocky 9 and Debian 12 have it)"
            } else {
                "check that the overlay module is available (modprobe overlay) and that no LSM \
                 denies the mount"
            },
        ),
    }
}
