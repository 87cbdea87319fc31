/* test_sweep.c - rg_sweep: each run equals a lone trainer run from the same
 * initial parameters; a sweep stopped mid-run and restarted from its journal
 * ends with the same results; torn and foreign journals. */
#include "tiny_model.h"

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "rg_sweep.h"
#include "rg_test.h"

#define SN 8
#define SE 4
#define ST 8
#define SAMPLES 2

typedef struct sweep_data {
    int32_t tok[SAMPLES][SN * ST], mask[SAMPLES][SN * ST];
    int32_t etok[SAMPLES][SE * ST], emask[SAMPLES][SE * ST];
    rg_sweep_sample samples[SAMPLES];
} sweep_data;

static void sweep_data_make(sweep_data *d, int V)
{
    for (int k = 0; k < SAMPLES; k++) {
        tiny_rows(SN, ST, V, 2 + 13u * k, d->tok[k], d->mask[k]);
        tiny_rows(SE, ST, V, 7 + 13u * k, d->etok[k], d->emask[k]);
        d->samples[k].train = (rg_train_data){d->tok[k], d->mask[k], NULL, NULL, SN, ST};
        d->samples[k].eval = (rg_train_data){d->etok[k], d->emask[k], NULL, NULL, SE, ST};
    }
}

static const double lr_values[2] = {1e-2, 5e-2};

static rg_sweep_config sweep_config(void)
{
    rg_sweep_config c;
    memset(&c, 0, sizeof(c));
    c.base = rg_trainer_config_default();
    c.base.epochs = 2;
    c.base.train_batch_size = 3;
    c.base.eval_batch_size = 4;
    c.base.grad_accum = 2;
    c.base.seed = 11;
    c.parameter = RG_SWEEP_LEARNING_RATE;
    c.values = lr_values;
    c.n_values = 2;
    return c;
}

static int same_history(const rg_train_eval *a, int na, const rg_train_eval *b, int nb)
{
    if (na != nb)
        return 0;
    for (int i = 0; i < na; i++)
        if (a[i].epoch != b[i].epoch || a[i].step != b[i].step || a[i].train_loss != b[i].train_loss ||
            a[i].eval_loss != b[i].eval_loss || a[i].has_eval != b[i].has_eval)
            return 0;
    return 1;
}

void test_sweep_runs_equal_lone_trainers(void)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *m = NULL, *lone = NULL;
    if (!RG_CHECK(rg_model_init(&m, &mc) == RG_OK && rg_model_init(&lone, &mc) == RG_OK))
        return;
    /* moving the start away from the default init: the sweep must restore THIS, not re-init */
    for (size_t i = 0; i < m->table.total; i++)
        lone->params[i] = m->params[i] = m->params[i] * 1.5f + 0.001f;
    float *start = malloc(m->table.total * sizeof(float));
    memcpy(start, m->params, m->table.total * sizeof(float));
    sweep_data d;
    sweep_data_make(&d, mc.vocab_size);
    rg_sweep_config c = sweep_config();
    rg_sweep *s = NULL;
    char error[256];
    RG_CHECK_STATUS(rg_sweep_init(&s, m, &c, d.samples, SAMPLES, error, sizeof(error)), RG_OK);
    RG_CHECK_STATUS(rg_sweep_run(s), RG_OK);
    int n = 0;
    const rg_sweep_result *runs = rg_sweep_runs(s, &n);
    RG_CHECK_EQ(n, 4);
    for (int i = 0; i < n; i++) {
        RG_CHECK(runs[i].done && !runs[i].from_journal && runs[i].status == RG_OK);
        RG_CHECK_EQ(runs[i].value_index, i / SAMPLES);
        RG_CHECK_EQ(runs[i].sample_index, i % SAMPLES);
        memcpy(lone->params, start, m->table.total * sizeof(float));
        rg_trainer_config tc = c.base;
        tc.adamw.lr = lr_values[i / SAMPLES];
        rg_trainer *t = NULL;
        RG_CHECK_STATUS(rg_trainer_init(&t, lone, &tc, &d.samples[i % SAMPLES].train, &d.samples[i % SAMPLES].eval, NULL, 0), RG_OK);
        RG_CHECK_STATUS(rg_trainer_run(t), RG_OK);
        int nh = 0;
        const rg_train_eval *h = rg_trainer_history(t, &nh);
        RG_CHECK(same_history(runs[i].history, runs[i].n_epochs, h, nh));
        RG_CHECK_EQ(runs[i].best_epoch, rg_trainer_result(t)->best_epoch);
        rg_trainer_free(t);
    }
    RG_CHECK(runs[0].history[1].eval_loss != runs[2].history[1].eval_loss); /* the value matters */
    RG_CHECK(memcmp(m->params, start, m->table.total * sizeof(float)) == 0); /* back to the start */
    rg_sweep_free(s);
    free(start);
    rg_model_free(m);
    rg_model_free(lone);
}

