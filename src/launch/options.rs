//! What the user asked for: the action flags of `exec`, `run`, `shell` (Apptainer's names),
//! and the mount options they become.

use std::path::{Path, PathBuf};

use anyhow::bail;

use super::compat;
use crate::runtime::binds;
use crate::runtime::host::HostFacts;
use crate::runtime::plan::{self, ImageKind};
use crate::siteconf::SiteConfig;

/// Flags shared by `exec`, `run` and `shell` (Apptainer's action flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UserOptions {
    /// Bind a host path: SRC[:DST[:ro|rw]]; repeatable, comma lists allowed (also RSING_BIND)
    #[arg(short = 'B', long = "bind", value_name = "SPEC")]
    pub bind: Vec<String>,
    /// Home directory to use: SRC[:DST] (default: your $HOME at the same path)
    #[arg(short = 'H', long = "home", value_name = "SRC[:DST]")]
    pub home: Option<String>,
    /// Do not mount the home directory
    #[arg(long)]
    pub no_home: bool,
    /// Fresh tmpfs home and /tmp, minimal /dev, no site binds
    #[arg(short = 'c', long)]
    pub contain: bool,
    /// --contain plus --cleanenv plus an own PID namespace
    #[arg(short = 'C', long)]
    pub containall: bool,
    /// An own PID namespace with an init (as --containall, without --contain/--cleanenv)
    #[arg(short = 'p', long)]
    pub pid: bool,
    /// Working directory inside the container
    #[arg(long, visible_alias = "cwd", value_name = "DIR")]
    pub pwd: Option<String>,
    /// Writable tmpfs overlay over the image, discarded at exit
    #[arg(long)]
    pub writable_tmpfs: bool,
    /// Overlay: DIR (changes kept in DIR/upper), DIR:ro, FILE.sqfs; repeatable, later on top,
    /// the last writable one takes the writes (docs/overlays.md)
    #[arg(short = 'o', long = "overlay", value_name = "PATH[:ro]")]
    pub overlay: Vec<String>,
    /// Write into the image itself: a sandbox directory you can write
    #[arg(short = 'w', long)]
    pub writable: bool,
    /// Do not pass the host environment (TERM and proxy variables excepted)
    #[arg(short = 'e', long)]
    pub cleanenv: bool,
    /// Set variables inside: K=V (repeatable, comma lists; values are evaluated in the
    /// container's shell unless --no-eval; also RSINGENV_K=V on the host)
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Read K=V lines from a file (repeatable)
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Appear as root (uid 0) inside the container
    #[arg(short = 'f', long)]
    pub fakeroot: bool,
    /// Do not evaluate --env/RSINGENV_* values in the container's shell (`$PATH` stays as is)
    #[arg(long)]
    pub no_eval: bool,
    /// Apptainer's nvidia-container-cli mode: accepted as --nv
    #[arg(long, hide = true)]
    pub nvccli: bool,
    /// Inject the host's NVIDIA driver: libraries, programs, device nodes (see `rsing gpu`)
    #[arg(long)]
    pub nv: bool,
    /// Add a device: a CDI name (vendor/class=name, e.g. nvidia.com/gpu=all) or a host device
    /// node path; repeatable
    #[arg(long = "device", value_name = "KIND=NAME")]
    pub device: Vec<String>,
    /// Run an app of the image (a definition file's %app sections, under /scif/apps/NAME):
    /// its runscript (`run`) or test (`test`), its environment for every action
    #[arg(long, value_name = "NAME")]
    pub app: Option<String>,
}

/// The mount options of the launch: the user's binds (and the bind variables), the site's,
/// the home, each source checked against the site's deny list.
pub fn plan_options(
    args: &UserOptions,
    site: &SiteConfig,
    host: &HostFacts,
) -> anyhow::Result<plan::Options> {
    let contain = args.contain || args.containall;
    let mut specs = args.bind.clone();
    if let Some(env_binds) = compat::bind_list(&host.env) {
        specs.push(env_binds);
    }
    let user_binds = binds::parse_list(&specs, &host.cwd).map_err(anyhow::Error::msg)?;
    let site_binds =
        binds::parse_list(&site.bind_paths, Path::new("/")).map_err(anyhow::Error::msg)?;
    let home = match &args.home {
        None => None,
        Some(spec) => {
            let (src, dst) = spec.split_once(':').unwrap_or((spec, spec));
            let src = binds::normalize(&host.cwd.join(src));
            if !dst.starts_with('/') {
                bail!("--home destination '{dst}' is not absolute");
            }
            let dst = if dst == spec {
                src.to_string_lossy().into_owned()
            } else {
                dst.to_string()
            };
            let dst = binds::checked_destination(spec, &dst).map_err(anyhow::Error::msg)?;
            Some((src, dst))
        }
    };
    for src in user_binds
        .iter()
        .chain(site_binds.iter())
        .map(|b| b.src.as_path())
        .chain(home.iter().map(|h| h.0.as_path()))
    {
        site.check_bind_source(src)?;
    }
    Ok(plan::Options {
        binds: user_binds,
        site_binds,
        home,
        mount_home: site.mount_home && !args.no_home,
        mount_tmp: site.mount_tmp,
        contain,
        pid_ns: args.containall || args.pid,
        pwd: args.pwd.clone(),
        writable_tmpfs: args.writable_tmpfs,
        fakeroot: args.fakeroot,
        devices: Vec::new(),
        file_dirs: Vec::new(),
        image: ImageKind::Mounted,
        writable: args.writable,
        tmpfs_size_mib: site.sessiondir_max_mib,
    })
}
