"""Why a linear probe on raw weights (the W baseline) scores ≈ 0 on our TETRIS-SEED zoo and 40–55 % in the paper.

Measures, on one zoo (``--zoo DIR:CONFIG``, read exactly as ``hyperrep evaluate`` reads it), the test R² of ridge
probes for the epoch, test accuracy and generalisation gap:

1. ``as_evaluated``: W and s(W) through the project's probe (:mod:`hyperrep_hf.probing`: features standardised on
   the train split, α chosen on validation from the paper's grid).
2. ``probe_variants``: W with the probe changed — no standardisation (a second, plain numpy ridge), a grid
   reaching α = 1e7, ordinary least squares, only the final epoch's rows, only epochs ≥ 1, 10 % / 30 % of the
   train networks. If the probe were the cause, one of these would lift W.
3. ``symmetry``: the zoo's weights under function-preserving symmetries. For tanh and an init symmetric around 0,
   negating a hidden neuron's incoming and outgoing weights maps the zoo's distribution onto itself and leaves every
   target unchanged, so every raw coordinate is uncorrelated with every target: the best linear function of W is a
   constant. Reported: the largest |Pearson r| between one raw coordinate and a target (train rows), the same for
   the squared coordinates (sign-invariant), and the R² of W after a canonical orientation of each network (hidden
   neurons sign-flipped to a positive incoming sum, then sorted by it) — the same networks, the same probe.
4. ``init``: the zoo's recipe retrained in memory (same data, seeds, epochs, optimizer) with other inits — ``uniform``
   (PyTorch's U(0, 1), the reference code's default), ``normal`` (N(0, 1)), ``kaiming_uniform``,
   ``xavier_uniform`` and ``default`` (``nn.Linear``'s, the recipe's) — each probed with W, s(W) and W after one
   random sign flip per hidden neuron per network (the same functions, the symmetry restored).

    python bench/explain_w_baseline.py --zoo zoos_built:tetris_seed [--num-models 1000] [--out FILE]

Writes JSON to ``bench/results/explain_w_baseline.json`` (or ``--out``) and prints a summary table.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from hyperrep_hf.probing.baselines import compute_baseline_features
from hyperrep_hf.probing.evaluation import load_zoo_arrays
from hyperrep_hf.probing.probes import ALPHA_GRID, RidgeProbe, r2_score
from hyperrep_hf.zoo.folder import SPLITS, split_by_model
from hyperrep_hf.zoo.image_data import load_image_dataset
from hyperrep_hf.zoo.networks import NetworkSpec
from hyperrep_hf.zoo.population import NetworkConfig, Population

TARGETS = ("epoch", "test_accuracy", "generalization_gap")
WIDE_ALPHAS = tuple(10.0**k for k in range(7, -6, -1))
INITS = ("default", "uniform", "normal", "kaiming_uniform", "xavier_uniform")


def probe_r2(features: dict, targets: dict, alphas=ALPHA_GRID) -> float:
    """Test R² of the project's ridge probe (standardised features, α chosen on validation)."""
    if np.ptp(targets["train"]) == 0:
        return None  # a constant target (e.g. the epoch among final-epoch rows)
    probe = RidgeProbe(alphas).fit(features["train"], targets["train"], features["validation"], targets["validation"])
    return round(probe.score(features["test"], targets["test"]), 4)


def raw_ridge_fit(features: dict, targets: dict, alphas=ALPHA_GRID) -> tuple[float, np.ndarray]:
    """Ridge on centred, *unstandardised* features in plain numpy (normal equations; α chosen on validation R²).

    Independent of the project's probe code, so other bench scripts use it as a second route.

    Returns:
        (the chosen α, the test rows' predictions).
    """
    x_mean, y_mean = features["train"].mean(axis=0), targets["train"].mean()
    x = features["train"] - x_mean
    gram, cross = x.T @ x, x.T @ (targets["train"] - y_mean)
    best, best_score = None, -np.inf
    for alpha in alphas:
        coef = np.linalg.solve(gram + alpha * np.eye(len(gram)), cross)
        score = r2_score(targets["validation"], (features["validation"] - x_mean) @ coef + y_mean)
        if score > best_score:
            best, best_score = (alpha, coef), score
    alpha, coef = best
    return alpha, (features["test"] - x_mean) @ coef + y_mean


def raw_ridge_r2(features: dict, targets: dict, alphas=ALPHA_GRID) -> float:
    """Test R² of :func:`raw_ridge_fit`; None for a constant target."""
    if np.ptp(targets["train"]) == 0:
        return None
    return round(r2_score(targets["test"], raw_ridge_fit(features, targets, alphas)[1]), 4)


def hidden_layout(spec: NetworkSpec) -> tuple[slice, slice, int, int]:
    """For a 2-layer MLP without biases: the slices of W1 (hidden × in) and W2 (out × hidden) in the flat vector."""
    layers = spec.parameter_layers
    if len(layers) != 2 or any(layer.bias_name for layer in layers) or layers[0].kind != "linear":
        raise SystemExit(f"The symmetry part handles 2-layer MLPs without biases; {spec.name} is not one.")
    hidden, inputs = layers[0].weight_shape
    outputs = layers[1].weight_shape[0]
    first = hidden * inputs
    return slice(0, first), slice(first, first + outputs * hidden), hidden, inputs


