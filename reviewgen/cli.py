"""Command line: `reviewgen <command>` (also `python -m reviewgen <command>`).

The seed study, step by step, on your own data:

    prepare               clean, label, balance and split a review file; the stage report
    train classifier      fine-tune a rating classifier; a Hugging Face model directory
    train generator       fine-tune a review generator; a Hugging Face model directory
    generate              reviews per rating from a saved generator, filtered by a saved classifier
    evaluate classifier   a saved classifier on a labelled file: exact and near metrics
    evaluate generated    generated reviews against real ones: the quality table
    sweep                 the seed's hyperparameter study (one value varied, k samples averaged)
    report                one HTML (and Markdown) report of a run folder
    demo                  the whole study in one command on the bundled sample
    study, augment        a classifier study with model selection; does synthetic data help?

Each step writes into its own --out folder (refused when it exists and is not
empty, unless --overwrite or, for training and sweeps, --resume), with its
config.json: `--config that/config.json` reproduces the run, and flags override
the file. Exit status: 0 done, 2 bad input (the message says what), 130 Ctrl-C
(what was finished is kept; the message says where).

Example, a CSV with columns "body" and "stars" (1-10):

    reviewgen prepare reviews.csv --text-column body --rating-column stars \\
        --scale "1-2:1,3-4:2,5-6:3,7-8:4,9-10:5" --out runs/data
    reviewgen train classifier runs/data --out runs/classifier --epochs 2
    reviewgen train generator runs/data --out runs/generator --epochs 1
    reviewgen generate --generator runs/generator/model --classifier runs/classifier/model --out runs/generated
    reviewgen evaluate generated runs/generated/accepted.csv --real test.csv --text-column body \\
        --rating-column stars --scale "1-2:1,3-4:2,5-6:3,7-8:4,9-10:5" --out runs/quality
    reviewgen report runs
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

# TrainingConfig fields a flag sets directly (flag name -> field); the rest come from --config.
TRAINING_FLAGS = {
    "epochs": ("num_train_epochs", int), "learning_rate": ("learning_rate", float),
    "batch_size": ("per_device_train_batch_size", int), "eval_batch_size": ("per_device_eval_batch_size", int),
    "gradient_accumulation_steps": ("gradient_accumulation_steps", int), "warmup_ratio": ("warmup_ratio", float),
    "weight_decay": ("weight_decay", float), "trainable_blocks": ("trainable_blocks", int),
    "lora_rank": ("lora_rank", int), "lora_alpha": ("lora_alpha", float), "lora_targets": ("lora_targets", str),
    "training_seed": ("seed", int), "bf16": ("bf16", bool),
}
_TYPES = {"str": str, "int": int, "float": float}
_HELP = argparse.RawDescriptionHelpFormatter


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_config_flags(parser, cls, positional: str = "", helps: dict | None = None) -> None:
    """One flag per field of a config dataclass (default: the config file's or the field's value)."""
    helps = helps or {}
    for field in dataclasses.fields(cls):
        name, kind = field.name, field.type if isinstance(field.type, str) else field.type.__name__
        if name == "training":
            group = parser.add_argument_group("training (TrainingConfig; more fields through --config)")
            for flag, (target, type_) in TRAINING_FLAGS.items():
                kind_of = dict(action=argparse.BooleanOptionalAction) if type_ is bool else dict(type=type_)
                group.add_argument(_flag(flag), dest="train_" + flag, default=None, help=f"TrainingConfig.{target}",
                                   **kind_of)
            continue
        default = field.default if field.default is not dataclasses.MISSING else None
        text = helps.get(name, "") + (f" (default: {default!r})" if default not in (None, "") else "")
        if name == positional:
            parser.add_argument(name, nargs="?", default=None, help=text)
        elif kind == "bool":
            parser.add_argument(_flag(name), dest=name, action=argparse.BooleanOptionalAction, default=None,
                                help=text)
        elif kind in _TYPES:
            parser.add_argument(_flag(name), dest=name, type=_TYPES[kind], default=None, help=text)


def build_config(cls, args, resume_dir: str = ""):
    """The config file (or the defaults), then every flag given on top.

    With --resume and nothing given, the run's own config.json is taken."""
    from .experiments import runs

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                 if f.name != "training" and getattr(args, f.name, None) is not None}
    training = {target: getattr(args, "train_" + flag) for flag, (target, _) in TRAINING_FLAGS.items()
                if getattr(args, "train_" + flag, None) is not None}
    config_path = args.config
    saved = os.path.join(resume_dir, runs.CONFIG) if resume_dir else ""
    if not config_path and not overrides and not training and saved and os.path.exists(saved):
        config_path = saved
    cfg = cls.load(config_path) if config_path else cls()
    for name, value in overrides.items():
        setattr(cfg, name, value)
    if training:
        from .core.config import TrainingConfig

        base = cfg.training or (TrainingConfig.for_classifier() if getattr(cfg, "task", "") == "classifier"
                                else TrainingConfig.for_generator())
        cfg.training = dataclasses.replace(base, **training)  # validates
    return cfg


