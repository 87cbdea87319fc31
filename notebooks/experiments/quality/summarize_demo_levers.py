"""Markdown table of notebooks/results/quality/demo_levers/results.csv (run_demo_levers.py), with
mauve_resampled.csv (mauve_resample_demo_levers.py) and the assistant-voice count of plot_curve.py.

    python notebooks/experiments/quality/summarize_demo_levers.py
"""
import os
import re

import pandas as pd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OUT = os.path.join(ROOT, "notebooks", "results", "quality", "demo_levers")
ASSISTANT = re.compile(r"\b(?:as an AI|an AI|language model|I'm sorry|I apologi[sz]e|I cannot|I can't provide)\b", re.I)


def assistant(run):
    texts = pd.concat([pd.read_csv(os.path.join(OUT, run, f"{n}.csv"))["text"] for n in ("accepted", "rejected")])
    return int(texts.fillna("").str.contains(ASSISTANT).sum())


def main():
    d = pd.read_csv(os.path.join(OUT, "results.csv"))
    path = os.path.join(OUT, "mauve_resampled.csv")
    resampled = pd.read_csv(path).set_index("run") if os.path.exists(path) else pd.DataFrame()
    print("| variant | seed | train s wall / CPU | gen+filter s wall / CPU | generated (fallbacks) | accepted: judge "
          "exact / near | MAUVE (real-real) | MAUVE over 20 reference draws: mean ± sd [min, max] | all generated: "
          "judge exact / near, MAUVE | external judge exact / near (real) | external MAUVE (real) | rep. 4-gram | "
          "copied 12-gram | distinct-2 | words | assistant voice (all generated) |")
    print("|" + "---|" * 16)
    for _, r in d.iterrows():
        run = f"{r.variant}_s{r.seed}"
        if run in resampled.index:
            m = resampled.loc[run]
            res = f"{m.mauve_mean:.2f} ± {m.mauve_sd:.2f} [{m.mauve_min:.2f}, {m.mauve_max:.2f}]"
        else:
            res = "-"
        print(f"| {r.variant} | {r.seed} | {r.train_wall_s:.0f} / {r.train_cpu_s:.0f} | {r.gen_wall_s:.0f} / "
              f"{r.gen_cpu_s:.0f} | {r.generated_all} ({r.fallback_all}) | "
              f"{r.accepted_judge_exact:.3f} / {r.accepted_judge_near:.3f} | {r.accepted_mauve:.3f} "
              f"({r.accepted_mauve_real:.3f}) | {res} | {r.generated_judge_exact:.2f} / {r.generated_judge_near:.2f}, "
              f"{r.generated_mauve:.2f} | {r.ext_judge_exact:.3f} / {r.ext_judge_near:.3f} ({r.ext_real_exact:.2f} / "
              f"{r.ext_real_near:.2f}) | {r.ext_mauve:.3f} ({r.ext_mauve_real:.2f}) | {r.accepted_repeated_4gram:.3f} | "
              f"{r.accepted_copied_12gram:.3f} | {r.accepted_distinct_2:.2f} | {r.accepted_words_mean:.0f} | "
              f"{assistant(run)} / {r.generated_all} |")


if __name__ == "__main__":
    main()
