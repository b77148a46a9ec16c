//! The `/.singularity.d` files a definition file's sections become, as Apptainer lays them
//! out: `env/90-environment.sh` (%environment), `env/91-environment.sh`
//! (`$APPTAINER_ENVIRONMENT` of %post), `runscript`, `startscript`, `test`, `runscript.help`,
//! `labels.json` and `Singularity` (the definition file). Apps go under `/scif/apps/NAME`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::deffile::Stage;
use super::{io, Result};
use crate::contract::{self, labels_json, paths};
use crate::convert::singularity_d::Generated;

/// `%post`'s `$APPTAINER_LABELS` file (`KEY VALUE` lines), merged into labels.json.
pub const BUILD_LABELS: &str = "/.build.labels";
/// `%post`'s `$APPTAINER_ENVIRONMENT`.
pub const POST_ENVIRONMENT: &str = paths::ENV_POST;

const ENV_HEADER: &str = "#!/bin/sh\n# Custom environment shell code should follow\n\n";

fn write(root: &Path, rel: &str, text: &str, mode: u32) -> Result<()> {
    let path = root.join(rel.trim_start_matches('/'));
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    // A base image may have the file as a symlink (Apptainer's own images do for some).
    if path
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink())
    {
        let _ = fs::remove_file(&path);
    }
    fs::write(&path, text).map_err(io(format!("writing {rel}")))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(mode))
        .map_err(io(format!("writing {rel}")))
}

/// Directories and files every image has before any step runs.
pub fn prepare(root: &Path) -> Result<()> {
    for dir in paths::ENSURED_DIRS {
        let path = root.join(dir.trim_start_matches('/'));
        if path.symlink_metadata().is_err() {
            fs::create_dir_all(&path).map_err(io(format!("creating {dir}")))?;
            if dir.ends_with("tmp") {
                let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o1777));
            }
        }
    }
    for file in paths::ENSURED_FILES {
        let path = root.join(file.trim_start_matches('/'));
        if path.symlink_metadata().is_err() {
            fs::write(&path, "").map_err(io(format!("creating {file}")))?;
        }
    }
    for dir in [paths::ENV_DIR, paths::ACTIONS_DIR, paths::LIBS_DIR] {
        fs::create_dir_all(root.join(&dir[1..])).map_err(io(format!("creating {dir}")))?;
    }
    let env = root.join(&POST_ENVIRONMENT[1..]);
    if env.symlink_metadata().is_err() {
        write(root, POST_ENVIRONMENT, ENV_HEADER, 0o755)?;
    }
    Ok(())
}

/// Writes the metadata of `stage` (the last one) and the definition file text.
pub fn finish(
    root: &Path,
    stage: &Stage,
    deffile: &str,
    build_labels: &[(String, String)],
) -> Result<()> {
    if let Some(env) = &stage.environment {
        write(
            root,
            paths::ENV_ENVIRONMENT,
            &format!("{ENV_HEADER}{env}"),
            0o755,
        )?;
    }
    if let Some(run) = &stage.runscript {
        write(
            root,
            contract::RUNSCRIPT,
            &format!("#!/bin/sh\n\n{run}"),
            0o755,
        )?;
    }
    if let Some(start) = &stage.startscript {
        write(
            root,
            contract::STARTSCRIPT,
            &format!("#!/bin/sh\n\n{start}"),
            0o755,
        )?;
    }
    if let Some(test) = &stage.test {
        let shell = test.interpreter.as_deref().unwrap_or("/bin/sh");
        write(
            root,
            contract::TEST,
            &format!("#!{shell}\n\n{}", test.body),
            0o755,
        )?;
    }
    if let Some(help) = &stage.help {
        write(root, paths::RUNSCRIPT_HELP, help, 0o644)?;
    }
    write(root, paths::DEFFILE, deffile, 0o644)?;
    let mut labels = read_labels(root);
    let from_post = fs::read_to_string(root.join(&BUILD_LABELS[1..])).unwrap_or_default();
    for line in from_post.lines() {
        if let Some((k, v)) = line.trim().split_once(char::is_whitespace) {
            labels.insert(k.to_string(), v.trim().to_string());
        }
    }
    let _ = fs::remove_file(root.join(&BUILD_LABELS[1..]));
    for (k, v) in stage.labels.iter().chain(build_labels) {
        labels.insert(k.clone(), v.clone());
    }
    write(root, paths::LABELS, &labels_json(&labels), 0o644)?;
    for (link, target) in paths::LEGACY_LINKS {
        let path = root.join(&link[1..]);
        if path.symlink_metadata().is_err() {
            let _ = std::os::unix::fs::symlink(target, &path);
        }
    }
    apps(root, stage)
}

fn read_labels(root: &Path) -> BTreeMap<String, String> {
    fs::read(root.join(&paths::LABELS[1..]))
        .ok()
        .and_then(|b| contract::parse_labels(&b))
        .unwrap_or_default()
}

/// SCIF layout: `/scif/apps/NAME/{scif/runscript,scif/env/90-environment.sh,scif/labels.json,
/// scif/runscript.help,scif/test}`, plus `bin` and `lib` directories.
fn apps(root: &Path, stage: &Stage) -> Result<()> {
    for (name, app) in &stage.apps {
        let base = format!("{}/{name}", paths::SCIF_APPS);
        for dir in ["bin", "lib", "scif/env"] {
            fs::create_dir_all(root.join(format!("{}/{dir}", &base[1..])))
                .map_err(io(format!("creating {base}/{dir}")))?;
        }
        if let Some(run) = &app.run {
            write(
                root,
                &format!("{base}/scif/runscript"),
                &format!("#!/bin/sh\n\n{run}"),
                0o755,
            )?;
        }
        if let Some(env) = &app.env {
            write(
                root,
                &format!("{base}/scif/env/90-environment.sh"),
                &format!("{ENV_HEADER}{env}"),
                0o755,
            )?;
        }
        if let Some(help) = &app.help {
            write(root, &format!("{base}/scif/runscript.help"), help, 0o644)?;
        }
        if let Some(test) = &app.test {
            write(
                root,
                &format!("{base}/scif/test"),
                &format!("#!/bin/sh\n\n{test}"),
                0o755,
            )?;
        }
        let labels: BTreeMap<String, String> = app.labels.iter().cloned().collect();
        write(
            root,
            &format!("{base}/scif/labels.json"),
            &labels_json(&labels),
            0o644,
        )?;
    }
    Ok(())
}

/// Writes generated `/.singularity.d` items (from an image config) into `root`.
pub fn write_generated(root: &Path, items: &[Generated]) -> Result<()> {
    for item in items {
        match item {
            Generated::Dir { path } => {
                fs::create_dir_all(root.join(&path[1..])).map_err(io(format!("creating {path}")))?
            }
            Generated::File {
                path,
                mode,
                content,
            } => write(
                root,
                path,
                &String::from_utf8_lossy(content),
                u32::from(*mode),
            )?,
            Generated::Symlink { path, target } => {
                let p = root.join(&path[1..]);
                if p.symlink_metadata().is_err() {
                    std::os::unix::fs::symlink(target, &p)
                        .map_err(io(format!("creating {path}")))?;
                }
            }
        }
    }
    Ok(())
}
