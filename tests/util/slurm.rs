//! The Slurm cluster that `tests/services/slurm.sh` starts for the tests (found through
//! `SLURM_CONF`), its client commands run as the test user with a job environment built from
//! the test's directories, job state read back with `scontrol`, and the Open MPI test image.

use super::{caller, have_tools, missing, rsing_bin, scratch_root, RsingCmd, TestEnv};
use crate::fixtures::{remove_tree, Fixture};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The running test cluster.
pub struct Slurm {
    conf: OsString,
    /// The SPANK plugin the service script built and configured, if any.
    pub spank: Option<PathBuf>,
    /// Fake GPUs configured as GRES `gpu` (0 without the GPU stub).
    pub gpus: usize,
}

/// The cluster, or `None` (a visible skip; a failure under CI) when the service did not start.
pub fn cluster() -> Option<Slurm> {
    let Some(conf) = std::env::var_os("SLURM_CONF") else {
        missing("a Slurm cluster (SLURM_CONF; started by tests/services/slurm.sh under `sudo ./run-tests`)");
        return None;
    };
    if !have_tools(&["sbatch", "srun", "scontrol", "scancel"]) {
        return None;
    }
    let gpus = std::env::var("RSING_SLURM_GPUS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some(Slurm {
        conf,
        spank: std::env::var_os("RSING_SLURM_SPANK").map(PathBuf::from),
        gpus,
    })
}

/// A finished (or still known) job: `scontrol show job` fields of each of its records (one
/// per array task).
#[derive(Debug)]
pub struct Job {
    pub records: Vec<HashMap<String, String>>,
}

impl Job {
    /// The field of the job's first record (`JobState`, `ExitCode`, ...).
    pub fn field(&self, key: &str) -> &str {
        self.records[0].get(key).map(String::as_str).unwrap_or("")
    }
}

const ACTIVE_STATES: [&str; 5] = [
    "PENDING",
    "CONFIGURING",
    "RUNNING",
    "COMPLETING",
    "SUSPENDED",
];

