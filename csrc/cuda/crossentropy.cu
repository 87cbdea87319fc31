// crossentropy.cu - softmax cross-entropy over vocabulary rows (N, V).
//
// One block per row, threads striding over V (any V, ~50k for GPT-2): the
// max, then the sum of exp(x - max), each a warp-shuffle tree then a tree
// over the warps. Rows with target < 0 are ignored (lse 0, gradient 0). The
// forward's summed loss is a host value: per-row losses (double) go to
// scratch, one block adds them in a fixed order (deterministic), and that
// one pair (loss, count) is copied back after a stream synchronize.
#include <math.h>

#include "rgcu.h"

#define CE_THREADS 512
#define CE_SUM_THREADS 1024

// The block's max / sum, returned to every thread (red: 32 shared floats).
// Every warp reduces the per-warp results itself, so no broadcast is needed;
// the leading barrier lets a second call reuse `red`.
static __device__ float ce_block_max(float v, float *red)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = (blockDim.x + 31) / 32;
    v = rgcu_warp_max(v);
    __syncthreads();
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    return rgcu_warp_max(lane < nwarps ? red[lane] : -INFINITY);
}

static __device__ float ce_block_sum(float v, float *red)
{
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = (blockDim.x + 31) / 32;
    v = rgcu_warp_sum(v);
    __syncthreads();
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    return rgcu_warp_sum(lane < nwarps ? red[lane] : 0.0f);
}

// ---- forward ----

// grid N, block CE_THREADS: lse[n] = max + log(sum exp(x - max)) and the
// row's loss lse - x[target] (0 for an ignored row).
static __global__ void crossentropy_forward_kernel(float *lse,              // (N,)
                                                   double *row_loss,        // (N,)
                                                   const float *logits,     // (N, V)
                                                   const int32_t *targets,  // (N,)
                                                   int V)
{
    __shared__ float red[32];
    const int n = blockIdx.x;
    const int target = targets[n];
    if (target < 0) { // the whole block leaves, before any barrier
        if (threadIdx.x == 0) {
            lse[n] = 0.0f;
            row_loss[n] = 0.0;
        }
        return;
    }
    const float *x = logits + (size_t)n * V;
    float m = -INFINITY;
    for (int v = threadIdx.x; v < V; v += blockDim.x)
        m = fmaxf(m, x[v]);
    m = ce_block_max(m, red);
    float sum = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x)
        sum += expf(x[v] - m);
    sum = ce_block_sum(sum, red);
    if (threadIdx.x == 0) {
        const float l = m + logf(sum);
        lse[n] = l;
        row_loss[n] = (double)l - (double)x[target];
    }
}

// grid 1, block CE_SUM_THREADS: result = (sum of row losses, rows counted),
// added in a fixed order.
static __global__ void crossentropy_total_kernel(double *result,           // (2,)
                                                 const double *row_loss,   // (N,)
                                                 const int32_t *targets,   // (N,)
                                                 int N)
{
    __shared__ double red_loss[32];
    __shared__ long long red_count[32];
    double loss = 0.0;
    long long count = 0;
    for (int n = threadIdx.x; n < N; n += blockDim.x) {
        loss += row_loss[n];
        count += targets[n] >= 0;
    }
    loss = rgcu_warp_sum(loss);
    count = rgcu_warp_sum(count);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, nwarps = (blockDim.x + 31) / 32;
    if (lane == 0) {
        red_loss[warp] = loss;
        red_count[warp] = count;
    }
    __syncthreads();
    if (warp == 0) {
        loss = lane < nwarps ? red_loss[lane] : 0.0;
        count = lane < nwarps ? red_count[lane] : 0;
        loss = rgcu_warp_sum(loss);
        count = rgcu_warp_sum(count);
        if (lane == 0) {
            result[0] = loss;
            result[1] = (double)count;
        }
    }
}

extern "C" double rgcu_crossentropy_forward(float *lse, const float *logits, const int32_t *targets, int N,
                                            int V, long *count)
{
    if (count != NULL)
        *count = 0;
    if (N <= 0)
        return 0.0;
    if (V <= 0) {
        rgcu_fail(RG_ERR_INVALID_ARG, "crossentropy_forward");
        return 0.0;
    }
    // (N,) row losses then the (2,) result
    double *scratch = (double *)rgcu_scratch(RGCU_SCRATCH_ATTENTION, ((size_t)N + 2) * sizeof(double));
    if (scratch == NULL)
        return 0.0;
    double *result = scratch + N;
    crossentropy_forward_kernel<<<(unsigned)N, CE_THREADS, 0, rgcu_stream()>>>(lse, scratch, logits, targets, V);
    rgcu_check_launch("crossentropy_forward");
    crossentropy_total_kernel<<<1, CE_SUM_THREADS, 0, rgcu_stream()>>>(result, scratch, targets, N);
    rgcu_check_launch("crossentropy_forward total");
    double host[2] = {0.0, 0.0};
    if (cudaMemcpyAsync(host, result, sizeof(host), cudaMemcpyDeviceToHost, rgcu_stream()) != cudaSuccess ||
        cudaStreamSynchronize(rgcu_stream()) != cudaSuccess) {
        rgcu_fail(RG_ERR_CUDA, "crossentropy_forward copy");
        cudaGetLastError();
        return 0.0;
    }
    if (count != NULL)
        *count = (long)host[1];
    return host[0];
}

// ---- backward ----

// grid N, block CE_THREADS, in place: x = scale * (exp(x - lse) - onehot(target)),
// an ignored row zeros.
static __global__ void crossentropy_backward_kernel(float *logits,           // (N, V) in place
                                                    const float *lse,        // (N,)
                                                    const int32_t *targets,  // (N,)
                                                    int V, float scale)
{
    const int n = blockIdx.x;
    const int target = targets[n];
    float *x = logits + (size_t)n * V;
    if (target < 0) {
        for (int v = threadIdx.x; v < V; v += blockDim.x)
            x[v] = 0.0f;
        return;
    }
    const float l = lse[n];
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
        float g = scale * expf(x[v] - l);
        if (v == target)
            g -= scale;
        x[v] = g;
    }
}

extern "C" void rgcu_crossentropy_backward(float *logits, const float *lse, const int32_t *targets, int N,
                                           int V, float scale)
{
    if (N <= 0 || V <= 0)
        return;
    crossentropy_backward_kernel<<<(unsigned)N, CE_THREADS, 0, rgcu_stream()>>>(logits, lse, targets, V, scale);
    rgcu_check_launch("crossentropy_backward");
}
