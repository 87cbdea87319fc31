/*
 * rg_io.h - file descriptor reads and writes that survive EINTR and short
 * transfers, shared by the checkpoint files and the sweep journal.
 */
#ifndef RG_IO_H
#define RG_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Writes all n bytes: 0, or -1 on an error (errno set). */
int rg_io_write_all(int fd, const void *data, size_t n);

/* Reads n bytes from the current offset: 1 when all were read, 0 when the
 * file ended first, -1 on an error. */
int rg_io_read_all(int fd, void *data, size_t n);

/* The same at offset `at`, leaving the file offset alone (pread). */
int rg_io_read_at(int fd, void *data, size_t n, off_t at);

/* A malloc'ed copy of n int32s (n may be 0), or NULL when out of memory. */
int32_t *rg_ints_dup(const int32_t *src, size_t n);

#endif /* RG_IO_H */
