//! Which image of a multi-platform index to run: the host's platform, `--arch` values, and the
//! matching rules (Go's GOOS/GOARCH names, as used in OCI indexes and Docker manifest lists).

use std::fmt;

use oci_spec::image::{Descriptor, ImageIndex};

use super::Error;

/// An OS/architecture/variant triple with Go names (`linux/arm64/v8`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// The variant an image means when it names none: containerd's defaults, so that a manifest
/// list entry `arm64` (no variant) and a host `arm64/v8` are the same thing.
fn default_variant(architecture: &str) -> Option<&'static str> {
    match architecture {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        "amd64" => Some("v1"),
        _ => None,
    }
}

/// Variants a CPU of `variant` also runs, best first (an armv7 runs v6 and v5 code; an
/// x86-64-v3 machine runs v2 and v1 code).
fn compatible_variants(architecture: &str, variant: &str) -> Vec<&'static str> {
    const ARM: &[&str] = &["v8", "v7", "v6", "v5"];
    const AMD64: &[&str] = &["v4", "v3", "v2", "v1"];
    let list = match architecture {
        "arm" => &ARM[1..],
        "amd64" => AMD64,
        _ => return Vec::new(),
    };
    match list.iter().position(|v| *v == variant) {
        Some(at) => list[at..].to_vec(),
        None => Vec::new(),
    }
}

impl Platform {
    fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// The platform rsing itself was built for, which is the one it runs on.
    pub fn host() -> Platform {
        let (arch, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "x86" => ("386", None),
            "arm" => ("arm", Some("v7")),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform::new("linux", arch, variant)
    }

    /// Parses an `--arch` value: a bare architecture in Go or uname spelling (`amd64`,
    /// `x86_64`, `aarch64`, `armv7`, `i386`…), `arch/variant`, or `os/arch[/variant]`.
    pub fn parse(s: &str) -> Result<Platform, Error> {
        let bad = || Error::Platform(s.to_string());
        let lower = s.trim().to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('/').collect();
        if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
            return Err(bad());
        }
        // "linux/arm64[/v8]" has an OS first; "arm/v7" does not.
        let (os, rest) = if parts.len() == 3 || (parts.len() == 2 && !parts[1].starts_with('v')) {
            (parts[0], &parts[1..])
        } else {
            ("linux", &parts[..])
        };
        let (arch, implied) = match rest[0] {
            "amd64" | "x86_64" | "x86-64" => ("amd64", None),
            "arm64" | "aarch64" | "arm64v8" => ("arm64", Some("v8")),
            "arm" | "armhf" | "armv7" | "armv7l" | "arm32v7" => ("arm", Some("v7")),
            "armv6" | "armv6l" | "arm32v6" | "armel" => ("arm", Some("v6")),
            "armv5" | "arm32v5" => ("arm", Some("v5")),
            "ppc64le" | "ppc64el" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "386" | "i386" | "i686" | "x86" => ("386", None),
            "loong64" | "loongarch64" => ("loong64", None),
            _ => return Err(bad()),
        };
        // A spelling that already names a variant ("armv6") must not contradict "/v7".
        let spelled = rest[0].len() > arch.len() + 1 && rest[0].starts_with("arm");
        let variant = match rest.get(1).copied() {
            None => implied,
            Some(v) if v.len() < 2 || !v[1..].bytes().all(|b| b.is_ascii_digit()) => {
                return Err(bad())
            }
            Some(v) if spelled && implied != Some(v) => return Err(bad()),
            Some(v) => Some(v),
        };
        Ok(Platform::new(os, arch, variant))
    }

    /// Whether an index entry's platform is this one (a missing variant on either side means
    /// the architecture's default, so `arm64` matches `arm64/v8`).
    pub fn matches(&self, p: &oci_spec::image::Platform) -> bool {
        self.rank(p) == Some(0)
    }

    /// 0 for an exact match, n > 0 for a compatible but older variant (lower is better).
    fn rank(&self, p: &oci_spec::image::Platform) -> Option<usize> {
        let arch = p.architecture().to_string();
        if p.os().to_string() != self.os || arch != self.architecture {
            return None;
        }
        let want = self
            .variant
            .as_deref()
            .or_else(|| default_variant(&self.architecture));
        let have = p.variant().as_deref().or_else(|| default_variant(&arch));
        match (want, have) {
            (Some(w), Some(h)) if w == h => Some(0),
            (Some(w), Some(h)) => compatible_variants(&arch, w).iter().position(|v| *v == h),
            _ => Some(0),
        }
    }

