"""Baseline representations of flat weight vectors, probed exactly like the hyper-representation (paper §5).

```
 vectors (rows, num_parameters) ──► W                 raw weights
                                ├─► s(W)              per layer: mean, variance, percentiles 1/25/50/75/99 of weights
                                ├─► s(W)+shape        s(W), then per layer kurtosis, mean |w − m| / σ, ln σ, share
                                │                     of positive weights, max |w| / σ (the shape, free of scale)
                                ├─► s(W)_unterthiner  per layer, weights and biases apart: percentiles 0/25/50/75/100,
                                │                     mean, std (Unterthiner et al. 2020)
                                ├─► linear_map        the network with its activations made the identity (max
                                │                     pooling made average pooling): the affine map input → logits
                                ├─► probe_outputs     √ of the network's softmax outputs on fixed random inputs
                                │                     (256 draws of N(0, 1), seed 0) under each of the zoo's
                                │                     activations: what it computes, no data
                                ├─► pca_{linear,cosine,rbf}  kernel PCA fitted on train rows
                                └─► umap              UMAP (n_neighbors 25, min_dist 0.001) fitted on train rows
```

Every function maps ``vectors_by_split`` (split → (num_rows, num_parameters)) to ``features_by_split`` (split →
(num_rows, num_features)) for :func:`hyperrep_hf.probing.probes.probe_targets`. Fitted baselines (PCA, UMAP) only ever
see train rows. To keep them fast on big zoos the fit uses at most ``max_fit_rows`` train rows (3000 by default),
drawn without replacement with a seeded generator; every row of every split is then transformed. Rows with
non-finite weights are left out of the fit and get NaN features, which the probes drop and count.

The per-layer slicing comes from the architecture record (``NetworkSpec.to_dict()`` or
``zoo_info["architecture"]``): its ordered ``parameters`` list of ``{"name", "shape"}`` in flat-vector order,
each layer's weight followed by its bias (a name ending in ``.bias``).

s(W) itself (:func:`weight_statistics`, :func:`layer_slices`) lives in the flat remote-code file
:mod:`hyperrep_hf.models.hyperrep.weight_statistics` and is re-exported here: a model with
``append_weight_statistics`` computes the same features at embedding time, where hyperrep_hf may not be installed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from ..models.hyperrep.configuration_hyperrep import FUNCTION_INPUTS
from ..models.hyperrep.weight_statistics import (
    REFERENCE_ORDER,
    REFERENCE_PERCENTILES,
    LayerSlices,
    check_vectors,
    layer_slices,
    tensor_statistics,
    weight_statistics,
    weight_statistics_variant,
)

logger = logging.getLogger("hyperrep_hf")

BASELINE_NAMES: tuple[str, ...] = (
    "W", "s(W)", "s(W)+shape", "s(W)_unterthiner", "linear_map", "probe_outputs", "pca_linear", "pca_cosine",
    "pca_rbf", "umap",
)  # fmt: skip
UNTERTHINER_PERCENTILES: tuple[float, ...] = (0, 25, 50, 75, 100)
UMAP_NEIGHBORS = 25
UMAP_MIN_DIST = 0.001
_TRANSFORM_BLOCK_ROWS = 4096
_FORWARD_BUDGET = 20_000_000  # floats of one layer's output held at once: networks × inputs × layer size
_UNTERTHINER_ORDER = ("percentile", "mean", "std")
PROBE_INPUTS = 256  # random inputs of the probe_outputs baseline (and of the function term of training)
PROBE_SEED = 0

__all__ = [
    "BASELINE_NAMES",
    "PROBE_INPUTS",
    "PROBE_SEED",
    "REFERENCE_PERCENTILES",
    "UNTERTHINER_PERCENTILES",
    "LayerSlices",
    "check_baselines_can_run",
    "check_linear_map_architecture",
    "check_probe_outputs_inputs",
    "compute_baseline_features",
    "kernel_pca_features",
    "layer_slices",
    "linear_map_features",
    "probe_inputs",
    "probe_output_features",
    "statistics_feature_names",
    "umap_features",
    "unterthiner_statistics",
    "weight_statistics",
    "zoo_activations",
]


def unterthiner_statistics(vectors: np.ndarray, architecture: Mapping) -> np.ndarray:
    """s(W), Unterthiner et al.'s variant: per layer, weights and biases separately.

    Per tensor, in order: percentiles 0, 25, 50, 75, 100, mean, std. Layers are taken in flat order, each
    layer's weight statistics followed by its bias statistics when it has a bias.

    Args:
        vectors: (num_rows, num_parameters) flat weight vectors.
        architecture: Architecture record (see :func:`layer_slices`).

    Returns:
        (num_rows, 7 · (num_layers + num_layers_with_bias)) float64.
    """
    layers = layer_slices(architecture)
    vectors = check_vectors(vectors, layers)
    blocks = []
    for layer in layers:
        for span in (layer.weight, layer.bias):
            if span is not None:
                blocks.append(tensor_statistics(vectors[:, span], _UNTERTHINER_ORDER, UNTERTHINER_PERCENTILES))
    return np.concatenate(blocks, axis=1)


def statistics_feature_names(architecture: Mapping, variant: str = "reference") -> list[str]:
    """Column names of :func:`weight_statistics` (``"reference"``) or :func:`unterthiner_statistics`.

    Returns:
        Names such as ``"layers.1.weight.p25"`` or ``"layers.1.bias.std"``.
    """
    if variant not in ("reference", "unterthiner"):
        raise ValueError(f"variant must be 'reference' or 'unterthiner', got {variant!r}.")
    reference = variant == "reference"
    order, percentiles = (
        (REFERENCE_ORDER, REFERENCE_PERCENTILES) if reference else (_UNTERTHINER_ORDER, UNTERTHINER_PERCENTILES)
    )
    names = []
    for layer in layer_slices(architecture):
        tensors = [("weight", layer.weight)] + ([] if reference else [("bias", layer.bias)])
        for tensor, span in tensors:
            if span is None:
                continue
            for statistic in order:
                suffixes = (
                    [f"p{percentile:g}" for percentile in percentiles] if statistic == "percentile" else [statistic]
                )
                names.extend(f"{layer.name}.{tensor}.{suffix}" for suffix in suffixes)
    return names


def _fit_rows(train: np.ndarray, max_fit_rows: int, seed: int) -> np.ndarray:
    """The train rows a fitted baseline learns from: finite ones, at most ``max_fit_rows``, seeded draw."""
    finite = np.flatnonzero(np.isfinite(train).all(axis=1))
    if finite.size == 0:
        raise ValueError("No train row has finite weights: nothing to fit the baseline on.")
    if finite.size > max_fit_rows:
        finite = np.sort(np.random.default_rng(seed).choice(finite, size=max_fit_rows, replace=False))
    return train[finite]


def _transform_finite(transform, vectors: np.ndarray, num_components: int) -> np.ndarray:
    """Applies ``transform`` to the finite rows; rows with NaN/inf weights get NaN features (the probes drop them).

    Rows go through in blocks: a kernel transform builds a (rows, fit rows) kernel matrix, which for a whole
    zoo split would take gigabytes.
    """
    features = np.full((vectors.shape[0], num_components), np.nan)
    finite_rows = np.flatnonzero(np.isfinite(vectors).all(axis=1))
    for start in range(0, finite_rows.size, _TRANSFORM_BLOCK_ROWS):
        block = finite_rows[start : start + _TRANSFORM_BLOCK_ROWS]
        features[block] = transform(vectors[block])
    return features


def _require_train(vectors_by_split: Mapping[str, np.ndarray]) -> np.ndarray:
    if "train" not in vectors_by_split:
        raise ValueError(f"A fitted baseline needs a 'train' split (splits: {list(vectors_by_split)}).")
    return np.asarray(vectors_by_split["train"], dtype=np.float64)


def kernel_pca_features(
    vectors_by_split: Mapping[str, np.ndarray],
    kernel: str,
    num_components: int = 50,
    max_fit_rows: int = 3000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Kernel PCA (scikit-learn ``KernelPCA``, default kernel parameters) fitted on train rows only.

    Args:
        vectors_by_split: Split → (num_rows, num_parameters); needs ``"train"``.
        kernel: ``"linear"``, ``"cosine"`` or ``"rbf"`` (γ = 1 / num_parameters).
        num_components: Output dimension, capped by the number of fit rows.
        max_fit_rows: At most this many train rows (seeded draw) are used to fit.
        seed: Seed of the row draw and of the randomized eigensolver.

    Returns:
        Split → (num_rows, num_components) float64.
    """
    from sklearn.decomposition import KernelPCA  # lazy: keeps `import hyperrep_hf.probing.baselines` light

    fit_rows = _fit_rows(_require_train(vectors_by_split), max_fit_rows, seed)
    num_components = min(num_components, fit_rows.shape[0])
    # ARPACK finds the leading eigenvectors of the (≤ max_fit_rows)² kernel matrix ~10× faster than the dense
    # solver scikit-learn picks for 50 components; it needs fewer components than rows.
    eigen_solver = "arpack" if num_components < fit_rows.shape[0] - 1 else "dense"
    model = KernelPCA(n_components=num_components, kernel=kernel, eigen_solver=eigen_solver, random_state=seed)
    model.fit(fit_rows)
    return {
        split: _transform_finite(model.transform, np.asarray(vectors, dtype=np.float64), num_components)
        for split, vectors in vectors_by_split.items()
    }


