"""``hyperrep train`` with the function term's target replaced by its top k principal directions, whitened.

A question about the function term (docs/model.md, "The function term"), not an option of the trainer: the term's
loss is the MSE over the 1,024 standardised output columns, so it weighs each principal direction of the outputs by
its variance, and on TETRIS-SEED the top 200 directions hold 97 % of it. z reads the targets about as well as the
outputs' top 100 directions do (F1 class 2: 43.5 against 50.0 for the top 100 and 59.0 for the top 200;
``bench/function_target_ceiling.py``). Would a loss that weighs the top k directions more equally teach z the ones
it misses? This runs training with the target projected onto its top ``--components`` principal directions (fitted
on the training rows, as the standardisation is) and each direction's scale divided by its standard deviation to the
power ``--power`` (1: whitened, every direction equal; 0.5: half-way; 0: the projection alone), rescaled so that the
mean column variance is 1, as the standardised target's is. Everything else is the trainer's own code path.

    python bench/whitened_function_targets.py --components 200 --power 1 -- \\
        tetris_seed --zoo zoos_built:tetris_seed --output-dir runs/whitened
    hyperrep evaluate runs/whitened --zoo zoos_built:tetris_seed --out eval/whitened --baselines 's(W)'

The run is an ordinary run folder (its ``config.json`` records the head's width, ``function_dim``, = k); only
``--resume`` must be given the same ``--components`` and ``--power`` to continue it exactly.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import hyperrep_hf.training.trainer as trainer
from hyperrep_hf.cli import main as cli_main


def whitened(values: torch.Tensor, components: int, power: float) -> torch.Tensor:
    """``values`` (rows × columns, standardised) on their top ``components`` principal directions, scaled by
    std^-power, with mean column variance 1. The sign of each direction is fixed (largest loading positive), so the
    result does not depend on the SVD routine's sign choice."""
    matrix = values.double().numpy()
    if not 0 < components <= min(matrix.shape):
        raise ValueError(f"--components {components}: expected 1 … {min(matrix.shape)} for a target of {matrix.shape}")
    centred = matrix - matrix.mean(axis=0)  # standardised rows are centred already; any other input is made so
    _, singular, directions = np.linalg.svd(centred, full_matrices=False)
    directions = directions[:components]
    largest = np.abs(directions).argmax(axis=1)
    directions *= np.sign(directions[np.arange(components), largest])[:, None]
    projected = (centred @ directions.T) / singular[:components] ** power  # std ∝ singular value: same ratios
    projected *= np.sqrt(components / projected.var(axis=0).sum())
    share = (singular[:components] ** 2).sum() / (singular**2).sum()
    print(f"function target: top {components} directions ({share:.1%} of its variance), power {power}", flush=True)
    return torch.from_numpy(projected).float()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, required=True, help="k, the principal directions kept")
    parser.add_argument("--power", type=float, default=1.0, help="each direction divided by its std ** power")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of `hyperrep train`")
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    original = trainer.function_targets

    def function_targets(*positional, **keywords) -> torch.Tensor:
        return whitened(original(*positional, **keywords), args.components, args.power)

    trainer.function_targets = function_targets  # the Trainer looks the name up when it builds the targets
    try:
        return cli_main(["train", *train_args])
    finally:
        trainer.function_targets = original


if __name__ == "__main__":
    sys.exit(main())
