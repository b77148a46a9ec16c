//! The container's environment, composed with Apptainer's precedence.
//!
//! From weakest to strongest: host variables (only those the image does not set; never HOME,
//! PATH, LD_LIBRARY_PATH or rsing's own settings), the image environment (OCI `Env`, then the
//! image's `/.singularity.d/env/*.sh` scripts), rsing's runtime variables (HOME,
//! RSING_CONTAINER, RSING_NAME), then the user's `--env-file`, `RSINGENV_*` and `--env`.
//!
//! Apptainer images keep their environment in shell scripts, which only a shell can evaluate.
//! When an image has such scripts, the command is started through `/bin/sh -c SCRIPT`, where
//! SCRIPT sources them and then applies the stronger layers with `export`; otherwise the final
//! environment is computed here and the command is executed directly (no shell, faster start).

/// Default PATH when neither the image nor the user sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host variables that never cross into the container.
fn host_var_blocked(name: &str) -> bool {
    matches!(
        name,
        "HOME" | "PATH" | "LD_LIBRARY_PATH" | "PS1" | "SHLVL" | "PWD" | "OLDPWD"
    ) || name.starts_with("RSING_")
        || name.starts_with("RSINGENV_")
        || name.starts_with("APPTAINER")
        || name.starts_with("SINGULARITY")
}

/// Host variables that survive `--cleanenv` (as in Apptainer).
fn kept_by_cleanenv(name: &str) -> bool {
    matches!(
        name.to_ascii_lowercase().as_str(),
        "term" | "http_proxy" | "https_proxy" | "no_proxy" | "all_proxy" | "ftp_proxy"
    )
}

/// Everything that contributes to the container's environment.
#[derive(Debug, Clone, Default)]
pub struct EnvLayers {
    pub host: Vec<(String, String)>,
    pub cleanenv: bool,
    /// OCI `Env` of the image (from its SIF metadata), in order.
    pub image: Vec<(String, String)>,
    /// Paths of the image's environment scripts, sourced in this order.
    pub image_scripts: Vec<String>,
    /// Set by rsing itself: HOME, RSING_CONTAINER, RSING_NAME, PS1 for `shell`.
    pub runtime: Vec<(String, String)>,
    /// `--env-file`, `SINGULARITYENV_*`, `APPTAINERENV_*`, `RSINGENV_*`, `--env`, in
    /// increasing strength. `PREPEND_PATH` and `APPEND_PATH` entries extend PATH instead.
    pub user: Vec<(String, String)>,
    /// Evaluate user values once in the container's shell (`$PATH`, `${X}`, `$(cmd)`), as
    /// Apptainer does unless `--no-eval`.
    pub eval: bool,
    /// The image has `/bin/sh` (needed to evaluate user values).
    pub shell: bool,
    /// Directories rsing puts before PATH after the image's own (an `--app`'s `bin`), after
    /// the user's `PREPEND_PATH`.
    pub path_prefix: Vec<String>,
}

/// User keys that extend PATH rather than set a variable (Apptainer's names).
const PREPEND: &str = "PREPEND_PATH";
const APPEND: &str = "APPEND_PATH";

/// True when evaluating `value` in a shell could change it.
fn needs_eval(value: &str) -> bool {
    value.contains('$') || value.contains('`')
}

