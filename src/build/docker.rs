//! Building a Dockerfile: stages (`FROM … AS name`), RUN through the same unprivileged step
//! runner as `%post`, COPY/ADD from the context (globs, `.dockerignore`, never outside the
//! context), from an earlier stage, or (ADD) from a URL ([`super::download`]), and the image
//! config (ENV, WORKDIR, USER, LABEL, ENTRYPOINT, CMD, EXPOSE, VOLUME, HEALTHCHECK, SHELL,
//! STOPSIGNAL) kept as an OCI config.
//!
//! RUN always runs as root (uid 0 in the step's namespace); USER is recorded in the config.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};

use super::cache::{content_hash, key as step_key, StepCache};
use super::copy::{copy_tree, in_root};
use super::dockerfile::{expand, Command, Copy, Instruction, Line};
use super::glob::{glob, wildcard};
use super::layers::{merge_into, Mounted, Tree};
use super::owners::Owners;
use super::runner::Step;
use super::{io, Error, Result};

/// The image config a Dockerfile builds up (the OCI `config` object's fields).
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    pub env: Vec<(String, String)>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
    pub exposed: Vec<String>,
    pub volumes: Vec<String>,
    pub healthcheck: Option<String>,
    pub shell: Vec<String>,
    pub stop_signal: Option<String>,
}

impl ImageConfig {
    /// From a base image's config object (`{"Env": …, "Cmd": …}`).
    pub fn from_oci(v: &Value) -> ImageConfig {
        let strings = |key: &str| -> Vec<String> {
            v.get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        ImageConfig {
            env: strings("Env")
                .into_iter()
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e, String::new()),
                })
                .collect(),
            entrypoint: strings("Entrypoint"),
            cmd: strings("Cmd"),
            workdir: v
                .get("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            user: v
                .get("User")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            labels: v
                .get("Labels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
            ..ImageConfig::default()
        }
    }

    /// The OCI `config` object.
    pub fn to_oci(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("Env".into(), json!(self.env_strings()));
        if !self.entrypoint.is_empty() {
            m.insert("Entrypoint".into(), json!(self.entrypoint));
        }
        if !self.cmd.is_empty() {
            m.insert("Cmd".into(), json!(self.cmd));
        }
        if !self.workdir.is_empty() {
            m.insert("WorkingDir".into(), json!(self.workdir));
        }
        if !self.user.is_empty() {
            m.insert("User".into(), json!(self.user));
        }
        if !self.labels.is_empty() {
            m.insert("Labels".into(), json!(self.labels));
        }
        let set = |v: &[String]| -> Value {
            v.iter()
                .map(|p| (p.clone(), json!({})))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        if !self.exposed.is_empty() {
            m.insert("ExposedPorts".into(), set(&self.exposed));
        }
        if !self.volumes.is_empty() {
            m.insert("Volumes".into(), set(&self.volumes));
        }
        if let Some(h) = &self.healthcheck {
            m.insert("Healthcheck".into(), json!({ "Test": ["CMD-SHELL", h] }));
        }
        if let Some(s) = &self.stop_signal {
            m.insert("StopSignal".into(), json!(s));
        }
        Value::Object(m)
    }

    pub fn env_strings(&self) -> Vec<String> {
        self.env.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    fn set_env(&mut self, key: &str, value: String) {
        match self.env.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => self.env.push((key.to_string(), value)),
        }
    }

    fn shell(&self) -> Vec<String> {
        if self.shell.is_empty() {
            vec!["/bin/sh".into(), "-c".into()]
        } else {
            self.shell.clone()
        }
    }
}

/// Unpacks base images for FROM: `image` (a reference or an rsing source) into `dest`, which
/// must not exist; returns the image's config object when it has one.
pub trait Bases {
    fn unpack(&self, image: &str, dest: &Path) -> std::result::Result<Base, String>;
    /// The config of the base unpacked last for `image`.
    fn config_of(&self, image: &str) -> Option<Value>;
}

/// An unpacked base: its config object and the owners its files had (`(path, uid, gid)`).
pub struct Base {
    pub config: Option<Value>,
    pub owners: Vec<(String, u32, u32)>,
}

/// Where and how to build.
pub struct Build<'a> {
    pub file: &'a str,
    pub context: &'a Path,
    /// Staging directory: stage roots are made inside it.
    pub work: &'a Path,
    pub build_args: &'a BTreeMap<String, String>,
    pub bases: &'a dyn Bases,
    pub say: &'a dyn Fn(&str),
    pub cache: &'a StepCache,
    pub userns: &'a super::userns::Userns,
}

