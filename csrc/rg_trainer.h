/*
 * rg_trainer.h - a whole fine-tuning run in one call: shuffling, batching,
 * gradient accumulation, the schedule, clipping, AdamW, evaluation after
 * every epoch, best-epoch selection, checkpoints and resume. It reproduces
 * reviewgen/training.py's Trainer driven by the batchers of
 * reviewgen/tokenization.py (EncodedBatches) and generator.py (LMBatches):
 *
 *   - micro-batch i of an epoch holds rows order[i*bs .. (i+1)*bs) of the
 *     training set; num_batches = ceil(N / bs); with trim_padding each batch
 *     is cut to its widest row (last real column + 1, at least 1), which for
 *     the right-padded rows those batchers make is their "longest text";
 *   - LM targets: given (N, T) labels, or tokens where mask = 1 and -100
 *     elsewhere (LMBatches); classification targets: (N,) class ids;
 *   - gradient accumulation: groups of grad_accum micro-batches, the last
 *     group of an epoch possibly shorter; each micro-batch's backward gets
 *     loss_scale = (float)(1.0 / size of its group); one AdamW update per
 *     group; total_steps = ceil(num_batches / grad_accum) * epochs, and the
 *     optimizer's warmup = ceil(warmup_ratio * total_steps);
 *   - dropout seed of micro-batch i of epoch e (0-based):
 *     (seed * 0x9E3779B1 + e * num_batches + i) mod 2^63, as training.py;
 *   - after each epoch: train_loss = mean micro-batch loss of the epoch;
 *     eval_loss = sum(batch loss * batch rows) / eval rows, in eval order,
 *     batches of eval_batch_size, no shuffle; LM: perplexity
 *     exp(min(eval_loss, 700)); classification: predictions = argmax of the
 *     logits (lowest class on ties) and accuracy / macro F1 / near accuracy /
 *     near macro F1 from rg_metrics on label_values (class k has value
 *     label_values[k], or k when NULL);
 *   - load_best_at_end: the epoch with the lowest eval loss (strictly lower
 *     than every earlier one) is kept in memory (trainable tensors only:
 *     frozen ones never change) and put back into the model when the run
 *     ends on another epoch.
 *
 * Shuffling (shuffle = 1, orders = NULL): the permutation of epoch e is a
 * Fisher-Yates shuffle of 0..N-1 driven by the core RNG:
 *     stream = rg_rng_mix(seed ^ rg_rng_mix(0x53485546464C45ull + e))
 *     counter c = 0; order = identity
 *     for i = N-1 down to 1:
 *         j = draw_below(i + 1); swap(order[i], order[j])
 *     draw_below(m): r = rg_rng_bits(stream, c++), redrawn while
 *         r >= 2^64 - (2^64 mod m) (rejection keeps it unbiased); j = r mod m
 * `orders` (epochs, N) may give the permutations instead (e.g. numpy's, to
 * keep a Python run's exact order).
 *
 * Checkpoints (checkpoint_path != NULL): after each epoch (after its
 * evaluation) and after every save_steps-th update inside an epoch, one file
 * (rg_checkpoint.h: atomic, every section checksummed) with sections
 *   TRSTATE (counters, position in the epoch, RNG stream, running sums),
 *   TABLE (offset, numel, trainable per tensor), PARAMS (table.total floats),
 *   ADAM_M, ADAM_V (state_numel floats each), ORDER (the current epoch's
 *   permutation, N int32), HISTORY (the evaluated epochs), BEST (the best
 *   epoch's trainable tensors; only when there is one).
 * rg_trainer_resume on a fresh trainer built with the same model layout,
 * config and data continues so that the final parameters are bit-identical
 * to those of an uninterrupted run.
 *
 * Interruption: *stop_flag != 0, rg_interrupt_pending(), or a progress
 * callback returning non-zero stops the run: the flags are polled before
 * every micro-batch and the model polls rg_interrupt_pending() between
 * layers. rg_trainer_run then returns RG_ERR_INTERRUPTED with the partial
 * accumulation discarded and the trainer back at the last completed update
 * (same position, sums and history), so calling rg_trainer_run again
 * continues exactly. Checkpoints on disk stay those last written.
 *
 * Non-finite loss or gradient: rg_trainer_run returns RG_ERR_NONFINITE, the
 * result names the epoch, update and micro-batch, the model gets back the
 * parameters it had before the last applied update (the last ones whose
 * every loss was finite: with keep_last_good, before each update the
 * trainable tensors are copied aside) and the trainer refuses to run on
 * (RG_ERR_STATE). The gradients are zeroed; checkpoints on disk are untouched.
 *
 * Data parallelism (config.comm with size > 1): every rank runs the same
 * trainer (same config, data, model layout) and the run equals one process
 * with the same global batch, within fp32 reduction order:
 *   - micro-batch i is still rows order[i*bs .. (i+1)*bs) of the whole set;
 *     rank r takes its rows r, r + size, r + 2 size, ... (a rank may get
 *     none in a short last batch); the batch is cut to the width of the
 *     WHOLE micro-batch, so each row is computed as in one process;
 *   - each rank's backward is scaled by (its target tokens / the micro-batch's
 *     target tokens) / group (LM: shifted targets >= 0; classification: rows
 *     with a target >= 0), so the all-reduced SUM of the gradients is the
 *     gradient of the global micro-batch's mean loss; the trainable tensors'
 *     gradients are all-reduced once per update, before the norm, clipping
 *     and AdamW, which then run identically on every rank;
 *   - a few doubles go with them (the update's loss and tokens, and whether a
 *     rank saw a non-finite loss, a stop request or an error), so every rank
 *     logs the same loss and takes the same decision; a progress callback's
 *     stop request is also all-reduced (events come at the same points on
 *     every rank, with or without a callback);
 *   - a fresh run first copies rank 0's parameters to every rank;
 *   - only rank 0 writes checkpoints (events still come on every rank);
 *     evaluation runs on the whole eval set on every rank;
 *   - dropout: rank r > 0 mixes r into the micro-batch's dropout seed, so
 *     with dropout a run is statistically, not bitwise, that of one process;
 *   - a failed collective stops the run with RG_ERR_COMM; the trainer then
 *     refuses to go on (RG_ERR_STATE).
 * A comm of size 1 (or NULL) gives bit-identical results to no comm.
 *
 * Events: the rg_train_event and everything it points to are valid only
 * during the callback. The callback runs on the thread of rg_trainer_run,
 * between updates (never inside a forward or backward), so a binding may
 * take its interpreter lock just for the call.
 */
