/* The GPU tests' probe, run inside containers: dlopens libcuda.so.1 as CUDA programs do and
 * prints "cuda DRIVER_VERSION devices COUNT" (or why it could not). Exit 2: no libcuda. */
#include <dlfcn.h>
#include <stdio.h>

typedef int (*init_fn)(unsigned int);
typedef int (*int_fn)(int *);

int main(void) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) {
        printf("no libcuda: %s\n", dlerror());
        return 2;
    }
    init_fn cu_init = (init_fn)dlsym(cuda, "cuInit");
    int_fn version_of = (int_fn)dlsym(cuda, "cuDriverGetVersion");
    int_fn count_of = (int_fn)dlsym(cuda, "cuDeviceGetCount");
    if (!cu_init || !version_of || !count_of) {
        printf("libcuda lacks the driver API\n");
        return 3;
    }
    int version = 0, count = -1;
    if (version_of(&version) != 0) {
        printf("cuDriverGetVersion failed\n");
        return 4;
    }
    int rc = cu_init(0);
    if (rc != 0 || count_of(&count) != 0) count = 0; /* CUDA: no usable device */
    printf("cuda %d devices %d\n", version, count);
    return 0;
}
