//! `--app NAME` (issue 13): a definition file's `%app*` sections, laid out under
//! `/scif/apps/NAME` by `rsing build`, run with `run --app`, `exec --app`, `test --app`, and
//! listed by `inspect --list-apps`.

use crate::fixtures::Fixture;
use crate::util::TestEnv;

#[test]
fn apps_run_exec_test_and_unknown_names() {
    let t = TestEnv::new();
    let Some(base) = crate::fixtures::get(Fixture::Sandbox) else {
        return;
    };
    let def = t.write(
        "work/apps.def",
        &format!(
            "Bootstrap: localimage\nFrom: {}\n\n\
%runscript\n    echo main runscript\n\n\
%apprun hello\n    echo \"hello app: $SCIF_APPNAME $*\"\n\n\
%appenv hello\n    export HELLO_VAR=from-appenv\n\n\
%appinstall hello\n    mkdir -p bin\n    printf '#!/bin/sh\\necho tool-in-app-bin\\n' > bin/hellotool\n    chmod 755 bin/hellotool\n\n\
%apptest hello\n    test \"$HELLO_VAR\" = from-appenv\n\n\
%apprun other\n    echo other app\n",
            base.display()
        ),
    );
    let img = t.dir.join("apps.sif");
    t.rsing()
        .env("RSING_CACHEDIR", t.dir.join("cache"))
        .arg("build")
        .arg(&img)
        .arg(&def)
        .assert_exit(0);
    let rsing = |args: &[&str]| t.rsing().args(args.iter());
    let img_s = img.to_string_lossy().into_owned();
    assert_eq!(
        rsing(&["run", "--app", "hello", &img_s, "a", "b"]).stdout_str(),
        "hello app: hello a b"
    );
    assert_eq!(rsing(&["run", &img_s]).stdout_str(), "main runscript");
    assert_eq!(
        rsing(&["run", "--app", "other", &img_s]).stdout_str(),
        "other app"
    );
    // exec --app: the app's environment script, variables and bin directory.
    assert_eq!(
        rsing(&[
            "exec",
            "--app",
            "hello",
            &img_s,
            "sh",
            "-c",
            "echo $HELLO_VAR $SCIF_APPROOT $APPTAINER_APPNAME; hellotool"
        ])
        .stdout_str(),
        "from-appenv /scif/apps/hello hello\ntool-in-app-bin"
    );
    // Without --app nothing of the app's environment is there.
    assert_eq!(
        rsing(&["exec", &img_s, "sh", "-c", "echo ${HELLO_VAR:-unset}"]).stdout_str(),
        "unset"
    );
    rsing(&["test", "--app", "hello", &img_s]).assert_exit(0);
    assert_eq!(
        rsing(&["inspect", "--list-apps", &img_s]).stdout_str(),
        "hello\nother"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&rsing(&["inspect", "--list-apps", "--json", &img_s]).stdout_str())
            .unwrap();
    assert_eq!(listed["apps"], serde_json::json!(["hello", "other"]));
    let line = rsing(&["run", "--app", "nope", &img_s]).assert_error_naming("nope");
    assert!(
        line.contains("hello, other"),
        "the error lists the apps: {line}"
    );
}