def umap_features(
    vectors_by_split: Mapping[str, np.ndarray],
    num_components: int = 50,
    num_neighbors: int = UMAP_NEIGHBORS,
    min_dist: float = UMAP_MIN_DIST,
    max_fit_rows: int = 3000,
    max_transform_rows: int | None = 3000,
    seed: int = 0,
) -> dict[str, np.ndarray] | None:
    """UMAP fitted on train rows; every split (train included) goes through ``transform`` for consistency.

    ``transform`` optimises each new point's embedding (about 1 ms per row and component), so on a whole zoo
    (76,000 rows for TETRIS-SEED) it would run for hours: at most ``max_transform_rows`` rows per split (a seeded
    draw) are embedded and the others get NaN features, which the probes drop and count (``results.md`` lists them).
    umap-learn is optional (``pip install umap-learn``); without it this logs a warning and returns None.

    Args:
        vectors_by_split: Split → (num_rows, num_parameters); needs ``"train"``.
        num_components: Output dimension.
        num_neighbors: UMAP ``n_neighbors`` (25 in the paper), capped at fit rows − 1.
        min_dist: UMAP ``min_dist`` (0.001 in the paper).
        max_fit_rows: At most this many train rows (seeded draw) are used to fit.
        max_transform_rows: At most this many rows per split are embedded (``None``: all).
        seed: Seed of the row draws and of UMAP (seeding makes UMAP single-threaded).

    Returns:
        Split → (num_rows, num_components) float64, or None when umap-learn is not installed.
    """
    try:
        import umap
    except ImportError:
        logger.warning("Skipping the UMAP baseline: umap-learn is not installed (pip install umap-learn).")
        return None
    fit_rows = _fit_rows(_require_train(vectors_by_split), max_fit_rows, seed)
    if fit_rows.shape[0] < num_components + 2:
        raise ValueError(f"UMAP with {num_components} components needs more than {fit_rows.shape[0]} train rows.")
    model = umap.UMAP(
        n_components=num_components,
        n_neighbors=min(num_neighbors, fit_rows.shape[0] - 1),
        min_dist=min_dist,
        random_state=seed,
        n_jobs=1,  # a seeded UMAP runs single-threaded anyway; saying so silences its warning
    ).fit(fit_rows)
    features = {}
    for split, vectors in vectors_by_split.items():
        vectors = np.asarray(vectors, dtype=np.float64)
        rows = np.arange(vectors.shape[0])
        if max_transform_rows is not None and rows.size > max_transform_rows:
            rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_transform_rows, replace=False))
        features[split] = np.full((vectors.shape[0], num_components), np.nan)
        features[split][rows] = _transform_finite(model.transform, vectors[rows], num_components)
    return features


