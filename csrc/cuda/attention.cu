// attention.cu - scaled dot-product attention over packed qkv rows, forward,
// backward and the cached (generation) forward, without the (T, T)
// probability matrix: a flash-attention-style online softmax.
//
// Layout of a block: W warps (W picked on the host so the shared memory
// fits), each warp owning ATT_R rows (queries in the forward and the dq
// pass, keys in the dk/dv pass); its own rows of q (and dy, and the output
// or gradient accumulators) sit in shared memory as (rows, HS). The other
// side is streamed through ATT_KT = 32 rows at a time, one per lane, staged
// in shared memory in chunks of ATT_DC head dims, so any HS works: a lane
// forms its row's dot products over the chunks, the warp reduces max/sum
// with shuffles, and the weighted sums over the 32 staged rows are taken
// with lanes striding over the head dims.
//
// What the forward saves in `att` (B, NH, T, RG_ATTENTION_ROW_STATS = 2) for
// the backward:
//   att[0 .. B*NH*T)        the log-sum-exp of each query row's scaled
//                            scores, -INFINITY for a row that sees no key;
//   then (int32) B*T words  bit 0: key_mask[b, j] != 0 (or no mask),
//                            bit 1: causal (the backward reads these, not
//                            the key_mask and causal it is passed). Only when
//                            T >= 2; with T == 1 the lse alone says
//                            everything (the one key is visible iff the lse
//                            is finite).
// The backward recomputes the probabilities from q, k and the lse: pass 1
// (per query row) the softmax-backward term D = sum_j P_j dP_j, then dq;
// pass 2 (per key row of each kv head) dk and dv over every query head of
// the group, so every gradient element has one writer (no atomics).
//
// Dropout: element (b, h, t, j) keeps with rg_rng_keep(stream,
// ((b*NH + h)*T + t)*T + j, p), the CPU's index, so the masks are the CPU's.
#include <math.h>

#include "rg_rng.h"
#include "rgcu.h"

#define ATT_R 4             // rows per warp
#define ATT_KT 32           // streamed rows per tile: one per lane
#define ATT_DC 64           // head dims per staged chunk
#define ATT_LD (ATT_DC + 1) // padded chunk row: lanes reading different rows hit different banks
#define ATT_MAX_WARPS 8
#define ATT_PREFERRED_SMEM (64 * 1024)

// buf (ATT_KT, ATT_LD) <- rows r0 .. r0+31 of src (row stride ld), head dims
// c0 .. c0+dc-1; rows at or past n are zeros. Called by the whole block.
static __device__ void att_stage_chunk(float *buf, const float *src, size_t ld, int r0, int n, int c0, int dc)
{
    for (int i = threadIdx.x; i < ATT_KT * dc; i += blockDim.x) {
        const int r = i / dc, d = i - r * dc;
        buf[r * ATT_LD + d] = r0 + r < n ? src[(size_t)(r0 + r) * ld + c0 + d] : 0.0f;
    }
}

// dst (rows, HS) <- rows r0 .. r0+rows-1 of src (row stride ld); rows at or
// past n are zeros. Called by the whole block.
static __device__ void att_stage_rows(float *dst, const float *src, size_t ld, int r0, int rows, int n, int HS)
{
    for (int i = threadIdx.x; i < rows * HS; i += blockDim.x) {
        const int r = i / HS, d = i - r * HS;
        dst[i] = r0 + r < n ? src[(size_t)(r0 + r) * ld + d] : 0.0f;
    }
}

static __device__ void att_zero(float *dst, int n)
{
    for (int i = threadIdx.x; i < n; i += blockDim.x)
        dst[i] = 0.0f;
}

