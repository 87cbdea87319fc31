"""Text generation over any model with a key/value cache.

:func:`generate` continues a list of prompts. For a core model
(:class:`reviewgen.core.models.Model` or a ``reviewgen._core.Model``) the
whole loop is ONE call into the C core, :func:`reviewgen._core.generate`
(csrc/rg_generate.h): the prompts are left-padded per batch, prefilled into
the key/value cache, then each new token goes through the logits processors
(repetition penalty, no-repeat n-gram, the end-of-text ban of
``min_new_tokens``), the core sampler (temperature, top-k, top-p, greedy) and
one cached decode step, until every row has produced an end-of-text token or
``max_new_tokens``. Python sees only the token ids at the end (and the
``progress`` callback once per batch).

Any other object that follows the small :class:`Decoder` protocol is driven
by the same loop written in Python (one core sampling call per token):

* ``reset_cache(batch_size, max_length)``: an empty cache for B rows;
* ``forward_logits(tokens (B, T) int32, attention_mask (B, T) int32)``:
  append LEFT-padded prompts to the cache, return the logits of the last
  column (B, V);
* ``decode_step(tokens (B,) int32)``: append one token per row, return the
  next logits (B, V).

Randomness: row r of the prompt list at generated position s draws from the
stream (seed, s, r), so results repeat exactly for a seed, do not depend on
how the prompts are split into batches, and both paths give the same ids.
"""

from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Protocol, Sequence, Union, runtime_checkable

import numpy as np

from ._native import _core

__all__ = ["Decoder", "generate"]


@runtime_checkable
class Decoder(Protocol):
    def reset_cache(self, batch_size: int, max_length: int) -> None: ...

    def forward_logits(self, tokens: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...

    def decode_step(self, tokens: np.ndarray) -> np.ndarray: ...


def _check_logits(logits, rows: int, where: str) -> np.ndarray:
    logits = np.asarray(logits)
    if logits.ndim != 2 or logits.shape[0] != rows:
        raise ValueError(f"{where} returned logits of shape {logits.shape}, expected ({rows}, V)")
    return logits


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int):
    """tokens (B, T) and attention_mask (B, T), real tokens on the right."""
    width = max(len(p) for p in prompts)
    tokens = np.full((len(prompts), width), pad_id, np.int32)
    mask = np.zeros((len(prompts), width), np.int32)
    for row, prompt in enumerate(prompts):
        if len(prompt):
            tokens[row, width - len(prompt):] = prompt
            mask[row, width - len(prompt):] = 1
    return tokens, mask


def _repetition_penalty(logits: np.ndarray, history: List[int], penalty: float) -> None:
    """HF RepetitionPenaltyLogitsProcessor on one row, in place: every distinct
    token of the row gets logit / penalty when > 0, logit * penalty otherwise."""
    seen = np.unique(np.asarray(history, np.int64))
    values = logits[seen]
    p = np.float32(penalty)  # float arithmetic, as the core does
    logits[seen] = np.where(values > 0, values / p, values * p)


def _no_repeat_ngram(logits: np.ndarray, history: List[int], n: int) -> None:
    """HF NoRepeatNGramLogitsProcessor on one row, in place: a token that would
    complete an n-gram already in the row gets -inf."""
    if len(history) < n - 1 or n < 1:
        return
    prefix = tuple(history[len(history) - n + 1:]) if n > 1 else ()
    banned = {history[i + n - 1] for i in range(len(history) - n + 1)
              if tuple(history[i:i + n - 1]) == prefix}
    if banned:
        logits[sorted(banned)] = -np.inf


def _generate_batch(model: Decoder, prompts: List[List[int]], row_offset: int, max_new_tokens: int,
                    temperature: float, top_k: int, top_p: float, do_sample: bool,
                    stop_ids: np.ndarray, pad_id: int, seed: int, min_new_tokens: int,
                    include_eos: bool, repetition_penalty: float,
                    no_repeat_ngram_size: int) -> List[List[int]]:
    """The decode loop in Python, for Decoder objects that are not core models."""
    rows = len(prompts)
    tokens, mask = _left_pad(prompts, pad_id)
    model.reset_cache(rows, tokens.shape[1] + max_new_tokens)
    logits = _check_logits(model.forward_logits(tokens, mask), rows, "forward_logits")
    outputs: List[List[int]] = [[] for _ in range(rows)]
    histories = [list(p) for p in prompts]  # the row's real tokens: prompt, then generated
    finished = np.zeros(rows, bool)
    processing = repetition_penalty != 1.0 or no_repeat_ngram_size > 0
    for step in range(max_new_tokens):
        if processing or (step < min_new_tokens and stop_ids.size):
            logits = np.array(logits, np.float32, copy=True)
            for row in np.flatnonzero(~finished) if processing else ():
                if repetition_penalty != 1.0:
                    _repetition_penalty(logits[row], histories[row], repetition_penalty)
                if no_repeat_ngram_size > 0:
                    _no_repeat_ngram(logits[row], histories[row], no_repeat_ngram_size)
            if step < min_new_tokens and stop_ids.size:
                logits[:, stop_ids] = -np.inf
        next_ids = _core.sample(np.ascontiguousarray(logits, np.float32), temperature=temperature,
                                top_k=top_k, top_p=top_p, seed=seed, step=step,
                                do_sample=do_sample, row_offset=row_offset)
        for row in np.flatnonzero(~finished):
            token = int(next_ids[row])
            is_stop = bool(stop_ids.size) and token in stop_ids
            if not is_stop or include_eos:
                outputs[row].append(token)
            histories[row].append(token)
            finished[row] = is_stop
        if finished.all() or step == max_new_tokens - 1:
            break
        # finished rows keep a place in the batch; what they are fed is never read
        logits = _check_logits(model.decode_step(np.where(finished, pad_id, next_ids).astype(np.int32)),
                               rows, "decode_step")
    return outputs


