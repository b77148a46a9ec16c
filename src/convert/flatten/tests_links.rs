//! Hard links: same layer, lower layer, shadowed targets (second passes), failures.

use super::testutil::{flat, layers, try_flatten, Image, MemLayer, Tar};
use super::Error;
use crate::squashfs::FileKind;
use std::sync::atomic::Ordering;

fn opens(ls: &[MemLayer]) -> Vec<usize> {
    ls.iter().map(|l| l.opens.load(Ordering::SeqCst)).collect()
}

/// Whether `a` and `b` are the same inode.
fn same(img: &Image, a: &str, b: &str) -> bool {
    img.get(a).unwrap().number == img.get(b).unwrap().number
}

#[test]
fn link_in_the_same_layer() {
    let img = flat(vec![Tar::new()
        .file("bin/a", b"prog")
        .link("bin/b", "./bin/a")
        .link("c", "/bin/a")
        .done()]);
    assert!(same(&img, "/bin/a", "/bin/b") && same(&img, "/bin/a", "/c"));
    assert_eq!(img.get("/c").unwrap().nlink, 3);
    assert_eq!(img.content("/c"), b"prog");
}

#[test]
fn link_to_a_visible_lower_file_needs_no_second_pass() {
    let ls = layers(vec![
        Tar::new().file("lib/x.so", b"elf").done(),
        Tar::new().link("lib/y.so", "lib/x.so").done(),
    ]);
    let img = try_flatten(&ls).unwrap();
    assert!(same(&img, "/lib/x.so", "/lib/y.so"));
    assert_eq!(img.get("/lib/x.so").unwrap().nlink, 2);
    assert_eq!(opens(&ls), [1, 1]);
}

#[test]
fn link_to_a_target_shadowed_in_its_own_layer() {
    // Layer 1 has t and two links to it; layer 2 replaces t. The links keep layer 1's content
    // (read in a second pass of layer 1) and stay one inode.
    let ls = layers(vec![
        Tar::new()
            .file("t", b"layer one")
            .link("l1", "t")
            .link("l2", "t")
            .done(),
        Tar::new().file("t", b"layer two").done(),
    ]);
    let img = try_flatten(&ls).unwrap();
    assert_eq!(img.content("/t"), b"layer two");
    assert_eq!(img.content("/l1"), b"layer one");
    assert!(same(&img, "/l1", "/l2") && !same(&img, "/t", "/l1"));
    assert_eq!(img.get("/l1").unwrap().nlink, 2);
    assert_eq!(opens(&ls), [2, 1]);
    assert_eq!(img.stats.entries, 3);
}

#[test]
fn link_to_a_lower_target_that_an_upper_layer_replaced() {
    // Layer 2 links to layer 1's t; layer 3 replaces t: the link must get layer 1's t.
    let ls = layers(vec![
        Tar::new()
            .file("t", b"original")
            .file("u", b"untouched")
            .done(),
        Tar::new().link("l", "t").link("m", "u").done(),
        Tar::new().file("t", b"replaced").done(),
    ]);
    let img = try_flatten(&ls).unwrap();
    assert_eq!(img.content("/l"), b"original");
    assert_eq!(img.content("/t"), b"replaced");
    assert!(same(&img, "/m", "/u"));
    assert_eq!(opens(&ls), [2, 1, 1]);
}

#[test]
fn link_to_the_version_the_link_saw() {
    // Layer 2 replaces t, layer 3 links to it: the link sees layer 2's t, not layer 1's.
    let ls = layers(vec![
        Tar::new().file("t", b"one").done(),
        Tar::new().file("t", b"two").done(),
        Tar::new().link("l", "t").done(),
    ]);
    let img = try_flatten(&ls).unwrap();
    assert_eq!(img.content("/l"), b"two");
    assert!(same(&img, "/l", "/t"));
    assert_eq!(opens(&ls), [1, 1, 1]);
}

#[test]
fn links_between_duplicates_of_one_layer() {
    let img = flat(vec![Tar::new()
        .file("f", b"first")
        .link("g", "f")
        .file("f", b"second")
        .link("h", "f")
        .done()]);
    assert_eq!(img.content("/g"), b"first");
    assert_eq!(img.content("/f"), b"second");
    assert!(same(&img, "/f", "/h") && !same(&img, "/f", "/g"));
}

#[test]
fn chain_through_a_shadowed_link() {
    // b is a link to a, shadowed by layer 2; c links to b, so to a's inode.
    let ls = layers(vec![
        Tar::new()
            .file("a", b"A")
            .link("b", "a")
            .link("c", "b")
            .done(),
        Tar::new().file("b", b"B").done(),
    ]);
    let img = try_flatten(&ls).unwrap();
    assert!(same(&img, "/a", "/c"));
    assert_eq!(img.content("/b"), b"B");
    assert_eq!(opens(&ls), [1, 1]);
}

