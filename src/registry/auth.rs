//! Registry credentials: where they come from and how `rsing registry login` stores them.
//!
//! Lookup order (first hit wins): `RSING_DOCKER_USERNAME`/`RSING_DOCKER_PASSWORD` (for batch
//! jobs, any registry), rsing's own store (`$RSING_CONFIG_DIR/auth.json`, else
//! `${XDG_CONFIG_HOME:-~/.config}/rsing/auth.json`), then Docker's `~/.docker/config.json`
//! (or `$DOCKER_CONFIG/config.json`), so a user who already ran `docker login` needs nothing
//! more. Both files use Docker's format: `{"auths": {HOST: {"auth": base64("user:pass")}}}`.
//! Docker credential helpers (`credsStore`, `credHelpers`) run external programs and are not
//! used.

use super::reference::normalise_host;
use super::{Error, Options, Registry};
use base64::Engine as _;
use serde_json::{Map, Value};
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub const ENV_USERNAME: &str = "RSING_DOCKER_USERNAME";
pub const ENV_PASSWORD: &str = "RSING_DOCKER_PASSWORD";

/// A user name and password (or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Never prints the password, so credentials can appear in `tracing` fields safely.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, <password>)", self.username)
    }
}

/// The places credentials are read from. [`Sources::from_env`] gives the real ones; tests
/// build their own.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub env_username: Option<String>,
    pub env_password: Option<String>,
    /// rsing's store (read and written by login/logout).
    pub store: Option<PathBuf>,
    /// Docker's config file (read only).
    pub docker_config: Option<PathBuf>,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn home() -> Option<PathBuf> {
    env_nonempty("HOME").map(PathBuf::from).or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.dir)
    })
}

/// rsing's credential store: `$RSING_CONFIG_DIR/auth.json`, else
/// `${XDG_CONFIG_HOME:-~/.config}/rsing/auth.json`.
pub fn store_path() -> Option<PathBuf> {
    if let Some(dir) = env_nonempty("RSING_CONFIG_DIR") {
        return Some(Path::new(&dir).join("auth.json"));
    }
    let config = env_nonempty("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")))?;
    Some(config.join("rsing").join("auth.json"))
}

fn docker_config_path() -> Option<PathBuf> {
    match env_nonempty("DOCKER_CONFIG") {
        Some(dir) => Some(Path::new(&dir).join("config.json")),
        None => home().map(|h| h.join(".docker").join("config.json")),
    }
}

impl Sources {
    pub fn from_env() -> Sources {
        Sources {
            env_username: env_nonempty(ENV_USERNAME),
            env_password: env_nonempty(ENV_PASSWORD),
            store: store_path(),
            docker_config: docker_config_path(),
        }
    }

    /// Credentials for `registry` (any spelling: `index.docker.io` finds `docker.io`'s), or
    /// `None` for anonymous access. A broken rsing store is an error; a broken Docker config is
    /// skipped with a warning, since it belongs to another tool.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credentials>, Error> {
        match (&self.env_username, &self.env_password) {
            (Some(username), Some(password)) => {
                tracing::debug!(registry, "using credentials from {ENV_USERNAME}");
                return Ok(Some(Credentials {
                    username: username.clone(),
                    password: password.clone(),
                }));
            }
            (None, None) => {}
            _ => {
                return Err(Error::Credentials(format!(
                    "set both {ENV_USERNAME} and {ENV_PASSWORD}, or neither"
                )))
            }
        }
        let registry = normalise_host(registry);
        if let Some(store) = &self.store {
            if let Some(auths) = read_auths(store)? {
                if let Some(found) = find(&auths, &registry, store)? {
                    tracing::debug!(registry, file = %store.display(), "using stored credentials");
                    return Ok(Some(found));
                }
            }
        }
        if let Some(config) = &self.docker_config {
            match read_docker_config(config, &registry) {
                Ok(found) => return Ok(found),
                Err(e) => tracing::warn!("ignoring Docker's config: {e}"),
            }
        }
        Ok(None)
    }
}

/// Credentials for `registry` from the environment and the usual files.
pub fn lookup(registry: &str) -> Result<Option<Credentials>, Error> {
    Sources::from_env().lookup(registry)
}

fn bad_file(path: &Path, why: impl fmt::Display) -> Error {
    Error::Credentials(format!("{}: {why}", path.display()))
}

/// The whole JSON document of a credential file, or `None` if there is no file.
fn read_json(path: &Path) -> Result<Option<Map<String, Value>>, Error> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    match serde_json::from_slice(&text) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(bad_file(path, "not a JSON object")),
        Err(e) => Err(bad_file(path, format!("invalid JSON: {e}"))),
    }
}

