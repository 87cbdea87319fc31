// layernorm.cu - LayerNorm over the last dimension C of (N, C) rows.
//
// Forward and the input gradient: one warp per row, lanes striding over C
// (any C), sums by warp-shuffle trees; the mean and variance in two passes
// over the row, as on the CPU. The weight and bias gradients are column sums
// over the N rows, reduced deterministically: per (column tile, row chunk)
// partial sums in rgcu_scratch, then column_sums.cu adds the chunks in a
// fixed order (no atomics, so a run repeats bit for bit).
#include "rgcu.h"

#define LN_ROWS_PER_BLOCK (RGCU_THREADS / 32) // one warp per row

// ---- forward ----

// grid ceil(N / 8), block 256: warp w of block b normalises row b * 8 + w.
static __global__ void layernorm_forward_kernel(float *out,          // (N, C)
                                                float *mean,         // (N,)
                                                float *rstd,         // (N,)
                                                const float *inp,    // (N, C)
                                                const float *weight, // (C,)
                                                const float *bias,   // (C,)
                                                int N, int C, float eps)
{
    const int lane = threadIdx.x % 32;
    const int n = blockIdx.x * LN_ROWS_PER_BLOCK + threadIdx.x / 32;
    if (n >= N)
        return; // the whole warp leaves: the shuffles below always have 32 lanes
    const float *x = inp + (size_t)n * C;
    float sum = 0.0f;
    for (int c = lane; c < C; c += 32)
        sum += x[c];
    const float m = rgcu_warp_sum(sum) / (float)C;
    float var = 0.0f;
    for (int c = lane; c < C; c += 32) {
        const float d = x[c] - m;
        var += d * d;
    }
    const float s = 1.0f / sqrtf(rgcu_warp_sum(var) / (float)C + eps);
    // Every read of the row happened before the shuffles above, so out may alias inp.
    float *y = out + (size_t)n * C;
    for (int c = lane; c < C; c += 32)
        y[c] = (x[c] - m) * s * weight[c] + bias[c];
    if (lane == 0) {
        mean[n] = m;
        rstd[n] = s;
    }
}

extern "C" void rgcu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                                       const float *weight, const float *bias, int N, int C, float eps)
{
    if (N <= 0 || C <= 0)
        return;
    const unsigned blocks = (unsigned)(((int64_t)N + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK);
    layernorm_forward_kernel<<<blocks, RGCU_THREADS, 0, rgcu_stream()>>>(out, mean, rstd, inp, weight,
                                                                         bias, N, C, eps);
    rgcu_check_launch("layernorm_forward");
}

// ---- backward ----

// dinp += rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * weight.
// grid ceil(N / 8), block 256: one warp per row, as the forward.
static __global__ void layernorm_backward_dinp_kernel(float *dinp,         // (N, C) +=
                                                      const float *dout,   // (N, C)
                                                      const float *inp,    // (N, C)
                                                      const float *weight, // (C,)
                                                      const float *mean,   // (N,)
                                                      const float *rstd,   // (N,)
                                                      int N, int C)
{
    const int lane = threadIdx.x % 32;
    const int n = blockIdx.x * LN_ROWS_PER_BLOCK + threadIdx.x / 32;
    if (n >= N)
        return; // whole warp, as in the forward
    const float *x = inp + (size_t)n * C;
    const float *dy = dout + (size_t)n * C;
    const float m = mean[n], s = rstd[n];
    float sum_g = 0.0f, sum_gx = 0.0f;
    for (int c = lane; c < C; c += 32) {
        const float g = dy[c] * weight[c];
        sum_g += g;
        sum_gx += g * (x[c] - m) * s;
    }
    const float mean_g = rgcu_warp_sum(sum_g) / (float)C;
    const float mean_gx = rgcu_warp_sum(sum_gx) / (float)C;
    float *dx = dinp + (size_t)n * C;
    // g rounded before the subtraction, as on the CPU: a contracted
    // fma(dy, w, -mean_g) would leave g's rounding error where the CPU has
    // an exact 0 (C = 1), then scaled by a large rstd.
    for (int c = lane; c < C; c += 32)
        dx[c] += s * (__fmul_rn(dy[c], weight[c]) - mean_g - (x[c] - m) * s * mean_gx);
}

// Pass 1 of the weight/bias gradients: block (32, 8) at grid (tile, chunk)
// sums the rows of its chunk for its 32 columns; thread (tx, ty) takes rows
// ty, ty + 8, ..., then the 8 row lanes are added in order through shared memory.
static __global__ void layernorm_param_partials_kernel(float *partial,     // (chunks, 2, C): dweight, dbias
                                                       const float *dout,  // (N, C)
                                                       const float *inp,   // (N, C)
                                                       const float *mean,  // (N,)
                                                       const float *rstd,  // (N,)
                                                       int N, int C, int chunk_rows)
{
    __shared__ float s_dw[RGCU_COL_LANES][RGCU_COL_TILE];
    __shared__ float s_db[RGCU_COL_LANES][RGCU_COL_TILE];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * RGCU_COL_TILE + tx;
    const int64_t n0 = (int64_t)blockIdx.y * chunk_rows;
    const int64_t n1 = n0 + chunk_rows < N ? n0 + chunk_rows : N;
    float dw = 0.0f, db = 0.0f;
    if (c < C) {
        for (int64_t n = n0 + ty; n < n1; n += RGCU_COL_LANES) {
            const size_t i = (size_t)n * C + c;
            const float dy = dout[i];
            dw += dy * (inp[i] - mean[n]) * rstd[n];
            db += dy;
        }
    }
    s_dw[ty][tx] = dw;
    s_db[ty][tx] = db;
    __syncthreads();
    if (ty == 0 && c < C) {
        for (int y = 1; y < RGCU_COL_LANES; y++) {
            dw += s_dw[y][tx];
            db += s_db[y][tx];
        }
        float *p = partial + (size_t)blockIdx.y * 2 * C;
        p[c] = dw;
        p[(size_t)C + c] = db;
    }
}

extern "C" void rgcu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                        const float *inp, const float *weight, const float *mean,
                                        const float *rstd, int N, int C)
{
    if (N <= 0 || C <= 0)
        return;
    if (dinp != NULL) {
        const unsigned blocks = (unsigned)(((int64_t)N + LN_ROWS_PER_BLOCK - 1) / LN_ROWS_PER_BLOCK);
        layernorm_backward_dinp_kernel<<<blocks, RGCU_THREADS, 0, rgcu_stream()>>>(
            dinp, dout, inp, weight, mean, rstd, N, C);
        rgcu_check_launch("layernorm_backward dinp");
    }
    if (dweight == NULL && dbias == NULL)
        return;
    int chunk_rows;
    const int chunks = rgcu_column_chunks(N, &chunk_rows);
    float *partial = (float *)rgcu_scratch(RGCU_SCRATCH_REDUCE, (size_t)chunks * 2 * (size_t)C * sizeof(float));
    if (partial == NULL)
        return; // recorded by rgcu_scratch
    const unsigned tiles = (unsigned)(((int64_t)C + RGCU_COL_TILE - 1) / RGCU_COL_TILE);
    layernorm_param_partials_kernel<<<dim3(tiles, (unsigned)chunks), dim3(RGCU_COL_TILE, RGCU_COL_LANES), 0,
                                      rgcu_stream()>>>(partial, dout, inp, mean, rstd, N, C, chunk_rows);
    rgcu_check_launch("layernorm_backward partials");
    rgcu_column_sums_reduce(dweight, dbias, partial, 2, chunks, C, "layernorm_backward reduce");
}
