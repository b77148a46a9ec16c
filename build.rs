//! Build script: link settings for start-up time, and the facts `rsing --version` prints.
//!
//! Link settings, chosen because every container start loads the executable, and on a small
//! VM each shared library and each page fault shows:
//! - Non-PIE: a position-independent executable makes the dynamic loader apply ~13,000
//!   relative relocations first. Fixed addresses cost nothing in security here that matters
//!   for a tool that runs as the caller (ASLR still randomises the stack, heap and libraries).
//! - The unwinder from libgcc_eh.a instead of libgcc_s.so: with `--as-needed` (rustc's default)
//!   libgcc_s then drops out of the executable, and with it a library load and its constructor,
//!   which probes the CPU with a dozen `cpuid` instructions (each one traps to the hypervisor
//!   in a VM). glibc itself stays dynamic, for NSS (LDAP/sssd users) and for dlopen (NVML).
//!
//! Version facts (`RSING_GIT_COMMIT`, `RSING_BUILD_DATE`, ...): the git commit comes from
//! `RSING_GIT_COMMIT` when set (release tarballs, distribution builds), else from `git` in a
//! checkout, else "unknown". The build date honours `SOURCE_DATE_EPOCH`, so reproducible package builds give
//! the same bytes.
use std::process::Command;

// The crate's own date code (a build script cannot use the crate it builds; the file names
// nothing else in it). Only `Utc::at` and `date` are used here.
#[allow(dead_code)]
#[path = "src/civil.rs"]
mod civil;

fn main() {
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    // Only for glibc: the musl target links a static PIE (rcrt1.o), which crashes at start
    // when linked with -no-pie.
    if target("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    // Only where the unwinder is libgcc's (Linux with glibc); musl and LLVM toolchains bring
    // their own.
    // `RSING_UNWINDER=gcc_s` keeps libgcc_s.so instead: GCC 12's libgcc_eh.a imports
    // `_dl_find_object@GLIBC_2.35`, which raises the glibc the binary needs from 2.34 to 2.35
    // and so excludes RHEL/Rocky 9 (glibc 2.34); see docs/admin-guide.md.
    println!("cargo:rerun-if-env-changed=RSING_UNWINDER");
    let static_unwinder = std::env::var("RSING_UNWINDER").as_deref() != Ok("gcc_s");
    if static_unwinder
        && target("CARGO_CFG_TARGET_OS") == "linux"
        && target("CARGO_CFG_TARGET_ENV") == "gnu"
    {
        println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    }
    version_facts();
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn version_facts() {
    println!("cargo:rerun-if-env-changed=RSING_GIT_COMMIT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
    // A new commit changes HEAD (detached) or the branch's ref (loose or packed).
    // Only files that exist: cargo treats a missing one as changed on every build.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    let commit = std::env::var("RSING_GIT_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    let epoch = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let target = env("TARGET");
    let profile = env("PROFILE");
    // Cargo features (none today) plus what every build has compiled in: a packager reading
    // `--version` learns what this binary can do without reading the source.
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(|f| f.to_lowercase()))
        .collect();
    features.sort();
    features.extend(
        [
            "fuse(in-process)",
            "squashfs(gzip,xz,lzma,lzo,lz4,zstd)",
            "sif",
            "oci-registry(rustls)",
            "nvidia(--nv,nvml-dlopen)",
            "cdi",
        ]
        .map(String::from),
    );
    // One variable per fact: a cargo directive is one line, so the multi-line text is put
    // together with concat! in src/cli/version.rs.
    println!("cargo:rustc-env=RSING_BUILD_TARGET={target}");
    println!("cargo:rustc-env=RSING_BUILD_PROFILE={profile}");
    println!("cargo:rustc-env=RSING_FEATURES={}", features.join(" "));
    println!("cargo:rustc-env=RSING_GIT_COMMIT={commit}");
    println!(
        "cargo:rustc-env=RSING_BUILD_DATE={}",
        civil::Utc::at(epoch).date()
    );
}