// For the warp's ATT_R own rows (rows warp*ATT_R + r of own_a and own_b,
// (W*ATT_R, HS) in shared memory) against the 32 streamed rows r0 .. r0+31
// (row `lane` for this lane) of a_src and b_src (row strides lda, ldb; rows
// at or past n read as zeros): sa[r] += own_a[r] . a[lane] and
// sb[r] += own_b[r] . b[lane] over all HS dims, staged chunk by chunk
// through buf_a and buf_b. Called by the whole block (it synchronises).
static __device__ void att_dot_two(float *sa, float *sb, const float *own_a, const float *own_b, float *buf_a,
                                   float *buf_b, const float *a_src, size_t lda, const float *b_src, size_t ldb,
                                   int r0, int n, int HS)
{
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int c0 = 0; c0 < HS; c0 += ATT_DC) {
        const int dc = min(ATT_DC, HS - c0);
        __syncthreads(); // the previous readers are done with buf_a / buf_b
        att_stage_chunk(buf_a, a_src + c0, lda, r0, n, 0, dc);
        att_stage_chunk(buf_b, b_src + c0, ldb, r0, n, 0, dc);
        __syncthreads();
        const float *ar = buf_a + lane * ATT_LD, *br = buf_b + lane * ATT_LD;
        #pragma unroll
        for (int r = 0; r < ATT_R; r++) {
            const float *oa = own_a + (size_t)(warp * ATT_R + r) * HS + c0;
            const float *ob = own_b + (size_t)(warp * ATT_R + r) * HS + c0;
            float a = sa[r], e = sb[r];
            for (int d = 0; d < dc; d++) {
                a += oa[d] * ar[d];
                e += ob[d] * br[d];
            }
            sa[r] = a;
            sb[r] = e;
        }
    }
}

// ---- launch geometry ----

// The largest per-block shared memory this device allows (opt-in).
static size_t att_smem_optin(void)
{
    static int optin = -1;
    if (optin < 0) {
        int dev = 0;
        if (cudaGetDevice(&dev) != cudaSuccess ||
            cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess ||
            optin < 48 * 1024) {
            cudaGetLastError();
            optin = 48 * 1024;
        }
    }
    return (size_t)optin;
}

// Shared floats of a block of W warps: `planes` (W*R, HS) arrays, two staged
// chunks and `prob_planes` (W*R, 32) arrays.
static size_t att_smem_bytes(int W, int HS, int planes, int prob_planes)
{
    const size_t rows = (size_t)W * ATT_R;
    return ((size_t)planes * rows * HS + 2 * ATT_KT * ATT_LD + (size_t)prob_planes * rows * ATT_KT) *
           sizeof(float);
}

// Warps per block for `n_rows` rows of work: the most (up to 8, no more than
// the rows need) that fit the preferred shared memory, else the most that
// fit the device's limit; 0 (recorded) when not even one warp fits (HS in
// the thousands). Raises the kernel's dynamic shared memory limit as needed.
static int att_pick_warps(const void *kernel, int n_rows, int HS, int planes, int prob_planes, size_t *bytes,
                          const char *what)
{
    int want = (n_rows + ATT_R - 1) / ATT_R;
    want = want < 1 ? 1 : want > ATT_MAX_WARPS ? ATT_MAX_WARPS : want;
    const size_t optin = att_smem_optin();
    const size_t preferred = optin < ATT_PREFERRED_SMEM ? optin : ATT_PREFERRED_SMEM;
    int W = want;
    while (W > 1 && att_smem_bytes(W, HS, planes, prob_planes) > preferred)
        W /= 2;
    *bytes = att_smem_bytes(W, HS, planes, prob_planes);
    if (*bytes > optin) {
        rgcu_fail(RG_ERR_INVALID_ARG, what); // head size too large for shared memory
        return 0;
    }
    if (*bytes > 48 * 1024 &&
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)*bytes) != cudaSuccess) {
        rgcu_fail(RG_ERR_CUDA, what);
        cudaGetLastError();
        return 0;
    }
    return W;
}

// Where the forward kernel reads q, k and v (strides in floats): row t of
// query head h of batch b at q + b*q_b + t*q_t + h*HS; key j of kv head g at
// k + b*k_b + g*k_g + j*k_t (v alike). Packed qkv and the (B, NKV, S, HS)
// cache differ only in these.
struct att_geom {
    const float *q;
    size_t q_b, q_t;
    const float *k;
    size_t k_b, k_g, k_t;
    const float *v;
    size_t v_b, v_g, v_t;
    const int32_t *key_mask; // (B, Tk) or NULL
    int Tq, Tk, NH, group, HS;
    int causal, offset; // causal: key j visible to query t iff j <= t + offset
};

// ---- forward ----

