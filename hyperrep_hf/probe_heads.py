"""Probe heads published with the encoder: each fitted linear probe as a small transformers model.

A probe fitted by :func:`hyperrep_hf.probing.fit_probes` on the hyper-representations z is an affine map; here it
becomes ``HyperRepProbeModel`` (one ``nn.Linear`` on z, the train standardisation folded into its weights) with a
``HyperRepProbeConfig`` that records what it predicts and how well it did on the validation split. They live in
the model folder next to the encoder::

    probes/index.json                       every probe: zoo, target, task, metric, validation score, path
    probes/<zoo>/<target>/config.json       HyperRepProbeConfig (model_type "hyperrep_probe")
    probes/<zoo>/<target>/model.safetensors the Linear

``HyperRepProbeModel.from_pretrained(model_dir / "probes/<zoo>/<target>")`` loads one; :func:`load_probe_heads`
loads every probe of a zoo (from a local folder or a Hub repo).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .atomic import write_text_atomic
from .probing import MLPProbe, ProbeResult, RidgeProbe, SoftmaxProbe

PROBE_INDEX_FORMAT_VERSION = 1
PROBES_FOLDER = "probes"
INDEX_FILE = "index.json"
TASKS = ("regression", "classification")


class ProbesNotFoundError(FileNotFoundError):
    """A model folder without probe heads (``hyperrep evaluate`` has not been run on it)."""


def _missing_probes_message(model_dir: str | os.PathLike, detail: str) -> str:
    return (
        f"{model_dir} has no probe heads ({detail}). Fit them first with "
        f"`hyperrep evaluate {model_dir} --zoo ZOO_DIR[:CONFIG] --out DIR` "
        "(hyperrep_hf.evaluation.evaluate_model), which saves them under probes/."
    )


class HyperRepProbeConfig(PreTrainedConfig):
    """What a probe head predicts from the hyper-representation z, and how well it did.

    Args:
        target: The zoo column it predicts (``"test_accuracy"``, ``"activation"``, …).
        task: ``"regression"`` (one value) or ``"classification"`` (one logit per label).
        input_dim: Size of z (the encoder's ``latent_dim``).
        labels: Class names in logit order (classification only).
        standardization_mean: (input_dim,) train mean of z the probe was fitted with (already folded into the
            Linear; kept so the probe can be reconstructed and audited).
        standardization_std: (input_dim,) train standard deviation of z.
        metric: ``"r2"`` (regression) or ``"accuracy"`` (classification).
        validation_score: The metric on the validation split (the split that chose the regularisation).
        alpha: Ridge α (regression).
        inverse_regularization: Softmax C (classification).
        selection_split: Split the regularisation was chosen on (``"validation"``, or ``"train"`` as a fallback).
        zoo: The zoo (config name) the probe was fitted on.
        hidden_sizes: Widths of the hidden ReLU layers of an MLP head (:class:`~hyperrep_hf.probing.MLPProbe`);
            None for the linear head.
        kwargs: Passed on to ``PreTrainedConfig``.

    Raises:
        ValueError: Naming the field and value when a field is invalid or inconsistent.
    """

    model_type = "hyperrep_probe"

    def __init__(
        self,
        target: str = "target",
        task: str = "regression",
        input_dim: int = 50,
        labels: list | None = None,
        standardization_mean: list[float] | None = None,
        standardization_std: list[float] | None = None,
        metric: str | None = None,
        validation_score: float | None = None,
        alpha: float | None = None,
        inverse_regularization: float | None = None,
        selection_split: str = "validation",
        zoo: str | None = None,
        hidden_sizes: list[int] | None = None,
        **kwargs: Any,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
        if not isinstance(input_dim, int) or input_dim < 1:
            raise ValueError(f"input_dim must be a positive integer, got {input_dim!r}.")
        if task == "classification" and (labels is None or len(labels) < 2):
            raise ValueError(f"A classification probe needs at least two labels, got {labels!r}.")
        if task == "regression" and labels is not None:
            raise ValueError(f"A regression probe has no labels, got {labels!r}.")
        for name, values in (
            ("standardization_mean", standardization_mean),
            ("standardization_std", standardization_std),
        ):
            if values is not None and len(values) != input_dim:
                raise ValueError(f"{name} has {len(values)} entries, input_dim is {input_dim}.")
        self.target = target
        self.task = task
        self.input_dim = input_dim
        self.labels = list(labels) if labels is not None else None
        self.standardization_mean = standardization_mean
        self.standardization_std = standardization_std
        self.metric = metric or ("r2" if task == "regression" else "accuracy")
        self.validation_score = _finite_or_none(validation_score)
        self.alpha = alpha
        self.inverse_regularization = inverse_regularization
        self.selection_split = selection_split
        self.zoo = zoo
        if hidden_sizes is not None and (not hidden_sizes or any(int(size) < 1 for size in hidden_sizes)):
            raise ValueError(f"hidden_sizes must be None or positive integers, got {hidden_sizes!r}.")
        self.hidden_sizes = [int(size) for size in hidden_sizes] if hidden_sizes else None
        if task == "classification":
            kwargs.setdefault("id2label", {index: str(label) for index, label in enumerate(self.labels)})
        super().__init__(**kwargs)

    @property
    def num_outputs(self) -> int:
        """Outputs of the Linear: 1 for regression, the number of labels for classification."""
        return 1 if self.task == "regression" else len(self.labels)


@dataclass
class HyperRepProbeOutput(ModelOutput):
    """Output of `HyperRepProbeModel`.

    Args:
        predictions: (batch,) predicted values (regression) or predicted class indices (classification).
        logits: (batch, num_labels) class logits (classification only).
        predicted_labels: The predicted label names, one per network (classification only).
    """

    predictions: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    predicted_labels: list | None = None


class HyperRepProbeModel(PreTrainedModel):
    """A linear head on the hyper-representation z: regression value or class logits."""

    config_class = HyperRepProbeConfig
    base_model_prefix = "probe"
    main_input_name = "embeddings"

    def __init__(self, config: HyperRepProbeConfig) -> None:
        super().__init__(config)
        sizes = [config.input_dim, *(config.hidden_sizes or [])]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True))  # noqa: RUF007
        self.linear = nn.Linear(sizes[-1], config.num_outputs)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        # A probe is always fitted, never trained from scratch: start at zero (the constant-0 predictor).
        if isinstance(module, nn.Linear):
            init.zeros_(module.weight)
            init.zeros_(module.bias)

    def forward(self, embeddings: torch.Tensor, return_dict: bool = True, **kwargs: Any) -> HyperRepProbeOutput:
        """Predicts from z.

        Args:
            embeddings: (batch, input_dim) hyper-representations (``HyperRepModel(...).embeddings``).
            return_dict: Return a `HyperRepProbeOutput` rather than a tuple.
            kwargs: Ignored.

        Returns:
            `HyperRepProbeOutput`: regression → ``predictions`` (batch,); classification → ``logits``
            (batch, num_labels), ``predictions`` (batch,) class indices and ``predicted_labels``.
        """
        for layer in self.hidden:  # MLP heads only
            embeddings = torch.relu(layer(embeddings))
        outputs = self.linear(embeddings)
        if self.config.task == "regression":
            output = HyperRepProbeOutput(predictions=outputs.squeeze(-1))
        else:
            indices = outputs.argmax(dim=-1)
            labels = [self.config.labels[index] for index in indices.tolist()]
            output = HyperRepProbeOutput(predictions=indices, logits=outputs, predicted_labels=labels)
        return output if return_dict else output.to_tuple()

    @classmethod
    def from_probe(
        cls,
        probe: RidgeProbe | SoftmaxProbe | MLPProbe,
        target: str,
        zoo: str | None = None,
        selection_split: str = "validation",
    ) -> HyperRepProbeModel:
        """Turns a fitted probe into a head that computes exactly its predictions (up to float32 rounding).

        Args:
            probe: A fitted `RidgeProbe` (regression), `SoftmaxProbe` (classification) or `MLPProbe` (either).
            target: The target column it was fitted on.
            zoo: The zoo it was fitted on.
            selection_split: Split its regularisation was selected on.
        """
        if isinstance(probe, MLPProbe):
            layers = probe.as_layers()  # standardisation folded into the first layer, target scale into the last
            regression = probe.task == "regression"
        else:
            layers = [probe.as_linear()]  # standardisation folded in: (num_outputs, input_dim), (num_outputs,)
            regression = isinstance(probe, RidgeProbe)
        weight = layers[0][0]
        config = HyperRepProbeConfig(
            target=target,
            task="regression" if regression else "classification",
            input_dim=int(weight.shape[1]),
            labels=None if regression else [_json_scalar(label) for label in probe.labels],
            standardization_mean=[float(value) for value in probe.mean],
            standardization_std=[float(value) for value in probe.std],
            validation_score=float(probe.validation_score),
            alpha=probe.alpha if regression and not isinstance(probe, MLPProbe) else None,
            inverse_regularization=None if regression or isinstance(probe, MLPProbe) else probe.inverse_regularization,
            selection_split=selection_split,
            zoo=zoo,
            hidden_sizes=[int(w.shape[0]) for w, _ in layers[:-1]] or None,
        )
        model = cls(config)
        with torch.no_grad():
            for module, (layer_weight, layer_bias) in zip([*model.hidden, model.linear], layers, strict=True):
                module.weight.copy_(torch.as_tensor(np.asarray(layer_weight), dtype=torch.float32))
                module.bias.copy_(torch.as_tensor(np.asarray(layer_bias), dtype=torch.float32))
        return model.eval()


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and not math.isfinite(value)) else float(value)


def _json_scalar(value: Any) -> Any:
    """Numpy scalars → plain Python values (JSON-ready labels)."""
    return value.item() if isinstance(value, np.generic) else value


class quiet_progress:
    """Silences transformers' per-file progress bars while many small heads are saved or loaded."""

    def __enter__(self) -> None:
        from transformers.utils import logging as transformers_logging

        self.enabled = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()

    def __exit__(self, *exception: object) -> None:
        from transformers.utils import logging as transformers_logging

        if self.enabled:
            transformers_logging.enable_progress_bar()


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
    probes: dict[str, RidgeProbe | SoftmaxProbe | MLPProbe],
    results: list[ProbeResult] | None = None,
    make_default: bool = True,
) -> Path:
    """Saves every fitted probe of one zoo under ``probes/<zoo>/<target>/`` and updates ``probes/index.json``.

    The zoo's previous probes are replaced (a target that is no longer probed leaves no stale head behind);
    other zoos' probes are kept. The zoo becomes the index's ``default_zoo`` (the one predictions use).

    Args:
        model_dir: The model folder (encoder + processor).
        zoo: Zoo (config) name the probes were fitted on.
        probes: Target → fitted probe (``ProbeReport.probes``).
        results: The probes' results; adds each probe's test score to the index when present.
        make_default: Make this zoo the index's ``default_zoo`` (False keeps the current default, e.g. for the
            final-checkpoint probes of ``hyperrep evaluate --protocol``).

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
    default_zoo = zoo if make_default or not index.get("default_zoo") else index["default_zoo"]
    index = {"format_version": PROBE_INDEX_FORMAT_VERSION, "default_zoo": default_zoo, "probes": kept + entries}
    index_path = probes_dir / INDEX_FILE
    return write_text_atomic(index_path, json.dumps(index, indent=2) + "\n")


def _local_or_downloaded(model_dir_or_repo: str | os.PathLike) -> Path:
    """The folder holding ``probes/``: the local folder, or a snapshot of the repo's probes from the Hub."""
    local = Path(model_dir_or_repo)
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(str(model_dir_or_repo), allow_patterns=[f"{PROBES_FOLDER}/*", f"{PROBES_FOLDER}/**"])
        )
    except Exception as error:
        raise ProbesNotFoundError(_missing_probes_message(model_dir_or_repo, f"download failed: {error}")) from error