/// The `auths` object of a credential file.
fn read_auths(path: &Path) -> Result<Option<Map<String, Value>>, Error> {
    let Some(doc) = read_json(path)? else {
        return Ok(None);
    };
    match doc.get("auths") {
        None => Ok(Some(Map::new())),
        Some(Value::Object(auths)) => Ok(Some(auths.clone())),
        Some(_) => Err(bad_file(path, "\"auths\" is not an object")),
    }
}

fn read_docker_config(path: &Path, registry: &str) -> Result<Option<Credentials>, Error> {
    let Some(doc) = read_json(path)? else {
        return Ok(None);
    };
    if let Some(helper) = doc.get("credsStore").and_then(Value::as_str) {
        tracing::debug!(file = %path.display(), "credsStore '{helper}' is not used by rsing; use 'rsing registry login'");
    }
    if doc
        .get("credHelpers")
        .and_then(Value::as_object)
        .is_some_and(|h| h.keys().any(|k| normalise_host(k) == registry))
    {
        tracing::debug!(file = %path.display(), registry, "credHelpers entry is not used by rsing; use 'rsing registry login'");
    }
    let found = match doc.get("auths") {
        Some(Value::Object(auths)) => find(auths, registry, path)?,
        _ => None,
    };
    if found.is_some() {
        tracing::debug!(registry, file = %path.display(), "using Docker's stored credentials");
    }
    Ok(found)
}

/// The entry for `registry` in an `auths` object: keys are compared after normalisation, so
/// `https://index.docker.io/v1/` serves `docker.io`.
fn find(
    auths: &Map<String, Value>,
    registry: &str,
    path: &Path,
) -> Result<Option<Credentials>, Error> {
    let Some((key, entry)) = auths.iter().find(|(k, _)| normalise_host(k) == registry) else {
        return Ok(None);
    };
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(encoded) = field("auth") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| bad_file(path, format!("auths.\"{key}\".auth is not base64: {e}")))?;
        let text = String::from_utf8(decoded)
            .map_err(|_| bad_file(path, format!("auths.\"{key}\".auth is not UTF-8")))?;
        let (username, password) = text
            .split_once(':')
            .ok_or_else(|| bad_file(path, format!("auths.\"{key}\".auth is not user:password")))?;
        return Ok(Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    if let (Some(username), Some(password)) = (field("username"), field("password")) {
        return Ok(Some(Credentials {
            username: username.to_string(),
            password: password.to_string(),
        }));
    }
    tracing::debug!(file = %path.display(), key, "entry has no auth or username/password (identity tokens are not supported)");
    Ok(None)
}

/// Sets (`Some`) or removes (`None`) the entry for `registry` in the store at `path`, keeping
/// everything else in the file. Written to a temporary file with mode 0600 and renamed over
/// the old one, so a crash never leaves a half-written file and the secret is never readable
/// by others, not even briefly. Returns whether anything changed.
pub fn save(path: &Path, registry: &str, creds: Option<&Credentials>) -> Result<bool, Error> {
    let registry = normalise_host(registry);
    let mut doc = read_json(path)?.unwrap_or_default();
    let auths = doc
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auths) = auths else {
        return Err(bad_file(path, "\"auths\" is not an object"));
    };
    let before = auths.len();
    auths.retain(|k, _| normalise_host(k) != registry);
    let removed = auths.len() != before;
    if let Some(c) = creds {
        let encoded = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{}", c.username, c.password));
        auths.insert(registry, serde_json::json!({ "auth": encoded }));
    } else if !removed {
        return Ok(false);
    }
    let text = serde_json::to_vec_pretty(&doc).map_err(|e| bad_file(path, e))?;
    write_private(path, &text)?;
    Ok(true)
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(dir, e))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(data)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

fn require_store() -> Result<PathBuf, Error> {
    store_path().ok_or_else(|| {
        Error::Credentials(
            "no place for the credential store: set RSING_CONFIG_DIR or HOME".to_string(),
        )
    })
}

/// `rsing registry login`: checks `username`/`password` against `host` (a wrong password
/// fails here, not at the next pull), then stores them in rsing's store. Returns its path.
pub fn login(host: &str, username: &str, password: &str, opts: &Options) -> Result<PathBuf, Error> {
    let path = require_store()?;
    login_into(&path, host, username, password, opts)?;
    Ok(path)
}

/// [`login`] with the store at `store`.
pub fn login_into(
    store: &Path,
    host: &str,
    username: &str,
    password: &str,
    opts: &Options,
) -> Result<(), Error> {
    let registry = normalise_host(host);
    if registry.is_empty() {
        return Err(Error::Credentials(format!(
            "'{host}' is not a registry host"
        )));
    }
    let creds = Credentials {
        username: username.to_string(),
        password: password.to_string(),
    };
    Registry::new(opts.clone())?.check_credentials(&registry, &creds)?;
    save(store, &registry, Some(&creds))?;
    Ok(())
}

