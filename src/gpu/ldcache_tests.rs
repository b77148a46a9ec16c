use super::*;
use crate::gpu::testroot;

/// `ldconfig -p -C FILE`'s (name, path) pairs: the reference reading.
fn ldconfig_p(cache: &std::path::Path) -> Vec<(String, String)> {
    let out = std::process::Command::new("ldconfig")
        .arg("-p")
        .arg("-C")
        .arg(cache)
        .output()
        .expect("ldconfig -p");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (left, path) = l.trim().split_once(" => ")?;
            let name = left.split(" (").next()?;
            Some((name.to_string(), path.to_string()))
        })
        .collect()
}

#[test]
fn reads_caches_that_ldconfig_writes_in_every_format() {
    if !testroot::have_tools() {
        return;
    }
    for format in ["new", "old", "compat"] {
        let root = testroot::build(&format!("ldcache-{format}"), format);
        let file = root.join("etc/ld.so.cache");
        let entries = parse(&std::fs::read(&file).unwrap()).unwrap();
        let mine: Vec<(String, String)> = entries
            .iter()
            .map(|e| (e.name.clone(), e.path.clone()))
            .collect();
        assert_eq!(mine, ldconfig_p(&file), "format {format}");
        let cuda: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.name == "libcuda.so.1")
            .collect();
        assert_eq!(cuda.len(), 2, "{format}: {entries:?}");
        assert_eq!(cuda[0].path, format!("/{}/libcuda.so.1", testroot::LIBDIR));
        assert_eq!(cuda[1].path, "/opt/old/libcuda.so.1");
        if cfg!(target_arch = "x86_64") {
            assert!(cuda.iter().all(|e| e.flags == 0x0303), "{format}");
        }
        assert!(entries.iter().all(|e| matches_host(e.flags, host_flags())));
        std::fs::remove_dir_all(root).unwrap();
    }
}

#[test]
fn damaged_caches_are_errors_not_panics() {
    assert!(matches!(parse(b""), Err(Error::Magic)));
    assert!(matches!(
        parse(b"hello world, not a cache"),
        Err(Error::Magic)
    ));
    assert!(parse(OLD_MAGIC).is_err());
    assert!(parse(NEW_MAGIC).is_err());
    let cache = handmade();
    // Every strict prefix loses part of the entries or their strings.
    for cut in 0..cache.len() {
        assert!(parse(&cache[..cut]).is_err(), "a cache cut at {cut} parsed");
    }
    let mut bad = cache.clone();
    bad[NEW_HEADER + 4] = 0xff; // key offset far outside
    bad[NEW_HEADER + 5] = 0xff;
    assert!(matches!(parse(&bad), Err(Error::BadString(_))));
    let mut huge = cache;
    huge[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
    assert!(matches!(parse(&huge), Err(Error::Truncated(_))));
}

/// A new-format cache with an x86-64 and an i386 copy of one library.
fn handmade() -> Vec<u8> {
    let mut strings = Vec::new();
    let mut add = |s: &str| {
        let at = strings.len();
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        at
    };
    let name = add("libcuda.so.1");
    let p64 = add("/usr/lib64/libcuda.so.1");
    let p32 = add("/usr/lib/libcuda.so.1");
    let base = NEW_HEADER + 2 * NEW_ENTRY;
    let mut out = Vec::new();
    out.extend_from_slice(NEW_MAGIC);
    out.extend_from_slice(&2u32.to_ne_bytes());
    out.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
    out.push(if cfg!(target_endian = "little") { 2 } else { 3 });
    out.extend_from_slice(&[0; 3 + 4 + 12]);
    for (flags, path) in [(0x0303, p64), (0x0003, p32)] {
        out.extend_from_slice(&(flags as u32).to_ne_bytes());
        out.extend_from_slice(&((base + name) as u32).to_ne_bytes());
        out.extend_from_slice(&((base + path) as u32).to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&0u64.to_ne_bytes());
    }
    out.extend_from_slice(&strings);
    out
}

#[test]
fn host_arch_filter_skips_other_abis() {
    let entries = parse(&handmade()).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[1].path, "/usr/lib/libcuda.so.1");
    let x86_64 = Some(0x0303);
    let kept: Vec<&str> = entries
        .iter()
        .filter(|e| matches_host(e.flags, x86_64))
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(kept, vec!["/usr/lib64/libcuda.so.1"]);
    assert!(matches_host(0x0003, Some(0x0003)));
    assert!(!matches_host(0x0a03, Some(0x0303)));
}
