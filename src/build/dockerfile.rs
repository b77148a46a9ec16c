//! The Dockerfile format: instructions (continuation lines joined, comments dropped), each
//! with its line, parsed into typed steps. Variables (`$V`, `${V}`, `${V:-d}`, `${V:+x}`) are
//! expanded by the builder at the point of use, with the ARG and ENV values then in force.
//! Unsupported instructions are errors naming their line.

use std::fmt;

/// A Dockerfile error with its line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// A command in shell form (run by SHELL) or exec form (a JSON array).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Shell(String),
    Exec(Vec<String>),
}

/// `COPY`/`ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub sources: Vec<String>,
    pub dest: String,
    pub add: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    From { image: String, name: Option<String> },
    Run(Command),
    Copy(Copy),
    Env(Vec<(String, String)>),
    Arg(String, Option<String>),
    Workdir(String),
    User(String),
    Label(Vec<(String, String)>),
    Entrypoint(Command),
    Cmd(Command),
    Expose(Vec<String>),
    Volume(Vec<String>),
    Healthcheck(String),
    Shell(Vec<String>),
    StopSignal(String),
}

/// An instruction and its (first) line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub line: usize,
    pub instruction: Instruction,
}

/// Parses Dockerfile `text` (named `file` in messages).
pub fn parse(file: &str, text: &str) -> Result<Vec<Line>, ParseError> {
    let err = |line: usize, message: String| ParseError {
        file: file.to_string(),
        line,
        message,
    };
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut start = 0;
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (pending.is_empty() && trimmed.is_empty()) {
            continue;
        }
        if pending.is_empty() {
            start = i + 1;
        }
        if let Some(head) = raw.trim_end().strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
            continue;
        }
        pending.push_str(raw);
        let whole = std::mem::take(&mut pending);
        out.push(Line {
            line: start,
            instruction: instruction(&whole).map_err(|m| err(start, m))?,
        });
    }
    if !pending.trim().is_empty() {
        out.push(Line {
            line: start,
            instruction: instruction(&pending).map_err(|m| err(start, m))?,
        });
    }
    match out
        .iter()
        .find(|l| !matches!(l.instruction, Instruction::Arg(..)))
    {
        Some(Line {
            instruction: Instruction::From { .. },
            ..
        }) => Ok(out),
        Some(l) => Err(err(
            l.line,
            "the first instruction must be FROM (after ARGs)".into(),
        )),
        None => Err(err(1, "no FROM instruction".into())),
    }
}

fn instruction(text: &str) -> Result<Instruction, String> {
    let text = text.trim();
    let (word, rest) = text
        .split_once(char::is_whitespace)
        .map(|(w, r)| (w, r.trim()))
        .unwrap_or((text, ""));
    let keyword = word.to_ascii_uppercase();
    let need = |what: &str| -> Result<(), String> {
        if rest.is_empty() {
            Err(format!("{keyword} needs {what}"))
        } else {
            Ok(())
        }
    };
    Ok(match keyword.as_str() {
        "FROM" => {
            need("an image")?;
            let words: Vec<&str> = rest
                .split_whitespace()
                .filter(|w| !w.starts_with("--platform"))
                .collect();
            match words.as_slice() {
                [image] => Instruction::From {
                    image: image.to_string(),
                    name: None,
                },
                [image, as_, name] if as_.eq_ignore_ascii_case("as") => Instruction::From {
                    image: image.to_string(),
                    name: Some(name.to_ascii_lowercase()),
                },
                _ => {
                    return Err(format!(
                        "expected `FROM IMAGE [AS NAME]`, found `FROM {rest}`"
                    ))
                }
            }
        }
        "RUN" => {
            need("a command")?;
            if rest.starts_with("--") {
                return Err(format!("RUN options are not supported: `{rest}`"));
            }
            Instruction::Run(command(rest)?)
        }
        "CMD" => Instruction::Cmd(command(rest)?),
        "ENTRYPOINT" => Instruction::Entrypoint(command(rest)?),
        "COPY" | "ADD" => Instruction::Copy(copy(rest, keyword == "ADD")?),
        "ENV" => {
            need("NAME=VALUE")?;
            Instruction::Env(pairs(rest, "ENV")?)
        }
        "LABEL" => {
            need("KEY=VALUE")?;
            Instruction::Label(pairs(rest, "LABEL")?)
        }
        "ARG" => {
            need("a name")?;
            match rest.split_once('=') {
                Some((k, v)) => Instruction::Arg(k.trim().to_string(), Some(unquote(v.trim()))),
                None => Instruction::Arg(rest.to_string(), None),
            }
        }
        "WORKDIR" => {
            need("a directory")?;
            Instruction::Workdir(rest.to_string())
        }
        "USER" => {
            need("a user")?;
            Instruction::User(rest.to_string())
        }
        "EXPOSE" => Instruction::Expose(rest.split_whitespace().map(str::to_string).collect()),
        "VOLUME" => Instruction::Volume(match json_array(rest) {
            Some(v) => v?,
            None => rest.split_whitespace().map(str::to_string).collect(),
        }),
        "HEALTHCHECK" => Instruction::Healthcheck(rest.to_string()),
        "STOPSIGNAL" => Instruction::StopSignal(rest.to_string()),
        "SHELL" => match json_array(rest) {
            Some(v) => Instruction::Shell(v?),
            None => {
                return Err("SHELL needs a JSON array, e.g. SHELL [\"/bin/bash\", \"-c\"]".into())
            }
        },
        "MAINTAINER" => Instruction::Label(vec![("maintainer".into(), rest.to_string())]),
        _ => return Err(format!("unsupported instruction {word}")),
    })
}

