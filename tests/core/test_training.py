"""The Trainer and TrainingConfig: accumulation, schedules, checkpoints,
best-model selection and Ctrl-C, on tiny random core classifiers (the run
itself happens in the C core's rg_trainer; these tests used to drive a numpy
softmax regression through the Python step loop, which no longer exists)."""
import glob
import io
import json
import math
import os
import signal
import threading
import time

import numpy as np
import pytest

from reviewgen.core import training
from reviewgen.core.config import TrainingConfig
from reviewgen.core.models import Model, ModelConfig
from reviewgen.core.training import Trainer, TrainingError, TrainingInterrupted
from reviewgen.text.tokenization import EncodedBatch, EncodedBatches


def tiny_classifier(seed=0, n_layer=2, n_embd=8, n_positions=8, dropout=0.0):
    """A small random encoder classifier of the core (the trainer runs in C,
    so it drives core models only); block 0 is frozen by trainable_blocks=1."""
    config = ModelConfig(vocab_size=11, n_positions=n_positions, n_layer=n_layer, n_head=2, n_embd=n_embd,
                         head="cls_distilbert", num_labels=3, causal=False, embd_pdrop=dropout,
                         resid_pdrop=dropout, attn_pdrop=dropout, cls_pdrop=dropout)
    model = Model(config)
    rng = np.random.default_rng(seed)
    model.parameters[:] += (rng.standard_normal(model.parameters.size) * 0.1).astype(np.float32)
    return model


