//! Test harness. `TestEnv` gives each test its own directory with a private HOME, cwd and
//! TMPDIR, and starts `RsingCmd`s from an environment without RSING_*, APPTAINER* and
//! SINGULARITY* variables. It also checks the host afterwards (no leftover processes or mounts).

mod cmd;
pub mod gpu;
mod guard;
pub mod http;
pub mod oci;
pub mod registry;
pub mod setup;
pub mod slurm;

pub use cmd::{RsingCmd, Running};
pub use guard::{have_tools, missing, skip};

use sha2::{Digest, Sha256};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The rsing binary under test: `RSING_BIN`, else the one Cargo built with this test binary.
pub fn rsing_bin() -> PathBuf {
    std::env::var_os("RSING_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_rsing")))
}

/// Where fixtures and per-test dirs live: `RSING_TEST_SCRATCH`, else `<target>/tmp/rsing-tests`.
/// Never under /tmp or /var/tmp: rsing binds those into every container, which would make
/// files of a test's HOME visible through another path.
pub fn scratch_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let root = std::env::var_os("RSING_TEST_SCRATCH")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("rsing-tests"));
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("cannot create scratch dir {}: {e}", root.display()));
        let root = root.canonicalize().expect("canonical scratch dir");
        assert!(
            !root.starts_with("/tmp") && !root.starts_with("/var/tmp"),
            "scratch dir {} is under /tmp or /var/tmp, which rsing binds into containers; \
             set RSING_TEST_SCRATCH to a directory elsewhere",
            root.display()
        );
        root
    })
}

/// One test's private world. Removed on drop unless the test failed (kept for inspection).
pub struct TestEnv {
    pub dir: PathBuf,
    pub home: PathBuf,
    pub cwd: PathBuf,
    pub tmp: PathBuf,
    id: String,
    host_files: Vec<PathBuf>,
}

impl TestEnv {
    pub fn new() -> TestEnv {
        guard::check_unprivileged();
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let name: String = std::thread::current()
            .name()
            .unwrap_or("test")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{name}-{}-{n}", std::process::id());
        let dir = scratch_root().join("tests").join(&id);
        let _ = std::fs::remove_dir_all(&dir);
        let env = TestEnv {
            home: dir.join("home"),
            cwd: dir.join("work"),
            tmp: dir.join("tmp"),
            dir,
            id,
            host_files: Vec::new(),
        };
        for d in [&env.home, &env.cwd, &env.tmp] {
            std::fs::create_dir_all(d).expect("creating the test dirs");
        }
        env
    }

    /// A string unique to this test, to find its processes or files on the host.
    pub fn marker(&self) -> String {
        format!("rsing-test-{}", self.id)
    }

