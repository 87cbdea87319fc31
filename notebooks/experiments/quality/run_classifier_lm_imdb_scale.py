"""The lm_features filter classifier (SmolLM2-135M-Instruct's first 15 of 30 blocks + final
norm, mean-pooled over 256 tokens, EmbeddingClassifier(Cs=LM_FEATURE_CS, standardize=True,
tfidf_weight="cv")) at a larger IMDB scale, on the split of the "Classifier on real data,
larger runs" table (notebooks/results/classifier_full/embed.py):

* test: the balanced IMDB test slice, 500 per label (embed.imdb_test_slice(), 2,000 reviews);
* train: the 20,464 balanced train rows (the first 4 x 5,116 rows of embed.imdb_train_order()):
  all 5,116 per label, drawn with groupby().sample(random_state=0) (at the whole label, a seeded
  permutation) and put in label round-robin order, so the first n rows (n = 1,000, 2,000, 4,000,
  8,000, 20,464) are balanced and nested.
  Earlier runs sampled 1,000 per label (4,000 rows), then 2,000 per label (8,000 rows);
  groupby().sample with a fixed random_state nests: the first 4,000 rows of the 2,000-per-label
  order were checked to equal the 1,000-per-label order, and the first 8,000 rows of the
  5,116-per-label order to equal the 2,000-per-label order (same texts, order and labels), so the
  cached chunks stay valid. The train cache keeps its
  first name, "imdb_train4000" (TRAIN_CACHE; check_lm_c_grid_edge.py loads it by that name): chunk k
  holds rows 500k..500k+499 of the round-robin order, 41 chunks (000-040, the last of 464 rows) for
  the 20,464 rows; 000-015 are the 8,000 rows of the earlier runs. `fit` uses the sizes whose rows
  all have cached features (embed.log shows which chunks were computed and when).

    # 1. features (slow: ~0.5 s a review on one thread), cached as .npy in chunks of 500;
    #    chunks already on disk are skipped
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=. nice -n 19 \
        python notebooks/experiments/quality/run_classifier_lm_imdb_scale.py embed
    # 2. fits and scores (nothing chosen on the test slice)
    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=. nice -n 19 \
        python notebooks/experiments/quality/run_classifier_lm_imdb_scale.py fit

For each n: (a) TF-IDF + LR (reviewgen.tasks.baselines.tfidf_logistic_regression), (b) LM
features + LR (tfidf_weight=0), (c) the full recipe (tfidf_weight="cv", weight by 5-fold CV
on the n training rows); and (d) TF-IDF + LR on all 20,464 balanced train rows in
embed.imdb_train_order()'s order (the reproduction of the larger-runs table's 0.632; (a) at
n = 20,464 is the same rows in the round-robin order). Paired bootstrap
(1,000 resamples of the 2,000 test reviews, seed 0) of the accuracy gain of (c) over (a).
Writes notebooks/results/classifier_full/lm_features/{results.csv, config.json, timings.json}.
"""
import json
import os
import platform
import sys
import time

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
FULL = os.path.join(ROOT, "notebooks", "results", "classifier_full")
OUT = os.path.join(FULL, "lm_features")
CACHE = os.path.join(OUT, "cache")
sys.path.insert(0, FULL)
import embed as E  # noqa: E402  (the split code of the larger-runs table)

LAYERS, MAX_LENGTH, BATCH = 15, 256, 16
PER_LABEL = 5116  # every row of each label among the 20,464 balanced train rows
CHUNK = 500
SIZES = (1000, 2000, 4000, 8000, 20464)
TRAIN_CACHE = "imdb_train4000"  # historical name (first run: 4,000 rows); now the 20,464-row order, same first 8,000
SEED = 0


def balanced_train():
    """The 20,464 balanced train rows of the larger-runs table (fit_eval.imdb's first N rows)."""
    order = E.imdb_train_order()
    n = 4 * int(order["label"].value_counts().min())
    return order.iloc[:n].reset_index(drop=True)


def train_subset(balanced):
    """PER_LABEL rows per label (random_state=SEED), in label round-robin order."""
    sub = balanced.groupby("label").sample(PER_LABEL, random_state=SEED).copy()
    sub["rank2"] = sub.groupby("label").cumcount()
    return sub.sort_values(["rank2", "label"], kind="stable").reset_index(drop=True)


