//! `rsing build OUT.sif recipe.def`: a definition file built as the unprivileged user. Each
//! stage's base is unpacked into a staging directory under the cache
//! (`$RSING_CACHEDIR/build/`), the steps run there ([`crate::build`]), and the last stage is
//! packed into the SIF with the ownership the build recorded. The staging directory is
//! removed however the build ends.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

use super::build::BuildArgs;
use super::progress::Progress;
use crate::build::{copy, deffile, metadata, owners::Owners, StageDirs};
use crate::cache::AtomicFile;

/// Options of recipe builds.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RecipeArgs {
    /// A `%arguments` value for a definition file: NAME=VALUE (repeatable)
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_arg: Vec<String>,
    /// A file of NAME=VALUE lines for `%arguments`
    #[arg(long = "build-arg-file", value_name = "FILE")]
    pub build_arg_file: Option<PathBuf>,
    /// Do not run the %test section at the end of the build
    #[arg(long = "notest")]
    pub notest: bool,
    /// Run every step, ignoring and not filling the build cache
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// Ids of %post/RUN: auto (subid where you have /etc/subuid and /etc/subgid ranges and
    /// newuidmap, else seccomp), seccomp (chown faked and recorded), subid (real ids)
    #[arg(long = "userns-mode", value_enum, default_value_t, value_name = "MODE")]
    pub userns_mode: crate::build::userns::Requested,
}

/// The user namespace mode of the build's steps, said once.
fn userns(args: &RecipeArgs, progress: &Progress) -> anyhow::Result<crate::build::userns::Userns> {
    use crate::build::userns::Userns;
    let mode = crate::build::userns::choose(args.userns_mode)?;
    progress.say(&match &mode {
        Userns::Seccomp => "steps run with one id (seccomp mode: ownership recorded)".to_string(),
        Userns::Subid(m) => format!(
            "steps run with real ids (subid mode: uids 1-{} are {}+, gids 1-{} are {}+)",
            m.uids.1, m.uids.0, m.gids.1, m.gids.0
        ),
    });
    Ok(mode)
}

fn step_cache(cache: &crate::cache::Cache, args: &RecipeArgs) -> crate::build::cache::StepCache {
    crate::build::cache::StepCache::new((!args.no_cache).then(|| cache.root().join("build/steps")))
}

/// A Dockerfile, by name: `Dockerfile`, `Dockerfile.NAME`, `NAME.dockerfile` or `Containerfile`.
pub fn is_dockerfile(source: &str) -> bool {
    let name = Path::new(source)
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    Path::new(source).is_file()
        && (name == "dockerfile"
            || name == "containerfile"
            || name.starts_with("dockerfile.")
            || name.ends_with(".dockerfile"))
}

/// A regular file whose first line that is not blank or a comment is a `Bootstrap:` header.
pub fn is_recipe(source: &str) -> bool {
    let path = Path::new(source);
    if !path.is_file() {
        return false;
    }
    let mut head = vec![0u8; 4096];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    let Ok(text) = std::str::from_utf8(&head[..n]) else {
        return source.ends_with(".def");
    };
    source.ends_with(".def")
        || text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .is_some_and(|l| l.to_ascii_lowercase().starts_with("bootstrap:"))
}

fn build_args(args: &RecipeArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if let Some(file) = &args.build_arg_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("--build-arg-file {}", file.display()))?;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                bail!(
                    "--build-arg-file {}: expected NAME=VALUE, found `{line}`",
                    file.display()
                );
            };
            out.insert(k.trim().to_string(), v.to_string());
        }
    }
    for arg in &args.build_arg {
        let Some((k, v)) = arg.split_once('=') else {
            bail!("--build-arg {arg}: expected NAME=VALUE");
        };
        if !deffile::valid_name(k) {
            bail!("--build-arg {arg}: `{k}` is not a valid name");
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

/// Removes the staging directory when the build ends, however it ends.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        copy::remove_tree(&self.0);
    }
}

