"""The plots of an evaluation: the map of the embeddings and the probes' predictions against the truth."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .probes import ProbeReport
from .report import CATEGORICAL_HYPERPARAMETERS

if TYPE_CHECKING:
    from .evaluation import ZooArrays

logger = logging.getLogger("hyperrep_hf")


# ----------------------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _map_2d(embeddings: np.ndarray, map_method: str, seed: int) -> tuple[np.ndarray, str]:
    """2-D coordinates (num_rows, 2) of finite embeddings: UMAP when asked for (or auto and installed), else PCA."""
    if map_method not in ("auto", "umap", "pca"):
        raise ValueError(f"map_method must be 'auto', 'umap' or 'pca', got {map_method!r}.")
    if map_method in ("auto", "umap"):
        try:
            import umap

            neighbors = min(25, embeddings.shape[0] - 1)
            reducer = umap.UMAP(n_components=2, n_neighbors=neighbors, min_dist=0.1, random_state=seed, n_jobs=1)
            return reducer.fit_transform(embeddings), "UMAP"
        except ImportError:
            if map_method == "umap":
                raise
            logger.warning("umap-learn is not installed: the embedding map uses PCA.")
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=seed).fit_transform(embeddings), "PCA"


def write_plots(
    out_dir: Path,
    zoo: ZooArrays,
    embeddings: Mapping[str, np.ndarray],
    report: ProbeReport,
    targets: Sequence[str],
    map_method: str = "auto",
    seed: int = 0,
    max_points: int = 4000,
) -> list[Path]:
    """``embedding_map.png`` and ``hyperrep_predictions.png`` in ``out_dir``.

    Args:
        out_dir: Output folder.
        zoo: The zoo's arrays (for the colours and the true targets).
        embeddings: Split → (num_rows, latent_dim) z.
        report: The hyper-representation's probe report (fitted probes).
        targets: Targets in table order.
        map_method: See :func:`evaluate_model`.
        seed: Seed of the point subsample and of UMAP.
        max_points: At most this many points on the map.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        _plot_embedding_map(out_dir / "embedding_map.png", zoo, embeddings, targets, map_method, seed, max_points),
        _plot_predictions(out_dir / "hyperrep_predictions.png", zoo, embeddings, report, targets),
    ]


def _plot_embedding_map(path, zoo, embeddings, targets, map_method, seed, max_points) -> Path:
    plt = _pyplot()
    splits = list(embeddings)
    stacked = np.concatenate([embeddings[split] for split in splits])
    colours = {
        name: np.concatenate([zoo.columns[split][name] for split in splits])
        for name in ("test_accuracy", "epoch", *[t for t in targets if t in CATEGORICAL_HYPERPARAMETERS])
        if all(name in zoo.columns[split] for split in splits)
    }
    rows = np.flatnonzero(np.isfinite(stacked).all(axis=1))
    if rows.size > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_points, replace=False))
    coordinates, method_name = _map_2d(stacked[rows], map_method, seed)
    figure, axes = plt.subplots(1, len(colours), figsize=(4.5 * len(colours), 4), squeeze=False)
    for axis, (name, values) in zip(axes[0], colours.items(), strict=True):
        values = values[rows]
        if values.dtype == object:
            for label in sorted({str(value) for value in values}):
                chosen = np.asarray([str(value) == label for value in values])
                axis.scatter(coordinates[chosen, 0], coordinates[chosen, 1], s=4, label=label)
            axis.legend(markerscale=3, fontsize=7)
        else:
            points = axis.scatter(coordinates[:, 0], coordinates[:, 1], c=values, s=4, cmap="viridis")
            figure.colorbar(points, ax=axis)
        axis.set_title(f"coloured by {name}")
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle(f"{method_name} of the hyper-representations, zoo {zoo.name} ({rows.size} checkpoints)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _plot_predictions(path, zoo, embeddings, report, targets) -> Path:
    plt = _pyplot()
    split = "test" if "test" in embeddings else next(iter(embeddings))
    fitted = [target for target in targets if target in report.probes]
    columns = min(4, max(1, len(fitted)))
    num_rows = max(1, math.ceil(len(fitted) / columns))
    figure, axes = plt.subplots(num_rows, columns, figsize=(3.6 * columns, 3.4 * num_rows), squeeze=False)
    for axis in axes.flat[len(fitted) :]:
        axis.axis("off")
    features = embeddings[split]
    for axis, target in zip(axes.flat, fitted, strict=False):
        truth = zoo.columns[split][target]
        probe = report.probes[target]
        usable = np.isfinite(features).all(axis=1) & np.asarray([value is not None for value in truth])
        if truth.dtype != object:
            usable &= np.isfinite(truth.astype(np.float64))
        predicted = probe.predict(features[usable]) if usable.any() else np.asarray([])
        if truth.dtype == object:
            _confusion(axis, truth[usable], predicted, probe.labels)
        else:
            _scatter(axis, truth[usable].astype(np.float64), predicted)
        axis.set_title(target, fontsize=9)
    figure.suptitle(f"hyper-representation probes, {split} split of {zoo.name}: predicted vs true")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _scatter(axis, truth: np.ndarray, predicted: np.ndarray) -> None:
    from .probes import r2_score

    axis.scatter(truth, predicted, s=3, alpha=0.4)
    if truth.size:
        low, high = float(min(truth.min(), predicted.min())), float(max(truth.max(), predicted.max()))
        axis.plot([low, high], [low, high], color="black", linewidth=0.8)
        axis.text(0.03, 0.92, f"R² {r2_score(truth, predicted):.3f}", transform=axis.transAxes, fontsize=8)
    axis.set_xlabel("true")
    axis.set_ylabel("predicted")


def _confusion(axis, truth: np.ndarray, predicted: np.ndarray, labels: list) -> None:
    names = [str(label) for label in labels]
    counts = np.zeros((len(names), len(names)), dtype=int)
    index = {name: position for position, name in enumerate(names)}
    for true_value, predicted_value in zip(truth, predicted, strict=True):
        if str(true_value) in index:
            counts[index[str(true_value)], index[str(predicted_value)]] += 1
    axis.imshow(counts, cmap="Blues")
    axis.set_xticks(range(len(names)), names, rotation=45, fontsize=6)
    axis.set_yticks(range(len(names)), names, fontsize=6)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
