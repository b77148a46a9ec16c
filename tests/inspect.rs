//! `rsing inspect` and `rsing sif list|dump` on the images the fixtures build.

use crate::fixtures::{Fixture, BUSYBOX};
use crate::util::TestEnv;

#[test]
fn sif_list_matches_siftool() {
    let t = TestEnv::new();
    let img = image!(Fixture::SifApptainer);
    let ours = t.rsing().args(["sif", "list"]).arg(&img).stdout_str();
    let theirs = std::process::Command::new("siftool")
        .arg("list")
        .arg(&img)
        .output()
        .expect("running siftool");
    assert_eq!(ours, String::from_utf8_lossy(&theirs.stdout).trim_end());
    assert!(
        ours.contains("Def.FILE") && ours.contains("FS (Squashfs/*System/"),
        "{ours}"
    );
}

#[test]
fn sif_dump_writes_the_object() {
    let t = TestEnv::new();
    let img = image!(Fixture::SifApptainer);
    let deffile = t.rsing().args(["sif", "dump", "1"]).arg(&img).stdout_str();
    assert!(deffile.starts_with("BootStrap: docker"), "{deffile}");
    t.rsing()
        .args(["sif", "dump", "99"])
        .arg(&img)
        .assert_error_naming("no object with ID 99");
}

#[test]
fn inspect_shows_runscript_deffile_env_and_oci_config() {
    let t = TestEnv::new();
    let img = image!(Fixture::SifApptainer);
    let runscript = t
        .rsing()
        .args(["inspect", "--runscript"])
        .arg(&img)
        .stdout_str();
    assert!(runscript.contains("runscript-args"), "{runscript}");
    let deffile = t.rsing().args(["inspect", "-d"]).arg(&img).stdout_str();
    assert!(deffile.contains("From: busybox"), "{deffile}");
    let env = t.rsing().args(["inspect", "--env"]).arg(&img).stdout_str();
    assert!(
        env.contains("export ENV90=ninety") && env.contains("OCIVAR=from-oci-config"),
        "{env}"
    );
}

/// The JSON form is for scripts: its keys are stable and only the selected ones appear.
#[test]
fn inspect_json_has_stable_keys() {
    let t = TestEnv::new();
    let img = image!(Fixture::SifApptainer);
    let out = t
        .rsing()
        .args(["inspect", "--json", "--oci-config", "--runscript"])
        .arg(&img)
        .stdout_str();
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect --json prints JSON");
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["image", "oci_config", "runscript"]);
    assert_eq!(v["oci_config"]["Env"][0], "OCIVAR=from-oci-config");
}

#[test]
fn inspect_reads_plain_squashfs_and_names_a_missing_image() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let runscript = t.rsing().args(["inspect", "-r"]).arg(&img).stdout_str();
    assert!(runscript.contains("runscript-args"), "{runscript}");
    t.rsing()
        .args(["inspect", "/no/such/image.sif"])
        .assert_error_naming("/no/such/image.sif");
}
