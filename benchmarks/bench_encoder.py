"""DistilBERT-shaped classifier on reviewgen's C core against PyTorch, side by side.

One random DistilBertForSequenceClassification (5 labels) is saved with
save_pretrained; the torch side loads it with from_pretrained, the reviewgen
side with reviewgen.weights.bert.load_encoder, so both compute the same
function (the first loss and the logits are compared as a check). Dropout is
OFF on both sides (dropout, attention_dropout, seq_classif_dropout = 0), fp32.

Workloads (each side in its own process, same thread count):
  * training step B x T (forward + backward + AdamW with clipping) with
    freezing k=1 (the last block + the classification head train);
  * inference B x T (forward, logits only; torch under inference_mode).
Both in sequences per second.

    python benchmarks/bench_encoder.py [--threads N] [--repeats R] [--quick] [--json out.json]
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (MemoryProbe, Workload, add_common_arguments, assert_no_torch,  # noqa: E402
                     freeze_torch, model_from_checkpoint, quiet_transformers, random_prompts,
                     resolve_threads, reviewgen_train, run_side_by_side, step_flops, timed, torch_train,
                     write_json)

FULL = dict(model=dict(n_layers=6, dim=768, n_heads=12, hidden_dim=3072, vocab_size=30522,
                       max_position_embeddings=512),
            labels=5, batch=8, seq=256)
QUICK = dict(model=dict(n_layers=2, dim=64, n_heads=4, hidden_dim=128, vocab_size=300,
                        max_position_embeddings=64),
             labels=5, batch=2, seq=16)


def build_checkpoint(directory, model_shape, labels, seed=0):
    """A random DistilBERT classifier saved in Hugging Face's format, dropout off."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(**model_shape, num_labels=labels, dropout=0.0, attention_dropout=0.0,
                              seq_classif_dropout=0.0, activation="gelu")
    torch.manual_seed(seed)
    DistilBertForSequenceClassification(config).save_pretrained(directory)


def _batch(args):
    import numpy as np

    tokens = random_prompts(args["seed"], args["batch"], args["seq"], args["vocab_size"])
    labels = np.random.default_rng(args["seed"] + 1).integers(0, args["labels"], size=args["batch"])
    return tokens, np.ones_like(tokens), labels.astype(np.int32)


# -- reviewgen side ------------------------------------------------------------

def _reviewgen_model(args):
    """The imports first, then the memory baseline, then the model."""
    from reviewgen.weights.bert import load_encoder

    probe = MemoryProbe()
    return model_from_checkpoint(load_encoder(args["model_dir"])), probe


def reviewgen_train_step(args):
    model, probe = _reviewgen_model(args)
    model.set_trainable(args["trainable_blocks"], "train")
    probe.setup_done()
    tokens, mask, labels = _batch(args)
    result = reviewgen_train(model, dict(tokens=tokens, attention_mask=mask, targets=labels),
                             args["batch"], args["repeats"], probe,
                             bf16=args.get("rg_bf16", False))
    assert_no_torch(args, "encoder reviewgen_train_step")
    return result


def reviewgen_inference(args):
    model, probe = _reviewgen_model(args)
    probe.setup_done()
    tokens, mask, _ = _batch(args)
    logits = model.forward(tokens, attention_mask=mask, train=False)
    check = [float(x) for x in logits[0]]
    seconds = timed(lambda: model.forward(tokens, attention_mask=mask, train=False), args["repeats"])
    assert_no_torch(args, "encoder reviewgen_inference")
    return dict(seconds=seconds, items=args["batch"], check=check,
                flops=step_flops(model, *tokens.shape, train=False), **probe.report())


# -- torch side ------------------------------------------------------------------

def _torch_model(args):
    import torch

    torch.set_num_threads(args["threads"])
    quiet_transformers()
    from transformers import DistilBertForSequenceClassification

    probe = MemoryProbe()
    model = DistilBertForSequenceClassification.from_pretrained(args["model_dir"], dtype=torch.float32)
    return torch, model, probe


def _torch_batch(torch, args, with_labels):
    tokens, mask, labels = _batch(args)
    batch = dict(input_ids=torch.from_numpy(tokens.astype("int64")),
                 attention_mask=torch.from_numpy(mask.astype("int64")))
    if with_labels:
        batch["labels"] = torch.from_numpy(labels.astype("int64"))
    return batch


def torch_train_step(args):
    torch, model, probe = _torch_model(args)
    k = args["trainable_blocks"]
    freeze_torch(model, None if k < 0 else
                 list(model.distilbert.transformer.layer[-k:]) + [model.pre_classifier, model.classifier])
    probe.setup_done()
    return torch_train(torch, model, _torch_batch(torch, args, True), args["batch"], args["repeats"], probe,
                       autocast=args.get("bf16", False))


def torch_inference(args):
    torch, model, probe = _torch_model(args)
    probe.setup_done()
    model.eval()
    batch = _torch_batch(torch, args, False)

    def run():
        with torch.inference_mode():
            return model(**batch).logits

    check = [float(x) for x in run()[0]]
    seconds = timed(run, args["repeats"])
    return dict(seconds=seconds, items=args["batch"], check=check, **probe.report())


# -- driver -----------------------------------------------------------------------

def workloads(spec, model_dir):
    common = dict(model_dir=model_dir, vocab_size=spec["model"]["vocab_size"], labels=spec["labels"],
                  seed=4321, batch=spec["batch"], seq=spec["seq"])
    B, T = spec["batch"], spec["seq"]
    return [
        Workload(f"distilbert train step (freeze k=1) B={B} T={T}", "seq/s", "reviewgen_train_step",
                 "torch_train_step", dict(common, trainable_blocks=1)),
        Workload(f"distilbert inference B={B} T={T}", "seq/s", "reviewgen_inference", "torch_inference", common),
    ]


def main(argv=None):
    args = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0])).parse_args(argv)
    resolve_threads(args)
    spec = QUICK if args.quick else FULL
    directory = tempfile.mkdtemp(prefix="bench_encoder_")
    try:
        quiet_transformers()
        build_checkpoint(directory, spec["model"], spec["labels"])
        print(f"DistilBERT {spec['model']}, {spec['labels']} labels, threads={args.threads}, "
              f"repeats={args.repeats}, dropout off, fp32"
              + (" (QUICK: tiny config, one process, figures meaningless)" if args.quick else ""))
        rows = run_side_by_side(os.path.abspath(__file__), workloads(spec, directory), args.threads,
                                args.repeats, isolate=not args.quick, module=sys.modules[__name__],
                                rounds=args.rounds, bf16=args.bf16)
        write_json(args.json, "encoder", args, rows)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
