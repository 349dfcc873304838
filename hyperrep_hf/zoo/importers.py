"""Importing the zoos the field already uses into this project's zoo format.

Two sources (``PAPER.md`` §1):

- the **Small CNN Zoo** of Unterthiner et al. 2020 (``hyperrep zoo import small-cnn-zoo SRC --out DIR``)::

      SRC/weights.npy        (rows, 4970) float32, one row per checkpoint, Keras layout
      SRC/metrics.csv[.gz]   one line per row: config.*, modeldir, step, train/test accuracy and loss
      SRC/layout.csv         varname, start_idx, end_idx, shape: which slice of a row is which variable

  Keras stores each layer's bias *before* its kernel, and kernels as (kh, kw, in, out) / (in, out). PyTorch order
  is the weight first, as (out, in, kh, kw) / (out, in), then the bias. The conversion is one gather index over a
  row, computed once from ``layout.csv`` (:func:`keras_to_torch_index`), so neuron tokens and permutations act on
  the right numbers.

- the lab's **Model Zoos** (``hyperrep zoo import model-zoos SRC --out DIR``): one folder per model with
  ``result.json`` (one JSON line per epoch) and ``checkpoint_<epoch:06d>/checkpoints`` (a torch state_dict, loaded
  with ``weights_only=True``). Parameters are matched to the network by *name order and shape*, never by module
  position, so Dropout modules (which shift ``module_list`` indices) cannot misalign them.

Both importers stream: a chunk of checkpoints is read, converted and appended to Parquet shards
(:class:`hyperrep_hf.zoo.folder.ParquetShardWriter`), so memory does not grow with the source. Everything that can be
checked before writing (row counts, layout, architecture) is checked first; rows with non-finite weights or
accuracies are dropped and counted; the zoo's ``zoo_info.json`` and card are written last.
"""

from __future__ import annotations

import ast
import csv
import gzip
import itertools
import json
import math
import mmap
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from .folder import (
    SPLITS,
    ZOO_FORMAT_VERSION,
    ParquetShardWriter,
    ZooExistsError,
    split_by_model,
    write_card,
    write_zoo_info,
)
from .networks import KNOWN_NETWORKS, NetworkSpec

SMALL_CNN_ZOO_INPUT_SIZES = {"mnist": 28, "fashion_mnist": 28, "cifar10": 32, "svhn_cropped": 32}
"""Image side per ``config.dataset`` of the Small CNN Zoo (its CIFAR10 / SVHN zoos are grey-scale)."""

SMALL_CNN_ZOO_HYPERPARAMETERS = {
    "config.activation": "activation",
    "config.w_init": "init",
    "config.optimizer": "optimizer",
    "config.learning_rate": "learning_rate",
    "config.l2reg": "weight_decay",
    "config.dropout": "dropout",
    "config.train_fraction": "train_fraction",
}
"""Small CNN Zoo config columns copied under this project's hyper-parameter names (the originals are kept too)."""

MODEL_ZOOS_HYPERPARAMETERS = {
    "model::nlin": "activation",
    "model::init_type": "init",
    "model::dropout": "dropout",
    "optim::optimizer": "optimizer",
    "optim::lr": "learning_rate",
    "optim::wd": "weight_decay",
    "training::batchsize": "batch_size",
    "seed": "seed",
}
"""Model Zoos ``config`` keys copied under this project's names (every key is also kept as ``config.<key>``)."""

MODEL_ZOOS_METRICS = {
    "train_acc": "train_accuracy",
    "train_loss": "train_loss",
    "val_acc": "validation_accuracy",
    "val_loss": "validation_loss",
    "validation_acc": "validation_accuracy",
    "validation_loss": "validation_loss",
    "test_acc": "test_accuracy",
    "test_loss": "test_loss",
}
"""Model Zoos ``result.json`` keys and the zoo columns they become."""

CHUNK_ROWS = 2048


class ImportFormatError(ValueError):
    """The source does not have the documented format; the message names the file and what is wrong."""


@dataclass
class ImportReport:
    """What an import did.

    Attributes:
        zoo_dir: The zoo's folder.
        rows_read: Checkpoints found in the source.
        rows_written: Rows written, per split.
        dropped: Reason → number of checkpoints dropped for it.
        incomplete_models: Model → what is missing (Model Zoos: checkpoints without a file or a result line).
    """

    zoo_dir: Path
    rows_read: int = 0
    rows_written: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    incomplete_models: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line for the terminal."""
        dropped = ", ".join(f"{count} {reason}" for reason, count in self.dropped.items()) or "none"
        written = ", ".join(f"{split} {count}" for split, count in self.rows_written.items())
        text = f"imported {self.rows_read} checkpoints into {self.zoo_dir}: rows {written}; dropped: {dropped}"
        if self.incomplete_models:
            text += f"; {len(self.incomplete_models)} model(s) incomplete (see zoo_info.json)"
        return text


# ----------------------------------------------------------------------------------------------------------------
# Column types: inferred over the whole source in a first pass, so every Parquet shard has the same schema
# ----------------------------------------------------------------------------------------------------------------

_MISSING_TEXT = {"", "nan", "NaN", "None", "null"}


class _ColumnType:
    """Narrowest type that holds every value seen: int → float → str (missing values fit any)."""

    ORDER = ("int", "float", "str")

    def __init__(self) -> None:
        self.kind = "int"
        self.seen = False

    def observe_text(self, text: str) -> None:
        if text in _MISSING_TEXT:
            return
        self.seen = True
        if self.kind == "int":
            try:
                int(text)
                return
            except ValueError:
                self.kind = "float"
        if self.kind == "float":
            try:
                float(text)
                return
            except ValueError:
                self.kind = "str"

    def observe_value(self, value) -> None:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        self.seen = True
        if isinstance(value, bool) or not isinstance(value, int | float):
            kind = "str"
        else:
            kind = "int" if isinstance(value, int) else "float"
        self.kind = max(self.kind, kind, key=self.ORDER.index)

    @property
    def arrow_type(self) -> pa.DataType:
        if not self.seen:
            return pa.float64()  # an all-missing column: NaN/None everywhere
        return {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}[self.kind]


def _parse_text(text: str, kind: pa.DataType):
    if text in _MISSING_TEXT:
        return None
    if kind == pa.int64():
        return int(text)
    if kind == pa.float64():
        return float(text)
    return text


def _convert_value(value, kind: pa.DataType):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if kind == pa.string():
        return value if isinstance(value, str) else json.dumps(value)
    if kind == pa.float64():
        return float(value)
    return int(value)


# ----------------------------------------------------------------------------------------------------------------
# Small CNN Zoo: layout → network spec and the Keras → PyTorch gather index
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KerasVariable:
    """One row of ``layout.csv``: a variable's name, its slice of a weights row and its Keras shape."""

    name: str
    start: int
    end: int
    shape: tuple[int, ...]

    @property
    def layer(self) -> str:
        """The layer it belongs to: the name without ``/kernel:0`` or ``/bias:0``."""
        return self.name.rsplit("/", 1)[0]

    @property
    def role(self) -> str:
        """``"kernel"`` or ``"bias"``."""
        return self.name.rsplit("/", 1)[-1].split(":")[0]


