//! The container's environment, as layers that `runtime::environ` composes.

use anyhow::{bail, Context};

use super::command::Action;
use super::compat;
use super::UserOptions;
use crate::image::OpenedImage;
use crate::runtime::environ::{self, EnvLayers};
use crate::runtime::host::HostFacts;
use crate::runtime::plan;
use crate::tree::{NodeKind, Tree};

use super::command::is_kind;
use crate::contract::ENV_DIR;

/// The layers of the container's environment: host, image (OCI Env and env scripts), rsing's
/// own variables, the user's (`--env-file`, the `*ENV_` variables, `--env`).
pub(super) fn layers(
    args: &UserOptions,
    options: &plan::Options,
    host: &HostFacts,
    opened: &OpenedImage,
    tree: &dyn Tree,
    plan: &plan::Plan,
    action: &Action,
) -> anyhow::Result<EnvLayers> {
    let image: Vec<(String, String)> = opened
        .oci_config
        .as_ref()
        .and_then(|c| c.env.clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let mut image_scripts: Vec<String> = Vec::new();
    if is_kind(tree, ENV_DIR, NodeKind::Dir) && is_kind(tree, "/bin/sh", NodeKind::File) {
        let mut names = tree.list_dir(ENV_DIR.as_bytes()).unwrap_or_default();
        names.sort();
        image_scripts = names
            .into_iter()
            .filter_map(|n| String::from_utf8(n).ok())
            .filter(|n| n.ends_with(".sh"))
            .map(|n| format!("{ENV_DIR}/{n}"))
            .collect();
    }
    let container = opened.path.to_string_lossy().into_owned();
    let mut runtime_vars = vec![("HOME".to_string(), plan.home.clone())];
    // Apptainer's names too: scripts test them to know they run in a container.
    for prefix in ["RSING", "APPTAINER", "SINGULARITY"] {
        runtime_vars.push((format!("{prefix}_CONTAINER"), container.clone()));
        runtime_vars.push((format!("{prefix}_NAME"), opened.name.clone()));
    }
    let bound: Vec<String> = options
        .binds
        .iter()
        .map(|b| {
            let ro = if b.readonly { ":ro" } else { "" };
            format!("{}:{}{ro}", b.src.display(), b.dst)
        })
        .collect();
    if !bound.is_empty() {
        runtime_vars.push(("APPTAINER_BIND".to_string(), bound.join(",")));
        runtime_vars.push(("SINGULARITY_BIND".to_string(), bound.join(",")));
    }
    if let Action::Shell(_) = action {
        runtime_vars.push(("PS1".to_string(), format!("rsing {}:\\w> ", opened.name)));
    }
    let mut user = Vec::new();
    for file in &args.env_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read env file {}", file.display()))?;
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            match environ::parse_assignment(trimmed) {
                Some(kv) => user.push(kv),
                None => bail!("env file {}: cannot parse line '{trimmed}'", file.display()),
            }
        }
    }
    user.extend(compat::user_variables(&host.env));
    for kv in args.env.iter().flat_map(|a| compat::split_env_list(a)) {
        match environ::parse_assignment(&kv) {
            Some(pair) => user.push(pair),
            None => bail!("--env '{kv}': expected NAME=VALUE"),
        }
    }
    Ok(EnvLayers {
        host: host.env.clone(),
        cleanenv: args.cleanenv || args.containall,
        image,
        image_scripts,
        runtime: runtime_vars,
        user,
        eval: !args.no_eval,
        shell: is_kind(tree, "/bin/sh", NodeKind::File),
        path_prefix: Vec::new(),
    })
}