    /// Picks this platform's manifest from an index's entries: the exact match first, then the
    /// newest compatible variant, then an entry that names no platform at all. Attestation
    /// manifests (`unknown/unknown`, BuildKit's provenance) are never picked.
    pub fn select<'a>(&self, manifests: &'a [Descriptor]) -> Option<&'a Descriptor> {
        let candidates = manifests.iter().filter(|d| !is_attestation(d));
        let ranked = candidates
            .clone()
            .filter_map(|d| Some((self.rank(d.platform().as_ref()?)?, d)))
            .min_by_key(|(rank, _)| *rank);
        ranked
            .map(|(_, d)| d)
            .or_else(|| candidates.into_iter().find(|d| d.platform().is_none()))
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// BuildKit stores provenance and SBOM manifests in the index with platform `unknown/unknown`.
fn is_attestation(d: &Descriptor) -> bool {
    let annotated = d.annotations().as_ref().is_some_and(|a| {
        a.get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
    });
    let unknown = d.platform().as_ref().is_some_and(|p| {
        p.os().to_string() == "unknown" || p.architecture().to_string() == "unknown"
    });
    annotated || unknown
}

/// `os/arch[/variant]` of an index entry, for error messages.
fn describe(p: &oci_spec::image::Platform) -> String {
    let mut s = format!("{}/{}", p.os(), p.architecture());
    if let Some(v) = p.variant() {
        s.push('/');
        s.push_str(v);
    }
    s
}

/// Parses an OCI image index or a Docker manifest list and returns the descriptor of the
/// manifest for `platform`, or an error listing the platforms the index has.
pub fn select_manifest(index_bytes: &[u8], platform: &Platform) -> Result<Descriptor, Error> {
    select_manifest_in(index_bytes, platform, "image index")
}

/// [`select_manifest`] with `name` (a file, a registry URL) for the error messages.
pub fn select_manifest_in(
    index_bytes: &[u8],
    platform: &Platform,
    name: &str,
) -> Result<Descriptor, Error> {
    let index: ImageIndex = super::manifest::parse_json(index_bytes, name)?;
    select_from(index.manifests(), platform, name)
}

/// [`Platform::select`] with an error that lists what the index offers.
pub(crate) fn select_from(
    manifests: &[Descriptor],
    platform: &Platform,
    name: &str,
) -> Result<Descriptor, Error> {
    if let Some(d) = platform.select(manifests) {
        return Ok(d.clone());
    }
    let available: Vec<String> = manifests
        .iter()
        .filter(|d| !is_attestation(d))
        .filter_map(|d| d.platform().as_ref().map(describe))
        .collect();
    Err(Error::NoPlatform {
        name: name.to_string(),
        wanted: platform.to_string(),
        available: summarise_platforms(&available),
    })
}

/// The most platforms an error line names; the rest are counted.
const MAX_NAMED_PLATFORMS: usize = 8;

