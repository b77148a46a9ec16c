//! Preconditions of the whole suite: refuses to run as root, checks /dev/fuse, and probes for
//! host tools. With `CI=true` a missing tool fails the test; elsewhere it is a visible skip.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Panics unless the suite runs as an unprivileged user that may open /dev/fuse.
pub fn check_unprivileged() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        assert!(
            !nix::unistd::geteuid().is_root(),
            "the integration tests must not run as root: a rootless runtime that passes as root \
             proves nothing. Run `sudo ./run-tests` (it drops to an unprivileged user) or run \
             the tests as a normal user."
        );
        let fuse_ok = nix::unistd::access(
            "/dev/fuse",
            nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK,
        );
        assert!(
            fuse_ok.is_ok(),
            "/dev/fuse is not readable and writable by this user ({fuse_ok:?}); \
             run `sudo chmod 0666 /dev/fuse` or `sudo ./run-tests`"
        );
    });
}

/// True when running under CI (`CI=true` or `CI=1`): missing prerequisites fail there.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true") | Ok("1"))
}

/// Reports a missing prerequisite: panics under CI, otherwise prints a skip note.
/// Returns false so callers can write `if !have(..) { return; }`.
pub fn missing(what: &str) -> bool {
    assert!(
        !in_ci(),
        "CI=true and a prerequisite is missing: {what} (run `sudo ./install-deps`)"
    );
    skip(&format!(
        "{what} is missing (run `sudo ./install-deps`); test skipped"
    ));
    false
}

/// Reports a skipped test or check so that nobody mistakes it for a pass: a `SKIP:` line on
/// the real stderr (libtest captures `eprintln!` of passing tests, which would hide it), and
/// a line in `<scratch>/skipped.log`, which `run-tests` counts and lists at the end.
pub fn skip(why: &str) {
    use std::io::Write;
    let test = std::thread::current().name().unwrap_or("?").to_string();
    let line = format!("SKIP: {test}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    if let Ok(mut log) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(super::scratch_root().join("skipped.log"))
    {
        let _ = log.write_all(line.as_bytes());
    }
}

/// The path of an executable named `name` on PATH (or in the sbin dirs), if any.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// True if every tool in `names` is installed; reports the first missing one otherwise.
pub fn have_tools(names: &[&str]) -> bool {
    match names.iter().find(|n| find_tool(n).is_none()) {
        Some(name) => missing(&format!("tool `{name}`")),
        None => true,
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