def read_layout(path: str | os.PathLike) -> list[KerasVariable]:
    """Reads ``layout.csv`` (columns ``varname``, ``start_idx``, ``end_idx``, ``shape``; others are ignored).

    Raises:
        ImportFormatError: A missing column, a shape that is not a tuple literal, or a slice whose length is not
            the product of its shape.
    """
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"varname", "start_idx", "end_idx", "shape"} - set(reader.fieldnames or [])
        if missing:
            raise ImportFormatError(f"{path} lacks the column(s) {sorted(missing)} (has {reader.fieldnames}).")
        variables = []
        for line, record in enumerate(reader, start=2):
            try:
                shape = ast.literal_eval(record["shape"])  # a tuple literal such as "(3, 3, 1, 16)": no code runs
                shape = (shape,) if isinstance(shape, int) else tuple(int(size) for size in shape)
                start, end = int(record["start_idx"]), int(record["end_idx"])
            except (ValueError, SyntaxError, TypeError) as error:
                raise ImportFormatError(f"{path} line {line}: cannot read {dict(record)} ({error}).") from error
            if end - start != math.prod(shape):
                raise ImportFormatError(
                    f"{path} line {line}: {record['varname']} spans {end - start} values but has shape {shape}."
                )
            variables.append(KerasVariable(record["varname"], start, end, shape))
    if not variables:
        raise ImportFormatError(f"{path} lists no variables.")
    return sorted(variables, key=lambda variable: variable.start)


def small_cnn_zoo_spec(variables: list[KerasVariable], input_size: int, path: str = "layout.csv") -> NetworkSpec:
    """The network a layout describes, if it is of the Small CNN Zoo family; else a clear error.

    The family: convolutions (square kernels, stride 2, no padding — facts of the zoo that the layout does not
    record) each followed by the activation, then global average pooling, dropout and one dense layer.

    Raises:
        ImportFormatError: Naming the variable or layer that does not fit.
    """
    layers: dict[str, dict[str, KerasVariable]] = {}
    for variable in variables:
        if variable.role not in ("kernel", "bias"):
            raise ImportFormatError(f"{path}: variable {variable.name!r} is neither a kernel:0 nor a bias:0.")
        if variable.role in layers.setdefault(variable.layer, {}):
            raise ImportFormatError(f"{path}: layer {variable.layer!r} has two {variable.role} variables.")
        layers[variable.layer][variable.role] = variable
    strings, channels = [], None
    names = list(layers)
    for position, name in enumerate(names):
        kernel, bias = layers[name].get("kernel"), layers[name].get("bias")
        if kernel is None or bias is None:
            raise ImportFormatError(f"{path}: layer {name!r} needs a kernel and a bias (has {sorted(layers[name])}).")
        last = position == len(names) - 1
        expected_kind = "dense (in, out)" if last else "conv (kh, kw, in, out)"
        if (len(kernel.shape) != 2) if last else (len(kernel.shape) != 4 or kernel.shape[0] != kernel.shape[1]):
            raise ImportFormatError(
                f"{path}: layer {name!r} has kernel shape {kernel.shape}; the Small CNN Zoo network needs a "
                f"{expected_kind} kernel there (square convolutions, then one dense layer). Supported: "
                "conv → … → conv → global average pooling → dense."
            )
        in_channels, out_channels = kernel.shape[-2], kernel.shape[-1]
        if channels is not None and in_channels != channels:
            raise ImportFormatError(
                f"{path}: layer {name!r} takes {in_channels} inputs but the previous layer gives {channels}."
            )
        if bias.shape != (out_channels,):
            raise ImportFormatError(f"{path}: layer {name!r} has bias shape {bias.shape}, expected ({out_channels},).")
        if position == 0:
            if len(names) < 2:
                raise ImportFormatError(f"{path}: a single layer is not a Small CNN Zoo network.")
            first_channels = in_channels
        channels = out_channels
        strings += [f"linear:{out_channels}"] if last else [f"conv:{out_channels}:{kernel.shape[0]}:s2", "act"]
        if position == len(names) - 2:
            strings += ["gap", "dropout"]
    try:
        return NetworkSpec.parse((first_channels, input_size, input_size), strings, "small_cnn_zoo")
    except ValueError as error:
        where = f"{path}: the layers do not form a network on {input_size}×{input_size}"
        raise ImportFormatError(f"{where}: {error}") from error


