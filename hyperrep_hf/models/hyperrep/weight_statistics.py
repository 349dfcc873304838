"""Statistics of raw weights: s(W), the per-layer weight statistics, and the zoo's norm range that predictions check.

**s(W)** (:func:`weight_statistics`; paper §5, the reference variant): per layer, the mean, variance and percentiles
1, 25, 50, 75, 99 of the layer's weight tensor (biases not used), computed in float64 from the raw, un-normalised flat
vectors. It is the ``s(W)`` baseline of ``hyperrep evaluate`` (``hyperrep_hf.probing.baselines`` imports it from
here) and, with ``HyperRepConfig.append_weight_statistics``, the second half of the hyper-representation z̄ ⊕ s(W)
(``embeddings.embed_vectors``): one implementation, so the probes of both read exactly the same numbers.

**Distance to the zoo** — how far a network lies from the zoo its probes were fitted on: per-parameter norm
statistics and target ranges.

A linear probe on z extrapolates without complaint: weights scaled ×1000 gave a predicted test accuracy of 1.3
beside a validation R² of 0.90. ``hyperrep evaluate`` therefore stores, beside each zoo's probes
(``probes/<zoo>/statistics.json``), the distribution of the zoo's weights and of every target, and predictions
are checked against it:

- **Weights**: for every parameter tensor (``layers.1.weight``, …) the L2 norm of each network, on a log10 scale
  (weights scale multiplicatively: ×10 and ÷10 are equally far). Stored: count, mean, std, min, max, percentiles
  (0.1, 1, 25, 50, 75, 99, 99.9) and the fences: **Tukey's far-out fences** ``[Q1 − 3·IQR, Q3 + 3·IQR]``, widened
  to the zoo's own range where it reaches further. A network with a tensor whose log-norm lies outside them is
  flagged. Why these fences: they are quantile based, so they hold for the skewed, multi-modal norm distributions
  of a zoo that mixes epochs and initialisations, and one outlier does not widen them; for a normal distribution
  they sit at ±4.7σ, a false alarm rate of about 2·10⁻⁶ per tensor, while a ×10 scaling of a tensor (1 decade) is
  flagged whenever the zoo's IQR of that log-norm is below 1/3 decade. Widening to the observed range means no
  network of the zoo itself is ever flagged (a zoo's tail is, by definition, in its distribution). IQR is floored
  at 0.01 decades so a zoo whose norms barely vary does not flag rounding noise. The statistics are taken over
  every split of the zoo (the rows ``hyperrep evaluate`` read).
- **Targets**: the minimum and maximum of every regression target over the zoo's rows. A prediction outside is
  clipped to that range and marked (``clipped``, ``unclipped_value``); a non-finite one becomes ``null``.

This file travels to the Hub as remote code with the pipeline (``hyperrep_hf.hub.publish.remote_code_files``), so it is
flat and self-contained: only numpy and the standard library. ``hyperrep_hf.probing.probe_heads.save_probe_heads``
writes the document.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

STATISTICS_FORMAT_VERSION = 1
STATISTICS_FILE = "statistics.json"
FENCE_IQR_MULTIPLIER = 3.0
"""Tukey's 'far out' fences: Q1 − 3·IQR and Q3 + 3·IQR."""
MINIMUM_IQR = 0.01
"""Floor of the IQR of a log10 norm, in decades."""
PERCENTILES = (0.1, 1.0, 25.0, 50.0, 75.0, 99.0, 99.9)
_TINY = 1e-30
NOT_FINITE = "the prediction is not a finite number"


REFERENCE_PERCENTILES: tuple[float, ...] = (1, 25, 50, 75, 99)
"""Percentiles of s(W), after the mean and the variance of each layer's weights."""
REFERENCE_ORDER: tuple[str, ...] = ("mean", "variance", "percentile")


@dataclass(frozen=True)
class LayerSlices:
    """Where one layer's parameters sit in the flat vector.

    Attributes:
        name: Layer name: the parameter name without ``.weight``/``.bias`` (e.g. ``"layers.1"``).
        weight: Slice of the weight (start, stop) in the flat vector.
        bias: Slice of the bias, or None for a layer without bias.
    """

    name: str
    weight: slice
    bias: slice | None = None


