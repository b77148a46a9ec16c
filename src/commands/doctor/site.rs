//! Checks of what the site installed: the configuration file, the NVIDIA driver and CDI specs
//! (through the same discovery `--nv` and `--device` use), and the Slurm SPANK plugin.

use std::path::{Path, PathBuf};

use super::report::Check;
use crate::gpu::{self, cdi};
use crate::runtime::host::HostFacts;
use crate::siteconf::{self, SiteConfig};

/// The site configuration: an invalid file stops every `exec`, so it is a FAIL.
pub fn config(explicit: Option<&Path>) -> (Check, SiteConfig) {
    let shown = explicit
        .unwrap_or(Path::new(siteconf::DEFAULT_PATH))
        .display()
        .to_string();
    match siteconf::load(explicit) {
        Ok(conf) if conf.path.is_none() => (
            Check::ok("config", format!("no {shown}: built-in defaults")),
            conf,
        ),
        Ok(conf) => (
            Check::ok(
                "config",
                format!(
                    "{shown}: {} bind path(s), {} denied, share images = {}",
                    conf.bind_paths.len(),
                    conf.deny_bind_paths.len(),
                    if conf.share_images { "yes" } else { "no" }
                ),
            ),
            conf,
        ),
        Err(e) => (
            Check::fail(
                "config",
                format!("{e:#}"),
                "fix that line (every key is listed in docs/admin-guide.md)",
            ),
            SiteConfig::default(),
        ),
    }
}

/// The NVIDIA driver `--nv` would inject and the CDI specs `--device` would read. No driver is
/// fine (only `--nv` needs one); a broken spec file is a WARN.
pub fn gpu(site: &SiteConfig, host: &HostFacts) -> Vec<Check> {
    let mut out = Vec::new();
    let driver = match crate::commands::gpu::config(site, host) {
        Err(e) => Check::warn(
            "gpu",
            format!("{e:#}"),
            "fix the nvliblist key of the site configuration",
        ),
        Ok(config) => match gpu::discover(&config) {
            Ok(inv) => {
                let libs: usize = inv.libraries.len();
                let devices = inv.gpu_devices.len() + inv.control_devices.len();
                if inv.gpu_devices.is_empty() {
                    Check::warn(
                        "gpu",
                        format!(
                            "NVIDIA driver {} ({libs} libraries) but no /dev/nvidiaN device nodes",
                            inv.version
                        ),
                        "load the driver (nvidia-smi creates the nodes as root) or set \
                         'nvidia dev root' in the site configuration",
                    )
                } else {
                    Check::ok(
                        "gpu",
                        format!(
                            "NVIDIA driver {}: {} GPU(s), {devices} device nodes, {libs} libraries \
                             for --nv",
                            inv.version,
                            inv.gpus.len().max(inv.gpu_devices.len())
                        ),
                    )
                }
            }
            Err(gpu::Error::NoNvml(_)) | Err(gpu::Error::CacheRead { .. }) => {
                Check::ok("gpu", "no NVIDIA driver on this host (only --nv needs one)")
            }
            Err(e) => Check::warn(
                "gpu",
                format!("NVIDIA driver found but not usable: {e}"),
                "check nvidia-smi on the host; --nv will run without GPUs",
            ),
        },
    };
    out.push(driver);
    let dirs: Vec<PathBuf> = crate::commands::gpu::cdi_dirs(site);
    let (registry, errors) = cdi::load(&dirs);
    let devices: usize = registry.specs.iter().map(|(_, _, s)| s.devices.len()).sum();
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    out.push(if errors.is_empty() {
        Check::ok(
            "cdi",
            format!(
                "{} CDI spec(s), {devices} device(s) in {}",
                registry.specs.len(),
                shown.join(", ")
            ),
        )
    } else {
        let errors: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        Check::warn(
            "cdi",
            format!("unusable CDI specs: {}", errors.join("; ")),
            "regenerate them (nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml) or \
             remove the broken files",
        )
    });
    out
}

/// Where Slurm's plugstack configuration may be.
fn plugstack_files() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(conf) = std::env::var_os("SLURM_CONF") {
        if let Some(dir) = Path::new(&conf).parent() {
            roots.push(dir.to_path_buf());
        }
    }
    roots.extend(["/etc/slurm", "/etc/slurm-llnl", "/usr/local/etc/slurm"].map(PathBuf::from));
    let mut files = Vec::new();
    for root in roots {
        files.push(root.join("plugstack.conf"));
        if let Ok(read) = std::fs::read_dir(root.join("plugstack.conf.d")) {
            let mut more: Vec<PathBuf> = read.flatten().map(|e| e.path()).collect();
            more.sort();
            files.extend(more);
        }
    }
    files
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(d.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// The SPANK plugin (`srun --container-image`): configured in a plugstack file, and the
/// library it names present.
pub fn slurm() -> Check {
    if !on_path("srun") {
        return Check::ok("slurm", "no Slurm client (srun) on PATH");
    }
    for file in plugstack_files() {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') || !line.contains("spank_rsing") {
                continue;
            }
            let lib = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_string();
            return if Path::new(&lib).is_file() {
                Check::ok(
                    "slurm",
                    format!("SPANK plugin {lib} configured in {}", file.display()),
                )
            } else {
                Check::warn(
                    "slurm",
                    format!(
                        "{} names the SPANK plugin {lib}, which is missing on this node",
                        file.display()
                    ),
                    "install the rsing-slurm-spank package (or make -C slurm/spank install) on \
                     every node",
                )
            };
        }
    }
    Check::warn(
        "slurm",
        "srun is here but rsing's SPANK plugin is not configured: srun --container-image will \
         not work (rsing exec inside jobs does)",
        "install rsing-slurm-spank and add 'required /usr/lib/rsing/spank_rsing.so' to \
         plugstack.conf (docs/slurm.md)",
    )
}
