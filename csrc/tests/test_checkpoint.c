/* test_checkpoint.c - rg_hash64, and the atomic sectioned files of rg_checkpoint.c. */
#include "tiny_model.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "rg_checkpoint.h"
#include "rg_test.h"

void test_checkpoint_hash_sees_every_byte(void)
{
    unsigned char data[131]; /* stripes, words and a byte tail */
    for (int i = 0; i < (int)sizeof(data); i++)
        data[i] = (unsigned char)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof(data); n += 13) {
        const uint64_t base = rg_hash64(data, n, 0);
        int changed = 1;
        for (size_t i = 0; i < n; i++) {
            for (int bit = 0; bit < 8; bit++) {
                data[i] ^= (unsigned char)(1u << bit);
                changed &= rg_hash64(data, n, 0) != base;
                data[i] ^= (unsigned char)(1u << bit);
            }
        }
        RG_CHECK(changed);
        if (n > 0)
            RG_CHECK(rg_hash64(data, n - 1, 0) != base); /* the length counts */
    }
    RG_CHECK(rg_hash64(data, 64, 0) != rg_hash64(data, 64, 1));
}

static int temp_files_left(const char *path)
{
    char dir[512], prefix[512];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    snprintf(prefix, sizeof(prefix), ".%s.", slash + 1);
    DIR *d = opendir(dir);
    int found = 0;
    if (d == NULL)
        return -1;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        found += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return found;
}

static rg_status write_two_sections(const char *path, const float *a, size_t na, const int32_t *b, size_t nb)
{
    rg_ckpt_writer w;
    RG_TRY(rg_ckpt_writer_open(&w, path, RG_CKPT_KIND_TRAINER));
    RG_TRY(rg_ckpt_writer_section(&w, "ALPHA", a, na * sizeof(float)));
    RG_TRY(rg_ckpt_writer_section(&w, "BETA", b, nb * sizeof(int32_t)));
    return rg_ckpt_writer_commit(&w);
}

