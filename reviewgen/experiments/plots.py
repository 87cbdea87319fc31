"""Plots for notebooks and the demo (matplotlib, drawn on a given or new Axes).

Each function returns the Axes it drew on, so notebooks can compose figures
and scripts can save them with `ax.figure.savefig(path)`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def _axes(ax):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt  # without a display matplotlib falls back to Agg itself

    _, ax = plt.subplots(figsize=(6, 4))
    return ax


def label_counts(report, ax=None):
    """Bar chart of rows per label before and after balancing (a data.StageReport)."""
    ax = _axes(ax)
    labels = sorted(report.labels_before_balancing)
    x = np.arange(len(labels))
    before = [report.labels_before_balancing[k] for k in labels]
    after = [report.labels_after_balancing.get(k, 0) for k in labels]
    ax.bar(x - 0.2, before, width=0.4, label="after cleaning")
    ax.bar(x + 0.2, after, width=0.4, label="after balancing")
    ax.set_xticks(x, [str(k) for k in labels])
    ax.set_xlabel("label")
    ax.set_ylabel("rows")
    ax.set_title(f"rows per label ({report.source.rsplit('/', 1)[-1]})")
    ax.legend()
    return ax


def confusion_matrix(matrix, labels: Sequence, ax=None, title="confusion matrix", normalize=True):
    """Heat map of a confusion matrix (rows: true label, columns: predicted)."""
    ax = _axes(ax)
    matrix = np.asarray(matrix, dtype=np.float64)
    shown = matrix
    if normalize:
        totals = matrix.sum(axis=1, keepdims=True)
        shown = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0 if normalize else None)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            text = f"{shown[i, j]:.2f}" if normalize else f"{int(matrix[i, j])}"
            ax.text(j, i, text, ha="center", va="center",
                    color="white" if shown[i, j] > 0.6 * (shown.max() or 1) else "black", fontsize=8)
    ax.set_xticks(range(len(labels)), [str(k) for k in labels])
    ax.set_yticks(range(len(labels)), [str(k) for k in labels])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, fraction=0.046)
    return ax


def training_curves(history: Sequence[Mapping], ax=None, key="loss", eval_key="eval_loss"):
    """Training loss per optimizer step and evaluation loss per epoch from a Trainer history."""
    ax = _axes(ax)
    steps = [h["step"] for h in history if key in h]
    ax.plot(steps, [h[key] for h in history if key in h], label="train", alpha=0.7)
    evals = [h for h in history if eval_key in h]
    if evals:
        ax.plot([h["step"] for h in evals], [h[eval_key] for h in evals], "o-", label="evaluation")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy")
    ax.legend()
    return ax


def sweep(results: Mapping, ax=None, metric="eval_loss", parameter="value"):
    """Mean and spread over the disjoint samples of a hyperparameter sweep:
    `results` maps each value to a list of per-sample metrics."""
    ax = _axes(ax)
    values = sorted(results)
    means = np.array([np.mean(results[v]) for v in values])
    spread = np.array([np.std(results[v]) for v in values])
    ax.errorbar([str(v) for v in values], means, yerr=spread, fmt="o-", capsize=4)
    ax.set_xlabel(parameter)
    ax.set_ylabel(metric)
    return ax


def sweep_curves(frame, ax=None, metric="eval_loss", parameter="value"):
    """`metric` per epoch for each value of a sweep (SweepResults.frame): the
    mean over the samples, with the spread (std) as a band."""
    ax = _axes(ax)
    for value, rows in frame.groupby("value", sort=True):
        per_epoch = rows.groupby("epoch")[metric]
        mean, spread = per_epoch.mean(), per_epoch.std(ddof=0).fillna(0.0)
        line, = ax.plot(mean.index, mean.values, "o-", label=f"{parameter}={value}")
        ax.fill_between(mean.index, mean.values - spread.values, mean.values + spread.values,
                        color=line.get_color(), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.legend()
    return ax


def sweep_figures(results, metric="eval_loss", axes=None):
    """The seed's two sweep plots from SweepResults: `metric` per epoch for each
    value, and the best epoch's `metric` (mean and spread) against the value."""
    if axes is None:
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    else:
        figure = axes[0].figure
    sweep_curves(results.frame, axes[0], metric=metric, parameter=results.parameter)
    best = results.best
    sweep({v: rows[metric].tolist() for v, rows in best.groupby("value", sort=True)}, axes[1], metric=metric,
          parameter=results.parameter)
    return figure


def augmentation(summary, metric: str = "macro_f1", ax=None):
    """Test metric against real reviews per label, real only and real + synthetic,
    with the spread over seeds (the summary of reviewgen.experiments.augmentation)."""
    ax = _axes(ax)
    frame = summary.reset_index()
    for arm, rows in frame.groupby("arm"):
        rows = rows.sort_values("real_per_label")
        ax.errorbar(rows["real_per_label"], rows[metric], yerr=rows.get(metric + "_std"), marker="o",
                    capsize=3, label=arm)
    ax.set_xscale("log")
    ax.set_xlabel("real reviews per label")
    ax.set_ylabel(metric.replace("_", " ") + " on held-out real reviews")
    ax.legend()
    return ax
