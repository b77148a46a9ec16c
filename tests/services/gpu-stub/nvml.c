/* Stub NVML for rsing's GPU tests: the calls rsing makes through nvml-wrapper (and a few that
 * tools commonly make). Built as libnvidia-ml.so.<driver version> with SONAME
 * libnvidia-ml.so.1; STUB_VERSION and STUB_GPUS come from the compiler command line. */
#include <stdio.h>
#include <string.h>

#ifndef STUB_VERSION
#define STUB_VERSION "550.54.15"
#endif
#ifndef STUB_GPUS
#define STUB_GPUS 2
#endif
#ifndef STUB_CUDA_VERSION
#define STUB_CUDA_VERSION 12040
#endif

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
};
struct stub_gpu { unsigned index; };
typedef struct stub_gpu *nvmlDevice_t;

static struct stub_gpu gpus[STUB_GPUS > 0 ? STUB_GPUS : 1];
static int initialized;

nvmlReturn_t nvmlInit_v2(void) { initialized++; return NVML_SUCCESS; }
nvmlReturn_t nvmlInit(void) { return nvmlInit_v2(); }
nvmlReturn_t nvmlInitWithFlags(unsigned int flags) { (void)flags; return nvmlInit_v2(); }

nvmlReturn_t nvmlShutdown(void) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    initialized--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t r) {
    switch (r) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    default: return "Unknown Error";
    }
}

static nvmlReturn_t copy_out(const char *text, char *buf, unsigned int len) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (!buf) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(text) + 1 > len) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(buf, text);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *buf, unsigned int len) {
    return copy_out(STUB_VERSION, buf, len);
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *buf, unsigned int len) {
    return copy_out("12." STUB_VERSION, buf, len);
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *v) {
    if (!v) return NVML_ERROR_INVALID_ARGUMENT;
    *v = STUB_CUDA_VERSION;
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *v) { return nvmlSystemGetCudaDriverVersion(v); }

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (!count) return NVML_ERROR_INVALID_ARGUMENT;
    *count = STUB_GPUS;
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (!initialized) return NVML_ERROR_UNINITIALIZED;
    if (!device || index >= STUB_GPUS) return NVML_ERROR_INVALID_ARGUMENT;
    gpus[index].index = index;
    *device = &gpus[index];
    return NVML_SUCCESS;
}
nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minor) {
    if (!device || !minor) return NVML_ERROR_INVALID_ARGUMENT;
    *minor = device->index;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *buf, unsigned int len) {
    char uuid[64];
    if (!device) return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(uuid, sizeof uuid, "GPU-57ab0000-0000-4000-8000-%012u", device->index);
    return copy_out(uuid, buf, len);
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *buf, unsigned int len) {
    if (!device) return NVML_ERROR_INVALID_ARGUMENT;
    return copy_out("rsing stub GPU", buf, len);
}
