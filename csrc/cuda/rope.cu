// rope.cu - rotary position embedding, Hugging Face rotate_half convention:
// in each q and k head (NH query heads then NKV key heads at the start of
// every qkv row; v is left alone), element i pairs with element i + HS/2
// (i < HS/2; an odd HS leaves the last element alone) and the pair is
// rotated by position * theta^(-2i/HS). The angle, its cosine and sine are
// computed in double and rounded to float, as rg_ops.c does, so large
// positions lose no precision and the factors are the CPU's (to the last
// bit but for rare double-rounding ties). The backward is the rotation by
// the opposite angle (a rotation's transpose).
#include "rgcu.h"

// One thread per (row n, pair i): it computes that pair's cos/sin once and
// rotates it in every q and k head of the row. Consecutive threads take
// consecutive i, so each head's reads and writes are coalesced.
static __global__ void rope_kernel(float *qkv,               // (N, (NH + 2*NKV) * HS) in place
                                   const int32_t *positions, // (N,)
                                   size_t total /* N * (HS / 2) */, int heads /* NH + NKV */, int HS,
                                   size_t row /* (NH + 2*NKV) * HS */, float theta, float direction)
{
    const int half = HS / 2;
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t t = (size_t)blockIdx.x * blockDim.x + threadIdx.x; t < total; t += stride) {
        const size_t n = t / (size_t)half;
        const int i = (int)(t % (size_t)half);
        // rg_ops.c's rope_rotate_head, expression for expression.
        const double inv_freq = pow((double)theta, -2.0 * i / (double)HS);
        const double angle = (double)positions[n] * inv_freq;
        const float cs = (float)cos(angle), sn = direction * (float)sin(angle);
        float *p = qkv + n * row + (size_t)i;
        for (int h = 0; h < heads; h++, p += HS) {
            const float a = p[0], b = p[half];
            p[0] = a * cs - b * sn;
            p[half] = b * cs + a * sn;
        }
    }
}

static void rope_launch(float *qkv, const int32_t *positions, int N, int NH, int NKV, int HS, float theta,
                        float direction, const char *what)
{
    if (N <= 0 || HS < 2 || NH + NKV <= 0)
        return; // nothing rotates
    const size_t total = (size_t)N * (size_t)(HS / 2);
    const size_t row = ((size_t)NH + 2 * (size_t)NKV) * (size_t)HS;
    const size_t cap = (size_t)RGCU_THREADS << 20; // grid-stride beyond 2^20 blocks
    rope_kernel<<<rgcu_blocks(total < cap ? total : cap, RGCU_THREADS), RGCU_THREADS, 0, rgcu_stream()>>>(
        qkv, positions, total, NH + NKV, HS, row, theta, direction);
    rgcu_check_launch(what);
}

extern "C" void rgcu_rope_forward(float *qkv, const int32_t *positions, int N, int NH, int NKV, int HS,
                                  float theta)
{
    rope_launch(qkv, positions, N, NH, NKV, HS, theta, 1.0f, "rope_forward");
}

extern "C" void rgcu_rope_backward(float *dqkv, const int32_t *positions, int N, int NH, int NKV, int HS,
                                   float theta)
{
    rope_launch(dqkv, positions, N, NH, NKV, HS, theta, -1.0f, "rope_backward");
}
