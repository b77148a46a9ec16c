/* Stub libcuda for rsing's GPU tests: the three driver API calls the probe makes.
 * Built as libcuda.so.<driver version> with SONAME libcuda.so.1 (see ../gpu-stub.sh).
 * cuDeviceGetCount counts /dev/nvidiaN nodes and then applies CUDA_VISIBLE_DEVICES as CUDA
 * does (indices below the count, stopping at the first one that is not), so a container whose
 * CUDA_VISIBLE_DEVICES does not match its /dev sees fewer GPUs, as with the real driver. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#ifndef STUB_CUDA_VERSION
#define STUB_CUDA_VERSION 12040
#endif

typedef int CUresult;
enum { CUDA_SUCCESS = 0, CUDA_ERROR_INVALID_VALUE = 1, CUDA_ERROR_NOT_INITIALIZED = 3 };

static int initialized;

CUresult cuInit(unsigned int flags) {
    (void)flags;
    initialized = 1;
    return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int *version) {
    if (!version) return CUDA_ERROR_INVALID_VALUE;
    *version = STUB_CUDA_VERSION;
    return CUDA_SUCCESS;
}

static int is_gpu_node(const char *name) {
    if (strncmp(name, "nvidia", 6) != 0 || !name[6]) return 0;
    for (const char *p = name + 6; *p; p++)
        if (*p < '0' || *p > '9') return 0;
    return 1;
}

CUresult cuDeviceGetCount(int *count) {
    if (!count) return CUDA_ERROR_INVALID_VALUE;
    if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
    int nodes = 0;
    DIR *dev = opendir("/dev");
    if (dev) {
        struct dirent *e;
        while ((e = readdir(dev)))
            if (is_gpu_node(e->d_name)) nodes++;
        closedir(dev);
    }
    const char *visible = getenv("CUDA_VISIBLE_DEVICES");
    if (!visible) {
        *count = nodes;
        return CUDA_SUCCESS;
    }
    int n = 0;
    char *copy = strdup(visible), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *end;
        long i = strtol(tok, &end, 10);
        if (end == tok || *end || i < 0 || i >= nodes) break;
        n++;
    }
    free(copy);
    *count = n;
    return CUDA_SUCCESS;
}
