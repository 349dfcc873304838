"""Evaluating a hyper-representation on a zoo: linear probes on z against the baselines (paper §5, Tables 2–7).

```
 model folder ──► processor → HyperRepModel (eval mode, batches) ──► z of the un-augmented weights ─┐
 zoo (train / validation / test, by model) ──► W, s(W), kernel PCA ×3, UMAP ───────────────────────┤
                                                                                                 ▼
                   the same linear probes (ridge α / softmax C chosen on validation) per target and method
                                                                                                 │
 out_dir: results.json  results.md  embedding_map.png  hyperrep_predictions.png ◄──────────────────┤
 model folder: probes/<zoo>/<target>/  probes/index.json  eval/results.json  eval/*.png  README.md ◄┘
```

:func:`evaluate_model` is the library side of ``hyperrep evaluate MODEL_DIR --zoo ZOO_DIR[:CONFIG] --out DIR``;
``ood.evaluate_ood`` fits probes on one zoo and scores them on others (Kendall τ of test accuracy, Table 7);
the report (``report``) and the plots (``plots``) have modules of their own.
Targets are the zoo's metrics (epoch, test accuracy, generalisation gap, per-class F1) and every hyper-parameter
that varies in the zoo; numbers are test R² (accuracy for categorical targets), Kendall τ beside them.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..atomic import write_bytes_atomic, write_json_atomic, write_text_atomic
from ..checks import resolve_device
from ..models.hyperrep.embeddings import (
    Z_LAYOUT,
    embed_vectors,
    networks_per_pass,
    representation_dim,
    representation_layout,
    symmetry_transforms,
)
from ..zoo.folder import parse_zoo_argument
from .baselines import check_baselines_can_run, compute_baseline_features, zoo_activations
from .plots import write_plots
from .probes import ALPHA_GRID, GROUP_SHRINKAGE, ProbeReport, ProbeResult, check_probe_splits, fit_probes
from .report import (
    BASELINES,
    CATEGORICAL_HYPERPARAMETERS,
    GRID_CATEGORICAL,
    HYPERREP_METHOD,
    HYPERREP_Z_METHOD,
    MAX_GRID_VALUES,
    METRIC_TARGETS,
    NUMERIC_HYPERPARAMETERS,
    RESULTS_FORMAT_VERSION,
    _format_value,
    _results_document,
    _write_results,
    compare_final_checkpoints,
    results_table,
)

logger = logging.getLogger("hyperrep_hf")


# ----------------------------------------------------------------------------------------------------------------
# Loading: zoo arrays, encoder, embeddings
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class ZooArrays:
    """The rows of one zoo as numpy arrays.

    Attributes:
        name: Display name (the zoo's config name).
        source: The zoo folder or Hub repo it was read from.
        config: Config name inside it.
        info: ``zoo_info.json``.
        vectors: Split → (num_rows, num_parameters) float32 flat weights.
        columns: Split → column name → (num_rows,) values (float64 for numbers, object for labels).
        model_ids: Split → (num_rows,) int64.
        total_rows: Split → rows before subsampling.
    """

    name: str
    source: str
    config: str
    info: dict
    vectors: dict[str, np.ndarray]
    columns: dict[str, dict[str, np.ndarray]]
    model_ids: dict[str, np.ndarray]
    total_rows: dict[str, int]


def subsample_by_model(model_ids: np.ndarray, max_rows: int | None, seed: int = 0) -> np.ndarray:
    """Row indices of whole models drawn at random until ``max_rows`` rows (at least one model).

    Args:
        model_ids: (num_rows,) the model of each row.
        max_rows: Row budget; None keeps every row.
        seed: Seed of the draw.

    Returns:
        Sorted (num_kept,) int64 indices; every row of a drawn model is kept.
    """
    model_ids = np.asarray(model_ids)
    if max_rows is None or model_ids.size <= max_rows:
        return np.arange(model_ids.size)
    if max_rows < 1:
        raise ValueError(f"max_rows must be a positive integer, got {max_rows!r}.")
    models, counts = np.unique(model_ids, return_counts=True)
    order = np.random.default_rng(seed).permutation(models.size)
    budget = np.cumsum(counts[order])
    keep = order[: max(1, int(np.searchsorted(budget, max_rows, side="right")))]
    return np.flatnonzero(np.isin(model_ids, models[keep]))


def _column_array(values: Any) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind in "biuf":
        return array.astype(np.float64)
    return np.asarray([None if value is None else value for value in array.tolist()], dtype=object)


def _weights_array(column: Any) -> np.ndarray:
    """A fixed-size-list Arrow column → (num_rows, num_parameters) float32, without Python objects per row."""
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(array) == 0:
        return np.zeros((0, array.type.list_size), dtype=np.float32)
    values = array.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    return values.reshape(len(array), -1)


def load_zoo_arrays(zoo: str | os.PathLike, max_rows: int | None = None, seed: int = 0) -> ZooArrays:
    """Reads a zoo (``DIR[:CONFIG]`` or ``REPO[:CONFIG]``) into numpy arrays, optionally subsampled by model.

    Args:
        zoo: The zoo argument of ``hyperrep evaluate``.
        max_rows: Keep at most this many rows per split, whole models drawn at random (see
            :func:`subsample_by_model`); None keeps everything.
        seed: Seed of the subsampling.
    """
    from ..zoo.folder import load_zoo

    source, config = parse_zoo_argument(zoo)
    dataset, info = load_zoo(source, config)
    config = config or info["name"]
    vectors, columns, model_ids, total_rows = {}, {}, {}, {}
    for split, rows in dataset.items():
        table = rows.with_format("arrow")[:]  # the rows (a selected view too) as Arrow: columns straight to numpy
        model_ids[split] = table.column("model_id").to_numpy()
        keep = subsample_by_model(model_ids[split], max_rows, seed)
        model_ids[split] = model_ids[split][keep]
        total_rows[split] = len(rows)
        vectors[split] = _weights_array(table.column("weights"))[keep]
        columns[split] = {
            name: _column_array(table.column(name).to_numpy(zero_copy_only=False))[keep]
            for name in table.column_names
            if name != "weights"
        }
    return ZooArrays(config, str(source), config, info, vectors, columns, model_ids, total_rows)


MODEL_FILES = ("config.json", "preprocessor_config.json")


def check_model_folder(model_dir: str | os.PathLike) -> None:
    """Refuses a local path that is not a trained model folder (a file, or a folder without its files).

    A path that does not exist is left to :func:`load_encoder` (it may be a Hub repo id).

    Raises:
        ValueError: ``model_dir`` is a file.
        FileNotFoundError: A folder without ``config.json``, ``preprocessor_config.json`` or the weights.
    """
    local = Path(model_dir)
    if not local.exists():
        return
    if not local.is_dir():
        raise ValueError(f"Model {local} is a file; pass a model folder (config.json, model.safetensors, …).")
    missing = [name for name in MODEL_FILES if not (local / name).is_file()]
    if not any((local / name).is_file() for name in ("model.safetensors", "model.safetensors.index.json")):
        missing.append("model.safetensors")
    if missing:
        raise FileNotFoundError(
            f"{local} is not a trained model folder: it has no {', '.join(missing)}. Pass the folder `hyperrep "
            "train` wrote (its --output-dir, or one of its checkpoints/<step>/pretrained_model/)."
        )


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def load_encoder(
    model_dir: str | os.PathLike, append_weight_statistics: bool | None = None, weight_statistics: str | None = None
) -> tuple[torch.nn.Module, Any]:
    """The encoder (``HyperRepModel``, eval mode) and its ``NeuronTokenProcessor`` from a model folder or repo.

    ``append_weight_statistics``: None keeps the config's; True / False overrides it in memory (the representation
    is then z̄ ⊕ s(W) / z̄ alone; :func:`set_append_weight_statistics` writes it into a folder's config.json).
    ``weight_statistics``: None keeps the config's; ``"s(W)"`` or ``"s(W)+shape"`` overrides what is appended.

    Raises:
        FileNotFoundError: No such folder, and no Hub repo of that name could be read (``NotInCacheError``: not in
            the cache with ``HF_HUB_OFFLINE=1``).
        NotAHyperRepRepoError: Another library's model, or a newer model format (naming what was found).
        ValueError: A folder whose files are damaged or not a hyper-representation encoder (naming the folder).
    """
    from safetensors import SafetensorError

    from ..hub.publish import check_model_source
    from ..models.hyperrep.modeling_hyperrep import HyperRepModel
    from ..models.hyperrep.processing_hyperrep import NeuronTokenProcessor

    check_model_folder(model_dir)
    check_model_source(model_dir)  # another library's repo, a newer format, a damaged config.json: say so
    try:
        model = HyperRepModel.from_pretrained(os.fspath(model_dir)).eval()
        processor = NeuronTokenProcessor.from_pretrained(os.fspath(model_dir))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as error:
        if not Path(model_dir).exists():
            raise FileNotFoundError(
                f"No model folder {model_dir}, and it could not be read as a Hub model repo either "
                f"({type(error).__name__}: {_one_line(error)}). Pass the folder `hyperrep train` wrote."
            ) from None
        raise ValueError(
            f"Cannot load the encoder from {model_dir} ({type(error).__name__}: {_one_line(error)}). The folder is "
            "damaged or "
            "not a hyperrep model: re-download it, or take it again from the training run's checkpoints."
        ) from None
    if append_weight_statistics is not None:
        model.config.append_weight_statistics = bool(append_weight_statistics)
    if weight_statistics is not None:
        check_weight_statistics(weight_statistics)
        model.config.weight_statistics = weight_statistics
    return model, processor


def check_weight_statistics(variant: str) -> None:
    """Refuses a ``weight_statistics`` variant other than those :mod:`weight_statistics` computes."""
    from ..models.hyperrep.weight_statistics import WEIGHT_STATISTICS_VARIANTS

    if variant not in WEIGHT_STATISTICS_VARIANTS:
        raise ValueError(
            f"--weight-statistics (weight_statistics) must be one of {list(WEIGHT_STATISTICS_VARIANTS)}, "
            f"got {variant!r}."
        )


def set_append_weight_statistics(
    model_dir: str | os.PathLike, value: bool, weight_statistics: str | None = None
) -> Path:
    """Writes ``append_weight_statistics`` into a model folder's ``config.json``, every other entry kept as it is.

    Switches a trained encoder's hyper-representation between z̄ and z̄ ⊕ s(W) without retraining (the encoder's
    weights do not change). Probe heads fitted under the other setting no longer match: the pipeline refuses them
    until ``hyperrep evaluate`` fits them again (it calls this itself with ``--append-weight-statistics``).
    ``weight_statistics`` (not None) writes which statistics are appended too.
    """
    path = Path(model_dir) / "config.json"
    config = json.loads(path.read_text())
    wanted = {"append_weight_statistics": bool(value)}
    if weight_statistics is not None:
        wanted["weight_statistics"] = weight_statistics
    defaults = {"append_weight_statistics": False, "weight_statistics": "s(W)"}
    if all(config.get(key, defaults[key]) == value for key, value in wanted.items()):
        return path
    config.update(wanted)
    return write_text_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


@torch.inference_mode()
def compute_embeddings(
    model: torch.nn.Module,
    processor: Any,
    vectors: np.ndarray,
    batch_size: int | None = 1024,
    symmetry_samples: int | None = None,
    max_rows_per_pass: int = 2048,
) -> np.ndarray:
    """Hyper-representations of flat weight vectors, in batches, with the model in eval mode.

    Each is z averaged over the network and its symmetric copies (:mod:`hyperrep_hf.models.hyperrep.embeddings`; K from
    ``model.config.embedding_symmetry_samples`` unless ``symmetry_samples`` is given), followed by s(W) when the
    config has ``append_weight_statistics``. Rows with a NaN/inf weight get NaN embeddings (the probes drop and
    count them) instead of failing.

    Args:
        model: ``HyperRepModel`` (or anything returning ``.embeddings``).
        processor: Its ``NeuronTokenProcessor``.
        vectors: (num_rows, num_parameters) flat weights.
        batch_size: Networks per call (None: as many as fill ``max_rows_per_pass`` rows with their K copies).
        symmetry_samples: K, overriding the model config's (1: plain z).
        max_rows_per_pass: Encoder rows per forward pass: the copies of many networks go through it together.

    Returns:
        (num_rows, latent_dim) float64, or (num_rows, latent_dim + 7 · num_layers) with ``append_weight_statistics``.
    """
    model.eval()
    transforms = symmetry_transforms(model.config, processor.architecture, symmetry_samples)
    batch_size = batch_size or networks_per_pass(max_rows_per_pass, transforms, processor)
    vectors = np.asarray(vectors, dtype=np.float32)
    finite = np.flatnonzero(np.isfinite(vectors).all(axis=1))
    width = representation_dim(model.config, processor.architecture)
    embeddings = np.full((vectors.shape[0], width), np.nan)
    for start in range(0, finite.size, batch_size):
        rows = finite[start : start + batch_size]
        batch = embed_vectors(model, processor, torch.from_numpy(vectors[rows]), transforms, max_rows_per_pass)
        embeddings[rows] = batch.double().cpu().numpy()
    return embeddings


# ----------------------------------------------------------------------------------------------------------------
# Targets
# ----------------------------------------------------------------------------------------------------------------


def select_targets(zoo: ZooArrays) -> tuple[list[str], set[str]]:
    """The probe targets of a zoo: metrics, per-class F1, and the hyper-parameters that vary.

    Activation, init and optimizer are classes; so is dropout when the zoo has a grid of a few values of it (the
    paper's MNIST-HYP tables), a continuous dropout stays a regression like learning rate and weight decay.

    Returns:
        (target names in table order, the categorical ones).
    """
    train_columns = zoo.columns.get("train", next(iter(zoo.columns.values())))
    present = set(train_columns)
    f1_targets = sorted(
        (name for name in present if name.startswith("f1_class_")), key=lambda name: int(name.rsplit("_", 1)[1])
    )
    varying = zoo.info.get("hyperparameters", {})

    def varies(name: str) -> bool:
        values = varying.get(name)
        if values is not None:
            return len(values) > 1
        column = train_columns[name]
        return len({str(value) for value in column}) > 1

    hyperparameters = [
        name for name in (*NUMERIC_HYPERPARAMETERS, *CATEGORICAL_HYPERPARAMETERS) if name in present and varies(name)
    ]
    targets = [name for name in METRIC_TARGETS if name in present] + f1_targets + hyperparameters
    categorical = {name for name in hyperparameters if name in CATEGORICAL_HYPERPARAMETERS}
    categorical |= {
        name
        for name in hyperparameters
        if name in GRID_CATEGORICAL and len({str(value) for value in train_columns[name]}) <= MAX_GRID_VALUES
    }
    return targets, categorical


def _targets_by_split(zoo: ZooArrays, targets: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    return {split: {name: columns[name] for name in targets} for split, columns in zoo.columns.items()}


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class EvaluationReport:
    """What :func:`evaluate_model` produced.

    Attributes:
        document: The ``results.json`` document.
        reports: Method → its :class:`~hyperrep_hf.probing.probes.ProbeReport` (fitted probes included).
        paths: Every file written.
    """

    document: dict
    reports: dict[str, ProbeReport]
    paths: list[Path] = field(default_factory=list)

    @property
    def results(self) -> list[ProbeResult]:
        """Every result of every method."""
        return [result for report in self.reports.values() for result in report.results]


class _Stages:
    """A tqdm bar over the evaluation's stages, one summary line per finished stage."""

    def __init__(self, total: int, progress: bool, prefix: str) -> None:
        self.bar = tqdm(total=total, desc=prefix, unit="stage", disable=None if progress else True)
        self.progress, self.prefix, self.started = progress, prefix, time.perf_counter()

    def done(self, message: str) -> None:
        elapsed = time.perf_counter() - self.started
        self.bar.update(1)
        if self.progress:
            self.bar.write(f"[{self.prefix}] {message} ({elapsed:.1f} s)")
        self.started = time.perf_counter()

    def add(self, count: int) -> None:
        """``count`` more stages than planned (the z-only row, known once the encoder is loaded)."""
        self.bar.total += count
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def check_evaluation_options(
    baselines: Sequence[str] | None = None,
    max_rows: int | None = None,
    seed: int = 0,
    ridge_alphas: Sequence[float] | None = None,
) -> list[str]:
    """Checks the options of an evaluation before any work; returns the chosen baselines.

    Raises:
        ValueError: An unknown baseline, a ``max_rows`` below 1, a negative ``seed`` or a ridge grid that is empty
            or holds a value that is not a positive finite number (naming the option).
    """
    if max_rows is not None and (not isinstance(max_rows, int) or max_rows < 1):
        raise ValueError(f"--max-rows (max_rows) must be a positive integer, got {max_rows!r}.")
    if not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"--seed must be an integer in [0, 2**32), got {seed!r}.")
    ridge_grid(ridge_alphas)
    return _choose_baselines(baselines)


