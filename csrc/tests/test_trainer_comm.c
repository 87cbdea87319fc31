/* test_trainer_comm.c - data parallelism in rg_trainer (rg_comm.h): two
 * ranks on two threads with an in-process all-reduce train to the parameters
 * of one trainer with the same global batch (fp32 reduction order apart) and
 * end bit-identical to each other; a size-1 comm is bit-identical to none; a
 * failed all-reduce stops both ranks with RG_ERR_COMM, then RG_ERR_STATE. */
#include "tiny_model.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "rg_comm.h"
#include "rg_test.h"
#include "rg_trainer.h"

#define CN 11 /* train rows: batches of 3, the last of 2 rows */
#define CE 4
#define CT 9

/* Two ranks in one process: both post their buffer, both sum in the same
 * order into scratch, then both copy back. */
typedef struct shared_sum {
    pthread_barrier_t barrier;
    void *bufs[2];
    int fail_at;   /* the call that fails on rank 1 (0: none) */
    int calls[2];
} shared_sum;

typedef struct rank_ctx {
    shared_sum *shared;
    int rank;
} rank_ctx;

static int thread_allreduce(void *ctx, void *buf, size_t n, rg_comm_dtype dtype)
{
    rank_ctx *r = ctx;
    shared_sum *s = r->shared;
    int call = ++s->calls[r->rank];
    if (s->fail_at > 0 && call >= s->fail_at)
        return 1; /* both ranks fail the same call: neither waits for the other */
    const size_t size = dtype == RG_COMM_F64 ? sizeof(double) : sizeof(float);
    void *scratch = malloc(n * size + 1);
    s->bufs[r->rank] = buf;
    pthread_barrier_wait(&s->barrier);
    for (size_t i = 0; i < n; i++) {
        if (dtype == RG_COMM_F64)
            ((double *)scratch)[i] = ((double *)s->bufs[0])[i] + ((double *)s->bufs[1])[i];
        else
            ((float *)scratch)[i] = ((float *)s->bufs[0])[i] + ((float *)s->bufs[1])[i];
    }
    pthread_barrier_wait(&s->barrier);
    memcpy(buf, scratch, n * size);
    free(scratch);
    pthread_barrier_wait(&s->barrier); /* nobody reposts before both copied */
    return 0;
}

typedef struct job {
    rg_model *model;
    rg_trainer_config config;
    const rg_train_data *train, *eval;
    rank_ctx ctx;
    rg_comm comm;
    rg_status status, again;
    rg_train_eval history[4];
    int n_history;
} job;

static void *job_run(void *arg)
{
    job *j = arg;
    rg_trainer *t = NULL;
    j->status = rg_trainer_init(&t, j->model, &j->config, j->train, j->eval, NULL, 0);
    if (j->status == RG_OK) {
        j->status = rg_trainer_run(t);
        j->again = rg_trainer_run(t);
        const rg_train_eval *h = rg_trainer_history(t, &j->n_history);
        memcpy(j->history, h, (size_t)j->n_history * sizeof(rg_train_eval));
    }
    rg_trainer_free(t);
    return NULL;
}

typedef struct case_data {
    int32_t tokens[CN * CT], mask[CN * CT], targets[CN];
    int32_t eval_tokens[CE * CT], eval_mask[CE * CT], eval_targets[CE];
    rg_train_data train, eval;
} case_data;

static rg_model_config case_model(int classifier)
{
    rg_model_config mc = classifier ? tiny_cls_config() : tiny_lm_config();
    mc.embd_pdrop = mc.resid_pdrop = mc.attn_pdrop = mc.cls_pdrop = 0.0f; /* dropout masks differ per rank */
    return mc;
}

static void case_make(case_data *d, int classifier, int V)
{
    tiny_rows(CN, CT, V, 5, d->tokens, d->mask);
    tiny_rows(CE, CT, V, 9, d->eval_tokens, d->eval_mask);
    for (int i = 0; i < CN; i++)
        d->targets[i] = d->tokens[i * CT] % 3;
    for (int i = 0; i < CE; i++)
        d->eval_targets[i] = d->eval_tokens[i * CT] % 3;
    d->train = (rg_train_data){d->tokens, d->mask, NULL, classifier ? d->targets : NULL, CN, CT};
    d->eval = (rg_train_data){d->eval_tokens, d->eval_mask, NULL, classifier ? d->eval_targets : NULL, CE, CT};
}

static rg_trainer_config case_config(void)
{
    rg_trainer_config c = rg_trainer_config_default();
    c.adamw.lr = 1e-2;
    c.epochs = 2;
    c.train_batch_size = 3;
    c.eval_batch_size = 2;
    c.grad_accum = 2;
    c.seed = 5;
    return c;
}

/* Runs the two ranks; fail_at > 0 makes that all-reduce call fail. */
static int two_ranks(int classifier, int fail_at, job jobs[2], rg_model *models[2], const case_data *d)
{
    rg_model_config mc = case_model(classifier);
    shared_sum shared;
    memset(&shared, 0, sizeof(shared));
    shared.fail_at = fail_at;
    pthread_barrier_init(&shared.barrier, NULL, 2);
    pthread_t threads[2];
    for (int r = 0; r < 2; r++) {
        if (rg_model_init(&models[r], &mc) != RG_OK)
            return 0;
        memset(&jobs[r], 0, sizeof(jobs[r]));
        jobs[r].model = models[r];
        jobs[r].config = case_config();
        jobs[r].train = &d->train;
        jobs[r].eval = &d->eval;
        jobs[r].ctx = (rank_ctx){&shared, r};
        jobs[r].comm = (rg_comm){&jobs[r].ctx, r, 2, thread_allreduce};
        jobs[r].config.comm = &jobs[r].comm;
    }
    for (int r = 0; r < 2; r++)
        pthread_create(&threads[r], NULL, job_run, &jobs[r]);
    for (int r = 0; r < 2; r++)
        pthread_join(threads[r], NULL);
    pthread_barrier_destroy(&shared.barrier);
    return 1;
}

