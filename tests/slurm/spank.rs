//! The SPANK plugin (slurm/spank), built and configured by tests/services/slurm.sh:
//! `srun --container-image=IMG` runs every task in `rsing exec IMG`, with
//! `--container-mounts`, `--container-workdir` and `--container-env`; given to sbatch, the
//! option applies to the job's srun steps while the batch script stays on the host.

use super::{read, JOB_TIMEOUT};
use crate::fixtures::BUSYBOX;
use crate::util::slurm::{cluster, mpi_image, Slurm};
use crate::util::{missing, TestEnv};

/// The cluster, if it has the plugin (else a skip, or a failure under CI).
fn cluster_with_plugin() -> Option<Slurm> {
    let slurm = cluster()?;
    if slurm.spank.is_none() {
        missing("the rsing SPANK plugin in the test cluster (libslurm-dev; see slurm.sh's log)");
        return None;
    }
    Some(slurm)
}

/// Counts the lines of `out` equal to `line`.
fn count(out: &str, line: &str) -> usize {
    out.lines().filter(|l| *l == line).count()
}

#[test]
fn srun_container_image_runs_each_task_in_rsing() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let Some(slurm) = cluster_with_plugin() else {
        return;
    };
    let data = t.mkdir("data");
    std::fs::write(data.join("file"), "from-host\n").expect("writing a data file");
    let show = "echo task=$SLURM_PROCID cwd=$(pwd) env90=$ENV90 foo=$FOO; cat file; \
                test -d /.singularity.d && echo in-image; touch new 2>/dev/null || echo read-only";
    let srun = |extra: &[&str]| {
        slurm
            .cmd(&t, "srun")
            .env("ENV90", "host")
            .env("FOO", "host-foo")
            .args(["-n", "2"])
            .arg(format!("--container-image={}", img.display()))
            .arg(format!("--container-mounts={}:/data:ro", data.display()))
            .arg("--container-workdir=/data")
            .args(extra)
            .args(["sh", "-c", show])
            .timeout(JOB_TIMEOUT)
            .stdout_str()
    };
    // The image's 90-environment.sh sets ENV90: its value wins over the host's, unless the
    // variable is named in --container-env. Other host variables pass as they are.
    let out = srun(&["--container-env=ENV90"]);
    for task in 0..2 {
        let line = format!("task={task} cwd=/data env90=host foo=host-foo");
        assert_eq!(count(&out, &line), 1, "no `{line}` in:\n{out}");
    }
    for line in ["from-host", "in-image", "read-only"] {
        assert_eq!(count(&out, line), 2, "`{line}` twice expected in:\n{out}");
    }
    let out = srun(&[]);
    assert_eq!(
        count(&out, "task=0 cwd=/data env90=ninety foo=host-foo"),
        1,
        "{out}"
    );
}

#[test]
fn sbatch_container_image_applies_to_the_jobs_srun_steps() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let Some(slurm) = cluster_with_plugin() else {
        return;
    };
    let wrap = "test -d /.singularity.d || echo batch-on-host; \
                srun sh -c 'test -d /.singularity.d && echo step-in-image'";
    let cmd = slurm
        .cmd(&t, "sbatch")
        .args(["--parsable", "-o"])
        .arg(t.cwd.join("job.out"))
        .arg(format!("--container-image={}", img.display()))
        .args(["--wrap", wrap]);
    let id = slurm.submit(cmd);
    let job = slurm.wait_done(&t, id, JOB_TIMEOUT);
    let out = read(&t.cwd.join("job.out"));
    assert_eq!(job.field("JobState"), "COMPLETED", "{job:#?}\n{out}");
    assert_eq!(out, "batch-on-host\nstep-in-image\n");
}

/// The plugin and PMIx together: `srun --mpi=pmix --container-image=MPI-IMAGE app`.
#[test]
fn srun_container_image_runs_mpi_ranks() {
    let t = TestEnv::new();
    let Some(img) = mpi_image() else { return };
    let Some(slurm) = cluster_with_plugin() else {
        return;
    };
    let out = slurm
        .cmd(&t, "srun")
        .env("PMIX_MCA_gds", "hash")
        .env("OMPI_MCA_btl", "self,vader")
        .args(["--mpi=pmix", "-n", "2"])
        .arg(format!("--container-image={}", img.display()))
        .arg("mpi-hello")
        .timeout(JOB_TIMEOUT)
        .stdout_str();
    assert_eq!(out, "rank 1 of 2 got: hello from rank 0, last byte x");
}
