/* test_optim.c - AdamW, schedules and clipping of rg_optim.c against the
 * formulas of torch.optim.AdamW, computed here in double by hand. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "rg_optim.h"
#include "rg_test.h"

/* Three tensors in a block of 10: w (decay, trainable) [0,4), b (no decay,
 * trainable) [4,6), frozen (decay, frozen) [6,10). */
static rg_param_info three_tensors[3] = {
    {.name = "w", .offset = 0, .numel = 4, .ndim = 2, .shape = {2, 2}, .decay = 1, .trainable = 1},
    {.name = "b", .offset = 4, .numel = 2, .ndim = 1, .shape = {2, 0}, .decay = 0, .trainable = 1},
    {.name = "frozen", .offset = 6, .numel = 4, .ndim = 1, .shape = {4, 0}, .decay = 1, .trainable = 0},
};

static rg_adamw_config seed_config(void)
{
    rg_adamw_config c = {.lr = 5e-4, .beta1 = 0.95, .beta2 = 0.999, .eps = 1e-8,
                         .weight_decay = 0.1, .max_grad_norm = 1.0, .warmup_ratio = 0.1,
                         .total_steps = 10, .schedule = RG_SCHEDULE_LINEAR};
    return c;
}

void test_optim_two_steps_match_adamw_formula(void)
{
    rg_param_table table = {three_tensors, 3, 10, 0, 0};
    rg_adamw_config config = seed_config();
    config.warmup_ratio = 0.0; /* so that the first step moves the parameters */
    config.max_grad_norm = 0.0;
    rg_adamw opt;
    if (!RG_CHECK(rg_adamw_init(&opt, &config, &table) == RG_OK))
        return;
    RG_CHECK_EQ(opt.state_numel, 6);

    float params[10], grads[10];
    double p_ref[10], m_ref[10] = {0}, v_ref[10] = {0};
    for (int i = 0; i < 10; i++) {
        params[i] = p_ref[i] = 0.5 - 0.1 * i;
    }
    for (int t = 1; t <= 2; t++) {
        for (int i = 0; i < 10; i++)
            grads[i] = (float)(0.3 * sin(1.0 + i * t));
        double lr = config.lr * (double)(10 - (t - 1)) / 10.0; /* linear decay, no warmup */
        for (int i = 0; i < 6; i++) {
            double g = grads[i];
            if (i < 4)
                p_ref[i] *= 1.0 - lr * config.weight_decay;
            m_ref[i] = config.beta1 * m_ref[i] + (1 - config.beta1) * g;
            v_ref[i] = config.beta2 * v_ref[i] + (1 - config.beta2) * g * g;
            double m_hat_scale = 1.0 / (1.0 - pow(config.beta1, t));
            double denom = sqrt(v_ref[i]) / sqrt(1.0 - pow(config.beta2, t)) + config.eps;
            p_ref[i] -= lr * m_hat_scale * m_ref[i] / denom;
        }
        double lr_used = -1.0, norm = -1.0;
        RG_CHECK_STATUS(rg_adamw_step(&opt, params, grads, &lr_used, &norm), RG_OK);
        RG_CHECK_CLOSE(lr_used, lr, 1e-15);
    }
    for (int i = 0; i < 10; i++)
        RG_CHECK_CLOSE(params[i], p_ref[i], 1e-6 * fabs(p_ref[i]) + 1e-9);
    for (int i = 0; i < 6; i++)
        RG_CHECK(grads[i] == 0.0f); /* consumed */
    for (int i = 6; i < 10; i++) {
        RG_CHECK(params[i] == (float)(0.5 - 0.1 * i)); /* frozen */
        RG_CHECK(grads[i] != 0.0f);                    /* not the optimizer's */
    }
    RG_CHECK_EQ(opt.step, 2);
    rg_adamw_free(&opt);
}