    /// `rsing` with this test's HOME, TMPDIR and cwd, and no RSING_/APPTAINER/SINGULARITY vars.
    pub fn rsing(&self) -> RsingCmd {
        let base: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| !is_runtime_var(k))
            .filter(|(k, _)| k != "HOME" && k != "TMPDIR")
            .chain([
                ("HOME".into(), self.home.clone().into_os_string()),
                ("TMPDIR".into(), self.tmp.clone().into_os_string()),
            ])
            .collect();
        RsingCmd::new(&rsing_bin(), base, &self.cwd)
    }

    /// [`TestEnv::rsing`] with its cache at `cache` (relative: in the test's directory).
    pub fn rsing_cached(&self, cache: impl AsRef<Path>) -> RsingCmd {
        self.rsing().env("RSING_CACHEDIR", self.dir.join(cache))
    }

    /// `rsing exec IMAGE CMD...`
    pub fn exec<I, S>(&self, image: &Path, cmd: I) -> RsingCmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.exec_with(None::<&str>, image, cmd)
    }

    /// `rsing exec OPTS... IMAGE CMD...`
    pub fn exec_with<O, OS, I, S>(&self, opts: O, image: &Path, cmd: I) -> RsingCmd
    where
        O: IntoIterator<Item = OS>,
        OS: AsRef<OsStr>,
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.rsing().arg("exec").args(opts).arg(image).args(cmd)
    }

    /// `rsing exec IMAGE sh -c SCRIPT`: returns stdout, expecting success.
    pub fn sh(&self, image: &Path, script: &str) -> String {
        self.sh_with(None::<&str>, image, script)
    }

    /// `rsing exec OPTS... IMAGE sh -c SCRIPT`: returns stdout, expecting success.
    pub fn sh_with<O, OS>(&self, opts: O, image: &Path, script: &str) -> String
    where
        O: IntoIterator<Item = OS>,
        OS: AsRef<OsStr>,
    {
        self.exec_with(opts, image, ["/bin/sh", "-c", script])
            .stdout_str()
    }

    /// Writes `contents` to `rel` (relative to the test dir, parents created); returns the path.
    pub fn write(&self, rel: &str, contents: &str) -> PathBuf {
        let path = self.dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).expect("creating parent dirs");
        std::fs::write(&path, contents).expect("writing a test file");
        path
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let path = self.dir.join(rel);
        std::fs::create_dir_all(&path).expect("creating a test dir");
        path
    }

    /// A path directly in the host's /tmp, unique to this test and removed on drop.
    pub fn host_tmp_path(&mut self, suffix: &str) -> PathBuf {
        let path = Path::new("/tmp").join(format!("{}.{suffix}", self.marker()));
        self.host_files.push(path.clone());
        path
    }

    /// Panics if a process whose command line contains `marker` still runs, or if the host
    /// mount table shows anything of rsing's or of `image`.
    pub fn assert_host_clean(&self, marker: &str, image: &Path) {
        let procs = processes_matching(marker);
        assert!(
            procs.is_empty(),
            "leftover processes after rsing exited: {procs:?}"
        );
        let mounts = host_mounts_mentioning(image);
        assert!(
            mounts.is_empty(),
            "rsing left mounts in the host namespace: {mounts:#?}"
        );
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        for f in &self.host_files {
            let _ = std::fs::remove_file(f);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn is_runtime_var(key: &OsStr) -> bool {
    let k = key.to_string_lossy();
    ["RSING", "APPTAINER", "SINGULARITY"]
        .iter()
        .any(|p| k.starts_with(p))
}

/// Our image servers (`rsing __serve`) of `image`: (pid, socket). The server's one argument
/// is the JSON its starter encoded (`runtime::share::protocol`), naming image and socket.
pub fn image_servers(image: &Path) -> Vec<(u32, PathBuf)> {
    processes_matching("__serve")
        .into_iter()
        .filter_map(|(pid, _)| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let mut args = raw.split(|b| *b == 0);
            args.find(|a| *a == b"__serve")?;
            let spec: serde_json::Value = serde_json::from_slice(args.next()?).ok()?;
            let socket = PathBuf::from(spec["socket"].as_str()?);
            (spec["image"].as_str()? == image.to_str()?).then_some((pid, socket))
        })
        .collect()
}

/// Our own processes (other than this one) whose command line contains `marker`.
pub fn processes_matching(marker: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let uid = nix::unistd::getuid().as_raw();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == uid)
        })
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmdline.contains(marker).then_some((pid, cmdline))
        })
        .collect()
}

/// Lines of this process's mount table that name `image` or an rsing FUSE mount.
pub fn host_mounts_mentioning(image: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let image = image.to_string_lossy();
    table
        .lines()
        .filter(|l| l.contains(image.as_ref()) || (l.contains("fuse") && l.contains("rsing")))
        .map(str::to_string)
        .collect()
}

/// The calling user's name, uid, gid and primary group name.
pub struct Caller {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub group: String,
}

pub fn caller() -> Caller {
    let uid = nix::unistd::getuid();
    let gid = nix::unistd::getgid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .expect("caller in passwd");
    let group = nix::unistd::Group::from_gid(gid)
        .ok()
        .flatten()
        .expect("caller's group");
    Caller {
        name: user.name,
        uid: uid.as_raw(),
        gid: gid.as_raw(),
        group: group.name,
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// sha256 of a host file, read in chunks.
pub fn sha256_file(path: &Path) -> String {
    use std::io::Read;
    let mut file = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("opening {} to hash it: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).expect("reading a file to hash");
        if n == 0 {
            return hex(&hasher.finalize());
        }
        hasher.update(&buf[..n]);
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
