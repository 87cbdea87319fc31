// embedding.cu - token (+ learned position) (+ token type) embeddings.
// Forward: one thread per output element, the adds in the CPU's order (so
// the result is bit for bit the CPU's). Backward: a scatter-add into the
// table rows; rows that share a token id (or position, or type) add into the
// same table row, and atomicAdd is the sane choice there: the table is large
// (V x C), the collisions few, and a sort by token id would cost more than
// the scatter. The float atomics make the order of those adds (hence the
// last bits of a repeated row's gradient) vary from run to run.
#include "rgcu.h"

static inline unsigned embedding_blocks(size_t n)
{
    const size_t cap = (size_t)RGCU_THREADS << 20; // grid-stride beyond 2^20 blocks
    return rgcu_blocks(n < cap ? n : cap, RGCU_THREADS);
}

// Flat (N, C) index i: row n = i / C, channel c = i % C; consecutive threads
// read consecutive channels of one table row (coalesced).
static __global__ void embedding_forward_kernel(float *out,               // (N, C)
                                                const int32_t *tokens,    // (N,)
                                                const int32_t *positions, // (N,) or NULL
                                                const int32_t *types,     // (N,) or NULL
                                                const float *wte,         // (V, C)
                                                const float *wpe,         // (P, C) or NULL
                                                const float *wtt,         // (type_vocab, C) or NULL
                                                size_t total /* N * C */, int C)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const size_t n = i / (size_t)C, c = i % (size_t)C;
        float v = wte[(size_t)tokens[n] * C + c];
        if (positions != NULL && wpe != NULL)
            v += wpe[(size_t)positions[n] * C + c];
        if (types != NULL && wtt != NULL)
            v += wtt[(size_t)types[n] * C + c];
        out[i] = v;
    }
}

extern "C" void rgcu_embedding_forward(float *out, const int32_t *tokens, const int32_t *positions,
                                       const int32_t *types, const float *wte, const float *wpe,
                                       const float *wtt, int N, int C)
{
    if (N <= 0 || C <= 0)
        return;
    const size_t total = (size_t)N * (size_t)C;
    embedding_forward_kernel<<<embedding_blocks(total), RGCU_THREADS, 0, rgcu_stream()>>>(
        out, tokens, positions, types, wte, wpe, wtt, total, C);
    rgcu_check_launch("embedding_forward");
}

// Flat (N, C) index as the forward; each present table gets dout[i] added
// to its row's channel c with atomicAdd (see the top of the file).
static __global__ void embedding_backward_kernel(float *dwte,              // (V, C) += or NULL
                                                 float *dwpe,              // (P, C) += or NULL
                                                 float *dwtt,              // (type_vocab, C) += or NULL
                                                 const float *dout,        // (N, C)
                                                 const int32_t *tokens,    // (N,)
                                                 const int32_t *positions, // (N,) or NULL
                                                 const int32_t *types,     // (N,) or NULL
                                                 size_t total /* N * C */, int C)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const size_t n = i / (size_t)C, c = i % (size_t)C;
        const float dy = dout[i];
        if (dwte != NULL)
            atomicAdd(dwte + (size_t)tokens[n] * C + c, dy);
        if (dwpe != NULL && positions != NULL)
            atomicAdd(dwpe + (size_t)positions[n] * C + c, dy);
        if (dwtt != NULL && types != NULL)
            atomicAdd(dwtt + (size_t)types[n] * C + c, dy);
    }
}

extern "C" void rgcu_embedding_backward(float *dwte, float *dwpe, float *dwtt, const float *dout,
                                        const int32_t *tokens, const int32_t *positions,
                                        const int32_t *types, int N, int C)
{
    if (N <= 0 || C <= 0)
        return;
    if (dwte == NULL && (dwpe == NULL || positions == NULL) && (dwtt == NULL || types == NULL))
        return; // nothing wanted
    const size_t total = (size_t)N * (size_t)C;
    embedding_backward_kernel<<<embedding_blocks(total), RGCU_THREADS, 0, rgcu_stream()>>>(
        dwte, dwpe, dwtt, dout, tokens, positions, types, total, C);
    rgcu_check_launch("embedding_backward");
}
