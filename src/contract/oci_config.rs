//! The subset of an OCI image config rsing reads (stored in a SIF as `oci-config.json`, see
//! [`super::sif_objects::OCI_CONFIG`]) and the part of it the `/.singularity.d` metadata is
//! generated from.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The parts of an OCI image config rsing uses at run time.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct OciConfig {
    #[serde(default)]
    pub env: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The parts of an image config the `/.singularity.d` metadata (env script, runscript, labels)
/// is made from.
#[derive(Debug, Clone, Default)]
pub struct ImageFacts {
    pub env: Vec<String>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub labels: BTreeMap<String, String>,
}
