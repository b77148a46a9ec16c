//! `RsingCmd`: one rsing invocation, built up like `std::process::Command`. Every run has a
//! timeout guard (a failure guard, not a synchronisation), runs rsing in its own process group,
//! and an unexpected result panics with the command, its env delta, status, stdout and stderr.

use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Exit status rsing uses for its own failures (Apptainer's Fatalf).
pub const RSING_FAILURE: i32 = 255;

pub struct RsingCmd {
    program: PathBuf,
    args: Vec<OsString>,
    base_env: Vec<(OsString, OsString)>,
    env: Vec<(OsString, Option<OsString>)>,
    cwd: PathBuf,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    on_tty: bool,
}

impl RsingCmd {
    /// `base_env` is the full environment rsing starts from; `env` calls are shown as the delta.
    pub fn new(program: &Path, base_env: Vec<(OsString, OsString)>, cwd: &Path) -> RsingCmd {
        RsingCmd {
            program: program.to_path_buf(),
            args: Vec::new(),
            base_env,
            env: Vec::new(),
            cwd: cwd.to_path_buf(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
            on_tty: false,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        let value = value.as_ref().to_os_string();
        self.env.push((key.as_ref().to_os_string(), Some(value)));
        self
    }

    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.cwd = dir.as_ref().to_path_buf();
        self
    }

    /// Bytes written to rsing's stdin (then closed). Without it stdin is /dev/null.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs rsing on a pseudo-terminal through `script(1)`; stdin still comes from `.stdin()`.
    pub fn on_tty(mut self) -> Self {
        self.on_tty = true;
        self
    }

    /// Runs to completion and returns the output, whatever the exit status.
    pub fn run(&self) -> Output {
        let mut child = self.spawn_child(Stdio::piped());
        let watchdog = Watchdog::start(child.id(), self.timeout);
        let feeder = self.feed_stdin(&mut child);
        let output = child.wait_with_output().expect("waiting for rsing");
        if let Some(f) = feeder {
            let _ = f.join();
        }
        if watchdog.finish() {
            panic!("{}", self.report("timed out (killed)", &output));
        }
        output
    }

    /// Runs and panics unless rsing exits with `code`.
    pub fn assert_exit(&self, code: i32) -> Output {
        let out = self.run();
        if out.status.code() != Some(code) {
            panic!("{}", self.report(&format!("expected exit {code}"), &out));
        }
        out
    }

    /// Runs, expects exit 0, returns stdout without the trailing newline.
    pub fn stdout_str(&self) -> String {
        let out = self.assert_exit(0);
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }

    /// Runs and panics unless rsing fails on its own (exit 255) with exactly one stderr line
    /// that starts with `rsing: error: ` and names `thing`. Returns that line.
    pub fn assert_error_naming(&self, thing: &str) -> String {
        let out = self.run();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let ok = out.status.code() == Some(RSING_FAILURE)
            && lines.len() == 1
            && lines[0].starts_with("rsing: error: ")
            && lines[0].contains(thing);
        if !ok {
            let what = format!("expected exit 255 and one line `rsing: error: ...{thing}...`");
            panic!("{}", self.report(&what, &out));
        }
        lines[0].to_string()
    }

    /// Runs and panics unless the exit status is non-zero and stderr mentions `thing`.
    pub fn assert_fails_naming(&self, thing: &str) -> Output {
        let out = self.run();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains(thing) {
            let what = format!("expected a failure whose stderr names `{thing}`");
            panic!("{}", self.report(&what, &out));
        }
        out
    }

    /// Starts rsing with stdout and stderr piped, for tests that interact with it while it runs.
    pub fn spawn(&self) -> Running {
        let mut child = self.spawn_child(Stdio::piped());
        let watchdog = Watchdog::start(child.id(), self.timeout);
        let _ = self.feed_stdin(&mut child);
        let mut err = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = err.read_to_end(&mut buf);
            buf
        });
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Running {
            description: self.describe(),
            child,
            stdout,
            seen: Vec::new(),
            stderr: Some(stderr),
            watchdog: Some(watchdog),
        }
    }

    fn spawn_child(&self, out: Stdio) -> Child {
        let mut cmd = self.build();
        let stdin = if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        };
        cmd.stdin(stdin).stdout(out).stderr(Stdio::piped());
        cmd.process_group(0);
        // A test that has just written an executable (a copy of rsing) can hit ETXTBSY: a
        // child forked meanwhile by another test thread holds the write descriptor until it
        // execs. That lasts milliseconds; retry for a while before calling it a failure.
        let mut tries = 0;
        loop {
            match cmd.spawn() {
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => {
                    return other
                        .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.describe()))
                }
            }
        }
    }

    fn build(&self) -> Command {
        let mut cmd = if self.on_tty {
            let mut c = Command::new("script");
            c.args(["-q", "-e", "-c"])
                .arg(self.shell_line())
                .arg("/dev/null");
            c
        } else {
            let mut c = Command::new(&self.program);
            c.args(&self.args);
            c
        };
        cmd.env_clear().envs(self.base_env.iter().cloned());
        for (key, value) in &self.env {
            match value {
                Some(v) => cmd.env(key, v),
                None => cmd.env_remove(key),
            };
        }
        cmd.current_dir(&self.cwd);
        cmd
    }

    fn feed_stdin(&self, child: &mut Child) -> Option<JoinHandle<()>> {
        let bytes = self.stdin.clone()?;
        let mut pipe = child.stdin.take().expect("piped stdin");
        Some(std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        }))
    }

    /// The command as a shell line: program and arguments, each quoted.
    fn shell_line(&self) -> String {
        std::iter::once(self.program.as_os_str())
            .chain(self.args.iter().map(|a| a.as_os_str()))
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn describe(&self) -> String {
        let delta: Vec<String> = self
            .env
            .iter()
            .map(|(k, v)| match v {
                Some(v) => format!(
                    "{}={}",
                    k.to_string_lossy(),
                    shell_quote(&v.to_string_lossy())
                ),
                None => format!("-u {}", k.to_string_lossy()),
            })
            .collect();
        let tty = if self.on_tty {
            " (on a tty via script)"
        } else {
            ""
        };
        format!(
            "cd {} && env {} {}{tty}",
            self.cwd.display(),
            delta.join(" "),
            self.shell_line()
        )
    }

    fn report(&self, what: &str, out: &Output) -> String {
        format_report(what, &self.describe(), out.status, &out.stdout, &out.stderr)
    }
}

