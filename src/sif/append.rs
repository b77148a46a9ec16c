//! Adding an object to an existing SIF file in place, as `siftool add` and
//! `apptainer overlay create img.sif` do: the data goes at the end (aligned like a partition),
//! its descriptor into the first free slot, and the header is rewritten last, so a reader never
//! sees a descriptor whose data is not there yet.

use std::fs::File;
use std::os::unix::fs::FileExt;

use super::format::{
    self, Arch, DataType, Descriptor, FsType, PartType, DESCRIPTOR_LEN, PARTITION_ALIGNMENT,
};
use super::read::SifFile;
use super::{Error, Result};

/// Appends the ext3 file system `data` (all of it) to the SIF `file` (opened read-write) as an
/// overlay partition in the primary partition's group, with the image's architecture. Returns
/// the new descriptor.
pub fn add_overlay_partition(file: &File, data: &File) -> Result<Descriptor> {
    let sif = SifFile::read(file)?;
    let primary = sif.primary_partition()?.clone();
    if sif.descriptors.iter().any(is_overlay) {
        return Err(Error::InvalidObject(
            "the image has an overlay partition already".into(),
        ));
    }
    let h = &sif.header;
    let mut table = vec![0u8; h.descriptors_total as usize * DESCRIPTOR_LEN];
    file.read_exact_at(&mut table, h.descriptors_offset as u64)?;
    let slot = table
        .chunks_exact(DESCRIPTOR_LEN)
        .position(|c| c[4] == 0)
        .ok_or_else(|| Error::InvalidObject("the image has no free descriptor slot".into()))?;
    let size = data.metadata()?.len();
    let data_end = (h.data_offset + h.data_size) as u64;
    let file_end = file.metadata()?.len().max(data_end);
    let offset = file_end.div_ceil(PARTITION_ALIGNMENT) * PARTITION_ALIGNMENT;
    let arch = primary.partition.map(|p| p.arch).unwrap_or(Arch::host());
    let now = now();
    let d = Descriptor {
        data_type: DataType::Partition,
        id: sif.descriptors.iter().map(|d| d.id).max().unwrap_or(0) + 1,
        group_id: primary.group_id,
        linked_id: 0,
        offset,
        size,
        size_with_padding: offset + size - data_end,
        created_at: now,
        modified_at: now,
        name: String::new(),
        extra: format::partition_extra(FsType::Ext3, PartType::Overlay, arch),
        partition: None,
        signature: None,
        crypto_message: None,
        sbom_format: None,
        oci_digest: None,
    };
    // The data first, then the descriptor, then the header that counts them.
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < size {
        let n = buf.len().min((size - done) as usize);
        data.read_exact_at(&mut buf[..n], done)?;
        file.write_all_at(&buf[..n], offset + done)?;
        done += n as u64;
    }
    file.sync_data()?;
    let slot_at = h.descriptors_offset as u64 + (slot * DESCRIPTOR_LEN) as u64;
    file.write_all_at(&d.encode(), slot_at)?;
    let mut header = h.clone();
    header.descriptors_free -= 1;
    header.data_size = (offset + size) as i64 - h.data_offset;
    header.modified_at = now;
    file.write_all_at(&header.encode(), 0)?;
    file.sync_all()?;
    Ok(d)
}

/// An ext3 overlay partition (`apptainer overlay create img.sif`).
pub fn is_overlay(d: &Descriptor) -> bool {
    d.data_type == DataType::Partition
        && d.partition
            .is_some_and(|p| p.part_type == PartType::Overlay && p.fs_type == FsType::Ext3)
}

/// The image's overlay partition in the primary partition's group (Apptainer uses an overlay
/// only if it is in the same group as the root file system).
pub fn overlay_partition(sif: &SifFile) -> Option<&Descriptor> {
    let group = sif.primary_partition().ok()?.group_id;
    sif.descriptors
        .iter()
        .find(|d| is_overlay(d) && d.group_id == group)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
