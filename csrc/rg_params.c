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

static size_t dtype_size(rg_dtype dtype)
{
    switch (dtype) {
    case RG_DTYPE_F32: return 4;
    case RG_DTYPE_F16: return 2;
    case RG_DTYPE_BF16: return 2;
    case RG_DTYPE_F64: return 8;
    }
    return 0;
}

static float element(const rg_tensor_source *s, int64_t index)
{
    const char *at = (const char *)s->data + index * (int64_t)dtype_size(s->dtype);
    switch (s->dtype) {
    case RG_DTYPE_F32: { float v; memcpy(&v, at, 4); return v; }
    case RG_DTYPE_F16: { uint16_t v; memcpy(&v, at, 2); return half_to_float(v); }
    case RG_DTYPE_BF16: { uint16_t v; memcpy(&v, at, 2); return bf16_to_float(v); }
    case RG_DTYPE_F64: { double v; memcpy(&v, at, 8); return (float)v; }
    }
    return NAN;
}

rg_status rg_param_write(float *block, const rg_param_info *info, int64_t row_offset,
                         const rg_tensor_source *source)
{
    if (block == NULL || info == NULL || source == NULL || dtype_size(source->dtype) == 0)
        return RG_ERR_INVALID_ARG;
    const int64_t rows = info->shape[0], cols = info->ndim == 2 ? info->shape[1] : 1;
    if (source->rows < 0 || source->cols != cols || row_offset < 0 || row_offset > rows ||
        source->rows > rows - row_offset)
        return RG_ERR_SHAPE;
    if (source->rows > 0 && source->data == NULL)
        return RG_ERR_INVALID_ARG;
    float *out = block + info->offset + (size_t)row_offset * (size_t)cols;
    int finite = 1;
    const int contiguous_f32 = source->dtype == RG_DTYPE_F32 && source->col_stride == 1 &&
                               source->row_stride == cols;
    if (contiguous_f32) {
        memcpy(out, source->data, (size_t)(source->rows * cols) * sizeof(float));
    }
#pragma omp parallel for schedule(static) reduction(&& : finite) if (source->rows * cols > 65536)
    for (int64_t r = 0; r < source->rows; r++) {
        float *row = out + r * cols;
        for (int64_t c = 0; c < cols; c++) {
            if (!contiguous_f32)
                row[c] = element(source, r * source->row_stride + c * source->col_stride);
            finite = finite && isfinite(row[c]);
        }
    }
    return finite ? RG_OK : RG_ERR_NONFINITE;
}
