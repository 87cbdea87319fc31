/* test_trainer.c - rg_trainer against a hand-written loop of forward /
 * backward / AdamW calls, resume after a simulated kill, checkpoint damage,
 * the progress callback's rate, non-finite losses and classification. */
#include "tiny_model.h"

#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <sys/wait.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "rg_optim.h"
#include "rg_rng.h"
#include "rg_test.h"
#include "rg_trainer.h"

#define TN 10  /* train rows */
#define TE 5   /* eval rows */
#define TT 9   /* columns */

typedef struct lm_data {
    int32_t tokens[TN * TT], mask[TN * TT];
    int32_t eval_tokens[TE * TT], eval_mask[TE * TT];
    rg_train_data train, eval;
} lm_data;

static void lm_data_make(lm_data *d, int V)
{
    tiny_rows(TN, TT, V, 3, d->tokens, d->mask);
    tiny_rows(TE, TT, V, 11, d->eval_tokens, d->eval_mask);
    d->train = (rg_train_data){d->tokens, d->mask, NULL, NULL, TN, TT};
    d->eval = (rg_train_data){d->eval_tokens, d->eval_mask, NULL, NULL, TE, TT};
}

static rg_trainer_config lm_config(void)
{
    rg_trainer_config c = rg_trainer_config_default();
    c.adamw.lr = 1e-2;
    c.epochs = 3;
    c.train_batch_size = 3; /* 4 micro-batches, the last of one row */
    c.eval_batch_size = 2;
    c.grad_accum = 3;       /* groups of 3 and 1: 2 updates per epoch */
    c.seed = 7;
    c.load_best_at_end = 0;
    return c;
}

