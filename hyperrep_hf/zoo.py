"""Building model zoos, and reading them back as Hugging Face datasets.

A zoo folder is a Hub dataset repo as it stands (``DESIGN.md`` "Folder formats")::

    README.md                          dataset card; YAML ``configs:`` lists every zoo in the folder
    <zoo>/train-00000-of-00001.parquet one row per (model, epoch); validation-*, test-* likewise
    <zoo>/zoo_info.json                format version, architecture, recipe, counts, dropped models

How a build survives being killed: networks are trained in *shards* (populations of up to ``chunk_size``).
After every epoch a shard writes that epoch's rows and its training state (parameters, optimizer moments) into
``<zoo>/.build/``, each file atomically (a temporary name, then ``os.replace``). Re-running the same command
continues from the last finished epoch; every source of randomness is a function of (seed, epoch), so the
resumed zoo is bit-identical to an uninterrupted one. A finished shard becomes its Parquet files; ``zoo_info.json``
and the card are written last, so a zoo folder without ``zoo_info.json`` is never mistaken for a complete one.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from .atomic import write_text_atomic
from .cards import render_dataset_card
from .data import load_image_dataset
from .population import NetworkConfig, Population
from .recipes import BuildOptions, ZooRecipe, select_networks

ZOO_FORMAT_VERSION = 1
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)


class ZooExistsError(FileExistsError):
    """The output folder already holds a different zoo of the same name."""


@dataclass
class EpochReport:
    """What a build reports after each epoch (to the progress bar and to callbacks)."""

    zoo: str
    shard: int
    num_shards: int
    epoch: int
    epochs: int
    test_accuracy: torch.Tensor
    train_loss: torch.Tensor
    num_alive: int
    num_dropped: int
    models_epochs_per_second: float

    def summary(self) -> str:
        """One line: mean ± std of the alive networks' test accuracy, their train loss and the speed."""
        accuracy = self.test_accuracy[torch.isfinite(self.test_accuracy)]
        loss = self.train_loss[torch.isfinite(self.train_loss)]
        return (
            f"[{self.zoo}] shard {self.shard + 1}/{self.num_shards} · epoch {self.epoch:>3}/{self.epochs} · "
            f"test acc {accuracy.mean():.3f} ± {accuracy.std() if accuracy.numel() > 1 else 0:.3f} · "
            f"train loss {loss.mean():.3f} · {self.num_alive} alive, {self.num_dropped} dropped · "
            f"{self.models_epochs_per_second:,.0f} models·epochs/s"
        )


def split_by_model(num_models: int, seed: int) -> list[str]:
    """Assigns each model (by index) to train / validation / test, 70/15/15, seeded."""
    order = torch.randperm(num_models, generator=torch.Generator().manual_seed(seed)).tolist()
    num_train = round(SPLIT_FRACTIONS[0] * num_models)
    num_validation = round(SPLIT_FRACTIONS[1] * num_models)
    assignment = [""] * num_models
    for rank, model in enumerate(order):
        assignment[model] = (
            "train" if rank < num_train else "validation" if rank < num_train + num_validation else "test"
        )
    return assignment


def plan_shards(configs: list[NetworkConfig], chunk_size: int) -> list[list[int]]:
    """Groups model indices into populations: same activation, optimizer and batch size, at most chunk_size each."""
    groups: dict[tuple, list[int]] = {}
    for index, config in enumerate(configs):
        groups.setdefault((config.activation, config.optimizer, config.batch_size), []).append(index)
    return [members[i : i + chunk_size] for members in groups.values() for i in range(0, len(members), chunk_size)]


