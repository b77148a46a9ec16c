# Lists a tree as JSON lines, one entry each: path, type, mode bits, owner, size, link count,
# mtime, symlink target, extended attributes and the sha256 of regular files. The matrix test
# runs it on the host over unsquashfs's extraction and inside a container over rsing's FUSE
# view of the same image, then compares the two. Only the standard library is used: inside
# the container it runs as the host's python3, through the host's dynamic loader.
import hashlib, json, os, stat, sys

root = sys.argv[1]

def entry(path):
    st = os.lstat(path)
    kind = stat.S_IFMT(st.st_mode)
    e = {"mode": oct(stat.S_IMODE(st.st_mode)), "uid": st.st_uid, "gid": st.st_gid}
    names = {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink",
             stat.S_IFIFO: "fifo", stat.S_IFCHR: "chr", stat.S_IFBLK: "blk", stat.S_IFSOCK: "sock"}
    e["type"] = names.get(kind, "?")
    if kind != stat.S_IFDIR:
        e["nlink"] = st.st_nlink
        e["size"] = st.st_size
    if kind != stat.S_IFLNK:
        e["mtime"] = int(st.st_mtime)
        xattrs = {}
        for name in sorted(os.listxattr(path, follow_symlinks=False)):
            if name.startswith("user."):
                xattrs[name] = os.getxattr(path, name, follow_symlinks=False).hex()
        e["xattrs"] = xattrs
    if kind == stat.S_IFLNK:
        e["target"] = os.readlink(path)
    if kind == stat.S_IFREG:
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            while True:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
        e["sha256"] = h.hexdigest()
    return e

out = sys.stdout
for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    rel_dir = os.path.relpath(dirpath, root)
    for name in [None] + sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
        path = dirpath if name is None else os.path.join(dirpath, name)
        rel = rel_dir if name is None else os.path.normpath(os.path.join(rel_dir, name))
        e = entry(path)
        e["path"] = rel
        out.write(json.dumps(e, sort_keys=True) + "\n")