#ifndef RG_TRAINER_H
#define RG_TRAINER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "rg_comm.h"
#include "rg_common.h"
#include "rg_model.h"
#include "rg_optim.h"

/* One data set, borrowed only during rg_trainer_init (it is copied). */
typedef struct rg_train_data {
    const int32_t *tokens;         /* (N, T) */
    const int32_t *attention_mask; /* (N, T) 1 = real token, or NULL: every token real */
    const int32_t *token_types;    /* (N, T) or NULL */
    const int32_t *targets;        /* LM: (N, T) labels aligned with tokens (negative = ignored),
                                      or NULL: tokens where the mask is 1, -100 elsewhere;
                                      classification: (N,) class ids in [0, K) (required) */
    int64_t N;                     /* rows */
    int T;                         /* columns, <= the model's n_positions */
} rg_train_data;

/* One evaluated epoch (a history entry). */
typedef struct rg_train_eval {
    int epoch;               /* 1-based */
    int64_t step;            /* updates done when it ended */
    double train_loss;       /* mean micro-batch loss of the epoch */
    int has_eval;            /* 0: no eval data, the fields below are unset */
    double eval_loss;
    double eval_perplexity;  /* LM only, else 0 */
    int has_metrics;         /* classification with valid eval targets */
    double accuracy, macro_f1, near_accuracy, near_macro_f1;
} rg_train_eval;

typedef enum rg_train_event_kind {
    RG_TRAIN_EVENT_STEP = 0,       /* after an update (every progress_every-th, and the last of an epoch) */
    RG_TRAIN_EVENT_EVAL = 1,       /* after each epoch's evaluation */
    RG_TRAIN_EVENT_CHECKPOINT = 2  /* after each checkpoint file is in place */
} rg_train_event_kind;

