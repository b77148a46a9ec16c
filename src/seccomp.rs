//! The fake-root seccomp filter: identity and ownership calls succeed without doing anything,
//! as Charliecloud's `--force=seccomp` does, so package managers run as "root" in a user
//! namespace that maps only the caller's own uid and gid (no subuid ranges). A leaf module:
//! build steps ([`install`], owners recorded) and `exec --fakeroot` ([`install_fake_root`],
//! owners dropped: an overlay or sandbox keeps the caller's ids) both use it.
//!
//! * `setuid` … `setgroups`, `setfsuid`/`setfsgid`: answered 0 by the kernel (RET_ERRNO 0).
//! * `mknod`/`mknodat` of a block or character device, in a build only: answered 0 (the node
//!   is not made; a build has no business with device nodes). Regular files, FIFOs and sockets
//!   go to the kernel, which makes them unprivileged. At run time device nodes are left to the
//!   kernel, which refuses them: a container must not appear to have made one.
//! * `chown` family: in a build, sent to the supervisor (RET_USER_NOTIF), which records the
//!   ownership the step asked for and answers 0 (`build::runner`); the recorded owners are
//!   written into the SquashFS. At run time answered 0 by the kernel.
//!
//! Only the native ABI is filtered; 32-bit (i386/x32) calls reach the kernel unchanged.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO_0: u32 = 0x0005_0000;
const RET_USER_NOTIF: u32 = 0x7fc0_0000;
const FLAG_NEW_LISTENER: libc::c_ulong = 1 << 3;

#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

/// Calls that pretend to succeed.
fn faked() -> Vec<i64> {
    let mut v = vec![
        libc::SYS_setuid,
        libc::SYS_setgid,
        libc::SYS_setreuid,
        libc::SYS_setregid,
        libc::SYS_setresuid,
        libc::SYS_setresgid,
        libc::SYS_setgroups,
        libc::SYS_setfsuid,
        libc::SYS_setfsgid,
    ];
    v.sort_unstable();
    v
}

/// Calls whose requested owner is recorded.
pub fn chown_calls() -> Vec<i64> {
    #[cfg(target_arch = "x86_64")]
    return vec![
        libc::SYS_chown,
        libc::SYS_lchown,
        libc::SYS_fchown,
        libc::SYS_fchownat,
    ];
    #[cfg(target_arch = "aarch64")]
    return vec![libc::SYS_fchown, libc::SYS_fchownat];
}

/// `(syscall, index of the mode argument)` for mknod.
fn mknod_calls() -> Vec<(i64, u32)> {
    #[cfg(target_arch = "x86_64")]
    return vec![(libc::SYS_mknod, 1), (libc::SYS_mknodat, 2)];
    #[cfg(target_arch = "aarch64")]
    return vec![(libc::SYS_mknodat, 2)];
}

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// What the `chown` family gets, and so which program: a build's (`Notify`, device `mknod`
/// faked too) or the run time's (`Succeed`, device `mknod` refused by the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chown {
    /// A user notification: the build's supervisor records the owner, then answers 0.
    Notify,
    /// 0 from the kernel: nothing records the owner (run time).
    Succeed,
}

