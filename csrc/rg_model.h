/*
 * rg_model.h - one generic transformer serving GPT-2, Llama, DistilBERT and
 * BERT, configured by rg_model_config (docs/model_layout.md: the parameter
 * names and layouts every loader follows).
 *
 * Memory, llm.c style: all parameters live in one flat float block, all
 * gradients in a second block with the same layout (rg_param_table; with
 * LoRA a compact one holding only the tensors that may train), and all
 * activations of a forward/backward pass in a third block sized from a table
 * for (B, T); it grows only when a larger batch arrives.
 *
 * Training conventions:
 *   - rg_model_forward with targets computes the loss and keeps what the
 *     backward pass needs; rg_model_backward ADDS loss_scale * dloss/dparam
 *     into the gradient block (call rg_model_zero_grad between steps).
 *   - LM targets follow Hugging Face's `labels`: aligned with the tokens
 *     (B, T), shifted inside (position t predicts targets[t + 1]); -100 (any
 *     negative value) is ignored; the loss is the mean over counted positions.
 *     Classification targets are (B,) class ids, negative = ignored.
 *   - Positions: causal models number only the real tokens (cumulative sum of
 *     the attention mask, minus one), as transformers' generate() does, so a
 *     left-padded prompt gets the same positions as an unpadded one; with
 *     right padding this is the column index. Encoders use the column index.
 *   - Classification heads read token 0 ([CLS]): encoder batches are
 *     RIGHT-padded.
 *   - Generation (causal models only) uses LEFT padding: rg_model_cache_reset,
 *     then rg_model_cache_forward with the padded prompts (B, T) and their
 *     mask, then one rg_model_cache_forward per new token (T = 1). Each call
 *     returns the logits of the last column (B, V), equal to those of
 *     rg_model_forward on the same tokens (token types included).
 *
 * Ops: every layer operation runs through model->ops (rg_backend.h), the CPU
 * table of rg_ops.c unless rg_model_set_ops chose another.
 * Sizes: every size is computed in size_t with overflow checks; a config or
 * a batch beyond the RG_MODEL_MAX_* limits below is RG_ERR_TOO_LARGE, and
 * rg_model_config_check says which dimension.
 * Threads: one model serves one call at a time; callers that share a model
 * between threads serialise through rg_model_try_acquire / rg_model_release.
 */
#ifndef RG_MODEL_H
#define RG_MODEL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "rg_backend.h"
#include "rg_common.h"
#include "rg_params.h"

/* Limits of a configuration and of a pass (RG_ERR_TOO_LARGE beyond them).
 * Every size is computed in size_t with overflow checks; these bounds also
 * keep each width, and each row count B*T, inside the int the ops take. */
#define RG_MODEL_MAX_DIM ((int64_t)1 << 24)     /* any one config dimension, and widths such as (NH+2*NKV)*HS */
#define RG_MODEL_MAX_TENSOR ((int64_t)1 << 32)  /* elements of one parameter tensor */
#define RG_MODEL_MAX_PARAMS ((int64_t)1 << 33)  /* elements of the whole parameter block (32 GiB) */
#define RG_MODEL_MAX_ROWS ((int64_t)1 << 30)    /* B * T of one pass, B * max_T of a cache */
#define RG_MODEL_MAX_ACTS ((int64_t)1 << 34)    /* floats of one pass's activations, or of a cache */
#define RG_MODEL_HEAD_KEEP_FLOATS ((size_t)1 << 28) /* 1 GiB: the default head_keep_floats */

typedef enum rg_norm_kind { RG_NORM_LAYERNORM = 0, RG_NORM_RMSNORM = 1 } rg_norm_kind;
typedef enum rg_position_kind { RG_POSITION_LEARNED = 0, RG_POSITION_ROPE = 1 } rg_position_kind;
typedef enum rg_activation_kind {
    RG_ACTIVATION_GELU_TANH = 0,
    RG_ACTIVATION_GELU_ERF = 1,
    RG_ACTIVATION_SWIGLU = 2
} rg_activation_kind;
typedef enum rg_head_kind {
    RG_HEAD_LM = 0,             /* logits over the vocabulary at every position */
    RG_HEAD_CLS_DISTILBERT = 1, /* token 0 -> pre_classifier -> ReLU -> dropout -> classifier */
    RG_HEAD_CLS_BERT = 2        /* token 0 -> pooler -> tanh -> dropout -> classifier */
} rg_head_kind;

