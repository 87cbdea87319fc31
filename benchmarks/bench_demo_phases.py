"""The demo's own phases, side by side with the same work in transformers, on the
demo's model (SmolLM2-135M-Instruct from its GGUF, dequantized; the torch side
loads the same weights exported as a Hugging Face directory):

* features: the filter's feature extraction (`classifier_recipe="lm_features"`):
  the first 15 of 30 blocks, the final norm, mean-pooled over each review's
  tokens, 256 tokens at most, batches of 16, on reviews of the bundled sample;
* generation: one round of the demo's sampling for one rating: 24 reviews from the
  demo's chat prompt, temperature 0.7, top-p 0.95, repetition penalty 1.15, no
  repeated 4-grams, exactly 120 new tokens each (min = max, so both sides do the
  same work).

    python benchmarks/bench_demo_phases.py [--threads N] [--repeats R] [--reviews 64]
"""
import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (MemoryProbe, Workload, add_common_arguments, assert_no_torch,  # noqa: E402
                     quiet_transformers, resolve_threads, run_side_by_side, timed, write_json)

LAYERS, MAX_LENGTH, BATCH = 15, 256, 16
GEN = dict(n=24, new_tokens=120, temperature=0.7, top_p=0.95, repetition_penalty=1.15, no_repeat_ngram_size=4)


def _reviews(count):
    from reviewgen import data

    frame = data.load_sample("imdb")
    return [str(t) for t in frame["text"].head(count)]


def _prompt():
    """The demo's chat prompt for a 5-star review, as text (both sides tokenize it)."""
    from reviewgen.experiments.demo import DemoConfig, _conditioning
    from reviewgen.tasks.generator import Generator

    generator = Generator.from_pretrained("smollm2", max_length=64)
    return _conditioning(DemoConfig(), generator).prompt(5)


# -- reviewgen side ------------------------------------------------------------

def reviewgen_features(args):
    from reviewgen.tasks.encoder import SentenceEncoder
    from reviewgen.tasks.generator import load_generator_checkpoint

    probe = MemoryProbe()
    encoder = SentenceEncoder.from_decoder(load_generator_checkpoint("smollm2"), layers=LAYERS,
                                           max_length=MAX_LENGTH, batch_size=BATCH)
    probe.setup_done()
    texts = _reviews(args["reviews"])
    features = encoder.encode(texts)
    seconds = timed(lambda: encoder.encode(texts), args["repeats"], warmup=0)
    assert_no_torch(args, "reviewgen_features")
    return dict(seconds=seconds, items=len(texts), check=[float(x) for x in features[0, :8]], **probe.report())


def reviewgen_generation(args):
    from reviewgen.core.generation import generate
    from reviewgen.tasks.generator import Generator
    from reviewgen.text.conditioning import stop_ids

    probe = MemoryProbe()
    generator = Generator.from_pretrained("smollm2", max_length=512)
    probe.setup_done()
    prompt = generator.tokenizer.encode(args["prompt"], max_length=100_000)

    def run():
        return generate(generator.model, [prompt] * GEN["n"], GEN["new_tokens"], temperature=GEN["temperature"],
                        top_p=GEN["top_p"], eos_id=stop_ids(generator), pad_id=generator.pad_id, seed=1,
                        min_new_tokens=GEN["new_tokens"], batch_size=GEN["n"], include_eos=False,
                        repetition_penalty=GEN["repetition_penalty"],
                        no_repeat_ngram_size=GEN["no_repeat_ngram_size"])

    outputs = run()
    seconds = timed(run, args["repeats"], warmup=0)
    assert_no_torch(args, "reviewgen_generation")
    return dict(seconds=seconds, items=sum(len(o) for o in outputs), check=None, **probe.report())


# -- torch side ------------------------------------------------------------------

def _torch(args):
    import torch

    torch.set_num_threads(args["threads"])
    quiet_transformers()
    import tokenizers
    import transformers

    tokenizer = tokenizers.Tokenizer.from_file(os.path.join(args["hf_dir"], "tokenizer.json"))
    return torch, transformers, tokenizer


