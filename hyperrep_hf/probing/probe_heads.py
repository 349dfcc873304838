"""Probe heads published with the encoder: each fitted linear probe as a small transformers model.

A probe fitted by :func:`hyperrep_hf.probing.fit_probes` on the hyper-representations z is an affine map; here it
becomes ``HyperRepProbeModel`` (one ``nn.Linear`` on z, the train standardisation folded into its weights) with a
``HyperRepProbeConfig`` that records what it predicts and how well it did on the validation split. They live in
the model folder next to the encoder::

    probes/index.json                       every probe: zoo key, config, source, target, metric, score, path
    probes/<zoo>/<target>/config.json       HyperRepProbeConfig (model_type "hyperrep_probe")
    probes/<zoo>/<target>/model.safetensors the Linear
    probes/<zoo>/statistics.json            the zoo's weight-norm distribution and target ranges (predict checks)

``<zoo>`` is the zoo's key: its config name and a short fingerprint of its ``zoo_info.json``
(``tetris_seed-1a2b3c4d``), so two zoos of one config name built differently (another seed, size, folder) keep
their probes side by side. Wherever a zoo is asked for, its key or (when unambiguous) its config name will do.

The classes and the reading side (:func:`load_probe_heads`, :func:`read_probe_index`, :func:`resolve_probe_zoo`,
:func:`load_probe_statistics`) live in the flat remote-code file
:mod:`hyperrep_hf.models.hyperrep.modeling_hyperrep_probe` and are re-exported here; fitting and saving
(:func:`save_probe_heads`, :func:`zoo_key`) live here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..atomic import write_json_atomic
from ..models.hyperrep.embeddings import Z_LAYOUT
from ..models.hyperrep.modeling_hyperrep_probe import (
    INDEX_FILE,
    PROBE_INDEX_FORMAT_VERSION,
    PROBES_FOLDER,
    TASKS,
    HyperRepProbeConfig,
    HyperRepProbeModel,
    HyperRepProbeOutput,
    ProbeIndexError,
    ProbeMismatchError,
    ProbesNotFoundError,
    _finite_or_none,
    _safe_name,
    load_probe_heads,
    load_probe_statistics,
    probe_zoos,
    quiet_progress,
    read_probe_index,
    resolve_probe_zoo,
)
from .probes import MLPProbe, ProbeResult, RidgeProbe, SoftmaxProbe


class ProbesExistError(FileExistsError):
    """Probes for this zoo are already in the model folder (replacing them needs ``overwrite``)."""


def zoo_fingerprint(info: dict) -> str:
    """A content fingerprint of a zoo: SHA-256 of its ``zoo_info.json`` (canonical JSON), hex.

    ``zoo_info.json`` records the recipe, the build options (seed, sizes), the split, the counts and the
    architecture, so two builds differ in it whenever their rows can differ.
    """
    canonical = json.dumps(info, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def zoo_key(config: str, info: dict) -> str:
    """The folder name of a zoo's probes: ``<config>-<first 8 hex digits of its fingerprint>``."""
    return f"{_safe_name(config)}-{zoo_fingerprint(info)[:8]}"


__all__ = [
    "INDEX_FILE",
    "PROBES_FOLDER",
    "PROBE_INDEX_FORMAT_VERSION",
    "TASKS",
    "HyperRepProbeConfig",
    "HyperRepProbeModel",
    "HyperRepProbeOutput",
    "ProbeIndexError",
    "ProbeMismatchError",
    "ProbesExistError",
    "ProbesNotFoundError",
    "load_probe_heads",
    "load_probe_statistics",
    "probe_zoos",
    "read_probe_index",
    "register_probe_heads",
    "resolve_probe_zoo",
    "save_probe_heads",
    "scores_by_activation",
    "zoo_fingerprint",
    "zoo_key",
]


