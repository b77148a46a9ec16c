//! What an instance uses, read from /proc: its processes (those in the init's PID namespace),
//! their CPU time and memory, and the TCP ports they listen on.
//!
//! The instance shares the host's network namespace, so `/proc/INIT/net/tcp` lists every socket
//! of the host; a port counts as the instance's when the listening socket's inode is open in
//! one of the instance's processes.

use std::collections::HashSet;
use std::path::Path;

/// The host PIDs of the live processes in `init`'s PID namespace (the init first); empty when
/// the init is gone. Processes of other users are not readable and so not counted.
pub fn members(init: i32) -> Vec<i32> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{init}/ns/pid")) else {
        return Vec::new();
    };
    let mut pids = vec![init];
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid != init
            && std::fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l == ns)
            && !zombie(pid)
        {
            pids.push(pid);
        }
    }
    pids
}

fn zombie(pid: i32) -> bool {
    stat_fields(pid).is_some_and(|f| matches!(f.first().map(String::as_str), Some("Z" | "X")))
}

/// The fields of /proc/PID/stat after the command name (field 3, the state, comes first).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(String::from).collect())
}

/// CPU seconds of `pid`: its own user and system time plus that of the children it has
/// reaped (the init reaps the instance's orphans, so finished work still counts).
pub fn cpu_seconds(pid: i32) -> f64 {
    let Some(f) = stat_fields(pid) else {
        return 0.0;
    };
    // utime, stime, cutime, cstime are fields 14-17, i.e. indices 11-14 here.
    let ticks: u64 = (11..=14)
        .filter_map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / if hz > 0 { hz as f64 } else { 100.0 }
}

/// Resident memory of `pid` in bytes (VmRSS; shared pages count in every process).
pub fn rss_bytes(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// The TCP ports the processes `pids` listen on, as `ADDR:PORT/tcp`, sorted.
pub fn listening_ports(pids: &[i32]) -> Vec<String> {
    let mut inodes = HashSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                let link = link.to_string_lossy();
                if let Some(ino) = link
                    .strip_prefix("socket:[")
                    .and_then(|s| s.strip_suffix(']'))
                {
                    inodes.insert(ino.to_string());
                }
            }
        }
    }
    let Some(first) = pids.first() else {
        return Vec::new();
    };
    let mut ports = Vec::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        let path = format!("/proc/{first}/net/{file}");
        let Ok(text) = std::fs::read_to_string(Path::new(&path)) else {
            continue;
        };
        ports.extend(parse_listeners(&text, v6, &inodes));
    }
    ports.sort();
    ports.dedup();
    ports
}

/// The LISTEN entries of a /proc/net/tcp{,6} table whose socket inode is in `inodes`.
fn parse_listeners(table: &str, v6: bool, inodes: &HashSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
        if f.len() < 10 || f[3] != "0A" || !inodes.contains(f[9]) {
            continue;
        }
        let Some((addr, port)) = f[1].split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port, 16) else {
            continue;
        };
        if let Some(addr) = decode_addr(addr, v6) {
            out.push(format!("{addr}:{port}/tcp"));
        }
    }
    out
}

/// A /proc/net address: the address's bytes printed as native-endian 32-bit words.
fn decode_addr(hex: &str, v6: bool) -> Option<String> {
    let words: Vec<u32> = (0..hex.len() / 8)
        .map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if v6 {
        let b: [u8; 16] = bytes.try_into().ok()?;
        Some(format!("[{}]", std::net::Ipv6Addr::from(b)))
    } else {
        let b: [u8; 4] = bytes.try_into().ok()?;
        Some(std::net::Ipv4Addr::from(b).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_of_given_inodes_only() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 4242 1 0 100 0 0 10 0\n   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 17 1 0 100 0 0 10 0\n   2: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1001        0 4243 1 0 100 0 0 10 0\n";
        let inodes: HashSet<String> = ["4242", "4243"].map(String::from).into();
        let got = parse_listeners(table, false, &inodes);
        if cfg!(target_endian = "little") {
            assert_eq!(got, vec!["127.0.0.1:8080/tcp".to_string()]);
        }
        let v6 = "  sl  local_address                         remote_address                        st\n   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1001        0 77 1\n";
        let got = parse_listeners(v6, true, &["77".to_string()].into());
        if cfg!(target_endian = "little") {
            assert_eq!(got, vec!["[::1]:80/tcp".to_string()]);
        }
    }

    #[test]
    fn own_process_has_memory_and_counts_cpu() {
        let me = std::process::id() as i32;
        assert!(rss_bytes(me) > 0);
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0 && cpu_seconds(me) > 0.0);
        assert!(members(me).is_empty() || members(me)[0] == me);
    }
}
