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
//! # --writable-tmpfs: size of the tmpfs in MiB (as Apptainer's key)
//! sessiondir max size = 64
//! ```
//!
//! Two files are read, as Apptainer reads its root-owned apptainer.conf apart from the user's
//! settings: the **system** file (`<prefix>/etc/rsing/rsing.conf` next to the installed binary,
//! else `/etc/rsing/rsing.conf`) and, on top of it, the **user** file given with `--config` or
//! `RSING_CONFIG`. The user file may only add preferences: its `deny bind path` lines add to
//! the system's, its `bind path` lines are checked against every deny line, `mount home` and
//! `mount tmp` can turn a mount off but not back on, `sessiondir max size` can only lower the
//! limit. Unknown keys (an apptainer.conf copied as is) give one warning line, never a failure;
//! a bad value of a known key is an error naming the file and line.
//!
//! A leaf below `commands` (it takes plain arguments, not the command's options, and prints
//! nothing), so that launch policy below the commands can read it; it names only
//! `runtime::binds` for the bind-spec syntax. Printing the warnings is the caller's part
//! (`commands::site`).

use std::path::{Path, PathBuf};

use crate::runtime::binds;

/// Why a configuration cannot be used: the text names the file (and line) and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line that is not `key = value` or a value the key does not take.
    #[error("{at}: {what}")]
    Line { at: String, what: String },
    #[error("bind source {}{how} is not allowed by the site configuration ({files})", src.display())]
    DeniedBind {
        src: PathBuf,
        /// Empty, or why a parent of a denied path is refused.
        how: String,
        /// The configuration files that hold the rule.
        files: String,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

fn line_error(at: &str, what: String) -> Error {
    Error::Line {
        at: at.to_string(),
        what,
    }
}

/// Seconds an image server stays after its last container, unless configured.
pub const DEFAULT_LINGER: u64 = 10;

/// Where the system configuration is read from when the installation prefix has none.
pub const DEFAULT_PATH: &str = "/etc/rsing/rsing.conf";

/// `--writable-tmpfs` size limit in MiB unless configured (Apptainer's default).
pub const DEFAULT_SESSIONDIR_MIB: u64 = 64;

#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// The system file read (None when there is none).
    pub path: Option<PathBuf>,
    /// The user file read on top (`--config`, `RSING_CONFIG`).
    pub user_path: Option<PathBuf>,
    pub bind_paths: Vec<String>,
    /// Denied bind sources, with the file that denied them.
    pub deny_bind_paths: Vec<PathBuf>,
    pub mount_home: bool,
    pub mount_tmp: bool,
    /// Share one FUSE mount per user and image on a node (the image server).
    pub share_images: bool,
    /// Seconds an image server stays after its last container.
    pub share_linger: u64,
    /// `sessiondir max size`: the `--writable-tmpfs` size limit in MiB.
    pub sessiondir_max_mib: u64,
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
    /// Lines for the user: unknown keys, user settings the system file overrides.
    pub warnings: Vec<String>,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            path: None,
            user_path: None,
            bind_paths: Vec::new(),
            deny_bind_paths: Vec::new(),
            mount_home: true,
            mount_tmp: true,
            share_images: true,
            share_linger: DEFAULT_LINGER,
            sessiondir_max_mib: DEFAULT_SESSIONDIR_MIB,
            nvidia_root: PathBuf::from("/"),
            nvidia_dev_root: None,
            nvidia_ldcache: None,
            nvliblist: None,
            cdi_spec_dirs: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// The system file: `<prefix>/etc/rsing/rsing.conf` when rsing runs from `<prefix>/bin` and
/// that file exists (relocatable installs, as Apptainer's), else [`DEFAULT_PATH`].
pub fn system_path() -> PathBuf {
    let local = std::env::current_exe().ok().and_then(|exe| {
        let prefix = exe.parent()?.parent()?;
        let conf = prefix.join("etc/rsing/rsing.conf");
        conf.is_file().then_some(conf)
    });
    local.unwrap_or_else(|| PathBuf::from(DEFAULT_PATH))
}

/// Loads the system file (fine if missing), then the user file `user` (an error if missing).
pub fn load(user: Option<&Path>) -> Result<SiteConfig> {
    let mut conf = SiteConfig::default();
    let system = system_path();
    match std::fs::read_to_string(&system) {
        Ok(text) => {
            conf.path = Some(system.clone());
            parse_into(&mut conf, &text, &system, false)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(Error::Read {
                path: system,
                source,
            })
        }
    }
    if let Some(path) = user {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        conf.user_path = Some(path.to_path_buf());
        parse_into(&mut conf, &text, path, true)?;
    }
    Ok(conf)
}

/// Parses `text` as the only (system) file.
pub fn parse(text: &str, path: &Path) -> Result<SiteConfig> {
    let mut conf = SiteConfig {
        path: Some(path.to_path_buf()),
        ..Default::default()
    };
    parse_into(&mut conf, text, path, false)?;
    Ok(conf)
}

/// Applies the lines of `text` (from `path`) to `conf`; `user` files may not relax it.
fn parse_into(conf: &mut SiteConfig, text: &str, path: &Path, user: bool) -> Result<()> {
    let mut unknown: Vec<String> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("config {} line {}", path.display(), n + 1);
        let Some((key, value)) = line.split_once('=') else {
            return Err(line_error(&at, "expected 'key = value'".into()));
        };
        let key = key
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_ascii_lowercase();
        let value = value.trim();
        let yes_no = || -> Result<bool> {
            match value {
                "yes" => Ok(true),
                "no" => Ok(false),
                _ => Err(line_error(
                    &at,
                    format!("'{key}' takes yes or no, not '{value}'"),
                )),
            }
        };
        let absolute = |v: &str| -> Result<PathBuf> {
            if !v.starts_with('/') {
                return Err(line_error(
                    &at,
                    format!("'{key}' takes an absolute path, not '{v}'"),
                ));
            }
            Ok(PathBuf::from(v))
        };
        let number = |what: &str| -> Result<u64> {
            value
                .parse()
                .map_err(|_| line_error(&at, format!("'{key}' takes {what}, not '{value}'")))
        };
        match key.as_str() {
            "bind path" => {
                for spec in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !spec.starts_with('/') {
                        return Err(line_error(
                            &at,
                            format!("'bind path' takes absolute paths, not '{spec}'"),
                        ));
                    }
                    binds::parse(spec, Path::new("/")).map_err(|e| line_error(&at, e))?;
                    conf.bind_paths.push(spec.to_string());
                }
            }
            "deny bind path" => conf.deny_bind_paths.push(absolute(value)?),
            "mount home" | "mount tmp" => {
                let wanted = yes_no()?;
                let current = if key == "mount home" {
                    &mut conf.mount_home
                } else {
                    &mut conf.mount_tmp
                };
                if user && wanted && !*current {
                    conf.warnings.push(format!(
                        "{at}: '{key} = yes' ignored: the system configuration turns it off"
                    ));
                } else {
                    *current = wanted;
                }
            }
            "share images" => conf.share_images = yes_no()?,
            "share linger" => conf.share_linger = number("seconds")?,
            "sessiondir max size" => {
                let mib = number("a size in MiB")?;
                if mib == 0 {
                    return Err(line_error(
                        &at,
                        "'sessiondir max size' takes a size of at least 1 MiB".into(),
                    ));
                }
                if user && mib > conf.sessiondir_max_mib {
                    conf.warnings.push(format!(
                        "{at}: 'sessiondir max size = {mib}' ignored: the system limit is {} MiB",
                        conf.sessiondir_max_mib
                    ));
                } else {
                    conf.sessiondir_max_mib = mib;
                }
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
            _ => unknown.push(format!("'{key}' (line {})", n + 1)),
        }
    }
    if !unknown.is_empty() {
        conf.warnings.push(format!(
            "config {}: ignoring keys rsing does not use: {}",
            path.display(),
            unknown.join(", ")
        ));
    }
    Ok(())
}