fn command(rest: &str) -> Result<Command, String> {
    match json_array(rest) {
        Some(v) => Ok(Command::Exec(v?)),
        None => Ok(Command::Shell(rest.to_string())),
    }
}

/// A JSON array of strings, if `text` looks like one.
fn json_array(text: &str) -> Option<Result<Vec<String>, String>> {
    if !text.starts_with('[') {
        return None;
    }
    Some(
        serde_json::from_str::<Vec<String>>(text)
            .map_err(|e| format!("bad JSON array `{text}`: {e}")),
    )
}

fn copy(rest: &str, add: bool) -> Result<Copy, String> {
    let name = if add { "ADD" } else { "COPY" };
    let mut c = Copy {
        from: None,
        chown: None,
        chmod: None,
        sources: Vec::new(),
        dest: String::new(),
        add,
    };
    let mut words: Vec<String> = Vec::new();
    let mut rest = rest;
    while let Some(flag) = rest.strip_prefix("--") {
        let (word, tail) = flag.split_once(char::is_whitespace).unwrap_or((flag, ""));
        let (key, value) = word
            .split_once('=')
            .ok_or(format!("{name} --{word}: expected --FLAG=VALUE"))?;
        match key {
            "from" => c.from = Some(value.to_ascii_lowercase()),
            "chown" => c.chown = Some(value.to_string()),
            "chmod" => c.chmod = Some(value.to_string()),
            "link" => {}
            _ => return Err(format!("{name} --{key} is not supported")),
        }
        rest = tail.trim_start();
    }
    match json_array(rest) {
        Some(v) => words.extend(v?),
        None => words.extend(rest.split_whitespace().map(str::to_string)),
    }
    if words.len() < 2 {
        return Err(format!(
            "{name} needs at least one source and a destination"
        ));
    }
    c.dest = words.pop().expect("two words");
    c.sources = words;
    Ok(c)
}

/// `K=V K2="a b"` or the legacy `K V with spaces`.
fn pairs(rest: &str, name: &str) -> Result<Vec<(String, String)>, String> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .ok_or(format!("{name} {rest}: no value"))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    for word in shell_words(rest)? {
        let (k, v) = word
            .split_once('=')
            .ok_or(format!("{name}: `{word}` is not KEY=VALUE"))?;
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn unquote(v: &str) -> String {
    shell_words(v)
        .ok()
        .and_then(|w| w.into_iter().next())
        .unwrap_or_default()
}

/// Splits on unquoted whitespace, removing quotes and backslash escapes (keeps `$`).
fn shell_words(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut any = false;
    let mut chars = text.chars();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, '"' | '\'') => {
                quote = Some(c);
                any = true;
            }
            (Some(q), c) if c == q => quote = None,
            (Some('\''), c) => cur.push(c),
            (_, '\\') => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                any = true;
            }
            (_, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quote.is_some() {
        return Err(format!("unterminated quote in `{text}`"));
    }
    if any {
        out.push(cur);
    }
    Ok(out)
}

/// Expands `$V`, `${V}`, `${V:-default}` and `${V:+alt}` from `lookup`; `\$` stays `$`.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == '\\' && bytes.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
            continue;
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        if bytes.get(i + 1) == Some(&'{') {
            if let Some(end) = bytes[i + 2..].iter().position(|c| *c == '}') {
                let inner: String = bytes[i + 2..i + 2 + end].iter().collect();
                i += end + 3;
                let (name, op) = match inner.find(':') {
                    Some(at) => (&inner[..at], Some(&inner[at + 1..])),
                    None => (inner.as_str(), None),
                };
                let value = lookup(name).filter(|v| !v.is_empty());
                match op {
                    Some(op) if op.starts_with('-') => {
                        out.push_str(&value.unwrap_or_else(|| op[1..].to_string()))
                    }
                    Some(op) if op.starts_with('+') => {
                        if value.is_some() {
                            out.push_str(&op[1..])
                        }
                    }
                    _ => out.push_str(&value.unwrap_or_default()),
                }
                continue;
            }
        }
        let name: String = bytes[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .collect();
        if name.is_empty() {
            out.push('$');
            i += 1;
        } else {
            i += 1 + name.len();
            out.push_str(&lookup(&name).unwrap_or_default());
        }
    }
    out
}

#[cfg(test)]
#[path = "dockerfile_tests.rs"]
mod tests;
