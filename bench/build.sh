#!/usr/bin/env bash
# bench/build.sh: the Dockerfile build of the Python+numpy image (definitions/python-numpy.Dockerfile
# plus one last `RUN echo MARKER > /last-step`) with rsing and with Charliecloud's `ch-image build`
# side by side, as an unprivileged user, from the same local Debian base
# (/var/cache/rsing-test/debian, made by tests/services/debian-base.sh; only the Debian packages
# come from the network):
#   cold:      empty build cache. rsing converts the OCI base itself; for ch-image the time of
#              `ch-image import` of the same base (unpacked by umoci) is added, and shown apart.
#   last-step: the cache is warm and only the last RUN changed (its marker).
# Each case runs RUNS times (fresh caches per run); prints medians and ch-image/rsing ratios.
#
#   sudo RUNS=5 bench/build.sh
#
# Environment: RUNS (3), BENCH_USER (rsingtest), RSING (target/release/rsing),
# USERNS_MODE (rsing's --userns-mode, auto), CH_INSTALL=1 to `apt-get install` Charliecloud
# (charliecloud-builders pulls in docker.io and buildah, ~300 MB, so it is not in install-deps)
# when ch-image is missing; without it the ch-image half is skipped, saying so.
# ch-image 0.31 (Debian 12) builds with `--force` (its fakeroot workarounds: it installs
# `pseudo` in the image first); `--force=seccomp` exists only from 0.32 on.
set -euo pipefail
RUNS=${RUNS:-3}
BENCH_USER=${BENCH_USER:-rsingtest}
USERNS_MODE=${USERNS_MODE:-auto}
root=$(cd "$(dirname "$0")/.." && pwd)
RSING=${RSING:-$root/target/release/rsing}
base=/var/cache/rsing-test/debian
say() { echo "bench/build.sh: $*" >&2; }
[[ $(id -u) == 0 ]] || { say "run as root (it drops to $BENCH_USER): sudo bench/build.sh"; exit 1; }
[[ -f $base/index.json ]] || { say "$base missing: run tests/services/debian-base.sh"; exit 1; }
[[ -x $RSING ]] || { say "$RSING missing: cargo build --release (or set RSING)"; exit 1; }
home=$(getent passwd "$BENCH_USER" | cut -d: -f6)
work=$home/bench-build
rm -rf "$work"; mkdir -p "$work/ctx"
chown -R "$BENCH_USER": "$work"

