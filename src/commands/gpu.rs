//! `rsing gpu` (what `--nv` would inject) and the GPU part of every launch: `--nv` and
//! `--device` turned into binds, device nodes, library files and environment.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::site::{self as siteconf, SiteConfig};
use super::Global;
use crate::gpu::{self, cdi, cdi_edits, select, Inventory, LibList};
use crate::runtime::binds::BindSpec;
use crate::runtime::host::HostFacts;

mod report;

/// Where injected libraries appear in the container (Apptainer's directory, which its images'
/// `99-base.sh` already puts on LD_LIBRARY_PATH).
pub const LIBS_DIR: &str = crate::contract::LIBS_DIR;

#[derive(Debug, clap::Args)]
pub struct GpuArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Also resolve CDI devices (vendor/class=name, e.g. nvidia.com/gpu=all); repeatable
    #[arg(long = "device", value_name = "KIND=NAME")]
    pub device: Vec<String>,
}

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
    let path = host
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    config.path_dirs = std::env::split_paths(path.unwrap_or_default())
        .filter(|d| d.is_absolute())
        .collect();
    Ok(config)
}

fn host_var(host: &HostFacts) -> impl Fn(&str) -> Option<String> + '_ {
    move |k| {
        host.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    }
}

pub fn warn(global: &Global, message: &str) {
    if !global.quiet {
        eprintln!("rsing: warning: {message}");
    }
}

/// `--nv` and `--device` for one launch. A missing driver is a warning, not an error.
pub fn injection(
    global: &Global,
    site: &SiteConfig,
    host: &HostFacts,
    nv: bool,
    requests: &[String],
    contain: bool,
) -> anyhow::Result<Injection> {
    let mut out = Injection::default();
    if nv {
        match gpu::discover(&config(site, host)?) {
            Ok(inv) => add_driver(global, &mut out, &inv, host, contain),
            Err(e) => warn(
                global,
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
        add_cdi(global, &mut out, site, &cdi_requests)?;
    }
    Ok(out)
}

fn add_driver(
    global: &Global,
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
        warn(global, &format!("--nv: {line}"));
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
    global: &Global,
    out: &mut Injection,
    site: &SiteConfig,
    requests: &[String],
) -> anyhow::Result<()> {
    let (registry, errors) = cdi::load(&cdi_dirs(site));
    for e in &errors {
        warn(global, &format!("CDI: {e}"));
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
        warn(global, &format!("CDI: not applied: {line}"));
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

pub fn run(global: &Global, args: &GpuArgs) -> anyhow::Result<i32> {
    let site = siteconf::load_for(global)?;
    let host = HostFacts::gather().context("cannot read the calling process's state")?;
    let config = config(&site, &host)?;
    let found = gpu::discover(&config);
    let contained = match &found {
        Ok(inv) => {
            let quiet = Global {
                quiet: true,
                ..global.clone()
            };
            let mut inj = Injection::default();
            add_driver(&quiet, &mut inj, inv, &host, true);
            Some(inj)
        }
        Err(_) => None,
    };
    let cdi = if args.device.is_empty() {
        None
    } else {
        Some(injection(global, &site, &host, false, &args.device, true)?)
    };
    let report = report::Report {
        config: &config,
        found: &found,
        contained: contained.as_ref(),
        cdi: cdi.as_ref(),
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(if found.is_ok() { 0 } else { 1 })
}