void test_checkpoint_roundtrip_and_corruption_named(void)
{
    char path[512];
    tiny_temp_path(path, sizeof(path), "sections.bin");
    float a[100];
    int32_t b[7];
    for (int i = 0; i < 100; i++)
        a[i] = 0.25f * (float)i - 3.0f;
    for (int i = 0; i < 7; i++)
        b[i] = i * i;
    if (!RG_CHECK_STATUS(write_two_sections(path, a, 100, b, 7), RG_OK))
        return;
    RG_CHECK_EQ(temp_files_left(path), 0);

    float a2[100];
    int32_t b2[7];
    rg_ckpt_reader r;
    RG_CHECK_STATUS(rg_ckpt_reader_open(&r, path, RG_CKPT_KIND_TRAINER), RG_OK);
    RG_CHECK_STATUS(rg_ckpt_reader_expect(&r, "ALPHA", a2, sizeof(a2)), RG_OK);
    RG_CHECK_STATUS(rg_ckpt_reader_expect(&r, "BETA", b2, sizeof(b2)), RG_OK);
    RG_CHECK_STATUS(rg_ckpt_reader_expect(&r, "END", NULL, 0), RG_OK);
    rg_ckpt_reader_close(&r);
    RG_CHECK(memcmp(a, a2, sizeof(a)) == 0 && memcmp(b, b2, sizeof(b)) == 0);

    /* another kind is refused */
    RG_CHECK_STATUS(rg_ckpt_reader_open(&r, path, RG_CKPT_KIND_SWEEP_JOURNAL), RG_ERR_STATE);
    rg_ckpt_reader_close(&r);

    /* one byte of BETA's payload: header 32 + ALPHA (32 + 400) + BETA header 32 */
    const off_t where = 32 + 32 + 400 + 32 + 5;
    int fd = open(path, O_RDWR);
    unsigned char byte;
    RG_CHECK(pread(fd, &byte, 1, where) == 1);
    byte ^= 0x10;
    RG_CHECK(pwrite(fd, &byte, 1, where) == 1);
    close(fd);
    RG_CHECK_STATUS(rg_ckpt_reader_open(&r, path, RG_CKPT_KIND_TRAINER), RG_OK);
    RG_CHECK_STATUS(rg_ckpt_reader_expect(&r, "ALPHA", a2, sizeof(a2)), RG_OK);
    RG_CHECK_STATUS(rg_ckpt_reader_expect(&r, "BETA", b2, sizeof(b2)), RG_ERR_CORRUPT);
    RG_CHECK(strstr(r.message, "section BETA") != NULL && strstr(r.message, "checksum") != NULL);
    rg_ckpt_reader_close(&r);

    /* a cut file: END missing */
    RG_CHECK_STATUS(write_two_sections(path, a, 100, b, 7), RG_OK);
    RG_CHECK(truncate(path, 32 + 32 + 400 + 32 + 28) == 0);
    RG_CHECK_STATUS(rg_ckpt_reader_open(&r, path, RG_CKPT_KIND_TRAINER), RG_OK);
    RG_CHECK_STATUS(rg_ckpt_reader_expect(&r, "ALPHA", a2, sizeof(a2)), RG_OK);
    RG_CHECK_STATUS(rg_ckpt_reader_expect(&r, "BETA", b2, sizeof(b2)), RG_OK);
    RG_CHECK_STATUS(rg_ckpt_reader_expect(&r, "END", NULL, 0), RG_ERR_CORRUPT);
    RG_CHECK(strstr(r.message, "after section BETA") != NULL);
    rg_ckpt_reader_close(&r);
    /* cut inside BETA's payload */
    RG_CHECK(truncate(path, 32 + 32 + 400 + 32 + 10) == 0);
    RG_CHECK_STATUS(rg_ckpt_reader_open(&r, path, RG_CKPT_KIND_TRAINER), RG_OK);
    RG_CHECK_STATUS(rg_ckpt_reader_expect(&r, "ALPHA", a2, sizeof(a2)), RG_OK);
    RG_CHECK_STATUS(rg_ckpt_reader_expect(&r, "BETA", b2, sizeof(b2)), RG_ERR_CORRUPT);
    RG_CHECK(strstr(r.message, "section BETA") != NULL);
    rg_ckpt_reader_close(&r);
    unlink(path);
}

void test_checkpoint_abort_keeps_previous_file(void)
{
    char path[512];
    tiny_temp_path(path, sizeof(path), "keep.bin");
    float a[4] = {1, 2, 3, 4}, z[4] = {0};
    int32_t b[1] = {9};
    if (!RG_CHECK_STATUS(write_two_sections(path, a, 4, b, 1), RG_OK))
        return;
    rg_ckpt_writer w;
    RG_CHECK_STATUS(rg_ckpt_writer_open(&w, path, RG_CKPT_KIND_TRAINER), RG_OK);
    RG_CHECK_STATUS(rg_ckpt_writer_section(&w, "ALPHA", z, sizeof(z)), RG_OK);
    RG_CHECK_EQ(temp_files_left(path), 1);
    rg_ckpt_writer_abort(&w); /* e.g. the process is stopped mid-write */
    RG_CHECK_EQ(temp_files_left(path), 0);
    float back[4];
    rg_ckpt_reader r;
    RG_CHECK_STATUS(rg_ckpt_reader_open(&r, path, 0), RG_OK);
    RG_CHECK_STATUS(rg_ckpt_reader_expect(&r, "ALPHA", back, sizeof(back)), RG_OK);
    rg_ckpt_reader_close(&r);
    RG_CHECK(memcmp(back, a, sizeof(a)) == 0);
    /* an unwritable place */
    RG_CHECK_STATUS(rg_ckpt_writer_open(&w, "/nonexistent-dir-rg/x.bin", 1), RG_ERR_IO);
    RG_CHECK(strstr(w.message, "/nonexistent-dir-rg/x.bin") != NULL);
    unlink(path);
}
