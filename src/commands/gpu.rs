//! `rsing gpu`: what `--nv` would inject (being written).

#[derive(Debug, clap::Args)]
pub struct GpuArgs {}

pub fn run(_global: &super::Global, _args: &GpuArgs) -> anyhow::Result<i32> {
    anyhow::bail!("rsing gpu: not implemented yet")
}
