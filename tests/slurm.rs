//! rsing under a real Slurm: one node on 127.0.0.1 started by tests/services/slurm.sh, jobs
//! submitted as the unprivileged test user. The batch scripts of slurm/ run as shipped:
//! SLURM_* variables inside, the command's exit status as the job's state, job arrays on one
//! image and on one docker:// cache, scancel reaching the command; MPI ranks launched by
//! `srun --mpi=pmix` exchanging a message over shared memory; the SPANK plugin
//! (`srun --container-image`); a GPU given by GRES.

use crate::fixtures::BUSYBOX;
use crate::util::oci::{self, Layout};
use crate::util::registry::{TestRegistry, REGISTRY_TOOLS};
use crate::util::slurm::{cluster, wait_for_file, Slurm};
use crate::util::{have_tools, processes_matching, RsingCmd, TestEnv};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod gpu;
mod mpi;
mod spank;

const SINGLE_TASK: (&str, &str) = (
    "single-task.sbatch",
    include_str!("../slurm/single-task.sbatch"),
);
const ARRAY: (&str, &str) = ("array.sbatch", include_str!("../slurm/array.sbatch"));

/// Generous bound for a short job: a job that takes longer is hanging.
const JOB_TIMEOUT: Duration = Duration::from_secs(60);

/// A private copy of busybox.sqfs in the test dir: the test's jobs start its image server
/// themselves instead of joining one another test left lingering.
fn private_image(t: &TestEnv) -> Option<PathBuf> {
    let img = crate::fixtures::get(BUSYBOX)?;
    let copy = t.dir.join("busybox.sqfs");
    std::fs::copy(&img, &copy).expect("copying the busybox image");
    Some(copy)
}

/// `sbatch --parsable -o OUT --export=ALL,IMAGE=IMAGE`: add options, then the script
/// ([`script`]) and its arguments, and hand it to [`Slurm::submit`].
fn sbatch(slurm: &Slurm, t: &TestEnv, image: &Path, out: &str) -> RsingCmd {
    slurm
        .cmd(t, "sbatch")
        .args(["--parsable", "-o"])
        .arg(t.cwd.join(out))
        .arg(format!("--export=ALL,IMAGE={}", image.display()))
}

/// One of slurm/'s scripts, written into the test dir (the repository may be unreadable for
/// the test user).
fn script(t: &TestEnv, (name, text): (&str, &str)) -> PathBuf {
    t.write(name, text)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn batch_job_runs_in_the_container_and_sees_slurm_variables() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let Some(slurm) = cluster() else { return };
    let command = "echo job=$SLURM_JOB_ID name=$SLURM_JOB_NAME ntasks=$SLURM_NTASKS \
                  submit=$SLURM_SUBMIT_DIR node=$SLURMD_NODENAME; \
                  echo user=$(id -un) cwd=$(pwd); test -d /.singularity.d && echo in-image";
    let cmd = sbatch(&slurm, &t, &img, "job.out")
        .arg(script(&t, SINGLE_TASK))
        .args(["sh", "-c", command]);
    let id = slurm.submit(cmd);
    let job = slurm.wait_done(&t, id, JOB_TIMEOUT);
    let out = read(&t.cwd.join("job.out"));
    assert_eq!(job.field("JobState"), "COMPLETED", "{job:#?}\n{out}");
    assert_eq!(job.field("ExitCode"), "0:0");
    let me = crate::util::caller().name;
    let expected = [
        format!(
            "job={id} name=rsing-task ntasks=1 submit={}",
            t.cwd.display()
        ),
        format!("user={me} cwd={}", t.cwd.display()),
        "in-image".to_string(),
    ];
    for line in expected {
        assert!(
            out.lines().any(|l| l.starts_with(&line)),
            "no `{line}` in:\n{out}"
        );
    }
}

