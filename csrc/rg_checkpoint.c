/*
 * rg_checkpoint.c - sectioned, checksummed files written atomically
 * (layout in rg_checkpoint.h).
 */
#define _POSIX_C_SOURCE 200809L

#include "rg_checkpoint.h"
#include "rg_io.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_FORMAT 1u
#define CKPT_BYTE_ORDER 0x01020304u
static const char ckpt_magic[8] = {'R', 'G', 'C', 'K', 'P', 'T', 0, 0};

/* ------------------------------------------------------------------------ */
/* hash                                                                      */
/* ------------------------------------------------------------------------ */

/* Odd multipliers (golden ratio and SplitMix64's), so each multiply is a bijection. */
#define H_K1 0x9E3779B97F4A7C15ull
#define H_K2 0xBF58476D1CE4E5B9ull
#define H_K3 0x94D049BB133111EBull

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t load64(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    return w;
}

/* Injective in w for a fixed acc, bijective in acc for a fixed w. */
static inline uint64_t lane_round(uint64_t acc, uint64_t w) { return rotl64(acc + w * H_K2, 31) * H_K1; }

uint64_t rg_hash64(const void *data, size_t n, uint64_t seed)
{
    const unsigned char *p = data;
    size_t i = 0;
    uint64_t h;
    if (n >= 32) {
        uint64_t l0 = seed + H_K1 + H_K2, l1 = seed + H_K2, l2 = seed, l3 = seed - H_K1;
        for (; i + 32 <= n; i += 32) {
            l0 = lane_round(l0, load64(p + i));
            l1 = lane_round(l1, load64(p + i + 8));
            l2 = lane_round(l2, load64(p + i + 16));
            l3 = lane_round(l3, load64(p + i + 24));
        }
        h = rotl64(l0, 1) + rotl64(l1, 7) + rotl64(l2, 12) + rotl64(l3, 18);
    } else {
        h = seed + H_K3;
    }
    for (; i + 8 <= n; i += 8)
        h = rotl64(h ^ lane_round(0, load64(p + i)), 27) * H_K1 + H_K3;
    for (; i < n; i++)
        h = rotl64(h ^ ((uint64_t)p[i] * H_K3), 11) * H_K1;
    h ^= (uint64_t)n;
    h ^= h >> 33;
    h *= H_K2;
    h ^= h >> 29;
    h *= H_K3;
    h ^= h >> 32;
    return h;
}

/* ------------------------------------------------------------------------ */
/* helpers                                                                   */
/* ------------------------------------------------------------------------ */

static void set_message(char *message, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void set_message(char *message, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(message, RG_CKPT_MESSAGE_LEN, format, args);
    va_end(args);
}

static char *copy_string(const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = malloc(n);
    if (copy != NULL)
        memcpy(copy, s, n);
    return copy;
}

/* The directory part of a path ("." when there is none). */
static char *directory_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (slash == NULL)
        return copy_string(".");
    size_t n = slash == path ? 1 : (size_t)(slash - path);
    char *dir = malloc(n + 1);
    if (dir != NULL) {
        memcpy(dir, path, n);
        dir[n] = 0;
    }
    return dir;
}

static void tag_copy(char out[RG_CKPT_TAG_LEN], const char *tag)
{
    memset(out, 0, RG_CKPT_TAG_LEN);
    size_t n = strlen(tag);
    memcpy(out, tag, n < RG_CKPT_TAG_LEN ? n : RG_CKPT_TAG_LEN);
}

/* ------------------------------------------------------------------------ */
/* writer                                                                    */
/* ------------------------------------------------------------------------ */

rg_status rg_ckpt_writer_open(rg_ckpt_writer *w, const char *path, uint32_t kind)
{
    if (w == NULL)
        return RG_ERR_INVALID_ARG;
    memset(w, 0, sizeof(*w));
    w->fd = -1;
    if (path == NULL || path[0] == 0) {
        set_message(w->message, "checkpoint: empty path");
        return RG_ERR_INVALID_ARG;
    }
    w->path = copy_string(path);
    char *dir = directory_of(path);
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    size_t n = strlen(dir) + strlen(base) + 16;
    w->tmp_path = malloc(n);
    if (w->path == NULL || dir == NULL || w->tmp_path == NULL) {
        free(dir);
        rg_ckpt_writer_abort(w);
        return RG_ERR_NOMEM;
    }
    /* same directory, so the rename stays on one file system and is atomic */
    snprintf(w->tmp_path, n, "%s/.%s.XXXXXX", dir, base);
    free(dir);
    w->fd = mkstemp(w->tmp_path); /* O_CREAT | O_EXCL, random suffix, mode 0600 */
    if (w->fd < 0) {
        set_message(w->message, "%s: cannot create a temporary file beside it (%s)", path, strerror(errno));
        free(w->tmp_path);
        w->tmp_path = NULL; /* nothing to unlink */
        rg_ckpt_writer_abort(w);
        return RG_ERR_IO;
    }
    (void)fchmod(w->fd, 0644); /* what an ordinary file gets under the usual umask */
    unsigned char header[32] = {0};
    uint32_t fields[4] = {CKPT_FORMAT, kind, CKPT_BYTE_ORDER, 0};
    memcpy(header, ckpt_magic, 8);
    memcpy(header + 8, fields, 16);
    uint64_t h = rg_hash64(header, 24, 0);
    memcpy(header + 24, &h, 8);
    if (rg_io_write_all(w->fd, header, sizeof(header)) != 0) {
        set_message(w->message, "%s: cannot write (%s)", w->tmp_path, strerror(errno));
        rg_ckpt_writer_abort(w);
        return RG_ERR_IO;
    }
    return RG_OK;
}

