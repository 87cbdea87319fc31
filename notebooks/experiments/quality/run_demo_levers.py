"""Demo levers for MAUVE: the demo (reviewgen.experiments.demo.run_demo) with longer reviews
and/or a short LoRA fine-tune of the generator, the classifier trained once per seed.

Steps 1-5 follow run_demo line by line (its private helpers are reused); what is shared
between the variants of one seed is only what does not depend on the variant: the data
split (step 1), the lm_features classifier and the TF-IDF baseline (step 2), and the
quality judge / encoder (step 5 fits the same judge on the same rows for every variant,
so it is fitted once). Per variant the generator is built fresh from a freshly loaded
checkpoint, optionally fine-tuned (train_generator with the demo's TrainingConfig), then
generate_filtered and evaluate_generated run exactly as in run_demo. Not done per
variant: saving the fine-tuned generator (_keep_model) and the plots.

Each accepted set is also scored as eval_csv.py does (external judge fitted on IMDB
train minus the sample, 400 IMDB test reviews, base-model perplexity), written to
<run>/external_quality.csv here instead of eval_csv's own folder and LOG.md line.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 python \
        notebooks/experiments/quality/run_demo_levers.py --seed 0 --variants V0,V2,V1,V3

Results: notebooks/results/quality/demo_levers/results.csv (one row per run, appended as
each run finishes) and one folder per run (<variant>_s<seed>/).
"""
import argparse
import csv
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OUT = os.path.join(ROOT, "notebooks", "results", "quality", "demo_levers")
CACHE = os.path.join(tempfile.gettempdir(), "demo_levers_feature_cache")

VARIANTS = {
    "V0": {},
    "V1": {"max_new_tokens": 200},
    "V2": {"generator_train_rows": 160, "lora_rank": 8, "lora_alpha": 16.0, "lora_dropout": 0.05,
           "lora_targets": "all", "generator_learning_rate": 1e-3, "generator_max_length": 160,
           "generator_epochs": 1, "review_only_loss": 1},
}
VARIANTS["V3"] = {**VARIANTS["V1"], **VARIANTS["V2"]}

ALL_KEYS = ("judge_exact", "judge_near", "real_exact", "real_near", "mauve", "mauve_real", "repeated_4gram",
            "real_repeated_4gram", "copied_12gram", "distinct_2", "self_bleu", "words_mean", "length_ks")


class Clock:
    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self):
        return round(time.perf_counter() - self.wall, 1), round(time.process_time() - self.cpu, 1)


def log(message):
    print(time.strftime("%H:%M:%S"), message, flush=True)


def cached_encode(encode, tag):
    """encoder.encode with a disk cache for the big calls (the classifier's training and
    validation rows), so a restarted seed does not embed 1,500 reviews again. Same arrays."""
    os.makedirs(CACHE, exist_ok=True)

    def wrapped(texts):
        texts = list(texts)
        if len(texts) < 100:
            return encode(texts)
        key = hashlib.sha1(("\x00".join(texts) + tag).encode()).hexdigest()
        path = os.path.join(CACHE, key + ".npy")
        if os.path.exists(path):
            log(f"  features of {len(texts)} texts from the cache")
            return np.load(path)
        out = encode(texts)
        np.save(path, out)
        return out
    return wrapped