#[test]
fn the_commands_exit_status_becomes_the_job_state() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let Some(slurm) = cluster() else { return };
    let cases = [
        ("exit 3", "FAILED", "3:0"),
        ("kill -KILL $$", "FAILED", "137:0"),
    ];
    let ids: Vec<u32> = cases
        .iter()
        .enumerate()
        .map(|(i, (command, _, _))| {
            let cmd = sbatch(&slurm, &t, &img, &format!("exit-{i}.out"))
                .arg(script(&t, SINGLE_TASK))
                .args(["sh", "-c", command]);
            slurm.submit(cmd)
        })
        .collect();
    for (id, (command, state, code)) in ids.into_iter().zip(cases) {
        let job = slurm.wait_done(&t, id, JOB_TIMEOUT);
        assert_eq!(
            (job.field("JobState"), job.field("ExitCode")),
            (state, code),
            "`{command}`: {job:#?}"
        );
    }
    // sbatch --wait passes the job's exit status on, as scripts chaining jobs expect.
    let status = sbatch(&slurm, &t, &img, "wait.out")
        .args(["--wait", "--quiet"])
        .arg(script(&t, SINGLE_TASK))
        .args(["sh", "-c", "exit 5"])
        .timeout(JOB_TIMEOUT)
        .run()
        .status;
    assert_eq!(status.code(), Some(5));
}

/// Eight tasks start the same image at once, wait until all of them run, then end one after
/// the other, each reading the image until it ends. A task must not lose its image when
/// another task ends: Slurm kills what is left in an ending job's cgroup, so each task's
/// image server is its own (servers are scoped to a job step).
#[test]
fn job_array_of_eight_tasks_on_one_image() {
    let t = TestEnv::new();
    let Some(img) = private_image(&t) else { return };
    let Some(slurm) = cluster() else { return };
    let command = "id=$SLURM_ARRAY_TASK_ID; echo > started-$id; n=0; \
                   while [ $(ls started-* | wc -l) -lt 8 ] && [ $n -lt 300 ]; do \
                   sleep 0.1; n=$((n+1)); done; i=0; while [ $i -lt $id ]; do \
                   sleep 0.3; ls /bin >/dev/null || exit 9; i=$((i+1)); done; \
                   echo array task $id of job $SLURM_ARRAY_JOB_ID";
    let cmd = sbatch(&slurm, &t, &img, "array-%a.out")
        .arg(script(&t, ARRAY))
        .args(["sh", "-c", command]);
    let id = slurm.submit(cmd);
    let job = slurm.wait_done(&t, id, JOB_TIMEOUT);
    assert_eq!(job.records.len(), 8, "{job:#?}");
    for task in 0..8 {
        let out = read(&t.cwd.join(format!("array-{task}.out")));
        assert_eq!(out.trim_end(), format!("array task {task} of job {id}"));
    }
    for r in &job.records {
        assert_eq!(
            (r["JobState"].as_str(), r["ExitCode"].as_str()),
            ("COMPLETED", "0:0"),
            "{r:#?}"
        );
    }
}

