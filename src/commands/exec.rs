//! `rsing exec`, `run` and `shell`: one launch path, three ways to pick the command.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

use super::compat;
use super::site::{self as siteconf, SiteConfig};
use super::Global;
use crate::image::{self, OpenedImage, Root};
use crate::runtime::environ::{self, EnvLayers};
use crate::runtime::host::HostFacts;
use crate::runtime::{self, binds, plan, share, Container, RootSource};
use crate::squashfs::Archive;
use crate::tree::{self, DirTree, NodeKind, Tree};

/// Flags shared by `exec`, `run` and `shell` (Apptainer's action flags).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RuntimeArgs {
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
}

/// What to start in the container.
pub enum Action {
    Exec(Vec<String>),
    Run(Vec<String>),
    Shell(Option<String>),
    /// `rsing test`: the image's test script with arguments.
    Test(Vec<String>),
    /// `rsing instance start`: the image's start script, else what `run` runs.
    Start(Vec<String>),
}

/// Runs `action` in `image_arg` and returns the exit status for rsing.
pub fn run(
    global: &Global,
    args: &RuntimeArgs,
    image_arg: &str,
    action: Action,
) -> anyhow::Result<i32> {
    let started = std::time::Instant::now();
    // `instance://NAME`: the instance's image, planned as usual, then joined instead of started.
    let (image_arg, join) = match image_arg.strip_prefix("instance://") {
        Some(name) => {
            let running = super::instance::running(name)?;
            (running.image.clone(), Some(running.init_pid))
        }
        None => (image_arg.to_string(), None),
    };
    let image_arg = image_arg.as_str();
    let site = siteconf::load_for(global)?;
    let host = HostFacts::gather().context("cannot read the calling process's state")?;
    let mut args = args.clone();
    for note in compat::apply_flag_variables(&mut args, &host.env)? {
        super::gpu::warn(global, &note);
    }
    let args = &args;
    let remote = super::oras::is_remote_sif(image_arg);
    // A pulled image's cache lock is held until the image is open (`cache clean` waits).
    let (image_path, in_use) = match image_arg.strip_prefix("docker://") {
        Some(reference) => {
            let (path, in_use) = pulled(global, reference)?;
            (path, Some(in_use))
        }
        None if remote => (super::oras::for_exec(global, image_arg)?, None),
        // Canonical, so that RSING_CONTAINER and the image server's key name the file once.
        None => (
            std::fs::canonicalize(image_arg).unwrap_or_else(|_| PathBuf::from(image_arg)),
            None,
        ),
    };
    let mut opened = image::open(&image_path)?;
    drop(in_use);
    // The name the user gave (a symlink's, not its target's): RSING_NAME and the prompt.
    if !image_arg.starts_with("docker://") && !remote {
        if let Some(given) = Path::new(image_arg).file_name() {
            opened.name = given.to_string_lossy().into_owned();
        }
    }
    let mut options = options(args, &site, &host)?;
    let gpu = if args.nv || !args.device.is_empty() {
        let gpu =
            super::gpu::injection(global, &site, &host, args.nv, &args.device, options.contain)?;
        for bind in &gpu.binds {
            site.check_bind_source(&bind.src)?;
        }
        options.binds.extend(gpu.binds.iter().cloned());
        options.devices = gpu.devices.clone();
        if !gpu.libs.is_empty() {
            options.file_dirs.push(binds::FileDir {
                dst: super::gpu::LIBS_DIR.to_string(),
                files: gpu.libs.clone(),
            });
        }
        gpu
    } else {
        super::gpu::Injection::default()
    };
    let (overlays, writable) = super::overlay::for_launch(args, &opened, &host)?;
    let (root, tree) = root_and_tree(&opened, &site, &host, &options, join.is_none())?;
    let tree = tree.tree();
    tracing::debug!(us = started.elapsed().as_micros() as u64, "image opened");
    if matches!(action, Action::Test(_)) && !is_kind(tree, TEST, NodeKind::File) {
        // Apptainer's answer, and its status: an image without tests passes.
        println!("No test script found in container, exiting");
        return Ok(0);
    }
    let plan = plan::build(&options, &host, tree).map_err(|e| explain(&opened, e))?;
    let mut env = env_layers(args, &options, &host, &opened, tree, &plan, &action)?;
    env.runtime.extend(gpu.env.iter().cloned());
    if !gpu.libs.is_empty() {
        add_libs_dir(
            &env.image,
            &env.image_scripts,
            &mut env.runtime,
            &mut env.user,
        );
    }
    let argv = command_line(action, &opened, tree)?;
    super::gpu::run_hooks(&gpu.hooks, &opened.path)?;
    tracing::debug!(us = started.elapsed().as_micros() as u64, "launch planned");
    if let Some(init) = join {
        let launch = env.launch(argv);
        return Ok(runtime::join::run(init, &launch, &plan.cwd, &plan.home)?);
    }
    let container = Container {
        root,
        fsname: opened.path.to_string_lossy().into_owned(),
        launch: env.launch(argv),
        pid_ns: options.pid_ns,
        writable_tmpfs: options.writable_tmpfs,
        overlays,
        writable,
        tmpfs_size_mib: site.sessiondir_max_mib,
        cwd_required: options.pwd.is_some(),
        plan,
    };
    let lazy_log = crate::lazy::Log::mark(&opened.path);
    let status = runtime::run(container);
    // What went wrong reading an image still downloading, whatever the container's fate.
    if let Some(Err(refused)) = lazy_log.map(|log| log.report()) {
        if status.is_ok() {
            bail!("{refused}");
        }
        eprintln!("rsing: error: {refused}");
    }
    Ok(status?)
}

