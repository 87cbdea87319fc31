/*
 * rg_ops.h - the layer operations of the transformer: each forward next to its
 * backward. Backward functions ACCUMULATE (+=) into every gradient they are
 * given (dinp, dweight, dbias); a NULL gradient pointer means "not needed"
 * (a frozen weight, or an input nobody reads the gradient of) and the work is
 * skipped. Shapes use the legend of rg_common.h; N = number of rows (B * T).
 */
#ifndef RG_OPS_H
#define RG_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "rg_backend.h" /* RG_ATTENTION_ROW_STATS */

/* ---- dropout: keep element `index` of stream `seed` with probability 1 - p ---- */

/* The stream of one dropout site: derived from the step seed and a site id, so
 * every site draws independent masks and the backward pass can redraw them. */
uint64_t rg_dropout_stream(uint64_t step_seed, uint64_t site_id);

/* x (n,) scaled in place: x[i] = keep(first + i) ? x[i] / (1 - p) : 0, so a
 * piece of a larger array (at element `first`) draws that array's mask there.
 * The same call is the backward (applied to the gradient). p == 0 leaves x
 * untouched. */
void rg_dropout_apply(float *x, size_t n, size_t first, float p, uint64_t stream);

/* ---- residual add ---- */

/* out (n,) += a (n,), element-wise. */
void rg_add_inplace(float *out, const float *a, size_t n);

/* ---- linear layer: out = inp @ weight^T + bias ---- */

void rg_matmul_forward(float *out,          /* (N, OC) */
                       const float *inp,    /* (N, IC) */
                       const float *weight, /* (OC, IC) */
                       const float *bias,   /* (OC,) or NULL */
                       int N, int IC, int OC);
void rg_matmul_backward(float *dinp,          /* (N, IC) += or NULL */
                        float *dweight,       /* (OC, IC) += or NULL */
                        float *dbias,         /* (OC,) += or NULL */
                        const float *dout,    /* (N, OC) */
                        const float *inp,     /* (N, IC) */
                        const float *weight,  /* (OC, IC) */
                        int N, int IC, int OC);

/* ---- low-rank adapter (LoRA) on a linear layer: out += scale * (inp @ a^T) @ b^T ----
 * The adapter's output may be a column slice of a wider output: row n of it
 * starts at out + n * ldo (ldo >= OC), so the q, k and v adapters add into
 * their parts of the fused qkv rows in place. Dropout of the adapter input is
 * the caller's (inp is the dropped input, the same in forward and backward). */

void rg_lora_forward(float *out,          /* (N, ldo): columns [0, OC) += */
                     float *u,            /* (N, R) inp @ a^T, saved for backward */
                     const float *inp,    /* (N, IC) */
                     const float *a,      /* (R, IC) lora_A */
                     const float *b,      /* (OC, R) lora_B */
                     float scale,         /* alpha / R */
                     int N, int IC, int R, int OC, int ldo);
void rg_lora_backward(float *dinp,        /* (N, IC) += or NULL */
                      float *da,          /* (R, IC) += or NULL */
                      float *db,          /* (OC, R) += or NULL */
                      float *du,          /* (N, R) scratch */
                      const float *dout,  /* (N, ldo): the gradient of columns [0, OC) */
                      const float *inp,   /* (N, IC) as given to the forward */
                      const float *u,     /* (N, R) saved by the forward */
                      const float *a,     /* (R, IC) */
                      const float *b,     /* (OC, R) */
                      float scale, int N, int IC, int R, int OC, int ldo);

/* ---- normalisation ---- */

void rg_layernorm_forward(float *out,          /* (N, C) */
                          float *mean,         /* (N,) saved for backward */
                          float *rstd,         /* (N,) saved for backward */
                          const float *inp,    /* (N, C) */
                          const float *weight, /* (C,) */
                          const float *bias,   /* (C,) */
                          int N, int C, float eps);
