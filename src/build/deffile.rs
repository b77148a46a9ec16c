//! The Apptainer definition-file format: a header (`Bootstrap:`, `From:`, `Stage:`…), then
//! `%sections`. A file may hold several stages, each starting at its own `Bootstrap:` line.
//! `%arguments` gives defaults for `{{ NAME }}` placeholders, which are replaced in the whole
//! text before anything else is parsed (as Apptainer does), so a placeholder may appear in the
//! header as well as in a script.
//!
//! Every error names the file, the line and, inside a section, the section.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Where the base of a stage comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    Docker,
    Oci,
    OciArchive,
    DockerArchive,
    LocalImage,
    Scratch,
}

impl Bootstrap {
    fn parse(word: &str) -> Option<Bootstrap> {
        Some(match word.to_ascii_lowercase().as_str() {
            "docker" => Bootstrap::Docker,
            "oci" => Bootstrap::Oci,
            "oci-archive" => Bootstrap::OciArchive,
            "docker-archive" => Bootstrap::DockerArchive,
            "localimage" => Bootstrap::LocalImage,
            "scratch" => Bootstrap::Scratch,
            _ => return None,
        })
    }

    /// The `rsing build` source for `From:` value `from` (None for scratch).
    pub fn source(self, from: &str) -> Option<String> {
        match self {
            Bootstrap::Docker => Some(if from.starts_with("docker://") {
                from.to_string()
            } else {
                format!("docker://{from}")
            }),
            Bootstrap::Oci => Some(format!("oci:{from}")),
            Bootstrap::OciArchive => Some(format!("oci-archive:{from}")),
            Bootstrap::DockerArchive => Some(format!("docker-archive:{from}")),
            Bootstrap::LocalImage => Some(from.to_string()),
            Bootstrap::Scratch => None,
        }
    }
}

/// A shell script section (`%setup`, `%post`, `%test`…) with its first line, for messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Script {
    pub body: String,
    /// `%post -c /bin/bash`: the interpreter (default `/bin/sh`).
    pub interpreter: Option<String>,
    pub line: usize,
}

/// One `SRC [DEST]` line of `%files`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCopy {
    pub src: String,
    pub dest: Option<String>,
    pub line: usize,
}

/// A `%files` or `%files from STAGE` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    pub from: Option<String>,
    pub copies: Vec<FileCopy>,
}

/// A SCIF app's sections (`%apprun NAME` …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct App {
    pub run: Option<String>,
    pub env: Option<String>,
    pub help: Option<String>,
    pub labels: Vec<(String, String)>,
    pub install: Option<Script>,
    pub files: Vec<FileCopy>,
    pub test: Option<String>,
}

/// One stage: its header and sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: Option<String>,
    pub bootstrap: Bootstrap,
    pub from: String,
    /// The line of `Bootstrap:`.
    pub line: usize,
    pub setup: Option<Script>,
    pub files: Vec<Files>,
    pub post: Option<Script>,
    pub environment: Option<String>,
    pub runscript: Option<String>,
    pub startscript: Option<String>,
    pub test: Option<Script>,
    pub help: Option<String>,
    pub labels: Vec<(String, String)>,
    pub apps: BTreeMap<String, App>,
}

/// A parsed definition file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    pub stages: Vec<Stage>,
    /// `--build-arg` names that no placeholder used (the caller warns).
    pub unused_args: Vec<String>,
}

impl Recipe {
    /// The last stage: the one that becomes the image.
    pub fn last(&self) -> &Stage {
        self.stages.last().expect("a recipe has at least one stage")
    }
}

/// A definition-file error, with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub section: Option<String>,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.line)?;
        if let Some(section) = &self.section {
            write!(f, "in %{section}: ")?;
        }
        f.write_str(&self.message)
    }
}

const HEADER_KEYS: &[&str] = &[
    "bootstrap",
    "from",
    "stage",
    "includecmd",
    "fingerprints",
    "mirrorurl",
    "osversion",
    "include",
    "updateurl",
    "registry",
    "namespace",
];

