// matmul.cu - the linear layer (out = inp @ weight^T + bias) through cuBLASLt,
// and rgcu_gemm, the row-major product that lora.cu shares.
//
// cuBLASLt is column-major: a row-major (R, C) matrix with row stride ld is a
// column-major (C, R) matrix with leading dimension ld, so the row-major
// C = op(A) @ op(B) is computed as the column-major C^T = op(B)^T @ op(A)^T,
// i.e. cuBLASLt's "A" is our B and its "B" is our A; no data is moved.
//
// Numerics: CUBLAS_COMPUTE_32F (true fp32 FMA, never the TF32 tensor-core
// mode), so results agree with the CPU's OpenBLAS sgemm at about 1e-5.
//
// Scratch: slot RGCU_SCRATCH_CUBLASLT (0) is the cuBLASLt workspace (a fixed
// 32 MiB); slot RGCU_SCRATCH_MATMUL (1) holds the per-chunk partial column
// sums of the bias gradient. Nothing else here uses rgcu_scratch.
//
// Descriptors, layouts and the heuristic's algorithm are cached per shape
// (a small table, replaced round-robin): the same few shapes recur every
// step, and the heuristic query costs more host time than a small product.
// The cache is not thread-safe; like the rest of the runtime (one stream, one
// first-failure record) the ops are called from one host thread.
#include <string.h>

#include "rgcu.h"

#define GEMM_WORKSPACE_BYTES ((size_t)32 << 20)
#define GEMM_CACHE_SIZE 64

// ---------------------------------------------------------------------------
// small kernels
// ---------------------------------------------------------------------------

// C (M, N; row stride ldc) = beta * C + bias (N,) on every row (bias may be
// NULL). beta == 0 never reads C (it may hold garbage, as for a product with
// K == 0). Grid-stride over the M * N elements.
static __global__ void scale_bias_kernel(float *C, const float *bias, float beta, int64_t M, int64_t N,
                                         int64_t ldc)
{
    const int64_t total = M * N;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int64_t r = i / N, c = i % N;
        float *x = C + r * ldc + c;
        float v = beta == 0.0f ? 0.0f : beta * *x;
        if (bias != NULL)
            v += bias[c];
        *x = v;
    }
}

// Column sums of x (N, OC), rows split into chunks of rows_per_chunk:
// block (32, 8), blockIdx.x = a tile of 32 columns (threadIdx.x walks
// columns, so each warp reads 128 contiguous bytes of a row), blockIdx.y =
// a chunk of rows (threadIdx.y strides its rows by 8). The 8 per-thread
// sums of a column are added in a fixed order through shared memory, so the
// result is deterministic. With `accumulate` the chunk's sums are added to
// dst (OC,) (only when there is one chunk); else stored to dst[chunk * OC + c].
#define COLSUM_TX 32
#define COLSUM_TY 8
static __global__ void column_sums_kernel(float *dst, const float *x, int N, int OC, int rows_per_chunk,
                                          int accumulate)
{
    __shared__ float part[COLSUM_TY][COLSUM_TX + 1];
    const int64_t col = (int64_t)blockIdx.x * COLSUM_TX + threadIdx.x;
    const int64_t row0 = (int64_t)blockIdx.y * rows_per_chunk;
    const int64_t row1 = row0 + rows_per_chunk < N ? row0 + rows_per_chunk : N;
    float sum = 0.0f;
    if (col < OC)
        for (int64_t r = row0 + threadIdx.y; r < row1; r += COLSUM_TY)
            sum += x[r * OC + col];
    part[threadIdx.y][threadIdx.x] = sum;
    __syncthreads();
    if (threadIdx.y == 0 && col < OC) {
        float s = part[0][threadIdx.x];
        for (int k = 1; k < COLSUM_TY; k++)
            s += part[k][threadIdx.x];
        if (accumulate)
            dst[col] += s;
        else
            dst[(int64_t)blockIdx.y * OC + col] = s;
    }
}

// dbias (OC,) += the sum of partial (chunks, OC) over its chunks, in chunk
// order (deterministic). One thread per column; reads are coalesced.
static __global__ void column_sums_finish_kernel(float *dbias, const float *partial, int chunks, int OC)
{
    const int64_t col = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= OC)
        return;
    float s = 0.0f;
    for (int k = 0; k < chunks; k++)
        s += partial[(int64_t)k * OC + col];
    dbias[col] += s;
}

