//! CLI basics: --help/--version, exit status and arguments, stdio, `run` and `shell`.

use crate::fixtures::BUSYBOX;
use crate::util::TestEnv;

#[test]
fn version_names_the_program_and_version() {
    let version = TestEnv::new().rsing().arg("--version").stdout_str();
    assert!(
        version.contains("rsing") && version.contains(env!("CARGO_PKG_VERSION")),
        "{version}"
    );
}

#[test]
fn help_lists_the_subcommands() {
    let help = TestEnv::new().rsing().arg("--help").stdout_str();
    for sub in ["exec", "run", "shell"] {
        assert!(
            help.contains(sub),
            "--help does not mention `{sub}`:\n{help}"
        );
    }
}

#[test]
fn every_subcommand_has_help() {
    let t = TestEnv::new();
    for sub in ["exec", "run", "shell"] {
        let help = t.rsing().args([sub, "--help"]).stdout_str();
        assert!(help.contains("Usage"), "`rsing {sub} --help`:\n{help}");
    }
}

#[test]
fn verbose_and_quiet_keep_stdout_for_the_command() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    for flag in ["-v", "--verbose", "-q", "--quiet"] {
        let out = t
            .rsing()
            .args([flag, "exec"])
            .arg(&img)
            .args(["echo", "data"])
            .stdout_str();
        assert_eq!(out, "data", "with {flag}");
    }
}

#[test]
fn exit_status_is_the_commands() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    t.exec(&img, ["/bin/true"]).assert_exit(0);
    t.exec(&img, ["/bin/false"]).assert_exit(1);
    t.exec(&img, ["sh", "-c", "exit 42"]).assert_exit(42);
}

#[test]
fn arguments_pass_verbatim() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let args = ["a b", "", "$HOME", "*", "--help", "ü"];
    let out = t.exec(&img, ["printf", "[%s]\\n"]).args(args).stdout_str();
    let expected: Vec<String> = args.iter().map(|a| format!("[{a}]")).collect();
    assert_eq!(out, expected.join("\n"));
}

#[test]
fn stdin_reaches_the_command() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    assert_eq!(t.exec(&img, ["cat"]).stdin("hello\n").stdout_str(), "hello");
}

#[test]
fn stdout_and_stderr_stay_apart() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let out = t
        .exec(&img, ["sh", "-c", "echo out; echo err >&2"])
        .assert_exit(0);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));
}

/// `yes` dies of SIGPIPE when `head` exits: only if rsing reset SIGPIPE to default before exec.
#[test]
fn pipelines_inside_get_default_sigpipe() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    assert_eq!(t.sh(&img, "yes | head -n 100000 | wc -l"), "100000");
}

#[test]
fn run_starts_the_runscript_with_arguments() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let out = t
        .rsing()
        .arg("run")
        .arg(&img)
        .args(["one", "two words"])
        .stdout_str();
    assert_eq!(out, "runscript-args: one two words");
    assert_eq!(
        t.rsing().arg("run").arg(&img).stdout_str(),
        "runscript-args:"
    );
}

#[test]
fn shell_reads_commands_from_stdin() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let out = t
        .rsing()
        .arg("shell")
        .arg(&img)
        .stdin("echo shell-ok\nexit 7\n")
        .assert_exit(7);
    assert!(String::from_utf8_lossy(&out.stdout).contains("shell-ok"));
}

#[test]
fn shell_option_selects_the_shell() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    for flag in ["-s", "--shell"] {
        let cmd = t.rsing().args(["shell", flag, "/bin/ash"]).arg(&img);
        let out = cmd.stdin("echo \"shell=$0\"\nexit 0\n").stdout_str();
        assert!(
            out.contains("shell=") && out.contains("ash"),
            "{flag}: {out}"
        );
    }
}

/// `script` gives rsing a pty; the prompt must name the image and the shell must see a tty.
#[test]
fn shell_on_a_tty_prompts_with_the_image_name() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    if !crate::util::have_tools(&["script"]) {
        return;
    }
    let cmd = t.rsing().arg("shell").arg(&img).on_tty();
    let out = cmd
        .stdin("tty\necho \"prompt=[$PS1]\"\nexit 0\n")
        .stdout_str();
    assert!(out.contains("/dev/pts/"), "no tty inside:\n{out}");
    let expanded = |l: &&str| l.contains("prompt=[") && !l.contains("$PS1");
    let prompt = out.lines().find(expanded).unwrap_or("");
    assert!(
        prompt.contains("busybox"),
        "PS1 does not name the image: {prompt}\n{out}"
    );
}

#[test]
fn completions_name_every_subcommand() {
    let t = TestEnv::new();
    for shell in ["bash", "zsh", "fish"] {
        let out = t.rsing().args(["completions", shell]).stdout_str();
        for word in ["exec", "pull", "build", "inspect", "module"] {
            assert!(out.contains(word), "{shell} completions lack '{word}'");
        }
    }
    t.rsing().args(["completions", "tcsh"]).assert_exit(2);
}

/// `-vv` prints the launch plan, the whole program of the start, one step a line.
#[test]
fn very_verbose_prints_the_plan() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let out = t
        .rsing()
        .args(["-vv", "exec"])
        .arg(&img)
        .arg("/bin/true")
        .assert_exit(0);
    let err = String::from_utf8_lossy(&out.stderr);
    for step in [
        "plan:   base: tmpfs (rsing's base)",
        "plan:   root: pivot into the base",
        "plan:   root: generated passwd -> /etc/passwd",
        "plan:   root: pivot into /newroot, detach the base",
        "plan:   root: chdir",
    ] {
        assert!(err.contains(step), "missing {step:?} in:\n{err}");
    }
}