/// Eight array tasks run the same docker:// image for the first time with one cache: one of
/// them downloads (once) and converts it, the others wait for it, all run.
#[test]
fn job_array_on_one_docker_image_shares_the_cache() {
    let t = TestEnv::new();
    let Some(sandbox) = crate::fixtures::get(crate::fixtures::Fixture::Sandbox) else {
        return;
    };
    if !have_tools(REGISTRY_TOOLS) {
        return;
    }
    let Some(slurm) = cluster() else { return };
    let registry = TestRegistry::start(&t.dir.join("registry"), None);
    let layout = Layout::create(&t.dir.join("layout"));
    let written = layout.add_image("1", &oci::busybox_image(&sandbox));
    registry.push_layout(&layout.dir, "1", "busybox:1");
    let uri = format!("docker://{}", registry.reference("busybox:1"));
    let cache = t.dir.join("cache");
    let cmd = sbatch(&slurm, &t, Path::new(&uri), "array-%a.out")
        .env("RSING_CACHEDIR", &cache)
        .arg(script(&t, ARRAY))
        .args(["sh", "-c", "echo task $SLURM_ARRAY_TASK_ID"]);
    let id = slurm.submit(cmd);
    let job = slurm.wait_done(&t, id, JOB_TIMEOUT);
    for task in 0..8 {
        let out = read(&t.cwd.join(format!("array-{task}.out")));
        assert!(
            out.ends_with(&format!("task {task}\n")),
            "task {task}: {out}"
        );
    }
    assert!(
        job.records.iter().all(|r| r["JobState"] == "COMPLETED"),
        "{job:#?}"
    );
    let sifs: Vec<_> = std::fs::read_dir(cache.join("images"))
        .expect("the cache's images dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".sif"))
        .collect();
    assert_eq!(sifs.len(), 1, "converted images: {sifs:?}");
    let layer = format!("/blobs/{}", written.layers[0]);
    let log = registry.log();
    let gets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET /v2/") && l.contains(&layer))
        .collect();
    assert_eq!(gets.len(), 1, "layer downloads:\n{}", gets.join("\n"));
}

/// The job's time limit, like scancel, reaches the command as SIGTERM while the image is still
/// served: its trap reads the image and writes a marker, and the job ends as TIMEOUT. Slurm
/// enforces limits in whole minutes, checked about every 30 s, so this test takes 60-90 s.
#[test]
fn time_limit_reaches_the_command_which_can_clean_up() {
    let t = TestEnv::new();
    let Some(img) = private_image(&t) else { return };
    let Some(slurm) = cluster() else { return };
    let marker = t.cwd.join("marker");
    let command = trapping_command(&marker, &t.cwd.join("ready"));
    let cmd = sbatch(&slurm, &t, &img, "job.out")
        .arg("--time=1")
        .arg(script(&t, SINGLE_TASK))
        .args(["sh", "-c", &command, &t.marker()]);
    let id = slurm.submit(cmd);
    let job = slurm.wait_done(&t, id, Duration::from_secs(180));
    assert_eq!(job.field("JobState"), "TIMEOUT", "{job:#?}");
    assert_trap_read_the_image(&marker);
}

/// A command that says it is ready (file `ready`), then loops until SIGTERM, whose trap writes
/// `got-TERM` and the number of entries it can still list in the image's /bin to `marker`, and
/// exits 7.
fn trapping_command(marker: &Path, ready: &Path) -> String {
    format!(
        "trap 'echo got-TERM > {m}; ls /bin | wc -l >> {m}; exit 7' TERM; \
         echo > {r}; while :; do sleep 0.1; done",
        m = marker.display(),
        r = ready.display()
    )
}

/// The trap of [`trapping_command`] ran and could still read the image.
fn assert_trap_read_the_image(marker: &Path) {
    let text = read(marker);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("got-TERM"), "marker: {text}");
    let entries: usize = lines.next().unwrap_or("").trim().parse().unwrap_or(0);
    assert!(
        entries > 100,
        "the trap could not list /bin in the image: {text}"
    );
}

