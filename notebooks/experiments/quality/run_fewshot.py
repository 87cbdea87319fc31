"""Issue #16 probe: does real text of the wanted rating in the prompt bring the untrained
instruct generator's reviews closer to real ones?

    [FEWSHOT_MODE=user|turns|opening|genre] [FEWSHOT_OPENING_WORDS=3] \
        PYTHONPATH=. python notebooks/experiments/quality/run_fewshot.py NAME SHOTS [SEED] [PER_LABEL]

SHOTS 0 is the demo's reviewer prompt (e08). With SHOTS k >= 1, per generated review, k real
reviews of the wanted rating are drawn from the generator part of the bundled sample
(20-120 words) and FEWSHOT_MODE says what is done with them: "user" puts them in the user
turn ("A real IMDB review by another user ... Write your own ..."); "turns" gives them as
the assistant's earlier answers to the same request; "opening" starts the answer with the
first FEWSHOT_OPENING_WORDS words of the first one (they stay in the measured text);
"genre" ignores them and names a random genre in the instruction. Sampling as the demo (T 0.7, top-p 0.95, repetition
penalty 1.15, no-repeat 4-grams, 120 new tokens). Measured as run_generator.py (judge
on IMDB train minus the sample, 400 IMDB test reviews, copy check against the
generator part, which holds every example). Writes notebooks/results/quality/<NAME>/.
"""
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_generator import RESULTS, judge_and_real, measure_and_save  # noqa: E402

from reviewgen.core.generation import generate  # noqa: E402
from reviewgen.tasks.generator import Generator  # noqa: E402
from reviewgen.text import data as D  # noqa: E402
from reviewgen.text.conditioning import REVIEWER_PROMPT, ChatFormat, stop_ids  # noqa: E402

SHOT_INSTRUCTION = ("{shots}\n\nWrite your own IMDB review of a different movie, one you found {word}. "
                    "You rate it {stars}/10. Only the review.")
MODE = os.environ.get("FEWSHOT_MODE", "user")  # "user": examples in the user turn; "turns": earlier answers
OPENING_WORDS = int(os.environ.get("FEWSHOT_OPENING_WORDS", "3"))
GENRES = ["horror", "comedy", "drama", "action", "romance", "thriller", "western", "war", "science fiction",
          "animated", "musical", "crime", "documentary", "family", "fantasy", "mystery", "TV", "independent"]
SHOT = "A real IMDB review by another user, who rated the movie {stars}/10:\n\"{text}\""


def main(name, shots, seed=0, per_label=40):
    out = os.path.join(RESULTS, name)
    os.makedirs(out, exist_ok=True)
    t0 = time.time()
    gen_part, _ = D.prepare_generator_and_classifier(D.load_sample("imdb"), "imdb10", seed=0, val_fraction=0.1)
    judge, real_texts, real_labels = judge_and_real()
    gen = Generator.from_pretrained("smollm2", max_length=160)
    fmt = ChatFormat(**REVIEWER_PROMPT)
    pool = gen_part.train.copy()
    words = pool["text"].str.split().str.len()
    pool = pool[(words >= 20) & (words <= 120)]
    rng = np.random.default_rng(seed)
    labels = sorted(gen_part.train["label"].unique())
    texts, wanted, used, openings = [], [], [], []
    t1 = time.time()
    for label in labels:
        prompts = []
        candidates = pool[pool["label"] == label]["text"].tolist()
        for _ in range(per_label):
            if shots:
                picks = [candidates[i] for i in rng.choice(len(candidates), shots, replace=False)]
                used.append(picks)
                stars = fmt.user_turn(label)  # validates the label
                star10 = {1: 1, 2: 3, 3: 5, 4: 8, 5: 10}[int(label)]
                if MODE == "opening":  # the answer starts with a real review's first words
                    opening = " ".join(picks[0].split()[:OPENING_WORDS])
                    prompts.append(fmt.prompt(label) + opening)
                    openings.append(opening)
                    continue
                if MODE == "genre":  # a genre drawn per review, in the instruction
                    g = GENRES[int(rng.integers(len(GENRES)))]
                    f = ChatFormat(system=fmt.system, words=fmt.words,
                                   instruction=fmt.instruction.replace("a movie", f"a {g} movie"))
                    prompts.append(f.prompt(label))
                    continue
                if MODE == "turns":  # the examples as earlier answers to the same request
                    head = fmt.prompt(label)
                    for t in picks:
                        head += f"{t}<|im_end|>\n<|im_start|>user\n{fmt.user_turn(label)}<|im_end|>\n<|im_start|>assistant\n"
                    prompts.append(head)
                    continue
                block = "\n\n".join(SHOT.format(stars=star10, text=t) for t in picks)
                f = ChatFormat(system=fmt.system, words=fmt.words,
                               instruction=SHOT_INSTRUCTION.replace("{shots}", block.replace("{", "{{").replace("}", "}}")))
                prompts.append(f.prompt(label))
            else:
                prompts.append(fmt.prompt(label))
        ids = [gen.tokenizer.encode(p, max_length=100_000) for p in prompts]
        outs = generate(gen.model, ids, 120, temperature=0.7, top_p=0.95, eos_id=stop_ids(gen), pad_id=gen.pad_id,
                        seed=seed * 1000003 + int(label) * 101, batch_size=20, include_eos=False,
                        repetition_penalty=1.15, no_repeat_ngram_size=4)
        got = [gen.tokenizer.decode(o).strip() for o in outs]
        if MODE == "opening" and shots:  # the opening is part of the review
            got = [(o + gen.tokenizer.decode(p + out)[len(gen.tokenizer.decode(p)):]).strip()
                   for o, p, out in zip(openings[-len(got):], ids, outs)]
        texts += got
        wanted += [int(label)] * len(got)
        print(f"label {label}: {len(got)} in {time.time() - t1:.0f} s", flush=True)
    minutes_gen = (time.time() - t1) / 60
    base = Generator.from_pretrained("smollm2", max_length=256)
    a = measure_and_save(out, texts, wanted, real_texts, real_labels, judge, gen_part.train["text"].tolist(), base)
    minutes = (time.time() - t0) / 60
    print(f"| {name} | shots {shots}, seed {seed}, {per_label}/label | {minutes_gen:.1f} gen ({minutes:.1f} all) | "
          f"{a.judge_exact:.2f} / {a.judge_near:.2f} (real {a.real_exact:.2f} / {a.real_near:.2f}) | "
          f"{a.mauve:.2f} (real {a.mauve_real:.2f}) | {a.repeated_4gram:.2f} | {a.copied_12gram:.2f} | "
          f"{a.distinct_2:.2f} | {a.self_bleu:.2f} | {a.words_mean:.0f} | {a.perplexity:.1f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *(int(x) for x in sys.argv[3:]))