void rg_layernorm_backward(float *dinp,          /* (N, C) += or NULL */
                           float *dweight,       /* (C,) += or NULL */
                           float *dbias,         /* (C,) += or NULL */
                           const float *dout,    /* (N, C) */
                           const float *inp,     /* (N, C) */
                           const float *weight,  /* (C,) */
                           const float *mean,    /* (N,) */
                           const float *rstd,    /* (N,) */
                           int N, int C);

/* RMSNorm (Llama): out = inp / sqrt(mean(inp^2) + eps) * weight. */
void rg_rmsnorm_forward(float *out,          /* (N, C) */
                        float *rstd,         /* (N,) saved for backward */
                        const float *inp,    /* (N, C) */
                        const float *weight, /* (C,) */
                        int N, int C, float eps);
void rg_rmsnorm_backward(float *dinp,         /* (N, C) += or NULL */
                         float *dweight,      /* (C,) += or NULL */
                         const float *dout,   /* (N, C) */
                         const float *inp,    /* (N, C) */
                         const float *weight, /* (C,) */
                         const float *rstd,   /* (N,) */
                         int N, int C);

/* ---- element-wise activations (backward: dinp += dout * f'(inp)) ---- */

/* GELU, tanh approximation (GPT-2's gelu_new). */
void rg_gelu_tanh_forward(float *out, const float *inp, size_t n);                     /* (n,) */
void rg_gelu_tanh_backward(float *dinp, const float *inp, const float *dout, size_t n); /* (n,) */
/* GELU, exact erf form (BERT, DistilBERT). */
void rg_gelu_erf_forward(float *out, const float *inp, size_t n);                     /* (n,) */
void rg_gelu_erf_backward(float *dinp, const float *inp, const float *dout, size_t n); /* (n,) */
/* SwiGLU: out = silu(gate) * up, with each inp row = [gate (F) ; up (F)]. */
void rg_swiglu_forward(float *out,       /* (N, F) */
                       const float *inp, /* (N, 2F) */
                       int N, int F);
void rg_swiglu_backward(float *dinp,       /* (N, 2F) += */
                        const float *inp,  /* (N, 2F) */
                        const float *dout, /* (N, F) */
                        int N, int F);
/* ReLU; the backward reads the forward OUTPUT (out > 0 iff inp > 0). */
void rg_relu_forward(float *out, const float *inp, size_t n);                      /* (n,) */
void rg_relu_backward(float *dinp, const float *out, const float *dout, size_t n); /* (n,) */
/* tanh; the backward reads the forward OUTPUT (1 - out^2). */
void rg_tanh_forward(float *out, const float *inp, size_t n);                      /* (n,) */
void rg_tanh_backward(float *dinp, const float *out, const float *dout, size_t n); /* (n,) */

/* ---- embeddings ---- */

/* out[b,t] = wte[tokens[b,t]] (+ wpe[positions[b,t]]) (+ wtt[types[b,t]]). */
void rg_embedding_forward(float *out,             /* (B*T, C) */
                          const int32_t *tokens,  /* (B*T,) */
                          const int32_t *positions, /* (B*T,) or NULL: no learned positions */
                          const int32_t *types,   /* (B*T,) or NULL: no token types */
                          const float *wte,       /* (V, C) */
                          const float *wpe,       /* (P, C) or NULL */
                          const float *wtt,       /* (type_vocab_size, C) or NULL */
                          int N, int C);
void rg_embedding_backward(float *dwte,             /* (V, C) += or NULL */
                           float *dwpe,             /* (P, C) += or NULL */
                           float *dwtt,             /* (type_vocab_size, C) += or NULL */
                           const float *dout,       /* (B*T, C) */
                           const int32_t *tokens,   /* (B*T,) */
                           const int32_t *positions, /* (B*T,) or NULL */
                           const int32_t *types,    /* (B*T,) or NULL */
                           int N, int C);

/* ---- rotary position embedding (Hugging Face rotate_half convention) ---- */