/// scancel sends SIGTERM to the job's process, rsing (the script execs it), which relays it
/// to the command. The command's trap still reads the image (the image server is not
/// signalled), writes its marker, and the job ends long before Slurm's SIGKILL.
#[test]
fn scancel_reaches_the_command_which_can_clean_up() {
    let t = TestEnv::new();
    let Some(img) = private_image(&t) else { return };
    let Some(slurm) = cluster() else { return };
    let marker = t.cwd.join("marker");
    let ready = t.cwd.join("ready");
    let command = trapping_command(&marker, &ready);
    let cmd = sbatch(&slurm, &t, &img, "job.out")
        .arg(script(&t, SINGLE_TASK))
        .args(["sh", "-c", &command, &t.marker()]);
    let id = slurm.submit(cmd);
    wait_for_file(&ready, JOB_TIMEOUT);
    let cancelled = Instant::now();
    slurm.cmd(&t, "scancel").arg(id.to_string()).stdout_str();
    let job = slurm.wait_done(&t, id, Duration::from_secs(20));
    let took = cancelled.elapsed();
    assert_eq!(
        (job.field("JobState"), job.field("ExitCode")),
        ("CANCELLED", "7:0"),
        "{job:#?}"
    );
    assert_trap_read_the_image(&marker);
    // KillWait is 5 s in the test cluster: the job ended on its own, not by SIGKILL.
    assert!(
        took < Duration::from_secs(5),
        "the job took {took:?} to end"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !processes_matching(&t.marker()).is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes left: {:?}",
            processes_matching(&t.marker())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The batch script an instance test submits: start an instance, join it through
/// `instance://`, list it, and (with STOP=1) stop it before the job ends.
const INSTANCE_JOB: &str = r#"#!/bin/bash
#SBATCH --ntasks=1
set -euo pipefail
name=$1 marker=$2
rsing instance start "$IMAGE" "$name" "$marker"
rsing exec "instance://$name" sh -c 'echo joined; ps | grep -c "[s]h -c while"'
rsing instance list | grep -q "^$name " && echo listed
touch "$READY"
if [ "${STOP:-0}" = 1 ]; then
    rsing instance stop -t 5 "$name"
    echo stopped
else
    sleep 1000
fi
"#;

/// A busybox sandbox whose start script loops forever, carrying `marker` in its command line.
fn looping_sandbox(t: &TestEnv) -> PathBuf {
    let root = crate::fixtures::busybox_rootfs(&t.dir);
    let script = "#!/bin/sh\nexec sh -c 'while true; do sleep 1; done' \"$1\"\n";
    crate::fixtures::rootfs::write(&root, ".singularity.d/startscript", script, 0o755);
    root
}

/// An instance inside a batch job: started, joined with `instance://` (its processes seen),
/// listed and stopped by the job; nothing of it runs after the job. Then a job that leaves its
/// instance running is cancelled: with cgroup process tracking the instance ends with the job
/// (docs/instances.md), which is checked where the cluster tracks by cgroup.
#[test]
fn instance_in_a_batch_job_is_joined_and_ends_with_it() {
    let t = TestEnv::new();
    let Some(slurm) = cluster() else { return };
    let root = looping_sandbox(&t);
    let job_script = t.write("instance.sbatch", INSTANCE_JOB);
    let marker = t.marker();
    let ready = t.cwd.join("ready");
    let submit = |out: &str, stop: bool, name: &str| {
        let cmd = slurm
            .cmd(&t, "sbatch")
            .args(["--parsable", "-o"])
            .arg(t.cwd.join(out))
            .arg(format!(
                "--export=ALL,IMAGE={},READY={},STOP={}",
                root.display(),
                ready.display(),
                u8::from(stop)
            ))
            .arg(&job_script)
            .args([name, &marker]);
        slurm.submit(cmd)
    };
    let gone = || {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !processes_matching(&marker).is_empty() {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    };

    let id = submit("stopped.out", true, "svc");
    let job = slurm.wait_done(&t, id, JOB_TIMEOUT);
    let out = read(&t.cwd.join("stopped.out"));
    assert_eq!(job.field("JobState"), "COMPLETED", "{job:#?}\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    let joined = lines.iter().position(|l| *l == "joined");
    assert!(
        joined.is_some_and(|i| lines.get(i + 1) == Some(&"1")),
        "the joined command did not see the instance's loop:\n{out}"
    );
    assert!(
        out.contains("listed\n") && out.contains("stopped\n"),
        "{out}"
    );
    assert!(gone(), "left running: {:?}", processes_matching(&marker));

    if std::env::var("RSING_SLURM_PROCTRACK").as_deref() != Ok("cgroup") {
        crate::util::skip(
            "instance_in_a_batch_job: the end-of-job check needs proctrack/cgroup \
             (RSING_SLURM_PROCTRACK is not cgroup); the instance stopped by the job was checked",
        );
        return;
    }
    let _ = std::fs::remove_file(&ready);
    let id = submit("left.out", false, "left");
    wait_for_file(&ready, JOB_TIMEOUT);
    assert!(
        !processes_matching(&marker).is_empty(),
        "the instance is not running"
    );
    slurm.cmd(&t, "scancel").arg(id.to_string()).stdout_str();
    slurm.wait_done(&t, id, Duration::from_secs(30));
    let ended = gone();
    if !ended {
        // Do not leave it behind for the next tests.
        slurm
            .cmd(&t, "rsing")
            .args(["instance", "stop", "--all", "-t", "1"])
            .run();
    }
    assert!(ended, "the job's instance outlived the job");
}