#[test]
fn chain_through_shadowed_entries_needs_the_second_pass() {
    // a and b are both shadowed; c -> b -> a gets layer 1's a.
    let ls = layers(vec![
        Tar::new()
            .file("a", b"A1")
            .link("b", "a")
            .link("c", "b")
            .done(),
        Tar::new().file("a", b"A2").file("b", b"B2").done(),
    ]);
    let img = try_flatten(&ls).unwrap();
    assert_eq!(img.content("/c"), b"A1");
    assert_eq!(img.content("/a"), b"A2");
    assert_eq!(opens(&ls), [2, 1]);
}

#[test]
fn link_to_a_symlink_and_a_device_in_a_second_pass() {
    let dev = {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Char);
        h.set_mode(0o600);
        h.set_size(0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(5).unwrap();
        h.set_path("zero").unwrap();
        h.set_cksum();
        b.append(&h, &b""[..]).unwrap();
        b.into_inner().unwrap()
    };
    let ls = layers(vec![
        Tar::new().symlink("s", "target").link("s2", "s").done(),
        dev,
        Tar::new().link("z2", "zero").done(),
        Tar::new().file("s", b"").marker(".wh.zero").done(),
    ]);
    let img = try_flatten(&ls).unwrap();
    let s2 = img.get("/s2").unwrap();
    assert_eq!(
        (s2.kind, s2.data.as_slice()),
        (FileKind::Symlink, &b"target"[..])
    );
    assert_eq!(img.get("/z2").unwrap().rdev(), (1, 5));
    assert!(img.get("/zero").is_none());
}

#[test]
fn waiting_link_replaced_by_a_later_member() {
    let img = flat(vec![
        Tar::new().file("t", b"low").done(),
        Tar::new().link("l", "t").file("l", b"plain").done(),
    ]);
    assert_eq!(img.content("/l"), b"plain");
    assert_eq!(img.get("/l").unwrap().nlink, 1);
}

#[test]
fn link_whose_target_no_layer_has() {
    let ls = layers(vec![
        Tar::new().file("other", b"").done(),
        Tar::new().link("usr/l", "usr/missing").done(),
    ]);
    let msg = try_flatten(&ls).err().unwrap().to_string();
    assert!(
        msg.contains("layer 2") && msg.contains("/usr/l") && msg.contains("/usr/missing"),
        "{msg}"
    );
}

#[test]
fn link_whose_target_a_middle_layer_deleted() {
    for middle in [
        Tar::new().marker("d/.wh.t").done(),
        Tar::new().marker(".wh.d").done(),
        Tar::new().marker("d/.wh..wh..opq").done(),
        Tar::new().file("d", b"now a file").done(),
    ] {
        let ls = layers(vec![
            Tar::new().file("d/t", b"t").done(),
            middle,
            Tar::new().link("l", "d/t").done(),
        ]);
        let e = try_flatten(&ls).err().expect("an error");
        assert!(matches!(e, Error::Link { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("layer 3") && msg.contains("/l") && msg.contains("/d/t"),
            "{msg}"
        );
    }
}

#[test]
fn link_to_a_directory_is_an_error() {
    let ls = layers(vec![Tar::new().dir("d/", 0o755).link("l", "d").done()]);
    let msg = try_flatten(&ls).err().unwrap().to_string();
    assert!(msg.contains("directory") && msg.contains("/l"), "{msg}");
}

#[test]
fn hidden_links_need_nothing() {
    // The link is whited out by layer 2: its target, absent everywhere, does not matter.
    let ls = layers(vec![
        Tar::new().link("l", "nowhere").done(),
        Tar::new().marker(".wh.l").done(),
    ]);
    let img = try_flatten(&ls).unwrap();
    assert_eq!(img.paths(), ["/"]);
}

#[test]
fn waiting_links_below_a_directory_replaced_by_a_file() {
    let img = flat(vec![
        Tar::new().file("t", b"low").done(),
        Tar::new().link("d/l", "t").file("d", b"file").done(),
    ]);
    assert_eq!(img.paths(), ["/", "/d", "/t"]);
    assert_eq!(img.content("/d"), b"file");
}

#[test]
fn link_to_a_target_deleted_and_recreated_by_a_middle_layer() {
    let ls = layers(vec![
        Tar::new().file("d/t", b"old").done(),
        Tar::new().marker(".wh.d").file("d/t", b"recreated").done(),
        Tar::new().link("l", "d/t").done(),
    ]);
    let img = try_flatten(&ls).unwrap();
    assert_eq!(img.content("/l"), b"recreated");
    assert!(same(&img, "/l", "/d/t"));
}
