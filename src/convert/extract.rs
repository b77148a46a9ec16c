//! Unpacking a SquashFS root into a directory: `rsing build --sandbox DIR SOURCE`.
//!
//! Runs as the calling user, so what only root could create is adapted, as Apptainer's and
//! umoci's rootless unpacks do: files get the caller as owner, device nodes become empty
//! files, and directories are made owner-writable (`u+w`, also `u+rx`) so the sandbox can be
//! changed and removed. Files keep their modes exactly. Hard links stay hard links. Nothing is followed on the host: every
//! entry is created under the target directory by name, and the target must not exist yet.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{Error, Result};
use crate::squashfs::{Archive, FileKind, Inode};

/// Unpacks the whole archive into new directory `target`.
pub fn extract(archive: &Archive, target: &Path) -> Result<()> {
    extract_owned(archive, target).map(|_| ())
}

/// [`extract`], returning the owners the unpacked files could not keep: `(path inside the
/// image, uid, gid)` of every entry not owned by 0:0 (a recipe build writes them back).
pub fn extract_owned(archive: &Archive, target: &Path) -> Result<Vec<(String, u32, u32)>> {
    fs::create_dir(target).map_err(|e| at(target, e))?;
    let mut owners = Vec::new();
    let root = archive.root().map_err(squashfs)?;
    let mut links: HashMap<u32, PathBuf> = HashMap::new();
    let mut dirs: Vec<(PathBuf, Inode)> = Vec::new();
    walk(archive, &root, target, &mut links, &mut dirs, &mut owners)?;
    // Directory modes and times last (children change a directory's mtime), deepest first.
    dirs.push((target.to_path_buf(), root));
    for (path, inode) in dirs.iter().rev() {
        let mode = u32::from(inode.mode) | 0o700;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| at(path, e))?;
        set_mtime(path, inode.mtime);
    }
    let owners = owners
        .into_iter()
        .filter_map(|(p, u, g)| {
            let rel = p.strip_prefix(target).ok()?;
            Some((format!("/{}", rel.display()), u, g))
        })
        .collect();
    Ok(owners)
}

fn walk(
    archive: &Archive,
    dir: &Inode,
    host_dir: &Path,
    links: &mut HashMap<u32, PathBuf>,
    dirs: &mut Vec<(PathBuf, Inode)>,
    owners: &mut Vec<(PathBuf, u32, u32)>,
) -> Result<()> {
    for entry in archive.read_dir(dir).map_err(squashfs)? {
        let name = std::ffi::OsStr::from_bytes(&entry.name);
        if entry.name.contains(&b'/') || entry.name == b"." || entry.name == b".." {
            return Err(Error::Config(format!(
                "unsafe name {:?} in {}",
                name,
                host_dir.display()
            )));
        }
        let path = host_dir.join(name);
        let inode = archive.inode(entry.inode_ref).map_err(squashfs)?;
        if inode.uid != 0 || inode.gid != 0 {
            owners.push((path.clone(), inode.uid, inode.gid));
        }
        if inode.kind != FileKind::Directory && inode.nlink > 1 {
            if let Some(first) = links.get(&inode.number) {
                fs::hard_link(first, &path).map_err(|e| at(&path, e))?;
                continue;
            }
            links.insert(inode.number, path.clone());
        }
        match inode.kind {
            FileKind::Directory => {
                fs::create_dir(&path).map_err(|e| at(&path, e))?;
                walk(archive, &inode, &path, links, dirs, owners)?;
                dirs.push((path, inode));
            }
            FileKind::Symlink => {
                let target = archive.read_link(&inode).map_err(squashfs)?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), &path)
                    .map_err(|e| at(&path, e))?;
            }
            FileKind::File => {
                write_file(archive, &inode, &path)?;
                set_mtime(&path, inode.mtime);
            }
            _ => {
                // Devices, fifos and sockets: an empty placeholder (mknod needs privileges).
                write_placeholder(&path, inode.mode)?;
            }
        }
    }
    Ok(())
}

fn write_file(archive: &Archive, inode: &Inode, path: &Path) -> Result<()> {
    let mut out = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(u32::from(inode.mode) | 0o600)
        .open(path)
        .map_err(|e| at(path, e))?;
    let mut buf = vec![0u8; 1 << 17];
    let mut offset = 0u64;
    while offset < inode.size {
        let n = archive.read_at(inode, offset, &mut buf).map_err(squashfs)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(|e| at(path, e))?;
        offset += n as u64;
    }
    // The image's mode exactly (the umask and the write bit needed above do not stay;
    // setuid/setgid bits survive only through an explicit chmod).
    fs::set_permissions(path, fs::Permissions::from_mode(u32::from(inode.mode)))
        .map_err(|e| at(path, e))
}

fn write_placeholder(path: &Path, mode: u16) -> Result<()> {
    File::options()
        .write(true)
        .create_new(true)
        .mode(u32::from(mode) | 0o600)
        .open(path)
        .map(drop)
        .map_err(|e| at(path, e))
}

fn set_mtime(path: &Path, mtime: u32) {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(mtime));
    if let Ok(f) = File::options()
        .write(true)
        .open(path)
        .or_else(|_| File::open(path))
    {
        let _ = f.set_modified(time);
    }
}

fn at(path: &Path, e: io::Error) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn squashfs(e: crate::squashfs::Error) -> Error {
    Error::Config(format!("reading the image: {e}"))
}