def _progress(args):
    from .experiments.progress import Progress

    log = (lambda _line: None) if args.quiet else print
    return Progress("quiet" if args.quiet else args.progress, log=log), log


def _step_options(parser, resume: bool = False, out_required: bool = True) -> None:
    parser.add_argument("--out", required=out_required,
                        help="output folder (refused if it exists and is not empty)"
                             + ("" if out_required else "; without it, only the report is printed"))
    parser.add_argument("--config", help="a JSON config (a run's config.json reproduces it); flags override it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the output folder of an earlier reviewgen run")
    if resume:
        parser.add_argument("--resume", action="store_true",
                            help="go on from the output folder's last checkpoint (same settings)")
        parser.add_argument("--keep-checkpoints", action="store_true",
                            help="keep the training checkpoints (removed once the model is saved)")
    parser.add_argument("--quiet", action="store_true", help="no progress and no log lines")
    parser.add_argument("--progress", choices=("auto", "bar", "lines"), default="auto",
                        help="a tqdm bar (default in a terminal) or plain lines (default otherwise)")


# ---------------------------------------------------------------------------- handlers


def _prepare(args) -> int:
    from .experiments import workflow

    _, log = _progress(args)
    workflow.prepare_data(build_config(workflow.PrepareConfig, args), args.out, overwrite=args.overwrite, log=log,
                          argv=sys.argv[1:])
    return 0


def _train(args) -> int:
    from .core import distributed
    from .experiments import workflow

    # under mpirun / srun with several ranks: data-parallel, rank 0 alone logs and writes
    communicator = distributed.from_environment()
    if not distributed.is_main_rank(communicator):
        args.quiet = True
    progress, log = _progress(args)
    if communicator is not None:
        log(f"data-parallel training on {communicator.size} ranks (MPI)")
    cls, step = ((workflow.TrainClassifierConfig, workflow.train_classifier) if args.task == "classifier"
                 else (workflow.TrainGeneratorConfig, workflow.train_generator))
    cfg = build_config(cls, args, resume_dir=args.out if args.resume else "")
    with distributed.activated(communicator):
        step(cfg, args.out, overwrite=args.overwrite, resume=args.resume, keep_checkpoints=args.keep_checkpoints,
             progress=progress, log=log, argv=sys.argv[1:])
    return 0


def _generate(args) -> int:
    from .experiments import workflow

    progress, log = _progress(args)
    workflow.generate(build_config(workflow.GenerateConfig, args), args.out, overwrite=args.overwrite,
                      progress=progress, log=log, argv=sys.argv[1:])
    return 0


def _evaluate(args) -> int:
    from .experiments import workflow

    progress, log = _progress(args)
    if args.what == "classifier":
        workflow.evaluate_classifier(build_config(workflow.EvaluateClassifierConfig, args), args.out,
                                     overwrite=args.overwrite, progress=progress, log=log, argv=sys.argv[1:])
    else:
        workflow.evaluate_generated(build_config(workflow.EvaluateGeneratedConfig, args), args.out,
                                    overwrite=args.overwrite, log=log, argv=sys.argv[1:])
    return 0


def _sweep(args) -> int:
    from .experiments import workflow
    from .experiments.study import SweepStudy

    _, log = _progress(args)
    study = build_config(SweepStudy, args, resume_dir=args.out if args.resume else "")
    if args.values:
        study.values = [_number(v) for v in args.values.split(",")]
    executor = None
    if args.ray:
        executor = dict(executor="ray", ray_address=None if args.ray == "local" else args.ray,
                        resources={"num_cpus": args.ray_cpus, "num_gpus": args.ray_gpus})
    workflow.sweep(study, args.out, overwrite=args.overwrite, resume=args.resume, log=log, argv=sys.argv[1:],
                   executor=executor)
    return 0


def _number(text: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"--values: {text!r} is not a number") from None


