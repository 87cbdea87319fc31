"""Run folders: what each step of the workflow writes, and the manifest that says it finished.

Every CLI step (`reviewgen prepare`, `train`, `generate`, `evaluate`, `sweep`, `demo`) writes into its
own output folder, with a manifest ``reviewgen_run.json``:

    {"kind": "train-classifier", "finished": false, "started": "...", "argv": [...], "config": {...}}

written when the step starts (``finished`` false) and rewritten at the end (``finished`` true, the
seconds it took and the files it wrote). A folder whose manifest says ``finished: false`` is an
interrupted or failed run: `reviewgen report` says so, and never shows it as a result.

The files of each kind (names are the constants below):

    prepare              train.csv, val.csv, report.json (the StageReport)
    train-classifier     model/ (a Hugging Face directory), history.csv, metrics.json (Classifier.evaluate
                         on the validation rows), per_class.csv, confusion.csv, config.json
    train-generator      model/, history.csv, metrics.json (perplexity before and after), config.json
    generate             accepted.csv/.jsonl, rejected.csv/.jsonl, filter_counts.csv, quality.csv (optional)
    evaluate-classifier  metrics.json, per_class.csv, confusion.csv
    evaluate-generated   quality.csv
    sweep                sweep_runs.csv, sweep_curves.csv, sweep_summary.csv, study.json
    demo                 the demo's files (summary.json, accepted.csv, ...)

A run folder for `reviewgen report` is one of these folders, or a folder that holds several of them
as subfolders (``run/data``, ``run/classifier``, ``run/generator``, ``run/generated``, ...).
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import time
from typing import Iterable, Optional

from ..core.files import atomic_write, write_json

MANIFEST = "reviewgen_run.json"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"
HISTORY = "history.csv"
METRICS = "metrics.json"
PER_CLASS = "per_class.csv"
CONFUSION = "confusion.csv"
CONFIG = "config.json"
QUALITY = "quality.csv"
KINDS = ("prepare", "train-classifier", "train-generator", "generate", "evaluate-classifier",
         "evaluate-generated", "sweep", "demo")

__all__ = ["MANIFEST", "KINDS", "OutputFolderError", "prepare_output_dir", "start_run", "finish_run", "interrupt_run",
           "read_run", "find_runs", "write_frame", "history_frame", "per_class_frame", "confusion_frame"]


class OutputFolderError(ValueError):
    """The output folder exists and holds something; nothing was written."""


def prepare_output_dir(path: str, *, overwrite: bool = False, resume: bool = False) -> str:
    """Make sure ``path`` is a folder this run may write into, and return it.

    A missing or empty folder is fine. A non-empty one is refused unless ``resume`` (the run goes
    on from what is there) or ``overwrite`` (its contents are removed first; only when it is a
    reviewgen output folder, so that a mistyped path never deletes someone's data).
    """
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise OutputFolderError(f"{path} exists and is not a folder")
    if os.path.isdir(path) and os.listdir(path):
        if resume:
            return path
        if not overwrite:
            raise OutputFolderError(
                f"{path} exists and is not empty: pass --overwrite to replace it"
                f"{' or --resume to go on from it' if read_run(path) else ''}, or choose another --out")
        if read_run(path) is None:
            raise OutputFolderError(f"{path} is not a reviewgen output folder (no {MANIFEST}); "
                                    "not removing it: empty it yourself or choose another --out")
        for name in os.listdir(path):
            target = os.path.join(path, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.remove(target)
    os.makedirs(path, exist_ok=True)
    return path


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def start_run(out_dir: str, kind: str, config: Optional[dict] = None, argv: Optional[Iterable[str]] = None) -> dict:
    """Write the manifest with ``finished: false`` before any other file of the run."""
    if kind not in KINDS:
        raise ValueError(f"unknown run kind {kind!r}; expected one of {', '.join(KINDS)}")
    from .. import __version__

    manifest = {"kind": kind, "finished": False, "started": _now(), "reviewgen_version": __version__,
                "argv": list(argv) if argv is not None else None, "config": config or {},
                "_clock": time.perf_counter()}
    write_json(os.path.join(out_dir, MANIFEST), {k: v for k, v in manifest.items() if k != "_clock"}, indent=2)
    return manifest


def finish_run(out_dir: str, manifest: dict, **extra) -> dict:
    """Rewrite the manifest as finished, with the files now in the folder and the seconds taken."""
    done = {k: v for k, v in manifest.items() if k != "_clock"}
    done.update(extra)
    done["finished"] = True
    done["ended"] = _now()
    if "_clock" in manifest:
        done["seconds"] = round(time.perf_counter() - manifest["_clock"], 1)
    done["files"] = sorted(name for name in os.listdir(out_dir) if name != MANIFEST)
    write_json(os.path.join(out_dir, MANIFEST), done, indent=2)
    return done


def interrupt_run(out_dir: str, manifest: dict, note: str) -> dict:
    """Rewrite the manifest as interrupted (still ``finished: false``), with what was kept."""
    done = {k: v for k, v in manifest.items() if k != "_clock"}
    done.update(finished=False, interrupted=True, ended=_now(), note=note)
    done["files"] = sorted(name for name in os.listdir(out_dir) if name != MANIFEST)
    write_json(os.path.join(out_dir, MANIFEST), done, indent=2)
    return done


def read_run(path: str) -> Optional[dict]:
    """The manifest of a run folder, or None when the folder has none (or an unreadable one)."""
    try:
        with open(os.path.join(path, MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("kind") in KINDS else None


def find_runs(root: str, depth: int = 2) -> list:
    """(folder, manifest) for ``root`` and its subfolders down to ``depth`` levels, sorted by folder."""
    found = []
    for folder, subfolders, _files in os.walk(root):
        level = os.path.relpath(folder, root).count(os.sep) + (folder != root)
        if level >= depth:
            subfolders[:] = []
        subfolders[:] = sorted(s for s in subfolders if s not in (MODEL_DIR, CHECKPOINTS_DIR))
        manifest = read_run(folder)
        if manifest is not None:
            found.append((folder, manifest))
    return sorted(found, key=lambda pair: pair[0])


def write_frame(path: str, frame, index: bool = False) -> None:
    """A DataFrame as CSV, atomically."""
    with atomic_write(path, newline="") as f:
        frame.to_csv(f, index=index)


def history_frame(history: list):
    """A training history (one dict per evaluated epoch) as a DataFrame, epoch first."""
    import pandas as pd

    frame = pd.DataFrame(list(history))
    if "epoch" in frame.columns:
        frame = frame[["epoch"] + [c for c in frame.columns if c != "epoch"]]
    return frame


def per_class_frame(report: dict):
    """Per-label precision, recall, F1 and support, exact and near, from Classifier.evaluate's dict."""
    import pandas as pd

    rows = []
    for kind in ("exact", "near"):
        figures = report.get(kind) or {}
        for k, label in enumerate(figures.get("labels", [])):
            rows.append({"label": label, "kind": kind, "precision": figures["precision"][k],
                         "recall": figures["recall"][k], "f1": figures["f1"][k],
                         "support": figures["support"][k]})
    return pd.DataFrame(rows)


def confusion_frame(report: dict, near: bool = False):
    """The confusion matrix (rows true, columns predicted) as a labelled DataFrame."""
    import pandas as pd

    labels = report["labels"]
    matrix = report["near_confusion_matrix" if near else "confusion_matrix"]
    return pd.DataFrame(matrix, index=pd.Index(labels, name="true"), columns=pd.Index(labels, name="predicted"))