def embed_chunks(name, texts, encoder, timings):
    for k, start in enumerate(range(0, len(texts), CHUNK)):
        path = os.path.join(CACHE, f"{name}_k{LAYERS}_L{MAX_LENGTH}_chunk{k:03d}.npy")
        if os.path.exists(path):
            continue
        part = list(texts[start:start + CHUNK])
        wall, cpu = time.time(), time.process_time()
        vec = encoder.encode(part)
        wall, cpu = time.time() - wall, time.process_time() - cpu
        np.save(path + ".tmp.npy", vec.astype(np.float32))
        os.replace(path + ".tmp.npy", path)
        timings.append(dict(file=os.path.basename(path), rows=len(part), wall_s=round(wall, 1), cpu_s=round(cpu, 1),
                            wall_s_per_review=round(wall / len(part), 3)))
        with open(os.path.join(OUT, "timings.json"), "w") as f:
            json.dump(timings, f, indent=1)
        print(f"{name} chunk {k}: {len(part)} texts, {wall:.0f} s wall, {cpu:.0f} s cpu "
              f"({wall / len(part):.3f} s/review) {time.strftime('%H:%M:%S')}", flush=True)


def load_chunks(name, n):
    out, k = [], 0
    while sum(len(x) for x in out) < n:
        path = os.path.join(CACHE, f"{name}_k{LAYERS}_L{MAX_LENGTH}_chunk{k:03d}.npy")
        if not os.path.exists(path):
            break
        out.append(np.load(path))
        k += 1
    return np.concatenate(out)[:n] if out else np.zeros((0, 1), np.float32)


def embed():
    from reviewgen.tasks.encoder import SentenceEncoder
    from reviewgen.tasks.generator import load_generator_checkpoint

    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(OUT, "timings.json")
    timings = json.load(open(path)) if os.path.exists(path) else []
    t0 = time.time()
    checkpoint = load_generator_checkpoint("smollm2")
    encoder = SentenceEncoder.from_decoder(checkpoint, layers=LAYERS, max_length=MAX_LENGTH, batch_size=BATCH)
    print(f"encoder ready in {time.time() - t0:.0f} s", flush=True)
    embed_chunks("imdb_test2000", E.imdb_test_slice()["text"].tolist(), encoder, timings)
    embed_chunks(TRAIN_CACHE, train_subset(balanced_train())["text"].tolist(), encoder, timings)


class CachedFeatures:
    """An encoder answering from features computed once (text -> row)."""

    def __init__(self, texts, features):
        self.table = dict(zip(texts, np.asarray(features, np.float32)))

    def encode(self, texts):
        return np.stack([self.table[t] for t in texts])


def figures(truth, pred, labels):
    from reviewgen.core import metrics as M

    truth, pred = np.asarray(truth), np.asarray(pred)
    exact = M.classification_report(truth, pred, labels=labels)
    near = M.classification_report(truth, pred, labels=labels, near=True)
    # independent check of the C core's figures (labels 1, 2, 4, 5: near = |pred - true| <= 1 in value)
    assert abs(exact.accuracy - float((pred == truth).mean())) < 1e-9
    assert abs(near.accuracy - float((np.abs(pred - truth) <= 1).mean())) < 1e-9
    return dict(test_accuracy=exact.accuracy, test_near_accuracy=near.accuracy, test_macro_f1=exact.macro_f1,
                test_near_macro_f1=near.macro_f1)


