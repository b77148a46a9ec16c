//! Which GPUs a contained container gets, from the caller's environment, and the variables the
//! container must see so that its numbering matches what it has.
//!
//! * Slurm's allocation (`SLURM_STEP_GPUS`, else `SLURM_JOB_GPUS`: GRES indices, i.e. positions
//!   in the node's GPU list) limits the candidates.
//! * The first set of `CUDA_VISIBLE_DEVICES`, `NVIDIA_VISIBLE_DEVICES`, `GPU_DEVICE_ORDINAL`
//!   picks among them: indices or `GPU-<uuid>` prefixes; `all`, or Slurm's `NoDevFiles`, keeps
//!   every candidate; `none`, `void` and an empty value keep none. Under a Slurm allocation,
//!   indices count within the allocation (Slurm's numbering when it constrains devices), unless
//!   the value repeats the allocation itself (Slurm's numbering when it does not).
//! * As in CUDA, parsing stops at the first entry that names no GPU.
//!
//! Inside, the container sees only the chosen /dev/nvidiaN, which CUDA numbers 0..k-1 in host
//! order. Index lists in the three variables are rewritten to those numbers, in the order the
//! caller gave; UUIDs and the words above stay as they are.

use super::driver::Gpu;

/// The outcome of [`select`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Minor numbers of the chosen GPUs, in host order.
    pub minors: Vec<u32>,
    /// Variables to set inside the container (only those set on the host).
    pub env: Vec<(String, String)>,
    /// Entries that were ignored, for a warning.
    pub ignored: Vec<String>,
}

const VISIBLE_VARS: [&str; 3] = [
    "CUDA_VISIBLE_DEVICES",
    "NVIDIA_VISIBLE_DEVICES",
    "GPU_DEVICE_ORDINAL",
];

/// Chooses among `gpus` (host GPUs in host order) as `env` (a variable lookup) says.
pub fn select(gpus: &[Gpu], env: &dyn Fn(&str) -> Option<String>) -> Selection {
    let mut out = Selection::default();
    let slurm = ["SLURM_STEP_GPUS", "SLURM_JOB_GPUS"]
        .iter()
        .find_map(|k| env(k).map(|v| (*k, v)));
    let candidates: Vec<&Gpu> = match &slurm {
        Some((name, value)) => {
            let (found, bad) = by_index(gpus.iter().collect(), value);
            out.ignored
                .extend(bad.map(|b| format!("{name}={value}: no GPU {b}")));
            found
        }
        None => gpus.iter().collect(),
    };
    let governing = VISIBLE_VARS.iter().find_map(|k| env(k).map(|v| (*k, v)));
    let chosen: Vec<&Gpu> = match &governing {
        None => candidates.clone(),
        Some((name, value)) => {
            let value = value.trim();
            if matches!(value, "all" | "NoDevFiles")
                || slurm.as_ref().is_some_and(|(_, s)| s.trim() == value)
            {
                candidates.clone()
            } else if matches!(value, "" | "none" | "void") {
                Vec::new()
            } else {
                let (found, bad) = by_entry(&candidates, value);
                out.ignored
                    .extend(bad.map(|b| format!("{name}={value}: no GPU {b}")));
                found
            }
        }
    };
    let mut inside: Vec<&Gpu> = chosen.clone();
    inside.sort_by_key(|g| (g.index, g.minor));
    inside.dedup_by_key(|g| g.minor);
    out.minors = inside.iter().map(|g| g.minor).collect();
    for var in VISIBLE_VARS {
        if let Some(value) = env(var) {
            out.env.push((
                var.to_string(),
                renumber(&value, &candidates, &inside, &slurm),
            ));
        }
    }
    out
}

/// Resolves a comma list of indices into `list`; returns the GPUs and the first bad entry.
fn by_index<'a>(list: Vec<&'a Gpu>, value: &str) -> (Vec<&'a Gpu>, Option<String>) {
    let mut found = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match entry.parse::<usize>().ok().and_then(|i| list.get(i)) {
            Some(g) => found.push(*g),
            None => return (found, Some(entry.to_string())),
        }
    }
    (found, None)
}

/// Like [`by_index`], also accepting `GPU-<uuid>` prefixes.
fn by_entry<'a>(list: &[&'a Gpu], value: &str) -> (Vec<&'a Gpu>, Option<String>) {
    let mut found = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match find(list, entry) {
            Some(g) => found.push(g),
            None => return (found, Some(entry.to_string())),
        }
    }
    (found, None)
}

fn find<'a>(list: &[&'a Gpu], entry: &str) -> Option<&'a Gpu> {
    if entry.starts_with("GPU-") {
        return list
            .iter()
            .find(|g| g.uuid.as_deref().is_some_and(|u| u.starts_with(entry)))
            .copied();
    }
    entry
        .parse::<usize>()
        .ok()
        .and_then(|i| list.get(i))
        .copied()
}

/// `value` with every index rewritten to the chosen GPU's number inside the container.
fn renumber(
    value: &str,
    candidates: &[&Gpu],
    inside: &[&Gpu],
    slurm: &Option<(&str, String)>,
) -> String {
    let trimmed = value.trim();
    if matches!(trimmed, "" | "all" | "none" | "void" | "NoDevFiles") {
        return trimmed.to_string();
    }
    // Repeating Slurm's own list means its GRES indices: positions in the whole node.
    let whole_node = slurm.as_ref().is_some_and(|(_, s)| s.trim() == trimmed);
    let mut parts = Vec::new();
    for entry in trimmed.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry.starts_with("GPU-") || entry.starts_with("MIG-") {
            parts.push(entry.to_string());
            continue;
        }
        let gpu = if whole_node {
            entry
                .parse::<usize>()
                .ok()
                .and_then(|i| nth_by_slurm(candidates, slurm, i))
        } else {
            find(candidates, entry)
        };
        match gpu.and_then(|g| inside.iter().position(|i| i.minor == g.minor)) {
            Some(pos) => parts.push(pos.to_string()),
            None => break,
        }
    }
    parts.join(",")
}

/// The candidate that Slurm's GRES index `gres` names (candidates are in Slurm's list order).
fn nth_by_slurm<'a>(
    candidates: &[&'a Gpu],
    slurm: &Option<(&str, String)>,
    gres: usize,
) -> Option<&'a Gpu> {
    let (_, list) = slurm.as_ref()?;
    let pos = list
        .split(',')
        .map(str::trim)
        .position(|e| e.parse::<usize>().ok() == Some(gres))?;
    candidates.get(pos).copied()
}

#[cfg(test)]
#[path = "select_tests.rs"]
mod tests;
