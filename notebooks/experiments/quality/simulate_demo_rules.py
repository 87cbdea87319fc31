"""Filter rules replayed on one demo run's generated reviews (accepted + rejected,
each with the filter classifier's predicted label and p(wanted)), scored by the
independent judge; per label, so a starved rating shows.

    PYTHONPATH=. python notebooks/experiments/quality/simulate_demo_rules.py DEMO_OUT_DIR

Copies and duplicates stay dropped; only the label rule varies. Writes
DEMO_OUT_DIR/rule_simulation.csv.
"""
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_generator import judge_and_real  # noqa: E402


def top_per_label(frame, mask, n):
    keep = np.zeros(len(frame), bool)
    for label in frame["label"].unique():
        idx = np.flatnonzero((frame["label"] == label).to_numpy() & mask)
        order = idx[np.argsort(-frame["wanted_probability"].to_numpy()[idx])]
        keep[order[:n]] = True
    return keep


def main(out_dir):
    frame = pd.concat([pd.read_csv(os.path.join(out_dir, f)) for f in ("accepted.csv", "rejected.csv")],
                      ignore_index=True)
    frame = frame[~frame["reason"].isin(["empty", "copy", "duplicate"])].reset_index(drop=True)
    judge, _, _ = judge_and_real()
    judged = np.asarray(judge.predict(frame["text"].astype(str).tolist()))
    wanted, predicted, p = frame["label"].to_numpy(), frame["predicted"].to_numpy(), frame["wanted_probability"].to_numpy()
    exact = predicted == wanted
    rules = {"no filter": np.ones(len(frame), bool), "exact": exact, "exact, p>=0.4": exact & (p >= 0.4),
             "near": np.abs(predicted - wanted) <= 1}
    for n in (10, 15):
        rules[f"top-{n} by p(wanted)"] = top_per_label(frame, np.ones(len(frame), bool), n)
    for n in (10, 15):  # exact p>=0.4 first, then the best of the rest by p(wanted), up to n per label
        keep = exact & (p >= 0.4)
        for label in frame["label"].unique():
            have = int((keep & (wanted == label)).sum())
            if have < n:
                keep |= top_per_label(frame, ~keep & (wanted == label), n - have)
        rules[f"exact p>=0.4, filled to {n} by p(wanted)"] = keep
    rows = []
    for name, keep in rules.items():
        for label in sorted(set(wanted)) + ["all"]:
            sel = keep & ((wanted == label) if label != "all" else True)
            rows.append(dict(rule=name, label=label, kept=int(sel.sum()),
                             judge_exact=float((judged[sel] == wanted[sel]).mean()) if sel.any() else np.nan,
                             judge_near=float((np.abs(judged[sel] - wanted[sel]) <= 1).mean()) if sel.any() else np.nan))
    table = pd.DataFrame(rows)
    table.to_csv(os.path.join(out_dir, "rule_simulation.csv"), index=False)
    print(table.pivot(index="rule", columns="label", values=["kept", "judge_exact", "judge_near"]).round(2).to_string())


if __name__ == "__main__":
    main(sys.argv[1])
