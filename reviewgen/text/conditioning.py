"""How a generator is asked for a review of a given rating, in training and generation.

Two formats:

* :class:`ReviewOfFormat` (``"review_of"``): the seed's ``Review of {label}. {text}``,
  the default for base models such as GPT-2;
* :class:`ChatFormat` (``"chat"``): an instruct model's own chat template
  (ChatML, as SmolLM2-Instruct's ``tokenizer.chat_template``), the rating in
  words as the user turn, e.g. "Write a short IMDB user review of a movie you
  found terrible, 1 out of 5 stars. Only the review.", and the review as the
  assistant turn, closed by ``<|im_end|>``.

Both give (prompt ids, completion ids) pairs; :class:`PromptedLMBatches` makes
causal-LM batches whose targets are -100 on the prompt (and on padding), so
that the loss counts the review tokens (and the closing end token) only, and
:func:`train_generator` fine-tunes a :class:`reviewgen.Generator` on them with
the shared Trainer. :func:`generate_reviews` samples with the same prompts.

    fmt = format_for(generator)                 # chat for an instruct model, review_of otherwise
    train_generator(generator, fmt, texts, labels, eval_texts, eval_labels, config=...)
    reviews = generate_reviews(generator, fmt, label=5, n=20, temperature=0.8)
    # each review started with the first words of a real one of the rating
    reviews = generate_reviews(generator, fmt, 5, 20, openings=review_openings(real_5s, 20))
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = ["ReviewOfFormat", "ChatFormat", "format_for", "PromptedLMBatches", "encode_pairs",
           "train_generator", "generate_reviews", "review_openings", "RATING_WORDS", "DEFAULT_INSTRUCTION", "FORMATS",
           "REVIEWER_PROMPT", "CHAT_PROMPTS"]

# The rating in words, for a 1-5 scale (ceil(stars / 2) for IMDB's 1-10).
RATING_WORDS: Dict[int, str] = {1: "terrible", 2: "bad", 3: "mediocre", 4: "good", 5: "excellent"}
# A representative IMDB 10-point rating of each 1-5 label (IMDB's label k holds ratings 2k-1 and 2k).
STARS_10: Dict[int, int] = {1: 1, 2: 3, 3: 5, 4: 8, 5: 10}
DEFAULT_INSTRUCTION = ("Write a short IMDB user review of a movie you found {word}, {label} out of "
                       "{scale} stars. Only the review.")
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
# The prompt that measured best in notebooks/results/quality/LOG.md (e08, untrained SmolLM2):
# a reviewer's system turn, the verdict in words without the opposite sentiment, the 10-point rating.
REVIEWER_PROMPT = dict(
    system="You are a movie fan who writes user reviews on IMDB.",
    instruction="Write your IMDB review of a movie you found {word}. You rate it {stars}/10. Only the review.",
    words={1: "terrible, a waste of time", 2: "disappointing and mostly boring", 3: "average",
           4: "good and enjoyable", 5: "excellent, one of the best"})
CHAT_PROMPTS = ("reviewer", "plain")
FORMATS = ("review_of", "chat")


@dataclass
class ReviewOfFormat:
    """The seed's format: the prompt is ``Review of {label}. `` and the review follows."""

    name: str = "review_of"
    template: str = "Review of {label}. "

    def prompt(self, label) -> str:
        return self.template.format(label=label)

    def completion(self, text: str) -> str:
        return text


@dataclass
class ChatFormat:
    """ChatML turns: [system,] user (the instruction), assistant (the review).

    ``system=None`` gives the template's default system turn (SmolLM2's, as
    transformers' apply_chat_template writes it); ``system=""`` leaves it out.
    """

    name: str = "chat"
    instruction: str = DEFAULT_INSTRUCTION
    system: Optional[str] = None
    scale: int = 5
    words: Optional[Dict[int, str]] = None

    def rating_word(self, label) -> str:
        words = self.words or RATING_WORDS
        try:
            return words[int(label)]
        except (KeyError, ValueError, TypeError):
            raise ValueError(f"no rating word for label {label!r} (known: {sorted(words)})") from None

    def user_turn(self, label) -> str:
        """The instruction with {word}, {label}, {scale} and {stars} (the 10-point rating) filled in."""
        return self.instruction.format(word=self.rating_word(label), label=label, scale=self.scale,
                                       stars=STARS_10.get(int(label), label))

    def prompt(self, label) -> str:
        system = DEFAULT_SYSTEM if self.system is None else self.system
        head = f"<|im_start|>system\n{system}<|im_end|>\n" if system else ""
        return f"{head}<|im_start|>user\n{self.user_turn(label)}<|im_end|>\n<|im_start|>assistant\n"

    def completion(self, text: str) -> str:
        return text


