use super::*;

fn gpus(n: u32) -> Vec<Gpu> {
    (0..n)
        .map(|i| Gpu {
            index: i,
            minor: i,
            uuid: Some(format!("GPU-{i}{i}{i}{i}-aaaa")),
            name: None,
        })
        .collect()
}

fn pick(n: u32, vars: &[(&str, &str)]) -> Selection {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    select(&gpus(n), &|k| {
        vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    })
}

fn env(s: &Selection, k: &str) -> Option<String> {
    s.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
}

#[test]
fn nothing_set_means_every_gpu() {
    let s = pick(4, &[]);
    assert_eq!(s.minors, vec![0, 1, 2, 3]);
    assert!(s.env.is_empty());
}

#[test]
fn cuda_visible_devices_is_renumbered_in_the_given_order() {
    let s = pick(4, &[("CUDA_VISIBLE_DEVICES", "1")]);
    assert_eq!(s.minors, vec![1]);
    assert_eq!(env(&s, "CUDA_VISIBLE_DEVICES").as_deref(), Some("0"));
    let s = pick(4, &[("CUDA_VISIBLE_DEVICES", "3,1")]);
    assert_eq!(s.minors, vec![1, 3]);
    assert_eq!(env(&s, "CUDA_VISIBLE_DEVICES").as_deref(), Some("1,0"));
}

#[test]
fn uuids_and_words() {
    let s = pick(3, &[("CUDA_VISIBLE_DEVICES", "GPU-2222")]);
    assert_eq!(s.minors, vec![2]);
    assert_eq!(env(&s, "CUDA_VISIBLE_DEVICES").as_deref(), Some("GPU-2222"));
    let s = pick(3, &[("NVIDIA_VISIBLE_DEVICES", "all")]);
    assert_eq!(s.minors, vec![0, 1, 2]);
    assert_eq!(env(&s, "NVIDIA_VISIBLE_DEVICES").as_deref(), Some("all"));
    for none in ["none", "void", ""] {
        assert!(pick(3, &[("NVIDIA_VISIBLE_DEVICES", none)])
            .minors
            .is_empty());
    }
    assert!(pick(3, &[("CUDA_VISIBLE_DEVICES", "")]).minors.is_empty());
}

#[test]
fn cuda_visible_devices_wins_over_nvidia_visible_devices() {
    let s = pick(
        3,
        &[
            ("CUDA_VISIBLE_DEVICES", "2"),
            ("NVIDIA_VISIBLE_DEVICES", "all"),
        ],
    );
    assert_eq!(s.minors, vec![2]);
    assert_eq!(env(&s, "NVIDIA_VISIBLE_DEVICES").as_deref(), Some("all"));
}

#[test]
fn parsing_stops_at_the_first_unknown_gpu() {
    let s = pick(2, &[("CUDA_VISIBLE_DEVICES", "1,7,0")]);
    assert_eq!(s.minors, vec![1]);
    assert_eq!(env(&s, "CUDA_VISIBLE_DEVICES").as_deref(), Some("0"));
    assert_eq!(s.ignored.len(), 1, "{:?}", s.ignored);
}

#[test]
fn slurm_allocation_with_constrained_numbering() {
    // Slurm gave GPUs 2,3; with ConstrainDevices it numbers them 0,1.
    let s = pick(
        4,
        &[
            ("SLURM_STEP_GPUS", "2,3"),
            ("CUDA_VISIBLE_DEVICES", "0,1"),
            ("GPU_DEVICE_ORDINAL", "0,1"),
        ],
    );
    assert_eq!(s.minors, vec![2, 3]);
    assert_eq!(env(&s, "CUDA_VISIBLE_DEVICES").as_deref(), Some("0,1"));
    assert_eq!(env(&s, "GPU_DEVICE_ORDINAL").as_deref(), Some("0,1"));
    // The user narrowed it to the second GPU of the allocation.
    let s = pick(
        4,
        &[("SLURM_JOB_GPUS", "2,3"), ("CUDA_VISIBLE_DEVICES", "1")],
    );
    assert_eq!(s.minors, vec![3]);
    assert_eq!(env(&s, "CUDA_VISIBLE_DEVICES").as_deref(), Some("0"));
}

#[test]
fn slurm_allocation_with_node_numbering() {
    // Without ConstrainDevices Slurm sets CUDA_VISIBLE_DEVICES to the GRES indices.
    let s = pick(
        4,
        &[("SLURM_STEP_GPUS", "3,1"), ("CUDA_VISIBLE_DEVICES", "3,1")],
    );
    assert_eq!(s.minors, vec![1, 3]);
    assert_eq!(env(&s, "CUDA_VISIBLE_DEVICES").as_deref(), Some("1,0"));
    // Only the allocation: every allocated GPU.
    let s = pick(4, &[("SLURM_STEP_GPUS", "1")]);
    assert_eq!(s.minors, vec![1]);
}

#[test]
fn nvml_order_differs_from_minor_numbers() {
    let list = vec![
        Gpu {
            index: 0,
            minor: 3,
            uuid: None,
            name: None,
        },
        Gpu {
            index: 1,
            minor: 0,
            uuid: None,
            name: None,
        },
    ];
    let s = select(&list, &|k| {
        (k == "CUDA_VISIBLE_DEVICES").then(|| "1".to_string())
    });
    assert_eq!(s.minors, vec![0]);
}
