/*
 * bench_matmul.c - the linear layer's three products (forward, input gradient,
 * weight gradient) through the CPU op table (fp32: OpenBLAS in OpenMP blocks)
 * and the "cpu-bf16" table (rg_gemm_bf16.c), on the shapes of the models the
 * benchmarks train; GFLOP/s of the fastest of R calls, one Markdown row per
 * shape. `make -C csrc bench-matmul` builds and runs it; OMP_NUM_THREADS sets
 * the threads. A measurement, not a test: it checks nothing.
 *
 *   build/bench_matmul [R]
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#include "rg_backend.h"
#include "rg_gemm_bf16.h"

typedef struct {
    const char *what;
    int rows, IC, OC;
} shape;

static const shape SHAPES[] = {
    {"gpt2/distilbert qkv, B*T=1024", 1024, 768, 2304},
    {"gpt2/distilbert mlp up, B*T=2048", 2048, 768, 3072},
    {"gpt2/distilbert mlp down, B*T=2048", 2048, 3072, 768},
    {"gpt2/distilbert proj, B*T=2048", 2048, 768, 768},
    {"gpt2 lm head, a 256-row chunk", 256, 768, 50257},
    {"llama mlp gate+up, B*T=1024", 1024, 576, 3072},
    {"llama lm head, a 256-row chunk", 256, 576, 49152},
    {"decoding, 20 rows, mlp up", 20, 768, 3072},
};

typedef struct {
    const rg_ops_table *ops;
    int N, IC, OC;
    float *inp, *w, *out, *dout, *dinp, *dw;
} job;

static void forward(job *j) { j->ops->matmul_forward(j->out, j->inp, j->w, NULL, j->N, j->IC, j->OC); }
static void input_grad(job *j) { j->ops->matmul_backward(j->dinp, NULL, NULL, j->dout, j->inp, j->w, j->N, j->IC, j->OC); }
static void weight_grad(job *j) { j->ops->matmul_backward(NULL, j->dw, NULL, j->dout, j->inp, j->w, j->N, j->IC, j->OC); }

/* GFLOP/s of the fastest of `repeats` calls, after one warm-up call */
static double rate(void (*fn)(job *), job *j, int repeats)
{
    fn(j);
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        const double t0 = omp_get_wtime();
        fn(j);
        const double t = omp_get_wtime() - t0;
        best = t < best ? t : best;
    }
    return 2.0 * j->N * j->IC * j->OC / best / 1e9;
}

static float *filled(size_t n, float step)
{
    float *x = malloc(n * sizeof(float));
    if (x == NULL) {
        fprintf(stderr, "bench_matmul: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(i % 13) * step - 0.06f;
    return x;
}

int main(int argc, char **argv)
{
    const int repeats = argc > 1 ? atoi(argv[1]) : 5;
    const rg_ops_table *fp32 = rg_ops_cpu(), *bf16 = rg_ops_cpu_bf16();
    printf("threads %d, fastest of %d; GFLOP/s fp32 (%s) / bf16 (%s)\n\n", omp_get_max_threads(), repeats,
           fp32->name, bf16 ? bf16->name : "unsupported here");
    printf("| product | rows x IC -> OC | forward | input gradient | weight gradient |\n|---|---|---|---|---|\n");
    for (size_t s = 0; s < sizeof(SHAPES) / sizeof(SHAPES[0]); s++) {
        const shape *sh = &SHAPES[s];
        const size_t N = sh->rows, IC = sh->IC, OC = sh->OC;
        job j = {fp32, sh->rows, sh->IC, sh->OC, filled(N * IC, 0.01f), filled(OC * IC, 0.01f),
                 filled(N * OC, 0.0f), filled(N * OC, 0.01f), filled(N * IC, 0.0f), filled(OC * IC, 0.0f)};
        double r[2][3] = {{0}};
        for (int p = 0; p < (bf16 ? 2 : 1); p++) {
            j.ops = p ? bf16 : fp32;
            r[p][0] = rate(forward, &j, repeats);
            r[p][1] = rate(input_grad, &j, repeats);
            r[p][2] = rate(weight_grad, &j, repeats);
        }
        printf("| %s | %d x %d -> %d | %.0f / %.0f | %.0f / %.0f | %.0f / %.0f |\n", sh->what, sh->rows, sh->IC,
               sh->OC, r[0][0], r[1][0], r[0][1], r[1][1], r[0][2], r[1][2]);
        fflush(stdout);
        free(j.inp), free(j.w), free(j.out), free(j.dout), free(j.dinp), free(j.dw);
    }
    return 0;
}