def ridge_grid(ridge_alphas: Sequence[float] | None = None) -> tuple[float, ...]:
    """The ridge probes' α grid of an evaluation: ``ridge_alphas`` as floats, or the paper's when None.

    Raises:
        ValueError: An empty grid, or a value that is not a positive finite number (naming the option).
    """
    grid = ALPHA_GRID if ridge_alphas is None else ridge_alphas
    if len(grid) == 0 or not all(isinstance(alpha, (int, float)) and 0 < alpha < math.inf for alpha in grid):
        raise ValueError(f"--ridge-alphas (ridge_alphas) must be positive finite numbers, got {list(grid)!r}.")
    return tuple(float(alpha) for alpha in grid)


def baseline_components(config: Any) -> int:
    """Output width of the PCA and UMAP baselines: z's width, at most the networks' size.

    A linear PCA of the weights has no more than ``num_parameters`` components, so a z wider than the weights
    (allowed with the function term) is compared with every component there is.
    """
    return min(int(config.latent_dim), int(config.num_parameters))


def representation_groups(config: Any, processor: Any, group_weights: bool) -> tuple[int, int] | None:
    """(latent_dim, number of s(W) values) for group-weighted probes on z̄ ⊕ s(W); None without ``group_weights``.

    Raises:
        ValueError: ``group_weights`` on a representation of z̄ alone (there is no second group to weigh).
    """
    if not group_weights:
        return None
    if representation_layout(config) == Z_LAYOUT:
        raise ValueError(
            "--group-weights (group_weights) weighs z̄ against s(W) in the probes, but this model's representation "
            "is z̄ alone: add --append-weight-statistics (append_weight_statistics=True), or leave group weights off."
        )
    latent_dim = int(config.latent_dim)
    return latent_dim, representation_dim(config, processor.architecture) - latent_dim