def compute_baseline_features(
    name: str,
    vectors_by_split: Mapping[str, np.ndarray],
    architecture: Mapping | None = None,
    *,
    activations: Sequence[str] | None = None,
    num_components: int = 50,
    max_fit_rows: int = 3000,
    seed: int = 0,
    distribution: str = "normal",
) -> dict[str, np.ndarray] | None:
    """Features of one baseline for every split, ready for :func:`hyperrep_hf.probing.probes.probe_targets`.

    Args:
        name: One of :data:`BASELINE_NAMES`: ``W``, ``s(W)``, ``s(W)_unterthiner``, ``linear_map``,
            ``probe_outputs``, ``pca_linear``, ``pca_cosine``, ``pca_rbf``, ``umap``.
        vectors_by_split: Split → (num_rows, num_parameters) flat weight vectors.
        architecture: Architecture record; required by ``s(W)`` and ``s(W)_unterthiner``, and by ``linear_map`` and
            ``probe_outputs`` with its layer list (``NetworkSpec.to_dict()``, a zoo's ``zoo_info["architecture"]``).
        activations: The zoo's activations (:func:`zoo_activations`); required by ``probe_outputs``, which runs
            every network under each.
        num_components: Output dimension of PCA and UMAP (e.g. the hyper-representation's latent size).
        max_fit_rows: Cap on train rows used to fit PCA and UMAP.
        seed: Seed for the fitted baselines.
        distribution: The prior of ``probe_outputs``' random inputs (:func:`probe_inputs`; the baseline's is
            ``"normal"``).

    Returns:
        Split → (num_rows, num_features); None when the baseline is unavailable (``umap`` without umap-learn,
        logged).
    """
    if name not in BASELINE_NAMES:
        raise ValueError(f"Unknown baseline {name!r}; choose from {list(BASELINE_NAMES)}.")
    if name == "W":
        return {split: np.asarray(vectors) for split, vectors in vectors_by_split.items()}
    if name in ("s(W)", "s(W)+shape", "s(W)_unterthiner"):
        if architecture is None:
            raise ValueError(f"Baseline {name!r} needs the architecture record (its 'parameters' list).")
        if name == "s(W)_unterthiner":
            return {
                split: unterthiner_statistics(vectors, architecture) for split, vectors in vectors_by_split.items()
            }
        return {
            split: weight_statistics_variant(vectors, architecture, name)
            for split, vectors in vectors_by_split.items()
        }
    if name == "linear_map":
        if architecture is None:
            raise ValueError("Baseline 'linear_map' needs the architecture record with its layer list.")
        return {split: linear_map_features(vectors, architecture) for split, vectors in vectors_by_split.items()}
    if name == "probe_outputs":
        check_probe_outputs_inputs(architecture, activations)
        return {
            split: probe_output_features(vectors, architecture, activations, distribution=distribution)
            for split, vectors in vectors_by_split.items()
        }
    if name == "umap":
        return umap_features(vectors_by_split, num_components, max_fit_rows=max_fit_rows, seed=seed)
    kernel = name.removeprefix("pca_")
    return kernel_pca_features(vectors_by_split, kernel, num_components, max_fit_rows, seed)


