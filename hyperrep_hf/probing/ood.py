"""Out of distribution (paper Table 7): probes fitted on one zoo, scored on the others (Kendall τ)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..atomic import write_json_atomic, write_text_atomic
from .baselines import compute_baseline_features, zoo_activations
from .evaluation import (
    ZooArrays,
    _check_architecture,
    _choose_baselines,
    _Stages,
    baseline_components,
    compute_embeddings,
    load_encoder,
    load_zoo_arrays,
    representation_groups,
    ridge_grid,
)
from .probes import check_probe_splits, fit_probes
from .report import (
    HYPERREP_METHOD,
    METHOD_TITLES,
    RESULTS_FORMAT_VERSION,
    _format_value,
    bootstrap_difference,
    excludes_zero,
    format_interval,
    nan_to_none,
)

logger = logging.getLogger("hyperrep_hf")


# ----------------------------------------------------------------------------------------------------------------
# Out of distribution (paper Table 7)
# ----------------------------------------------------------------------------------------------------------------


OOD_METHODS: tuple[str, ...] = ("W", "s(W)", HYPERREP_METHOD)


def evaluate_ood(
    model_dir: str | os.PathLike,
    zoos: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    target: str = "test_accuracy",
    methods: Sequence[str] = OOD_METHODS,
    max_rows: int | None = None,
    max_fit_rows: int = 3000,
    seed: int = 0,
    batch_size: int = 1024,
    progress: bool = True,
    device: str = "cpu",
    append_weight_statistics: bool | None = None,
    ridge_alphas: Sequence[float] | None = None,
    group_weights: bool = False,
) -> dict:
    """Kendall τ when the probe fitted on one zoo predicts another: a matrix per method (paper Table 7).

    For each source zoo A and method, the probe is fitted on A's train split (α chosen on A's validation split)
    and scored on the test split of every zoo B; the diagonal is the ordinary in-distribution test τ. Fitted
    baselines (PCA, UMAP) are fitted on A's train rows too.

    Args:
        model_dir: Model folder (encoder + processor).
        zoos: ``DIR[:CONFIG]`` of two or more zoos of the encoder's architecture.
        out_dir: Where ``ood.json`` and ``ood.md`` go.
        target: The regression target ranked (default test accuracy).
        methods: Representations compared: ``hyperrep`` and any baseline name.
        max_rows: Rows per split per zoo (whole models, seeded).
        max_fit_rows: Train rows the fitted baselines use.
        seed: Seed of subsampling and fitted baselines.
        batch_size: Networks per encoder forward pass.
        progress: Progress bar and one line per stage.
        device: Where the encoder runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"``).
        append_weight_statistics: None: the model config's; True / False: ``hyperrep`` is z̄ ⊕ s(W) / z̄ alone.
        ridge_alphas: The probes' α grid (as :func:`~hyperrep_hf.probing.evaluation.evaluate_model`); None: the
            paper's.
        group_weights: The hyperrep probes weigh z̄ against s(W) on validation (as
            :func:`~hyperrep_hf.probing.evaluation.evaluate_model`); needs z̄ ⊕ s(W).

    Returns:
        The ``ood.json`` document: ``matrices[method][metric]`` is a (len(zoos), len(zoos)) nested list, rows =
        the zoo the probe was fitted on, columns = the zoo it was scored on.
    """
    if len(zoos) < 2:
        raise ValueError(f"Out-of-distribution evaluation needs at least two zoos, got {len(zoos)}.")
    for method in methods:
        if method != HYPERREP_METHOD:
            _choose_baselines([method])
    alphas = ridge_grid(ridge_alphas)
    from ..checks import check_output_folder, resolve_device

    check_output_folder(out_dir)
    device = resolve_device(device)
    stages = _Stages(2 + len(zoos), progress, "ood")
    try:
        model, processor = load_encoder(model_dir, append_weight_statistics)
        model.to(device)
        feature_groups = representation_groups(model.config, processor, group_weights)
        loaded = [load_zoo_arrays(zoo, max_rows, seed) for zoo in zoos]
        names = _unique_names(loaded)
        for zoo_arrays in loaded:
            check_probe_splits(list(zoo_arrays.vectors), None, f"Zoo {zoo_arrays.name!r}")
            _check_architecture(processor, zoo_arrays)
            if target not in zoo_arrays.columns["train"]:
                raise ValueError(f"Zoo {zoo_arrays.name!r} has no column {target!r}.")
        stages.done(f"encoder and {len(loaded)} zoos: {', '.join(names)}")
        embeddings = [
            {split: compute_embeddings(model, processor, v, batch_size) for split, v in z.vectors.items()}
            for z in loaded
        ]
        stages.done(f"embeddings of {sum(v.shape[0] for z in loaded for v in z.vectors.values())} networks")
        records, differences = [], {}
        for source_index in range(len(loaded)):
            source_records, predictions = _ood_from_source(
                source_index, loaded, names, embeddings, methods, target, model, max_fit_rows, seed, alphas,
                feature_groups,
            )  # fmt: skip
            records += source_records
            for baseline, cells in _differences_to_baselines(loaded, source_index, predictions, target, seed).items():
                differences.setdefault(baseline, [[None] * len(loaded) for _ in loaded])[source_index] = cells
            stages.done(f"probes fitted on {names[source_index]}")
    finally:
        stages.close()
    document = _ood_document(model_dir, zoos, names, methods, target, records, differences)
    if feature_groups is not None:
        document["group_weights"] = {"feature_groups": list(feature_groups)}
    out_path = Path(out_dir)
    out_path.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_path / "ood.json", document)
    write_text_atomic(out_path / "ood.md", render_ood_markdown(document))
    if progress:
        print(f"wrote {out_path / 'ood.json'}\nwrote {out_path / 'ood.md'}", flush=True)
    return document


def _unique_names(loaded: Sequence[ZooArrays]) -> list[str]:
    names = [zoo.name for zoo in loaded]
    if len(set(names)) == len(names):
        return names
    return [f"{Path(zoo.source).name}:{zoo.name}" for zoo in loaded]


def _ood_from_source(
    source_index, loaded, names, embeddings, methods, target, model, max_fit_rows, seed, alphas, feature_groups=None
) -> tuple[list[dict], dict[str, list[np.ndarray]]]:
    """The probes fitted on zoo ``source_index``, scored on every zoo's test split.

    Returns the result records and, per method, its predictions of every zoo's test rows (NaN where the features
    are not finite), which :func:`_differences_to_baselines` resamples.
    """
    source = loaded[source_index]

    def splits_for(values_by_zoo: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        splits = {
            "train": values_by_zoo[source_index]["train"],
            "validation": values_by_zoo[source_index]["validation"],
        }
        splits.update({f"test@{index}": values["test"] for index, values in enumerate(values_by_zoo)})
        return splits

    targets = {
        "train": {target: source.columns["train"][target]},
        "validation": {target: source.columns["validation"][target]},
    }
    targets.update({f"test@{index}": {target: zoo.columns["test"][target]} for index, zoo in enumerate(loaded)})
    records, predictions = [], {}
    for method in methods:
        if method == HYPERREP_METHOD:
            features = splits_for(embeddings)
        else:
            features = compute_baseline_features(
                method,
                splits_for([zoo.vectors for zoo in loaded]),
                source.info["architecture"],
                activations=zoo_activations(source.info),
                num_components=baseline_components(model.config),
                max_fit_rows=max_fit_rows,
                seed=seed,
            )
            if features is None:
                continue
        groups = feature_groups if method == HYPERREP_METHOD else None
        report = fit_probes(features, targets, (), method=method, alphas=alphas, feature_groups=groups)
        if target in report.probes:
            predictions[method] = [
                _predict_finite(report.probes[target], features[f"test@{index}"]) for index in range(len(loaded))
            ]
        for result in report.results:
            if not result.split.startswith("test@"):
                continue
            record = result.to_dict()
            record["train_zoo"] = names[source_index]
            record["test_zoo"] = names[int(result.split.removeprefix("test@"))]
            record["split"] = "test"
            records.append(record)
    return records, predictions


def _predict_finite(probe, features: np.ndarray) -> np.ndarray:
    """``probe``'s predictions of the rows whose features are finite; NaN for the others."""
    features = np.asarray(features, dtype=np.float64)
    finite = np.isfinite(features).all(axis=1)
    values = np.full(features.shape[0], np.nan)
    if finite.any():
        values[finite] = probe.predict(features[finite])
    return values


