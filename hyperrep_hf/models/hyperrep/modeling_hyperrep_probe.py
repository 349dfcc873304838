"""Probe heads: each fitted linear probe on z as a small transformers model, and how a model folder holds them.

This file travels to the Hub as remote code (the probe heads' ``auto_map`` and the pipeline import it), so it is
flat and self-contained: only torch, numpy, transformers. Fitting and saving the probes is library code
(:mod:`hyperrep_hf.probing.probe_heads`); this file reads them::

    probes/index.json                       every probe: zoo key, config, source, target, metric, score, path
    probes/<zoo>/<target>/config.json       HyperRepProbeConfig (model_type "hyperrep_probe", auto_map)
    probes/<zoo>/<target>/model.safetensors the Linear
    probes/<zoo>/statistics.json            the zoo's weight-norm distribution and target ranges (predict checks)

``<zoo>`` is the zoo's key: its config name and a short fingerprint of its ``zoo_info.json``
(``tetris_seed-1a2b3c4d``), so two zoos of one config name built differently (another seed, size, folder) keep
their probes side by side. Wherever a zoo is asked for, its key or (when unambiguous) its config name will do.

``HyperRepProbeModel.from_pretrained(model_dir / "probes/<zoo>/<target>")`` loads one (or ``AutoModel`` with
``trust_remote_code=True``); :func:`load_probe_heads` loads every probe of a zoo, from a folder or a Hub repo, and
:func:`load_probe_statistics` the zoo's ``statistics.json`` (read by :mod:`weight_statistics`, which travels too).
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
REPRESENTATIONS = ("z", "z+s(W)", "z+s(W)+shape")
"""Layouts of the hyper-representation a probe head can read (``embeddings.representation_layout``)."""


class ProbesNotFoundError(FileNotFoundError):
    """A model folder without probe heads (``hyperrep evaluate`` has not been run on it)."""


class ProbeIndexError(ValueError):
    """A damaged ``probes/index.json`` or probe head."""


class ProbeMismatchError(ValueError):
    """Probe heads fitted on another representation (layout or size) than the encoder's config gives."""


def _missing_probes_message(model_dir: str | os.PathLike, detail: str) -> str:
    return (
        f"{model_dir} has no probe heads ({detail}). Fit them first with "
        f"`hyperrep evaluate {model_dir} --zoo ZOO_DIR[:CONFIG] --out DIR` "
        "(hyperrep_hf.probing.evaluation.evaluate_model), which saves them under probes/."
    )


