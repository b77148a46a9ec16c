//! The SIF data objects rsing writes and reads besides the root partition, as `apptainer
//! build` lays them out: the definition file, `inspect-metadata.json` and `oci-config.json`.

use crate::sif::{DataType, Descriptor, SifFile};

/// A SIF data object by kind and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SifObject {
    pub data_type: DataType,
    /// The descriptor's name; empty means "any name" when looking it up.
    pub name: &'static str,
}

/// The definition file the image was built from (written without a name; found by type).
pub const DEFFILE: SifObject = SifObject {
    data_type: DataType::Deffile,
    name: "",
};

/// What `apptainer inspect --all --json` prints, stored by the builder.
pub const INSPECT_METADATA: SifObject = SifObject {
    data_type: DataType::GenericJson,
    name: "inspect-metadata.json",
};

/// The OCI image config the image was converted from.
pub const OCI_CONFIG: SifObject = SifObject {
    data_type: DataType::GenericJson,
    name: "oci-config.json",
};

/// The SIF launch script (`#!` line at the start of the file), as Apptainer writes it.
pub const LAUNCH_SCRIPT: &[u8] = b"#!/usr/bin/env run-singularity\n";

impl SifObject {
    /// The first descriptor of `sif` that is this object.
    pub fn find<'a>(&self, sif: &'a SifFile) -> Option<&'a Descriptor> {
        sif.descriptors.iter().find(|d| {
            d.data_type == self.data_type && (self.name.is_empty() || d.name == self.name)
        })
    }
}
