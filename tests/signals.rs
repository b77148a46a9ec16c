//! Signals sent to rsing reach the command; a command killed by signal N makes rsing exit
//! 128+N; afterwards no process of the test and no mount are left on the host.

use crate::fixtures::BUSYBOX;
use crate::util::TestEnv;
use nix::sys::signal::Signal;

/// Runs a trapping shell, waits until it is ready, signals rsing and expects the trap's exit.
fn assert_forwarded(signal: Signal) {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let name = &signal.as_str()[3..];
    let script =
        format!("trap 'echo got-{name}; exit 3' {name}; echo ready; while :; do sleep 0.1; done");
    let mut running = t.exec(&img, ["sh", "-c", &script, &t.marker()]).spawn();
    running.wait_for_line("ready");
    running.signal(signal);
    let out = running.assert_exit(3);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("got-{name}")),
        "no trap output for {name}:\n{stdout}"
    );
    t.assert_host_clean(&t.marker(), &img);
}

#[test]
fn sigterm_reaches_the_command() {
    assert_forwarded(Signal::SIGTERM);
}

#[test]
fn sigint_reaches_the_command() {
    assert_forwarded(Signal::SIGINT);
}

#[test]
fn sighup_reaches_the_command() {
    assert_forwarded(Signal::SIGHUP);
}

#[test]
fn sigusr1_reaches_the_command() {
    assert_forwarded(Signal::SIGUSR1);
}

#[test]
fn sigusr2_reaches_the_command() {
    assert_forwarded(Signal::SIGUSR2);
}

#[test]
fn death_by_signal_exits_128_plus_n() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    for (signal, code) in [("KILL", 137), ("TERM", 143), ("INT", 130)] {
        let script = format!("kill -{signal} $$");
        t.exec(&img, ["sh", "-c", &script, &t.marker()])
            .assert_exit(code);
        t.assert_host_clean(&t.marker(), &img);
    }
}

/// A command killed from outside the container (as the kernel's OOM killer or a user would).
#[test]
fn command_killed_from_outside_exits_137() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let script = "echo ready; while :; do sleep 0.1; done";
    let mut running = t.exec(&img, ["sh", "-c", script, &t.marker()]).spawn();
    running.wait_for_line("ready");
    let payload = crate::util::processes_matching(&t.marker())
        .into_iter()
        .find(|(pid, cmd)| *pid as i32 != running.pid() && cmd.starts_with("sh "))
        .unwrap_or_else(|| {
            panic!(
                "no container shell found: {:?}",
                crate::util::processes_matching(&t.marker())
            )
        });
    let pid = nix::unistd::Pid::from_raw(payload.0 as i32);
    nix::sys::signal::kill(pid, Signal::SIGKILL).expect("killing the container shell");
    running.assert_exit(137);
    t.assert_host_clean(&t.marker(), &img);
}

#[test]
fn normal_exit_leaves_nothing_behind() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    t.exec(&img, ["sh", "-c", "sleep 0 & wait; true", &t.marker()])
        .assert_exit(0);
    t.assert_host_clean(&t.marker(), &img);
}

/// A signal the caller ignores stays ignored for the command (`nohup rsing exec …`): rsing
/// restores only the SIGPIPE default its own runtime changed.
#[test]
fn inherited_ignored_signals_stay_ignored() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let out = std::process::Command::new("nohup")
        .arg(crate::util::rsing_bin())
        .args(["exec".as_ref(), img.as_os_str()])
        .args(["sh", "-c", "kill -HUP $$; echo survived"])
        .current_dir(&t.cwd)
        .env("HOME", &t.home)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("running nohup");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "survived",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