def format_for(generator, name: Optional[str] = None, **kwargs):
    """The named format, or by default: chat for a model whose tokenizer knows
    ``<|im_start|>`` (an instruct model), the seed's format otherwise. For chat,
    ``prompt="reviewer"`` starts from REVIEWER_PROMPT, ``"plain"`` (default) from
    DEFAULT_INSTRUCTION under the template's own system turn; other kwargs override."""
    if name is None:
        name = "chat" if generator.tokenizer.token_to_id("<|im_start|>") is not None else "review_of"
    if name == "chat":
        if generator.tokenizer.token_to_id("<|im_start|>") is None:
            raise ValueError("the chat format needs a tokenizer with <|im_start|> / <|im_end|> tokens")
        prompt = kwargs.pop("prompt", "plain")
        if prompt not in CHAT_PROMPTS:
            raise ValueError(f"unknown chat prompt {prompt!r}; known: {CHAT_PROMPTS}")
        return ChatFormat(**{**(REVIEWER_PROMPT if prompt == "reviewer" else {}), **kwargs})
    if name == "review_of":
        return ReviewOfFormat(**kwargs)
    raise ValueError(f"unknown conditioning format {name!r}; known: {FORMATS}")


def stop_ids(generator) -> List[int]:
    """End tokens: the generator's eos and, when the vocabulary has them, <|im_end|> and <|endoftext|>."""
    ids = {generator.eos_id}
    for token in ("<|im_end|>", "<|endoftext|>"):
        found = generator.tokenizer.token_to_id(token)
        if found is not None:
            ids.add(int(found))
    return sorted(ids)