pub fn build(args: &BuildArgs, progress: &Arc<Progress>) -> anyhow::Result<()> {
    let file = args.source.as_str();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    let recipe = deffile::parse(file, &text, &build_args(&args.recipe)?)?;
    for name in &recipe.unused_args {
        progress.say(&format!(
            "rsing: warning: --build-arg {name} is not used by {file}"
        ));
    }
    super::build::refuse_existing(&args.target, args.force)?;
    if !args.sandbox && args.target.is_dir() {
        bail!("{} is a directory", args.target.display());
    }
    let userns = userns(&args.recipe, progress)?;
    let cache = crate::cache::Cache::locate().context("locating the cache directory")?;
    let parent = cache.root().join("build");
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let work = tempdir(&parent)?;
    let staging = Staging(work);
    let context = std::env::current_dir().context("the working directory")?;
    let mut roots: HashMap<String, PathBuf> = HashMap::new();
    let mut keys: HashMap<String, String> = HashMap::new();
    let steps = step_cache(&cache, &args.recipe);
    let args_text = format!("{:?}", build_args(&args.recipe)?);
    let mut owners = Owners::default();
    let mut base_owners: Vec<(String, u32, u32)> = Vec::new();
    let last = recipe.stages.len() - 1;
    for (i, stage) in recipe.stages.iter().enumerate() {
        let label = stage.name.clone().unwrap_or_else(|| format!("{}", i + 1));
        let root = staging.0.join(format!("stage-{i}"));
        let key = stage_key(stage, &context, &keys, &args_text);
        if steps.has(&key) {
            progress.say(&format!("stage {label}: cached"));
            owners = steps
                .restore(&key, &root)
                .with_context(|| format!("restoring cached stage {label}"))?;
        } else {
            match stage.bootstrap.source(&stage.from) {
                None => std::fs::create_dir(&root)
                    .with_context(|| format!("cannot create {}", root.display()))?,
                Some(source) if Path::new(&source).is_dir() => {
                    progress.say(&format!("stage {label}: copying {source}"));
                    copy::copy_tree(Path::new(&source), &root)
                        .with_context(|| format!("{file}:{}: copying base {source}", stage.line))?
                }
                Some(source) => {
                    progress.say(&format!("stage {label}: base {source}"));
                    let unpacked =
                        super::build::unpack_source(&source, &root, &args.convert, progress)
                            .with_context(|| {
                                format!("{file}:{}: base image {source}", stage.line)
                            })?;
                    base_owners = unpacked.owners;
                }
            }
            owners = Owners::default();
            for (path, uid, gid) in std::mem::take(&mut base_owners) {
                owners.by_path.insert(path, (uid, gid));
            }
            let dirs = StageDirs {
                root: &root,
                file,
                context: &context,
                stages: &roots,
                userns: &userns,
            };
            let say = |what: &str| {
                progress.clear();
                progress.say(&format!("stage {label}: {what}"));
            };
            crate::build::run_stage(stage, &dirs, &mut owners, &say)?;
            steps.save(&key, Some(&root), &owners, None);
        }
        let say = |what: &str| {
            progress.clear();
            progress.say(&format!("stage {label}: {what}"));
        };
        if i == last {
            metadata::finish(&root, stage, &text, &[])?;
            if let Some(test) = &stage.test {
                if !args.recipe.notest {
                    say("%test");
                    crate::build::run_test(&root, file, test.line, &userns, &owners)?;
                }
            }
        }
        if let Some(name) = &stage.name {
            roots.insert(name.clone(), root.clone());
            keys.insert(name.clone(), key.clone());
        }
    }
    let root = staging.0.join(format!("stage-{last}"));
    if args.sandbox {
        publish_dir(&root, &args.target)?;
    } else {
        progress.say("packing the image");
        let options = args.convert.options(text.clone().into_bytes())?;
        let mut out = AtomicFile::create(&args.target, 0o755)
            .with_context(|| format!("cannot create {}", args.target.display()))?;
        let owner =
            |path: &[u8], _: &std::fs::Metadata| owners.owner(&String::from_utf8_lossy(path));
        crate::convert::dir_to_sif_owned(&root, out.file(), &options, Vec::new(), &owner)
            .with_context(|| format!("packing {}", args.target.display()))?;
        out.commit()
            .with_context(|| format!("cannot write {}", args.target.display()))?;
    }
    drop(staging);
    progress.clear();
    progress.say(&format!("wrote {}", args.target.display()));
    Ok(())
}

