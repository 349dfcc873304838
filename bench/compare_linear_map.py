"""The hyper-representation against the linear_map baseline, and the two side by side.

For each (model, zoo): the model's own representation (z̄, or z̄ ⊕ s(W) where its config appends the statistics),
s(W), the linear map L(W) (``hyperrep_hf.probing.baselines.linear_map_features``) and the representation with L(W)
appended, each through the probes of ``hyperrep evaluate`` (ridge / softmax, α or C on validation), scored on test.
Differences come with a 95 % paired bootstrap interval over the test networks (all their rows).

Usage::

    python bench/compare_linear_map.py --model runs/tetris_seed --zoo zoos_built:tetris_seed \\
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

PAIRS = (("hyperrep", "linear_map"), ("hyperrep ⊕ linear_map", "linear_map"), ("linear_map", "s(W)"))


def compare(model_dir: str, zoo: str, max_rows: int | None) -> dict:
    from hyperrep_hf.probing.baselines import compute_baseline_features
    from hyperrep_hf.probing.probes import fit_probes

    loaded = load_probe_inputs(model_dir, zoo, max_rows)
    arrays, targets, categorical = loaded.arrays, loaded.targets, loaded.categorical
    targets_by_split, embeddings = loaded.targets_by_split, loaded.embeddings
    architecture = arrays.info["architecture"]
    started = time.process_time()
    linear_map = compute_baseline_features("linear_map", arrays.vectors, architecture)
    linear_map_seconds = time.process_time() - started
    features = {
        "s(W)": compute_baseline_features("s(W)", arrays.vectors, architecture),
        "linear_map": linear_map,
        "hyperrep": embeddings,
        "hyperrep ⊕ linear_map": {split: np.hstack([embeddings[split], linear_map[split]]) for split in embeddings},
    }
    reports = {
        name: fit_probes(values, targets_by_split, categorical, method=name) for name, values in features.items()
    }
    rows = paired_rows(targets, categorical, targets_by_split, arrays.model_ids["test"], reports, features, PAIRS)
    summary = {
        f"{first} − {second}": {
            "ahead (interval above 0)": sum(row[f"{first} − {second}"][1] > 0 for row in rows.values()),
            "level": sum(row[f"{first} − {second}"][1] <= 0 <= row[f"{first} − {second}"][2] for row in rows.values()),
            "behind (interval below 0)": sum(row[f"{first} − {second}"][2] < 0 for row in rows.values()),
        }
        for first, second in PAIRS
    }
    return {
        "model": model_dir,
        "zoo": zoo,
        "max_rows": max_rows,
        "rows": {split: int(values.shape[0]) for split, values in arrays.vectors.items()},
        "representation_width": int(embeddings["train"].shape[1]),
        "linear_map_width": int(linear_map["train"].shape[1]),
        "linear_map_cpu_seconds": round(linear_map_seconds, 1),
        "summary": summary,
        "targets": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_zoo_arguments(parser)
    arguments = parser.parse_args(argv)
    return run_pairs(parser, arguments, compare)


if __name__ == "__main__":
    sys.exit(main())