/// What a build made: the last stage's tree (a view of its layers, mounted as long as this
/// lives), its config and the recorded ownership.
pub struct Built {
    pub root: PathBuf,
    pub config: ImageConfig,
    pub owners: Owners,
    /// `--build-arg` names no ARG declared.
    pub unused_args: Vec<String>,
    /// Keeps `root` mounted.
    pub tree: Tree,
}

/// One layer of a stage: its cache key (none when it is not in the cache) and directory.
type Layer = (Option<String>, PathBuf);

struct StageState {
    /// The stage's tree, bottom first.
    layers: Vec<Layer>,
    config: ImageConfig,
    owners: Owners,
    args: BTreeMap<String, String>,
    /// The cache key of everything so far.
    key: String,
}

/// A finished stage that later ones name (`FROM name`, `COPY --from=name`).
struct Done {
    layers: Vec<Layer>,
    config: ImageConfig,
    owners: Owners,
    key: String,
    /// Its tree, for `COPY --from`.
    view: Tree,
}

fn layer_dirs(layers: &[Layer]) -> Vec<PathBuf> {
    layers.iter().map(|l| l.1.clone()).collect()
}

fn fresh(b: &Build, what: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    b.work
        .join(format!("{what}-{}", N.fetch_add(1, Ordering::Relaxed)))
}

/// Mounts the stage's layers over a new upper directory, with the metadata directories and
/// the WORKDIR made: the writable tree of one step (or of the finished image). Where the
/// kernel refuses the mount, this and every later tree of the build are copies (`copies`).
fn mount_upper(b: &Build, st: &StageState, copies: &Cell<bool>) -> Result<(Tree, PathBuf)> {
    let upper = fresh(b, "upper");
    let t = std::time::Instant::now();
    let lowers = layer_dirs(&st.layers);
    let mut tree = None;
    if !copies.get() {
        match Mounted::mount(&lowers, &upper, b.work, b.userns) {
            Ok(m) => tree = Some(Tree::Mounted(m)),
            Err(e) => {
                (b.say)(&format!(
                    "rsing: warning: {e}; the steps run on copies of the cached layers"
                ));
                copies.set(true);
            }
        }
    }
    let tree = match tree {
        Some(tree) => tree,
        None => {
            merge_into(&lowers, &upper).map_err(io("copying the build layers"))?;
            Tree::Copy(upper.clone())
        }
    };
    let view = tree.path();
    super::metadata::prepare(&view)?;
    if !st.config.workdir.is_empty() {
        std::fs::create_dir_all(in_root(&view, &st.config.workdir)).map_err(io("WORKDIR"))?;
    }
    tracing::info!(elapsed = ?t.elapsed(), layers = st.layers.len(), copy = copies.get(), "made the tree of a step");
    Ok((tree, upper))
}

/// Ends a step's tree and keeps its upper directory as the stage's new top layer, moved into
/// the cache under the step's key when every layer below is cached. A copy is a whole tree:
/// it becomes the only layer.
fn push_layer(b: &Build, st: &mut StageState, tree: Tree, upper: PathBuf) {
    let whole = matches!(tree, Tree::Copy(_));
    drop(tree);
    let t = std::time::Instant::now();
    if whole {
        st.layers.clear();
    }
    let lowers: Option<Vec<String>> = st.layers.iter().map(|l| l.0.clone()).collect();
    let saved = lowers.and_then(|lk| b.cache.save_layer(&st.key, &upper, &lk, &st.owners, None));
    tracing::info!(elapsed = ?t.elapsed(), cached = saved.is_some(), "saved the step's layer");
    st.layers.push(match saved {
        Some(path) => (Some(st.key.clone()), path),
        None => (None, upper),
    });
}

/// Takes the layers of a cached step, when all are there.
fn cached(b: &Build, st: &mut StageState) -> bool {
    let Some((layers, owners)) = b.cache.layers(&st.key) else {
        return false;
    };
    st.layers = layers.into_iter().map(|(k, p)| (Some(k), p)).collect();
    st.owners = owners;
    true
}