def layer_slices(architecture: Mapping) -> list[LayerSlices]:
    """Groups the architecture's parameters into layers: each weight, followed by its optional bias.

    Args:
        architecture: Dict with ``parameters``: ordered ``[{"name": "layers.1.weight", "shape": [5, 16]}, ...]``
            (``NetworkSpec.to_dict()``, ``zoo_info["architecture"]``, ``NeuronTokenProcessor.architecture``).

    Returns:
        One :class:`LayerSlices` per weight tensor, in flat order.

    Raises:
        ValueError: No parameter list, or a bias that does not follow its layer's weight.
    """
    parameters = architecture.get("parameters") if isinstance(architecture, Mapping) else None
    if not parameters:
        raise ValueError("The architecture record needs a non-empty 'parameters' list of {name, shape}.")
    layers: list[LayerSlices] = []
    start = 0
    for parameter in parameters:
        name, size = parameter["name"], math.prod(parameter["shape"])
        span = slice(start, start + size)
        start += size
        if not name.endswith(".bias"):
            layers.append(LayerSlices(name.removesuffix(".weight"), span))
            continue
        layer_name = name.removesuffix(".bias")
        if not layers or layers[-1].name != layer_name or layers[-1].bias is not None:
            raise ValueError(f"Bias {name!r} does not directly follow the weight of layer {layer_name!r}.")
        layers[-1] = LayerSlices(layer_name, layers[-1].weight, span)
    return layers


def check_vectors(vectors: np.ndarray, layers: Sequence[LayerSlices]) -> np.ndarray:
    """``vectors`` as an array, refused unless it is (num_rows, the architecture's number of parameters)."""
    vectors = np.asarray(vectors)
    last = layers[-1]
    expected = (last.bias or last.weight).stop
    if vectors.ndim != 2 or vectors.shape[1] != expected:
        raise ValueError(
            f"Expected weight vectors of shape (num_rows, {expected}) from the architecture, got {vectors.shape}."
        )
    return vectors


def tensor_statistics(values: np.ndarray, statistics: Sequence[str], percentiles: Sequence[float]) -> np.ndarray:
    """Statistics of each row: values (num_rows, size) → (num_rows, len(statistics) + extra percentiles), float64.

    Names: ``mean``, ``variance`` and ``std`` (ddof 0), and ``percentile`` (all of ``percentiles`` at that
    position, numpy's linear interpolation).
    """
    values = np.asarray(values, dtype=np.float64)
    columns = []
    for statistic in statistics:
        if statistic == "mean":
            columns.append(values.mean(axis=1, keepdims=True))
        elif statistic == "variance":
            columns.append(values.var(axis=1, keepdims=True))
        elif statistic == "std":
            columns.append(values.std(axis=1, keepdims=True))
        else:
            columns.append(np.percentile(values, percentiles, axis=1).T)
    return np.concatenate(columns, axis=1)


def weight_statistics(vectors: np.ndarray, architecture: Mapping) -> np.ndarray:
    """s(W), the reference variant: per layer, statistics of the weight tensor (biases not used).

    Per layer, in order: mean, variance, percentiles 1, 25, 50, 75, 99. A permutation of a layer's neurons
    reorders values within each weight tensor, so s(W) does not change (up to float summation order); a sign flip of
    a neuron (tanh) does change the layer's mean and percentiles.

    Args:
        vectors: (num_rows, num_parameters) raw flat weight vectors.
        architecture: Architecture record (see :func:`layer_slices`).

    Returns:
        (num_rows, 7 · num_layers) float64.
    """
    layers = layer_slices(architecture)
    vectors = check_vectors(vectors, layers)
    blocks = [tensor_statistics(vectors[:, layer.weight], REFERENCE_ORDER, REFERENCE_PERCENTILES) for layer in layers]
    return np.concatenate(blocks, axis=1)


def num_weight_statistics(architecture: Mapping, variant: str = "s(W)") -> int:
    """Columns of :func:`weight_statistics` for ``architecture``: 7 per layer, 12 for ``"s(W)+shape"``."""
    per_layer = 2 + len(REFERENCE_PERCENTILES) + (len(SHAPE_STATISTICS) if variant == SHAPE_VARIANT else 0)
    return per_layer * len(layer_slices(architecture))


SHAPE_STATISTICS: tuple[str, ...] = ("kurtosis", "mean_abs_ratio", "log_std", "positive_fraction", "max_abs_ratio")
"""Per-layer shape statistics of :func:`shape_statistics`, in order."""
SHAPE_VARIANT = "s(W)+shape"
"""The variant of the weight statistics that follows each layer's s(W) with its :data:`SHAPE_STATISTICS`."""
WEIGHT_STATISTICS_VARIANTS: tuple[str, ...] = ("s(W)", SHAPE_VARIANT)