impl SiteConfig {
    /// Refuses a bind source that is a denied path, lies inside one, or contains one (a
    /// parent: `-B /srv` with `/srv/secret` denied, or `-B /`). Compared after resolving
    /// symlinks, so a link to a denied directory is refused too. Refusing (rather than masking
    /// the denied path inside) keeps the rule simple to check and to explain.
    pub fn check_bind_source(&self, src: &Path) -> Result<()> {
        let real = std::fs::canonicalize(src).unwrap_or_else(|_| binds::normalize(src));
        for denied in &self.deny_bind_paths {
            let denied_real =
                std::fs::canonicalize(denied).unwrap_or_else(|_| binds::normalize(denied));
            let inside = real.starts_with(&denied_real) || src.starts_with(denied);
            let parent = denied_real.starts_with(&real) || denied.starts_with(src);
            if inside || parent {
                let how = if inside {
                    String::new()
                } else {
                    format!(" (it contains the denied path {})", denied.display())
                };
                return Err(Error::DeniedBind {
                    src: src.to_path_buf(),
                    how,
                    files: self.config_names(),
                });
            }
        }
        Ok(())
    }

    /// The files this configuration came from, for messages.
    fn config_names(&self) -> String {
        let mut names: Vec<String> = self.path.iter().map(|p| p.display().to_string()).collect();
        names.extend(self.user_path.iter().map(|p| p.display().to_string()));
        if names.is_empty() {
            names.push(DEFAULT_PATH.to_string());
        }
        names.join(", ")
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
        // A parent of a denied path, and the root, are refused too.
        assert!(c.check_bind_source(Path::new("/")).is_err());
        let srv = parse("deny bind path = /srv/secret\n", Path::new("x")).unwrap();
        let err = srv.check_bind_source(Path::new("/srv")).unwrap_err();
        assert!(err.to_string().contains("/srv/secret"), "{err}");
        assert!(srv.check_bind_source(Path::new("/srv/other")).is_ok());
        assert!(parse("nonsense\n", Path::new("x")).is_err());
        // Unknown keys (apptainer.conf's) warn once; a relative bind path names its line.
        let c = parse(
            "allow setuid = yes\nmax loop devices = 256\n",
            Path::new("a.conf"),
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("'allow setuid' (line 1)"));
        let err = parse("\nbind path = data\n", Path::new("a.conf")).unwrap_err();
        assert!(err.to_string().contains("a.conf line 2"), "{err}");
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