def linear_map_features(vectors: np.ndarray, architecture: Mapping) -> np.ndarray:
    """The affine map input → logits of each network with its non-linearities taken out.

    Every activation becomes the identity and max pooling becomes average pooling (dropout is off), which leaves an
    affine map x ↦ A x + c; the features are A (num_classes × num_inputs, row-major), followed by c when the
    architecture has biases. For a bias-free two-layer MLP (TETRIS's 16→5→4) this is the product W₂ W₁.

    It is exactly invariant to every symmetry the encoder is taught: a permutation of a layer's neurons or channels,
    and a sign flip of a neuron (of any neuron: the linearised network is odd in each), since both leave the
    linearised network's function unchanged. It is no data: the map is read off the weights by passing the input
    basis through the linearised network.

    Args:
        vectors: (num_rows, num_parameters) raw flat weight vectors; a row with a non-finite weight gets NaN features.
        architecture: ``NetworkSpec.to_dict()`` (a zoo's ``zoo_info["architecture"]``): it needs the layer list.

    Returns:
        (num_rows, num_classes · (num_inputs + 1 if the architecture has biases else num_inputs)) float64.

    Raises:
        ValueError: An architecture record without its layer list (an imported zoo that only names its
            parameters), or vectors of the wrong width.
    """
    import math

    import torch

    from ..zoo.networks import NetworkSpec, batched_outputs, make_module

    check_linear_map_architecture(architecture)
    spec = NetworkSpec.from_dict(architecture)
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] != spec.num_parameters:
        raise ValueError(f"Expected weight vectors of shape (num_rows, {spec.num_parameters}), got {vectors.shape}.")
    module = make_module(spec, "identity").double().eval()
    for index, layer in enumerate(module.layers):
        if isinstance(layer, torch.nn.MaxPool2d):
            module.layers[index] = torch.nn.AvgPool2d(layer.kernel_size)
    num_inputs = math.prod(spec.input_shape)
    has_bias = any(layer.bias_name for layer in spec.parameter_layers)
    basis = torch.cat([torch.zeros(1, num_inputs), torch.eye(num_inputs)]).view(-1, *spec.input_shape).double()
    features = np.full((len(vectors), spec.num_classes * (num_inputs + int(has_bias))), np.nan)
    finite = np.flatnonzero(np.isfinite(vectors).all(axis=1))
    weights = torch.from_numpy(vectors[finite]).double()
    for rows, outputs in batched_outputs(module, spec, weights, basis, _FORWARD_BUDGET):
        offset = outputs[:, 0]  # f(0) = c
        matrix = (outputs[:, 1:] - offset[:, None]).transpose(1, 2)  # A e_i = f(e_i) − f(0): (rows, classes, inputs)
        parts = [matrix.flatten(1), offset] if has_bias else [matrix.flatten(1)]
        features[finite[rows]] = torch.cat(parts, dim=1).numpy()
    return features