def keras_to_torch_index(variables: list[KerasVariable], spec: NetworkSpec) -> np.ndarray:
    """Gather index that turns a Keras-layout row into this project's flat vector: ``torch_row = row[index]``.

    Per layer, the PyTorch weight (conv kernels HWIO → OIHW, dense IO → OI, row-major) then the bias.

    Returns:
        (spec.num_parameters,) int64 positions into a source row.
    """
    by_layer: dict[str, dict[str, KerasVariable]] = {}
    for variable in variables:
        by_layer.setdefault(variable.layer, {})[variable.role] = variable
    parts = []
    for layer, (name, roles) in zip(spec.parameter_layers, by_layer.items(), strict=True):
        kernel, bias = roles["kernel"], roles["bias"]
        positions = np.arange(kernel.start, kernel.end).reshape(kernel.shape)
        positions = positions.transpose(3, 2, 0, 1) if positions.ndim == 4 else positions.T
        if positions.shape != layer.weight_shape:
            raise ImportFormatError(f"layer {name!r}: converted shape {positions.shape} ≠ {layer.weight_shape}.")
        parts += [positions.reshape(-1), np.arange(bias.start, bias.end)]
    return np.concatenate(parts).astype(np.int64)


def small_cnn_zoo_layout(
    in_channels: int = 1, channels: tuple[int, ...] = (16, 16, 16), num_classes: int = 10, kernel_size: int = 3
) -> list[KerasVariable]:
    """The released ``layout.csv`` of a Small CNN Zoo network: Keras names, each layer's bias before its kernel."""
    variables, offset = [], 0
    shapes = [
        (f"conv2d_{i}" if i else "conv2d", (kernel_size, kernel_size, previous_channels, out))
        for i, (previous_channels, out) in enumerate(zip((in_channels, *channels[:-1]), channels, strict=True))
    ]
    shapes.append(("dense", (channels[-1], num_classes)))
    for layer, kernel_shape in shapes:
        for role, shape in (("bias", (kernel_shape[-1],)), ("kernel", kernel_shape)):
            size = math.prod(shape)
            variables.append(KerasVariable(f"sequential/{layer}/{role}:0", offset, offset + size, shape))
            offset += size
    return variables


