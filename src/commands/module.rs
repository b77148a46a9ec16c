//! `rsing module create`: a modulefile (Lmod Lua or Tcl) plus one wrapper script per command,
//! so that after `module load NAME/VERSION` those commands run inside an image.
//!
//! Layout under `--dest DIR` (a directory on `MODULEPATH`):
//!
//! ```text
//! DIR/NAME/VERSION[.lua]       the modulefile: help, whatis (image labels), PATH
//! DIR/NAME/VERSION.d/bin/CMD   #!/bin/sh wrappers: exec RSING exec IMAGE CMD "$@"
//! ```
//!
//! Wrappers are scripts, not shell functions, so they work from `srun`, `mpirun`, `xargs`,
//! `env -i` and any shell. Module systems skip `VERSION.d`: its files carry no `#%Module`
//! cookie and no `.lua` name. Every fixed word of a wrapper is single-quoted and the user's
//! arguments travel as `"$@"`, so spaces, empty arguments, globs and quotes arrive unchanged.
//! The wrapper names the rsing binary by absolute path (by default the one that created it),
//! so a job whose environment lacks the rsing module still finds it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The image label `--from-labels` reads: whitespace-separated `NAME` or `NAME=COMMAND` words.
pub const COMMANDS_LABEL: &str = "org.rsing.module.commands";

#[derive(Debug, clap::Subcommand)]
pub enum ModuleCommand {
    /// Write a modulefile and wrapper scripts that run an image's commands
    Create(CreateArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// Image the commands run in: SIF, SquashFS or directory (recorded as an absolute path)
    #[arg(long, value_name = "IMAGE")]
    image: String,
    /// Command to expose: NAME, or NAME=COMMAND to run COMMAND inside as NAME (repeatable)
    #[arg(long = "cmd", value_name = "NAME[=COMMAND]")]
    cmds: Vec<String>,
    /// Also expose the commands listed in the image label org.rsing.module.commands
    #[arg(long)]
    from_labels: bool,
    /// Modulefile syntax [default: lua under Lmod ($LMOD_CMD set), else tcl]
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Module tree to write into (a directory on MODULEPATH; created if missing)
    #[arg(long, value_name = "DIR")]
    dest: PathBuf,
    /// rsing the wrappers run [default: this rsing's absolute path]; a bare name is looked up
    /// on PATH each time a wrapper runs
    #[arg(long, value_name = "PATH")]
    rsing: Option<String>,
    /// Option for `rsing exec`, placed before the image, e.g. --exec-arg=--cleanenv (repeatable)
    #[arg(long = "exec-arg", value_name = "ARG", allow_hyphen_values = true)]
    exec_args: Vec<String>,
    /// Replace an existing module of the same name and version
    #[arg(long)]
    force: bool,
    /// Module name and version: NAME/VERSION (NAME may have several parts: bio/samtools/1.17)
    module: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Lmod 8 (`NAME/VERSION.lua`)
    Lua,
    /// environment-modules 4/5 and Lmod (`NAME/VERSION`, `#%Module`)
    Tcl,
}

pub fn run(global: &super::Global, cmd: &ModuleCommand) -> anyhow::Result<i32> {
    match cmd {
        ModuleCommand::Create(args) => create(global, args),
    }
}

fn create(global: &super::Global, args: &CreateArgs) -> anyhow::Result<i32> {
    let (name, version) = split_module(&args.module)?;
    if args.image.contains("://") {
        bail!(
            "image {}: module create needs a local image; pull it first (rsing pull {})",
            args.image,
            args.image
        );
    }
    let image =
        std::path::absolute(&args.image).with_context(|| format!("image {}", args.image))?;
    let labels = super::inspect::labels(&image)?;
    let commands = commands(args, &labels, &image)?;
    let rsing = match &args.rsing {
        Some(r) if r.is_empty() => bail!("--rsing: empty path"),
        Some(r) if r.contains('/') => std::path::absolute(r)?.to_string_lossy().into_owned(),
        Some(r) => r.clone(),
        None => std::env::current_exe()
            .context("cannot find this rsing's path; give --rsing")?
            .to_string_lossy()
            .into_owned(),
    };
    let format = args.format.unwrap_or_else(|| {
        match std::env::var_os("LMOD_CMD").is_some_and(|v| !v.is_empty()) {
            true => Format::Lua,
            false => Format::Tcl,
        }
    });
    std::fs::create_dir_all(&args.dest)
        .with_context(|| format!("module tree {}", args.dest.display()))?;
    let dest = args
        .dest
        .canonicalize()
        .with_context(|| format!("module tree {}", args.dest.display()))?;
    let dir = dest.join(name);
    let tcl_file = dir.join(version);
    let lua_file = dir.join(format!("{version}.lua"));
    let (file, other) = match format {
        Format::Lua => (&lua_file, &tcl_file),
        Format::Tcl => (&tcl_file, &lua_file),
    };
    let bin_parent = dir.join(format!("{version}.d"));
    // Everything is checked before the first write: --force replaces a module, never a
    // directory of other modules (`tools/bb` when `tools/bb/1.0` exists).
    for (existing, want_dir) in [(file, false), (other, false), (&bin_parent, true)] {
        let Ok(meta) = existing.symlink_metadata() else {
            continue;
        };
        if meta.is_dir() != want_dir {
            bail!(
                "{} exists and is not a module's {}: not replaced",
                existing.display(),
                if want_dir {
                    "wrapper directory"
                } else {
                    "modulefile"
                }
            );
        }
        if !args.force && !want_dir {
            bail!(
                "module {name}/{version} exists: {} (give --force to replace it)",
                existing.display()
            );
        }
    }
    let module = Module {
        name,
        version,
        image: &image,
        commands: &commands,
        labels: &labels,
        bin: &bin_parent.join("bin"),
    };
    let wrappers: Vec<(String, String)> = commands
        .iter()
        .map(|c| (c.name.clone(), wrapper(&rsing, &args.exec_args, &image, c)))
        .collect();
    std::fs::create_dir_all(&dir).with_context(|| format!("module dir {}", dir.display()))?;
    replace_dir(&bin_parent, &wrappers)?;
    let text = match format {
        Format::Lua => lua(&module),
        Format::Tcl => tcl(&module),
    };
    write_atomic(file, text.as_bytes(), 0o644)?;
    if other.symlink_metadata().is_ok() {
        std::fs::remove_file(other).with_context(|| format!("removing {}", other.display()))?;
    }
    tracing::info!(module = %args.module, file = %file.display(), "module written");
    // The files written, one per line (for scripts); how to use them on stderr.
    println!("{}", file.display());
    for c in &commands {
        println!("{}", module.bin.join(&c.name).display());
    }
    if !global.quiet {
        eprintln!(
            "rsing: load it with: module use {} && module load {name}/{version}",
            dest.display()
        );
    }
    Ok(0)
}

/// One exposed command: the wrapper's file name and what it runs inside the image.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cmd {
    name: String,
    target: String,
}