def sign_flip(vectors: np.ndarray, spec: NetworkSpec, signs: np.ndarray) -> np.ndarray:
    """Negates hidden neuron j's incoming row and outgoing column where signs[:, j] = −1 (the same tanh network)."""
    first, second, hidden, inputs = hidden_layout(spec)
    w1 = vectors[:, first].reshape(len(vectors), hidden, inputs) * signs[:, :, None]
    w2 = vectors[:, second].reshape(len(vectors), -1, hidden) * signs[:, None, :]
    return np.concatenate([w1.reshape(len(vectors), -1), w2.reshape(len(vectors), -1)], axis=1)


def canonical(vectors: np.ndarray, spec: NetworkSpec) -> np.ndarray:
    """Each network in one orientation: hidden neurons flipped to a positive incoming sum, then sorted by it."""
    first, second, hidden, inputs = hidden_layout(spec)
    w1 = vectors[:, first].reshape(len(vectors), hidden, inputs)
    signs = np.where(w1.sum(axis=2) < 0, -1.0, 1.0)
    flipped = sign_flip(vectors, spec, signs)
    w1 = flipped[:, first].reshape(len(vectors), hidden, inputs)
    w2 = flipped[:, second].reshape(len(vectors), -1, hidden)
    order = np.argsort(-w1.sum(axis=2), axis=1, kind="stable")
    w1 = np.take_along_axis(w1, order[:, :, None], axis=1)
    w2 = np.take_along_axis(w2, order[:, None, :], axis=2)
    return np.concatenate([w1.reshape(len(vectors), -1), w2.reshape(len(vectors), -1)], axis=1)


def max_abs_correlation(features: np.ndarray, target: np.ndarray) -> float:
    """Largest |Pearson r| between one feature column and the target."""
    centred = features - features.mean(axis=0)
    t = target - target.mean()
    r = centred.T @ t / (np.linalg.norm(centred, axis=0) * np.linalg.norm(t) + 1e-30)
    return round(float(np.abs(r).max()), 4)


def by_split(arrays: dict, rows: dict | None = None) -> dict:
    return {split: arrays[split] if rows is None else arrays[split][rows[split]] for split in SPLITS}


def zoo_section(zoo, spec: NetworkSpec) -> dict:
    vectors = {split: zoo.vectors[split].astype(np.float64) for split in SPLITS}
    targets = {t: {split: zoo.columns[split][t] for split in SPLITS} for t in TARGETS}
    epochs = {split: zoo.columns[split]["epoch"] for split in SPLITS}
    architecture = zoo.info["architecture"]
    statistics = compute_baseline_features("s(W)", vectors, architecture)
    result = {"rows": {split: len(vectors[split]) for split in SPLITS}}
    result["as_evaluated"] = {
        name: {t: probe_r2(features, targets[t]) for t in TARGETS}
        for name, features in (("W", vectors), ("s(W)", statistics))
    }
    final_epoch = int(max(epochs["train"].max(), epochs["test"].max()))
    variants = {
        "no standardisation (plain ridge)": lambda t: raw_ridge_r2(vectors, targets[t]),
        "alpha grid 1e7 … 1e-5": lambda t: probe_r2(vectors, targets[t], WIDE_ALPHAS),
        "least squares (alpha 1e-9)": lambda t: probe_r2(vectors, targets[t], (1e-9,)),
    }
    for label, keep in (
        (f"final epoch ({final_epoch}) rows only", {s: epochs[s] == final_epoch for s in SPLITS}),
        ("epochs ≥ 1 only", {s: epochs[s] >= 1 for s in SPLITS}),
    ):
        variants[label] = lambda t, keep=keep: probe_r2(by_split(vectors, keep), by_split(targets[t], keep))
    generator = np.random.default_rng(0)
    train_models = np.unique(zoo.model_ids["train"])
    for fraction in (0.1, 0.3):
        chosen = generator.choice(train_models, max(2, round(fraction * len(train_models))), replace=False)
        keep = {split: np.ones(len(vectors[split]), bool) for split in SPLITS}
        keep["train"] = np.isin(zoo.model_ids["train"], chosen)
        label = f"{fraction:.0%} of the train networks"
        variants[label] = lambda t, keep=keep: probe_r2(by_split(vectors, keep), by_split(targets[t], keep))
    result["probe_variants"] = {label: {t: run(t) for t in TARGETS} for label, run in variants.items()}
    canonical_vectors = {split: canonical(vectors[split], spec) for split in SPLITS}
    squared = {split: vectors[split] ** 2 for split in SPLITS}
    result["symmetry"] = {
        "max |r| of one raw coordinate with the target (train rows)": {
            t: max_abs_correlation(vectors["train"], targets[t]["train"]) for t in TARGETS
        },
        "max |r| of one squared coordinate (sign-invariant)": {
            t: max_abs_correlation(squared["train"], targets[t]["train"]) for t in TARGETS
        },
        "W in a canonical orientation (same probe)": {t: probe_r2(canonical_vectors, targets[t]) for t in TARGETS},
        "W² (same probe)": {t: probe_r2(squared, targets[t]) for t in TARGETS},
    }
    return result


