// column_sums.cu - pass 2 of the norms' deterministic column sums (rgcu.h says the scheme;
// pass 1 lives beside each op, in layernorm.cu and rmsnorm.cu, since what it sums differs).
#include "rgcu.h"

extern "C" int rgcu_column_chunks(int N, int *chunk_rows)
{
    // Chunks of 128 rows, or more rows per chunk so that there are at most RGCU_COL_MAX_CHUNKS.
    int64_t rows = 128;
    if (((int64_t)N + rows - 1) / rows > RGCU_COL_MAX_CHUNKS)
        rows = ((int64_t)N + RGCU_COL_MAX_CHUNKS - 1) / RGCU_COL_MAX_CHUNKS;
    *chunk_rows = (int)rows;
    return (int)(((int64_t)N + rows - 1) / rows);
}

// Block (32, 8) at grid (tile): thread (tx, ty) adds chunks ty, ty + 8, ... of each plane,
// then the row lanes are added in order; fixed order throughout.
static __global__ void column_sums_reduce_kernel(float *out0,          // (C,) += or NULL
                                                 float *out1,          // (C,) += or NULL
                                                 const float *partial, // (chunks, planes, C)
                                                 int planes, int chunks, int C)
{
    __shared__ float s_sum[RGCU_COL_MAX_PLANES][RGCU_COL_LANES][RGCU_COL_TILE];
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int c = blockIdx.x * RGCU_COL_TILE + tx;
    float sum[RGCU_COL_MAX_PLANES] = {0.0f, 0.0f};
    if (c < C) {
        for (int k = ty; k < chunks; k += RGCU_COL_LANES)
            for (int p = 0; p < planes; p++)
                sum[p] += partial[((size_t)k * planes + p) * C + c];
    }
    for (int p = 0; p < planes; p++)
        s_sum[p][ty][tx] = sum[p];
    __syncthreads();
    if (ty == 0 && c < C) {
        for (int y = 1; y < RGCU_COL_LANES; y++)
            for (int p = 0; p < planes; p++)
                sum[p] += s_sum[p][y][tx];
        if (out0 != NULL)
            out0[c] += sum[0];
        if (out1 != NULL && planes > 1)
            out1[c] += sum[1];
    }
}

extern "C" void rgcu_column_sums_reduce(float *out0, float *out1, const float *partial, int planes, int chunks,
                                        int C, const char *what)
{
    const unsigned tiles = (unsigned)(((int64_t)C + RGCU_COL_TILE - 1) / RGCU_COL_TILE);
    column_sums_reduce_kernel<<<tiles, dim3(RGCU_COL_TILE, RGCU_COL_LANES), 0, rgcu_stream()>>>(
        out0, out1, partial, planes, chunks, C);
    rgcu_check_launch(what);
}