def _differences_to_baselines(
    loaded: Sequence[ZooArrays], source_index: int, predictions: Mapping[str, list[np.ndarray]], target: str, seed: int
) -> dict[str, list[dict | None]]:
    """Per baseline: τ(hyperrep) − τ(baseline) on each zoo's test split, with a 95 % paired bootstrap interval.

    The probes were fitted on zoo ``source_index``; each resample draws the test zoo's networks with replacement
    and keeps all their rows, for both methods at once (:func:`~hyperrep_hf.probing.report.bootstrap_difference`).
    Rows either method could not predict are left out of both.
    """
    if HYPERREP_METHOD not in predictions:
        return {}
    differences = {}
    for baseline in (method for method in predictions if method != HYPERREP_METHOD):
        cells: list[dict | None] = []
        for index, zoo in enumerate(loaded):
            truth = np.asarray(zoo.columns["test"][target], dtype=np.float64)
            ours, theirs = predictions[HYPERREP_METHOD][index], predictions[baseline][index]
            rows = np.isfinite(truth) & np.isfinite(ours) & np.isfinite(theirs)
            if rows.sum() < 3 or np.unique(truth[rows]).size < 2:
                cells.append(None)
                continue
            interval = bootstrap_difference(
                "kendall_tau", truth[rows], ours[rows], theirs[rows], zoo.model_ids["test"][rows], seed=seed
            )
            interval = nan_to_none(interval)
            cells.append({**interval, "significant": excludes_zero(interval["low"], interval["high"])})
        differences[baseline] = cells
    return differences


