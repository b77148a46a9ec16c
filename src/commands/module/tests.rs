//! Unit tests of `rsing module create`'s generated text: quoting above all. Where `sh`,
//! `tclsh` or `lua` exist, the generated words are also read back by the real interpreter.

use super::*;

const TRICKY: &[&str] = &[
    "a b",
    "",
    "*",
    "it's",
    "\"dq\"",
    "$HOME",
    "`id`",
    "$(id)",
    "back\\slash",
    "new\nline",
    "--help",
    "-",
    "[x]",
    "{brace",
    "]]",
    "ünï",
];

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rsing-module-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn have(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn args(cmds: &[&str], from_labels: bool) -> CreateArgs {
    CreateArgs {
        image: "img.sif".into(),
        cmds: cmds.iter().map(|s| s.to_string()).collect(),
        from_labels,
        format: None,
        dest: PathBuf::from("/m"),
        rsing: None,
        exec_args: Vec::new(),
        force: false,
        module: "a/1".into(),
    }
}

fn cmd(name: &str, target: &str) -> Cmd {
    Cmd {
        name: name.into(),
        target: target.into(),
    }
}

#[test]
fn sh_quote_is_one_literal_word() {
    assert_eq!(sh_quote("it's"), r"'it'\''s'");
    assert_eq!(sh_quote(""), "''");
    for s in TRICKY {
        let out = std::process::Command::new("/bin/sh")
            .args(["-c", &format!("printf %s {}", sh_quote(s))])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), *s);
    }
}

