"""Command line: `python -m reviewgen <command>` (also installed as `reviewgen`).

    demo      the seed study's demo on the bundled sample (or your data)
    study     a classifier fine-tune with model selection, or a hyperparameter sweep
    prepare   clean, label, balance and split a review file; print the stage report
    augment   does synthetic data help? a classifier on r real reviews per label, with and without
              the filtered synthetic ones, on the same held-out real test set
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys


def _demo(args) -> int:
    from .experiments.demo import DemoConfig, run_demo

    cfg = DemoConfig.load(args.config) if args.config else DemoConfig()
    for field in dataclasses.fields(DemoConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            setattr(cfg, field.name, value)
    run_demo(cfg, args.out)
    return 0


def _study(args) -> int:
    from .experiments.study import ClassifierStudy, SweepStudy, run_baseline, run_classifier_study, run_sweep

    if args.kind == "classifier":
        run_classifier_study(ClassifierStudy.load(args.config), args.out)
    elif args.kind == "baseline":
        run_baseline(ClassifierStudy.load(args.config), args.out)
    else:
        run_sweep(SweepStudy.load(args.config), args.out)
    return 0


def _prepare(args) -> int:
    from .text import data

    source = data.load_sample(args.input.split(":", 1)[1]) if args.input.startswith("sample:") else args.input
    prepared = data.prepare(source, args.scale, text_column=args.text_column,
                            rating_column=args.rating_column, seed=args.seed, val_fraction=args.val_fraction,
                            balance=not args.no_balance, allow_drop=args.allow_drop)
    print(prepared.report)
    if args.out:
        from .core.files import atomic_write, write_json

        os.makedirs(args.out, exist_ok=True)
        for name, frame in (("train.csv", prepared.train), ("val.csv", prepared.val)):
            with atomic_write(os.path.join(args.out, name), "w", newline="") as handle:
                frame.to_csv(handle, index=False)
        write_json(os.path.join(args.out, "report.json"), prepared.report.to_dict(), indent=2)
        print(f"wrote train.csv, val.csv and report.json to {args.out}")
    return 0


def _labelled(path: str, scale: str, text_column: str, rating_column: str):
    """A review file as (text, label) rows: cleaned and mapped through the scale, not balanced."""
    import pandas as pd

    from .text import data

    source = data.load_sample(path.split(":", 1)[1]) if path.startswith("sample:") else path
    prepared = data.prepare(source, scale, text_column=text_column, rating_column=rating_column,
                            balance=False, val_fraction=0.1)
    return pd.concat([prepared.train, prepared.val], ignore_index=True)[["text", "label"]]


def _augment(args) -> int:
    import pandas as pd

    from .core.files import atomic_write
    from .experiments.augmentation import AugmentationConfig, run_augmentation, summarize

    cfg = AugmentationConfig.load(args.config) if args.config else AugmentationConfig()
    if args.real_per_label:
        cfg.real_per_label = [int(v) for v in args.real_per_label.split(",")]
    if args.seeds:
        cfg.seeds = [int(v) for v in args.seeds.split(",")]
    if args.synthetic_per_real:
        cfg.synthetic_per_real = args.synthetic_per_real
    cfg.__post_init__()
    real = _labelled(args.real, args.scale, args.text_column, args.rating_column)
    test = _labelled(args.test, args.scale, args.text_column, args.rating_column)
    synthetic = pd.read_csv(args.synthetic)
    table = run_augmentation(real, synthetic, test, cfg, log=print)
    summary = summarize(table)
    print(summary.round(3).to_string())
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        cfg.save(os.path.join(args.out, "augmentation_config.json"))
        with atomic_write(os.path.join(args.out, "augmentation_runs.csv"), newline="") as f:
            table.to_csv(f, index=False)
        with atomic_write(os.path.join(args.out, "augmentation_summary.csv"), newline="") as f:
            summary.to_csv(f)
        print(f"wrote augmentation_runs.csv and augmentation_summary.csv to {args.out}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="reviewgen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="generate reviews per rating, keep those the classifier accepts")
    demo.add_argument("--out", default="reviewgen-demo", help="output folder (default: reviewgen-demo)")
    demo.add_argument("--config", help="a DemoConfig JSON file; flags below override it")
    from .experiments.demo import DemoConfig

    for field in dataclasses.fields(DemoConfig):
        kind = {"int": int, "float": float, "str": str}[field.type if isinstance(field.type, str)
                                                         else field.type.__name__]
        demo.add_argument("--" + field.name.replace("_", "-"), dest=field.name, type=kind, default=None,
                          help=f"default: {field.default}")
    demo.set_defaults(run=_demo)

    prepare = commands.add_parser("prepare", help="clean, label, balance and split; print the stage report")
    prepare.add_argument("input", help="CSV, JSONL or Parquet file, or sample:imdb / sample:sst5")
    prepare.add_argument("--scale", default="imdb10",
                         help="rating scale: imdb10, sst5, stars5, or a mapping such as "
                              "'1-2:1,3-4:2,5-6:3,7-8:4,9-10:5' (whole-number ranges to labels)")
    prepare.add_argument("--allow-drop", action="store_true",
                         help="go on when many ratings fall off the scale or a label ends empty")
    prepare.add_argument("--no-balance", action="store_true", help="keep every row instead of balancing labels")
    prepare.add_argument("--text-column", default="text")
    prepare.add_argument("--rating-column", default="rating")
    prepare.add_argument("--seed", type=int, default=0)
    prepare.add_argument("--val-fraction", type=float, default=0.1)
    prepare.add_argument("--out", help="write train.csv, val.csv and report.json here")
    prepare.set_defaults(run=_prepare)

    study = commands.add_parser("study", help="a classifier fine-tune with model selection, its TF-IDF baseline, or a sweep")
    study.add_argument("kind", choices=("classifier", "baseline", "sweep"))
    study.add_argument("--config", required=True, help="a ClassifierStudy or SweepStudy JSON file")
    study.add_argument("--out", required=True, help="output folder (results.json, checkpoints)")
    study.set_defaults(run=_study)

    augment = commands.add_parser("augment", help="does synthetic data help? real only against real + synthetic")
    augment.add_argument("--synthetic", required=True, help="CSV of synthetic reviews with text and label "
                                                            "columns (a demo's accepted.csv)")
    augment.add_argument("--real", required=True, help="real training reviews (file or sample:imdb)")
    augment.add_argument("--test", required=True, help="held-out real test reviews (file)")
    augment.add_argument("--scale", default="imdb10", help="rating scale of --real and --test (see prepare)")
    augment.add_argument("--text-column", default="text")
    augment.add_argument("--rating-column", default="rating")
    augment.add_argument("--config", help="an AugmentationConfig JSON file; flags below override it")
    augment.add_argument("--real-per-label", help="comma-separated r values (default 10,50,200)")
    augment.add_argument("--synthetic-per-real", type=int, help="synthetic reviews per real one (default 5)")
    augment.add_argument("--seeds", help="comma-separated seeds (default 0,1,2)")
    augment.add_argument("--out", help="write the runs, the summary and the config here")
    augment.set_defaults(run=_augment)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        print(f"reviewgen: {exc}", file=sys.stderr)
        return 2