def _ood_document(model_dir, zoos, names, methods, target, records, differences=None) -> dict:
    matrices: dict[str, dict[str, list[list[float | None]]]] = {}
    position = {name: index for index, name in enumerate(names)}
    for record in records:
        method_matrices = matrices.setdefault(record["method"], {})
        matrix = method_matrices.setdefault(record["metric"], [[None] * len(names) for _ in names])
        matrix[position[record["train_zoo"]]][position[record["test_zoo"]]] = record["value"]
    return {
        "format_version": RESULTS_FORMAT_VERSION,
        "model": os.fspath(model_dir),
        "zoos": [os.fspath(zoo) for zoo in zoos],
        "names": names,
        "target": target,
        "methods": [method for method in methods if method in matrices],
        "matrices": matrices,
        # baseline → matrix (fitted on × predicts) of τ(hyperrep) − τ(baseline) with its 95 % bootstrap interval
        "differences": dict(differences or {}),
        "results": records,
    }


def render_ood_markdown(document: dict) -> str:
    """``ood.md``: per method, Kendall τ of ``target`` (rows: probe fitted on, columns: scored on)."""
    names = document["names"]
    lines = [
        f"# Out-of-distribution: `{document['model']}`",
        "",
        f"Kendall τ of {document['target']} on each zoo's test split; rows = the zoo the probe was fitted on "
        "(train, α chosen on its validation split), columns = the zoo it predicts. The diagonal is in-distribution.",
    ]
    if document.get("group_weights"):
        lines[-1] += (
            " The hyperrep probes weigh z̄ against s(W) (`--group-weights`: each group full, shrunk or left out, "
            "chosen with α; the choice is `group_weights` in each record of `ood.json`)."
        )
    for method in document["methods"]:
        matrix = document["matrices"][method].get("kendall_tau")
        if matrix is None:
            continue
        lines += ["", f"## {METHOD_TITLES.get(method, method)}", ""]
        lines += ["| fitted on ↓ / predicts → | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        for name, row in zip(names, matrix, strict=True):
            lines.append(f"| {name} | " + " | ".join(_format_value(value, 3) for value in row) + " |")
    for baseline, matrix in document.get("differences", {}).items():
        title = f"{METHOD_TITLES[HYPERREP_METHOD]} − {METHOD_TITLES.get(baseline, baseline)}"
        lines += ["", f"## {title}", ""]
        lines += [
            "τ difference with its 95 % paired bootstrap interval over the predicted zoo's test networks; **bold**: "
            "the interval excludes 0.",
            "",
            "| fitted on ↓ / predicts → | " + " | ".join(names) + " |",
            "|" + "---|" * (len(names) + 1),
        ]
        for name, row in zip(names, matrix, strict=True):
            lines.append(f"| {name} | " + " | ".join(format_difference(cell) for cell in row) + " |")
    return "\n".join(lines) + "\n"


def format_difference(cell: Mapping[str, float | None] | None) -> str:
    """``+0.050 [0.012, 0.088]``, bold when the interval excludes 0; ``–`` for a missing cell."""
    if not cell or cell.get("difference") is None:
        return "–"
    low, high = cell.get("low"), cell.get("high")
    return format_interval(cell["difference"], low, high, excludes_zero(low, high), digits=3, signed=True)