def encode_pairs(generator, fmt, texts: Sequence[str], labels: Sequence, max_length: Optional[int] = None):
    """(tokens (N, T), attention_mask, targets) int32 arrays: prompt + review + eos,
    right-padded; targets -100 on the prompt and the padding. The review is cut
    so that the whole row fits in max_length (the generator's by default)."""
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    texts, labels = list(texts), list(labels)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise ValueError("encode_pairs: no texts")
    max_length = int(max_length or generator.max_length)
    tokenizer = generator.tokenizer
    rows, prompt_lengths = [], []
    cache: Dict[object, list] = {}
    for text, label in zip(texts, labels):
        if not isinstance(text, str):
            raise TypeError(f"texts hold a {type(text).__name__}, not str")
        if label not in cache:
            cache[label] = tokenizer.encode(fmt.prompt(label), max_length=100_000)
        prompt = cache[label]
        room = max_length - len(prompt) - 1
        if room < 1:
            raise ValueError(f"the prompt for label {label!r} takes {len(prompt)} tokens; max_length "
                             f"{max_length} leaves no room for the review")
        review = tokenizer.encode(fmt.completion(text), max_length=100_000)[:room]
        rows.append(prompt + review + [generator.eos_id])
        prompt_lengths.append(len(prompt))
    width = max(len(r) for r in rows)
    tokens = np.full((len(rows), width), generator.pad_id, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    targets = np.full((len(rows), width), -100, np.int32)
    for i, (row, start) in enumerate(zip(rows, prompt_lengths)):
        tokens[i, : len(row)] = row
        mask[i, : len(row)] = 1
        targets[i, start: len(row)] = row[start:]
    return tokens, mask, targets


class PromptedLMBatches:
    """Mini-batches of (tokens, attention_mask, targets) for the Trainer; the
    targets are -100 on the prompt, so the loss counts the review only.
    The core shifts the targets: position t predicts targets[t + 1]."""

    def __init__(self, tokens: np.ndarray, mask: np.ndarray, targets: np.ndarray, batch_size: int,
                 *, shuffle: bool = False, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.tokens, self.mask, self.targets = tokens, mask, targets
        self.batch_size, self.shuffle, self.seed = int(batch_size), bool(shuffle), int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.tokens) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        order = np.arange(len(self.tokens))
        if self.shuffle:
            order = np.random.default_rng(self.seed + self.epoch).permutation(order)
        return order

    def epoch_orders(self, epochs: int) -> np.ndarray:
        """(epochs, N) the row order of each epoch, which the core trainer follows."""
        from .tokenization import epoch_orders

        return epoch_orders(self, epochs, len(self.tokens))

    def arrays(self) -> dict:
        """The whole data set as the core trainer takes it (int32 arrays)."""
        return {"tokens": np.ascontiguousarray(self.tokens, np.int32),
                "attention_mask": np.ascontiguousarray(self.mask, np.int32),
                "targets": np.ascontiguousarray(self.targets, np.int32)}

    def __iter__(self):
        order = self.order()
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            width = int(self.mask[rows].sum(axis=1).max())
            yield {"tokens": np.ascontiguousarray(self.tokens[rows, :width]),
                   "attention_mask": np.ascontiguousarray(self.mask[rows, :width]),
                   "targets": np.ascontiguousarray(self.targets[rows, :width])}


def train_generator(generator, fmt, texts: Sequence[str], labels: Sequence, eval_texts=None, eval_labels=None,
                    config=None, output_dir: Optional[str] = None,
                    progress: Optional[Callable[[dict], None]] = None, review_only: bool = True,
                    resume: bool = False):
    """Fine-tune ``generator`` on (review, label) pairs in format ``fmt``.

    review_only: the loss counts the review and its end token only (targets
    -100 on the prompt); False counts the prompt too (the seed's way).
    resume: go on from output_dir's checkpoint (Trainer.train(resume=True))."""
    from ..core.config import TrainingConfig
    from ..core.training import Trainer

    config = config or TrainingConfig.for_generator()
    tokens, mask, targets = encode_pairs(generator, fmt, texts, labels)
    if not review_only:
        targets = np.where(mask > 0, tokens, -100).astype(np.int32)
    train = PromptedLMBatches(tokens, mask, targets, config.per_device_train_batch_size, shuffle=True,
                              seed=config.seed)
    evaluation = None
    if eval_texts is not None and len(eval_texts):
        et, em, eg = encode_pairs(generator, fmt, eval_texts, eval_labels)
        evaluation = PromptedLMBatches(et, em, eg, config.per_device_eval_batch_size)

    def run(directory: str):
        return Trainer(generator.model, config, train, evaluation, directory, progress=progress).train(resume=resume)

    if output_dir is not None:
        return run(output_dir)
    with tempfile.TemporaryDirectory(prefix="reviewgen-gen-") as directory:
        return run(directory)


def review_loss(generator, fmt, texts: Sequence[str], labels: Sequence, batch_size: int = 8) -> dict:
    """Mean cross-entropy and perplexity of the reviews (and end token) given their prompts."""
    tokens, mask, targets = encode_pairs(generator, fmt, texts, labels)
    total, count = 0.0, 0
    for batch in PromptedLMBatches(tokens, mask, targets, batch_size):
        loss = generator.model.forward(batch["tokens"], batch["attention_mask"], batch["targets"], train=False)
        counted = int((batch["targets"][:, 1:] >= 0).sum())
        total += float(loss) * counted
        count += counted
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": float(np.exp(min(loss, 700.0))), "tokens": count}


def review_openings(texts: Sequence[str], n: int, words: int = 3, seed: int = 0) -> List[str]:
    """``n`` review openings: the first ``words`` words of reviews drawn at random
    from ``texts`` (real reviews of the wanted rating), without replacement while
    there are enough. Issue #16 (notebooks/results/quality/LOG.md, "Openings"):
    starting each answer with three words of a real review of the rating made
    the untrained SmolLM2-Instruct's reviews closer to real ones (MAUVE
    0.46 / 0.42 -> 0.54 / 0.66 at two seeds) and a little truer to the rating
    (judge near agreement 0.74 / 0.78 -> 0.81 / 0.80), at no cost in time;
    more words raised MAUVE further but lowered the rating's fidelity."""
    if words < 1:
        raise ValueError(f"words must be at least 1, got {words}")
    pool = [" ".join(str(t).split()[:words]) for t in texts]
    pool = [t for t in pool if t]
    if not pool:
        raise ValueError("review_openings needs at least one non-empty text")
    rng = np.random.default_rng(seed)
    picks = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-n // len(pool)))])[:n]
    return [pool[i] for i in picks]


def generate_reviews(generator, fmt, label, n: int, *, max_new_tokens: int = 96, min_new_tokens: int = 0,
                     temperature: float = 0.8, top_k: int = 0, top_p: float = 1.0,
                     repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0, seed: int = 0,
                     batch_size: int = 20, do_sample: bool = True,
                     openings: Optional[Sequence[str]] = None) -> List[str]:
    """``n`` reviews for ``label`` in format ``fmt``; each stops at an end token
    (eos, <|im_end|>, <|endoftext|>) or after max_new_tokens.

    ``openings`` (n strings, e.g. from :func:`review_openings`): review i starts
    with openings[i], written after the prompt for the model to continue, and
    the returned text begins with it."""
    from ..core.generation import generate

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    prompt_text = fmt.prompt(label)
    if openings is None:
        prompts = [generator.tokenizer.encode(prompt_text, max_length=100_000)] * n
    else:
        openings = [str(o).strip() for o in openings]
        if len(openings) != n:
            raise ValueError(f"{len(openings)} openings for {n} reviews")
        prompts = [generator.tokenizer.encode(prompt_text + o, max_length=100_000) for o in openings]
    outputs = generate(generator.model, prompts, max_new_tokens, temperature=temperature, top_k=top_k,
                       top_p=top_p, eos_id=stop_ids(generator), pad_id=generator.pad_id, seed=seed,
                       do_sample=do_sample, min_new_tokens=min_new_tokens, batch_size=batch_size,
                       include_eos=False, repetition_penalty=repetition_penalty,
                       no_repeat_ngram_size=no_repeat_ngram_size)
    if openings is None:
        return [generator.tokenizer.decode(ids).strip() for ids in outputs]
    return [_continue_text(generator.tokenizer, prompt, ids, opening).strip()
            for prompt, ids, opening in zip(prompts, outputs, openings)]


def _continue_text(tokenizer, prompt: List[int], new: List[int], opening: str) -> str:
    """The opening and what the model wrote after it, spaced as the tokens say
    (" word" and "s" decode differently after the opening's last word)."""
    head = tokenizer.decode(prompt)
    whole = tokenizer.decode(list(prompt) + list(new))
    if whole.startswith(head):
        return opening + whole[len(head):]
    return f"{opening} {tokenizer.decode(new).strip()}"  # a byte split across the seam: plain join
