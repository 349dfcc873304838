"""What the probe-comparison bench scripts share: their (model, zoo) arguments, and per-target paired scores.

``compare_group_weights.py`` and ``compare_baseline.py`` probe several representations of the same zoo rows with
the probes of ``hyperrep evaluate`` and compare them on the test networks; this module is imported by them (they put
their own folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


def add_model_zoo_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model`` / ``--zoo`` pairs, ``--max-rows`` once or once per pair, and ``--out``."""
    parser.add_argument("--model", action="append", required=True, help="model folder (repeat with --zoo)")
    parser.add_argument("--zoo", action="append", required=True, help="DIR:CONFIG, one per --model")
    parser.add_argument(
        "--max-rows", type=int, action="append", help="rows per split kept (whole models, seeded): once for every "
        "zoo, or once per --model (0: all)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="the JSON file written")


def run_pairs(
    parser: argparse.ArgumentParser, arguments: argparse.Namespace, compare: Callable[[str, str, int | None], dict]
) -> int:
    """Runs ``compare(model, zoo, max_rows)`` for every pair, prints each summary and writes the list to ``--out``."""
    max_rows = arguments.max_rows or [0]
    if len(max_rows) == 1:
        max_rows = max_rows * len(arguments.model)
    if not len(arguments.model) == len(arguments.zoo) == len(max_rows):
        parser.error("give one --zoo per --model, and --max-rows once or once per --model")
    results = []
    for model_dir, zoo, rows in zip(arguments.model, arguments.zoo, max_rows, strict=True):
        result = compare(model_dir, zoo, rows or None)
        results.append(result)
        print(json.dumps({"zoo": zoo, "summary": result["summary"]}, indent=1, ensure_ascii=False), flush=True)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {arguments.out}")
    return 0


@dataclass
class ProbeInputs:
    """One (model, zoo): the zoo's rows, its probe targets and the model's representation of every split."""

    arrays: Any
    targets: list[str]
    categorical: set[str]
    targets_by_split: dict[str, dict[str, np.ndarray]]
    model: Any
    processor: Any
    embeddings: dict[str, np.ndarray]


def load_probe_inputs(
    model_dir: str, zoo: str, max_rows: int | None, append_weight_statistics: bool | None = None
) -> ProbeInputs:
    """The zoo (``max_rows`` per split, whole models, seed 0, as ``hyperrep evaluate``), its targets and embeddings.

    ``append_weight_statistics``: None keeps the model's own representation; True / False forces z̄ ⊕ s(W) / z̄.
    """
    from hyperrep_hf.probing.evaluation import (
        _targets_by_split,
        compute_embeddings,
        load_encoder,
        load_zoo_arrays,
        select_targets,
    )

    arrays = load_zoo_arrays(zoo, max_rows, 0)
    targets, categorical = select_targets(arrays)
    model, processor = load_encoder(model_dir, append_weight_statistics)
    embeddings = {split: compute_embeddings(model, processor, vectors) for split, vectors in arrays.vectors.items()}
    return ProbeInputs(arrays, targets, categorical, _targets_by_split(arrays, targets), model, processor, embeddings)


def paired_rows(
    targets: Sequence[str],
    categorical: set[str],
    targets_by_split: Mapping[str, Mapping[str, np.ndarray]],
    model_ids: np.ndarray,
    reports: Mapping,
    features: Mapping[str, Mapping[str, np.ndarray]],
    pairs: Sequence[tuple[str, str]],
) -> dict[str, dict]:
    """Per target: each method's test score (in %), and ``first − second`` for each pair with its 95 % interval.

    The interval is the paired bootstrap of ``hyperrep evaluate`` over the test networks (all their rows, 1,000
    resamples). Targets some method did not probe (constant, or missing) are left out.
    """
    from hyperrep_hf.probing.probes import _missing_mask
    from hyperrep_hf.probing.report import bootstrap_difference

    rows = {}
    for target in targets:
        if any(target not in report.probes for report in reports.values()):
            continue
        metric = "accuracy" if target in categorical else "r2"
        truth = np.asarray(targets_by_split["test"][target])
        present = ~_missing_mask(truth)  # the probes drop the same rows
        predicted = {name: reports[name].probes[target].predict(features[name]["test"][present]) for name in reports}
        row = {"metric": metric}
        for name, report in reports.items():
            row[name] = 100 * next(
                r.value for r in report.results if (r.target, r.split, r.metric) == (target, "test", metric)
            )
        for first, second in pairs:
            interval = bootstrap_difference(
                metric, truth[present], predicted[first], predicted[second], model_ids[present]
            )
            row[f"{first} − {second}"] = [100 * interval[key] for key in ("difference", "low", "high")]
        rows[target] = row
    return rows
