"""curve.png and a markdown table of notebooks/results/quality/curve/curve.csv (run_curve.py's rows).

    PYTHONPATH=. python notebooks/experiments/quality/plot_curve.py
"""
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "results", "quality", "curve")


# The untrained chat model sometimes answers as an assistant ("I'm sorry, as an AI ...") instead of reviewing.
ASSISTANT = re.compile(r"\b(?:as an AI|an AI|language model|I'm sorry|I apologi[sz]e|I cannot|I can't provide)\b", re.I)


def assistant_voice(arm, point):
    path = os.path.join(OUT, f"generated_{arm}_p{point}.csv")
    if not os.path.exists(path):
        return float("nan")
    return int(pd.read_csv(path)["text"].fillna("").str.contains(ASSISTANT).sum())


def arms(frame):
    """Each trained arm's rows with the untrained point 0 in front."""
    zero = frame[frame.arm == "untrained"]
    for arm in [a for a in frame.arm.unique() if a != "untrained"]:
        yield arm, pd.concat([zero, frame[frame.arm == arm]]).sort_values("cpu_minutes")


def main():
    frame = pd.read_csv(os.path.join(OUT, "curve.csv"))
    frame["assistant_voice"] = [assistant_voice(a, p) for a, p in zip(frame.arm, frame.point)]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for arm, rows in arms(frame):
        x = rows.cpu_minutes
        axes[0].plot(x, rows.judge_exact, "o-", label=f"{arm} exact")
        axes[0].plot(x, rows.judge_near, "s--", label=f"{arm} near")
        axes[1].plot(x, rows.mauve, "o-", label=arm)
        axes[2].plot(x, rows.eval_loss, "o-", label=f"{arm} right rating")
        axes[2].plot(x, rows.wrong_rating_loss, "x:", label=f"{arm} opposite rating")
    real = frame.iloc[0]
    axes[0].axhline(real.judge_real_exact, color="grey", lw=0.8, label="judge on real: exact")
    axes[0].axhline(real.judge_real_near, color="grey", lw=0.8, ls="--", label="judge on real: near")
    axes[1].axhline(real.mauve_real, color="grey", lw=0.8, label="real vs real")
    axes[0].set(title="judge agreement with the asked rating", xlabel="fine-tuning CPU minutes (1 thread)")
    axes[1].set(title="MAUVE vs 400 IMDB test reviews", xlabel="fine-tuning CPU minutes (1 thread)")
    axes[2].set(title="held-out review loss (48 pool reviews)", xlabel="fine-tuning CPU minutes (1 thread)")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "curve.png"), dpi=110)
    cols = ["arm", "point", "cpu_minutes", "wall_minutes", "train_reviews_seen", "eval_loss", "perplexity",
            "loss_gap", "judge_exact", "judge_near", "judge_real_exact", "mauve", "mauve_real", "repeated_4gram",
            "copied_12gram", "distinct_2", "words_mean", "assistant_voice"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in frame[cols].iterrows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
