"""GPT-2 (DistilGPT2 shape) on reviewgen's C core against PyTorch, side by side.

One random GPT2LMHeadModel is saved with save_pretrained; the torch side
loads it with from_pretrained, the reviewgen side with reviewgen.weights.gpt2.load_gpt2,
so both compute the same function (the first loss and the greedy tokens are
compared as a check). Dropout is OFF on both sides (all pdrop = 0), fp32.

Workloads (each side in its own process, same thread count):
  * training step B x T (forward + backward + AdamW with clipping), with
    freezing (only the last block + final norm train; tied head/wte frozen)
    and without (everything trains): tokens per second;
  * greedy generation with the KV cache, batch 1 and batch 20, P-token prompts
    + N new tokens (end token forbidden, so exactly N): new tokens per second,
    prefill included.

    python benchmarks/bench_gpt2.py [--threads N] [--repeats R] [--quick] [--json out.json]
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (MemoryProbe, Workload, add_common_arguments, assert_no_torch,  # noqa: E402
                     freeze_torch, quiet_transformers, random_prompts, resolve_threads,
                     reviewgen_generate, reviewgen_train, run_side_by_side, torch_generate, torch_train,
                     write_json)

FULL = dict(model=dict(n_layer=6, n_embd=768, n_head=12, vocab_size=50257, n_positions=1024),
            batch=8, seq=128, gen_batches=(1, 20), prompt=32, new_tokens=64)
QUICK = dict(model=dict(n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=64),
             batch=2, seq=16, gen_batches=(1, 3), prompt=4, new_tokens=4)


def build_checkpoint(directory, model_shape, seed=0):
    """A random GPT-2 saved in Hugging Face's format, dropout off."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    end = model_shape["vocab_size"] - 1
    config = GPT2Config(**model_shape, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=end, eos_token_id=end)
    torch.manual_seed(seed)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return end


def _train_batch(args):
    import numpy as np

    tokens = random_prompts(args["seed"], args["batch"], args["seq"], args["vocab_size"])
    return tokens, np.ones_like(tokens)


# -- reviewgen side ------------------------------------------------------------

def reviewgen_train_step(args):
    from reviewgen.weights.gpt2 import load_gpt2

    probe = MemoryProbe()
    model = load_gpt2(args["model_dir"]).build_model()
    k = args["trainable_blocks"]
    model.set_trainable(k, "frozen" if k >= 0 else "train")
    probe.setup_done()
    tokens, mask = _train_batch(args)
    result = reviewgen_train(model, dict(tokens=tokens, attention_mask=mask, targets=tokens),
                             tokens.size, args["repeats"], probe,
                             bf16=args.get("rg_bf16", False))
    assert_no_torch(args, "reviewgen_train_step")
    return result


def reviewgen_generation(args):
    from reviewgen.weights.gpt2 import load_gpt2

    probe = MemoryProbe()
    model = load_gpt2(args["model_dir"]).build_model()
    probe.setup_done()
    prompts = random_prompts(args["seed"], args["batch"], args["prompt"], args["vocab_size"])
    result = reviewgen_generate(model, prompts, args["new_tokens"], args["eos_id"], args["repeats"], probe)
    assert_no_torch(args, "reviewgen_generation")
    return result


# -- torch side ------------------------------------------------------------------

def _torch_model(args):
    import torch
    from transformers import GPT2LMHeadModel

    torch.set_num_threads(args["threads"])
    quiet_transformers()
    return torch, GPT2LMHeadModel


def torch_train_step(args):
    torch, GPT2LMHeadModel = _torch_model(args)
    probe = MemoryProbe()
    model = GPT2LMHeadModel.from_pretrained(args["model_dir"], dtype=torch.float32)
    k = args["trainable_blocks"]
    freeze_torch(model, None if k < 0 else list(model.transformer.h[-k:]) + [model.transformer.ln_f])
    probe.setup_done()
    tokens, mask = _train_batch(args)
    ids = torch.from_numpy(tokens.astype("int64"))
    batch = dict(input_ids=ids, attention_mask=torch.from_numpy(mask.astype("int64")), labels=ids)
    return torch_train(torch, model, batch, tokens.size, args["repeats"], probe, autocast=args.get('bf16', False))


def torch_generation(args):
    torch, GPT2LMHeadModel = _torch_model(args)
    probe = MemoryProbe()
    model = GPT2LMHeadModel.from_pretrained(args["model_dir"], dtype=torch.float32)
    probe.setup_done()
    prompts = random_prompts(args["seed"], args["batch"], args["prompt"], args["vocab_size"])
    return torch_generate(torch, model, prompts, args["new_tokens"], args["eos_id"], args["repeats"], probe)


# -- driver -----------------------------------------------------------------------

def workloads(spec, model_dir, eos_id):
    common = dict(model_dir=model_dir, vocab_size=spec["model"]["vocab_size"], seed=1234)
    B, T = spec["batch"], spec["seq"]
    out = []
    for k, name in ((1, "freeze k=1"), (-1, "no freezing")):
        out.append(Workload(f"gpt2 train step ({name}) B={B} T={T}", "tok/s", "reviewgen_train_step",
                            "torch_train_step", dict(common, batch=B, seq=T, trainable_blocks=k)))
    for gen_batch in spec["gen_batches"]:
        out.append(Workload(f"gpt2 generate greedy B={gen_batch} prompt={spec['prompt']} "
                            f"new={spec['new_tokens']}", "new tok/s", "reviewgen_generation", "torch_generation",
                            dict(common, batch=gen_batch, prompt=spec["prompt"], new_tokens=spec["new_tokens"],
                                 eos_id=eos_id)))
    return out


def main(argv=None):
    args = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0])).parse_args(argv)
    resolve_threads(args)
    spec = QUICK if args.quick else FULL
    directory = tempfile.mkdtemp(prefix="bench_gpt2_")
    try:
        quiet_transformers()
        eos_id = build_checkpoint(directory, spec["model"])
        print(f"GPT-2 {spec['model']}, threads={args.threads}, repeats={args.repeats}, dropout off, fp32"
              + (" (QUICK: tiny config, one process, figures meaningless)" if args.quick else ""))
        rows = run_side_by_side(os.path.abspath(__file__), workloads(spec, directory, eos_id), args.threads,
                                args.repeats, isolate=not args.quick, module=sys.modules[__name__],
                                rounds=args.rounds, bf16=args.bf16)
        write_json(args.json, "gpt2", args, rows)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
