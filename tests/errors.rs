//! Bad input: rsing exits 255 with exactly one `rsing: error: ` line naming the thing that
//! failed, and leaves nothing mounted or running. Command failures inside are the command's.

use crate::fixtures::{Bad, Fixture, BUSYBOX};
use crate::util::TestEnv;
use std::path::Path;

/// Runs `rsing exec IMAGE true MARKER` and checks the one-line error naming `thing`.
fn assert_refused(t: &TestEnv, image: &Path, thing: &str) -> String {
    let line = t
        .exec(image, ["/bin/true", &t.marker()])
        .assert_error_naming(thing);
    t.assert_host_clean(&t.marker(), image);
    line
}

fn assert_bad_image_refused(bad: Bad) {
    let t = TestEnv::new();
    let img = image!(Fixture::Bad(bad));
    assert_refused(&t, &img, &Fixture::Bad(bad).file_name());
}

#[test]
fn missing_image_is_named() {
    let t = TestEnv::new();
    assert_refused(&t, &t.dir.join("no-such-image.sif"), "no-such-image.sif");
}

#[test]
fn empty_file_is_refused() {
    assert_bad_image_refused(Bad::Empty);
}

#[test]
fn text_file_is_refused() {
    assert_bad_image_refused(Bad::Text);
}

#[test]
fn truncated_squashfs_is_refused() {
    assert_bad_image_refused(Bad::TruncatedSqfs);
}

#[test]
fn sif_without_partition_is_refused() {
    assert_bad_image_refused(Bad::SifNoPartition);
}

#[test]
fn sif_for_another_architecture_names_it() {
    let t = TestEnv::new();
    let img = image!(Fixture::Bad(Bad::SifWrongArch));
    let line = assert_refused(&t, &img, "bad-arch.sif");
    let foreign = if cfg!(target_arch = "aarch64") {
        "amd64"
    } else {
        "arm64"
    };
    assert!(
        line.contains(foreign),
        "the error does not name the architecture: {line}"
    );
}

#[test]
fn missing_bind_source_is_named() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let missing = t.dir.join("no-such-source");
    let bind = format!("{}:/mnt", missing.display());
    let cmd = t.exec_with(["-B", &bind], &img, ["/bin/true", &t.marker()]);
    cmd.assert_error_naming("no-such-source");
    t.assert_host_clean(&t.marker(), &img);
}

#[test]
fn command_missing_in_image_is_named() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    t.exec(&img, ["no-such-command-xyz"])
        .assert_fails_naming("no-such-command-xyz");
    t.exec(&img, ["/opt/none/cmd"])
        .assert_fails_naming("/opt/none/cmd");
}

/// The set-up reports a failure through a pipe that rsing reads only once the set-up process
/// has ended: a report larger than the pipe must not block it (the directory name here is
/// 100 kB).
#[test]
fn a_failure_report_longer_than_a_pipe_neither_hangs_nor_loses_the_error() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let long = format!("/opt/{}", "n".repeat(100_000));
    t.exec_with(["--pwd", long.as_str()], &img, ["true"])
        .assert_error_naming("cannot change to working directory /opt/nnnn");
}

#[test]
fn unknown_flag_is_rejected() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let cmd = t.exec_with(["--no-such-flag"], &img, ["true"]);
    cmd.assert_fails_naming("--no-such-flag");
    t.rsing()
        .arg("no-such-subcommand")
        .assert_fails_naming("no-such-subcommand");
}