/* What rg_model_set_trainable does with the head. */
typedef enum rg_head_policy {
    RG_HEAD_POLICY_FROZEN = 0, /* the head gets no gradient (tied: wte stays frozen too) */
    RG_HEAD_POLICY_TRAIN = 1,  /* the head trains (tied: wte trains, through the head only) */
    RG_HEAD_POLICY_UNTIE = 2   /* tied LM head: copy wte into lm_head.w and train that copy */
} rg_head_policy;

/* Low-rank adapters (LoRA): which linear layers of every block get one
 * (rg_model_config.lora_targets, a bitmask). An adapter adds
 * (lora_alpha / lora_rank) * B @ A @ dropout(x) to rows [r0, r0 + rows) of a
 * linear layer's output, A (rank, in) and B (rows, rank), as PEFT's
 * LoraLayer does. The fused q/k/v and gate/up weights of the core take either
 * one adapter over all their rows (GPT-2's c_attn, BERT's intermediate.dense)
 * or one per part (Llama's q_proj, k_proj, v_proj; gate_proj, up_proj). */
typedef enum rg_lora_site {
    RG_LORA_SITE_Q = 0,    /* qkv.w rows of q */
    RG_LORA_SITE_K = 1,    /* qkv.w rows of k */
    RG_LORA_SITE_V = 2,    /* qkv.w rows of v */
    RG_LORA_SITE_QKV = 3,  /* all of qkv.w (GPT-2 c_attn) */
    RG_LORA_SITE_O = 4,    /* proj.w: attention output */
    RG_LORA_SITE_FC = 5,   /* all of fc.w (MLP input; GPT-2 c_fc, BERT intermediate, DistilBERT lin1) */
    RG_LORA_SITE_GATE = 6, /* fc.w rows of the swiglu gate */
    RG_LORA_SITE_UP = 7,   /* fc.w rows of the swiglu up projection */
    RG_LORA_SITE_FC2 = 8,  /* fc2.w: MLP output (down_proj, mlp.c_proj, output.dense, lin2) */
    RG_LORA_SITES = 9
} rg_lora_site;
#define RG_LORA_BIT(site) (1 << (site))
#define RG_LORA_ALL_BITS ((1 << RG_LORA_SITES) - 1)

typedef struct rg_model_config {
    int vocab_size;      /* V */
    int n_positions;     /* P: the longest sequence */
    int n_layer;         /* L */
    int n_head;          /* NH */
    int n_kv_head;       /* NKV, divides NH */
    int head_dim;        /* HS */
    int n_embd;          /* C */
    int n_inner;         /* F */
    int type_vocab_size; /* 0: no token types */
    int norm;            /* rg_norm_kind */
    float norm_eps;
    int pre_norm;        /* 1: norm before attention/MLP; 0: after each residual add */
    int embed_norm;      /* LayerNorm right after the embeddings */
    int final_norm;      /* norm after the last block */
    int position;        /* rg_position_kind */
    float rope_theta;
    int activation;      /* rg_activation_kind */
    int causal;
    int bias;            /* biases on every linear layer */
    int head;            /* rg_head_kind */
    int tie_word_embeddings; /* LM head: 1 = reuse wte */
    int num_labels;      /* K, classification heads */
    float embd_pdrop, resid_pdrop, attn_pdrop, cls_pdrop;
    /* LoRA (0 = none): with lora_rank > 0 the table also holds an A and a B
     * per targeted linear layer of every block (after every base tensor:
     * "h.<l>.lora.<site>.A" / ".B"), only they (and a classifier's head
     * layers, see rg_model_set_trainable) may train, and the gradient block holds only them. */
    int lora_rank;       /* R */
    float lora_alpha;    /* the adapters' output is scaled by lora_alpha / R */
    float lora_dropout;  /* dropout of each adapter's input, in training */
    int lora_targets;    /* RG_LORA_BIT(site) | ... */
} rg_model_config;