rg_status rg_ckpt_writer_section(rg_ckpt_writer *w, const char *tag, const void *data, size_t bytes)
{
    if (w == NULL || w->fd < 0 || tag == NULL || strlen(tag) > RG_CKPT_TAG_LEN || (data == NULL && bytes > 0))
        return RG_ERR_INVALID_ARG;
    unsigned char header[32];
    tag_copy((char *)header, tag);
    uint64_t size = bytes, payload_hash = rg_hash64(data == NULL ? "" : data, bytes, 0);
    memcpy(header + 8, &size, 8);
    memcpy(header + 16, &payload_hash, 8);
    uint64_t h = rg_hash64(header, 24, 0);
    memcpy(header + 24, &h, 8);
    if (rg_io_write_all(w->fd, header, sizeof(header)) != 0 || (bytes > 0 && rg_io_write_all(w->fd, data, bytes) != 0)) {
        set_message(w->message, "%s: cannot write section %s (%s)", w->path, tag, strerror(errno));
        rg_ckpt_writer_abort(w);
        return RG_ERR_IO;
    }
    return RG_OK;
}

rg_status rg_ckpt_writer_commit(rg_ckpt_writer *w)
{
    if (w == NULL || w->fd < 0)
        return RG_ERR_INVALID_ARG;
    RG_TRY(rg_ckpt_writer_section(w, "END", NULL, 0));
    if (fsync(w->fd) != 0) {
        set_message(w->message, "%s: fsync failed (%s)", w->tmp_path, strerror(errno));
        rg_ckpt_writer_abort(w);
        return RG_ERR_IO;
    }
    int closed = close(w->fd);
    w->fd = -1;
    if (closed != 0 || rename(w->tmp_path, w->path) != 0) {
        set_message(w->message, "%s: cannot move the temporary file into place (%s)", w->path, strerror(errno));
        rg_ckpt_writer_abort(w);
        return RG_ERR_IO;
    }
    /* the rename is durable only once the directory entry is on disk */
    char *dir = directory_of(w->path);
    rg_status status = RG_OK;
    if (dir != NULL) {
        int dfd = open(dir, O_RDONLY | O_DIRECTORY);
        if (dfd < 0 || fsync(dfd) != 0) {
            set_message(w->message, "%s: cannot sync the directory (%s)", dir, strerror(errno));
            status = RG_ERR_IO;
        }
        if (dfd >= 0)
            close(dfd);
        free(dir);
    }
    free(w->tmp_path);
    w->tmp_path = NULL; /* renamed: nothing to remove */
    rg_ckpt_writer_abort(w);
    return status;
}

void rg_ckpt_writer_abort(rg_ckpt_writer *w)
{
    if (w == NULL)
        return;
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    if (w->tmp_path != NULL)
        unlink(w->tmp_path);
    free(w->tmp_path);
    free(w->path);
    w->tmp_path = NULL;
    w->path = NULL;
}

/* ------------------------------------------------------------------------ */
/* reader                                                                    */
/* ------------------------------------------------------------------------ */

