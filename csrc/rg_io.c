/* rg_io.c - see rg_io.h. */
#define _XOPEN_SOURCE 700
#include "rg_io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One call moves at most 1 GiB: Linux caps a transfer near 2 GiB anyway. */
#define RG_IO_CHUNK ((size_t)1 << 30)

int rg_io_write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t done = write(fd, p, n > RG_IO_CHUNK ? RG_IO_CHUNK : n);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += done;
        n -= (size_t)done;
    }
    return 0;
}

static int read_some(int fd, char *p, size_t n, off_t at, int positioned)
{
    while (n > 0) {
        size_t chunk = n > RG_IO_CHUNK ? RG_IO_CHUNK : n;
        ssize_t done = positioned ? pread(fd, p, chunk, at) : read(fd, p, chunk);
        if (done < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (done == 0)
            return 0;
        p += done;
        n -= (size_t)done;
        at += done;
    }
    return 1;
}

int rg_io_read_all(int fd, void *data, size_t n) { return read_some(fd, data, n, 0, 0); }

int rg_io_read_at(int fd, void *data, size_t n, off_t at) { return read_some(fd, data, n, at, 1); }

int32_t *rg_ints_dup(const int32_t *src, size_t n)
{
    int32_t *dst = malloc((n > 0 ? n : 1) * sizeof(int32_t));
    if (dst != NULL && n > 0)
        memcpy(dst, src, n * sizeof(int32_t));
    return dst;
}