/* Where one block's saved tensors lie inside the activation block. */
typedef struct rg_layer_acts {
    float *ln1, *ln1_mean, *ln1_rstd; /* (N, C), (N,), (N,) */
    float *qkv;                       /* (N, (NH + 2*NKV) * HS), q and k rotated when rope */
    float *att;                       /* (B, NH, T, S) softmax before dropout */
    float *atty;                      /* (N, NH*HS) attention output before the projection */
    float *res1;                      /* (N, C) residual stream after the attention add */
    float *ln2, *ln2_mean, *ln2_rstd; /* (N, C), (N,), (N,) */
    float *fch;                       /* (N, F) or swiglu (N, 2F): MLP pre-activation */
    float *fch_act;                   /* (N, F) */
    float *res2;                      /* (N, C) residual stream after the MLP add */
    float *lora_u[RG_LORA_SITES];     /* (N, R) each adapter's A @ dropout(x), NULL if absent */
} rg_layer_acts;

typedef struct rg_kv_cache rg_kv_cache;

typedef struct rg_model {
    rg_model_config config;
    rg_param_table table;        /* tensors in the order of docs/model_layout.md */
    float *params;               /* (table.total + reserve) */
    float *grads;                /* same layout as params, or compact (table.compact_grads:
                                    only the tensors that may train, table.grads_total) */
    size_t grads_total;          /* floats in the gradient block */
    int *lora_index;             /* (L, RG_LORA_SITES, 2) table index of each adapter's A
                                    and B, -1 if absent; NULL without LoRA */
    int lora_merged;             /* adapters added into the base weights (rg_model_lora_merge) */
    size_t reserve;              /* room after the table for lm_head.w when untying later */
    int tied;                    /* LM head reads wte */
    int n_trainable_blocks;      /* -1: everything trains, embeddings included */
    int frozen_dropout;          /* 1 (default): dropout in the frozen blocks and embeddings
                                    too, as PyTorch's train(); 0: the frozen part is
                                    deterministic (rg_model_set_frozen_dropout) */
    const float *frozen_input;   /* set for the next forward only (rg_model_set_frozen_input) */
    int frozen_output_valid;     /* the last forward kept the frozen part's output */
    int all_rows;                /* 1: a classifier's last block computes every row, not only the
                                    head's (the reference its tests compare with); default 0 */
    int head_policy;             /* rg_head_policy */
    size_t head_keep_floats;     /* the most (rows, V) logits a training LM head that trains keeps
                                    whole for its backward; beyond, the backward makes them again
                                    chunk by chunk (RG_MODEL_HEAD_KEEP_FLOATS) */
    int global_index[12];        /* table index of wte, wpe, ... (rg_model.c), -1 if absent */
    int *layer_index;            /* (L, 12) table index of each block tensor, -1 if absent */
    unsigned trainable_version;  /* bumped by set_trainable: a backward needs the forward's */
    unsigned forward_version;    /* trainable_version when the last forward ran */

    /* activations of the last forward (one float block, one int block) */
    float *acts;
    size_t acts_capacity;        /* floats allocated */
    int32_t *ints;
    size_t ints_capacity;
    int B, T;                    /* shape of the last forward */
    int n_saved_sets;            /* layer activation sets in the block */
    int lowest_saved_layer;      /* first layer whose activations were kept */
    int head_mode;               /* how the last forward with targets ran the LM head (rg_model.c) */
    int head_rows;               /* its last block computed only the classifier head's rows (rg_model.c) */
    int has_targets;             /* the last forward succeeded with a loss and nothing has
                                    invalidated it since: backward allowed */
    int logits_valid;            /* logits hold the last forward's values */
    int train;                   /* last forward ran with dropout */
    uint64_t seed;               /* its dropout seed */
    long loss_count;             /* positions (LM) or rows (classification) in the loss */
    float loss;
    int32_t *tokens, *positions, *types, *key_mask, *targets; /* (B*T,) copies, NULL if absent */
    float *emb, *emb_mean, *emb_rstd, *x0;                    /* (N, C), (N,), (N,), (N, C) */
    rg_layer_acts *layer_sets;   /* (n_saved_sets,) */
    float *lnf, *lnf_mean, *lnf_rstd;                        /* (N, C), (N,), (N,) */
    float *logits;               /* LM (N, V), or (n_loss_rows, V) after a forward with targets;
                                    classification (B, K) */
    float *head_in;              /* (n_loss_rows, C) LM head input rows that have a target */
    int32_t *loss_rows;          /* (n_loss_rows,) which of the N rows those are */
    int32_t *loss_targets;       /* (n_loss_rows,) their target ids */
    int n_loss_rows;
    float *lse;                  /* (N,) or (B,) log-sum-exp of each loss row */
    float *cls_h0, *cls_pre, *cls_act, *cls_drop;            /* (B, C) each */
    float *d_res, *d_tmp, *d_tmp2, *d_qkv, *d_atty, *d_fch, *d_fch_act; /* backward scratch */
    float *lora_x, *lora_dx;     /* (N, widest adapter input): dropped input and its gradient,
                                    only with lora_dropout > 0 */
    float *lora_du;              /* (N, R) adapter backward scratch */
    void *head_prepared;         /* the LM head weight as head_prepared_ops last prepared it,
                                    kept for its memory: each use prepares it again */
    const struct rg_ops_table *head_prepared_ops;

    rg_kv_cache *cache;

    const rg_ops_table *ops;     /* every layer op runs through this table (rg_backend.h) */
    atomic_int busy;             /* rg_model_try_acquire / rg_model_release */
} rg_model;