/// `rsing registry logout`: forgets `host`'s credentials in rsing's store (Docker's file is
/// left alone). Returns whether there were any.
pub fn logout(host: &str) -> Result<bool, Error> {
    save(&require_store()?, host, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rsing-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn order_env_then_store_then_docker() {
        let dir = tempdir("order");
        let store = dir.join("rsing/auth.json");
        let docker = dir.join("docker.json");
        std::fs::write(
            &docker,
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"ZG9jazpodWI="},
                 "ghcr.io":{"username":"gh","password":"tok"},
                 "quay.io":{"identitytoken":"x"}},
                "credsStore":"desktop"}"#,
        )
        .unwrap();
        let mut src = Sources {
            store: Some(store.clone()),
            docker_config: Some(docker),
            ..Default::default()
        };
        assert_eq!(src.lookup("docker.io").unwrap(), Some(creds("dock", "hub")));
        assert_eq!(
            src.lookup("index.docker.io").unwrap(),
            Some(creds("dock", "hub"))
        );
        assert_eq!(src.lookup("ghcr.io").unwrap(), Some(creds("gh", "tok")));
        assert_eq!(src.lookup("quay.io").unwrap(), None);
        assert_eq!(src.lookup("127.0.0.1:5000").unwrap(), None);

        assert!(save(
            &store,
            "https://index.docker.io/v1/",
            Some(&creds("me", "a:b"))
        )
        .unwrap());
        assert_eq!(src.lookup("docker.io").unwrap(), Some(creds("me", "a:b")));
        assert_eq!(src.lookup("ghcr.io").unwrap(), Some(creds("gh", "tok")));

        src.env_username = Some("env".into());
        assert!(src
            .lookup("docker.io")
            .unwrap_err()
            .to_string()
            .contains(ENV_PASSWORD));
        src.env_password = Some("pw".into());
        assert_eq!(src.lookup("quay.io").unwrap(), Some(creds("env", "pw")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn store_is_private_atomic_and_keeps_other_entries() {
        let dir = tempdir("store");
        let store = dir.join("cfg/auth.json");
        save(&store, "a.example", Some(&creds("u1", "p1"))).unwrap();
        save(&store, "b.example:5000", Some(&creds("u2", "p2"))).unwrap();
        save(&store, "A.example", Some(&creds("u3", "p3"))).unwrap();
        let mode = std::fs::metadata(&store).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = std::fs::metadata(dir.join("cfg"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let doc: Value = serde_json::from_slice(&std::fs::read(&store).unwrap()).unwrap();
        assert_eq!(doc["auths"]["a.example"]["auth"], "dTM6cDM=");
        assert_eq!(doc["auths"].as_object().unwrap().len(), 2);
        assert!(save(&store, "a.example", None).unwrap());
        assert!(!save(&store, "a.example", None).unwrap());
        let src = Sources {
            store: Some(store.clone()),
            ..Default::default()
        };
        assert_eq!(src.lookup("a.example").unwrap(), None);
        assert_eq!(
            src.lookup("b.example:5000").unwrap(),
            Some(creds("u2", "p2"))
        );
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("cfg")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary files left");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn broken_files() {
        let dir = tempdir("broken");
        let store = dir.join("auth.json");
        let docker = dir.join("config.json");
        std::fs::write(&docker, "{not json").unwrap();
        let src = Sources {
            store: Some(store.clone()),
            docker_config: Some(docker),
            ..Default::default()
        };
        assert_eq!(
            src.lookup("x.io").unwrap(),
            None,
            "Docker's broken file is skipped"
        );
        std::fs::write(&store, r#"{"auths":{"x.io":{"auth":"!!"}}}"#).unwrap();
        let err = src.lookup("x.io").unwrap_err().to_string();
        assert!(err.contains("auth.json") && err.contains("base64"), "{err}");
        std::fs::write(&store, r#"{"auths":{"x.io":{"auth":"bm9jb2xvbg=="}}}"#).unwrap();
        let err = src.lookup("x.io").unwrap_err().to_string();
        assert!(err.contains("user:password"), "{err}");
        std::fs::write(&store, "[]").unwrap();
        assert!(src
            .lookup("x.io")
            .unwrap_err()
            .to_string()
            .contains("not a JSON object"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_hides_password() {
        assert_eq!(
            format!("{:?}", creds("u", "secret")),
            "Credentials(u, <password>)"
        );
    }
}