def _demo(args) -> int:
    from .experiments import runs
    from .experiments.demo import DemoConfig, check_models, run_demo
    from .experiments.workflow import StepInterrupted

    cfg = DemoConfig.load(args.config) if args.config else DemoConfig()
    for field in dataclasses.fields(DemoConfig):
        value = getattr(args, field.name, None)
        if value is not None:
            setattr(cfg, field.name, value)
    check_models(cfg)
    runs.prepare_output_dir(args.out, overwrite=args.overwrite)
    manifest = runs.start_run(args.out, "demo", cfg.to_dict(), sys.argv[1:])
    try:
        run_demo(cfg, args.out)
    except KeyboardInterrupt as stop:
        note = getattr(stop, "message", "demo interrupted")
        runs.interrupt_run(args.out, manifest, note=note)
        raise StepInterrupted(f"{note}; the run in {args.out} is marked unfinished") from None
    runs.finish_run(args.out, manifest)
    return 0


def _study(args) -> int:
    from .experiments.study import ClassifierStudy, SweepStudy, run_baseline, run_classifier_study, run_sweep

    if args.kind == "classifier":
        run_classifier_study(ClassifierStudy.load(args.config), args.out, keep_checkpoints=args.keep_checkpoints)
    elif args.kind == "baseline":
        run_baseline(ClassifierStudy.load(args.config), args.out)
    else:
        run_sweep(SweepStudy.load(args.config), args.out)
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


# ---------------------------------------------------------------------------- parser

_DATA_HELP = {
    "data": "a CSV, JSONL or Parquet file, sample:imdb / sample:sst5, or a `reviewgen prepare` folder",
    "scale": "rating scale: imdb10, sst5, stars5, or a mapping such as '1-2:1,3-4:2,5-6:3,7-8:4,9-10:5'",
    "allow_drop": "go on when many ratings fall off the scale or a label ends empty",
    "text_column": "the column with the review text",
    "rating_column": "the column with the rating",
}


def _examples(*lines: str) -> str:
    return "example:\n" + "\n".join("  " + line for line in lines)


