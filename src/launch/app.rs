//! `--app NAME`: an app of a SCIF image (a definition file's `%app*` sections, laid out under
//! `/scif/apps/NAME` as Apptainer does). The app's runscript or test runs, its environment
//! scripts are sourced after the image's, its `bin` leads PATH and its `lib` leads
//! LD_LIBRARY_PATH, and the `SCIF_*` variables name its directories.

use anyhow::bail;

use super::command::is_kind;
use crate::image::OpenedImage;
use crate::runtime::environ::EnvLayers;
use crate::tree::{NodeKind, Tree};

/// Where SCIF puts the apps.
pub use crate::contract::paths::SCIF_APPS as APPS_DIR;

/// One app of the image, checked to exist.
pub struct App {
    pub name: String,
    /// `/scif/apps/NAME`
    pub root: String,
}

impl App {
    /// The app `name` of the image, or an error listing the apps it has.
    pub fn find(name: &str, opened: &OpenedImage, tree: &dyn Tree) -> anyhow::Result<App> {
        let root = format!("{APPS_DIR}/{name}");
        if name.is_empty() || name.contains('/') || !is_kind(tree, &root, NodeKind::Dir) {
            let apps = list(tree);
            let have = if apps.is_empty() {
                "it has no apps".to_string()
            } else {
                format!("its apps: {}", apps.join(", "))
            };
            bail!(
                "image {} has no app '{name}' ({have})",
                opened.path.display()
            );
        }
        Ok(App {
            name: name.to_string(),
            root,
        })
    }

    /// `scif/runscript` or `scif/test` of the app, if the image has it.
    pub fn script(&self, tree: &dyn Tree, which: &str) -> Option<String> {
        let path = format!("{}/scif/{which}", self.root);
        is_kind(tree, &path, NodeKind::File).then_some(path)
    }

    /// The app's variables, environment scripts and search paths, added to `env`.
    pub fn apply_to_env(&self, env: &mut EnvLayers, tree: &dyn Tree) {
        let root = &self.root;
        for prefix in ["APPTAINER", "SINGULARITY"] {
            env.runtime
                .push((format!("{prefix}_APPNAME"), self.name.clone()));
        }
        let vars = [
            ("SCIF_APPNAME", self.name.clone()),
            ("SCIF_APPS", APPS_DIR.to_string()),
            ("SCIF_APPROOT", root.clone()),
            ("SCIF_APPBIN", format!("{root}/bin")),
            ("SCIF_APPLIB", format!("{root}/lib")),
            ("SCIF_APPMETA", format!("{root}/scif")),
            ("SCIF_APPDATA", format!("/scif/data/{}", self.name)),
        ];
        env.runtime
            .extend(vars.into_iter().map(|(k, v)| (k.to_string(), v)));
        let env_dir = format!("{root}/scif/env");
        if is_kind(tree, &env_dir, NodeKind::Dir) && env.shell {
            let mut names: Vec<String> = tree
                .list_dir(env_dir.as_bytes())
                .unwrap_or_default()
                .into_iter()
                .filter_map(|n| String::from_utf8(n).ok())
                .filter(|n| n.ends_with(".sh"))
                .collect();
            names.sort();
            env.image_scripts
                .extend(names.into_iter().map(|n| format!("{env_dir}/{n}")));
        }
        if is_kind(tree, &format!("{root}/bin"), NodeKind::Dir) {
            env.path_prefix.push(format!("{root}/bin"));
        }
        let lib = format!("{root}/lib");
        if is_kind(tree, &lib, NodeKind::Dir) {
            const KEY: &str = "LD_LIBRARY_PATH";
            let base = env
                .image
                .iter()
                .rev()
                .find(|(k, _)| k == KEY)
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let value = if base.is_empty() {
                lib
            } else {
                format!("{lib}:{base}")
            };
            env.runtime.push((KEY.to_string(), value));
        }
    }
}

/// The names of the image's apps, sorted.
pub fn list(tree: &dyn Tree) -> Vec<String> {
    let mut apps: Vec<String> = tree
        .list_dir(APPS_DIR.as_bytes())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|n| String::from_utf8(n).ok())
        .collect();
    apps.sort();
    apps
}