static void equal_to_one_process(int classifier)
{
    case_data d;
    rg_model_config mc = case_model(classifier);
    case_make(&d, classifier, mc.vocab_size);
    job jobs[2], single;
    rg_model *models[2] = {NULL, NULL}, *one = NULL;
    if (!RG_CHECK(two_ranks(classifier, 0, jobs, models, &d)) || !RG_CHECK(rg_model_init(&one, &mc) == RG_OK))
        return;
    memset(&single, 0, sizeof(single));
    single.model = one;
    single.config = case_config();
    single.train = &d.train;
    single.eval = &d.eval;
    job_run(&single);
    RG_CHECK_STATUS(jobs[0].status, RG_OK);
    RG_CHECK_STATUS(jobs[1].status, RG_OK);
    RG_CHECK_STATUS(single.status, RG_OK);
    const size_t total = one->table.total;
    RG_CHECK(memcmp(models[0]->params, models[1]->params, total * sizeof(float)) == 0);
    double worst = 0.0;
    size_t close = 0;
    for (size_t i = 0; i < total; i++) {
        double diff = fabs((double)models[0]->params[i] - (double)one->params[i]);
        worst = diff > worst ? diff : worst;
        close += diff <= 1e-6;
    }
    RG_CHECK(worst <= 2e-4);
    RG_CHECK((double)close >= 0.99 * (double)total);
    RG_CHECK_EQ(jobs[0].n_history, 2);
    RG_CHECK_EQ(single.n_history, 2);
    for (int e = 0; e < 2; e++) {
        RG_CHECK(memcmp(&jobs[0].history[e], &jobs[1].history[e], sizeof(rg_train_eval)) == 0);
        RG_CHECK(fabs(jobs[0].history[e].train_loss - single.history[e].train_loss) <=
                 1e-6 * fabs(single.history[e].train_loss));
        RG_CHECK(fabs(jobs[0].history[e].eval_loss - single.history[e].eval_loss) <=
                 1e-5 * fabs(single.history[e].eval_loss));
    }
    rg_model_free(models[0]);
    rg_model_free(models[1]);
    rg_model_free(one);
}

void test_trainer_comm_two_ranks_equal_one_process_lm(void) { equal_to_one_process(0); }
void test_trainer_comm_two_ranks_equal_one_process_cls(void) { equal_to_one_process(1); }

static int never_called(void *ctx, void *buf, size_t n, rg_comm_dtype dtype) { return 1; }

void test_trainer_comm_size_one_is_no_comm(void)
{
    case_data d;
    rg_model_config mc = tiny_lm_config(); /* dropout on: a size-1 comm keeps every seed */
    case_make(&d, 0, mc.vocab_size);
    rg_model *a = NULL, *b = NULL;
    if (!RG_CHECK(rg_model_init(&a, &mc) == RG_OK && rg_model_init(&b, &mc) == RG_OK))
        return;
    rg_comm comm = {NULL, 0, 1, never_called};
    job with, without;
    memset(&with, 0, sizeof(with));
    memset(&without, 0, sizeof(without));
    with.model = a;
    without.model = b;
    with.config = without.config = case_config();
    with.config.comm = &comm;
    with.train = without.train = &d.train;
    with.eval = without.eval = &d.eval;
    job_run(&with);
    job_run(&without);
    RG_CHECK_STATUS(with.status, RG_OK);
    RG_CHECK(memcmp(a->params, b->params, a->table.total * sizeof(float)) == 0);
    RG_CHECK(memcmp(with.history, without.history, 2 * sizeof(rg_train_eval)) == 0);
    rg_model_free(a);
    rg_model_free(b);
}

void test_trainer_comm_failed_allreduce_stops_every_rank(void)
{
    case_data d;
    rg_model_config mc = case_model(0);
    case_make(&d, 0, mc.vocab_size);
    job jobs[2];
    rg_model *models[2] = {NULL, NULL};
    if (!RG_CHECK(two_ranks(0, 3, jobs, models, &d)))
        return;
    for (int r = 0; r < 2; r++) {
        RG_CHECK_STATUS(jobs[r].status, RG_ERR_COMM);
        RG_CHECK_STATUS(jobs[r].again, RG_ERR_STATE);
        rg_model_free(models[r]);
    }
}

void test_trainer_comm_rejects_bad_comm(void)
{
    case_data d;
    rg_model_config mc = case_model(0);
    case_make(&d, 0, mc.vocab_size);
    rg_model *m = NULL;
    if (!RG_CHECK(rg_model_init(&m, &mc) == RG_OK))
        return;
    rg_trainer_config c = case_config();
    rg_comm bad[3] = {{NULL, 2, 2, never_called}, {NULL, 0, 0, never_called}, {NULL, 0, 2, NULL}};
    for (int i = 0; i < 3; i++) {
        rg_trainer *t = NULL;
        c.comm = &bad[i];
        RG_CHECK_STATUS(rg_trainer_init(&t, m, &c, &d.train, &d.eval, NULL, 0), RG_ERR_INVALID_ARG);
        RG_CHECK(t == NULL);
    }
    rg_model_free(m);
}