def check_linear_map_architecture(architecture: Mapping, baseline: str = "linear_map") -> None:
    """Refuses an architecture record without its layer list: ``baseline`` (by default ``linear_map``) runs it.

    Raises:
        ValueError: Naming what is missing and what to do.
    """
    if not architecture.get("layers") or not architecture.get("input_shape"):
        raise ValueError(
            f"Baseline '{baseline}' runs the network, so it needs the architecture's layer list and input shape "
            "(zoo_info['architecture'] of a zoo built by hyperrep_hf has them); this zoo's record only names its "
            f"parameters. Leave {baseline} out of --baselines for this zoo."
        )


def probe_inputs(input_shape, count: int = PROBE_INPUTS, seed: int = PROBE_SEED, distribution: str = "normal"):
    """The fixed random inputs of :func:`probe_output_features`: ``count`` draws in the input's shape, float32.

    No data: the same inputs for every network of a shape, from a seeded generator (reproducible across machines,
    as torch's CPU generator is). ``distribution`` (the model config's ``FUNCTION_INPUTS``): ``"normal"`` N(0, 1),
    ``"uniform"`` U(0, 1), ``"bernoulli"`` each value 0 or 1 with probability ½.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    shape = (count, *input_shape)
    if distribution == "normal":
        return torch.randn(*shape, generator=generator)
    if distribution == "uniform":
        return torch.rand(*shape, generator=generator)
    if distribution == "bernoulli":
        return torch.bernoulli(torch.full(shape, 0.5), generator=generator)
    raise ValueError(f"probe inputs: distribution {distribution!r} (expected one of {list(FUNCTION_INPUTS)}).")


def probe_output_features(
    vectors: np.ndarray,
    architecture: Mapping,
    activations: str | Sequence[str],
    *,
    count: int = PROBE_INPUTS,
    seed: int = PROBE_SEED,
    distribution: str = "normal",
    inputs=None,
) -> np.ndarray:
    """What each network computes: √ of its softmax outputs on fixed random inputs (:func:`probe_inputs`).

    Each network runs (dropout off, in eval mode) on the same ``count`` inputs drawn from N(0, 1) (or another
    ``distribution``) in the input's shape, once under each of ``activations`` — the zoo's activations, not the
    network's own: which one a network was trained with is a label (a probe target of the HYP zoos), so every network
    gets every one, and the features are the same function of the weights for every row. The features are the square
    roots of the class probabilities, activation by activation, input by input (the Hellinger embedding: a network that
    is confident everywhere, as large initialisations make it, no longer puts near-constant columns before the probe's
    standardisation; on TETRIS-HYP it lifted test accuracy R² from 68.7 to 83.1 in a first trial, on TETRIS-SEED it
    changed no target by more than a point). No data and no label is read (the inputs are noise), and the features are
    exactly invariant to every symmetry of a network (a permutation of neurons or channels; a sign flip of a neuron
    before an odd activation), which leaves its function, hence every output, unchanged. Probing networks with inputs
    rather than reading their weights is known to work well (Kahana et al. 2024, "Deep linear probe generators for
    weight space learning"); here the inputs are not learned.

    Args:
        vectors: (num_rows, num_parameters) raw flat weight vectors; a row with a non-finite weight or output gets
            NaN features.
        architecture: ``NetworkSpec.to_dict()`` (a zoo's ``zoo_info["architecture"]``): it needs the layer list.
        activations: The activation(s) every row runs under (``hyperrep_hf.zoo.networks.ACTIVATIONS``), in order:
            a zoo's ``zoo_info["hyperparameters"]["activation"]`` (:func:`zoo_activations`).
        count: Number of random inputs.
        seed: Seed of the random inputs.
        distribution: Their prior (:func:`probe_inputs`): ``"normal"`` (the baseline's), ``"uniform"`` or
            ``"bernoulli"``.
        inputs: Other inputs instead, (num_inputs, *input_shape) float32 (``count``, ``seed`` and ``distribution``
            are then unused): e.g. a zoo's own images, to measure what the outputs would read with data (bench/).

    Returns:
        (num_rows, len(activations) · number of inputs · num_classes) float32.

    Raises:
        ValueError: An architecture record without its layer list, no or an unknown activation, or vectors of the
            wrong width.
    """
    import torch

    from ..zoo.networks import ACTIVATIONS, NetworkSpec, batched_outputs, make_module

    check_linear_map_architecture(architecture, "probe_outputs")
    spec = NetworkSpec.from_dict(architecture)
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] != spec.num_parameters:
        raise ValueError(f"Expected weight vectors of shape (num_rows, {spec.num_parameters}), got {vectors.shape}.")
    activations = [activations] if isinstance(activations, str) else [str(name) for name in activations]
    unknown = [name for name in activations if name not in ACTIVATIONS]
    if not activations or unknown:
        raise ValueError(f"probe_outputs: activations {activations} (expected some of {ACTIVATIONS}).")
    inputs = probe_inputs(spec.input_shape, count, seed, distribution) if inputs is None else inputs
    width = len(inputs) * spec.num_classes
    features = np.full((len(vectors), len(activations) * width), np.nan, dtype=np.float32)
    finite = np.flatnonzero(np.isfinite(vectors).all(axis=1))
    weights = torch.from_numpy(np.ascontiguousarray(vectors[finite], dtype=np.float32))
    for index, activation in enumerate(activations):
        module = make_module(spec, activation).eval()
        for chunk, logits in batched_outputs(module, spec, weights, inputs, _FORWARD_BUDGET):
            block = logits.softmax(dim=-1).sqrt().flatten(1).numpy()
            features[finite[chunk], index * width : (index + 1) * width] = block
    features[~np.isfinite(features).all(axis=1)] = np.nan  # an overflowing network: NaN, as a NaN weight
    return features


def zoo_activations(zoo_info: Mapping) -> list[str] | None:
    """The activations a zoo's networks were trained with; None when its record does not say (an imported zoo)."""
    activations = zoo_info.get("hyperparameters", {}).get("activation")
    return [str(name) for name in activations] if activations else None


def check_baselines_can_run(names: Sequence[str], architecture: Mapping, activations: Sequence[str] | None) -> None:
    """Refuses, before anything runs, a baseline among ``names`` that runs the networks and cannot on this zoo.

    Raises:
        ValueError: From :func:`check_linear_map_architecture` or :func:`check_probe_outputs_inputs`.
    """
    if "linear_map" in names:
        check_linear_map_architecture(architecture)
    if "probe_outputs" in names:
        check_probe_outputs_inputs(architecture, activations)


def check_probe_outputs_inputs(architecture: Mapping | None, activations: Sequence[str] | None) -> None:
    """Refuses what :func:`probe_output_features` cannot run: no layer list, or no activations to run under.

    Raises:
        ValueError: Naming what is missing and what to do.
    """
    if architecture is None:
        raise ValueError("Baseline 'probe_outputs' needs the architecture record with its layer list.")
    check_linear_map_architecture(architecture, "probe_outputs")
    if not activations:
        raise ValueError(
            "Baseline 'probe_outputs' runs each network under the zoo's activations, so it needs them "
            "(zoo_info['hyperparameters']['activation'], which a zoo built by hyperrep_hf has). Leave "
            "probe_outputs out of --baselines for this zoo."
        )
