"""`reviewgen report RUN_DIR`: one self-contained HTML page, and a Markdown twin, of a run folder.

RUN_DIR is one step's output folder or a folder holding several of them
(reviewgen.experiments.runs.find_runs). For each step found, the page shows:

* data (``prepare``): rows read, dropped per reason, rows per label before and
  after balancing, the train / validation sizes;
* classifier (``train-classifier``, ``evaluate-classifier``): the seed's table of
  accuracy, precision, recall and F1, exact and near, beside TF-IDF + LR on the same
  rows when it ran; the per-label figures; both confusion matrices; training curves;
* generator (``train-generator``): review perplexity before and after, training curves;
* sweep: eval loss per epoch for each value (mean and spread over the samples) and
  the best epoch's eval loss against the value, with its table;
* generation (``generate``, ``evaluate-generated``, ``demo``): the filter's counts
  per label and reason, the quality table, and a sample of accepted and rejected
  reviews per rating.

A step whose manifest says it did not finish gets a banner and nothing else: an
interrupted run is never shown as a result. A file that is missing or unreadable
is a note in its section, not a failure of the report. Plots are inline PNG in
the HTML (no external resource, every text escaped); the Markdown links them as
files in ``report_files/`` beside it.
"""
from __future__ import annotations

import argparse
import base64
import html
import io
import json
import numbers
import os
from typing import Callable, List, Optional, Tuple

from ..core.files import atomic_write
from . import runs

__all__ = ["write_report", "add_report_command", "SAMPLE_PER_LABEL"]

SAMPLE_PER_LABEL = 3       # accepted and rejected reviews shown per rating
TEXT_CHARACTERS = 600      # a sampled review is cut there
ORDER = ("prepare", "train-classifier", "evaluate-classifier", "train-generator", "sweep", "generate",
         "evaluate-generated", "demo")
