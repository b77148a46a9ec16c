//! `rsing inspect`: an image's labels, environment, runscript, definition file and OCI config,
//! as text or as stable JSON for scripts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde_json::{json, Map, Value};

use crate::contract::{self, paths, sif_objects};
use crate::image::{self, OpenedImage, Root};
use crate::squashfs::Archive;
use crate::tree::{self, DirTree, NodeKind, Tree};

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Print JSON (stable keys: image, labels, environment, runscript, deffile, oci_config,
    /// test, helpfile; apps with --list-apps)
    #[arg(short = 'j', long)]
    json: bool,
    /// JSON shape: rsing (default) or apptainer (`{"data":{"attributes":…}}`, as
    /// `apptainer inspect --json` prints it, for tools that parse that)
    #[arg(long, value_name = "FORMAT", default_value = "rsing", value_parser = ["rsing", "apptainer"])]
    format: String,
    /// The test script (/.singularity.d/test)
    #[arg(short = 't', long)]
    test: bool,
    /// The runscript's help text (/.singularity.d/runscript.help)
    #[arg(short = 'H', long)]
    helpfile: bool,
    /// Everything (implies --json, as in Apptainer)
    #[arg(short = 'a', long)]
    all: bool,
    /// Labels (the default when nothing is selected)
    #[arg(short = 'l', long)]
    labels: bool,
    /// Environment: the image's env scripts and OCI Env
    #[arg(short = 'e', long = "env", visible_alias = "environment")]
    env: bool,
    /// The runscript (or the OCI entrypoint and command)
    #[arg(short = 'r', long)]
    runscript: bool,
    /// The definition file the image was built from
    #[arg(short = 'd', long)]
    deffile: bool,
    /// The OCI image config stored in the SIF
    #[arg(long = "oci-config")]
    oci_config: bool,
    /// The image's apps (definition-file %app sections, under /scif/apps), one per line
    #[arg(long = "list-apps")]
    list_apps: bool,
    /// SIF file, SquashFS file or directory
    image: String,
}

const LIMIT: usize = 16 << 20;
const ENV_DIR: &str = contract::ENV_DIR;

pub fn run(args: InspectArgs) -> anyhow::Result<i32> {
    let (opened, tree) = open_tree(&canonical(&args.image))?;
    if args.list_apps {
        let apps = crate::launch::app::list(tree.as_ref());
        if args.json {
            let out = json!({"image": opened.path.to_string_lossy(), "apps": apps});
            println!("{}", serde_json::to_string_pretty(&out)?);
        } else {
            apps.iter().for_each(|a| println!("{a}"));
        }
        return Ok(0);
    }
    let report = Report::gather(&opened, tree.as_ref());
    let none = !(args.labels
        || args.env
        || args.runscript
        || args.deffile
        || args.oci_config
        || args.test
        || args.helpfile
        || args.all);
    let all = args.all;
    let wanted = [
        ("labels", args.labels || none || all),
        ("environment", args.env || all),
        ("runscript", args.runscript || all),
        ("deffile", args.deffile || all),
        ("oci_config", args.oci_config || all),
        ("test", args.test || all),
        ("helpfile", args.helpfile || all),
    ];
    // As in Apptainer, --all implies --json.
    let as_json = args.json || args.all;
    if as_json && args.format == "apptainer" {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.apptainer_json(&wanted))?
        );
    } else if as_json {
        let mut out = Map::new();
        out.insert("image".into(), json!(opened.path.to_string_lossy()));
        for (key, on) in wanted {
            if on {
                out.insert(key.into(), report.json(key));
            }
        }
        println!("{}", serde_json::to_string_pretty(&Value::Object(out))?);
    } else {
        for (key, on) in wanted {
            if on {
                print!("{}", report.text(key));
            }
        }
    }
    Ok(0)
}

/// The image path as given, made absolute and free of `..` and symlinks where it exists.
fn canonical(image: &str) -> std::path::PathBuf {
    std::fs::canonicalize(image).unwrap_or_else(|_| image.into())
}

/// `rsing run-help IMAGE`: the runscript's help text, as `apptainer run-help` prints it.
pub fn run_help(image: &str) -> anyhow::Result<i32> {
    let (opened, tree) = open_tree(&canonical(image))?;
    let report = Report::gather(&opened, tree.as_ref());
    match report.helpfile {
        Some(text) => print!("{text}{}", if text.ends_with('\n') { "" } else { "\n" }),
        None => println!("No help sections were defined for this image"),
    }
    Ok(0)
}

/// An image's labels exactly as `rsing inspect --labels` shows them (OCI config labels,
/// overridden by `/.singularity.d/labels.json`), for other commands (`rsing module create`).
pub fn labels(image: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let (opened, tree) = open_tree(image)?;
    Ok(Report::gather(&opened, tree.as_ref()).labels)
}

