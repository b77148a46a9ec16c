//! Links the rsing executable as a non-PIE binary: every container start loads it, and a
//! position-independent executable makes the dynamic loader apply ~13,000 relative relocations
//! first. Fixed addresses cost nothing in security here that matters for a tool that runs as
//! the caller (ASLR still randomises the stack, heap and libraries).
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