/// `NAME` or `NAME=COMMAND`. NAME becomes a file name on PATH, so it is restricted to
/// characters that need no quoting anywhere; COMMAND may be any word (a path inside).
fn parse_cmd(word: &str) -> anyhow::Result<Cmd> {
    let (name, target) = word.split_once('=').unwrap_or((word, word));
    let ok = |c: char| c.is_ascii_alphanumeric() || "._+-".contains(c);
    if name.is_empty() || name.starts_with(['.', '-']) || !name.chars().all(ok) {
        bail!("command {word:?}: NAME must be a plain file name (letters, digits, . _ + -)");
    }
    if target.is_empty() || target.contains(['\0', '\n']) {
        bail!("command {word:?}: COMMAND must be one non-empty word");
    }
    Ok(Cmd {
        name: name.to_string(),
        target: target.to_string(),
    })
}

/// The label's commands (with `--from-labels`) then `--cmd`s; one entry per wrapper name.
fn commands(
    args: &CreateArgs,
    labels: &BTreeMap<String, String>,
    image: &Path,
) -> anyhow::Result<Vec<Cmd>> {
    let mut words: Vec<&str> = Vec::new();
    if args.from_labels {
        let Some(list) = labels.get(COMMANDS_LABEL) else {
            bail!("image {}: no label {COMMANDS_LABEL}", image.display());
        };
        words.extend(list.split_whitespace());
    }
    words.extend(args.cmds.iter().map(String::as_str));
    let mut out: Vec<Cmd> = Vec::new();
    for word in words {
        let cmd = parse_cmd(word)?;
        match out.iter().find(|c| c.name == cmd.name) {
            Some(seen) if *seen != cmd => bail!(
                "command {}: given twice, as {} and {}",
                cmd.name,
                seen.target,
                cmd.target
            ),
            Some(_) => {}
            None => out.push(cmd),
        }
    }
    if out.is_empty() {
        bail!("no commands to expose: give --cmd NAME or --from-labels");
    }
    Ok(out)
}

