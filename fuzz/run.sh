#!/usr/bin/env bash
# Builds the fuzz targets with libFuzzer's coverage instrumentation on the stable toolchain
# and runs one (docs/fuzzing.md):
#   fuzz/run.sh TARGET [SECONDS] [libFuzzer options...]     TARGET: sif squashfs layers manifest siteconf
# Uses `cargo fuzz run TARGET -s none` when cargo-fuzz is installed; otherwise the same
# instrumentation flags by hand (the ones cargo-fuzz passes without a sanitizer), which need
# no nightly compiler. New inputs go to fuzz/corpus/TARGET (only seed-* files are committed),
# crashes to fuzz/artifacts/TARGET; turn each crash into a regular test (docs/fuzzing.md).
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer options...]}
seconds=${2:-600}
shift $(($# < 2 ? $# : 2))
mkdir -p "corpus/$target" "artifacts/$target"
opts=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=262144
    -artifact_prefix="artifacts/$target/" "$@")
if cargo fuzz --version >/dev/null 2>&1; then
    exec cargo fuzz run "$target" -s none "corpus/$target" -- "${opts[@]}"
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
export RUSTFLAGS="${RUSTFLAGS:-} -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps the flags off build scripts and proc macros (as cargo-fuzz does).
triple=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --target "$triple" --bin "$target"
exec "$CARGO_TARGET_DIR/$triple/release/$target" "corpus/$target" "${opts[@]}"
