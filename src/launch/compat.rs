//! Apptainer's and Singularity's names for rsing's settings, so that job scripts, modulefiles
//! and workflow profiles written for them run unchanged (docs/apptainer-compat.md has the
//! table). For every setting the `RSING_*` name wins, then `APPTAINER_*`, then
//! `SINGULARITY_*` (Apptainer's own order between its two names).

use anyhow::bail;

use super::options::UserOptions;

/// Prefixes of the variables that name one setting, strongest first.
const PREFIXES: [&str; 3] = ["RSING_", "APPTAINER_", "SINGULARITY_"];

fn lookup<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// The first of `RSING_<name>`, `APPTAINER_<name>`, `SINGULARITY_<name>` that is set (and not
/// empty), as (variable, value).
pub fn setting(env: &[(String, String)], names: &[&str]) -> Option<(String, String)> {
    for prefix in PREFIXES {
        for name in names {
            let key = format!("{prefix}{name}");
            if let Some(v) = lookup(env, &key).filter(|v| !v.is_empty()) {
                return Some((key, v.to_string()));
            }
        }
    }
    None
}

/// A boolean as Go's strconv.ParseBool reads it (Apptainer's flag variables), plus yes/no.
fn truth(var: &str, value: &str) -> anyhow::Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "yes" | "y" | "on" => Ok(true),
        "0" | "f" | "false" | "no" | "n" | "off" => Ok(false),
        _ => bail!("{var}='{value}': expected true or false"),
    }
}

/// Bind lists from the environment: `RSING_BIND`, else `APPTAINER_BIND`/`APPTAINER_BINDPATH`,
/// else `SINGULARITY_BIND`/`SINGULARITY_BINDPATH`.
pub fn bind_list(env: &[(String, String)]) -> Option<String> {
    setting(env, &["BIND", "BINDPATH"]).map(|(_, v)| v)
}

/// Sets the action flags the command line left unset from their variables (`APPTAINER_CONTAIN=1`
/// is `--contain`, `APPTAINER_HOME=/x` is `--home /x`, ...). Returns notes for the user.
pub fn apply_flag_variables(
    args: &mut UserOptions,
    env: &[(String, String)],
) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    let flags: [(&str, &mut bool); 9] = [
        ("CLEANENV", &mut args.cleanenv),
        ("CONTAIN", &mut args.contain),
        ("CONTAINALL", &mut args.containall),
        ("NV", &mut args.nv),
        ("NVCCLI", &mut args.nvccli),
        ("NO_HOME", &mut args.no_home),
        ("NO_EVAL", &mut args.no_eval),
        ("WRITABLE_TMPFS", &mut args.writable_tmpfs),
        ("FAKEROOT", &mut args.fakeroot),
    ];
    for (name, flag) in flags {
        if !*flag {
            if let Some((var, value)) = setting(env, &[name]) {
                *flag = truth(&var, &value)?;
            }
        }
    }
    if args.home.is_none() {
        args.home = setting(env, &["HOME"]).map(|(_, v)| v);
    }
    if args.pwd.is_none() {
        args.pwd = setting(env, &["PWD", "TARGET_PWD"]).map(|(_, v)| v);
    }
    // --writable: commands::overlay (a writable sandbox; an error naming --writable-tmpfs and
    // --overlay for an image file).
    if args.nvccli {
        args.nv = true;
        notes.push("--nvccli is treated as --nv: rsing injects the driver itself".to_string());
    }
    Ok(notes)
}

/// Variables the user sets for the container through the host environment, weakest first:
/// `SINGULARITYENV_*`, `APPTAINERENV_*`, `RSINGENV_*` (the later one wins for a name).
pub fn user_variables(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for prefix in ["SINGULARITYENV_", "APPTAINERENV_", "RSINGENV_"] {
        for (k, v) in env {
            if let Some(name) = k.strip_prefix(prefix) {
                if crate::runtime::environ::valid_name(name) {
                    out.push((name.to_string(), v.clone()));
                }
            }
        }
    }
    out
}

/// Splits one `--env` argument at commas that start another `NAME=` (Apptainer's comma lists),
/// keeping commas inside a value (`--env LIST=a,b` is one variable).
pub fn split_env_list(arg: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in arg.split(',') {
        let starts_assignment = part
            .split_once('=')
            .is_some_and(|(k, _)| crate::runtime::environ::valid_name(k.trim()));
        match out.last_mut() {
            Some(last) if !starts_assignment => {
                last.push(',');
                last.push_str(part);
            }
            _ => out.push(part.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rsing_names_win() {
        let e = env(&[("APPTAINER_BIND", "/a"), ("RSING_BIND", "/r")]);
        assert_eq!(bind_list(&e).as_deref(), Some("/r"));
        let e = env(&[("SINGULARITY_BIND", "/s"), ("APPTAINER_BINDPATH", "/a")]);
        assert_eq!(bind_list(&e).as_deref(), Some("/a"));
        let e = env(&[
            ("SINGULARITYENV_X", "s"),
            ("APPTAINERENV_X", "a"),
            ("RSINGENV_Y", "r"),
        ]);
        let vars = user_variables(&e);
        assert_eq!(vars.last().unwrap(), &("Y".to_string(), "r".to_string()));
        assert_eq!(vars[1], ("X".to_string(), "a".to_string()));
    }

    #[test]
    fn flag_variables() {
        let mut args = UserOptions::default();
        let e = env(&[
            ("APPTAINER_CONTAIN", "1"),
            ("SINGULARITY_CLEANENV", "true"),
            ("APPTAINER_HOME", "/h"),
            ("APPTAINER_NV", "false"),
        ]);
        apply_flag_variables(&mut args, &e).unwrap();
        assert!(args.contain && args.cleanenv && !args.nv);
        assert_eq!(args.home.as_deref(), Some("/h"));
        let bad = env(&[("APPTAINER_CONTAIN", "maybe")]);
        let err = apply_flag_variables(&mut UserOptions::default(), &bad).unwrap_err();
        assert!(err.to_string().contains("APPTAINER_CONTAIN"));
    }

    #[test]
    fn env_comma_lists() {
        assert_eq!(split_env_list("A=1,B=2"), vec!["A=1", "B=2"]);
        assert_eq!(split_env_list("L=a,b,C=3"), vec!["L=a,b", "C=3"]);
        assert_eq!(split_env_list("P=$PATH:/x"), vec!["P=$PATH:/x"]);
    }
}
