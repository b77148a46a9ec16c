//! The rsing executable.
//!
//! `no_main`: the C `main` below replaces Rust's start-up code, which asks glibc for the main
//! thread's stack bounds (`pthread_getattr_np` parses all of /proc/self/maps) and sets up a
//! stack-overflow handler. That alone was about 6% of a container start. What rsing needs of
//! that start-up is done here: SIGPIPE ignored (writes to a closed pipe or socket return EPIPE,
//! as they do in Rust programs; the payload restores the default before exec) and stdout
//! flushed before the exit. `std::env::args` does not depend on it with glibc (which passes
//! argv to Rust's initialiser); with musl (the static build) argv is taken from here.
#![no_main]

use std::io::Write;

#[no_mangle]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    // SAFETY: SIG_IGN installs no handler code; done before any thread exists.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    #[cfg(target_env = "gnu")]
    let code = rsing::cli::main();
    // musl does not pass argv to Rust's initialiser, so `std::env::args` is empty here.
    #[cfg(not(target_env = "gnu"))]
    let code = {
        use std::os::unix::ffi::OsStringExt;
        let args = (0.._argc.max(0) as usize)
            .map(|i| {
                // SAFETY: the kernel's argv: argc valid NUL-terminated strings.
                let arg = unsafe { std::ffi::CStr::from_ptr(*_argv.add(i)) };
                std::ffi::OsString::from_vec(arg.to_bytes().to_vec())
            })
            .collect();
        rsing::cli::main_with_args(args)
    };
    let _ = std::io::stdout().flush();
    libc::c_int::from(code)
}