// sums (OC,) += column sums of x (N, OC): one pass when a single chunk of
// rows covers N, else partials per chunk (slot RGCU_SCRATCH_MATMUL) and a
// second pass. Chunks are at least 64 rows and at most 256 in number, so the
// partials stay below 256 * OC floats and the grid's y below 65535.
static void column_sums_add(float *sums, const float *x, int N, int OC)
{
    int rows_per_chunk = (int)(((int64_t)N + 255) / 256);
    if (rows_per_chunk < 64)
        rows_per_chunk = 64;
    const int chunks = (int)(((int64_t)N + rows_per_chunk - 1) / rows_per_chunk);
    const dim3 block(COLSUM_TX, COLSUM_TY);
    const dim3 grid(rgcu_blocks((size_t)OC, COLSUM_TX), (unsigned)chunks);
    if (chunks == 1) {
        column_sums_kernel<<<grid, block, 0, rgcu_stream()>>>(sums, x, N, OC, rows_per_chunk, 1);
        rgcu_check_launch("matmul_backward dbias");
        return;
    }
    float *partial = (float *)rgcu_scratch(RGCU_SCRATCH_MATMUL, (size_t)chunks * OC * sizeof(float));
    if (partial == NULL)
        return;
    column_sums_kernel<<<grid, block, 0, rgcu_stream()>>>(partial, x, N, OC, rows_per_chunk, 0);
    rgcu_check_launch("matmul_backward dbias");
    column_sums_finish_kernel<<<rgcu_blocks((size_t)OC, RGCU_THREADS), RGCU_THREADS, 0, rgcu_stream()>>>(
        sums, partial, chunks, OC);
    rgcu_check_launch("matmul_backward dbias");
}

// ---------------------------------------------------------------------------
// cuBLASLt plans, cached per shape
// ---------------------------------------------------------------------------

// Everything the chosen algorithm depends on; int64 fields only, so memcmp
// sees no padding.
typedef struct {
    int64_t trans_a, trans_b, m, n, k, lda, ldb, ldc;
    int64_t epilogue;                               // CUBLASLT_EPILOGUE_DEFAULT or _BIAS
    int64_t align_a, align_b, align_c, align_bias;  // bytes, capped at 256
} gemm_key;

typedef struct {
    gemm_key key;
    int used;                        // holds `key`; desc == NULL: no algorithm for it
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, c;  // c serves as both C and D
    cublasLtMatmulAlgo_t algo;
} gemm_plan;

static gemm_plan plan_cache[GEMM_CACHE_SIZE];
static int plan_next;  // the slot replaced next when the table is full

// The alignment cuBLASLt may assume for a pointer: its lowest set bit,
// capped at 256 (the heuristic's default assumption, which an offset into a
// buffer, e.g. a column slice, need not meet).
static int64_t pointer_alignment(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    if (v == 0)
        return 256;
    uintptr_t low = v & (~v + 1);
    return low >= 256 ? 256 : (int64_t)low;
}

static void plan_destroy(gemm_plan *plan)
{
    if (plan->desc != NULL)
        cublasLtMatmulDescDestroy(plan->desc);
    if (plan->a != NULL)
        cublasLtMatrixLayoutDestroy(plan->a);
    if (plan->b != NULL)
        cublasLtMatrixLayoutDestroy(plan->b);
    if (plan->c != NULL)
        cublasLtMatrixLayoutDestroy(plan->c);
    memset(plan, 0, sizeof(*plan));
}

