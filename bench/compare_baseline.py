"""The hyper-representation against a stronger baseline than s(W), side by side.

For each (model, zoo): the model's own representation (z̄, or z̄ ⊕ s(W) [⊕ shape] as its config says), s(W), the
baseline B (``--baseline``: ``linear_map``, the network's affine map with its non-linearities taken out;
``probe_outputs``, √ of its softmax outputs on 256 fixed random inputs under each of the zoo's activations;
``s(W)+shape``, s(W) and five statistics of each layer's shape; ``hyperrep_hf.probing.baselines``) and the
representation with B appended, each through the probes of
``hyperrep evaluate`` (ridge / softmax, α or C on validation; ``--ridge-alphas`` as in evaluate), scored on test.
Differences come with a 95 % paired bootstrap interval over the test networks (all their rows).

Usage::

    python bench/compare_baseline.py --baseline linear_map --model runs/tetris_seed --zoo zoos_built:tetris_seed \\
        --model runs/tetris_hyp --zoo zoos_built:tetris_hyp --max-rows 0 --max-rows 10000 \\
        --out bench/results/linear_map.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # paired_probes, beside this script
from paired_probes import add_model_zoo_arguments, load_probe_inputs, paired_rows, run_pairs

BASELINES = ("linear_map", "probe_outputs", "s(W)+shape")


def pairs_of(baseline: str) -> tuple[tuple[str, str], ...]:
    return (("hyperrep", baseline), (f"hyperrep ⊕ {baseline}", baseline), (baseline, "s(W)"))


def compare(model_dir: str, zoo: str, max_rows: int | None, baseline: str, alphas: tuple[float, ...] | None) -> dict:
    from hyperrep_hf.probing.baselines import compute_baseline_features, zoo_activations
    from hyperrep_hf.probing.probes import ALPHA_GRID, fit_probes

    loaded = load_probe_inputs(model_dir, zoo, max_rows)
    arrays, targets, categorical = loaded.arrays, loaded.targets, loaded.categorical
    targets_by_split, embeddings = loaded.targets_by_split, loaded.embeddings
    architecture = arrays.info["architecture"]
    started = time.process_time()
    runs = compute_baseline_features(baseline, arrays.vectors, architecture, activations=zoo_activations(arrays.info))
    baseline_seconds = time.process_time() - started
    features = {
        "s(W)": compute_baseline_features("s(W)", arrays.vectors, architecture),
        baseline: runs,
        "hyperrep": embeddings,
        f"hyperrep ⊕ {baseline}": {split: np.hstack([embeddings[split], runs[split]]) for split in embeddings},
    }
    alphas = alphas or ALPHA_GRID
    reports = {
        name: fit_probes(values, targets_by_split, categorical, method=name, alphas=alphas)
        for name, values in features.items()
    }
    pairs = pairs_of(baseline)
    rows = paired_rows(targets, categorical, targets_by_split, arrays.model_ids["test"], reports, features, pairs)
    summary = {
        f"{first} − {second}": {
            "ahead (interval above 0)": sum(row[f"{first} − {second}"][1] > 0 for row in rows.values()),
            "level": sum(row[f"{first} − {second}"][1] <= 0 <= row[f"{first} − {second}"][2] for row in rows.values()),
            "behind (interval below 0)": sum(row[f"{first} − {second}"][2] < 0 for row in rows.values()),
        }
        for first, second in pairs
    }
    result = {
        "model": model_dir,
        "zoo": zoo,
        "max_rows": max_rows,
        "rows": {split: int(values.shape[0]) for split, values in arrays.vectors.items()},
        "representation_width": int(embeddings["train"].shape[1]),
        f"{baseline}_width": int(runs["train"].shape[1]),
        f"{baseline}_cpu_seconds": round(baseline_seconds, 1),
    }
    if tuple(alphas) != ALPHA_GRID:
        result["ridge_alphas"] = list(alphas)
    return result | {"summary": summary, "targets": rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_zoo_arguments(parser)
    parser.add_argument("--baseline", choices=BASELINES, default="linear_map", help="the baseline B (linear_map)")
    parser.add_argument(
        "--ridge-alphas",
        type=float,
        nargs="+",
        help="the ridge grid of every probe (default: evaluate's, the paper's)",
    )
    arguments = parser.parse_args(argv)
    alphas = None if arguments.ridge_alphas is None else tuple(arguments.ridge_alphas)

    def run(model_dir: str, zoo: str, max_rows: int | None) -> dict:
        return compare(model_dir, zoo, max_rows, arguments.baseline, alphas)

    return run_pairs(parser, arguments, run)


if __name__ == "__main__":
    sys.exit(main())
