"""bench/collect_evaluations.py: results files of hyperrep evaluate, gathered per run, split and target."""

import json

import numpy as np
import pytest
from tiny_models import load_bench


@pytest.fixture(scope="module")
def bench():
    return load_bench("collect_evaluations")


def _results(rng, targets):
    values = {
        (m, s, t): float(rng.uniform(-0.2, 1))
        for m in ("hyperrep", "s(W)")
        for s in ("validation", "test")
        for t in targets
    }
    records = [
        {"method": m, "split": s, "target": t, "metric": metric, "value": v if metric == "r2" else 0.5}
        for (m, s, t), v in values.items()
        for metric in ("r2", "kendall_tau")
    ]
    records.append(
        {"method": "hyperrep", "split": "test", "target": targets[0], "metric": "r2", "value": 9.0, "rows": "final"}
    )
    deltas = [
        {"target": t, "subset": subset, "metric": "r2", "difference": 0.1, "low": 0.05, "high": 0.15}
        for t in targets
        for subset in ("all_epochs", "final_epoch")
    ]
    document = {
        "methods": ["s(W)", "hyperrep"],
        "model": "m",
        "results": records,
        "final_checkpoints": {"results": deltas},
    }
    return document, values


@pytest.mark.parametrize("seed", range(3))
def test_every_run_split_and_target_is_read_as_a_percentage(bench, tmp_path, seed):
    rng = np.random.default_rng(seed)
    targets = [f"target_{k}" for k in range(rng.integers(1, 6))]
    arguments, expected = [], {}
    for run in range(2):
        document, values = _results(rng, targets)
        path = tmp_path / f"{run}.json"
        path.write_text(json.dumps(document))
        arguments += ["--run", f"run {run}={path}"]
        expected[f"run {run}"] = values
    out = tmp_path / "out.json"
    assert bench.main([*arguments, "--what", "w", "--command", "c", "--out", str(out)]) == 0
    collected = json.loads(out.read_text())
    for name, values in expected.items():
        for (method, split, target), value in values.items():
            if method == "hyperrep":  # the final-checkpoint record (rows) is not the split's
                assert collected["runs"][name][split][target] == round(100 * value, 2)
        assert collected["runs"][name]["test difference to s(W) [95 %]"] == {t: [10.0, 5.0, 15.0] for t in targets}
    first = expected["run 0"]
    assert collected["s(W)"]["test"] == {t: round(100 * first[("s(W)", "test", t)], 2) for t in targets}
    assert collected["commands"] == ["c"]


def test_a_file_without_the_baseline_is_refused(bench, tmp_path):
    document, _ = _results(np.random.default_rng(0), ["a"])
    document["methods"] = ["hyperrep"]
    (tmp_path / "r.json").write_text(json.dumps(document))
    with pytest.raises(SystemExit, match="no s\\(W\\) results"):
        bench.main(["--run", f"x={tmp_path / 'r.json'}", "--what", "w", "--out", str(tmp_path / "o.json")])