typedef struct stopper {
    volatile sig_atomic_t *flag;
    int steps, stop_at;
} stopper;

static int stop_after(void *user, const rg_train_event *ev)
{
    stopper *k = user;
    if (ev->kind == RG_TRAIN_EVENT_STEP && ++k->steps == k->stop_at)
        *k->flag = 1;
    return 0;
}

static int count_runs(void *user, const rg_sweep_result *run)
{
    (void)run;
    (*(int *)user)++;
    return 0;
}

void test_sweep_interrupted_then_resumed_from_journal(void)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *m = NULL;
    if (!RG_CHECK(rg_model_init(&m, &mc) == RG_OK))
        return;
    sweep_data d;
    sweep_data_make(&d, mc.vocab_size);
    char path[512], other[512];
    tiny_temp_path(path, sizeof(path), "sweep.journal");
    tiny_temp_path(other, sizeof(other), "sweep_full.journal");

    /* the uninterrupted sweep */
    rg_sweep_config c = sweep_config();
    c.journal_path = other;
    rg_sweep *full = NULL;
    RG_CHECK_STATUS(rg_sweep_init(&full, m, &c, d.samples, SAMPLES, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_sweep_run(full), RG_OK);

    /* stopped inside run 3 (run 1 and 2 take 4 updates each: 3 batches, accumulation 2, 2 epochs) */
    volatile sig_atomic_t flag = 0;
    stopper k = {&flag, 0, 10};
    int finished_runs = 0;
    c.journal_path = path;
    c.base.progress = stop_after;
    c.base.progress_user = &k;
    c.base.stop_flag = &flag;
    c.on_run = count_runs;
    c.on_run_user = &finished_runs;
    rg_sweep *s = NULL;
    RG_CHECK_STATUS(rg_sweep_init(&s, m, &c, d.samples, SAMPLES, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_sweep_run(s), RG_ERR_INTERRUPTED);
    RG_CHECK_EQ(finished_runs, 2);
    int n = 0;
    const rg_sweep_result *runs = rg_sweep_runs(s, &n);
    RG_CHECK(runs[0].done && runs[1].done && !runs[2].done && !runs[3].done); /* run 3 not marked */
    rg_sweep_free(s);

    /* a torn record at the end, as a kill during an append leaves */
    int fd = open(path, O_WRONLY | O_APPEND);
    const unsigned char torn[13] = {0x52, 0x52, 0x53, 0x52, 200, 0, 0, 0, 1, 2, 3, 4, 5};
    RG_CHECK(write(fd, torn, sizeof(torn)) == (ssize_t)sizeof(torn));
    close(fd);
    struct stat before;
    stat(path, &before);

    /* the restarted process: only runs 3 and 4 are trained */
    flag = 0;
    finished_runs = 0;
    c.base.progress = NULL;
    c.base.stop_flag = NULL;
    RG_CHECK_STATUS(rg_sweep_init(&s, m, &c, d.samples, SAMPLES, NULL, 0), RG_OK);
    struct stat after;
    stat(path, &after);
    RG_CHECK_EQ(after.st_size, before.st_size - (off_t)sizeof(torn)); /* the torn tail is cut */
    runs = rg_sweep_runs(s, &n);
    RG_CHECK(runs[0].from_journal && runs[1].from_journal && !runs[2].done);
    RG_CHECK_STATUS(rg_sweep_run(s), RG_OK);
    RG_CHECK_EQ(finished_runs, 2);
    int nf = 0;
    const rg_sweep_result *want = rg_sweep_runs(full, &nf);
    for (int i = 0; i < n && i < nf; i++) {
        RG_CHECK(runs[i].done);
        RG_CHECK(same_history(runs[i].history, runs[i].n_epochs, want[i].history, want[i].n_epochs));
        RG_CHECK(runs[i].best_metric == want[i].best_metric && runs[i].global_step == want[i].global_step);
    }
    rg_sweep_free(s);

    /* everything done: a third start runs nothing */
    finished_runs = 0;
    RG_CHECK_STATUS(rg_sweep_init(&s, m, &c, d.samples, SAMPLES, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_sweep_run(s), RG_OK);
    RG_CHECK_EQ(finished_runs, 0);
    rg_sweep_free(s);

    /* a damaged record (a byte of run 2's payload): runs 2.. are redone, same results */
    fd = open(path, O_RDWR);
    unsigned char byte;
    struct stat st;
    fstat(fd, &st);
    const off_t record = (st.st_size - 32) / 4; /* records have equal sizes here */
    RG_CHECK(pread(fd, &byte, 1, 32 + record + 30) == 1);
    byte ^= 0x40;
    RG_CHECK(pwrite(fd, &byte, 1, 32 + record + 30) == 1);
    close(fd);
    RG_CHECK_STATUS(rg_sweep_init(&s, m, &c, d.samples, SAMPLES, NULL, 0), RG_OK);
    runs = rg_sweep_runs(s, &n);
    RG_CHECK(runs[0].done && !runs[1].done && !runs[2].done && !runs[3].done);
    RG_CHECK_STATUS(rg_sweep_run(s), RG_OK);
    RG_CHECK_EQ(finished_runs, 3);
    for (int i = 0; i < n && i < nf; i++)
        RG_CHECK(same_history(runs[i].history, runs[i].n_epochs, want[i].history, want[i].n_epochs));
    rg_sweep_free(s);

    /* another sweep's journal is refused, with a message */
    const double other_values[2] = {1e-2, 2e-2};
    c.values = other_values;
    char error[320];
    RG_CHECK_STATUS(rg_sweep_init(&s, m, &c, d.samples, SAMPLES, error, sizeof(error)), RG_ERR_STATE);
    RG_CHECK(strstr(error, "another sweep") != NULL);
    RG_CHECK(s == NULL);

    rg_sweep_free(full);
    rg_model_free(m);
    unlink(path);
    unlink(other);
}

void test_sweep_integer_parameters_and_errors(void)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *m = NULL;
    if (!RG_CHECK(rg_model_init(&m, &mc) == RG_OK))
        return;
    sweep_data d;
    sweep_data_make(&d, mc.vocab_size);
    rg_sweep_config c = sweep_config();
    const double blocks[2] = {1, -1};
    c.parameter = RG_SWEEP_TRAINABLE_BLOCKS;
    c.values = blocks;
    rg_sweep *s = NULL;
    RG_CHECK_STATUS(rg_sweep_init(&s, m, &c, d.samples, 1, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_sweep_run(s), RG_OK);
    int n = 0;
    const rg_sweep_result *runs = rg_sweep_runs(s, &n);
    RG_CHECK(n == 2 && runs[0].done && runs[1].done);
    RG_CHECK(runs[0].history[1].train_loss != runs[1].history[1].train_loss);
    RG_CHECK_EQ(m->n_trainable_blocks, -1); /* the model's own freezing is back */
    rg_sweep_free(s);
    const double fractional[1] = {2.5};
    c.parameter = RG_SWEEP_BATCH_SIZE;
    c.values = fractional;
    c.n_values = 1;
    RG_CHECK_STATUS(rg_sweep_init(&s, m, &c, d.samples, 1, NULL, 0), RG_ERR_INVALID_ARG);
    c.parameter = 99;
    RG_CHECK_STATUS(rg_sweep_init(&s, m, &c, d.samples, 1, NULL, 0), RG_ERR_INVALID_ARG);
    c.parameter = RG_SWEEP_EPOCHS;
    c.n_values = 0;
    RG_CHECK_STATUS(rg_sweep_init(&s, m, &c, d.samples, 1, NULL, 0), RG_ERR_EMPTY);
    c = sweep_config();
    c.base.apply_freezing = 1;
    c.base.head_policy = RG_HEAD_POLICY_UNTIE;
    RG_CHECK_STATUS(rg_sweep_init(&s, m, &c, d.samples, 1, NULL, 0), RG_ERR_UNSUPPORTED);
    rg_model_free(m);
}

void test_sweep_journal_locked_against_other_process(void)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *m = NULL;
    if (!RG_CHECK(rg_model_init(&m, &mc) == RG_OK))
        return;
    sweep_data d;
    sweep_data_make(&d, mc.vocab_size);
    char path[512];
    tiny_temp_path(path, sizeof(path), "locked.journal");
    rg_sweep_config c = sweep_config();
    c.journal_path = path;
    rg_sweep *s = NULL;
    RG_CHECK_STATUS(rg_sweep_init(&s, m, &c, d.samples, SAMPLES, NULL, 0), RG_OK);
    fflush(NULL);
    pid_t child = fork();
    if (child == 0) {
        rg_sweep *t = NULL;
        rg_status status = rg_sweep_init(&t, m, &c, d.samples, SAMPLES, NULL, 0);
        _exit(status == RG_ERR_STATE ? 0 : 1);
    }
    int wstatus = -1;
    RG_CHECK(child > 0 && waitpid(child, &wstatus, 0) == child);
    RG_CHECK(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
    rg_sweep_free(s);
    rg_model_free(m);
    unlink(path);
}

/* A sweep killed with SIGKILL inside its third run (a child process: this
 * binary started again), restarted from its journal: the same results as a
 * sweep never stopped, and only the unfinished runs are trained again. */
static int kill_inside_run3(void *user, const rg_train_event *ev)
{
    int *steps = user;
    if (ev->kind == RG_TRAIN_EVENT_STEP && ++*steps == 10)
        raise(SIGKILL);
    return 0;
}

void test_sweep_zchild_sigkill(void)
{
    const char *path = getenv("RG_TEST_SWEEP_JOURNAL");
    if (path == NULL)
        return;
    rg_model_config mc = tiny_lm_config();
    rg_model *m = NULL;
    sweep_data d;
    sweep_data_make(&d, mc.vocab_size);
    rg_sweep_config c = sweep_config();
    int steps = 0;
    c.journal_path = path;
    c.base.progress = kill_inside_run3;
    c.base.progress_user = &steps;
    rg_sweep *s = NULL;
    if (rg_model_init(&m, &mc) != RG_OK || rg_sweep_init(&s, m, &c, d.samples, SAMPLES, NULL, 0) != RG_OK)
        _exit(2);
    rg_sweep_run(s);
    _exit(3);
}

extern char **environ;

void test_sweep_sigkill_then_restart(void)
{
    char path[512], env[600], self[1024];
    tiny_temp_path(path, sizeof(path), "killed.journal");
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (!RG_CHECK(n > 0))
        return;
    self[n] = 0;
    snprintf(env, sizeof(env), "RG_TEST_SWEEP_JOURNAL=%s", path);
    char *child_env[64];
    int k = 0;
    child_env[k++] = env;
    for (char **e = environ; *e != NULL && k < 63; e++)
        if (strncmp(*e, "RG_TEST_SWEEP_JOURNAL=", 22) != 0)
            child_env[k++] = *e;
    child_env[k] = NULL;
    char *argv[] = {self, "test_sweep_zchild_sigkill", NULL};
    fflush(NULL);
    pid_t child = fork();
    if (child == 0) {
        execve(self, argv, child_env);
        _exit(4);
    }
    int wstatus = 0;
    if (!RG_CHECK(child > 0 && waitpid(child, &wstatus, 0) == child))
        return;
    RG_CHECK(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL);

    rg_model_config mc = tiny_lm_config();
    rg_model *m = NULL;
    if (!RG_CHECK(rg_model_init(&m, &mc) == RG_OK))
        return;
    sweep_data d;
    sweep_data_make(&d, mc.vocab_size);
    rg_sweep_config c = sweep_config();
    rg_sweep *full = NULL, *s = NULL;
    RG_CHECK_STATUS(rg_sweep_init(&full, m, &c, d.samples, SAMPLES, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_sweep_run(full), RG_OK);
    int trained = 0;
    c.journal_path = path;
    c.on_run = count_runs;
    c.on_run_user = &trained;
    RG_CHECK_STATUS(rg_sweep_init(&s, m, &c, d.samples, SAMPLES, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_sweep_run(s), RG_OK);
    RG_CHECK_EQ(trained, 2); /* runs 1 and 2 came from the journal */
    int nr = 0, nf = 0;
    const rg_sweep_result *runs = rg_sweep_runs(s, &nr), *want = rg_sweep_runs(full, &nf);
    RG_CHECK(runs[0].from_journal && runs[1].from_journal && !runs[2].from_journal);
    for (int i = 0; i < nr && i < nf; i++)
        RG_CHECK(runs[i].done &&
                 same_history(runs[i].history, runs[i].n_epochs, want[i].history, want[i].n_epochs) &&
                 runs[i].best_metric == want[i].best_metric);
    rg_sweep_free(s);
    rg_sweep_free(full);
    rg_model_free(m);
    unlink(path);
}

/* rg_sweep_record: a run of a one-run sweep (one value, one sample) journaled
 * into the whole sweep is the run that sweep makes itself, read back from the
 * journal at the next init; foreign or repeated records are refused. */
void test_sweep_record_from_one_run_sweeps(void)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *m = NULL;
    if (!RG_CHECK(rg_model_init(&m, &mc) == RG_OK))
        return;
    sweep_data d;
    sweep_data_make(&d, mc.vocab_size);
    char path[256];
    tiny_temp_path(path, sizeof(path), "record.journal");
    rg_sweep_config c = sweep_config();
    rg_sweep *whole = NULL, *reference = NULL;
    RG_CHECK_STATUS(rg_sweep_init(&reference, m, &c, d.samples, SAMPLES, NULL, 0), RG_OK);
    RG_CHECK_STATUS(rg_sweep_run(reference), RG_OK);
    c.journal_path = path;
    RG_CHECK_STATUS(rg_sweep_init(&whole, m, &c, d.samples, SAMPLES, NULL, 0), RG_OK);
    int n = 0;
    const rg_sweep_result *expected = rg_sweep_runs(reference, &n);
    for (int v = 0; v < 2; v++)
        for (int k = 0; k < SAMPLES; k++) {
            rg_sweep_config one = sweep_config();
            one.values = &lr_values[v];
            one.n_values = 1;
            rg_sweep *single = NULL;
            RG_CHECK_STATUS(rg_sweep_init(&single, m, &one, &d.samples[k], 1, NULL, 0), RG_OK);
            RG_CHECK_STATUS(rg_sweep_run(single), RG_OK);
            int count = 0;
            rg_sweep_result run = rg_sweep_runs(single, &count)[0];
            run.value_index = v;
            run.sample_index = k;
            RG_CHECK_STATUS(rg_sweep_record(whole, &run), RG_OK);
            RG_CHECK_STATUS(rg_sweep_record(whole, &run), RG_ERR_STATE); /* done already */
            rg_sweep_free(single);
        }
    rg_sweep_result foreign = expected[0];
    foreign.value = 3e-2; /* not one of the sweep's values */
    RG_CHECK_STATUS(rg_sweep_record(whole, &foreign), RG_ERR_INVALID_ARG);
    foreign = expected[0];
    foreign.sample_index = SAMPLES;
    RG_CHECK_STATUS(rg_sweep_record(whole, &foreign), RG_ERR_INVALID_ARG);
    rg_sweep_free(whole);
    whole = NULL;
    RG_CHECK_STATUS(rg_sweep_init(&whole, m, &c, d.samples, SAMPLES, NULL, 0), RG_OK);
    const rg_sweep_result *got = rg_sweep_runs(whole, &n);
    RG_CHECK_EQ(n, 4);
    for (int i = 0; i < n; i++) {
        RG_CHECK(got[i].done && got[i].from_journal);
        RG_CHECK(same_history(got[i].history, got[i].n_epochs, expected[i].history, expected[i].n_epochs));
        RG_CHECK(got[i].best_epoch == expected[i].best_epoch && got[i].global_step == expected[i].global_step);
    }
    rg_sweep_free(whole);
    rg_sweep_free(reference);
    unlink(path);
    rg_model_free(m);
}
