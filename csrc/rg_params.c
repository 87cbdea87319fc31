/*
 * rg_params.c - writing checkpoint tensors into a parameter block.
 *
 * Loaders hand the core strided views of the tensors as the checkpoint file
 * holds them (float32, float16 or bfloat16, transposed or not); the
 * conversion to the block's float32 happens here, once, so that a block that
 * lives elsewhere (a device) later needs only this file to change.
 */
#include "rg_params.h"

#include <math.h>
#include <string.h>

/* IEEE half -> float, subnormals, infinities and NaN included. */
static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1fu) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else { /* subnormal: normalise the mantissa */
        int shift = 0;
        while (!(mantissa & 0x400u)) {
            mantissa <<= 1;
            shift++;
        }
        bits = sign | ((uint32_t)(113 - shift) << 23) | ((mantissa & 0x3ffu) << 13);
    }
    float out;
    memcpy(&out, &bits, sizeof(out));
    return out;
}

static float bf16_to_float(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float out;
    memcpy(&out, &bits, sizeof(out));
    return out;
}

size_t rg_dtype_size(rg_dtype dtype)
{
    switch (dtype) {
    case RG_DTYPE_F32: return 4;
    case RG_DTYPE_F16: return 2;
    case RG_DTYPE_BF16: return 2;
    case RG_DTYPE_F64: return 8;
    case RG_DTYPE_Q4_0: return 18;
    case RG_DTYPE_Q4_1: return 20;
    case RG_DTYPE_Q8_0: return 34;
    }
    return 0;
}

int rg_dtype_is_blocked(rg_dtype dtype)
{
    return dtype == RG_DTYPE_Q4_0 || dtype == RG_DTYPE_Q4_1 || dtype == RG_DTYPE_Q8_0;
}

static float half_at(const uint8_t *at)
{
    uint16_t h;
    memcpy(&h, at, 2);
    return half_to_float(h);
}

/* One row of n_blocks blocks -> n_blocks * 32 floats. */
static void dequantize_row(float *out, const uint8_t *in, int64_t n_blocks, rg_dtype dtype)
{
    const size_t size = rg_dtype_size(dtype);
    for (int64_t b = 0; b < n_blocks; b++, in += size, out += RG_QUANT_BLOCK) {
        const float d = half_at(in);
        if (dtype == RG_DTYPE_Q8_0) {
            const int8_t *q = (const int8_t *)(in + 2);
            for (int j = 0; j < RG_QUANT_BLOCK; j++)
                out[j] = (float)q[j] * d;
            continue;
        }
        if (dtype == RG_DTYPE_Q4_0) {
            const uint8_t *q = in + 2;
            for (int j = 0; j < RG_QUANT_BLOCK / 2; j++) {
                out[j] = (float)((int)(q[j] & 0x0f) - 8) * d;
                out[j + RG_QUANT_BLOCK / 2] = (float)((int)(q[j] >> 4) - 8) * d;
            }
            continue;
        }
        const float m = half_at(in + 2);
        const uint8_t *q = in + 4;
        for (int j = 0; j < RG_QUANT_BLOCK / 2; j++) {
            out[j] = (float)(q[j] & 0x0f) * d + m;
            out[j + RG_QUANT_BLOCK / 2] = (float)(q[j] >> 4) * d + m;
        }
    }
}

static float element(const rg_tensor_source *s, int64_t index)
{
    const char *at = (const char *)s->data + index * (int64_t)rg_dtype_size(s->dtype);
    switch (s->dtype) {
    case RG_DTYPE_F32: { float v; memcpy(&v, at, 4); return v; }
    case RG_DTYPE_F16: { uint16_t v; memcpy(&v, at, 2); return half_to_float(v); }
    case RG_DTYPE_BF16: { uint16_t v; memcpy(&v, at, 2); return bf16_to_float(v); }
    case RG_DTYPE_F64: { double v; memcpy(&v, at, 8); return (float)v; }
    default: return NAN; /* block types never come here */
    }
}

rg_status rg_tensor_convert(float *out, const rg_tensor_source *source)
{
    if (out == NULL || source == NULL || rg_dtype_size(source->dtype) == 0 || source->rows < 0 || source->cols < 0)
        return RG_ERR_INVALID_ARG;
    if (source->rows == 0 || source->cols == 0)
        return RG_OK;
    if (source->data == NULL)
        return RG_ERR_INVALID_ARG;
    const int64_t rows = source->rows, cols = source->cols;
    if (rg_dtype_is_blocked(source->dtype)) {
        const int64_t n_blocks = cols / RG_QUANT_BLOCK;
        if (cols % RG_QUANT_BLOCK || source->col_stride != 1 || source->row_stride < n_blocks)
            return RG_ERR_INVALID_ARG;
        const size_t row_bytes = (size_t)source->row_stride * rg_dtype_size(source->dtype);
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
        for (int64_t r = 0; r < rows; r++)
            dequantize_row(out + r * cols, (const uint8_t *)source->data + (size_t)r * row_bytes, n_blocks,
                           source->dtype);
        return RG_OK;
    }
    if (source->dtype == RG_DTYPE_F32 && source->col_stride == 1 && source->row_stride == cols) {
        memcpy(out, source->data, (size_t)(rows * cols) * sizeof(float));
        return RG_OK;
    }
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            out[r * cols + c] = element(source, r * source->row_stride + c * source->col_stride);
    return RG_OK;
}

rg_status rg_param_write(float *block, const rg_param_info *info, int64_t row_offset,
                         const rg_tensor_source *source)
{
    if (block == NULL || info == NULL || source == NULL || rg_dtype_size(source->dtype) == 0)
        return RG_ERR_INVALID_ARG;
    const int64_t rows = info->shape[0], cols = info->ndim == 2 ? info->shape[1] : 1;
    if (source->rows < 0 || source->cols != cols || row_offset < 0 || row_offset > rows ||
        source->rows > rows - row_offset)
        return RG_ERR_SHAPE;
    if (source->rows > 0 && source->data == NULL)
        return RG_ERR_INVALID_ARG;
    float *out = block + info->offset + (size_t)row_offset * (size_t)cols;
    rg_status status = rg_tensor_convert(out, source);
    if (status != RG_OK)
        return status;
    int finite = 1;
    const int64_t n = source->rows * cols;
#pragma omp parallel for schedule(static) reduction(&& : finite) if (n > 65536)
    for (int64_t i = 0; i < n; i++)
        finite = finite && isfinite(out[i]);
    return finite ? RG_OK : RG_ERR_NONFINITE;
}
