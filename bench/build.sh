#!/usr/bin/env bash
# bench/build.sh: Dockerfile builds of the Python+numpy image (definitions/python-numpy.Dockerfile)
# with rsing and, when installed, Charliecloud's ch-image (package charliecloud-builders), from
# the same local Debian base (tests/services/debian-base.sh), as an unprivileged user:
#   cold: empty build cache;  last-step: the cache is warm and only the last RUN changed.
# Prints the median wall time of each case. Needs network to deb.debian.org.
#
#   sudo BENCH_USER=rsingtest RUNS=3 bench/build.sh
set -euo pipefail
RUNS=${RUNS:-3}
BENCH_USER=${BENCH_USER:-rsingtest}
root=$(cd "$(dirname "$0")/.." && pwd)
RSING=${RSING:-$root/target/release/rsing}
base=/var/cache/rsing-test/debian
[[ -f $base/index.json ]] || { echo "bench/build.sh: $base missing: run tests/services/debian-base.sh" >&2; exit 1; }
home=$(getent passwd "$BENCH_USER" | cut -d: -f6)
work=$home/bench-build
rm -rf "$work"; mkdir -p "$work/ctx"
dockerfile() { # $1: FROM line, $2: marker of the last step
    sed "s|^FROM debian:bookworm-slim|$1|" "$root/definitions/python-numpy.Dockerfile"
    echo "RUN echo $2 > /last-step"
}
as_user() { runuser -u "$BENCH_USER" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$home" "$@"; }
seconds() { local s; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; echo "$(date +%s.%N) - $s" | bc; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
chown -R "$BENCH_USER": "$work"

cold=() last=()
for i in $(seq "$RUNS"); do
    dockerfile "FROM oci:$base:bookworm" "run$i" >"$work/ctx/Dockerfile"; chown "$BENCH_USER": "$work/ctx/Dockerfile"
    cold+=("$(seconds as_user RSING_CACHEDIR="$work/cache-$i" "$RSING" build -F -q "$work/out.sif" "$work/ctx/Dockerfile")")
    dockerfile "FROM oci:$base:bookworm" "changed$i" >"$work/ctx/Dockerfile"
    last+=("$(seconds as_user RSING_CACHEDIR="$work/cache-$i" "$RSING" build -F -q "$work/out.sif" "$work/ctx/Dockerfile")")
    rm -rf "$work/cache-$i"
done
echo "rsing    cold $(printf '%s\n' "${cold[@]}" | median) s   last-step $(printf '%s\n' "${last[@]}" | median) s   (median of $RUNS)"

if command -v ch-image >/dev/null; then
    umoci unpack --rootless --image "$base:bookworm" "$work/bundle" >/dev/null
    tar -C "$work/bundle/rootfs" -cf "$work/base.tar" .
    chown -R "$BENCH_USER": "$work"
    cold=() last=()
    for i in $(seq "$RUNS"); do
        export CH_IMAGE_STORAGE=$work/ch-$i
        as_user CH_IMAGE_STORAGE="$work/ch-$i" ch-image import "$work/base.tar" bench-base >/dev/null 2>&1
        dockerfile "FROM bench-base" "run$i" >"$work/ctx/Dockerfile"; chown "$BENCH_USER": "$work/ctx/Dockerfile"
        cold+=("$(seconds as_user CH_IMAGE_STORAGE="$work/ch-$i" ch-image build --force=seccomp -t py -f "$work/ctx/Dockerfile" "$work/ctx")")
        dockerfile "FROM bench-base" "changed$i" >"$work/ctx/Dockerfile"
        last+=("$(seconds as_user CH_IMAGE_STORAGE="$work/ch-$i" ch-image build --force=seccomp -t py -f "$work/ctx/Dockerfile" "$work/ctx")")
        rm -rf "$work/ch-$i"
    done
    echo "ch-image cold $(printf '%s\n' "${cold[@]}" | median) s   last-step $(printf '%s\n' "${last[@]}" | median) s   (median of $RUNS)"
else
    echo "ch-image: not installed (apt-get install charliecloud-builders)"
fi