/* The permutation as rg_trainer.h documents it, written again here. */
static void doc_permutation(uint64_t seed, int64_t epoch, int n, int32_t *order)
{
    uint64_t stream = rg_rng_mix(seed ^ rg_rng_mix(0x53485546464C45ull + (uint64_t)epoch)), c = 0;
    for (int i = 0; i < n; i++)
        order[i] = i;
    for (int i = n - 1; i >= 1; i--) {
        uint64_t m = (uint64_t)i + 1, two64_mod_m = (UINT64_MAX % m + 1) % m, r;
        do
            r = rg_rng_bits(stream, c++);
        while (two64_mod_m != 0 && r >= 0 - two64_mod_m); /* 2^64 - (2^64 mod m) in uint64 */
        int j = (int)(r % m), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
}

void test_trainer_permutation_as_documented(void)
{
    int32_t a[37], b[37];
    int differs = 0;
    for (int e = 0; e < 3; e++) {
        rg_trainer_permutation(42, e, 37, a);
        doc_permutation(42, e, 37, b);
        RG_CHECK(memcmp(a, b, sizeof(a)) == 0);
        int seen[37] = {0}, ok = 1;
        for (int i = 0; i < 37; i++)
            ok &= a[i] >= 0 && a[i] < 37 && !seen[a[i]]++;
        RG_CHECK(ok);
        rg_trainer_permutation(42, e + 1, 37, b);
        differs += memcmp(a, b, sizeof(a)) != 0;
    }
    RG_CHECK_EQ(differs, 3);
}

/* What training.py does with LMBatches, spelled out call by call.
 * step_loss: (total,) mean loss per update; eval_loss: (epochs,);
 * epoch_params: (epochs, table.total) parameters after each epoch, or NULL. */
static int reference_lm_run(rg_model *m, const lm_data *d, const rg_trainer_config *c, double *step_loss,
                            double *eval_loss, float *epoch_params)
{
    const int nb = (TN + c->train_batch_size - 1) / c->train_batch_size;
    rg_adamw_config ac = c->adamw;
    ac.total_steps = (int64_t)((nb + c->grad_accum - 1) / c->grad_accum) * c->epochs;
    rg_adamw opt;
    if (rg_adamw_init(&opt, &ac, &m->table) != RG_OK)
        return 0;
    rg_model_zero_grad(m);
    int32_t order[TN], tok[TN * TT], mask[TN * TT], tgt[TN * TT];
    int steps = 0, ok = 1;
    for (int e = 0; e < c->epochs; e++) {
        doc_permutation(c->seed, e, TN, order);
        for (int g0 = 0; g0 < nb; g0 += c->grad_accum) {
            int group = nb - g0 < c->grad_accum ? nb - g0 : c->grad_accum;
            double sum = 0.0;
            for (int i = g0; i < g0 + group; i++) {
                int first = i * c->train_batch_size;
                int B = TN - first < c->train_batch_size ? TN - first : c->train_batch_size;
                int width = 1;
                for (int b = 0; b < B; b++) { /* lengths = mask sum (right padding) */
                    int len = 0;
                    for (int j = 0; j < TT; j++)
                        len += d->mask[order[first + b] * TT + j];
                    width = len > width ? len : width;
                }
                for (int b = 0; b < B; b++)
                    for (int j = 0; j < width; j++) {
                        int src = order[first + b] * TT + j;
                        tok[b * width + j] = d->tokens[src];
                        mask[b * width + j] = d->mask[src];
                        tgt[b * width + j] = d->mask[src] > 0 ? d->tokens[src] : -100;
                    }
                uint64_t seed = (c->seed * 0x9E3779B1ull + (uint64_t)(e * nb + i)) % (1ull << 63);
                float loss = 0;
                ok &= rg_model_forward(m, tok, mask, NULL, tgt, B, width, 1, seed, &loss) == RG_OK;
                ok &= rg_model_backward(m, (float)(1.0 / group)) == RG_OK;
                sum += loss;
            }
            ok &= rg_adamw_step(&opt, m->params, m->grads, NULL, NULL) == RG_OK;
            step_loss[steps++] = sum / group;
        }
        double total = 0.0;
        int rows = 0;
        for (int first = 0; first < TE; first += c->eval_batch_size) {
            int B = TE - first < c->eval_batch_size ? TE - first : c->eval_batch_size;
            int width = 1;
            for (int b = 0; b < B; b++) {
                int len = 0;
                for (int j = 0; j < TT; j++)
                    len += d->eval_mask[(first + b) * TT + j];
                width = len > width ? len : width;
            }
            for (int b = 0; b < B; b++)
                for (int j = 0; j < width; j++) {
                    int src = (first + b) * TT + j;
                    tok[b * width + j] = d->eval_tokens[src];
                    mask[b * width + j] = d->eval_mask[src];
                    tgt[b * width + j] = d->eval_mask[src] > 0 ? d->eval_tokens[src] : -100;
                }
            float loss = 0;
            ok &= rg_model_forward(m, tok, mask, NULL, tgt, B, width, 0, 0, &loss) == RG_OK;
            total += (double)loss * B;
            rows += B;
        }
        eval_loss[e] = total / rows;
        if (epoch_params)
            memcpy(epoch_params + (size_t)e * m->table.total, m->params, m->table.total * sizeof(float));
    }
    rg_adamw_free(&opt);
    return ok;
}

typedef struct recorder {
    int steps, evals, checkpoints, others;
    double step_loss[64];
    double eval_loss[16];
    double lr[64];
    /* stop: set *flag once an event of this kind at this step arrives */
    int stop_kind;
    int64_t stop_step;
    volatile sig_atomic_t *flag;
    int stop_by_return;
    int global_interrupt;
    rg_model *model;
    float *snapshot;      /* params copied at snapshot_step */
    int64_t snapshot_step;
    int64_t poison_step;  /* NaN into wte after this step */
} recorder;

static int record(void *user, const rg_train_event *ev)
{
    recorder *r = user;
    if (ev->kind == RG_TRAIN_EVENT_STEP) {
        if (r->steps < 64) {
            r->step_loss[r->steps] = ev->loss;
            r->lr[r->steps] = ev->lr;
        }
        r->steps++;
        if (r->snapshot && ev->step == r->snapshot_step)
            memcpy(r->snapshot, r->model->params, r->model->table.total * sizeof(float));
        if (r->poison_step && ev->step == r->poison_step)
            for (int i = 0; i < r->model->config.vocab_size * r->model->config.n_embd; i++)
                r->model->params[i] = NAN;
    } else if (ev->kind == RG_TRAIN_EVENT_EVAL) {
        if (r->evals < 16 && ev->eval->has_eval)
            r->eval_loss[r->evals] = ev->eval->eval_loss;
        r->evals++;
    } else if (ev->kind == RG_TRAIN_EVENT_CHECKPOINT) {
        r->checkpoints++;
    } else {
        r->others++;
    }
    if (r->flag != NULL && ev->kind == r->stop_kind && ev->step == r->stop_step) {
        if (r->global_interrupt)
            rg_interrupt_request();
        else
            *r->flag = 1;
        return r->stop_by_return;
    }
    return 0;
}

void test_trainer_equals_hand_loop(void)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *a = NULL, *b = NULL;
    if (!RG_CHECK(rg_model_init(&a, &mc) == RG_OK && rg_model_init(&b, &mc) == RG_OK))
        return;
    lm_data d;
    lm_data_make(&d, mc.vocab_size);
    rg_trainer_config c = lm_config();
    recorder rec = {0};
    c.progress = record;
    c.progress_user = &rec;
    rg_trainer *t = NULL;
    RG_CHECK_STATUS(rg_trainer_init(&t, a, &c, &d.train, &d.eval, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_run(t), RG_OK);
    double ref_steps[6], ref_eval[3];
    RG_CHECK(reference_lm_run(b, &d, &c, ref_steps, ref_eval, NULL));
    RG_CHECK_EQ(rec.steps, 6);
    RG_CHECK_EQ(rec.evals, 3);
    for (int i = 0; i < 6; i++)
        RG_CHECK(rec.step_loss[i] == ref_steps[i]);
    for (int e = 0; e < 3; e++)
        RG_CHECK(rec.eval_loss[e] == ref_eval[e]);
    RG_CHECK(memcmp(a->params, b->params, a->table.total * sizeof(float)) == 0);
    const rg_train_result *r = rg_trainer_result(t);
    RG_CHECK_EQ(r->global_step, 6);
    RG_CHECK_EQ(r->epochs_completed, 3);
    RG_CHECK(r->finished && !r->interrupted);
    int n = 0;
    const rg_train_eval *h = rg_trainer_history(t, &n);
    RG_CHECK_EQ(n, 3);
    RG_CHECK(h[2].has_eval && h[2].eval_perplexity == exp(ref_eval[2]) && h[2].step == 6);
    RG_CHECK(rec.lr[0] == 0.0); /* warmup ceil(0.1 * 6) = 1: the first update has lr 0 */
    RG_CHECK_STATUS(rg_trainer_run(t), RG_OK); /* finished: nothing more */
    RG_CHECK_EQ(rec.steps, 6);
    rg_trainer_free(t);
    rg_model_free(a);
    rg_model_free(b);
}

void test_trainer_keeps_best_epoch(void)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *a = NULL, *b = NULL;
    if (!RG_CHECK(rg_model_init(&a, &mc) == RG_OK && rg_model_init(&b, &mc) == RG_OK))
        return;
    lm_data d;
    lm_data_make(&d, mc.vocab_size);
    rg_trainer_config c = lm_config();
    c.adamw.lr = 0.3; /* large steps, so the eval loss is not monotone */
    c.epochs = 4;
    c.load_best_at_end = 1;
    rg_trainer *t = NULL;
    RG_CHECK_STATUS(rg_trainer_init(&t, a, &c, &d.train, &d.eval, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_run(t), RG_OK);
    double steps[8], ev[4];
    float *epoch_params = malloc(4 * b->table.total * sizeof(float));
    RG_CHECK(reference_lm_run(b, &d, &c, steps, ev, epoch_params));
    int best = 0;
    for (int e = 1; e < 4; e++)
        if (ev[e] < ev[best])
            best = e;
    const rg_train_result *r = rg_trainer_result(t);
    RG_CHECK_EQ(r->best_epoch, best + 1);
    RG_CHECK(r->best_metric == ev[best]);
    RG_CHECK(r->best_loaded);
    RG_CHECK(memcmp(a->params, epoch_params + (size_t)best * b->table.total, b->table.total * sizeof(float)) == 0);
    free(epoch_params);
    rg_trainer_free(t);
    rg_model_free(a);
    rg_model_free(b);
}

/* A run stopped by the flag after an event, then resumed from its last
 * checkpoint in a new model and trainer: bit-identical to an uninterrupted run. */
static void resume_case(int stop_kind, int64_t stop_step, int save_steps, int by_return, int global)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *full = NULL, *killed = NULL, *resumed = NULL;
    if (!RG_CHECK(rg_model_init(&full, &mc) == RG_OK && rg_model_init(&killed, &mc) == RG_OK &&
                  rg_model_init(&resumed, &mc) == RG_OK))
        return;
    lm_data d;
    lm_data_make(&d, mc.vocab_size);
    char path_full[512], path[512];
    tiny_temp_path(path_full, sizeof(path_full), "full.ckpt");
    tiny_temp_path(path, sizeof(path), "killed.ckpt");
    rg_trainer_config c = lm_config();
    c.load_best_at_end = 1;
    c.save_steps = save_steps;

    c.checkpoint_path = path_full;
    rg_trainer *t_full = NULL;
    RG_CHECK_STATUS(rg_trainer_init(&t_full, full, &c, &d.train, &d.eval, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_run(t_full), RG_OK);

    volatile sig_atomic_t flag = 0;
    recorder rec = {0};
    rec.stop_kind = stop_kind;
    rec.stop_step = stop_step;
    rec.flag = &flag;
    rec.stop_by_return = by_return;
    rec.global_interrupt = global;
    c.checkpoint_path = path;
    c.progress = record;
    c.progress_user = &rec;
    c.stop_flag = &flag;
    rg_trainer *t_killed = NULL;
    RG_CHECK_STATUS(rg_trainer_init(&t_killed, killed, &c, &d.train, &d.eval, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_run(t_killed), RG_ERR_INTERRUPTED);
    rg_interrupt_clear();
    RG_CHECK(rg_trainer_result(t_killed)->interrupted);
    RG_CHECK(rg_trainer_result(t_killed)->global_step < 6);
    RG_CHECK(memcmp(killed->params, full->params, full->table.total * sizeof(float)) != 0);

    /* the "killed" process is gone: a new model and trainer resume from the file */
    c.progress = NULL;
    c.stop_flag = NULL;
    rg_trainer *t_resumed = NULL;
    RG_CHECK_STATUS(rg_trainer_init(&t_resumed, resumed, &c, &d.train, &d.eval, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_resume(t_resumed, path), RG_OK);
    RG_CHECK(rg_trainer_result(t_resumed)->global_step >= 1);
    RG_CHECK_STATUS(rg_trainer_run(t_resumed), RG_OK);
    RG_CHECK(memcmp(resumed->params, full->params, full->table.total * sizeof(float)) == 0);
    int n1 = 0, n2 = 0;
    const rg_train_eval *h1 = rg_trainer_history(t_full, &n1), *h2 = rg_trainer_history(t_resumed, &n2);
    RG_CHECK_EQ(n2, n1);
    for (int i = 0; i < n1 && i < n2; i++)
        RG_CHECK(h1[i].train_loss == h2[i].train_loss && h1[i].eval_loss == h2[i].eval_loss);
    RG_CHECK_EQ(rg_trainer_result(t_resumed)->best_epoch, rg_trainer_result(t_full)->best_epoch);

    /* the interrupted trainer itself continues exactly too */
    flag = 0;
    c.progress = NULL;
    RG_CHECK_STATUS(rg_trainer_run(t_killed), RG_OK);
    RG_CHECK(memcmp(killed->params, full->params, full->table.total * sizeof(float)) == 0);

    rg_trainer_free(t_full);
    rg_trainer_free(t_killed);
    rg_trainer_free(t_resumed);
    rg_model_free(full);
    rg_model_free(killed);
    rg_model_free(resumed);
    unlink(path_full);
    unlink(path);
}

void test_trainer_resume_mid_epoch_bit_identical(void)
{
    resume_case(RG_TRAIN_EVENT_STEP, 3, 1, 0, 0); /* checkpoint after update 3, inside epoch 2 */
}

void test_trainer_resume_at_epoch_end_bit_identical(void)
{
    resume_case(RG_TRAIN_EVENT_CHECKPOINT, 2, 0, 0, 0); /* the epoch-1 checkpoint */
}

void test_trainer_resume_after_callback_stop_and_ctrl_c(void)
{
    resume_case(RG_TRAIN_EVENT_STEP, 5, 1, 1, 0); /* the callback returns "stop" */
    resume_case(RG_TRAIN_EVENT_STEP, 3, 1, 0, 1); /* rg_interrupt_request(), as a SIGINT handler */
}

void test_trainer_corrupt_checkpoint_names_section(void)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *a = NULL, *b = NULL;
    if (!RG_CHECK(rg_model_init(&a, &mc) == RG_OK && rg_model_init(&b, &mc) == RG_OK))
        return;
    lm_data d;
    lm_data_make(&d, mc.vocab_size);
    char path[512];
    tiny_temp_path(path, sizeof(path), "corrupt.ckpt");
    rg_trainer_config c = lm_config();
    c.epochs = 1;
    c.checkpoint_path = path;
    rg_trainer *t = NULL, *u = NULL;
    RG_CHECK_STATUS(rg_trainer_init(&t, a, &c, &d.train, &d.eval, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_run(t), RG_OK);
    RG_CHECK_STATUS(rg_trainer_init(&u, b, &c, &d.train, &d.eval, NULL, 0), RG_OK);
    /* a byte inside PARAMS: file header, TRSTATE (32 + 256), TABLE (32 + 24 per tensor), PARAMS header */
    const off_t where = 32 + 32 + 256 + 32 + 24 * (off_t)a->table.count + 32 + 4 * 17 + 2;
    int fd = open(path, O_RDWR);
    unsigned char byte = 0;
    RG_CHECK(pread(fd, &byte, 1, where) == 1);
    byte ^= 0x01;
    RG_CHECK(pwrite(fd, &byte, 1, where) == 1);
    close(fd);
    float *before = malloc(b->table.total * sizeof(float));
    memcpy(before, b->params, b->table.total * sizeof(float));
    RG_CHECK_STATUS(rg_trainer_resume(u, path), RG_ERR_CORRUPT);
    RG_CHECK(strstr(rg_trainer_message(u), "PARAMS") != NULL);
    RG_CHECK(memcmp(before, b->params, b->table.total * sizeof(float)) == 0); /* nothing applied */
    RG_CHECK_EQ(rg_trainer_result(u)->global_step, 0);
    /* the undamaged file resumes; a run of another shape is refused */
    byte ^= 0x01;
    fd = open(path, O_RDWR);
    RG_CHECK(pwrite(fd, &byte, 1, where) == 1);
    close(fd);
    RG_CHECK_STATUS(rg_trainer_resume(u, path), RG_OK);
    RG_CHECK(memcmp(a->params, b->params, b->table.total * sizeof(float)) == 0);
    rg_trainer_config other = c;
    other.epochs = 2;
    rg_trainer *w = NULL;
    RG_CHECK_STATUS(rg_trainer_init(&w, b, &other, &d.train, &d.eval, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_resume(w, path), RG_ERR_SHAPE);
    RG_CHECK_STATUS(rg_trainer_resume(w, "/nonexistent-dir-rg/none.ckpt"), RG_ERR_IO);
    rg_trainer_free(w);
    other = c;
    other.seed = c.seed + 1;
    RG_CHECK_STATUS(rg_trainer_init(&w, b, &other, &d.train, &d.eval, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_resume(w, path), RG_ERR_SHAPE);
    RG_CHECK(strstr(rg_trainer_message(w), "seed") != NULL);
    rg_trainer_free(w);
    rg_trainer_free(t);
    rg_trainer_free(u);
    free(before);
    rg_model_free(a);
    rg_model_free(b);
    unlink(path);
}

void test_trainer_progress_rate_bounded(void)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *a = NULL;
    if (!RG_CHECK(rg_model_init(&a, &mc) == RG_OK))
        return;
    lm_data d;
    lm_data_make(&d, mc.vocab_size);
    char path[512];
    tiny_temp_path(path, sizeof(path), "rate.ckpt");
    rg_trainer_config c = lm_config();
    c.epochs = 2;
    c.train_batch_size = 1; /* 10 micro-batches = 10 updates per epoch */
    c.grad_accum = 1;
    c.progress_every = 4;   /* steps 4, 8, 10 | 12, 16, 20 */
    c.save_steps = 5;       /* steps 5 | 15 (10 and 20 are epoch ends) */
    c.checkpoint_path = path;
    recorder rec = {0};
    c.progress = record;
    c.progress_user = &rec;
    rg_trainer *t = NULL;
    RG_CHECK_STATUS(rg_trainer_init(&t, a, &c, &d.train, NULL, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_run(t), RG_OK);
    RG_CHECK_EQ(rec.steps, 6);
    RG_CHECK_EQ(rec.evals, 2);       /* history entries without eval data */
    RG_CHECK_EQ(rec.checkpoints, 4); /* 2 epoch ends + 2 save_steps */
    RG_CHECK_EQ(rec.others, 0);
    RG_CHECK_EQ(rg_trainer_result(t)->global_step, 20);
    RG_CHECK_EQ(rg_trainer_result(t)->best_epoch, 0);
    rg_trainer_free(t);
    rg_model_free(a);
    unlink(path);
}

static void nonfinite_case(int64_t poison_step, int epoch, int64_t step, int batch, int in_eval, int keep)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *a = NULL;
    if (!RG_CHECK(rg_model_init(&a, &mc) == RG_OK))
        return;
    lm_data d;
    lm_data_make(&d, mc.vocab_size);
    rg_trainer_config c = lm_config();
    recorder rec = {0};
    rec.model = a;
    rec.snapshot = malloc(a->table.total * sizeof(float));
    rec.snapshot_step = poison_step - 1;
    rec.poison_step = poison_step; /* NaN weights from there on */
    c.keep_last_good = keep;
    c.progress = record;
    c.progress_user = &rec;
    rg_trainer *t = NULL;
    RG_CHECK_STATUS(rg_trainer_init(&t, a, &c, &d.train, &d.eval, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_run(t), RG_ERR_NONFINITE);
    const rg_train_result *r = rg_trainer_result(t);
    RG_CHECK_EQ(r->failed_epoch, epoch);
    RG_CHECK_EQ(r->failed_step, step);
    RG_CHECK_EQ(r->failed_batch, batch);
    RG_CHECK_EQ(r->failed_in_eval, in_eval);
    char where[32];
    snprintf(where, sizeof(where), "epoch %d", epoch);
    RG_CHECK(strstr(rg_trainer_message(t), where) != NULL);
    /* the weights before the last applied update = those after the one before */
    if (keep)
        RG_CHECK(memcmp(a->params, rec.snapshot, a->table.total * sizeof(float)) == 0);
    else
        RG_CHECK(isnan(a->params[0])); /* no copy kept: the (poisoned) weights stay */
    for (size_t i = 0; i < a->table.total; i++)
        if (a->grads[i] != 0.0f) {
            RG_CHECK(!"gradients left after the failure");
            break;
        }
    RG_CHECK_STATUS(rg_trainer_run(t), RG_ERR_STATE);
    free(rec.snapshot);
    rg_trainer_free(t);
    rg_model_free(a);
}

void test_trainer_nonfinite_restores_last_good(void)
{
    nonfinite_case(3, 2, 4, 3, 0, 1); /* update 4's first micro-batch (3 of epoch 2) */
    nonfinite_case(2, 1, 3, 0, 1, 1); /* the evaluation after epoch 1 */
    nonfinite_case(3, 2, 4, 3, 0, 0); /* without keep_last_good */
}

void test_trainer_rejects_bad_input(void)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *a = NULL;
    if (!RG_CHECK(rg_model_init(&a, &mc) == RG_OK))
        return;
    lm_data d;
    lm_data_make(&d, mc.vocab_size);
    rg_trainer_config c = lm_config();
    rg_trainer *t = NULL;
    rg_train_data bad = d.train;
    bad.N = 0;
    RG_CHECK_STATUS(rg_trainer_init(&t, a, &c, &bad, NULL, NULL, 0), RG_ERR_EMPTY);
    bad = d.train;
    bad.T = 33;
    RG_CHECK_STATUS(rg_trainer_init(&t, a, &c, &bad, NULL, NULL, 0), RG_ERR_SHAPE);
    d.tokens[5] = 13;
    RG_CHECK_STATUS(rg_trainer_init(&t, a, &c, &d.train, NULL, NULL, 0), RG_ERR_LABEL_RANGE);
    d.tokens[5] = 1;
    c.grad_accum = 0;
    RG_CHECK_STATUS(rg_trainer_init(&t, a, &c, &d.train, NULL, NULL, 0), RG_ERR_INVALID_ARG);
    c = lm_config();
    c.checkpoint_path = "/nonexistent-dir-rg/run.ckpt"; /* checkpoints cannot be written */
    RG_CHECK_STATUS(rg_trainer_init(&t, a, &c, &d.train, NULL, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_run(t), RG_ERR_IO);
    RG_CHECK(strstr(rg_trainer_message(t), "/nonexistent-dir-rg/run.ckpt") != NULL);
    RG_CHECK_EQ(rg_trainer_result(t)->epochs_completed, 1); /* it stopped at the first checkpoint */
    rg_trainer_free(t);
    t = NULL;
    c = lm_config();
    int32_t orders[3 * TN];
    for (int i = 0; i < 3 * TN; i++)
        orders[i] = i % TN;
    orders[TN + 4] = 0; /* epoch 1 repeats row 0 */
    c.orders = orders;
    char why[256];
    RG_CHECK_STATUS(rg_trainer_init(&t, a, &c, &d.train, NULL, why, sizeof(why)), RG_ERR_SHAPE);
    RG_CHECK(strstr(why, "orders: row 1") != NULL);
    RG_CHECK(t == NULL);
    rg_model_free(a);
}

/* Classification: eval predictions and metrics against a hand computation
 * made inside the eval callback, with the model's current weights; freezing. */
typedef struct cls_check {
    rg_model *model;
    const int32_t *tokens, *mask, *types, *labels;
    const int32_t *values;
    int ok, evals;
} cls_check;

#define CN 12
#define CE 7
#define CT 7

static int cls_event(void *user, const rg_train_event *ev)
{
    cls_check *k = user;
    if (ev->kind != RG_TRAIN_EVENT_EVAL)
        return 0;
    k->evals++;
    const int K = 3;
    int pred[CE];
    double loss_sum = 0.0;
    for (int i = 0; i < CE; i++) { /* one row at a time: the logits do not depend on the batch */
        int w = CT;
        while (w > 1 && k->mask[i * CT + w - 1] == 0)
            w--;
        float loss;
        rg_model_forward(k->model, k->tokens + i * CT, k->mask + i * CT, k->types + i * CT, k->labels + i, 1, w, 0,
                         0, &loss);
        int rows, cols;
        const float *logits = rg_model_logits(k->model, &rows, &cols);
        pred[i] = 0;
        for (int j = 1; j < K; j++)
            if (logits[j] > logits[pred[i]])
                pred[i] = j;
        loss_sum += loss;
    }
    int exact = 0, near = 0, tp[3] = {0}, fp[3] = {0}, fn[3] = {0};
    for (int i = 0; i < CE; i++) {
        int t = k->values[k->labels[i]], p = k->values[pred[i]];
        exact += t == p;
        near += abs(t - p) <= 1;
        if (pred[i] == k->labels[i])
            tp[pred[i]]++;
        else {
            fp[pred[i]]++;
            fn[k->labels[i]]++;
        }
    }
    double f1 = 0.0;
    for (int j = 0; j < K; j++)
        f1 += 2 * tp[j] + fp[j] + fn[j] ? 2.0 * tp[j] / (2 * tp[j] + fp[j] + fn[j]) : 0.0;
    f1 /= K;
    const rg_train_eval *e = ev->eval;
    int ok = e->has_eval && e->has_metrics && ev->n_eval == CE && ev->num_labels == K;
    for (int i = 0; i < CE && ok; i++)
        ok &= ev->predictions[i] == pred[i];
    ok &= fabs(e->accuracy - (double)exact / CE) < 1e-12;
    ok &= fabs(e->near_accuracy - (double)near / CE) < 1e-12;
    ok &= fabs(e->macro_f1 - f1) < 1e-12;
    ok &= fabs(e->eval_loss - loss_sum / CE) < 1e-5; /* batched vs one row at a time */
    k->ok &= ok;
    return 0;
}

void test_trainer_classification_metrics_and_freezing(void)
{
    rg_model_config mc = tiny_cls_config();
    mc.type_vocab_size = 2; /* BERT-style segments */
    rg_model *m = NULL;
    if (!RG_CHECK(rg_model_init(&m, &mc) == RG_OK))
        return;
    int32_t tok[CN * CT], mask[CN * CT], labels[CN], etok[CE * CT], emask[CE * CT], elabels[CE];
    int32_t types[CN * CT], etypes[CE * CT];
    tiny_rows(CN, CT, mc.vocab_size, 5, tok, mask);
    tiny_rows(CE, CT, mc.vocab_size, 9, etok, emask);
    for (int i = 0; i < CN * CT; i++)
        types[i] = (i % CT) >= 3;
    for (int i = 0; i < CE * CT; i++)
        etypes[i] = (i % CT) >= 2;
    for (int i = 0; i < CN; i++)
        labels[i] = tok[i * CT] % 3;
    for (int i = 0; i < CE; i++)
        elabels[i] = (i * 2) % 3;
    const int32_t values[3] = {1, 2, 5};
    rg_train_data train = {tok, mask, types, labels, CN, CT}, eval = {etok, emask, etypes, elabels, CE, CT};
    rg_trainer_config c = rg_trainer_config_default();
    c.epochs = 2;
    c.train_batch_size = 4;
    c.eval_batch_size = 3;
    c.grad_accum = 2;
    c.adamw.lr = 5e-3;
    c.apply_freezing = 1;
    c.trainable_blocks = 1;
    c.head_policy = RG_HEAD_POLICY_TRAIN;
    c.label_values = values;
    c.load_best_at_end = 0;
    cls_check k = {m, etok, emask, etypes, elabels, values, 1, 0};
    c.progress = cls_event;
    c.progress_user = &k;
    const rg_param_info *wte = rg_model_find_param(m, "wte"), *block0 = rg_model_find_param(m, "h.0.qkv.w"),
                        *block1 = rg_model_find_param(m, "h.1.qkv.w");
    float *before = malloc(m->table.total * sizeof(float));
    memcpy(before, m->params, m->table.total * sizeof(float));
    rg_trainer *t = NULL;
    RG_CHECK_STATUS(rg_trainer_init(&t, m, &c, &train, &eval, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_run(t), RG_OK);
    RG_CHECK_EQ(k.evals, 2);
    RG_CHECK(k.ok);
    RG_CHECK(memcmp(before + wte->offset, m->params + wte->offset, wte->numel * sizeof(float)) == 0);
    RG_CHECK(memcmp(before + block0->offset, m->params + block0->offset, block0->numel * sizeof(float)) == 0);
    RG_CHECK(memcmp(before + block1->offset, m->params + block1->offset, block1->numel * sizeof(float)) != 0);
    int64_t n = 0;
    RG_CHECK(rg_trainer_predictions(t, &n) != NULL && n == CE);
    rg_trainer_free(t);
    /* a classifier without targets, and unsorted label values, are refused */
    train.targets = NULL;
    RG_CHECK_STATUS(rg_trainer_init(&t, m, &c, &train, NULL, NULL, 0), RG_ERR_INVALID_ARG);
    train.targets = labels;
    const int32_t unsorted[3] = {2, 1, 5};
    c.label_values = unsorted;
    RG_CHECK_STATUS(rg_trainer_init(&t, m, &c, &train, &eval, NULL, 0), RG_ERR_INVALID_ARG);
    free(before);
    rg_model_free(m);
}

/* A real SIGKILL: a child process (this test binary started again, so that
 * no OpenMP state crosses a fork) trains and kills itself right after the
 * checkpoint of update 3 is in place (no cleanup of any kind runs); the
 * parent resumes from that file and must end bit-identical to a run that
 * was never stopped. */
static int kill_after_checkpoint(void *user, const rg_train_event *ev)
{
    (void)user;
    if (ev->kind == RG_TRAIN_EVENT_CHECKPOINT && ev->step == 3)
        raise(SIGKILL);
    return 0;
}

static rg_trainer_config sigkill_config(const char *path)
{
    rg_trainer_config c = lm_config();
    c.load_best_at_end = 1;
    c.save_steps = 1;
    c.checkpoint_path = path;
    return c;
}

/* The child's part: does nothing unless started by the test below. */
void test_trainer_zchild_sigkill(void)
{
    const char *path = getenv("RG_TEST_SIGKILL_CHECKPOINT");
    if (path == NULL)
        return;
    rg_model_config mc = tiny_lm_config();
    lm_data d;
    lm_data_make(&d, mc.vocab_size);
    rg_trainer_config c = sigkill_config(path);
    c.progress = kill_after_checkpoint;
    rg_model *m = NULL;
    rg_trainer *t = NULL;
    if (rg_model_init(&m, &mc) != RG_OK || rg_trainer_init(&t, m, &c, &d.train, &d.eval, NULL, 0) != RG_OK)
        _exit(2);
    rg_trainer_run(t);
    _exit(3); /* not reached when the kill happens */
}

extern char **environ;

void test_trainer_sigkill_then_resume_bit_identical(void)
{
    rg_model_config mc = tiny_lm_config();
    lm_data d;
    lm_data_make(&d, mc.vocab_size);
    char path[512], env[600], self[1024];
    tiny_temp_path(path, sizeof(path), "sigkill.ckpt");
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (!RG_CHECK(n > 0))
        return;
    self[n] = 0;
    snprintf(env, sizeof(env), "RG_TEST_SIGKILL_CHECKPOINT=%s", path);
    char *child_env[64];
    int k = 0;
    child_env[k++] = env;
    for (char **e = environ; *e != NULL && k < 63; e++)
        if (strncmp(*e, "RG_TEST_SIGKILL_CHECKPOINT=", 27) != 0)
            child_env[k++] = *e;
    child_env[k] = NULL;
    char *argv[] = {self, "test_trainer_zchild_sigkill", NULL};
    fflush(NULL);
    pid_t child = fork();
    if (child == 0) {
        execve(self, argv, child_env); /* exec right away: nothing of this process runs on */
        _exit(4);
    }
    int wstatus = 0;
    if (!RG_CHECK(child > 0 && waitpid(child, &wstatus, 0) == child))
        return;
    if (!RG_CHECK(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL))
        fprintf(stderr, "    child: exited %d status %d, signal %d\n", WIFEXITED(wstatus), WEXITSTATUS(wstatus),
                WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0);

    rg_model *full = NULL, *resumed = NULL;
    if (!RG_CHECK(rg_model_init(&full, &mc) == RG_OK && rg_model_init(&resumed, &mc) == RG_OK))
        return;
    rg_trainer *t_full = NULL, *t_resumed = NULL;
    rg_trainer_config c = sigkill_config(path), fc = c;
    fc.checkpoint_path = NULL;
    RG_CHECK_STATUS(rg_trainer_init(&t_full, full, &fc, &d.train, &d.eval, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_run(t_full), RG_OK);
    RG_CHECK_STATUS(rg_trainer_init(&t_resumed, resumed, &c, &d.train, &d.eval, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_resume(t_resumed, path), RG_OK);
    RG_CHECK_EQ(rg_trainer_result(t_resumed)->global_step, 3);
    RG_CHECK_STATUS(rg_trainer_run(t_resumed), RG_OK);
    RG_CHECK(memcmp(resumed->params, full->params, full->table.total * sizeof(float)) == 0);
    rg_trainer_free(t_full);
    rg_trainer_free(t_resumed);
    rg_model_free(full);
    rg_model_free(resumed);
    unlink(path);
}

/* Caller-given orders are used as given: the documented permutations give
 * the RNG's run; identity orders give the unshuffled run. */
void test_trainer_given_orders(void)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *m[4] = {NULL, NULL, NULL, NULL};
    for (int i = 0; i < 4; i++)
        if (!RG_CHECK(rg_model_init(&m[i], &mc) == RG_OK))
            return;
    lm_data d;
    lm_data_make(&d, mc.vocab_size);
    int32_t perms[3 * TN], identity[3 * TN];
    for (int e = 0; e < 3; e++) {
        doc_permutation(7, e, TN, perms + e * TN);
        for (int i = 0; i < TN; i++)
            identity[e * TN + i] = i;
    }
    rg_trainer_config c[4];
    for (int i = 0; i < 4; i++)
        c[i] = lm_config(); /* seed 7, shuffled */
    c[1].orders = perms;
    c[2].orders = identity;
    c[3].shuffle = 0;
    for (int i = 0; i < 4; i++) {
        rg_trainer *t = NULL;
        RG_CHECK_STATUS(rg_trainer_init(&t, m[i], &c[i], &d.train, &d.eval, NULL, 0), RG_OK);
        RG_CHECK_STATUS(rg_trainer_run(t), RG_OK);
        rg_trainer_free(t);
    }
    const size_t bytes = m[0]->table.total * sizeof(float);
    RG_CHECK(memcmp(m[0]->params, m[1]->params, bytes) == 0);
    RG_CHECK(memcmp(m[2]->params, m[3]->params, bytes) == 0);
    RG_CHECK(memcmp(m[0]->params, m[3]->params, bytes) != 0);
    for (int i = 0; i < 4; i++)
        rg_model_free(m[i]);
}

/* The whole-run trainer over a LoRA model (adapter dropout on): the same
 * steps as the hand loop, the base weights bit-identical, and its checkpoint
 * (compact optimizer state) loads into a fresh trainer with the same weights. */
void test_trainer_lora_equals_hand_loop(void)
{
    rg_model_config mc = tiny_lm_config();
    mc.lora_rank = 2;
    mc.lora_alpha = 4.0f;
    mc.lora_dropout = 0.1f;
    mc.lora_targets = RG_LORA_BIT(RG_LORA_SITE_QKV) | RG_LORA_BIT(RG_LORA_SITE_FC2);
    rg_model *a = NULL, *b = NULL;
    if (!RG_CHECK(rg_model_init(&a, &mc) == RG_OK && rg_model_init(&b, &mc) == RG_OK))
        return;
    float *base = malloc(a->table.total * sizeof(float));
    if (!RG_CHECK(base != NULL))
        return;
    memcpy(base, a->params, a->table.total * sizeof(float));
    lm_data d;
    lm_data_make(&d, mc.vocab_size);
    rg_trainer_config c = lm_config();
    recorder rec = {0};
    c.progress = record;
    c.progress_user = &rec;
    rg_trainer *t = NULL;
    RG_CHECK_STATUS(rg_trainer_init(&t, a, &c, &d.train, &d.eval, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_trainer_run(t), RG_OK);
    double ref_steps[6], ref_eval[3];
    RG_CHECK(reference_lm_run(b, &d, &c, ref_steps, ref_eval, NULL));
    RG_CHECK_EQ(rec.steps, 6);
    for (int i = 0; i < 6; i++)
        RG_CHECK(rec.step_loss[i] == ref_steps[i]);
    RG_CHECK(memcmp(a->params, b->params, a->table.total * sizeof(float)) == 0);
    for (int i = 0; i < a->table.count; i++) {
        const rg_param_info *info = &a->table.tensors[i];
        const int same = memcmp(a->params + info->offset, base + info->offset, info->numel * sizeof(float)) == 0;
        RG_CHECK_EQ(same, strstr(info->name, ".lora.") == NULL);
    }
    char path[256];
    tiny_temp_path(path, sizeof(path), "lora.ckpt");
    RG_CHECK_STATUS(rg_trainer_save(t, path), RG_OK);
    rg_model *fresh = NULL;
    rg_trainer *t2 = NULL;
    if (RG_CHECK_STATUS(rg_model_init(&fresh, &mc), RG_OK)) {
        RG_CHECK_STATUS(rg_trainer_init(&t2, fresh, &c, &d.train, &d.eval, NULL, 0), RG_OK);
        RG_CHECK_STATUS(rg_trainer_resume(t2, path), RG_OK);
        RG_CHECK(memcmp(fresh->params, a->params, a->table.total * sizeof(float)) == 0);
        RG_CHECK_EQ(rg_trainer_result(t2)->global_step, 6);
        rg_trainer_free(t2);
        rg_model_free(fresh);
    }
    unlink(path);
    rg_trainer_free(t);
    free(base);
    rg_model_free(a);
    rg_model_free(b);
}

/* ---- cache_frozen ---- */

/* Three runs from the same weights, the last block training: frozen dropout
 * on (the default), off, and off with the frozen part's outputs kept after
 * their first computation. The last two are the same run (bit for bit when
 * every epoch makes the same batches; up to rounding when shuffled batches
 * put a row beside other rows, which moves the last bits of a matrix
 * product); the first is not. */
static void frozen_cache_case(int classifier, int shuffle)
{
    rg_model_config mc = classifier ? tiny_cls_config() : tiny_lm_config();
    rg_model *m[3] = {NULL, NULL, NULL};
    for (int r = 0; r < 3; r++)
        if (!RG_CHECK(rg_model_init(&m[r], &mc) == RG_OK))
            goto done;
    lm_data d;
    lm_data_make(&d, mc.vocab_size);
    int32_t labels[TN], elabels[TE];
    if (classifier) {
        for (int i = 0; i < TN; i++)
            labels[i] = d.tokens[i * TT] % 3;
        for (int i = 0; i < TE; i++)
            elabels[i] = i % 3;
        d.train.targets = labels;
        d.eval.targets = elabels;
    }
    double eval_loss[3][3];
    const rg_train_result *results[3];
    rg_trainer *t[3] = {NULL, NULL, NULL};
    for (int r = 0; r < 3; r++) {
        rg_trainer_config c = lm_config();
        c.apply_freezing = 1;
        c.trainable_blocks = 1;
        c.head_policy = classifier ? RG_HEAD_POLICY_TRAIN : RG_HEAD_POLICY_FROZEN; /* the LM's head is wte */
        c.frozen_dropout = r == 0;
        c.cache_frozen = r == 2;
        c.shuffle = shuffle;
        if (!RG_CHECK_STATUS(rg_trainer_init(&t[r], m[r], &c, &d.train, &d.eval, NULL, 0), RG_OK))
            goto done;
        RG_CHECK_STATUS(rg_trainer_run(t[r]), RG_OK);
        results[r] = rg_trainer_result(t[r]);
        int n = 0;
        const rg_train_eval *h = rg_trainer_history(t[r], &n);
        RG_CHECK_EQ(n, 3);
        for (int e = 0; e < 3 && e < n; e++)
            eval_loss[r][e] = h[e].eval_loss;
    }
    RG_CHECK(!results[0]->frozen_cache && !results[1]->frozen_cache);
    RG_CHECK(results[2]->frozen_cache && results[2]->frozen_cache_mib > 0.0);
    double worst = 0.0;
    for (size_t i = 0; i < m[1]->table.total; i++)
        worst = fmax(worst, fabs((double)m[2]->params[i] - m[1]->params[i]));
    if (!RG_CHECK(shuffle ? worst < 2e-5 : worst == 0.0))
        rg_test_check(0, __FILE__, __LINE__, "cached and uncached runs differ by %.3g", worst);
    for (int e = 0; e < 3; e++)
        RG_CHECK(shuffle ? fabs(eval_loss[2][e] - eval_loss[1][e]) < 2e-5 : eval_loss[2][e] == eval_loss[1][e]);
    RG_CHECK(memcmp(m[0]->params, m[1]->params, m[0]->table.total * sizeof(float)) != 0);
    /* nothing frozen, or a tied head that trains (wte changes): nothing kept */
    for (int policy = 0; policy < 2; policy++) {
        rg_trainer_free(t[2]);
        t[2] = NULL;
        rg_trainer_config c = lm_config();
        c.apply_freezing = 1;
        c.trainable_blocks = policy ? 1 : -1;
        c.head_policy = RG_HEAD_POLICY_TRAIN;
        c.cache_frozen = 1;
        RG_CHECK_STATUS(rg_trainer_init(&t[2], m[2], &c, &d.train, &d.eval, NULL, 0), RG_OK);
        RG_CHECK(!rg_trainer_result(t[2])->frozen_cache || (classifier && policy));
    }
done:
    for (int r = 0; r < 3; r++) {
        rg_trainer_free(t[r]);
        rg_model_free(m[r]);
    }
}

void test_trainer_cache_frozen_equals_uncached(void)
{
    for (int shuffle = 0; shuffle < 2; shuffle++) {
        frozen_cache_case(0, shuffle);
        frozen_cache_case(1, shuffle);
    }
}
