//! The site configuration file (`/etc/rsing/rsing.conf`), in apptainer.conf's `key = value`
//! style so that administrators recognise it.
//!
//! ```text
//! # default binds for every container (skipped with --contain)
//! bind path = /scratch
//! bind path = /opt/site:/opt/site
//! # paths users may not bind (the path and everything below it)
//! deny bind path = /root
//! mount home = yes
//! mount tmp = yes
//! # one shared FUSE mount per user and image on a node, kept N seconds after its last user
//! share images = yes
//! share linger = 10
//! # --nv: where the NVIDIA driver is (defaults: / and <root>/etc/ld.so.cache; device nodes
//! # under <nvidia dev root>/dev, default the driver root), the injection list, CDI dirs
//! nvidia root = /
//! nvidia dev root = /
//! nvidia ldcache = /etc/ld.so.cache
//! nvliblist = /etc/rsing/nvliblist.conf
//! cdi spec dirs = /opt/site/cdi
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Seconds an image server stays after its last container, unless configured.
pub const DEFAULT_LINGER: u64 = 10;

/// Where the site configuration is read from unless `--config`/`RSING_CONFIG` say otherwise.
pub const DEFAULT_PATH: &str = "/etc/rsing/rsing.conf";

#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub path: Option<PathBuf>,
    pub bind_paths: Vec<String>,
    pub deny_bind_paths: Vec<PathBuf>,
    pub mount_home: bool,
    pub mount_tmp: bool,
    /// Share one FUSE mount per user and image on a node (the image server).
    pub share_images: bool,
    /// Seconds an image server stays after its last container.
    pub share_linger: u64,
    /// `nvidia root`: prefix of the NVIDIA driver's files (`/` unless set).
    pub nvidia_root: PathBuf,
    /// `nvidia dev root`: prefix of its `dev/nvidia*` nodes (the driver root unless set).
    pub nvidia_dev_root: Option<PathBuf>,
    /// `nvidia ldcache`: the ld.so cache listing its libraries (`<root>/etc/ld.so.cache`).
    pub nvidia_ldcache: Option<PathBuf>,
    /// `nvliblist`: what `--nv` injects (`/etc/rsing/nvliblist.conf`, else the built-in list).
    pub nvliblist: Option<PathBuf>,
    /// `cdi spec dirs`: CDI spec directories read after /etc/cdi and /var/run/cdi (higher
    /// priority); colon- or space-separated, the key may repeat.
    pub cdi_spec_dirs: Vec<PathBuf>,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            path: None,
            bind_paths: Vec::new(),
            deny_bind_paths: Vec::new(),
            mount_home: true,
            mount_tmp: true,
            share_images: true,
            share_linger: DEFAULT_LINGER,
            nvidia_root: PathBuf::from("/"),
            nvidia_dev_root: None,
            nvidia_ldcache: None,
            nvliblist: None,
            cdi_spec_dirs: Vec::new(),
        }
    }
}

/// Loads `explicit` (an error if missing) or the default path (fine if missing).
pub fn load(explicit: Option<&Path>) -> anyhow::Result<SiteConfig> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_PATH));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if explicit.is_none() && e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(SiteConfig::default())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read config {}", path.display())),
    };
    parse(&text, path)
}

pub fn parse(text: &str, path: &Path) -> anyhow::Result<SiteConfig> {
    let mut conf = SiteConfig {
        path: Some(path.to_path_buf()),
        ..Default::default()
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!(
                "config {} line {}: expected 'key = value'",
                path.display(),
                n + 1
            );
        };
        let key = key
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_lowercase();
        let value = value.trim();
        let yes_no = || -> anyhow::Result<bool> {
            match value {
                "yes" => Ok(true),
                "no" => Ok(false),
                _ => bail!(
                    "config {} line {}: '{key}' takes yes or no",
                    path.display(),
                    n + 1
                ),
            }
        };
        let absolute = |v: &str| -> anyhow::Result<PathBuf> {
            if !v.starts_with('/') {
                bail!(
                    "config {} line {}: '{key}' takes an absolute path",
                    path.display(),
                    n + 1
                );
            }
            Ok(PathBuf::from(v))
        };
        match key.as_str() {
            "bind path" => conf.bind_paths.push(value.to_string()),
            "deny bind path" => conf.deny_bind_paths.push(PathBuf::from(value)),
            "mount home" => conf.mount_home = yes_no()?,
            "mount tmp" => conf.mount_tmp = yes_no()?,
            "share images" => conf.share_images = yes_no()?,
            "share linger" => {
                conf.share_linger = value.parse().map_err(|_| {
                    anyhow::anyhow!(
                        "config {} line {}: 'share linger' takes seconds",
                        path.display(),
                        n + 1
                    )
                })?
            }
            "nvidia root" => conf.nvidia_root = absolute(value)?,
            "nvidia dev root" => conf.nvidia_dev_root = Some(absolute(value)?),
            "nvidia ldcache" => conf.nvidia_ldcache = Some(absolute(value)?),
            "nvliblist" => conf.nvliblist = Some(absolute(value)?),
            "cdi spec dirs" => {
                for dir in value.split([':', ' ']).filter(|d| !d.is_empty()) {
                    conf.cdi_spec_dirs.push(absolute(dir)?);
                }
            }
            _ => bail!(
                "config {} line {}: unknown key '{key}'",
                path.display(),
                n + 1
            ),
        }
    }
    Ok(conf)
}

impl SiteConfig {
    /// Refuses a bind source inside a denied path (compared after resolving symlinks, so a
    /// link to a denied directory is refused too).
    pub fn check_bind_source(&self, src: &Path) -> anyhow::Result<()> {
        let real = std::fs::canonicalize(src).unwrap_or_else(|_| src.to_path_buf());
        for denied in &self.deny_bind_paths {
            let denied_real = std::fs::canonicalize(denied).unwrap_or_else(|_| denied.clone());
            if real.starts_with(&denied_real) || src.starts_with(denied) {
                bail!(
                    "bind source {} is not allowed by the site configuration ({})",
                    src.display(),
                    self.path
                        .as_deref()
                        .unwrap_or(Path::new(DEFAULT_PATH))
                        .display()
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys() {
        let c = parse(
            "# c\nbind path = /a\nbind  path=/b:/c\ndeny bind path = /root\nmount home = no\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.bind_paths, vec!["/a", "/b:/c"]);
        assert!(!c.mount_home && c.mount_tmp);
        assert!(c.check_bind_source(Path::new("/root/x")).is_err());
        assert!(c.check_bind_source(Path::new("/rootx")).is_ok());
        assert!(parse("nonsense\n", Path::new("x")).is_err());
        assert!(parse("mount home = maybe\n", Path::new("x")).is_err());
    }

    #[test]
    fn parses_gpu_keys() {
        let c = parse(
            "nvidia root = /run/nvidia/driver\nnvidia ldcache = /x/ld.so.cache\n\
             cdi spec dirs = /a:/b /c\ncdi spec dirs = /d\nnvliblist = /e/list.conf\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.nvidia_root, Path::new("/run/nvidia/driver"));
        assert_eq!(c.nvidia_dev_root, None);
        assert_eq!(
            c.nvidia_ldcache.as_deref(),
            Some(Path::new("/x/ld.so.cache"))
        );
        assert_eq!(c.cdi_spec_dirs.len(), 4);
        assert_eq!(c.nvliblist.as_deref(), Some(Path::new("/e/list.conf")));
        assert!(parse("nvidia root = relative\n", Path::new("x")).is_err());
    }
}
