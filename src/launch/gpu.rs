//! The GPU part of a launch: `--nv` and `--device` turned into binds, device nodes, library
//! files and environment ([`injection`]), then applied to the launch in one place
//! ([`Injection::apply_to_options`], [`Injection::apply_to_env`]).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::gpu::{self, cdi, cdi_edits, select, Inventory, LibList};
use crate::runtime::binds::{self, BindSpec};
use crate::runtime::environ::EnvLayers;
use crate::runtime::host::HostFacts;
use crate::runtime::plan;
use crate::siteconf::SiteConfig;

/// Where injected libraries appear in the container (Apptainer's directory, which its images'
/// `99-base.sh` already puts on LD_LIBRARY_PATH).
pub use crate::contract::LIBS_DIR;

/// The GPU part of one container.
#[derive(Debug, Default)]
pub struct Injection {
    /// Programs, configuration files, CDI mounts (read-only unless the spec says otherwise).
    pub binds: Vec<BindSpec>,
    pub devices: Vec<BindSpec>,
    /// Files for [`LIBS_DIR`]: (name, host path).
    pub libs: Vec<(String, PathBuf)>,
    /// Variables for the container (renumbered GPU lists, CDI env).
    pub env: Vec<(String, String)>,
    /// CDI hooks to run on the host before the container starts.
    pub hooks: Vec<cdi::Hook>,
}

impl Injection {
    /// The binds, device nodes and library directory, added to the mount options; every bind
    /// source is checked against the site's deny list like the user's own.
    pub fn apply_to_options(
        &self,
        site: &SiteConfig,
        options: &mut plan::Options,
    ) -> anyhow::Result<()> {
        for bind in &self.binds {
            site.check_bind_source(&bind.src)?;
        }
        options.binds.extend(self.binds.iter().cloned());
        options.devices = self.devices.clone();
        if !self.libs.is_empty() {
            options.file_dirs.push(binds::FileDir {
                dst: LIBS_DIR.to_string(),
                files: self.libs.clone(),
            });
        }
        Ok(())
    }

    /// The GPU variables, and [`LIBS_DIR`] on LD_LIBRARY_PATH after the image's own entries.
    /// Images with Apptainer's `99-base.sh` append it themselves; for the others the image's
    /// value (from its OCI config) is extended here. A user's `--env LD_LIBRARY_PATH` is
    /// extended too.
    pub fn apply_to_env(&self, env: &mut EnvLayers) {
        env.runtime.extend(self.env.iter().cloned());
        if self.libs.is_empty() {
            return;
        }
        const KEY: &str = "LD_LIBRARY_PATH";
        let extend = |v: &str| -> String {
            if v.split(':').any(|p| p == LIBS_DIR) {
                v.to_string()
            } else if v.is_empty() {
                LIBS_DIR.to_string()
            } else {
                format!("{v}:{LIBS_DIR}")
            }
        };
        if !env.image_scripts.iter().any(|s| s.ends_with("/99-base.sh")) {
            let base = env
                .image
                .iter()
                .rev()
                .find(|(k, _)| k == KEY)
                .map(|(_, v)| v.as_str());
            let value = extend(base.unwrap_or_default());
            env.runtime.push((KEY.to_string(), value));
        }
        for (_, v) in env.user.iter_mut().filter(|(k, _)| k == KEY) {
            *v = extend(v);
        }
    }
}

/// Where the driver is, from the site config (and the caller's PATH for programs).
pub fn config(site: &SiteConfig, host: &HostFacts) -> anyhow::Result<gpu::Config> {
    let list_path = site.nvliblist.clone().or_else(|| {
        let default = Path::new(gpu::liblist::DEFAULT_PATH);
        default.exists().then(|| default.to_path_buf())
    });
    let list = match &list_path {
        Some(p) => LibList::parse(
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        ),
        None => LibList::parse(gpu::liblist::BUILTIN),
    };
    let mut config = gpu::Config::for_root(&site.nvidia_root, list);
    if let Some(dev) = &site.nvidia_dev_root {
        config.dev_root = dev.clone();
    }
    if let Some(cache) = &site.nvidia_ldcache {
        config.ldcache = cache.clone();
    }
    config.path_dirs = std::env::split_paths(host.var("PATH").unwrap_or_default())
        .filter(|d| d.is_absolute())
        .collect();
    Ok(config)
}

fn host_var(host: &HostFacts) -> impl Fn(&str) -> Option<String> + '_ {
    move |k| host.var(k).map(str::to_string)
}

/// A one-line warning on stderr, unless `--quiet`.
pub fn warn(quiet: bool, message: &str) {
    if !quiet {
        eprintln!("rsing: warning: {message}");
    }
}

