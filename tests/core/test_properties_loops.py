"""Property-based tests (hypothesis) of the whole-run bindings and the data entry points.

Beside tests/core/test_properties.py (models, sampler, metrics, AdamW): the
training loop, the sweep and the decode loop of the C core, and the readers
that take a user's file. Each case ends in a result that keeps its promises or
in a clean exception; a crash takes the run down. Budget: derandomized, no
example database; 5 tests, 240 cases in all, a few seconds on one core (also run against
the sanitizer build, tests/build/test_sanitized_extension.py).

  * Trainer on random tiny models, data and hyperparameters: the run finishes
    with the promised number of updates and finite parameters, or refuses cleanly;
  * Sweep on random values and samples: one finished run per (value, sample),
    each with one history entry per epoch;
  * generate on random prompts and every sampling control: new ids in the
    vocabulary, no more than max_new_tokens, none of the end ids before
    min_new_tokens, or a clean refusal;
  * read_reviews / prepare on random CSV and JSONL files (random bytes, texts,
    ratings, columns): a frame, or a DataError that names the file.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from reviewgen import _core  # noqa: E402
from reviewgen.core.config import TrainingConfig  # noqa: E402
from reviewgen.core.generation import generate  # noqa: E402
from reviewgen.core.models import Model, ModelConfig  # noqa: E402
from reviewgen.core.training import Trainer, TrainingError, core_config, dataset_arrays  # noqa: E402
from reviewgen.text import data as _data  # noqa: E402

CLEAN = (ValueError, TypeError, KeyError, OverflowError, _core.CoreError, TrainingError)


def budget(cases):
    return settings(max_examples=cases, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


def _model(head: str, vocab: int, seed: int, num_labels: int = 3) -> Model:
    model = Model(ModelConfig(vocab_size=vocab, n_positions=12, n_layer=2, n_head=2, n_embd=8, head=head,
                              causal=head == "lm", num_labels=num_labels if head != "lm" else 0))
    model.parameters[:] = (np.random.default_rng(seed).standard_normal(model.parameters.size) * 0.3
                           ).astype(np.float32)
    return model


def _batches(rng, head: str, vocab: int, rows: int, batch: int, width: int, num_labels: int = 3) -> list:
    out = []
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        tokens = rng.integers(0, vocab, (n, width)).astype(np.int32)
        mask = np.ones((n, width), np.int32)
        mask[:, rng.integers(1, width + 1):] = 0  # right padding, at least one real token
        targets = (rng.integers(0, num_labels, n).astype(np.int32) if head != "lm" else
                   np.where(mask > 0, tokens, -100).astype(np.int32))
        out.append({"tokens": tokens, "attention_mask": mask, "targets": targets})
    return out


@budget(60)
@given(head=st.sampled_from(["lm", "cls_bert", "cls_distilbert"]), rows=st.integers(1, 9), batch=st.integers(1, 4),
       width=st.integers(1, 10), epochs=st.integers(1, 2), accumulation=st.integers(1, 3),
       lr=st.sampled_from([0.0, 1e-4, 1e-2, 1.0]), warmup=st.sampled_from([0.0, 0.5, 1.0]),
       clip=st.sampled_from([0.0, 1e-3, 1.0]), blocks=st.sampled_from([-1, 0, 1, 2]),
       evaluate=st.booleans(), seed=st.integers(0, 2**16))
def test_training_runs_finish_with_the_promised_updates_or_refuse(tmp_path_factory, head, rows, batch, width,
                                                                  epochs, accumulation, lr, warmup, clip,
                                                                  blocks, evaluate, seed):
    rng = np.random.default_rng(seed)
    model = _model(head, 11, seed)
    config = TrainingConfig(task="generator" if head == "lm" else "classifier", num_train_epochs=epochs,
                            per_device_train_batch_size=batch, per_device_eval_batch_size=batch,
                            gradient_accumulation_steps=accumulation, learning_rate=lr, warmup_ratio=warmup,
                            max_grad_norm=clip, trainable_blocks=blocks, seed=seed)
    train = _batches(rng, head, 11, rows, batch, width)
    evaluation = _batches(rng, head, 11, rows, batch, width) if evaluate else None
    trainer = Trainer(model, config, train, evaluation, tmp_path_factory.mktemp("run"))
    try:
        result = trainer.train()
    except CLEAN as error:
        event(f"refused: {type(error).__name__}")
        return
    event("trained")
    assert result.finished and result.global_step == trainer.total_steps == config.total_steps(len(train))
    assert np.isfinite(model.parameters).all()
    assert len(result.history) == (epochs if evaluate else len(result.history))


@budget(30)
@given(values=st.lists(st.sampled_from([1e-4, 1e-3, 1e-2]), min_size=1, max_size=3), samples=st.integers(1, 3),
       epochs=st.integers(1, 2), rows=st.integers(2, 6), seed=st.integers(0, 2**16))
def test_a_sweep_finishes_one_run_per_value_and_sample(values, samples, epochs, rows, seed):
    rng = np.random.default_rng(seed)
    model = _model("cls_bert", 11, seed)
    base = TrainingConfig.for_classifier(num_train_epochs=epochs, per_device_train_batch_size=2,
                                         per_device_eval_batch_size=2, gradient_accumulation_steps=1)
    data = []
    for _ in range(samples):
        pair = tuple(dataset_arrays(_batches(rng, "cls_bert", 11, rows, 2, 6), True, "sample")[0] for _ in range(2))
        data.append(pair)
    config = core_config(base, 2, 2)
    config.update(shuffle=1, apply_freezing=1, progress_every=1 << 30)
    sweep = _core.Sweep(model.core, config, "learning_rate", [float(v) for v in values], data)
    try:
        sweep.run()
        runs = sweep.runs()
    finally:
        sweep.close()
    assert len(runs) == len(values) * samples
    for run in runs:
        assert run["done"] and run["status"] in ("ok", "nonfinite")
        if run["status"] == "ok":
            assert [h["epoch"] for h in run["history"]] == list(range(1, epochs + 1))


@budget(100)
@given(prompts=st.lists(st.lists(st.integers(0, 12), min_size=1, max_size=6), min_size=1, max_size=4),
       max_new=st.integers(0, 6), min_new=st.integers(0, 3), temperature=st.sampled_from([0.0, 0.5, 1.0, 3.0]),
       top_k=st.integers(0, 14), top_p=st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0, 1.0]),
       penalty=st.sampled_from([0.5, 1.0, 1.3]), no_repeat=st.integers(0, 3),
       eos=st.one_of(st.none(), st.integers(0, 12), st.lists(st.integers(0, 12), min_size=1, max_size=3)),
       do_sample=st.booleans(), batch_size=st.one_of(st.none(), st.integers(1, 3)), seed=st.integers(0, 2**16))
def test_decoding_keeps_every_control_or_refuses(prompts, max_new, min_new, temperature, top_k, top_p, penalty,
                                                 no_repeat, eos, do_sample, batch_size, seed):
    model = _model("lm", 13, seed)
    try:
        outputs = generate(model, prompts, max_new, temperature=temperature, top_k=top_k, top_p=top_p,
                           eos_id=eos, seed=seed, do_sample=do_sample, min_new_tokens=min_new,
                           batch_size=batch_size, include_eos=True, repetition_penalty=penalty,
                           no_repeat_ngram_size=no_repeat)
    except CLEAN as error:
        event(f"refused: {type(error).__name__}")
        return
    event("decoded")
    assert len(outputs) == len(prompts)
    ends = set([eos] if isinstance(eos, int) else eos or [])
    for new in outputs:
        assert len(new) <= max_new and all(0 <= t < 13 for t in new)
        for k, token in enumerate(new):
            if token in ends:  # never before min_new_tokens, and a row stops at its first end token
                assert k >= min_new and k == len(new) - 1


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
_RATING = st.one_of(st.integers(-3, 12), st.floats(allow_nan=True, allow_infinity=True), st.just(""),
                    _TEXT, st.none())


@budget(30)
@given(rows=st.lists(st.tuples(_TEXT, _RATING), max_size=8), header=st.sampled_from(
    [("text", "rating"), ("text",), ("review", "rating"), ("text", "rating", "extra")]),
       scale=st.sampled_from(["imdb10", "sst5", "1-5:1,6-10:2"]), fmt=st.sampled_from(["csv", "jsonl"]))
def test_user_files_give_a_frame_or_a_named_data_error(tmp_path_factory, rows, header, scale, fmt):
    path = tmp_path_factory.mktemp("data") / f"reviews.{fmt}"
    if fmt == "csv":
        import csv

        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            for text, rating in rows:
                writer.writerow(([text, rating] + ["x"])[:len(header)])
    else:
        with open(path, "w", encoding="utf-8") as f:
            for text, rating in rows:
                f.write(json.dumps(dict(zip(header, [text, rating, "x"])), allow_nan=True) + "\n")
    try:
        prepared = _data.prepare(str(path), scale, allow_drop=True)
    except _data.DataError as error:
        assert str(path) in str(error)
        event(f"refused: {type(error).__name__}")
        return
    event("prepared")
    assert len(prepared.cleaned) > 0 and prepared.cleaned["label"].isin(_data.get_scale(scale).labels).all()


@budget(20)
@given(payload=st.binary(max_size=200), fmt=st.sampled_from(["csv", "jsonl", "parquet"]))
def test_random_bytes_are_a_named_data_error(tmp_path_factory, payload, fmt):
    path = tmp_path_factory.mktemp("bytes") / f"reviews.{fmt}"
    path.write_bytes(payload)
    try:
        _data.read_reviews(str(path))
    except _data.DataError as error:
        assert str(path) in str(error)
