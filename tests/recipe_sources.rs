//! Where a recipe's files come from: `%files` wildcards expanded on the host as Apptainer
//! does (and in the build cache key), and a Dockerfile's `ADD https://URL` downloaded from a
//! local HTTP server (mode 0600 as Docker, revalidated with `If-None-Match`, a 404 or a dead
//! server one error line naming the URL).

use crate::fixtures::Fixture;
use crate::recipe::{assert_no_staging, build, sandbox, unsquashfs_lln};
use crate::util::{have_tools, missing, TestEnv};
use std::io::BufRead;
use std::path::{Path, PathBuf};

fn line_of<'a>(tree: &'a str, name: &str) -> &'a str {
    tree.lines()
        .find(|l| l.ends_with(name))
        .unwrap_or_else(|| panic!("{name} not in the image:\n{tree}"))
}

#[test]
fn files_wildcards_expand_on_the_host_and_key_the_cache() {
    let t = TestEnv::new();
    let Some(base) = sandbox() else { return };
    for f in [
        "data/a1.txt",
        "data/a2.txt",
        "data/b.log",
        "data/sub/x.conf",
        "data/c.txt",
    ] {
        t.write(&format!("work/{f}"), &format!("{f}\n"));
    }
    let def = t.write(
        "work/globs.def",
        &format!(
            "Bootstrap: localimage\nFrom: {}\n\n%files\n    data/a?.txt /opt/txt/\n    \
data/[b]*.log /opt/logs/\n    data/*/x.conf\n    data/[!ab]*.txt /opt/c-only.txt\n",
            base.display()
        ),
    );
    let img = t.dir.join("globs.sif");
    build(&t).arg(&img).arg(&def).assert_exit(0);
    assert_no_staging(&t);
    let tree = unsquashfs_lln(&img);
    for path in [
        "squashfs-root/opt/txt/a1.txt",
        "squashfs-root/opt/txt/a2.txt",
        "squashfs-root/opt/logs/b.log",
        "squashfs-root/data/sub/x.conf",
        "squashfs-root/opt/c-only.txt",
    ] {
        line_of(&tree, path);
    }
    assert!(
        !tree.contains("opt/txt/c.txt"),
        "c.txt does not match a?.txt"
    );
    assert_eq!(
        t.exec(&img, ["cat", "/opt/c-only.txt"]).stdout_str(),
        "data/c.txt"
    );
    // A new file that the pattern matches changes the stage's key: the stage runs again.
    t.write("work/data/a3.txt", "data/a3.txt\n");
    let out = build(&t).arg("-F").arg(&img).arg(&def).assert_exit(0);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!said.contains("cached"), "{said}");
    line_of(&unsquashfs_lln(&img), "squashfs-root/opt/txt/a3.txt");
    // A pattern that matches nothing: one error naming the line and the pattern.
    let bad = t.write(
        "work/nomatch.def",
        &format!(
            "Bootstrap: localimage\nFrom: {}\n\n%files\n    data/z*.txt /opt/\n",
            base.display()
        ),
    );
    let none = t.dir.join("none.sif");
    let line = build(&t)
        .arg("-q")
        .arg(&none)
        .arg(&bad)
        .assert_error_naming("data/z*.txt");
    assert!(line.contains("nomatch.def:5"), "{line}");
    assert!(!none.exists());
    assert_no_staging(&t);
}

/// `python3 -m http.server`-like server on 127.0.0.1 with an ETag per content and 304 for a
/// matching `If-None-Match`; it logs `PATH STATUS` lines. Killed when dropped.
struct Server {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

const SERVER: &str = r#"
import hashlib, http.server, os, sys
root = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        p = os.path.join(root, self.path.lstrip('/'))
        if not os.path.isfile(p):
            self.send_response(404); self.send_header('Content-Length', '0'); self.end_headers(); return
        body = open(p, 'rb').read()
        tag = '"%s"' % hashlib.sha256(body).hexdigest()[:16]
        if self.headers.get('If-None-Match') == tag:
            self.send_response(304); self.send_header('ETag', tag); self.end_headers(); return
        self.send_response(200); self.send_header('ETag', tag)
        self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, fmt, *args):
        with open(sys.argv[2], 'a') as f: f.write('%s %s\n' % (self.path, args[1]))
