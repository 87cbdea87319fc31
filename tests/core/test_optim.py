"""_core.AdamW against torch.optim.AdamW + get_linear_schedule_with_warmup +
clip_grad_norm_, the combination the Hugging Face Trainer runs."""
import math

import numpy as np
import pytest

from reviewgen import _core

torch = pytest.importorskip("torch")
transformers_optimization = pytest.importorskip("transformers.optimization")

# The seed study's final hyperparameters (generator).
SEED_HPARAMS = dict(lr=5e-4, betas=(0.95, 0.999), eps=1e-8, weight_decay=0.1, max_grad_norm=1.0,
                    warmup_ratio=0.1)

# (name, shape, decay, trainable): a mix of decayed weights, undecayed biases and
# norms, and frozen tensors of both kinds.
LAYOUT = [
    ("wte", (12, 8), True, False),
    ("h.0.ln.w", (8,), False, False),
    ("h.0.fc.w", (16, 8), True, False),
    ("h.1.ln.w", (8,), False, True),
    ("h.1.ln.b", (8,), False, True),
    ("h.1.fc.w", (16, 8), True, True),
    ("h.1.fc.b", (16,), False, True),
    ("h.1.proj.w", (8, 16), True, True),
    ("head.w", (5, 8), True, True),
]


def make_table(layout=LAYOUT):
    table, offset = [], 0
    for name, shape, decay, trainable in layout:
        numel = int(np.prod(shape))
        table.append(dict(name=name, offset=offset, shape=shape, decay=decay, trainable=trainable))
        offset += numel
    return table, offset


def tensor_of(flat, entry):
    numel = int(np.prod(entry["shape"]))
    return flat[entry["offset"]:entry["offset"] + numel].reshape(entry["shape"])


def run_both(total_steps, n_steps, grad_scales, rng_seed=0, schedule="linear"):
    """Runs n_steps updates in _core.AdamW and in torch on the same gradients.
    Returns (ours_history, torch_history, params, grads, torch_params, table)."""
    rng = np.random.default_rng(rng_seed)
    table, total = make_table()
    params = rng.standard_normal(total).astype(np.float32)
    grads = np.zeros(total, np.float32)
    initial = params.copy()

    opt = _core.AdamW(params, grads, table, total_steps=total_steps, schedule=schedule,
                      **SEED_HPARAMS)

    trainable = [e for e in table if e["trainable"]]
    torch_params = {e["name"]: torch.nn.Parameter(torch.from_numpy(tensor_of(initial, e).copy()))
                    for e in trainable}
    groups = [
        {"params": [torch_params[e["name"]] for e in trainable if e["decay"]],
         "weight_decay": SEED_HPARAMS["weight_decay"]},
        {"params": [torch_params[e["name"]] for e in trainable if not e["decay"]],
         "weight_decay": 0.0},
    ]
    torch_opt = torch.optim.AdamW(groups, lr=SEED_HPARAMS["lr"], betas=SEED_HPARAMS["betas"],
                                  eps=SEED_HPARAMS["eps"], foreach=False)
    warmup = math.ceil(SEED_HPARAMS["warmup_ratio"] * total_steps)
    if schedule == "linear":
        sched = transformers_optimization.get_linear_schedule_with_warmup(torch_opt, warmup, total_steps)
    else:
        sched = transformers_optimization.get_constant_schedule(torch_opt)

    ours, theirs = [], []
    for step in range(n_steps):
        g = (rng.standard_normal(total) * grad_scales[step % len(grad_scales)]).astype(np.float32)
        grads[:] = g
        for e in trainable:
            torch_params[e["name"]].grad = torch.from_numpy(tensor_of(g, e).copy())
        lr_torch = sched.get_last_lr()[0]
        norm_torch = torch.nn.utils.clip_grad_norm_(list(torch_params.values()),
                                                    SEED_HPARAMS["max_grad_norm"])
        torch_opt.step()
        sched.step()
        result = opt.step()
        ours.append(result)
        theirs.append(dict(lr=lr_torch, grad_norm=float(norm_torch)))
    return ours, theirs, params, grads, initial, torch_params, table, opt


