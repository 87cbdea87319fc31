"""Measure a CSV of generated reviews (columns label, text) with the external judge
(IMDB train minus the bundled sample) against 400 IMDB test reviews, as run_generator.py.

    PYTHONPATH=. python notebooks/experiments/quality/eval_csv.py reviewgen-demo/accepted.csv NAME "note" [minutes]
"""
import os
import sys

import pandas as pd

from reviewgen.text import data as D
from reviewgen.tasks.encoder import SentenceEncoder
from reviewgen.experiments.evaluation import evaluate_generated
from reviewgen.tasks.generator import Generator

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_generator import RESULTS, judge_and_real  # noqa: E402


def main(path, name, note, minutes=""):
    rows = pd.read_csv(path)
    gen_part, clf_part = D.prepare_generator_and_classifier(D.load_sample("imdb"), "imdb10", seed=0, val_fraction=0.1)
    judge, real_texts, real_labels = judge_and_real()
    report = evaluate_generated(rows["text"].astype(str).tolist(), rows["label"].tolist(), real_texts, real_labels,
                                judge=judge, encoder=SentenceEncoder.from_pretrained("minilm", max_length=128),
                                train_texts=gen_part.train["text"].tolist() + clf_part.train["text"].tolist(),
                                base_generator=Generator.from_pretrained("smollm2", max_length=256))
    out = os.path.join(RESULTS, name)
    os.makedirs(out, exist_ok=True)
    report.table.to_csv(os.path.join(out, "quality.csv"))
    print(report)
    a = report.table.loc["all"]
    line = (f"| {name} | {note} | {minutes} | {a.judge_exact:.2f} / {a.judge_near:.2f} (real {a.real_exact:.2f} / "
            f"{a.real_near:.2f}) | {a.mauve:.2f} (real {a.mauve_real:.2f}) | {a.repeated_4gram:.2f} (real "
            f"{a.real_repeated_4gram:.2f}) | {a.copied_12gram:.2f} | {a.distinct_2:.2f} | {a.self_bleu:.2f} | "
            f"{a.words_mean:.0f} | {a.perplexity:.1f} |")
    print(line)  # for LOG.md, where it belongs


if __name__ == "__main__":
    main(*sys.argv[1:])
