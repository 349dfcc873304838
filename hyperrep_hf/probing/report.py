"""What an evaluation reports: ``results.json``, ``results.md`` and the final-checkpoint comparison.

The results document, its Markdown, the final checkpoints against all epochs with bootstrap intervals over test
models, and the names they use: methods, target groups, the paper's numbers.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..atomic import write_json_atomic, write_text_atomic
from ..models.hyperrep.embeddings import Z_SHAPE_STATISTICS_LAYOUT, Z_WEIGHT_STATISTICS_LAYOUT
from .probes import ALPHA_GRID, ProbeReport

if TYPE_CHECKING:
    from .evaluation import ZooArrays

logger = logging.getLogger("hyperrep_hf")

RESULTS_FORMAT_VERSION = 1
HYPERREP_METHOD = "hyperrep"
"""The hyper-representation the probe heads read: z̄, or z̄ ⊕ s(W) with ``append_weight_statistics``."""
HYPERREP_Z_METHOD = "hyperrep_z"
"""z̄ alone, reported beside :data:`HYPERREP_METHOD` when that one is z̄ ⊕ s(W) (no probe heads are saved for it)."""
BASELINES: tuple[str, ...] = ("W", "s(W)", "pca_linear", "pca_cosine", "pca_rbf", "umap")
"""Baselines of ``hyperrep evaluate``, in table order (``s(W)_unterthiner``, ``linear_map`` and ``probe_outputs``
may be asked for explicitly)."""
METRIC_TARGETS: tuple[str, ...] = ("epoch", "test_accuracy", "generalization_gap")
NUMERIC_HYPERPARAMETERS: tuple[str, ...] = ("learning_rate", "weight_decay", "dropout", "train_fraction")
CATEGORICAL_HYPERPARAMETERS: tuple[str, ...] = ("activation", "init", "optimizer")
GRID_CATEGORICAL: tuple[str, ...] = ("dropout",)
"""Numeric hyper-parameters probed as classes when a zoo gives them at most :data:`MAX_GRID_VALUES` values, as the
paper's MNIST-HYP tables do (dropout {0, 0.5}); a continuous range (Unterthiner's zoos) stays a regression."""
MAX_GRID_VALUES = 5
METHOD_TITLES = {
    "W": "W",
    "s(W)": "s(W)",
    "s(W)+shape": "s(W) ⊕ shape",
    "s(W)_unterthiner": "s(W) Unterthiner",
    "linear_map": "linear map",
    "probe_outputs": "outputs on random inputs",
    "pca_linear": "PCA linear",
    "pca_cosine": "PCA cosine",
    "pca_rbf": "PCA rbf",
    "umap": "UMAP",
    HYPERREP_METHOD: "hyperrep",
    HYPERREP_Z_METHOD: "hyperrep (z only)",
}


def method_title(document: Mapping, method: str) -> str:
    """The column title of ``method`` in ``document``'s tables: says which representation the hyperrep rows are."""
    if method == HYPERREP_METHOD and document.get("representation") == Z_WEIGHT_STATISTICS_LAYOUT:
        return "hyperrep (z ⊕ s(W))"
    if method == HYPERREP_METHOD and document.get("representation") == Z_SHAPE_STATISTICS_LAYOUT:
        return "hyperrep (z ⊕ s(W) ⊕ shape)"
    return METHOD_TITLES.get(method, method)


