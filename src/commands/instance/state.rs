//! Where instances are recorded, and whether a recorded one still runs.
//!
//! One directory per user and node: `$HOME/.rsing/instances/HOST/` holds `NAME.json` (the
//! state, written atomically once the instance runs), `NAME.out` and `NAME.err` (its output)
//! and `NAME.lock` (held by the instance's processes for their whole life, so a second start
//! of a taken name fails even before the state is written). The host name is part of the path
//! because home directories are shared across the nodes of a cluster and PIDs are not.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// One running instance as `instance start` recorded it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    /// The supervisor (the detached rsing process): signals go here.
    pub pid: i32,
    /// Its start time in clock ticks since boot (/proc/PID/stat), against PID reuse.
    pub pid_start: u64,
    /// PID 1 of the instance's PID namespace (a host PID): `instance://` joins its namespaces.
    pub init_pid: i32,
    pub init_start: u64,
    /// The image as given to `instance start` (canonical path or docker:// reference).
    pub image: String,
    /// Seconds since the epoch.
    pub started: u64,
    /// The start command's arguments and the binds given (`-B`), for `instance list`.
    pub args: Vec<String>,
    pub binds: Vec<String>,
    /// The instance's own cgroup v2 directory, where delegation let `instance start` make one
    /// (see `cgroup.rs`); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

/// The per-user, per-node instance directory (not created).
pub fn dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set: cannot find the instance directory")?;
    let host = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into());
    Ok(Path::new(&home).join(".rsing/instances").join(host))
}

/// Instance names become file names: letters, digits, `.`, `_`, `-`, not starting with `.`.
pub fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        bail!("invalid instance name '{name}': use letters, digits, '.', '_' and '-' (at most 64)");
    }
    Ok(())
}

pub fn path(dir: &Path, name: &str, ext: &str) -> PathBuf {
    dir.join(format!("{name}.{ext}"))
}

/// Start time of a live (not zombie) process, or None.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// `pid` is alive and is still the process that started at `start`.
pub fn alive(pid: i32, start: u64) -> bool {
    pid > 0 && start_time(pid) == Some(start)
}

impl State {
    pub fn running(&self) -> bool {
        alive(self.pid, self.pid_start) && alive(self.init_pid, self.init_start)
    }

    /// Writes NAME.json atomically (temporary file, then rename).
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let target = path(dir, &self.name, "json");
        let tmp = dir.join(format!(".{}.json.{}", self.name, std::process::id()));
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&tmp, text + "\n")
            .and_then(|_| std::fs::rename(&tmp, &target))
            .with_context(|| format!("cannot write {}", target.display()))
    }
}

/// The recorded state of `name`, if any (a damaged file counts as none).
pub fn load(dir: &Path, name: &str) -> Option<State> {
    let text = std::fs::read_to_string(path(dir, name, "json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Every recorded instance that still runs; the records of dead ones are removed.
pub fn all_running(dir: &Path) -> Vec<State> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut states = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(name) = file.strip_suffix(".json").filter(|n| !n.starts_with('.')) else {
            continue;
        };
        match load(dir, name) {
            Some(s) if s.running() => states.push(s),
            _ => {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    states.sort_by(|a, b| a.name.cmp(&b.name));
    states
}

/// `started` as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn format_time(secs: u64) -> String {
    let t = crate::civil::Utc::at(secs as i64);
    format!("{} {}:{:02} UTC", t.date(), t.hour_minute(), t.second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_names() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_709_210_096), "2024-02-29 12:34:56 UTC");
        assert!(check_name("web-1.a_b").is_ok());
        for bad in ["", ".x", "a/b", "a b", "../x"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id() as i32;
        let start = start_time(me).expect("own start time");
        assert!(alive(me, start));
        assert!(!alive(me, start + 1));
    }
}