def tfidf_predictions(train, test, seed=SEED):
    """Predictions of tfidf_logistic_regression's exact settings (the function returns figures only)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer = TfidfVectorizer(max_features=50000, ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                                 strip_accents="unicode")
    model = LogisticRegression(C=2.0, max_iter=2000, random_state=seed)
    model.fit(vectorizer.fit_transform(train["text"].tolist()), train["label"].to_numpy())
    return model.predict(vectorizer.transform(test["text"].tolist()))


def paired_bootstrap(correct_new, correct_ref, draws=1000, seed=SEED):
    gain = correct_new.astype(float) - correct_ref.astype(float)
    idx = np.random.default_rng(seed).integers(0, len(gain), (draws, len(gain)))
    low, high = np.percentile(gain[idx].mean(axis=1), [2.5, 97.5])
    return float(gain.mean()), float(low), float(high)


def write_config():
    import sklearn

    timings = json.load(open(os.path.join(OUT, "timings.json"))) if os.path.exists(os.path.join(OUT, "timings.json")) else []
    rows = sum(t["rows"] for t in timings)
    config = {
        "script": "notebooks/experiments/quality/run_classifier_lm_imdb_scale.py",
        "commands": ["OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=. nice -n 19 python "
                     "notebooks/experiments/quality/run_classifier_lm_imdb_scale.py embed",
                     "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=. nice -n 19 python "
                     "notebooks/experiments/quality/run_classifier_lm_imdb_scale.py fit"],
        "machine": f"2 shared CPU cores ({platform.processor() or platform.machine()}), one process of this script "
                   "at a time, OMP_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1. First run (test chunks 000-003, train "
                   "chunks 000-007, n up to 4,000): nice -n 10, another single-thread job running beside. Second run "
                   "(train chunks 008-015, the fit with n = 8,000): nice -n 19, another engineer compiling and "
                   "testing on the other core (load varied). Third run (train chunks 016-040, the fit with "
                   "n = 20,464): nice -n 19, other engineers' jobs (demo runs, builds, tests) on the 2 cores",
        "versions": {"python": platform.python_version(), "numpy": np.__version__, "scikit-learn": sklearn.__version__},
        "features": {"model": "smollm2 (SmolLM2-135M-Instruct), reviewgen.tasks.generator.load_generator_checkpoint",
                     "encoder": f"SentenceEncoder.from_decoder(checkpoint, layers={LAYERS}, max_length={MAX_LENGTH}, "
                                f"batch_size={BATCH}): first {LAYERS} of 30 blocks + final norm, mean-pooled, "
                                "not normalised (576 dims)",
                     "cache": f"notebooks/results/classifier_full/lm_features/cache/*_k{LAYERS}_L{MAX_LENGTH}_chunkNNN.npy, "
                              f"{CHUNK} rows a file (gitignored)"},
        "test": "embed.imdb_test_slice(): IMDB test.csv cleaned, label ceil(rating / 2), 500 per label sampled with "
                "random_state=0 (the same 2,000 reviews as the 'Classifier on real data, larger runs' table)",
        "train": "embed.imdb_train_order()[:20464] (the table's 20,464 balanced rows); "
                 f"{PER_LABEL:,} per label sampled from them with random_state={SEED}, label round-robin order; "
                 f"n = {list(SIZES)} are the first n rows (balanced, nested); the first 4,000 rows are the same texts "
                 "in the same order as the first run's 1,000-per-label subset, and the first 8,000 rows the same as "
                 "the second run's 2,000-per-label subset (both checked), so the cached chunks "
                 f"({TRAIN_CACHE}_*chunk000-007, 008-015) were reused. The 8,000 rows hold 14 texts twice (same "
                 "label each time; 4 of them within the first 4,000); 4 of the 8,000 texts also appear in the test "
                 "slice (1 within the first 1,000, 3 within the first 4,000). The 20,464 rows hold 66 texts more "
                 "than once (69 extra copies, at most 3 copies, same label each time) and 8 texts of the test slice",
        "recipes": {
            "a": "reviewgen.tasks.baselines.tfidf_logistic_regression (TF-IDF word 1-2-grams, min_df 2, 50k features, "
                 "sublinear tf; LR C=2.0, seed 0) on the n rows",
            "b": "EmbeddingClassifier(features, Cs=LM_FEATURE_CS, seed=0, standardize=True, tfidf_weight=0.0): "
                 "LogisticRegressionCV, C by 5-fold stratified CV on the n rows",
            "c": "EmbeddingClassifier(features, Cs=LM_FEATURE_CS, seed=0, standardize=True, tfidf_weight='cv'): "
                 "(b)'s head averaged with (a)'s TF-IDF head, weight on the 0.0-1.0 grid (step 0.1) by 5-fold "
                 "out-of-fold accuracy on the n rows (ties to the smaller weight)",
            "d": "(a) on all 20,464 balanced train rows (compare: 0.632 in results_imdb.csv, weight-1.0 head)",
        },
        "selection": "nothing chosen on the test slice: C and the TF-IDF weight by CV on the training rows",
        "metrics": "reviewgen.core.metrics.classification_report (exact and near=True: |pred - true| <= 1 in label "
                   "value on labels 1,2,4,5, i.e. 1<->2 and 4<->5); macro F1",
        "bootstrap": "paired: 1,000 resamples (with replacement) of the 2,000 test reviews, numpy default_rng(0); "
                     "95% percentile interval of accuracy(c) - accuracy(a) (and (b) - (a))",
        "embedding_timing": {"rows": rows, "wall_s": round(sum(t["wall_s"] for t in timings), 1),
                             "cpu_s": round(sum(t["cpu_s"] for t in timings), 1),
                             "wall_s_per_review": round(sum(t["wall_s"] for t in timings) / max(rows, 1), 3),
                             "chunks": timings},
        "outputs": ["results.csv", "fit_details.json", "timings.json", "embed.log", "fit.log"],
    }
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(config, f, indent=1)


def fit():
    from reviewgen.experiments.demo import LM_FEATURE_CS
    from reviewgen.experiments.filtering import EmbeddingClassifier
    from reviewgen.tasks.baselines import tfidf_logistic_regression

    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # scikit-learn 1.9's LogisticRegressionCV notices
    write_config()
    labels = [1, 2, 4, 5]
    test = E.imdb_test_slice()
    balanced = balanced_train()
    sub = train_subset(balanced)
    test_vec = load_chunks("imdb_test2000", len(test))
    train_vec = load_chunks(TRAIN_CACHE, len(sub))
    assert len(test_vec) == len(test), f"only {len(test_vec)} of {len(test)} test features cached"
    sizes = [n for n in SIZES if n <= len(train_vec)]
    print(f"test {len(test)} {test['label'].value_counts().sort_index().to_dict()}; balanced train {len(balanced)} "
          f"{balanced['label'].value_counts().sort_index().to_dict()}; train features {len(train_vec)}; sizes {sizes}",
          flush=True)
    encoder = CachedFeatures(sub["text"].tolist()[:len(train_vec)] + test["text"].tolist(),
                             np.concatenate([train_vec, test_vec]))
    truth = test["label"].to_numpy()
    rows, extra = [], dict(sizes=sizes, train_features_cached=int(len(train_vec)), per_n={})
    out_csv = os.path.join(OUT, "results.csv")

    def save():
        pd.DataFrame(rows).to_csv(out_csv, index=False)
        with open(os.path.join(OUT, "fit_details.json"), "w") as f:
            json.dump(extra, f, indent=1, default=float)

    for n in sizes:
        train = sub.iloc[:n].reset_index(drop=True)
        counts = train["label"].value_counts().sort_index().to_dict()
        assert len(set(counts.values())) == 1, counts
        t0 = time.time()
        base = tfidf_logistic_regression(train["text"].tolist(), train["label"].to_numpy(), test["text"].tolist(),
                                         truth, labels=labels, seed=SEED)
        pred_a = tfidf_predictions(train, test)
        t_a = time.time() - t0
        fig_a = figures(truth, pred_a, labels)
        assert abs(fig_a["test_accuracy"] - base["accuracy"]) < 1e-12, (fig_a, base["accuracy"])
        t0 = time.time()
        alone = EmbeddingClassifier(encoder, Cs=LM_FEATURE_CS, seed=SEED, standardize=True, tfidf_weight=0.0)
        alone.fit(train["text"].tolist(), train["label"].tolist())
        pred_b = alone.predict(test["text"].tolist())
        t_b = time.time() - t0
        t0 = time.time()
        full = EmbeddingClassifier(encoder, Cs=LM_FEATURE_CS, seed=SEED, standardize=True, tfidf_weight="cv")
        full.fit(train["text"].tolist(), train["label"].tolist())
        pred_c = full.predict(test["text"].tolist())
        t_c = time.time() - t0
        weight = full.tfidf_weight
        # checks: the recipe's LM head is (b)'s head; its TF-IDF head is (a)
        head_only = np.asarray(full.labels)[full.head.predict_proba(full._features(test["text"].tolist())).argmax(1)]
        checks = dict(lm_head_equals_b=bool((head_only == pred_b).all()))
        if full.tfidf is not None:
            checks["tfidf_head_equals_a"] = bool((full.tfidf.predict(test["text"].tolist()) == pred_a).all())
        correct = {k: (p == truth) for k, p in (("a", pred_a), ("b", pred_b), ("c", pred_c))}
        gain_c = paired_bootstrap(correct["c"], correct["a"])
        gain_b = paired_bootstrap(correct["b"], correct["a"])
        common = dict(train_rows=n, train_per_label=n // 4, test_rows=len(test))
        rows.append(dict(recipe="(a) TF-IDF + LR (reviewgen.tasks.baselines)", tfidf_weight=1.0, C=2.0,
                         cv_accuracy=full.cv_accuracy.get(1.0), **common, **fig_a, fit_seconds=round(t_a, 1)))
        rows.append(dict(recipe="(b) LM features + LR (tfidf_weight 0)", tfidf_weight=0.0, C=alone.C,
                         cv_accuracy=full.cv_accuracy.get(0.0), **common, **figures(truth, pred_b, labels),
                         gain_vs_a=gain_b[0], gain_vs_a_ci_low=gain_b[1], gain_vs_a_ci_high=gain_b[2],
                         fit_seconds=round(t_b, 1)))
        rows.append(dict(recipe='(c) LM features + LR averaged with TF-IDF + LR, weight by 5-fold CV (tfidf_weight="cv")',
                         tfidf_weight=weight, C=full.C, cv_accuracy=full.cv_accuracy.get(weight), **common,
                         **figures(truth, pred_c, labels), gain_vs_a=gain_c[0], gain_vs_a_ci_low=gain_c[1],
                         gain_vs_a_ci_high=gain_c[2], fit_seconds=round(t_c, 1)))
        extra["per_n"][str(n)] = dict(label_counts=counts, chosen_weight=weight, C_b=alone.C, C_c=full.C,
                                      cv_accuracy_per_weight=full.cv_accuracy, checks=checks,
                                      tfidf_baseline_features=base["features"])
        save()
        print(f"n={n}: (a) {fig_a['test_accuracy']:.4f}  (b) {correct['b'].mean():.4f} (C {alone.C})  "
              f"(c) {correct['c'].mean():.4f} (w {weight}, C {full.C})  gain c-a {gain_c[0]:+.4f} "
              f"[{gain_c[1]:+.4f}, {gain_c[2]:+.4f}]  cv {full.cv_accuracy}  checks {checks}  "
              f"{t_a:.0f}/{t_b:.0f}/{t_c:.0f} s  {time.strftime('%H:%M:%S')}", flush=True)

    if os.environ.get("SKIP_FULL_TFIDF") != "1":
        t0 = time.time()
        base = tfidf_logistic_regression(balanced["text"].tolist(), balanced["label"].to_numpy(),
                                         test["text"].tolist(), truth, labels=labels, seed=SEED)
        rows.append(dict(recipe="(d) TF-IDF + LR on all balanced train rows (reviewgen.tasks.baselines)",
                         tfidf_weight=1.0, C=2.0, train_rows=len(balanced), train_per_label=len(balanced) // 4,
                         test_rows=len(test), test_accuracy=base["accuracy"], test_near_accuracy=base["near_accuracy"],
                         test_macro_f1=base["macro_f1"], test_near_macro_f1=base["near_macro_f1"],
                         fit_seconds=round(time.time() - t0, 1)))
        extra["full_tfidf_reproduces_0.632"] = bool(round(base["accuracy"], 3) == 0.632)
        save()
        print(f"(d) TF-IDF + LR on {len(balanced)}: {base['accuracy']:.4f} / {base['near_accuracy']:.4f} "
              f"({time.time() - t0:.0f} s)", flush=True)
    pd.set_option("display.width", 250)
    print(pd.DataFrame(rows).drop(columns=["recipe"]).round(4).to_string())


if __name__ == "__main__":
    {"embed": embed, "fit": fit}[sys.argv[1]]()