def _choose_baselines(baselines: Sequence[str] | None) -> list[str]:
    from .baselines import BASELINE_NAMES

    chosen = list(BASELINES if baselines is None else baselines)
    unknown = [name for name in chosen if name not in BASELINE_NAMES]
    if unknown:
        raise ValueError(f"Unknown baselines {unknown}; choose from {list(BASELINE_NAMES)}.")
    return chosen


def evaluate_model(
    model_dir: str | os.PathLike,
    zoo: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    baselines: Sequence[str] | None = None,
    max_rows: int | None = None,
    max_fit_rows: int = 3000,
    seed: int = 0,
    batch_size: int = 2048,
    device: str = "cpu",
    validation_fallback: str | None = None,
    save_to_model: bool = True,
    plots: bool = True,
    map_method: str = "auto",
    progress: bool = True,
    overwrite: bool = False,
    append_weight_statistics: bool | None = None,
    ridge_alphas: Sequence[float] | None = None,
    group_weights: bool = False,
    weight_statistics: str | None = None,
) -> EvaluationReport:
    """Probes the hyper-representation and the baselines on a zoo; writes the results, plots and probe heads.

    Each zoo's probes go into the model folder under the zoo's key (``probes/<config>-<fingerprint>/``, see
    :func:`hyperrep_hf.probing.probe_heads.zoo_key`) beside other zoos' probes, and become the default for predictions.
    Every input is checked before anything is written: the model folder, the zoo, the output folders, and
    whether this zoo's probes exist already (then ``overwrite`` is needed).

    Args:
        model_dir: Model folder (encoder + processor; a Hub repo id is read, but nothing is saved into it).
        zoo: ``ZOO_DIR[:CONFIG]`` or ``REPO[:CONFIG]``.
        out_dir: Where ``results.json``, ``results.md`` and the plots go.
        baselines: Subset of :data:`BASELINES` (plus ``"s(W)_unterthiner"`` and ``"linear_map"``); default all of
            :data:`BASELINES`. UMAP is skipped
            with a message when umap-learn is missing.
        max_rows: Keep at most this many rows per split (whole models, seeded) — for speed.
        max_fit_rows: Train rows the kernel PCA / UMAP baselines are fitted on.
        seed: Seed of subsampling and of the fitted baselines.
        batch_size: Encoder rows per forward pass: the K symmetric copies (or canonical views) of many networks go
            through the encoder together, this many rows at a time.
        device: Where the encoder runs: ``"cpu"``, ``"cuda"``, ``"cuda:1"``… or ``"auto"`` (a CUDA GPU if any).
        validation_fallback: None: a zoo without validation split is an error; ``"train"``: choose the probes'
            regularisation on train (optimistic; stated in ``results.md``).
        save_to_model: Save probe heads, ``eval/`` and the model card into ``model_dir``.
        plots: Draw the PNG plots (matplotlib).
        map_method: 2-D map of the embeddings: ``"umap"``, ``"pca"`` or ``"auto"`` (UMAP when installed).
        progress: Progress bar and one line per stage.
        overwrite: Replace probes (and the ``eval/`` entry) that the model folder already holds for this zoo.
        append_weight_statistics: None: the model config's setting. True / False: the hyper-representation is
            z̄ ⊕ s(W) / z̄ alone for this evaluation, and (``save_to_model``) the setting is written into the model
            folder's ``config.json`` with the probe heads, so predictions use what the probes were fitted on.
            With z̄ ⊕ s(W), ``results`` also has the row ``hyperrep_z`` (z̄ alone, "hyperrep (z only)").
        weight_statistics: None: the config's. ``"s(W)"`` / ``"s(W)+shape"``: what is appended to z̄ (the latter
            implies ``append_weight_statistics``); written into ``config.json`` like it.
        ridge_alphas: The ridge probes' α grid, for every method alike; None: the paper's
            (:data:`~hyperrep_hf.probing.probes.ALPHA_GRID`, 1e3 … 1e-5). Recorded in ``results.json``;
            ``results.md`` counts the probes whose α is the grid's strongest (they may want a wider grid).
        group_weights: With z̄ ⊕ s(W): the hyperrep probes treat z̄ and s(W) as two feature groups and choose each
            group's weight on validation with α (or C): full, shrunk by 1/3 or 1/10, or left out
            (:func:`~hyperrep_hf.probing.probes.group_weightings`). Recorded per result as ``group_weights``;
            ``results.md`` counts the choices. False: one α for all columns, the paper's probe. Needs z̄ ⊕ s(W).

    Returns:
        An :class:`EvaluationReport`.

    The steps:

    1. check every input before anything is written (:func:`_check_inputs`);
    2. load the zoo: rows, splits, targets; refuse probes that exist already (:func:`_load_zoo_for_probes`);
    3. load the encoder and check that it was trained on this zoo's architecture;
    4. embed every split: z̄ of each network, ⊕ s(W) with ``append_weight_statistics`` (:func:`_embed_splits`);
    5. probe the baselines, then z̄ (alone and ⊕ s(W)), with the same probes (:func:`_probe_methods`);
    6. write ``results.json`` / ``results.md``, with the final-checkpoints comparison (:func:`_write_report`);
    7. draw the plots (optional);
    8. save the probe heads, ``eval/`` and the model card into the model folder (optional, :func:`_save_to_model`).

    Raises:
        ProbesExistError: The model folder has probes for this zoo and ``overwrite`` is false.
    """
    chosen_baselines, save_to_model = _check_inputs(
        model_dir, out_dir, baselines, max_rows, seed, save_to_model, ridge_alphas
    )
    alphas = ridge_grid(ridge_alphas)
    device = resolve_device(device)  # unknown, or a GPU this machine lacks: refused before anything is written
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"--batch-size (batch_size) must be a positive integer, got {batch_size!r}.")
    if weight_statistics is not None:
        check_weight_statistics(weight_statistics)
    stages = _Stages(4 + len(chosen_baselines) + int(plots) + 2 * int(save_to_model), progress, "evaluate")
    try:
        zoo_arrays, targets, categorical = _load_zoo_for_probes(
            zoo, model_dir, max_rows, seed, validation_fallback, save_to_model, overwrite, stages
        )
        if weight_statistics is not None and append_weight_statistics is None:
            append_weight_statistics = True  # asking for statistics asks for them to be appended
        model, processor = load_encoder(model_dir, append_weight_statistics, weight_statistics)
        model.to(device)
        _check_architecture(processor, zoo_arrays)
        check_baselines_can_run(chosen_baselines, zoo_arrays.info["architecture"], zoo_activations(zoo_arrays.info))
        layout = representation_layout(model.config)
        feature_groups = representation_groups(model.config, processor, group_weights)
        stages.done(
            f"encoder {model_dir} on {device}: latent_dim {model.config.latent_dim}, {processor.num_tokens} tokens; "
            f"representation {layout} ({representation_dim(model.config, processor.architecture)} values)"
        )
        embeddings = _embed_splits(model, processor, zoo_arrays, batch_size, stages)
        targets_by_split = _targets_by_split(zoo_arrays, targets)
        reports, unavailable, features_by_method = _probe_methods(
            zoo_arrays,
            embeddings,
            chosen_baselines,
            _probe_runner(targets_by_split, categorical, validation_fallback, alphas),
            num_components=baseline_components(model.config),
            max_fit_rows=max_fit_rows,
            seed=seed,
            stages=stages,
            latent_dim=int(model.config.latent_dim),
            feature_groups=feature_groups,
        )
        document = _results_document(
            model_dir, zoo_arrays, targets, categorical, reports, unavailable, validation_fallback
        )
        if layout != Z_LAYOUT:  # absent for z̄ alone: such documents read as before
            document["representation"] = layout
        document["ridge_alphas"] = list(alphas)
        if feature_groups is not None:
            document["group_weights"] = {"feature_groups": list(feature_groups), "shrinkage": list(GROUP_SHRINKAGE)}
        paths = _write_report(Path(out_dir), document, zoo_arrays, reports, features_by_method, categorical, seed)
        if plots:
            paths += write_plots(
                Path(out_dir), zoo_arrays, embeddings, reports[HYPERREP_METHOD], targets, map_method, seed
            )
            stages.done(f"plots: {', '.join(path.name for path in paths if path.suffix == '.png')}")
        if save_to_model:
            if append_weight_statistics is not None:  # the probes below are fitted on this setting
                paths.append(set_append_weight_statistics(model_dir, append_weight_statistics, weight_statistics))
            paths += _save_to_model(
                Path(model_dir), zoo_arrays, reports, targets_by_split, document, paths, stages, embeddings, layout
            )
    finally:
        stages.close()
    if progress:
        for path in paths:
            print(f"wrote {path}", flush=True)
    return EvaluationReport(document, reports, paths)