typedef struct rg_train_event {
    int kind;                 /* rg_train_event_kind */
    int epoch;                /* 1-based */
    int64_t step;             /* updates done */
    int64_t total_steps;
    double epoch_progress;    /* micro-batches done in the epoch / num_batches */
    /* STEP */
    double loss;              /* mean loss of the update's micro-batches */
    double lr;                /* the lr this update used */
    double grad_norm;         /* before clipping */
    int64_t tokens;           /* real tokens of the update's micro-batches */
    double elapsed_s;         /* wall time of the update */
    /* EVAL */
    const rg_train_eval *eval;
    const int32_t *predictions; /* classification: (n_eval,) argmax class ids, else NULL */
    const float *eval_logits;   /* classification: (n_eval, K), else NULL */
    int64_t n_eval;
    int num_labels;             /* K */
    /* CHECKPOINT */
    const char *path;
} rg_train_event;

/* Called with each event; a non-zero return stops the run (RG_ERR_INTERRUPTED). */
typedef int (*rg_train_progress_fn)(void *user, const rg_train_event *event);

typedef struct rg_trainer_config {
    rg_adamw_config adamw;    /* lr, betas, eps, weight_decay, max_grad_norm, warmup_ratio, schedule;
                                 total_steps is ignored (computed, see above) */
    int epochs;               /* >= 1 */
    int train_batch_size;     /* >= 1 */
    int eval_batch_size;      /* >= 1 */
    int grad_accum;           /* >= 1 */
    int trim_padding;         /* 1: cut each batch to its widest row; 0: every batch is (bs, T) */
    int shuffle;              /* 1: a new permutation each epoch; 0: data order */
    uint64_t seed;            /* shuffling and dropout */
    const int32_t *orders;    /* (epochs, N_train) permutations to use instead, or NULL (copied) */
    int load_best_at_end;     /* keep and restore the lowest-eval-loss epoch */
    int apply_freezing;       /* 1: rg_model_set_trainable(trainable_blocks, head_policy) at init */
    int trainable_blocks;     /* -1: everything */
    int head_policy;          /* rg_head_policy */
    const int32_t *label_values; /* (num_labels,) strictly increasing metric value of each class, or NULL (copied) */
    const char *checkpoint_path; /* NULL: no checkpoint (copied) */
    int64_t save_steps;       /* > 0: also checkpoint after every save_steps-th update */
    int keep_last_good;       /* 1: before each update the trainable tensors are copied aside
                                 (state_numel floats, one memcpy per update) so that a non-finite
                                 failure puts back the parameters before the last applied update;
                                 0: no copy, a failure leaves those after the last applied update */
    int progress_every;       /* STEP events every k-th update (0 or 1: every update) */
    rg_train_progress_fn progress; /* may be NULL */
    void *progress_user;
    volatile sig_atomic_t *stop_flag; /* may be NULL */
    const rg_comm *comm;      /* data parallelism (see above), or NULL: one process (copied) */
    int frozen_dropout;       /* 1 (default): dropout in the frozen blocks and embeddings too, as
                                 PyTorch; 0: off there (rg_model_set_frozen_dropout) */
    int cache_frozen;         /* 1: keep the frozen part's output for every row the first time it is
                                 computed (training and eval sets) and later run only the trainable
                                 blocks on it; implies frozen_dropout 0. Not used (result.frozen_cache
                                 0) when no block is frozen or it would need more than
                                 cache_frozen_max_mib */
    int64_t cache_frozen_max_mib; /* 0: 4096 */
} rg_trainer_config;

/* A config with training.py's defaults (TrainingConfig): 5 epochs, batch 8,
 * accumulation 4, lr 5e-4, linear, warmup 0.1, wd 0.1, betas 0.95/0.999,
 * eps 1e-8, clip 1.0, seed 42, shuffle, trim, load best, keep_last_good;
 * no freezing, no checkpoint, no callback. */
rg_trainer_config rg_trainer_config_default(void);

