/*
 * cublaslt.cpp - the CUDA emulator's cuBLASLt: exactly the part of the API
 * that csrc/cuda/matmul.cu uses (handle, matmul descriptor with compute and
 * scale type, TRANSA/TRANSB, the DEFAULT and BIAS epilogues and the bias
 * pointer; column-major matrix layouts with leading dimensions; the
 * preference with its workspace limit and minimum alignments; the heuristic
 * query; cublasLtMatmul with host alpha/beta and a workspace), implemented
 * with plain loops. Part of csrc/tests/cuda_emu/ (see include/cuda_emu.h for
 * the emulator as a whole).
 *
 * Faithful where a caller can go wrong: every matrix is column-major,
 * element (i, j) of a layout (rows, cols, ld) at [i + j * ld]; op(A) (m, k),
 * op(B) (k, n), C and D (m, n) must agree (else CUBLAS_STATUS_INVALID_VALUE,
 * as the library answers a shape mismatch), ld >= rows; attribute buffers
 * must have the attribute's exact size; only CUBLAS_COMPUTE_32F(_PEDANTIC)
 * with CUDA_R_32F scale and data is supported; the algorithm the heuristic
 * returns holds the alignments the preference promised (256 bytes unless
 * set) and cublasLtMatmul refuses pointers less aligned than that; beta == 0
 * never reads C; the BIAS epilogue adds bias[i] (m values) to row i of D and
 * needs a bias pointer; in-place (C == D) needs identical layouts; D must not
 * overlap A, B or the workspace; every operand's extent, the bias and the
 * workspace must lie inside one device allocation (else an error, and
 * with ASan a read outside the buffer is a report anyway). The workspace the
 * algorithm asks for is scribbled over (a caller that keeps data there
 * loses it, as it could on the GPU).
 *
 * Numerics: each element is a sum over k in order with fmaf, in fp32 (the
 * real library splits k in ways of its own: agreement with the CPU is to the
 * same tolerance, not bit for bit). Limits: no batching, no other epilogues,
 * no row-major order attribute, no device pointer mode, no other types.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "cublasLt.h"

struct cublasLtContext {
    int magic;
};
struct cublasLtMatmulDescOpaque_emu {
    int32_t compute, scale_type, pointer_mode, transa, transb;
    uint32_t epilogue;
    const void *bias;
};
struct cublasLtMatrixLayoutOpaque_emu {
    uint32_t type;
    int32_t order, batch;
    uint64_t rows, cols;
    int64_t ld;
};
struct cublasLtMatmulPreferenceOpaque_emu {
    uint64_t max_workspace;
    uint32_t search_mode, align_a, align_b, align_c, align_d;
};

namespace {

const int HANDLE_MAGIC = 0x4c74656d;
const size_t ALGO_WORKSPACE = 1 << 20; // what the emulated algorithm asks for (when allowed)

cublasStatus_t fail(cublasStatus_t status, const char *format, ...) __attribute__((format(printf, 2, 3)));
cublasStatus_t fail(cublasStatus_t status, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fprintf(stderr, "cuda-emu cuBLASLt: ");
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    return status;
}

template <class T> cublasStatus_t get(T *dst, const void *buf, size_t size, const char *what)
{
    if (buf == NULL || size != sizeof(T))
        return fail(CUBLAS_STATUS_INVALID_VALUE, "%s: buffer of %zu bytes, the attribute has %zu", what, size,
                    sizeof(T));
    memcpy(dst, buf, sizeof(T));
    return CUBLAS_STATUS_SUCCESS;
}

bool valid_handle(cublasLtHandle_t h)
{
    return h != NULL && h->magic == HANDLE_MAGIC;
}

/* The shapes of a product, checked as the library checks them. */
struct Shape {
    uint64_t m, n, k;
};