/* Rotates the q and k heads of every row in place; v is left alone. Each row
 * is one token: NH query heads then NKV key heads of HS values each. */
void rg_rope_forward(float *qkv,                /* (N, (NH + 2*NKV) * HS) in place */
                     const int32_t *positions,  /* (N,) */
                     int N, int NH, int NKV, int HS, float theta);
/* The inverse rotation applied to the gradient of the rotated q and k. */
void rg_rope_backward(float *dqkv,               /* (N, (NH + 2*NKV) * HS) in place */
                      const int32_t *positions,  /* (N,) */
                      int N, int NH, int NKV, int HS, float theta);

/* ---- scaled dot-product attention over packed qkv ---- */

/* Query head h reads key/value head h / (NH / NKV) (grouped-query attention).
 * Key j is visible to query t when key_mask[b,j] != 0 (or key_mask is NULL)
 * and, if causal, j <= t. A query that sees no key outputs zeros. `out` uses
 * the probabilities after dropout. The (B, NH, T, T) probabilities are never
 * kept: `att` receives RG_ATTENTION_ROW_STATS floats per query row from which
 * the backward makes them again (here the row's maximum score and 1/sum; the
 * CUDA ops keep their own row figures there), or nothing when att is NULL (no
 * backward follows). The backward takes the forward's key_mask and causal. */
#define RG_ATTENTION_ROW_STATS 2
void rg_attention_forward(float *out,              /* (B, T, NH*HS) */
                          float *att,              /* (B, NH, T, RG_ATTENTION_ROW_STATS) or NULL */
                          const float *qkv,        /* (B, T, (NH + 2*NKV) * HS) */
                          const int32_t *key_mask, /* (B, T) or NULL */
                          int B, int T, int NH, int NKV, int HS, int causal,
                          float attn_p, uint64_t stream);
void rg_attention_backward(float *dqkv,             /* (B, T, (NH + 2*NKV) * HS) += */
                           const float *dout,       /* (B, T, NH*HS) */
                           const float *qkv,        /* (B, T, (NH + 2*NKV) * HS) */
                           const float *att,        /* (B, NH, T, RG_ATTENTION_ROW_STATS) */
                           const int32_t *key_mask, /* (B, T) or NULL */
                           int B, int T, int NH, int NKV, int HS, int causal,
                           float attn_p, uint64_t stream);

/* Attention of Tn new queries over a key/value cache of S slots (generation):
 * query t of the new block sits at slot `start + t`, sees slots 0..start+t
 * whose key_mask is set. No dropout; nothing is saved for a backward pass. */
void rg_attention_cached_forward(float *out,              /* (B, Tn, NH*HS) */
                                 const float *qkv,        /* (B, Tn, (NH + 2*NKV) * HS): only q is read */
                                 const float *k_cache,    /* (B, NKV, S, HS) */
                                 const float *v_cache,    /* (B, NKV, S, HS) */
                                 const int32_t *key_mask, /* (B, S) */
                                 int B, int Tn, int S, int start, int NH, int NKV, int HS);

/* ---- softmax cross-entropy ---- */

/* For each row with target >= 0: lse[n] = logsumexp(logits[n]) and the row's
 * loss lse - logits[n, target]. Rows with target < 0 are ignored (lse = 0).
 * Returns the summed loss; *count receives the number of rows that counted. */
double rg_crossentropy_forward(float *lse,              /* (N,) */
                               const float *logits,     /* (N, V) */
                               const int32_t *targets,  /* (N,) */
                               int N, int V, long *count);
/* In place: logits[n] becomes scale * (softmax(logits[n]) - onehot(target)),
 * and 0 for ignored rows. */
void rg_crossentropy_backward(float *logits,           /* (N, V) in place -> dlogits */
                              const float *lse,        /* (N,) */
                              const int32_t *targets,  /* (N,) */
                              int N, int V, float scale);

#endif /* RG_OPS_H */
