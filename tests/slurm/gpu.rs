//! A GPU from Slurm's GRES: with the GPU stub (tests/services/gpu-stub.sh) the test cluster
//! has its fake /dev/nvidiaN nodes as GRES `gpu`. A job given one GPU runs slurm/gpu.sbatch
//! (`rsing exec --nv --contain`) and sees exactly that device, numbered 0 as CUDA expects.

use super::{read, sbatch, script, JOB_TIMEOUT};
use crate::fixtures::BUSYBOX;
use crate::util::slurm::{cluster, wait_for_file};
use crate::util::{missing, TestEnv};

const GPU: (&str, &str) = ("gpu.sbatch", include_str!("../../slurm/gpu.sbatch"));

/// Two one-GPU jobs at once, so that one of them has GPU 1: the first waits (up to 30 s) until
/// the second has started (through the test's dir, bound with RSING_BIND: --contain binds no
/// cwd). Each sees only the device node of the GPU Slurm gave it.
#[test]
fn job_given_one_gpu_sees_exactly_that_device() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let Some(slurm) = cluster() else { return };
    let Ok(conf) = std::env::var("RSING_TEST_GPU_CONF") else {
        missing("the GPU stub (tests/services/gpu-stub.sh: RSING_TEST_GPU_CONF)");
        return;
    };
    if std::env::var("RSING_TEST_GPU_COUNT").as_deref() == Ok("0") {
        // The stub could not mknod here (its own tests adapt the same way): nothing to give.
        crate::util::skip("the GPU stub has no device nodes on this machine (mknod refused)");
        return;
    }
    if slurm.gpus < 2 {
        missing("two GRES gpus in the test cluster (the GPU stub's device nodes)");
        return;
    }
    let second_started = t.cwd.join("second-started");
    let show = "echo gpus=$SLURM_JOB_GPUS; for d in /dev/nvidia[0-9]*; do echo dev=$d; done; \
                echo cvd=$CUDA_VISIBLE_DEVICES; nvidia-smi -L";
    let first = format!(
        "{show}; i=0; while [ ! -e {s} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done",
        s = second_started.display()
    );
    let second = format!("{show}; echo > {}", second_started.display());
    let ids: Vec<u32> = [first, second]
        .iter()
        .enumerate()
        .map(|(i, command)| {
            let cmd = sbatch(&slurm, &t, &img, &format!("gpu-{i}.out"))
                .env("RSING_CONFIG", &conf)
                .env("RSING_BIND", &t.cwd)
                .arg(script(&t, GPU))
                .args(["sh", "-c", command]);
            let id = slurm.submit(cmd);
            if i == 0 {
                wait_for_file(&t.cwd.join("gpu-0.out"), JOB_TIMEOUT);
            }
            id
        })
        .collect();
    let mut given = Vec::new();
    for (i, id) in ids.into_iter().enumerate() {
        let job = slurm.wait_done(&t, id, JOB_TIMEOUT);
        let out = read(&t.cwd.join(format!("gpu-{i}.out")));
        assert_eq!(job.field("JobState"), "COMPLETED", "{job:#?}\n{out}");
        let gpu = out
            .lines()
            .find_map(|l| l.strip_prefix("gpus="))
            .unwrap_or_else(|| panic!("no SLURM_JOB_GPUS in:\n{out}"))
            .to_string();
        let devices: Vec<&str> = out.lines().filter(|l| l.starts_with("dev=")).collect();
        assert_eq!(
            devices,
            [format!("dev=/dev/nvidia{gpu}")],
            "job {i}:\n{out}"
        );
        assert!(out.lines().any(|l| l == "cvd=0"), "job {i}:\n{out}");
        let listed: Vec<&str> = out.lines().filter(|l| l.starts_with("GPU ")).collect();
        assert_eq!(listed.len(), 1, "nvidia-smi -L in job {i}:\n{out}");
        assert!(listed[0].starts_with("GPU 0: "), "job {i}:\n{out}");
        given.push(gpu);
    }
    given.sort();
    assert_eq!(given, ["0", "1"], "the two jobs were given the same GPU");
}
