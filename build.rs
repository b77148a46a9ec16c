//! Link settings for the rsing executable, chosen for start-up time: every container start
//! loads it, and on a small VM each shared library and each page fault shows.
//! - Non-PIE: a position-independent executable makes the dynamic loader apply ~13,000
//!   relative relocations first. Fixed addresses cost nothing in security here that matters
//!   for a tool that runs as the caller (ASLR still randomises the stack, heap and libraries).
//! - The unwinder from libgcc_eh.a instead of libgcc_s.so: with `--as-needed` (rustc's default)
//!   libgcc_s then drops out of the executable, and with it a library load and its constructor,
//!   which probes the CPU with a dozen `cpuid` instructions (each one traps to the hypervisor
//!   in a VM). glibc itself stays dynamic, for NSS (LDAP/sssd users) and for dlopen (NVML).
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
    let target = |key: &str| std::env::var(key).unwrap_or_default();
    // Only where the unwinder is libgcc's (Linux with glibc); musl and LLVM toolchains bring
    // their own.
    if target("CARGO_CFG_TARGET_OS") == "linux" && target("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-lib=static:-bundle=gcc_eh");
    }
}