// grid (ceil(Tq / (W*R)) * NH * B), block 32*W: block = (b, h, tile of W*R
// queries), longest causal tiles first. Online softmax over key tiles of 32:
// m = running max, l = running sum of exp(s - m), o (shared) = running
// sum of the dropped-out exp(s - m) * v; out = o / l, lse = m + log(l).
static __global__ void __launch_bounds__(ATT_MAX_WARPS * 32)
    attention_forward_kernel(float *out,  // (B, Tq, NH*HS)
                             float *lse,  // (B, NH, Tq) or NULL
                             att_geom g, float scale, float attn_p, uint64_t stream)
{
    extern __shared__ float smem[];
    const int W = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int Qt = W * ATT_R, HS = g.HS;
    float *q_s = smem;                   // (Qt, HS)
    float *o_s = q_s + (size_t)Qt * HS;  // (Qt, HS)
    float *k_s = o_s + (size_t)Qt * HS;  // (ATT_KT, ATT_LD)
    float *v_s = k_s + ATT_KT * ATT_LD;  // (ATT_KT, ATT_LD)
    float *p_s = v_s + ATT_KT * ATT_LD;  // (Qt, ATT_KT)

    const int ntiles = (g.Tq + Qt - 1) / Qt;
    const int tile = ntiles - 1 - (int)(blockIdx.x % ntiles);
    const int h = (int)((blockIdx.x / ntiles) % g.NH);
    const int b = (int)(blockIdx.x / ntiles / g.NH);
    const int kvh = h / g.group;
    const int q0 = tile * Qt;
    const float *q = g.q + (size_t)b * g.q_b + (size_t)h * HS;
    const float *k = g.k + (size_t)b * g.k_b + (size_t)kvh * g.k_g;
    const float *v = g.v + (size_t)b * g.v_b + (size_t)kvh * g.v_g;
    const int32_t *mask = g.key_mask != NULL ? g.key_mask + (size_t)b * g.Tk : NULL;

    att_stage_rows(q_s, q, g.q_t, q0, Qt, g.Tq, HS);
    att_zero(o_s, Qt * HS);
    __syncthreads();

    int kend = g.Tk; // keys past kend are visible to no query of this block
    if (g.causal) {
        const int qlast = min(g.Tq - 1, q0 + Qt - 1);
        kend = min(kend, qlast + g.offset + 1);
    }
    const int nchunk = (HS + ATT_DC - 1) / ATT_DC;
    const float keep_scale = attn_p > 0.0f ? 1.0f / (1.0f - attn_p) : 1.0f;
    float m[ATT_R], l[ATT_R], corr[ATT_R];
    #pragma unroll
    for (int r = 0; r < ATT_R; r++) {
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }

    for (int j0 = 0; j0 < kend; j0 += ATT_KT) {
        // scores: lane = key j0 + lane, s[r] = q_r . k_j over the chunks
        float s[ATT_R];
        #pragma unroll
        for (int r = 0; r < ATT_R; r++)
            s[r] = 0.0f;
        for (int c = 0; c < nchunk; c++) {
            const int c0 = c * ATT_DC, dc = min(ATT_DC, HS - c0);
            __syncthreads(); // the previous tile's readers are done with k_s / v_s
            att_stage_chunk(k_s, k + c0, g.k_t, j0, kend, 0, dc);
            if (nchunk == 1)
                att_stage_chunk(v_s, v, g.v_t, j0, kend, 0, dc);
            __syncthreads();
            const float *kr = k_s + lane * ATT_LD;
            #pragma unroll
            for (int r = 0; r < ATT_R; r++) {
                const float *qr = q_s + (size_t)(warp * ATT_R + r) * HS + c0;
                float acc = s[r];
                for (int d = 0; d < dc; d++)
                    acc += qr[d] * kr[d];
                s[r] = acc;
            }
        }
        // online softmax per row; p_s gets the (dropped-out) weights of this tile
        const int j = j0 + lane;
        const bool key_ok = j < kend && (mask == NULL || mask[j] != 0);
        #pragma unroll
        for (int r = 0; r < ATT_R; r++) {
            const int t = q0 + warp * ATT_R + r;
            const bool vis = key_ok && t < g.Tq && (!g.causal || j <= t + g.offset);
            const float sc = vis ? s[r] * scale : -INFINITY;
            const float mnew = fmaxf(m[r], rgcu_warp_max(sc));
            float p = 0.0f, cr = 1.0f;
            if (mnew > -INFINITY) { // a row that has seen no key yet stays at m = -inf, l = 0, o = 0
                p = vis ? expf(sc - mnew) : 0.0f;
                cr = expf(m[r] - mnew); // 0 when m was -inf (o is still 0 then)
            }
            l[r] = l[r] * cr + rgcu_warp_sum(p);
            m[r] = mnew;
            corr[r] = cr;
            // The CPU drops only nonzero probabilities; a zero one stays zero either way.
            float pd = p;
            if (attn_p > 0.0f && p != 0.0f) {
                const uint64_t idx = (((uint64_t)b * g.NH + h) * (uint64_t)g.Tq + (uint64_t)t) * (uint64_t)g.Tk + j;
                pd = rg_rng_keep(stream, idx, attn_p) ? p * keep_scale : 0.0f;
            }
            p_s[(warp * ATT_R + r) * ATT_KT + lane] = pd;
        }
        __syncwarp(); // p_s rows are written and read by the same warp only
        // o = o * corr + sum_j pd_j v_j, lanes striding over the head dims
        for (int c = 0; c < nchunk; c++) {
            const int c0 = c * ATT_DC, dc = min(ATT_DC, HS - c0);
            if (nchunk > 1) {
                __syncthreads();
                att_stage_chunk(v_s, v + c0, g.v_t, j0, kend, 0, dc);
                __syncthreads();
            }
            #pragma unroll
            for (int r = 0; r < ATT_R; r++) {
                const float *pr = p_s + (warp * ATT_R + r) * ATT_KT;
                float *orow = o_s + (size_t)(warp * ATT_R + r) * HS + c0;
                for (int d = lane; d < dc; d += 32) {
                    float acc = orow[d] * corr[r];
                    for (int jj = 0; jj < ATT_KT; jj++)
                        acc += pr[jj] * v_s[jj * ATT_LD + d];
                    orow[d] = acc;
                }
            }
        }
    }

    __syncwarp();
    #pragma unroll
    for (int r = 0; r < ATT_R; r++) {
        const int t = q0 + warp * ATT_R + r;
        if (t >= g.Tq)
            break;
        const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f; // no visible key: zeros
        const float *orow = o_s + (size_t)(warp * ATT_R + r) * HS;
        float *y = out + ((size_t)b * g.Tq + t) * (size_t)g.NH * HS + (size_t)h * HS;
        for (int d = lane; d < HS; d += 32)
            y[d] = orow[d] * inv;
        if (lse != NULL && lane == 0)
            lse[((size_t)b * g.NH + h) * g.Tq + t] = l[r] > 0.0f ? m[r] + logf(l[r]) : -INFINITY;
    }
}