/* A model with GPT-2's initialisation (matrices N(0, 0.02), biases 0, norm
 * weights 1). */
rg_status rg_model_init(rg_model **out, const rg_model_config *config);
/* The same with every parameter 0, for a loader that writes every tensor:
 * the random draw costs more than the load itself (1.3 s of 1.6 s for
 * DistilGPT2). */
rg_status rg_model_init_blank(rg_model **out, const rg_model_config *config);
void rg_model_free(rg_model *model);

/* The check rg_model_init makes, with a sentence saying what is wrong
 * written into message (message_size bytes, may be 0 / NULL): RG_OK, or
 * RG_ERR_INVALID_ARG / RG_ERR_SHAPE / RG_ERR_TOO_LARGE. */
rg_status rg_model_config_check(const rg_model_config *config, char *message, size_t message_size);

/* The ops every later forward/backward/cache call runs on: rg_ops_cpu() by
 * default. RG_ERR_INVALID_ARG for an incomplete table. A forward that awaits
 * its backward is dropped (its activations were made by the old table): a
 * backward now returns RG_ERR_STATE until the next forward, as after a LoRA
 * merge. */
rg_status rg_model_set_ops(rg_model *model, const rg_ops_table *ops);

/* Refusing concurrent calls: a caller that may be entered from several
 * threads takes the model with rg_model_try_acquire before ANY call that
 * reads or writes it (forward, backward, logits, cache_*, set_trainable,
 * zero_grad, find_param, the table) and releases it after it is done with
 * what the call returned (e.g. after copying rg_model_logits). Returns RG_OK
 * when taken, RG_ERR_STATE when another holder has it. Not re-entrant. The
 * other rg_model_* functions do not check it themselves. */
rg_status rg_model_try_acquire(rg_model *model);
void rg_model_release(rg_model *model);

/* RG_OK when every parameter is finite; else RG_ERR_NONFINITE with
 * *bad_tensor (may be NULL) the table index of the first tensor holding a
 * NaN or infinity, so a loader can name it. */
rg_status rg_model_check_finite(const rg_model *model, int *bad_tensor);

/* A tensor of the table by internal name, or NULL. */
const rg_param_info *rg_model_find_param(const rg_model *model, const char *name);

/* LoRA: adds each adapter's scaled B @ A into its rows of the base weight
 * (merge), or subtracts it again (unmerge). A merged model runs forward and
 * generation without the adapters (the base weights hold them), e.g. for
 * export; training a merged model is RG_ERR_STATE. RG_ERR_UNSUPPORTED
 * without adapters; RG_ERR_STATE when already in the asked state. */
rg_status rg_model_lora_merge(rg_model *model);
rg_status rg_model_lora_unmerge(rg_model *model);

/* Rows [*row0, *row0 + *rows) of the output of the base weight named by
 * *weight ("qkv.w", "proj.w", "fc.w" or "fc2.w") that adapter `site` adds
 * into, and its input width; RG_ERR_INVALID_ARG for a site the config does
 * not allow (gate/up without swiglu). */
rg_status rg_model_lora_site(const rg_model_config *config, int site, const char **weight,
                             int *row0, int *rows, int *in_width);

/* Keep only the last n_trainable_blocks blocks (+ final norm + head)
 * trainable; n_trainable_blocks < 0 trains everything (embeddings too).
 * The backward pass stops at the lowest trainable block.
 * With LoRA the base weights stay frozen whatever the arguments: the adapters
 * of the last n_trainable_blocks blocks train (all of them when < 0), and a
 * classifier's output layer (cls.out; with DistilBERT's head cls.pre too:
 * what PEFT's modules_to_save ["classifier", "score"] catches) trains unless
 * the policy is frozen; untie is RG_ERR_UNSUPPORTED. */
