//! Host GPU discovery for `--nv` and CDI: what the NVIDIA driver of this host consists of
//! (libraries of the running driver version, programs, device nodes, configuration files),
//! which GPUs a container may have, and Container Device Interface specs.
//!
//! The driver is found the way libnvidia-container finds it, without its binary: the ld.so
//! cache ([`ldcache`]) lists the libraries, NVML ([`driver`]) says which version runs, and only
//! `lib*.so.<that version>` files are taken, so a leftover library of an older driver is never
//! injected. A *driver root* (`/` normally; `/run/nvidia/driver` with the GPU operator; a stub
//! tree in the tests) prefixes every path read: its ld.so cache, the files the cache names,
//! its programs, and (as the *device root*) its `dev/nvidia*` nodes.
//!
//! Pure data out, no printing: `commands` turns an [`Inventory`] into mounts and environment.

pub mod cdi;
pub mod cdi_edits;
pub mod driver;
pub mod ldcache;
pub mod liblist;
mod paths;
pub mod select;

use std::path::{Path, PathBuf};

pub use driver::Gpu;
pub use liblist::LibList;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the ld.so cache {path}: {source}")]
    CacheRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ld.so cache {path}: {source}")]
    CacheFormat {
        path: PathBuf,
        #[source]
        source: ldcache::Error,
    },
    #[error("libnvidia-ml.so.1 is not in the ld.so cache {0}")]
    NoNvml(PathBuf),
    #[error("NVML ({lib}): {message}")]
    Nvml { lib: PathBuf, message: String },
    #[error("CDI spec {path}: {message}")]
    CdiSpec { path: PathBuf, message: String },
    #[error("CDI device {0}: {1}")]
    CdiDevice(String, String),
    #[error("CDI hook {path}: {message}")]
    CdiHook { path: String, message: String },
}

/// Where the driver lives and what to take from it.
#[derive(Debug, Clone)]
pub struct Config {
    /// Prefix of the driver's files (`/` for a normal host).
    pub root: PathBuf,
    /// Prefix of the `dev/nvidia*` nodes.
    pub dev_root: PathBuf,
    /// The ld.so cache (a host path), normally `<root>/etc/ld.so.cache`.
    pub ldcache: PathBuf,
    pub list: LibList,
    /// Directories searched for programs when the root is `/` (the caller's PATH).
    pub path_dirs: Vec<PathBuf>,
}

impl Config {
    /// The defaults for a driver installed under `root`.
    pub fn for_root(root: &Path, list: LibList) -> Config {
        Config {
            root: root.to_path_buf(),
            dev_root: root.to_path_buf(),
            ldcache: root.join("etc/ld.so.cache"),
            list,
            path_dirs: Vec::new(),
        }
    }
}

/// A driver library: one host file, bound under each of `names` in the container's libs dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Library {
    pub host: PathBuf,
    /// Cache names that resolve to the file (SONAME first), then the file's own name.
    pub names: Vec<String>,
}

/// A host file or directory bound into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFile {
    pub host: PathBuf,
    pub container: String,
}

/// Everything the running driver provides.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    pub version: String,
    /// GPUs as NVML numbers them, limited to those with a device node; by minor number when
    /// NVML lists none.
    pub gpus: Vec<Gpu>,
    pub libraries: Vec<Library>,
    /// Programs, for /usr/bin/NAME.
    pub binaries: Vec<HostFile>,
    /// Configuration files and sockets, at their own paths.
    pub files: Vec<HostFile>,
    /// nvidiactl, nvidia-uvm, nvidia-uvm-tools, nvidia-modeset (those present).
    pub control_devices: Vec<HostFile>,
    /// /dev/nvidiaN, by N.
    pub gpu_devices: Vec<(u32, HostFile)>,
    /// Things that did not work but did not stop discovery (for `-v` and `rsing gpu`).
    pub notes: Vec<String>,
}

const CONTROL_NODES: [&str; 4] = [
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];