/// A running rsing started by `RsingCmd::spawn`.
pub struct Running {
    description: String,
    child: Child,
    stdout: BufReader<ChildStdout>,
    seen: Vec<u8>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    watchdog: Option<Watchdog>,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Reads stdout until a line equal to `line` arrives; panics on EOF (or the timeout).
    pub fn wait_for_line(&mut self, line: &str) {
        loop {
            let mut buf = Vec::new();
            let n = self
                .stdout
                .read_until(b'\n', &mut buf)
                .expect("reading stdout");
            self.seen.extend_from_slice(&buf);
            if n == 0 {
                let out = self.finish_output();
                panic!(
                    "{}",
                    self.report(&format!("stdout ended before `{line}`"), &out)
                );
            }
            if String::from_utf8_lossy(&buf).trim_end() == line {
                return;
            }
        }
    }

    /// Sends `signal` to the rsing process itself (not its group).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid());
        nix::sys::signal::kill(pid, signal).expect("sending a signal to rsing");
    }

    /// SIGKILL to rsing's whole process group, as a scheduler kills a job.
    pub fn kill_group(&self) {
        kill_group(self.child.id());
    }

    /// Waits for rsing to end, however it ends; returns all output.
    pub fn wait(mut self) -> Output {
        self.finish_output()
    }

    /// Waits for rsing to exit and panics unless its status is `code`; returns all output.
    pub fn assert_exit(mut self, code: i32) -> Output {
        let out = self.finish_output();
        if out.status.code() != Some(code) {
            panic!("{}", self.report(&format!("expected exit {code}"), &out));
        }
        out
    }

    fn finish_output(&mut self) -> Output {
        let _ = self.stdout.read_to_end(&mut self.seen);
        let status = self.child.wait().expect("waiting for rsing");
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        let timed_out = self.watchdog.take().is_some_and(|w| w.finish());
        let out = Output {
            status,
            stdout: self.seen.clone(),
            stderr: stderr.unwrap_or_default(),
        };
        if timed_out {
            panic!("{}", self.report("timed out (killed)", &out));
        }
        out
    }

    fn report(&self, what: &str, out: &Output) -> String {
        format_report(
            what,
            &self.description,
            out.status,
            &out.stdout,
            &out.stderr,
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.watchdog.is_some() {
            kill_group(self.child.id());
            let _ = self.child.wait();
        }
    }
}

/// Kills rsing's process group if it outlives its timeout.
struct Watchdog {
    done: mpsc::Sender<()>,
    thread: JoinHandle<bool>,
}

impl Watchdog {
    fn start(pid: u32, timeout: Duration) -> Watchdog {
        let (done, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || match rx.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                kill_group(pid);
                true
            }
            _ => false,
        });
        Watchdog { done, thread }
    }

    /// Stops the guard; true if it had fired.
    fn finish(self) -> bool {
        let _ = self.done.send(());
        self.thread.join().unwrap_or(true)
    }
}

fn kill_group(pid: u32) {
    let group = nix::unistd::Pid::from_raw(-(pid as i32));
    let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
}

pub fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn format_report(what: &str, cmd: &str, status: ExitStatus, out: &[u8], err: &[u8]) -> String {
    let status = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{status:?}"),
    };
    format!(
        "\n{what}\ncommand: {cmd}\nstatus: {status}\n--- stdout ---\n{}\n--- stderr ---\n{}\n---",
        clip(out),
        clip(err)
    )
}

fn clip(bytes: &[u8]) -> String {
    const MAX: usize = 16_000;
    let text = String::from_utf8_lossy(bytes);
    if text.len() <= MAX {
        return text.into_owned();
    }
    let cut = text
        .char_indices()
        .map(|(i, _)| i)
        .take_while(|&i| i <= MAX)
        .last()
        .unwrap_or(0);
    format!("{}\n[... {} more bytes]", &text[..cut], text.len() - cut)
}
