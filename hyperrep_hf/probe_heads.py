"""Probe heads published with the encoder: each fitted linear probe as a small transformers model.

A probe fitted by :func:`hyperrep_hf.probing.fit_probes` on the hyper-representations z is an affine map; here it
becomes ``HyperRepProbeModel`` (one ``nn.Linear`` on z, the train standardisation folded into its weights) with a
``HyperRepProbeConfig`` that records what it predicts and how well it did on the validation split. They live in
the model folder next to the encoder::

    probes/index.json                       every probe: zoo, target, task, metric, validation score, path
    probes/<zoo>/<target>/config.json       HyperRepProbeConfig (model_type "hyperrep_probe")
    probes/<zoo>/<target>/model.safetensors the Linear

The classes and the reading side (:func:`load_probe_heads`, :func:`read_probe_index`) live in the flat remote-code
file :mod:`hyperrep_hf.modeling_hyperrep_probe`; fitting and saving (:func:`save_probe_heads`) live here.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .atomic import write_text_atomic
from .modeling_hyperrep_probe import (
    INDEX_FILE,
    PROBE_INDEX_FORMAT_VERSION,
    PROBES_FOLDER,
    TASKS,
    HyperRepProbeConfig,
    HyperRepProbeModel,
    HyperRepProbeOutput,
    ProbesNotFoundError,
    _finite_or_none,
    load_probe_heads,
    quiet_progress,
    read_probe_index,
)
from .probing import ProbeResult, RidgeProbe, SoftmaxProbe

__all__ = [
    "INDEX_FILE",
    "PROBES_FOLDER",
    "PROBE_INDEX_FORMAT_VERSION",
    "TASKS",
    "HyperRepProbeConfig",
    "HyperRepProbeModel",
    "HyperRepProbeOutput",
    "ProbesNotFoundError",
    "load_probe_heads",
    "read_probe_index",
    "register_probe_heads",
    "save_probe_heads",
]


def _safe_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"{name!r} cannot be a folder name of a probe.")
    return name


# ----------------------------------------------------------------------------------------------------------------
# Saving and loading the probes of a model folder
# ----------------------------------------------------------------------------------------------------------------


def save_probe_heads(
    model_dir: str | os.PathLike,
    zoo: str,
    probes: dict[str, RidgeProbe | SoftmaxProbe],
    results: list[ProbeResult] | None = None,
) -> Path:
    """Saves every fitted probe of one zoo under ``probes/<zoo>/<target>/`` and updates ``probes/index.json``.

    The zoo's previous probes are replaced (a target that is no longer probed leaves no stale head behind);
    other zoos' probes are kept. The zoo becomes the index's ``default_zoo`` (the one predictions use).

    Args:
        model_dir: The model folder (encoder + processor).
        zoo: Zoo (config) name the probes were fitted on.
        probes: Target → fitted probe (``ProbeReport.probes``).
        results: The probes' results; adds each probe's test score to the index when present.

    Returns:
        Path of ``probes/index.json``.
    """
    probes_dir = Path(model_dir) / PROBES_FOLDER
    zoo_dir = probes_dir / _safe_name(zoo)
    if zoo_dir.exists():
        shutil.rmtree(zoo_dir)
    selection_splits = {result.target: result.selection_split for result in results or []}
    test_scores = {
        result.target: result.value
        for result in results or []
        if result.split == "test" and result.metric in ("r2", "accuracy")
    }
    entries = []
    for target, probe in probes.items():
        head = HyperRepProbeModel.from_probe(probe, target, zoo, selection_splits.get(target, "validation"))
        folder = zoo_dir / _safe_name(target)
        with quiet_progress():
            head.save_pretrained(folder)
        entries.append(
            {
                "zoo": zoo,
                "target": target,
                "task": head.config.task,
                "metric": head.config.metric,
                "validation_score": head.config.validation_score,
                "test_score": _finite_or_none(test_scores.get(target)),
                "selection_split": head.config.selection_split,
                "path": folder.relative_to(model_dir).as_posix(),
            }
        )
    index = read_probe_index(model_dir) if (probes_dir / INDEX_FILE).is_file() else {"probes": []}
    kept = [entry for entry in index["probes"] if entry["zoo"] != zoo]
    index = {"format_version": PROBE_INDEX_FORMAT_VERSION, "default_zoo": zoo, "probes": kept + entries}
    index_path = probes_dir / INDEX_FILE
    write_text_atomic(index_path, json.dumps(index, indent=2) + "\n")
    from .hub import write_remote_code

    write_remote_code(model_dir)  # with probes the folder serves the pipeline: its code goes next to the encoder
    return index_path


def register_probe_heads() -> None:
    """Registers ``HyperRepProbeConfig`` (model_type ``"hyperrep_probe"``) and its model with the Auto classes."""
    from transformers import AutoConfig, AutoModel

    AutoConfig.register(HyperRepProbeConfig.model_type, HyperRepProbeConfig, exist_ok=True)
    AutoModel.register(HyperRepProbeConfig, HyperRepProbeModel, exist_ok=True)