class HyperRepProbeConfig(PreTrainedConfig):
    """What a probe head predicts from the hyper-representation z, and how well it did.

    Args:
        target: The zoo column it predicts (``"test_accuracy"``, ``"activation"``, …).
        task: ``"regression"`` (one value) or ``"classification"`` (one logit per label).
        input_dim: Size of the hyper-representation it reads (the encoder's ``latent_dim``, plus the s(W) columns
            for ``"z+s(W)"``).
        representation: The layout of that representation: ``"z"`` (z̄ alone; probes saved before this field
            existed), ``"z+s(W)"`` (z̄ followed by s(W), the encoder's ``append_weight_statistics``) or
            ``"z+s(W)+shape"`` (s(W) and the shape statistics, ``weight_statistics: "s(W)+shape"``). The pipeline
            refuses heads whose layout differs from the encoder config's.
        labels: Class names in logit order (classification only).
        standardization_mean: (input_dim,) train mean of z the probe was fitted with (already folded into the
            Linear; kept so the probe can be reconstructed and audited).
        standardization_std: (input_dim,) train standard deviation of z.
        metric: ``"r2"`` (regression) or ``"accuracy"`` (classification).
        validation_score: The metric on the validation split (the split that chose the regularisation).
        alpha: Ridge α (regression).
        inverse_regularization: Softmax C (classification).
        group_weights: With group-weighted probes (``hyperrep evaluate --group-weights``): the weight chosen on
            validation for each feature group (z̄, then s(W); 0: left out), folded into the Linear like the
            standardisation. None: one α (or C) for every column.
        selection_split: Split the regularisation was chosen on (``"validation"``, or ``"train"`` as a fallback).
        zoo: The zoo (its key, ``<config>-<fingerprint>``) the probe was fitted on.
        hidden_sizes: Widths of the hidden ReLU layers of an MLP head (``hyperrep_hf.probing.probes.MLPProbe``);
            None for the linear head.
        validation_score_by_activation: Activation → the metric on the validation networks of that activation
            (None where undefined), when the zoo mixed activations; the pipeline quotes it for a network of an
            activation the encoder was not trained on.
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
        group_weights: list[float] | None = None,
        selection_split: str = "validation",
        zoo: str | None = None,
        hidden_sizes: list[int] | None = None,
        validation_score_by_activation: dict[str, float | None] | None = None,
        representation: str = "z",
        **kwargs: Any,
    ) -> None:
        if representation not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}.")
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
        self.representation = representation
        self.labels = list(labels) if labels is not None else None
        self.standardization_mean = standardization_mean
        self.standardization_std = standardization_std
        self.metric = metric or ("r2" if task == "regression" else "accuracy")
        self.validation_score = _finite_or_none(validation_score)
        self.alpha = alpha
        self.inverse_regularization = inverse_regularization
        self.group_weights = None if group_weights is None else [float(weight) for weight in group_weights]
        self.selection_split = selection_split
        self.zoo = zoo
        if hidden_sizes is not None and (not hidden_sizes or any(int(size) < 1 for size in hidden_sizes)):
            raise ValueError(f"hidden_sizes must be None or positive integers, got {hidden_sizes!r}.")
        self.hidden_sizes = [int(size) for size in hidden_sizes] if hidden_sizes else None
        if validation_score_by_activation is not None and not isinstance(validation_score_by_activation, dict):
            raise ValueError(
                "validation_score_by_activation must be a dict activation → score, got "
                f"{validation_score_by_activation!r}."
            )
        self.validation_score_by_activation = (
            None
            if validation_score_by_activation is None
            else {str(name): _finite_or_none(score) for name, score in validation_score_by_activation.items()}
        )
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
        probe: Any,
        target: str,
        zoo: str | None = None,
        selection_split: str = "validation",
        representation: str = "z",
    ) -> HyperRepProbeModel:
        """Turns a fitted probe into a head that computes exactly its predictions (up to float32 rounding).

        Args:
            probe: A fitted ``hyperrep_hf.probing.probes.RidgeProbe`` (regression: has ``alpha``), ``SoftmaxProbe``
                (classification: has ``labels``) or ``MLPProbe`` (either: has ``as_layers``).
            target: The target column it was fitted on.
            zoo: The zoo it was fitted on.
            selection_split: Split its regularisation was selected on.
            representation: The layout of the features it was fitted on (``"z"`` or ``"z+s(W)"``).
        """
        if hasattr(probe, "as_layers"):  # an MLP: standardisation folded into the first layer, target scale the last
            layers = probe.as_layers()
            regression, mlp = probe.task == "regression", True
        else:
            layers = [probe.as_linear()]  # standardisation folded in: (num_outputs, input_dim), (num_outputs,)
            regression, mlp = getattr(probe, "labels", None) is None, False
        config = HyperRepProbeConfig(
            target=target,
            task="regression" if regression else "classification",
            input_dim=int(np.asarray(layers[0][0]).shape[1]),
            labels=None if regression else [_json_scalar(label) for label in probe.labels],
            standardization_mean=[float(value) for value in probe.mean],
            standardization_std=[float(value) for value in probe.std],
            validation_score=float(probe.validation_score),
            alpha=probe.alpha if regression and not mlp else None,
            inverse_regularization=None if regression or mlp else probe.inverse_regularization,
            group_weights=getattr(probe, "group_weights", None),
            selection_split=selection_split,
            zoo=zoo,
            hidden_sizes=[int(np.asarray(weight).shape[0]) for weight, _ in layers[:-1]] or None,
            representation=representation,
        )
        model = cls(config)
        with torch.no_grad():
            for module, (weight, bias) in zip([*model.hidden, model.linear], layers, strict=True):
                module.weight.copy_(torch.as_tensor(np.asarray(weight), dtype=torch.float32))
                module.bias.copy_(torch.as_tensor(np.asarray(bias), dtype=torch.float32))
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
    """Local path of a file of a model folder or (downloaded) Hub repo; None when the folder/repo lacks it.

    Raises:
        ProbesNotFoundError: A path that is a file, or neither a folder nor a Hub repo that can be read.
    """
    source = os.fspath(model_dir_or_repo)
    if os.path.isdir(source):
        local = os.path.join(source, filename)
        return local if os.path.isfile(local) else None
    if os.path.exists(source):
        raise ProbesNotFoundError(f"{source} is a file; pass a model folder or a Hub model repo id.")
    from transformers.utils import cached_file

    try:
        return cached_file(
            source,
            filename,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **hub_kwargs,
        )
    except (OSError, ValueError) as error:  # no such repo, no access, an invalid repo id
        raise ProbesNotFoundError(
            f"{source} is not a local folder, and reading it as a Hub model repo failed ({error}). "
            "Pass the folder of a model evaluated with `hyperrep evaluate`, or a Hub repo id you can reach."
        ) from error


def _safe_name(name: str) -> str:
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"{name!r} cannot be a folder name of a probe.")
    return name


def _index_problem(index: Any) -> str | None:
    """What is wrong with a parsed ``probes/index.json``, or None."""
    if not isinstance(index, dict):
        return f"expected a JSON object, found {type(index).__name__}"
    if not isinstance(index.get("probes"), list):
        return "no 'probes' list"
    for position, entry in enumerate(index["probes"]):
        if not isinstance(entry, dict):
            return f"probes[{position}] is not an object"
        missing = [key for key in ("zoo", "target", "path") if not isinstance(entry.get(key), str)]
        if missing:
            return f"probes[{position}] lacks {', '.join(missing)}"
        parts = [part for part in entry["path"].split("/") if part not in ("", ".")]
        absolute = entry["path"].startswith("/") or os.path.isabs(entry["path"])
        if absolute or ".." in parts or parts[:1] != [PROBES_FOLDER]:
            return f"probes[{position}] has path {entry['path']!r} outside {PROBES_FOLDER}/"
    if not isinstance(index.get("format_version", 0), int):
        return f"format_version {index.get('format_version')!r} is not an integer"
    return None


def read_probe_index(model_dir_or_repo: str | os.PathLike, **hub_kwargs: Any) -> dict:
    """``probes/index.json`` of a model folder or Hub repo, checked.

    Args:
        model_dir_or_repo: A model folder or Hub model repo id.
        hub_kwargs: ``revision``, ``token``, ``cache_dir``… passed to the download.

    Raises:
        ProbesNotFoundError: The folder has no ``probes/index.json`` (with the command that creates it).
        ProbeIndexError: The index is not valid JSON or not an index (naming the file and how to repair it).
    """
    index_path = _file_of(model_dir_or_repo, f"{PROBES_FOLDER}/{INDEX_FILE}", **hub_kwargs)
    if index_path is None:
        raise ProbesNotFoundError(_missing_probes_message(model_dir_or_repo, f"no {PROBES_FOLDER}/{INDEX_FILE}"))
    try:
        with open(index_path, encoding="utf-8") as file:
            index = json.load(file)
        problem = _index_problem(index)
    except (ValueError, UnicodeDecodeError) as error:
        problem = f"not valid JSON: {error}"
    if problem:
        raise ProbeIndexError(
            f"{index_path} is damaged ({problem}). Restore it from the Hub or a copy, or fit the probes again with "
            f"`hyperrep evaluate {model_dir_or_repo} --zoo ZOO_DIR[:CONFIG] --out DIR --overwrite`."
        )
    if index.get("format_version", 0) > PROBE_INDEX_FORMAT_VERSION:
        raise ValueError(
            f"{index_path} has format version {index['format_version']}; this code reads up to "
            f"{PROBE_INDEX_FORMAT_VERSION}. Upgrade hyperrep_hf (or pull the repo's newer code)."
        )
    return index


def probe_zoos(index: dict) -> dict[str, dict]:
    """Zoo key → ``{"config", "zoo_source", "zoo_fingerprint"}`` of every zoo in an index, in index order.

    Indexes written before zoo keys existed have the config name as key and no source or fingerprint.
    """
    zoos: dict[str, dict] = {}
    for entry in index["probes"]:
        zoos.setdefault(
            entry["zoo"],
            {
                "config": entry.get("config") or entry["zoo"],
                "zoo_source": entry.get("zoo_source"),
                "zoo_fingerprint": entry.get("zoo_fingerprint"),
            },
        )
    return zoos


def _describe_zoo(key: str, described: dict) -> str:
    details = [f"config {described['config']}"] if described["config"] != key else []
    details += [f"from {described['zoo_source']}"] if described["zoo_source"] else []
    return f"{key} ({', '.join(details)})" if details else key


def resolve_probe_zoo(index: dict, zoo: str | None, model_dir_or_repo: str | os.PathLike = "MODEL") -> str:
    """The key of the zoo whose probes to use: ``zoo`` as a key or a config name; default the index's default.

    Raises:
        ProbesNotFoundError: No probes, none for ``zoo``, or a config name that several zoos share (listing them).
    """
    zoos = probe_zoos(index)
    if not zoos:
        raise ProbesNotFoundError(_missing_probes_message(model_dir_or_repo, f"{PROBES_FOLDER}/{INDEX_FILE} is empty"))
    if zoo is None:
        default = index.get("default_zoo")
        return default if default in zoos else next(iter(zoos))
    if zoo in zoos:
        return zoo
    matches = [key for key, described in zoos.items() if described["config"] == zoo]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(_describe_zoo(key, described) for key, described in zoos.items())
    if matches:
        raise ProbesNotFoundError(
            f"{model_dir_or_repo} has probes for {len(matches)} zoos of config {zoo!r}: {listing}. "
            "Name one by its key."
        )
    raise ProbesNotFoundError(
        f"{model_dir_or_repo} has no probes for zoo {zoo!r} (it has probes for: {listing}). "
        f"Run `hyperrep evaluate {model_dir_or_repo} --zoo ZOO_DIR:{zoo} --out DIR` to fit them."
    )


def load_probe_heads(
    model_dir_or_repo: str | os.PathLike, zoo: str | None = None, **hub_kwargs: Any
) -> tuple[str, dict[str, HyperRepProbeModel]]:
    """Loads the probe heads of one zoo, in index order, in eval mode.

    Args:
        model_dir_or_repo: A model folder or a Hub model repo id.
        zoo: Which zoo's probes: a zoo key (``tetris_seed-1a2b3c4d``) or a config name that only one zoo of the
            index has; default the index's ``default_zoo`` (the last one evaluated).
        hub_kwargs: ``revision``, ``token``, ``cache_dir``… passed to the downloads.

    Returns:
        (zoo key, target → ``HyperRepProbeModel``).

    Raises:
        ProbesNotFoundError: No probes at all, or none for ``zoo`` (naming the zoos that have some).
        ProbeIndexError: A damaged index or probe head (naming the file).
    """
    index = read_probe_index(model_dir_or_repo, **hub_kwargs)
    zoo = resolve_probe_zoo(index, zoo, model_dir_or_repo)
    source = os.fspath(model_dir_or_repo)
    heads = {}
    with quiet_progress():
        for entry in index["probes"]:
            if entry["zoo"] != zoo:
                continue
            try:
                heads[entry["target"]] = HyperRepProbeModel.from_pretrained(
                    source, subfolder=entry["path"], **hub_kwargs
                ).eval()
            except Exception as error:  # transformers raises OSError, safetensors its own error, configs ValueError
                raise ProbeIndexError(
                    f"Probe head {os.path.join(source, entry['path'])} (zoo {zoo}, target {entry['target']}) cannot "
                    f"be loaded ({type(error).__name__}: {error}). Fit the probes again with `hyperrep evaluate "
                    f"{model_dir_or_repo} --zoo ZOO_DIR[:CONFIG] --out DIR --overwrite`."
                ) from None
    return zoo, heads


def load_probe_statistics(model_dir_or_repo: str | os.PathLike, zoo: str, **hub_kwargs: Any) -> dict | None:
    """The ``statistics.json`` saved with a zoo's probes (key ``zoo``), or None for probes saved without one.

    Raises:
        ValueError: A damaged ``statistics.json`` (naming it and the command that rewrites it).
    """
    from .weight_statistics import STATISTICS_FILE, read_statistics

    path = _file_of(model_dir_or_repo, f"{PROBES_FOLDER}/{_safe_name(zoo)}/{STATISTICS_FILE}", **hub_kwargs)
    return read_statistics(path) if path is not None else None


# Saved probe heads carry `auto_map` and this file, so they load with `trust_remote_code=True` without hyperrep_hf.
HyperRepProbeConfig.register_for_auto_class("AutoConfig")
HyperRepProbeModel.register_for_auto_class("AutoModel")
