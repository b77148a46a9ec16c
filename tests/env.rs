//! Environment composition, Apptainer's precedence: host vars pass through unless --cleanenv;
//! image env scripts override same-name host vars (except `${VAR:-default}` forms);
//! RSINGENV_K and --env/--env-file override the image; PATH and LD_LIBRARY_PATH never leak.

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
        "IMGVAR=[from-image]\nENV90=[ninety]\nPATH=[/bin:/usr/bin]"
    );
}

#[test]
fn image_values_win_over_host_values() {
    // Apptainer: the image's environment scripts are sourced without the host's values, so
    // even a `${VAR:-default}` image value is not replaced by a same-name host variable.
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
    assert!(out.contains("PATH=[/bin:/usr/bin]"), "{out}");
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