s = http.server.HTTPServer(('127.0.0.1', 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

impl Server {
    fn start(root: &Path, log: PathBuf) -> Server {
        let mut child = std::process::Command::new("python3")
            .arg("-c")
            .arg(SERVER)
            .arg(root)
            .arg(&log)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .expect("the server's port");
        let port = first.trim().parse().expect("a port number");
        Server { child, port, log }
    }

    fn statuses(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn add_url_downloads_revalidates_and_names_the_url_on_failure() {
    let t = TestEnv::new();
    let Some(base) = crate::fixtures::get(Fixture::Sif) else {
        return;
    };
    if !have_tools(&["python3", "unsquashfs"]) {
        missing("python3 or unsquashfs");
        return;
    }
    let served = t.dir.join("served");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::write(served.join("data.txt"), "version one\n").unwrap();
    let server = Server::start(&served, t.dir.join("server.log"));
    let url = format!("http://127.0.0.1:{}/data.txt", server.port);
    let dockerfile = t.write(
        "work/ctx/Dockerfile",
        &format!(
            "FROM {}\nADD {url} /opt/\nADD {url} /opt/renamed.txt\nRUN cat /opt/data.txt > /opt/seen\n",
            base.display()
        ),
    );
    let img = t.dir.join("add.sif");
    build(&t).arg(&img).arg(&dockerfile).assert_exit(0);
    assert_no_staging(&t);
    let tree = unsquashfs_lln(&img);
    assert!(line_of(&tree, "squashfs-root/opt/data.txt").starts_with("-rw------- "));
    assert!(line_of(&tree, "squashfs-root/opt/renamed.txt").starts_with("-rw------- "));
    assert_eq!(
        t.exec(&img, ["cat", "/opt/seen"]).stdout_str(),
        "version one"
    );
    // The second ADD of the same URL already revalidates what the first one kept.
    assert_eq!(server.statuses(), ["/data.txt 200", "/data.txt 304"]);

    // Unchanged: revalidated (304), nothing re-runs.
    let out = build(&t)
        .arg("-F")
        .arg(&img)
        .arg(&dockerfile)
        .assert_exit(0);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        said.contains("RUN cat /opt/data.txt > /opt/seen (cached)"),
        "{said}"
    );
    assert_eq!(&server.statuses()[2..], ["/data.txt 304", "/data.txt 304"]);

    // Changed on the server: downloaded again, and the RUN after it re-runs.
    std::fs::write(served.join("data.txt"), "version two\n").unwrap();
    let out = build(&t)
        .arg("-F")
        .arg(&img)
        .arg(&dockerfile)
        .assert_exit(0);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!said.contains("(cached)"), "{said}");
    assert_eq!(
        t.exec(&img, ["cat", "/opt/seen"]).stdout_str(),
        "version two"
    );

    // A 404 and a server that is gone: one line naming the URL, no image, no staging.
    let missing_url = format!("http://127.0.0.1:{}/missing.txt", server.port);
    let bad = t.write(
        "work/bad/Dockerfile",
        &format!("FROM {}\nADD {missing_url} /opt/\n", base.display()),
    );
    let none = t.dir.join("none.sif");
    let line = build(&t)
        .arg("-q")
        .arg(&none)
        .arg(&bad)
        .assert_error_naming(&missing_url);
    assert!(line.contains("404"), "{line}");
    let port = server.port;
    drop(server);
    let gone = format!("http://127.0.0.1:{port}/data.txt");
    let bad = t.write(
        "work/gone/Dockerfile",
        &format!("FROM {}\nADD {gone} /opt/\n", base.display()),
    );
    build(&t)
        .arg("-q")
        .arg(&none)
        .arg(&bad)
        .assert_error_naming(&gone);
    assert!(!none.exists());
    assert_no_staging(&t);
}