def build_parser() -> argparse.ArgumentParser:
    from .experiments import workflow
    from .experiments.demo import DemoConfig
    from .experiments.report import add_report_command
    from .experiments.study import SweepStudy

    parser = argparse.ArgumentParser(prog="reviewgen", description=__doc__, formatter_class=_HELP)
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")

    prepare = commands.add_parser(
        "prepare", help="clean, label, balance and split; print the stage report", formatter_class=_HELP,
        description="Clean the texts, map ratings to labels through the scale, balance the labels and hold "
                    "out a validation share. Stops, naming the counts, when more than 5% of the ratings "
                    "fall off the scale or a label ends empty (unless --allow-drop).",
        epilog=_examples("reviewgen prepare reviews.csv --text-column body --rating-column stars "
                         "--scale '1-2:1,3-4:2,5-6:3,7-8:4,9-10:5' --out runs/data"))
    add_config_flags(prepare, workflow.PrepareConfig, positional="data", helps=_DATA_HELP)
    _step_options(prepare, out_required=False)
    prepare.set_defaults(run=_prepare)

    train = commands.add_parser("train", help="fine-tune a classifier or a generator; a model directory",
                                description="Fine-tune and save a Hugging Face model directory (model/).")
    tasks = train.add_subparsers(dest="task", required=True, metavar="classifier|generator")
    for task, cls, example in (
            ("classifier", workflow.TrainClassifierConfig,
             "reviewgen train classifier runs/data --out runs/classifier --epochs 3 --trainable-blocks 2"),
            ("generator", workflow.TrainGeneratorConfig,
             "reviewgen train generator reviews.csv --scale stars5 --out runs/generator --epochs 1 "
             "--learning-rate 3e-5")):
        sub = tasks.add_parser(
            task, help=f"fine-tune a {task}", formatter_class=_HELP,
            description=f"Fine-tune a {task} on labelled reviews (the seed's settings by default: only the "
                        "last block and the head train) and write model/ (safetensors, config, tokenizer), "
                        "history.csv, metrics.json and config.json. Ctrl-C keeps the last checkpoint; "
                        "--resume goes on from it.",
            epilog=_examples(example))
        add_config_flags(sub, cls, positional="data", helps=_DATA_HELP)
        _step_options(sub, resume=True)
        sub.set_defaults(run=_train)

    gen = commands.add_parser(
        "generate", help="reviews per rating, filtered by a saved classifier", formatter_class=_HELP,
        description="For every label, generate --per-label reviews per round with a saved generator and keep "
                    "those the saved classifier accepts (the filter's rule, threshold, copies and duplicates) "
                    "until --keep-per-label are kept or --max-rounds ran. Writes accepted/rejected .csv and "
                    ".jsonl and filter_counts.csv. Ctrl-C keeps the reviews generated so far.",
        epilog=_examples("reviewgen generate --generator runs/generator/model --classifier runs/classifier/model "
                         "--keep-per-label 20 --out runs/generated"))
    add_config_flags(gen, workflow.GenerateConfig)
    _step_options(gen)
    gen.set_defaults(run=_generate)

    evaluate = commands.add_parser("evaluate", help="a classifier on a labelled file, or generated reviews")
    whats = evaluate.add_subparsers(dest="what", required=True, metavar="classifier|generated")
    ev_clf = whats.add_parser(
        "classifier", help="a saved classifier on a labelled file", formatter_class=_HELP,
        description="Exact and near accuracy, precision, recall and F1 (macro and per label) and the confusion "
                    "matrices of a saved classifier: metrics.json, per_class.csv, confusion.csv.",
        epilog=_examples("reviewgen evaluate classifier test.csv --classifier runs/classifier/model "
                         "--out runs/eval"))
    add_config_flags(ev_clf, workflow.EvaluateClassifierConfig, positional="data", helps=_DATA_HELP)
    _step_options(ev_clf)
    ev_gen = whats.add_parser(
        "generated", help="the quality table of generated reviews", formatter_class=_HELP,
        description="An independent judge (TF-IDF + LR on real reviews), MAUVE on MiniLM embeddings, "
                    "diversity, repetition and copies, per label and overall: quality.csv.",
        epilog=_examples("reviewgen evaluate generated runs/generated/accepted.csv --real test.csv "
                         "--judge-data train.csv --out runs/quality"))
    add_config_flags(ev_gen, workflow.EvaluateGeneratedConfig, positional="generated", helps=_DATA_HELP)
    _step_options(ev_gen)
    for sub in (ev_clf, ev_gen):
        sub.set_defaults(run=_evaluate)

    sweep = commands.add_parser(
        "sweep", help="the seed's hyperparameter study", formatter_class=_HELP,
        description="One TrainingConfig field takes each of --values; the same disjoint balanced samples train "
                    "for every value, evaluated every epoch and averaged: sweep_runs.csv, sweep_curves.csv, "
                    "sweep_summary.csv. A stopped sweep goes on with --resume.",
        epilog=_examples("reviewgen sweep --task classifier --model minilm --data sample:imdb "
                         "--parameter learning_rate --values 5e-5,5e-4 --out runs/sweep"))
    add_config_flags(sweep, SweepStudy, helps=_DATA_HELP)
    sweep.add_argument("--values", help="comma-separated values of --parameter")
    sweep.add_argument("--ray", metavar="ADDRESS",
                       help="run each (value, sample) trial as a task on this Ray cluster (e.g. auto, "
                            "ray://head:10001; 'local' starts one here); needs pip install 'reviewgen[ray]'")
    sweep.add_argument("--ray-cpus", type=float, default=1, help="CPUs each Ray trial declares (default 1)")
    sweep.add_argument("--ray-gpus", type=float, default=0, help="GPUs each Ray trial declares (default 0)")
    _step_options(sweep, resume=True)
    sweep.set_defaults(run=_sweep)

    add_report_command(commands)

    demo = commands.add_parser(
        "demo", help="generate reviews per rating, keep those the classifier accepts", formatter_class=_HELP,
        description="The whole study in one command on the bundled sample (a few minutes on a laptop CPU). "
                    "The default generator, smollm2, is SmolLM2-135M-Instruct as a 4-bit (Q4_1) GGUF, "
                    "dequantised: below the original weights' quality; --generator "
                    "HuggingFaceTB/SmolLM2-135M-Instruct (online) or a local directory uses full precision.",
        epilog=_examples("reviewgen demo --out reviewgen-demo"))
    demo.add_argument("--out", default="reviewgen-demo", help="output folder (default: reviewgen-demo)")
    demo.add_argument("--config", help="a DemoConfig JSON file; flags below override it")
    demo.add_argument("--overwrite", action="store_true", help="replace the output folder of an earlier run")
    add_config_flags(demo, DemoConfig)
    demo.set_defaults(run=_demo)

    study = commands.add_parser("study", help="a classifier fine-tune with model selection, its TF-IDF "
                                              "baseline, or a sweep, from a study config")
    study.add_argument("kind", choices=("classifier", "baseline", "sweep"))
    study.add_argument("--config", required=True, help="a ClassifierStudy or SweepStudy JSON file")
    study.add_argument("--out", required=True, help="output folder (results.json, model/)")
    study.add_argument("--keep-checkpoints", action="store_true", help="keep the training checkpoints")
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
    return parser


def main(argv=None) -> int:
    from .experiments.workflow import StepInterrupted

    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except StepInterrupted as stop:
        print(f"reviewgen: {stop.message}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("reviewgen: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        print(f"reviewgen: {exc}", file=sys.stderr)
        return 2
