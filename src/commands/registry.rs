//! `rsing registry login|logout`: credentials for a registry, checked before they are stored.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context};

use crate::oci::Platform;
use crate::registry::{self, auth};

#[derive(Debug, clap::Subcommand)]
pub enum RegistryCommand {
    /// Check and store credentials for a registry
    Login {
        /// User name
        #[arg(short, long)]
        username: String,
        /// Read the password from standard input (else it is asked for on the terminal)
        #[arg(long)]
        password_stdin: bool,
        /// Use plain HTTP for this registry
        #[arg(long)]
        insecure: bool,
        /// Registry host[:port], e.g. ghcr.io
        registry: String,
    },
    /// Forget the stored credentials of a registry
    Logout {
        /// Registry host[:port]
        registry: String,
    },
}

pub fn run(cmd: &RegistryCommand) -> anyhow::Result<i32> {
    match cmd {
        RegistryCommand::Login {
            username,
            password_stdin,
            insecure,
            registry: host,
        } => {
            let password = read_password(*password_stdin)?;
            let options = registry::Options {
                insecure: if *insecure {
                    vec![host.clone()]
                } else {
                    Vec::new()
                },
                platform: Platform::host(),
                parallel: 1,
            };
            let store = auth::login(host, username, &password, &options)?;
            eprintln!("logged in to {host} (credentials in {})", store.display());
        }
        RegistryCommand::Logout { registry: host } => {
            if auth::logout(host)? {
                eprintln!("logged out of {host}");
            } else {
                eprintln!("no stored credentials for {host}");
            }
        }
    }
    Ok(0)
}

/// The password: one line of stdin with `--password-stdin`, else typed without echo.
fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if !from_stdin && !stdin.is_terminal() {
        bail!("no terminal to ask for the password: use --password-stdin");
    }
    let mut line = String::new();
    if from_stdin {
        stdin
            .lock()
            .read_line(&mut line)
            .context("reading the password")?;
    } else {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        eprint!("Password: ");
        let saved = tcgetattr(&stdin).context("terminal")?;
        let mut quiet = saved.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("terminal")?;
        let read = stdin.lock().read_line(&mut line);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
        eprintln!();
        read.context("reading the password")?;
    }
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("empty password");
    }
    Ok(password)
}