void test_optim_linear_schedule_as_hf(void)
{
    /* total 95, warmup ceil(9.5) = 10: factor step/10, then (95 - step) / 85 floored at 0. */
    RG_CHECK_CLOSE(rg_schedule_factor(RG_SCHEDULE_LINEAR, 0, 10, 95), 0.0, 0);
    RG_CHECK_CLOSE(rg_schedule_factor(RG_SCHEDULE_LINEAR, 3, 10, 95), 0.3, 1e-15);
    RG_CHECK_CLOSE(rg_schedule_factor(RG_SCHEDULE_LINEAR, 10, 10, 95), 1.0, 1e-15);
    RG_CHECK_CLOSE(rg_schedule_factor(RG_SCHEDULE_LINEAR, 52, 10, 95), 43.0 / 85.0, 1e-15);
    RG_CHECK_CLOSE(rg_schedule_factor(RG_SCHEDULE_LINEAR, 95, 10, 95), 0.0, 0);
    RG_CHECK_CLOSE(rg_schedule_factor(RG_SCHEDULE_LINEAR, 120, 10, 95), 0.0, 0);
    RG_CHECK_CLOSE(rg_schedule_factor(RG_SCHEDULE_LINEAR, 0, 0, 5), 1.0, 1e-15);
    RG_CHECK_CLOSE(rg_schedule_factor(RG_SCHEDULE_CONSTANT, 0, 10, 95), 1.0, 0);
    RG_CHECK_CLOSE(rg_schedule_factor(RG_SCHEDULE_CONSTANT_WITH_WARMUP, 5, 10, 95), 0.5, 1e-15);
    RG_CHECK_CLOSE(rg_schedule_factor(RG_SCHEDULE_CONSTANT_WITH_WARMUP, 50, 10, 95), 1.0, 0);

    rg_param_table table = {three_tensors, 3, 10, 0, 0};
    rg_adamw_config config = seed_config();
    config.total_steps = 95;
    rg_adamw opt;
    if (!RG_CHECK(rg_adamw_init(&opt, &config, &table) == RG_OK))
        return;
    RG_CHECK_EQ(opt.warmup_steps, 10);
    RG_CHECK_CLOSE(rg_adamw_lr_at(&opt, 5), 2.5e-4, 1e-18);
    rg_adamw_free(&opt);
}

void test_optim_clipping_scales_the_gradient(void)
{
    rg_param_table table = {three_tensors, 3, 10, 0, 0};
    rg_adamw_config config = seed_config();
    rg_adamw opt;
    if (!RG_CHECK(rg_adamw_init(&opt, &config, &table) == RG_OK))
        return;
    float params[10] = {0}, grads[10];
    /* trainable gradients 3, 4, 0, 0, 0, 0: norm 5; the frozen ones (100) do not count */
    for (int i = 0; i < 10; i++)
        grads[i] = i == 0 ? 3.0f : i == 1 ? 4.0f : i >= 6 ? 100.0f : 0.0f;
    double norm = 0.0, lr = -1.0;
    RG_CHECK_STATUS(rg_adamw_step(&opt, params, grads, &lr, &norm), RG_OK);
    RG_CHECK_CLOSE(norm, 5.0, 1e-12);
    RG_CHECK_CLOSE(lr, 0.0, 0); /* first warmup step */
    /* m = (1 - beta1) * g * max_norm / (norm + 1e-6) */
    double scale = 1.0 / (5.0 + 1e-6);
    RG_CHECK_CLOSE(opt.m[0], 0.05 * 3.0 * scale, 1e-8);
    RG_CHECK_CLOSE(opt.m[1], 0.05 * 4.0 * scale, 1e-8);
    RG_CHECK_CLOSE(opt.v[1], 0.001 * 16.0 * scale * scale, 1e-9);

    /* below max_norm: no scaling */
    grads[0] = 0.3f;
    grads[1] = 0.4f;
    RG_CHECK_STATUS(rg_adamw_step(&opt, params, grads, &lr, &norm), RG_OK);
    RG_CHECK_CLOSE(norm, 0.5, 1e-7);
    RG_CHECK_CLOSE(opt.m[0], 0.95 * 0.05 * 3.0 * scale + 0.05 * 0.3, 1e-8);
    rg_adamw_free(&opt);
}

void test_optim_nonfinite_gradient_changes_nothing(void)
{
    rg_param_table table = {three_tensors, 3, 10, 0, 0};
    rg_adamw_config config = seed_config();
    rg_adamw opt;
    if (!RG_CHECK(rg_adamw_init(&opt, &config, &table) == RG_OK))
        return;
    float params[10], grads[10], params_before[10], grads_before[10];
    for (int i = 0; i < 10; i++) {
        params[i] = 0.1f * (float)i;
        grads[i] = 0.01f;
    }
    RG_CHECK_STATUS(rg_adamw_step(&opt, params, grads, NULL, NULL), RG_OK);
    for (int i = 0; i < 10; i++)
        grads[i] = 0.02f;
    grads[5] = NAN;
    memcpy(params_before, params, sizeof(params));
    memcpy(grads_before, grads, sizeof(grads));
    float m_before = opt.m[5], v_before = opt.v[5];
    RG_CHECK_STATUS(rg_adamw_step(&opt, params, grads, NULL, NULL), RG_ERR_NONFINITE);
    RG_CHECK(memcmp(params, params_before, sizeof(params)) == 0);
    RG_CHECK(memcmp(grads, grads_before, sizeof(grads)) == 0);
    RG_CHECK(opt.m[5] == m_before && opt.v[5] == v_before);
    RG_CHECK_EQ(opt.step, 1);
    grads[5] = INFINITY;
    RG_CHECK_STATUS(rg_adamw_step(&opt, params, grads, NULL, NULL), RG_ERR_NONFINITE);
    grads[5] = 0.02f;
    grads[7] = NAN; /* frozen slot: ignored */
    RG_CHECK_STATUS(rg_adamw_step(&opt, params, grads, NULL, NULL), RG_OK);
    rg_adamw_free(&opt);
}

