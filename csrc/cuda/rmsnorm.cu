// rmsnorm.cu - RMSNorm (Llama): out = inp / sqrt(mean(inp^2) + eps) * weight
// over the last dimension C of (N, C) rows.
//
// Forward and the input gradient: one warp per row, lanes striding over C
// (any C), sums by warp-shuffle trees. The weight gradient is a column sum
// over the N rows, reduced deterministically: per (column tile, row chunk)
// partial sums in rgcu_scratch, then column_sums.cu adds the chunks in a
// fixed order (no atomics, so a run repeats bit for bit).
#include "rgcu.h"

#define RMS_ROWS_PER_BLOCK (RGCU_THREADS / 32) // one warp per row

// ---- forward ----

// grid ceil(N / 8), block 256: warp w of block b normalises row b * 8 + w.
static __global__ void rmsnorm_forward_kernel(float *out,          // (N, C)
                                              float *rstd,         // (N,)
                                              const float *inp,    // (N, C)
                                              const float *weight, // (C,)
                                              int N, int C, float eps)
{
    const int lane = threadIdx.x % 32;
    const int n = blockIdx.x * RMS_ROWS_PER_BLOCK + threadIdx.x / 32;
    if (n >= N)
        return; // the whole warp leaves: the shuffles below always have 32 lanes
    const float *x = inp + (size_t)n * C;
    float ss = 0.0f;
    for (int c = lane; c < C; c += 32)
        ss += x[c] * x[c];
    const float s = 1.0f / sqrtf(rgcu_warp_sum(ss) / (float)C + eps);
    // Every read of the row happened before the shuffles above, so out may alias inp.
    float *y = out + (size_t)n * C;
    for (int c = lane; c < C; c += 32)
        y[c] = x[c] * s * weight[c];
    if (lane == 0)
        rstd[n] = s;
}

extern "C" void rgcu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight,
                                     int N, int C, float eps)
{
    if (N <= 0 || C <= 0)
        return;
    const unsigned blocks = (unsigned)(((int64_t)N + RMS_ROWS_PER_BLOCK - 1) / RMS_ROWS_PER_BLOCK);
    rmsnorm_forward_kernel<<<blocks, RGCU_THREADS, 0, rgcu_stream()>>>(out, rstd, inp, weight, N, C, eps);
    rgcu_check_launch("rmsnorm_forward");
}

// ---- backward ----

// dinp += dout * weight * rstd - inp * sum(dout * weight * inp) * rstd^3 / C.
// grid ceil(N / 8), block 256: one warp per row, as the forward.
static __global__ void rmsnorm_backward_dinp_kernel(float *dinp,         // (N, C) +=
                                                    const float *dout,   // (N, C)
                                                    const float *inp,    // (N, C)
                                                    const float *weight, // (C,)
                                                    const float *rstd,   // (N,)
                                                    int N, int C)
{
    const int lane = threadIdx.x % 32;
    const int n = blockIdx.x * RMS_ROWS_PER_BLOCK + threadIdx.x / 32;
    if (n >= N)
        return; // whole warp, as in the forward
    const float *x = inp + (size_t)n * C;
    const float *dy = dout + (size_t)n * C;
    const float s = rstd[n];
    float sum_gx = 0.0f;
    for (int c = lane; c < C; c += 32)
        sum_gx += dy[c] * weight[c] * x[c];
    const float coef = rgcu_warp_sum(sum_gx) * s * s * s / (float)C;
    float *dx = dinp + (size_t)n * C;
    for (int c = lane; c < C; c += 32)
        dx[c] += dy[c] * weight[c] * s - x[c] * coef;
}

// Pass 1 of the weight gradient (rgcu.h, column sums): block (32, 8) at grid
// (tile, chunk) sums the rows of its chunk for its 32 columns; thread (tx, ty)
// takes rows ty, ty + 8, ..., then the 8 row lanes are added in order through
// shared memory.
static __global__ void rmsnorm_dweight_partials_kernel(float *partial,    // (chunks, C)
                                                       const float *dout, // (N, C)
                                                       const float *inp,  // (N, C)
                                                       const float *rstd, // (N,)
                                                       int N, int C, int chunk_rows)
{
    __shared__ float s_dw[RGCU_COL_LANES][RGCU_COL_TILE];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * RGCU_COL_TILE + tx;
    const int64_t n0 = (int64_t)blockIdx.y * chunk_rows;
    const int64_t n1 = n0 + chunk_rows < N ? n0 + chunk_rows : N;
    float dw = 0.0f;
    if (c < C) {
        for (int64_t n = n0 + ty; n < n1; n += RGCU_COL_LANES) {
            const size_t i = (size_t)n * C + c;
            dw += dout[i] * inp[i] * rstd[n];
        }
    }
    s_dw[ty][tx] = dw;
    __syncthreads();
    if (ty == 0 && c < C) {
        for (int y = 1; y < RGCU_COL_LANES; y++)
            dw += s_dw[y][tx];
        partial[(size_t)blockIdx.y * C + c] = dw;
    }
}

extern "C" void rgcu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                                      const float *weight, const float *rstd, int N, int C)
{
    if (N <= 0 || C <= 0)
        return;
    if (dinp != NULL) {
        const unsigned blocks = (unsigned)(((int64_t)N + RMS_ROWS_PER_BLOCK - 1) / RMS_ROWS_PER_BLOCK);
        rmsnorm_backward_dinp_kernel<<<blocks, RGCU_THREADS, 0, rgcu_stream()>>>(dinp, dout, inp, weight,
                                                                                 rstd, N, C);
        rgcu_check_launch("rmsnorm_backward dinp");
    }
    if (dweight == NULL)
        return;
    int chunk_rows;
    const int chunks = rgcu_column_chunks(N, &chunk_rows);
    float *partial = (float *)rgcu_scratch(RGCU_SCRATCH_REDUCE, (size_t)chunks * (size_t)C * sizeof(float));
    if (partial == NULL)
        return; // recorded by rgcu_scratch
    const unsigned tiles = (unsigned)(((int64_t)C + RGCU_COL_TILE - 1) / RGCU_COL_TILE);
    rmsnorm_dweight_partials_kernel<<<dim3(tiles, (unsigned)chunks), dim3(RGCU_COL_TILE, RGCU_COL_LANES), 0,
                                      rgcu_stream()>>>(partial, dout, inp, rstd, N, C, chunk_rows);
    rgcu_check_launch("rmsnorm_backward partials");
    rgcu_column_sums_reduce(dweight, NULL, partial, 1, chunks, C, "rmsnorm_backward reduce");
}
