"""Self-supervised training of hyper-representations on a zoo, with Accelerate (CPU, one GPU or DDP).

``accelerate launch training/train.py CONFIG.yaml [--field value ...]`` and ``hyperrep train`` both call
:func:`main`. One flat, typed :class:`TrainConfig` holds every setting; a YAML preset fills it and ``--field value``
overrides any field (unknown keys are an error naming them).

What one epoch does::

    zoo train split (rows, num_parameters), in memory ──► seeded shuffle (seed, epoch) ──► global batches
        └─► this process's slice ─► normalise ─► two augmented views (permutation, noise, erasing) ─► tokens
            └─► HyperRepForPreTraining(view 1 → reconstruct clean tokens, contrast with view 2) ─► AdamW step
    validation split, clean ──► encoder + decoder ──► R² in weight space (paper §4), embeddings
        └─► ridge probe: train-split embeddings → ``probe_target`` (test accuracy) → R² on validation

The run folder::

    train_config.json  metrics.jsonl (one JSON object per epoch, then one "final" line with test scores)
    config.json  model.safetensors  preprocessor_config.json  [remote code]   the final model (AutoModel loads
                                                                               the encoder, AutoFeatureExtractor
                                                                               the processor)
    checkpoints/<step>/pretrained_model/   model + processor (``from_pretrained``)
    checkpoints/<step>/training_state/     ``Accelerator.save_state``: model, optimizer, scheduler, RNG
    checkpoints/<step>/trainer_state.json  epoch and step; checkpoints/<step>/train_config.json
    checkpoints/last                       a text file holding the newest complete step folder's name

Resuming is exact: every source of randomness of an epoch (data order, augmentations, dropout) is seeded from
(seed, epoch, process), and checkpoints are taken at epoch ends, so ``--resume`` continues a killed run as if it
had never stopped, losing only the epochs since the last checkpoint. A checkpoint is written under a temporary
name and renamed when complete; ``last`` is replaced atomically after that.

Distributed runs: ``batch_size`` is the global batch; each of the N processes takes ``batch_size // N`` rows of
every global batch (the contrastive negatives are those of the local slice). Metrics are gathered with
``gather_for_metrics``, so they do not depend on the number of processes.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import math
import os
import shutil
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import yaml
from transformers import HfArgumentParser

from ..atomic import remove_path, replace_path, temporary_sibling, write_json_atomic, write_text_atomic
from ..models.hyperrep.augmentations import augment_with_target, make_augmentations, split_augmentations
from ..models.hyperrep.configuration_hyperrep import (
    FUNCTION_INPUTS,
    FUNCTION_TARGETS,
    LOSS_TYPES,
    TOKEN_LAYOUTS,
    VARIANTS,
    HyperRepConfig,
)
from ..models.hyperrep.modeling_hyperrep import HyperRepForPreTraining
from ..models.hyperrep.processing_hyperrep import NeuronTokenProcessor

# Fields that may differ between a run and its resumption (they do not change the trajectory).
# Fields renamed since a release: an old preset or run folder gets told what to write instead.
RENAMED_FIELDS = {"linear_map_weight": "function_weight (with function_target: linear_map)"}
RESUMABLE_CHANGES = {"resume", "overwrite", "num_threads", "progress", "report_to", "zoo", "output_dir"}
MODEL_INPUTS = ("input_tokens", "attention_mask", "position_ids", "labels")
SUMMARY_FIELDS = (
    ("train/loss", "loss"),
    ("train/reconstruction_loss", "rec"),
    ("train/contrastive_loss", "con"),
    ("train/function_loss", "fn"),
    ("validation/reconstruction_r2", "val R²"),
    ("test/reconstruction_r2", "test R²"),
    ("validation/probe_r2_{target}", "val probe R²"),
    ("test/probe_r2_{target}", "test probe R²"),
    ("train/samples_per_second", "samples/s"),
)
VIEW2_INPUTS = ("input_tokens_view2", "attention_mask_view2", "position_ids_view2")


@dataclass
class TrainConfig:
    """Every setting of a training run: one flat record, filled from a YAML preset and ``--field value`` overrides.

    Each field's ``help`` says what it means (``python training/train.py --help`` prints them with the defaults);
    :func:`parse_args` and :func:`make_train_config` read the values, ``__post_init__`` checks their ranges.
    """

    # Data
    zoo: str = field(default="", metadata={"help": "DIR[:CONFIG] or a Hub dataset id ORG/NAME[:CONFIG] (required)."})
    output_dir: str = field(default="", metadata={"help": "The run folder (required)."})
    extra_zoos: list[str] | None = field(
        default=None,
        metadata={
            "help": "More zoos of the same architecture (DIR[:CONFIG] or ORG/NAME[:CONFIG]) whose train splits "
            "are added to the rows the encoder trains on (no labels are read). Rows equal to a validation or test "
            "row of the zoo are left out. Validation, the quick probe and the probe heads read the zoo alone."
        },
    )
    epochs_to_use: list[int] | None = field(
        default=None,
        metadata={
            "help": "Train only on rows of these zoo epochs (none: all); validation and test always use every row."
        },
    )
    probe_target: str = field(
        default="test_accuracy", metadata={"help": "Zoo column the quick validation probe predicts."}
    )
    processor: str | None = field(
        default=None, metadata={"help": "A saved processor folder to reuse (its architecture must match the zoo's)."}
    )
    token_layout: Literal[TOKEN_LAYOUTS] = field(
        default="per_layer",
        metadata={
            "help": "per_layer (a token per neuron, AttN), padded (neuron rows in chunks of token_dim), weight (AttW)."
        },
    )
    token_dim: int | None = field(
        default=None, metadata={"help": "Token width of the padded layout (derived for the others)."}
    )
    normalize: bool = field(
        default=True, metadata={"help": "Standardise each layer's weights with training-split statistics."}
    )
    # Model (HyperRepConfig)
    variant: Literal[VARIANTS] = field(
        default="attn_t",
        metadata={
            "help": "attn_t / attw_t: neuron / weight tokens + compression token; attn / attw: the sequence "
            "compressed linearly; ffn: fully connected baseline."
        },
    )
    num_hidden_layers: int = field(
        default=2, metadata={"help": "Transformer blocks of the encoder, and again of the decoder."}
    )
    d_model: int = field(default=256, metadata={"help": "Width of the transformer."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads; must divide d_model."})
    intermediate_size: int = field(
        default=512, metadata={"help": "Hidden width of each block's feed-forward network."}
    )
    latent_dim: int = field(
        default=50,
        metadata={"help": "Size of z (at most the networks' size, unless function_weight > 0)."},
    )
    dropout: float = field(
        default=0.1, metadata={"help": "Dropout probability in the transformer blocks and embeddings."}
    )
    projection_layers: int = field(
        default=3, metadata={"help": "Linear + BatchNorm + ReLU blocks of the projection head."}
    )
    projection_dim: int = field(default=20, metadata={"help": "Output size of the projection head."})
    loss_type: Literal[LOSS_TYPES] = field(
        default="ecd",
        metadata={
            "help": "ed: reconstruction; ec: NT-Xent contrast; ecd: beta·MSE + (1−beta)·NT-Xent; ec+d: beta·MSE + "
            "(1−beta)·the paper's positive-pair term."
        },
    )
    beta: float = field(
        default=0.5, metadata={"help": "Weight of the reconstruction term of ecd and ec+d, in [0, 1]."}
    )
    function_weight: float = field(
        default=0.0,
        metadata={
            "help": "γ of an auxiliary self-supervised term added to any loss type: a linear head on z predicts what "
            "each network computes (function_target), standardised over the training rows; 0: off. No data and no "
            "label is read: it is computed from the weights."
        },
    )
    function_target: Literal[FUNCTION_TARGETS] = field(
        default="probe_outputs",
        metadata={
            "help": "What the function term predicts: probe_outputs (the √ of the network's softmax outputs on 256 "
            "fixed random N(0, 1) inputs under each of the zoo's activations) or linear_map (input → logits with the "
            "activations made the identity; W₂W₁ for TETRIS).",
        },
    )
    function_inputs: Literal[FUNCTION_INPUTS] = field(
        default="normal",
        metadata={
            "help": "The prior of probe_outputs' fixed inputs: normal (N(0, 1)), uniform (U(0, 1)) or bernoulli (each "
            "input value 0 or 1, p 0.5). No data either way. Only with function_target: probe_outputs.",
        },
    )
    temperature: float = field(default=0.1, metadata={"help": "Softmax temperature of the contrastive terms."})
    reference_losses: bool = field(
        default=False, metadata={"help": "The reference code's losses instead of the paper's."}
    )
    # Augmentations
    permute: bool = field(default=True, metadata={"help": "Neuron-permutation augmentation."})
    num_permutations: int = field(
        default=1000, metadata={"help": "Permutations precomputed when there are too many to list."}
    )
    sign_flip: bool = field(
        default=False,
        metadata={
            "help": "Sign flips of hidden neurons before an odd activation (tanh), function-preserving like "
            "permutations; needs a zoo whose networks share one odd activation."
        },
    )
    canonical: bool = field(
        default=False,
        metadata={
            "help": "Train and embed on the canonical form of each network (neuron order and, before an odd "
            "activation, signs fixed: NeuronTokenProcessor.canonical_views): z is exactly invariant to the "
            "symmetries at about one encoder row per network (blended at near-ties). Turn permute/sign_flip off."
        },
    )
    canonical_embedding: bool = field(
        default=False,
        metadata={
            "help": "Train on the configured views of the raw weights (permute, sign_flip, erasing, ...), but save "
            "a processor set to the canonical form (NeuronTokenProcessor.set_canonical with the zoo's activation): "
            "the saved model embeds each network once, exactly invariant to neuron permutations and (before an "
            "odd activation) sign flips. Training, the quick probe and checkpoints' training state are unchanged; "
            "the processor saved with the model and in each checkpoint's pretrained_model is the canonical one. "
            "Refused with embedding_symmetry_samples > 1 (the canonical form replaces the average) and with "
            "canonical (which already trains and embeds on the canonical form)."
        },
    )
    embedding_symmetry_samples: int = field(
        default=1,
        metadata={
            "help": "K of the saved model: its hyper-representation is z averaged over each network and K − 1 "
            "symmetric copies of it. The per-epoch quick probe uses plain z."
        },
    )
    append_weight_statistics: bool = field(
        default=False,
        metadata={
            "help": "The saved model's hyper-representation is z̄ followed by s(W), the per-layer weight statistics "
            "of the raw weights (the s(W) baseline's features): probes, evaluation and the pipeline read both. "
            "Training is unchanged (the per-epoch quick probe uses plain z); a trained model can be switched "
            "later with `hyperrep evaluate ... --append-weight-statistics`."
        },
    )
    weight_statistics: str = field(
        default="s(W)",
        metadata={
            "help": "What append_weight_statistics appends: s(W), or s(W)+shape (s(W), then each layer's "
            "kurtosis, mean |w − m| / σ, ln σ, share of positive weights and max |w| / σ: the shape of its "
            "distribution, free of its scale). No effect on training."
        },
    )
    erasing_probability: float = field(
        default=0.5, metadata={"help": "Chance of erasing a random block of a view (0: never)."}
    )
    erasing_scale: list[float] = field(
        default_factory=lambda: [0.03, 0.3], metadata={"help": "LOW HIGH: relative length of the erased block."}
    )
    additive_noise_std: float = field(
        default=0.0, metadata={"help": "Scale of additive Gaussian noise on a view (0: none)."}
    )
    multiplicative_noise_std: float = field(
        default=0.0, metadata={"help": "Scale of multiplicative Gaussian noise (0: none)."}
    )
    # Optimisation
    epochs: int = field(default=100, metadata={"help": "Passes over the training split."})
    batch_size: int = field(
        default=500,
        metadata={"help": "Global batch over all processes (drop_last; clamped to a tiny training split)."},
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of AdamW."})
    weight_decay: float = field(default=1e-9, metadata={"help": "Weight decay of AdamW."})
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata={"help": "BETA1 BETA2 of AdamW."})
    lr_schedule: Literal["cosine", "linear", "constant"] = field(
        default="cosine",
        metadata={"help": "After the warm-up: cosine or linear decay to min_learning_rate_ratio, or constant."},
    )
    warmup_epochs: float = field(
        default=1.0, metadata={"help": "Linear warm-up from 0, in epochs (may be fractional)."}
    )
    min_learning_rate_ratio: float = field(
        default=0.0, metadata={"help": "The decay ends at this fraction of learning_rate."}
    )
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "Gradient clipping (none: no clipping)."})
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = field(
        default="auto", metadata={"help": "auto: bf16 on a CUDA device that supports it, else full precision."}
    )
    seed: int = field(
        default=0, metadata={"help": "Seeds initialisation, data order, augmentations, dropout, probe subsample."}
    )
    # Evaluation, checkpoints, the run
    eval_every: int = field(default=1, metadata={"help": "Evaluate every this many epochs (and after the last)."})
    eval_batch_size: int = field(default=2000, metadata={"help": "Rows per evaluation batch and process."})
    probe_train_rows: int | None = field(
        default=5000, metadata={"help": "Training rows (a seeded subsample) the quick probe is fitted on (none: all)."}
    )
    checkpoint_every: int = field(
        default=1, metadata={"help": "Checkpoint every this many epochs (0: never; the final model is always saved)."}
    )
    keep_checkpoints: int = field(
        default=2, metadata={"help": "Keep at most this many checkpoints (the newest; and the best, see below)."}
    )
    load_best_model_at_end: bool = field(
        default=False,
        metadata={
            "help": "Save the model of the checkpoint (or the last epoch) that scored best on metric_for_best_model, "
            "not the last epoch's; that checkpoint is never rotated away. Needs checkpoint_every to be a multiple of "
            "eval_every."
        },
    )
    metric_for_best_model: Literal["reconstruction_r2", "probe_r2"] = field(
        default="reconstruction_r2",
        metadata={
            "help": "Validation score (higher is better) that picks the best model: the reconstruction R² "
            "(self-supervised) or the quick probe's R² on probe_target."
        },
    )
    resume: bool = field(
        default=False, metadata={"help": "Continue from output_dir/checkpoints/last (afresh when none)."}
    )
    overwrite: bool = field(
        default=False, metadata={"help": "Delete an existing run in output_dir instead of refusing."}
    )
    num_threads: int | None = field(
        default=None, metadata={"help": "Torch threads per process on CPU (none: CPU cores / local processes)."}
    )
    report_to: Literal["none", "tensorboard"] = field(
        default="none", metadata={"help": "A tracker besides metrics.jsonl (always written)."}
    )
    progress: bool = field(
        default=True, metadata={"help": "A progress bar and one summary line per epoch (main process)."}
    )

    def __post_init__(self) -> None:
        problems = [
            f"{name}={getattr(self, name)!r} (expected one of {allowed})"
            for name, allowed in CHOICES.items()
            if getattr(self, name) not in allowed
        ]
        for name in ("zoo", "output_dir"):
            if not getattr(self, name):
                problems.append(f"{name} is required (--{name.replace('_', '-')} ...)")
        positive = ("epochs", "batch_size", "eval_every", "eval_batch_size", "keep_checkpoints", "num_permutations")
        for name in (*positive, "probe_train_rows", "num_threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name}={value!r} (expected a positive integer)")
        for name in ("learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                problems.append(f"{name}={getattr(self, name)!r} (expected > 0)")
        for name in ("weight_decay", "warmup_epochs", "checkpoint_every", "additive_noise_std"):
            if getattr(self, name) < 0:
                problems.append(f"{name}={getattr(self, name)!r} (expected >= 0)")
        if self.multiplicative_noise_std < 0:
            problems.append(f"multiplicative_noise_std={self.multiplicative_noise_std!r} (expected >= 0)")
        if not 0 <= self.function_weight < math.inf:
            problems.append(f"function_weight={self.function_weight!r} (expected a finite weight >= 0; 0: off)")
        if self.function_target not in FUNCTION_TARGETS:
            problems.append(f"function_target={self.function_target!r} (expected one of {list(FUNCTION_TARGETS)})")
        if self.function_inputs not in FUNCTION_INPUTS:
            problems.append(f"function_inputs={self.function_inputs!r} (expected one of {list(FUNCTION_INPUTS)})")
        elif self.function_inputs != "normal" and self.function_target != "probe_outputs":
            problems.append(
                f"function_inputs={self.function_inputs!r} with function_target={self.function_target!r} (only "
                "probe_outputs runs the networks on inputs; leave function_inputs at normal)"
            )
        if not 0 <= self.min_learning_rate_ratio <= 1:
            problems.append(f"min_learning_rate_ratio={self.min_learning_rate_ratio!r} (expected in [0, 1])")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            problems.append(f"max_grad_norm={self.max_grad_norm!r} (expected > 0, or null for no clipping)")
        if len(self.erasing_scale) != 2 or not 0 <= self.erasing_scale[0] <= self.erasing_scale[1] <= 1:
            problems.append(f"erasing_scale={self.erasing_scale!r} (expected [low, high] with 0 <= low <= high <= 1)")
        if len(self.adam_betas) != 2 or not all(0 <= beta < 1 for beta in self.adam_betas):
            problems.append(f"adam_betas={self.adam_betas!r} (expected two values in [0, 1))")
        if self.canonical_embedding and self.embedding_symmetry_samples > 1:
            problems.append(
                f"canonical_embedding=True with embedding_symmetry_samples={self.embedding_symmetry_samples} "
                "(the canonical form embeds each network once, exactly invariant: set embedding_symmetry_samples "
                "to 1, or canonical_embedding to false for the symmetry average)"
            )
        if self.canonical_embedding and self.canonical:
            problems.append(
                "canonical_embedding=True with canonical=True (canonical already trains and embeds on the canonical "
                "form: drop canonical_embedding, or set canonical to false to train on augmented raw weights)"
            )
        if self.load_best_model_at_end and (not self.checkpoint_every or self.checkpoint_every % self.eval_every):
            problems.append(
                f"load_best_model_at_end=True with checkpoint_every={self.checkpoint_every} and eval_every="
                f"{self.eval_every} (the best model is picked among evaluated checkpoints: make checkpoint_every a "
                "positive multiple of eval_every)"
            )
        if problems:
            raise ValueError("Invalid training config: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain JSON-able values (``train_config.json``)."""
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------------------------
# Config: YAML preset + command-line overrides, through transformers' HfArgumentParser
# ---------------------------------------------------------------------------------------------------------------