def _check_inputs(
    model_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    baselines: Sequence[str] | None,
    max_rows: int | None,
    seed: int,
    save_to_model: bool,
    ridge_alphas: Sequence[float] | None,
) -> tuple[list[str], bool]:
    """Step 1: the options, the model folder and the output folders; returns (baselines, whether to save)."""
    from ..checks import check_output_folder

    chosen_baselines = check_evaluation_options(baselines, max_rows, seed, ridge_alphas)
    check_model_folder(model_dir)
    check_output_folder(out_dir)
    save_to_model = save_to_model and Path(model_dir).is_dir()
    if save_to_model:
        check_output_folder(model_dir, "model folder")
    return chosen_baselines, save_to_model


def _load_zoo_for_probes(
    zoo: str | os.PathLike,
    model_dir: str | os.PathLike,
    max_rows: int | None,
    seed: int,
    validation_fallback: str | None,
    save_to_model: bool,
    overwrite: bool,
    stages: _Stages,
) -> tuple[ZooArrays, list[str], set[str]]:
    """Step 2: the zoo's rows, its splits checked, existing probes refused; returns (zoo, targets, categorical)."""
    zoo_arrays = load_zoo_arrays(zoo, max_rows, seed)
    check_probe_splits(list(zoo_arrays.vectors), validation_fallback, f"Zoo {zoo_arrays.name!r}")
    if save_to_model:
        _refuse_existing_probes(Path(model_dir), zoo_arrays, overwrite)
    targets, categorical = select_targets(zoo_arrays)
    stages.done(f"zoo {zoo_arrays.name}: {_rows_text(zoo_arrays)}; targets {', '.join(targets)}")
    return zoo_arrays, targets, categorical