// grid ceil(B*T / 256): the visibility word of every key (see the top).
static __global__ void attention_save_keys_kernel(int32_t *keys,            // (B, T)
                                                  const int32_t *key_mask,  // (B, T) or NULL
                                                  size_t n, int causal)
{
    const size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        keys[i] = (key_mask == NULL || key_mask[i] != 0 ? 1 : 0) | (causal ? 2 : 0);
}

// Launches the forward kernel over g; lse NULL for the cached path.
static void attention_forward_launch(float *out, float *lse, const att_geom &g, int B, float attn_p,
                                     uint64_t stream, const char *what)
{
    size_t bytes = 0;
    const int W = att_pick_warps((const void *)attention_forward_kernel, g.Tq, g.HS, 2, 1, &bytes, what);
    if (W == 0)
        return;
    const int Qt = W * ATT_R;
    const size_t blocks = (size_t)((g.Tq + Qt - 1) / Qt) * g.NH * B;
    const float scale = 1.0f / sqrtf((float)g.HS);
    attention_forward_kernel<<<(unsigned)blocks, W * 32, bytes, rgcu_stream()>>>(out, lse, g, scale, attn_p,
                                                                                 stream);
    rgcu_check_launch(what);
}

extern "C" void rgcu_attention_forward(float *out, float *att, const float *qkv, const int32_t *key_mask,
                                       int B, int T, int NH, int NKV, int HS, int causal, float attn_p,
                                       uint64_t stream)
{
    if (B <= 0 || T <= 0 || NH <= 0 || NKV <= 0 || HS <= 0)
        return;
    const size_t row = ((size_t)NH + 2 * (size_t)NKV) * HS;
    att_geom g;
    g.q = qkv;
    g.q_b = (size_t)T * row;
    g.q_t = row;
    g.k = qkv + (size_t)NH * HS;
    g.k_b = (size_t)T * row;
    g.k_g = HS;
    g.k_t = row;
    g.v = qkv + ((size_t)NH + NKV) * HS;
    g.v_b = (size_t)T * row;
    g.v_g = HS;
    g.v_t = row;
    g.key_mask = key_mask;
    g.Tq = T;
    g.Tk = T;
    g.NH = NH;
    g.group = NH / NKV;
    g.HS = HS;
    g.causal = causal != 0;
    g.offset = 0;
    attention_forward_launch(out, att, g, B, attn_p, stream, "attention_forward");
    if (T >= 2 && att != NULL) {
        const size_t n = (size_t)B * T;
        int32_t *keys = (int32_t *)(att + (size_t)B * NH * T);
        attention_save_keys_kernel<<<rgcu_blocks(n, RGCU_THREADS), RGCU_THREADS, 0, rgcu_stream()>>>(
            keys, key_mask, n, causal != 0);
        rgcu_check_launch("attention_forward keys");
    }
}

