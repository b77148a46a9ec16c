//! Paths inside a container image that Apptainer (and so rsing) give a meaning to. All are
//! absolute container paths; writers that work on a host directory strip the leading `/`.

/// The metadata directory.
pub const META_DIR: &str = "/.singularity.d";
/// Environment scripts, sourced in name order before the command runs.
pub const ENV_DIR: &str = "/.singularity.d/env";
/// Libraries injected at run time (`--nv`); Apptainer's `99-base.sh` puts it on
/// `LD_LIBRARY_PATH`.
pub const LIBS_DIR: &str = "/.singularity.d/libs";
/// Apptainer's action scripts (exec, run, shell…); rsing creates the directory only.
pub const ACTIONS_DIR: &str = "/.singularity.d/actions";

/// What `run` runs (`%runscript`, or generated from the OCI entrypoint and command).
pub const RUNSCRIPT: &str = "/.singularity.d/runscript";
/// What `test` runs (`%test`).
pub const TEST: &str = "/.singularity.d/test";
/// What `instance start` runs (`%startscript`).
pub const STARTSCRIPT: &str = "/.singularity.d/startscript";
/// The runscript's help text (`%help`), shown by `run-help`.
pub const RUNSCRIPT_HELP: &str = "/.singularity.d/runscript.help";
/// The labels, a JSON object of strings (see [`super::labels_json`]).
pub const LABELS: &str = "/.singularity.d/labels.json";
/// The definition file the image was built from.
pub const DEFFILE: &str = "/.singularity.d/Singularity";

/// `01-base.sh`: an empty hook Apptainer creates for site code.
pub const ENV_BASE: &str = "/.singularity.d/env/01-base.sh";
/// `10-docker2singularity.sh`: the OCI config's `Env`.
pub const ENV_DOCKER: &str = "/.singularity.d/env/10-docker2singularity.sh";
/// `90-environment.sh`: the definition file's `%environment`.
pub const ENV_ENVIRONMENT: &str = "/.singularity.d/env/90-environment.sh";
/// `91-environment.sh`: what `%post` wrote to `$APPTAINER_ENVIRONMENT`.
pub const ENV_POST: &str = "/.singularity.d/env/91-environment.sh";
/// `99-base.sh`: puts [`LIBS_DIR`] on `LD_LIBRARY_PATH`.
pub const ENV_LIBS_BASE: &str = "/.singularity.d/env/99-base.sh";

/// File names of the env scripts that hold an image's OCI `Env`: rsing's and Apptainer's, and
/// Singularity 2's. After sourcing them Apptainer appends the default `PATH` directories.
pub const OCI_ENV_SCRIPT_NAMES: &[&str] = &["10-docker2singularity.sh", "10-docker.sh"];
/// File name of [`ENV_LIBS_BASE`].
pub const LIBS_BASE_SCRIPT_NAME: &str = "99-base.sh";

/// Legacy top-level links (Singularity 2 images have them): (link path, relative target).
pub const LEGACY_LINKS: &[(&str, &str)] = &[
    ("/singularity", ".singularity.d/runscript"),
    ("/environment", ".singularity.d/env/90-environment.sh"),
];

/// Directories every image gets (bind targets of the runtime), created when the image lacks
/// them; paths the image already has are left alone.
pub const ENSURED_DIRS: &[&str] = &[
    "/dev", "/proc", "/sys", "/root", "/home", "/tmp", "/var/tmp", "/etc", "/mnt",
];

/// Empty files the runtime binds over (Apptainer creates them too).
pub const ENSURED_FILES: &[&str] = &["/etc/hosts", "/etc/resolv.conf"];

/// Where SCIF apps (`%app*` sections) live: `/scif/apps/NAME/scif/{runscript,env,...}`.
pub const SCIF_APPS: &str = "/scif/apps";

/// Whether env script `path` holds an image's OCI `Env` (see [`OCI_ENV_SCRIPT_NAMES`]).
pub fn is_oci_env_script(path: &str) -> bool {
    OCI_ENV_SCRIPT_NAMES.iter().any(|name| {
        path.strip_suffix(name)
            .is_some_and(|dir| dir.ends_with('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_paths_are_under_the_metadata_directory() {
        for path in [
            ENV_DIR,
            LIBS_DIR,
            ACTIONS_DIR,
            RUNSCRIPT,
            TEST,
            STARTSCRIPT,
            RUNSCRIPT_HELP,
            LABELS,
            DEFFILE,
        ] {
            assert_eq!(path.rsplit_once('/').unwrap().0, META_DIR, "{path}");
        }
        for path in [
            ENV_BASE,
            ENV_DOCKER,
            ENV_ENVIRONMENT,
            ENV_POST,
            ENV_LIBS_BASE,
        ] {
            assert_eq!(path.rsplit_once('/').unwrap().0, ENV_DIR, "{path}");
        }
        assert!(ENV_LIBS_BASE.ends_with(LIBS_BASE_SCRIPT_NAME));
        assert!(ENV_DOCKER.ends_with(OCI_ENV_SCRIPT_NAMES[0]));
        for (link, target) in LEGACY_LINKS {
            assert!(link.starts_with('/') && !target.starts_with('/'));
            assert!(target.starts_with(&META_DIR[1..]));
        }
    }

    #[test]
    fn oci_env_scripts_are_recognised_by_file_name() {
        assert!(is_oci_env_script(ENV_DOCKER));
        assert!(is_oci_env_script("/.singularity.d/env/10-docker.sh"));
        assert!(!is_oci_env_script(ENV_ENVIRONMENT));
        assert!(!is_oci_env_script("/x/my10-docker.sh"));
    }
}