/// Splits `NAME/VERSION`; every part must be a plain, visible module path component.
fn split_module(spec: &str) -> anyhow::Result<(&str, &str)> {
    // No part may end in .lua or .d either: `a/1.0.d/x` would live inside the wrapper
    // directory of `a/1.0`, and `a.lua/x` next to a modulefile's name.
    let ok = |part: &str| {
        !part.is_empty()
            && !part.starts_with(['.', '-'])
            && !part.ends_with(".lua")
            && !part.ends_with(".d")
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c))
    };
    match spec.rsplit_once('/') {
        Some((name, version)) if name.split('/').all(ok) && ok(version) => Ok((name, version)),
        _ => bail!(
            "module {spec:?}: expected NAME/VERSION, each part made of letters, digits, . _ + - \
             (not starting with . or -, not ending in .lua or .d)"
        ),
    }
}

/// The wrapper script for `cmd`. POSIX sh: no bashisms, exec so signals and the exit status
/// are the container's.
fn wrapper(rsing: &str, exec_args: &[String], image: &Path, cmd: &Cmd) -> String {
    let mut line = format!("exec {} exec", sh_quote(rsing));
    for word in exec_args
        .iter()
        .map(String::as_str)
        .chain([&*image.to_string_lossy(), cmd.target.as_str()])
    {
        line.push(' ');
        line.push_str(&sh_quote(word));
    }
    format!(
        "#!/bin/sh\n# {} inside {}: written by rsing module create {}.\n{line} \"$@\"\n",
        one_line(&cmd.target),
        one_line(&image.to_string_lossy()),
        env!("CARGO_PKG_VERSION"),
    )
}

/// `s` as one POSIX shell word: single quotes, with `'` written as `'\''`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A label value for a one-line context: control characters and line breaks become spaces.
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What both modulefile formats say.
struct Module<'a> {
    name: &'a str,
    version: &'a str,
    image: &'a Path,
    commands: &'a [Cmd],
    labels: &'a BTreeMap<String, String>,
    bin: &'a Path,
}

impl Module<'_> {
    fn command_list(&self) -> String {
        let words: Vec<String> = self
            .commands
            .iter()
            .map(|c| match c.name == c.target {
                true => c.name.clone(),
                false => format!("{}={}", c.name, one_line(&c.target)),
            })
            .collect();
        words.join(" ")
    }

    /// `module help` text, one entry per line.
    fn help(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "Commands of the container image {}, run with rsing:",
                one_line(&self.image.to_string_lossy())
            ),
            format!("  {}", self.command_list()),
            "Each one runs as `rsing exec IMAGE COMMAND ARGS...` (RSING_BIND and the other"
                .to_string(),
            "RSING_* variables apply); `rsing shell IMAGE` opens a shell in the image.".to_string(),
        ];
        if !self.labels.is_empty() {
            lines.push("Image labels:".to_string());
            lines.extend(
                self.labels
                    .iter()
                    .map(|(k, v)| format!("  {}", label(k, v))),
            );
        }
        lines
    }

    /// `module whatis` lines: name, version, image, commands, then every label.
    fn whatis(&self) -> Vec<String> {
        let mut lines = vec![
            format!("Name: {}", self.name),
            format!("Version: {}", self.version),
            format!("Image: {}", one_line(&self.image.to_string_lossy())),
            format!("Commands: {}", self.command_list()),
        ];
        lines.extend(self.labels.iter().map(|(k, v)| label(k, v)));
        lines
    }

    fn header(&self, comment: &str) -> String {
        format!(
            "{comment} {}/{}: commands of a container image, written by rsing module create {}.\n",
            self.name,
            self.version,
            env!("CARGO_PKG_VERSION")
        )
    }
}

