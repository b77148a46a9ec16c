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
    /// The value of the caller's environment variable `key`, if set.
    pub fn var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The ids the caller has inside the container: their own, or 0:0 with `--fakeroot`.
    /// Decided here only; the plan, the user namespace and the image server's key use it.
    pub fn ids_inside(&self, fakeroot: bool) -> (u32, u32) {
        if fakeroot {
            (0, 0)
        } else {
            (self.uid, self.gid)
        }
    }

    /// Reads the calling process's identity, home, working directory and environment.
    pub fn gather() -> std::io::Result<HostFacts> {
        let uid = getuid().as_raw();
        let gid = getgid().as_raw();
        let user = files_user(uid).or_else(|| User::from_uid(getuid()).ok().flatten());
        let group_name = files_group_name(gid)
            .or_else(|| Group::from_gid(getgid()).ok().flatten().map(|g| g.name));
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

/// Whether nsswitch.conf consults the `files` source first for `database` (`passwd`,
/// `group`): then reading /etc/passwd or /etc/group gives the answer NSS would give, without
/// glibc's round trips to nscd and the NSS modules (5 socket calls per start, measured).
fn files_first(database: &str) -> bool {
    let conf = std::fs::read_to_string("/etc/nsswitch.conf").unwrap_or_default();
    conf.lines()
        .filter_map(|l| l.split('#').next())
        .filter_map(|l| l.split_once(':'))
        .find(|(db, _)| db.trim() == database)
        .is_some_and(|(_, sources)| sources.split_whitespace().next() == Some("files"))
}

/// The line of colon-separated `file` whose third field is `id` (passwd and group alike).
fn files_entry(file: &str, id: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines()
        .map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[2].parse::<u32>().ok() == Some(id))
}

fn files_user(uid: u32) -> Option<User> {
    if !files_first("passwd") {
        return None;
    }
    let f = files_entry("/etc/passwd", uid)?;
    if f.len() < 7 {
        return None;
    }
    Some(User {
        name: f[0].clone(),
        passwd: std::ffi::CString::new(f[1].as_str()).ok()?,
        uid: nix::unistd::Uid::from_raw(uid),
        gid: nix::unistd::Gid::from_raw(f[3].parse().ok()?),
        gecos: std::ffi::CString::new(f[4].as_str()).ok()?,
        dir: PathBuf::from(&f[5]),
        shell: PathBuf::from(&f[6]),
    })
}

fn files_group_name(gid: u32) -> Option<String> {
    if !files_first("group") {
        return None;
    }
    files_entry("/etc/group", gid).map(|f| f[0].clone())
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
