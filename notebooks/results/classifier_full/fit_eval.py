"""Issue #16, the classifier on real data, larger runs: TF-IDF + LR against the embedding recipe
(reviewgen.experiments.filtering.EmbeddingClassifier: frozen mean-pooled all-MiniLM-L6-v2 + LR with
C by 5-fold CV, and its probability average with TF-IDF + LR), on the same rows, from the
embeddings cached by embed.py.

IMDB: train rows = the first N rows of embed.py's label round-robin order of IMDB train (N = the
rows embedded, capped at the balanced 4 x 5,116 unless IMDB_TRAIN_ROWS says otherwise); a
stratified 10% of them is the validation slice that picks the TF-IDF weight (0.3 / 0.5 / 0.7;
heads fitted on the other 90%); both recipes are then refitted on all N rows and scored on the
balanced IMDB test slice (2,000 = 500 per label, embed.py). imdb_tfidf25k: TF-IDF alone fitted on
all 25,000 train rows, scored on the slice and on the full (unbalanced) 25,000-review test set.

SST-5: the rows of notebooks/experiments/minilm_sst5.json (train 8,534 / dev 1,100 / test 2,210);
the weight is picked on dev, the heads fitted on train, scored on test.

    PYTHONPATH=. python notebooks/results/classifier_full/fit_eval.py sst5 | imdb | imdb_tfidf25k
"""
import glob
import json
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import embed as E  # noqa: E402

from reviewgen.core import metrics as M  # noqa: E402
from reviewgen.experiments.filtering import EmbeddingClassifier  # noqa: E402
from reviewgen.experiments.study import ClassifierStudy, study_split  # noqa: E402
from reviewgen.tasks.baselines import tfidf_logistic_regression  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = (0.0, 0.3, 0.5, 0.7, 1.0)
CHOICES = (0.3, 0.5, 0.7)
FINE = tuple(round(0.1 * k, 1) for k in range(11))   # the finer grid, also picked on the selection rows
ALPHAS = (1.0, 3.0)   # scale of the MiniLM features beside the TF-IDF ones in one LR (picked likewise)


class CachedEncoder:
    """Stands in for SentenceEncoder: looks the texts' embeddings up in embed.py's cache."""

    def __init__(self, texts, vectors):
        self.table = dict(zip(list(texts), np.asarray(vectors, np.float32)))

    def encode(self, texts):
        return np.stack([self.table[t] for t in texts])


def figures(truth, pred, labels):
    exact = M.classification_report(np.asarray(truth), np.asarray(pred), labels=labels)
    near = M.classification_report(np.asarray(truth), np.asarray(pred), labels=labels, near=True)
    return dict(n=len(truth), accuracy=exact.accuracy, near_accuracy=near.accuracy,
                macro_f1=exact.macro_f1, near_macro_f1=near.macro_f1)


def mixed(clf, texts):
    """{weight: predictions} from one fitted EmbeddingClassifier's two heads."""
    p_emb = clf.head.predict_proba(clf.encoder.encode(texts))
    p_tf = clf.tfidf.predict_proba(texts)
    return {w: np.asarray(clf.labels)[((1 - w) * p_emb + w * p_tf).argmax(1)] for w in sorted(set(WEIGHTS + FINE))}