// Fills `plan` for `key` (column-major terms: D (m, n) = op(A) op(B)); 0 when
// no algorithm fits or a descriptor cannot be made (then `plan` keeps only the
// key, so that the miss is remembered and the heuristic not asked again).
static int plan_create(gemm_plan *plan, const gemm_key *key, cublasLtHandle_t handle, const float *bias)
{
    memset(plan, 0, sizeof(*plan));
    plan->key = *key;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    const cublasOperation_t ta = key->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t tb = key->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    const uint32_t epilogue = (uint32_t)key->epilogue;
    const uint64_t workspace = GEMM_WORKSPACE_BYTES;
    const uint32_t align_a = (uint32_t)key->align_a, align_b = (uint32_t)key->align_b;
    const uint32_t align_c = (uint32_t)key->align_c;
    // Stored shapes: op(A) is (m, k), op(B) is (k, n).
    const uint64_t a_rows = key->trans_a ? key->k : key->m, a_cols = key->trans_a ? key->m : key->k;
    const uint64_t b_rows = key->trans_b ? key->n : key->k, b_cols = key->trans_b ? key->k : key->n;
    int ok = cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) == CUBLAS_STATUS_SUCCESS &&
             cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)) ==
                 CUBLAS_STATUS_SUCCESS &&
             cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)) ==
                 CUBLAS_STATUS_SUCCESS &&
             cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                            sizeof(epilogue)) == CUBLAS_STATUS_SUCCESS;
    // The heuristic reads the bias pointer's alignment (the key holds it).
    if (ok && epilogue == CUBLASLT_EPILOGUE_BIAS)
        ok = cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)) ==
             CUBLAS_STATUS_SUCCESS;
    ok = ok &&
         cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_32F, a_rows, a_cols, key->lda) == CUBLAS_STATUS_SUCCESS &&
         cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_32F, b_rows, b_cols, key->ldb) == CUBLAS_STATUS_SUCCESS &&
         cublasLtMatrixLayoutCreate(&plan->c, CUDA_R_32F, key->m, key->n, key->ldc) == CUBLAS_STATUS_SUCCESS &&
         cublasLtMatmulPreferenceCreate(&pref) == CUBLAS_STATUS_SUCCESS &&
         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                              sizeof(workspace)) == CUBLAS_STATUS_SUCCESS &&
         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &align_a,
                                              sizeof(align_a)) == CUBLAS_STATUS_SUCCESS &&
         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &align_b,
                                              sizeof(align_b)) == CUBLAS_STATUS_SUCCESS &&
         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &align_c,
                                              sizeof(align_c)) == CUBLAS_STATUS_SUCCESS &&
         cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &align_c,
                                              sizeof(align_c)) == CUBLAS_STATUS_SUCCESS &&
         cublasLtMatmulAlgoGetHeuristic(handle, plan->desc, plan->a, plan->b, plan->c, plan->c, pref, 1, &result,
                                        &found) == CUBLAS_STATUS_SUCCESS &&
         found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (pref != NULL)
        cublasLtMatmulPreferenceDestroy(pref);
    if (!ok) {
        plan_destroy(plan);
        plan->key = *key;
        plan->used = 1;
        return 0;
    }
    plan->algo = result.algo;
    plan->used = 1;
    return 1;
}

static gemm_plan *plan_get(const gemm_key *key, cublasLtHandle_t handle, const float *bias)
{
    for (int i = 0; i < GEMM_CACHE_SIZE; i++)
        if (plan_cache[i].used && memcmp(&plan_cache[i].key, key, sizeof(*key)) == 0)
            return plan_cache[i].desc != NULL ? &plan_cache[i] : NULL;
    gemm_plan *plan = &plan_cache[plan_next];
    plan_next = (plan_next + 1) % GEMM_CACHE_SIZE;
    // Queued products that used the old plan already hold their parameters.
    plan_destroy(plan);
    return plan_create(plan, key, handle, bias) ? plan : NULL;
}

// ---------------------------------------------------------------------------
// rgcu_gemm: the row-major product every op here goes through
// ---------------------------------------------------------------------------