def _embed_splits(
    model: torch.nn.Module, processor: Any, zoo_arrays: ZooArrays, batch_size: int, stages: _Stages
) -> dict[str, np.ndarray]:
    """Step 4: z̄ of every network of every split, the copies of many networks in one pass of ``batch_size`` rows."""
    started = time.perf_counter()
    embeddings = {
        split: compute_embeddings(model, processor, vectors, None, max_rows_per_pass=batch_size)
        for split, vectors in zoo_arrays.vectors.items()
    }
    num_networks = sum(values.shape[0] for values in embeddings.values())
    rate = num_networks / max(time.perf_counter() - started, 1e-9)
    samples = symmetry_transforms(model.config, processor.architecture).num_samples
    copies = "canonical views" if getattr(processor, "canonical", False) else f"{samples} copies"
    device = next(model.parameters()).device
    stages.done(
        f"embeddings of {num_networks} networks on {device} ({rate:,.1f} networks/s; {copies} each, up to "
        f"{batch_size} encoder rows per pass)"
    )
    return embeddings


def _probe_methods(
    zoo_arrays: ZooArrays,
    embeddings: Mapping[str, np.ndarray],
    chosen_baselines: Sequence[str],
    probe: Callable[[Mapping[str, np.ndarray], str], ProbeReport],
    *,
    num_components: int,
    max_fit_rows: int,
    seed: int,
    stages: _Stages,
    latent_dim: int | None = None,
    feature_groups: Sequence[int] | None = None,
) -> tuple[dict[str, ProbeReport], dict[str, str], dict[str, Mapping[str, np.ndarray]]]:
    """Step 5: each baseline's features, then z̄, through the same probes.

    When the representation is z̄ ⊕ s(W) (wider than ``latent_dim``), z̄ alone is probed too, as
    :data:`HYPERREP_Z_METHOD`, just before it: the first ``latent_dim`` columns, the same encoder pass.
    ``feature_groups`` (z̄, s(W) widths) makes the hyperrep probes weigh the two groups (:func:`fit_probes`).

    Returns:
        (reports by method — baselines first, z̄ last —, unavailable baselines and why, features by method).
    """
    reports: dict[str, ProbeReport] = {}
    unavailable: dict[str, str] = {}
    features_by_method: dict[str, Mapping[str, np.ndarray]] = {HYPERREP_METHOD: embeddings}
    for name in chosen_baselines:
        features = compute_baseline_features(
            name,
            zoo_arrays.vectors,
            zoo_arrays.info["architecture"],
            activations=zoo_activations(zoo_arrays.info),
            num_components=num_components,
            max_fit_rows=max_fit_rows,
            seed=seed,
        )
        if features is None:
            unavailable[name] = "umap-learn is not installed (pip install umap-learn)"
            stages.done(f"{name}: skipped, {unavailable[name]}")
            continue
        reports[name] = probe(features, name)
        features_by_method[name] = features
        stages.done(f"{name}: {_headline(reports[name])}")
    if latent_dim is not None and any(values.shape[1] > latent_dim for values in embeddings.values()):
        stages.add(1)
        z_only = {split: values[:, :latent_dim] for split, values in embeddings.items()}
        reports[HYPERREP_Z_METHOD] = probe(z_only, HYPERREP_Z_METHOD)
        features_by_method[HYPERREP_Z_METHOD] = z_only
        stages.done(f"{HYPERREP_Z_METHOD} (z only): {_headline(reports[HYPERREP_Z_METHOD])}")
    reports[HYPERREP_METHOD] = probe(embeddings, HYPERREP_METHOD, feature_groups)
    stages.done(f"{HYPERREP_METHOD}: {_headline(reports[HYPERREP_METHOD])}")
    return reports, unavailable, features_by_method