def build_zoo(
    recipe: ZooRecipe,
    out_dir: str | os.PathLike,
    options: BuildOptions | None = None,
    data_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    on_epoch_end: Callable[[EpochReport], None] | None = None,
) -> Path:
    """Trains the recipe's population and writes the zoo into ``out_dir/<recipe.name>``; resumes a killed build.

    Args:
        recipe: What to build.
        out_dir: The zoo folder (a Hub dataset repo); may hold other zoos.
        options: Command-line overrides.
        data_dir: Where to look for image data (see :func:`hyperrep_hf.data.load_image_dataset`).
        overwrite: Replace a different zoo of the same name instead of refusing.
        progress: Show a progress bar and per-epoch summary lines.
        on_epoch_end: Called after every epoch of every shard (tests use it to interrupt a build).

    Returns:
        The folder of this zoo's files (``out_dir/<recipe.name>``).

    Raises:
        ZooExistsError: when the folder holds a different zoo of that name (and not ``overwrite``).
    """
    options = options or BuildOptions()
    configs = select_networks(recipe, options)
    epochs = recipe.epochs if options.epochs is None else options.epochs
    spec = recipe.network_spec()
    identity = {"recipe": recipe.to_dict(), "options": options.identity(), "format_version": ZOO_FORMAT_VERSION}
    zoo_dir = Path(out_dir) / recipe.name
    # Everything that can fail on bad input fails before the first file is written.
    data = load_image_dataset(
        recipe.dataset, seed=options.seed, subset=options.subset, data_dir=data_dir, **recipe.data_arguments()
    )
    if data.num_classes != spec.num_classes or tuple(data.train_images.shape[1:]) != spec.input_shape:
        raise ValueError(
            f"recipe {recipe.name!r}: network {spec.name} takes {list(spec.input_shape)} inputs and gives "
            f"{spec.num_classes} classes, but data set {recipe.dataset!r} has {list(data.train_images.shape[1:])} "
            f"images and {data.num_classes} classes."
        )
    if _check_existing(zoo_dir, identity, overwrite) == "complete":
        write_card(Path(out_dir))  # cheap, and repairs a card lost to a crash after zoo_info.json was written
        _say(progress, f"[{recipe.name}] already complete in {zoo_dir}: nothing to train.")
        return zoo_dir

    build_dir = zoo_dir / ".build"
    build_dir.mkdir(parents=True, exist_ok=True)
    _write_json_atomic(build_dir / "build.json", identity)
    device = torch.device(options.device)
    splits = split_by_model(len(configs), options.seed)
    shards = plan_shards(configs, options.chunk_size or recipe.chunk_size)
    tensors = {name: tensor.to(device) for name, tensor in _data_tensors(data).items()}
    bar = tqdm(total=len(shards) * (epochs + 1), desc=recipe.name, unit="epoch", disable=None if progress else True)
    dropped: list[dict] = []
    for shard_index, members in enumerate(shards):
        shard = _Shard(recipe.name, spec, shard_index, len(shards), members, configs, build_dir, options.seed)
        dropped += recipe.apply_filter(
            shard, shard.run(tensors, data.num_classes, epochs, device, bar, progress, on_epoch_end)
        )
        shard.write_parquet(zoo_dir, [splits[i] for i in members], configs)
    bar.close()
    info = _zoo_info(recipe, options, spec, data, configs, splits, dropped, epochs)
    _write_json_atomic(zoo_dir / "zoo_info.json", info)
    write_card(Path(out_dir))
    shutil.rmtree(build_dir)
    _say(
        progress,
        f"[{recipe.name}] wrote {zoo_dir} ({info['counts']['models']} models, "
        f"{info['counts']['rows']} rows, {info['counts']['dropped']} dropped); card {Path(out_dir) / 'README.md'}",
    )
    return zoo_dir


def _check_existing(zoo_dir: Path, identity: dict, overwrite: bool) -> str:
    """'complete', 'resume' or 'new'; raises ZooExistsError on a different zoo unless overwriting."""
    for record_path, state in ((zoo_dir / "zoo_info.json", "complete"), (zoo_dir / ".build" / "build.json", "resume")):
        if not record_path.is_file():
            continue
        record = json.loads(record_path.read_text())
        recorded = {key: record.get(key) for key in identity}
        if recorded == identity:
            return state
        if not overwrite:
            differing = sorted(
                key for key in identity["options"] if record.get("options", {}).get(key) != identity["options"][key]
            )
            detail = f"options differ: {differing}" if differing else "the recipe differs"
            raise ZooExistsError(
                f"{zoo_dir} already holds a {'complete' if state == 'complete' else 'partial'} zoo "
                f"{zoo_dir.name!r} built differently ({detail}). Choose another --out, or pass --overwrite to "
                "replace it."
            )
        shutil.rmtree(zoo_dir)
        return "new"
    if zoo_dir.exists() and any(zoo_dir.iterdir()) and not overwrite:
        raise ZooExistsError(f"{zoo_dir} exists and is not a zoo this tool wrote; choose another --out.")
    return "new"


