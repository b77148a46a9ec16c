#!/usr/bin/env bash
# A stub NVIDIA driver for the GPU tests (tests/gpu.rs), on a machine without a GPU.
#   gpu-stub.sh start SCRATCH TEST_USER RSING_BIN   build it (as root), print KEY=VALUE lines
#   gpu-stub.sh env SCRATCH                         print the KEY=VALUE lines of a built one
#   gpu-stub.sh stop SCRATCH ...                    remove it
# The tree, $SCRATCH/gpu-stub, is laid out like a driver root (rsing.conf `nvidia root`):
#   usr/lib/<multiarch>/  libcuda.so.550.54.15 (SONAME libcuda.so.1), libnvidia-ml.so.550.54.15
#                         (SONAME libnvidia-ml.so.1), and a decoy of another version,
#                         libnvidia-ptxjitcompiler.so.470.1, that must never be injected
#   opt/old-driver/       libcuda.so.470.1 and libnvidia-ml.so.470.1: an older driver's leftovers
#   etc/ld.so.cache       made by ldconfig over both directories
#   usr/bin/nvidia-smi    a shell script printing the stub's version
#   dev/                  nvidiactl, nvidia-modeset, nvidia-uvm, nvidia-uvm-tools, nvidia0..N-1:
#                         character devices made with mknod (major 195; opening them gives ENXIO)
#   rsing.conf            `nvidia root = <the tree>`
# The C sources are in gpu-stub/ next to this script (the unit tests build the same ones).
set -euo pipefail
action=${1:?usage: gpu-stub.sh start|env|stop SCRATCH}
scratch=${2:?scratch dir}
ROOT=$scratch/gpu-stub
VERSION=550.54.15
DECOY=470.1
CUDA_VERSION=12040
GPUS=2
SRC=$(dirname "$(realpath "${BASH_SOURCE[0]}")")/gpu-stub

print_env() {
    local count devices=""
    count=$(find "$ROOT/dev" -maxdepth 1 -name 'nvidia[0-9]*' -type c | wc -l)
    for ((i = 0; i < count; i++)); do devices+="${devices:+,}$ROOT/dev/nvidia$i"; done
    echo "RSING_TEST_GPU_ROOT=$ROOT"
    echo "RSING_TEST_GPU_CONF=$ROOT/rsing.conf"
    echo "RSING_TEST_GPU_DRIVER=$VERSION"
    echo "RSING_TEST_GPU_DECOY=$DECOY"
    echo "RSING_TEST_GPU_CUDA=$CUDA_VERSION"
    echo "RSING_TEST_GPU_COUNT=$count"
    echo "RSING_TEST_GPU_DEVICES=$devices"
}

# lib SOURCE DIR NAME VERSION: DIR/NAME.so.VERSION with SONAME NAME.so.1
lib() {
    cc -shared -fPIC -O1 -Wl,-soname,"$3.so.1" \
        -DSTUB_VERSION="\"$4\"" -DSTUB_GPUS=$GPUS -DSTUB_CUDA_VERSION=$CUDA_VERSION \
        -o "$2/$3.so.$4" "$SRC/$1"
}

start() {
    local tool
    for tool in cc ldconfig; do
        command -v "$tool" >/dev/null || { echo "gpu-stub: $tool is missing" >&2; exit 1; }
    done
    local multiarch libdir
    multiarch=$(cc -print-multiarch 2>/dev/null || true)
    libdir=usr/lib/${multiarch:-64}
    rm -rf "$ROOT"
    mkdir -p "$ROOT/$libdir" "$ROOT/opt/old-driver" "$ROOT/usr/bin" "$ROOT/etc" "$ROOT/dev"
    lib cuda.c "$ROOT/$libdir" libcuda "$VERSION"
    lib nvml.c "$ROOT/$libdir" libnvidia-ml "$VERSION"
    lib cuda.c "$ROOT/$libdir" libnvidia-ptxjitcompiler "$DECOY"
    lib cuda.c "$ROOT/opt/old-driver" libcuda "$DECOY"
    lib nvml.c "$ROOT/opt/old-driver" libnvidia-ml "$DECOY"
    printf '/%s\n/opt/old-driver\n' "$libdir" >"$ROOT/etc/ld.so.conf"
    ldconfig -r "$ROOT" -C /etc/ld.so.cache -f /etc/ld.so.conf
    cat >"$ROOT/usr/bin/nvidia-smi" <<SMI
#!/bin/sh
# rsing's stub nvidia-smi: the real one's header line and GPU list, from the stub's facts.
case "\$*" in
*--query-gpu=driver_version*)
    for d in /dev/nvidia[0-9]*; do [ -c "\$d" ] && echo $VERSION; done ;;
-L)
    i=0
    for d in /dev/nvidia[0-9]*; do
        [ -c "\$d" ] || continue
        echo "GPU \$i: rsing stub GPU (UUID: GPU-57ab0000-0000-4000-8000-00000000000\${d#/dev/nvidia})"
        i=\$((i + 1))
    done ;;
*) echo "| NVIDIA-SMI $VERSION    Driver Version: $VERSION    CUDA Version: 12.4 |" ;;
esac
SMI
    chmod 0755 "$ROOT/usr/bin/nvidia-smi"
    # Fake device nodes, where this environment allows mknod (the tests adapt to none).
    if mknod -m 0666 "$ROOT/dev/nvidiactl" c 195 255 2>/dev/null; then
        mknod -m 0666 "$ROOT/dev/nvidia-modeset" c 195 254
        mknod -m 0666 "$ROOT/dev/nvidia-uvm" c 511 0
        mknod -m 0666 "$ROOT/dev/nvidia-uvm-tools" c 511 1
        for ((i = 0; i < GPUS; i++)); do mknod -m 0666 "$ROOT/dev/nvidia$i" c 195 "$i"; done
    else
        echo "gpu-stub: mknod is not allowed here: no fake device nodes" >&2
    fi
    cat >"$ROOT/rsing.conf" <<CONF
# rsing.conf for the stub NVIDIA driver of rsing's tests (tests/services/gpu-stub.sh).
nvidia root = $ROOT
CONF
    chmod -R a+rX "$ROOT"
    print_env
}

case $action in
start) start ;;
env) [[ -f $ROOT/rsing.conf ]] && print_env ;;
stop) rm -rf "$ROOT" ;;
*) echo "gpu-stub: unknown action $action" >&2; exit 2 ;;
esac