void test_optim_bad_tables_and_configs(void)
{
    rg_adamw opt;
    rg_adamw_config config = seed_config();
    rg_param_info past_end[1] = {{.name = "x", .offset = 8, .numel = 3, .decay = 1, .trainable = 1}};
    rg_param_table table = {past_end, 1, 10, 0, 0};
    RG_CHECK_STATUS(rg_adamw_init(&opt, &config, &table), RG_ERR_SHAPE);
    past_end[0].offset = SIZE_MAX; /* offset + numel would wrap around */
    RG_CHECK_STATUS(rg_adamw_init(&opt, &config, &table), RG_ERR_SHAPE);

    rg_param_info overlap[2] = {{.offset = 0, .numel = 6, .trainable = 1},
                                {.offset = 5, .numel = 3, .trainable = 1}};
    rg_param_table overlapping = {overlap, 2, 10, 0, 0};
    RG_CHECK_STATUS(rg_adamw_init(&opt, &config, &overlapping), RG_ERR_SHAPE);
    overlap[1].trainable = 0;
    RG_CHECK_STATUS(rg_adamw_init(&opt, &config, &overlapping), RG_OK);
    rg_adamw_free(&opt);

    rg_param_table good = {three_tensors, 3, 10, 0, 0};
    rg_adamw_config bad = config;
    bad.beta1 = 1.0;
    RG_CHECK_STATUS(rg_adamw_init(&opt, &bad, &good), RG_ERR_INVALID_ARG);
    bad = config;
    bad.lr = NAN;
    RG_CHECK_STATUS(rg_adamw_init(&opt, &bad, &good), RG_ERR_INVALID_ARG);
    bad = config;
    bad.total_steps = 0;
    RG_CHECK_STATUS(rg_adamw_init(&opt, &bad, &good), RG_ERR_INVALID_ARG);
    bad = config;
    bad.warmup_ratio = -0.1;
    RG_CHECK_STATUS(rg_adamw_init(&opt, &bad, &good), RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_adamw_init(&opt, NULL, &good), RG_ERR_INVALID_ARG);
    rg_adamw_free(NULL);
}

void test_optim_state_round_trip(void)
{
    rg_param_table table = {three_tensors, 3, 10, 0, 0};
    rg_adamw_config config = seed_config();
    rg_adamw a, b;
    if (!RG_CHECK(rg_adamw_init(&a, &config, &table) == RG_OK))
        return;
    if (!RG_CHECK(rg_adamw_init(&b, &config, &table) == RG_OK)) {
        rg_adamw_free(&a);
        return;
    }
    float pa[10], pb[10], g[10];
    for (int i = 0; i < 10; i++)
        pa[i] = 0.2f * (float)i;
    for (int t = 0; t < 3; t++) {
        for (int i = 0; i < 10; i++)
            g[i] = 0.1f * (float)((i + t) % 4) - 0.15f;
        RG_CHECK_STATUS(rg_adamw_step(&a, pa, g, NULL, NULL), RG_OK);
    }
    memcpy(pb, pa, sizeof(pa));
    RG_CHECK_STATUS(rg_adamw_load_state(&b, a.step, a.m, a.v, a.state_numel), RG_OK);
    RG_CHECK_STATUS(rg_adamw_load_state(&b, 1, a.m, a.v, a.state_numel + 1), RG_ERR_SHAPE);
    for (int i = 0; i < 10; i++)
        g[i] = 0.05f * (float)i;
    float g2[10];
    memcpy(g2, g, sizeof(g));
    RG_CHECK_STATUS(rg_adamw_step(&a, pa, g, NULL, NULL), RG_OK);
    RG_CHECK_STATUS(rg_adamw_step(&b, pb, g2, NULL, NULL), RG_OK);
    RG_CHECK(memcmp(pa, pb, sizeof(pa)) == 0);
    rg_adamw_free(&a);
    rg_adamw_free(&b);
}