class _Shard:
    """One population of a build, with its on-disk progress in ``.build/shard-XXXXX/``."""

    def __init__(self, zoo, spec, index, num_shards, members, configs, build_dir, seed) -> None:
        self.zoo, self.spec, self.index, self.num_shards, self.members = zoo, spec, index, num_shards, members
        self.configs = [configs[i] for i in members]
        self.folder = build_dir / f"shard-{index:05d}"
        self.seed = seed

    def run(self, tensors, num_classes, epochs, device, bar, progress, on_epoch_end) -> list[dict]:
        """Trains (or resumes) the shard to the last epoch; returns the dropped models."""
        if (self.folder / "done.json").is_file():
            bar.update(epochs + 1)
            return json.loads((self.folder / "done.json").read_text())["dropped"]
        self.folder.mkdir(parents=True, exist_ok=True)
        population = Population(self.spec, self.configs, device)
        dropped_at = torch.full((len(self.members),), -1, dtype=torch.long)
        first_epoch = 0
        state_path = self.folder / "state.safetensors"
        if state_path.is_file():
            state = load_file(state_path)
            population.load_state_dict(state)
            dropped_at = state["dropped_at"]
            first_epoch = int(state["epoch"]) + 1
            bar.update(first_epoch)
        for epoch in range(first_epoch, epochs + 1):
            started = time.perf_counter()
            if epoch > 0:
                dropout_seed = (self.seed * 1_000_003 + self.index) * 10_007 + epoch
                population.train_epoch(tensors["train_images"], tensors["train_labels"], epoch, dropout_seed)
            metrics = {
                split: population.evaluate(tensors[f"{split}_images"], tensors[f"{split}_labels"], num_classes)
                for split in SPLITS
            }
            newly = population.drop_diverged(*(m[key] for m in metrics.values() for key in ("loss", "accuracy")))
            dropped_at[newly] = epoch
            self._write_epoch(epoch, population.flat_weights(), metrics)
            state = population.state_dict() | {"dropped_at": dropped_at, "epoch": torch.tensor(epoch)}
            _save_atomic(state, state_path)
            report = EpochReport(
                self.zoo,
                self.index,
                self.num_shards,
                epoch,
                epochs,
                metrics["test"]["accuracy"].cpu(),
                metrics["train"]["loss"].cpu(),
                int(population.alive.sum()),
                int((dropped_at >= 0).sum()),
                len(self.members) / max(time.perf_counter() - started, 1e-9),
            )
            bar.update(1)
            if progress:
                bar.write(report.summary())
            if on_epoch_end is not None:
                on_epoch_end(report)
        dropped = [
            {
                "model_id": self.members[i],
                "seed": self.configs[i].seed,
                "epoch": int(dropped_at[i]),
                "reason": f"non-finite weights, loss or accuracy at epoch {int(dropped_at[i])}",
            }
            for i in range(len(self.members))
            if dropped_at[i] >= 0
        ]
        _write_json_atomic(self.folder / "done.json", {"dropped": dropped, "epochs": epochs})
        return dropped

    def _write_epoch(self, epoch: int, weights: torch.Tensor, metrics: dict) -> None:
        columns = {"weights": weights.numpy()}
        for split in SPLITS:
            columns[f"{split}_loss"] = metrics[split]["loss"].cpu().double().numpy()
            columns[f"{split}_accuracy"] = metrics[split]["accuracy"].cpu().double().numpy()
        for label, values in enumerate(metrics["test"]["f1"].cpu().double().T):
            columns[f"f1_class_{label}"] = values.numpy()
        _save_atomic(
            {key: torch.from_numpy(np.ascontiguousarray(v)) for key, v in columns.items()},
            self.folder / f"epoch-{epoch:05d}.safetensors",
        )

    def write_parquet(self, zoo_dir: Path, splits: list[str], configs: list[NetworkConfig]) -> None:
        """Writes this shard's rows (alive models only, all epochs) into one Parquet file per split."""
        dropped_ids = {d["model_id"] for d in json.loads((self.folder / "done.json").read_text())["dropped"]}
        epoch_files = sorted(self.folder.glob("epoch-*.safetensors"))
        epochs = [load_file(path) for path in epoch_files]
        for split in SPLITS:
            rows = [i for i, model in enumerate(self.members) if splits[i] == split and model not in dropped_ids]
            schema = _row_schema(self.spec.num_parameters, self.spec.num_classes)
            table = _rows_table(schema, [self.members[i] for i in rows], [self.configs[i] for i in rows], rows, epochs)
            if table.num_rows == 0:  # readers choke on empty Parquet files; a split may span fewer shards
                continue
            path = zoo_dir / f"{split}-{self.index:05d}-of-{self.num_shards:05d}.parquet"
            temporary = path.with_name(f".{path.name}.tmp")
            pq.write_table(table, temporary, row_group_size=max(1, min(table.num_rows, 4096)))
            os.replace(temporary, path)