cublasStatus_t check_layout(const cublasLtMatrixLayoutOpaque_emu *l, const char *name)
{
    if (l == NULL)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "matrix layout %s is NULL", name);
    if (l->type != CUDA_R_32F)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "layout %s: data type %u (only CUDA_R_32F emulated)", name, l->type);
    if (l->order != CUBLASLT_ORDER_COL)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "layout %s: only the column-major order is emulated", name);
    if (l->batch != 1)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "layout %s: batches are not emulated", name);
    if (l->ld < 1 || (uint64_t)l->ld < l->rows)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "layout %s: leading dimension %lld < rows %llu", name,
                    (long long)l->ld, (unsigned long long)l->rows);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t check_problem(const cublasLtMatmulDescOpaque_emu *desc, const cublasLtMatrixLayoutOpaque_emu *a,
                             const cublasLtMatrixLayoutOpaque_emu *b, const cublasLtMatrixLayoutOpaque_emu *c,
                             const cublasLtMatrixLayoutOpaque_emu *d, Shape *shape)
{
    if (desc == NULL)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "matmul descriptor is NULL");
    if (desc->compute != CUBLAS_COMPUTE_32F && desc->compute != CUBLAS_COMPUTE_32F_PEDANTIC)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "compute type %d (only CUBLAS_COMPUTE_32F emulated)", desc->compute);
    if (desc->scale_type != CUDA_R_32F)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "scale type %d (only CUDA_R_32F emulated)", desc->scale_type);
    if (desc->pointer_mode != 0)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "only the host pointer mode is emulated");
    if (desc->transa > CUBLAS_OP_T || desc->transb > CUBLAS_OP_T || desc->transa < 0 || desc->transb < 0)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "transa %d / transb %d: only N and T emulated", desc->transa,
                    desc->transb);
    if (desc->epilogue != CUBLASLT_EPILOGUE_DEFAULT && desc->epilogue != CUBLASLT_EPILOGUE_BIAS)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "epilogue %u (only DEFAULT and BIAS emulated)", desc->epilogue);
    cublasStatus_t s;
    if ((s = check_layout(a, "A")) || (s = check_layout(b, "B")) || (s = check_layout(c, "C")) ||
        (s = check_layout(d, "D")))
        return s;
    const uint64_t am = desc->transa ? a->cols : a->rows, ak = desc->transa ? a->rows : a->cols;
    const uint64_t bk = desc->transb ? b->cols : b->rows, bn = desc->transb ? b->rows : b->cols;
    if (ak != bk || am != d->rows || bn != d->cols || c->rows != d->rows || c->cols != d->cols)
        return fail(CUBLAS_STATUS_INVALID_VALUE,
                    "shapes do not agree: op(A) %llux%llu, op(B) %llux%llu, C %llux%llu, D %llux%llu (transa %d, "
                    "transb %d)",
                    (unsigned long long)am, (unsigned long long)ak, (unsigned long long)bk, (unsigned long long)bn,
                    (unsigned long long)c->rows, (unsigned long long)c->cols, (unsigned long long)d->rows,
                    (unsigned long long)d->cols, desc->transa, desc->transb);
    if (am == 0 || bn == 0 || ak == 0)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "empty product (m %llu, n %llu, k %llu)", (unsigned long long)am,
                    (unsigned long long)bn, (unsigned long long)ak);
    shape->m = am;
    shape->n = bn;
    shape->k = ak;
    return CUBLAS_STATUS_SUCCESS;
}

/* Bytes from the first to one past the last element of a layout. */
size_t extent_bytes(const cublasLtMatrixLayoutOpaque_emu *l)
{
    return ((l->cols - 1) * (uint64_t)l->ld + l->rows) * sizeof(float);
}

bool overlaps(const void *p, size_t pn, const void *q, size_t qn)
{
    uintptr_t a = (uintptr_t)p, b = (uintptr_t)q;
    return a < b + qn && b < a + pn;
}

uint32_t alignment_of(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    if (v == 0)
        return 256;
    uintptr_t low = v & (~v + 1);
    return low >= 256 ? 256 : (uint32_t)low;
}

/* algo.data: [0] magic, [1..4] promised alignments of A, B, C, D, [5] workspace bytes */
const uint64_t ALGO_MAGIC = 0x616c676f656d75ull;

} // namespace