@pytest.mark.parametrize("total_steps", [10, 25])
def test_adamw_matches_torch_with_hf_schedule_and_clipping(total_steps):
    # Gradient scales chosen so that some steps are clipped (norm > 1) and some are not.
    ours, theirs, params, grads, initial, torch_params, table, opt = run_both(
        total_steps, 10, grad_scales=[0.5, 0.02, 0.2, 0.01])
    clipped = [t["grad_norm"] > 1.0 for t in theirs]
    assert any(clipped) and not all(clipped)
    for o, t in zip(ours, theirs):
        assert o["lr"] == pytest.approx(t["lr"], rel=1e-12, abs=1e-15)
        assert o["grad_norm"] == pytest.approx(t["grad_norm"], rel=1e-5)
    assert ours[0]["lr"] == 0.0  # HF warmup: the first update runs at lr 0
    assert opt.step_count == 10
    assert opt.warmup_steps == math.ceil(0.1 * total_steps)

    max_rel = 0.0
    for e in table:
        mine = tensor_of(params, e)
        if e["trainable"]:
            ref = torch_params[e["name"]].detach().numpy()
            assert not np.array_equal(mine, tensor_of(initial, e))
            np.testing.assert_allclose(mine, ref, rtol=1e-6, atol=1e-7, err_msg=e["name"])
            max_rel = max(max_rel, float(np.max(np.abs(mine - ref) / np.maximum(np.abs(ref), 1e-3))))
            # consumed gradients are zeroed for the next accumulation
            assert not tensor_of(grads, e).any()
        else:
            # frozen: bit for bit unchanged
            assert mine.tobytes() == tensor_of(initial, e).tobytes(), e["name"]
    assert max_rel < 1e-6


def test_constant_schedule_matches_torch():
    ours, theirs, params, grads, initial, torch_params, table, opt = run_both(
        10, 6, grad_scales=[0.3, 0.01], schedule="constant")
    assert all(o["lr"] == pytest.approx(5e-4) for o in ours)
    for e in table:
        if e["trainable"]:
            np.testing.assert_allclose(tensor_of(params, e), torch_params[e["name"]].detach().numpy(),
                                       rtol=1e-6, atol=1e-7)


def test_frozen_gradients_are_ignored_by_the_norm_and_left_alone():
    table, total = make_table()
    params = np.ones(total, np.float32)
    grads = np.zeros(total, np.float32)
    opt = _core.AdamW(params, grads, table, total_steps=10, **SEED_HPARAMS)
    frozen_mask = np.zeros(total, bool)
    for e in table:
        if not e["trainable"]:
            frozen_mask[e["offset"]:e["offset"] + int(np.prod(e["shape"]))] = True
    grads[frozen_mask] = 100.0
    grads[~frozen_mask] = 0.5
    expected_norm = math.sqrt(0.25 * (~frozen_mask).sum())
    assert opt.grad_norm() == pytest.approx(expected_norm, rel=1e-12)
    result = opt.step()
    assert result["grad_norm"] == pytest.approx(expected_norm, rel=1e-12)
    assert np.all(grads[frozen_mask] == 100.0)
    assert np.all(params[frozen_mask] == 1.0)


def test_moments_are_allocated_for_trainable_tensors_only():
    table, total = make_table()
    trainable_numel = sum(int(np.prod(e["shape"])) for e in table if e["trainable"])
    opt = _core.AdamW(np.zeros(total, np.float32), np.zeros(total, np.float32), table, lr=1e-3)
    assert opt.state_numel == trainable_numel < total
    state = opt.state()
    assert state["m"].shape == (trainable_numel,) and state["v"].shape == (trainable_numel,)


def test_lr_at_follows_hf_linear_warmup_then_decay():
    table, total = make_table()
    opt = _core.AdamW(np.zeros(total, np.float32), np.zeros(total, np.float32), table, lr=1.0,
                      warmup_ratio=0.1, total_steps=95, schedule="linear")
    assert opt.warmup_steps == 10  # ceil(9.5)
    lambda_ = lambda s: (s / 10 if s < 10 else max(0.0, (95 - s) / 85))  # noqa: E731
    for step in [0, 1, 5, 9, 10, 11, 50, 94, 95, 200]:
        assert opt.lr_at(step) == pytest.approx(lambda_(step), abs=1e-15), step
    constant = _core.AdamW(np.zeros(total, np.float32), np.zeros(total, np.float32), table, lr=0.5,
                           warmup_ratio=0.1, total_steps=20, schedule="constant_with_warmup")
    assert [constant.lr_at(s) for s in (0, 1, 2, 3)] == [0.0, 0.25, 0.5, 0.5]