# Paper §6 (test R² in %; accuracy in % for categorical targets), keyed by zoo_info["recipe"]["name"].
PAPER_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    "tetris_seed": {
        "W": dict(zip(("epoch", "test_accuracy", "generalization_gap", "f1_class_0", "f1_class_1", "f1_class_2",
                       "f1_class_3"), (55.4, 49.1, 43.9, 26.6, 41.4, 41.5, 53.9), strict=True)),
        "s(W)": dict(zip(("epoch", "test_accuracy", "generalization_gap", "f1_class_0", "f1_class_1", "f1_class_2",
                          "f1_class_3"), (96.4, 86.9, 81.0, 62.5, 63.1, 60.9, 75.2), strict=True)),
        "EcD": dict(zip(("epoch", "test_accuracy", "generalization_gap", "f1_class_0", "f1_class_1", "f1_class_2",
                         "f1_class_3"), (97.0, 90.2, 81.9, 70.7, 75.9, 69.4, 86.6), strict=True)),
    },
    "tetris_hyp": {
        "W": {"epoch": 2.8, "test_accuracy": 11.0, "generalization_gap": 12.9, "learning_rate": -4.7,
              "activation": 74.7, "init": 38.5},
        "s(W)": {"epoch": 16.3, "test_accuracy": 80.2, "generalization_gap": 79.2, "learning_rate": 53.4,
                 "activation": 73.6, "init": 46.6},
        "EcD": {"epoch": 16.7, "test_accuracy": 83.7, "generalization_gap": 81.6, "learning_rate": 51.1,
                "activation": 86.9, "init": 47.1},
    },
    "mnist_seed": {
        "W": {"epoch": 84.5, "test_accuracy": 91.3, "generalization_gap": 56.9},
        "s(W)": {"epoch": 97.7, "test_accuracy": 98.7, "generalization_gap": 66.2},
        "Ec+D": {"epoch": 97.3, "test_accuracy": 98.9, "generalization_gap": 66.7},
    },
}  # fmt: skip


def _format_value(value: float | None, digits: int = 1, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value * scale:.{digits}f}"


def excludes_zero(low: float | None, high: float | None) -> bool:
    """Whether the interval [low, high] lies wholly on one side of 0 (a missing or NaN end excludes nothing)."""
    return bool((low is not None and low > 0) or (high is not None and high < 0))


def nan_to_none(record: Mapping) -> dict:
    """``record`` with its NaN floats as None (JSON has no NaN)."""
    return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in record.items()}


def format_interval(
    difference: float | None,
    low: float | None,
    high: float | None,
    significant: bool,
    digits: int = 1,
    scale: float = 1.0,
    signed: bool = False,
) -> str:
    """``Δ [low, high]`` (``signed``: ``+Δ``), **bold** when ``significant``."""
    value = _format_value(difference, digits, scale)
    if signed and value != "–":
        value = f"{difference * scale:+.{digits}f}"
    text = f"{value} [{_format_value(low, digits, scale)}, {_format_value(high, digits, scale)}]"
    return f"**{text}**" if significant else text


# ----------------------------------------------------------------------------------------------------------------
# results.json and results.md
# ----------------------------------------------------------------------------------------------------------------


def _results_document(
    model_dir: str | os.PathLike,
    zoo: ZooArrays,
    targets: list[str],
    categorical: set[str],
    reports: Mapping[str, ProbeReport],
    unavailable: Mapping[str, str],
    validation_fallback: str | None,
) -> dict:
    from .probe_heads import zoo_fingerprint, zoo_key

    recipe = zoo.info.get("recipe", {}).get("name")
    return {
        "format_version": RESULTS_FORMAT_VERSION,
        "model": os.fspath(model_dir),
        "zoo": zoo.source,
        "config": zoo.config,
        "zoo_key": zoo_key(zoo.config, zoo.info),
        "zoo_fingerprint": zoo_fingerprint(zoo.info),
        "recipe": recipe,
        "rows": {split: vectors.shape[0] for split, vectors in zoo.vectors.items()},
        "total_rows": zoo.total_rows,
        "models": {split: int(np.unique(ids).size) for split, ids in zoo.model_ids.items()},
        "selection_split": "validation" if "validation" in zoo.vectors else validation_fallback,
        "targets": targets,
        "categorical_targets": sorted(categorical),
        "methods": list(reports),
        "unavailable_methods": dict(unavailable),
        "skipped_targets": {method: report.skipped for method, report in reports.items() if report.skipped},
        "fixed_hyperparameters": _fixed_hyperparameters(zoo, targets),
        "paper": PAPER_RESULTS.get(recipe),
        "results": [result.to_dict() for report in reports.values() for result in report.results],
    }


def _fixed_hyperparameters(zoo: ZooArrays, targets: list[str]) -> dict[str, object]:
    """Hyper-parameter columns that are not probed because the zoo holds one value of them: name → the value."""
    columns = zoo.columns.get("train", next(iter(zoo.columns.values()), {}))
    fixed = {}
    for name in (*NUMERIC_HYPERPARAMETERS, *CATEGORICAL_HYPERPARAMETERS):
        if name in columns and name not in targets:
            values = {value.item() if isinstance(value, np.generic) else value for value in np.asarray(columns[name])}
            fixed[name] = next(iter(values)) if len(values) == 1 else sorted(map(str, values))
    return fixed


