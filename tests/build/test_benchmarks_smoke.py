"""Keeps the side-by-side benchmarks (benchmarks/) from rotting: each script runs
with --quick (tiny configs, one process) and must finish, produce a finite
rate for both sides of every workload, and find that both sides computed the
same function. Nothing here is timed. A family the core does not support yet
is skipped; a script that crashes for a supported family fails."""
import json
import math
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from reviewgen.core._native import _core  # noqa: E402
from reviewgen.core.models import ModelConfig  # noqa: E402

BENCH_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks")
sys.path.insert(0, BENCH_DIR)

import harness  # noqa: E402

# A tiny config of each family, only to ask the core whether it builds one.
FAMILY_PROBES = {
    "gpt2": dict(vocab_size=16, n_positions=8, n_layer=1, n_head=2, n_embd=8),
    "encoder": dict(vocab_size=16, n_positions=8, n_layer=1, n_head=2, n_embd=8, norm_eps=1e-12,
                    pre_norm=False, embed_norm=True, final_norm=False, activation="gelu_erf", causal=False,
                    head="cls_distilbert", tie_word_embeddings=False, num_labels=3),
    "llama": dict(vocab_size=16, n_positions=8, n_layer=1, n_head=2, n_kv_head=1, n_embd=8, n_inner=12,
                  norm="rmsnorm", position="rope", activation="swiglu", bias=False),
}


def require_family(family):
    try:
        _core.Model(ModelConfig(**FAMILY_PROBES[family]).to_dict())
    except (_core.UnsupportedError, NotImplementedError) as error:
        pytest.skip(f"the core does not support {family} yet: {error}")


@pytest.mark.parametrize("family", ["gpt2", "encoder", "llama"])
def test_benchmark_script_quick(family, tmp_path):
    require_family(family)
    out = tmp_path / f"{family}.json"
    script = os.path.join(BENCH_DIR, f"bench_{family}.py")
    proc = subprocess.run([sys.executable, script, "--quick", "--repeats", "1", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{script} --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    report = json.loads(out.read_text())
    assert report["quick"] and report["threads"] == 1
    rows = report["rows"]
    assert len(rows) >= 2
    for row in rows:
        for side in ("rate_reviewgen", "rate_torch"):
            assert math.isfinite(row[side]) and row[side] > 0, f"{row['workload']}: {side} = {row[side]}"
        assert "DIFFERENT" not in row["check"], f"{row['workload']}: the two sides disagree: {row['check']}"
        # one summary line per workload, in the promised format
        assert f"{row['workload']}: reviewgen " in proc.stdout and "ratio" in proc.stdout


def test_gpt2_reviewgen_side_runs_isolated_without_torch(tmp_path):
    """The full runs put each side in its own process; the reviewgen one must
    not pull torch in (assert_no_torch raises there) and reports its memory."""
    require_family("gpt2")
    import bench_gpt2

    eos = bench_gpt2.build_checkpoint(str(tmp_path), bench_gpt2.QUICK["model"])
    workload = bench_gpt2.workloads(bench_gpt2.QUICK, str(tmp_path), eos)[0]
    result = harness.measure(bench_gpt2.__file__, workload.reviewgen_fn, dict(workload.args, repeats=1),
                             threads=1, timeout=120)
    assert result["items"] == bench_gpt2.QUICK["batch"] * bench_gpt2.QUICK["seq"]
    assert result["seconds"] > 0 and math.isfinite(result["check"])
    assert result["peak_rss_mib"] >= result["import_rss_mib"] > 0
    assert set(result["phases"]) == {"forward", "backward", "optimizer"}


def test_harness_reports_a_crashing_workload(tmp_path):
    path = tmp_path / "bench_crash.py"
    path.write_text("def ok(args):\n    return {'threads': args['threads'], 'isolated': args['isolated']}\n"
                    "def crash(args):\n    raise ValueError('workload exploded')\n")
    result = harness.measure(str(path), "ok", {}, threads=3, timeout=60)
    assert result["threads"] == 3 and result["isolated"] is True and result["peak_rss_mib"] > 0
    with pytest.raises(RuntimeError, match="workload exploded"):
        harness.measure(str(path), "crash", {}, threads=1, timeout=60)
