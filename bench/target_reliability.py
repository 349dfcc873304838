"""How much of each measured target can a representation of the weights explain at all?

A zoo's test accuracy, generalisation gap and per-class F1 are measured on a finite test set: part of their spread
across networks is that set's sampling noise, which no function of a network's *expected* quality can predict. This
script re-runs every network of a zoo's test split on the zoo's own images (rebuilt from its recipe), checks that it
reproduces the stored targets, and estimates each target's **reliability**: the share of its variance across the
probe's rows that is not test-set noise, the R² that a perfect predictor of each network's expected score would reach.

Two routes, so the number does not rest on one estimator:

- **split half**: the test images are cut into two class-stratified halves; the correlation r of a target measured
  on either half, across rows, stepped up to the whole set by Spearman–Brown, 2r / (1 + r); averaged over
  ``--halvings`` random cuts.
- **bootstrap**: the test images are resampled (class-stratified) ``--resamples`` times; reliability =
  1 − (mean over resamples of the variance, across rows, of each row's change from its whole-set value) / (the
  target's variance across rows). Across rows, not per row: the images are shared by every network, and the part of
  their noise that moves all rows alike is no spread across rows.

The gap is the training accuracy (on the fixed training set the network was trained on: no sampling noise) minus the
test accuracy, so only its test part is cut or resampled. Epoch and hyper-parameters are exact (reliability 1).

Usage::

    python bench/target_reliability.py --zoo zoos_built:tetris_seed --zoo zoos_built:tetris_hyp \\
        --out bench/results/target_reliability.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from hyperrep_hf.probing.evaluation import load_zoo_arrays
from hyperrep_hf.zoo.image_data import zoo_image_dataset
from hyperrep_hf.zoo.networks import NetworkSpec, batched_outputs, make_module

# A recomputed target may differ from the stored one by float32 rounding of near-tied logits: a few images.
MAX_MISMATCH = 0.01
ACTIVATION_BUDGET = 50_000_000  # floats of one layer's output held at once, over a chunk of networks × images


def predictions(spec: NetworkSpec, vectors: np.ndarray, activations: np.ndarray, images: torch.Tensor) -> np.ndarray:
    """Every row's predicted class for every image, (rows, images) int8; networks in eval mode (no dropout).

    An independent route to the zoo's own evaluation (``Population.evaluate``): a plain ``nn.Module`` of the family,
    vmapped over the rows' weight vectors.
    """
    out = np.empty((len(vectors), len(images)), dtype=np.int8)
    for activation in np.unique(activations):
        rows = np.flatnonzero(activations == activation)
        module = make_module(spec, str(activation)).eval()
        weights = torch.from_numpy(vectors[rows]).float()
        for chunk, logits in batched_outputs(module, spec, weights, images, ACTIVATION_BUDGET):
            out[rows[chunk]] = logits.argmax(-1).numpy().astype(np.int8)
    return out


def scores(predicted: np.ndarray, labels: np.ndarray, weights: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Accuracy and per-class F1 of every row under image weights (images, K): (rows, K) each.

    A weight column of 0/1 is a subset of the images (a half); of counts, a bootstrap resample.
    """
    weights = weights.astype(np.float64)
    correct = (predicted == labels[None, :]).astype(np.float64)
    result = {"accuracy": correct @ weights / weights.sum(0)}
    for label in range(num_classes):
        predicted_k = (predicted == label).astype(np.float64)
        actual_k = (labels == label).astype(np.float64)
        true_positive = (predicted_k * actual_k) @ weights
        positives = predicted_k @ weights + (actual_k @ weights)[None, :]  # 2 tp + fp + fn
        result[f"f1_class_{label}"] = np.where(positives > 0, 2 * true_positive / np.maximum(positives, 1e-12), 0.0)
    return result


