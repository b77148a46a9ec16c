//! Container Device Interface specs (`cdiVersion` 0.3.0 and later), JSON or YAML, read from
//! spec directories in increasing priority (`/etc/cdi`, `/var/run/cdi`, then the site's), and
//! the merged container edits for requests like `nvidia.com/gpu=all`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Error;

/// The directories every CDI consumer reads, lowest priority first.
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// Oldest spec version understood (the first with `containerEdits` as used here).
const MIN_VERSION: (u64, u64, u64) = (0, 3, 0);

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Spec {
    pub cdi_version: String,
    pub kind: String,
    #[serde(default)]
    pub devices: Vec<Device>,
    #[serde(default)]
    pub container_edits: Edits,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    pub name: String,
    #[serde(default)]
    pub container_edits: Edits,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Edits {
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub device_nodes: Vec<DeviceNode>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub hooks: Vec<Hook>,
    #[serde(default, rename = "additionalGIDs")]
    pub additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DeviceNode {
    pub path: String,
    pub host_path: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub permissions: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Mount {
    pub host_path: String,
    pub container_path: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub options: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    pub path: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    pub timeout: Option<i64>,
}

/// Parses one spec file's text (`yaml` by its extension) and checks what a consumer must.
pub fn parse(text: &str, yaml: bool, path: &Path) -> Result<Spec, Error> {
    let bad = |message: String| Error::CdiSpec {
        path: path.to_path_buf(),
        message,
    };
    let spec: Spec = if yaml {
        serde_norway::from_str(text).map_err(|e| bad(e.to_string()))?
    } else {
        serde_json::from_str(text).map_err(|e| bad(e.to_string()))?
    };
    let version = parse_version(&spec.cdi_version).ok_or_else(|| {
        bad(format!(
            "cdiVersion '{}' is not a version",
            spec.cdi_version
        ))
    })?;
    if version < MIN_VERSION {
        return Err(bad(format!(
            "cdiVersion {} is older than 0.3.0, which rsing needs",
            spec.cdi_version
        )));
    }
    let valid_kind = spec.kind.split_once('/').is_some_and(|(vendor, class)| {
        !vendor.is_empty() && !class.is_empty() && !class.contains('/')
    });
    if !valid_kind {
        return Err(bad(format!("kind '{}' is not vendor/class", spec.kind)));
    }
    if spec.devices.is_empty() {
        return Err(bad("no devices".into()));
    }
    for d in &spec.devices {
        let ok = !d.name.is_empty()
            && d.name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
        if !ok {
            return Err(bad(format!("invalid device name '{}'", d.name)));
        }
    }
    Ok(spec)
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let v = v.trim().trim_start_matches('v');
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>().ok());
    Some((
        it.next()??,
        it.next().unwrap_or(Some(0))?,
        it.next().unwrap_or(Some(0))?,
    ))
}

/// The specs found, with the priority of their directory (higher wins).
#[derive(Debug, Default)]
pub struct Registry {
    pub specs: Vec<(usize, PathBuf, Spec)>,
}

/// Reads every `*.json`, `*.yaml` (and `*.yml`) file of `dirs` (missing dirs are skipped).
/// Unreadable or invalid specs are returned separately, to be reported, as other CDI consumers
/// do: one broken vendor file must not hide the others.
pub fn load(dirs: &[PathBuf]) -> (Registry, Vec<Error>) {
    let mut reg = Registry::default();
    let mut errors = Vec::new();
    for (priority, dir) in dirs.iter().enumerate() {
        let Ok(read) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = read.flatten().map(|e| e.path()).collect();
        files.sort();
        for path in files {
            let yaml = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => false,
                Some("yaml" | "yml") => true,
                _ => continue,
            };
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| Error::CdiSpec {
                    path: path.clone(),
                    message: e.to_string(),
                })
                .and_then(|text| parse(&text, yaml, &path));
            match parsed {
                Ok(spec) => reg.specs.push((priority, path, spec)),
                Err(e) => errors.push(e),
            }
        }
    }
    (reg, errors)
}

/// One requested device's edits, and the spec-wide edits of its spec.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub request: String,
    pub spec: PathBuf,
    pub spec_edits: Edits,
    pub device_edits: Vec<Edits>,
}

impl Registry {
    /// Resolves `vendor/class=name` requests. `name` `all` means the spec's device of that
    /// name when it has one (NVIDIA's generator writes one), else every device of the kind.
    pub fn resolve(&self, requests: &[String]) -> Result<Vec<Resolved>, Error> {
        let mut out: BTreeMap<PathBuf, Resolved> = BTreeMap::new();
        for request in requests {
            let (kind, name) = request.split_once('=').ok_or_else(|| {
                Error::CdiDevice(request.clone(), "expected vendor/class=name".into())
            })?;
            let of_kind: Vec<&(usize, PathBuf, Spec)> = self
                .specs
                .iter()
                .filter(|(_, _, s)| s.kind == kind)
                .collect();
            if of_kind.is_empty() {
                return Err(Error::CdiDevice(
                    request.clone(),
                    format!("no CDI spec of kind {kind}"),
                ));
            }
            let named: Vec<(&(usize, PathBuf, Spec), &Device)> = of_kind
                .iter()
                .flat_map(|s| s.2.devices.iter().map(move |d| (*s, d)))
                .filter(|(_, d)| d.name == name)
                .collect();
            let chosen: Vec<(&(usize, PathBuf, Spec), &Device)> = if !named.is_empty() {
                let top = named.iter().map(|(s, _)| s.0).max().unwrap_or(0);
                let best: Vec<_> = named.into_iter().filter(|(s, _)| s.0 == top).collect();
                if best.len() > 1 {
                    return Err(Error::CdiDevice(
                        request.clone(),
                        format!(
                            "defined twice: {} and {}",
                            best[0].0 .1.display(),
                            best[1].0 .1.display()
                        ),
                    ));
                }
                best
            } else if name == "all" {
                of_kind
                    .iter()
                    .flat_map(|s| s.2.devices.iter().map(move |d| (*s, d)))
                    .collect()
            } else {
                return Err(Error::CdiDevice(request.clone(), "unknown device".into()));
            };
            for ((_, path, spec), device) in chosen {
                let entry = out.entry(path.clone()).or_insert_with(|| Resolved {
                    request: request.clone(),
                    spec: path.clone(),
                    spec_edits: spec.container_edits.clone(),
                    device_edits: Vec::new(),
                });
                if !entry.device_edits.contains(&device.container_edits) {
                    entry.device_edits.push(device.container_edits.clone());
                }
            }
        }
        Ok(out.into_values().collect())
    }
}

#[cfg(test)]
#[path = "cdi_tests.rs"]
mod tests;