/// The cache key of a definition-file stage: its text, base, copied files and arguments.
fn stage_key(
    stage: &deffile::Stage,
    context: &Path,
    keys: &HashMap<String, String>,
    args_text: &str,
) -> String {
    use crate::build::cache::{content_hash, key};
    // Only what changes the tree before the metadata is written: editing %runscript, %labels,
    // %environment… reuses the stage.
    let steps = format!(
        "{:?} {:?} {:?} {:?} {:?} {:?}",
        stage.bootstrap,
        stage.from,
        stage.setup,
        stage.files,
        stage.post,
        stage
            .apps
            .iter()
            .map(|(n, a)| (n, &a.files, &a.install))
            .collect::<Vec<_>>()
    );
    let mut k = key("", &[b"stage", steps.as_bytes(), args_text.as_bytes()]);
    if stage.bootstrap == deffile::Bootstrap::LocalImage {
        k = key(
            &k,
            &[content_hash(&[PathBuf::from(&stage.from)]).as_bytes()],
        );
    }
    for files in &stage.files {
        match &files.from {
            Some(from) => k = key(&k, &[keys.get(from).map(String::as_bytes).unwrap_or(b"")]),
            None => {
                let paths: Vec<PathBuf> = files
                    .copies
                    .iter()
                    .flat_map(|c| crate::build::files_sources(c, None, context))
                    .collect();
                k = key(&k, &[content_hash(&paths).as_bytes()]);
            }
        }
    }
    for app in stage.apps.values() {
        let paths: Vec<PathBuf> = app
            .files
            .iter()
            .flat_map(|c| crate::build::files_sources(c, None, context))
            .collect();
        k = key(&k, &[content_hash(&paths).as_bytes()]);
    }
    k
}

fn tempdir(parent: &Path) -> anyhow::Result<PathBuf> {
    for n in 0..1000 {
        let dir = parent.join(format!("tmp-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", dir.display())),
        }
    }
    bail!("cannot create a staging directory in {}", parent.display())
}

/// `--sandbox`: the built root becomes the target directory (renamed when on the same file
/// system, else copied to a hidden name and renamed), replacing an old one with `--force`.
fn publish_dir(root: &Path, target: &Path) -> anyhow::Result<()> {
    let staged = crate::cache::hidden_name(target);
    if std::fs::rename(root, &staged).is_err() {
        if let Err(e) = copy::copy_tree(root, &staged) {
            copy::remove_tree(&staged);
            return Err(e).with_context(|| format!("cannot create {}", target.display()));
        }
    }
    if target.symlink_metadata().is_ok() {
        let old = crate::cache::hidden_name(target);
        std::fs::rename(target, &old)
            .with_context(|| format!("cannot replace {}", target.display()))?;
        copy::remove_tree(&old);
        let _ = std::fs::remove_file(&old);
    }
    std::fs::rename(&staged, target).with_context(|| format!("cannot create {}", target.display()))
}

/// FROM of a Dockerfile: a name with an rsing source prefix (`oci:`, `oci-archive:`,
/// `docker-archive:`, `docker://`) or an existing local image file is used as it is, any other
/// name is a registry reference.
struct Bases<'a> {
    convert: &'a super::fetch::ConvertArgs,
    progress: &'a Arc<Progress>,
    configs: std::cell::RefCell<HashMap<String, serde_json::Value>>,
}