def torch_features(args):
    torch, transformers, tokenizer = _torch(args)
    probe = MemoryProbe()
    model = transformers.LlamaModel.from_pretrained(args["hf_dir"], dtype=torch.float32).eval()
    model.layers = model.layers[:LAYERS]  # as the core does: the blocks after the features never run
    model.config.num_hidden_layers = LAYERS
    probe.setup_done()
    texts = _reviews(args["reviews"])

    def run():
        rows = []
        with torch.no_grad():
            for start in range(0, len(texts), BATCH):
                encoded = [tokenizer.encode(t).ids[:MAX_LENGTH] for t in texts[start:start + BATCH]]
                width = max(map(len, encoded))
                ids = torch.tensor([e + [0] * (width - len(e)) for e in encoded])
                mask = torch.tensor([[1] * len(e) + [0] * (width - len(e)) for e in encoded])
                # with the blocks cut to LAYERS, the last hidden state is the normed output of block LAYERS
                hidden = model(ids, attention_mask=mask).last_hidden_state * mask[..., None]
                rows.append(hidden.sum(1) / mask.sum(1, keepdim=True))
        return torch.cat(rows)

    features = run()
    seconds = timed(run, args["repeats"], warmup=0)
    return dict(seconds=seconds, items=len(texts), check=[float(x) for x in features[0, :8]], **probe.report())


def torch_generation(args):
    torch, transformers, tokenizer = _torch(args)
    probe = MemoryProbe()
    model = transformers.LlamaForCausalLM.from_pretrained(args["hf_dir"], dtype=torch.float32).eval()
    probe.setup_done()
    ids = torch.tensor([tokenizer.encode(args["prompt"]).ids] * GEN["n"])

    def run():
        torch.manual_seed(1)
        with torch.no_grad():
            return model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                  temperature=GEN["temperature"], top_p=GEN["top_p"], top_k=0,
                                  repetition_penalty=GEN["repetition_penalty"],
                                  no_repeat_ngram_size=GEN["no_repeat_ngram_size"],
                                  max_new_tokens=GEN["new_tokens"], min_new_tokens=GEN["new_tokens"],
                                  pad_token_id=0)

    out = run()
    seconds = timed(run, args["repeats"], warmup=0)
    return dict(seconds=seconds, items=int((out.shape[1] - ids.shape[1]) * out.shape[0]), check=None,
                **probe.report())


def main(argv=None):
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--reviews", type=int, default=64)
    args = parser.parse_args(argv)
    resolve_threads(args)
    directory = tempfile.mkdtemp(prefix="bench_demo_")
    try:
        from reviewgen.tasks.generator import load_generator_checkpoint
        from reviewgen.weights.llama import export_hf_llama

        checkpoint = load_generator_checkpoint("smollm2")
        export_hf_llama(directory, checkpoint.build_model(), tokenizer=checkpoint.tokenizer)
        common = dict(hf_dir=directory, reviews=args.reviews, prompt=_prompt())
        workloads = [
            Workload(f"demo features: SmolLM2 {LAYERS} blocks, <= {MAX_LENGTH} tokens, batch {BATCH}", "reviews/s",
                     "reviewgen_features", "torch_features", common),
            Workload(f"demo generation: {GEN['n']} reviews x {GEN['new_tokens']} tokens, top-p, penalties",
                     "new tok/s", "reviewgen_generation", "torch_generation", common),
        ]
        print(f"SmolLM2-135M-Instruct (4-bit GGUF dequantized), threads={args.threads}, repeats={args.repeats}")
        rows = run_side_by_side(os.path.abspath(__file__), workloads, args.threads, args.repeats,
                                isolate=not args.quick, module=sys.modules[__name__], rounds=args.rounds)
        write_json(args.json, "demo_phases", args, rows)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rows


if __name__ == "__main__":
    main()