/// Parses definition file text `text` (named `file` in messages) with `--build-arg` values
/// `args`, which override `%arguments` defaults.
pub fn parse(
    file: &str,
    text: &str,
    args: &BTreeMap<String, String>,
) -> Result<Recipe, ParseError> {
    let err = |line: usize, section: Option<&str>, message: String| ParseError {
        file: file.to_string(),
        line,
        section: section.map(str::to_string),
        message,
    };
    let mut values = arguments_section(text).map_err(|(l, m)| err(l, Some("arguments"), m))?;
    for (k, v) in args {
        values.insert(k.clone(), v.clone());
    }
    let (text, used) = substitute(text, &values).map_err(|(l, m)| err(l, None, m))?;
    let unused_args = args
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();

    let mut stages: Vec<Stage> = Vec::new();
    let mut header: Vec<(String, String, usize)> = Vec::new();
    let mut in_header = true;
    let mut current: Option<Section> = None;
    let lines: Vec<&str> = text.split('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let number = i + 1;
        let raw = lines[i].trim_end_matches('\r');
        i += 1;
        if let Some(rest) = raw.strip_prefix('%') {
            let section = section_header(rest, number).map_err(|m| err(number, None, m))?;
            if in_header {
                stages.push(stage_from_header(&header).map_err(|(l, m)| err(l, None, m))?);
                header.clear();
                in_header = false;
            }
            if let Some(done) = current.take() {
                store(stages.last_mut().expect("stage"), done)
                    .map_err(|(l, s, m)| err(l, Some(&s), m))?;
            }
            current = Some(section);
            continue;
        }
        let trimmed = raw.trim();
        // A `Bootstrap:` line after sections starts the next stage (multi-stage files).
        if !in_header && header_key(trimmed).as_deref() == Some("bootstrap") {
            if let Some(done) = current.take() {
                store(stages.last_mut().expect("stage"), done)
                    .map_err(|(l, s, m)| err(l, Some(&s), m))?;
            }
            in_header = true;
        }
        if in_header {
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once(':') else {
                return Err(err(
                    number,
                    None,
                    format!("expected a header line `Key: value` or a %section, found `{trimmed}`"),
                ));
            };
            let key = key.trim().to_ascii_lowercase();
            if !HEADER_KEYS.contains(&key.as_str()) {
                return Err(err(
                    number,
                    None,
                    format!("unknown header keyword `{}`", key),
                ));
            }
            header.push((key, value.trim().to_string(), number));
        } else if let Some(section) = current.as_mut() {
            section.body.push_str(raw);
            section.body.push('\n');
        }
    }
    if in_header {
        if header.is_empty() && stages.is_empty() {
            return Err(err(
                1,
                None,
                "empty definition file: no Bootstrap: header".into(),
            ));
        }
        if !header.is_empty() {
            stages.push(stage_from_header(&header).map_err(|(l, m)| err(l, None, m))?);
        }
    }
    if let Some(done) = current.take() {
        store(stages.last_mut().expect("stage"), done).map_err(|(l, s, m)| err(l, Some(&s), m))?;
    }
    check_stages(&stages).map_err(|(l, s, m)| err(l, Some(&s), m))?;
    Ok(Recipe {
        stages,
        unused_args,
    })
}

fn header_key(line: &str) -> Option<String> {
    let (key, _) = line.split_once(':')?;
    Some(key.trim().to_ascii_lowercase())
}

/// A section being read.
struct Section {
    kind: String,
    /// Words after the name: the app name, `from STAGE`, `-c SHELL`.
    words: Vec<String>,
    line: usize,
    body: String,
}

const SECTIONS: &[&str] = &[
    "setup",
    "files",
    "post",
    "environment",
    "runscript",
    "startscript",
    "test",
    "labels",
    "help",
    "arguments",
    "apprun",
    "appenv",
    "apphelp",
    "applabels",
    "appinstall",
    "appfiles",
    "apptest",
];