def _write_results(out_dir: Path, document: dict) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = write_json_atomic(out_dir / "results.json", document)
    markdown_path = write_text_atomic(out_dir / "results.md", render_results_markdown(document))
    return [json_path, markdown_path]


def _lookup(document: dict, split: str = "test") -> dict[tuple[str, str, str], dict]:
    """(method, target, metric) → result record of ``split``."""
    return {
        (record["method"], record["target"], record["metric"]): record
        for record in document["results"]
        if record["split"] == split
    }


def _main_metric(document: dict, target: str) -> str:
    return "accuracy" if target in document["categorical_targets"] else "r2"


def results_table(document: dict, metric: str | None = None, scale: float = 100.0, digits: int = 1) -> str:
    """Markdown table: rows = targets, columns = methods (+ the paper's numbers for the paper's zoos).

    Args:
        document: A ``results.json`` document.
        metric: ``None``: test R² (accuracy for categorical targets); else one metric (e.g. ``"kendall_tau"``).
        scale: Multiplier of the values (100 → %).
        digits: Decimals.
    """
    records = _lookup(document)
    methods = document["methods"]
    paper = (document.get("paper") or {}) if metric is None else {}
    header = ["target", *(method_title(document, method) for method in methods)]
    header += [f"paper {name}" for name in paper]
    differences = [method for method in (HYPERREP_Z_METHOD, HYPERREP_METHOD) if method in methods]
    differences = differences if metric is None and "s(W)" in methods else []
    header += [f"{method_title(document, method)} − s(W)" for method in differences]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for target in document["targets"]:
        target_metric = metric or _main_metric(document, target)
        if metric is not None and target in document["categorical_targets"]:
            continue
        cells = [f"{target}{' (acc.)' if target_metric == 'accuracy' and metric is None else ''}"]
        values = {method: records.get((method, target, target_metric), {}).get("value") for method in methods}
        cells += [_format_value(values[method], digits, scale) for method in methods]
        cells += [_format_value(paper[name].get(target), 1) for name in paper]
        for method in differences:
            both = values["s(W)"] is not None and values[method] is not None
            cells.append(_format_value(values[method] - values["s(W)"], digits, scale) if both else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _dropped_lines(document: dict) -> list[str]:
    """One line per (method, target, split) with dropped rows (NaN/inf features or missing targets)."""
    lines = []
    for record in document["results"]:
        if record["num_dropped"] and record["metric"] in ("r2", "accuracy"):
            lines.append(
                f"- {method_title(document, record['method'])} · {record['target']} · "
                f"{record['split']}: {record['num_dropped']} rows dropped, {record['num_rows']} used"
            )
    return lines


REPRESENTATION_NOTE = (
    "**hyperrep (z ⊕ s(W))** is the encoder's hyper-representation with `append_weight_statistics`: z̄ followed by "
    "s(W), the per-layer weight statistics of the s(W) column; the published probe heads read it. "
    "**hyperrep (z only)** is z̄ alone, the same encoder without s(W), probed the same way (no probe heads saved)."
)
SHAPE_REPRESENTATION_NOTE = (
    "**hyperrep (z ⊕ s(W) ⊕ shape)** is the encoder's hyper-representation with `append_weight_statistics` and "
    "`weight_statistics: s(W)+shape`: z̄ followed by s(W) and, per layer, five statistics of the weights' shape "
    "(kurtosis, mean |w − m| / σ, ln σ, share of positive weights, max |w| / σ; the `s(W)+shape` column when that "
    "baseline was run); the published probe heads read it. "
    "**hyperrep (z only)** is z̄ alone, the same encoder without them, probed the same way (no probe heads saved)."
)


def _ridge_grid(document: dict) -> list[float]:
    """The ridge α grid an evaluation used (documents written before it was recorded used the paper's)."""
    return [float(alpha) for alpha in document.get("ridge_alphas", ALPHA_GRID)]


def _grid_text(document: dict) -> str:
    grid = _ridge_grid(document)
    if grid == list(ALPHA_GRID):
        return "the paper's grid, 1e3 … 1e-5"
    return "the grid " + ", ".join(f"{alpha:g}" for alpha in grid)


def _grid_edge_note(document: dict) -> list[str]:
    """A note when ridge probes chose the grid's strongest α: their validation asked for more regularisation."""
    strongest = max(_ridge_grid(document))
    probes = [r for r in document["results"] if r["split"] == "test" and r["metric"] == "r2"]
    at_edge = [r for r in probes if r.get("alpha") == strongest]
    if not at_edge:
        return []
    by_method = {method: sum(r["method"] == method for r in at_edge) for method in document["methods"]}
    counts = ", ".join(f"{method} {count}" for method, count in by_method.items() if count)
    return [
        "",
        f"> **Note:** {len(at_edge)} of {len(probes)} ridge probes chose the grid's strongest α ({strongest:g}; "
        f"{counts}): their validation score still rose with regularisation, so their test R² may be too low. "
        "`hyperrep evaluate --ridge-alphas` widens the grid (docs/evaluation.md).",
    ]


def _group_weights_note(document: dict) -> list[str]:
    """With group-weighted hyperrep probes: how many kept both groups at full weight, shrank one, or left one out."""
    if not document.get("group_weights"):
        return []
    probes = [
        r
        for r in document["results"]
        if r["method"] == HYPERREP_METHOD and r["split"] == "test" and r["metric"] in ("r2", "accuracy")
    ]
    choices = {"both at full weight": 0, "z̄ shrunk": 0, "s(W) shrunk": 0, "z̄ left out": 0, "s(W) left out": 0}
    for record in probes:
        z_weight, s_weight = record["group_weights"]
        if z_weight == s_weight == 1:
            choices["both at full weight"] += 1
        else:
            name, weight = ("z̄", z_weight) if z_weight < 1 else ("s(W)", s_weight)
            choices[f"{name} {'left out' if weight == 0 else 'shrunk'}"] += 1
    counts = ", ".join(f"{name} {count}" for name, count in choices.items() if count)
    return [
        "",
        f"> **Group weights:** the hyperrep probes weighed z̄ against s(W) on validation (`--group-weights`: each "
        f"group full, shrunk by 1/3 or 1/10, or left out). Of its {len(probes)} probes: {counts}. A probe that left "
        "z̄ out reads s(W) alone for that target.",
    ]


def render_results_markdown(document: dict) -> str:
    """``results.md``: the main table (test R² / accuracy in %), Kendall τ, and what was dropped or skipped."""
    rows = ", ".join(f"{split} {count}" for split, count in document["rows"].items())
    total = document.get("total_rows", {})
    subsampled = any(total.get(split, count) != count for split, count in document["rows"].items())
    lines = [
        f"# Evaluation: `{document['model']}` on zoo `{document['config']}`",
        "",
        f"Zoo `{document['zoo']}` (config `{document['config']}`, recipe `{document['recipe']}`); rows {rows}"
        + (" (subsampled by model: " + ", ".join(f"{s} of {n}" for s, n in total.items()) + ")" if subsampled else "")
        + ".",
        "",
        f"Linear probes on each representation: ridge regression (α from {_grid_text(document)}) or a softmax "
        f"classifier, fitted on train, regularisation chosen on **{document['selection_split']}**, scored on test. "
        "Values: test R² in % (accuracy in % for categorical targets).",
    ]
    lines += _grid_edge_note(document)
    lines += _group_weights_note(document)
    if document["selection_split"] != "validation":
        lines += [
            "",
            "> **Note:** this zoo has no validation split; the regularisation was chosen on the train split "
            "(optimistic selection).",
        ]
    lines += ["", results_table(document)]
    if document.get("fixed_hyperparameters"):
        fixed = ", ".join(f"`{name}` = {value}" for name, value in document["fixed_hyperparameters"].items())
        lines += ["", f"Not probed, one value in this zoo: {fixed}."]
    if document.get("paper"):
        lines += [
            "",
            f"Paper columns: Schürholt et al. (NeurIPS 2021), §6, zoo `{document['recipe']}` (their zoo, their "
            "encoder; ours are rebuilt).",
        ]
    lines += ["", "## Kendall τ (test)", "", results_table(document, "kendall_tau", scale=1.0, digits=3)]
    notes = []
    for method, reason in document.get("unavailable_methods", {}).items():
        notes.append(f"- {method_title(document, method)} skipped: {reason}.")
    for method, skipped in document.get("skipped_targets", {}).items():
        for target, reason in skipped.items():
            notes.append(f"- {method_title(document, method)}: target `{target}` skipped ({reason}).")
    if document.get("representation") == Z_WEIGHT_STATISTICS_LAYOUT:
        lines += ["", REPRESENTATION_NOTE]
    elif document.get("representation") == Z_SHAPE_STATISTICS_LAYOUT:
        lines += ["", SHAPE_REPRESENTATION_NOTE]
    for key in ("final_checkpoints", "final_checkpoints_z_only"):
        if document.get(key):
            method = document[key].get("method", HYPERREP_METHOD)
            lines += ["", render_final_checkpoints_markdown(document[key], method_title(document, method))]
    dropped = _dropped_lines(document)
    lines += ["", "## Dropped rows and skipped targets", ""]
    lines += notes + dropped if notes or dropped else ["None: every row had finite features and targets."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Final checkpoints vs all epochs, with bootstrap intervals over test models
# ----------------------------------------------------------------------------------------------------------------

FINAL_METRICS = ("r2", "kendall_tau")
METRIC_SYMBOLS = {"r2": "R²", "kendall_tau": "τ", "accuracy": "acc."}


def last_epoch_rows(model_ids: np.ndarray, epochs: np.ndarray) -> np.ndarray:
    """Indices of each model's last-epoch row (its final checkpoint), in row order."""
    model_ids, epochs = np.asarray(model_ids), np.asarray(epochs, dtype=np.float64)
    order = np.lexsort((epochs, model_ids))  # by model, then epoch: the last of each model's run is its final row
    last = np.r_[model_ids[order][1:] != model_ids[order][:-1], True]
    return np.sort(order[last])


def _metric(name: str, truth: np.ndarray, predicted: np.ndarray) -> float:
    from .probes import accuracy, kendall_tau, r2_score

    if name == "accuracy":
        return accuracy(truth, predicted)
    return r2_score(truth, predicted) if name == "r2" else kendall_tau(truth, predicted)


def bootstrap_difference(
    metric: str,
    truth: np.ndarray,
    predicted: np.ndarray,
    baseline_predicted: np.ndarray,
    groups: np.ndarray,
    num_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """metric(predicted) − metric(baseline) with a percentile bootstrap interval, resampling whole groups (models).

    Every resample draws the test models with replacement and keeps all their rows, for both methods at once (a
    paired comparison). Returns ``{"difference", "low", "high", "num_groups", "num_resamples"}``.
    """
    dtype = None if metric == "accuracy" else np.float64  # class labels stay labels
    truth, predicted = np.asarray(truth, dtype), np.asarray(predicted, dtype)
    baseline_predicted = np.asarray(baseline_predicted, dtype)
    unique, group_index = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(group_index == g) for g in range(unique.size)]
    rng = np.random.default_rng(seed)
    differences = np.empty(num_resamples)
    for draw in range(num_resamples):
        rows = np.concatenate([members[g] for g in rng.integers(0, unique.size, unique.size)])
        differences[draw] = _metric(metric, truth[rows], predicted[rows]) - _metric(
            metric, truth[rows], baseline_predicted[rows]
        )
    tail = (1 - level) / 2
    finite = differences[np.isfinite(differences)]  # a resample with a constant target has no τ / R²
    return {
        "difference": _metric(metric, truth, predicted) - _metric(metric, truth, baseline_predicted),
        "low": float(np.quantile(finite, tail)) if finite.size else math.nan,
        "high": float(np.quantile(finite, 1 - tail)) if finite.size else math.nan,
        "num_groups": int(unique.size),
        "num_resamples": num_resamples,
    }


def compare_final_checkpoints(
    zoo: ZooArrays,
    reports: Mapping[str, ProbeReport],
    features_by_method: Mapping[str, Mapping[str, np.ndarray]],
    categorical: set[str],
    *,
    split: str = "test",
    baseline: str = "s(W)",
    num_resamples: int = 1000,
    seed: int = 0,
    method: str = HYPERREP_METHOD,
) -> dict | None:
    """Per target: R² and Kendall τ (accuracy for a class) on all rows and each model's last epoch, vs ``baseline``.

    The probes are the ones of the all-epochs table (fitted on every train epoch; the published probe heads),
    scored once on every ``split`` row and once on each model's final checkpoint (the peers' protocol: what a user
    asks about a trained network). The difference to ``baseline`` gets a 95 % bootstrap interval over ``split``'s
    models (:func:`bootstrap_difference`); ``significant`` when the interval excludes 0. None when the zoo has no
    epoch column or the baseline was not run.

    ``method`` is the representation compared (default the hyperrep row; :data:`HYPERREP_Z_METHOD` for z̄ alone,
    then recorded as ``"method"``); its values sit under the records' ``"hyperrep"`` key either way.
    """
    columns = zoo.columns.get(split, {})
    if "epoch" not in columns or baseline not in reports or method not in reports:
        return None
    model_ids = zoo.model_ids[split]
    subsets = {
        "all_epochs": np.arange(model_ids.size),
        "final_checkpoint": last_epoch_rows(model_ids, columns["epoch"]),
    }
    records = []
    for target in reports[method].probes:
        if target not in reports[baseline].probes or target not in columns:
            continue
        is_class = target in categorical
        truth_all = np.asarray(columns[target], dtype=None if is_class else np.float64)
        known = np.array([value is not None for value in truth_all]) if is_class else np.isfinite(truth_all)
        predictions, predicted = {}, known.copy()
        for name in (method, baseline):
            features = np.asarray(features_by_method[name][split], dtype=np.float64)
            finite = np.isfinite(features).all(axis=1)
            values = np.empty(truth_all.shape, dtype=object) if is_class else np.full(truth_all.shape, np.nan)
            values[finite] = reports[name].probes[target].predict(features[finite])
            predictions[name], predicted = values, predicted & finite
        for subset, rows in subsets.items():
            keep = rows[predicted[rows]]
            if keep.size < 3 or len({str(value) for value in truth_all[keep]}) < 2:  # e.g. the final epoch
                continue
            truth = truth_all[keep]
            for metric in ("accuracy",) if is_class else FINAL_METRICS:
                values = {name: _metric(metric, truth, predictions[name][keep]) for name in predictions}
                interval = bootstrap_difference(
                    metric,
                    truth,
                    predictions[method][keep],
                    predictions[baseline][keep],
                    model_ids[keep],
                    num_resamples,
                    seed,
                )
                records.append(
                    {
                        "target": target,
                        "subset": subset,
                        "metric": metric,
                        "num_rows": int(keep.size),
                        "hyperrep": values[method],
                        "baseline": values[baseline],
                        **interval,
                        "significant": excludes_zero(interval["low"], interval["high"]),
                    }
                )
                records[-1] = nan_to_none(records[-1])
    comparison = {"split": split, "baseline": baseline, "level": 0.95, "results": records}
    return comparison if method == HYPERREP_METHOD else {"method": method, **comparison}


def render_final_checkpoints_markdown(comparison: dict, title: str = "hyperrep") -> str:
    """The final-checkpoint / all-epochs table with the bootstrap intervals of the difference to the baseline.

    ``title``: the compared representation's column title (``method_title``).
    """
    baseline = METHOD_TITLES.get(comparison["baseline"], comparison["baseline"])
    lines = [
        f"## Final checkpoints and all epochs ({comparison['split']}), {title} vs {baseline}",
        "",
        "The probes of the table above, scored on every test row (all epochs) and on each test model's last epoch "
        f"(final checkpoint). Δ = {title} − {baseline} with a {comparison['level']:.0%} bootstrap interval over "
        "test models (paired); **bold**: the interval excludes 0. R² and accuracy in %, τ as is.",
        "",
        f"| target | rows | metric | {title} | {baseline} | Δ [interval] |",
        "|---|---|---|---|---|---|",
    ]
    for record in comparison["results"]:
        scale, digits = (1.0, 3) if record["metric"] == "kendall_tau" else (100.0, 1)
        delta = format_interval(
            record["difference"], record["low"], record["high"], record["significant"], digits, scale
        )
        lines.append(
            f"| {record['target']} | {record['subset'].replace('_', ' ')} ({record['num_rows']}) | "
            f"{METRIC_SYMBOLS[record['metric']]} | {_format_value(record['hyperrep'], digits, scale)} | "
            f"{_format_value(record['baseline'], digits, scale)} | {delta} |"
        )
    return "\n".join(lines)