def shape_statistics(vectors: np.ndarray, architecture: Mapping) -> np.ndarray:
    """The shape of each layer's weight distribution, beyond its scale: what a linear probe cannot form from s(W).

    Per layer, with m and σ the mean and standard deviation (ddof 0) of its weights w (biases not used):

    - ``kurtosis``: mean((w − m)⁴) / σ⁴ (3 for a normal distribution, 1.8 for a uniform one);
    - ``mean_abs_ratio``: mean(|w − m|) / σ (√(2/π) ≈ 0.80 normal, √3/2 ≈ 0.87 uniform);
    - ``log_std``: ln σ (initialisations differ by a factor of their scale: Kaiming and Xavier by √(1 + fan_out /
      fan_in));
    - ``positive_fraction``: the share of weights above 0;
    - ``max_abs_ratio``: max(|w|) / σ.

    s(W) carries a layer's shape only in its percentiles, which move with its scale. These are free of it: a
    uniform and a normal initialisation of any variance differ in kurtosis by 1.2. Like s(W), the statistics do not
    change when a layer's neurons are permuted; ``positive_fraction`` and the ratios change when a neuron's sign is
    flipped. A layer whose weights are all equal (σ = 0) gets σ = 10⁻³⁰ (``log_std`` −69) rather than a NaN.

    Returns:
        (num_rows, 5 · num_layers) float64.
    """
    layers = layer_slices(architecture)
    vectors = check_vectors(vectors, layers)
    blocks = []
    for layer in layers:
        values = np.asarray(vectors[:, layer.weight], dtype=np.float64)
        centred = values - values.mean(axis=1, keepdims=True)
        std = np.maximum(centred.std(axis=1), _TINY)
        blocks.append(
            np.stack(
                [
                    ((centred / std[:, None]) ** 4).mean(axis=1),
                    np.abs(centred).mean(axis=1) / std,
                    np.log(std),
                    (values > 0).mean(axis=1),
                    np.abs(values).max(axis=1) / std,
                ],
                axis=1,
            )
        )
    return np.concatenate(blocks, axis=1)


def weight_statistics_variant(vectors: np.ndarray, architecture: Mapping, variant: str = "s(W)") -> np.ndarray:
    """``"s(W)"``: :func:`weight_statistics`; ``"s(W)+shape"``: it followed by :func:`shape_statistics`."""
    if variant not in WEIGHT_STATISTICS_VARIANTS:
        raise ValueError(f"Unknown weight statistics {variant!r}; choose from {list(WEIGHT_STATISTICS_VARIANTS)}.")
    statistics = weight_statistics(vectors, architecture)
    if variant == SHAPE_VARIANT:
        statistics = np.concatenate([statistics, shape_statistics(vectors, architecture)], axis=1)
    return statistics