def _without_none(hint: Any) -> Any:
    """``X | None`` → ``X``; any other type hint unchanged."""
    options = typing.get_args(hint)
    return next(option for option in options if option is not type(None)) if type(None) in options else hint


HINTS = typing.get_type_hints(TrainConfig)
CHOICES = {name: typing.get_args(hint) for name, hint in HINTS.items() if typing.get_origin(hint) is Literal}
OPTIONAL_FIELDS = {name for name, hint in HINTS.items() if _without_none(hint) is not hint}
LIST_FIELDS = {name for name, hint in HINTS.items() if typing.get_origin(_without_none(hint)) is list}
USAGE = "hyperrep train | accelerate launch training/train.py  [CONFIG.yaml] [--field value ...]"
EPILOG = (
    "CONFIG.yaml: a preset (training/configs/; `hyperrep train` also takes its name, e.g. tetris_seed); its values "
    "replace the defaults above, and options after it replace its values. A list takes its values separated by "
    "spaces (--epochs-to-use 0 25 50); `none` clears a field that may be empty; a boolean field alone is true "
    "(--resume)."
)


def _none_or(convert):
    """An argparse ``type`` that also reads ``none`` / ``null`` (HfArgumentParser drops the None of ``X | None``)."""

    def read(text: str):
        return None if text.lower() in ("none", "null") else convert(text)

    read.__name__ = getattr(convert, "__name__", "value")  # argparse names it in "invalid <name> value"
    return read