def _row_schema(num_parameters: int, num_classes: int) -> pa.Schema:
    """The Parquet schema of a zoo's rows (explicit, so that empty and full shards agree)."""
    types = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
    fields = [
        pa.field("model_id", pa.int64()),
        pa.field("epoch", pa.int64()),
        pa.field("weights", pa.list_(pa.float32(), num_parameters)),
    ]
    fields += [
        pa.field(f.name, types[f.type if isinstance(f.type, str) else f.type.__name__])
        for f in dataclass_fields(NetworkConfig)
    ]
    fields += [pa.field(f"{split}_{metric}", pa.float64()) for split in SPLITS for metric in ("loss", "accuracy")]
    fields.append(pa.field("generalization_gap", pa.float64()))
    fields += [pa.field(f"f1_class_{label}", pa.float64()) for label in range(num_classes)]
    return pa.schema(fields)


def _rows_table(schema: pa.Schema, model_ids, configs, positions, epochs) -> pa.Table:
    """One row per (model, epoch), models in order, epochs ascending."""
    num_epochs = len(epochs)
    num_parameters = schema.field("weights").type.list_size
    index = torch.as_tensor(positions, dtype=torch.long)
    # stacked[key]: (num_models_in_split, num_epochs, ...) → rows ordered by model, then epoch.
    stacked = {key: torch.stack([e[key][index] for e in epochs]).transpose(0, 1) for key in epochs[0]}
    stacked["generalization_gap"] = stacked["train_accuracy"] - stacked["test_accuracy"]
    weights = stacked.pop("weights").reshape(-1).numpy().astype(np.float32)
    columns = {
        "model_id": np.repeat(np.asarray(model_ids, dtype=np.int64), num_epochs),
        "epoch": np.tile(np.arange(num_epochs, dtype=np.int64), len(model_ids)),
        "weights": pa.FixedSizeListArray.from_arrays(pa.array(weights, pa.float32()), num_parameters),
    }
    for name in NetworkConfig.field_names():
        columns[name] = [getattr(config, name) for config in configs for _ in range(num_epochs)]
    for key, values in stacked.items():
        columns[key] = values.reshape(-1).numpy()
    return pa.table(
        {
            name: pa.array(columns[name], schema.field(name).type) if name != "weights" else columns[name]
            for name in schema.names
        },
        schema=schema,
    )


def _data_tensors(data) -> dict[str, torch.Tensor]:
    tensors = {}
    for split in SPLITS:
        images, labels = data.split(split)
        tensors[f"{split}_images"], tensors[f"{split}_labels"] = images.float(), labels.long()
    return tensors


def _zoo_info(recipe, options, spec, data, configs, splits, dropped, epochs) -> dict:
    dropped_ids = {d["model_id"] for d in dropped}
    kept = {split: [i for i, s in enumerate(splits) if s == split and i not in dropped_ids] for split in SPLITS}
    num_models = sum(len(ids) for ids in kept.values())
    return {
        "format_version": ZOO_FORMAT_VERSION,
        "name": recipe.name,
        "description": recipe.description,
        "recipe": recipe.to_dict(),
        "options": options.identity(),
        "architecture": spec.to_dict(),
        "dataset": {
            "name": data.name,
            "source": data.source,
            "license": data.license,
            "description": data.description,
            "num_classes": data.num_classes,
            "sizes": {split: int(data.split(split)[1].shape[0]) for split in SPLITS},
        },
        "epochs": epochs,
        "split_policy": "70/15/15 by model (all checkpoints of a model in one split), seeded with options.seed",
        "counts": {
            "configured": len(configs),
            "models": num_models,
            "dropped": len(dropped),
            "rows": num_models * (epochs + 1),
            "models_per_split": {split: len(ids) for split, ids in kept.items()},
        },
        "splits": kept,
        "dropped": dropped,
        "hyperparameters": {
            key: sorted({getattr(c, key) for c in configs}, key=str)
            for key in NetworkConfig.field_names()
            if key != "seed"
        },
        "created_with": "hyperrep_hf",
    }