def parameter_log_norms(vectors: np.ndarray, parameters: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """log10 of the L2 norm of each parameter tensor of each network.

    Args:
        vectors: (num_networks, num_parameters) flat weights in the architecture's parameter order.
        parameters: The architecture's ``parameters`` (``name``, ``shape``), in flat order.

    Returns:
        (num_networks, num_tensors) float64; a non-finite tensor gives NaN (inf for an overflowing finite one).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    sizes = [math.prod(parameter["shape"]) for parameter in parameters]
    if vectors.ndim != 2 or vectors.shape[1] != sum(sizes):
        raise ValueError(f"Expected (networks, {sum(sizes)}) weights, got {tuple(vectors.shape)}.")
    bounds = np.cumsum([0, *sizes])
    with np.errstate(over="ignore", invalid="ignore"):
        norms = np.stack(
            [np.linalg.norm(vectors[:, start:end], axis=1) for start, end in itertools.pairwise(bounds)],
            axis=1,
        )
    finite_rows = np.isfinite(vectors)
    finite = np.stack([finite_rows[:, start:end].all(axis=1) for start, end in itertools.pairwise(bounds)], axis=1)
    return np.where(finite, np.log10(np.maximum(norms, _TINY)), np.nan)


def compute_statistics(
    vectors: np.ndarray,
    parameters: Sequence[Mapping[str, Any]],
    targets: Mapping[str, np.ndarray] | None = None,
    zoo: str | None = None,
) -> dict:
    """The ``statistics.json`` of a zoo: per-tensor log10-norm distribution and fences, target ranges.

    Args:
        vectors: (num_networks, num_parameters) the zoo's flat weights (every split).
        parameters: The architecture's ``parameters`` (``name``, ``shape``).
        targets: Regression target → its values over the zoo's rows (non-finite values are ignored).
        zoo: The zoo's key, recorded.
    """
    log_norms = parameter_log_norms(vectors, parameters)
    weights = {}
    for column, parameter in enumerate(parameters):
        values = log_norms[:, column]
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        quantiles = np.percentile(values, PERCENTILES)
        first, third = np.percentile(values, (25.0, 75.0))
        spread = FENCE_IQR_MULTIPLIER * max(third - first, MINIMUM_IQR)
        weights[parameter["name"]] = {
            "count": int(values.size),
            "mean": float(values.mean()),
            "std": float(values.std()),
            "min": float(values.min()),
            "max": float(values.max()),
            "percentiles": {f"{p:g}": float(q) for p, q in zip(PERCENTILES, quantiles, strict=True)},
            "fences": [float(min(first - spread, values.min())), float(max(third + spread, values.max()))],
        }
    ranges = {}
    for name, values in (targets or {}).items():
        values = np.asarray(values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size:
            ranges[name] = [float(values.min()), float(values.max())]
    return {
        "format_version": STATISTICS_FORMAT_VERSION,
        "zoo": zoo,
        "weights": {
            "quantity": "log10 of the L2 norm of each parameter tensor, per network",
            "rule": f"flag a network with a tensor outside [min(Q1 - {FENCE_IQR_MULTIPLIER:g}·IQR, zoo min), "
            f"max(Q3 + {FENCE_IQR_MULTIPLIER:g}·IQR, zoo max)] (Tukey far-out fences widened to the zoo's range; "
            f"IQR floored at {MINIMUM_IQR:g} decades)",
            "parameters": weights,
        },
        "targets": ranges,
    }


def read_statistics(path: str | os.PathLike) -> dict:
    """Reads a ``statistics.json``; raises ``ValueError`` naming the file when it is damaged."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as file:
            statistics = json.load(file)
        if not isinstance(statistics, dict) or not isinstance(statistics["weights"]["parameters"], dict):
            raise ValueError("not a statistics document")
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is damaged ({error}); re-run `hyperrep evaluate ... --overwrite` to write it again."
        ) from None
    if statistics.get("format_version", 0) > STATISTICS_FORMAT_VERSION:
        raise ValueError(f"{path} has format version {statistics['format_version']}; upgrade hyperrep_hf.")
    return statistics


def distribution_warnings(
    vectors: np.ndarray, parameters: Sequence[Mapping[str, Any]], statistics: Mapping[str, Any]
) -> list[str | None]:
    """For each network, a warning naming the tensors far outside the zoo's weight distribution, or None.

    Args:
        vectors: (num_networks, num_parameters) flat weights.
        parameters: The architecture's ``parameters``.
        statistics: A ``statistics.json`` document.
    """
    log_norms = parameter_log_norms(vectors, parameters)
    known = statistics["weights"]["parameters"]
    warnings: list[str | None] = []
    for row in log_norms:
        problems = []
        for column, parameter in enumerate(parameters):
            entry = known.get(parameter["name"])
            if entry is None:
                continue
            low, high = entry["fences"]
            value = row[column]
            if not np.isfinite(value):
                problems.append(f"{parameter['name']} has a non-finite norm")
            elif not low <= value <= high:
                problems.append(
                    f"{parameter['name']} norm {10**value if value > np.log10(_TINY) else 0:.3g} (zoo: "
                    f"{10 ** entry['min']:.3g}–"
                    f"{10 ** entry['max']:.3g}, flagged outside {10**low:.3g}–{10**high:.3g})"
                )
        warnings.append(
            "far outside the weight distribution of the zoo the probes were fitted on; predictions are "
            "extrapolations and not reliable: " + "; ".join(problems)
            if problems
            else None
        )
    return warnings


def clip_to_range(value: float, target: str, statistics: Mapping[str, Any] | None) -> dict:
    """A regression prediction as JSON fields: ``value`` (None when not finite, clipped to the zoo's range).

    Returns:
        ``{"value": v}``, plus ``"clipped": True, "unclipped_value": raw`` when clipped, or a ``"warning"`` when
        the prediction is not finite.
    """
    if not math.isfinite(value):
        return {"value": None, "warning": NOT_FINITE}
    bounds = (statistics or {}).get("targets", {}).get(target)
    if bounds is None:
        return {"value": value}
    low, high = bounds
    if low <= value <= high:
        return {"value": value}
    return {"value": min(max(value, low), high), "clipped": True, "unclipped_value": value}