TITLES = {"prepare": "Data", "train-classifier": "Classifier (training)",
          "evaluate-classifier": "Classifier (evaluation)", "train-generator": "Generator (training)",
          "sweep": "Hyperparameter sweep", "generate": "Generated reviews",
          "evaluate-generated": "Generation quality", "demo": "Demo"}

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222;line-height:1.4}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .6em}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.banner{background:#fde2e1;border:2px solid #c0392b;padding:.8em;margin:1em 0;font-weight:600}
.note{color:#8a6d00;background:#fff8dc;padding:.4em .6em}img{max-width:100%}
blockquote{margin:.4em 0;padding:.4em .8em;background:#f7f7f7;border-left:4px solid #aaa}
"""


# ---------------------------------------------------------------------------- document


class _Document:
    """Blocks in order; rendered once as HTML and once as Markdown."""

    def __init__(self):
        self.blocks: List[tuple] = []
        self.figures = 0

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def note(self, text: str) -> None:
        self.blocks.append(("note", text))

    def banner(self, text: str) -> None:
        self.blocks.append(("banner", text))

    def table(self, frame, index: bool = True) -> None:
        self.blocks.append(("table", frame, index))

    def quote(self, caption: str, text: str) -> None:
        self.blocks.append(("quote", caption, text))

    def figure(self, draw: Callable, caption: str, size=(6, 4), panels: int = 1) -> None:
        """draw(axes) on a new figure (one Axes, or a list when panels > 1), kept as PNG bytes."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, panels, figsize=(size[0] * panels, size[1]))
        try:
            draw(axes)
            figure.tight_layout()
            buffer = io.BytesIO()
            figure.savefig(buffer, format="png", dpi=90)
        finally:
            plt.close(figure)
        self.figures += 1
        self.blocks.append(("figure", f"figure_{self.figures}.png", buffer.getvalue(), caption))


def _cell(value) -> str:
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return "" if value != value else f"{float(value):.3f}"
    return str(value)


def _rows(frame):
    """(index key, cell values) per row, each column keeping its own type (iterrows would upcast ints)."""
    for key, *values in frame.itertuples(name=None):
        yield key, values


def _html(doc: _Document, title: str) -> str:
    out = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for block in doc.blocks:
        kind = block[0]
        if kind == "heading":
            out.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif kind == "paragraph":
            out.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "note":
            out.append(f"<p class=\"note\">{html.escape(block[1])}</p>")
        elif kind == "banner":
            out.append(f"<div class=\"banner\">{html.escape(block[1])}</div>")
        elif kind == "table":
            frame, index = block[1], block[2]
            names = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
            rows = ["<tr>" + "".join(f"<th>{html.escape(n)}</th>" for n in names) + "</tr>"]
            for key, values in _rows(frame):
                cells = ([f"<th>{html.escape(str(key))}</th>"] if index else []) + [
                    f"<td class=\"num\">{html.escape(_cell(v))}</td>" if isinstance(v, numbers.Number)
                    else f"<td>{html.escape(_cell(v))}</td>" for v in values]
                rows.append("<tr>" + "".join(cells) + "</tr>")
            out.append("<table>" + "".join(rows) + "</table>")
        elif kind == "quote":
            out.append(f"<blockquote><b>{html.escape(block[1])}</b><br>{html.escape(block[2])}</blockquote>")
        elif kind == "figure":
            data = base64.b64encode(block[2]).decode("ascii")
            out.append(f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{html.escape(block[3])}\">"
                       f"<figcaption>{html.escape(block[3])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out)


def _md_text(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown(doc: _Document, title: str, files_dir: Optional[str]) -> Tuple[str, list]:
    """The Markdown and the (name, png bytes) figures it links (in files_dir)."""
    out, figures = [f"# {title}", ""], []
    for block in doc.blocks:
        kind = block[0]
        if kind == "heading":
            out += ["#" * block[1] + " " + block[2], ""]
        elif kind in ("paragraph", "note"):
            out += [("> **note:** " if kind == "note" else "") + block[1], ""]
        elif kind == "banner":
            out += [f"> **{block[1]}**", ""]
        elif kind == "table":
            frame, index = block[1], block[2]
            names = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
            out.append("| " + " | ".join(_md_text(n) for n in names) + " |")
            out.append("|" + "---|" * len(names))
            for key, values in _rows(frame):
                cells = ([str(key)] if index else []) + [_cell(v) for v in values]
                out.append("| " + " | ".join(_md_text(c) for c in cells) + " |")
            out.append("")
        elif kind == "quote":
            out += [f"> **{_md_text(block[1])}** {_md_text(block[2])}", ""]
        elif kind == "figure" and files_dir is not None:
            figures.append((block[1], block[2]))
            out += [f"![{block[3]}]({os.path.basename(files_dir)}/{block[1]})", ""]
    return "\n".join(out), figures


# ---------------------------------------------------------------------------- reading


def _read_json(folder: str, name: str, doc: _Document):
    path = os.path.join(folder, name)
    if not os.path.exists(path):
        doc.note(f"{name} is missing")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, ValueError) as error:
        doc.note(f"{name} unreadable: {error}")
        return None
    if not isinstance(value, dict):
        doc.note(f"{name} unreadable: not a JSON object")
        return None
    return value


def _read_csv(folder: str, name: str, doc: _Document, index_col=None, required: bool = True):
    import pandas as pd

    path = os.path.join(folder, name)
    if not os.path.exists(path):
        if required:
            doc.note(f"{name} is missing")
        return None
    try:
        return pd.read_csv(path, index_col=index_col, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as error:
        doc.note(f"{name} unreadable: {error}")
        return None


# ---------------------------------------------------------------------------- sections


def _data_section(folder: str, doc: _Document, report: Optional[dict] = None) -> None:
    import pandas as pd

    report = report if report is not None else _read_json(folder, "report.json", doc)
    if report is None:
        return
    try:
        before = {int(k): int(v) for k, v in report["labels_before_balancing"].items()}
        after = {int(k): int(v) for k, v in report["labels_after_balancing"].items()}
        doc.paragraph(f"{report.get('source', '?')}: scale {report.get('scale', '?')}, {report['rows_read']:,} rows "
                      f"read, {report['rows_kept']:,} kept; {report.get('rows_train', 0):,} train and "
                      f"{report.get('rows_val', 0):,} validation rows after balancing.")
        dropped = {k: v for k, v in report.get("dropped", {}).items() if v}
        if dropped:
            doc.table(pd.DataFrame({"rows": dropped}).rename_axis("dropped because"))
        labels = sorted(before)
        doc.table(pd.DataFrame({"after cleaning": [before[k] for k in labels],
                                "after balancing": [after.get(k, 0) for k in labels]},
                               index=pd.Index(labels, name="label")))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        doc.note(f"report.json unreadable: {error!r}")
        return

    def draw(ax):
        x = range(len(labels))
        ax.bar([i - 0.2 for i in x], [before[k] for k in labels], width=0.4, label="after cleaning")
        ax.bar([i + 0.2 for i in x], [after.get(k, 0) for k in labels], width=0.4, label="after balancing")
        ax.set_xticks(list(x), [str(k) for k in labels])
        ax.set_xlabel("label")
        ax.set_ylabel("rows")
        ax.legend()

    doc.figure(draw, "rows per label")


def _seed_table(metrics: dict):
    """The seed's table: accuracy, recall, precision and F1 (macro), exact and near."""
    import pandas as pd

    rows = {}
    for kind in ("exact", "near"):
        figures = metrics.get(kind) or {}
        rows[kind] = {"accuracy": figures.get("accuracy", metrics.get("accuracy" if kind == "exact" else
                                                                      "near_accuracy")),
                      "recall": figures.get("macro_recall"), "precision": figures.get("macro_precision"),
                      "F1": figures.get("macro_f1", metrics.get("macro_f1" if kind == "exact" else "near_macro_f1"))}
    baseline = metrics.get("tfidf_baseline")
    if isinstance(baseline, dict):
        rows["TF-IDF + LR, exact"] = {"accuracy": baseline.get("accuracy"), "F1": baseline.get("macro_f1")}
        rows["TF-IDF + LR, near"] = {"accuracy": baseline.get("near_accuracy"), "F1": baseline.get("near_macro_f1")}
    return pd.DataFrame.from_dict(rows, orient="index")[["accuracy", "recall", "precision", "F1"]].rename_axis(
        "classifier")


def _classifier_metrics(metrics: dict, doc: _Document, per_class=None) -> None:
    import pandas as pd

    try:
        rows = metrics.get("rows", metrics.get("n_samples"))
        if isinstance(rows, dict):
            rows = ", ".join(f"{k} {v:,}" for k, v in rows.items())
        doc.paragraph(f"Scored on {rows} rows (macro averages; \"near\" counts a prediction one label "
                      f"away as right).")
        doc.table(_seed_table(metrics))
        if per_class is not None and len(per_class):
            doc.table(per_class.set_index(["label", "kind"]).unstack("kind").swaplevel(axis=1).sort_index(axis=1)
                      .pipe(lambda f: f.set_axis([f"{kind} {name}" for kind, name in f.columns], axis=1)))
        labels = list(metrics["labels"])
        exact = metrics["confusion_matrix"]
        near = metrics.get("near_confusion_matrix")
        doc.table(pd.DataFrame(exact, index=pd.Index(labels, name="true \\ predicted"), columns=labels))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        doc.note(f"metrics.json unreadable: {error!r}")
        return
    from . import plots

    def draw(axes):
        plots.confusion_matrix(exact, labels, ax=axes[0], title="exact (row share)")
        if near is not None:
            plots.confusion_matrix(near, labels, ax=axes[1], title="near (row share)")

    doc.figure(draw, "confusion matrices, rows true, columns predicted", size=(5, 4), panels=2)


def _history(folder: str, doc: _Document) -> None:
    history = _read_csv(folder, runs.HISTORY, doc, required=False)
    if history is None or not len(history) or "epoch" not in history:
        return
    losses = [c for c in history.columns if "loss" in c]
    others = [c for c in history.columns if c.startswith("eval_") and c not in losses
              and "perplexity" not in c and history[c].notna().any()]
    doc.table(history.set_index("epoch"))

    def draw(axes):
        axes = axes if isinstance(axes, (list, tuple)) or hasattr(axes, "__len__") else [axes]
        for column in losses:
            axes[0].plot(history["epoch"], history[column], "o-", label=column)
        axes[0].set_xlabel("epoch")
        axes[0].set_ylabel("cross-entropy")
        axes[0].legend()
        if others:
            for column in others:
                axes[1].plot(history["epoch"], history[column], "o-", label=column)
            axes[1].set_xlabel("epoch")
            axes[1].legend()

    if losses:
        doc.figure(draw, "training curves", size=(5.5, 3.8), panels=2 if others else 1)


def _classifier_section(folder: str, doc: _Document) -> None:
    metrics = _read_json(folder, runs.METRICS, doc)
    if metrics is not None:
        _classifier_metrics(metrics, doc, _read_csv(folder, runs.PER_CLASS, doc, required=False))
    _history(folder, doc)


def _generator_section(folder: str, doc: _Document) -> None:
    import pandas as pd

    metrics = _read_json(folder, runs.METRICS, doc)
    if metrics is not None:
        rows = {k: metrics[k] for k in ("before", "after") if isinstance(metrics.get(k), dict)}
        doc.paragraph(f"Conditioning format {metrics.get('format', '?')}; {metrics.get('train_rows', '?')} training "
                      f"and {metrics.get('eval_rows', '?')} validation reviews.")
        if rows:
            doc.table(pd.DataFrame.from_dict(rows, orient="index").rename_axis("fine-tuning"))
    _history(folder, doc)


def _sweep_section(folder: str, doc: _Document) -> None:
    frame = _read_csv(folder, "sweep_runs.csv", doc)
    study = _read_json(folder, "study.json", doc) or {}
    parameter = study.get("parameter", "value")
    if frame is None or not len(frame) or not {"value", "sample", "epoch", "eval_loss"} <= set(frame.columns):
        if frame is not None:
            doc.note("sweep_runs.csv has no eval_loss per (value, sample, epoch)")
        return
    best = frame.groupby(["value", "sample"])["eval_loss"].min().groupby("value")
    table = best.agg(["mean", "std", "count"]).rename(columns={"mean": "best eval loss (mean)",
                                                               "std": "spread (std)", "count": "samples"})
    table.index.name = parameter
    doc.paragraph(f"{parameter} took {len(table)} values, each trained on the same {int(table['samples'].max())} "
                  f"disjoint samples; the best epoch's eval loss, averaged over the samples:")
    doc.table(table)
    from . import plots

    def draw(axes):
        plots.sweep_curves(frame, axes[0], metric="eval_loss", parameter=parameter)
        plots.sweep({v: list(rows) for v, rows in frame.groupby(["value", "sample"])["eval_loss"].min()
                     .groupby("value")}, axes[1], metric="best eval_loss", parameter=parameter)

    doc.figure(draw, f"eval loss per epoch for each {parameter}, and the best epoch against it", panels=2)


def _reviews_section(folder: str, doc: _Document) -> None:
    counts = _read_csv(folder, "filter_counts.csv", doc, index_col=0, required=False)
    if counts is not None:
        doc.paragraph("The filter, per wanted label: generated, kept, and dropped for each reason.")
        doc.table(counts)
    for name in ("accepted", "rejected"):
        frame = _read_csv(folder, f"{name}.csv", doc, required=name == "accepted")
        if frame is None or not {"label", "text"} <= set(frame.columns):
            continue
        doc.heading(f"{name.capitalize()} reviews, a sample per rating", 3)
        if not len(frame):
            doc.paragraph(f"No {name} review.")
        for label, rows in frame.groupby("label", sort=True):
            for _, row in rows.head(SAMPLE_PER_LABEL).iterrows():
                text = str(row["text"])
                text = text if len(text) <= TEXT_CHARACTERS else text[:TEXT_CHARACTERS] + " ..."
                extra = [f"predicted {row['predicted']}" if "predicted" in row else "",
                         f"p {float(row['wanted_probability']):.2f}" if "wanted_probability" in row
                         and row["wanted_probability"] == row["wanted_probability"] else "",
                         f"reason {row['reason']}" if isinstance(row.get("reason"), str) and row["reason"] else ""]
                doc.quote(f"rating {label} ({', '.join(e for e in extra if e)})", text)


def _quality_table(folder: str, name: str, doc: _Document, caption: str) -> None:
    table = _read_csv(folder, name, doc, index_col=0, required=False)
    if table is not None:
        doc.paragraph(caption)
        doc.table(table)


def _demo_section(folder: str, doc: _Document) -> None:
    summary = _read_json(folder, "summary.json", doc)
    if summary is None:
        return
    data = summary.get("data") or {}
    for part in ("classifier", "generator"):
        if isinstance(data.get(part), dict):
            doc.heading(f"Data: the {part} part", 3)
            _data_section(folder, doc, data[part])
    classifier = summary.get("classifier") or {}
    if isinstance(classifier.get("validation"), dict):
        doc.heading(f"Classifier ({classifier.get('recipe', '?')} recipe) on the validation reviews", 3)
        metrics = dict(classifier["validation"], tfidf_baseline=classifier.get("tfidf_baseline"))
        _classifier_metrics(metrics, doc)
    generator = summary.get("generator") or {}
    if isinstance(generator.get("before"), dict):
        import pandas as pd

        doc.heading("Generator", 3)
        doc.table(pd.DataFrame.from_dict({k: generator[k] for k in ("before", "after") if k in generator},
                                         orient="index").rename_axis("fine-tuning"))
    doc.heading("Quality of the generated reviews", 3)
    _quality_table(folder, "quality_accepted.csv", doc, "Accepted reviews (an independent judge, MAUVE, diversity):")
    _quality_table(folder, "quality_generated.csv", doc, "All generated reviews:")
    _reviews_section(folder, doc)


SECTIONS = {"prepare": _data_section, "train-classifier": _classifier_section,
            "evaluate-classifier": _classifier_section, "train-generator": _generator_section,
            "sweep": _sweep_section, "generate": _reviews_section,
            "evaluate-generated": lambda folder, doc: _quality_table(
                folder, runs.QUALITY, doc, "Per wanted label and overall: the judge's exact and near agreement "
                "(real_* is the same judge on real reviews cut to the same length), MAUVE against real reviews, "
                "diversity, repetition, copies."),
            "demo": _demo_section}


# ---------------------------------------------------------------------------- entry points


def _build(run_dir: str) -> _Document:
    import pandas as pd

    if not os.path.isdir(run_dir):
        raise ValueError(f"report: {run_dir} is not a folder")
    found = runs.find_runs(run_dir)
    if not found:
        raise ValueError(f"report: {run_dir} holds no reviewgen run (no {runs.MANIFEST} in it or its subfolders)")
    found.sort(key=lambda pair: (ORDER.index(pair[1]["kind"]) if pair[1]["kind"] in ORDER else len(ORDER), pair[0]))
    doc = _Document()
    steps = pd.DataFrame([{"step": m["kind"], "folder": os.path.relpath(folder, run_dir),
                           "finished": "yes" if m.get("finished") else "NO",
                           "seconds": m.get("seconds", ""), "started": m.get("started", ""),
                           "reviewgen": m.get("reviewgen_version", "")} for folder, m in found])
    doc.heading("Steps")
    doc.table(steps, index=False)
    for folder, manifest in found:
        kind = manifest["kind"]
        doc.heading(f"{TITLES.get(kind, kind)}: {os.path.relpath(folder, run_dir)}")
        if not manifest.get("finished"):
            state = "interrupted" if manifest.get("interrupted") else "interrupted or failed"
            note = f" ({manifest['note']})" if manifest.get("note") else ""
            doc.banner(f"This step did not finish: {state}{note}. What it left is not a result and is not shown.")
            continue
        SECTIONS[kind](folder, doc)
    return doc


def write_report(run_dir: str, html_path: Optional[str] = None, md_path: Optional[str] = None) -> Tuple[str, str]:
    """Write RUN_DIR/report.html and RUN_DIR/report.md (or the paths given); returns both paths."""
    run_dir = os.fspath(run_dir)
    doc = _build(run_dir)
    title = f"reviewgen report: {os.path.basename(os.path.abspath(run_dir))}"
    html_path = html_path or os.path.join(run_dir, "report.html")
    md_path = md_path or os.path.join(run_dir, "report.md")
    files_dir = os.path.join(os.path.dirname(os.path.abspath(md_path)), "report_files")
    markdown, figures = _markdown(doc, title, files_dir)
    if figures:
        os.makedirs(files_dir, exist_ok=True)
    for name, png in figures:
        with atomic_write(os.path.join(files_dir, name), "wb", encoding=None) as f:
            f.write(png)
    with atomic_write(md_path) as f:
        f.write(markdown)
    with atomic_write(html_path) as f:
        f.write(_html(doc, title))
    return html_path, md_path


def _report_command(args) -> int:
    html_path, md_path = write_report(args.run_dir, args.html, args.md)
    print(f"wrote {html_path} and {md_path}")
    return 0


def add_report_command(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report", help="one HTML (and Markdown) report of a run folder",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Gather the steps under RUN_DIR (prepare, train, generate, evaluate, sweep, demo) into one "
                    "self-contained HTML page and a Markdown twin: the data, the classifier's exact and near "
                    "metrics and confusion matrices, perplexity before and after, training and sweep curves, the "
                    "quality table and a sample of accepted and rejected reviews per rating. A step that did not "
                    "finish is flagged, never shown as a result.",
        epilog="example:\n  reviewgen report runs\n  reviewgen report runs --html /tmp/report.html")
    parser.add_argument("run_dir", help="a step's output folder, or a folder of them")
    parser.add_argument("--html", help="where the HTML goes (default: RUN_DIR/report.html)")
    parser.add_argument("--md", help="where the Markdown goes (default: RUN_DIR/report.md; plots in report_files/)")
    parser.set_defaults(run=_report_command)
    return parser