/// The bottom layer of a stage: its base image unpacked (or an empty tree for `scratch`),
/// cached under the FROM key with the image's config.
fn base_layer(b: &Build, st: &mut StageState, image: &str, line: usize) -> Result<()> {
    if cached(b, st) {
        st.config = b
            .cache
            .config(&st.key)
            .map(|c| ImageConfig::from_oci(&c))
            .unwrap_or_default();
        return Ok(());
    }
    let dir = fresh(b, "base");
    let mut config = None;
    if image == "scratch" {
        std::fs::create_dir(&dir).map_err(io("creating a stage root"))?;
    } else {
        let base = b.bases.unpack(image, &dir).map_err(|message| Error::Step {
            file: b.file.to_string(),
            line,
            message,
        })?;
        for (p, u, g) in base.owners {
            st.owners.by_path.insert(p, (u, g));
        }
        config = base.config;
    }
    st.config = config
        .as_ref()
        .map(ImageConfig::from_oci)
        .unwrap_or_default();
    let saved = b.cache.save_layer(
        &st.key,
        &dir,
        &[],
        &st.owners,
        Some(&config.unwrap_or(Value::Null)),
    );
    st.layers = vec![match saved {
        Some(path) => (Some(st.key.clone()), path),
        None => (None, dir),
    }];
    Ok(())
}

/// A finished stage kept for later ones.
fn done(b: &Build, st: StageState, copies: &Cell<bool>) -> Result<Done> {
    let (view, _) = mount_upper(b, &st, copies)?;
    Ok(Done {
        layers: st.layers,
        config: st.config,
        owners: st.owners,
        key: st.key,
        view,
    })
}

