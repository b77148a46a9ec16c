//! Environment modules: rsing's own modulefiles (modulefiles/rsing) and the container modules
//! `rsing module create` writes, loaded by Lmod (Debian's, `RSING_TEST_LMOD_INIT`) and by
//! environment-modules (unpacked into a prefix, `RSING_TEST_ENVMODULES_INIT`; both from
//! tests/services/modules.sh) in a login shell as the test user, and in an sbatch job when the
//! Slurm test cluster runs (`SLURM_CONF`, from tests/services/slurm.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::fixtures::{Fixture, BUSYBOX};
use crate::util::{have_tools, missing, RsingCmd, TestEnv};

const RSING_TCL: &str = include_str!("../modulefiles/rsing/0.1.0");
const RSING_LUA: &str = include_str!("../modulefiles/rsing/0.1.0.lua");

/// `path` as one single-quoted shell word.
fn quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

/// The file every test image carries, so output proves the command ran inside.
const MARKER: &str = "/etc/rsing-module-marker";

#[derive(Clone, Copy, Debug, PartialEq)]
enum System {
    Lmod,
    EnvModules,
}

impl System {
    /// The init script of this module system, or None (a visible skip; fails under CI).
    fn init(self) -> Option<PathBuf> {
        let var = match self {
            System::Lmod => "RSING_TEST_LMOD_INIT",
            System::EnvModules => "RSING_TEST_ENVMODULES_INIT",
        };
        match std::env::var_os(var) {
            Some(path) if Path::new(&path).exists() => Some(path.into()),
            _ => {
                missing(&format!(
                    "{self:?} ({var}, set by tests/services/modules.sh under sudo ./run-tests)"
                ));
                None
            }
        }
    }

    /// Shell lines that give a login shell this system's `module` command. Lmod comes from the
    /// login profile (Debian's /etc/profile.d/lmod.sh) unless that is missing; for
    /// environment-modules, any Lmod the profile set up is removed first.
    fn prelude(self, init: &Path) -> String {
        let init = quote(init);
        match self {
            System::Lmod => format!("type module >/dev/null 2>&1 || . {init}\n"),
            System::EnvModules => format!(
                "clearLmod >/dev/null 2>&1; unset BASH_ENV MODULEPATH __LMOD_REF_COUNT_MODULEPATH\n\
                 . {init}\n"
            ),
        }
    }
}

/// A minimal login environment: nothing of the caller's module system leaks in.
fn login_env(t: &TestEnv) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut env: Vec<(std::ffi::OsString, std::ffi::OsString)> = vec![
        ("HOME".into(), t.home.clone().into()),
        ("TMPDIR".into(), t.tmp.clone().into()),
        ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
        ("LANG".into(), "C.UTF-8".into()),
    ];
    for key in ["USER", "LOGNAME", "XDG_RUNTIME_DIR", "SLURM_CONF"] {
        if let Some(v) = std::env::var_os(key) {
            env.push((key.into(), v));
        }
    }
    env
}

