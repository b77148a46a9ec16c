//! Command-line parsing, logging set-up, and the one place that prints errors and picks the
//! exit status: the command's own status passes through; rsing's failures are one line
//! `rsing: error: ...` and status 255 (2 for a command line clap rejects).

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::exec::{self, Action, RuntimeArgs};
use crate::commands::{term, Global};
use crate::runtime;

mod apptainer;
mod version;

/// Exit status for rsing's own failures (Apptainer's convention).
const FAILURE: u8 = 255;

#[derive(Debug, Parser)]
#[command(
    name = "rsing",
    version,
    long_version = version::LONG,
    about = "Rootless containers for HPC: run SIF and SquashFS images as yourself",
    propagate_version = true
)]
struct Cli<C: Subcommand> {
    /// More log output (-v info, -vv debug, -vvv trace)
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Your configuration file, read on top of the system's /etc/rsing/rsing.conf (it may only
    /// add preferences; the system file's restrictions always apply)
    #[arg(long, global = true, env = "RSING_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: C,
}

/// The commands that start a container: parsed on their own first (see [`parse`]).
#[derive(Debug, Subcommand)]
enum ContainerCommand {
    /// Run a command inside an image
    Exec {
        #[command(flatten)]
        runtime: RuntimeArgs,
        /// SIF file, SquashFS file, directory, docker://REF or oras://REF (pulled into the cache)
        image: String,
        /// Command and its arguments
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Run the image's runscript (or OCI entrypoint/cmd) with arguments
    Run {
        #[command(flatten)]
        runtime: RuntimeArgs,
        /// SIF file, SquashFS file, directory, docker://REF or oras://REF (pulled into the cache)
        image: String,
        /// Arguments for the runscript
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the image's test script (/.singularity.d/test) with arguments
    Test {
        #[command(flatten)]
        runtime: RuntimeArgs,
        /// SIF file, SquashFS file, directory or docker://REF (pulled into the cache)
        image: String,
        /// Arguments for the test script
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Start an interactive shell inside an image
    Shell {
        #[command(flatten)]
        runtime: RuntimeArgs,
        /// Shell to run (default /bin/bash if present, else /bin/sh)
        #[arg(short, long, value_name = "PATH")]
        shell: Option<String>,
        /// SIF file, SquashFS file, directory, docker://REF or oras://REF (pulled into the cache)
        image: String,
    },
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Container(ContainerCommand),
    /// Build a SIF file from docker://, oci:, oci-archive:, docker-archive:, a directory, a
    /// SquashFS or a SIF file
    Build(crate::commands::build::BuildArgs),
    /// Pull an image from a registry into a SIF file (docker://REF → NAME_TAG.sif)
    Pull(crate::commands::build::PullArgs),
    /// Push a SIF file to an OCI registry: as an ORAS artifact (oras://REF, as Apptainer does) or
    /// as an OCI-SIF image (docker://REF, its SquashFS as the one layer, as SingularityCE 4 does)
    Push(crate::commands::oras::PushArgs),
    /// Cached blobs and images (list, clean)
    #[command(subcommand)]
    Cache(crate::commands::cache::CacheCommand),
    /// What --nv would inject: driver version, libraries, binaries, devices
    Gpu(crate::commands::gpu::GpuArgs),
    /// Environment modules for containers (create)
    #[command(subcommand)]
    Module(crate::commands::module::ModuleCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Registry credentials (login, logout)
    #[command(subcommand)]
    Registry(crate::commands::registry::RegistryCommand),
    /// Persistent overlays: create an ext3 overlay image, seal a directory or image overlay into SquashFS
    #[command(subcommand)]
    Overlay(crate::commands::overlay::OverlayCommand),
    /// Detached containers: start, run, list, stats, stop, logs (join with instance://NAME)
    #[command(subcommand)]
    Instance(crate::commands::instance::InstanceCommand),
    /// Show an image's labels, environment, runscript, definition file or OCI config
    Inspect(crate::commands::inspect::InspectArgs),
    /// Show the help text of an image's runscript (/.singularity.d/runscript.help)
    #[command(name = "run-help")]
    RunHelp {
        /// SIF file, SquashFS file or directory
        image: String,
    },
    /// Objects of a SIF file (list, dump)
    #[command(subcommand)]
    Sif(crate::commands::sif::SifCommand),
    /// Check what this host supports for rsing and why something fails (OK/WARN/FAIL, fixes)
    #[command(visible_alias = "info")]
    Doctor(crate::commands::doctor::DoctorArgs),
    /// Write the man pages (rsing.1, rsing-SUBCOMMAND.1) into a directory (for installers)
    #[command(hide = true)]
    Man {
        /// Directory for the pages (created if missing)
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// The shared image server (started by rsing itself)
    #[command(name = "__serve", hide = true)]
    Serve(crate::commands::serve::ServeCli),
}

/// Parses the command line: `exec`, `run` and `shell` first with a parser that knows only
/// them (building clap's model of every command was a tenth of a container start), then, for
/// everything else and for every error, help or version request, with the full one, whose
/// messages are the ones users see.
fn parse(args: Vec<std::ffi::OsString>) -> Result<Cli<Command>, clap::Error> {
    let first_word = args
        .iter()
        .skip(1)
        .find(|a| !a.as_encoded_bytes().starts_with(b"-"));
    if first_word.is_some_and(|w| w == "exec" || w == "run" || w == "shell" || w == "test") {
        if let Ok(cli) = Cli::<ContainerCommand>::try_parse_from(&args) {
            return Ok(Cli {
                verbose: cli.verbose,
                quiet: cli.quiet,
                config: cli.config,
                command: Command::Container(cli.command),
            });
        }
    }
    Cli::<Command>::try_parse_from(&args)
}

/// Parses the command line, runs the command, and returns the exit status.
pub fn main() -> u8 {
    main_with_args(std::env::args_os().collect())
}

/// [`main`] with the arguments given: where the C library does not hand argv to Rust's
/// start-up code (musl, the static build), src/main.rs passes them from its own `main`.
pub fn main_with_args(args: Vec<std::ffi::OsString>) -> u8 {
    let args = match apptainer::translate(args) {
        Ok(args) => args,
        Err(line) => {
            eprintln!("rsing: error: {line}");
            return 2;
        }
    };
    if args.len() == 2 && args[1] == "version" {
        println!("{}", env!("CARGO_PKG_VERSION"));
        return 0;
    }
    let cli = match parse(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return 0;
            }
            // clap's first paragraph, on one line (it lists missing arguments below it).
            let text = e.render().to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let first = first.join(" ");
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            let first = term::one_line(first);
            eprintln!("rsing: error: {first} (see 'rsing --help')");
            return 2;
        }
    };
    init_logging(cli.verbose, cli.quiet);
    let global = Global {
        quiet: cli.quiet,
        config: cli.config.clone(),
    };
    let result = match cli.command {
        Command::Container(ContainerCommand::Exec {
            runtime,
            image,
            command,
        }) => exec::run(&global, &runtime, &image, Action::Exec(command)),
        Command::Container(ContainerCommand::Run {
            runtime,
            image,
            args,
        }) => exec::run(&global, &runtime, &image, Action::Run(args)),
        Command::Container(ContainerCommand::Shell {
            runtime,
            shell,
            image,
        }) => exec::run(&global, &runtime, &image, Action::Shell(shell)),
        Command::Container(ContainerCommand::Test {
            runtime,
            image,
            args,
        }) => exec::run(&global, &runtime, &image, Action::Test(args)),
        Command::RunHelp { image } => crate::commands::inspect::run_help(&image),
        Command::Build(args) => crate::commands::build::build(&global, &args),
        Command::Pull(args) => crate::commands::build::pull(&global, &args),
        Command::Push(args) => crate::commands::oras::push(&global, &args),
        Command::Cache(cmd) => crate::commands::cache::run(&cmd),
        Command::Registry(cmd) => crate::commands::registry::run(&cmd),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::<Command>::command(),
                "rsing",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Gpu(args) => crate::commands::gpu::run(&global, &args),
        Command::Module(cmd) => crate::commands::module::run(&global, &cmd),
        Command::Overlay(cmd) => crate::commands::overlay::run(&cmd),
        Command::Instance(cmd) => crate::commands::instance::run(&global, cmd),
        Command::Inspect(args) => crate::commands::inspect::run(args),
        Command::Sif(cmd) => crate::commands::sif::run(cmd),
        Command::Serve(args) => crate::commands::serve::run(args),
        Command::Doctor(args) => crate::commands::doctor::run(&global, &args),
        Command::Man { dir } => {
            use clap::CommandFactory;
            crate::commands::manpages::write_all(Cli::<Command>::command(), &dir).map(|_| 0)
        }
    };
    match result {
        Ok(code) => code.clamp(0, 255) as u8,
        Err(err) => {
            let code = match err.downcast_ref::<runtime::Error>() {
                Some(runtime::Error::Payload { code, .. }) => (*code).clamp(1, 255) as u8,
                _ => FAILURE,
            };
            tracing::debug!("error chain: {err:?}");
            let line = one_line(&err);
            let _ = writeln!(std::io::stderr(), "rsing: error: {line}");
            code
        }
    }
}

/// The error and its causes on one line, each cause once (library errors often already name
/// their source in their own message), escaped for the terminal by [`term::one_line`].
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    // The edge where every error is printed: bytes from images and registries in it (tar
    // names, a layer's first bytes, a server's message) cannot reach the terminal raw.
    term::one_line(&line.replace('\n', " "))
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = match (quiet, verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::WARN,
        (false, 1) => LevelFilter::INFO,
        (false, 2) => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(|| term::SafeStderr)
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_target(false);
    // RSING_LOG takes full EnvFilter directives. Without it, a plain target filter: parsing an
    // EnvFilter directive costs tens of microseconds on every container start.
    let registry = tracing_subscriber::registry().with(fmt);
    let _ = match tracing_subscriber::EnvFilter::try_from_env("RSING_LOG") {
        Ok(filter) => registry.with(filter).try_init(),
        Err(_) => registry
            .with(Targets::new().with_target("rsing", level))
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    /// clap's own consistency checks (duplicate short flags, bad defaults) on the whole CLI.
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::<super::Command>::command().debug_assert();
    }
}