impl crate::build::docker::Bases for Bases<'_> {
    fn unpack(&self, image: &str, dest: &Path) -> Result<crate::build::docker::Base, String> {
        let source = if super::fetch::is_oci_source(image)
            || image.starts_with("docker://")
            || Path::new(image).is_file()
        {
            image.to_string()
        } else {
            format!("docker://{image}")
        };
        let unpacked = super::build::unpack_source(&source, dest, self.convert, self.progress)
            .map_err(|e| format!("base image {source}: {e:#}"))?;
        let config = unpacked
            .config
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|v| v.get("config").cloned().unwrap_or(v));
        if let Some(c) = &config {
            self.configs
                .borrow_mut()
                .insert(image.to_string(), c.clone());
        }
        Ok(crate::build::docker::Base {
            config,
            owners: unpacked.owners,
        })
    }

    fn config_of(&self, image: &str) -> Option<serde_json::Value> {
        self.configs.borrow().get(image).cloned()
    }
}

/// `rsing build OUT.sif Dockerfile`: the context is the Dockerfile's directory.
pub fn build_dockerfile(args: &BuildArgs, progress: &Arc<Progress>) -> anyhow::Result<()> {
    use crate::build::{docker, dockerfile};
    let file = args.source.as_str();
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
    let lines = dockerfile::parse(file, &text)?;
    let build_args = build_args(&args.recipe)?;
    super::build::refuse_existing(&args.target, args.force)?;
    if !args.sandbox && args.target.is_dir() {
        bail!("{} is a directory", args.target.display());
    }
    let context = match Path::new(file).parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let context = context
        .canonicalize()
        .with_context(|| format!("build context {}", context.display()))?;
    let userns = userns(&args.recipe, progress)?;
    let cache = crate::cache::Cache::locate().context("locating the cache directory")?;
    let parent = cache.root().join("build");
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create {}", parent.display()))?;
    let staging = Staging(tempdir(&parent)?);
    let say = |what: &str| {
        progress.clear();
        progress.say(what);
    };
    let bases = Bases {
        convert: &args.convert,
        progress,
        configs: Default::default(),
    };
    let steps = step_cache(&cache, &args.recipe);
    let built = docker::build(
        &docker::Build {
            file,
            context: &context,
            work: &staging.0,
            build_args: &build_args,
            bases: &bases,
            say: &say,
            cache: &steps,
            userns: &userns,
        },
        &lines,
    )?;
    for name in &built.unused_args {
        progress.say(&format!(
            "rsing: warning: --build-arg {name} is not used by {file}"
        ));
    }
    let facts = crate::contract::ImageFacts {
        env: built.config.env_strings(),
        entrypoint: built.config.entrypoint.clone(),
        cmd: built.config.cmd.clone(),
        labels: built.config.labels.clone(),
    };
    crate::build::metadata::write_generated(
        &built.root,
        &crate::convert::singularity_d::metadata_tree(&facts, &[]),
    )?;
    let oci = serde_json::to_vec_pretty(&built.config.to_oci()).unwrap_or_default();
    if args.sandbox {
        publish_dir(&built.root, &args.target)?;
    } else {
        progress.say("packing the image");
        let options = args.convert.options(text.clone().into_bytes())?;
        let mut out = AtomicFile::create(&args.target, 0o755)
            .with_context(|| format!("cannot create {}", args.target.display()))?;
        let owners = &built.owners;
        let owner =
            |path: &[u8], _: &std::fs::Metadata| owners.owner(&String::from_utf8_lossy(path));
        let t = std::time::Instant::now();
        crate::convert::dir_to_sif_owned(&built.root, out.file(), &options, oci, &owner)
            .with_context(|| format!("packing {}", args.target.display()))?;
        tracing::info!(elapsed = ?t.elapsed(), "packed the image");
        out.commit()
            .with_context(|| format!("cannot write {}", args.target.display()))?;
    }
    // Unmounted before the staging directory (its layers) goes.
    drop(built);
    drop(staging);
    progress.clear();
    progress.say(&format!("wrote {}", args.target.display()));
    Ok(())
}