/// The cached SIF of `docker://REFERENCE`, pulled and converted first when missing (progress
/// on stderr, so the command's own output stays clean).
fn pulled(global: &Global, reference: &str) -> anyhow::Result<(PathBuf, crate::cache::UseLock)> {
    use super::progress::{Mode, Progress};
    let progress = std::sync::Arc::new(Progress::new(Mode::detect(global.quiet)));
    let args = super::fetch::ConvertArgs {
        arch: None,
        compress: "zstd".into(),
        block_size: 128 * 1024,
        insecure: false,
    };
    let pulled = super::fetch::cached_image(reference, &args, &progress)?;
    progress.clear();
    Ok(pulled)
}

/// Where to find the image's shared server, unless sharing is off (site config
/// `share images = no`, or `RSING_SHARE=no` for one user) or no private run directory exists.
fn share_spec(
    site: &SiteConfig,
    host: &HostFacts,
    opened: &OpenedImage,
    options: &plan::Options,
) -> Option<share::ShareSpec> {
    let Root::Squashfs { offset, .. } = &opened.root else {
        return None;
    };
    let env = |k: &str| {
        host.env
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    if !site.share_images || matches!(env("RSING_SHARE"), Some("no" | "0" | "false")) {
        return None;
    }
    let linger = env("RSING_SHARE_LINGER")
        .and_then(|v| v.parse().ok())
        .unwrap_or(site.share_linger);
    let rundir = share::runtime_dir(env("XDG_RUNTIME_DIR"))?;
    // Under Slurm a server is shared within one job step only: it runs in the cgroup of the
    // step that started it, and Slurm kills what is left there when that step ends, which
    // would take the image away from a container of another job (an array task) that joined.
    let scope = match (env("SLURM_JOB_ID"), env("SLURM_STEP_ID")) {
        (Some(job), step) => format!("slurm:{job}.{}", step.unwrap_or("batch")),
        (None, _) => String::new(),
    };
    let spec = share::spec(
        &opened.path,
        *offset,
        if options.fakeroot { 0 } else { host.uid },
        if options.fakeroot { 0 } else { host.gid },
        &opened.path.to_string_lossy(),
        linger,
        &rundir,
    )?;
    Some(spec.scoped(&scope))
}

/// Where the image's root comes from, and a view of it for planning. With a shared image
/// server the view reads through the server's mount (fd received from it), whose lookups and
/// pages the kernel already has cached; otherwise rsing opens the SquashFS itself (and will
/// serve it in-process).
fn root_and_tree(
    opened: &OpenedImage,
    site: &SiteConfig,
    host: &HostFacts,
    options: &plan::Options,
    share: bool,
) -> anyhow::Result<(RootSource, Box<dyn TreeRef>)> {
    let (file, offset) = match &opened.root {
        Root::Directory(dir) => {
            return Ok((
                RootSource::Directory(dir.clone()),
                Box::new(Arc::new(DirTree::new(dir))),
            ))
        }
        Root::Squashfs { file, offset } => (file, *offset),
    };
    if let Some(spec) = share
        .then(|| share_spec(site, host, opened, options))
        .flatten()
    {
        match share::join(&spec) {
            Ok(joined) => {
                let view = DirTree::new(format!("/proc/self/fd/{}", joined.mount_fd()));
                return Ok((RootSource::Shared(joined), Box::new(Arc::new(view))));
            }
            Err(e) => {
                tracing::info!("image server unavailable ({e}); serving the image in-process")
            }
        }
    }
    let file = file
        .try_clone()
        .context("cannot duplicate the image file handle")?;
    let archive = Arc::new(
        crate::lazy::archive(&opened.path, file, offset)
            .with_context(|| format!("image {}", opened.path.display()))?,
    );
    Ok((
        RootSource::Squashfs {
            archive: archive.clone(),
        },
        Box::new(archive),
    ))
}

/// A tree behind whatever owns it (an `Arc<Archive>` or an `Arc<DirTree>`).
trait TreeRef {
    fn tree(&self) -> &dyn Tree;
}
impl<T: Tree + 'static> TreeRef for Arc<T> {
    fn tree(&self) -> &dyn Tree {
        self.as_ref()
    }
}