def write_small_cnn_zoo_source(
    folder: str | os.PathLike,
    keras_rows: np.ndarray,
    metrics: Iterable[dict],
    variables: list[KerasVariable],
    compress: bool = False,
) -> Path:
    """Writes a folder in the Small CNN Zoo's released format (tests and benchmarks build sources with it).

    Args:
        folder: Where ``weights.npy``, ``metrics.csv[.gz]`` and ``layout.csv`` go.
        keras_rows: (rows, num_parameters) float32 in Keras layout; None keeps the folder's weights.npy.
        metrics: One dict per row (``config.*``, ``modeldir``, ``step``, accuracies, losses), streamed; the first
            dict's keys are the header.
        variables: The layout (e.g. :func:`small_cnn_zoo_layout`).
        compress: Write ``metrics.csv.gz`` instead of ``metrics.csv``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if keras_rows is not None:
        np.save(folder / "weights.npy", np.asarray(keras_rows, dtype=np.float32), allow_pickle=False)
    records = iter(metrics)
    first = next(records)
    opener = (
        (lambda path: gzip.open(path, "wt", newline="")) if compress else (lambda path: path.open("w", newline=""))
    )
    with opener(folder / ("metrics.csv.gz" if compress else "metrics.csv")) as handle:
        writer = csv.DictWriter(handle, list(first))
        writer.writeheader()
        writer.writerow(first)
        writer.writerows(records)
    with (folder / "layout.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["varname", "start_idx", "end_idx", "shape"])
        for variable in variables:
            writer.writerow([variable.name, variable.start, variable.end, str(tuple(variable.shape))])
    return folder


# ----------------------------------------------------------------------------------------------------------------
# Small CNN Zoo: the import
# ----------------------------------------------------------------------------------------------------------------


def _metrics_path(source: Path) -> Path:
    for name in ("metrics.csv", "metrics.csv.gz"):
        if (source / name).is_file():
            return source / name
    raise ImportFormatError(f"{source} holds no metrics.csv or metrics.csv.gz.")


def _open_text(path: Path):
    return gzip.open(path, "rt", newline="") if path.suffix == ".gz" else path.open(newline="")


def _source_folder(source: str | os.PathLike, what: str) -> Path:
    if not Path(source).is_dir():
        state = "is a file, not a folder" if Path(source).exists() else "does not exist"
        raise ImportFormatError(f"{source} {state}: pass {what}, downloaded and unpacked.")
    return Path(source)


def _load_weights(path: Path) -> np.ndarray:
    if not path.is_file():
        raise ImportFormatError(f"{path.parent} holds no weights.npy.")
    try:
        weights = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:  # numpy: "mmap length is greater than file size", bad header, pickled data
        size = path.stat().st_size
        raise ImportFormatError(
            f"{path} cannot be read as a .npy array ({error}); the file has {size:,} bytes — is it truncated? "
            "Download it again."
        ) from error
    if weights.ndim != 2 or weights.dtype.kind != "f":
        raise ImportFormatError(f"{path} holds a {weights.dtype} array of shape {weights.shape}; expected 2-D floats.")
    return weights


@dataclass
class _MetricsScan:
    header: list[str]
    types: dict[str, pa.DataType]
    num_rows: int
    model_dirs: list[str]  # sorted
    model_of_row: np.ndarray  # (num_rows,) int32 index into model_dirs


def _scan_metrics(path: Path) -> _MetricsScan:
    """First pass over metrics.csv: row count, column types, model of every row, duplicate checks."""
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ImportFormatError(f"{path} is empty.")
        for required in ("modeldir", "step", "test_accuracy"):
            if required not in header:
                raise ImportFormatError(f"{path} has no {required!r} column (columns: {header}).")
        types = {name: _ColumnType() for name in header}
        modeldir, step = header.index("modeldir"), header.index("step")
        model_index: dict[str, int] = {}
        rows_model: list[int] = []
        seen: dict[tuple[int, str], int] = {}
        for row_number, record in enumerate(reader):
            if len(record) != len(header):
                raise ImportFormatError(
                    f"{path} data row {row_number} has {len(record)} fields, the header has {len(header)}."
                )
            for name, text in zip(header, record, strict=True):
                types[name].observe_text(text)
            if record[step] in _MISSING_TEXT or record[modeldir] == "":
                raise ImportFormatError(f"{path} data row {row_number} has no step or no modeldir: {record}.")
            model = model_index.setdefault(record[modeldir], len(model_index))
            rows_model.append(model)
            key = (model, record[step])
            if key in seen:
                raise ImportFormatError(
                    f"{path} rows {seen[key]} and {row_number} both describe model {record[modeldir]!r} at step "
                    f"{record[step]}: the rows cannot be matched one-to-one with weights.npy."
                )
            seen[key] = row_number
    if types["step"].kind == "str":
        raise ImportFormatError(f"{path}: column 'step' holds non-numeric values.")
    ordered = sorted(model_index)
    rank = np.empty(len(ordered), dtype=np.int32)
    for position, name in enumerate(ordered):
        rank[model_index[name]] = position
    return _MetricsScan(
        header,
        {name: kind.arrow_type for name, kind in types.items()},
        len(rows_model),
        ordered,
        rank[np.asarray(rows_model, dtype=np.int32)],
    )


def _metric_chunks(path: Path, header: list[str], chunk_rows: int) -> Iterator[list[list[str]]]:
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        next(reader)
        chunk: list[list[str]] = []
        for record in reader:
            chunk.append(record)
            if len(chunk) == chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def import_small_cnn_zoo(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: str | None = None,
    *,
    seed: int = 0,
    input_size: int | None = None,
    overwrite: bool = False,
    rows_per_shard: int = 20_000,
    chunk_rows: int = CHUNK_ROWS,
    progress: bool = True,
) -> ImportReport:
    """Imports one Small CNN Zoo data set (a folder with weights.npy, metrics.csv[.gz], layout.csv).

    Args:
        source: The folder.
        out_dir: The zoo folder to write into (a Hub dataset repo; may hold other zoos).
        config: The zoo's name inside ``out_dir``; default ``small_cnn_zoo_<config.dataset>``.
        seed: Seed of the 70/15/15 split by model directory.
        input_size: Image side of the networks' inputs; default from ``config.dataset`` (28 for (fashion) MNIST,
            32 for CIFAR10-GS / SVHN-GS). It does not change the weights; it is recorded in the architecture.
        overwrite: Replace an existing zoo of that name.
        rows_per_shard: Rows per Parquet file.
        chunk_rows: Checkpoints converted at once (bounds memory).
        progress: Print what is written.

    Returns:
        An :class:`ImportReport`.

    Raises:
        ImportFormatError: A missing or truncated file, a metrics.csv whose rows do not match weights.npy, or a
            layout.csv that does not describe a Small CNN Zoo network — before anything is written.
    """
    source = _source_folder(source, "the Small CNN Zoo folder (weights.npy, metrics.csv[.gz], layout.csv)")
    weights = _load_weights(source / "weights.npy")
    metrics_path = _metrics_path(source)
    if not (source / "layout.csv").is_file():
        raise ImportFormatError(f"{source} holds no layout.csv.")
    variables = read_layout(source / "layout.csv")
    covered = sorted((variable.start, variable.end) for variable in variables)
    if covered[0][0] != 0 or any(a[1] != b[0] for a, b in itertools.pairwise(covered)):
        raise ImportFormatError(f"{source / 'layout.csv'}: the variables' slices overlap or leave gaps.")
    if covered[-1][1] != weights.shape[1]:
        raise ImportFormatError(
            f"{source / 'layout.csv'} describes rows of {covered[-1][1]} values, but weights.npy rows have "
            f"{weights.shape[1]}."
        )
    scan = _scan_metrics(metrics_path)
    if scan.num_rows != weights.shape[0]:
        raise ImportFormatError(
            f"{metrics_path} has {scan.num_rows} data rows but {source / 'weights.npy'} has {weights.shape[0]}: "
            "row i of one must describe row i of the other. Are both files from the same data set and complete?"
        )
    dataset = _first_value(metrics_path, "config.dataset") if "config.dataset" in scan.header else None
    if input_size is None:
        if dataset not in SMALL_CNN_ZOO_INPUT_SIZES:
            raise ImportFormatError(
                f"Unknown config.dataset {dataset!r}: pass --input-size (known: {SMALL_CNN_ZOO_INPUT_SIZES})."
            )
        input_size = SMALL_CNN_ZOO_INPUT_SIZES[dataset]
    spec = small_cnn_zoo_spec(variables, input_size, str(source / "layout.csv"))
    gather = keras_to_torch_index(variables, spec)
    name = _safe_zoo_name(config or f"small_cnn_zoo_{dataset or source.name}")

    hyperparameters = {old: new for old, new in SMALL_CNN_ZOO_HYPERPARAMETERS.items() if old in scan.header}
    extra = [column for column in scan.header if column not in ("modeldir", "step")]
    fields = [*_base_fields(spec.num_parameters), pa.field("model_dir", pa.string())]
    fields += [pa.field(new, scan.types[old]) for old, new in hyperparameters.items()]
    fields += [pa.field(column, scan.types[column]) for column in extra]
    has_gap = {"train_accuracy", "test_accuracy"} <= set(scan.header)
    if has_gap and "generalization_gap" not in scan.header:
        fields.append(pa.field("generalization_gap", pa.float64()))
    schema = pa.schema(fields)

    splits = split_by_model(len(scan.model_dirs), seed)
    zoo_dir = _prepare_zoo_dir(Path(out_dir), name, overwrite)
    writers = {split: ParquetShardWriter(zoo_dir, split, schema, rows_per_shard) for split in SPLITS}
    report = ImportReport(zoo_dir, rows_read=scan.num_rows)
    stats = _ImportStats(len(scan.model_dirs))
    column_index = {column: scan.header.index(column) for column in scan.header}
    distinct: dict[str, set] = {new: set() for new in hyperparameters.values()}
    with _aborting(writers):
        start = 0
        for chunk in _metric_chunks(metrics_path, scan.header, chunk_rows):
            stop = start + len(chunk)
            block = np.asarray(weights[start:stop], dtype=np.float32)[:, gather]
            _release_pages(weights, start, stop)
            columns = {
                column: [_parse_text(record[column_index[column]], scan.types[column]) for record in chunk]
                for column in scan.header
            }
            model = scan.model_of_row[start:stop].astype(np.int64)
            keep = np.isfinite(block).all(axis=1)
            stats.drop(model, ~keep, "rows with non-finite weights")
            for metric in ("train_accuracy", "test_accuracy"):
                if metric in columns:
                    finite = np.array([_finite(value) for value in columns[metric]])
                    stats.drop(model, keep & ~finite, f"rows with a missing or non-finite {metric}")
                    keep &= finite
            table_columns = {
                "model_id": model,
                "epoch": np.array([int(float(value)) for value in columns["step"]], dtype=np.int64),
                "source_row": np.arange(start, stop, dtype=np.int64),
                "model_dir": np.array(columns["modeldir"], dtype=object),
            }
            table_columns |= {new: columns[old] for old, new in hyperparameters.items()}
            table_columns |= {column: columns[column] for column in extra}
            if "generalization_gap" in schema.names and "generalization_gap" not in scan.header:
                table_columns["generalization_gap"] = [
                    (a - b) if _finite(a) and _finite(b) else None
                    for a, b in zip(columns["train_accuracy"], columns["test_accuracy"], strict=True)
                ]
            stats.observe(model[keep], table_columns["epoch"][keep])
            for new in hyperparameters.values():
                distinct[new].update(value for value in table_columns[new] if value is not None)
            _write_rows(writers, splits, schema, block, table_columns, keep)
            start = stop
        info = _import_info(
            name,
            spec,
            "small-cnn-zoo",
            source,
            scan.model_dirs,
            splits,
            stats,
            writers,
            seed,
            {key: sorted(values, key=str) for key, values in distinct.items()},
            description=(
                f"The Small CNN Zoo of Unterthiner et al. 2020 ({dataset or 'unknown data set'}), imported from "
                f"{source.name}: Keras weights converted to PyTorch layout, every config.* column and metric kept."
            ),
            dataset=dataset,
        )
        _finish(writers, zoo_dir, info, Path(out_dir))
    return _report(report, writers, stats, info, progress)


@contextmanager
def _aborting(writers: dict[str, ParquetShardWriter]) -> Iterator[None]:
    """Removes every shard the writers started when the import fails or is interrupted (nothing half-written)."""
    try:
        yield
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise


def _release_pages(weights: np.ndarray, start: int, stop: int) -> None:
    """Drops rows [start, stop) of a memory-mapped array from this process's resident memory.

    Pages of a read-only file mapping stay resident (and count in the RSS) after they are read; without this, an
    import that walks a 5 GB weights.npy ends with 5 GB resident. The data stay in the OS page cache.
    """
    mapping = getattr(weights, "_mmap", None)
    if mapping is None or not hasattr(mapping, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    row_bytes = weights.strides[0]
    first = weights.offset % mmap.ALLOCATIONGRANULARITY + start * row_bytes  # numpy maps from an aligned offset
    aligned = first - first % mmap.PAGESIZE
    length = min((stop - start) * row_bytes + (first - aligned), len(mapping) - aligned)
    if length > 0:
        mapping.madvise(mmap.MADV_DONTNEED, aligned, length)


def _first_value(path: Path, column: str) -> str | None:
    with _open_text(path) as handle:
        reader = csv.DictReader(handle)
        record = next(reader, None)
        return None if record is None else record[column]


def _finite(value) -> bool:
    return value is not None and isinstance(value, int | float) and math.isfinite(value)


# ----------------------------------------------------------------------------------------------------------------
# Model Zoos
# ----------------------------------------------------------------------------------------------------------------

_CHECKPOINT = re.compile(r"checkpoint_(\d+)$")
_MODULE_KEY = re.compile(r"(\d+)")


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in _MODULE_KEY.split(name)]


def _model_directories(source: Path) -> list[Path]:
    folders = sorted(path for path in source.iterdir() if path.is_dir() and (path / "result.json").is_file())
    if not folders:
        raise ImportFormatError(f"{source} holds no model folder (a folder with a result.json).")
    return folders


def _checkpoints(folder: Path) -> dict[int, Path]:
    found = {}
    for path in folder.iterdir():
        match = _CHECKPOINT.match(path.name)
        if match and path.is_dir():
            found[int(match.group(1))] = path / "checkpoints"
    return dict(sorted(found.items()))


def _read_results(path: Path) -> list[dict]:
    lines = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            lines.append(json.loads(text))
        except json.JSONDecodeError as error:
            raise ImportFormatError(f"{path} line {number} is not JSON ({error}).") from error
    return lines


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ImportFormatError(f"{path} is not a state_dict (a mapping of names to tensors).")
    return state


def _parameter_order(state: dict[str, torch.Tensor]) -> list[str]:
    """Weight/bias keys in network order: by module name, numbers compared as numbers (10 after 9)."""
    keys = [key for key in state if key.endswith((".weight", ".bias"))]
    return sorted(keys, key=lambda key: (_natural_key(key.rsplit(".", 1)[0]), key.endswith(".bias")))


def _candidate_specs() -> dict[str, NetworkSpec]:
    from .recipes import list_recipes, load_recipe

    candidates = dict(KNOWN_NETWORKS)
    for recipe_name in list_recipes():
        spec = load_recipe(recipe_name).network_spec()
        candidates.setdefault(spec.name, spec)
    return candidates


def match_network(shapes: list[tuple[int, ...]], network: str | None = None, where: str = "") -> NetworkSpec:
    """The known network whose parameters have exactly these shapes in this order (or the one named).

    Raises:
        ImportFormatError: No known network matches (listing the shapes found and the networks known).
    """
    candidates = _candidate_specs()
    if network is not None:
        if network not in candidates:
            raise ImportFormatError(f"Unknown network {network!r}; known: {sorted(candidates)}.")
        candidates = {network: candidates[network]}
    for spec in candidates.values():
        if [tuple(shape) for shape in spec.parameter_shapes.values()] == [tuple(shape) for shape in shapes]:
            return spec
    known = {name: [list(shape) for shape in spec.parameter_shapes.values()] for name, spec in candidates.items()}
    raise ImportFormatError(
        f"{where}: parameters of shapes {[list(shape) for shape in shapes]} match no supported network ({known})."
    )


@dataclass
class _ModelPlan:
    """What the first pass keeps of a model folder (its result lines are read again when it is written)."""

    folder: Path
    checkpoints: dict[int, Path]
    result_epochs: frozenset[int]
    missing: list[str]


def _results_by_epoch(folder: Path, result_offset: int) -> dict[int, dict]:
    results = {}
    for index, line in enumerate(_read_results(folder / "result.json")):
        iteration = line.get("training_iteration", index + result_offset)
        results[int(iteration) - result_offset] = line
    return results


class _ResultColumns:
    """Column types, metric keys and hyper-parameter values over every result line (first pass, streamed)."""

    def __init__(self) -> None:
        self.config_types: dict[str, _ColumnType] = {}
        self.metric_columns: dict[str, str] = {}
        self.values: dict[str, set] = {old: set() for old in MODEL_ZOOS_HYPERPARAMETERS}

    def observe(self, line: dict) -> None:
        for key, value in _flat_config(line.get("config", {})).items():
            self.config_types.setdefault(key, _ColumnType()).observe_value(value)
            if key in self.values and value is not None:
                self.values[key].add(value if isinstance(value, int | float | str) else json.dumps(value))
        for key in line:
            if key in MODEL_ZOOS_METRICS:
                self.metric_columns[key] = MODEL_ZOOS_METRICS[key]


def _plan_model(folder: Path, result_offset: int, columns: _ResultColumns) -> _ModelPlan:
    results = _results_by_epoch(folder, result_offset)
    for line in results.values():
        columns.observe(line)
    checkpoints = _checkpoints(folder)
    missing = []
    if not checkpoints:
        missing.append("no checkpoint_* folder")
    for epoch, path in checkpoints.items():
        if not path.is_file():
            missing.append(f"checkpoint_{epoch:06d} has no 'checkpoints' file")
        elif epoch not in results:
            missing.append(f"epoch {epoch} has no result.json line (training_iteration {epoch + result_offset})")
    return _ModelPlan(folder, checkpoints, frozenset(results), missing)


def import_model_zoos(
    source: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: str | None = None,
    *,
    network: str | None = None,
    seed: int = 0,
    result_offset: int = 1,
    overwrite: bool = False,
    rows_per_shard: int = 20_000,
    progress: bool = True,
) -> ImportReport:
    """Imports a Model Zoos population (one folder per model) into this project's zoo format.

    Epochs: ``checkpoint_<e:06d>`` holds the weights after epoch e (e = 0: the initialisation); its scores are
    the ``result.json`` line whose ``training_iteration`` is e + ``result_offset`` (Ray Tune counts iterations
    from 1, and the zoos' first iteration evaluates the initialisation: offset 1). A line without
    ``training_iteration`` counts by position.

    Args:
        source: The folder of model folders.
        out_dir: The zoo folder to write into.
        config: The zoo's name; default the source folder's name.
        network: A known network name (``hyperrep_hf.zoo.networks.KNOWN_NETWORKS`` or a recipe's network); default
            the one whose parameter shapes match the first checkpoint.
        seed: Seed of the 70/15/15 split by model.
        result_offset: ``training_iteration`` of the epoch-0 result line.
        overwrite: Replace an existing zoo of that name.
        rows_per_shard: Rows per Parquet file.
        progress: Print what is written.

    Returns:
        An :class:`ImportReport`; checkpoints without a file or a result line are skipped and listed per model in
        ``incomplete_models`` (and ``zoo_info.json``).

    Raises:
        ImportFormatError: No model folder, unreadable result.json, or weights that match no supported network.
    """
    source = _source_folder(source, "the folder of model folders (result.json, checkpoint_*)")
    folders = _model_directories(source)
    found = _ResultColumns()
    plans = [_plan_model(folder, result_offset, found) for folder in folders]
    first = next(
        (plan.checkpoints[e] for plan in plans for e in plan.checkpoints if plan.checkpoints[e].is_file()), None
    )
    if first is None:
        raise ImportFormatError(f"{source}: no model folder holds a checkpoint_*/checkpoints file.")
    reference = _load_state_dict(first)
    order = _parameter_order(reference)
    spec = match_network([tuple(reference[key].shape) for key in order], network, str(first))
    name = _safe_zoo_name(config or source.name)

    config_types, metric_columns = found.config_types, found.metric_columns
    mapped = {old: new for old, new in MODEL_ZOOS_HYPERPARAMETERS.items() if old in config_types}
    fields = [*_base_fields(spec.num_parameters), pa.field("model_dir", pa.string())]
    fields += [pa.field(new, config_types[old].arrow_type) for old, new in mapped.items()]
    fields += [pa.field(f"config.{key}", kind.arrow_type) for key, kind in config_types.items()]
    fields += [pa.field(column, pa.float64()) for column in dict.fromkeys(metric_columns.values())]
    has_gap = {"train_accuracy", "test_accuracy"} <= set(metric_columns.values())
    if has_gap:
        fields.append(pa.field("generalization_gap", pa.float64()))
    schema = pa.schema(fields)

    splits = split_by_model(len(plans), seed)
    zoo_dir = _prepare_zoo_dir(Path(out_dir), name, overwrite)
    writers = {split: ParquetShardWriter(zoo_dir, split, schema, rows_per_shard) for split in SPLITS}
    stats = _ImportStats(len(plans))
    pending = _PendingRows()
    report = ImportReport(zoo_dir)
    with _aborting(writers):
        for model_id, plan in enumerate(plans):
            if plan.missing:
                report.incomplete_models[plan.folder.name] = "; ".join(plan.missing)
            results = _results_by_epoch(plan.folder, result_offset)
            usable = [e for e, path in plan.checkpoints.items() if path.is_file() and e in results]
            skipped = len(plan.checkpoints) - len(usable)
            if skipped:
                stats.add("checkpoints without a file or a result line", skipped)
                stats.dropped_per_model[model_id] += skipped
            report.rows_read += len(plan.checkpoints)
            vectors, records = [], []
            for epoch in usable:
                try:
                    state = _load_state_dict(plan.checkpoints[epoch])
                    vectors.append(_state_vector(state, order, reference, spec))
                except Exception as error:  # a corrupt file may fail anywhere in the (safe) unpickler
                    report.incomplete_models[plan.folder.name] = (
                        report.incomplete_models.get(plan.folder.name, "") + f" checkpoint {epoch}: {error}"
                    ).strip()
                    stats.add("checkpoints that cannot be read or do not match the network", 1)
                    stats.dropped_per_model[model_id] += 1
                    continue
                records.append((epoch, results[epoch]))
            if not records:
                continue
            block = np.stack(vectors).astype(np.float32)
            model = np.full(len(records), model_id, dtype=np.int64)
            columns: dict[str, object] = {
                "model_id": model,
                "epoch": np.array([epoch for epoch, _ in records], dtype=np.int64),
                "source_row": np.full(len(records), -1, dtype=np.int64),
                "model_dir": [plan.folder.name] * len(records),
            }
            flat = [_flat_config(line.get("config", {})) for _, line in records]
            for old, new in mapped.items():
                columns[new] = [_convert_value(values.get(old), schema.field(new).type) for values in flat]
            for key in config_types:
                kind = schema.field(f"config.{key}").type
                columns[f"config.{key}"] = [_convert_value(values.get(key), kind) for values in flat]
            for old, new in metric_columns.items():
                columns[new] = [_convert_value(line.get(old), pa.float64()) for _, line in records]
            if has_gap:
                columns["generalization_gap"] = [
                    a - b if _finite(a) and _finite(b) else None
                    for a, b in zip(columns["train_accuracy"], columns["test_accuracy"], strict=True)
                ]
            keep = np.isfinite(block).all(axis=1)
            stats.drop(model, ~keep, "rows with non-finite weights")
            if "test_accuracy" in columns:
                finite = np.array([_finite(value) for value in columns["test_accuracy"]])
                stats.drop(model, keep & ~finite, "rows with a missing or non-finite test_accuracy")
                keep &= finite
            stats.observe(model[keep], columns["epoch"][keep])
            pending.add(block, columns, keep)
            if pending.num_rows >= CHUNK_ROWS:  # a few models per Parquet row group, not one each
                pending.flush(writers, splits, schema)
        pending.flush(writers, splits, schema)
        hyperparameter_values = {
            new: {_convert_value(value, schema.field(new).type) for value in found.values[old]}
            for old, new in mapped.items()
        }
        info = _import_info(
            name, spec, "model-zoos", source, [plan.folder.name for plan in plans], splits, stats, writers, seed,
            {key: sorted(values, key=str) for key, values in hyperparameter_values.items()},
            description=f"A Model Zoos population (Schürholt et al. 2022) imported from {source.name}.",
            dataset=None,
            incomplete=report.incomplete_models,
        )  # fmt: skip
        info["result_offset"] = result_offset
        _finish(writers, zoo_dir, info, Path(out_dir))
    return _report(report, writers, stats, info, progress)


def _flat_config(config: dict, prefix: str = "") -> dict:
    """Nested config dicts → ``{"a::b": value}`` (the zoos already use ``::`` in their keys)."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat |= _flat_config(value, f"{prefix}{key}::")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _state_vector(state: dict, order: list[str], reference: dict, spec: NetworkSpec) -> np.ndarray:
    keys = _parameter_order(state)
    if keys != order:
        raise ImportFormatError(f"parameters {keys} differ from the first checkpoint's {order}")
    for key in keys:
        if state[key].shape != reference[key].shape:
            raise ImportFormatError(f"{key} has shape {list(state[key].shape)}, expected {list(reference[key].shape)}")
    return torch.cat([state[key].detach().reshape(-1).float() for key in keys]).numpy()


# ----------------------------------------------------------------------------------------------------------------
# Shared: folder handling, writing rows, the zoo_info record
# ----------------------------------------------------------------------------------------------------------------


def _safe_zoo_name(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    if not cleaned:
        raise ValueError(f"{name!r} cannot be a zoo name; pass --config NAME.")
    return cleaned


def _base_fields(num_parameters: int) -> list[pa.Field]:
    return [
        pa.field("model_id", pa.int64()),
        pa.field("epoch", pa.int64()),
        pa.field("weights", pa.list_(pa.float32(), num_parameters)),
        pa.field("source_row", pa.int64()),
    ]


def _prepare_zoo_dir(out_dir: Path, name: str, overwrite: bool) -> Path:
    zoo_dir = out_dir / name
    if zoo_dir.exists() and any(zoo_dir.iterdir()):
        if not overwrite:
            state = "a complete" if (zoo_dir / "zoo_info.json").is_file() else "an unfinished"
            raise ZooExistsError(f"{zoo_dir} already holds {state} zoo; choose another --out/--config or --overwrite.")
        shutil.rmtree(zoo_dir)
    zoo_dir.mkdir(parents=True, exist_ok=True)
    return zoo_dir


class _ImportStats:
    def __init__(self, num_models: int) -> None:
        self.dropped: dict[str, int] = {}
        self.dropped_per_model = np.zeros(num_models, dtype=np.int64)
        self.rows_per_model = np.zeros(num_models, dtype=np.int64)
        self.max_epoch = -1

    def add(self, reason: str, count: int) -> None:
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def drop(self, models: np.ndarray, mask: np.ndarray, reason: str) -> None:
        if not mask.any():
            return
        self.add(reason, int(mask.sum()))
        np.add.at(self.dropped_per_model, models[mask], 1)

    def observe(self, models: np.ndarray, epochs: np.ndarray) -> None:
        np.add.at(self.rows_per_model, models, 1)
        if epochs.size:
            self.max_epoch = max(self.max_epoch, int(epochs.max()))


class _PendingRows:
    """Rows of several models gathered before one write (Model Zoos folders hold a few checkpoints each)."""

    def __init__(self) -> None:
        self.parts: list[tuple[np.ndarray, dict, np.ndarray]] = []
        self.num_rows = 0

    def add(self, block: np.ndarray, columns: dict, keep: np.ndarray) -> None:
        self.parts.append((block, columns, keep))
        self.num_rows += block.shape[0]

    def flush(self, writers, splits, schema) -> None:
        if not self.parts:
            return
        block = np.concatenate([part[0] for part in self.parts])
        keep = np.concatenate([part[2] for part in self.parts])
        columns = {}
        for name, first in self.parts[0][1].items():
            values = [part[1][name] for part in self.parts]
            columns[name] = (
                np.concatenate(values) if isinstance(first, np.ndarray) else list(chain.from_iterable(values))
            )
        _write_rows(writers, splits, schema, block, columns, keep)
        self.parts, self.num_rows = [], 0


def _write_rows(writers, splits, schema, block, columns, keep) -> None:
    model = columns["model_id"]
    for split, writer in writers.items():
        rows = np.flatnonzero(keep & (np.asarray(splits)[model] == split))
        if rows.size == 0:
            continue
        arrays = []
        for item in schema:
            if item.name == "weights":
                values = pa.array(np.ascontiguousarray(block[rows]).reshape(-1), pa.float32())
                arrays.append(pa.FixedSizeListArray.from_arrays(values, block.shape[1]))
            else:
                values = columns[item.name]
                picked = values[rows] if isinstance(values, np.ndarray) else [values[i] for i in rows]
                if isinstance(picked, np.ndarray) and picked.dtype == object:
                    picked = picked.tolist()
                arrays.append(pa.array(picked, item.type))
        writer.write(pa.Table.from_arrays(arrays, schema=schema))


def _import_info(
    name, spec, source_format, source, model_dirs, splits, stats, writers, seed, hyperparameters, *, description,
    dataset, incomplete=None,
) -> dict:  # fmt: skip
    kept = {split: [i for i, s in enumerate(splits) if s == split and stats.rows_per_model[i] > 0] for split in SPLITS}
    dropped_models = [
        {
            "model_id": int(model),
            "model_dir": model_dirs[model],
            "seed": None,
            "rows": int(stats.dropped_per_model[model]),
            "reason": f"{int(stats.dropped_per_model[model])} checkpoint(s) dropped (non-finite or unreadable)",
        }
        for model in np.flatnonzero(stats.dropped_per_model)
    ]
    varied = {key: values for key, values in hyperparameters.items() if len(values) > 1}
    fixed = {key: values[0] for key, values in hyperparameters.items() if len(values) == 1}
    return {
        "format_version": ZOO_FORMAT_VERSION,
        "name": name,
        "description": description,
        "source": {"format": source_format, "path": str(source), "imported_with": "hyperrep_hf"},
        "recipe": {
            "name": name,
            "fixed": fixed,
            "grid": {key: _short_values(values) for key, values in varied.items()},
            "seeds": None,
            "random_seeds": "the source's",
            "reference": "Unterthiner et al. 2020, Small CNN Zoo"
            if source_format == "small-cnn-zoo"
            else "Schürholt et al. 2022, Model Zoos",
        },
        "options": {"seed": seed},
        "architecture": spec.to_dict(),
        "dataset": {
            "name": dataset or "see the source",
            "source": "as recorded by the source zoo",
            "license": "see the source zoo's licence",
            "description": "",
            "num_classes": spec.num_classes,
            "sizes": {split: "n/a" for split in SPLITS},
        },
        "epochs": stats.max_epoch,
        "split_policy": "70/15/15 by model directory (all checkpoints of a model in one split), seeded with "
        "options.seed",
        "counts": {
            "configured": len(model_dirs),
            "models": sum(len(ids) for ids in kept.values()),
            "dropped": len(dropped_models),
            "rows": sum(writer.num_rows for writer in writers.values()),
            "dropped_rows": dict(stats.dropped),
            "models_per_split": {split: len(ids) for split, ids in kept.items()},
            "rows_per_split": {split: writer.num_rows for split, writer in writers.items()},
        },
        "splits": kept,
        "dropped": dropped_models,
        "incomplete_models": incomplete or {},
        "hyperparameters": hyperparameters,
        "created_with": "hyperrep_hf",
    }


def _short_values(values: list) -> list:
    if len(values) <= 12:
        return values
    return [f"{values[0]} … {values[-1]} ({len(values)} distinct values)"]


def _finish(writers, zoo_dir: Path, info: dict, out_dir: Path) -> None:
    for writer in writers.values():
        writer.finish()
    write_zoo_info(zoo_dir, info)
    write_card(out_dir)


def _report(report: ImportReport, writers, stats: _ImportStats, info: dict, progress: bool) -> ImportReport:
    report.rows_written = {split: writer.num_rows for split, writer in writers.items()}
    report.dropped = dict(stats.dropped)
    if progress:
        print(report.summary(), flush=True)
        print(f"wrote {report.zoo_dir / 'zoo_info.json'} and {report.zoo_dir.parent / 'README.md'}", flush=True)
    return report
