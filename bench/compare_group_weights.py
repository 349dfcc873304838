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
import functools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # paired_probes, beside this script
from paired_probes import add_model_zoo_arguments, load_probe_inputs, paired_rows, run_pairs


def compare(model_dir: str, zoo: str, max_rows: int | None, alphas: list[float] | None = None) -> dict:
    from hyperrep_hf.probing.baselines import compute_baseline_features
    from hyperrep_hf.probing.evaluation import representation_groups
    from hyperrep_hf.probing.probes import ALPHA_GRID, fit_probes

    loaded = load_probe_inputs(model_dir, zoo, max_rows, append_weight_statistics=True)
    arrays, targets, categorical = loaded.arrays, loaded.targets, loaded.categorical
    targets_by_split, embeddings = loaded.targets_by_split, loaded.embeddings
    statistics_features = compute_baseline_features("s(W)", arrays.vectors, arrays.info["architecture"])
    groups = representation_groups(loaded.model.config, loaded.processor, True)
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
    features = {name: values for name, (values, _) in methods.items()}
    pairs = (("shared α", "s(W)"), ("group weights", "s(W)"))
    rows = paired_rows(targets, categorical, targets_by_split, arrays.model_ids["test"], reports, features, pairs)
    for target, row in rows.items():
        row["chosen group weights"] = reports["group weights"].probes[target].group_weights
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
    add_model_zoo_arguments(parser)
    parser.add_argument(
        "--ridge-alphas", type=float, nargs="+", help="the ridge grid of every probe (default: the paper's)"
    )
    arguments = parser.parse_args(argv)
    return run_pairs(parser, arguments, functools.partial(compare, alphas=arguments.ridge_alphas))


if __name__ == "__main__":
    sys.exit(main())
