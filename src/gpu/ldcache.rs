//! A reader of glibc's `ld.so.cache`, the file `ldconfig` writes and the dynamic loader reads.
//!
//! rsing reads it itself instead of running `ldconfig -p`: no child process, no dependence on
//! where ldconfig lives or how its output is worded, and the cache of another root (a driver
//! installed under `/run/nvidia/driver`, a stub driver in the tests) reads the same way.
//!
//! Two layouts exist (glibc `sysdeps/generic/dl-cache.h`):
//!
//! ```text
//! old ("ld.so-1.7.0"):  magic[11] pad[1] nlibs:u32  {flags:i32 key:u32 value:u32} * nlibs
//!                       strings; offsets count from the end of the entries
//! new ("glibc-ld.so.cache1.1"): magic[20] nlibs:u32 len_strings:u32 flags:u8 pad[3]
//!                       extension_offset:u32 unused[3]:u32
//!                       {flags:i32 key:u32 value:u32 osversion:u32 hwcap:u64} * nlibs
//!                       strings; offsets count from the start of this header
//! ```
//!
//! glibc ≤ 2.31 wrote both ("compat": the new header follows the old entries, 8-byte aligned);
//! 2.32 and later write the new one only. A compat file is read through its new part.

/// One cache entry: a library name (its SONAME, or a linker name) and the path it resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub path: String,
    /// `FLAG_*` bits: the low byte is the kind (3 = ELF for glibc), the next the ABI/arch.
    pub flags: i32,
    /// glibc-hwcaps subdirectory bits (new format only; 0 in the old).
    pub hwcap: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not an ld.so cache (unknown magic)")]
    Magic,
    #[error("truncated: {0}")]
    Truncated(&'static str),
    #[error("ld.so cache written for the other byte order")]
    ByteOrder,
    #[error("string offset {0} outside the cache")]
    BadString(u64),
}

const OLD_MAGIC: &[u8] = b"ld.so-1.7.0";
const NEW_MAGIC: &[u8] = b"glibc-ld.so.cache1.1";
const OLD_HEADER: usize = 16;
const OLD_ENTRY: usize = 12;
const NEW_HEADER: usize = 48;
const NEW_ENTRY: usize = 24;

/// `FLAG_ELF_LIBC6`: the kind every glibc library has.
pub const FLAG_ELF_LIBC6: i32 = 0x0003;
const FLAG_TYPE_MASK: i32 = 0x00ff;
const FLAG_REQUIRED_MASK: i32 = 0xff00;

/// Parses a whole cache file.
pub fn parse(data: &[u8]) -> Result<Vec<Entry>, Error> {
    if data.starts_with(NEW_MAGIC) {
        return parse_new(data, 0);
    }
    if !data.starts_with(OLD_MAGIC) {
        return Err(Error::Magic);
    }
    let nlibs = u32_at(data, 12).ok_or(Error::Truncated("old header"))? as usize;
    let entries_end = nlibs
        .checked_mul(OLD_ENTRY)
        .and_then(|n| n.checked_add(OLD_HEADER))
        .filter(|&end| end <= data.len())
        .ok_or(Error::Truncated("old entries"))?;
    let new_start = (entries_end + 7) & !7;
    if data.len() > new_start && data[new_start..].starts_with(NEW_MAGIC) {
        return parse_new(data, new_start);
    }
    let strings = &data[entries_end..];
    (0..nlibs)
        .map(|i| {
            let at = OLD_HEADER + i * OLD_ENTRY;
            let flags = u32_at(data, at).ok_or(Error::Truncated("old entry"))? as i32;
            let key = u32_at(data, at + 4).ok_or(Error::Truncated("old entry"))?;
            let value = u32_at(data, at + 8).ok_or(Error::Truncated("old entry"))?;
            Ok(Entry {
                name: string_at(strings, key)?,
                path: string_at(strings, value)?,
                flags,
                hwcap: 0,
            })
        })
        .collect()
}

fn parse_new(data: &[u8], start: usize) -> Result<Vec<Entry>, Error> {
    let header = data
        .get(start..start + NEW_HEADER)
        .ok_or(Error::Truncated("new header"))?;
    // flags: 0 = unknown (older writers), 2 = little endian, 3 = big endian.
    let native = if cfg!(target_endian = "little") { 2 } else { 3 };
    if header[28] != 0 && header[28] != native {
        return Err(Error::ByteOrder);
    }
    let nlibs = u32_at(header, 20).ok_or(Error::Truncated("new header"))? as usize;
    let base = &data[start..];
    nlibs
        .checked_mul(NEW_ENTRY)
        .and_then(|n| n.checked_add(NEW_HEADER))
        .filter(|&end| end <= base.len())
        .ok_or(Error::Truncated("new entries"))?;
    (0..nlibs)
        .map(|i| {
            let at = NEW_HEADER + i * NEW_ENTRY;
            let e = &base[at..at + NEW_ENTRY];
            let word = |o: usize| u32::from_ne_bytes([e[o], e[o + 1], e[o + 2], e[o + 3]]);
            let mut hw = [0u8; 8];
            hw.copy_from_slice(&e[16..24]);
            Ok(Entry {
                name: string_at(base, word(4))?,
                path: string_at(base, word(8))?,
                flags: word(0) as i32,
                hwcap: u64::from_ne_bytes(hw),
            })
        })
        .collect()
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    let b = data.get(at..at.checked_add(4)?)?;
    Some(u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

fn string_at(base: &[u8], offset: u32) -> Result<String, Error> {
    let tail = base
        .get(offset as usize..)
        .ok_or(Error::BadString(offset.into()))?;
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or(Error::BadString(offset.into()))?;
    Ok(String::from_utf8_lossy(&tail[..end]).into_owned())
}

/// The flags ldconfig gives libraries of the architecture rsing itself was built for (so a
/// 64-bit rsing skips 32-bit and x32 copies). `None` where glibc has no such flag.
pub fn host_flags() -> Option<i32> {
    let required = if cfg!(target_arch = "x86_64") {
        0x0300 // FLAG_X8664_LIB64
    } else if cfg!(target_arch = "aarch64") {
        0x0a00 // FLAG_AARCH64_LIB64
    } else if cfg!(all(target_arch = "powerpc64")) {
        0x0500 // FLAG_POWERPC_LIB64
    } else if cfg!(target_arch = "s390x") {
        0x0400 // FLAG_S390_LIB64
    } else if cfg!(all(target_arch = "riscv64", target_feature = "d")) {
        0x1000 // FLAG_RISCV_FLOAT_ABI_DOUBLE
    } else if cfg!(target_arch = "x86") {
        0 // plain FLAG_ELF_LIBC6
    } else {
        return None;
    };
    Some(FLAG_ELF_LIBC6 | required)
}

/// True when an entry with `flags` is loadable by a process with `host` flags.
pub fn matches_host(flags: i32, host: Option<i32>) -> bool {
    match host {
        Some(want) => flags & (FLAG_TYPE_MASK | FLAG_REQUIRED_MASK) == want,
        None => flags & FLAG_TYPE_MASK == FLAG_ELF_LIBC6,
    }
}

#[cfg(test)]
#[path = "ldcache_tests.rs"]
mod tests;