pub fn build(b: &Build, lines: &[Line]) -> Result<Built> {
    let ignore = Ignore::load(b.context);
    let mut global: BTreeMap<String, String> = BTreeMap::new();
    let mut used: std::collections::BTreeSet<String> = Default::default();
    let mut stages: HashMap<String, Done> = HashMap::new();
    let mut prev_name: Option<String> = None;
    let mut current: Option<StageState> = None;
    let copies = Cell::new(std::env::var("RSING_BUILD_LAYERS").is_ok_and(|v| v == "copy"));
    let fail = |line: usize, message: String| Error::Step {
        file: b.file.to_string(),
        line,
        message,
    };
    for l in lines {
        let line = l.line;
        if let Instruction::From { image, name } = &l.instruction {
            let image = expand(image, &|k| global.get(k).cloned());
            if let Some(prev) = current.take() {
                if let Some(n) = prev_name.take() {
                    stages.insert(n, done(b, prev, &copies)?);
                }
            }
            (b.say)(&format!("FROM {image}"));
            let args_text = format!("{:?}", b.build_args);
            let mut st = StageState {
                layers: Vec::new(),
                config: ImageConfig::default(),
                owners: Owners::default(),
                args: BTreeMap::new(),
                key: step_key(
                    "",
                    &[b"FROM layers", image.as_bytes(), args_text.as_bytes()],
                ),
            };
            if let Some(earlier) = stages.get(&image.to_ascii_lowercase()) {
                st.layers = earlier.layers.clone();
                st.owners = earlier.owners.clone();
                st.config = earlier.config.clone();
                st.key = step_key(&earlier.key, &[b"FROM stage", args_text.as_bytes()]);
            } else {
                base_layer(b, &mut st, &image, line)?;
            }
            prev_name = name.clone();
            current = Some(st);
            continue;
        }
        let Some(st) = current.as_mut() else {
            // ARG before the first FROM.
            if let Instruction::Arg(name, default) = &l.instruction {
                let value = b
                    .build_args
                    .get(name)
                    .cloned()
                    .or(default.clone())
                    .unwrap_or_default();
                if b.build_args.contains_key(name) {
                    used.insert(name.clone());
                }
                global.insert(name.clone(), value);
            }
            continue;
        };
        st.key = step_key(&st.key, &[format!("{:?}", l.instruction).as_bytes()]);
        let lookup = |k: &str| -> Option<String> {
            st.config
                .env
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .or_else(|| st.args.get(k).cloned())
        };
        match &l.instruction {
            Instruction::From { .. } => unreachable!("handled above"),
            Instruction::Arg(name, default) => {
                let value = b
                    .build_args
                    .get(name)
                    .cloned()
                    .or(default.as_ref().map(|d| expand(d, &lookup)))
                    .or_else(|| global.get(name).cloned())
                    .unwrap_or_default();
                if b.build_args.contains_key(name) {
                    used.insert(name.clone());
                }
                st.args.insert(name.clone(), value);
            }
            Instruction::Env(pairs) => {
                for (k, v) in pairs {
                    let v = expand(v, &|n| {
                        st.config
                            .env
                            .iter()
                            .find(|(x, _)| x == n)
                            .map(|(_, v)| v.clone())
                            .or_else(|| st.args.get(n).cloned())
                    });
                    st.config.set_env(k, v);
                }
            }
            Instruction::Workdir(dir) => {
                // Made in the tree of the next step, or of the image.
                let dir = expand(dir, &lookup);
                let dir = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{}/{dir}", st.config.workdir.trim_end_matches('/'))
                };
                st.config.workdir = dir;
            }
            Instruction::User(user) => st.config.user = expand(user, &lookup),
            Instruction::Label(pairs) => {
                for (k, v) in pairs {
                    st.config
                        .labels
                        .insert(expand(k, &lookup), expand(v, &lookup));
                }
            }
            Instruction::Entrypoint(c) => {
                st.config.entrypoint = argv(c, &st.config);
                st.config.cmd.clear();
            }
            Instruction::Cmd(c) => st.config.cmd = argv(c, &st.config),
            Instruction::Expose(ports) => {
                for p in ports {
                    let p = expand(p, &lookup);
                    st.config.exposed.push(if p.contains('/') {
                        p
                    } else {
                        format!("{p}/tcp")
                    });
                }
            }
            Instruction::Volume(v) => st
                .config
                .volumes
                .extend(v.iter().map(|x| expand(x, &lookup))),
            Instruction::Healthcheck(h) => st.config.healthcheck = Some(h.clone()),
            Instruction::Shell(s) => st.config.shell = s.clone(),
            Instruction::StopSignal(s) => st.config.stop_signal = Some(s.clone()),
            Instruction::Run(c) => {
                let text = match c {
                    Command::Shell(s) => s.clone(),
                    Command::Exec(v) => v.join(" "),
                };
                if cached(b, st) {
                    (b.say)(&format!("RUN {text} (cached)"));
                    continue;
                }
                let (m, upper) = mount_upper(b, st, &copies)?;
                (b.say)(&format!("RUN {text}"));
                let mut env: Vec<(String, String)> = st.config.env.clone();
                for (k, v) in &st.args {
                    if !env.iter().any(|(n, _)| n == k) {
                        env.push((k.clone(), v.clone()));
                    }
                }
                if !env.iter().any(|(k, _)| k == "PATH") {
                    env.push((
                        "PATH".into(),
                        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
                    ));
                }
                env.push(("HOME".into(), "/root".into()));
                let workdir = if st.config.workdir.is_empty() {
                    "/".to_string()
                } else {
                    st.config.workdir.clone()
                };
                let view = m.path();
                let step = Step {
                    root: &view,
                    argv: argv(c, &st.config),
                    env,
                    cwd: workdir,
                    userns: b.userns,
                    mounted: m.mounted(),
                };
                let t = std::time::Instant::now();
                let status =
                    super::stage::run_owned(&step, &mut st.owners).map_err(io("running RUN"))?;
                tracing::info!(elapsed = ?t.elapsed(), "ran RUN");
                if status != 0 {
                    return Err(Error::StepFailed {
                        what: format!("RUN {text}"),
                        status,
                        file: b.file.to_string(),
                        line,
                    });
                }
                push_layer(b, st, m, upper);
            }
            Instruction::Copy(c) => {
                let what = if c.add { "ADD" } else { "COPY" };
                let vars = lookup_owned(&st.config, &st.args);
                let sources = sources(b, c, &stages, &ignore, &vars).map_err(|m| fail(line, m))?;
                st.key = step_key(&st.key, &[content_hash(&sources).as_bytes()]);
                if cached(b, st) {
                    (b.say)(&format!(
                        "{what} {} {} (cached)",
                        c.sources.join(" "),
                        c.dest
                    ));
                    continue;
                }
                let (m, upper) = mount_upper(b, st, &copies)?;
                (b.say)(&format!("{what} {} {}", c.sources.join(" "), c.dest));
                copy(st, &m.path(), c, sources, &vars).map_err(|m| fail(line, m))?;
                push_layer(b, st, m, upper);
            }
        }
    }
    let st = current.ok_or_else(|| fail(1, "no FROM instruction".into()))?;
    drop(stages);
    let (tree, _) = mount_upper(b, &st, &copies)?;
    let unused_args = b
        .build_args
        .keys()
        .filter(|k| !used.contains(*k))
        .cloned()
        .collect();
    Ok(Built {
        root: tree.path(),
        config: st.config,
        owners: st.owners,
        unused_args,
        tree,
    })
}

