"""Probe heads: each fitted linear probe on z as a small transformers model, and how a model folder holds them.

This file travels to the Hub as remote code (the probe heads' ``auto_map`` and the pipeline import it), so it is
flat and self-contained: only torch, numpy, transformers. Fitting and saving the probes is library code
(:mod:`hyperrep_hf.probe_heads`); this file reads them::

    probes/index.json                       every probe: zoo, target, task, metric, validation score, path
    probes/<zoo>/<target>/config.json       HyperRepProbeConfig (model_type "hyperrep_probe", auto_map)
    probes/<zoo>/<target>/model.safetensors the Linear

``HyperRepProbeModel.from_pretrained(model_dir / "probes/<zoo>/<target>")`` loads one (or ``AutoModel`` with
``trust_remote_code=True``); :func:`load_probe_heads` loads every probe of a zoo, from a folder or a Hub repo.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

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
        self.linear = nn.Linear(config.input_dim, config.num_outputs)
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
        probe: Any,
        target: str,
        zoo: str | None = None,
        selection_split: str = "validation",
    ) -> HyperRepProbeModel:
        """Turns a fitted probe into a head that computes exactly its predictions (up to float32 rounding).

        Args:
            probe: A fitted ``hyperrep_hf.probing.RidgeProbe`` (regression: has ``alpha``) or ``SoftmaxProbe``
                (classification: has ``labels``).
            target: The target column it was fitted on.
            zoo: The zoo it was fitted on.
            selection_split: Split its regularisation was selected on.
        """
        weight, bias = probe.as_linear()  # standardisation folded in: (num_outputs, input_dim), (num_outputs,)
        regression = getattr(probe, "labels", None) is None
        config = HyperRepProbeConfig(
            target=target,
            task="regression" if regression else "classification",
            input_dim=int(weight.shape[1]),
            labels=None if regression else [_json_scalar(label) for label in probe.labels],
            standardization_mean=[float(value) for value in probe.mean],
            standardization_std=[float(value) for value in probe.std],
            validation_score=float(probe.validation_score),
            alpha=probe.alpha if regression else None,
            inverse_regularization=None if regression else probe.inverse_regularization,
            selection_split=selection_split,
            zoo=zoo,
        )
        model = cls(config)
        with torch.no_grad():
            model.linear.weight.copy_(torch.as_tensor(np.asarray(weight), dtype=torch.float32))
            model.linear.bias.copy_(torch.as_tensor(np.asarray(bias), dtype=torch.float32))
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


def _file_of(model_dir_or_repo: str | os.PathLike, filename: str, **hub_kwargs: Any) -> str | None:
    """Local path of a file of a model folder or (downloaded) Hub repo; None when the folder/repo lacks it."""
    local = os.path.join(os.fspath(model_dir_or_repo), filename)
    if os.path.isdir(os.fspath(model_dir_or_repo)):
        return local if os.path.isfile(local) else None
    from transformers.utils import cached_file

    return cached_file(
        os.fspath(model_dir_or_repo),
        filename,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
        **hub_kwargs,
    )


def read_probe_index(model_dir_or_repo: str | os.PathLike, **hub_kwargs: Any) -> dict:
    """``probes/index.json`` of a model folder or Hub repo.

    Args:
        model_dir_or_repo: A model folder or Hub model repo id.
        hub_kwargs: ``revision``, ``token``, ``cache_dir``… passed to the download.

    Raises:
        ProbesNotFoundError: The folder has no ``probes/index.json`` (with the command that creates it).
    """
    index_path = _file_of(model_dir_or_repo, f"{PROBES_FOLDER}/{INDEX_FILE}", **hub_kwargs)
    if index_path is None:
        raise ProbesNotFoundError(_missing_probes_message(model_dir_or_repo, f"no {PROBES_FOLDER}/{INDEX_FILE}"))
    with open(index_path, encoding="utf-8") as file:
        index = json.load(file)
    if index.get("format_version", 0) > PROBE_INDEX_FORMAT_VERSION:
        raise ValueError(
            f"{PROBES_FOLDER}/{INDEX_FILE} of {model_dir_or_repo} has format version {index['format_version']}; "
            f"this code reads up to {PROBE_INDEX_FORMAT_VERSION}. Upgrade hyperrep_hf (or pull the repo's newer code)."
        )
    return index


def load_probe_heads(
    model_dir_or_repo: str | os.PathLike, zoo: str | None = None, **hub_kwargs: Any
) -> tuple[str, dict[str, HyperRepProbeModel]]:
    """Loads the probe heads of one zoo, in index order, in eval mode.

    Args:
        model_dir_or_repo: A model folder or a Hub model repo id.
        zoo: Which zoo's probes; default the index's ``default_zoo`` (the last one evaluated).
        hub_kwargs: ``revision``, ``token``, ``cache_dir``… passed to the downloads.

    Returns:
        (zoo name, target → ``HyperRepProbeModel``).

    Raises:
        ProbesNotFoundError: No probes at all, or none for ``zoo`` (naming the zoos that have some).
    """
    index = read_probe_index(model_dir_or_repo, **hub_kwargs)
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
            entry["target"]: HyperRepProbeModel.from_pretrained(
                os.fspath(model_dir_or_repo), subfolder=entry["path"], **hub_kwargs
            ).eval()
            for entry in index["probes"]
            if entry["zoo"] == zoo
        }
    return zoo, heads


# Saved probe heads carry `auto_map` and this file, so they load with `trust_remote_code=True` without hyperrep_hf.
HyperRepProbeConfig.register_for_auto_class("AutoConfig")
HyperRepProbeModel.register_for_auto_class("AutoModel")
