"""Which words for rating 4 (and 2) make the filter predict the wanted rating more often? (issue #16 probe, LOG.md)

    PYTHONPATH=. python notebooks/experiments/quality/probe_rating_words.py

Reads the demo rows' features that run_classifier_lm.py cached (runs/classifier_lm_cache/train_k15_L256.npy)."""
import os
import sys
import numpy as np, pandas as pd, time
from reviewgen.experiments.demo import LM_FEATURE_CS
from reviewgen.experiments.filtering import EmbeddingClassifier
from reviewgen.tasks.encoder import SentenceEncoder
from reviewgen.tasks.generator import load_generator_checkpoint, Generator
from reviewgen.text.conditioning import REVIEWER_PROMPT, ChatFormat, generate_reviews
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_classifier_lm import ROOT, rows  # noqa: E402

tr = rows()[0]
Xtr = np.load(os.path.join(ROOT, "runs", "classifier_lm_cache", "train_k15_L256.npy"))
ck = load_generator_checkpoint("smollm2")
enc = SentenceEncoder.from_decoder(ck, layers=15, max_length=256, batch_size=16)
table = dict(zip(tr.text, Xtr))
class Mixed:
    def encode(self, texts):
        new = [t for t in texts if t not in table]
        if new:
            for t, f in zip(new, enc.encode(new)): table[t] = f
        return np.stack([table[t] for t in texts])
clf = EmbeddingClassifier(Mixed(), Cs=LM_FEATURE_CS, standardize=True, tfidf_weight=0.5).fit(tr.text.tolist(), tr.label.tolist())
gen = Generator.from_checkpoint(ck, max_length=96)
variants = {
  "current": dict(REVIEWER_PROMPT),
  "B": {**REVIEWER_PROMPT, "words": {**REVIEWER_PROMPT["words"], 4: "good, though not a masterpiece", 2: "poor, with a few good moments"}},
  "C": {**REVIEWER_PROMPT, "words": {**REVIEWER_PROMPT["words"], 4: "pretty good", 2: "below average"}},
}
STARS = {"current": None}
for name, kw in variants.items():
    fmt = ChatFormat(**kw)
    for label in (4, 2):
        t = time.time()
        texts = generate_reviews(gen, fmt, label, 24, max_new_tokens=120, temperature=0.7, top_p=0.95, repetition_penalty=1.15, no_repeat_ngram_size=4, seed=label * 101 + 1, batch_size=24)
        p = clf.predict_proba(texts); pred = np.asarray(clf.labels)[p.argmax(1)]
        col = clf.labels.index(label)
        print(name, label, "pred counts", dict(zip(*np.unique(pred, return_counts=True))), "exact", (pred == label).mean().round(3), "p>=0.4", ((pred == label) & (p[:, col] >= 0.4)).sum(), f"{time.time()-t:.0f}s", flush=True)
        print("   e.g.:", texts[0][:200].replace("\n", " "), flush=True)
