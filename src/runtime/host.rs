//! Facts about the calling user and process, read once before any namespace exists.

use std::path::PathBuf;

use nix::unistd::{getgid, getuid, Group, User};

/// The caller as the host sees them.
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
    pub gecos: String,
    pub shell: String,
    pub group_name: Option<String>,
    /// `$HOME`, else the passwd home.
    pub home: PathBuf,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
}

impl HostFacts {
    /// Reads the calling process's identity, home, working directory and environment.
    pub fn gather() -> std::io::Result<HostFacts> {
        let uid = getuid().as_raw();
        let gid = getgid().as_raw();
        let user = User::from_uid(getuid()).ok().flatten();
        let group_name = Group::from_gid(getgid()).ok().flatten().map(|g| g.name);
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let home = env
            .iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| PathBuf::from(v))
            .filter(|p| p.is_absolute())
            .or_else(|| user.as_ref().map(|u| u.dir.clone()))
            .unwrap_or_else(|| PathBuf::from("/"));
        // Prefer $PWD when it names the same directory: it keeps the user's symlinked path.
        let cwd = std::env::current_dir()?;
        let cwd = env
            .iter()
            .find(|(k, _)| k == "PWD")
            .map(|(_, v)| PathBuf::from(v))
            .filter(|p| p.is_absolute() && same_file(p, &cwd))
            .unwrap_or(cwd);
        Ok(HostFacts {
            uid,
            gid,
            name: user
                .as_ref()
                .map(|u| u.name.clone())
                .unwrap_or_else(|| uid.to_string()),
            gecos: user
                .as_ref()
                .map(|u| u.gecos.to_string_lossy().into_owned())
                .unwrap_or_default(),
            shell: user
                .as_ref()
                .map(|u| u.shell.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/bin/sh".into()),
            group_name,
            home,
            cwd,
            env,
        })
    }
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