fn label(key: &str, value: &str) -> String {
    format!("{}: {}", one_line(key), one_line(value))
}

/// The Lmod modulefile.
fn lua(m: &Module) -> String {
    let mut out = m.header("--");
    let help: String = m.help().iter().map(|l| format!("{l}\n")).collect();
    let _ = writeln!(out, "help({})", lua_str(&help));
    for line in m.whatis() {
        let _ = writeln!(out, "whatis({})", lua_str(&line));
    }
    let _ = writeln!(out, "conflict({})", lua_str(m.name));
    let _ = writeln!(
        out,
        "prepend_path(\"PATH\", {})",
        lua_str(&m.bin.to_string_lossy())
    );
    out
}

/// The Tcl modulefile (environment-modules 4/5; Lmod reads it too).
fn tcl(m: &Module) -> String {
    let mut out = format!("#%Module1.0\n{}", m.header("##"));
    out.push_str("proc ModulesHelp { } {\n");
    for line in m.help() {
        let _ = writeln!(out, "    puts stderr {}", tcl_str(&line));
    }
    out.push_str("}\n");
    for line in m.whatis() {
        let _ = writeln!(out, "module-whatis {}", tcl_str(&line));
    }
    let _ = writeln!(out, "conflict {}", tcl_str(m.name));
    let _ = writeln!(
        out,
        "prepend-path PATH {}",
        tcl_str(&m.bin.to_string_lossy())
    );
    out
}

/// A Lua string literal: `\`, `"` and control characters escaped (`\ddd`), bytes kept.
fn lua_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\{:03}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A Tcl double-quoted word: `\`, `"`, `$`, `[`, `]` escaped, so no substitution happens;
/// control characters as `\uXXXX`.
fn tcl_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' | '"' | '$' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Writes `files` (name, script) as executables into `DIR/bin`, built beside it and renamed
/// into place, so a reader sees the old set or the new one, never a part.
fn replace_dir(dir: &Path, files: &[(String, String)]) -> anyhow::Result<()> {
    let parent = dir.parent().unwrap_or(Path::new("/"));
    let base = dir.file_name().unwrap_or_default().to_string_lossy();
    let pid = std::process::id();
    let fresh = parent.join(format!(".{base}.new-{pid}"));
    let ctx = |p: &Path| format!("wrapper dir {}", p.display());
    let _ = std::fs::remove_dir_all(&fresh);
    let built = (|| -> anyhow::Result<()> {
        std::fs::create_dir_all(fresh.join("bin")).with_context(|| ctx(&fresh))?;
        for (name, script) in files {
            write_atomic(&fresh.join("bin").join(name), script.as_bytes(), 0o755)?;
        }
        // An existing set is swapped with the new one in one step (RENAME_EXCHANGE): a
        // wrapper that runs meanwhile finds the old set or the new one, never none.
        if dir.symlink_metadata().is_ok() {
            // The raw system call, not nix's or libc's wrapper: nix offers renameat2 on glibc
            // only, and the musl that Rust bundles for the static build (docs/admin-guide.md)
            // has no wrapper.
            let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes());
            let (from, to) = (c(&fresh)?, c(dir)?);
            // SAFETY: two NUL-terminated paths that live across the call.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_renameat2,
                    libc::AT_FDCWD,
                    from.as_ptr(),
                    libc::AT_FDCWD,
                    to.as_ptr(),
                    libc::RENAME_EXCHANGE,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error()).with_context(|| ctx(dir));
            }
        } else {
            std::fs::rename(&fresh, dir).with_context(|| ctx(dir))?;
        }
        Ok(())
    })();
    // After an exchange `fresh` holds the old set; after a failure, the partial new one.
    let _ = std::fs::remove_dir_all(&fresh);
    built
}

/// Writes `path` through a temporary file in the same directory and a rename.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let tmp: PathBuf = {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
    };
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::Error::new(e).context(format!("writing {}", path.display()))
    })
}

#[cfg(test)]
mod tests;