dockerfile() { # $1: FROM line, $2: marker of the last step
    sed "s|^FROM debian:bookworm-slim|$1|" "$root/definitions/python-numpy.Dockerfile"
    echo "RUN echo $2 > /last-step"
}
put_dockerfile() { dockerfile "$@" >"$work/ctx/Dockerfile"; chown "$BENCH_USER": "$work/ctx/Dockerfile"; }
# ch-image keeps its build cache in git, which refuses to commit without an identity.
as_user() {
    (cd "$work" && runuser -u "$BENCH_USER" -- env -i PATH=/usr/local/bin:/usr/bin:/bin \
        HOME="$home" USER="$BENCH_USER" LANG=C.UTF-8 \
        GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost \
        GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@localhost "$@")
}
# Wall seconds of a command run as the user; its output goes to $work/last.log.
seconds() {
    local s e
    s=$(date +%s.%N)
    as_user "$@" >"$work/last.log" 2>&1 || { say "failed: $*"; tail -20 "$work/last.log" >&2; exit 1; }
    e=$(date +%s.%N)
    echo "$e - $s" | bc
}
median() { sort -n | awk '{a[NR]=$1} END {printf "%.1f", (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ratio() { echo "scale=2; $1 / $2" | bc; }
check() { # $1: what the image's /last-step says, $2: what it must say
    [[ $1 == "$2" ]] || { say "wrong image: /last-step is '$1', expected '$2'"; exit 1; }
}

say "load average: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; RUNS=$RUNS"

# rsing
r_cold=() r_last=()
for i in $(seq "$RUNS"); do
    cache=$work/rsing-cache-$i
    put_dockerfile "FROM oci:$base:bookworm" "run$i"
    r_cold+=("$(seconds env RSING_CACHEDIR="$cache" "$RSING" build -F -q --userns-mode "$USERNS_MODE" "$work/out.sif" "$work/ctx/Dockerfile")")
    check "$(as_user "$RSING" exec "$work/out.sif" cat /last-step)" "run$i"
    put_dockerfile "FROM oci:$base:bookworm" "changed$i"
    r_last+=("$(seconds env RSING_CACHEDIR="$cache" "$RSING" build -F -q --userns-mode "$USERNS_MODE" "$work/out.sif" "$work/ctx/Dockerfile")")
    check "$(as_user "$RSING" exec "$work/out.sif" cat /last-step)" "changed$i"
    say "rsing run $i: cold ${r_cold[-1]} s, last-step ${r_last[-1]} s"
    rm -rf "$cache"
done
rc=$(printf '%s\n' "${r_cold[@]}" | median)
rl=$(printf '%s\n' "${r_last[@]}" | median)

# ch-image
ch_ok=1
if ! as_user ch-image --version >/dev/null 2>&1; then
    if [[ ${CH_INSTALL:-0} == 1 ]]; then
        say "installing Charliecloud (charliecloud-builders, charliecloud)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q charliecloud-builders charliecloud >&2
    fi
    as_user ch-image --version >/dev/null 2>&1 || ch_ok=0
fi
if ((ch_ok)); then
    chv=$(as_user ch-image --version)
    umoci unpack --rootless --image "$base:bookworm" "$work/bundle" >/dev/null
    tar -C "$work/bundle/rootfs" -cf "$work/base.tar" .
    rm -rf "$work/bundle"
    chown -R "$BENCH_USER": "$work"
    c_import=() c_cold=() c_last=()
    for i in $(seq "$RUNS"); do
        st=$work/ch-$i
        c_import+=("$(seconds ch-image -s "$st" import "$work/base.tar" bench-base)")
        put_dockerfile "FROM bench-base" "run$i"
        c_cold+=("$(seconds ch-image -s "$st" build --force -t py -f "$work/ctx/Dockerfile" "$work/ctx")")
        check "$(cat "$st/img/py/last-step")" "run$i"
        put_dockerfile "FROM bench-base" "changed$i"
        c_last+=("$(seconds ch-image -s "$st" build --force -t py -f "$work/ctx/Dockerfile" "$work/ctx")")
        check "$(cat "$st/img/py/last-step")" "changed$i"
        say "ch-image run $i: import ${c_import[-1]} s, cold build ${c_cold[-1]} s, last-step ${c_last[-1]} s"
        rm -rf "$st"
    done
    ci=$(printf '%s\n' "${c_import[@]}" | median)
    cc=$(printf '%s\n' "${c_cold[@]}" | median)
    cl=$(printf '%s\n' "${c_last[@]}" | median)
    ct=$(echo "$ci + $cc" | bc)
fi

echo
echo "Python+numpy Dockerfile, medians of $RUNS runs (seconds)"
printf '%-28s %10s %18s %14s\n' case rsing "ch-image" "ch-image/rsing"
if ((ch_ok)); then
    printf '%-28s %10s %18s %14s\n' "cold (import + build)" "$rc" "$ct ($ci + $cc)" "$(ratio "$ct" "$rc")"
    printf '%-28s %10s %18s %14s\n' "only the last RUN changed" "$rl" "$cl" "$(ratio "$cl" "$rl")"
    echo "(rsing: $("$RSING" --version 2>/dev/null | head -1), --userns-mode $USERNS_MODE; $chv, build --force)"
else
    printf '%-28s %10s %18s\n' "cold" "$rc" "SKIPPED"
    printf '%-28s %10s %18s\n' "only the last RUN changed" "$rl" "SKIPPED"
    echo "ch-image: SKIPPED, not installed or not runnable (CH_INSTALL=1 installs charliecloud-builders)"
fi
rm -rf "$work"