def _write_report(
    out_dir: Path,
    document: dict,
    zoo_arrays: ZooArrays,
    reports: Mapping[str, ProbeReport],
    features_by_method: Mapping[str, Mapping[str, np.ndarray]],
    categorical: set[str],
    seed: int,
) -> list[Path]:
    """Step 6: adds the final-checkpoints comparison to ``document`` and writes ``results.json`` / ``results.md``.

    With a z̄-alone row (z̄ ⊕ s(W) encoders) its comparison with s(W) goes under ``final_checkpoints_z_only``.
    """
    document["final_checkpoints"] = compare_final_checkpoints(
        zoo_arrays, reports, features_by_method, categorical, seed=seed
    )
    if HYPERREP_Z_METHOD in reports:
        document["final_checkpoints_z_only"] = compare_final_checkpoints(
            zoo_arrays, reports, features_by_method, categorical, seed=seed, method=HYPERREP_Z_METHOD
        )
    return _write_results(out_dir, document)


def _save_to_model(
    model_dir: Path,
    zoo_arrays: ZooArrays,
    reports: Mapping[str, ProbeReport],
    targets_by_split: Mapping[str, Mapping[str, np.ndarray]],
    document: dict,
    paths: Sequence[Path],
    stages: _Stages,
    embeddings: Mapping[str, np.ndarray] | None = None,
    representation: str = Z_LAYOUT,
) -> list[Path]:
    """Step 8: the probe heads of the hyperrep row, then ``eval/`` (with the plots among ``paths``) and the card."""
    written = _save_probes(
        model_dir, zoo_arrays, reports[HYPERREP_METHOD], targets_by_split, embeddings, representation
    )
    stages.done(f"probe heads: {len(reports[HYPERREP_METHOD].probes)} saved in {model_dir / 'probes'}")
    plots = [p for p in [*paths, *written] if p.suffix == ".png"]
    written += write_model_evaluation(model_dir, document, plots)
    stages.done(f"model card and eval/ written into {model_dir}")
    return written


def _check_architecture(processor: Any, zoo: ZooArrays) -> None:
    """Refuses a zoo whose networks the encoder was not trained on, naming the first differing parameter."""
    expected = [(p["name"], list(p["shape"])) for p in processor.architecture["parameters"]]
    found = [(p["name"], list(p["shape"])) for p in zoo.info["architecture"]["parameters"]]
    if expected == found:
        return
    for (name, shape), (zoo_name, zoo_shape) in zip(expected, found, strict=False):
        if (name, shape) != (zoo_name, zoo_shape):
            raise ValueError(
                f"Zoo {zoo.name!r} does not match the encoder's architecture: parameter {zoo_name!r} has shape "
                f"{zoo_shape}, the encoder expects {name!r} with shape {shape}."
            )
    raise ValueError(
        f"Zoo {zoo.name!r} has {len(found)} parameter tensors, the encoder's architecture has {len(expected)}."
    )


def _rows_text(zoo: ZooArrays) -> str:
    parts = []
    for split, vectors in zoo.vectors.items():
        total = zoo.total_rows[split]
        kept = vectors.shape[0]
        parts.append(f"{split} {kept}" + (f"/{total}" if kept != total else "") + " rows")
    return ", ".join(parts)


def _probe_runner(
    targets_by_split: Mapping[str, Mapping[str, np.ndarray]],
    categorical: set[str],
    validation_fallback: str | None,
    alphas: Sequence[float] = ALPHA_GRID,
) -> Callable[[Mapping[str, np.ndarray], str], ProbeReport]:
    def run(
        features_by_split: Mapping[str, np.ndarray], method: str, feature_groups: Sequence[int] | None = None
    ) -> ProbeReport:
        return fit_probes(
            features_by_split,
            targets_by_split,
            categorical,
            method=method,
            validation_fallback=validation_fallback,
            alphas=alphas,
            feature_groups=feature_groups,
        )

    return run