def make_data(rows, width=6, classes=3, seed=1, flip=False):
    """Token rows whose class is a function of their first token."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 11, (rows, width)).astype(np.int32)
    y = (x[:, 0] % classes).astype(np.int32)
    if flip:
        y = (y + 1) % classes
    return x, y


def batches_of(x, y, sizes):
    out, start = [], 0
    for size in sizes:
        tokens = x[start:start + size]
        out.append(dict(tokens=tokens, attention_mask=np.ones_like(tokens), targets=y[start:start + size]))
        start += size
    return out


def small_config(**overrides):
    values = dict(num_train_epochs=3, gradient_accumulation_steps=4, learning_rate=0.05,
                  per_device_train_batch_size=2)
    values.update(overrides)
    return TrainingConfig.for_classifier(**values)


def run(tmp_path, config, train, evaluation, model=None, progress=None, name="run"):
    model = model or tiny_classifier()
    trainer = Trainer(model, config, train, evaluation, tmp_path / name, progress=progress)
    return model, trainer, trainer.train()


def no_temp_files(directory):
    return not glob.glob(os.path.join(directory, "*.tmp*")) and not glob.glob(os.path.join(directory, ".*tmp*"))


# ---------------------------------------------------------------------- config


def test_config_defaults_are_the_seed_studys():
    gen, cls = TrainingConfig.for_generator(), TrainingConfig.for_classifier()
    for cfg in (gen, cls):
        assert (cfg.per_device_train_batch_size, cfg.per_device_eval_batch_size) == (8, 8)
        assert cfg.gradient_accumulation_steps == 4
        assert cfg.lr_scheduler_type == "linear" and cfg.warmup_ratio == 0.1
        assert (cfg.weight_decay, cfg.adam_epsilon) == (0.1, 1e-8)
        assert (cfg.adam_beta1, cfg.adam_beta2) == (0.95, 0.999)
        assert cfg.max_grad_norm == 1.0 and cfg.load_best_model_at_end and cfg.fp16
        assert cfg.trainable_blocks == 1
    assert (gen.task, gen.num_train_epochs, gen.learning_rate) == ("generator", 5, 5e-4)
    assert (cls.task, cls.num_train_epochs, cls.learning_rate) == ("classifier", 3, 5e-5)
    assert TrainingConfig.for_generator(learning_rate=1e-4).learning_rate == 1e-4


def test_config_json_round_trip_and_errors(tmp_path):
    cfg = TrainingConfig.for_generator(seed=7, trainable_blocks=2, num_train_epochs=2)
    path = tmp_path / "experiment.json"
    cfg.save(path)
    assert TrainingConfig.load(path) == cfg
    assert json.loads(path.read_text())["seed"] == 7
    assert no_temp_files(str(tmp_path))
    path.write_text(json.dumps({"learning_rat": 1e-3}))
    with pytest.raises(ValueError, match="learning_rat"):
        TrainingConfig.load(path)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="JSON"):
        TrainingConfig.load(path)
    path.write_text(json.dumps({"num_train_epochs": 2}))
    assert TrainingConfig.load(path).num_train_epochs == 2
    for bad in (dict(num_train_epochs=0), dict(gradient_accumulation_steps=1.5), dict(learning_rate=-1),
                dict(warmup_ratio=2.0), dict(adam_beta1=1.0), dict(lr_scheduler_type="cosine"),
                dict(task="ranker"), dict(save_strategy="steps"), dict(trainable_blocks=-2),
                dict(fp16="yes"), dict(learning_rate=float("nan"))):
        field = next(iter(bad))
        with pytest.raises(ValueError, match=field):
            TrainingConfig(**bad)


def test_step_arithmetic_is_hfs():
    cfg = TrainingConfig(num_train_epochs=3, gradient_accumulation_steps=4, warmup_ratio=0.1)
    assert cfg.steps_per_epoch(10) == 3  # groups of 4, 4, 2
    assert cfg.total_steps(10) == 9
    assert cfg.warmup_steps(10) == 1
    assert cfg.total_steps(8) == 6
    with pytest.raises(ValueError):
        cfg.steps_per_epoch(0)


# ---------------------------------------------------------------------- trainer


def test_schedule_steps_and_progress_events(tmp_path):
    x, y = make_data(20)
    events = []
    model, trainer, result = run(tmp_path, small_config(), batches_of(x, y, [2] * 10),
                                 batches_of(x, y, [5] * 4), progress=events.append)
    steps = [e for e in events if e["event"] == "step"]
    assert trainer.total_steps == result.total_steps == result.global_step == len(steps) == 9
    assert [e["step"] for e in steps] == list(range(1, 10))
    # warmup ceil(0.9) = 1 update at lr 0, then linear decay over the remaining 8
    expected_lr = [0.0] + [0.05 * (9 - k) / 8 for k in range(1, 9)]
    np.testing.assert_allclose([e["lr"] for e in steps], expected_lr, rtol=1e-12, atol=1e-15)
    for e in steps:
        assert {"epoch", "loss", "grad_norm", "tokens_per_s", "elapsed_s", "total_steps"} <= set(e)
        assert e["tokens_per_s"] > 0 and e["grad_norm"] > 0 and math.isfinite(e["loss"])
    assert [e["epoch"] for e in events if e["event"] == "eval"] == [1, 2, 3]
    assert [e["epoch"] for e in events if e["event"] == "checkpoint"] == [1, 2, 3]
    assert not result.interrupted and result.epochs_completed == 3


def test_accumulation_averages_like_one_large_batch(tmp_path):
    x, y = make_data(20)
    evaluation = batches_of(x, y, [10, 10])
    # 10 micro-batches of 2 rows, accumulation 4: groups of 4, 4 and 2 micro-batches ...
    small, trainer_a, result_a = run(tmp_path, small_config(), batches_of(x, y, [2] * 10), evaluation,
                                     name="accumulated")
    # ... equal batches of 8, 8 and 4 rows without accumulation
    large, trainer_b, result_b = run(tmp_path, small_config(gradient_accumulation_steps=1),
                                     batches_of(x, y, [8, 8, 4]), evaluation, name="large")
    assert trainer_a.total_steps == trainer_b.total_steps == 9
    # The key bias adds one constant to every score of a query, which the softmax
    # cancels: its true gradient is 0 and Adam turns the rounding noise into full
    # steps (as in test_adamw_steps_vs_torch). Everything else must agree.
    key_bias = next(e for e in small.param_table() if e["name"] == "h.1.qkv.b")
    width = key_bias["numel"] // 3
    keep = np.ones(small.parameters.size, bool)
    keep[key_bias["offset"] + width:key_bias["offset"] + 2 * width] = False
    np.testing.assert_allclose(small.parameters[keep], large.parameters[keep], rtol=2e-5, atol=1e-6)
    moved = np.abs(small.parameters - tiny_classifier().parameters).max()
    assert moved > 1e-2
    # scaling the short last group by 1/4 instead of 1/2 would not match
    assert [h["eval_loss"] for h in result_a.history] == pytest.approx(
        [h["eval_loss"] for h in result_b.history], rel=1e-5)


def test_eval_loss_perplexity_and_checkpoint_files(tmp_path):
    x, y = make_data(24)
    ex, ey = make_data(9, seed=5)
    lm_batches = lambda rows, sizes: [dict(tokens=b["tokens"], attention_mask=b["attention_mask"],
                                          targets=b["tokens"]) for b in batches_of(rows, rows[:, 0], sizes)]
    evaluation = lm_batches(ex, [5, 4])  # unequal batches: the mean is weighted by rows
    manual = []

    def on_event(event):
        if event["event"] == "eval":
            losses = [model.forward(**b, train=False) for b in evaluation]
            manual.append((5 * losses[0] + 4 * losses[1]) / 9)

    model = Model(ModelConfig(vocab_size=11, n_positions=8, n_layer=2, n_head=2, n_embd=8))
    cfg = TrainingConfig.for_generator(num_train_epochs=2, gradient_accumulation_steps=2,
                                       learning_rate=0.05)
    trainer = Trainer(model, cfg, lm_batches(x, [4] * 6), evaluation, tmp_path / "out",
                      progress=on_event)
    result = trainer.train()
    assert [h["eval_loss"] for h in result.history] == pytest.approx(manual, rel=1e-6)
    for h in result.history:
        assert h["eval_perplexity"] == pytest.approx(math.exp(h["eval_loss"]), rel=1e-12)
        assert math.isfinite(h["train_loss"])
    out = str(tmp_path / "out")
    assert sorted(os.listdir(out)) == sorted([training.CORE_CHECKPOINT_NAME, training.CHECKPOINT_NAME,
                                              training.BEST_NAME, training.STATE_NAME])
    # checkpoint.npz keeps the former trainer's numpy layout: the last epoch's parameters and moments
    with np.load(os.path.join(out, training.CHECKPOINT_NAME)) as saved:
        assert saved["parameters"].shape == model.parameters.shape and np.isfinite(saved["parameters"]).all()
        assert int(saved["adam_step"]) == 6 and saved["adam_m"].shape == saved["adam_v"].shape
        assert json.loads(bytes(saved["trainer_state"]).decode())["epoch"] == 2
    state = json.loads(open(trainer.state_path).read())
    assert state["epoch"] == 2 and state["global_step"] == 6 and len(state["history"]) == 2
    # a classifier reports no perplexity
    _, _, cls_result = run(tmp_path, small_config(num_train_epochs=1), batches_of(x, y, [4] * 6),
                           batches_of(ex, ey, [5, 4]), name="cls")
    assert "eval_perplexity" not in cls_result.history[0]


def test_best_epoch_is_loaded_at_end(tmp_path):
    x, y = make_data(24)
    # evaluating against shifted labels: the better the fit, the worse the eval loss
    fx, fy = make_data(24, flip=True)
    snapshots = {}

    def snapshot(model):
        def on_event(event):
            if event["event"] == "eval":
                snapshots[(id(model), event["epoch"])] = model.parameters.copy()
        return on_event

    cfg = small_config(num_train_epochs=3, gradient_accumulation_steps=1, learning_rate=0.05,
                       warmup_ratio=0.0)
    model = tiny_classifier()
    result = Trainer(model, cfg, batches_of(x, y, [4] * 6), batches_of(fx, fy, [8] * 3),
                     tmp_path / "best", progress=snapshot(model)).train()
    losses = [h["eval_loss"] for h in result.history]
    assert losses[0] < min(losses[1:])
    assert result.best_epoch == 1 and result.best_loaded
    assert result.best_metric == pytest.approx(losses[0])
    np.testing.assert_array_equal(model.parameters, snapshots[(id(model), 1)])

    # without load_best_model_at_end the last epoch stays
    model2 = tiny_classifier()
    result2 = Trainer(model2, small_config(num_train_epochs=3, gradient_accumulation_steps=1,
                                           learning_rate=0.05, warmup_ratio=0.0,
                                           load_best_model_at_end=False),
                      batches_of(x, y, [4] * 6), batches_of(fx, fy, [8] * 3), tmp_path / "last",
                      progress=snapshot(model2)).train()
    assert result2.best_epoch is None and not result2.best_loaded
    np.testing.assert_array_equal(model2.parameters, snapshots[(id(model2), 3)])
    assert not os.path.exists(tmp_path / "last" / training.BEST_NAME)


def test_frozen_tensors_never_change(tmp_path):
    x, y = make_data(16)
    model = tiny_classifier()
    before = model.parameters.copy()
    run(tmp_path, small_config(num_train_epochs=1), batches_of(x, y, [2] * 8), None, model=model)
    frozen = [e for e in model.param_table() if not e["trainable"]]
    trained = [e for e in model.param_table() if e["trainable"]]
    assert frozen and trained  # trainable_blocks=1 freezes block 0 and the embeddings
    for entry in frozen:
        span = slice(entry["offset"], entry["offset"] + entry["numel"])
        assert model.parameters[span].tobytes() == before[span].tobytes(), entry["name"]
    assert not np.array_equal(model.parameters, before)


def interrupting(at_step, snapshots, model):
    def on_event(event):
        if event["event"] == "checkpoint":
            snapshots[event["epoch"]] = model.parameters.copy()
        if event["event"] == "step" and event["step"] == at_step:
            raise KeyboardInterrupt
    return on_event


def test_keyboard_interrupt_keeps_last_checkpoint_and_resumes_exactly(tmp_path):
    x, y = make_data(20)
    train, evaluation = batches_of(x, y, [2] * 10), batches_of(x, y, [10, 10])
    cfg = small_config(num_train_epochs=3, gradient_accumulation_steps=2)  # 5 updates per epoch

    reference, _, full = run(tmp_path, cfg, train, evaluation, name="full")

    model, snapshots = tiny_classifier(), {}
    trainer = Trainer(model, cfg, train, evaluation, tmp_path / "cut",
                      progress=interrupting(7, snapshots, model))
    with pytest.raises(TrainingInterrupted) as raised:
        trainer.train()
    result = raised.value.result
    assert isinstance(raised.value, KeyboardInterrupt)  # callers that do not catch it stop too
    assert result.interrupted and not result.finished and result.global_step == 7
    assert len(result.history) == 1 and result.epochs_completed == 1
    assert result.last_checkpoint == trainer.checkpoint_path
    assert no_temp_files(str(tmp_path / "cut"))
    assert not model.gradients.any()  # the partial accumulation was dropped
    # the checkpoint on disk is the last complete epoch and loads
    assert not np.array_equal(model.parameters, snapshots[1])
    saved = trainer.load_checkpoint()
    assert saved["epoch"] == 1 and saved["global_step"] == 5
    np.testing.assert_array_equal(model.parameters, snapshots[1])
    assert trainer.optimizer.step_count == 5

    # resuming runs epochs 2 and 3 again and ends exactly where an uninterrupted run ends
    resumed = Trainer(model, cfg, train, evaluation, tmp_path / "cut").train(resume=True)
    assert not resumed.interrupted and resumed.finished and resumed.global_step == 15 and len(resumed.history) == 3
    np.testing.assert_array_equal(model.parameters, reference.parameters)
    assert [h["eval_loss"] for h in resumed.history] == [h["eval_loss"] for h in full.history]


def test_interrupt_at_an_epochs_evaluation_keeps_that_epochs_checkpoint(tmp_path):
    x, y = make_data(16)
    model = tiny_classifier()
    snapshots = {}

    def on_event(event):
        if event["event"] == "checkpoint":
            snapshots[event["epoch"]] = model.parameters.copy()
        if event["event"] == "eval" and event["epoch"] == 2:
            raise KeyboardInterrupt  # Ctrl-C during epoch 2's evaluation: the epoch itself is complete

    trainer = Trainer(model, small_config(num_train_epochs=3, gradient_accumulation_steps=2),
                      batches_of(x, y, [2] * 8), batches_of(x, y, [8, 8]), tmp_path / "save",
                      progress=on_event)
    with pytest.raises(TrainingInterrupted) as raised:
        trainer.train()
    result = raised.value.result
    assert result.interrupted and result.epochs_completed == 2 and len(result.history) == 2
    assert list(snapshots) == [1]  # the callback is not called again once it raised
    assert no_temp_files(str(tmp_path / "save"))
    assert trainer.load_checkpoint()["epoch"] == 2
    resumed = trainer.train(resume=True)
    assert not resumed.interrupted and resumed.epochs_completed == 3


def test_sigint_stops_training_within_a_second(tmp_path):
    x, y = make_data(64, width=64)
    model = tiny_classifier(n_layer=4, n_embd=64, n_positions=64)  # a run of many seconds
    cfg = small_config(num_train_epochs=500, gradient_accumulation_steps=4)
    trainer = Trainer(model, cfg, batches_of(x, y, [2] * 32), None, tmp_path / "sigint")
    sent = {}

    def send_sigint():
        sent["at"] = time.perf_counter()
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(1.5, send_sigint)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            trainer.train()
    finally:
        timer.cancel()
    stopped = time.perf_counter()
    result = raised.value.result
    assert result.interrupted and not result.finished
    assert stopped - sent["at"] < 1.0
    assert 0 < result.global_step < trainer.total_steps


def test_nonfinite_loss_stops_with_parameters_of_the_last_good_update(tmp_path):
    x, y = make_data(16)
    model = tiny_classifier()
    # an absurd learning rate: the first update is finite, the loss after it is not
    cfg = small_config(gradient_accumulation_steps=2, learning_rate=1e30, warmup_ratio=0.0, max_grad_norm=0.0)
    after_step = {}
    before = model.parameters.copy()
    trainer = Trainer(model, cfg, batches_of(x, y, [2] * 8), None, tmp_path / "nan",
                      progress=lambda e: after_step.update({e["step"]: model.parameters.copy()}))
    with pytest.raises(TrainingError, match="non-finite"):
        trainer.train()
    # as the former Python trainer: the parameters of the last applied update (the first), no partial step
    assert max(after_step) == 1
    np.testing.assert_array_equal(model.parameters, after_step[1])
    assert not np.array_equal(model.parameters, before)
    assert np.isfinite(model.parameters).all() and not model.gradients.any()


def test_bad_inputs_and_checkpoints_are_clear_errors(tmp_path):
    x, y = make_data(8)
    with pytest.raises(TypeError, match="TrainingConfig"):
        Trainer(tiny_classifier(), {"lr": 1}, batches_of(x, y, [4, 4]), None, tmp_path)
    with pytest.raises(TypeError, match="param_table"):
        Trainer(object(), small_config(), batches_of(x, y, [4, 4]), None, tmp_path)
    with pytest.raises(ValueError, match="empty"):
        Trainer(tiny_classifier(), small_config(), [], None, tmp_path)
    with pytest.raises(TypeError, match="length"):
        Trainer(tiny_classifier(), small_config(), iter(batches_of(x, y, [4, 4])), None, tmp_path)

    cfg = small_config(num_train_epochs=1)
    model, trainer, _ = run(tmp_path, cfg, batches_of(x, y, [4, 4]), None, name="good")
    # a checkpoint of another layout is refused
    other = tiny_classifier(n_layer=3)
    other_trainer = Trainer(other, cfg, batches_of(x, y, [4, 4]), None, tmp_path / "other")
    with pytest.raises(TrainingError, match="layout"):
        other_trainer.load_checkpoint(trainer.checkpoint_path)
    # a run of another length cannot resume from it
    longer = Trainer(tiny_classifier(), small_config(num_train_epochs=2), batches_of(x, y, [4, 4]),
                     None, tmp_path / "good")
    with pytest.raises(TrainingError, match="updates"):
        longer.train(resume=True)
    # a truncated file is reported, not a crash
    broken = tmp_path / "broken.npz"
    broken.write_bytes(open(trainer.checkpoint_path, "rb").read()[:100])
    with pytest.raises(TrainingError, match="unreadable"):
        trainer.load_checkpoint(str(broken))


def test_a_shuffling_batchers_numpy_order_is_followed_and_lengths_are_checked(tmp_path):
    x, y = make_data(16)
    encoded = EncodedBatch(x, np.ones_like(x), np.zeros_like(x))
    batcher = EncodedBatches(encoded, y, 4, shuffle=True, seed=3, token_types=False)
    model, _, result = run(tmp_path, small_config(num_train_epochs=2), batcher, None, name="batcher")
    # the same run from the batches the batcher yields epoch by epoch, in its numpy order
    per_epoch = []
    for epoch in range(2):
        batcher.set_epoch(epoch)
        per_epoch.append(list(batcher))
    reference = tiny_classifier()
    trainer = Trainer(reference, small_config(num_train_epochs=1), per_epoch[0], None, tmp_path / "ref")
    trainer.train()
    assert not np.array_equal(model.parameters, reference.parameters)  # one epoch is not two
    assert result.global_step == 2

    class Liar(EncodedBatches):
        def __len__(self):
            return 3

    with pytest.raises(TrainingError, match="length"):
        run(tmp_path, small_config(num_train_epochs=1), Liar(encoded, y, 4, token_types=False), None, name="liar")


def test_tqdm_progress_counts_updates(tmp_path):
    pytest.importorskip("tqdm")
    x, y = make_data(16)
    stream = io.StringIO()
    cfg = small_config(num_train_epochs=2, gradient_accumulation_steps=2)
    model = tiny_classifier()
    trainer = Trainer(model, cfg, batches_of(x, y, [2] * 8), batches_of(x, y, [16]), tmp_path / "tq")
    with training.TqdmProgress(total=trainer.total_steps, file=stream) as progress:
        trainer.progress = progress
        trainer.train()
        assert progress.bar.n == trainer.total_steps == 8
    assert "eval_loss" in stream.getvalue()
    with training.TqdmProgress(file=stream) as progress:  # the total from the core's first event
        trainer = Trainer(tiny_classifier(), cfg, batches_of(x, y, [2] * 8), None, tmp_path / "tq2",
                          progress=progress)
        trainer.train()
        assert progress.bar.total == progress.bar.n == 8


def test_trainer_fine_tunes_the_real_transformer_with_frozen_blocks(tmp_path):
    models = pytest.importorskip("reviewgen.core.models")
    model = models.Model(models.ModelConfig(vocab_size=17, n_positions=16, n_layer=3, n_head=2, n_embd=8))
    rng = np.random.default_rng(0)

    def counting_batch(rows):
        start = rng.integers(0, 17, (rows, 1))
        tokens = ((start + np.arange(10)) % 17).astype(np.int32)
        return dict(tokens=tokens, attention_mask=np.ones_like(tokens), targets=tokens.copy())

    train, evaluation = [counting_batch(4) for _ in range(8)], [counting_batch(8)]
    before = model.parameters.copy()
    cfg = TrainingConfig.for_generator(num_train_epochs=3, learning_rate=2e-2, trainable_blocks=1)
    trainer = Trainer(model, cfg, train, evaluation, tmp_path / "gpt")
    result = trainer.train()
    losses = [h["eval_loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.global_step == trainer.total_steps == 6
    assert result.best_epoch == 3  # so the final parameters are the last checkpoint's
    frozen = [e for e in model.param_table() if not e["trainable"]]
    trained = [e for e in model.param_table() if e["trainable"]]
    assert frozen and trained
    for entry in frozen:
        span = slice(entry["offset"], entry["offset"] + entry["numel"])
        assert model.parameters[span].tobytes() == before[span].tobytes(), entry["name"]
    assert trainer.optimizer.state_numel == sum(e["numel"] for e in trained)
    # the saved checkpoint loads back into the real model
    final = model.parameters.copy()
    model.parameters[:] = 0
    assert trainer.load_checkpoint()["epoch"] == 3
    np.testing.assert_array_equal(model.parameters, final)


def _padded_batches(x, y, sizes, seed=3):
    """Like batches_of, with right padding of varied length (so batches trim to their widest row)."""
    rng = np.random.default_rng(seed)
    out = batches_of(x, y, sizes)
    for batch in out:
        lengths = rng.integers(2, batch["tokens"].shape[1] + 1, len(batch["tokens"]))
        batch["attention_mask"] = (np.arange(batch["tokens"].shape[1])[None, :] < lengths[:, None]).astype(np.int32)
    return out


def test_cache_frozen_trains_as_without_dropout_in_the_frozen_part(tmp_path):
    """cache_frozen keeps the frozen part's output per example after epoch 1: the run equals
    one with frozen_dropout=False (up to the rounding of rows met in other batches), and
    both differ from the default, whose frozen blocks keep their dropout as PyTorch's do."""
    x, y = make_data(24, width=6)
    train, evaluation = _padded_batches(x, y, [4] * 6), _padded_batches(x[:8], y[:8], [4, 4], seed=4)
    runs = {}
    for name, overrides in (("cached", dict(cache_frozen=True)), ("no_dropout", dict(frozen_dropout=False)),
                            ("default", {})):
        model = tiny_classifier(n_layer=3, dropout=0.1)
        cfg = small_config(num_train_epochs=3, gradient_accumulation_steps=1, trainable_blocks=1, **overrides)
        _, _, result = run(tmp_path, cfg, train, evaluation, model=model, name=name)
        runs[name] = (model.parameters.copy(), [h["eval_loss"] for h in result.history], result)
    cached, plain, default = runs["cached"], runs["no_dropout"], runs["default"]
    assert cached[2].frozen_cache_mib is not None and cached[2].frozen_cache_mib > 0
    assert plain[2].frozen_cache_mib is None
    np.testing.assert_allclose(cached[0], plain[0], rtol=0, atol=2e-5)
    np.testing.assert_allclose(cached[1], plain[1], rtol=0, atol=2e-5)
    assert np.abs(default[0] - plain[0]).max() > 1e-3


def test_cache_frozen_says_when_it_is_not_used(tmp_path):
    x, y = make_data(8, width=6)
    with pytest.warns(RuntimeWarning, match="cache_frozen is not used: nothing is frozen"):
        run(tmp_path, small_config(num_train_epochs=1, trainable_blocks=-1, cache_frozen=True),
            batches_of(x, y, [4, 4]), None, name="all")
    x, y = make_data(80, width=64)
    big = tiny_classifier(n_layer=3, n_embd=64, n_positions=64)
    with pytest.warns(RuntimeWarning, match=r"it would need 1 MiB \(cache_frozen_max_mib is 1\)"):
        run(tmp_path, small_config(num_train_epochs=1, trainable_blocks=1, cache_frozen=True,
                                   cache_frozen_max_mib=1), batches_of(x, y, [40, 40]), None, model=big, name="big")
    with pytest.raises(ValueError, match="cache_frozen_max_mib"):
        small_config(cache_frozen_max_mib=0)