def test_state_round_trip_continues_identically():
    rng = np.random.default_rng(3)
    table, total = make_table()
    start = rng.standard_normal(total).astype(np.float32)
    gradient_stream = [rng.standard_normal(total).astype(np.float32) * 0.1 for _ in range(6)]

    def run(params, grads, opt, steps):
        for g in steps:
            grads[:] = g
            opt.step()

    p1, g1 = start.copy(), np.zeros(total, np.float32)
    a = _core.AdamW(p1, g1, table, total_steps=6, **SEED_HPARAMS)
    run(p1, g1, a, gradient_stream)

    p2, g2 = start.copy(), np.zeros(total, np.float32)
    b = _core.AdamW(p2, g2, table, total_steps=6, **SEED_HPARAMS)
    run(p2, g2, b, gradient_stream[:3])
    saved_state, saved_params = b.state(), p2.copy()
    p3, g3 = saved_params.copy(), np.zeros(total, np.float32)
    c = _core.AdamW(p3, g3, table, total_steps=6, **SEED_HPARAMS)
    c.load_state(saved_state)
    assert c.step_count == 3
    run(p3, g3, c, gradient_stream[3:])
    assert p3.tobytes() == p1.tobytes()


def test_nonfinite_gradient_raises_and_changes_nothing():
    table, total = make_table()
    params = np.random.default_rng(1).standard_normal(total).astype(np.float32)
    grads = np.full(total, 0.01, np.float32)
    opt = _core.AdamW(params, grads, table, total_steps=10, **SEED_HPARAMS)
    opt.step()
    grads[:] = 0.01
    before_params, before_state = params.copy(), opt.state()
    trainable_offset = next(e["offset"] for e in table if e["trainable"])
    for bad in (np.nan, np.inf, -np.inf):
        grads[trainable_offset + 3] = bad
        before_grads = grads.copy()
        with pytest.raises(_core.NonFiniteError):
            opt.step()
        assert params.tobytes() == before_params.tobytes()
        assert grads.tobytes() == before_grads.tobytes()
        state = opt.state()
        assert state["step"] == before_state["step"] == 1
        assert state["m"].tobytes() == before_state["m"].tobytes()
        assert state["v"].tobytes() == before_state["v"].tobytes()
    # a NaN in a frozen tensor's gradient slot is not the optimizer's business
    grads[:] = 0.01
    frozen_offset = next(e["offset"] for e in table if not e["trainable"])
    grads[frozen_offset] = np.nan
    opt.step()
    assert opt.step_count == 2