def append_row(row):
    path = os.path.join(OUT, "results.csv")
    new = not os.path.exists(path)
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="V0,V2,V1,V3")
    parser.add_argument("--external", type=int, default=1)
    args = parser.parse_args()

    import pandas as pd

    from reviewgen.core import metrics as _metrics
    from reviewgen.core.files import jsonable
    from reviewgen.experiments import demo as D
    from reviewgen.experiments.demo import DemoConfig
    from reviewgen.tasks.generator import Generator, load_generator_checkpoint
    from reviewgen.text import data as _data

    base_cfg = DemoConfig(seed=args.seed)
    D.check_models(base_cfg)
    os.makedirs(OUT, exist_ok=True)
    t_all = Clock()

    # 1. data (as run_demo) -------------------------------------------------------
    cfg = base_cfg
    generator_part, classifier_part = _data.prepare_generator_and_classifier(
        D._load_rows(cfg), cfg.scale, text_column=cfg.text_column, rating_column=cfg.rating_column,
        seed=cfg.seed, val_fraction=cfg.val_fraction)
    labels = sorted(int(k) for k, n in classifier_part.report.labels_after_balancing.items() if n > 0)

    # 2. classifier (as run_demo; once per seed) --------------------------------------
    clf_train = D._take_balanced(classifier_part.train, cfg.classifier_train_rows, cfg.seed)
    clf_eval = D._take_balanced(classifier_part.val, cfg.classifier_eval_rows, cfg.seed)
    t = Clock()
    checkpoint = load_generator_checkpoint(cfg.generator)
    from reviewgen.tasks import encoder as _encoder_module

    original_from_decoder = _encoder_module.SentenceEncoder.from_decoder

    def from_decoder_cached(source, **kwargs):  # same encoder, its big encode calls cached on disk
        enc = original_from_decoder(source, **kwargs)
        enc.encode = cached_encode(enc.encode, f"lm{enc.model.config.n_layer}-{kwargs.get('max_length')}")
        return enc
    _encoder_module.SentenceEncoder.from_decoder = staticmethod(from_decoder_cached)
    tmp_out = tempfile.mkdtemp(prefix="demo_levers_")
    classifier, clf_metrics, _ = D._train_classifier(cfg, labels, clf_train, clf_eval, tmp_out, log, checkpoint)
    _encoder_module.SentenceEncoder.from_decoder = original_from_decoder
    del checkpoint
    baseline = D._tfidf_baseline(clf_train, clf_eval, labels, log)
    clf_wall, clf_cpu = t.stop()
    log(f"classifier ready in {clf_wall} s wall, {clf_cpu} s CPU")

    # judge and encoder of step 5: the same for every variant of this seed (fitted on the same rows)
    judge_cache = {}

    def quality(cfg, out_dir, accepted, generated, gen_train):
        """run_demo's _quality, with its judge/encoder fitted once per gen_train (they depend
        on the rows used, which differ between fine-tuned and untrained variants)."""
        from reviewgen.core.files import atomic_write
        from reviewgen.experiments.evaluation import Judge, evaluate_generated
        from reviewgen.tasks.encoder import SentenceEncoder

        used = set(gen_train["text"]) | set(clf_train["text"])
        key = len(gen_train)
        if key not in judge_cache:
            judge_rows = pd.concat([generator_part.train, classifier_part.train])
            judge_rows = judge_rows[~judge_rows["text"].isin(used)]
            real = pd.concat([generator_part.val, classifier_part.val])
            judge_rows = judge_rows[~judge_rows["text"].isin(set(real["text"]))]
            log(f"quality: judge on {len(judge_rows)} real reviews; {len(real)} held-out real reviews")
            judge = Judge().fit(judge_rows["text"].tolist(), judge_rows["label"].tolist())
            encoder = SentenceEncoder.from_pretrained(cfg.classifier, max_length=min(128, cfg.classifier_max_length))
            judge_cache[key] = (judge, encoder, real, len(judge_rows))
        judge, encoder, real, n_judge = judge_cache[key]
        tables = {}
        for name, rows in (("accepted", accepted), ("generated", generated)):
            report = evaluate_generated([r["text"] for r in rows], [r["label"] for r in rows],
                                        real["text"].tolist(), real["label"].tolist(), judge=judge,
                                        encoder=encoder, train_texts=list(used), seed=cfg.seed)
            with atomic_write(os.path.join(out_dir, f"quality_{name}.csv"), newline="") as f:
                report.table.to_csv(f)
            log(f"quality of the {name} reviews:\n{report}")
            tables[name] = report.table
        return tables, n_judge

    external = None
    if args.external:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from run_generator import judge_and_real  # noqa: E402  (eval_csv.py's references)
        from reviewgen.experiments.evaluation import evaluate_generated
        from reviewgen.tasks.encoder import SentenceEncoder

    for variant in args.variants.split(","):
        cfg = dataclasses.replace(base_cfg, **VARIANTS[variant])
        name = f"{variant}_s{cfg.seed}"
        out_dir = os.path.join(OUT, name)
        os.makedirs(out_dir, exist_ok=True)
        cfg.save(os.path.join(out_dir, "demo_config.json"))
        log(f"=== {name}: {VARIANTS[variant]}")
        summary = {"config": dataclasses.asdict(cfg)}

        # 3. generator (as run_demo) ------------------------------------------------
        from reviewgen.text.conditioning import review_loss, train_generator

        t = Clock()
        generator = Generator.from_checkpoint(load_generator_checkpoint(cfg.generator),
                                              max_length=cfg.generator_max_length)
        fmt = D._conditioning(cfg, generator)
        gen_train = D._take_balanced(generator_part.train, cfg.generator_train_rows, cfg.seed) \
            if cfg.generator_train_rows > 0 else generator_part.train.head(0)
        gen_eval = D._take_balanced(generator_part.val, cfg.generator_eval_rows, cfg.seed)
        before = review_loss(generator, fmt, gen_eval["text"].tolist(), gen_eval["label"].tolist())
        load_wall, load_cpu = t.stop()
        log(f"generator ({fmt.name}) perplexity before fine-tuning: {before['perplexity']:.2f}")
        train_wall = train_cpu = 0.0
        history = []
        after = before
        if len(gen_train):
            t = Clock()
            ckpt_dir = tempfile.mkdtemp(prefix="demo_levers_gen_")
            result = train_generator(
                generator, fmt, gen_train["text"].tolist(), gen_train["label"].tolist(), gen_eval["text"].tolist(),
                gen_eval["label"].tolist(),
                config=D._training_config("generator", cfg, cfg.generator_epochs, cfg.generator_learning_rate),
                output_dir=os.path.join(ckpt_dir, "generator_checkpoints"),
                progress=D._progress_printer("generator", log), review_only=bool(cfg.review_only_loss))
            train_wall, train_cpu = t.stop()
            shutil.rmtree(ckpt_dir, ignore_errors=True)
            history = result.history
            after = review_loss(generator, fmt, gen_eval["text"].tolist(), gen_eval["label"].tolist())
            log(f"fine-tuned in {train_wall} s wall / {train_cpu} s CPU; perplexity after: {after['perplexity']:.2f}")
        summary["generator"] = {"before": before, "after": after, "train_rows": len(gen_train),
                                "history": history}

        # 4. generate, filter, regenerate (as run_demo) --------------------------------
        from reviewgen.experiments.filtering import ReviewFilter, generate_filtered, review_sampler, \
            write_filter_result

        # the levers ran before openings existed: none here (as opening_words=0)
        sample = review_sampler(generator, fmt, cfg, batch_size=cfg.per_label)
        filter_config = D._filter_config(cfg)
        seen_real = gen_train["text"].tolist() + clf_train["text"].tolist()
        review_filter = ReviewFilter(classifier, filter_config, train_texts=seen_real)
        t = Clock()
        filtered = generate_filtered(sample, labels, review_filter, keep_per_label=cfg.keep_per_label,
                                     batch_per_label=cfg.per_label, max_rounds=cfg.max_rounds, log=log)
        gen_wall, gen_cpu = t.stop()
        accepted, rejected = filtered.accepted, filtered.rejected
        write_filter_result(out_dir, filtered)
        log(f"generated+filtered in {gen_wall} s wall / {gen_cpu} s CPU\n" + filtered.counts.to_string())
        counts = filtered.counts
        summary["filter"] = jsonable(counts.reset_index().to_dict(orient="records"))

        # 5. metrics and the quality table (as run_demo) ---------------------------------
        generated = accepted + rejected
        y_true = np.array([r["label"] for r in generated])
        y_pred = np.array([r["predicted"] for r in generated])
        exact = _metrics.classification_report(y_true, y_pred, labels=labels)
        near = _metrics.classification_report(y_true, y_pred, labels=labels, near=True)
        t = Clock()
        tables, n_judge = quality(cfg, out_dir, accepted, generated, gen_train)
        q_wall, q_cpu = t.stop()

        row = {"variant": variant, "seed": cfg.seed, "max_new_tokens": cfg.max_new_tokens,
               "generator_train_rows": cfg.generator_train_rows, "lora_rank": cfg.lora_rank,
               "classifier_wall_s": clf_wall, "classifier_cpu_s": clf_cpu,
               "load_wall_s": load_wall, "load_cpu_s": load_cpu,
               "train_wall_s": train_wall, "train_cpu_s": train_cpu,
               "gen_wall_s": gen_wall, "gen_cpu_s": gen_cpu, "quality_wall_s": q_wall, "quality_cpu_s": q_cpu,
               "ppl_before": round(before["perplexity"], 3), "ppl_after": round(after["perplexity"], 3),
               "classifier_val_acc": round(clf_metrics["accuracy"], 4),
               "clf_agree_generated": round(float(exact.accuracy), 4),
               "clf_agree_near_generated": round(float(near.accuracy), 4)}
        for label in labels + ["all"]:
            key = label if label in counts.index else str(label)
            row[f"generated_{label}"] = int(counts.loc[key, "generated"])
            row[f"fallback_{label}"] = int(counts.loc[key, "fallback"])
        for which in ("accepted", "generated"):
            a = tables[which].loc["all"]
            row[f"{which}_n"] = int(a["n"])
            for k in ALL_KEYS:
                row[f"{which}_{k}"] = round(float(a[k]), 4) if k in a and a[k] == a[k] else ""

        # eval_csv.py on the accepted reviews --------------------------------------------
        if args.external:
            t = Clock()
            if external is None:
                gp0, cp0 = _data.prepare_generator_and_classifier(_data.load_sample("imdb"), "imdb10", seed=0,
                                                                  val_fraction=0.1)
                judge_x, real_texts, real_labels = judge_and_real()
                external = dict(judge=judge_x, real_texts=real_texts, real_labels=real_labels,
                                encoder=SentenceEncoder.from_pretrained("minilm", max_length=128),
                                train_texts=gp0.train["text"].tolist() + cp0.train["text"].tolist(),
                                base=Generator.from_pretrained("smollm2", max_length=256))
            rows = pd.read_csv(os.path.join(out_dir, "accepted.csv"))
            report = evaluate_generated(rows["text"].astype(str).tolist(), rows["label"].tolist(),
                                        external["real_texts"], external["real_labels"], judge=external["judge"],
                                        encoder=external["encoder"], train_texts=external["train_texts"],
                                        base_generator=external["base"])
            report.table.to_csv(os.path.join(out_dir, "external_quality.csv"))
            log(f"external (eval_csv.py) quality of the accepted reviews:\n{report}")
            a = report.table.loc["all"]
            for k in ALL_KEYS + ("perplexity",):
                row[f"ext_{k}"] = round(float(a[k]), 4) if k in a and a[k] == a[k] else ""
            row["ext_wall_s"], row["ext_cpu_s"] = t.stop()
        row["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        append_row(row)
        summary["row"] = row
        with open(os.path.join(out_dir, "summary.json"), "w") as f:
            json.dump(jsonable(summary), f, indent=2)
        log(f"=== {name} done: accepted MAUVE {row['accepted_mauve']} (real {row['accepted_mauve_real']}), "
            f"judge {row['accepted_judge_exact']} / {row['accepted_judge_near']}")
        del generator, review_filter
    shutil.rmtree(tmp_out, ignore_errors=True)
    log(f"seed {args.seed} finished in {t_all.stop()} (wall, CPU) s")


if __name__ == "__main__":
    main()
