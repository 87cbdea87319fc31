/*
 * rg_checkpoint.h - checksummed, atomically written binary files made of
 * tagged sections (trainer checkpoints, sweep journals).
 *
 * File layout (native byte order; a marker refuses files of the other one):
 *   header  (32 bytes): magic "RGCKPT\0\0", u32 format (1), u32 kind,
 *                       u32 byte-order marker 0x01020304, u32 0,
 *                       u64 rg_hash64 of the 24 bytes before it
 *   section (32 bytes + payload), repeated:
 *                       char tag[8] (NUL-padded), u64 payload bytes,
 *                       u64 rg_hash64 of the payload,
 *                       u64 rg_hash64 of the 24 bytes before it
 *   a last section tagged "END" with no payload: a file without it was cut.
 *
 * Writing is atomic: rg_ckpt_writer_open creates a temporary file in the
 * destination's directory (mkstemp: O_EXCL, unpredictable name), sections are
 * written to it, and rg_ckpt_writer_commit fsyncs it, renames it onto the
 * destination and fsyncs the directory. Until the commit the previous file
 * at the destination is untouched; on any failure (or rg_ckpt_writer_abort)
 * the temporary file is removed.
 *
 * Every failure sets a message naming the file and the section
 * (rg_ckpt_reader.message / rg_ckpt_writer.message).
 */
#ifndef RG_CHECKPOINT_H
#define RG_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "rg_common.h"

#define RG_CKPT_TAG_LEN 8
#define RG_CKPT_MESSAGE_LEN 320

/* Kinds of file, so that one kind is never read as another. */
enum { RG_CKPT_KIND_TRAINER = 1, RG_CKPT_KIND_SWEEP_JOURNAL = 2 };

/* A 64-bit hash of n bytes: four multiply-rotate lanes over 32-byte stripes,
 * then words, then bytes, then an avalanche. Every step is a bijection of the
 * running state for fixed input, and injective in the input word for a fixed
 * state, so changing any single byte (or aligned 8-byte word) always changes
 * the result. Not cryptographic: it detects damage, not tampering. */
uint64_t rg_hash64(const void *data /* (n,) bytes */, size_t n, uint64_t seed);

typedef struct rg_ckpt_writer {
    int fd;               /* the temporary file, -1 when closed */
    char *path;           /* destination */
    char *tmp_path;       /* the temporary file */
    char message[RG_CKPT_MESSAGE_LEN];
} rg_ckpt_writer;

/* Creates the temporary file beside `path` and writes the header.
 * RG_ERR_IO when the directory is not writable. */
rg_status rg_ckpt_writer_open(rg_ckpt_writer *w, const char *path, uint32_t kind);
/* Appends one section. tag: at most 8 characters. data may be NULL when bytes = 0. */
rg_status rg_ckpt_writer_section(rg_ckpt_writer *w, const char *tag, const void *data, size_t bytes);
/* Writes the END section, fsyncs, renames onto the destination, fsyncs the
 * directory, and frees the writer. On failure the temporary file is removed. */
rg_status rg_ckpt_writer_commit(rg_ckpt_writer *w);
/* Closes and removes the temporary file; frees the writer. Safe to call twice. */
void rg_ckpt_writer_abort(rg_ckpt_writer *w);

typedef struct rg_ckpt_reader {
    int fd;
    char *path;
    uint32_t kind;
    char tag[RG_CKPT_TAG_LEN + 1]; /* the current section, NUL-terminated */
    uint64_t size;                 /* its payload bytes */
    uint64_t hash;                 /* its recorded payload hash */
    int payload_pending;           /* the payload of the current section is not read yet */
    char message[RG_CKPT_MESSAGE_LEN];
} rg_ckpt_reader;

/* Opens a file and checks its header. RG_ERR_IO (cannot open), RG_ERR_CORRUPT
 * (bad magic or header checksum), RG_ERR_UNSUPPORTED (another format version
 * or byte order), RG_ERR_STATE (a file of another kind). */
rg_status rg_ckpt_reader_open(rg_ckpt_reader *r, const char *path, uint32_t expected_kind);
/* Reads the next section header (skipping the payload of the current one if
 * it was not read). Fills r->tag and r->size. RG_ERR_CORRUPT when the header
 * is damaged or the file ends; the END section is returned like any other. */
rg_status rg_ckpt_reader_next(rg_ckpt_reader *r);
/* Reads the current section's payload into dst (exactly r->size bytes) and
 * checks its hash: RG_ERR_CORRUPT "section X: checksum mismatch". */
rg_status rg_ckpt_reader_payload(rg_ckpt_reader *r, void *dst, size_t bytes);
/* rg_ckpt_reader_next, then require `tag` and `bytes`, then the payload.
 * RG_ERR_CORRUPT names the section that was found instead, RG_ERR_SHAPE
 * when its size differs from `bytes`. */
rg_status rg_ckpt_reader_expect(rg_ckpt_reader *r, const char *tag, void *dst, size_t bytes);
void rg_ckpt_reader_close(rg_ckpt_reader *r);

#endif /* RG_CHECKPOINT_H */