impl Slurm {
    /// The environment jobs are submitted with (sbatch and srun export it into the job): the
    /// test's HOME, the rsing under test first on PATH (as `rsing`, which slurm/'s scripts
    /// call), no RSING_* variables, this cluster.
    pub fn job_env(&self, t: &TestEnv) -> Vec<(OsString, OsString)> {
        let bin = t.dir.join("bin");
        if !bin.join("rsing").exists() {
            std::fs::create_dir_all(&bin).expect("creating the test's bin dir");
            let linked = std::os::unix::fs::symlink(rsing_bin(), bin.join("rsing"));
            assert!(
                linked.is_ok() || bin.join("rsing").exists(),
                "linking rsing: {linked:?}"
            );
        }
        let path = format!(
            "{}:/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin",
            bin.display()
        );
        let me = caller().name;
        [
            ("PATH", OsString::from(path)),
            ("HOME", t.home.clone().into_os_string()),
            ("USER", me.clone().into()),
            ("LOGNAME", me.into()),
            ("LANG", "C.UTF-8".into()),
            ("SLURM_CONF", self.conf.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (OsString::from(k), v))
        .collect()
    }

    /// A Slurm client (`sbatch`, `srun`, ...) run in the test's cwd with [`Slurm::job_env`].
    pub fn cmd(&self, t: &TestEnv, program: &str) -> RsingCmd {
        RsingCmd::new(Path::new(program), self.job_env(t), &t.cwd)
    }

    /// `sbatch --parsable ARGS...`: the job id.
    pub fn submit(&self, cmd: RsingCmd) -> u32 {
        let out = cmd.stdout_str();
        out.split(';')
            .next()
            .and_then(|id| id.trim().parse().ok())
            .unwrap_or_else(|| panic!("sbatch printed no job id: {out:?}"))
    }

    /// `scontrol show job -o ID`: every record of the job (an array has one per task).
    pub fn job(&self, t: &TestEnv, id: u32) -> Job {
        let out = self
            .cmd(t, "scontrol")
            .args(["show", "job", "-o", &id.to_string()])
            .stdout_str();
        let records = out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                line.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .collect();
        Job { records }
    }

    /// Waits until no record of job `id` is pending, running or completing; panics after
    /// `timeout` (a job left hanging) with what scontrol says.
    pub fn wait_done(&self, t: &TestEnv, id: u32, timeout: Duration) -> Job {
        let deadline = Instant::now() + timeout;
        loop {
            let job = self.job(t, id);
            let active = job.records.iter().any(|r| {
                let state = r.get("JobState").map(String::as_str).unwrap_or("");
                ACTIVE_STATES.contains(&state)
            });
            if !active && !job.records.is_empty() {
                return job;
            }
            assert!(
                Instant::now() < deadline,
                "job {id} still active after {timeout:?}: {job:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Waits up to `timeout` for `path` to exist (a job's "ready" file).
pub fn wait_for_file(path: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An MPI program: rank 0 sends rank 1 one MiB, more than Open MPI's shared-memory eager
/// limit, so the transfer uses the single-copy path (CMA, `process_vm_readv`) between the
/// ranks' processes.
const MPI_HELLO_C: &str = r#"
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv) {
    int rank, size, n = 1 << 20;
    char *buf = malloc(n);
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (rank == 0) {
        memset(buf, 'x', n);
        strcpy(buf, "hello from rank 0");
        MPI_Send(buf, n, MPI_CHAR, 1, 0, MPI_COMM_WORLD);
    } else if (rank == 1) {
        MPI_Recv(buf, n, MPI_CHAR, 0, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        printf("rank 1 of %d got: %s, last byte %c\n", size, buf, buf[n - 1]);
    }
    MPI_Finalize();
    return 0;
}
"#;

/// Makes the MPI image's root: the busybox sandbox ($1) copied to $2, plus the program ($3)
/// as /usr/bin/mpi-hello, the host's Open MPI and PMIx trees (plugins, help texts, config),
/// and the `ldd` closure of the program and of every plugin, at their host paths (merged /usr).
const MPI_ROOTFS_SH: &str = r#"
set -eu
base=$1 root=$2 prog=$3
multi=$(gcc -print-multiarch)
cp -a "$base/." "$root/"
mkdir -p "$root/usr/lib/$multi" "$root/usr/lib64"
ln -s usr/lib "$root/lib"
ln -s usr/lib64 "$root/lib64"
for d in /usr/lib/$multi/openmpi /usr/lib/$multi/pmix2 /usr/share/openmpi /etc/openmpi; do
    if [ -e "$d" ]; then mkdir -p "$root${d%/*}"; cp -a "$d" "$root$d"; fi
done
install -m 0755 "$prog" "$root/usr/bin/mpi-hello"
{ echo "$prog"; find /usr/lib/$multi/openmpi /usr/lib/$multi/pmix2 -name '*.so*' -type f; } |
    xargs -n 20 ldd 2>/dev/null |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u |
    while read -r lib; do
        dest=$root$(echo "$lib" | sed -e 's,^/lib/,/usr/lib/,' -e 's,^/lib64/,/usr/lib64/,')
        if [ ! -e "$dest" ]; then mkdir -p "${dest%/*}"; cp -L "$lib" "$dest"; fi
    done
"#;

/// A SquashFS image with Debian's Open MPI (the host's, so inside and outside match) and
/// /usr/bin/mpi-hello; built once and cached under the scratch dir, keyed by this code and
/// the Open MPI version. `None` (a skip) without mpicc or the fixtures' tools.
pub fn mpi_image() -> Option<PathBuf> {
    if !have_tools(&["mpicc", "ldd", "gcc", "mksquashfs"]) {
        return None;
    }
    let sandbox = crate::fixtures::get(Fixture::Sandbox)?;
    static IMAGE: OnceLock<PathBuf> = OnceLock::new();
    Some(IMAGE.get_or_init(|| build_mpi_image(&sandbox)).clone())
}

fn build_mpi_image(sandbox: &Path) -> PathBuf {
    let version = tool("mpicc", scratch_root())
        .arg("--showme:version")
        .stdout_str();
    let mut h = Sha256::new();
    for part in [MPI_HELLO_C, MPI_ROOTFS_SH, &version] {
        h.update(part.as_bytes());
    }
    let key = super::hex(&h.finalize());
    let dir = scratch_root().join(format!("slurm-mpi-{}", &key[..12]));
    let dest = dir.join("mpi.sqfs");
    if dest.exists() {
        return dest;
    }
    let work = dir.join(format!(".staging-{}", std::process::id()));
    if work.exists() {
        remove_tree(&work);
    }
    std::fs::create_dir_all(work.join("rootfs")).expect("creating the MPI image staging dir");
    std::fs::write(work.join("hello.c"), MPI_HELLO_C).expect("writing hello.c");
    tool("mpicc", &work)
        .args(["-O2", "-o", "hello", "hello.c"])
        .stdout_str();
    tool("sh", &work)
        .args(["-c", MPI_ROOTFS_SH, "mpi-rootfs"])
        .arg(sandbox)
        .args(["rootfs", "hello"])
        .stdout_str();
    tool("mksquashfs", &work)
        .args([
            "rootfs",
            "mpi.sqfs",
            "-comp",
            "zstd",
            "-Xcompression-level",
            "3",
        ])
        .args(["-noappend", "-quiet", "-no-progress", "-all-root"])
        .stdout_str();
    std::fs::rename(work.join("mpi.sqfs"), &dest).expect("publishing the MPI image");
    remove_tree(&work);
    dest
}

/// `program` run in `cwd` with this process's environment, reported like rsing on failure.
fn tool(program: &str, cwd: &Path) -> RsingCmd {
    RsingCmd::new(Path::new(program), std::env::vars_os().collect(), cwd)
}
