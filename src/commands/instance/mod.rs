//! `rsing instance start|run|list|stop|logs`: containers that run detached, and that later
//! commands join with `instance://NAME` (see docs/instances.md).

mod cgroup;
mod start;
pub mod state;
mod stats;
mod usage;

use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::Signal;

use super::exec::RuntimeArgs;
use super::Global;
use state::State;

#[derive(Debug, clap::Subcommand)]
pub enum InstanceCommand {
    /// Start IMAGE's start script (/.singularity.d/startscript; without one, what `run` runs)
    /// detached, in its own PID namespace, as instance NAME
    Start(StartArgs),
    /// Start IMAGE's runscript (or OCI entrypoint/cmd) detached as instance NAME
    Run(StartArgs),
    /// List your running instances on this node
    List {
        /// JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Stop an instance: signal it, wait, then kill what is left
    Stop {
        /// Instance name
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        name: Option<String>,
        /// Stop all your instances on this node
        #[arg(short, long)]
        all: bool,
        /// Seconds to wait after the signal before SIGKILL
        #[arg(short = 't', long = "timeout", default_value_t = 10)]
        timeout: u64,
        /// Signal to send first (name or number)
        #[arg(short, long, default_value = "TERM")]
        signal: String,
    },
    /// Show an instance's CPU time, memory and number of processes (from its cgroup where
    /// cgroups v2 delegation gave it one, else summed from /proc)
    Stats {
        /// Instance name
        name: String,
        /// JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Print an instance's output (stdout, then stderr)
    Logs {
        /// Instance name
        name: String,
        /// Keep printing new output until the instance ends
        #[arg(short, long)]
        follow: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct StartArgs {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// SIF file, SquashFS file, directory or docker://REF
    pub image: String,
    /// Instance name (letters, digits, '.', '_', '-')
    pub name: String,
    /// Arguments for the start script
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(global: &Global, cmd: InstanceCommand) -> anyhow::Result<i32> {
    match cmd {
        InstanceCommand::Start(a) => start::start(global, a, false),
        InstanceCommand::Run(a) => start::start(global, a, true),
        InstanceCommand::List { json } => list(json),
        InstanceCommand::Stop {
            name,
            all,
            timeout,
            signal,
        } => stop(
            global.quiet,
            name,
            all,
            Duration::from_secs(timeout),
            &signal,
        ),
        InstanceCommand::Stats { name, json } => stats::show(&running(&name)?, json),
        InstanceCommand::Logs { name, follow } => logs(&name, follow),
    }
}

/// The running instance `name`, for `instance://NAME`: one clear error otherwise.
pub fn running(name: &str) -> anyhow::Result<State> {
    state::check_name(name)?;
    let dir = state::dir()?;
    match state::load(&dir, name) {
        Some(s) if s.running() => Ok(s),
        Some(_) => {
            let _ = std::fs::remove_file(state::path(&dir, name, "json"));
            bail!("instance {name} is not running (it has ended; see 'rsing instance logs {name}')")
        }
        None => bail!("no instance named {name} is running (see 'rsing instance list')"),
    }
}

/// One line of `instance list --json`: the record's keys, and the TCP ports the instance's
/// processes listen on now.
#[derive(serde::Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    state: &'a State,
    ports: Vec<String>,
}

fn list(json: bool) -> anyhow::Result<i32> {
    let states = state::all_running(&state::dir()?);
    let listed: Vec<Listed> = states
        .iter()
        .map(|s| Listed {
            state: s,
            ports: usage::listening_ports(&usage::members(s.init_pid)),
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&listed)?)?;
        return Ok(0);
    }
    writeln!(
        out,
        "{:<20} {:>8}  {:<23}  {:<20}  {:<20}  IMAGE",
        "NAME", "PID", "STARTED", "PORTS", "BINDS"
    )?;
    let or_dash = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(",")
        }
    };
    for l in &listed {
        let s = l.state;
        writeln!(
            out,
            "{:<20} {:>8}  {:<23}  {:<20}  {:<20}  {}",
            s.name,
            s.pid,
            state::format_time(s.started),
            or_dash(&l.ports),
            or_dash(&s.binds),
            s.image
        )?;
    }
    Ok(0)
}

fn parse_signal(text: &str) -> anyhow::Result<Signal> {
    if let Ok(n) = text.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| anyhow::anyhow!("unknown signal {text}"));
    }
    let upper = text.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<Signal>()
        .map_err(|_| anyhow::anyhow!("unknown signal {text}"))
}