/// Escapes `value` for the inside of a double-quoted shell word, leaving `$` and backquotes
/// active: what `eval "export K=\"...\""` then expands exactly once.
fn for_eval(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// How to start the command with its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl EnvLayers {
    fn host_passed(&self) -> impl Iterator<Item = &(String, String)> {
        self.host
            .iter()
            .filter(move |(k, _)| !host_var_blocked(k) && (!self.cleanenv || kept_by_cleanenv(k)))
    }

    fn cleanenv_defaults(&self) -> Vec<(String, String)> {
        if self.cleanenv {
            vec![("LANG".to_string(), "C".to_string())]
        } else {
            Vec::new()
        }
    }

    /// The final environment, computed without a shell (images without env scripts).
    pub fn compose(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = Vec::new();
        let layers = [
            self.host_passed().cloned().collect::<Vec<_>>(),
            self.cleanenv_defaults(),
            self.image.clone(),
        ];
        for layer in &layers {
            for (k, v) in layer {
                set(&mut env, k, v);
            }
        }
        match self.image.iter().rev().find(|(k, _)| k == "PATH") {
            // Apptainer sources the OCI `Env` (10-docker2singularity.sh) and then appends the
            // default directories the image's PATH lacks.
            Some((_, path)) => set(&mut env, "PATH", &with_default_dirs(path)),
            None if !env.iter().any(|(k, _)| k == "PATH") => set(&mut env, "PATH", DEFAULT_PATH),
            None => {}
        }
        for (k, v) in self.runtime.iter().chain(self.user_vars()) {
            set(&mut env, k, v);
        }
        let path = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let (pre, post) = self.path_edits();
        set(&mut env, "PATH", &format!("{pre}{path}{post}"));
        env
    }

    /// User variables other than PREPEND_PATH/APPEND_PATH.
    fn user_vars(&self) -> impl Iterator<Item = &(String, String)> {
        self.user
            .iter()
            .filter(|(k, _)| k != PREPEND && k != APPEND)
    }

    /// What goes before and after PATH: `PREPEND_PATH:` and `:APPEND_PATH` (the strongest of
    /// each, as later user entries win).
    fn path_edits(&self) -> (String, String) {
        let last = |name: &str| {
            self.user
                .iter()
                .rev()
                .find(|(k, v)| k == name && !v.is_empty())
                .map(|(_, v)| v.clone())
        };
        let pre: Vec<String> = last(PREPEND)
            .into_iter()
            .chain(self.path_prefix.iter().cloned())
            .collect();
        (
            pre.iter().map(|p| format!("{p}:")).collect(),
            last(APPEND).map(|v| format!(":{v}")).unwrap_or_default(),
        )
    }

    /// True when the command must start through the image's shell to evaluate user values.
    fn must_eval(&self) -> bool {
        self.eval && self.shell && self.user.iter().any(|(_, v)| needs_eval(v))
    }

    /// How to run `argv`: directly with [`compose`](Self::compose)'s environment, or through
    /// the image's `/bin/sh` when the image has environment scripts to source.
    pub fn launch(&self, argv: Vec<String>) -> Launch {
        if self.image_scripts.is_empty() && !self.must_eval() {
            return Launch {
                argv,
                env: self.compose(),
            };
        }
        // The shell starts with the image's OCI env and rsing's variables only: the scripts
        // then see no host values, so an image `export X=...` (or `${X:-default}`) is never
        // shadowed by a same-name host variable, as in Apptainer. The stronger layers and the
        // host fill-ins travel as prefixed variables, not in the script text: argv is world-
        // readable in /proc, the environment is not.
        let mut env: Vec<(String, String)> = vec![("PATH".to_string(), DEFAULT_PATH.to_string())];
        for (k, v) in self.image.iter().chain(self.runtime.iter()) {
            set(&mut env, k, v);
        }
        let mut script = String::new();
        for path in &self.image_scripts {
            script.push_str(&format!(". {}\n", quote(path)));
            if crate::contract::paths::is_oci_env_script(path) {
                script.push_str(&fix_path_snippet());
            }
        }
        let mut carried = Vec::new();
        let user: Vec<(bool, &(String, String))> = self
            .runtime
            .iter()
            .map(|kv| (false, kv))
            .chain(
                self.user_vars()
                    .map(|kv| (self.eval && needs_eval(&kv.1), kv)),
            )
            .collect();
        for (eval, (k, v)) in user {
            if valid_name(k) {
                let name = format!("{USER_PREFIX}{k}");
                if eval {
                    set(&mut env, &name, &for_eval(v));
                    script.push_str(&format!("eval \"export {k}=\\\"${name}\\\"\"\n"));
                } else {
                    set(&mut env, &name, v);
                    script.push_str(&format!("export {k}=\"${name}\"\n"));
                }
                carried.push(name);
            }
        }
        let (pre, post) = self.path_edits();
        if !pre.is_empty() || !post.is_empty() {
            set(&mut env, "RSING_SET_PREPEND", &pre);
            set(&mut env, "RSING_SET_APPEND", &post);
            script.push_str(
                "export PATH=\"${RSING_SET_PREPEND}${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}${RSING_SET_APPEND}\"\n",
            );
            carried.extend([
                "RSING_SET_PREPEND".to_string(),
                "RSING_SET_APPEND".to_string(),
            ]);
        }
        for (k, v) in self.host_passed().chain(self.cleanenv_defaults().iter()) {
            if valid_name(k) {
                set(&mut env, &format!("{HOST_PREFIX}{k}"), v);
                script.push_str(&format!(
                    "[ -n \"${{{k}+x}}\" ] || export {k}=\"${HOST_PREFIX}{k}\"\n"
                ));
                carried.push(format!("{HOST_PREFIX}{k}"));
            }
        }
        carried.sort();
        carried.dedup();
        for chunk in carried.chunks(32) {
            script.push_str(&format!("unset {}\n", chunk.join(" ")));
        }
        script.push_str(&format!(
            "[ -n \"${{PATH+x}}\" ] || export PATH={}\n",
            quote(DEFAULT_PATH)
        ));
        script.push_str(
            "command -v \"$1\" >/dev/null 2>&1 || { echo \"rsing: error: command not found in the image: $1\" >&2; exit 127; }\n",
        );
        script.push_str("exec \"$@\"\n");
        let mut full = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            script,
            "rsing-env".to_string(),
        ];
        full.extend(argv);
        Launch { argv: full, env }
    }
}