/// The wrapper passes fixed words and the caller's arguments through unchanged: run it with
/// a fake rsing that prints its argv, from a path and an image full of shell metacharacters.
#[test]
fn wrapper_passes_arguments_unchanged() {
    let dir = scratch("wrapper");
    let odd = dir.join("odd dir 'q' $x");
    std::fs::create_dir_all(&odd).unwrap();
    let fake = odd.join("rsing");
    std::fs::write(&fake, "#!/bin/sh\nfor a do printf '[%s]\\n' \"$a\"; done\n").unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let image = odd.join("img `x`.sif");
    let script = wrapper(
        &fake.to_string_lossy(),
        &["--cleanenv".into(), "-B".into(), "/a b:/c".into()],
        &image,
        &cmd("py", "/opt/my python"),
    );
    assert!(script.starts_with("#!/bin/sh\n"), "{script}");
    let path = dir.join("py");
    std::fs::write(&path, &script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new(&path)
        .args(TRICKY)
        .output()
        .unwrap();
    let want: String = ["exec", "--cleanenv", "-B", "/a b:/c"]
        .into_iter()
        .chain([&*image.to_string_lossy(), "/opt/my python"])
        .chain(TRICKY.iter().copied())
        .map(|a| format!("[{a}]\n"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{script}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn wrapper_with_bare_rsing_uses_path() {
    let script = wrapper("rsing", &[], Path::new("/i.sif"), &cmd("pip", "pip"));
    assert!(
        script.ends_with("exec 'rsing' exec '/i.sif' 'pip' \"$@\"\n"),
        "{script}"
    );
}

#[test]
fn module_names() {
    assert_eq!(split_module("python/3.12").unwrap(), ("python", "3.12"));
    assert_eq!(
        split_module("bio/samtools/1.17").unwrap(),
        ("bio/samtools", "1.17")
    );
    assert_eq!(split_module("g++/12_1-rc+x").unwrap(), ("g++", "12_1-rc+x"));
    for bad in [
        "python", "/3.1", "py/", "py//1", "../x/1", "py/.1", "py/-1", "py/1.lua", "py/1.d",
        "a b/1", "py/1 2", "py/$x", "./py/1",
    ] {
        assert!(split_module(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn command_words() {
    assert_eq!(parse_cmd("python3").unwrap(), cmd("python3", "python3"));
    assert_eq!(
        parse_cmd("py=/opt/conda/bin/python=3").unwrap(),
        cmd("py", "/opt/conda/bin/python=3")
    );
    for bad in ["", "=x", "a/b", "-x", ".x", "a b", "x=", "x=a\nb", "$x"] {
        assert!(parse_cmd(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn commands_from_labels_and_flags() {
    let mut labels = BTreeMap::new();
    labels.insert(
        COMMANDS_LABEL.to_string(),
        " python3\tpip  py=python3\n".into(),
    );
    let img = Path::new("/i.sif");
    let got = commands(&args(&["pip", "ls"], true), &labels, img).unwrap();
    let names: Vec<&str> = got.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["python3", "pip", "py", "ls"]);
    assert_eq!(got[2].target, "python3");
    // The label is ignored without --from-labels.
    assert_eq!(
        commands(&args(&["ls"], false), &labels, img).unwrap().len(),
        1
    );
    let clash = commands(&args(&["pip=pip3"], true), &labels, img).unwrap_err();
    assert!(clash.to_string().contains("given twice"), "{clash}");
    let none = commands(&args(&[], true), &BTreeMap::new(), img).unwrap_err();
    assert!(none.to_string().contains(COMMANDS_LABEL), "{none}");
    assert!(none.to_string().contains("/i.sif"), "{none}");
    let empty = commands(&args(&[], false), &labels, img).unwrap_err();
    assert!(empty.to_string().contains("--cmd"), "{empty}");
}

fn sample<'a>(labels: &'a BTreeMap<String, String>, cmds: &'a [Cmd]) -> Module<'a> {
    Module {
        name: "tools/py",
        version: "3.12",
        image: Path::new("/images/py $x [y] \"q\".sif"),
        commands: cmds,
        labels,
        bin: Path::new("/m/tools/py/3.12.d/bin"),
    }
}

fn tricky_labels() -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    labels.insert("org.opencontainers.image.title".into(), "Py \"3\"".into());
    labels.insert(
        "weird".into(),
        "$HOME [exec id] ]] \\ {x}\nsecond\tline".into(),
    );
    labels
}

#[test]
fn lua_modulefile() {
    let labels = tricky_labels();
    let cmds = [cmd("python3", "python3"), cmd("py", "/opt/py")];
    let text = lua(&sample(&labels, &cmds));
    assert!(text.starts_with("-- tools/py/3.12: "), "{text}");
    assert!(text.contains("whatis(\"Name: tools/py\")"), "{text}");
    assert!(text.contains("whatis(\"Version: 3.12\")"), "{text}");
    assert!(
        text.contains("whatis(\"Commands: python3 py=/opt/py\")"),
        "{text}"
    );
    assert!(
        text.contains(r#"whatis("org.opencontainers.image.title: Py \"3\"")"#),
        "{text}"
    );
    assert!(
        text.contains(r#"whatis("weird: $HOME [exec id] ]] \\ {x} second line")"#),
        "{text}"
    );
    assert!(text.contains("conflict(\"tools/py\")"), "{text}");
    assert!(
        text.contains("prepend_path(\"PATH\", \"/m/tools/py/3.12.d/bin\")"),
        "{text}"
    );
}

#[test]
fn tcl_modulefile() {
    let labels = tricky_labels();
    let cmds = [cmd("python3", "python3")];
    let text = tcl(&sample(&labels, &cmds));
    assert!(
        text.starts_with("#%Module1.0\n## tools/py/3.12: "),
        "{text}"
    );
    assert!(
        text.contains("proc ModulesHelp { } {\n    puts stderr "),
        "{text}"
    );
    assert!(
        text.contains(r#"module-whatis "weird: \$HOME \[exec id\] \]\] \\ {x} second line""#),
        "{text}"
    );
    assert!(
        text.contains(r#"module-whatis "Image: /images/py \$x \[y\] \"q\".sif""#),
        "{text}"
    );
    assert!(text.contains("conflict \"tools/py\"\n"), "{text}");
    assert!(
        text.contains("prepend-path PATH \"/m/tools/py/3.12.d/bin\"\n"),
        "{text}"
    );
}

fn all_chars() -> String {
    let mut s: String = TRICKY.concat();
    s.extend((1u8..0x80).map(char::from));
    s
}

/// A missing interpreter skips a read-back, except under CI=true, where install-deps has
/// installed both (Lmod needs them).
fn skip(interpreter: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and {interpreter} is missing (run `sudo ./install-deps`)"
    );
    eprintln!("{interpreter} not installed: read-back skipped");
}

/// Tcl reads `tcl_str` back as the original string, with no substitution.
#[test]
fn tcl_strings_read_back() {
    let s = all_chars();
    assert_eq!(tcl_str("a$b[c]\"\\\n"), "\"a\\$b\\[c\\]\\\"\\\\\\u000a\"");
    if !have("tclsh") {
        skip("tclsh");
        return;
    }
    let dir = scratch("tcl");
    let script = dir.join("t.tcl");
    let body = format!(
        "fconfigure stdout -encoding utf-8 -translation lf\nputs -nonewline {}\n",
        tcl_str(&s)
    );
    std::fs::write(&script, body).unwrap();
    let out = std::process::Command::new("tclsh")
        .arg(&script)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), s, "{out:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Lua reads `lua_str` back as the original string.
#[test]
fn lua_strings_read_back() {
    let s = all_chars();
    assert_eq!(lua_str("a\"\\\n\t"), "\"a\\\"\\\\\\n\\009\"");
    let lua = ["lua5.3", "lua5.4", "lua"].into_iter().find(|l| have(l));
    let Some(lua) = lua else {
        skip("lua");
        return;
    };
    let out = std::process::Command::new(lua)
        .args(["-e", &format!("io.write({})", lua_str(&s))])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), s, "{out:?}");
}

#[test]
fn one_line_drops_controls() {
    assert_eq!(one_line("a\nb\r\n\tc "), "a b c ");
    assert_eq!(one_line("\n"), "");
}

#[test]
fn replace_dir_swaps_whole_sets() {
    let dir = scratch("replace");
    let target = dir.join("1.0.d");
    replace_dir(&target, &[("a".into(), "#!/bin/sh\n".into())]).unwrap();
    let meta = std::fs::metadata(target.join("bin/a")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o755);
    replace_dir(&target, &[("b".into(), "x".into())]).unwrap();
    assert!(!target.join("bin/a").exists());
    assert!(target.join("bin/b").exists());
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
    assert_eq!(names.len(), 1, "leftovers: {names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
