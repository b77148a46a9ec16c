//! Image references (`docker://python:3.11`, `ghcr.io/org/app@sha256:…`) with Docker's
//! normalisation rules, so that a name means the same image here as it does for Docker,
//! Podman and Apptainer.

use super::Error;
use crate::oci::Digest;
use std::fmt;

/// The registry that short names (`python`, `user/app`) refer to.
pub const DOCKER_HUB: &str = "docker.io";
/// The host that actually serves Docker Hub's v2 API.
const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
/// Host names people use for Docker Hub; all of them mean [`DOCKER_HUB`].
const DOCKER_HUB_ALIASES: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];

/// A parsed, normalised image reference: `registry/repository[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Registry host (and port) as the user knows it: `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path: `library/python`, `org/app`.
    pub repository: String,
    /// The tag; `latest` when neither a tag nor a digest was given.
    pub tag: Option<String>,
    /// A pinned manifest digest; when present it wins over the tag.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses `docker://NAME` or `NAME`, where NAME is `[registry/]repo[:tag][@sha256:…]`.
    pub fn parse(input: &str) -> Result<Reference, Error> {
        let bad = |why: &str| Error::BadReference {
            input: input.to_string(),
            why: why.to_string(),
        };
        let name = input.strip_prefix("docker://").unwrap_or(input);
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        if name.contains("://") {
            return Err(bad("only docker:// references are supported here"));
        }
        let (name, digest) = match name.split_once('@') {
            Some((n, d)) => {
                let digest = Digest::parse(d).map_err(|e| bad(&format!("bad digest: {e}")))?;
                (n, Some(digest))
            }
            None => (name, None),
        };
        let (registry, rest) = split_registry(name);
        let (path, tag) = match rest.rfind(':') {
            Some(at) if !rest[at..].contains('/') => (&rest[..at], Some(&rest[at + 1..])),
            _ => (rest, None),
        };
        if let Some(tag) = tag {
            check_tag(tag).map_err(|why| bad(&why))?;
        }
        check_repository(path).map_err(|why| bad(&why))?;
        let registry = normalise_host(registry);
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path.to_string()
        };
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t.map(str::to_string),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The host to send v2 API requests to (Docker Hub's API lives on another name).
    pub fn endpoint(&self) -> &str {
        endpoint_of(&self.registry)
    }

    /// What the manifest request asks for: the digest if pinned, else the tag.
    pub fn target(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `repository:tag` or `repository@digest`, for messages about this image.
    pub fn short(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{d}", self.repository),
            (None, t) => format!("{}:{}", self.repository, t.as_deref().unwrap_or("latest")),
        }
    }

    /// The file name `rsing pull` uses when none is given, by Apptainer's rule: the last path
    /// component, `_`, the tag, `.sif` (`python_3.11.sif`). A digest-only reference uses the
    /// first 12 hex digits of the digest (`alpine_sha256-0123456789ab.sif`), since a ':' in a
    /// file name breaks `--bind` style `SRC:DST` arguments.
    pub fn default_sif_name(&self) -> String {
        let base = self
            .repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository);
        match (&self.tag, &self.digest) {
            (Some(tag), _) => format!("{base}_{tag}.sif"),
            (None, Some(d)) => format!("{base}_sha256-{}.sif", &d.hex()[..12]),
            (None, None) => format!("{base}_latest.sif"),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Maps every Docker Hub alias to `docker.io`, lowercases, and drops a scheme or path
/// (`https://index.docker.io/v1/` as found in `~/.docker/config.json`).
pub fn normalise_host(host: &str) -> String {
    let host = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host);
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        DOCKER_HUB.to_string()
    } else {
        host
    }
}

/// The API host for a (normalised) registry name.
pub fn endpoint_of(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_ENDPOINT
    } else {
        registry
    }
}

/// Docker's rule: the first component is a registry if it has a '.' or ':', or is
/// `localhost`, and more components follow; otherwise the name is on Docker Hub.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    }
}

