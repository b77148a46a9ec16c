//! `rsing module create`: modulefiles that expose a container's commands (being written).

#[derive(Debug, clap::Subcommand)]
pub enum ModuleCommand {}

pub fn run(_global: &super::Global, cmd: &ModuleCommand) -> anyhow::Result<i32> {
    match *cmd {}
}
