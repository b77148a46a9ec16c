//! Flattening: overlay rules, entry types and metadata, errors. Hard links are in
//! `tests_links`.

use super::testutil::{flat, layers, try_flatten, Tar, T0};
use super::Error;
use crate::squashfs::FileKind;
use tar::EntryType;

#[test]
fn single_layer() {
    let img = flat(vec![Tar::new()
        .dir("./", 0o755)
        .dir("./etc/", 0o755)
        .file("./etc/hostname", b"box\n")
        .dir("./usr/bin/", 0o755)
        .file("./usr/bin/tool", b"#!/bin/sh\n")
        .symlink("./bin", "usr/bin")
        .done()]);
    assert_eq!(
        img.paths(),
        [
            "/",
            "/bin",
            "/etc",
            "/etc/hostname",
            "/usr",
            "/usr/bin",
            "/usr/bin/tool"
        ]
    );
    assert_eq!(img.content("/etc/hostname"), b"box\n");
    assert_eq!(img.get("/bin").unwrap().data, b"usr/bin");
    // /usr had no entry: created with 0755 and its parent's owner.
    assert_eq!(img.get("/usr").unwrap().mode, 0o755);
    assert_eq!(img.stats.entries, 6);
    assert_eq!(img.stats.bytes, 14);
}

#[test]
fn upper_file_replaces_lower_and_its_data_is_never_written() {
    // Incompressible, so that writing it would show in the data size.
    let mut x = 1u32;
    let old: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let img = flat(vec![
        Tar::new().file("big", &old).file("keep", b"k").done(),
        Tar::new().file("big", b"new").done(),
    ]);
    assert_eq!(img.content("/big"), b"new");
    assert_eq!(img.content("/keep"), b"k");
    assert!(img.summary.data_bytes < 10_000, "{:?}", img.summary);
    assert_eq!(img.stats.skipped_shadowed, 1);
    assert_eq!(img.stats.bytes, 4);
}

#[test]
fn whiteouts_hide_files_and_directories() {
    let img = flat(vec![
        Tar::new()
            .file("a/f", b"f")
            .file("a/g", b"g")
            .file("d/x", b"x")
            .file("d/sub/y", b"y")
            .file("e/old", b"")
            .done(),
        Tar::new()
            .marker("a/.wh.f")
            .marker(".wh.d")
            // A whiteout does not hide its own layer's entries.
            .marker(".wh.e")
            .file("e/new", b"")
            .done(),
    ]);
    assert_eq!(
        img.paths(),
        ["/", "/a", "/a/g", "/e", "/e/new"],
        "whiteouts never land"
    );
    assert_eq!(img.stats.whiteouts, 3);
}

#[test]
fn deleted_then_recreated_directory_shows_only_new_children() {
    let img = flat(vec![
        Tar::new().file("d/x", b"x").done(),
        Tar::new().marker(".wh.d").done(),
        Tar::new().file("d/y", b"y").done(),
    ]);
    assert_eq!(img.paths(), ["/", "/d", "/d/y"]);
}

#[test]
fn opaque_directory_hides_lower_children_not_itself() {
    let img = flat(vec![
        Tar::new()
            .dir("o/", 0o700)
            .file("o/a", b"a")
            .file("o/sub/b", b"b")
            .file("other", b"")
            .done(),
        Tar::new().marker("o/.wh..wh..opq").file("o/c", b"c").done(),
    ]);
    assert_eq!(img.paths(), ["/", "/o", "/o/c", "/other"]);
    // The upper layer had no entry for o/: its metadata is the lower one's.
    assert_eq!(img.get("/o").unwrap().mode, 0o700);
}

#[test]
fn directory_replaced_by_file_and_file_by_directory() {
    let img = flat(vec![
        Tar::new()
            .dir("x/", 0o755)
            .file("x/y", b"y")
            .file("f", b"f")
            .dir("s/", 0o755)
            .file("s/a", b"a")
            .done(),
        Tar::new()
            .file("x", b"now a file")
            .dir("f/", 0o700)
            .file("f/z", b"z")
            .file("s", b"s")
            .done(),
        // s: directory, then a file, then a directory again: the first one's child is gone.
        Tar::new().file("s/b", b"b").done(),
    ]);
    assert_eq!(img.paths(), ["/", "/f", "/f/z", "/s", "/s/b", "/x"]);
    assert_eq!(img.content("/x"), b"now a file");
    assert_eq!(img.get("/f").unwrap().mode, 0o700);
}

#[test]
fn directory_metadata_comes_from_the_topmost_explicit_entry() {
    let dir = |mode, uid, mtime| {
        move |t: Tar, name: &str| {
            t.raw(
                EntryType::Directory,
                name,
                "",
                b"",
                mode,
                (uid, uid),
                mtime,
                &[],
            )
        }
    };
    let img = flat(vec![
        dir(0o700, 5, T0 + 1)(dir(0o755, 1, T0 + 1)(Tar::new(), "./"), "p/").done(),
        dir(0o750, 7, T0 + 2)(Tar::new(), "p/").done(),
        // Only implies p/ and p/q/.
        dir(0o711, 9, T0 + 3)(Tar::new(), "./")
            .file("p/q/file", b"")
            .done(),
    ]);
    let p = img.get("/p").unwrap();
    assert_eq!((p.mode, p.uid, p.mtime), (0o750, 7, (T0 + 2) as u32));
    let root = img.get("/").unwrap();
    assert_eq!((root.mode, root.uid), (0o711, 9));
    assert_eq!(img.get("/p/q").unwrap().mode, 0o755);
}