cublasStatus_t cublasLtCreate(cublasLtHandle_t *handle)
{
    if (handle == NULL)
        return CUBLAS_STATUS_INVALID_VALUE;
    *handle = new cublasLtContext{HANDLE_MAGIC};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle)
{
    if (!valid_handle(handle))
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasLtDestroy of an invalid handle");
    handle->magic = 0;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *desc, cublasComputeType_t compute,
                                        cudaDataType_t scale_type)
{
    if (desc == NULL)
        return CUBLAS_STATUS_INVALID_VALUE;
    *desc = new cublasLtMatmulDescOpaque_emu{(int32_t)compute, (int32_t)scale_type, 0, CUBLAS_OP_N, CUBLAS_OP_N,
                                              CUBLASLT_EPILOGUE_DEFAULT, NULL};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc)
{
    delete desc;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr,
                                              const void *buf, size_t size)
{
    if (desc == NULL)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulDescSetAttribute on NULL");
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_COMPUTE_TYPE: return get(&desc->compute, buf, size, "MATMUL_DESC_COMPUTE_TYPE");
    case CUBLASLT_MATMUL_DESC_SCALE_TYPE: return get(&desc->scale_type, buf, size, "MATMUL_DESC_SCALE_TYPE");
    case CUBLASLT_MATMUL_DESC_POINTER_MODE: return get(&desc->pointer_mode, buf, size, "MATMUL_DESC_POINTER_MODE");
    case CUBLASLT_MATMUL_DESC_TRANSA: return get(&desc->transa, buf, size, "MATMUL_DESC_TRANSA");
    case CUBLASLT_MATMUL_DESC_TRANSB: return get(&desc->transb, buf, size, "MATMUL_DESC_TRANSB");
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return get(&desc->epilogue, buf, size, "MATMUL_DESC_EPILOGUE");
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return get(&desc->bias, buf, size, "MATMUL_DESC_BIAS_POINTER");
    default: return fail(CUBLAS_STATUS_NOT_SUPPORTED, "matmul descriptor attribute %d not emulated", (int)attr);
    }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *layout, cudaDataType_t type, uint64_t rows,
                                          uint64_t cols, int64_t ld)
{
    if (layout == NULL)
        return CUBLAS_STATUS_INVALID_VALUE;
    *layout = new cublasLtMatrixLayoutOpaque_emu{(uint32_t)type, CUBLASLT_ORDER_COL, 1, rows, cols, ld};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout)
{
    delete layout;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t size)
{
    if (layout == NULL)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatrixLayoutSetAttribute on NULL");
    switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_TYPE: return get(&layout->type, buf, size, "MATRIX_LAYOUT_TYPE");
    case CUBLASLT_MATRIX_LAYOUT_ORDER: return get(&layout->order, buf, size, "MATRIX_LAYOUT_ORDER");
    case CUBLASLT_MATRIX_LAYOUT_ROWS: return get(&layout->rows, buf, size, "MATRIX_LAYOUT_ROWS");
    case CUBLASLT_MATRIX_LAYOUT_COLS: return get(&layout->cols, buf, size, "MATRIX_LAYOUT_COLS");
    case CUBLASLT_MATRIX_LAYOUT_LD: return get(&layout->ld, buf, size, "MATRIX_LAYOUT_LD");
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: return get(&layout->batch, buf, size, "MATRIX_LAYOUT_BATCH_COUNT");
    default: return fail(CUBLAS_STATUS_NOT_SUPPORTED, "matrix layout attribute %d not emulated", (int)attr);
    }
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *pref)
{
    if (pref == NULL)
        return CUBLAS_STATUS_INVALID_VALUE;
    // the documented defaults: no workspace, 256-byte alignment assumed
    *pref = new cublasLtMatmulPreferenceOpaque_emu{0, 0, 256, 256, 256, 256};
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref)
{
    delete pref;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref,
                                                    cublasLtMatmulPreferenceAttributes_t attr, const void *buf,
                                                    size_t size)
{
    if (pref == NULL)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulPreferenceSetAttribute on NULL");
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_SEARCH_MODE: return get(&pref->search_mode, buf, size, "MATMUL_PREF_SEARCH_MODE");
    case CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES:
        return get(&pref->max_workspace, buf, size, "MATMUL_PREF_MAX_WORKSPACE_BYTES");
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES: return get(&pref->align_a, buf, size, "MIN_ALIGNMENT_A_BYTES");
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES: return get(&pref->align_b, buf, size, "MIN_ALIGNMENT_B_BYTES");
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES: return get(&pref->align_c, buf, size, "MIN_ALIGNMENT_C_BYTES");
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return get(&pref->align_d, buf, size, "MIN_ALIGNMENT_D_BYTES");
    default: return fail(CUBLAS_STATUS_NOT_SUPPORTED, "preference attribute %d not emulated", (int)attr);
    }
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d,
                                              cublasLtMatmulPreference_t pref, int requested,
                                              cublasLtMatmulHeuristicResult_t results[], int *returned)
{
    if (!valid_handle(handle))
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, "heuristic query with an invalid handle");
    if (pref == NULL || requested < 1 || results == NULL || returned == NULL)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "heuristic query: NULL preference/results or requested < 1");
    *returned = 0;
    Shape shape;
    cublasStatus_t s = check_problem(desc, a, b, c, d, &shape);
    if (s != CUBLAS_STATUS_SUCCESS)
        return s;
    const uint32_t aligns[4] = {pref->align_a, pref->align_b, pref->align_c, pref->align_d};
    for (uint32_t al : aligns)
        if (al == 0 || (al & (al - 1)) != 0 || al % 4 != 0)
            return fail(CUBLAS_STATUS_NOT_SUPPORTED, "no algorithm for a %u-byte alignment", al);
    memset(&results[0], 0, sizeof(results[0]));
    results[0].algo.data[0] = ALGO_MAGIC;
    for (int i = 0; i < 4; i++)
        results[0].algo.data[1 + i] = aligns[i];
    const size_t ws = pref->max_workspace < ALGO_WORKSPACE ? pref->max_workspace : ALGO_WORKSPACE;
    results[0].algo.data[5] = ws;
    results[0].workspaceSize = ws;
    results[0].state = CUBLAS_STATUS_SUCCESS;
    results[0].wavesCount = 1.0f;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void *alpha_p, const void *A,
                              cublasLtMatrixLayout_t a, const void *B, cublasLtMatrixLayout_t b, const void *beta_p,
                              const void *C, cublasLtMatrixLayout_t c, void *D, cublasLtMatrixLayout_t d,
                              const cublasLtMatmulAlgo_t *algo, void *workspace, size_t workspace_bytes,
                              cudaStream_t)
{
    if (!valid_handle(handle))
        return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublasLtMatmul with an invalid handle");
    Shape shape;
    cublasStatus_t s = check_problem(desc, a, b, c, d, &shape);
    if (s != CUBLAS_STATUS_SUCCESS)
        return s;
    if (alpha_p == NULL || beta_p == NULL || A == NULL || B == NULL || C == NULL || D == NULL)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmul: a NULL alpha, beta or matrix pointer");
    if (algo == NULL)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmul without an algorithm is not emulated");
    if (algo->data[0] != ALGO_MAGIC)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmul: the algorithm is not one the heuristic returned");
    const float alpha = *(const float *)alpha_p, beta = *(const float *)beta_p;
    const size_t a_bytes = extent_bytes(a), b_bytes = extent_bytes(b), c_bytes = extent_bytes(c),
                 d_bytes = extent_bytes(d);
    struct {
        const void *p;
        size_t bytes;
        const char *name;
    } operands[4] = {{A, a_bytes, "A"}, {B, b_bytes, "B"}, {C, c_bytes, "C"}, {D, d_bytes, "D"}};
    for (int i = 0; i < 4; i++) {
        if (i == 2 && beta == 0.0f)
            continue; // C is not read
        if (!emu_is_device_range(operands[i].p, operands[i].bytes))
            return fail(CUBLAS_STATUS_INVALID_VALUE, "matrix %s [%p, +%zu bytes) is not inside one device allocation",
                        operands[i].name, operands[i].p, operands[i].bytes);
        if (alignment_of(operands[i].p) < algo->data[1 + i])
            return fail(CUBLAS_STATUS_NOT_SUPPORTED,
                        "matrix %s at %p is %u-byte aligned, the algorithm was chosen for %llu-byte alignment",
                        operands[i].name, operands[i].p, alignment_of(operands[i].p),
                        (unsigned long long)algo->data[1 + i]);
    }
    if (C == D && (c->rows != d->rows || c->cols != d->cols || c->ld != d->ld))
        return fail(CUBLAS_STATUS_INVALID_VALUE, "in-place matmul (C == D) with different C and D layouts");
    if (C != D && beta != 0.0f && overlaps(C, c_bytes, D, d_bytes))
        return fail(CUBLAS_STATUS_INVALID_VALUE, "C and D overlap without being the same matrix");
    if (overlaps(D, d_bytes, A, a_bytes) || overlaps(D, d_bytes, B, b_bytes))
        return fail(CUBLAS_STATUS_INVALID_VALUE, "D overlaps A or B");
    const size_t ws_need = algo->data[5];
    if (workspace_bytes < ws_need)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "workspace of %zu bytes, the algorithm needs %zu", workspace_bytes,
                    ws_need);
    if (workspace_bytes > 0) {
        if (workspace == NULL || !emu_is_device_range(workspace, workspace_bytes))
            return fail(CUBLAS_STATUS_INVALID_VALUE, "workspace [%p, +%zu) is not inside one device allocation",
                        workspace, workspace_bytes);
        if (overlaps(workspace, workspace_bytes, D, d_bytes) || overlaps(workspace, workspace_bytes, A, a_bytes) ||
            overlaps(workspace, workspace_bytes, B, b_bytes) ||
            (beta != 0.0f && overlaps(workspace, workspace_bytes, C, c_bytes)))
            return fail(CUBLAS_STATUS_INVALID_VALUE, "the workspace overlaps a matrix");
    }
    const float *bias = NULL;
    if (desc->epilogue == CUBLASLT_EPILOGUE_BIAS) {
        bias = (const float *)desc->bias;
        if (bias == NULL)
            return fail(CUBLAS_STATUS_INVALID_VALUE, "BIAS epilogue without a bias pointer");
        if (!emu_is_device_range(bias, shape.m * sizeof(float)))
            return fail(CUBLAS_STATUS_INVALID_VALUE, "bias [%p, %llu floats) is not inside one device allocation",
                        (const void *)bias, (unsigned long long)shape.m);
    }
    if (ws_need > 0)
        memset(workspace, 0xa5, ws_need); // the algorithm's scratch

    // op(A)(i, l) = A[i * sai + l * sal], op(B)(l, j) = B[l * sbl + j * sbj]
    const float *Af = (const float *)A, *Bf = (const float *)B, *Cf = (const float *)C;
    float *Df = (float *)D;
    const int64_t lda = a->ld, ldb = b->ld, ldc = c->ld, ldd = d->ld;
    const int64_t sai = desc->transa ? lda : 1, sal = desc->transa ? 1 : lda;
    const int64_t sbl = desc->transb ? ldb : 1, sbj = desc->transb ? 1 : ldb;
    const int64_t m = (int64_t)shape.m, n = (int64_t)shape.n, k = (int64_t)shape.k;
    const int64_t RB = 16;
    for (int64_t j = 0; j < n; j++) {
        for (int64_t i0 = 0; i0 < m; i0 += RB) {
            const int64_t rows = m - i0 < RB ? m - i0 : RB;
            float acc[16] = {0};
            if (rows == RB) {
                for (int64_t l = 0; l < k; l++) {
                    const float bv = Bf[l * sbl + j * sbj];
                    const float *ap = Af + i0 * sai + l * sal;
                    for (int r = 0; r < RB; r++)
                        acc[r] = fmaf(ap[r * sai], bv, acc[r]);
                }
            } else {
                for (int64_t l = 0; l < k; l++) {
                    const float bv = Bf[l * sbl + j * sbj];
                    const float *ap = Af + i0 * sai + l * sal;
                    for (int r = 0; r < rows; r++)
                        acc[r] = fmaf(ap[r * sai], bv, acc[r]);
                }
            }
            for (int r = 0; r < rows; r++) {
                const int64_t i = i0 + r;
                float v = alpha * acc[r];
                if (beta != 0.0f)
                    v = fmaf(beta, Cf[i + j * ldc], v);
                if (bias != NULL)
                    v += bias[i];
                Df[i + j * ldd] = v;
            }
        }
    }
    return CUBLAS_STATUS_SUCCESS;
}