def write_card(out_dir: Path) -> Path:
    """(Re)writes the folder's README.md dataset card from every complete zoo's ``zoo_info.json``."""
    infos = []
    for info_path in sorted(out_dir.glob("*/zoo_info.json")):
        info = json.loads(info_path.read_text())
        info["final_test_accuracy"] = _final_accuracies(info_path.parent, info["epochs"])
        info["available_splits"] = [s for s in SPLITS if any(info_path.parent.glob(f"{s}-*.parquet"))]
        infos.append(info)
    card = render_dataset_card(infos)
    path = out_dir / "README.md"
    if path.is_file() and path.read_text() == card:
        return path
    return write_text_atomic(path, card)


def _final_accuracies(zoo_dir: Path, epochs: int) -> list[float]:
    values = []
    for path in sorted(zoo_dir.glob("*.parquet")):
        table = pq.read_table(path, columns=["epoch", "test_accuracy"])
        epoch = table.column("epoch").to_numpy()
        values += table.column("test_accuracy").to_numpy()[epoch == epochs].tolist()
    return values


def _write_json_atomic(path: Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=_json_default))


def _json_default(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    save_file({k: v.contiguous() for k, v in tensors.items()}, temporary)
    os.replace(temporary, path)


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, flush=True)


def load_zoo(path_or_repo: str | os.PathLike, config: str | None = None, **load_dataset_kwargs):
    """Reads a zoo as a ``DatasetDict`` (train / validation / test) and its ``zoo_info``.

    Args:
        path_or_repo: A zoo folder, or a dataset repo id on the Hub (``HF_ENDPOINT`` is honoured).
        config: The zoo's name inside the folder; may be omitted when the folder holds exactly one.
        **load_dataset_kwargs: Passed on to ``datasets.load_dataset`` (e.g. ``cache_dir``, ``streaming``).

    Returns:
        (dataset_dict, zoo_info) where ``dataset_dict["train"].with_format("torch")["weights"][:]`` is
        (rows, num_parameters) float32.

    Raises:
        FileNotFoundError: when the folder holds no complete zoo, or not the one asked for.
    """
    import datasets

    local = Path(path_or_repo)
    if local.is_dir():
        available = sorted(p.parent.name for p in local.glob("*/zoo_info.json"))
        if config is None:
            if not available:
                raise FileNotFoundError(
                    f"{local} holds no complete zoo (no <zoo>/zoo_info.json); build one with "
                    "`hyperrep zoo build RECIPE --out DIR`."
                )
            if len(available) > 1:
                raise ValueError(f"{local} holds {len(available)} zoos ({', '.join(available)}); name one.")
            config = available[0]
        if config not in available:
            raise FileNotFoundError(
                f"{local} holds no complete zoo {config!r} (complete: {', '.join(available) or 'none'}). "
                f"A folder {local / config} with a .build/ inside is an interrupted build: re-run its command."
            )
        info = json.loads((local / config / "zoo_info.json").read_text())
    else:
        from huggingface_hub import hf_hub_download

        if config is None:
            config = datasets.get_dataset_config_names(str(path_or_repo))[0]
        info_path = hf_hub_download(str(path_or_repo), f"{config}/zoo_info.json", repo_type="dataset")
        info = json.loads(Path(info_path).read_text())
    if info.get("format_version", 0) > ZOO_FORMAT_VERSION:
        raise ValueError(
            f"Zoo {config!r} has format version {info['format_version']}; this hyperrep_hf reads up to "
            f"{ZOO_FORMAT_VERSION}. Upgrade hyperrep_hf."
        )
    dataset = datasets.load_dataset(str(path_or_repo), config, **load_dataset_kwargs)
    return dataset, info
