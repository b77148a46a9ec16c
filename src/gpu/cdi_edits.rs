//! From resolved CDI edits to what rsing can do with them.
//!
//! Hooks: rsing starts no OCI runtime, and its image is read-only, so hooks meant to run in
//! the container before the command (`createContainer`, `startContainer`) cannot run. The
//! ones NVIDIA's generator writes are replaced by their effect: `update-ldcache --folder DIR`
//! and `create-symlinks --link TARGET::LINK` make libraries of those folders loadable, which
//! rsing does by binding them into its libs directory (on LD_LIBRARY_PATH). `createRuntime`
//! and `prestart` hooks run on the host, as the caller, before the container starts. The rest
//! are reported.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cdi::{Edits, Hook, Resolved};
use super::{paths, Error, HostFile};

/// What a set of CDI devices asks of the container.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub env: Vec<(String, String)>,
    pub devices: Vec<HostFile>,
    /// Bind mounts (host, container) and whether read-only, shallowest first.
    pub mounts: Vec<(HostFile, bool)>,
    /// Libraries for the libs directory: (name, host file).
    pub libs: Vec<(String, PathBuf)>,
    /// Hooks to run on the host before the container starts.
    pub host_hooks: Vec<Hook>,
    /// One line per thing not done, with the reason.
    pub skipped: Vec<String>,
}

/// Merges the edits of `resolved` (spec-wide edits once per spec, then each device's).
pub fn apply(resolved: &[Resolved]) -> Result<Applied, Error> {
    let mut out = Applied::default();
    let mut folders: Vec<String> = Vec::new();
    let mut links: Vec<(String, String)> = Vec::new();
    for r in resolved {
        for edits in std::iter::once(&r.spec_edits).chain(r.device_edits.iter()) {
            merge(&mut out, edits, &r.request, &mut folders, &mut links)?;
        }
    }
    out.mounts
        .sort_by_key(|(m, _)| m.container.matches('/').count());
    let mounted = |path: &str| {
        out.mounts
            .iter()
            .find(|(m, _)| m.container == path)
            .map(|(m, _)| m.host.clone())
    };
    let mut libs: Vec<(String, PathBuf)> = Vec::new();
    for (m, _) in &out.mounts {
        let (dir, name) = split(&m.container);
        if folders.iter().any(|f| f.trim_end_matches('/') == dir) && name.contains(".so") {
            libs.push((name.to_string(), m.host.clone()));
        }
    }
    for (target, link) in &links {
        let (dir, name) = split(link);
        let target = if target.starts_with('/') {
            target.clone()
        } else {
            format!("{dir}/{target}")
        };
        if let (true, Some(host)) = (name.contains(".so"), mounted(&target)) {
            libs.push((name.to_string(), host));
        }
    }
    for (name, host) in libs {
        if !out.libs.iter().any(|(n, _)| *n == name) {
            out.libs.push((name, host));
        }
    }
    Ok(out)
}

fn merge(
    out: &mut Applied,
    edits: &Edits,
    request: &str,
    folders: &mut Vec<String>,
    links: &mut Vec<(String, String)>,
) -> Result<(), Error> {
    let missing = |what: &str, path: &str| {
        Error::CdiDevice(request.to_string(), format!("{what} {path} does not exist"))
    };
    for kv in &edits.env {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => set(&mut out.env, k, v),
            _ => out
                .skipped
                .push(format!("{request}: env entry '{kv}' is not K=V")),
        }
    }
    for node in &edits.device_nodes {
        let host = node.host_path.clone().unwrap_or_else(|| node.path.clone());
        let meta = std::fs::metadata(&host).map_err(|_| missing("device node", &host))?;
        use std::os::unix::fs::FileTypeExt;
        let kind_ok = match node.kind.as_deref() {
            Some("c" | "u") => meta.file_type().is_char_device(),
            Some("b") => meta.file_type().is_block_device(),
            _ => true,
        };
        if !kind_ok {
            return Err(Error::CdiDevice(
                request.to_string(),
                format!(
                    "{host} is not of type {}",
                    node.kind.as_deref().unwrap_or("")
                ),
            ));
        }
        let file = HostFile {
            host: host.into(),
            container: node.path.clone(),
        };
        if !out.devices.contains(&file) {
            out.devices.push(file);
        }
    }
    for m in &edits.mounts {
        if !matches!(m.kind.as_deref(), None | Some("bind") | Some("none")) {
            out.skipped.push(format!(
                "{request}: mount of type {} on {} (only bind mounts)",
                m.kind.as_deref().unwrap_or(""),
                m.container_path
            ));
            continue;
        }
        if !Path::new(&m.host_path).exists() {
            return Err(missing("mount source", &m.host_path));
        }
        let readonly = m.options.iter().any(|o| o == "ro");
        out.mounts.retain(|(f, _)| f.container != m.container_path);
        out.mounts.push((
            HostFile {
                host: m.host_path.clone().into(),
                container: m.container_path.clone(),
            },
            readonly,
        ));
    }
    for hook in &edits.hooks {
        classify(out, hook, request, folders, links);
    }
    if !edits.additional_gids.is_empty() {
        out.skipped.push(format!(
            "{request}: additionalGIDs {:?} (a user namespace maps only your own groups)",
            edits.additional_gids
        ));
    }
    Ok(())
}

