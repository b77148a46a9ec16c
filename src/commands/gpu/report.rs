//! `rsing gpu`'s output: the driver version, every library (host path → container path),
//! program and file, the device nodes, and what `--contain` would get.

use std::fmt::Write;

use serde_json::{json, Value};

use super::Injection;
use crate::contract::LIBS_DIR;
use crate::gpu::{self, Inventory};
use crate::runtime::binds::BindSpec;

pub struct Report<'a> {
    pub config: &'a gpu::Config,
    pub found: &'a Result<Inventory, gpu::Error>,
    /// What a `--contain --nv` container would get here (with the caller's environment).
    pub contained: Option<&'a Injection>,
    pub cdi: Option<&'a Injection>,
}

fn pairs(list: &[BindSpec]) -> Vec<Value> {
    list.iter()
        .map(|b| json!({"host": b.src, "container": b.dst}))
        .collect()
}

fn lib_pairs(inj: &Injection) -> Vec<Value> {
    inj.libs
        .iter()
        .map(|(name, host)| json!({"host": host, "container": format!("{LIBS_DIR}/{name}")}))
        .collect()
}

impl Report<'_> {
    pub fn json(&self) -> String {
        let mut v = json!({
            "root": self.config.root,
            "dev_root": self.config.dev_root,
            "ldcache": self.config.ldcache,
        });
        match self.found {
            Err(e) => v["error"] = json!(e.to_string()),
            Ok(inv) => {
                v["driver_version"] = json!(inv.version);
                v["gpus"] = inv
                    .gpus
                    .iter()
                    .map(|g| json!({"index": g.index, "minor": g.minor, "uuid": g.uuid, "name": g.name}))
                    .collect();
                v["notes"] = json!(inv.notes);
            }
        }
        if let Some(inj) = self.contained {
            let (programs, files): (Vec<BindSpec>, Vec<BindSpec>) = inj
                .binds
                .iter()
                .cloned()
                .partition(|b| b.dst.starts_with("/usr/bin/"));
            v["libraries"] = json!(lib_pairs(inj));
            v["binaries"] = json!(pairs(&programs));
            v["files"] = json!(pairs(&files));
            v["devices"] = json!(pairs(&inj.devices));
            v["env"] = inj
                .env
                .iter()
                .map(|(k, val)| (k.clone(), json!(val)))
                .collect();
        }
        if let Some(cdi) = self.cdi {
            v["cdi"] = json!({
                "mounts": pairs(&cdi.binds),
                "devices": pairs(&cdi.devices),
                "libraries": lib_pairs(cdi),
                "env": cdi.env.iter().map(|(k, val)| format!("{k}={val}")).collect::<Vec<_>>(),
                "host_hooks": cdi.hooks.iter().map(|h| h.path.clone()).collect::<Vec<_>>(),
            });
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        let c = self.config;
        let _ = writeln!(
            s,
            "driver root: {}  (ld.so cache {}, devices under {}/dev)",
            c.root.display(),
            c.ldcache.display(),
            c.dev_root.display().to_string().trim_end_matches('/')
        );
        match self.found {
            Err(e) => {
                let _ = writeln!(s, "no NVIDIA driver found: {e}");
            }
            Ok(inv) => {
                let _ = writeln!(s, "driver version: {}", inv.version);
                for g in &inv.gpus {
                    let _ = writeln!(
                        s,
                        "GPU {}: /dev/nvidia{} {} {}",
                        g.index,
                        g.minor,
                        g.uuid.as_deref().unwrap_or("-"),
                        g.name.as_deref().unwrap_or("")
                    );
                }
                for n in &inv.notes {
                    let _ = writeln!(s, "note: {n}");
                }
            }
        }
        if let Some(inj) = self.contained {
            section(&mut s, "libraries (host → container)", &lib_lines(inj));
            let binds: Vec<String> = inj.binds.iter().map(line).collect();
            section(&mut s, "binaries and files", &binds);
            let devices: Vec<String> = inj.devices.iter().map(line).collect();
            section(&mut s, "devices (with --contain)", &devices);
            let env: Vec<String> = inj.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            section(&mut s, "environment inside (with --contain)", &env);
        }
        if let Some(cdi) = self.cdi {
            let mut lines: Vec<String> = cdi.binds.iter().chain(&cdi.devices).map(line).collect();
            lines.extend(lib_lines(cdi));
            lines.extend(cdi.env.iter().map(|(k, v)| format!("{k}={v}")));
            lines.extend(cdi.hooks.iter().map(|h| format!("host hook {}", h.path)));
            section(&mut s, "CDI", &lines);
        }
        s
    }
}

fn line(b: &BindSpec) -> String {
    format!("{} → {}", b.src.display(), b.dst)
}

fn lib_lines(inj: &Injection) -> Vec<String> {
    inj.libs
        .iter()
        .map(|(name, host)| format!("{} → {LIBS_DIR}/{name}", host.display()))
        .collect()
}

fn section(s: &mut String, title: &str, lines: &[String]) {
    let _ = writeln!(s, "{title}:");
    if lines.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for l in lines {
        let _ = writeln!(s, "  {l}");
    }
}