/// Repository components: lowercase letters and digits, separated by `.`, `_`, `__` or
/// dashes, as in the distribution spec's grammar (checked loosely: no empty components,
/// no leading or trailing separators).
fn check_repository(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("missing repository name".to_string());
    }
    for comp in path.split('/') {
        let ok_chars = comp
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
        let edges_ok = comp
            .chars()
            .next()
            .zip(comp.chars().last())
            .is_some_and(|(a, b)| a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric());
        if !ok_chars || !edges_ok {
            return Err(format!(
                "repository component '{comp}' must be lowercase letters, digits and . _ - \
                 (not at the start or end)"
            ));
        }
    }
    Ok(())
}

/// Tags: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let first_ok = tag
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = tag
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !first_ok || !rest_ok || tag.len() > 128 {
        return Err(format!(
            "tag '{tag}' must be 1-128 letters, digits, '_', '.' or '-' (not starting with . or -)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (
            r.registry,
            r.repository,
            r.tag,
            r.digest.map(|d| d.to_string()),
        )
    }

    #[test]
    fn docker_hub_short_names() {
        let t = |s: &str| Some(s.to_string());
        assert_eq!(
            parts("docker://python:3.11"),
            ("docker.io".into(), "library/python".into(), t("3.11"), None)
        );
        assert_eq!(
            parts("python"),
            (
                "docker.io".into(),
                "library/python".into(),
                t("latest"),
                None
            )
        );
        assert_eq!(
            parts("user/app:v1"),
            ("docker.io".into(), "user/app".into(), t("v1"), None)
        );
        for alias in ["index.docker.io", "docker.io", "registry-1.docker.io"] {
            let r = Reference::parse(&format!("{alias}/python:3.11")).unwrap();
            assert_eq!(r.to_string(), "docker.io/library/python:3.11");
            assert_eq!(r.endpoint(), "registry-1.docker.io");
        }
    }

    #[test]
    fn other_registries_ports_and_digests() {
        let r = Reference::parse("127.0.0.1:5000/foo/bar:nope").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.endpoint()),
            ("127.0.0.1:5000", "127.0.0.1:5000")
        );
        assert_eq!(r.short(), "foo/bar:nope");
        let r = Reference::parse("localhost/app").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("localhost", "app")
        );
        let r = Reference::parse("localhost:5000/app").unwrap();
        assert_eq!(r.registry, "localhost:5000");
        let r = Reference::parse(&format!("ghcr.io/org/app@sha256:{HEX}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.target(), format!("sha256:{HEX}"));
        assert_eq!(r.to_string(), format!("ghcr.io/org/app@sha256:{HEX}"));
        let r = Reference::parse(&format!("alpine:3.19@sha256:{HEX}")).unwrap();
        assert_eq!(
            r.to_string(),
            format!("docker.io/library/alpine:3.19@sha256:{HEX}")
        );
        assert_eq!(r.target(), format!("sha256:{HEX}"), "the digest wins");
        let r = Reference::parse("[::1]:5000/x/y:1").unwrap();
        assert_eq!(r.registry, "[::1]:5000");
    }

    #[test]
    fn default_sif_names() {
        let name = |s: &str| Reference::parse(s).unwrap().default_sif_name();
        assert_eq!(name("docker://python:3.11"), "python_3.11.sif");
        assert_eq!(name("ubuntu"), "ubuntu_latest.sif");
        assert_eq!(name("ghcr.io/org/sub/tool:1.0-rc1"), "tool_1.0-rc1.sif");
        assert_eq!(
            name(&format!("alpine@sha256:{HEX}")),
            "alpine_sha256-0123456789ab.sif"
        );
    }

    #[test]
    fn rejects_bad_references() {
        for bad in [
            "",
            "docker://",
            "Python:3",
            "python:",
            "python:-x",
            "a//b",
            "/abs",
            "oras://ghcr.io/x",
            "alpine@sha256:xyz",
            "alpine@md5:00",
            "-lead/x",
        ] {
            let err = Reference::parse(bad).expect_err(bad);
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }

    #[test]
    fn normalises_config_keys() {
        assert_eq!(normalise_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(normalise_host("GHCR.io"), "ghcr.io");
        assert_eq!(normalise_host("http://127.0.0.1:5000"), "127.0.0.1:5000");
    }
}
