//! `rsing instance stats NAME [--json]`: CPU time, memory and number of processes of a running
//! instance, from its own cgroup where `instance start` could make one (cgroups v2 delegated to
//! the user), else summed over the processes of its PID namespace from /proc. The output says
//! which source it used, because the two differ: a cgroup counts page cache and every process
//! ever started in it; /proc counts resident memory (shared pages once per process) and the
//! CPU time of live processes plus what the namespace's processes have reaped.

use std::io::Write;

use serde::Serialize;

use super::state::State;
use super::{cgroup, usage};

#[derive(Debug, Serialize)]
struct Stats {
    name: String,
    /// `cgroup` or `proc`.
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cgroup: Option<String>,
    cpu_seconds: f64,
    memory_bytes: u64,
    /// `memory.current` (the cgroup's) or `rss` (VmRSS summed over the processes).
    memory_source: &'static str,
    processes: usize,
}

fn collect(s: &State) -> Stats {
    let from_cgroup = s
        .cgroup
        .as_deref()
        .and_then(|dir| cgroup::usage(std::path::Path::new(dir)).map(|u| (dir, u)));
    if let Some((dir, (cpu, memory, pids))) = from_cgroup {
        let (memory_bytes, memory_source) = match memory {
            Some(m) => (m, "memory.current"),
            None => (pids.iter().map(|p| usage::rss_bytes(*p)).sum(), "rss"),
        };
        return Stats {
            name: s.name.clone(),
            source: "cgroup",
            cgroup: Some(dir.to_string()),
            cpu_seconds: cpu,
            memory_bytes,
            memory_source,
            processes: pids.len(),
        };
    }
    let pids = usage::members(s.init_pid);
    Stats {
        name: s.name.clone(),
        source: "proc",
        cgroup: None,
        cpu_seconds: pids.iter().map(|p| usage::cpu_seconds(*p)).sum(),
        memory_bytes: pids.iter().map(|p| usage::rss_bytes(*p)).sum(),
        memory_source: "rss",
        processes: pids.len(),
    }
}

pub fn show(s: &State, json: bool) -> anyhow::Result<i32> {
    let st = collect(s);
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&st)?)?;
        return Ok(0);
    }
    let source = match &st.cgroup {
        Some(dir) => format!("cgroup {dir}"),
        None => "/proc of the processes in the instance's PID namespace".to_string(),
    };
    writeln!(out, "NAME       {}", st.name)?;
    writeln!(out, "SOURCE     {source}")?;
    writeln!(out, "CPU        {:.2} s", st.cpu_seconds)?;
    writeln!(
        out,
        "MEMORY     {:.1} MiB ({})",
        st.memory_bytes as f64 / 1048576.0,
        st.memory_source
    )?;
    writeln!(out, "PROCESSES  {}", st.processes)?;
    Ok(0)
}