fn stop(
    quiet: bool,
    name: Option<String>,
    all: bool,
    timeout: Duration,
    signal: &str,
) -> anyhow::Result<i32> {
    let signal = parse_signal(signal)?;
    let dir = state::dir()?;
    let targets = if all {
        state::all_running(&dir)
    } else {
        let name = name.unwrap_or_default();
        state::check_name(&name)?;
        match state::load(&dir, &name) {
            Some(s) if s.running() => vec![s],
            Some(_) => {
                let _ = std::fs::remove_file(state::path(&dir, &name, "json"));
                bail!("instance {name} is not running (it had already ended)")
            }
            None => bail!("no instance named {name} is running (see 'rsing instance list')"),
        }
    };
    for s in &targets {
        stop_one(s, signal, timeout);
        if let Some(cg) = &s.cgroup {
            // Empty now (the supervisor removes it itself unless it was killed).
            let _ = std::fs::remove_dir(cg);
        }
        let _ = std::fs::remove_file(state::path(&dir, &s.name, "json"));
        if !quiet {
            eprintln!("rsing: stopped instance {}", s.name);
        }
    }
    Ok(0)
}

/// Signals the supervisor (which relays it to the command), waits, then kills the supervisor
/// and the namespace's init: with PID 1 gone the kernel ends every process of the namespace,
/// and with them the instance's mounts.
fn stop_one(s: &State, signal: Signal, timeout: Duration) {
    let gone = || !state::alive(s.pid, s.pid_start) && !state::alive(s.init_pid, s.init_start);
    let kill = |pid: i32, start: u64, sig: Signal| {
        if state::alive(pid, start) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    };
    kill(s.pid, s.pid_start, signal);
    if wait_until(timeout, gone) {
        return;
    }
    kill(s.init_pid, s.init_start, Signal::SIGKILL);
    kill(s.pid, s.pid_start, Signal::SIGKILL);
    wait_until(Duration::from_secs(10), gone);
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn logs(name: &str, follow: bool) -> anyhow::Result<i32> {
    state::check_name(name)?;
    let dir = state::dir()?;
    let out_path = state::path(&dir, name, "out");
    let err_path = state::path(&dir, name, "err");
    let open = |p: &std::path::Path| {
        std::fs::File::open(p)
            .with_context(|| format!("no log of an instance named {name} ({})", p.display()))
    };
    let mut out_file = open(&out_path)?;
    let mut err_file = open(&err_path)?;
    let copy = |f: &mut std::fs::File, to_err: bool| -> anyhow::Result<()> {
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        if to_err {
            std::io::stderr().write_all(&buf)?;
        } else {
            std::io::stdout().write_all(&buf)?;
            std::io::stdout().flush()?;
        }
        Ok(())
    };
    copy(&mut out_file, false)?;
    copy(&mut err_file, true)?;
    if !follow {
        return Ok(0);
    }
    loop {
        let live = state::load(&dir, name).is_some_and(|s| s.running());
        std::thread::sleep(Duration::from_millis(200));
        for (f, to_err) in [(&mut out_file, false), (&mut err_file, true)] {
            // A restarted instance truncates its logs: start again from the top.
            let pos = f.stream_position()?;
            if f.metadata()?.len() < pos {
                f.rewind()?;
            }
            copy(f, to_err)?;
        }
        if !live {
            break;
        }
    }
    Ok(0)
}
