//! The rsing executable.
//!
//! `no_main`: the C `main` below replaces Rust's start-up code, which asks glibc for the main
//! thread's stack bounds (`pthread_getattr_np` parses all of /proc/self/maps) and sets up a
//! stack-overflow handler. That alone was about 6% of a container start. What rsing needs of
//! that start-up is done here: SIGPIPE ignored (writes to a closed pipe or socket return EPIPE,
//! as they do in Rust programs; the payload restores the default before exec) and stdout
//! flushed before the exit. `std::env::args` does not depend on it (glibc passes argv to
//! Rust's initialiser).
#![no_main]

use std::io::Write;

#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: SIG_IGN installs no handler code; done before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    let code = rsing::cli::main();
    let _ = std::io::stdout().flush();
    libc::c_int::from(code)
}
