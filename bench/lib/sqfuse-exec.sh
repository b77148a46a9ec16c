#!/bin/sh
# usage: sqfuse-exec.sh IMG.sqfs MNT CMD [ARGS...]
# Mount IMG with squashfuse_ll (as the calling user, via setuid fusermount3),
# run CMD, unmount, and return CMD's exit status.  Used by bench/run so the
# squashfuse_ll contender pays for its mount and unmount on every run, as rsing
# and ch-run do.  The mount is undone even when CMD is interrupted.
img=$1 mnt=$2
shift 2
squashfuse_ll "$img" "$mnt" || exit 125
trap 'fusermount3 -u -z "$mnt" 2>/dev/null; exit 130' INT TERM HUP
"$@"
rc=$?
trap - INT TERM HUP
fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt"
exit $rc
