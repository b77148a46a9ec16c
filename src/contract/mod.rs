//! The Apptainer image contract: where an image keeps its metadata (`/.singularity.d/...`),
//! which SIF objects carry what, and the subset of the OCI image config rsing reads.
//!
//! Why one module, and why at the bottom: the same names are written by `convert` and `build`,
//! read by `image` and `inspect`, launched through by `exec` and `gpu`, and sourced by
//! `runtime`. Spelled out in each, they drift (a renamed env script in the writer would
//! silently stop being found by the reader). This module does no I/O and names nothing above
//! `sif` (for its data types), so every layer may use it without depending on the layer that
//! opens images. Generating the metadata's content (runscripts, env scripts) is policy and
//! stays in `convert::singularity_d` and `build::metadata`; only names, layouts and types are
//! here.

mod labels;
mod oci_config;
pub mod paths;
pub mod sif_objects;

pub use labels::{labels_json, parse_labels};
pub use oci_config::{ImageFacts, OciConfig};
pub use paths::{ENV_DIR, LIBS_DIR, RUNSCRIPT, STARTSCRIPT, TEST};
pub use sif_objects::SifObject;
