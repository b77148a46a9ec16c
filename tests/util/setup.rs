//! Set-up shared by the registry-backed tests (pull, faults): a local registry holding the
//! busybox image. Returns `None` (a visible skip, through the fixture and tool checks) when a
//! prerequisite is missing.

use super::oci::{self, Layout};
use super::registry::{TestRegistry, REGISTRY_TOOLS};
use super::{have_tools, TestEnv};
use crate::fixtures::Fixture;

/// A registry (with basic auth when `creds` are given) holding the one-layer busybox image as
/// `busybox:1`; the digests written and `docker://127.0.0.1:PORT/busybox:1`.
pub fn busybox_registry(
    t: &TestEnv,
    creds: Option<(&str, &str)>,
) -> Option<(TestRegistry, oci::Written, String)> {
    let sandbox = crate::fixtures::get(Fixture::Sandbox)?;
    if !have_tools(REGISTRY_TOOLS) {
        return None;
    }
    let registry = TestRegistry::start(&t.dir.join("registry"), creds);
    let layout = Layout::create(&t.dir.join("layout"));
    let written = layout.add_image("1", &oci::busybox_image(&sandbox));
    registry.push_layout(&layout.dir, "1", "busybox:1");
    let uri = format!("docker://{}", registry.reference("busybox:1"));
    Some((registry, written, uri))
}