extern "C" void rgcu_attention_cached_forward(float *out, const float *qkv, const float *k_cache,
                                              const float *v_cache, const int32_t *key_mask, int B, int Tn,
                                              int S, int start, int NH, int NKV, int HS)
{
    if (B <= 0 || Tn <= 0 || S <= 0 || NH <= 0 || NKV <= 0 || HS <= 0)
        return;
    const size_t row = ((size_t)NH + 2 * (size_t)NKV) * HS;
    att_geom g;
    g.q = qkv;
    g.q_b = (size_t)Tn * row;
    g.q_t = row;
    g.k = k_cache;
    g.k_b = (size_t)NKV * S * HS;
    g.k_g = (size_t)S * HS;
    g.k_t = HS;
    g.v = v_cache;
    g.v_b = (size_t)NKV * S * HS;
    g.v_g = (size_t)S * HS;
    g.v_t = HS;
    g.key_mask = key_mask;
    g.Tq = Tn;
    g.Tk = S;
    g.NH = NH;
    g.group = NH / NKV;
    g.HS = HS;
    g.causal = 1; // query t sits at slot start + t
    g.offset = start;
    attention_forward_launch(out, NULL, g, B, 0.0f, 0, "attention_cached_forward");
}

// ---- backward ----

// Pass 1. grid (ceil(T / (W*R)) * NH * B), block 32*W: block = (b, h, tile
// of W*R queries). Two sweeps over the visible keys recompute P = exp(s*scale
// - lse) and dP (dy . v_j, through the dropout mask): the first sums D =
// sum_j P dP, the second adds dq += scale * sum_j P (dP - D) k_j. D goes to
// Dsave for pass 2.
static __global__ void __launch_bounds__(ATT_MAX_WARPS * 32)
    attention_backward_dq_kernel(float *dqkv,          // (B, T, (NH + 2*NKV) * HS) +=
                                 float *Dsave,         // (B, NH, T)
                                 const float *dout,    // (B, T, NH*HS)
                                 const float *qkv,     // (B, T, (NH + 2*NKV) * HS)
                                 const float *lse,     // (B, NH, T)
                                 const int32_t *keys,  // (B, T) visibility words, or NULL (T == 1)
                                 int T, int NH, int NKV, int HS, float scale, float attn_p, uint64_t stream)
{
    extern __shared__ float smem[];
    const int W = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int Qt = W * ATT_R;
    float *q_s = smem;                    // (Qt, HS)
    float *dy_s = q_s + (size_t)Qt * HS;  // (Qt, HS)
    float *dq_s = dy_s + (size_t)Qt * HS; // (Qt, HS)
    float *k_s = dq_s + (size_t)Qt * HS;  // (ATT_KT, ATT_LD)
    float *v_s = k_s + ATT_KT * ATT_LD;   // (ATT_KT, ATT_LD)
    float *p_s = v_s + ATT_KT * ATT_LD;   // (Qt, ATT_KT): dS of the tile

    const int ntiles = (T + Qt - 1) / Qt;
    const int tile = ntiles - 1 - (int)(blockIdx.x % ntiles);
    const int h = (int)((blockIdx.x / ntiles) % NH);
    const int b = (int)(blockIdx.x / ntiles / NH);
    const int kvh = h / (NH / NKV);
    const int q0 = tile * Qt;
    const size_t row = ((size_t)NH + 2 * (size_t)NKV) * HS;
    const float *base = qkv + (size_t)b * T * row;
    const float *k = base + ((size_t)NH + kvh) * HS;
    const float *v = base + ((size_t)NH + NKV + kvh) * HS;
    const int32_t *kw = keys != NULL ? keys + (size_t)b * T : NULL;
    const int causal = kw != NULL ? (kw[0] >> 1) & 1 : 0;

    att_stage_rows(q_s, base + (size_t)h * HS, row, q0, Qt, T, HS);
    att_stage_rows(dy_s, dout + (size_t)b * T * NH * HS + (size_t)h * HS, (size_t)NH * HS, q0, Qt, T, HS);
    att_zero(dq_s, Qt * HS);
    __syncthreads();

    float lse_r[ATT_R], D[ATT_R];
    #pragma unroll
    for (int r = 0; r < ATT_R; r++) {
        const int t = q0 + warp * ATT_R + r;
        lse_r[r] = t < T ? lse[((size_t)b * NH + h) * T + t] : -INFINITY; // -inf: sees no key
        D[r] = 0.0f;
    }
    const int kend = causal ? min(T, q0 + Qt) : T;
    const int nchunk = (HS + ATT_DC - 1) / ATT_DC;
    const float keep_scale = attn_p > 0.0f ? 1.0f / (1.0f - attn_p) : 1.0f;

    for (int sweep = 0; sweep < 2; sweep++) {
        for (int j0 = 0; j0 < kend; j0 += ATT_KT) {
            float s[ATT_R], dpv[ATT_R];
            #pragma unroll
            for (int r = 0; r < ATT_R; r++)
                s[r] = dpv[r] = 0.0f;
            // s = q . k_j, dpv = dy . v_j
            att_dot_two(s, dpv, q_s, dy_s, k_s, v_s, k, row, v, row, j0, kend, HS);
            const int j = j0 + lane;
            const bool key_ok = j < kend && (kw == NULL || (kw[j] & 1));
            #pragma unroll
            for (int r = 0; r < ATT_R; r++) {
                const int t = q0 + warp * ATT_R + r;
                const bool vis = key_ok && lse_r[r] > -INFINITY && (!causal || j <= t);
                const float P = vis ? expf(s[r] * scale - lse_r[r]) : 0.0f;
                float dp = dpv[r];
                if (attn_p > 0.0f) {
                    const uint64_t idx = (((uint64_t)b * NH + h) * (uint64_t)T + (uint64_t)t) * (uint64_t)T + j;
                    dp = P != 0.0f && rg_rng_keep(stream, idx, attn_p) ? dp * keep_scale : 0.0f;
                }
                if (sweep == 0)
                    D[r] += P * dp; // lane partial; reduced after the sweep
                else
                    p_s[(warp * ATT_R + r) * ATT_KT + lane] = P * (dp - D[r]) * scale;
            }
            if (sweep == 1) {
                __syncwarp();
                // dq += dS K over the chunks (k_s still holds the only chunk when nchunk == 1)
                for (int c = 0; c < nchunk; c++) {
                    const int c0 = c * ATT_DC, dc = min(ATT_DC, HS - c0);
                    if (nchunk > 1) {
                        __syncthreads();
                        att_stage_chunk(k_s, k + c0, row, j0, kend, 0, dc);
                        __syncthreads();
                    }
                    #pragma unroll
                    for (int r = 0; r < ATT_R; r++) {
                        const float *pr = p_s + (warp * ATT_R + r) * ATT_KT;
                        float *dqr = dq_s + (size_t)(warp * ATT_R + r) * HS + c0;
                        for (int d = lane; d < dc; d += 32) {
                            float acc = 0.0f;
                            for (int jj = 0; jj < ATT_KT; jj++)
                                acc += pr[jj] * k_s[jj * ATT_LD + d];
                            dqr[d] += acc;
                        }
                    }
                }
            }
        }
        if (sweep == 0)
            #pragma unroll
            for (int r = 0; r < ATT_R; r++)
                D[r] = rgcu_warp_sum(D[r]);
    }

    __syncwarp();
    float *dbase = dqkv + (size_t)b * T * row + (size_t)h * HS;
    #pragma unroll
    for (int r = 0; r < ATT_R; r++) {
        const int t = q0 + warp * ATT_R + r;
        if (t >= T)
            break;
        const float *dqr = dq_s + (size_t)(warp * ATT_R + r) * HS;
        float *dq = dbase + (size_t)t * row;
        for (int d = lane; d < HS; d += 32)
            dq[d] += dqr[d];
        if (lane == 0)
            Dsave[((size_t)b * NH + h) * T + t] = D[r];
    }
}