/// The BPF program.
pub fn program(chown: Chown) -> Vec<libc::sock_filter> {
    let chown_answer = match chown {
        Chown::Notify => RET_USER_NOTIF,
        Chown::Succeed => RET_ERRNO_0,
    };
    let mut p = vec![
        stmt(LD_W_ABS, 4), // seccomp_data.arch
        jeq(ARCH, 1, 0),
        stmt(RET_K, RET_ALLOW),
        stmt(LD_W_ABS, 0), // seccomp_data.nr
    ];
    for nr in faked() {
        p.push(jeq(nr as u32, 0, 1));
        p.push(stmt(RET_K, RET_ERRNO_0));
    }
    for nr in chown_calls() {
        p.push(jeq(nr as u32, 0, 1));
        p.push(stmt(RET_K, chown_answer));
    }
    let fake_mknod = chown == Chown::Notify;
    for (nr, arg) in mknod_calls().into_iter().filter(|_| fake_mknod) {
        // if nr matches: A = low word of args[arg] & S_IFMT; device → 0; else allow.
        p.push(jeq(nr as u32, 0, 6));
        p.push(stmt(LD_W_ABS, 16 + 8 * arg));
        p.push(stmt(
            (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16,
            libc::S_IFMT,
        ));
        p.push(jeq(libc::S_IFCHR, 2, 0));
        p.push(jeq(libc::S_IFBLK, 1, 0));
        p.push(stmt(RET_K, RET_ALLOW));
        p.push(stmt(RET_K, RET_ERRNO_0));
    }
    p.push(stmt(RET_K, RET_ALLOW));
    p
}

/// Installs the build's filter on the calling thread and returns the notification listener.
/// Needs CAP_SYS_ADMIN in the current user namespace (a build step has it) or no_new_privs.
pub fn install() -> io::Result<OwnedFd> {
    let fd = load(&program(Chown::Notify), FLAG_NEW_LISTENER)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Installs the run-time filter (`exec --fakeroot` in a one-id user namespace) on the calling
/// thread, so that `apt-get`, `dpkg` and `useradd` work in an overlay or sandbox. Call it after
/// no_new_privs, just before execve: it is inherited by the command and all it starts.
pub fn install_fake_root() -> io::Result<()> {
    load(&program(Chown::Succeed), 0).map(|_| ())
}

/// seccomp(SECCOMP_SET_MODE_FILTER, flags, program): the kernel copies the program.
fn load(filter: &[libc::sock_filter], flags: libc::c_ulong) -> io::Result<i32> {
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `filter`, alive for the call; the kernel copies it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as i32)
}

/// True when the caller is uid 0 in a user namespace that maps one uid only (`--fakeroot`
/// without subid ranges): identity calls cannot succeed there, so faking them changes no
/// real outcome. Reads `/proc/self/uid_map`; false where it cannot be read.
pub fn is_one_id_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => one_id_map(&map),
        Err(_) => false,
    }
}

/// A uid_map of one line whose range is one id.
fn one_id_map(map: &str) -> bool {
    let lines: Vec<&str> = map.lines().filter(|l| !l.trim().is_empty()).collect();
    lines.len() == 1 && lines[0].split_whitespace().nth(2) == Some("1")
}

/// `struct seccomp_data`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Data {
    pub nr: i32,
    pub arch: u32,
    pub ip: u64,
    pub args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct Notif {
    pub id: u64,
    pub pid: u32,
    pub flags: u32,
    pub data: Data,
}

/// `struct seccomp_notif_resp`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct Resp {
    id: u64,
    val: i64,
    error: i32,
    flags: u32,
}

const IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
const IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;

/// Receives the next notification (blocks).
pub fn receive(listener: i32) -> io::Result<Notif> {
    let mut n = Notif::default();
    // SAFETY: `n` has the kernel's layout and size (80 bytes).
    if unsafe { libc::ioctl(listener, IOCTL_NOTIF_RECV as _, &mut n as *mut Notif) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n)
}

/// Answers notification `id`: the call returns 0.
pub fn succeed(listener: i32, id: u64) -> io::Result<()> {
    let mut r = Resp {
        id,
        ..Resp::default()
    };
    // SAFETY: `r` has the kernel's layout and size (24 bytes).
    if unsafe { libc::ioctl(listener, IOCTL_NOTIF_SEND as _, &mut r as *mut Resp) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn struct_sizes_match_the_kernel() {
        assert_eq!(std::mem::size_of::<super::Notif>(), 80);
        assert_eq!(std::mem::size_of::<super::Resp>(), 24);
    }

    #[test]
    fn program_ends_in_allow_and_jumps_stay_inside() {
        for chown in [super::Chown::Notify, super::Chown::Succeed] {
            let p = super::program(chown);
            assert_eq!(p.last().unwrap().k, super::RET_ALLOW);
            for (i, ins) in p.iter().enumerate() {
                if ins.code & 0x07 == libc::BPF_JMP as u16 {
                    assert!(i + 1 + (ins.jt.max(ins.jf) as usize) < p.len());
                }
            }
        }
    }

    #[test]
    fn only_run_time_programs_answer_chown_without_notifying() {
        let notifies = |c| {
            super::program(c)
                .iter()
                .any(|i| i.k == super::RET_USER_NOTIF)
        };
        assert!(notifies(super::Chown::Notify));
        assert!(!notifies(super::Chown::Succeed));
    }

    #[test]
    fn only_build_programs_fake_device_nodes() {
        let len = |c| super::program(c).len();
        assert!(len(super::Chown::Notify) > len(super::Chown::Succeed));
    }

    #[test]
    fn one_id_maps_are_told_from_ranges() {
        assert!(super::one_id_map("         0       1001          1\n"));
        assert!(!super::one_id_map("0 1001 1\n1 100000 65536\n"));
        assert!(!super::one_id_map("0 0 4294967295\n"));
        assert!(!super::one_id_map(""));
    }
}
