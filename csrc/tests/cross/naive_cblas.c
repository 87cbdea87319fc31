/*
 * naive_cblas.c - the three BLAS calls the core makes (scipy-openblas32's
 * names), written plainly, for building the C tests where no optimised BLAS is
 * at hand (the aarch64 cross build run under qemu: make -C csrc cross-aarch64).
 * Not for speed.
 */
#include <cblas.h>

static float at(const float *m, int ld, int row_major, int r, int c)
{
    return row_major ? m[(long)r * ld + c] : m[(long)c * ld + r];
}

void scipy_cblas_sgemm(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE ta, const enum CBLAS_TRANSPOSE tb,
                 const blasint M, const blasint N, const blasint K, const float alpha, const float *A,
                 const blasint lda, const float *B, const blasint ldb, const float beta, float *C,
                 const blasint ldc)
{
    const int rm = order == CblasRowMajor;
    const int trans_a = ta != CblasNoTrans, trans_b = tb != CblasNoTrans;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0.0;
            for (int k = 0; k < K; k++)
                s += (double)(trans_a ? at(A, lda, rm, k, i) : at(A, lda, rm, i, k)) *
                     (trans_b ? at(B, ldb, rm, j, k) : at(B, ldb, rm, k, j));
            float *c = rm ? &C[(long)i * ldc + j] : &C[(long)j * ldc + i];
            *c = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * *c));
        }
}

void scipy_cblas_sgemv(const enum CBLAS_ORDER order, const enum CBLAS_TRANSPOSE trans, const blasint m, const blasint n,
                 const float alpha, const float *a, const blasint lda, const float *x, const blasint incx,
                 const float beta, float *y, const blasint incy)
{
    const int rm = order == CblasRowMajor, t = trans != CblasNoTrans;
    const int rows = t ? n : m, cols = t ? m : n;
    for (int i = 0; i < rows; i++) {
        double s = 0.0;
        for (int j = 0; j < cols; j++)
            s += (double)(t ? at(a, lda, rm, j, i) : at(a, lda, rm, i, j)) * x[(long)j * incx];
        float *out = &y[(long)i * incy];
        *out = (float)(alpha * s + (beta == 0.0f ? 0.0 : (double)beta * *out));
    }
}

void scipy_openblas_set_num_threads(int n) { (void)n; }

char *scipy_openblas_get_corename(void)
{
    static char name[] = "naive (csrc/tests/cross)";
    return name;
}