typedef struct rg_train_result {
    int interrupted;          /* the last rg_trainer_run returned RG_ERR_INTERRUPTED */
    int finished;             /* every epoch is done */
    int64_t global_step;      /* updates done */
    int64_t total_steps;
    int num_batches;          /* micro-batches per epoch */
    int epochs_completed;
    int best_epoch;           /* 1-based, 0: none */
    double best_metric;       /* its eval loss */
    int best_loaded;          /* the model holds the best epoch's parameters */
    /* RG_ERR_NONFINITE: where it happened (1-based epoch, the update that
     * failed, 0-based micro-batch in the epoch; -1 for a gradient) */
    int failed_epoch;
    int64_t failed_step;
    int failed_batch;
    int failed_in_eval;
    int frozen_cache;         /* cache_frozen is in use */
    double frozen_cache_mib;  /* what it holds (or would need) */
} rg_train_result;

typedef struct rg_trainer rg_trainer;

/* Validates everything, applies the freezing (apply_freezing), builds the
 * optimizer over the model's table, copies the data, zeroes the gradients.
 * The model is borrowed: it must outlive the trainer, and nothing else may
 * use it during rg_trainer_run. eval may be NULL (no evaluation, no best).
 * Errors: RG_ERR_INVALID_ARG (a null pointer, a config value out of range),
 * RG_ERR_EMPTY (no training row), RG_ERR_SHAPE (T > n_positions, an order
 * that is not a permutation), RG_ERR_LABEL_RANGE (a token, type or target
 * outside its range), RG_ERR_NOMEM. error (error_len bytes, may be NULL)
 * receives why, as the object and its message are gone on failure. */
rg_status rg_trainer_init(rg_trainer **out, rg_model *model, const rg_trainer_config *config,
                          const rg_train_data *train, const rg_train_data *eval, char *error,
                          size_t error_len);
void rg_trainer_free(rg_trainer *trainer);

/* Runs the remaining micro-batches and epochs. RG_OK when the run finished
 * (calling it again returns RG_OK at once), RG_ERR_INTERRUPTED, RG_ERR_NONFINITE,
 * RG_ERR_IO (a checkpoint could not be written: the run stops there, as if
 * interrupted, and may be continued), RG_ERR_COMM (a collective failed), RG_ERR_STATE
 * after a non-finite or collective failure. */
rg_status rg_trainer_run(rg_trainer *trainer);

/* Loads a checkpoint written by a trainer with the same layout and run shape
 * into the model, the optimizer and the trainer. Everything is read and
 * verified before anything changes: on error the trainer is as before.
 * RG_ERR_IO, RG_ERR_CORRUPT (message names the section), RG_ERR_SHAPE (another
 * parameter layout or freezing, number of updates, epochs, batch size,
 * accumulation, rows, seed or shuffle mode). Hyperparameters (lr, betas, ...)
 * are not compared, as training.py does not. */
rg_status rg_trainer_resume(rg_trainer *trainer, const char *path);

/* Writes a checkpoint of the current state now (between runs, or from a
 * progress callback: both are update boundaries). */
rg_status rg_trainer_save(rg_trainer *trainer, const char *path);

/* Puts the best epoch's parameters into the model. RG_ERR_STATE when none. */
rg_status rg_trainer_restore_best(rg_trainer *trainer);

const rg_train_result *rg_trainer_result(const rg_trainer *trainer);
/* The evaluated epochs so far: (*count,) entries, valid until the next run/resume. */
const rg_train_eval *rg_trainer_history(const rg_trainer *trainer, int *count);
/* The last evaluation's predictions and logits (classification), or NULL. */
const int32_t *rg_trainer_predictions(const rg_trainer *trainer, int64_t *n);
const float *rg_trainer_eval_logits(const rg_trainer *trainer, int64_t *n, int *K);
/* A description of the last failure ("" when none). */
const char *rg_trainer_message(const rg_trainer *trainer);
/* The optimizer (step, moments), e.g. for a binding's state(). */
const rg_adamw *rg_trainer_optimizer(const rg_trainer *trainer);

/* The permutation the core RNG gives epoch `epoch` (documented above). order: (n,) out. */
void rg_trainer_permutation(uint64_t seed, int64_t epoch, int64_t n, int32_t *order);

#endif /* RG_TRAINER_H */
