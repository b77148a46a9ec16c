//! rsing started under the name `apptainer` or `singularity` (a symlink or copy first in PATH,
//! for job scripts that hard-code the command): the verbs rsing implements run as rsing's,
//! Apptainer's global flags are translated, and every other verb gets a one-line answer naming
//! the rsing equivalent or saying it is not supported.

use std::ffi::OsString;
use std::path::Path;

/// Verbs that mean the same in rsing.
const SAME: [&str; 15] = [
    "exec",
    "run",
    "shell",
    "pull",
    "build",
    "inspect",
    "run-help",
    "test",
    "cache",
    "registry",
    "sif",
    "help",
    "version",
    "completion",
    "overlay",
];

/// What to say for Apptainer verbs rsing does not have.
fn unsupported(verb: &str) -> Option<&'static str> {
    Some(match verb {
        "instance" => "instances are not supported by rsing; start the command with `rsing exec` (in the background if needed)",
        "oci" => "the OCI runtime commands are not supported by rsing; use `rsing exec` or `rsing run`",
        "key" | "sign" | "verify" | "keyserver" => "signing and verification are not supported by rsing (signatures in a SIF are ignored)",
        "remote" => "remotes are not supported by rsing; use `rsing registry login` for registry credentials",
        "push" | "delete" | "search" => "library and push commands are not supported by rsing",
        "plugin" | "capability" | "config" => "this administration command is not supported by rsing",
        "checkpoint" => "checkpointing is not supported by rsing",
        _ => return None,
    })
}

/// The program name rsing was started as (`apptainer`, `singularity`, `rsing`, ...).
fn program(args: &[OsString]) -> String {
    args.first()
        .and_then(|a| Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Rewrites an `apptainer ...`/`singularity ...` command line into rsing's, or says why it
/// cannot run. Any other program name passes through unchanged.
pub fn translate(mut args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    let name = program(&args);
    if name != "apptainer" && name != "singularity" {
        return Ok(args);
    }
    // Global flags before the verb: -d/--debug, -s/--silent, -q/--quiet, -v/--verbose.
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy().into_owned();
        if !a.starts_with('-') {
            break;
        }
        let new = match a.as_str() {
            "-d" | "--debug" => "-vv",
            "-s" | "--silent" => "-q",
            "-c" | "--config" => {
                args[i] = OsString::from("--config");
                i += 2;
                continue;
            }
            _ => a.as_str(),
        };
        args[i] = OsString::from(new);
        i += 1;
    }
    let Some(verb) = args.get(i).map(|v| v.to_string_lossy().into_owned()) else {
        return Ok(args);
    };
    if verb == "completion" {
        args[i] = OsString::from("completions");
        return Ok(args);
    }
    if SAME.contains(&verb.as_str()) {
        return Ok(args);
    }
    match unsupported(&verb) {
        Some(why) => Err(format!("{name} {verb}: {why}")),
        None => Err(format!(
            "{name} {verb}: unknown command (rsing runs as {name} for: {})",
            SAME.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn apptainer_names() {
        let same = os(&["/usr/bin/apptainer", "exec", "img", "true"]);
        assert_eq!(translate(same.clone()).unwrap(), same);
        let debug = translate(os(&["singularity", "--debug", "run", "img"])).unwrap();
        assert_eq!(debug[1], "-vv");
        let err = translate(os(&["apptainer", "instance", "start", "x"])).unwrap_err();
        assert!(
            err.contains("apptainer instance") && err.contains("rsing exec"),
            "{err}"
        );
        let err = translate(os(&["apptainer", "frobnicate"])).unwrap_err();
        assert!(err.contains("unknown command"), "{err}");
        // `apptainer overlay create [-s N] [-S] [-f] [--create-dir D] FILE|IMG.sif` is rsing's.
        let create = os(&[
            "apptainer",
            "overlay",
            "create",
            "-f",
            "-s",
            "64",
            "img.sif",
        ]);
        assert_eq!(translate(create.clone()).unwrap(), create);
        let rsing = os(&["rsing", "instance"]);
        assert_eq!(translate(rsing.clone()).unwrap(), rsing);
    }
}