def save_probe_heads(
    model_dir: str | os.PathLike,
    zoo: str,
    probes: dict[str, RidgeProbe | SoftmaxProbe | MLPProbe],
    results: list[ProbeResult] | None = None,
    *,
    make_default: bool = True,
    config: str | None = None,
    source: str | None = None,
    fingerprint: str | None = None,
    statistics: dict | None = None,
    scores_by_activation: dict[str, dict[str, float | None]] | None = None,
    representation: str = Z_LAYOUT,
) -> Path:
    """Saves every fitted probe of one zoo under ``probes/<zoo>/<target>/`` and updates ``probes/index.json``.

    The zoo's previous probes are replaced (a target that is no longer probed leaves no stale head behind);
    other zoos' probes are kept. The new heads are written into a temporary folder first and swapped in, so a
    crash leaves the old probes or the new ones, never a mix. The zoo becomes the index's ``default_zoo`` (the
    one predictions use). :func:`hyperrep_hf.probing.evaluation.evaluate_model` refuses to get here over existing
    probes unless told to overwrite.

    Args:
        model_dir: The model folder (encoder + processor).
        zoo: The zoo's key (:func:`zoo_key`; any folder-safe name for probes fitted outside ``evaluate``).
        probes: Target → fitted probe (``ProbeReport.probes``).
        results: The probes' results; adds each probe's test score to the index when present.
        config: The zoo's config name (default: ``zoo``).
        source: The zoo folder or Hub repo the probes were fitted on.
        fingerprint: The zoo's :func:`zoo_fingerprint`.
        statistics: The zoo's weight / target statistics (:mod:`hyperrep_hf.models.hyperrep.weight_statistics`),
            saved as ``probes/<zoo>/statistics.json``.
        make_default: Make this zoo the index's ``default_zoo`` (False keeps the current default, e.g. for the
            final-checkpoint probes of ``hyperrep evaluate --protocol``).
        scores_by_activation: Target → activation → the probe's validation score on that activation's networks
            (:func:`scores_by_activation`); saved in each head's config, so predictions for a network of an
            activation the encoder was not trained on can say how well the probe did on such networks.
        representation: The layout of the features the probes were fitted on (``"z"`` or ``"z+s(W)"``,
            ``embeddings.representation_layout`` of the encoder's config); saved in each head's config (and, when not
            ``"z"``, in the index), so the pipeline refuses heads of another layout than its encoder's.

    Returns:
        Path of ``probes/index.json``.
    """
    probes_dir = Path(model_dir) / PROBES_FOLDER
    zoo_dir = probes_dir / _safe_name(zoo)
    index = read_probe_index(model_dir) if (probes_dir / INDEX_FILE).is_file() else {"probes": []}
    staging = probes_dir / f".{zoo_dir.name}.tmp"
    retired = probes_dir / f".{zoo_dir.name}.old"
    for leftover in (staging, retired):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir(parents=True)
    selection_splits = {result.target: result.selection_split for result in results or []}
    test_scores = {
        result.target: result.value
        for result in results or []
        if result.split == "test" and result.metric in ("r2", "accuracy")
    }
    described = {"config": config or zoo, "zoo_source": source, "zoo_fingerprint": fingerprint}
    entries = []
    for target, probe in probes.items():
        head = HyperRepProbeModel.from_probe(
            probe, target, zoo, selection_splits.get(target, "validation"), representation=representation
        )
        head.config.validation_score_by_activation = (scores_by_activation or {}).get(target)
        with quiet_progress():
            head.save_pretrained(staging / _safe_name(target))
        entries.append(
            {
                "zoo": zoo,
                **described,
                "target": target,
                "task": head.config.task,
                "metric": head.config.metric,
                "validation_score": head.config.validation_score,
                "validation_score_by_activation": head.config.validation_score_by_activation,
                "test_score": _finite_or_none(test_scores.get(target)),
                "selection_split": head.config.selection_split,
                "path": (zoo_dir / target).relative_to(model_dir).as_posix(),
            }
        )
        if representation != Z_LAYOUT:  # older indexes (and z probes) leave it out: z is the default
            entries[-1]["representation"] = representation
    if statistics is not None:
        from ..models.hyperrep.weight_statistics import STATISTICS_FILE

        write_json_atomic(staging / STATISTICS_FILE, statistics)
    if zoo_dir.exists():
        os.replace(zoo_dir, retired)
    os.replace(staging, zoo_dir)
    kept = [entry for entry in index["probes"] if entry["zoo"] != zoo]
    default_zoo = zoo if make_default or not index.get("default_zoo") else index["default_zoo"]
    index = {"format_version": PROBE_INDEX_FORMAT_VERSION, "default_zoo": default_zoo, "probes": kept + entries}
    index_path = write_json_atomic(probes_dir / INDEX_FILE, index)
    shutil.rmtree(retired, ignore_errors=True)
    from ..hub.publish import write_remote_code

    write_remote_code(model_dir)  # with probes the folder serves the pipeline: its code goes next to the encoder
    return index_path


def scores_by_activation(
    probes: dict[str, RidgeProbe | SoftmaxProbe | MLPProbe],
    embeddings: dict[str, np.ndarray] | None,
    columns: dict[str, dict[str, np.ndarray]],
    targets_by_split: dict[str, dict[str, np.ndarray]],
    split: str = "validation",
) -> dict[str, dict[str, float | None]] | None:
    """Each probe's score (R² or accuracy, as its ``validation_score``) on the ``split`` rows of each activation.

    Args:
        probes: Target → fitted probe.
        embeddings: Split → (num_rows, latent_dim) z̄ the probes read.
        columns: Split → the zoo's columns (``activation`` among them).
        targets_by_split: Split → target → (num_rows,) values.
        split: The split scored (the one that chose the probes' regularisation).

    Returns:
        Target → activation (every one of the zoo, in any split) → score (None where there is none: no such rows in
        ``split``, a single row, a constant target); None when the zoo has no ``activation`` column or no ``split``.
    """
    if embeddings is None or split not in embeddings or "activation" not in columns.get(split, {}):
        return None
    every = sorted({str(value) for rows in columns.values() for value in rows.get("activation", [])})
    activations = np.asarray([str(value) for value in columns[split]["activation"]])
    features = embeddings[split]
    scores: dict[str, dict[str, float | None]] = {}
    for target, probe in probes.items():
        values = np.asarray(targets_by_split[split][target])
        present = np.array([value is not None and value == value for value in values.tolist()])  # not None / NaN
        usable = np.isfinite(features).all(axis=1) & present
        scores[target] = {}
        for activation in every:
            rows = usable & (activations == activation)
            score = float(probe.score(features[rows], values[rows])) if rows.any() else None
            scores[target][activation] = _finite_or_none(score)
    return scores


def register_probe_heads() -> None:
    """Registers ``HyperRepProbeConfig`` (model_type ``"hyperrep_probe"``) and its model with the Auto classes."""
    from transformers import AutoConfig, AutoModel

    AutoConfig.register(HyperRepProbeConfig.model_type, HyperRepProbeConfig, exist_ok=True)
    AutoModel.register(HyperRepProbeConfig, HyperRepProbeModel, exist_ok=True)
