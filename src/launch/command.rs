//! What runs in the container: the command for each action.

use anyhow::bail;

use super::app::App;
use crate::contract::{RUNSCRIPT, STARTSCRIPT, TEST};
use crate::image::OpenedImage;
use crate::tree::{self, NodeKind, Tree};

/// What to start in the container.
pub enum Action {
    Exec(Vec<String>),
    Run(Vec<String>),
    Shell(Option<String>),
    /// `rsing test`: the image's test script with arguments.
    Test(Vec<String>),
    /// `rsing instance start`: the image's start script, else what `run` runs.
    Start(Vec<String>),
}

/// True when `path` resolves in the image to a node of `kind`.
pub(super) fn is_kind(tree: &dyn Tree, path: &str, kind: NodeKind) -> bool {
    tree::resolve(tree, path.as_bytes())
        .map(|r| r.kind == Some(kind))
        .unwrap_or(false)
}

/// The command line of `action`: the user's command, the runscript (or the OCI entrypoint
/// and command), the test or start script, or a shell.
pub(super) fn command_line(
    action: Action,
    opened: &OpenedImage,
    tree: &dyn Tree,
    app: Option<&App>,
) -> anyhow::Result<Vec<String>> {
    if let Some(app) = app {
        let which = match &action {
            Action::Run(_) | Action::Start(_) => "runscript",
            Action::Test(_) => "test",
            _ => "",
        };
        if let (Action::Run(args) | Action::Start(args) | Action::Test(args), false) =
            (&action, which.is_empty())
        {
            let Some(script) = app.script(tree, which) else {
                bail!(
                    "app '{}' of image {} has no {which}",
                    app.name,
                    opened.path.display()
                );
            };
            return Ok(std::iter::once(script).chain(args.clone()).collect());
        }
    }
    Ok(match action {
        Action::Exec(cmd) => cmd,
        Action::Run(args) => {
            if is_kind(tree, RUNSCRIPT, NodeKind::File) {
                std::iter::once(RUNSCRIPT.to_string()).chain(args).collect()
            } else {
                let oci = opened.oci_config.clone().unwrap_or_default();
                let entry = oci.entrypoint.unwrap_or_default();
                let cmd = if args.is_empty() {
                    oci.cmd.unwrap_or_default()
                } else {
                    args
                };
                let argv: Vec<String> = entry.into_iter().chain(cmd).collect();
                if argv.is_empty() {
                    bail!(
                        "image {} has no runscript and no OCI entrypoint or command",
                        opened.path.display()
                    );
                }
                argv
            }
        }
        Action::Test(args) => std::iter::once(TEST.to_string()).chain(args).collect(),
        Action::Start(args) if is_kind(tree, STARTSCRIPT, NodeKind::File) => {
            std::iter::once(STARTSCRIPT.to_string())
                .chain(args)
                .collect()
        }
        Action::Start(args) => command_line(Action::Run(args), opened, tree, None)?,
        Action::Shell(shell) => match shell {
            Some(s) => vec![s],
            None if is_kind(tree, "/bin/bash", NodeKind::File) => {
                vec!["/bin/bash".into(), "--norc".into()]
            }
            None => vec!["/bin/sh".into()],
        },
    })
}
