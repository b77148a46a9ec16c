use super::*;

fn ok(text: &str) -> Recipe {
    parse("x.def", text, &BTreeMap::new()).expect("parses")
}

fn fails(text: &str) -> String {
    parse("x.def", text, &BTreeMap::new())
        .expect_err("must fail")
        .to_string()
}

#[test]
fn header_and_sections() {
    let r = ok("# comment\nBootStrap: docker\nFrom: debian:12\n\n%post -c /bin/bash\n  apt-get update\n%environment\n  export A=1\n%labels\n  Author me too\n%runscript\n  echo hi \"$@\"\n%help\n  Some help\n%test\n  true\n");
    let s = r.last();
    assert_eq!(s.bootstrap, Bootstrap::Docker);
    assert_eq!(s.from, "debian:12");
    let post = s.post.as_ref().unwrap();
    assert_eq!(post.interpreter.as_deref(), Some("/bin/bash"));
    assert_eq!(post.body, "  apt-get update\n");
    assert_eq!(post.line, 5);
    assert_eq!(s.environment.as_deref(), Some("  export A=1\n"));
    assert_eq!(s.labels, vec![("Author".into(), "me too".into())]);
    assert!(s.runscript.as_ref().unwrap().contains("echo hi"));
    assert_eq!(s.help.as_deref(), Some("  Some help\n"));
    assert_eq!(s.test.as_ref().unwrap().body, "  true\n");
    assert_eq!(
        Bootstrap::Docker.source("debian:12").as_deref(),
        Some("docker://debian:12")
    );
}

#[test]
fn arguments_defaults_and_build_args() {
    let text = "Bootstrap: localimage\nFrom: {{ BASE }}\n%arguments\n  BASE=base.sif\n  V=\"1.0\"\n%post\n  echo {{V}} {{ V }}\n";
    let r = ok(text);
    assert_eq!(r.last().from, "base.sif");
    assert_eq!(r.last().post.as_ref().unwrap().body, "  echo 1.0 1.0\n");
    let mut args = BTreeMap::new();
    args.insert("V".to_string(), "2".to_string());
    args.insert("UNUSED".to_string(), "x".to_string());
    let r = parse("x.def", text, &args).unwrap();
    assert_eq!(r.last().post.as_ref().unwrap().body, "  echo 2 2\n");
    assert_eq!(r.unused_args, vec!["UNUSED".to_string()]);
}

#[test]
fn multi_stage_and_files_from() {
    let r = ok("Bootstrap: scratch\nStage: build\n%files\n  a.txt /a.txt\n  b\n\nBootstrap: docker\nFrom: debian\nStage: final\n%files from build\n  /a.txt /opt/a.txt\n");
    assert_eq!(r.stages.len(), 2);
    assert_eq!(r.stages[0].name.as_deref(), Some("build"));
    assert_eq!(r.stages[0].files[0].copies.len(), 2);
    assert_eq!(r.stages[0].files[0].copies[1].dest, None);
    assert_eq!(r.stages[1].files[0].from.as_deref(), Some("build"));
    assert_eq!(r.stages[1].files[0].copies[0].line, 11);
}

#[test]
fn apps() {
    let r = ok("Bootstrap: scratch\n%apprun foo\n  echo foo\n%applabels foo\n  K V\n%appinstall foo\n  touch x\n%appenv foo\n  export F=1\n");
    let app = &r.last().apps["foo"];
    assert_eq!(app.run.as_deref(), Some("  echo foo\n"));
    assert_eq!(app.labels, vec![("K".into(), "V".into())]);
    assert!(app.install.is_some() && app.env.is_some());
}

#[test]
fn errors_name_file_line_and_section() {
    assert_eq!(
        fails("Bootstrap: docker\nFrom: x\n%pots\n"),
        "x.def:3: unknown section %pots"
    );
    assert_eq!(
        fails("Bootstrap: docker\n\n%post\n"),
        "x.def:1: Bootstrap: docker needs a From: line"
    );
    assert_eq!(
        fails("Bootstrap: yum\nFrom: x\n"),
        "x.def:1: unsupported Bootstrap: yum (docker, oci, oci-archive, docker-archive, localimage or scratch)"
    );
    assert_eq!(
        fails("From: x\n"),
        "x.def:1: the header has no Bootstrap: line"
    );
    assert_eq!(
        fails("Bootstrap: docker\nFrum: x\n"),
        "x.def:2: unknown header keyword `frum`"
    );
    assert!(fails("Bootstrap: docker\nFrom: x\n%post\n echo {{ X\n")
        .starts_with("x.def:4: unterminated `{{`"));
    assert!(fails("Bootstrap: docker\nFrom: x\n%post\n echo {{ X }}\n")
        .starts_with("x.def:4: argument `X` has no value"));
    assert_eq!(
        fails("Bootstrap: docker\nFrom: x\n%labels\n  lonely\n"),
        "x.def:4: in %labels: label `lonely` has no value"
    );
    assert_eq!(
        fails("Bootstrap: docker\nFrom: x\n%files from nowhere\n  a b\n"),
        "x.def:3: in %files: no earlier stage named `nowhere`"
    );
    assert_eq!(
        fails(""),
        "x.def:1: empty definition file: no Bootstrap: header"
    );
    assert_eq!(
        fails("Bootstrap: docker\nFrom: x\n%post -x\n"),
        "x.def:3: in %post: unexpected words after %post: -x"
    );
}

#[test]
fn every_example_in_definitions_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("definitions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.display().to_string();
        if name.ends_with(".def") {
            parse(&name, &text, &BTreeMap::new()).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        } else if name.ends_with("Dockerfile") {
            crate::build::dockerfile::parse(&name, &text).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 6, "only {n} examples");
}
