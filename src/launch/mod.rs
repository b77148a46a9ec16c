//! The launch assembler: turns what the user asked for (options and action), the site's
//! configuration, the host's facts and the opened image into one complete description of the
//! start — a [`Container`] whose plan is every step — that the runtime only carries out.
//!
//! ```text
//! commands::exec ─ parse, open the image ─▶ launch::assemble ─▶ runtime::run / join::run
//!   assemble, in named steps, each decided once:
//!     options      flags + Apptainer's variables → mount options (binds checked by the site)
//!     gpu          --nv / --device → Injection, applied to the options here …
//!     overlays     --overlay / --writable → layers (locked)
//!     root         sharing policy → join the image server, or serve the SquashFS in-process
//!     plan         runtime::plan::build: every base, mount and root step
//!     environment  host, image, rsing's and the user's layers; … and to the env here
//!     app          --app NAME: the SCIF app's scripts, variables and paths
//!     command      the argv for exec / run / shell / test / instance start
//! ```

pub mod app;
mod command;
pub mod compat;
mod environment;
pub mod gpu;
mod options;
mod overlays;
mod root;
mod sharing;

pub use command::Action;
pub use options::UserOptions;

use crate::gpu::cdi;
use crate::image::OpenedImage;
use crate::runtime::environ::Launch;
use crate::runtime::host::HostFacts;
use crate::runtime::plan::{self, ImageKind};
use crate::runtime::{Container, RootSource};
use crate::siteconf::SiteConfig;
use crate::tree::NodeKind;

/// What to start, and how.
pub struct Request {
    pub options: UserOptions,
    pub action: Action,
    /// `instance://NAME`: the host PID of the instance's init, whose namespaces the command
    /// joins instead of starting a container.
    pub join: Option<i32>,
    /// `--quiet`: warnings (a missing GPU driver, unusable CDI specs) are not printed.
    pub quiet: bool,
}

/// The assembled launch.
pub enum Assembled {
    /// Start a new container; run the CDI host `hooks` first.
    Start {
        container: Box<Container>,
        hooks: Vec<cdi::Hook>,
    },
    /// Run `launch` in the running instance whose init is `init`.
    Join {
        init: i32,
        launch: Launch,
        cwd: String,
        home: String,
    },
    /// `rsing test` of an image without a test script (Apptainer passes it).
    NoTestScript,
}

/// Assembles the launch of `request` in `opened`.
pub fn assemble(
    site: &SiteConfig,
    host: &HostFacts,
    opened: &OpenedImage,
    request: Request,
) -> anyhow::Result<Assembled> {
    let started = std::time::Instant::now();
    let Request {
        mut options,
        action,
        join,
        quiet,
    } = request;
    for note in compat::apply_flag_variables(&mut options, &host.env)? {
        gpu::warn(quiet, &note);
    }
    let args = &options;
    let mut mounts = options::plan_options(args, site, host)?;
    let injection = if args.nv || !args.device.is_empty() {
        gpu::injection(quiet, site, host, args.nv, &args.device, mounts.contain)?
    } else {
        gpu::Injection::default()
    };
    injection.apply_to_options(site, &mut mounts)?;
    let overlays = overlays::for_launch(args, opened, host)?;
    // `--writable` on a SIF with an overlay partition writes into the partition (an upper
    // layer), not into the image itself as on a sandbox.
    if overlays.upper.is_some() {
        mounts.writable = false;
    }
    let (source, tree) = root::root_and_tree(opened, site, host, &mounts, join.is_none())?;
    if let RootSource::Directory(dir) = &source {
        mounts.image = ImageKind::Directory(dir.clone());
    }
    let tree = tree.tree();
    tracing::debug!(us = started.elapsed().as_micros() as u64, "image opened");
    let app = match &args.app {
        Some(name) => Some(app::App::find(name, opened, tree)?),
        None => None,
    };
    let has_test = match &app {
        Some(app) => app.script(tree, "test").is_some(),
        None => command::is_kind(tree, crate::contract::TEST, NodeKind::File),
    };
    if matches!(action, Action::Test(_)) && !has_test {
        return Ok(Assembled::NoTestScript);
    }
    let plan = plan::build(&mounts, host, tree, &overlays).map_err(|e| root::explain(opened, e))?;
    let mut env = environment::layers(args, &mounts, host, opened, tree, &plan, &action)?;
    injection.apply_to_env(&mut env);
    if let Some(app) = &app {
        app.apply_to_env(&mut env, tree);
    }
    let launch = env.launch(command::command_line(action, opened, tree, app.as_ref())?);
    tracing::debug!(us = started.elapsed().as_micros() as u64, "launch planned");
    if let Some(init) = join {
        return Ok(Assembled::Join {
            init,
            launch,
            cwd: plan.cwd,
            home: plan.home,
        });
    }
    Ok(Assembled::Start {
        container: Box::new(Container {
            root: source,
            fsname: opened.path.to_string_lossy().into_owned(),
            plan,
            launch,
            overlays,
        }),
        hooks: injection.hooks,
    })
}