rg_status rg_ckpt_reader_open(rg_ckpt_reader *r, const char *path, uint32_t expected_kind)
{
    if (r == NULL)
        return RG_ERR_INVALID_ARG;
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    if (path == NULL)
        return RG_ERR_INVALID_ARG;
    r->path = copy_string(path);
    if (r->path == NULL)
        return RG_ERR_NOMEM;
    r->fd = open(path, O_RDONLY);
    if (r->fd < 0) {
        set_message(r->message, "%s: cannot open (%s)", path, strerror(errno));
        return RG_ERR_IO;
    }
    unsigned char header[32];
    int got = rg_io_read_all(r->fd, header, sizeof(header));
    if (got < 0) {
        set_message(r->message, "%s: cannot read (%s)", path, strerror(errno));
        return RG_ERR_IO;
    }
    uint64_t h;
    memcpy(&h, header + 24, 8);
    if (got == 0 || memcmp(header, ckpt_magic, 8) != 0) {
        set_message(r->message, "%s: not a reviewgen checkpoint file (bad magic)", path);
        return RG_ERR_CORRUPT;
    }
    if (rg_hash64(header, 24, 0) != h) {
        set_message(r->message, "%s: file header: checksum mismatch", path);
        return RG_ERR_CORRUPT;
    }
    uint32_t fields[4];
    memcpy(fields, header + 8, 16);
    if (fields[2] != CKPT_BYTE_ORDER || fields[0] != CKPT_FORMAT) {
        set_message(r->message, "%s: format %u or byte order not supported by this build", path, fields[0]);
        return RG_ERR_UNSUPPORTED;
    }
    r->kind = fields[1];
    if (expected_kind != 0 && r->kind != expected_kind) {
        set_message(r->message, "%s: a file of kind %u, expected kind %u", path, r->kind, expected_kind);
        return RG_ERR_STATE;
    }
    return RG_OK;
}

rg_status rg_ckpt_reader_next(rg_ckpt_reader *r)
{
    if (r == NULL || r->fd < 0)
        return RG_ERR_INVALID_ARG;
    if (r->payload_pending && r->size > 0) {
        if (lseek(r->fd, (off_t)r->size, SEEK_CUR) < 0) {
            set_message(r->message, "%s: section %s: cannot skip (%s)", r->path, r->tag, strerror(errno));
            return RG_ERR_IO;
        }
    }
    char previous[RG_CKPT_TAG_LEN + 1];
    memcpy(previous, r->tag, sizeof(previous));
    r->payload_pending = 0;
    unsigned char header[32];
    int got = rg_io_read_all(r->fd, header, sizeof(header));
    if (got < 0) {
        set_message(r->message, "%s: cannot read (%s)", r->path, strerror(errno));
        return RG_ERR_IO;
    }
    if (got == 0) {
        set_message(r->message, "%s: the file ends after section %s (truncated)", r->path,
                    previous[0] ? previous : "header");
        return RG_ERR_CORRUPT;
    }
    uint64_t h;
    memcpy(&h, header + 24, 8);
    if (rg_hash64(header, 24, 0) != h) {
        set_message(r->message, "%s: the section header after %s: checksum mismatch", r->path,
                    previous[0] ? previous : "the file header");
        return RG_ERR_CORRUPT;
    }
    memcpy(r->tag, header, RG_CKPT_TAG_LEN);
    r->tag[RG_CKPT_TAG_LEN] = 0;
    memcpy(&r->size, header + 8, 8);
    memcpy(&r->hash, header + 16, 8);
    r->payload_pending = 1;
    return RG_OK;
}

rg_status rg_ckpt_reader_payload(rg_ckpt_reader *r, void *dst, size_t bytes)
{
    if (r == NULL || r->fd < 0 || !r->payload_pending || (dst == NULL && bytes > 0))
        return RG_ERR_INVALID_ARG;
    if (bytes != r->size) {
        set_message(r->message, "%s: section %s holds %llu bytes, expected %zu", r->path, r->tag,
                    (unsigned long long)r->size, bytes);
        return RG_ERR_SHAPE;
    }
    r->payload_pending = 0;
    int got = bytes > 0 ? rg_io_read_all(r->fd, dst, bytes) : 1;
    if (got < 0) {
        set_message(r->message, "%s: section %s: cannot read (%s)", r->path, r->tag, strerror(errno));
        return RG_ERR_IO;
    }
    if (got == 0) {
        set_message(r->message, "%s: section %s: the file ends inside it (truncated)", r->path, r->tag);
        return RG_ERR_CORRUPT;
    }
    if (rg_hash64(bytes > 0 ? dst : "", bytes, 0) != r->hash) {
        set_message(r->message, "%s: section %s: checksum mismatch", r->path, r->tag);
        return RG_ERR_CORRUPT;
    }
    return RG_OK;
}

rg_status rg_ckpt_reader_expect(rg_ckpt_reader *r, const char *tag, void *dst, size_t bytes)
{
    RG_TRY(rg_ckpt_reader_next(r));
    char want[RG_CKPT_TAG_LEN + 1] = {0};
    tag_copy(want, tag);
    if (memcmp(want, r->tag, RG_CKPT_TAG_LEN) != 0) {
        set_message(r->message, "%s: expected section %s, found %s", r->path, tag, r->tag);
        return RG_ERR_CORRUPT;
    }
    return rg_ckpt_reader_payload(r, dst, bytes);
}

void rg_ckpt_reader_close(rg_ckpt_reader *r)
{
    if (r == NULL)
        return;
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    free(r->path);
    r->path = NULL;
}
