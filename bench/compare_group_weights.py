"""Group-weighted probes against the paper's shared-α probe on z̄ ⊕ s(W), each against s(W), on one or more zoos.

    python bench/compare_group_weights.py --model runs/tetris_seed --zoo zoos_built:tetris_seed --max-rows 0 \
        --model runs/tetris_hyp --zoo zoos_built:tetris_hyp --max-rows 10000 --out bench/results/group_weights.json

For each (model, zoo): embeds every split once (z̄ ⊕ s(W), whatever the model's config says), fits the probes of
``hyperrep evaluate`` on s(W), on z̄ ⊕ s(W) with one α (or C) for all columns, and on z̄ ⊕ s(W) with the group
weights (``--group-weights``), and gives each target's test score, its difference to s(W) with the 95 % paired
bootstrap interval over the test networks (1,000 resamples), and the chosen group weights. The summary counts, per
task, the mean difference to s(W) and the targets whose interval lies above / below 0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def compare(model_dir: str, zoo: str, max_rows: int | None, alphas: list[float] | None = None) -> dict:
    from hyperrep_hf.probing.baselines import compute_baseline_features
    from hyperrep_hf.probing.evaluation import (
        _targets_by_split,
        compute_embeddings,
        load_encoder,
        load_zoo_arrays,
        representation_groups,
        select_targets,
    )
    from hyperrep_hf.probing.probes import ALPHA_GRID, _missing_mask, fit_probes
    from hyperrep_hf.probing.report import bootstrap_difference

    arrays = load_zoo_arrays(zoo, max_rows, 0)
    targets, categorical = select_targets(arrays)
    targets_by_split = _targets_by_split(arrays, targets)
    model, processor = load_encoder(model_dir, True)
    embeddings = {split: compute_embeddings(model, processor, vectors) for split, vectors in arrays.vectors.items()}
    statistics_features = compute_baseline_features("s(W)", arrays.vectors, arrays.info["architecture"])
    groups = representation_groups(model.config, processor, True)
    methods = {
        "s(W)": (statistics_features, None),
        "shared α": (embeddings, None),
        "group weights": (embeddings, groups),
    }
    reports, seconds = {}, {}
    for name, (features, feature_groups) in methods.items():
        started = time.perf_counter()
        reports[name] = fit_probes(
            features, targets_by_split, categorical, method=name, feature_groups=feature_groups,
            alphas=alphas or ALPHA_GRID,
        )  # fmt: skip
        seconds[name] = round(time.perf_counter() - started, 1)
    rows = {}
    for target in targets:
        if any(target not in report.probes for report in reports.values()):
            continue
        metric = "accuracy" if target in categorical else "r2"
        truth = np.asarray(targets_by_split["test"][target])
        present = ~_missing_mask(truth)  # the probes drop the same rows
        predictions = {
            name: reports[name].probes[target].predict(methods[name][0]["test"][present]) for name in methods
        }
        row = {"metric": metric}
        for name in methods:
            row[name] = 100 * next(
                r.value for r in reports[name].results if (r.target, r.split, r.metric) == (target, "test", metric)
            )
        for name in ("shared α", "group weights"):
            interval = bootstrap_difference(
                metric, truth[present], predictions[name], predictions["s(W)"], arrays.model_ids["test"][present]
            )
            row[f"{name} − s(W)"] = [100 * interval[key] for key in ("difference", "low", "high")]
        row["chosen group weights"] = reports["group weights"].probes[target].group_weights
        rows[target] = row
    summary = {}
    for task, metric in (("regression", "r2"), ("classification", "accuracy")):
        task_rows = [row for row in rows.values() if row["metric"] == metric]
        if not task_rows:
            continue
        summary[task] = {
            name: {
                "mean difference to s(W)": round(statistics.mean(row[f"{name} − s(W)"][0] for row in task_rows), 2),
                "ahead (interval above 0)": sum(row[f"{name} − s(W)"][1] > 0 for row in task_rows),
                "behind (interval below 0)": sum(row[f"{name} − s(W)"][2] < 0 for row in task_rows),
            }
            for name in ("shared α", "group weights")
        }
        summary[task]["targets"] = len(task_rows)
    return {
        "model": model_dir,
        "zoo": zoo,
        "max_rows": max_rows,
        "ridge_alphas": list(alphas or ALPHA_GRID),
        "rows": {split: int(values.shape[0]) for split, values in arrays.vectors.items()},
        "feature_groups": list(groups),
        "probe_seconds": seconds,
        "summary": summary,
        "targets": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="model folder (repeat with --zoo)")
    parser.add_argument("--zoo", action="append", required=True, help="DIR:CONFIG, one per --model")
    parser.add_argument(
        "--max-rows", type=int, action="append", help="rows per split kept (whole models, seeded): once for every "
        "zoo, or once per --model (0: all)",
    )  # fmt: skip
    parser.add_argument(
        "--ridge-alphas", type=float, nargs="+", help="the ridge grid of every probe (default: the paper's)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the JSON file written")
    arguments = parser.parse_args(argv)
    max_rows = arguments.max_rows or [0]
    if len(max_rows) == 1:
        max_rows = max_rows * len(arguments.model)
    if not len(arguments.model) == len(arguments.zoo) == len(max_rows):
        parser.error("give one --zoo per --model, and --max-rows once or once per --model")
    results = []
    for model_dir, zoo, rows in zip(arguments.model, arguments.zoo, max_rows, strict=True):
        result = compare(model_dir, zoo, rows or None, arguments.ridge_alphas)
        results.append(result)
        print(json.dumps({"zoo": zoo, "summary": result["summary"]}, indent=1, ensure_ascii=False), flush=True)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {arguments.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