#[test]
fn symlinks_keep_their_targets_verbatim() {
    let img = flat(vec![Tar::new()
        .symlink("abs", "/etc/../../host/secret")
        .symlink("rel", "../up/./x")
        .symlink("dir/l", "//a//b/")
        .done()]);
    assert_eq!(img.get("/abs").unwrap().data, b"/etc/../../host/secret");
    assert_eq!(img.get("/rel").unwrap().data, b"../up/./x");
    assert_eq!(img.get("/dir/l").unwrap().data, b"//a//b/");
    assert_eq!(img.get("/abs").unwrap().kind, FileKind::Symlink);
}

#[test]
fn devices_and_fifos() {
    let mut tar = tar::Builder::new(Vec::new());
    for (ty, name, major, minor) in [
        (EntryType::Char, "dev/null", 1, 3),
        (EntryType::Block, "dev/sda", 8, 0),
        (EntryType::Char, "dev/big", 300, 70000),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(ty);
        h.set_mode(0o660);
        h.set_size(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_path(name).unwrap();
        h.set_cksum();
        tar.append(&h, &b""[..]).unwrap();
    }
    let base = tar.into_inner().unwrap();
    let fifo = Tar::new()
        .raw(EntryType::Fifo, "run/fifo", "", b"", 0o620, (0, 5), T0, &[])
        .done();
    let img = flat(vec![base, fifo]);
    let n = img.get("/dev/null").unwrap();
    assert_eq!(
        (n.kind, n.rdev(), n.mode),
        (FileKind::CharDevice, (1, 3), 0o660)
    );
    let b = img.get("/dev/sda").unwrap();
    assert_eq!((b.kind, b.rdev()), (FileKind::BlockDevice, (8, 0)));
    assert_eq!(img.get("/dev/big").unwrap().rdev(), (300, 70000));
    let f = img.get("/run/fifo").unwrap();
    assert_eq!((f.kind, f.mode, f.gid), (FileKind::Fifo, 0o620, 5));
}

#[test]
fn modes_owners_and_times() {
    let big_id = b"3000000000";
    let img = flat(vec![Tar::new()
        .raw(
            EntryType::Regular,
            "bin/su",
            "",
            b"x",
            0o4755,
            (0, 0),
            T0 + 5,
            &[],
        )
        .raw(
            EntryType::Regular,
            "bin/wall",
            "",
            b"x",
            0o2755,
            (0, 5),
            T0,
            &[],
        )
        .raw(
            EntryType::Directory,
            "tmp/",
            "",
            b"",
            0o1777,
            (0, 0),
            T0,
            &[],
        )
        .raw(
            EntryType::Regular,
            "pax",
            "",
            b"p",
            0o600,
            (1, 1),
            T0,
            &[
                ("mtime", b"1700000000.987654321"),
                ("uid", big_id),
                ("gid", b"70000"),
            ],
        )
        .raw(
            EntryType::Regular,
            "old",
            "",
            b"",
            0o644,
            (0, 0),
            T0,
            &[("mtime", b"-12.5")],
        )
        .done()]);
    let su = img.get("/bin/su").unwrap();
    assert_eq!((su.mode, su.mtime), (0o4755, (T0 + 5) as u32));
    assert_eq!(img.get("/bin/wall").unwrap().mode, 0o2755);
    assert_eq!(img.get("/tmp").unwrap().mode, 0o1777);
    let pax = img.get("/pax").unwrap();
    assert_eq!(
        (pax.mtime, pax.uid, pax.gid),
        (1_700_000_000, 3_000_000_000, 70000)
    );
    assert_eq!(img.get("/old").unwrap().mtime, 0);
}

#[test]
fn xattrs_from_pax_records() {
    let cap: &[u8] = &[
        1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let img = flat(vec![Tar::new()
        .raw(
            EntryType::Regular,
            "ping",
            "",
            b"elf",
            0o755,
            (0, 0),
            T0,
            &[
                ("SCHILY.xattr.security.capability", cap),
                ("SCHILY.xattr.user.note", b"hi"),
            ],
        )
        .done()]);
    let mut x = img.get("/ping").unwrap().xattrs;
    x.sort();
    assert_eq!(
        x,
        [
            (b"security.capability".to_vec(), cap.to_vec()),
            (b"user.note".to_vec(), b"hi".to_vec())
        ]
    );
}

#[test]
fn dotdot_is_refused_and_named() {
    let ls = layers(vec![Tar::new().file("a/../../etc/passwd", b"").done()]);
    let e = try_flatten(&ls).err().expect("an error");
    assert!(matches!(e, Error::Entry { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("layer 1") && msg.contains("a/../../etc/passwd") && msg.contains(".."),
        "{msg}"
    );
    // In a hard link target too.
    let ls = layers(vec![Tar::new().file("x", b"").link("l", "../x").done()]);
    let msg = try_flatten(&ls).err().unwrap().to_string();
    assert!(msg.contains("/l") && msg.contains("../x"), "{msg}");
}

#[test]
fn absolute_and_dotted_paths_are_sanitised() {
    let img = flat(vec![Tar::new()
        .file("/etc/abs", b"1")
        .file("./dot", b"2")
        .file("//a//./b/", b"3")
        .dir("/", 0o700)
        .done()]);
    assert_eq!(img.paths(), ["/", "/a", "/a/b", "/dot", "/etc", "/etc/abs"]);
    assert_eq!(img.get("/").unwrap().mode, 0o700);
}

#[test]
fn later_member_replaces_earlier_one_in_the_same_layer() {
    let img = flat(vec![
        Tar::new().file("low", b"low").done(),
        Tar::new()
            .file("f", b"one")
            .file("f", b"two")
            .dir("d/", 0o755)
            .file("d/child", b"")
            .file("d", b"file now")
            .file("low", b"a")
            .file("low", b"b")
            .done(),
    ]);
    assert_eq!(img.content("/f"), b"two");
    assert_eq!(img.content("/d"), b"file now");
    assert_eq!(img.content("/low"), b"b");
    assert_eq!(img.paths(), ["/", "/d", "/f", "/low"]);
}

#[test]
fn not_a_tar_is_a_clear_error() {
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let ls = layers(vec![Tar::new().file("ok", b"").done(), garbage]);
    let e = try_flatten(&ls).err().expect("an error");
    assert!(matches!(e, Error::Tar { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("layer 2") && msg.contains("at its start"),
        "{msg}"
    );
    // Truncated in the middle of a member.
    let mut cut = Tar::new().file("a", &[7u8; 5000]).done();
    cut.truncate(2000);
    let msg = try_flatten(&layers(vec![cut])).err().unwrap().to_string();
    assert!(msg.contains("layer 1") && msg.contains("/a"), "{msg}");
}

#[test]
fn long_names_global_headers_and_unknown_markers() {
    let long = format!("{}/file", "d".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    // GNU long name member, then a PAX global header.
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    b.append_data(&mut h, format!("gnu/{}", "n".repeat(200)), &b"long"[..])
        .unwrap();
    let mut g = tar::Header::new_ustar();
    g.set_entry_type(EntryType::XGlobalHeader);
    g.set_size(0);
    g.set_cksum();
    b.append(&g, &b""[..]).unwrap();
    let gnu = b.into_inner().unwrap();
    let img = flat(vec![
        gnu,
        Tar::new()
            .file(&long, b"pax path")
            .marker(".wh..wh.plnk/12.34")
            .marker("x/.wh..wh.aufs")
            .done(),
    ]);
    assert_eq!(img.content(&format!("/{long}")), b"pax path");
    assert_eq!(img.content(&format!("/gnu/{}", "n".repeat(200))), b"long");
    assert!(!img.paths().iter().any(|p| p.contains(".wh.")));
}

#[test]
fn pax_sparse_file_reads_holes_as_zeros() {
    // Format 1.0: the map (count, then offset/size pairs) opens the data, padded to 512.
    let mut data = b"2\n0\n5\n10\n3\n".to_vec();
    data.resize(512, 0);
    data.extend_from_slice(b"helloabc");
    let img = flat(vec![Tar::new()
        .raw(
            EntryType::Regular,
            "GNUSparseFile.0/s",
            "",
            &data,
            0o644,
            (0, 0),
            T0,
            &[
                ("GNU.sparse.major", b"1"),
                ("GNU.sparse.minor", b"0"),
                ("GNU.sparse.name", b"sparse"),
                ("GNU.sparse.realsize", b"16"),
            ],
        )
        // Format 0.1: the map in a record.
        .raw(
            EntryType::Regular,
            "GNUSparseFile.0/t",
            "",
            b"xy",
            0o644,
            (0, 0),
            T0,
            &[
                ("GNU.sparse.map", b"2,1,7,1"),
                ("GNU.sparse.name", b"t"),
                ("GNU.sparse.size", b"9"),
            ],
        )
        .done()]);
    assert_eq!(img.content("/sparse"), b"hello\0\0\0\0\0abc\0\0\0");
    assert_eq!(img.content("/t"), b"\0\0x\0\0\0\0y\0");
    assert_eq!(img.paths(), ["/", "/sparse", "/t"]);
}

#[test]
fn pax_size_overrides_the_header() {
    // The header says 0 bytes; the PAX record (as for files over 8 GiB) says 5.
    let mut data = b"hello".to_vec();
    data.resize(512, 0);
    let t = Tar::new()
        .raw(
            EntryType::Regular,
            "f",
            "",
            b"",
            0o644,
            (0, 0),
            T0,
            &[("size", b"5")],
        )
        .bytes(&data);
    let img = flat(vec![t.file("g", b"next").done()]);
    assert_eq!(img.content("/f"), b"hello");
    assert_eq!(img.content("/g"), b"next");
}