fn lookup_owned(config: &ImageConfig, args: &BTreeMap<String, String>) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = args.clone().into_iter().collect();
    for (k, v) in &config.env {
        m.insert(k.clone(), v.clone());
    }
    m
}

fn argv(c: &Command, config: &ImageConfig) -> Vec<String> {
    match c {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => {
            let mut v = config.shell();
            v.push(s.clone());
            v
        }
    }
}

/// The paths COPY/ADD copies (globs expanded, `.dockerignore` applied).
fn sources(
    b: &Build,
    c: &Copy,
    stages: &HashMap<String, Done>,
    ignore: &Ignore,
    vars: &HashMap<String, String>,
) -> std::result::Result<Vec<PathBuf>, String> {
    let lookup = |k: &str| vars.get(k).cloned();
    let what = if c.add { "ADD" } else { "COPY" };
    let from_root = match &c.from {
        Some(name) => Some(
            stages
                .get(name)
                .ok_or(format!(
                    "{what} --from={name}: no earlier stage of that name"
                ))?
                .view
                .path(),
        ),
        None => None,
    };
    let mut sources: Vec<PathBuf> = Vec::new();
    for src in &c.sources {
        let src = expand(src, &lookup);
        if c.add && super::download::is_url(&src) {
            if c.from.is_some() {
                return Err(format!("ADD --from with a URL ({src})"));
            }
            let into = b.work.join(format!("add-{}", sources.len()));
            sources.push(super::download::fetch(&src, b.cache, &into)?);
            continue;
        }
        let (base, rel) = match &from_root {
            Some(root) => (
                root.clone(),
                normalize(&src).ok_or(format!("{what} {src}: bad path"))?,
            ),
            None => {
                let rel = normalize(&src)
                    .filter(|r| !r.starts_with(".."))
                    .ok_or(format!(
                        "{what} {src}: outside the build context {}",
                        b.context.display()
                    ))?;
                (b.context.to_path_buf(), rel)
            }
        };
        let matched = glob(&base, &rel);
        let matched: Vec<PathBuf> = matched
            .into_iter()
            .filter(|p| from_root.is_some() || !ignore.excluded(p.strip_prefix(&base).unwrap_or(p)))
            .collect();
        if matched.is_empty() {
            return Err(format!(
                "{what} {src}: no such file or directory{}",
                if from_root.is_some() {
                    " in that stage"
                } else {
                    " in the build context"
                }
            ));
        }
        sources.extend(matched);
    }
    Ok(sources)
}

/// COPY/ADD of `sources` into the stage.
fn copy(
    st: &mut StageState,
    root: &Path,
    c: &Copy,
    sources: Vec<PathBuf>,
    vars: &HashMap<String, String>,
) -> std::result::Result<(), String> {
    let lookup = |k: &str| vars.get(k).cloned();
    let what = if c.add { "ADD" } else { "COPY" };
    let dest = expand(&c.dest, &lookup);
    let dest = if dest.starts_with('/') {
        dest
    } else {
        format!(
            "{}/{dest}",
            if st.config.workdir.is_empty() {
                ""
            } else {
                st.config.workdir.trim_end_matches('/')
            }
        )
    };
    let into_dir = dest.ends_with('/') || sources.len() > 1;
    let target = in_root(root, &dest);
    let mut made: Vec<PathBuf> = Vec::new();
    for src in &sources {
        let is_dir = std::fs::symlink_metadata(src)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        // Docker copies a directory's contents, not the directory.
        let to = if is_dir {
            target.clone()
        } else if into_dir || target.is_dir() {
            target.join(src.file_name().unwrap_or_default())
        } else {
            target.clone()
        };
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{what}: {e}"))?;
        }
        if is_dir {
            std::fs::create_dir_all(&to).map_err(|e| format!("{what}: {e}"))?;
        }
        copy_tree(src, &to).map_err(|e| format!("{what} {}: {e}", src.display()))?;
        made.push(to);
    }
    if let Some(chown) = &c.chown {
        let (uid, gid) = ids(root, chown).ok_or(format!(
            "{what} --chown={chown}: unknown user or group in the image"
        ))?;
        for path in made {
            let mut paths = vec![path.clone()];
            collect(&path, &mut paths);
            for p in paths {
                if let Ok(rel) = p.strip_prefix(root) {
                    st.owners
                        .by_path
                        .insert(format!("/{}", rel.display()), (uid, gid));
                }
            }
        }
    }
    Ok(())
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.path());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect(&e.path(), out);
            }
        }
    }
}