// Pass 2. grid (ceil(T / (W*R)) * NKV * B), block 32*W: block = (b, kv head
// g, tile of W*R keys), looping over the query heads of the group and the
// query tiles that can see the keys (lane = query): dv += sum_t P~ dy_t
// (P~ the dropped-out probability), dk += scale * sum_t P (dP - D_t) q_t.
static __global__ void __launch_bounds__(ATT_MAX_WARPS * 32)
    attention_backward_dkv_kernel(float *dqkv,          // (B, T, (NH + 2*NKV) * HS) +=
                                  const float *Dsave,   // (B, NH, T)
                                  const float *dout,    // (B, T, NH*HS)
                                  const float *qkv,     // (B, T, (NH + 2*NKV) * HS)
                                  const float *lse,     // (B, NH, T)
                                  const int32_t *keys,  // (B, T) visibility words, or NULL (T == 1)
                                  int T, int NH, int NKV, int HS, float scale, float attn_p, uint64_t stream)
{
    extern __shared__ float smem[];
    const int W = blockDim.x / 32, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int Kt = W * ATT_R;
    float *k_s = smem;                    // (Kt, HS)
    float *v_s = k_s + (size_t)Kt * HS;   // (Kt, HS)
    float *dk_s = v_s + (size_t)Kt * HS;  // (Kt, HS)
    float *dv_s = dk_s + (size_t)Kt * HS; // (Kt, HS)
    float *q_c = dv_s + (size_t)Kt * HS;  // (ATT_KT, ATT_LD)
    float *y_c = q_c + ATT_KT * ATT_LD;   // (ATT_KT, ATT_LD)
    float *ds_s = y_c + ATT_KT * ATT_LD;  // (Kt, ATT_KT): dS of the tile
    float *pd_s = ds_s + Kt * ATT_KT;     // (Kt, ATT_KT): dropped-out P of the tile

    const int ntiles = (T + Kt - 1) / Kt;
    const int tile = (int)(blockIdx.x % ntiles); // low key tiles see the most queries under causal: first
    const int g = (int)((blockIdx.x / ntiles) % NKV);
    const int b = (int)(blockIdx.x / ntiles / NKV);
    const int group = NH / NKV;
    const int j0 = tile * Kt;
    const size_t row = ((size_t)NH + 2 * (size_t)NKV) * HS;
    const float *base = qkv + (size_t)b * T * row;
    const int32_t *kw = keys != NULL ? keys + (size_t)b * T : NULL;
    const int causal = kw != NULL ? (kw[0] >> 1) & 1 : 0;

    att_stage_rows(k_s, base + ((size_t)NH + g) * HS, row, j0, Kt, T, HS);
    att_stage_rows(v_s, base + ((size_t)NH + NKV + g) * HS, row, j0, Kt, T, HS);
    att_zero(dk_s, Kt * HS);
    att_zero(dv_s, Kt * HS);
    __syncthreads();

    bool key_ok[ATT_R];
    #pragma unroll
    for (int r = 0; r < ATT_R; r++) {
        const int j = j0 + warp * ATT_R + r;
        key_ok[r] = j < T && (kw == NULL || (kw[j] & 1));
    }
    const int tstart = causal ? (j0 / ATT_KT) * ATT_KT : 0; // earlier queries see none of these keys
    const int nchunk = (HS + ATT_DC - 1) / ATT_DC;
    const float keep_scale = attn_p > 0.0f ? 1.0f / (1.0f - attn_p) : 1.0f;

    for (int h = g * group; h < (g + 1) * group; h++) {
        const float *q = base + (size_t)h * HS;
        const float *dy = dout + (size_t)b * T * NH * HS + (size_t)h * HS;
        const size_t dy_t = (size_t)NH * HS;
        for (int t0 = tstart; t0 < T; t0 += ATT_KT) {
            const int t = t0 + lane;
            const float lse_t = t < T ? lse[((size_t)b * NH + h) * T + t] : -INFINITY;
            const float D_t = t < T ? Dsave[((size_t)b * NH + h) * T + t] : 0.0f;
            float s[ATT_R], dpv[ATT_R];
            #pragma unroll
            for (int r = 0; r < ATT_R; r++)
                s[r] = dpv[r] = 0.0f;
            // s = q_t . k, dpv = dy_t . v
            att_dot_two(s, dpv, k_s, v_s, q_c, y_c, q, row, dy, dy_t, t0, T, HS);
            #pragma unroll
            for (int r = 0; r < ATT_R; r++) {
                const int j = j0 + warp * ATT_R + r;
                const bool vis = key_ok[r] && lse_t > -INFINITY && (!causal || j <= t);
                const float P = vis ? expf(s[r] * scale - lse_t) : 0.0f;
                float dp = dpv[r], pd = P;
                if (attn_p > 0.0f) {
                    const int keep =
                        P != 0.0f &&
                        rg_rng_keep(stream, (((uint64_t)b * NH + h) * (uint64_t)T + (uint64_t)t) * (uint64_t)T + j,
                                    attn_p);
                    dp = keep ? dp * keep_scale : 0.0f;
                    pd = keep ? P * keep_scale : 0.0f;
                }
                ds_s[(warp * ATT_R + r) * ATT_KT + lane] = P * (dp - D_t) * scale;
                pd_s[(warp * ATT_R + r) * ATT_KT + lane] = pd;
            }
            __syncwarp();
            // dk += dS^T Q, dv += P~^T dY over the chunks (still staged when nchunk == 1)
            for (int c = 0; c < nchunk; c++) {
                const int c0 = c * ATT_DC, dc = min(ATT_DC, HS - c0);
                if (nchunk > 1) {
                    __syncthreads();
                    att_stage_chunk(q_c, q + c0, row, t0, T, 0, dc);
                    att_stage_chunk(y_c, dy + c0, dy_t, t0, T, 0, dc);
                    __syncthreads();
                }
                #pragma unroll
                for (int r = 0; r < ATT_R; r++) {
                    const float *dsr = ds_s + (warp * ATT_R + r) * ATT_KT;
                    const float *pdr = pd_s + (warp * ATT_R + r) * ATT_KT;
                    float *dkr = dk_s + (size_t)(warp * ATT_R + r) * HS + c0;
                    float *dvr = dv_s + (size_t)(warp * ATT_R + r) * HS + c0;
                    for (int d = lane; d < dc; d += 32) {
                        float a = 0.0f, e = 0.0f;
                        for (int tt = 0; tt < ATT_KT; tt++) {
                            a += dsr[tt] * q_c[tt * ATT_LD + d];
                            e += pdr[tt] * y_c[tt * ATT_LD + d];
                        }
                        dkr[d] += a;
                        dvr[d] += e;
                    }
                }
            }
        }
    }

    __syncwarp();
    float *dbase = dqkv + (size_t)b * T * row;
    #pragma unroll
    for (int r = 0; r < ATT_R; r++) {
        const int j = j0 + warp * ATT_R + r;
        if (j >= T)
            break;
        const float *dkr = dk_s + (size_t)(warp * ATT_R + r) * HS;
        const float *dvr = dv_s + (size_t)(warp * ATT_R + r) * HS;
        float *dk = dbase + (size_t)j * row + ((size_t)NH + g) * HS;
        float *dv = dbase + (size_t)j * row + ((size_t)NH + NKV + g) * HS;
        for (int d = lane; d < HS; d += 32) {
            dk[d] += dkr[d];
            dv[d] += dvr[d];
        }
    }
}