def _headline(report: ProbeReport) -> str:
    """'test R² acc 0.912, epoch 0.97, …' for the summary line."""
    values = [
        f"{result.target} {_format_value(result.value, 3)}"
        for result in report.results
        if result.split == "test" and result.metric in ("r2", "accuracy")
    ]
    return "test " + (", ".join(values) if values else "no results")


# ----------------------------------------------------------------------------------------------------------------
# Into the model folder: probe heads, eval/, model card
# ----------------------------------------------------------------------------------------------------------------


def check_evaluation(
    model_dir: str | os.PathLike, zoo: str | os.PathLike, out_dir: str | os.PathLike, overwrite: bool = False
) -> None:
    """What :func:`evaluate_model` checks before it writes anything, without fitting anything.

    The CLI runs it for every ``--zoo`` before evaluating the first: the model folder, the output folders, the
    zoo's name and info, and existing probes for this zoo.

    Raises:
        ValueError, FileNotFoundError, ProbesExistError: naming the problem.
    """
    from ..checks import check_output_folder
    from ..zoo.folder import load_zoo

    check_model_folder(model_dir)
    check_output_folder(out_dir)
    if not Path(model_dir).is_dir():
        return
    check_output_folder(model_dir, "model folder")
    source, config = parse_zoo_argument(zoo)
    _, info = load_zoo(source, config)
    arrays = ZooArrays(config or info["name"], str(source), config or info["name"], info, {}, {}, {}, {})
    _refuse_existing_probes(Path(model_dir), arrays, overwrite)


def _refuse_existing_probes(model_dir: Path, zoo: ZooArrays, overwrite: bool) -> None:
    """Raises ProbesExistError when the model folder holds probes or an eval/ entry for this zoo's key."""
    from .probe_heads import PROBES_FOLDER, ProbesExistError, probe_zoos, read_probe_index, zoo_key

    key = zoo_key(zoo.config, zoo.info)
    index_path = model_dir / PROBES_FOLDER / "index.json"
    # A damaged index is reported here, before any work, rather than after the probes are fitted.
    known = probe_zoos(read_probe_index(model_dir)) if index_path.is_file() else {}
    evaluated = {_document_key(document) for document in _read_evaluations(model_dir / "eval" / "results.json")}
    if overwrite or (key not in known and key not in evaluated and not (model_dir / PROBES_FOLDER / key).exists()):
        return
    source = (known.get(key) or {}).get("zoo_source") or "an earlier evaluation"
    raise ProbesExistError(
        f"{model_dir} already has probes for zoo {key} (config {zoo.config}, fitted on {source}) in "
        f"{model_dir / PROBES_FOLDER / key}. Pass --overwrite (overwrite=True) to replace them and their eval/ "
        "entry; probes of other zoos are kept either way."
    )


def _save_probes(
    model_dir: Path,
    zoo: ZooArrays,
    report: ProbeReport,
    targets_by_split: Mapping[str, Mapping[str, np.ndarray]],
    embeddings: Mapping[str, np.ndarray] | None = None,
    representation: str = Z_LAYOUT,
) -> list[Path]:
    from ..models.hyperrep.weight_statistics import compute_statistics
    from .probe_heads import save_probe_heads, scores_by_activation, zoo_fingerprint, zoo_key

    key = zoo_key(zoo.config, zoo.info)
    regression = {target for target, probe in report.probes.items() if getattr(probe, "labels", None) is None}
    target_values = {
        target: np.concatenate([np.asarray(values[target], dtype=np.float64) for values in targets_by_split.values()])
        for target in regression
    }
    vectors = np.concatenate(list(zoo.vectors.values()))
    statistics = compute_statistics(vectors, zoo.info["architecture"]["parameters"], target_values, key)
    index = save_probe_heads(
        model_dir,
        key,
        report.probes,
        report.results,
        config=zoo.config,
        source=zoo.source,
        fingerprint=zoo_fingerprint(zoo.info),
        statistics=statistics,
        scores_by_activation=scores_by_activation(report.probes, embeddings, zoo.columns, targets_by_split),
        representation=representation,
    )
    _warn_other_layouts(model_dir, key, representation)
    return [index, model_dir / "probes" / key / "statistics.json"]


def _warn_other_layouts(model_dir: Path, key: str, representation: str) -> None:
    """Logs the other zoos whose probes read another representation layout (the pipeline will refuse them)."""
    from .probe_heads import read_probe_index

    others = sorted(
        {
            entry["zoo"]
            for entry in read_probe_index(model_dir)["probes"]
            if entry["zoo"] != key and entry.get("representation", Z_LAYOUT) != representation
        }
    )
    if others:
        logger.warning(
            "%s: the probes of zoo(s) %s were fitted on another representation than %r (append_weight_statistics "
            "changed); predictions with them are refused until you re-evaluate those zoos with --overwrite.",
            model_dir,
            ", ".join(others),
            representation,
        )


def write_model_evaluation(model_dir: Path, document: dict, plots: Sequence[Path]) -> list[Path]:
    """Merges the evaluation into ``eval/results.json``, copies the plots to ``eval/`` and rewrites README.md.

    ``eval/results.json`` holds one document per zoo key (a re-evaluation of the same zoo replaces its document;
    zoos of one config name built differently are kept apart); plots go to ``eval/<zoo key>/<plot>.png``.
    """
    eval_dir = model_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    results_path = eval_dir / "results.json"
    evaluations = _read_evaluations(results_path)
    key = _document_key(document)
    evaluations = [entry for entry in evaluations if _document_key(entry) != key] + [document]
    plots_dir = eval_dir / key
    plots_dir.mkdir(exist_ok=True)
    written = []
    for plot in plots:
        target = plots_dir / plot.name
        written.append(write_bytes_atomic(target, plot.read_bytes()))
    written.insert(
        0, write_json_atomic(results_path, {"format_version": RESULTS_FORMAT_VERSION, "evaluations": evaluations})
    )
    card_path = write_text_atomic(model_dir / "README.md", render_model_card(model_dir, evaluations))
    return [*written, card_path]


