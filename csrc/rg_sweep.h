/*
 * rg_sweep.h - the seed study's hyperparameter sweep in one call: one
 * hyperparameter takes each of n_values values; for every value, each of the
 * k samples (train + eval data) is trained by an rg_trainer from the SAME
 * initial parameters (a copy kept in memory, not reloaded from disk) and
 * evaluated after every epoch. Runs go value-major: (v0, s0), (v0, s1), ...
 *
 * Journal (journal_path != NULL): an append-only file. Its header holds a
 * fingerprint of the sweep (parameter, values, base config, every sample's
 * data, the initial parameters); each finished run appends one record
 *   u32 0x52535252, u32 payload bytes, payload, u64 rg_hash64(payload)
 * where the payload is value index, sample index (i32), value (f64), status,
 * epochs, best epoch, 0 (i32), best eval loss (f64), updates (i64), then 11
 * f64 per epoch (rg_train_eval's fields in order),
 * written with one write() and fsynced. rg_sweep_init reads the journal:
 * runs with a valid record are done and are not run again; the file is cut
 * after the last valid record (a record torn by a kill, or damaged, and
 * everything after it, is dropped and those runs are redone). A journal of
 * another sweep, or one another process holds open (an fcntl lock), is
 * refused (RG_ERR_STATE). An interrupted run is never
 * journaled. Since every run is deterministic, a sweep killed at any point
 * and restarted ends with the same results as an uninterrupted one.
 *
 * A run whose loss or gradient becomes non-finite is a finished run with
 * status RG_ERR_NONFINITE and the history up to the failure (a too-large
 * learning rate diverging is a result of the sweep, not a failure of it).
 */
#ifndef RG_SWEEP_H
#define RG_SWEEP_H

#include <stddef.h>
#include <stdint.h>

#include "rg_common.h"
#include "rg_model.h"
#include "rg_trainer.h"

typedef enum rg_sweep_param {
    RG_SWEEP_EPOCHS = 0,           /* integer >= 1 */
    RG_SWEEP_LEARNING_RATE = 1,
    RG_SWEEP_BETA1 = 2,
    RG_SWEEP_BETA2 = 3,
    RG_SWEEP_BATCH_SIZE = 4,       /* train batch size, integer >= 1 */
    RG_SWEEP_WEIGHT_DECAY = 5,
    RG_SWEEP_WARMUP_RATIO = 6,
    RG_SWEEP_TRAINABLE_BLOCKS = 7, /* integer >= -1; turns apply_freezing on */
    RG_SWEEP_GRAD_ACCUM = 8,       /* integer >= 1 */
    RG_SWEEP_MAX_GRAD_NORM = 9,
    RG_SWEEP_PARAM_COUNT
} rg_sweep_param;

typedef struct rg_sweep_sample {
    rg_train_data train;
    rg_train_data eval; /* N = 0: no evaluation */
} rg_sweep_sample;

/* One (value, sample) run. */
typedef struct rg_sweep_result {
    int value_index, sample_index;
    double value;
    int done;              /* finished (in this process or read from the journal) */
    int from_journal;
    rg_status status;      /* RG_OK, or RG_ERR_NONFINITE for a diverged run */
    int n_epochs;          /* history entries */
    rg_train_eval *history; /* (n_epochs,) */
    int best_epoch;        /* 1-based, 0: none */
    double best_metric;
    int64_t global_step;
} rg_sweep_result;

/* Called after each run finished in this process; non-zero stops the sweep
 * there (RG_ERR_INTERRUPTED, that run kept). */
typedef int (*rg_sweep_run_fn)(void *user, const rg_sweep_result *run);

typedef struct rg_sweep_config {
    rg_trainer_config base;   /* every run's config before the parameter is set; its
                                 checkpoint_path is ignored; its progress callback, when
                                 set, sees every run's events (use progress_every to bound
                                 them); its stop_flag stops the sweep inside a run */
    int parameter;            /* rg_sweep_param */
    const double *values;     /* (n_values,) (copied) */
    int n_values;
    const char *journal_path; /* NULL: no journal (copied) */
    rg_sweep_run_fn on_run;   /* may be NULL */
    void *on_run_user;
} rg_sweep_config;

typedef struct rg_sweep rg_sweep;

/* Copies the config, the samples' data and the model's parameters; reads
 * (and repairs) the journal. The model is borrowed: it must outlive the sweep.
 * Errors: RG_ERR_INVALID_ARG (a null pointer, an unknown parameter, a value
 * out of range, e.g. a fractional batch size), RG_ERR_EMPTY (no value or no
 * sample), RG_ERR_UNSUPPORTED (head_policy untie on a tied model: untie it
 * before the sweep; base.orders set: shuffled orders cannot be shared by
 * samples), RG_ERR_STATE (a journal of another sweep), RG_ERR_CORRUPT (a file
 * at journal_path that is not a journal), RG_ERR_IO, RG_ERR_NOMEM. The data
 * themselves are checked by each run's rg_trainer_init (its errors come from
 * rg_sweep_run). */
rg_status rg_sweep_init(rg_sweep **out, rg_model *model, const rg_sweep_config *config,
                        const rg_sweep_sample *samples /* (n_samples,) */, int n_samples,
                        char *error /* (error_len,) out: why init failed, or NULL */, size_t error_len);
void rg_sweep_free(rg_sweep *sweep);

/* Runs every run not done yet. Before each run the initial parameters and
 * freezing are put back; after the sweep (finished or not) the model holds
 * the initial parameters again. RG_OK, RG_ERR_INTERRUPTED (stop flag,
 * rg_interrupt_pending(), a callback), RG_ERR_IO (the journal could not be
 * appended: that run is not counted as done), or a run's other error. */
rg_status rg_sweep_run(rg_sweep *sweep);

/* Journals a run that was computed elsewhere as run (run->value_index,
 * run->sample_index) of this sweep, e.g. by a one-run sweep of the same value
 * and sample's data in another process (reviewgen's Ray executor sends each
 * run to a cluster so): rg_sweep_run depends only on the initial parameters,
 * the config with the value set and the sample's data, so that run's record
 * is the one this sweep would have written. The history is copied; the run
 * is done from then on (rg_sweep_run skips it, a restart reads it back).
 * RG_ERR_INVALID_ARG (indices out of range, a value that is not this sweep's,
 * bit for bit, a status other than RG_OK / RG_ERR_NONFINITE, n_epochs out of
 * range), RG_ERR_STATE (the run is done already), RG_ERR_IO, RG_ERR_NOMEM. */
rg_status rg_sweep_record(rg_sweep *sweep, const rg_sweep_result *run);

/* Every (value, sample) run, value-major: (n_values * n_samples,) entries;
 * those with done = 0 have not run. Valid until the next rg_sweep_run. */
const rg_sweep_result *rg_sweep_runs(const rg_sweep *sweep, int *count);
const char *rg_sweep_message(const rg_sweep *sweep);

#endif /* RG_SWEEP_H */