fn section_header(rest: &str, line: usize) -> Result<Section, String> {
    let mut words = rest.split_whitespace().map(str::to_string);
    let kind = words.next().unwrap_or_default().to_ascii_lowercase();
    if !SECTIONS.contains(&kind.as_str()) {
        return Err(format!("unknown section %{kind}"));
    }
    let words: Vec<String> = words.collect();
    if kind.starts_with("app") && words.len() != 1 {
        return Err(format!("%{kind} needs exactly one app name"));
    }
    Ok(Section {
        kind,
        words,
        line,
        body: String::new(),
    })
}

fn stage_from_header(header: &[(String, String, usize)]) -> Result<Stage, (usize, String)> {
    let get = |key: &str| header.iter().find(|(k, _, _)| k == key);
    let first = header.first().map(|h| h.2).unwrap_or(1);
    let Some((_, bootstrap, line)) = get("bootstrap") else {
        return Err((first, "the header has no Bootstrap: line".into()));
    };
    let kind = Bootstrap::parse(bootstrap).ok_or_else(|| {
        (
            *line,
            format!(
                "unsupported Bootstrap: {bootstrap} (docker, oci, oci-archive, docker-archive, localimage or scratch)"
            ),
        )
    })?;
    let from = get("from").map(|(_, v, _)| v.clone()).unwrap_or_default();
    if from.is_empty() && kind != Bootstrap::Scratch {
        return Err((*line, format!("Bootstrap: {bootstrap} needs a From: line")));
    }
    Ok(Stage {
        name: get("stage").map(|(_, v, _)| v.clone()),
        bootstrap: kind,
        from,
        line: *line,
        setup: None,
        files: Vec::new(),
        post: None,
        environment: None,
        runscript: None,
        startscript: None,
        test: None,
        help: None,
        labels: Vec::new(),
        apps: BTreeMap::new(),
    })
}

fn script(section: &Section) -> Result<Script, (usize, String, String)> {
    let interpreter = match section.words.as_slice() {
        [] => None,
        [flag, shell] if flag == "-c" => Some(shell.clone()),
        _ => {
            return Err((
                section.line,
                section.kind.clone(),
                format!(
                    "unexpected words after %{}: {}",
                    section.kind,
                    section.words.join(" ")
                ),
            ))
        }
    };
    Ok(Script {
        body: section.body.clone(),
        interpreter,
        line: section.line,
    })
}

/// Stores a finished section into `stage`.
fn store(stage: &mut Stage, mut section: Section) -> Result<(), (usize, String, String)> {
    // Blank lines before the next section are not part of this one.
    let kept = section.body.trim_end().len();
    section.body.truncate(kept);
    if kept > 0 {
        section.body.push('\n');
    }
    let kind = section.kind.clone();
    let fail = |line: usize, message: String| (line, kind.clone(), message);
    let text = Some(section.body.clone());
    match kind.as_str() {
        "setup" => stage.setup = Some(script(&section)?),
        "post" => stage.post = Some(script(&section)?),
        "test" => stage.test = Some(script(&section)?),
        "environment" => stage.environment = text,
        "runscript" => stage.runscript = text,
        "startscript" => stage.startscript = text,
        "help" => stage.help = text,
        "labels" => stage.labels = labels(&section).map_err(|(l, m)| fail(l, m))?,
        "arguments" => {}
        "files" => {
            let from = match section.words.as_slice() {
                [] => None,
                [word, name] if word.eq_ignore_ascii_case("from") => Some(name.clone()),
                _ => {
                    return Err(fail(
                        section.line,
                        "expected `%files` or `%files from STAGE`".into(),
                    ))
                }
            };
            let copies = file_copies(&section).map_err(|(l, m)| fail(l, m))?;
            stage.files.push(Files { from, copies });
        }
        app => {
            let name = section.words[0].clone();
            let entry = stage.apps.entry(name).or_default();
            match app {
                "apprun" => entry.run = text,
                "appenv" => entry.env = text,
                "apphelp" => entry.help = text,
                "apptest" => entry.test = text,
                "applabels" => entry.labels = labels(&section).map_err(|(l, m)| fail(l, m))?,
                "appfiles" => entry.files = file_copies(&section).map_err(|(l, m)| fail(l, m))?,
                "appinstall" => {
                    entry.install = Some(Script {
                        body: section.body.clone(),
                        interpreter: None,
                        line: section.line,
                    })
                }
                _ => unreachable!("section names are checked when read"),
            }
        }
    }
    Ok(())
}