/// Runs `script` in `bash -l -c` with `system`'s module command; returns stdout and stderr
/// together (module systems write to stderr), expecting exit 0.
fn login_shell(t: &TestEnv, system: System, init: &Path, script: &str) -> String {
    let full = format!("exec 2>&1\n{}{script}", system.prelude(init));
    let out = RsingCmd::new(Path::new("/bin/bash"), login_env(t), &t.cwd)
        .args(["-l", "-c", &full])
        .assert_exit(0);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_has(out: &str, want: &str) {
    assert!(out.contains(want), "expected {want:?} in:\n{out}");
}

/// busybox as a SquashFS with labels (one naming the commands) and the marker file.
fn labelled_image(t: &TestEnv) -> Option<PathBuf> {
    let sandbox = crate::fixtures::get(Fixture::Sandbox)?;
    if !have_tools(&["mksquashfs"]) {
        return None;
    }
    let root = t.dir.join("rootfs");
    run(Command::new("cp").arg("-a").arg(&sandbox).arg(&root));
    std::fs::create_dir_all(root.join(".singularity.d")).unwrap();
    let labels = r#"{"org.rsing.module.commands": "sh cat",
        "org.opencontainers.image.title": "Busybox \"tools\" $HOME [x] ]]",
        "maintainer": "Ann O'Nym"}"#;
    std::fs::write(root.join(".singularity.d/labels.json"), labels).unwrap();
    std::fs::write(root.join(&MARKER[1..]), "inside-the-image\n").unwrap();
    let img = t.dir.join("tools image.sqfs");
    run(Command::new("mksquashfs")
        .arg(&root)
        .arg(&img)
        .args(["-quiet", "-noappend", "-all-root"]));
    Some(img)
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("starting a tool");
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

/// Writes a module `tools/bb/1.0` for `img` in `<test>/modules`; returns that tree.
fn create_module(t: &TestEnv, img: &Path, format: &str) -> PathBuf {
    let dest = t.dir.join("modules");
    t.rsing()
        .args([
            "module",
            "create",
            "--from-labels",
            "--cmd",
            "bbprintf=printf",
        ])
        .args(["--format", format, "--dest"])
        .arg(&dest)
        .arg("--image")
        .arg(img)
        .arg("tools/bb/1.0")
        .stdout_str();
    dest
}

/// What a loaded container module must do: wrappers on PATH that run inside the image with
/// every argument unchanged (the cwd holds files a stray glob would expand to), from bash and
/// from dash, with the command's exit status; help and whatis show the labels.
const USE_MODULE: &str = r#"
module load tools/bb/1.0 && echo loaded
echo "sh=$(command -v sh)"
bbprintf '[%s]\n' 'a b' '' '*' "it's" '$HOME' '"q"' --help
/bin/sh -c 'bbprintf "(%s)\n" "x  y" ""'
sh -c 'cat /etc/rsing-module-marker; printf "{%s}\n" "$@"' zero 'a b' '' '*'
sh -c 'exit 7'; echo "status=$?"
module whatis tools/bb/1.0
module help tools/bb/1.0
module unload tools/bb/1.0
command -v bbprintf || echo unloaded
"#;

fn check_module_use(out: &str, dest: &Path) {
    assert_has(out, "loaded\n");
    assert_has(
        out,
        &format!("sh={}/tools/bb/1.0.d/bin/sh\n", dest.display()),
    );
    assert_has(out, "[a b]\n[]\n[*]\n[it's]\n[$HOME]\n[\"q\"]\n[--help]\n");
    assert_has(out, "(x  y)\n()\n");
    assert_has(out, "inside-the-image\n{a b}\n{}\n{*}\n");
    assert_has(out, "status=7\n");
    for label in [
        "org.opencontainers.image.title: Busybox \"tools\" $HOME [x] ]]",
        "maintainer: Ann O'Nym",
        "org.rsing.module.commands: sh cat",
    ] {
        assert!(
            out.matches(label).count() >= 2,
            "{label:?} not in both whatis and help:\n{out}"
        );
    }
    assert_has(out, "Commands: sh cat bbprintf=printf");
    assert_has(out, "unloaded\n");
}

fn container_module(system: System, format: &str) {
    let t = TestEnv::new();
    let Some(init) = system.init() else { return };
    let Some(img) = labelled_image(&t) else {
        return;
    };
    for f in ["f1", "f2"] {
        std::fs::write(t.cwd.join(f), "").unwrap();
    }
    let dest = create_module(&t, &img, format);
    let script = format!("module use {}\n{USE_MODULE}", quote(&dest));
    check_module_use(&login_shell(&t, system, &init, &script), &dest);
}

#[test]
fn lmod_loads_a_lua_container_module() {
    container_module(System::Lmod, "lua");
}

#[test]
fn lmod_loads_a_tcl_container_module() {
    container_module(System::Lmod, "tcl");
}

#[test]
fn envmodules_loads_a_tcl_container_module() {
    container_module(System::EnvModules, "tcl");
}

/// rsing's own modulefile (`files`: the Tcl one, the Lua one or both) from a prefix with a
/// site configuration: rsing on PATH, MANPATH and completion paths set without losing the
/// defaults, RSING_CONFIG set; all of it undone by unload.
fn rsing_module(system: System, files: &[(&str, &str)]) {
    let t = TestEnv::new();
    let Some(init) = system.init() else { return };
    let img = image!(BUSYBOX);
    let prefix = t.mkdir("prefix");
    std::fs::create_dir_all(prefix.join("bin")).unwrap();
    std::os::unix::fs::symlink(crate::util::rsing_bin(), prefix.join("bin/rsing")).unwrap();
    t.write("prefix/etc/rsing/rsing.conf", "share images = no\n");
    for (name, text) in files {
        t.write(&format!("modulefiles/rsing/{name}"), text);
    }
    let script = format!(
        r#"unset MANPATH XDG_DATA_DIRS FPATH RSING_CONFIG
export RSING_PREFIX={prefix}
module use {mf}
module load rsing && echo loaded
echo "rsing=$(command -v rsing)"
echo "config=$RSING_CONFIG"
echo "manpath=$MANPATH"
echo "xdg=$XDG_DATA_DIRS"
echo "fpath=$FPATH"
echo "family=${{LMOD_FAMILY_CONTAINER-none}}"
rsing --version
rsing exec {img} cat /etc/passwd >/dev/null && echo exec-ok
module unload rsing
echo "after: $(command -v rsing || echo none) ${{RSING_CONFIG-unset}} ${{XDG_DATA_DIRS-unset}}"
"#,
        prefix = quote(&prefix),
        mf = quote(&t.dir.join("modulefiles")),
        img = quote(&img),
    );
    let out = login_shell(&t, system, &init, &script);
    let p = prefix.display();
    assert_has(&out, "loaded\n");
    assert_has(&out, &format!("rsing={p}/bin/rsing\n"));
    assert_has(&out, &format!("config={p}/etc/rsing/rsing.conf\n"));
    assert_has(&out, &format!("manpath={p}/share/man:"));
    assert_has(
        &out,
        &format!("xdg={p}/share:/usr/local/share:/usr/share\n"),
    );
    assert_has(&out, &format!("fpath={p}/share/zsh/site-functions\n"));
    assert_has(&out, &format!("rsing {}\n", env!("CARGO_PKG_VERSION")));
    assert_has(&out, "exec-ok\n");
    assert_has(&out, "after: none unset /usr/local/share:/usr/share\n");
    // Only the Lua file declares the family: it proves which of the two files was loaded
    // (Lmod prefers the .lua one; environment-modules reads only Tcl).
    let lua_loaded = system == System::Lmod && files.iter().any(|(name, _)| name.ends_with(".lua"));
    let family = if lua_loaded { "rsing" } else { "none" };
    assert_has(&out, &format!("family={family}\n"));
}

#[test]
fn lmod_loads_rsing_lua_modulefile() {
    rsing_module(
        System::Lmod,
        &[("0.1.0", RSING_TCL), ("0.1.0.lua", RSING_LUA)],
    );
}

#[test]
fn lmod_loads_rsing_tcl_modulefile() {
    rsing_module(System::Lmod, &[("0.1.0", RSING_TCL)]);
}

#[test]
fn envmodules_loads_rsing_modulefile() {
    rsing_module(
        System::EnvModules,
        &[("0.1.0", RSING_TCL), ("0.1.0.lua", RSING_LUA)],
    );
}

/// A batch job loads the container module in its login shell and runs a wrapper directly and
/// under `srun`: wrappers need no shell function, so srun's exec finds them on PATH.
fn sbatch_job(system: System, format: &str) {
    let t = TestEnv::new();
    if std::env::var_os("SLURM_CONF").is_none() {
        missing("a Slurm test cluster (SLURM_CONF, from tests/services/slurm.sh)");
        return;
    }
    let Some(init) = system.init() else { return };
    let Some(img) = labelled_image(&t) else {
        return;
    };
    let dest = create_module(&t, &img, format);
    let job = t.write(
        "job.sh",
        &format!(
            "#!/bin/bash -l\n{}module use {}\nmodule load tools/bb/1.0\n\
             sh -c 'cat /etc/rsing-module-marker; printf \"{{%s}}\\n\" \"$@\"' zero 'a b' '' '*'\n\
             srun -n 1 bbprintf '[%s]\\n' 'x y' '' \"$SLURM_JOB_ID\"\n",
            system.prelude(&init),
            quote(&dest)
        ),
    );
    let log = t.dir.join("job.out");
    RsingCmd::new(Path::new("sbatch"), login_env(&t), &t.cwd)
        .args(["--wait", "--quiet", "--time=3", "-n", "1", "-o"])
        .arg(&log)
        .arg(&job)
        .assert_exit(0);
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    assert_has(&out, "inside-the-image\n{a b}\n{}\n{*}\n");
    assert_has(&out, "[x y]\n[]\n[");
}

#[test]
fn sbatch_job_uses_a_container_module_with_lmod() {
    sbatch_job(System::Lmod, "lua");
}

#[test]
fn sbatch_job_uses_a_container_module_with_envmodules() {
    sbatch_job(System::EnvModules, "tcl");
}

/// `rsing module create`'s own errors and replacement rules (no module system needed).
#[test]
fn module_create_errors_and_force() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let dest = t.dir.join("m");
    let create = |extra: &[&str]| {
        t.rsing()
            .args(["module", "create", "--dest"])
            .arg(&dest)
            .arg("--image")
            .arg(&img)
            .args(extra)
    };
    create(&["--cmd", "ls", "--format", "tcl", "bb/1"]).stdout_str();
    assert!(dest.join("bb/1").is_file() && dest.join("bb/1.d/bin/ls").is_file());
    create(&["--cmd", "ls", "--format", "lua", "bb/1"]).assert_error_naming("--force");
    create(&["--cmd", "cat", "--format", "lua", "--force", "bb/1"]).stdout_str();
    assert!(
        dest.join("bb/1.lua").is_file(),
        "the Lua file replaces the Tcl one"
    );
    assert!(!dest.join("bb/1").exists(), "the Tcl file is gone");
    assert!(!dest.join("bb/1.d/bin/ls").exists() && dest.join("bb/1.d/bin/cat").is_file());
    create(&["bb/2"]).assert_error_naming("--cmd");
    create(&["--from-labels", "bb/2"]).assert_error_naming("org.rsing.module.commands");
    create(&["--cmd", "a/b", "bb/2"]).assert_error_naming("a/b");
    create(&["--cmd", "ls", "noversion"]).assert_error_naming("noversion");
    // A part ending in .d would live inside another module's wrapper directory.
    create(&["--cmd", "ls", "bb/1.d/x"]).assert_error_naming("bb/1.d/x");
    // --force replaces a module, never a directory of modules, and writes nothing first.
    create(&["--cmd", "ls", "--force", "x/bb/1"]).stdout_str();
    create(&["--cmd", "ls", "--force", "x/bb"]).assert_error_naming("not a module");
    assert!(
        !dest.join("x/bb.d").exists() && dest.join("x/bb/1").is_file(),
        "a refused --force left something behind"
    );
    assert_eq!(
        std::fs::read_dir(dest.join("x")).unwrap().count(),
        1,
        "no temporary files are left in the module tree"
    );
    t.rsing()
        .args(["module", "create", "--cmd", "ls", "--dest"])
        .arg(&dest)
        .args(["--image", "docker://busybox", "bb/3"])
        .assert_error_naming("rsing pull");
    t.rsing()
        .args(["module", "create", "--cmd", "ls", "--dest"])
        .arg(&dest)
        .args(["--image", "/nonexistent.sif", "bb/3"])
        .assert_error_naming("/nonexistent.sif");
}
