/*
 * rg_cuda_loader.c - the core's CUDA entry points, forwarding to the CUDA
 * library (rg_cuda_backend.h) that is opened with dlopen on first use.
 */
#define _GNU_SOURCE
#include "rg_cuda.h"
#include "rg_cuda_backend.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t loader_lock = PTHREAD_MUTEX_INITIALIZER;
static char *library_path;                 /* owned; NULL: none known */
static int load_tried;                     /* the path below was tried */
static void *library_handle;
static const rg_cuda_backend *backend;     /* non-NULL once loaded */
static char load_error[512];

rg_status rg_cuda_set_library(const char *path)
{
    char *copy = NULL;
    if (path != NULL && (copy = strdup(path)) == NULL)
        return RG_ERR_NOMEM;
    pthread_mutex_lock(&loader_lock);
    if (backend != NULL) {
        /* A loaded library stays: its kernels may already back a model. */
        pthread_mutex_unlock(&loader_lock);
        free(copy);
        return RG_ERR_STATE;
    }
    free(library_path);
    library_path = copy;
    load_tried = 0;
    load_error[0] = 0;
    pthread_mutex_unlock(&loader_lock);
    return RG_OK;
}

int rg_cuda_compiled(void)
{
    pthread_mutex_lock(&loader_lock);
    int found = library_path != NULL && access(library_path, R_OK) == 0;
    pthread_mutex_unlock(&loader_lock);
    return found;
}

const char *rg_cuda_load_error(void)
{
    return load_error;
}

/* The loaded table, opening the library on the first call; NULL when there
 * is none (load_error says why when a library was there but failed). */
static const rg_cuda_backend *backend_get(void)
{
    pthread_mutex_lock(&loader_lock);
    if (backend == NULL && !load_tried && library_path != NULL) {
        load_tried = 1;
        void *handle = dlopen(library_path, RTLD_NOW | RTLD_LOCAL);
        if (handle == NULL) {
            const char *why = dlerror();
            snprintf(load_error, sizeof(load_error), "%s", why ? why : "dlopen failed");
        } else {
            rg_cuda_backend_entry entry;
            /* POSIX's sanctioned way to turn dlsym's void * into a function pointer. */
            *(void **)(&entry) = dlsym(handle, RG_CUDA_BACKEND_SYMBOL);
            const rg_cuda_backend *table = entry ? entry() : NULL;
            if (table == NULL || table->abi != RG_CUDA_BACKEND_ABI) {
                snprintf(load_error, sizeof(load_error), "%s: no %s of ABI %d", library_path,
                         RG_CUDA_BACKEND_SYMBOL, RG_CUDA_BACKEND_ABI);
                dlclose(handle);
            } else {
                library_handle = handle;
                backend = table;
            }
        }
    }
    const rg_cuda_backend *result = backend;
    pthread_mutex_unlock(&loader_lock);
    return result;
}

int rg_cuda_device_count(void)
{
    const rg_cuda_backend *b = backend_get();
    return b ? b->device_count() : 0;
}

/* Without a library the answer is "not built"; with one that failed to
 * load, a CUDA error. */
static rg_status missing_backend(void)
{
    return rg_cuda_compiled() ? RG_ERR_CUDA : RG_ERR_UNSUPPORTED;
}

rg_status rg_cuda_axpy(float a, const float *x, const float *y, float *out, int64_t n)
{
    const rg_cuda_backend *b = backend_get();
    return b ? b->axpy(a, x, y, out, n) : missing_backend();
}

rg_status rg_cuda_cublaslt_probe(void)
{
    const rg_cuda_backend *b = backend_get();
    return b ? b->cublaslt_probe() : missing_backend();
}

const rg_ops_table *rg_cuda_ops_table(void)
{
    const rg_cuda_backend *b = backend_get();
    return b ? b->ops_table() : NULL;
}

rg_status rg_cuda_malloc(void **ptr, size_t bytes)
{
    if (ptr != NULL)
        *ptr = NULL;
    const rg_cuda_backend *b = backend_get();
    return b ? b->malloc(ptr, bytes) : missing_backend();
}

void rg_cuda_free(void *ptr)
{
    const rg_cuda_backend *b = backend_get();
    if (b != NULL)
        b->free(ptr);
}

rg_status rg_cuda_memcpy(void *dst, const void *src, size_t bytes, int kind)
{
    const rg_cuda_backend *b = backend_get();
    return b ? b->memcpy(dst, src, bytes, kind) : missing_backend();
}

rg_status rg_cuda_memset(void *dst, int value, size_t bytes)
{
    const rg_cuda_backend *b = backend_get();
    return b ? b->memset(dst, value, bytes) : missing_backend();
}

rg_status rg_cuda_synchronize(void)
{
    const rg_cuda_backend *b = backend_get();
    return b ? b->synchronize() : missing_backend();
}

const char *rg_cuda_last_error(void)
{
    const rg_cuda_backend *b = backend_get();
    return b ? b->last_error() : "";
}

rg_status rg_cuda_adamw_update(float *p, float *g, float *m, float *v, size_t n, int decay,
                               const rg_adamw_factors *f)
{
    const rg_cuda_backend *b = backend_get();
    if (b == NULL)
        return missing_backend();
    if (f == NULL || (n > 0 && (p == NULL || g == NULL || m == NULL || v == NULL)))
        return RG_ERR_INVALID_ARG;
    b->adamw_update(p, g, m, v, n, decay, f);
    return RG_OK;
}

rg_status rg_cuda_sum_squares(const float *x, size_t n, double *out)
{
    const rg_cuda_backend *b = backend_get();
    return b ? b->sum_squares(x, n, out) : missing_backend();
}