fn options(
    args: &RuntimeArgs,
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
    })
}

const ENV_DIR: &str = "/.singularity.d/env";
const RUNSCRIPT: &str = "/.singularity.d/runscript";
const TEST: &str = "/.singularity.d/test";
const STARTSCRIPT: &str = "/.singularity.d/startscript";

fn env_layers(
    args: &RuntimeArgs,
    options: &plan::Options,
    host: &HostFacts,
    opened: &OpenedImage,
    tree: &dyn Tree,
    plan: &plan::Plan,
    action: &Action,
) -> anyhow::Result<EnvLayers> {
    let image: Vec<(String, String)> = opened
        .oci_config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let mut image_scripts: Vec<String> = Vec::new();
    if is_kind(tree, ENV_DIR, NodeKind::Dir) && is_kind(tree, "/bin/sh", NodeKind::File) {
        let mut names = tree.list_dir(ENV_DIR.as_bytes()).unwrap_or_default();
        names.sort();
        image_scripts = names
            .into_iter()
            .filter_map(|n| String::from_utf8(n).ok())
            .filter(|n| n.ends_with(".sh"))
            .map(|n| format!("{ENV_DIR}/{n}"))
            .collect();
    }
    let container = opened.path.to_string_lossy().into_owned();
    let mut runtime_vars = vec![("HOME".to_string(), plan.home.clone())];
    // Apptainer's names too: scripts test them to know they run in a container.
    for prefix in ["RSING", "APPTAINER", "SINGULARITY"] {
        runtime_vars.push((format!("{prefix}_CONTAINER"), container.clone()));
        runtime_vars.push((format!("{prefix}_NAME"), opened.name.clone()));
    }
    let bound: Vec<String> = options
        .binds
        .iter()
        .map(|b| {
            let ro = if b.readonly { ":ro" } else { "" };
            format!("{}:{}{ro}", b.src.display(), b.dst)
        })
        .collect();
    if !bound.is_empty() {
        runtime_vars.push(("APPTAINER_BIND".to_string(), bound.join(",")));
        runtime_vars.push(("SINGULARITY_BIND".to_string(), bound.join(",")));
    }
    if let Action::Shell(_) = action {
        runtime_vars.push(("PS1".to_string(), format!("rsing {}:\\w> ", opened.name)));
    }
    let mut user = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read env file {}", file.display()))?;
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match environ::parse_assignment(trimmed) {
                Some(kv) => user.push(kv),
                None => bail!("env file {}: cannot parse line '{trimmed}'", file.display()),
            }
        }
    }
    user.extend(compat::user_variables(&host.env));
    for kv in args.env.iter().flat_map(|a| compat::split_env_list(a)) {
        match environ::parse_assignment(&kv) {
            Some(pair) => user.push(pair),
            None => bail!("--env '{kv}': expected NAME=VALUE"),
        }
    }
    Ok(EnvLayers {
        host: host.env.clone(),
        cleanenv: args.cleanenv || args.containall,
        image,
        image_scripts,
        runtime: runtime_vars,
        user,
        eval: !args.no_eval,
        shell: is_kind(tree, "/bin/sh", NodeKind::File),
    })
}