def test_bad_tables_and_arrays_are_clear_errors():
    table, total = make_table()
    p, g = np.zeros(total, np.float32), np.zeros(total, np.float32)
    past_end = [dict(offset=total - 2, numel=3, decay=True, trainable=True, name="tail")]
    with pytest.raises(ValueError, match="past the end"):
        _core.AdamW(p, g, past_end)
    with pytest.raises(ValueError, match="past the end"):
        _core.AdamW(p, g, [dict(offset=10**15, numel=1)])
    with pytest.raises(ValueError, match="past the end"):
        _core.AdamW(p, g, [dict(offset=1, numel=2**62)])
    with pytest.raises(ValueError, match="offset"):
        _core.AdamW(p, g, [dict(offset=-1, numel=1)])
    with pytest.raises(ValueError, match="offset"):
        _core.AdamW(p, g, [dict(numel=1)])
    with pytest.raises(ValueError, match="numel"):
        _core.AdamW(p, g, [dict(offset=0)])
    with pytest.raises(ValueError, match="shape"):
        _core.AdamW(p, g, [dict(offset=0, shape=(3, -1))])
    with pytest.raises(TypeError, match="dict"):
        _core.AdamW(p, g, [3])
    with pytest.raises(TypeError):
        _core.AdamW(p, g, 3)
    with pytest.raises(ValueError, match="overlap"):
        _core.AdamW(p, g, [dict(offset=0, numel=10), dict(offset=5, numel=10)])
    # frozen tensors may overlap anything (they are never written)
    _core.AdamW(p, g, [dict(offset=0, numel=10), dict(offset=5, numel=10, trainable=False)])
    with pytest.raises(TypeError, match="float32"):
        _core.AdamW(p.astype(np.float64), g, table)
    with pytest.raises(TypeError, match="writable"):
        _core.AdamW(p[::2], g[::2], [])
    readonly = p.copy()
    readonly.flags.writeable = False
    with pytest.raises(TypeError, match="writable"):
        _core.AdamW(readonly, g, table)
    with pytest.raises(ValueError, match="same length"):
        _core.AdamW(p, g[:-1].copy(), table)
    with pytest.raises(ValueError, match="different arrays"):
        _core.AdamW(p, p, table)
    with pytest.raises(ValueError, match="schedule"):
        _core.AdamW(p, g, table, schedule="cosine")
    with pytest.raises(ValueError, match="total_steps"):
        _core.AdamW(p, g, table, schedule="linear", total_steps=0)
    with pytest.raises(ValueError, match="betas"):
        _core.AdamW(p, g, table, betas=(1.0, 0.999))
    with pytest.raises(ValueError, match="warmup_ratio"):
        _core.AdamW(p, g, table, warmup_ratio=1.5)
    with pytest.raises(ValueError, match="lr"):
        _core.AdamW(p, g, table, lr=float("nan"))

    opt = _core.AdamW(p, g, table)
    with pytest.raises(ValueError, match="trainable elements"):
        opt.load_state(dict(step=1, m=np.zeros(3, np.float32), v=np.zeros(3, np.float32)))
    with pytest.raises(ValueError, match="needs"):
        opt.load_state(dict(step=1))
    n = opt.state_numel
    with pytest.raises(ValueError):
        opt.load_state(dict(step=1, m=np.zeros(n, np.float32), v=-np.ones(n, np.float32)))
    with pytest.raises(ValueError, match="step"):
        opt.load_state(dict(step=-1, m=np.zeros(n, np.float32), v=np.zeros(n, np.float32)))
    with pytest.raises(ValueError):
        opt.lr_at(-1)
    with pytest.raises(RuntimeError, match="not initialised"):
        _core.AdamW.__new__(_core.AdamW).step()


def test_optimizer_keeps_the_arrays_alive_and_releases_them():
    import gc
    import weakref

    table, total = make_table()
    params, grads = np.zeros(total, np.float32), np.zeros(total, np.float32)
    alive = weakref.ref(params), weakref.ref(grads)
    opt = _core.AdamW(params, grads, table, lr=1e-2, weight_decay=0.0)
    del params, grads
    gc.collect()
    assert all(ref() is not None for ref in alive)
    opt.step()
    del opt
    gc.collect()
    assert all(ref() is None for ref in alive)


def test_adamw_over_a_model_uses_the_cores_own_table():
    """AdamW(model) takes the blocks and table the core holds: the same updates as the
    arrays-and-table form, frozen tensors (set_trainable) untouched."""
    from reviewgen.core.models import Model, ModelConfig

    config = ModelConfig(vocab_size=13, n_positions=8, n_layer=2, n_head=2, n_embd=8)
    models = [Model(config), Model(config)]
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 13, (2, 6)).astype(np.int32)
    optimizers = []
    for model in models:
        model.set_trainable(1, "train")
        model.forward(tokens, targets=tokens)
        model.backward()
    optimizers.append(_core.AdamW(models[0].core, **SEED_HPARAMS))
    optimizers.append(_core.AdamW(models[1].parameters, models[1].gradients, models[1].param_table(),
                                  **SEED_HPARAMS))
    before = models[0].parameters.copy()
    for optimizer in optimizers:
        optimizer.step()
    np.testing.assert_array_equal(models[0].parameters, models[1].parameters)
    frozen = [e for e in models[0].param_table() if not e["trainable"]]
    assert frozen and all(np.array_equal(models[0].param(e["name"]), before[e["offset"]:e["offset"] + e["numel"]]
                                         .reshape(e["shape"])) for e in frozen)
    assert not np.array_equal(models[0].parameters, before)
    with pytest.raises(TypeError, match="gradients and table"):
        _core.AdamW(models[0].parameters)