/// `path` followed by the directories of [`DEFAULT_PATH`] it does not name, as Apptainer's
/// `fixpath` does after sourcing an image's OCI `Env`.
pub fn with_default_dirs(path: &str) -> String {
    let mut dirs: Vec<&str> = if path.is_empty() {
        Vec::new()
    } else {
        path.split(':').collect()
    };
    for d in DEFAULT_PATH.split(':') {
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs.join(":")
}

/// [`with_default_dirs`] in sh, run in the launch script after an OCI env script.
fn fix_path_snippet() -> String {
    format!(
        "for __rsing_d in {}; do case \":$PATH:\" in *\":$__rsing_d:\"*) ;; *) PATH=\"${{PATH:+$PATH:}}$__rsing_d\" ;; esac; done; unset __rsing_d; export PATH\n",
        DEFAULT_PATH.replace(':', " ")
    )
}

fn set(env: &mut Vec<(String, String)>, key: &str, value: &str) {
    if let Some(slot) = env.iter_mut().find(|(k, _)| k == key) {
        slot.1 = value.to_string();
    } else {
        env.push((key.to_string(), value.to_string()));
    }
}

/// True for names a POSIX shell can `export`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

const USER_PREFIX: &str = "RSING_SET_";
const HOST_PREFIX: &str = "RSING_HOST_";

/// Single-quotes `s` for a POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Parses `K=V` pairs as given to `--env` or read from `--env-file` (comments and blank lines
/// skipped; one level of matching quotes around V removed; `export ` prefix allowed).
pub fn parse_assignment(text: &str) -> Option<(String, String)> {
    let text = text.trim();
    let text = text.strip_prefix("export ").unwrap_or(text).trim_start();
    let (k, v) = text.split_once('=')?;
    let k = k.trim();
    if !valid_name(k) {
        return None;
    }
    let v = v.trim();
    let v = if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        &v[1..v.len() - 1]
    } else {
        v
    };
    Some((k.to_string(), v.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
        env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn precedence_without_scripts() {
        let layers = EnvLayers {
            host: pairs(&[
                ("FOO", "host"),
                ("IMG", "host"),
                ("PATH", "/host/bin"),
                ("LD_LIBRARY_PATH", "/h"),
            ]),
            image: pairs(&[("IMG", "image"), ("U", "image")]),
            runtime: pairs(&[("HOME", "/home/a")]),
            user: pairs(&[("U", "user")]),
            ..Default::default()
        };
        let env = layers.compose();
        assert_eq!(get(&env, "FOO"), Some("host"));
        assert_eq!(get(&env, "IMG"), Some("image"));
        assert_eq!(get(&env, "U"), Some("user"));
        assert_eq!(get(&env, "PATH"), Some(DEFAULT_PATH));
        assert_eq!(get(&env, "LD_LIBRARY_PATH"), None);
        assert_eq!(get(&env, "HOME"), Some("/home/a"));
    }

    #[test]
    fn cleanenv_keeps_term_only() {
        let layers = EnvLayers {
            host: pairs(&[("FOO", "host"), ("TERM", "xterm")]),
            cleanenv: true,
            ..Default::default()
        };
        let env = layers.compose();
        assert_eq!(get(&env, "FOO"), None);
        assert_eq!(get(&env, "TERM"), Some("xterm"));
        assert_eq!(get(&env, "LANG"), Some("C"));
    }

    #[test]
    fn scripts_go_through_sh() {
        let layers = EnvLayers {
            host: pairs(&[("FOO", "it's")]),
            image_scripts: vec!["/.singularity.d/env/90-environment.sh".into()],
            ..Default::default()
        };
        let launch = layers.launch(vec!["id".into()]);
        assert_eq!(launch.argv[0], "/bin/sh");
        assert!(launch.argv[2].contains(". '/.singularity.d/env/90-environment.sh'"));
        assert!(!launch.argv[2].contains("it's"));
        assert_eq!(launch.argv[4], "id");
        assert_eq!(get(&launch.env, "FOO"), None);
        assert_eq!(get(&launch.env, "RSING_HOST_FOO"), Some("it's"));
    }

    #[test]
    fn user_values_are_evaluated_once_unless_no_eval() {
        let mut layers = EnvLayers {
            user: pairs(&[("P", "$PATH:/x \"q\""), ("L", "plain")]),
            eval: true,
            shell: true,
            ..Default::default()
        };
        let launch = layers.launch(vec!["id".into()]);
        assert_eq!(launch.argv[0], "/bin/sh");
        assert!(launch.argv[2].contains("eval \"export P=\\\"$RSING_SET_P\\\"\""));
        assert_eq!(get(&launch.env, "RSING_SET_P"), Some("$PATH:/x \\\"q\\\""));
        assert!(launch.argv[2].contains("export L=\"$RSING_SET_L\""));
        layers.eval = false;
        let launch = layers.launch(vec!["id".into()]);
        assert_eq!(launch.argv, vec!["id".to_string()]);
        assert_eq!(get(&launch.env, "P"), Some("$PATH:/x \"q\""));
    }

    #[test]
    fn prepend_and_append_path() {
        let layers = EnvLayers {
            user: pairs(&[("PREPEND_PATH", "/pre"), ("APPEND_PATH", "/post")]),
            ..Default::default()
        };
        let env = layers.compose();
        assert_eq!(
            get(&env, "PATH"),
            Some(format!("/pre:{DEFAULT_PATH}:/post").as_str())
        );
        assert_eq!(get(&env, "PREPEND_PATH"), None);
    }

    #[test]
    fn oci_path_gets_the_missing_default_dirs() {
        assert_eq!(
            with_default_dirs("/opt/bin:/usr/bin:/bin"),
            "/opt/bin:/usr/bin:/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin"
        );
        assert_eq!(with_default_dirs(""), DEFAULT_PATH);
        assert_eq!(with_default_dirs(DEFAULT_PATH), DEFAULT_PATH);
        let layers = EnvLayers {
            image: pairs(&[("PATH", "/opt/bin:/bin")]),
            ..Default::default()
        };
        assert_eq!(
            get(&layers.compose(), "PATH"),
            Some("/opt/bin:/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin")
        );
        // The sh version gives the same answer.
        for path in ["/opt/bin:/usr/bin:/bin", "", DEFAULT_PATH] {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(format!("{}printf %s \"$PATH\"", fix_path_snippet()))
                .env("PATH", path)
                .output()
                .expect("sh");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                with_default_dirs(path)
            );
        }
    }

    #[test]
    fn parses_assignments() {
        assert_eq!(parse_assignment("A=b"), Some(("A".into(), "b".into())));
        assert_eq!(
            parse_assignment("export A=\"b c\""),
            Some(("A".into(), "b c".into()))
        );
        assert_eq!(parse_assignment("1A=b"), None);
        assert_eq!(parse_assignment("noequals"), None);
    }
}