// C (M, N; row stride ldc) = alpha * op(A) @ op(B) + beta * C, plus bias (N,)
// on every row when bias != NULL, in row-major terms like cblas_sgemm (and the
// CPU's gemm_blocks_scaled): op(A) is (M, K), A stored (M, K) or, with
// trans_a, (K, M), row stride lda; likewise op(B) (K, N) with ldb. As BLAS:
// M == 0 or N == 0 does nothing; K == 0 leaves beta * C (+ bias), and beta ==
// 0 never reads C. Failures are recorded under `what`.
extern "C" void rgcu_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                          const float *B, int ldb, float beta, float *C, int ldc, const float *bias,
                          const char *what)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        if (beta != 1.0f || bias != NULL) {
            const size_t total = (size_t)M * (size_t)N;
            const unsigned blocks = rgcu_blocks(total < ((size_t)1 << 24) ? total : ((size_t)1 << 24), RGCU_THREADS);
            scale_bias_kernel<<<blocks, RGCU_THREADS, 0, rgcu_stream()>>>(C, bias, beta, M, N, ldc);
            rgcu_check_launch(what);
        }
        return;
    }
    cublasLtHandle_t handle = rgcu_cublaslt();
    if (handle == NULL)
        return;
    void *workspace = rgcu_scratch(RGCU_SCRATCH_CUBLASLT, GEMM_WORKSPACE_BYTES);
    if (workspace == NULL)
        return;

    // Column-major terms: D (N, M) = op'(B) (N, K) @ op'(A) (K, M), where our
    // B is cuBLASLt's A (with our trans_b), our A its B, our C its C and D.
    gemm_key key;
    memset(&key, 0, sizeof(key));
    key.trans_a = trans_b;
    key.trans_b = trans_a;
    key.m = N;
    key.n = M;
    key.k = K;
    key.lda = ldb;
    key.ldb = lda;
    key.ldc = ldc;
    key.epilogue = bias != NULL ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    key.align_a = pointer_alignment(B);
    key.align_b = pointer_alignment(A);
    key.align_c = pointer_alignment(C);
    key.align_bias = bias != NULL ? pointer_alignment(bias) : 0;
    gemm_plan *plan = plan_get(&key, handle, bias);
    int bias_after = 0;
    if (plan == NULL && bias != NULL) {
        // No algorithm with the bias epilogue: plain product, then a bias pass.
        key.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
        key.align_bias = 0;
        plan = plan_get(&key, handle, NULL);
        bias_after = 1;
    }
    if (plan == NULL) {
        rgcu_fail(RG_ERR_CUDA, what);
        return;
    }
    if (key.epilogue == CUBLASLT_EPILOGUE_BIAS &&
        cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)) !=
            CUBLAS_STATUS_SUCCESS) {
        rgcu_fail(RG_ERR_CUDA, what);
        return;
    }
    if (cublasLtMatmul(handle, plan->desc, &alpha, B, plan->a, A, plan->b, &beta, C, plan->c, C, plan->c,
                       &plan->algo, workspace, GEMM_WORKSPACE_BYTES, rgcu_stream()) != CUBLAS_STATUS_SUCCESS) {
        rgcu_fail(RG_ERR_CUDA, what);
        return;
    }
    if (bias_after) {
        const size_t total = (size_t)M * (size_t)N;
        const unsigned blocks = rgcu_blocks(total < ((size_t)1 << 24) ? total : ((size_t)1 << 24), RGCU_THREADS);
        scale_bias_kernel<<<blocks, RGCU_THREADS, 0, rgcu_stream()>>>(C, bias, 1.0f, M, N, ldc);
        rgcu_check_launch(what);
    }
}

// ---------------------------------------------------------------------------
// linear layer
// ---------------------------------------------------------------------------

extern "C" void rgcu_matmul_forward(float *out,          // (N, OC)
                                    const float *inp,    // (N, IC)
                                    const float *weight, // (OC, IC)
                                    const float *bias,   // (OC,) or NULL
                                    int N, int IC, int OC)
{
    // out = inp @ weight^T (+ bias through the BIAS epilogue: one pass over out)
    rgcu_gemm(0, 1, N, OC, IC, 1.0f, inp, IC, weight, IC, 0.0f, out, OC, bias, "matmul_forward");
}

extern "C" void rgcu_matmul_backward(float *dinp,         // (N, IC) += or NULL
                                     float *dweight,      // (OC, IC) += or NULL
                                     float *dbias,        // (OC,) += or NULL
                                     const float *dout,   // (N, OC)
                                     const float *inp,    // (N, IC)
                                     const float *weight, // (OC, IC)
                                     int N, int IC, int OC)
{
    if (dinp != NULL) // (N, IC) += (N, OC) @ (OC, IC): beta 1 accumulates
        rgcu_gemm(0, 0, N, IC, OC, 1.0f, dout, OC, weight, IC, 1.0f, dinp, IC, NULL, "matmul_backward dinp");
    if (dweight != NULL) // (OC, IC) += (N, OC)^T @ (N, IC)
        rgcu_gemm(1, 0, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC, NULL, "matmul_backward dweight");
    // Not cuBLASLt's BGRADA/BGRADB epilogue: it overwrites the bias gradient
    // (the op must add), needs a product to ride on (dweight may be NULL) and
    // is not offered for every fp32 configuration. A column-sum kernel adds.
    if (dbias != NULL && N > 0 && OC > 0)
        column_sums_add(dbias, dout, N, OC);
}
