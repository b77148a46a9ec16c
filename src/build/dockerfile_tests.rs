use super::*;

fn ok(text: &str) -> Vec<Instruction> {
    parse("Dockerfile", text)
        .expect("parses")
        .into_iter()
        .map(|l| l.instruction)
        .collect()
}

#[test]
fn instructions_continuations_and_forms() {
    let got = ok("# syntax\nARG BASE=debian\nFROM $BASE AS build\nRUN apt-get update && \\\n    # a comment inside\n    apt-get install -y hello\nRUN [\"/bin/echo\", \"a b\"]\nCOPY --from=build --chown=1:2 a b* /dst/\nENV A=1 B=\"two words\"\nENV OLD legacy value\nLABEL x=y\nWORKDIR /w\nUSER nobody\nENTRYPOINT [\"hello\"]\nCMD -g hi\nEXPOSE 80/tcp\nVOLUME /data\nSHELL [\"/bin/bash\", \"-c\"]\n");
    assert_eq!(
        got[0],
        Instruction::Arg("BASE".into(), Some("debian".into()))
    );
    assert_eq!(
        got[1],
        Instruction::From {
            image: "$BASE".into(),
            name: Some("build".into())
        }
    );
    assert_eq!(
        got[2],
        Instruction::Run(Command::Shell(
            "RUN apt-get update &&      apt-get install -y hello"
                .trim_start_matches("RUN ")
                .to_string()
        ))
    );
    assert_eq!(
        got[3],
        Instruction::Run(Command::Exec(vec!["/bin/echo".into(), "a b".into()]))
    );
    let Instruction::Copy(c) = &got[4] else {
        panic!()
    };
    assert_eq!(
        (c.from.as_deref(), c.chown.as_deref()),
        (Some("build"), Some("1:2"))
    );
    assert_eq!(c.sources, vec!["a", "b*"]);
    assert_eq!(c.dest, "/dst/");
    assert_eq!(
        got[5],
        Instruction::Env(vec![
            ("A".into(), "1".into()),
            ("B".into(), "two words".into())
        ])
    );
    assert_eq!(
        got[6],
        Instruction::Env(vec![("OLD".into(), "legacy value".into())])
    );
    assert_eq!(
        got[10],
        Instruction::Entrypoint(Command::Exec(vec!["hello".into()]))
    );
    assert_eq!(got[11], Instruction::Cmd(Command::Shell("-g hi".into())));
    assert_eq!(
        got[14],
        Instruction::Shell(vec!["/bin/bash".into(), "-c".into()])
    );
}

#[test]
fn errors_name_the_line() {
    let e = parse("Dockerfile", "FROM x\n\nFROBNICATE y\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:3: unsupported instruction FROBNICATE"
    );
    let e = parse("Dockerfile", "RUN true\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:1: the first instruction must be FROM (after ARGs)"
    );
    let e = parse("Dockerfile", "FROM x\nCOPY onlyone\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:2: COPY needs at least one source and a destination"
    );
    let e = parse("Dockerfile", "FROM x\nRUN [\"a\",\n").unwrap_err();
    assert!(
        e.to_string().starts_with("Dockerfile:2: bad JSON array"),
        "{e}"
    );
}

#[test]
fn expansion() {
    let look = |k: &str| match k {
        "A" => Some("1".to_string()),
        "E" => Some(String::new()),
        _ => None,
    };
    assert_eq!(
        expand("$A-${A}-${B:-d}-${A:+x}-${B:+x}-\\$A-$", &look),
        "1-1-d-x--$A-$"
    );
    assert_eq!(expand("${E:-empty}", &look), "empty");
}