/// `user[:group]`, names looked up in the image's /etc/passwd and /etc/group.
fn ids(root: &Path, spec: &str) -> Option<(u32, u32)> {
    let (user, group) = spec
        .split_once(':')
        .map(|(u, g)| (u, Some(g)))
        .unwrap_or((spec, None));
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        if let Ok(n) = name.parse::<u32>() {
            return Some((n, n));
        }
        let text = std::fs::read_to_string(root.join(file)).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.first() != Some(&name) {
                return None;
            }
            let id: u32 = f.get(2)?.parse().ok()?;
            Some((id, f.get(3).and_then(|g| g.parse().ok()).unwrap_or(0)))
        })
    };
    let (uid, primary) = lookup("etc/passwd", user)?;
    let gid = match group {
        Some(g) => lookup("etc/group", g)?.0,
        None if user.parse::<u32>().is_ok() => uid,
        None => primary,
    };
    Some((uid, gid))
}

/// A relative, normalized path (`..` kept only at the start, meaning outside).
fn normalize(p: &str) -> Option<PathBuf> {
    let mut out: Vec<String> = Vec::new();
    let mut up = 0;
    for c in Path::new(p).components() {
        if let Component::Normal(n) = c {
            out.push(n.to_string_lossy().into_owned());
        } else if c == Component::ParentDir && out.pop().is_none() {
            up += 1;
        }
    }
    let mut path = PathBuf::new();
    for _ in 0..up {
        path.push("..");
    }
    for c in out {
        path.push(c);
    }
    Some(path)
}

/// `.dockerignore`: patterns (with `!` exceptions, the last match wins) on context paths.
struct Ignore {
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    fn load(context: &Path) -> Ignore {
        let text = std::fs::read_to_string(context.join(".dockerignore")).unwrap_or_default();
        let rules = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| {
                let (keep, pat) = match l.strip_prefix('!') {
                    Some(p) => (true, p),
                    None => (false, l),
                };
                let comps = normalize(pat)
                    .unwrap_or_default()
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                (keep, comps)
            })
            .collect();
        Ignore { rules }
    }

    /// Whether context path `rel` (or a directory above it) is excluded.
    fn excluded(&self, rel: &Path) -> bool {
        let comps: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let mut out = false;
        for (keep, pat) in &self.rules {
            let hit = (1..=comps.len()).any(|k| matches(pat, &comps[..k]));
            if hit {
                out = !keep;
            }
        }
        out
    }
}

fn matches(pat: &[String], comps: &[String]) -> bool {
    match pat.first() {
        None => comps.is_empty(),
        Some(p) if p == "**" => (0..=comps.len()).any(|i| matches(&pat[1..], &comps[i..])),
        Some(p) => !comps.is_empty() && wildcard(p, &comps[0]) && matches(&pat[1..], &comps[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_ignore_rules() {
        let ig = Ignore {
            rules: vec![
                (false, vec!["**".into(), "*.log".into()]),
                (false, vec!["secret".into()]),
                (true, vec!["keep.log".into()]),
            ],
        };
        assert!(ig.excluded(Path::new("a/b/x.log")));
        assert!(ig.excluded(Path::new("secret/inner")));
        assert!(!ig.excluded(Path::new("keep.log")));
        assert!(!ig.excluded(Path::new("src/main.c")));
    }

    #[test]
    fn normalize_marks_escapes() {
        assert_eq!(normalize("a/../b").unwrap(), Path::new("b"));
        assert!(normalize("../x").unwrap().starts_with(".."));
        assert!(normalize("a/../../x").unwrap().starts_with(".."));
    }
}