def _document_key(document: dict) -> str:
    """The zoo key of an evaluation document (documents written before zoo keys: the config name)."""
    return document.get("zoo_key") or document["config"]


def _read_evaluations(results_path: Path) -> list[dict]:
    if not results_path.is_file():
        return []
    try:
        evaluations = json.loads(results_path.read_text())["evaluations"]
        if not isinstance(evaluations, list) or not all(isinstance(entry, dict) for entry in evaluations):
            raise TypeError("'evaluations' is not a list of documents")
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{results_path} is damaged ({error}); move it away (its evaluations are rewritten from this run on)."
        ) from None
    return evaluations


def _eval_results(evaluations: Sequence[dict], dataset_ids: Mapping[str, str] | None = None) -> list:
    """``EvalResult``s of the hyper-representation's test scores (→ the card's ``model-index``)."""
    from huggingface_hub import EvalResult

    results = []
    for document in evaluations:
        dataset_id = (dataset_ids or {}).get(document["zoo"])
        local = dataset_id is None
        for record in document["results"]:
            if record["method"] != HYPERREP_METHOD or record["split"] != "test" or record["value"] is None:
                continue
            results.append(
                EvalResult(
                    task_type="network-property-prediction",
                    task_name="Network property prediction",
                    dataset_type=document["config"] if local else dataset_id,
                    dataset_name=f"model zoo {document['config']}",
                    dataset_config=document["config"],
                    dataset_split="test",
                    metric_type=record["metric"],
                    metric_name=f"{record['target']} ({record['metric']})",
                    metric_value=round(float(record["value"]), 4),
                )
            )
    return results


def render_model_card(
    model_dir: Path,
    evaluations: Sequence[dict],
    dataset_ids: Mapping[str, str] | None = None,
    repo_id: str | None = None,
) -> str:
    """The model card (README.md) from ``cards/model_card.md``, with ``model-index`` from the evaluations.

    Args:
        model_dir: The model folder.
        evaluations: The documents of ``eval/results.json``.
        dataset_ids: Zoo source (as in the documents) → the Hub dataset id it was published as (``hyperrep push``).
        repo_id: The model's own Hub id, for the usage snippets (default: "<this folder or repo>").
    """
    from importlib import resources

    from huggingface_hub import ModelCard, ModelCardData

    config = json.loads((model_dir / "config.json").read_text()) if (model_dir / "config.json").is_file() else {}
    training = model_dir / "train_config.json"
    dataset_ids = dict(dataset_ids or {})
    for document in evaluations:  # a zoo read from the Hub is already named by its id
        if not Path(document["zoo"]).exists():
            dataset_ids.setdefault(document["zoo"], document["zoo"])
    card_data = ModelCardData(
        model_name=model_dir.resolve().name,
        library_name="transformers",
        pipeline_tag="feature-extraction",
        license="mit",
        tags=[
            "hyper-representations",
            "weight-space-learning",
            "model-zoo",
            "hyperrep_hf",
            "network-property-prediction",
        ],
        datasets=sorted(set(dataset_ids.values())) or None,
        eval_results=_eval_results(evaluations, dataset_ids) or None,
    )
    sections = [
        {
            "document": document,
            "table": results_table(document),
            "plots": _card_plots(model_dir / "eval", document),
        }
        for document in evaluations
    ]
    template = resources.files("hyperrep_hf.card_templates").joinpath("model_card.md").read_text()
    card = ModelCard.from_template(
        card_data,
        template_str=template,
        model_title=model_dir.resolve().name,
        repo_id=repo_id or "<this folder or repo>",
        encoder=config,
        **_representation(model_dir, config),
        training_config=json.loads(training.read_text()) if training.is_file() else None,
        evaluations=sections,
        probe_zoos=[_document_key(document) for document in evaluations],
    )
    return str(card)


def _representation(model_dir: Path, config: Mapping[str, Any]) -> dict[str, Any]:
    """The card's ``representation`` (text) and ``representation_dim`` for a z̄ ⊕ s(W) encoder; {} for z̄ alone."""
    if "latent_dim" not in config or not config.get("append_weight_statistics", False):
        return {}
    from ..models.hyperrep.weight_statistics import num_weight_statistics

    latent_dim = int(config["latent_dim"])
    processor_path = model_dir / "preprocessor_config.json"
    architecture = json.loads(processor_path.read_text()).get("architecture") if processor_path.is_file() else None
    variant = config.get("weight_statistics", "s(W)")
    shape = variant == "s(W)+shape"
    extra = num_weight_statistics(architecture, variant) if architecture else None
    per_layer = 12 if shape else 7
    sizes = (
        f"{latent_dim} + {extra} = {latent_dim + extra} values" if extra else f"{latent_dim} + {per_layer} per layer"
    )
    text = (
        f"z̄ ⊕ s(W){' ⊕ shape' if shape else ''}: the encoder's embedding z̄ followed by s(W), the per-layer "
        "statistics of the network's weights (mean, variance, percentiles 1/25/50/75/99 of each layer's weights: the "
        "s(W) baseline's features, taken over the same canonical views or symmetric copies as z̄), "
        + (
            "then the shape of each layer's distribution (kurtosis, mean |w − m| / σ, ln σ, share of "
            "positive weights, max |w| / σ), "
            if shape
            else ""
        )
        + f"{sizes} (`append_weight_statistics: true`{', `weight_statistics: s(W)+shape`' if shape else ''} in "
        "config.json)"
    )
    return {"representation": text, "representation_dim": latent_dim + extra if extra else None}


def _card_plots(eval_dir: Path, document: dict) -> list[str]:
    """The plots of one evaluation, as paths relative to ``eval/`` (older folders: ``<config>_<plot>.png``)."""
    key = _document_key(document)
    if (eval_dir / key).is_dir():
        return sorted(f"{key}/{path.name}" for path in (eval_dir / key).glob("*.png"))
    return sorted(path.name for path in eval_dir.glob(f"{document['config']}_*.png"))