rg_status rg_model_set_trainable(rg_model *model, int n_trainable_blocks, rg_head_policy policy);

/* ---- the frozen part (embeddings and the frozen blocks below the first trainable one) ----
 * With freezing on and dropout off in the frozen part, what it gives a row is
 * the same in every epoch: a trainer can keep it and run only the trainable
 * blocks in later epochs (rg_trainer_config.cache_frozen). */

/* on = 1 (default) keeps dropout in the frozen part during training, as
 * PyTorch does for modules whose parameters do not train; 0 turns it off there
 * (the trainable blocks and the head keep theirs). */
void rg_model_set_frozen_dropout(rg_model *model, int on);

/* The number of blocks below the first one with a trainable tensor (n_layer
 * when only the final norm and head train; 0 when an embedding tensor trains,
 * a tied head that trains included): with the embeddings they make the frozen
 * part, whose output is that block's input. */
int rg_model_first_trainable_block(const rg_model *model);

/* The frozen part's output in the last forward with targets: (B, T, C), the
 * input of block rg_model_first_trainable_block; NULL when there is no frozen
 * block or the last forward kept no such output (no targets, failed, LoRA). */
const float *rg_model_frozen_output(const rg_model *model);

/* The next rg_model_forward (with targets) takes `hidden` (B, T, C) as the
 * frozen part's output, for the tokens it is given, instead of running the
 * embeddings and the frozen blocks; the caller keeps `hidden` alive through
 * that call. One-shot: cleared by the forward. RG_ERR_STATE without a frozen
 * block (rg_model_frozen_output would be NULL). */
rg_status rg_model_set_frozen_input(rg_model *model, const float *hidden);

/* Forward pass. tokens (B, T); attention_mask (B, T) 1 = real token, or NULL;
 * token_types (B, T) or NULL; targets: LM (B, T), classification (B,), or
 * NULL. With targets, *loss receives the mean loss (0 when nothing counted). */
rg_status rg_model_forward(rg_model *model, const int32_t *tokens, const int32_t *attention_mask,
                           const int32_t *token_types, const int32_t *targets, int B, int T,
                           int train, uint64_t seed, float *loss);

/* 1 when rg_model_backward would run: the last forward succeeded with targets,
 * no later call failed, and no backward or set_trainable has consumed it. */
int rg_model_backward_ready(const rg_model *model);

/* Logits of the last forward: LM (B*T, V) or classification (B, K). Valid
 * until the next forward or backward (the backward overwrites them). NULL
 * after an LM forward with targets: the LM head then runs only on the rows
 * that have a target (padding costs no vocabulary-sized work). */
const float *rg_model_logits(const rg_model *model, int *rows, int *cols);

/* Adds loss_scale * gradient of the last forward's loss into model->grads
 * (trainable tensors only). RG_ERR_STATE unless the last rg_model_forward
 * succeeded with targets: a forward that failed (bad input, interrupt, a
 * non-finite loss) invalidates the previous pass, so its gradients can never
 * be applied to another batch; one backward per forward. */
rg_status rg_model_backward(rg_model *model, float loss_scale);

void rg_model_zero_grad(rg_model *model);

/* Generation with a key/value cache (causal models). */
rg_status rg_model_cache_reset(rg_model *model, int B, int max_T);
/* Appends T new columns per row (mask (B, T) or NULL = all real) and writes
 * the logits of the last column: logits (B, V). Polls rg_interrupt_pending()
 * between layers: RG_ERR_INTERRUPTED leaves the cache as it was before the
 * call (the same call may be made again). Any error appends nothing. */
rg_status rg_model_cache_forward(rg_model *model, const int32_t *tokens, const int32_t *mask, int T,
                                 float *logits);
/* The same with token types (B, T), or NULL = type 0, as rg_model_forward
 * does; rg_model_cache_forward is this call with NULL types. */
rg_status rg_model_cache_forward_types(rg_model *model, const int32_t *tokens, const int32_t *mask,
                                       const int32_t *token_types, int T, float *logits);
/* Columns filled so far, and the batch/capacity of the cache (0 when none). */
void rg_model_cache_info(const rg_model *model, int *B, int *max_T, int *filled);

#endif /* RG_MODEL_H */
