//! `rsing doctor` (alias `info`): what this host supports and why something fails, one line
//! per check with the fix. It tries for real what `exec` does (in a throw-away child, see
//! [`probe`]) instead of guessing from kernel versions, and names the sysctl, AppArmor rule,
//! device mode or mount option that explains a failure. Exit status 1 when a check FAILs,
//! i.e. when `rsing exec` cannot work here; WARNs do not change it.

mod host;
mod kernel;
mod probe;
mod report;
mod site;

use std::path::Path;

use anyhow::Context;

use super::Global;
use crate::runtime::host::HostFacts;
use report::{Check, Report};

/// The device every FUSE mount is made from.
const FUSE_DEVICE: &str = "/dev/fuse";

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Print JSON ({"ok", "version", "commit", "checks": [{"name", "status", "message", "fix"}]})
    #[arg(long)]
    pub json: bool,
}

pub fn run(global: &Global, args: &DoctorArgs) -> anyhow::Result<i32> {
    // First, while this process has a single thread: the probe forks.
    let fuse = Path::new(FUSE_DEVICE);
    // A probe killed before it reported (a seccomp filter that kills instead of failing
    // unshare) is a finding too: every namespace check fails with that reason.
    let outcome = probe::run(fuse)
        .unwrap_or_else(|e| probe::Outcome::failed(&format!("the namespace probe failed: {e}")));
    let host = HostFacts::gather().context("cannot read the caller's identity")?;
    let mut checks: Vec<Check> = vec![
        kernel::userns(&outcome),
        kernel::fuse(&outcome, fuse),
        kernel::overlay(&outcome),
    ];
    let (config_check, site) = site::config(global.config.as_deref());
    checks.push(config_check);
    checks.push(host::cgroup());
    checks.push(host::subuid(&host.name, host.uid));
    checks.push(host::home(&host.home));
    checks.push(match crate::cache::Cache::locate() {
        Ok(cache) => host::cache(cache.root()),
        Err(e) => Check::warn(
            "cache",
            e.to_string(),
            "set RSING_CACHEDIR (or HOME) to a writable directory",
        ),
    });
    checks.extend(site::gpu(&site, &host));
    checks.push(site::slurm());
    let report = Report::new(checks);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(if report.ok { 0 } else { 1 })
}