/// `--nv` and `--device` for one launch. A missing driver is a warning, not an error.
pub fn injection(
    quiet: bool,
    site: &SiteConfig,
    host: &HostFacts,
    nv: bool,
    requests: &[String],
    contain: bool,
) -> anyhow::Result<Injection> {
    let mut out = Injection::default();
    if nv {
        match gpu::discover(&config(site, host)?) {
            Ok(inv) => add_driver(quiet, &mut out, &inv, host, contain),
            Err(e) => warn(
                quiet,
                &format!("--nv: no NVIDIA driver found ({e}); running without GPU support"),
            ),
        }
    }
    let (paths, cdi_requests): (Vec<String>, Vec<String>) =
        requests.iter().cloned().partition(|r| r.starts_with('/'));
    for p in paths {
        out.devices.push(BindSpec {
            src: PathBuf::from(&p),
            dst: p,
            readonly: false,
        });
    }
    if !cdi_requests.is_empty() {
        add_cdi(quiet, &mut out, site, &cdi_requests)?;
    }
    Ok(out)
}

pub(crate) fn add_driver(
    quiet: bool,
    out: &mut Injection,
    inv: &Inventory,
    host: &HostFacts,
    contain: bool,
) {
    for note in &inv.notes {
        tracing::info!("--nv: {note}");
    }
    for lib in &inv.libraries {
        for name in &lib.names {
            out.libs.push((name.clone(), lib.host.clone()));
        }
    }
    for f in inv.binaries.iter().chain(inv.files.iter()) {
        out.binds.push(BindSpec {
            src: f.host.clone(),
            dst: f.container.clone(),
            readonly: true,
        });
    }
    if !contain {
        // The host's /dev is the container's: every node is there (or, for a driver root with
        // its own dev/, none is, and rsing cannot add to the host's /dev).
        tracing::debug!("--nv without --contain: device nodes come with the host's /dev");
        return;
    }
    let selection = select::select(&inv.gpus, &host_var(host));
    for line in &selection.ignored {
        warn(quiet, &format!("--nv: {line}"));
    }
    let gpu_nodes = inv
        .gpu_devices
        .iter()
        .filter(|(minor, _)| selection.minors.contains(minor))
        .map(|(_, f)| f);
    for f in inv.control_devices.iter().chain(gpu_nodes) {
        out.devices.push(BindSpec {
            src: f.host.clone(),
            dst: f.container.clone(),
            readonly: false,
        });
    }
    out.env.extend(selection.env);
}

pub fn cdi_dirs(site: &SiteConfig) -> Vec<PathBuf> {
    cdi::DEFAULT_SPEC_DIRS
        .iter()
        .map(PathBuf::from)
        .chain(site.cdi_spec_dirs.iter().cloned())
        .collect()
}

fn add_cdi(
    quiet: bool,
    out: &mut Injection,
    site: &SiteConfig,
    requests: &[String],
) -> anyhow::Result<()> {
    let (registry, errors) = cdi::load(&cdi_dirs(site));
    for e in &errors {
        warn(quiet, &format!("CDI: {e}"));
    }
    // A request that fails may fail because its spec was one of the unreadable files: say so
    // in the error itself (the warnings above are gone under -q).
    let resolved = registry
        .resolve(requests)
        .map_err(|e| match errors.is_empty() {
            true => anyhow::Error::from(e),
            false => {
                let skipped: Vec<String> = errors.iter().map(ToString::to_string).collect();
                anyhow::anyhow!("{e} (CDI spec files skipped: {})", skipped.join("; "))
            }
        })?;
    let applied = cdi_edits::apply(&resolved)?;
    for line in &applied.skipped {
        warn(quiet, &format!("CDI: not applied: {line}"));
    }
    out.env.extend(applied.env);
    for d in applied.devices {
        if out.devices.iter().any(|have| have.dst == d.container) {
            continue; // also injected by --nv
        }
        out.devices.push(BindSpec {
            src: d.host,
            dst: d.container,
            readonly: false,
        });
    }
    for (m, readonly) in applied.mounts {
        out.binds.push(BindSpec {
            src: m.host,
            dst: m.container,
            readonly,
        });
    }
    for (name, host) in applied.libs {
        if !out.libs.iter().any(|(n, _)| *n == name) {
            out.libs.push((name, host));
        }
    }
    out.hooks.extend(applied.host_hooks);
    Ok(())
}

/// Runs the CDI host hooks with an OCI state document on stdin.
pub fn run_hooks(hooks: &[cdi::Hook], image: &Path) -> anyhow::Result<()> {
    // Every start calls this: no state document unless a hook will read it.
    if hooks.is_empty() {
        return Ok(());
    }
    let pid = std::process::id();
    let state = serde_json::json!({
        "ociVersion": "1.0.2",
        "id": format!("rsing-{pid}"),
        "status": "creating",
        "pid": pid,
        "bundle": "",
        "annotations": {"org.rsing.image": image.to_string_lossy()},
    })
    .to_string();
    for hook in hooks {
        cdi_edits::run_host_hook(hook, &state)?;
    }
    Ok(())
}