extern "C" void rgcu_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                                        const int32_t *key_mask, int B, int T, int NH, int NKV, int HS, int causal,
                                        float attn_p, uint64_t stream)
{
    (void)key_mask; /* the forward saved the visible keys in att */
    (void)causal;
    if (B <= 0 || T <= 0 || NH <= 0 || NKV <= 0 || HS <= 0)
        return;
    float *Dsave = (float *)rgcu_scratch(RGCU_SCRATCH_ATTENTION, (size_t)B * NH * T * sizeof(float));
    if (Dsave == NULL)
        return;
    const float *lse = att;
    const int32_t *keys = T >= 2 ? (const int32_t *)(att + (size_t)B * NH * T) : NULL;
    const float scale = 1.0f / sqrtf((float)HS);

    size_t bytes = 0;
    int W = att_pick_warps((const void *)attention_backward_dq_kernel, T, HS, 3, 1, &bytes,
                           "attention_backward dq");
    if (W == 0)
        return;
    size_t blocks = (size_t)((T + W * ATT_R - 1) / (W * ATT_R)) * NH * B;
    attention_backward_dq_kernel<<<(unsigned)blocks, W * 32, bytes, rgcu_stream()>>>(
        dqkv, Dsave, dout, qkv, lse, keys, T, NH, NKV, HS, scale, attn_p, stream);
    rgcu_check_launch("attention_backward dq");

    W = att_pick_warps((const void *)attention_backward_dkv_kernel, T, HS, 4, 2, &bytes,
                       "attention_backward dkv");
    if (W == 0)
        return;
    blocks = (size_t)((T + W * ATT_R - 1) / (W * ATT_R)) * NKV * B;
    attention_backward_dkv_kernel<<<(unsigned)blocks, W * 32, bytes, rgcu_stream()>>>(
        dqkv, Dsave, dout, qkv, lse, keys, T, NH, NKV, HS, scale, attn_p, stream);
    rgcu_check_launch("attention_backward dkv");
}
