//! Environment composition, Apptainer's precedence: host vars pass through unless --cleanenv;
//! the image's values (env scripts, OCI `Env` even in its `${VAR:-default}` form) win over
//! same-name host vars; RSINGENV_K/APPTAINERENV_K and --env/--env-file override the image;
//! PATH and LD_LIBRARY_PATH never leak.

use crate::fixtures::BUSYBOX;
use crate::util::TestEnv;
use std::ffi::OsStr;

/// Prints `NAME=[value]` lines for `names`, in order.
fn show(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("echo \"{n}=[${n}]\"; "))
        .collect()
}

#[test]
fn host_variables_pass_through() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let cmd = t
        .exec(&img, ["sh", "-c", &show(&["FOO"])])
        .env("FOO", "bar baz");
    assert_eq!(cmd.stdout_str(), "FOO=[bar baz]");
}

#[test]
fn cleanenv_drops_host_variables_but_keeps_term() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    for flag in ["-e", "--cleanenv"] {
        let cmd = t.exec_with([flag], &img, ["sh", "-c", &show(&["FOO", "TERM", "ENV90"])]);
        let out = cmd
            .env("FOO", "bar")
            .env("TERM", "xterm-rsing")
            .stdout_str();
        assert_eq!(
            out, "FOO=[]\nTERM=[xterm-rsing]\nENV90=[ninety]",
            "with {flag}"
        );
    }
}

#[test]
fn image_environment_applies() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let out = t.sh(&img, &show(&["IMGVAR", "ENV90", "PATH"]));
    assert_eq!(
        out,
        "IMGVAR=[from-image]\nENV90=[ninety]\nPATH=[/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin]"
    );
}

#[test]
fn image_values_win_over_host_values() {
    // Apptainer's action script (internal/pkg/util/fs/files/action_script.sh) unsets the
    // host's variables (`clear_env`) before it sources /.singularity.d/env/*.sh and restores
    // only those still unset afterwards (`restore_env`), so even a `${VAR:-default}` image
    // value is not replaced by a same-name host variable. Its user guide says so ("an
    // environment variable set on the host will not override a variable of the same name
    // that has been set inside the container image"), and its e2e test
    // `TestImageCgoEnabledOverride_KO` checks it.
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let cmd = t.exec(&img, ["sh", "-c", &show(&["IMGVAR", "ENV90"])]);
    let out = cmd.env("IMGVAR", "host").env("ENV90", "x").stdout_str();
    assert_eq!(out, "IMGVAR=[from-image]\nENV90=[ninety]");
}

#[test]
fn env_flag_sets_and_overrides_the_image() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let opts = [
        "--env",
        "NEWVAR=new value",
        "--env",
        "ENV90=y",
        "--env",
        "IMGVAR=flag",
    ];
    let out = t.sh_with(opts, &img, &show(&["NEWVAR", "ENV90", "IMGVAR"]));
    assert_eq!(out, "NEWVAR=[new value]\nENV90=[y]\nIMGVAR=[flag]");
}

#[test]
fn env_file_sets_variables() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let file = t.write("vars.env", "FILEVAR1=one\nFILEVAR2=two\nENV90=from-file\n");
    let opts = [OsStr::new("--env-file"), file.as_os_str()];
    let out = t.sh_with(opts, &img, &show(&["FILEVAR1", "FILEVAR2", "ENV90"]));
    assert_eq!(out, "FILEVAR1=[one]\nFILEVAR2=[two]\nENV90=[from-file]");
}

#[test]
fn rsingenv_prefix_sets_variables_over_the_image() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let cmd = t.exec(
        &img,
        ["sh", "-c", &show(&["K", "IMGVAR", "ENV90", "RSINGENV_K"])],
    );
    let cmd = cmd
        .env("RSINGENV_K", "V")
        .env("RSINGENV_IMGVAR", "z")
        .env("RSINGENV_ENV90", "w");
    assert_eq!(
        cmd.stdout_str(),
        "K=[V]\nIMGVAR=[z]\nENV90=[w]\nRSINGENV_K=[]"
    );
}

