//! `rsing gpu`: what `--nv` and `--device` would inject (the injection itself is
//! [`crate::launch::gpu`]).

use anyhow::Context;

use super::site as siteconf;
use super::Global;
use crate::gpu;
use crate::launch::gpu::{add_driver, injection};
pub use crate::launch::gpu::{cdi_dirs, config, Injection};
use crate::runtime::host::HostFacts;

mod report;

#[derive(Debug, clap::Args)]
pub struct GpuArgs {
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
    /// Also resolve CDI devices (vendor/class=name, e.g. nvidia.com/gpu=all); repeatable
    #[arg(long = "device", value_name = "KIND=NAME")]
    pub device: Vec<String>,
}

pub fn run(global: &Global, args: &GpuArgs) -> anyhow::Result<i32> {
    let site = siteconf::load_for(global)?;
    let host = HostFacts::gather().context("cannot read the calling process's state")?;
    let config = config(&site, &host)?;
    let found = gpu::discover(&config);
    let contained = match &found {
        Ok(inv) => {
            let mut inj = Injection::default();
            add_driver(true, &mut inj, inv, &host, true);
            Some(inj)
        }
        Err(_) => None,
    };
    let cdi = if args.device.is_empty() {
        None
    } else {
        Some(injection(
            global.quiet,
            &site,
            &host,
            false,
            &args.device,
            true,
        )?)
    };
    let report = report::Report {
        config: &config,
        found: &found,
        contained: contained.as_ref(),
        cdi: cdi.as_ref(),
    };
    if args.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(if found.is_ok() { 0 } else { 1 })
}