/* Issue #11: eps = 0 turned a zero gradient into NaN parameters (0 / 0);
 * non-finite or negative hyperparameters are refused by init and by step. */
void test_optim_refuses_zero_eps_and_nonfinite_hyperparameters(void)
{
    rg_param_table good = {three_tensors, 3, 10, 0, 0};
    rg_adamw opt;
    const rg_adamw_config config = seed_config();
    const double bad_values[] = {0.0, -1e-8, NAN, INFINITY, -INFINITY};
    for (int i = 0; i < 5; i++) {
        rg_adamw_config bad = config;
        bad.eps = bad_values[i];
        RG_CHECK_STATUS(rg_adamw_init(&opt, &bad, &good), RG_ERR_INVALID_ARG);
        if (i == 0)
            continue; /* 0 is a fine value for the others */
        bad = config;
        bad.lr = bad_values[i];
        RG_CHECK_STATUS(rg_adamw_init(&opt, &bad, &good), RG_ERR_INVALID_ARG);
        bad = config;
        bad.weight_decay = bad_values[i];
        RG_CHECK_STATUS(rg_adamw_init(&opt, &bad, &good), RG_ERR_INVALID_ARG);
        bad = config;
        bad.beta2 = bad_values[i];
        RG_CHECK_STATUS(rg_adamw_init(&opt, &bad, &good), RG_ERR_INVALID_ARG);
        if (isfinite(bad_values[i]))
            continue; /* a negative max_grad_norm disables clipping */
        bad = config;
        bad.max_grad_norm = bad_values[i];
        RG_CHECK_STATUS(rg_adamw_init(&opt, &bad, &good), RG_ERR_INVALID_ARG);
        bad = config;
        bad.warmup_ratio = bad_values[i];
        RG_CHECK_STATUS(rg_adamw_init(&opt, &bad, &good), RG_ERR_INVALID_ARG);
    }
    /* a config changed after init is refused by step, which then changes nothing */
    float params[10] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, grads[10] = {0};
    if (!RG_CHECK_STATUS(rg_adamw_init(&opt, &config, &good), RG_OK))
        return;
    opt.config.eps = 0.0;
    RG_CHECK_STATUS(rg_adamw_step(&opt, params, grads, NULL, NULL), RG_ERR_INVALID_ARG);
    RG_CHECK_EQ(opt.step, 0);
    opt.config.eps = 1e-8;
    RG_CHECK_STATUS(rg_adamw_step(&opt, params, grads, NULL, NULL), RG_OK);
    for (int i = 0; i < 10; i++)
        RG_CHECK(isfinite(params[i]));
    /* a step count at the end of int64 is refused rather than wrapped */
    RG_CHECK_STATUS(rg_adamw_load_state(&opt, INT64_MAX, opt.m, opt.v, opt.state_numel), RG_OK);
    RG_CHECK_STATUS(rg_adamw_step(&opt, params, grads, NULL, NULL), RG_ERR_TOO_LARGE);
    rg_adamw_free(&opt);
    /* warmup near the end of int64 stays inside it */
    rg_adamw_config huge = config;
    huge.total_steps = INT64_MAX;
    huge.warmup_ratio = 1.0;
    if (RG_CHECK_STATUS(rg_adamw_init(&opt, &huge, &good), RG_OK)) {
        RG_CHECK(opt.warmup_steps == INT64_MAX);
        rg_adamw_free(&opt);
    }
}

void test_optim_busy_flag(void)
{
    rg_param_table good = {three_tensors, 3, 10, 0, 0};
    rg_adamw opt;
    const rg_adamw_config config = seed_config();
    if (!RG_CHECK_STATUS(rg_adamw_init(&opt, &config, &good), RG_OK))
        return;
    RG_CHECK_STATUS(rg_adamw_try_acquire(&opt), RG_OK);
    RG_CHECK_STATUS(rg_adamw_try_acquire(&opt), RG_ERR_STATE);
    rg_adamw_release(&opt);
    RG_CHECK_STATUS(rg_adamw_try_acquire(&opt), RG_OK);
    rg_adamw_release(&opt);
    RG_CHECK_STATUS(rg_adamw_try_acquire(NULL), RG_ERR_INVALID_ARG);
    rg_adamw_free(&opt);
}