def _core_model(model):
    """The reviewgen._core.Model behind `model`, or None (a plain Decoder)."""
    if isinstance(model, _core.Model):
        return model
    core = getattr(model, "core", None)
    return core if isinstance(core, _core.Model) else None


def generate(model: Decoder, prompt_ids: Iterable[Sequence[int]], max_new_tokens: int,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             eos_id: Union[int, Iterable[int], None] = None, pad_id: Optional[int] = None,
             seed: int = 0, do_sample: bool = True, min_new_tokens: int = 0,
             batch_size: Optional[int] = None, include_eos: bool = True,
             progress: Optional[Callable[[int], None]] = None, *,
             repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0) -> List[List[int]]:
    """Continue each prompt (a list of token ids); returns the new ids per prompt.

    temperature / top_k / top_p follow Hugging Face generate() (0 and 1.0
    disable top_k and top_p); greedy when do_sample is False or temperature
    is 0. repetition_penalty (> 0, 1.0 disables) and no_repeat_ngram_size
    (0 disables) are those of transformers' logits processors, applied to the
    row's real tokens (prompt and generated). A row stops after its first
    token in eos_id (an id or a set of ids; kept in the output when
    include_eos) or after max_new_tokens; min_new_tokens forbids the end
    tokens before that many new tokens. pad_id fills the left padding
    (default: the first eos id, else 0). batch_size splits the prompts into
    batches of at most that many rows; progress(rows_done) is called after
    each batch.
    """
    prompts = [[int(t) for t in p] for p in prompt_ids]
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")
    if isinstance(min_new_tokens, bool) or not isinstance(min_new_tokens, (int, np.integer)) or min_new_tokens < 0:
        raise ValueError(f"min_new_tokens must be an integer >= 0, got {min_new_tokens!r}")
    if min_new_tokens > max_new_tokens:
        raise ValueError(f"min_new_tokens ({min_new_tokens}) exceeds max_new_tokens ({max_new_tokens})")
    if isinstance(no_repeat_ngram_size, bool) or not isinstance(no_repeat_ngram_size, (int, np.integer)) or no_repeat_ngram_size < 0:
        raise ValueError(f"no_repeat_ngram_size must be an integer >= 0, got {no_repeat_ngram_size!r}")
    if isinstance(repetition_penalty, bool) or not isinstance(repetition_penalty, (int, float, np.number)):
        raise ValueError(f"repetition_penalty must be a number > 0 (1.0 disables it), got {repetition_penalty!r}")
    repetition_penalty = float(repetition_penalty)
    if not (repetition_penalty > 0.0 and np.isfinite(repetition_penalty)):
        raise ValueError(f"repetition_penalty must be finite and > 0 (1.0 disables it), got {repetition_penalty!r}")
    for index, prompt in enumerate(prompts):
        if not prompt:
            raise ValueError(f"prompt {index} is empty: every prompt needs at least one token")
        if min(prompt) < 0:
            raise ValueError(f"prompt {index} holds a negative token id")
    if eos_id is None:
        stop_ids = np.zeros(0, np.int64)
    elif isinstance(eos_id, (int, np.integer)):
        stop_ids = np.array([int(eos_id)], np.int64)
    else:
        stop_ids = np.array(sorted({int(t) for t in eos_id}), np.int64)
    if pad_id is None:
        pad_id = int(stop_ids[0]) if stop_ids.size else 0
    if batch_size is None:
        batch_size = max(len(prompts), 1)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    # The sampler checks temperature, top_k and top_p; fail before any model work.
    _core.sample(np.zeros((1, 1), np.float32), temperature=temperature, top_k=top_k, top_p=top_p)

    if max_new_tokens == 0:
        return [[] for _ in prompts]
    core = _core_model(model)
    if core is not None:
        lengths = np.fromiter((len(p) for p in prompts), np.int64, len(prompts))
        offsets = np.zeros(len(prompts) + 1, np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter((t for p in prompts for t in p), np.int64, int(offsets[-1]))
        if flat.size and flat.max() > np.iinfo(np.int32).max:
            raise ValueError("a prompt holds a token id beyond int32")
        out, counts, _ = _core.generate(
            core, flat.astype(np.int32), offsets, int(max_new_tokens), min_new_tokens=int(min_new_tokens),
            temperature=float(temperature), top_k=int(top_k), top_p=float(top_p), seed=int(seed) % (1 << 64),
            do_sample=bool(do_sample), repetition_penalty=repetition_penalty,
            no_repeat_ngram_size=int(no_repeat_ngram_size),
            eos_ids=stop_ids.astype(np.int32) if stop_ids.size else None, pad_id=int(pad_id),
            include_eos=bool(include_eos), batch_size=int(batch_size), progress=progress)
        return [row[:n].tolist() for row, n in zip(out, counts)]

    outputs: List[List[int]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        outputs.extend(_generate_batch(model, chunk, start, max_new_tokens, temperature, top_k, top_p,
                                       do_sample, stop_ids, pad_id, seed, min_new_tokens, include_eos,
                                       repetition_penalty, int(no_repeat_ngram_size)))
        if progress is not None:
            progress(len(outputs))
    return outputs