fn open_tree(image: &Path) -> anyhow::Result<(OpenedImage, Arc<dyn Tree>)> {
    let opened = image::open(image)?;
    let tree: Arc<dyn Tree> = match &opened.root {
        Root::Squashfs { file, offset } => Arc::new(
            Archive::open(file.try_clone()?, *offset)
                .with_context(|| format!("image {}", opened.path.display()))?,
        ),
        Root::Directory(dir) => Arc::new(DirTree::new(dir)),
    };
    Ok((opened, tree))
}

/// What `inspect` can show, read once.
struct Report {
    labels: BTreeMap<String, String>,
    env_scripts: BTreeMap<String, String>,
    oci_env: Vec<String>,
    runscript: Option<String>,
    deffile: Option<String>,
    oci_config: Option<Value>,
    test: Option<String>,
    helpfile: Option<String>,
}

impl Report {
    fn gather(opened: &OpenedImage, tree: &dyn Tree) -> Report {
        let text = |path: &str| -> Option<String> {
            let found = tree::resolve(tree, path.as_bytes()).ok()?;
            if found.kind != Some(NodeKind::File) {
                return None;
            }
            let bytes = tree.read_file(&found.path, LIMIT).ok()?;
            Some(String::from_utf8_lossy(&bytes).into_owned())
        };
        let oci = opened.oci_config.clone().unwrap_or_default();
        let mut labels: BTreeMap<String, String> = oci.labels.clone().unwrap_or_default();
        if let Some(json) = text(paths::LABELS) {
            labels.extend(contract::parse_labels(json.as_bytes()).unwrap_or_default());
        }
        let mut env_scripts = BTreeMap::new();
        if let Ok(names) = tree.list_dir(ENV_DIR.as_bytes()) {
            for name in names.into_iter().filter_map(|n| String::from_utf8(n).ok()) {
                let path = format!("{ENV_DIR}/{name}");
                if let Some(body) = text(&path) {
                    env_scripts.insert(path, body);
                }
            }
        }
        let runscript = text(contract::RUNSCRIPT).or_else(|| {
            let argv: Vec<String> = oci
                .entrypoint
                .clone()
                .unwrap_or_default()
                .into_iter()
                .chain(oci.cmd.clone().unwrap_or_default())
                .collect();
            (!argv.is_empty())
                .then(|| format!("# OCI entrypoint and command\n{}\n", argv.join(" ")))
        });
        // What `image::open` already read of a SIF: no second parse of the file.
        let deffile = opened
            .sif_object(sif_objects::DEFFILE)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .or_else(|| text(paths::DEFFILE));
        let oci_config = opened.sif.as_ref().and_then(|s| s.oci_config.clone());
        Report {
            labels,
            env_scripts,
            oci_env: oci.env.unwrap_or_default(),
            runscript,
            deffile,
            oci_config,
            test: text(contract::TEST),
            helpfile: text(paths::RUNSCRIPT_HELP),
        }
    }

    /// Apptainer's `inspect --json` shape: `{"data":{"attributes":{…}},"type":"container"}`
    /// with its key names (environment as a map of script path to content).
    fn apptainer_json(&self, wanted: &[(&str, bool)]) -> Value {
        let mut attrs = Map::new();
        for (key, on) in wanted {
            if !on {
                continue;
            }
            let value = match *key {
                "labels" => json!(self.labels),
                "environment" => json!(self.env_scripts),
                "runscript" => json!(self.runscript),
                "deffile" => json!(self.deffile),
                "test" => json!(self.test),
                "helpfile" => json!(self.helpfile),
                _ => continue,
            };
            if !value.is_null() {
                attrs.insert((*key).to_string(), value);
            }
        }
        json!({ "data": { "attributes": attrs, "type": "container" } })
    }

    fn json(&self, key: &str) -> Value {
        match key {
            "labels" => json!(self.labels),
            "environment" => json!({ "scripts": self.env_scripts, "oci_env": self.oci_env }),
            "runscript" => json!(self.runscript),
            "deffile" => json!(self.deffile),
            "test" => json!(self.test),
            "helpfile" => json!(self.helpfile),
            _ => self.oci_config.clone().unwrap_or(Value::Null),
        }
    }

    fn text(&self, key: &str) -> String {
        match key {
            "labels" => self
                .labels
                .iter()
                .map(|(k, v)| format!("{k}: {v}\n"))
                .collect(),
            "environment" => {
                let mut out = String::new();
                for (path, body) in &self.env_scripts {
                    out.push_str(&format!("=== {path} ===\n{body}"));
                    if !body.ends_with('\n') {
                        out.push('\n');
                    }
                }
                if !self.oci_env.is_empty() {
                    out.push_str("=== OCI Env ===\n");
                    for kv in &self.oci_env {
                        out.push_str(kv);
                        out.push('\n');
                    }
                }
                out
            }
            "runscript" => self.runscript.clone().unwrap_or_default(),
            "deffile" => self.deffile.clone().unwrap_or_default(),
            "test" => self.test.clone().unwrap_or_default(),
            "helpfile" => self.helpfile.clone().unwrap_or_default(),
            _ => self
                .oci_config
                .as_ref()
                .map(|v| serde_json::to_string_pretty(v).unwrap_or_default() + "\n")
                .unwrap_or_default(),
        }
    }
}