/// Finds the driver. An error means "no usable driver here" (callers warn and go on).
pub fn discover(config: &Config) -> Result<Inventory, Error> {
    let bytes = std::fs::read(&config.ldcache).map_err(|source| Error::CacheRead {
        path: config.ldcache.clone(),
        source,
    })?;
    let entries = ldcache::parse(&bytes).map_err(|source| Error::CacheFormat {
        path: config.ldcache.clone(),
        source,
    })?;
    let host = ldcache::host_flags();
    let entries: Vec<ldcache::Entry> = entries
        .into_iter()
        .filter(|e| ldcache::matches_host(e.flags, host))
        .collect();
    let nvml = entries
        .iter()
        .find(|e| e.name == "libnvidia-ml.so.1")
        .and_then(|e| paths::resolve_in_root(&config.root, &e.path))
        .ok_or_else(|| Error::NoNvml(config.ldcache.clone()))?;
    let mut notes = Vec::new();
    let (version, nvml_gpus) = match driver::query(&nvml) {
        Ok(info) => (info.version, info.gpus),
        Err(e) => match (config.root == Path::new("/"), driver::module_version()) {
            (true, Some(v)) => {
                notes.push(format!("{e}; using the kernel module's version {v}"));
                (v, Vec::new())
            }
            _ => return Err(e),
        },
    };
    let libraries = libraries(&entries, config, &version);
    let gpu_devices = gpu_nodes(&config.dev_root);
    let gpus = gpus_with_nodes(nvml_gpus, &gpu_devices);
    Ok(Inventory {
        binaries: binaries(config),
        files: files(config, &version),
        control_devices: CONTROL_NODES
            .iter()
            .filter_map(|n| device(&config.dev_root, n))
            .collect(),
        gpu_devices,
        gpus,
        libraries,
        version,
        notes,
    })
}

/// The listed libraries whose real file is `<name>.so.<version>`, each with all its names.
pub fn libraries(entries: &[ldcache::Entry], config: &Config, version: &str) -> Vec<Library> {
    let suffix = format!(".so.{version}");
    let mut out: Vec<Library> = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    for e in entries
        .iter()
        .filter(|e| config.list.wants_library(&e.name))
    {
        let Some(real) = paths::resolve_in_root(&config.root, &e.path) else {
            continue;
        };
        let Some(file_name) = real.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !file_name.ends_with(&suffix) || taken.contains(&e.name) {
            continue;
        }
        taken.push(e.name.clone());
        match out.iter_mut().find(|l| l.host == real) {
            Some(lib) => lib.names.push(e.name.clone()),
            None => out.push(Library {
                host: real.clone(),
                names: vec![e.name.clone()],
            }),
        }
    }
    for lib in &mut out {
        let own = lib
            .host
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !lib.names.contains(&own) && !taken.contains(&own) {
            taken.push(own.clone());
            lib.names.push(own);
        }
    }
    out
}

fn binaries(config: &Config) -> Vec<HostFile> {
    let dirs: Vec<PathBuf> = if config.root == Path::new("/") {
        config
            .path_dirs
            .iter()
            .cloned()
            .chain(paths::STANDARD_BIN_DIRS.iter().map(PathBuf::from))
            .collect()
    } else {
        paths::STANDARD_BIN_DIRS
            .iter()
            .map(|d| config.root.join(d.trim_start_matches('/')))
            .collect()
    };
    config
        .list
        .binaries
        .iter()
        .filter_map(|name| {
            let host = dirs
                .iter()
                .map(|d| d.join(name))
                .find(|p| paths::is_executable(p))?;
            Some(HostFile {
                host,
                container: format!("/usr/bin/{name}"),
            })
        })
        .collect()
}

fn files(config: &Config, version: &str) -> Vec<HostFile> {
    config
        .list
        .files
        .iter()
        .filter_map(|f| {
            let container = f.to_string_lossy().replace("%v", version);
            let host = config.root.join(container.trim_start_matches('/'));
            host.exists().then_some(HostFile { host, container })
        })
        .collect()
}

fn device(dev_root: &Path, name: &str) -> Option<HostFile> {
    let host = dev_root.join("dev").join(name);
    paths::is_char_device(&host).then(|| HostFile {
        host,
        container: format!("/dev/{name}"),
    })
}

/// `dev/nvidiaN` character devices under `dev_root`, by N.
pub fn gpu_nodes(dev_root: &Path) -> Vec<(u32, HostFile)> {
    let Ok(dir) = std::fs::read_dir(dev_root.join("dev")) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, HostFile)> = dir
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let n: u32 = name.strip_prefix("nvidia")?.parse().ok()?;
            Some((n, device(dev_root, &name)?))
        })
        .collect();
    found.sort_by_key(|(n, _)| *n);
    found
}

/// NVML's GPUs that have a node; without NVML's list, one GPU per node in minor order.
fn gpus_with_nodes(nvml: Vec<Gpu>, nodes: &[(u32, HostFile)]) -> Vec<Gpu> {
    if nvml.is_empty() {
        return nodes
            .iter()
            .enumerate()
            .map(|(i, (minor, _))| Gpu {
                index: i as u32,
                minor: *minor,
                uuid: None,
                name: None,
            })
            .collect();
    }
    nvml.into_iter()
        .filter(|g| nodes.iter().any(|(m, _)| *m == g.minor))
        .collect()
}

#[cfg(test)]
mod testroot;
#[cfg(test)]
#[path = "mod_tests.rs"]
mod tests;
