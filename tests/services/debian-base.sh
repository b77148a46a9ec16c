#!/bin/bash
# Makes the Debian base image the recipe-build tests start from: a debootstrap minbase of
# bookworm as an OCI layout at /var/cache/rsing-test/debian (tag bookworm), readable by
# everyone. Needs root (debootstrap) and network to deb.debian.org; run by install-deps, once.
# The tests then install packages into it from deb.debian.org as the unprivileged user.
set -euo pipefail
dest=/var/cache/rsing-test/debian
[[ -f $dest/index.json ]] && exit 0
work=$(mktemp -d /var/tmp/rsing-debian.XXXXXX)
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase bookworm "$work/root" http://deb.debian.org/debian >"$work/log" 2>&1 ||
    { cat "$work/log" >&2; exit 1; }
rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*_Packages
tar -C "$work/root" --numeric-owner -cf "$work/layer.tar" .
mkdir -p "$(dirname "$dest")"
umoci init --layout "$work/oci"
umoci new --image "$work/oci:bookworm"
umoci raw add-layer --image "$work/oci:bookworm" "$work/layer.tar"
umoci config --image "$work/oci:bookworm" --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --config.cmd /bin/bash
chmod -R a+rX "$work/oci"
mv "$work/oci" "$dest"
