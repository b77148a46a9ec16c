//! The sharing policy: whether this container joins (or starts) the image's shared server,
//! and which one. Decided once here: the site may forbid sharing (`share images = no`), a user
//! may turn it off (`RSING_SHARE=no`), it needs a private run directory, and under Slurm a
//! server is shared within one job step only.

use crate::image::{OpenedImage, Root};
use crate::runtime::host::HostFacts;
use crate::runtime::{plan, share};
use crate::siteconf::SiteConfig;

/// Where to find the image's shared server, unless sharing is off (site config
/// `share images = no`, or `RSING_SHARE=no` for one user) or no private run directory exists.
pub(super) fn share_spec(
    site: &SiteConfig,
    host: &HostFacts,
    opened: &OpenedImage,
    options: &plan::Options,
) -> Option<share::ShareSpec> {
    let Root::Squashfs { offset, .. } = &opened.root else {
        return None;
    };
    let env = |k: &str| host.var(k);
    if !site.share_images || matches!(env("RSING_SHARE"), Some("no" | "0" | "false")) {
        return None;
    }
    let linger = env("RSING_SHARE_LINGER")
        .and_then(|v| v.parse().ok())
        .unwrap_or(site.share_linger);
    let rundir = share::runtime_dir(env("XDG_RUNTIME_DIR"))?;
    // Under Slurm a server is shared within one job step only: it runs in the cgroup of the
    // step that started it, and Slurm kills what is left there when that step ends, which
    // would take the image away from a container of another job (an array task) that joined.
    let scope = match (env("SLURM_JOB_ID"), env("SLURM_STEP_ID")) {
        (Some(job), step) => format!("slurm:{job}.{}", step.unwrap_or("batch")),
        (None, _) => String::new(),
    };
    let (uid_inside, gid_inside) = host.ids_inside(options.fakeroot);
    let spec = share::spec(
        &opened.path,
        *offset,
        uid_inside,
        gid_inside,
        &opened.path.to_string_lossy(),
        linger,
        &rundir,
    )?;
    Some(spec.scoped(&scope))
}
