//! The site configuration file (`--config FILE`, RSING_CONFIG): `key = value` lines with
//! `#` comments; `bind path`, `deny bind path`, `mount home`, `mount tmp`.

use crate::fixtures::BUSYBOX;
use crate::util::TestEnv;
use std::ffi::OsStr;

#[test]
fn config_bind_paths_are_added_to_every_container() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    t.write("site/one/f", "one");
    t.write("site/two/f", "two");
    let config = t.write(
        "rsing.conf",
        &format!(
            "# site binds\n\nbind path = {0}/site/one:/site-one\nbind path = {0}/site/two\n\
             # bind path = /nonexistent-commented-out\n",
            t.dir.display()
        ),
    );
    let script = format!("cat /site-one/f {}/site/two/f", t.dir.display());
    let opts = ["--config".into(), config.clone().into_os_string()];
    assert_eq!(t.sh_with(opts, &img, &script), "onetwo");
    let cmd = t
        .exec(&img, ["sh", "-c", &script])
        .env("RSING_CONFIG", &config);
    assert_eq!(cmd.stdout_str(), "onetwo");
}

#[test]
fn denied_bind_paths_are_refused() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let denied = t.mkdir("denied");
    t.mkdir("denied/sub");
    let config = t.write(
        "rsing.conf",
        &format!("deny bind path = {}\n", denied.display()),
    );
    let denied_str = denied.to_str().unwrap();
    for bind in [denied_str.to_string(), format!("{denied_str}/sub:/x")] {
        let opts = [
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("-B"),
            bind.as_ref(),
        ];
        t.exec_with(opts, &img, ["true"])
            .assert_error_naming(denied_str);
    }
}

#[test]
fn mount_home_and_tmp_can_be_switched_off() {
    let mut t = TestEnv::new();
    let img = image!(BUSYBOX);
    let home_file = t.write("home/f", "x");
    let tmp_file = t.host_tmp_path("f");
    std::fs::write(&tmp_file, "x").unwrap();
    let config = t.write("rsing.conf", "mount home = no\nmount tmp = no\n");
    let script = format!(
        "for f in {} {}; do test -e $f && echo visible || echo hidden; done",
        home_file.display(),
        tmp_file.display()
    );
    let cmd = t
        .exec(&img, ["sh", "-c", &script])
        .env("RSING_CONFIG", &config);
    assert_eq!(cmd.stdout_str(), "hidden\nhidden");
}

#[test]
fn missing_explicit_config_is_an_error() {
    let t = TestEnv::new();
    let img = image!(BUSYBOX);
    let missing = t.dir.join("no-such.conf");
    let opts = [OsStr::new("--config"), missing.as_os_str()];
    t.exec_with(opts, &img, ["true"])
        .assert_error_naming("no-such.conf");
}