fn content_lines(section: &Section) -> impl Iterator<Item = (usize, &str)> {
    section
        .body
        .lines()
        .enumerate()
        .map(move |(i, l)| (section.line + 1 + i, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
}

/// `%labels`: `KEY VALUE…` per line.
fn labels(section: &Section) -> Result<Vec<(String, String)>, (usize, String)> {
    content_lines(section)
        .map(|(line, l)| match l.split_once(char::is_whitespace) {
            Some((k, v)) => Ok((k.to_string(), v.trim().to_string())),
            None => Err((line, format!("label `{l}` has no value"))),
        })
        .collect()
}

/// `%files`: `SRC [DEST]` per line.
fn file_copies(section: &Section) -> Result<Vec<FileCopy>, (usize, String)> {
    content_lines(section)
        .map(|(line, l)| {
            let words: Vec<&str> = l.split_whitespace().collect();
            match words.as_slice() {
                [src] => Ok(FileCopy {
                    src: src.to_string(),
                    dest: None,
                    line,
                }),
                [src, dest] => Ok(FileCopy {
                    src: src.to_string(),
                    dest: Some(dest.to_string()),
                    line,
                }),
                _ => Err((line, format!("expected `SRC [DEST]`, found `{l}`"))),
            }
        })
        .collect()
}

/// Stage names unique; `%files from` names an earlier stage.
fn check_stages(stages: &[Stage]) -> Result<(), (usize, String, String)> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for stage in stages {
        for files in &stage.files {
            if let Some(from) = &files.from {
                if !seen.contains(from.as_str()) {
                    let line = files
                        .copies
                        .first()
                        .map(|c| c.line - 1)
                        .unwrap_or(stage.line);
                    return Err((
                        line,
                        "files".into(),
                        format!("no earlier stage named `{from}`"),
                    ));
                }
            }
        }
        if let Some(name) = &stage.name {
            if !seen.insert(name) {
                return Err((
                    stage.line,
                    "header".into(),
                    format!("two stages named `{name}`"),
                ));
            }
        }
    }
    Ok(())
}

/// Reads `%arguments` (`NAME=default` lines) from the raw text.
fn arguments_section(text: &str) -> Result<BTreeMap<String, String>, (usize, String)> {
    let mut values = BTreeMap::new();
    let mut inside = false;
    for (i, raw) in text.lines().enumerate() {
        if let Some(rest) = raw.strip_prefix('%') {
            inside = rest.split_whitespace().next() == Some("arguments");
            continue;
        }
        let l = raw.trim();
        if !inside || l.is_empty() || l.starts_with('#') {
            continue;
        }
        match l.split_once('=') {
            Some((k, v)) if valid_name(k.trim()) => {
                values.insert(k.trim().to_string(), unquote(v.trim()).to_string());
            }
            _ => return Err((i + 1, format!("expected `NAME=value`, found `{l}`"))),
        }
    }
    Ok(values)
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

pub fn valid_name(k: &str) -> bool {
    let mut c = k.chars();
    c.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Replaces every `{{ NAME }}` with its value; returns the text and the names used.
fn substitute(
    text: &str,
    values: &BTreeMap<String, String>,
) -> Result<(String, BTreeSet<String>), (usize, String)> {
    let mut out = String::with_capacity(text.len());
    let mut used = BTreeSet::new();
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut rest = line;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find("}}") else {
                return Err((i + 1, "unterminated `{{` (no `}}` on the same line)".into()));
            };
            let name = after[..end].trim();
            if !valid_name(name) {
                return Err((
                    i + 1,
                    format!("`{{{{ {name} }}}}` is not a valid argument name"),
                ));
            }
            let Some(value) = values.get(name) else {
                return Err((
                    i + 1,
                    format!("argument `{name}` has no value: give it in %arguments or with --build-arg {name}=VALUE"),
                ));
            };
            used.insert(name.to_string());
            out.push_str(value);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
    }
    Ok((out, used))
}

#[cfg(test)]
#[path = "deffile_tests.rs"]
mod tests;