def joint_fit(train, encoder, alpha):
    """One LR on [TF-IDF features, alpha * MiniLM embedding] (TF-IDF head's settings)."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=50000,
                          strip_accents="unicode")
    texts = train["text"].tolist()
    x = sparse.hstack([vec.fit_transform(texts), sparse.csr_matrix(alpha * encoder.encode(texts))]).tocsr()
    model = LogisticRegression(C=2.0, max_iter=2000, random_state=0).fit(x, train["label"].to_numpy())

    def predict(frame):
        t = frame["text"].tolist()
        return model.predict(sparse.hstack([vec.transform(t), sparse.csr_matrix(alpha * encoder.encode(t))]).tocsr())
    return predict


def compare(name, train, select_fit, select_eval, test, encoder, rows_out):
    """Pick the weight on select_eval (heads fitted on select_fit), refit on train, score test."""
    labels = sorted(set(train["label"].tolist()))
    t0 = time.time()
    sel = EmbeddingClassifier(encoder, seed=0, tfidf_weight=0.5).fit(select_fit["text"].tolist(),
                                                                      select_fit["label"].tolist())
    on_val = {w: figures(select_eval["label"], p, labels) for w, p in mixed(sel, select_eval["text"].tolist()).items()}
    chosen = max(CHOICES, key=lambda w: (on_val[w]["accuracy"], on_val[w]["macro_f1"]))
    fine = max(FINE, key=lambda w: (on_val[w]["accuracy"], on_val[w]["macro_f1"]))
    final = EmbeddingClassifier(encoder, seed=0, tfidf_weight=0.5).fit(train["text"].tolist(), train["label"].tolist())
    on_test = {w: figures(test["label"], p, labels) for w, p in mixed(final, test["text"].tolist()).items()}
    seconds = time.time() - t0
    rows_out.append(dict(data=name, recipe=f"averaged, weight on the 0.1 grid picked on the selection rows: {fine}",
                         tfidf_weight=fine, chosen=True, C=final.C, train_rows=len(train), select_rows=len(select_eval),
                         **{f"val_{k}": v for k, v in on_val[fine].items() if k != "n"},
                         **{f"test_{k}": v for k, v in on_test[fine].items()}, fit_seconds=round(seconds, 1)))
    if os.environ.get("JOINT", "1") == "1":
        t1 = time.time()
        val_joint = {a: figures(select_eval["label"], joint_fit(select_fit, encoder, a)(select_eval), labels)
                     for a in ALPHAS}
        alpha = max(ALPHAS, key=lambda a: (val_joint[a]["accuracy"], val_joint[a]["macro_f1"]))
        test_joint = figures(test["label"], joint_fit(train, encoder, alpha)(test), labels)
        rows_out.append(dict(data=name, recipe=f"one LR on TF-IDF + {alpha} x MiniLM features (alpha picked on the "
                             "selection rows)", tfidf_weight=None, chosen=True, train_rows=len(train),
                             select_rows=len(select_eval), **{f"val_{k}": v for k, v in val_joint[alpha].items() if k != "n"},
                             **{f"test_{k}": v for k, v in test_joint.items()}, fit_seconds=round(time.time() - t1, 1)))
        print(f"{name}: joint LR val accuracy per alpha {({a: round(v['accuracy'], 4) for a, v in val_joint.items()})}",
              flush=True)
    for w in WEIGHTS:
        recipe = ("TF-IDF + LR" if w == 1.0 else "MiniLM mean + LR" if w == 0.0
                  else f"MiniLM mean + LR averaged with TF-IDF + LR, weight {w}")
        rows_out.append(dict(data=name, recipe=recipe, tfidf_weight=w, chosen=(w == chosen), C=final.C,
                             train_rows=len(train), select_rows=len(select_eval),
                             **{f"val_{k}": v for k, v in on_val[w].items() if k != "n"},
                             **{f"test_{k}": v for k, v in on_test[w].items()}, fit_seconds=round(seconds, 1)))
    # the package's baseline function on the same rows (must agree with weight 1.0)
    if os.environ.get("CHECK_BASELINE", "1") != "1":
        print(f"{name}: chosen weight {chosen} (fine grid {fine}); {seconds:.0f} s", flush=True)
        return chosen, None
    base = tfidf_logistic_regression(train["text"].tolist(), train["label"].to_numpy(),
                                     test["text"].tolist(), test["label"].to_numpy(), labels=labels, seed=0)
    print(f"{name}: chosen weight {chosen} (fine grid {fine}); TF-IDF baseline function accuracy {base['accuracy']:.4f} "
          f"(weight 1.0 head: {on_test[1.0]['accuracy']:.4f}); {seconds:.0f} s", flush=True)
    return chosen, base


def imdb(rows_out, extra):
    test = E.imdb_test_slice()
    test_vec = np.load(os.path.join(E.CACHE, "imdb_test2000_256.npy"))
    order = E.imdb_train_order()
    chunks = sorted(glob.glob(os.path.join(E.CACHE, "imdb_train_256_chunk*.npy")))
    vecs = np.concatenate([np.load(c) for c in chunks]) if chunks else np.zeros((0, 384), np.float32)
    balanced = 4 * int(order["label"].value_counts().min())
    n = min(len(vecs), int(os.environ.get("IMDB_TRAIN_ROWS", balanced)))
    train = order.iloc[:n].reset_index(drop=True)
    encoder = CachedEncoder(list(train["text"]) + list(test["text"]), np.concatenate([vecs[:n], test_vec]))
    val = train.groupby("label").sample(frac=0.1, random_state=0)
    fit = train.drop(val.index)
    print(f"IMDB: {n} train rows, per label {train['label'].value_counts().sort_index().to_dict()}", flush=True)
    chosen, _ = compare("imdb", train, fit, val, test, encoder, rows_out)
    extra["imdb_train_rows"] = n
    extra["imdb_chosen_weight"] = chosen


def imdb_tfidf25k(rows_out, extra):
    """TF-IDF + LR (the baseline's settings) fitted once on all 25,000 IMDB train rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    labels = [1, 2, 4, 5]
    full = E.imdb("train")
    t0 = time.time()
    vectorizer = TfidfVectorizer(max_features=50000, ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                                 strip_accents="unicode")
    model = LogisticRegression(C=2.0, max_iter=2000, random_state=0).fit(
        vectorizer.fit_transform(full["text"].tolist()), full["label"].to_numpy())
    for name, test in (("imdb test slice 2,000", E.imdb_test_slice()), ("imdb full test 25,000", E.imdb("test"))):
        pred = model.predict(vectorizer.transform(test["text"].tolist()))
        rows_out.append(dict(data=name, recipe="TF-IDF + LR on all 25,000 train (unbalanced)", tfidf_weight=1.0,
                             chosen=True, train_rows=len(full),
                             **{f"test_{k}": v for k, v in figures(test["label"], pred, labels).items()}))
    extra["imdb_tfidf_all25k_seconds"] = round(time.time() - t0, 1)
    extra["imdb_train_label_counts"] = full["label"].value_counts().sort_index().to_dict()


def sst5(rows_out, extra):
    with open(os.path.join(HERE, "..", "..", "experiments", "minilm_sst5.json")) as f:
        cfg = json.load(f)
    for split in ("train", "dev", "test"):
        cfg[split] = os.path.join(E.DATA, "sst5", f"{split}.csv")
    study = ClassifierStudy.from_dict(cfg) if hasattr(ClassifierStudy, "from_dict") else ClassifierStudy(
        **{k: v for k, v in cfg.items() if k != "training"})
    train, dev, test, _ = study_split(study)
    texts, vecs = [], []
    for split in ("train", "dev", "test"):
        texts += E.sst5(split)["text"].tolist()
        vecs.append(np.load(os.path.join(E.CACHE, f"sst5_{split}_64.npy")))
    encoder = CachedEncoder(texts, np.concatenate(vecs))
    missing = sum(t not in encoder.table for t in pd.concat([train, dev, test])["text"])
    assert missing == 0, f"{missing} SST-5 texts without an embedding"
    print(f"SST-5: train {len(train)}, dev {len(dev)}, test {len(test)}", flush=True)
    chosen, _ = compare("sst5", train, train, dev, test, encoder, rows_out)
    extra["sst5_rows"] = dict(train=len(train), dev=len(dev), test=len(test))
    extra["sst5_chosen_weight"] = chosen


def main():
    rows, extra = [], {}
    which = sys.argv[1:] or ["sst5", "imdb"]
    for part in which:
        {"sst5": sst5, "imdb": imdb, "imdb_tfidf25k": imdb_tfidf25k}[part](rows, extra)
    table = pd.DataFrame(rows)
    suffix = "_".join(which)
    table.to_csv(os.path.join(HERE, f"results_{suffix}.csv"), index=False)
    with open(os.path.join(HERE, f"extra_{suffix}.json"), "w") as f:
        json.dump(extra, f, indent=1, default=float)
    pd.set_option("display.width", 250)
    print(table[[c for c in ["data", "tfidf_weight", "chosen", "train_rows", "val_accuracy", "test_accuracy",
                 "test_near_accuracy", "test_macro_f1", "test_near_macro_f1"] if c in table]].to_string())
    print(extra)


if __name__ == "__main__":
    main()