def stratified_halves(labels: np.ndarray, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random class-stratified cuts of the images into two halves: 0/1 weights (images, count) each."""
    first = np.zeros((len(labels), count))
    for k in range(count):
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            first[members[: len(members) // 2], k] = 1.0
    return first, 1.0 - first


def stratified_resamples(labels: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` class-stratified bootstrap resamples of the images, as counts (images, count)."""
    counts = np.zeros((len(labels), count))
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        for k in range(count):
            np.add.at(counts[:, k], rng.choice(members, size=len(members)), 1.0)
    return counts


def reliability(
    predicted: np.ndarray,
    labels: np.ndarray,
    train_accuracy: np.ndarray,
    num_classes: int,
    halvings: int,
    resamples: int,
    rng: np.random.Generator,
) -> dict[str, dict]:
    """Both routes' reliability of every measured target over these rows."""
    first, second = stratified_halves(labels, halvings, rng)
    half_a, half_b = scores(predicted, labels, first, num_classes), scores(predicted, labels, second, num_classes)
    boot = scores(predicted, labels, stratified_resamples(labels, resamples, rng), num_classes)
    whole = scores(predicted, labels, np.ones((len(labels), 1)), num_classes)
    result = {}
    for name in half_a:
        target = "test_accuracy" if name == "accuracy" else name
        a, b, resampled, full = half_a[name], half_b[name], boot[name], whole[name][:, 0]
        if target == "test_accuracy":
            result["generalization_gap"] = _both_routes(
                train_accuracy[:, None] - a,
                train_accuracy[:, None] - b,
                train_accuracy[:, None] - resampled,
                train_accuracy - full,
            )
        result[target] = _both_routes(a, b, resampled, full)
    return result


def _both_routes(half_a: np.ndarray, half_b: np.ndarray, resampled: np.ndarray, full: np.ndarray) -> dict:
    spread = float(full.var())
    if spread == 0:
        return {"variance_across_rows": 0.0, "split_half": None, "bootstrap": None}
    # A half on which a row set does not vary (a class no row predicts there) has no correlation: that cut is skipped.
    usable = [k for k in range(half_a.shape[1]) if half_a[:, k].std() > 0 and half_b[:, k].std() > 0]
    r = np.array([np.corrcoef(half_a[:, k], half_b[:, k])[0, 1] for k in usable])
    stepped_up = 2 * r / (1 + r) if len(r) and r.min() > -1 else np.array([])
    # The test set is shared by every row, so part of its noise moves all rows together (a hard image that every
    # network gets wrong): that part is no variance across rows. Only the deviation's spread across rows counts.
    noise = float((resampled - full[:, None]).var(axis=0).mean())
    return {
        "variance_across_rows": spread,
        "split_half": float(stepped_up.mean()) if len(stepped_up) else None,
        "split_half_range": [float(stepped_up.min()), float(stepped_up.max())] if len(stepped_up) else None,
        "halvings_used": len(stepped_up),
        "bootstrap": 1.0 - noise / spread,
        "noise_sd": noise**0.5,
        "sd_across_rows": spread**0.5,
    }


def measure_zoo(zoo: str, split: str, halvings: int, resamples: int, seed: int) -> dict:
    started = time.process_time()
    arrays = load_zoo_arrays(zoo)
    info = arrays.info
    spec = NetworkSpec.from_dict(info["architecture"])
    data = zoo_image_dataset(info)
    columns, vectors = arrays.columns[split], arrays.vectors[split]
    activations = np.asarray(columns["activation"]).astype(str)
    test_images, test_labels = data.split("test")
    train_images, train_labels = data.split("train")
    test_predicted = predictions(spec, vectors, activations, test_images)
    train_predicted = predictions(spec, vectors, activations, train_images)
    labels, num_classes = test_labels.numpy(), data.num_classes
    train_accuracy = (train_predicted == train_labels.numpy()[None, :]).mean(1)
    whole = scores(test_predicted, labels, np.ones((len(labels), 1)), num_classes)
    recomputed = {
        "test_accuracy": whole["accuracy"][:, 0],
        "generalization_gap": train_accuracy - whole["accuracy"][:, 0],
    }
    recomputed |= {f"f1_class_{k}": whole[f"f1_class_{k}"][:, 0] for k in range(num_classes)}
    mismatch = {name: float(np.abs(values - columns[name]).max()) for name, values in recomputed.items()}
    if max(mismatch.values()) > MAX_MISMATCH:
        raise SystemExit(
            f"{zoo}: re-running the networks does not reproduce the stored targets (largest difference {mismatch}); "
            "the images rebuilt from the recipe are not the ones the zoo was measured on."
        )
    rng = np.random.default_rng(seed)
    epochs = np.asarray(columns["epoch"])
    last = epochs == epochs.max()
    return {
        "zoo": zoo,
        "split": split,
        "rows": len(vectors),
        "networks": len(np.unique(arrays.model_ids[split])),
        "test_images": len(labels),
        "train_images": len(train_labels),
        "largest_difference_from_stored_targets": mismatch,
        "all_rows": reliability(test_predicted, labels, train_accuracy, num_classes, halvings, resamples, rng),
        "final_checkpoints": reliability(
            test_predicted[last], labels, train_accuracy[last], num_classes, halvings, resamples, rng
        ),
        "cpu_seconds": time.process_time() - started,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", action="append", required=True, help="DIR:CONFIG of a zoo (repeatable)")
    parser.add_argument("--split", default="test", help="the zoo split whose rows are measured (the probes' test)")
    parser.add_argument("--halvings", type=int, default=50)
    parser.add_argument("--resamples", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    document = {"machine": platform.machine(), "halvings": args.halvings, "resamples": args.resamples, "zoos": {}}
    for zoo in args.zoo:
        measured = measure_zoo(zoo, args.split, args.halvings, args.resamples, args.seed)
        config = zoo.rsplit(":", 1)[-1]
        document["zoos"][config] = measured
        print(f"{config}: {measured['rows']} rows, {measured['cpu_seconds'] / 60:.1f} CPU-min")
        for target, routes in measured["all_rows"].items():
            if routes["split_half"] is not None and routes["bootstrap"] is not None:
                print(f"  {target:20s} split half {routes['split_half']:.3f}  bootstrap {routes['bootstrap']:.3f}")
    Path(args.out).write_text(json.dumps(document, indent=1) + "\n")


if __name__ == "__main__":
    main()