#[test]
fn host_search_paths_do_not_leak() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let cmd = t.exec(&img, ["sh", "-c", &show(&["PATH", "LD_LIBRARY_PATH"])]);
    let cmd = cmd
        .env("PATH", "/host/bin:/usr/bin:/bin")
        .env("LD_LIBRARY_PATH", "/host/lib");
    let out = cmd.stdout_str();
    assert!(!out.contains("/host/"), "host search paths leaked:\n{out}");
    assert!(
        out.contains("PATH=[/bin:/usr/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin]"),
        "{out}"
    );
}

#[test]
fn container_variables_name_the_image() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let out = t.sh(&img, &show(&["RSING_CONTAINER", "RSING_NAME"]));
    let expected = format!(
        "RSING_CONTAINER=[{}]\nRSING_NAME=[busybox.sqfs]",
        img.display()
    );
    assert_eq!(out, expected);
}

/// The same SIF under both runtimes: an image converted from OCI by `rsing build` carries
/// Apptainer's `10-docker2singularity.sh` (PATH exported plainly, every other `Env` entry as
/// `${K:-"value"}`), and rsing gives it Apptainer's precedence: the image's values win over
/// same-name host variables (PATH included), with or without --cleanenv, host-only variables
/// pass through, and APPTAINERENV_K / --env win over the image.
#[test]
fn oci_env_of_a_converted_image_wins_over_the_host() {
    use crate::util::oci::{self, Config, Layout};
    let t = TestEnv::new();
    let Some(sandbox) = crate::fixtures::get(crate::fixtures::Fixture::Sandbox) else {
        return;
    };
    let mut image = oci::busybox_image(&sandbox);
    image.config = Config {
        env: vec![
            "PATH=/opt/img/bin:/usr/bin:/bin".into(),
            "FOO=image".into(),
            "LANG=C.UTF-8".into(),
        ],
        ..Config::default()
    };
    let layout = Layout::create(&t.dir.join("layout"));
    layout.add_image("1", &image);
    let sif = t.cwd.join("oci-env.sif");
    t.rsing()
        .env("RSING_CACHEDIR", t.dir.join("cache"))
        .arg("build")
        .arg(&sif)
        .arg(layout.reference("1"))
        .assert_exit(0);

    let script = t
        .exec(
            &sif,
            ["cat", "/.singularity.d/env/10-docker2singularity.sh"],
        )
        .stdout_str();
    for line in [
        r#"export PATH="/opt/img/bin:/usr/bin:/bin""#,
        r#"export FOO="${FOO:-"image"}""#,
        r#"export LANG="${LANG:-"C.UTF-8"}""#,
    ] {
        assert!(
            script.lines().any(|l| l == line),
            "{line} missing in:\n{script}"
        );
    }

    let names = ["FOO", "LANG", "ONLYHOST", "PATH"];
    let run = |opts: &[&str], vars: &[(&str, &str)]| {
        let mut cmd = t
            .exec_with(opts, &sif, ["/bin/sh", "-c", &show(&names)])
            .env("PATH", "/host/bin:/usr/bin:/bin")
            .env("FOO", "host")
            .env("LANG", "en_US.UTF-8")
            .env("ONLYHOST", "h");
        for (k, v) in vars {
            cmd = cmd.env(k, v);
        }
        cmd.stdout_str()
    };
    // Apptainer's `fixpath` appends the default directories the image's PATH lacks.
    let image_path =
        "PATH=[/opt/img/bin:/usr/bin:/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin]";
    let out = run(&[], &[]);
    assert!(
        out.starts_with(&format!(
            "FOO=[image]\nLANG=[C.UTF-8]\nONLYHOST=[h]\n{image_path}"
        )),
        "host values replaced the image's:\n{out}"
    );
    assert!(!out.contains("/host/"), "{out}");
    for flag in ["--cleanenv", "--containall"] {
        let out = run(&[flag], &[]);
        assert!(
            out.starts_with(&format!(
                "FOO=[image]\nLANG=[C.UTF-8]\nONLYHOST=[]\n{image_path}"
            )),
            "with {flag}:\n{out}"
        );
    }
    let out = run(&[], &[("APPTAINERENV_FOO", "apptainerenv")]);
    assert!(out.starts_with("FOO=[apptainerenv]\n"), "{out}");
    let out = run(
        &["--env", "FOO=flag"],
        &[("APPTAINERENV_FOO", "apptainerenv")],
    );
    assert!(out.starts_with("FOO=[flag]\n"), "{out}");
}
