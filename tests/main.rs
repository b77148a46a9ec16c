//! rsing's integration tests: one test binary (Cargo.toml, `autotests = false`). They drive the
//! built rsing (`RSING_BIN`, else Cargo's) as an unprivileged user against images that
//! `fixtures` builds from busybox-static. `sudo ./run-tests` sets up a machine and runs them.

/// The path of a fixture image, or return from the test when it cannot be built here (a
/// visible skip; under CI=true a missing prerequisite panics instead).
macro_rules! image {
    ($fixture:expr) => {
        match $crate::fixtures::get($fixture) {
            Some(path) => path,
            None => return,
        }
    };
}

mod fixtures;
mod util;

mod apps; // --app: SCIF apps of built images (run, exec, test)
mod architecture; // the layering rule of docs/design.md, on the source
mod bad_registries; // issue 15: registries answering 500/429 forever, redirect loops, wrong blobs, huge manifests
mod binds; // bind mounts: -B, RSING_BIND, --home, --no-home, --pwd, default binds
mod build; // rsing build: OCI layouts, archives, dirs, SquashFS → SIF; tree equals umoci's
mod compat; // Apptainer drop-in: symlinked homes, policy, APPTAINER* names, job-script lines
mod config; // the site config file: bind path, deny bind path, mount home/tmp
mod contain; // --contain, --containall, --writable-tmpfs
mod docs; // the doc check: commands in docs/*.md marked <!-- doc-check --> run as shown
mod doctor; // rsing doctor on this host, with /dev/fuse and user namespaces made unusable
mod env; // environment composition and precedence
mod errors; // bad input: exit 255 and one `rsing: error:` line naming the thing
mod exec; // CLI basics, exit status, stdio, run, shell
mod faults; // issue 15: SIGKILL at kill points, full disk, concurrency, a killed server
mod gpu; // --nv, --device (CDI), rsing gpu: against the stub driver or a real one
mod hostile; // issue 15: hostile and broken inputs, escaped one-line errors, no hangs
mod identity; // ids, passwd/group, no_new_privs, --fakeroot
mod images; // each image format runs the same commands
mod inspect; // rsing inspect and rsing sif list/dump
mod instance; // issue 14: instance start/list/stop/logs, exec instance://NAME
mod modules; // environment modules: rsing's modulefiles, rsing module create, Lmod and Tcl
mod oras; // rsing push/pull/exec oras:// and lazy starts (oras://, http://) against a local registry
mod overlay; // --overlay DIR, DIR:ro, FILE.sqfs, the writer lock, --writable on a sandbox
mod packaging; // man pages, install.sh, .deb/.rpm (installed into a debootstrapped root), recipes
mod privileges; // issue 15: setuid, capabilities, --fakeroot, read-only image, /proc and /dev
mod pull; // rsing pull / exec docker:// against a local registry: cache, auth, errors
mod push; // rsing push docker://: SIFs as OCI-SIF images (a SquashFS layer), pulled back without conversion
mod recipe; // rsing build from a definition file: steps, seccomp-faked chown, apt-get
mod recipe_sources; // %files wildcards, ADD https://URL (a local server), errors naming the URL
mod recipe_userns; // build --userns-mode subid (real ids through newuidmap), auto, seccomp
mod share; // the shared image server
mod signals; // signal forwarding, 128+N, nothing left behind
mod slurm; // under a real Slurm: batch scripts, arrays, scancel, MPI (PMIx), SPANK, GRES gpu
mod squashfs_matrix; // block sizes × compressors × writers: rsing reads what unsquashfs reads
mod squashfs_tree; // the tree served by rsing equals what unsquashfs reads