/// Puts the GPU libs directory on LD_LIBRARY_PATH, after the image's own entries. Images with
/// Apptainer's `99-base.sh` append it themselves; for the others the image's value (from its
/// OCI config) is extended here. A user's `--env LD_LIBRARY_PATH` is extended too.
fn add_libs_dir(
    image: &[(String, String)],
    scripts: &[String],
    runtime: &mut Vec<(String, String)>,
    user: &mut [(String, String)],
) {
    const KEY: &str = "LD_LIBRARY_PATH";
    let libs = super::gpu::LIBS_DIR;
    let extend = |v: &str| -> String {
        if v.split(':').any(|p| p == libs) {
            v.to_string()
        } else if v.is_empty() {
            libs.to_string()
        } else {
            format!("{v}:{libs}")
        }
    };
    if !scripts.iter().any(|s| s.ends_with("/99-base.sh")) {
        let base = image
            .iter()
            .rev()
            .find(|(k, _)| k == KEY)
            .map(|(_, v)| v.as_str());
        runtime.push((KEY.to_string(), extend(base.unwrap_or_default())));
    }
    for (_, v) in user.iter_mut().filter(|(k, _)| k == KEY) {
        *v = extend(v);
    }
}

fn is_kind(tree: &dyn Tree, path: &str, kind: NodeKind) -> bool {
    tree::resolve(tree, path.as_bytes())
        .map(|r| r.kind == Some(kind))
        .unwrap_or(false)
}

fn command_line(
    action: Action,
    opened: &OpenedImage,
    tree: &dyn Tree,
) -> anyhow::Result<Vec<String>> {
    Ok(match action {
        Action::Exec(cmd) => cmd,
        Action::Run(args) => {
            if is_kind(tree, RUNSCRIPT, NodeKind::File) {
                std::iter::once(RUNSCRIPT.to_string()).chain(args).collect()
            } else {
                let oci = opened.oci_config.clone().unwrap_or_default();
                let entry = oci.entrypoint.unwrap_or_default();
                let cmd = if args.is_empty() {
                    oci.cmd.unwrap_or_default()
                } else {
                    args
                };
                let argv: Vec<String> = entry.into_iter().chain(cmd).collect();
                if argv.is_empty() {
                    bail!(
                        "image {} has no runscript and no OCI entrypoint or command",
                        opened.path.display()
                    );
                }
                argv
            }
        }
        Action::Test(args) => std::iter::once(TEST.to_string()).chain(args).collect(),
        Action::Start(args) if is_kind(tree, STARTSCRIPT, NodeKind::File) => {
            std::iter::once(STARTSCRIPT.to_string())
                .chain(args)
                .collect()
        }
        Action::Start(args) => command_line(Action::Run(args), opened, tree)?,
        Action::Shell(shell) => match shell {
            Some(s) => vec![s],
            None if is_kind(tree, "/bin/bash", NodeKind::File) => {
                vec!["/bin/bash".into(), "--norc".into()]
            }
            None => vec!["/bin/sh".into()],
        },
    })
}

/// A planning error with the image named, and for a SquashFS image whose tables fail to read
/// the reader's own account of what is wrong: through the tree a corrupt table is only EIO
/// ("cannot resolve /etc/passwd in the image: Input/output error"). Only runs on failure.
fn explain(opened: &OpenedImage, e: crate::runtime::Error) -> anyhow::Error {
    let path = opened.path.display();
    if let (Root::Squashfs { file, offset }, crate::runtime::Error::Image(_)) = (&opened.root, &e) {
        let diagnosis = file
            .try_clone()
            .ok()
            .and_then(|f| match Archive::open(f, *offset) {
                Err(se) => Some(se.to_string()),
                Ok(archive) => archive.root().err().map(|se| se.to_string()).or_else(|| {
                    ["/etc/passwd", "/etc/group", "/etc", "/"]
                        .iter()
                        .find_map(|p| archive.resolve(p.as_bytes()).err())
                        .map(|se| se.to_string())
                }),
            });
        if let Some(why) = diagnosis {
            // The reader's errors say "corrupt SquashFS: …" themselves.
            return anyhow::anyhow!("image {path}: {why}");
        }
    }
    match e {
        crate::runtime::Error::Image(_) => anyhow::Error::new(e).context(format!("image {path}")),
        e => anyhow::Error::new(e),
    }
}