def read_probe_index(model_dir_or_repo: str | os.PathLike) -> dict:
    """``probes/index.json`` of a model folder or Hub repo.

    Raises:
        ProbesNotFoundError: The folder has no ``probes/index.json`` (with the command that creates it).
    """
    folder = _local_or_downloaded(model_dir_or_repo)
    index_path = folder / PROBES_FOLDER / INDEX_FILE
    if not index_path.is_file():
        raise ProbesNotFoundError(_missing_probes_message(model_dir_or_repo, f"no {PROBES_FOLDER}/{INDEX_FILE}"))
    index = json.loads(index_path.read_text())
    if index.get("format_version", 0) > PROBE_INDEX_FORMAT_VERSION:
        raise ValueError(
            f"{index_path} has format version {index['format_version']}; this hyperrep_hf reads up to "
            f"{PROBE_INDEX_FORMAT_VERSION}. Upgrade hyperrep_hf."
        )
    return index


def load_probe_heads(
    model_dir_or_repo: str | os.PathLike, zoo: str | None = None
) -> tuple[str, dict[str, HyperRepProbeModel]]:
    """Loads the probe heads of one zoo, in index order, in eval mode.

    Args:
        model_dir_or_repo: A model folder or a Hub model repo id.
        zoo: Which zoo's probes; default the index's ``default_zoo`` (the last one evaluated).

    Returns:
        (zoo name, target → ``HyperRepProbeModel``).

    Raises:
        ProbesNotFoundError: No probes at all, or none for ``zoo`` (naming the zoos that have some).
    """
    folder = _local_or_downloaded(model_dir_or_repo)
    index = read_probe_index(folder)
    zoos = list(dict.fromkeys(entry["zoo"] for entry in index["probes"]))
    if not zoos:
        raise ProbesNotFoundError(_missing_probes_message(model_dir_or_repo, f"{PROBES_FOLDER}/{INDEX_FILE} is empty"))
    zoo = zoo or index.get("default_zoo") or zoos[0]
    if zoo not in zoos:
        raise ProbesNotFoundError(
            f"{model_dir_or_repo} has no probes for zoo {zoo!r} (it has probes for: {', '.join(zoos)}). "
            f"Run `hyperrep evaluate {model_dir_or_repo} --zoo ZOO_DIR:{zoo} --out DIR` to fit them."
        )
    with quiet_progress():
        heads = {
            entry["target"]: HyperRepProbeModel.from_pretrained(folder / entry["path"]).eval()
            for entry in index["probes"]
            if entry["zoo"] == zoo
        }
    return zoo, heads


def register_probe_heads() -> None:
    """Registers ``HyperRepProbeConfig`` (model_type ``"hyperrep_probe"``) and its model with the Auto classes."""
    from transformers import AutoConfig, AutoModel

    AutoConfig.register(HyperRepProbeConfig.model_type, HyperRepProbeConfig, exist_ok=True)
    AutoModel.register(HyperRepProbeConfig, HyperRepProbeModel, exist_ok=True)