fn classify(
    out: &mut Applied,
    hook: &Hook,
    request: &str,
    folders: &mut Vec<String>,
    links: &mut Vec<(String, String)>,
) {
    let program = Path::new(&hook.path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let args: Vec<&str> = hook.args.iter().skip(1).map(String::as_str).collect();
    let sub = match (program, args.first()) {
        ("nvidia-cdi-hook", _) => Some(&args[..]),
        ("nvidia-ctk", Some(&"hook")) => Some(&args[1..]),
        _ => None,
    };
    if let Some(sub) = sub {
        match sub.first().copied() {
            Some("update-ldcache") => folders.extend(option_values(sub, "--folder")),
            Some("create-symlinks") => links.extend(
                option_values(sub, "--link")
                    .into_iter()
                    .filter_map(|l| l.split_once("::").map(|(a, b)| (a.into(), b.into()))),
            ),
            Some(other) => out.skipped.push(format!(
                "{request}: hook {program} {other}: not needed by rsing"
            )),
            None => out
                .skipped
                .push(format!("{request}: hook {program} without a command")),
        }
        return;
    }
    match hook.hook_name.as_str() {
        "createRuntime" | "prestart" if paths::is_executable(Path::new(&hook.path)) => {
            out.host_hooks.push(hook.clone())
        }
        "createRuntime" | "prestart" => out.skipped.push(format!(
            "{request}: {} hook {}: not an executable file",
            hook.hook_name, hook.path
        )),
        name => out.skipped.push(format!(
            "{request}: {name} hook {}: rsing runs no hooks inside the container",
            hook.path
        )),
    }
}

/// The values of `--name V` and `--name=V` in `args`.
fn option_values(args: &[&str], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if *a == name {
            if let Some(v) = it.next() {
                out.push(v.to_string());
            }
        } else if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            out.push(v.to_string());
        }
    }
    out
}

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some(("", name)) => ("/", name),
        Some((dir, name)) => (dir, name),
        None => ("", path),
    }
}

fn set(env: &mut Vec<(String, String)>, k: &str, v: &str) {
    env.retain(|(n, _)| n != k);
    env.push((k.to_string(), v.to_string()));
}

/// Runs a host hook with the OCI state on its stdin, its own environment and its timeout.
pub fn run_host_hook(hook: &Hook, state: &str) -> Result<(), Error> {
    let fail = |message: String| Error::CdiHook {
        path: hook.path.clone(),
        message,
    };
    let mut cmd = std::process::Command::new(&hook.path);
    if let Some(argv0) = hook.args.first() {
        cmd.arg0(argv0);
    }
    cmd.args(hook.args.iter().skip(1))
        .env_clear()
        .envs(hook.env.iter().filter_map(|kv| kv.split_once('=')))
        .stdin(std::process::Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(state.as_bytes());
    }
    let limit = hook
        .timeout
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t as u64));
    let started = Instant::now();
    loop {
        match child.try_wait().map_err(|e| fail(e.to_string()))? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => return Err(fail(format!("failed ({status})"))),
            None if limit.is_some_and(|l| started.elapsed() > l) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "timed out after {}s",
                    hook.timeout.unwrap_or(0)
                )));
            }
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
