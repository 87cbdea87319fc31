/*
 * test_params.c - checkpoint tensors into a parameter block (rg_params.c):
 * the float conversions and llama.cpp's block formats, written out by hand.
 */
#include <math.h>
#include <string.h>

#include "rg_params.h"
#include "rg_test.h"

/* float -> IEEE half for values a half holds exactly (normal, |x| >= 2^-14). */
static uint16_t exact_half(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, 4);
    const uint32_t sign = (bits >> 16) & 0x8000u;
    const int exponent = (int)((bits >> 23) & 0xffu) - 127 + 15;
    return (uint16_t)(sign | ((uint32_t)exponent << 10) | ((bits >> 13) & 0x3ffu));
}

static void put_half(uint8_t *at, float x)
{
    const uint16_t h = exact_half(x);
    memcpy(at, &h, 2);
}

/* Two rows of two blocks each; value (r, c) = its quant q(r, c) decoded by
 * the format's rule, so every nibble position and both scales are checked. */
static int quant_of(int r, int c) { return (r * 64 + c * 7 + 3) % 16; }

void test_params_q4_0_q4_1_q8_0_rows(void)
{
    enum { ROWS = 2, COLS = 64, BLOCKS = COLS / RG_QUANT_BLOCK };
    const float d[ROWS][BLOCKS] = {{0.5f, -0.25f}, {2.0f, 0.125f}};
    const float m[ROWS][BLOCKS] = {{-1.5f, 3.0f}, {0.75f, -0.0625f}};
    const rg_dtype types[3] = {RG_DTYPE_Q4_0, RG_DTYPE_Q4_1, RG_DTYPE_Q8_0};
    for (int t = 0; t < 3; t++) {
        const rg_dtype type = types[t];
        const size_t size = rg_dtype_size(type);
        RG_CHECK(rg_dtype_is_blocked(type));
        RG_CHECK_EQ((int)size, type == RG_DTYPE_Q4_0 ? 18 : type == RG_DTYPE_Q4_1 ? 20 : 34);
        uint8_t raw[ROWS * BLOCKS * 34];
        memset(raw, 0, sizeof(raw));
        float want[ROWS * COLS];
        for (int r = 0; r < ROWS; r++)
            for (int b = 0; b < BLOCKS; b++) {
                uint8_t *block = raw + (size_t)(r * BLOCKS + b) * size;
                put_half(block, d[r][b]);
                if (type == RG_DTYPE_Q4_1)
                    put_half(block + 2, m[r][b]);
                uint8_t *qs = block + (type == RG_DTYPE_Q4_1 ? 4 : 2);
                for (int j = 0; j < RG_QUANT_BLOCK; j++) {
                    const int c = b * RG_QUANT_BLOCK + j, q = quant_of(r, c);
                    if (type == RG_DTYPE_Q8_0) {
                        const int8_t signed_q = (int8_t)(q * 17 - 128); /* -128 .. 127 */
                        memcpy(qs + j, &signed_q, 1);
                        want[r * COLS + c] = (float)signed_q * d[r][b];
                    } else {
                        if (j < RG_QUANT_BLOCK / 2)
                            qs[j] = (uint8_t)((qs[j] & 0xf0) | q);
                        else
                            qs[j - RG_QUANT_BLOCK / 2] = (uint8_t)((qs[j - RG_QUANT_BLOCK / 2] & 0x0f) | (q << 4));
                        want[r * COLS + c] = type == RG_DTYPE_Q4_1 ? (float)q * d[r][b] + m[r][b]
                                                                   : (float)(q - 8) * d[r][b];
                    }
                }
            }
        rg_tensor_source source = {.data = raw, .dtype = type, .rows = ROWS, .cols = COLS,
                                   .row_stride = BLOCKS, .col_stride = 1};
        float got[ROWS * COLS];
        RG_CHECK_STATUS(rg_tensor_convert(got, &source), RG_OK);
        int bad = 0;
        for (int i = 0; i < ROWS * COLS; i++)
            bad += got[i] != want[i];
        RG_CHECK_EQ(bad, 0);

        /* into the second and third rows of a (3, 64) parameter */
        float block[3 * COLS];
        for (int i = 0; i < 3 * COLS; i++)
            block[i] = -7.0f;
        rg_param_info info = {.ndim = 2, .shape = {3, COLS}, .offset = 0, .numel = 3 * COLS};
        RG_CHECK_STATUS(rg_param_write(block, &info, 1, &source), RG_OK);
        RG_CHECK(block[COLS - 1] == -7.0f);
        for (int i = 0; i < ROWS * COLS; i++)
            bad += block[COLS + i] != want[i];
        RG_CHECK_EQ(bad, 0);
        RG_CHECK_STATUS(rg_param_write(block, &info, 2, &source), RG_ERR_SHAPE);

        /* a row stride past the row (a view of every other row) */
        rg_tensor_source first_only = source;
        first_only.rows = 1;
        first_only.row_stride = 2 * BLOCKS;
        RG_CHECK_STATUS(rg_tensor_convert(got, &first_only), RG_OK);
        for (int i = 0; i < COLS; i++)
            bad += got[i] != want[i];
        RG_CHECK_EQ(bad, 0);

        rg_tensor_source broken = source;
        broken.cols = 48; /* not whole blocks */
        RG_CHECK_STATUS(rg_tensor_convert(got, &broken), RG_ERR_INVALID_ARG);
        broken = source;
        broken.row_stride = 1; /* rows would overlap */
        RG_CHECK_STATUS(rg_tensor_convert(got, &broken), RG_ERR_INVALID_ARG);
        broken = source;
        broken.col_stride = 2;
        RG_CHECK_STATUS(rg_tensor_convert(got, &broken), RG_ERR_INVALID_ARG);
    }
    RG_CHECK(!rg_dtype_is_blocked(RG_DTYPE_F16));
    RG_CHECK_EQ((int)rg_dtype_size((rg_dtype)99), 0);
}

void test_params_float_types_and_strides(void)
{
    /* a (2, 3) float64 source read transposed from a (3, 2) array */
    const double src[6] = {1.0, 4.0, 2.0, 5.0, 3.0, 6.0};
    rg_tensor_source source = {.data = src, .dtype = RG_DTYPE_F64, .rows = 2, .cols = 3,
                               .row_stride = 1, .col_stride = 2};
    float got[6];
    RG_CHECK_STATUS(rg_tensor_convert(got, &source), RG_OK);
    for (int i = 0; i < 6; i++)
        RG_CHECK(got[i] == (float)(i + 1));
    const uint16_t halves[3] = {exact_half(1.5f), exact_half(-2.0f), 0x7c00u /* +inf */};
    rg_tensor_source half = {.data = halves, .dtype = RG_DTYPE_F16, .rows = 3, .cols = 1,
                             .row_stride = 1, .col_stride = 1};
    RG_CHECK_STATUS(rg_tensor_convert(got, &half), RG_OK);
    RG_CHECK(got[0] == 1.5f && got[1] == -2.0f && isinf(got[2]));
    float block[3];
    rg_param_info info = {.ndim = 1, .shape = {3, 0}, .offset = 0, .numel = 3};
    RG_CHECK_STATUS(rg_param_write(block, &info, 0, &half), RG_ERR_NONFINITE);
    RG_CHECK_STATUS(rg_tensor_convert(NULL, &half), RG_ERR_INVALID_ARG);
}
