//! Image formats: every compressor, tar2sqfs output, SIF and a sandbox directory run the same
//! commands; image paths may be relative.

use crate::fixtures::{rootfs_passwd_root_line, Comp, Fixture, BUSYBOX};
use crate::util::TestEnv;

fn assert_runs(fixture: Fixture) {
    let t = TestEnv::new();
    let img = image!(fixture);
    t.exec(&img, ["/bin/true"]).assert_exit(0);
    let passwd = t.exec(&img, ["cat", "/etc/passwd"]).stdout_str();
    assert!(
        passwd.contains(rootfs_passwd_root_line()),
        "{fixture:?}: {passwd}"
    );
    let out = t.rsing().arg("run").arg(&img).arg("x").stdout_str();
    assert_eq!(out, "runscript-args: x", "{fixture:?}");
}

#[test]
fn squashfs_zstd_runs() {
    assert_runs(Fixture::Sqfs(Comp::Zstd));
}

#[test]
fn squashfs_gzip_runs() {
    assert_runs(Fixture::Sqfs(Comp::Gzip));
}

#[test]
fn squashfs_xz_runs() {
    assert_runs(Fixture::Sqfs(Comp::Xz));
}

#[test]
fn squashfs_lzo_runs() {
    assert_runs(Fixture::Sqfs(Comp::Lzo));
}

#[test]
fn squashfs_lz4_runs() {
    assert_runs(Fixture::Sqfs(Comp::Lz4));
}

#[test]
fn tar2sqfs_image_runs() {
    assert_runs(Fixture::Tar2sqfs);
}

#[test]
fn sif_runs() {
    assert_runs(Fixture::Sif);
}

#[test]
fn sif_in_apptainer_layout_runs() {
    assert_runs(Fixture::SifApptainer);
}

#[test]
fn sif_in_singularity3_layout_runs() {
    assert_runs(Fixture::SifSingularity3);
}

/// The OCI config stored in a SIF provides environment variables without env scripts.
#[test]
fn sif_oci_config_env_reaches_the_container() {
    let t = TestEnv::new();
    let img = image!(Fixture::SifApptainer);
    assert_eq!(t.sh(&img, "echo $OCIVAR"), "from-oci-config");
}

#[test]
fn sandbox_directory_runs() {
    assert_runs(Fixture::Sandbox);
}

#[test]
fn relative_image_path_is_resolved() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let dir = img.parent().unwrap();
    let cmd = t.exec(
        "busybox.sqfs".as_ref(),
        ["sh", "-c", "echo $RSING_CONTAINER"],
    );
    assert_eq!(cmd.current_dir(dir).stdout_str(), img.to_str().unwrap());
}
