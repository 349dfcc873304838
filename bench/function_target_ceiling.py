"""How much of the targets the function term's outputs hold, in full and through a k-wide linear bottleneck.

The function term (``function_weight``) makes a linear head on z predict what each network computes: the √ of its
softmax outputs on 256 fixed random inputs (``probe_outputs``, 1,024 values on TETRIS). A z of k values can at best
hold the outputs' top k linear directions, so a ridge probe on those directions bounds what the term can teach z.
This script measures, in plain numpy (``explain_w_baseline.raw_ridge_r2``, α on validation; the outputs centred on
the train rows, not standardised):

- ``full``: the ridge on all the outputs;
- ``top_k``: the ridge on their top k principal directions (PCA fitted on every 4th train row), for each ``--k``;
- both for each ``--priors`` of the random inputs (``function_inputs``: N(0, 1), U(0, 1), coin flips in {0, 1});
- with ``--zoo-images``, the same outputs on K unlabeled training images of the zoo (rebuilt from its recipe)
  instead of the random inputs: what the term would read with data.

    python bench/function_target_ceiling.py --zoo zoos_built:tetris_seed [--k 50 100 200 400] [--zoo-images] \\
        [--priors normal uniform bernoulli] [--out bench/results/function_target_ceiling.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explain_w_baseline import raw_ridge_r2

from hyperrep_hf.models.hyperrep.configuration_hyperrep import FUNCTION_INPUTS
from hyperrep_hf.probing.baselines import (
    PROBE_INPUTS,
    probe_inputs,
    probe_output_features,
    zoo_activations,
)
from hyperrep_hf.probing.evaluation import load_zoo_arrays, select_targets
from hyperrep_hf.zoo.folder import SPLITS
from hyperrep_hf.zoo.image_data import zoo_image_dataset

ALPHAS = tuple(10.0**k for k in range(-3, 6))


def outputs(arrays, activations: list[str], inputs=None) -> dict[str, np.ndarray]:
    """``probe_output_features`` of every row (on ``inputs``, default the random ones), centred on the train rows."""
    architecture = arrays.info["architecture"]
    features = {
        split: probe_output_features(arrays.vectors[split], architecture, activations, inputs=inputs)
        for split in SPLITS
    }
    features = {split: values.astype(np.float64) for split, values in features.items()}
    mean = features["train"].mean(axis=0)
    return {split: values - mean for split, values in features.items()}


def scores(features: dict, arrays, targets: list[str]) -> dict[str, float]:
    """Test R² (%) of a ridge on ``features`` for each target."""
    result = {}
    for target in targets:
        values = {split: np.asarray(arrays.columns[split][target], dtype=np.float64) for split in SPLITS}
        r2 = raw_ridge_r2(features, values, ALPHAS)
        result[target] = None if r2 is None else round(100 * r2, 1)
    return result


def bottlenecks(features: dict, arrays, targets: list[str], widths: list[int]) -> dict[str, dict[str, float]]:
    """Scores of the top-k principal directions of ``features`` (each direction scaled to unit variance)."""
    _, _, directions = np.linalg.svd(features["train"][::4], full_matrices=False)
    result = {}
    for width in widths:
        projected = {split: values @ directions[:width].T for split, values in features.items()}
        scale = projected["train"].std(axis=0) + 1e-12
        result[str(width)] = scores({s: p / scale for s, p in projected.items()}, arrays, targets)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", required=True, help="DIR[:CONFIG] of a zoo built by hyperrep_hf (with its recipe)")
    parser.add_argument("--k", type=int, nargs="+", default=[50, 100, 200, 400], help="bottleneck widths")
    parser.add_argument("--zoo-images", action="store_true", help="also the outputs on the zoo's own images")
    parser.add_argument(
        "--priors", nargs="+", choices=FUNCTION_INPUTS, default=list(FUNCTION_INPUTS), help="input priors"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "function_target_ceiling.json"))
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    started = time.process_time()
    arrays = load_zoo_arrays(arguments.zoo)
    activations = zoo_activations(arrays.info)
    if not activations:
        raise SystemExit(f"{arguments.zoo}: its zoo_info does not name the networks' activations.")
    targets, categorical = select_targets(arrays)
    targets = [target for target in targets if target not in categorical]
    report = {
        "zoo": arguments.zoo,
        "units": "test R² in %, all epochs; ridge in plain numpy, alpha on validation",
        "random_inputs": {},
    }
    shape = arrays.info["architecture"]["input_shape"]
    for prior in arguments.priors:
        random_outputs = outputs(arrays, activations, probe_inputs(shape, distribution=prior))
        report["random_inputs"][prior] = {
            "width": random_outputs["train"].shape[1],
            "full": scores(random_outputs, arrays, targets),
            "top_k": bottlenecks(random_outputs, arrays, targets, arguments.k),
        }
    if arguments.zoo_images:
        data = zoo_image_dataset(arrays.info)
        images, _ = data.split("train")  # the labels are not read
        chosen = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:PROBE_INPUTS]
        report["zoo_images"] = {"full": scores(outputs(arrays, activations, images[chosen]), arrays, targets)}
    report["cpu_seconds"] = round(time.process_time() - started, 1)
    Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
