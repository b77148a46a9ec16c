//! MPI in the hybrid model: the host's `srun --mpi=pmix` starts the ranks, each one
//! `rsing exec` of an image holding Debian's Open MPI (the host's copy, so inside and outside
//! match). The ranks' containers share one user namespace (rsing's image server), which Open
//! MPI's shared-memory transport needs for its single-copy path (CMA, `process_vm_readv`).

use super::{read, sbatch, script, JOB_TIMEOUT};
use crate::util::slurm::{cluster, mpi_image};
use crate::util::{rsing_bin, TestEnv};

const MPI: (&str, &str) = ("mpi.sbatch", include_str!("../../slurm/mpi.sbatch"));

/// Shared memory only, and CMA forced: without it Open MPI would fall back to TCP or to
/// copying through the shared segment, and the test would prove nothing.
const SHARED_MEMORY_ONLY: [(&str, &str); 2] = [
    ("OMPI_MCA_btl", "self,vader"),
    ("OMPI_MCA_btl_vader_single_copy_mechanism", "cma"),
];

const GREETING: &str = "rank 1 of 2 got: hello from rank 0, last byte x";

/// slurm/mpi.sbatch with two ranks: one MiB passes from rank 0 to rank 1.
#[test]
fn mpi_ranks_exchange_a_message_over_shared_memory() {
    let t = TestEnv::new();
    let Some(img) = mpi_image() else { return };
    let Some(slurm) = cluster() else { return };
    let mut cmd = sbatch(&slurm, &t, &img, "mpi.out").arg("--ntasks=2");
    for (k, v) in SHARED_MEMORY_ONLY {
        cmd = cmd.env(k, v);
    }
    let id = slurm.submit(cmd.arg(script(&t, MPI)).arg("/usr/bin/mpi-hello"));
    let job = slurm.wait_done(&t, id, JOB_TIMEOUT);
    let out = read(&t.cwd.join("mpi.out"));
    assert_eq!(job.field("JobState"), "COMPLETED", "{job:#?}\n{out}");
    assert!(out.contains(GREETING), "{out}");
    assert!(!out.contains("PMIX ERROR"), "{out}");
}

/// Why the ranks must share a user namespace: with the image server off, each rank's
/// container has its own, the kernel refuses CMA between them, and Open MPI says so.
#[test]
fn ranks_in_separate_user_namespaces_cannot_use_cma() {
    let t = TestEnv::new();
    let Some(img) = mpi_image() else { return };
    let Some(slurm) = cluster() else { return };
    let mut cmd = slurm
        .cmd(&t, "srun")
        .env("RSING_SHARE", "no")
        .env("PMIX_MCA_gds", "hash")
        .args(["--mpi=pmix", "-n", "2"])
        .arg(rsing_bin())
        .arg("exec")
        .arg(&img)
        .arg("/usr/bin/mpi-hello")
        .timeout(JOB_TIMEOUT);
    for (k, v) in SHARED_MEMORY_ONLY {
        cmd = cmd.env(k, v);
    }
    let out = cmd.assert_fails_naming("different user namespaces");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(GREETING));
}