class TrainConfigParser(HfArgumentParser):
    """The :class:`TrainConfig` parser: transformers' typed parser with each field's help, two changes.

    A bad value raises a ``ValueError`` naming the option (argparse would exit the process), and fields that may be
    empty read ``none``. Prefixes of option names are not accepted (``--epoch`` is not ``--epochs``).
    """

    def __init__(self) -> None:
        description = __doc__.split("\n\n")[0]
        super().__init__(TrainConfig, usage=USAGE, description=description, epilog=EPILOG, allow_abbrev=False)

    def add_argument(self, *names, **kwargs):  # noqa: D102 (argparse's)
        kind = kwargs.get("type")
        if kwargs.get("action") == "store_false":  # the --no-FIELD twin of a boolean field that defaults to true
            kwargs.update(help=f"Sets {kwargs['dest']} to false.", default=argparse.SUPPRESS)  # no "(default: …)"
        elif kind is not None and "choices" not in kwargs:
            kwargs.setdefault("metavar", "BOOL" if kwargs.get("const") is True else kind.__name__.upper())
        if names and names[0].removeprefix("--") in OPTIONAL_FIELDS and kind is not None:
            kwargs["type"] = _none_or(kind)
        return super().add_argument(*names, **kwargs)

    def error(self, message: str):  # noqa: D102 (argparse's)
        raise ValueError(message)

    def read(self, tokens: list[str], source: str, namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """Parses ``--field value`` tokens on top of ``namespace``; an error names ``source`` and the field."""
        try:
            namespace, unknown = self.parse_known_args(tokens, namespace)
        except ValueError as error:
            raise ValueError(f"Training config ({source}): {str(error).rstrip('.')}.") from None
        names = [token[2:].partition("=")[0].replace("-", "_") for token in unknown if token.startswith("--")]
        if names:
            raise ValueError(_unknown_keys(sorted(names), f"on the {source}"))
        if unknown:
            raise ValueError(f"Unexpected argument {unknown[0]!r} on the {source}: expected --field value.")
        return namespace


def _unknown_keys(names: list[str], where: str) -> str:
    renamed = [f"{name} is now {RENAMED_FIELDS[name]}" for name in names if name in RENAMED_FIELDS]
    return f"Unknown training config keys {where}: {', '.join(names)}." + "".join(f" {text}." for text in renamed)


def _mapping_to_tokens(mapping: dict[str, Any], source: str) -> list[str]:
    """A preset or override mapping as the command-line tokens that say the same, so one typed parser reads both.

    Not ``HfArgumentParser.parse_dict`` / ``parse_yaml_file``: they pass values through unconverted and unchecked.
    """
    unknown = sorted(set(mapping) - set(HINTS))
    if unknown:
        raise ValueError(_unknown_keys(unknown, f"in the {source}"))
    tokens = []
    for name, value in mapping.items():
        if value is None and name not in OPTIONAL_FIELDS:
            raise ValueError(f"Training config ({source}): {name} may not be null.")
        if isinstance(value, list | tuple) and name not in LIST_FIELDS:
            raise ValueError(f"Training config ({source}): {name} takes one value, not the list {value!r}.")
        values = value if isinstance(value, list | tuple) else [value]
        texts = [
            "none" if item is None else str(item).lower() if isinstance(item, bool) else str(item) for item in values
        ]
        tokens += [f"--{name}", *texts] if name in LIST_FIELDS else [f"--{name}={texts[0]}"]
    return tokens


def _to_config(namespace: argparse.Namespace) -> TrainConfig:
    """The parsed options as a validated :class:`TrainConfig`."""
    values = vars(namespace)
    for name in LIST_FIELDS & OPTIONAL_FIELDS:  # `--epochs-to-use none` reads as [None]
        if values[name] is not None and None in values[name]:
            if len(values[name]) > 1:
                raise ValueError(f"Training config: {name}={values[name]} mixes none with values.")
            values[name] = None
    return TrainConfig(**values)


def make_train_config(preset: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A validated :class:`TrainConfig` from a preset mapping and overrides (later wins).

    Raises:
        ValueError: naming every unknown key, or a field whose value cannot be read or is out of range.
    """
    parser = TrainConfigParser()
    namespace = parser.read(_mapping_to_tokens(preset or {}, "config file"), "config file")
    namespace = parser.read(_mapping_to_tokens(overrides or {}, "overrides"), "overrides", namespace)
    return _to_config(namespace)


def read_preset(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML preset file as a mapping of field: value (not yet checked)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Training config {path} does not exist.")
    try:
        preset = yaml.safe_load(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(
            f"Training config {path} is not valid YAML ({' '.join(str(error).split())}); fix it."
        ) from None
    if not isinstance(preset, dict):
        raise ValueError(f"Training config {path} must be a YAML mapping of field: value.")
    return preset


def parse_args(argv: list[str]) -> TrainConfig:
    """``[CONFIG.yaml] [--field value ...]`` → :class:`TrainConfig` (the options are in ``--help``).

    Field names take ``-`` or ``_`` (``--output-dir`` = ``--output_dir``); a boolean field given without a value
    is true (``--resume``); a list takes its values separated by spaces (``--epochs-to-use 0 25 50``).
    """
    arguments = list(argv)
    parser, namespace = TrainConfigParser(), None
    if arguments and not arguments[0].startswith("-"):
        path = arguments.pop(0)
        source = f"config file {path}"
        namespace = parser.read(_mapping_to_tokens(read_preset(path), source), source)
    return _to_config(parser.read(arguments, "command line", namespace))


# ---------------------------------------------------------------------------------------------------------------
# Data and model
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class ZooTensors:
    """A zoo in memory: flat weights and probe targets of each split, and its processor.

    Attributes:
        vectors: split → (rows, num_parameters) float32, raw (un-normalised) weights.
        targets: split → (rows,) float64 values of ``probe_target`` (NaN where missing).
        processor: The processor (normalisation fitted on the training split when configured).
        zoo_info: The zoo's ``zoo_info.json`` (with ``extra_zoos``, its activations are those of every zoo).
        extra_train: (rows, num_parameters) raw training rows of the ``extra_zoos`` (None without them).
        extra_counts: extra zoo → {"rows": rows kept, "dropped": rows equal to a validation or test row of the zoo}.
    """

    vectors: dict[str, torch.Tensor]
    targets: dict[str, np.ndarray]
    processor: NeuronTokenProcessor
    zoo_info: dict
    extra_train: torch.Tensor | None = None
    extra_counts: dict[str, dict[str, int]] = field(default_factory=dict)

    @functools.cached_property
    def training_vectors(self) -> torch.Tensor:
        """The rows the encoder trains on: the zoo's train split, then the extra zoos' train rows (joined once)."""
        if self.extra_train is None:
            return self.vectors["train"]
        return torch.cat([self.vectors["train"], self.extra_train])


def check_processor_matches(processor: NeuronTokenProcessor, architecture: dict) -> None:
    """Raises a ValueError naming the parameters on which a processor and a zoo's architecture disagree."""
    ours = {p["name"]: list(p["shape"]) for p in processor.architecture["parameters"]}
    theirs = {p["name"]: list(p["shape"]) for p in architecture["parameters"]}
    problems = [
        f"{name}: processor {ours.get(name)} vs zoo {theirs.get(name)}"
        for name in dict.fromkeys([*ours, *theirs])
        if ours.get(name) != theirs.get(name)
    ]
    if problems:
        raise ValueError(
            f"processor: its architecture ({processor.architecture.get('name')}) does not match the zoo's "
            f"({architecture.get('name')}): " + "; ".join(problems) + "."
        )


def load_zoo_tensors(config: TrainConfig) -> ZooTensors:
    """Reads the zoo (folder or Hub), keeps ``epochs_to_use`` of train, makes (or loads and checks) the processor."""
    from ..zoo.folder import load_zoo, parse_zoo_argument

    path, zoo_config = parse_zoo_argument(config.zoo)
    dataset, zoo_info = load_zoo(path, zoo_config)
    if config.processor is not None:
        processor = NeuronTokenProcessor.from_pretrained(config.processor)
        check_processor_matches(processor, zoo_info["architecture"])
    else:
        processor = NeuronTokenProcessor(zoo_info["architecture"], config.token_layout, config.token_dim)
    vectors, targets = {}, {}
    for split in ("train", "validation", "test"):
        if split not in dataset:
            raise ValueError(f"zoo: {config.zoo} has no {split!r} split (splits: {sorted(dataset)}).")
        rows = dataset[split]
        if config.probe_target not in rows.column_names:
            raise ValueError(f"probe_target={config.probe_target!r} is not a zoo column ({rows.column_names}).")
        if split == "train":
            rows = rows_of_epochs(rows, config.epochs_to_use)
        if len(rows) == 0:
            raise ValueError(f"epochs_to_use={config.epochs_to_use} leaves no rows in the {split} split.")
        vectors[split] = processor.networks_to_vectors(rows.with_format("torch")["weights"][:])
        targets[split] = np.array([np.nan if v is None else v for v in rows[config.probe_target]], dtype=np.float64)
    extra_train, extra_counts = None, {}
    if config.extra_zoos:
        extra_train, extra_counts, activations = load_extra_training_rows(config, processor, vectors, zoo_info)
        zoo_info = {**zoo_info, "hyperparameters": {**zoo_info.get("hyperparameters", {}), "activation": activations}}
    if config.canonical:
        # The canonical form acts on raw weights (before normalisation, which it would not commute with); training
        # and the quick probe see the hard form, embeddings the blended views (embeddings.embed_vectors).
        processor.set_canonical(zoo_activation(zoo_info, required=False))
        vectors = {split: processor.canonicalize(values) for split, values in vectors.items()}
        extra_train = None if extra_train is None else processor.canonicalize(extra_train)
    data = ZooTensors(vectors, targets, processor, zoo_info, extra_train, extra_counts)
    if config.processor is None and config.normalize:
        processor.fit_normalization(data.training_vectors)  # the rows the encoder sees
    return data


def rows_of_epochs(rows, epochs: list[int] | None):
    """A split's rows of these zoo epochs (all of them when ``epochs`` is None)."""
    if epochs is None:
        return rows
    keep = set(epochs)
    return rows.select([i for i, epoch in enumerate(rows["epoch"]) if epoch in keep])


def load_extra_training_rows(
    config: TrainConfig, processor: NeuronTokenProcessor, vectors: dict[str, torch.Tensor], zoo_info: dict
) -> tuple[torch.Tensor, dict[str, dict[str, int]], list[str]]:
    """The train rows of ``config.extra_zoos`` (raw), their counts, and the activations of every zoo.

    Each extra zoo must have the zoo's architecture (a ValueError names the parameters that differ) and be another
    zoo (the same fingerprint is refused). Rows identical to a validation or test row of the zoo are dropped: zoos
    built from overlapping grids and seeds (MNIST-HYP-1-FIX and -5-FIX) hold the same networks, and the encoder must
    not train on the networks it is evaluated on.
    """
    from ..zoo.folder import load_zoo, parse_zoo_argument

    held_out = {row.numpy().tobytes() for split in ("validation", "test") for row in vectors[split]}
    seen = {zoo_info.get("fingerprint")}
    activations = list(zoo_info.get("hyperparameters", {}).get("activation", []))
    rows, counts = [], {}
    for name in config.extra_zoos:
        path, zoo_config = parse_zoo_argument(name)
        try:
            dataset, info = load_zoo(path, zoo_config)
        except FileNotFoundError as error:  # the message says how to build it; training without it is the other way
            raise FileNotFoundError(f"extra_zoos: {error} Or train on the zoo alone: --extra-zoos none.") from None
        if info.get("fingerprint") in seen:
            raise ValueError(
                f"extra_zoos: {name} is the zoo (or an extra zoo) already named: its rows would count twice. "
                "Name each zoo once."
            )
        seen.add(info.get("fingerprint"))
        try:
            check_processor_matches(processor, info["architecture"])
        except ValueError as error:
            problem = f"extra_zoos: {name}: {error} Extra zoos must hold networks of the zoo's architecture."
            raise ValueError(problem) from None
        if "train" not in dataset:
            raise ValueError(f"extra_zoos: {name} has no 'train' split (splits: {sorted(dataset)}).")
        split = rows_of_epochs(dataset["train"], config.epochs_to_use)
        extra = processor.networks_to_vectors(split.with_format("torch")["weights"][:])
        fresh = torch.tensor([row.numpy().tobytes() not in held_out for row in extra], dtype=torch.bool)
        counts[name] = {"rows": int(fresh.sum()), "dropped": int((~fresh).sum())}
        rows.append(extra[fresh])
        activations += info.get("hyperparameters", {}).get("activation", [])
    return torch.cat(rows), counts, list(dict.fromkeys(activations))


def zoo_activation(zoo_info: dict, required: bool = True) -> str | None:
    """The one activation of a zoo's networks.

    With several or none: a ValueError when ``required`` (sign flips need it), else None.
    """
    activations = zoo_info.get("hyperparameters", {}).get("activation", [])
    if len(activations) == 1:
        return activations[0]
    if required:
        raise ValueError(
            f"sign_flip: needs a zoo whose networks share one odd activation; this zoo has {activations or 'none'}. "
            "Set --sign-flip false: permutations (or --canonical true) still apply to every network; signs are "
            "left alone in a mixed-activation zoo (docs/model.md, mixed activations)."
        )
    return None


def make_model_config(
    config: TrainConfig,
    processor: NeuronTokenProcessor,
    zoo_info: dict | None = None,
    function_dim: int | None = None,
) -> HyperRepConfig:
    """The model config of a run; an impossible combination fails here, before training, naming the fields.

    It records the symmetries the encoder trains on (and the zoo's activation), which the hyper-representation
    averages over (``embedding_symmetry_samples``).
    """
    model_fields = ("variant", "num_hidden_layers", "d_model", "num_attention_heads", "intermediate_size")
    model_fields += ("latent_dim", "dropout", "projection_layers", "projection_dim", "loss_type", "beta")
    model_fields += ("temperature", "reference_losses", "embedding_symmetry_samples", "append_weight_statistics")
    model_fields += ("function_weight", "function_target", "function_inputs")
    model_fields += ("weight_statistics",)
    symmetries = ["permutation"] * config.permute + ["sign_flip"] * config.sign_flip
    activation = zoo_activation(zoo_info or {}, required=config.sign_flip)
    try:
        return HyperRepConfig(
            **processor.model_config_kwargs(),
            **{name: getattr(config, name) for name in model_fields},
            symmetries=symmetries,
            activation=activation,
            function_dim=function_dim,
        )
    except ValueError as error:
        raise ValueError(f"Invalid training config (model fields): {error}") from None


def function_targets(
    target: str,
    vectors: torch.Tensor,
    architecture: dict,
    activations: list[str] | None,
    inputs: str = "normal",
) -> torch.Tensor:
    """What each training row computes (``target``), standardised per column over these rows, float32.

    ``target`` is ``probe_outputs`` (:func:`~hyperrep_hf.probing.baselines.probe_output_features`, every row run
    under each of ``activations``, the zoos' activations: no row's own is read; on fixed random inputs of the prior
    ``inputs``, :data:`FUNCTION_INPUTS`) or ``linear_map``. A column that does not vary (the offset of a bias-free
    network) is left at 0.

    Raises:
        ValueError: An architecture without its layer list, or no activations for ``probe_outputs`` (the target
            runs the network), naming what to do; a non-finite weight or output.
    """
    from ..probing.baselines import compute_baseline_features

    try:  # the baseline's own checks: a layer list, and the activations for probe_outputs
        values = compute_baseline_features(
            target, {"train": vectors.numpy()}, architecture, activations=activations, distribution=inputs
        )
    except ValueError as error:
        raise ValueError(
            f"function_weight > 0 runs each training network to read its {target}: {error} Train with "
            "--function-weight 0 on this zoo."
        ) from None
    values = values["train"].astype(np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"function_weight: a training row has a non-finite weight or {target}; check the zoo.")
    spread = values.std(axis=0)
    return torch.from_numpy((values - values.mean(axis=0)) / np.where(spread > 0, spread, 1.0)).float()


def saved_processor(config: TrainConfig, processor: NeuronTokenProcessor, zoo_info: dict) -> NeuronTokenProcessor:
    """The processor saved with the model: the training one, or with ``canonical_embedding`` a canonical copy.

    A copy, so that training, the quick probe and the tokens stay exactly those of the same run without the field;
    the normalisation fitted on the raw training rows travels with it (the encoder was trained on those).
    """
    if not config.canonical_embedding:
        return processor
    return copy.deepcopy(processor).set_canonical(zoo_activation(zoo_info, required=False))


def check_batch_size(config: TrainConfig, num_train_rows: int, num_processes: int) -> int:
    """The per-process batch: the global batch (clamped to the data) split evenly over the processes."""
    global_batch = min(config.batch_size, num_train_rows)
    if global_batch < num_processes:
        raise ValueError(
            f"batch_size={config.batch_size} with {num_train_rows} training rows gives fewer rows per batch than "
            f"the {num_processes} processes."
        )
    return global_batch // num_processes


def make_lr_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """The learning-rate schedule of transformers for ``lr_schedule``, one step per global batch.

    A linear warm-up from 0 over ``warmup_epochs`` (step s of it uses s / warm-up steps), then a cosine or linear
    decay that reaches ``min_learning_rate_ratio`` at the end of training, or a constant rate.
    """
    from transformers import get_scheduler

    total_steps = config.epochs * steps_per_epoch
    warmup_steps = min(round(config.warmup_epochs * steps_per_epoch), total_steps)
    floor = config.min_learning_rate_ratio
    if config.lr_schedule == "constant" or warmup_steps == total_steps or floor == 1:
        return get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=warmup_steps)
    if config.lr_schedule == "cosine":
        name, extra = "cosine_with_min_lr", {"min_lr_rate": floor}
    else:  # linear: a polynomial decay of power 1 that ends at floor · learning_rate
        name, extra = "polynomial", {"power": 1.0, "lr_end": floor * config.learning_rate}
    return get_scheduler(name, optimizer, warmup_steps, total_steps, scheduler_specific_kwargs=extra)


def epoch_seed(seed: int, epoch: int, process_index: int, purpose: int) -> int:
    """An independent 63-bit seed for one (run seed, epoch, process, purpose)."""
    state = np.random.SeedSequence([seed, epoch, process_index, purpose]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


class TrainingViews:
    """Two augmented views of a batch of zoo rows, as model inputs, with view 1's reconstruction target.

    The target is the clean vector *in the view's neuron order* (noise and erasing undone, the permutation kept):
    the un-permuted weights cannot be predicted from a permuted input (that target caps R² far below 1). Shared
    with ``TwoViewCollator`` through :func:`hyperrep_hf.models.hyperrep.augmentations.augment_with_target`. With
    ``reference_losses`` the model reconstructs the augmented input instead.

    Args:
        augmentations: From :func:`hyperrep_hf.models.hyperrep.augmentations.make_augmentations` (permutation first).
        processor: Normalises the raw rows and makes tokens.
    """

    def __init__(self, augmentations: list, processor: NeuronTokenProcessor) -> None:
        self.reorder, self.corrupt = split_augmentations(augmentations)
        self.processor = processor
        self.generator = torch.Generator().manual_seed(0)

    def __call__(self, vectors: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw rows (batch, num_parameters) → ``HyperRepForPreTraining.forward`` keyword arguments (CPU)."""
        batch = {}
        normalize = self.processor.normalize_vectors  # after the symmetries (raw weights), before the corruptions
        for suffix in ("", "_view2"):
            target, view = augment_with_target(vectors, self.reorder, self.corrupt, self.generator, normalize)
            tokens = self.processor.vectors_to_tokens(view, normalize=False, check=False)
            batch.update({f"{name}{suffix}": value for name, value in tokens.items()})
            if not suffix:
                batch["labels"] = self.processor.vectors_to_tokens(target, normalize=False, check=False)[
                    "input_tokens"
                ]
        return batch


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------------------


def find_last_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The checkpoint ``checkpoints/last`` names, else the newest complete one; ``None`` when there is none."""
    pointer = checkpoints_dir / "last"
    if pointer.is_file():
        named = checkpoints_dir / pointer.read_text().strip()
        if (named / "trainer_state.json").is_file():
            return named
    complete = [p for p in checkpoints_dir.glob("[0-9]*") if (p / "trainer_state.json").is_file()]
    return max(complete, key=lambda p: int(p.name)) if complete else None


def _resolve_mixed_precision(setting: str) -> str | None:
    """``auto``: what the launcher says, else bf16 on a CUDA device that supports it, else full precision."""
    if setting != "auto":
        return setting
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None  # accelerate reads it
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return "bf16" if torch.cuda.is_available() and not use_cpu and torch.cuda.is_bf16_supported() else "no"


def _prepare_output_dir(config: TrainConfig, is_main: bool) -> Path:
    """Refuses to mix two runs in one folder unless ``resume`` or ``overwrite`` says what to do."""
    from ..checks import check_output_folder

    output_dir = check_output_folder(config.output_dir, "output_dir")
    existing = (output_dir / "train_config.json").exists() or (output_dir / "checkpoints").exists()
    if existing and not config.resume:
        if not config.overwrite:
            raise FileExistsError(
                f"output_dir={output_dir} already holds a run: pass --resume to continue it, or --overwrite to "
                "replace it, or choose another --output-dir."
            )
        if is_main:
            shutil.rmtree(output_dir)
    return output_dir


# ---------------------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------------------


class Trainer:
    """Sets a run up (failing on bad input before any training), then trains, evaluates and checkpoints it.

    Args:
        config: The resolved run configuration.
    """

    def __init__(self, config: TrainConfig) -> None:
        from accelerate import Accelerator, DistributedDataParallelKwargs
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # "Writing model shards" bars between our summary lines
        self.config = config
        # The decoder ("ec") or the projection head ("ed") gets no gradient: DDP must be told.
        unused = DistributedDataParallelKwargs(find_unused_parameters=config.loss_type in ("ed", "ec"))
        self.accelerator = Accelerator(
            mixed_precision=_resolve_mixed_precision(config.mixed_precision),
            kwargs_handlers=[unused],
            log_with=None if config.report_to == "none" else config.report_to,
            project_dir=config.output_dir,
        )
        accelerator = self.accelerator
        if accelerator.device.type == "cpu":
            local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
            torch.set_num_threads(config.num_threads or max(1, (os.cpu_count() or 1) // local_processes))
        self.output_dir = _prepare_output_dir(config, accelerator.is_main_process)
        with accelerator.main_process_first():
            self.data = load_zoo_tensors(config)
        self.processor = self.data.processor
        self.training_vectors = self.data.training_vectors  # the same tensor the normalisation was fitted on
        self.function_values = None  # what every training row computes (function_weight > 0)
        if config.function_weight:
            from ..probing.baselines import zoo_activations

            self.function_values = function_targets(
                config.function_target,
                self.training_vectors,
                self.data.zoo_info["architecture"],
                zoo_activations(self.data.zoo_info),
                config.function_inputs,
            )
        function_dim = None if self.function_values is None else self.function_values.shape[1]
        self.model_config = make_model_config(config, self.processor, self.data.zoo_info, function_dim)
        self.saved_processor = saved_processor(config, self.processor, self.data.zoo_info)
        self.per_process_batch = check_batch_size(config, len(self.training_vectors), accelerator.num_processes)
        self.global_batch = self.per_process_batch * accelerator.num_processes
        self.steps_per_epoch = len(self.training_vectors) // self.global_batch
        self.epoch, self.step, self.elapsed = 0, 0, 0.0
        self.best: dict[str, Any] | None = None  # the best checkpoint so far (load_best_model_at_end)

        torch.manual_seed(config.seed)
        model = HyperRepForPreTraining(self.model_config)
        optimizer = torch.optim.AdamW(
            model.parameters(), config.learning_rate, betas=tuple(config.adam_betas), weight_decay=config.weight_decay
        )
        # Not prepared: accelerate would step it once per process; our steps already count global batches.
        self.scheduler = make_lr_scheduler(optimizer, config, self.steps_per_epoch)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        accelerator.register_for_checkpointing(self.scheduler)
        self.eval_rows = self._eval_rows()
        self.eval_loaders = {split: self._make_eval_loader(rows) for split, rows in self.eval_rows.items()}
        augmentations = make_augmentations(
            self.processor.architecture,
            permute=config.permute,
            num_permutations=config.num_permutations,
            sign_flip_activation=self.model_config.activation if config.sign_flip else None,
            erasing_probability=config.erasing_probability,
            erasing_scale=tuple(config.erasing_scale),
            additive_noise_std=config.additive_noise_std,
            multiplicative_noise_std=config.multiplicative_noise_std,
            generator=torch.Generator().manual_seed(config.seed),
        )
        self.collator = TrainingViews(augmentations, self.processor)
        if config.resume:
            self._resume()
        if accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.output_dir / "train_config.json", config.to_dict())
            if config.report_to != "none":
                accelerator.init_trackers("hyperrep", config={k: str(v) for k, v in config.to_dict().items()})

    def _eval_rows(self) -> dict[str, torch.Tensor]:
        """Rows evaluated each time: validation and test in full, a seeded subsample of train for the probe."""
        num_train = len(self.data.vectors["train"])
        probe_rows = torch.randperm(num_train, generator=torch.Generator().manual_seed(self.config.seed))
        probe_rows = probe_rows[: self.config.probe_train_rows or num_train].sort().values
        return {
            "probe_train": probe_rows,
            "validation": torch.arange(len(self.data.vectors["validation"])),
            "test": torch.arange(len(self.data.vectors["test"])),
        }

    def _make_eval_loader(self, rows: torch.Tensor):
        from torch.utils.data import DataLoader, TensorDataset

        loader = DataLoader(TensorDataset(rows), batch_size=self.config.eval_batch_size, shuffle=False)
        return self.accelerator.prepare_data_loader(loader, device_placement=False)

    def _extra_rows_note(self) -> str:
        """The start line's note on the extra zoos' rows (kept, left out); empty without extra zoos."""
        counts = self.data.extra_counts
        if not counts:
            return ""
        rows, dropped = (sum(count[key] for count in counts.values()) for key in ("rows", "dropped"))
        return f" ({rows:,} from {len(counts)} extra zoo(s); {dropped:,} equal to validation / test rows left out)"

    def _say(self, message: str) -> None:
        if self.config.progress and self.accelerator.is_main_process:
            from tqdm.auto import tqdm

            tqdm.write(message, file=sys.stderr)

    # ----------------------------------------------------------------------------------------------- training
    def train(self) -> dict[str, float]:
        """Runs the remaining epochs, then the final evaluation and save; returns the final metrics.

        The steps: 1. one pass over the train split per remaining epoch (:meth:`train_epoch`); 2. every
        ``eval_every`` epochs (and after the last) the evaluation (:meth:`evaluate`); 3. one line into
        ``metrics.jsonl`` per epoch (:meth:`_log`); 4. every ``checkpoint_every`` epochs a checkpoint
        (:meth:`save_checkpoint`); 5. after the last epoch the final evaluation, logged, and the model and processor
        saved into the output folder (:meth:`save_pretrained`).
        """
        from tqdm.auto import tqdm

        config, accelerator = self.config, self.accelerator
        last: dict[str, Any] = {}  # the last epoch's record (empty when a resumed run had no epoch left)
        total_steps = config.epochs * self.steps_per_epoch
        show = config.progress and accelerator.is_main_process
        bar = tqdm(total=total_steps, initial=self.step, desc="train", unit="step", disable=None if show else True)
        self._say(
            f"Training {sum(p.numel() for p in self.model.parameters()):,} parameters on "
            f"{len(self.training_vectors):,} zoo rows{self._extra_rows_note()} · "
            f"{accelerator.num_processes} process(es) on "
            f"{accelerator.device} · global batch {self.global_batch} · {self.steps_per_epoch} steps/epoch"
        )
        while self.epoch < config.epochs:
            started = time.perf_counter()
            record = self.train_epoch(self.epoch, bar)
            self.epoch += 1
            record["train/samples_per_second"] = self.steps_per_epoch * self.global_batch / record.pop("seconds")
            if self.epoch % config.eval_every == 0 or self.epoch == config.epochs:
                record.update(self.evaluate())
            self.elapsed += time.perf_counter() - started
            record["elapsed_seconds"] = self.elapsed
            self._log(record)
            last = record
            if config.checkpoint_every and self.epoch % config.checkpoint_every == 0:
                if config.load_best_model_at_end:
                    self._note_best(record)  # before saving: the checkpoint's trainer_state.json carries it
                self.save_checkpoint()
        bar.close()
        best = self._load_best_model(last) if config.load_best_model_at_end else {}
        final = self.evaluate(final=True)
        rows = {"train_rows": len(self.training_vectors)}
        if self.data.extra_counts:
            rows["extra_zoo_rows"] = self.data.extra_counts
        self._log({**final, **best, **rows, "final": True, "elapsed_seconds": self.elapsed})
        self.save_pretrained(self.output_dir)
        accelerator.wait_for_everyone()
        self._end_training()
        return final

    def _end_training(self) -> None:
        """Lets go of the DDP wrapper, then of the process group (``end_training``); keeps the bare model.

        The order matters. DDP's reducer holds the process group: freed last by the reducer, the group's destructor
        joins its worker threads while holding the GIL, and a worker still letting go of a gathered tensor waits for
        that GIL, and the process hangs at exit (about one two-process CPU run in 100 under load did, and CI once).
        Dropped first, the group is freed by ``destroy_process_group``, which releases the GIL before it joins.
        """
        self.model = self.accelerator.unwrap_model(self.model)
        self.accelerator.free_memory()  # accelerate's own references to the wrapper
        self.accelerator.end_training()

    def train_epoch(self, epoch: int, bar) -> dict[str, float]:
        """One pass over the training split in a (seed, epoch)-determined order; returns mean loss parts."""
        config, accelerator = self.config, self.accelerator
        rank, device = accelerator.process_index, accelerator.device
        order = torch.randperm(
            len(self.training_vectors),
            generator=torch.Generator().manual_seed(epoch_seed(config.seed, epoch, 0, 0)),
        )
        self.collator.generator = torch.Generator().manual_seed(epoch_seed(config.seed, epoch, rank, 1))
        torch.manual_seed(epoch_seed(config.seed, epoch, rank, 2))  # dropout
        input_names = MODEL_INPUTS if config.loss_type == "ed" else MODEL_INPUTS + VIEW2_INPUTS
        if self.function_values is not None:
            input_names += ("function_values",)
        self.model.train()
        sums = torch.zeros(4, dtype=torch.float64)
        started = time.perf_counter()
        for index in range(self.steps_per_epoch):
            first = index * self.global_batch + rank * self.per_process_batch
            rows = order[first : first + self.per_process_batch]
            batch = self.collator(self.training_vectors[rows])
            if self.function_values is not None:
                batch["function_values"] = self.function_values[rows]
            output = self.model(**{name: batch[name].to(device, non_blocking=True) for name in input_names})
            accelerator.backward(output.loss)
            if config.max_grad_norm is not None:
                accelerator.clip_grad_norm_(self.model.parameters(), config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            contrast, function = output.contrastive_loss, output.function_loss
            parts = [output.loss, output.reconstruction_loss, contrast if contrast is not None else output.loss * 0]
            parts.append(function if function is not None else output.loss * 0)
            parts = torch.stack([part.detach().float() for part in parts]).cpu().double()
            sums += parts
            self.step += 1
            bar.update(1)
            if index % 10 == 0:
                bar.set_postfix(epoch=epoch + 1, loss=f"{float(parts[0]):.4f}")
        means = accelerator.reduce(sums.to(device), reduction="mean").cpu() / self.steps_per_epoch
        record = {"epoch": epoch + 1, "step": self.step, "learning_rate": self.scheduler.get_last_lr()[0]}
        record["num_processes"] = accelerator.num_processes
        record.update({"train/loss": float(means[0]), "train/reconstruction_loss": float(means[1])})
        if config.loss_type != "ed":
            record["train/contrastive_loss"] = float(means[2])
        if self.function_values is not None:
            record["train/function_loss"] = float(means[3])
        record["seconds"] = time.perf_counter() - started
        return record

    # ----------------------------------------------------------------------------------------------- evaluation
    @torch.no_grad()
    def _encode(self, split: str, reconstruct: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Embeddings of a split's rows (clean, un-augmented) and, optionally, their reconstructions.

        Returns:
            (rows, latent_dim) embeddings and (rows, num_parameters) reconstructed flat vectors in raw weight space
            (normalisation undone), or None; gathered from every process in the split's row order.
        """
        source = "train" if split == "probe_train" else split
        vectors, device = self.data.vectors[source], self.accelerator.device
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        embeddings, reconstructions = [], []
        for (rows,) in self.eval_loaders[split]:
            inputs = self.processor.vectors_to_tokens(vectors[rows.cpu()])
            inputs = {name: value.to(device) for name, value in inputs.items()}
            with self.accelerator.autocast():
                batch_embeddings = model.hyperrep(**inputs).embeddings
                outputs = [batch_embeddings.float()]
                if reconstruct:
                    tokens = model.decoder(batch_embeddings, inputs["attention_mask"])
                    outputs.append(self.processor.to_vectors(tokens.float().cpu()).to(device))
            gathered = self.accelerator.gather_for_metrics(tuple(outputs))
            embeddings.append(gathered[0].cpu())
            if reconstruct:
                reconstructions.append(gathered[1].cpu())
        model.train()
        return torch.cat(embeddings).numpy(), torch.cat(reconstructions).numpy() if reconstruct else None

    def evaluate(self, final: bool = False) -> dict[str, float]:
        """Validation reconstruction R² and probe R² (plus test scores when ``final``)."""
        from ..probing.probes import RidgeProbe, r2_score

        target = self.config.probe_target
        splits = ("validation", "test") if final else ("validation",)
        metrics, embeddings = {}, {}
        for split in splits:  # R² of the clean weights in weight space, over all the split's weights (paper §4)
            embeddings[split], reconstructions = self._encode(split, reconstruct=True)
            metrics[f"{split}/reconstruction_r2"] = r2_score(self.data.vectors[split].numpy(), reconstructions)
        embeddings["train"], _ = self._encode("probe_train", reconstruct=False)
        targets = {split: self.data.targets[split] for split in splits}
        targets["train"] = self.data.targets["train"][self.eval_rows["probe_train"].numpy()]
        known = {split: np.isfinite(values) for split, values in targets.items()}
        if all(mask.sum() > 1 for mask in known.values()):
            probe = RidgeProbe().fit(
                embeddings["train"][known["train"]],
                targets["train"][known["train"]],
                embeddings["validation"][known["validation"]],
                targets["validation"][known["validation"]],
            )
            for split in splits:
                metrics[f"{split}/probe_r2_{target}"] = probe.score(
                    embeddings[split][known[split]], targets[split][known[split]]
                )
        return metrics

    # ------------------------------------------------------------------------------------------- best model
    def _best_metric_key(self) -> str:
        if self.config.metric_for_best_model == "probe_r2":
            return f"validation/probe_r2_{self.config.probe_target}"
        return "validation/reconstruction_r2"

    def _note_best(self, record: dict[str, Any]) -> None:
        """Remembers this epoch's checkpoint (about to be saved) when its validation score is the best so far."""
        value = record.get(self._best_metric_key())
        if value is None or not math.isfinite(value):
            return
        if self.best is None or value >= self.best["value"]:  # a tie goes to the later model: trained longer
            self.best = {"epoch": self.epoch, "step": self.step, "metric": self._best_metric_key(), "value": value}

    def _load_best_model(self, last: dict[str, Any]) -> dict[str, Any]:
        """Puts the best checkpoint's weights into the model unless the last epoch scored at least as well.

        Returns what the final metrics line records about the choice.
        """
        key = self._best_metric_key()
        self._note_best(last)  # the last epoch's model, in memory, is a candidate too (by the same rule)
        best = self.best
        if best is None:  # no finite score at any candidate: the last epoch's model stays
            chosen = {"epoch": self.epoch, "step": self.step, "metric": key, "value": last.get(key)}
        elif best["step"] == self.step:
            chosen = dict(best)
        else:
            checkpoint = self.output_dir / "checkpoints" / f"{best['step']:06d}"
            if not checkpoint.is_dir():
                raise FileNotFoundError(
                    f"The best checkpoint {checkpoint} (epoch {best['epoch']}, {key} {best['value']:.4g}) is gone; "
                    "it is never rotated away, so it was deleted by hand. Train again, or set "
                    "load_best_model_at_end to false to keep the last epoch's model."
                )
            self.accelerator.load_state(str(checkpoint / "training_state"))
            chosen = dict(best)
            self._say(f"Best model: epoch {best['epoch']} ({key} {best['value']:.4g}), loaded from {checkpoint}.")
        return {"best_model": chosen}

    def _log(self, record: dict[str, Any]) -> None:
        """Appends one JSON line to metrics.jsonl, logs to trackers and prints the summary line (main process)."""
        if not self.accelerator.is_main_process:
            return
        record = {"epoch": self.epoch, "step": self.step, **record}
        with open(self.output_dir / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.config.report_to != "none":
            self.accelerator.log({k: v for k, v in record.items() if isinstance(v, int | float)}, step=self.step)
        parts = [f"epoch {self.epoch}/{self.config.epochs}", f"step {self.step}"]
        for key, label in SUMMARY_FIELDS:
            key = key.format(target=self.config.probe_target)
            if key in record:
                parts.append(f"{label} {record[key]:.4g}")
        parts.append(f"{record['elapsed_seconds'] / 60:.1f} min")
        self._say(("final · " if record.get("final") else "") + " · ".join(parts))

    # ----------------------------------------------------------------------------------------------- saving
    def save_pretrained(self, directory: Path) -> None:
        """Model (``from_pretrained``; AutoModel gives the encoder) and processor into ``directory``."""
        state_dict = self.accelerator.get_state_dict(self.model)  # every process takes part (FSDP, DeepSpeed)
        if self.accelerator.is_main_process:
            model = self.accelerator.unwrap_model(self.model)
            model.save_pretrained(directory, state_dict=state_dict, is_main_process=True)
            self.saved_processor.save_pretrained(directory)

    def save_checkpoint(self) -> Path:
        """Writes ``checkpoints/<step>/`` (under a temporary name, then renamed) and points ``last`` at it.

        Older checkpoints beyond ``keep_checkpoints`` are removed afterwards.
        """
        accelerator, is_main = self.accelerator, self.accelerator.is_main_process
        checkpoints_dir = self.output_dir / "checkpoints"
        final = checkpoints_dir / f"{self.step:06d}"
        temporary = temporary_sibling(final)  # the same name in every process: all of them write into it
        if is_main:
            remove_path(temporary)
            temporary.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(temporary / "training_state")  # every process writes its own RNG state file
        self.save_pretrained(temporary / "pretrained_model")
        accelerator.wait_for_everyone()  # no process may still be writing into the folder when it is renamed
        if is_main:
            state = {"epoch": self.epoch, "step": self.step, "elapsed_seconds": self.elapsed, "best": self.best}
            write_json_atomic(temporary / "trainer_state.json", state)
            write_json_atomic(temporary / "train_config.json", self.config.to_dict())
            remove_path(final)
            replace_path(temporary, final)
            write_text_atomic(checkpoints_dir / "last", final.name + "\n")
            complete = sorted((p for p in checkpoints_dir.glob("[0-9]*") if p.is_dir()), key=lambda p: int(p.name))
            kept = self.best["step"] if self.best is not None else None  # the best is never rotated away
            for old in complete[: -self.config.keep_checkpoints]:
                if int(old.name) != kept:
                    shutil.rmtree(old)
        accelerator.wait_for_everyone()
        return final

    def _resume(self) -> None:
        """Loads the newest checkpoint (model, optimizer, scheduler, RNG, counters); drops later metric lines."""
        checkpoint = find_last_checkpoint(self.output_dir / "checkpoints")
        if checkpoint is None:
            self._say(f"--resume: no checkpoint in {self.output_dir / 'checkpoints'}; starting afresh.")
            return
        saved = json.loads((checkpoint / "train_config.json").read_text())
        current = self.config.to_dict()
        changed = sorted(
            name for name in current if saved.get(name) != current[name] and name not in RESUMABLE_CHANGES
        )
        if changed:
            details = ", ".join(f"{name}: {saved.get(name)!r} → {current[name]!r}" for name in changed)
            raise ValueError(f"Cannot resume {checkpoint}: the config changed ({details}).")
        self.accelerator.load_state(str(checkpoint / "training_state"))
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        self.epoch, self.step, self.elapsed = state["epoch"], state["step"], state["elapsed_seconds"]
        self.best = state.get("best")
        metrics = self.output_dir / "metrics.jsonl"
        if self.accelerator.is_main_process and metrics.exists():
            # A killed run may have logged epochs after its last checkpoint: they are trained again.
            records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            kept = [r for r in records if r["step"] <= self.step and not r.get("final")]
            write_text_atomic(metrics, "".join(json.dumps(r) + "\n" for r in kept))
        self._say(f"Resumed from {checkpoint} (epoch {self.epoch}, step {self.step}).")


def train(config: TrainConfig) -> dict[str, float]:
    """Trains one run described by ``config`` (see the module docstring); returns the final metrics."""
    return Trainer(config).train()


def main(argv: list[str] | None = None) -> int:
    """``[CONFIG.yaml] [--field value ...]``: the entry point of ``training/train.py`` and ``hyperrep train``.

    Returns:
        0 on success, 2 for bad input (the message names the problem), 130 when interrupted.
    """
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        TrainConfigParser().print_help()
        return 0
    try:
        config = parse_args(argv)
        print(f"Final metrics: {json.dumps(train(config))}", file=sys.stderr)
        print(f"Run folder: {Path(config.output_dir).resolve()}", file=sys.stderr)
        return 0
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"hyperrep train: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hyperrep train: interrupted; run again with --resume to continue.", file=sys.stderr)
        return 130