def init_section(zoo, spec: NetworkSpec, num_models: int, threads: int) -> dict:
    """Retrains the zoo's recipe in memory with other inits; W, s(W) and sign-symmetrised W for each."""
    torch.set_num_threads(threads)
    info = zoo.info
    recipe, options = info["recipe"], info["options"]
    if recipe["grid"]:
        raise SystemExit("The init comparison retrains a seed-only recipe (e.g. tetris_seed); this zoo has a grid.")
    data_options = {"version": recipe.get("data_version", 1), **recipe.get("data_options", {})}
    data = load_image_dataset(info["dataset"]["name"], seed=options["seed"], subset=options["subset"], **data_options)
    epochs = info["epochs"]
    first_seed = recipe["seeds"][0]
    splits = np.array(split_by_model(num_models, options["seed"]))
    results = {}
    for init in INITS:
        started = time.perf_counter()
        fixed = {**recipe["fixed"], "init": init}
        configs = [NetworkConfig(seed=first_seed + i, **fixed) for i in range(num_models)]
        population = Population(spec, configs)
        weights, metrics = [], []
        for epoch in range(epochs + 1):
            if epoch:
                population.train_epoch(data.train_images, data.train_labels, epoch)
            scores = {s: population.evaluate(*data.split(s), data.num_classes)["accuracy"].numpy() for s in SPLITS}
            weights.append(population.flat_weights().numpy().astype(np.float64))
            metrics.append(scores)
        stacked = np.stack(weights, axis=1)  # (models, epochs + 1, parameters)
        accuracy = np.stack([m["test"] for m in metrics], axis=1)
        gap = np.stack([m["train"] - m["test"] for m in metrics], axis=1)
        finite = np.isfinite(stacked).all(axis=(1, 2)) & np.isfinite(accuracy).all(axis=1)
        rows = {split: np.flatnonzero((splits == split) & finite) for split in SPLITS}
        vectors = {split: stacked[rows[split]].reshape(-1, spec.num_parameters) for split in SPLITS}
        all_targets = {"epoch": np.broadcast_to(np.arange(epochs + 1.0), accuracy.shape), "test_accuracy": accuracy}
        all_targets["generalization_gap"] = gap
        targets = {t: {s: all_targets[t][rows[s]].reshape(-1) for s in SPLITS} for t in TARGETS}
        generator = np.random.default_rng(1)
        hidden = hidden_layout(spec)[2]
        flipped = {}
        for split in SPLITS:  # one sign pattern per network, the same at every epoch: the same network throughout
            signs = generator.choice([-1.0, 1.0], (len(rows[split]), hidden)).repeat(epochs + 1, axis=0)
            flipped[split] = sign_flip(vectors[split], spec, signs)
        statistics = compute_baseline_features("s(W)", vectors, info["architecture"])
        results[init] = {
            "models": int(finite.sum()),
            "final_test_accuracy_mean": round(float(accuracy[finite, -1].mean()), 4),
            "W": {t: probe_r2(vectors, targets[t]) for t in TARGETS},
            "s(W)": {t: probe_r2(statistics, targets[t]) for t in TARGETS},
            "W, one random sign flip per hidden neuron": {t: probe_r2(flipped, targets[t]) for t in TARGETS},
            "mean |mean over networks of a coordinate| at the final epoch": round(
                float(np.abs(stacked[finite, -1].mean(axis=0)).mean()), 4
            ),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"  init {init:<16} {results[init]}", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", required=True, help="DIR[:CONFIG] of a seed zoo of 2-layer MLPs (TETRIS-SEED)")
    parser.add_argument("--num-models", type=int, default=1000, help="networks per init in the init comparison")
    parser.add_argument("--skip-init", action="store_true", help="only the zoo itself (no retraining)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "explain_w_baseline.json"))
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    started = time.perf_counter()
    zoo = load_zoo_arrays(arguments.zoo)
    spec = NetworkSpec.parse(
        tuple(zoo.info["architecture"]["input_shape"]), zoo.info["architecture"]["layers"], zoo.info["name"]
    )
    report = {
        "zoo": arguments.zoo,
        "recipe": zoo.info["recipe"],
        "dataset_source": zoo.info["dataset"]["source"],
        "targets": list(TARGETS),
        "metric": "test R² (fraction; ×100 for the paper's %)",
        "paper_W": {"epoch": 0.554, "test_accuracy": 0.491, "generalization_gap": 0.439},
    }
    report["zoo_probes"] = zoo_section(zoo, spec)
    print(json.dumps(report["zoo_probes"], indent=1), flush=True)
    if not arguments.skip_init:
        report["init"] = init_section(zoo, spec, arguments.num_models, arguments.threads)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["machine"] = {"platform": platform.platform(), "torch": torch.__version__, "threads": arguments.threads}
    out = Path(arguments.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out} in {report['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