/// What an index offers, for an error line that stays short whatever the index holds: the
/// plain list when every entry is a distinct platform and there are few, else a count of
/// entries and of distinct platforms, naming the first few ("200000 entries for 1 other
/// platform: linux/s390x").
fn summarise_platforms(available: &[String]) -> String {
    if available.is_empty() {
        return "none".to_string();
    }
    let mut distinct: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in available {
        if seen.insert(p.as_str()) {
            distinct.push(p);
        }
    }
    if distinct.len() == available.len() && distinct.len() <= MAX_NAMED_PLATFORMS {
        return distinct.join(", ");
    }
    let mut named = distinct
        .iter()
        .take(MAX_NAMED_PLATFORMS)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if distinct.len() > MAX_NAMED_PLATFORMS {
        named.push_str(&format!(
            " and {} more",
            distinct.len() - MAX_NAMED_PLATFORMS
        ));
    }
    format!(
        "{} entries for {} other platform{}: {named}",
        available.len(),
        distinct.len(),
        if distinct.len() == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    fn index_json(platforms: &[(&str, &str, Option<&str>)]) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, (os, arch, variant))| {
                let mut plat = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    plat["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                    "digest": format!("sha256:{:064x}", i + 1),
                    "size": 100,
                    "platform": plat,
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests": manifests,
        }))
        .unwrap()
    }

    #[test]
    fn parse_spellings() {
        assert_eq!(p("x86_64"), p("amd64"));
        assert_eq!(p("amd64").to_string(), "linux/amd64");
        assert_eq!(p("aarch64").to_string(), "linux/arm64/v8");
        assert_eq!(p("arm64v8"), p("linux/arm64/v8"));
        assert_eq!(p("arm64"), p("arm64/v8"));
        assert_eq!(p("armv7").to_string(), "linux/arm/v7");
        assert_eq!(p("arm/v7"), p("armv7"));
        assert_eq!(p("arm/v6").to_string(), "linux/arm/v6");
        assert_eq!(p("i386").to_string(), "linux/386");
        assert_eq!(p("ppc64le").to_string(), "linux/ppc64le");
        assert_eq!(p("linux/s390x").to_string(), "linux/s390x");
        assert_eq!(p("RISCV64").to_string(), "linux/riscv64");
        for bad in ["", "sparc", "linux/", "a/b/c/d", "arm/x7", "/amd64"] {
            let err = Platform::parse(bad).unwrap_err().to_string();
            assert!(err.contains("platform"), "{bad}: {err}");
        }
    }

    #[test]
    fn host_is_a_parseable_platform() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        assert_eq!(Platform::parse(&host.to_string()).unwrap(), host);
    }

    #[test]
    fn select_by_platform() {
        let list = index_json(&[
            ("unknown", "unknown", None),
            ("linux", "amd64", None),
            ("linux", "arm64", None),
            ("linux", "arm", Some("v6")),
            ("linux", "arm", Some("v7")),
            ("linux", "s390x", None),
        ]);
        let digest = |plat: &str| {
            select_manifest(&list, &p(plat))
                .unwrap()
                .digest()
                .to_string()
        };
        assert!(digest("amd64").ends_with("02"));
        assert!(digest("arm64/v8").ends_with("03"));
        assert!(digest("armv6").ends_with("04"));
        assert!(digest("armv7").ends_with("05"));
        assert!(digest("s390x").ends_with("06"));
        let err = select_manifest(&list, &p("ppc64le"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "image index: no image for linux/ppc64le; available: linux/amd64, linux/arm64, \
             linux/arm/v6, linux/arm/v7, linux/s390x"
        );
    }

    #[test]
    fn compatible_variants_are_a_fallback() {
        let list = index_json(&[("linux", "arm", Some("v6")), ("linux", "arm", Some("v5"))]);
        let d = select_manifest(&list, &p("armv7")).unwrap();
        assert!(d.digest().to_string().ends_with("01"));
        assert!(select_manifest(&list, &p("arm64")).is_err());
        // an explicit arm64 variant other than v8 does not match a plain arm64 entry
        let list = index_json(&[("linux", "arm64", None)]);
        assert!(select_manifest(&list, &p("arm64/v9")).is_err());
        assert!(select_manifest(&list, &p("aarch64")).is_ok());
    }

    #[test]
    fn huge_index_errors_stay_short() {
        let many = vec![("linux", "s390x", None); 200_000];
        let err = select_manifest(&index_json(&many), &p("amd64"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "image index: no image for linux/amd64; available: 200000 entries for 1 other \
             platform: linux/s390x"
        );
        let arches: Vec<String> = (0..50).map(|i| format!("arch{i}")).collect();
        let list: Vec<_> = arches.iter().map(|a| ("linux", a.as_str(), None)).collect();
        let err = select_manifest(&index_json(&list), &p("amd64"))
            .unwrap_err()
            .to_string();
        assert!(err.len() < 300, "{err}");
        assert!(
            err.contains("50 entries for 50 other platforms: linux/arch0, "),
            "{err}"
        );
        assert!(err.ends_with("linux/arch7 and 42 more"), "{err}");
    }

    #[test]
    fn bad_index_json_is_named() {
        let err = select_manifest_in(b"{nope", &p("amd64"), "/x/index.json").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("/x/index.json: invalid JSON"), "{msg}");
        assert!(!msg.contains('\n'));
    }
}
