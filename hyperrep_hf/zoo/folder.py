"""Building model zoos, and reading them back as Hugging Face datasets.

A zoo folder is a Hub dataset repo as it stands (the README, "Model zoos")::

    README.md                          dataset card; YAML ``configs:`` lists every zoo in the folder
    <zoo>/train-00000-of-00001.parquet one row per (model, epoch); validation-*, test-* likewise
    <zoo>/zoo_info.json                format version, architecture, recipe, counts, dropped models

How a build survives being killed: networks are trained in *shards* (populations of up to ``chunk_size``).
After every epoch a shard writes that epoch's rows and its training state (parameters, optimizer moments) into
``<zoo>/.build/``, each file atomically (a temporary name, then ``os.replace``). Re-running the same command
continues from the last finished epoch; every source of randomness is a function of (seed, epoch), so the
resumed zoo is bit-identical to an uninterrupted one. A finished shard becomes its Parquet files; ``zoo_info.json``
and the card are written last, so a zoo folder without ``zoo_info.json`` is never mistaken for a complete one.

What makes a zoo folder trustworthy (``README.md``, "A zoo folder loads as exactly the zoo in it"):

- every resume file in ``.build/`` carries a SHA-256 of its tensors in its safetensors header, checked when read;
- ``zoo_info.json`` records every Parquet file of the zoo (name, bytes, rows, SHA-256) and a fingerprint of them all;
  :func:`load_zoo` checks the files against it, keys the ``datasets`` cache by that fingerprint and checks the rows
  it got against the recorded counts, splits and architecture;
- a lock file ``<out>/.<zoo>.lock`` (``flock``; the holder's pid, host and start time inside) keeps two builds of
  one zoo from running at once;
- under ``torchrun`` / ``accelerate launch`` every process trains the shards ``index % world_size == rank`` and
  writes their Parquet files; rank 0 writes ``zoo_info.json`` and the card when all shares are done.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..atomic import atomic_path, write_json_atomic, write_text_atomic
from ..checks import hub_endpoint, hub_unreachable, say
from ..hub.cards import ACCURACY_PLOT, render_dataset_card, write_accuracy_plot
from .filter import DIVERGED, drop_reason, drop_reasons
from .image_data import SPLITS, data_provenance, load_image_dataset
from .population import NetworkConfig, Population
from .recipes import BuildOptions, ZooRecipe, select_networks

ZOO_FORMAT_VERSION = 1
SPLIT_FRACTIONS = (0.70, 0.15, 0.15)


class ZooExistsError(FileExistsError):
    """The output folder already holds a different zoo of the same name."""


class ZooIntegrityError(ValueError):
    """A zoo file (or a build's resume file) is not what was written: damaged, truncated, or from another build."""


class ZooLockedError(FileExistsError):
    """Another process is building the same zoo into the same folder."""


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

    Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1 in the environment) the processes share the work:
    each trains the shards ``index % world_size == rank`` and writes their Parquet files; rank 0 writes
    ``zoo_info.json`` and the card once every share is done. The shard plan does not depend on the number of
    processes, so the zoo is identical to a one-process build with the same ``chunk_size``.

    Args:
        recipe: What to build.
        out_dir: The zoo folder (a Hub dataset repo); may hold other zoos.
        options: Command-line overrides.
        data_dir: Where to look for image data (see :func:`hyperrep_hf.zoo.image_data.load_image_dataset`).
        overwrite: Replace a different zoo of the same name instead of refusing.
        progress: Show a progress bar and per-epoch summary lines.
        on_epoch_end: Called after every epoch of every shard (tests use it to interrupt a build).

    Returns:
        The folder of this zoo's files (``out_dir/<recipe.name>``).

    Raises:
        ZooExistsError: when the folder holds a different zoo of that name (and not ``overwrite``).
        ZooLockedError: when another process is building this zoo into this folder.
        ZooIntegrityError: when a resume file is damaged or a file in the folder belongs to another build.
    """
    options = options or BuildOptions()
    configs = select_networks(recipe, options)
    if options.num_models is not None and options.num_models > len(configs):
        raise ValueError(
            f"--num-models {options.num_models}: recipe {recipe.name!r} prescribes only {len(configs)} networks; "
            f"pass at most {len(configs)} (or leave --num-models out for all of them)."
        )
    epochs = recipe.epochs if options.epochs is None else options.epochs
    spec = recipe.network_spec()
    identity = {"recipe": recipe.to_dict(), "options": options.identity(), "format_version": ZOO_FORMAT_VERSION}
    zoo_dir = Path(out_dir) / recipe.name
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ValueError(f"--out {out_dir} is a file, not a folder; choose a folder for the zoo.")
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
    group = _ProcessGroup.from_environment()
    chunk_size = options.chunk_size or recipe.chunk_size
    if group.world_size > 1 and options.chunk_size is None:
        chunk_size = min(chunk_size, max(1, math.ceil(len(configs) / group.world_size)))
    shards = plan_shards(configs, chunk_size)
    lock = _BuildLock(Path(out_dir), recipe.name)
    zoo_existed = zoo_dir.exists()
    try:
        state = group.on_rank_zero(lambda: _prepare(lock, zoo_dir, identity, overwrite, shards, progress))
        if state == "complete":
            group.on_rank_zero(lambda: write_card(Path(out_dir)))  # repairs a card lost to a crash
            say(progress and group.rank == 0, f"[{recipe.name}] already complete in {zoo_dir}: nothing to train.")
            return zoo_dir
        if group.world_size > 1:
            say(
                progress,
                f"[{recipe.name}] process {group.rank + 1}/{group.world_size}: shards "
                f"{[i + 1 for i in range(len(shards)) if i % group.world_size == group.rank]} of {len(shards)} "
                f"(chunk size {chunk_size}; `--chunk-size {chunk_size}` in one process builds the same zoo)",
            )
        build_dir = zoo_dir / ".build"
        device = torch.device(options.device)
        if group.world_size > 1 and device.type == "cuda" and device.index is None:  # one GPU per process
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", group.rank)) % torch.cuda.device_count())
        splits = split_by_model(len(configs), options.seed)
        mine = [index for index in range(len(shards)) if index % group.world_size == group.rank]

        def train_my_shards() -> list[dict]:
            tensors = {name: tensor.to(device) for name, tensor in _data_tensors(data).items()}
            bar = tqdm(
                total=len(mine) * (epochs + 1), desc=recipe.name, unit="epoch", disable=None if progress else True
            )
            dropped: list[dict] = []
            for shard_index in mine:
                members = shards[shard_index]
                shard = _Shard(recipe.name, spec, shard_index, len(shards), members, configs, build_dir, options.seed)
                shard.check_or_claim(identity)
                dropped += recipe.apply_filter(
                    shard, shard.run(tensors, data.num_classes, epochs, device, bar, progress, on_epoch_end)
                )
                shard.write_parquet(zoo_dir, [splits[i] for i in members], configs)
            bar.close()
            return dropped

        try:
            dropped = group.everywhere(train_my_shards)
        except torch.OutOfMemoryError as error:
            largest = max(len(shard) for shard in shards)
            raise _out_of_memory(error, zoo_dir, zoo_existed, largest, group.world_size) from error
        info = group.on_rank_zero(
            lambda: _finish(recipe, options, spec, data, configs, splits, dropped, epochs, zoo_dir, shards)
        )
    finally:
        if group.rank == 0:
            lock.release()
        group.close()
    say(progress and group.rank == 0, _summary(recipe.name, zoo_dir, info, Path(out_dir)))
    return zoo_dir


def _out_of_memory(
    error: torch.OutOfMemoryError, zoo_dir: Path, zoo_existed: bool, population_size: int, world_size: int
) -> torch.OutOfMemoryError:
    """The build's out-of-memory error: which ``--chunk-size`` to pass, and what became of the folder.

    Nothing half-written stays behind: when no shard has trained an epoch yet, the build's files are removed (the
    folder too, if this build created it); trained epochs are kept for a resume and the message says so.
    """
    text = str(error)
    smaller = max(1, population_size // 2)  # what Population's own message suggests
    if "--chunk-size" not in text:  # raised outside a population (e.g. moving the data to the device)
        first_line = text.splitlines()[0] if text else ""
        text = f"Out of memory building {zoo_dir.name!r}: train fewer networks at once. ({first_line})"
    build_dir = zoo_dir / ".build"
    trained = sorted(
        {
            path.parent.name
            for pattern in ("shard-*/epoch-00001.safetensors", "shard-*/done.json")
            for path in build_dir.glob(pattern)
        }
    )
    if not trained and world_size == 1:
        shutil.rmtree(build_dir, ignore_errors=True)
        if not zoo_existed and zoo_dir.is_dir() and not any(zoo_dir.iterdir()):
            zoo_dir.rmdir()
        where = f"Nothing was written: run the command again with `--chunk-size {smaller}`."
    elif not trained:
        where = (
            f"Stop the other processes, delete {build_dir} (no epoch was trained yet) and run the command again "
            f"with `--chunk-size {smaller}`."
        )
    else:
        where = (
            f"The trained epochs of {len(trained)} shard(s) stay in {build_dir}: run the same command again to "
            f"resume them once memory is free, or rebuild with smaller populations: `--chunk-size {smaller} "
            "--overwrite`."
        )
    return torch.OutOfMemoryError(f"{text} {where}")


def _prepare(lock, zoo_dir: Path, identity: dict, overwrite: bool, shards: list[list[int]], progress: bool) -> str:
    """Takes the lock and checks (or clears, with overwrite) what the folder holds: 'complete' or 'build'."""
    lock.acquire()
    if _check_existing(zoo_dir, identity, overwrite) == "complete":
        lock.release()
        return "complete"
    expected = {f"{split}-{i:05d}-of-{len(shards):05d}.parquet" for split in SPLITS for i in range(len(shards))}
    strangers = sorted(p.name for p in zoo_dir.glob("*.parquet") if p.name not in expected)
    if strangers:
        raise ZooIntegrityError(
            f"{zoo_dir} holds Parquet files this build would not write: {', '.join(strangers)} (another build's "
            f"shards: a different recipe, seed or --chunk-size). Delete them, or pass --overwrite to rebuild "
            f"{zoo_dir.name!r} from scratch."
        )
    build_dir = zoo_dir / ".build"
    if (build_dir / "build.json").is_file():
        say(progress, f"[{zoo_dir.name}] resuming the interrupted build in {build_dir}")
    build_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(build_dir / "build.json", identity, trailing_newline=False)
    return "build"


def _finish(recipe, options, spec, data, configs, splits, dropped, epochs, zoo_dir, shards) -> dict:
    """Writes zoo_info.json (with every Parquet file's fingerprint) and the card, then removes ``.build/``."""
    info = _zoo_info(recipe, options, spec, data, configs, splits, dropped, epochs)
    expected = {f"{split}-{i:05d}-of-{len(shards):05d}.parquet" for split in SPLITS for i in range(len(shards))}
    files = sorted(p for p in zoo_dir.glob("*.parquet") if p.name in expected)
    info["files"] = [_file_record(path) for path in files]
    info["fingerprint"] = _fingerprint(info["files"])
    info["health"] = _health(files, info)
    rows = sum(f["rows"] for f in info["files"])
    if rows != info["counts"]["rows"]:
        raise ZooIntegrityError(
            f"{zoo_dir}: the Parquet files hold {rows} rows, but the build expected {info['counts']['rows']}; "
            f"delete {zoo_dir / '.build'} and run the command again (or pass --overwrite)."
        )
    write_json_atomic(zoo_dir / "zoo_info.json", info, trailing_newline=False)
    write_card(zoo_dir.parent)
    shutil.rmtree(zoo_dir / ".build")
    return info


def _summary(name: str, zoo_dir: Path, info: dict, out_dir: Path) -> str:
    counts, health = info["counts"], info["health"]
    kind, provenance = data_provenance(info)
    line = (
        f"[{name}] wrote {zoo_dir} ({counts['models']} models, {counts['rows']} rows, {counts['dropped']} dropped); "
        f"card {out_dir / 'README.md'}\n[{name}] {health['summary']}\n[{name}] trained on {kind} data: {provenance}"
    )
    if health["learned"] == 0:
        line += f"\n[{name}] WARNING: no network of this zoo learned; check the recipe (init, learning rate, epochs)."
    return line


def _health(files: list[Path], info: dict) -> dict:
    """Counts per reason of the networks that did not learn: diverged (dropped) and never above chance."""
    num_classes = info["dataset"]["num_classes"]
    num_test = info["dataset"]["sizes"]["test"]
    chance = 1.0 / num_classes
    # Guessing gives accuracy ~ Binomial(n, 1/C)/n; three standard errors above it is "left chance".
    threshold = chance + 3.0 * math.sqrt(chance * (1.0 - chance) / max(num_test, 1))
    best: dict[int, float] = {}
    for path in files:
        table = pq.read_table(path, columns=["model_id", "epoch", "test_accuracy"]).to_pydict()
        for model, epoch, accuracy in zip(table["model_id"], table["epoch"], table["test_accuracy"], strict=True):
            if epoch > 0:  # trained checkpoints only: an initialisation above chance by luck has not learned
                best[model] = max(best.get(model, -1.0), accuracy)
    at_chance = sum(1 for value in best.values() if value <= threshold)
    rule = info["recipe"].get("filter")
    diverged = sum(1 for entry in info["dropped"] if drop_reason(entry) == DIVERGED)
    learned = len(best) - at_chance
    dropped = drop_reasons(info["dropped"], rule)
    kept = {f"never left chance (best trained test accuracy ≤ {threshold:.3f})": at_chance}
    reasons = {f"{reason}; dropped": count for reason, count in dropped.items()}
    reasons |= {f"{reason}; kept": count for reason, count in kept.items()}
    summary = (
        f"{learned} of {info['counts']['configured']} networks learned; dropped: "
        + ", ".join(f"{count} {reason}" for reason, count in dropped.items())
        + "; kept: "
        + ", ".join(f"{count} {reason}" for reason, count in kept.items())
    )
    return {
        "learned": learned,
        "diverged": diverged,
        "at_chance": at_chance,
        "chance_accuracy": chance,
        "chance_threshold": threshold,
        "reasons": reasons,
        "summary": summary,
    }


def _file_record(path: Path) -> dict:
    """Name, size, row count and SHA-256 of one Parquet file of a zoo."""
    return {
        "name": path.name,
        "bytes": path.stat().st_size,
        "rows": pq.ParquetFile(path).metadata.num_rows,
        "sha256": _sha256_file(path),
    }


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _fingerprint(records: list[dict]) -> str:
    """One SHA-256 over the names and hashes of a zoo's files: changes whenever any row changes."""
    text = "\n".join(f"{r['name']} {r['sha256']}" for r in sorted(records, key=lambda r: r["name"]))
    return hashlib.sha256(text.encode()).hexdigest()


class _ProcessGroup:
    """The processes of one build: rank 0 of 1 alone, or a ``torch.distributed`` group (torchrun, accelerate)."""

    def __init__(self, rank: int = 0, world_size: int = 1, owned: bool = False) -> None:
        self.rank, self.world_size, self.owned = rank, world_size, owned

    @classmethod
    def from_environment(cls) -> _ProcessGroup:
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        import torch.distributed as dist

        owned = not dist.is_initialized()
        if owned:
            dist.init_process_group("gloo")
        return cls(dist.get_rank(), dist.get_world_size(), owned)

    def on_rank_zero(self, work: Callable):
        """Runs ``work`` on rank 0 and hands its result (or its error) to every rank."""
        result, error = None, None
        if self.rank == 0:
            try:
                result = work()
            except Exception as caught:  # re-raised below, on every rank
                error = caught
        if self.world_size > 1:
            import torch.distributed as dist

            shared = [(result, None if error is None else (type(error).__name__, str(error)))]
            dist.broadcast_object_list(shared, src=0)
            result, failure = shared[0]
            if failure is not None and error is None:
                raise _rank_error(failure, 0)
        if error is not None:
            raise error
        return result

    def everywhere(self, work: Callable) -> list:
        """Runs ``work`` on every rank; returns the concatenation of the ranks' lists, or raises the first error."""
        result, error = [], None
        try:
            result = work()
        except Exception as caught:
            error = caught
        if self.world_size == 1:
            if error is not None:
                raise error
            return sorted(result, key=lambda d: d["model_id"])
        import torch.distributed as dist

        gathered = [None] * self.world_size
        failure = None if error is None else (type(error).__name__, str(error))
        dist.all_gather_object(gathered, (result, failure))
        if error is not None:
            raise error
        for rank, (_, other) in enumerate(gathered):
            if other is not None:
                raise _rank_error(other, rank)
        return sorted((item for part, _ in gathered for item in part), key=lambda d: d["model_id"])

    def close(self) -> None:
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.owned = False


def _rank_error(failure: tuple[str, str], rank: int) -> Exception:
    kind, message = failure
    known = {cls.__name__: cls for cls in (ZooExistsError, ZooIntegrityError, ZooLockedError, ValueError)}
    known["OutOfMemoryError"] = torch.OutOfMemoryError
    return known.get(kind, RuntimeError)(f"process {rank} of the build failed: {message}")


class _BuildLock:
    """``<out>/.<zoo>.lock``: an exclusive ``flock`` held for the whole build, with the holder written inside.

    The kernel drops a ``flock`` when its process dies, so a lock left by a killed build is simply taken over.
    """

    def __init__(self, out_dir: Path, name: str) -> None:
        self.path = out_dir / f".{name}.lock"
        self.handle = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "an unknown process"
                handle.close()
                raise ZooLockedError(
                    f"zoo {self.path.name[1:-5]!r} in {self.path.parent} is being built by {holder} (lock "
                    f"{self.path}). Wait for that build to finish (then run this command again: it resumes or "
                    "finds the zoo complete), or stop it first."
                ) from None
            try:  # the file may have been removed by the previous holder between open and flock: retry
                if os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        since = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime())
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on host {socket.gethostname()} since {since}\n")
        handle.flush()
        self.handle = handle

    def release(self) -> None:
        if self.handle is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()
        self.handle = None


def _check_existing(zoo_dir: Path, identity: dict, overwrite: bool) -> str:
    """'complete', 'resume' or 'new'; raises ZooExistsError on a different zoo unless overwriting."""
    for record_path, state in ((zoo_dir / "zoo_info.json", "complete"), (zoo_dir / ".build" / "build.json", "resume")):
        if not record_path.is_file():
            continue
        record = _read_json(record_path, "delete it, or pass --overwrite to rebuild the zoo")
        recorded = {key: record.get(key) for key in identity}
        if recorded == identity:
            if state == "complete" and overwrite:
                try:  # a damaged complete zoo is rebuilt by --overwrite, as its load error advises
                    _verified_files(zoo_dir, record)
                except ZooIntegrityError:
                    shutil.rmtree(zoo_dir)
                    return "new"
            elif state == "complete":
                _verified_files(zoo_dir, record)  # never "already complete" over a damaged file
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

    def check_or_claim(self, identity: dict) -> None:
        """Writes ``shard.json`` (which networks, of which build) or refuses a shard folder of another build."""
        claim = {
            "build": hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest(),
            "shard": self.index,
            "num_shards": self.num_shards,
            "members": self.members,
            "seeds": [config.seed for config in self.configs],
        }
        path = self.folder / "shard.json"
        if path.is_file():
            found = _read_json(path, f"delete {self.folder} (that shard restarts)")
            if found != claim:
                raise ZooIntegrityError(
                    f"{self.folder} belongs to another build (different recipe, seed, --num-models or "
                    f"--chunk-size: it holds networks {found.get('members', '?')[:5]}…, this build's shard "
                    f"{self.index + 1} is {self.members[:5]}…). Delete {self.folder} (that shard restarts), or "
                    "pass --overwrite to rebuild the zoo."
                )
            return
        if self.folder.exists() and any(self.folder.iterdir()):
            raise ZooIntegrityError(
                f"{self.folder} holds resume files but no shard.json (written by an older hyperrep_hf or another "
                f"build); delete {self.folder} (that shard restarts), or pass --overwrite to rebuild the zoo."
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, claim, trailing_newline=False)

    def run(self, tensors, num_classes, epochs, device, bar, progress, on_epoch_end) -> list[dict]:
        """Trains (or resumes) the shard to the last epoch; returns the dropped models."""
        if (self.folder / "done.json").is_file():
            bar.update(epochs + 1)
            return _read_json(self.folder / "done.json", f"delete {self.folder} (that shard restarts)")["dropped"]
        self.folder.mkdir(parents=True, exist_ok=True)
        population = Population(self.spec, self.configs, device)
        dropped_at = torch.full((len(self.members),), -1, dtype=torch.long)
        first_epoch = 0
        state_path = self.folder / "state.safetensors"
        if state_path.is_file():
            state = _load_verified(state_path, self.folder)
            population.load_state_dict(state)
            dropped_at = state["dropped_at"]
            first_epoch = int(state["epoch"]) + 1
            bar.update(first_epoch)
            if progress:
                bar.write(f"[{self.zoo}] shard {self.index + 1}/{self.num_shards}: resuming at epoch {first_epoch}")
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
        write_json_atomic(self.folder / "done.json", {"dropped": dropped, "epochs": epochs}, trailing_newline=False)
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
        done = _read_json(self.folder / "done.json", f"delete {self.folder} (that shard restarts)")
        dropped_ids = {d["model_id"] for d in done["dropped"]}
        epochs = [
            _load_verified(self.folder / f"epoch-{epoch:05d}.safetensors", self.folder)
            for epoch in range(done["epochs"] + 1)
        ]
        for split in SPLITS:
            rows = [i for i, model in enumerate(self.members) if splits[i] == split and model not in dropped_ids]
            schema = _row_schema(self.spec.num_parameters, self.spec.num_classes)
            table = _rows_table(schema, [self.members[i] for i in rows], [self.configs[i] for i in rows], rows, epochs)
            if table.num_rows == 0:  # readers choke on empty Parquet files; a split may span fewer shards
                continue
            path = zoo_dir / f"{split}-{self.index:05d}-of-{self.num_shards:05d}.parquet"
            with atomic_path(path) as temporary:
                pq.write_table(table, temporary, row_group_size=max(1, min(table.num_rows, 4096)))


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


class ParquetShardWriter:
    """Streams one split's rows into Parquet shards of at most ``rows_per_shard`` rows, row group by row group.

    Used by the importers (:mod:`hyperrep_hf.zoo.importers`), whose sources do not fit in memory. Shards are written
    under hidden temporary names; :meth:`finish` gives them their final names ``<split>-XXXXX-of-NNNNN.parquet``
    (the total is known only then), so a killed import never leaves a shard that looks finished.

    Args:
        zoo_dir: The zoo's folder (``<out>/<zoo>``).
        split: ``"train"``, ``"validation"`` or ``"test"``.
        schema: The rows' Arrow schema (every table written must have it).
        rows_per_shard: Rows per Parquet file.
    """

    def __init__(self, zoo_dir: Path, split: str, schema: pa.Schema, rows_per_shard: int = 20_000) -> None:
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be positive, got {rows_per_shard}.")
        self.zoo_dir, self.split, self.schema, self.rows_per_shard = Path(zoo_dir), split, schema, rows_per_shard
        self.temporary_paths: list[Path] = []
        self.num_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_shard = 0

    def write(self, table: pa.Table) -> None:
        """Appends rows (a table with :attr:`schema`), opening a new shard whenever the current one is full."""
        offset = 0
        while offset < table.num_rows:
            if self._writer is None or self._rows_in_shard >= self.rows_per_shard:
                self._open_next()
            take = min(table.num_rows - offset, self.rows_per_shard - self._rows_in_shard)
            self._writer.write_table(table.slice(offset, take), row_group_size=4096)
            self._rows_in_shard += take
            self.num_rows += take
            offset += take

    def _open_next(self) -> None:
        if self._writer is not None:
            self._writer.close()
        path = self.zoo_dir / f".{self.split}-{len(self.temporary_paths):05d}.parquet.tmp"
        self.temporary_paths.append(path)
        self._writer = pq.ParquetWriter(path, self.schema)
        self._rows_in_shard = 0

    def finish(self) -> list[Path]:
        """Closes the last shard and renames every shard to its final name; returns the final paths."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        total = len(self.temporary_paths)
        final = []
        for index, temporary in enumerate(self.temporary_paths):
            path = self.zoo_dir / f"{self.split}-{index:05d}-of-{total:05d}.parquet"
            os.replace(temporary, path)
            final.append(path)
        return final

    def abort(self) -> None:
        """Closes and deletes the unfinished shards."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for path in self.temporary_paths:
            path.unlink(missing_ok=True)


def write_zoo_info(zoo_dir: Path, info: dict) -> Path:
    """Writes ``zoo_info.json`` atomically (the last file of a zoo: its presence marks the zoo complete)."""
    path = Path(zoo_dir) / "zoo_info.json"
    info["files"] = [_file_record(shard) for shard in sorted(Path(zoo_dir).glob("*.parquet"))]
    info["fingerprint"] = _fingerprint(info["files"])
    write_json_atomic(path, info, trailing_newline=False)
    return path


def local_zoo_infos(out_dir: Path) -> list[dict]:
    """Every complete zoo's ``zoo_info.json`` with its final test accuracies and non-empty splits (for the card)."""
    infos = []
    for info_path in sorted(Path(out_dir).glob("*/zoo_info.json")):
        info = _read_json(info_path, f"rebuild the zoo with `hyperrep zoo build {info_path.parent.name} --overwrite`")
        info["final_test_accuracy"] = _final_accuracies(info_path.parent, info["epochs"])
        info["available_splits"] = [s for s in SPLITS if any(info_path.parent.glob(f"{s}-*.parquet"))]
        infos.append(info)
    return infos


def write_card(out_dir: Path) -> Path:
    """(Re)writes the folder's README.md dataset card (and each zoo's accuracy plot) from every complete zoo."""
    infos = local_zoo_infos(out_dir)
    for info in infos:
        write_accuracy_plot(Path(out_dir) / info["name"] / ACCURACY_PLOT, info["final_test_accuracy"], info["name"])
    card = render_dataset_card(infos)
    path = out_dir / "README.md"
    if path.is_file() and path.read_text() == card:
        return path
    return write_text_atomic(path, card)


def _final_accuracies(zoo_dir: Path, epochs: int) -> list[float]:
    return final_test_accuracies(sorted(zoo_dir.glob("*.parquet")), epochs)


def final_test_accuracies(shards: Iterable, epochs: int) -> list[float]:
    """Test accuracies at the last epoch, from Parquet shards (paths or open files; two columns read, for cards)."""
    values = []
    for shard in shards:
        table = pq.read_table(shard, columns=["epoch", "test_accuracy"])
        epoch = table.column("epoch").to_numpy()
        values += table.column("test_accuracy").to_numpy()[epoch == epochs].tolist()
    return values


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Saves tensors with the SHA-256 of their contents in the safetensors header (checked by _load_verified)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    with atomic_path(path) as temporary:
        save_file(tensors, temporary, metadata={"sha256": _tensors_digest(tensors)})


def _tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        flat = torch.empty(tensor.numel(), dtype=tensor.dtype).copy_(tensor.reshape(-1))  # stride 1, whatever came
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _load_verified(path: Path, shard_folder: Path) -> dict[str, torch.Tensor]:
    """Reads a resume file and checks its checksum; a damaged one is named, with what to do."""
    advice = f"Delete {shard_folder} (that shard restarts from epoch 0) or pass --overwrite to rebuild the zoo."
    if not path.is_file():
        raise ZooIntegrityError(f"resume file {path} is missing. {advice}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            recorded = (handle.metadata() or {}).get("sha256")
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ZooIntegrityError(f"resume file {path} is damaged ({error}). {advice}") from error
    if recorded is None:
        raise ZooIntegrityError(f"resume file {path} has no checksum (an older hyperrep_hf wrote it). {advice}")
    if _tensors_digest(tensors) != recorded:
        raise ZooIntegrityError(f"resume file {path} is damaged (its checksum does not match its contents). {advice}")
    return tensors


def _read_json(path: Path, advice: str) -> dict:
    """A JSON file of a zoo or a build; a damaged one is named, with what to do."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ZooIntegrityError(f"{path} is damaged (not valid JSON: {error}); {advice}.") from error
    if not isinstance(data, dict):
        raise ZooIntegrityError(f"{path} is damaged (holds {type(data).__name__}, not an object); {advice}.")
    return data


def parse_zoo_argument(zoo: str | os.PathLike) -> tuple[str, str | None]:
    """Splits how a user names a zoo, ``DIR[:CONFIG]`` or ``org/repo[:CONFIG]``, into (folder or repo, config or None).

    The text after the last colon is the config name unless it is empty, holds a path separator (``C:/zoos``), has
    nothing before it, or the whole text is an existing path (a folder whose name holds a colon).
    """
    text = os.fspath(zoo)
    head, separator, tail = text.rpartition(":")
    if separator and head and tail and "/" not in tail and "\\" not in tail and not Path(text).exists():
        return head, tail
    return text, None


def load_zoo(path_or_repo: str | os.PathLike, config: str | None = None, **load_dataset_kwargs):
    """Reads a zoo as a ``DatasetDict`` (train / validation / test) and its ``zoo_info``: exactly the folder's rows.

    A local zoo's Parquet files are checked against the names, sizes and SHA-256 recorded in ``zoo_info.json``
    (about 0.1 s for the 76k-row TETRIS-SEED zoo), read through a ``datasets`` cache keyed by their content
    fingerprint (so two zoos in folders of the same base name, or a folder rebuilt with ``--overwrite``, never share
    a cache entry), and the rows that come back are checked against the recorded counts, splits and architecture.

    Args:
        path_or_repo: A zoo folder, or a dataset repo id on the Hub (``HF_ENDPOINT`` is honoured).
        config: The zoo's name inside the folder; may be omitted when the folder holds exactly one.
        **load_dataset_kwargs: Passed on to ``datasets.load_dataset`` (e.g. ``cache_dir``, ``streaming``).

    Returns:
        (dataset_dict, zoo_info) where ``dataset_dict["train"].with_format("torch")["weights"][:]`` is
        (rows, num_parameters) float32.

    Raises:
        FileNotFoundError: when there is no zoo at the path, or not the one asked for.
        ZooIntegrityError: when a file is damaged, missing, foreign, or the rows disagree with ``zoo_info.json``.
    """
    import datasets

    local = Path(path_or_repo)
    if local.is_dir():
        config = _local_config(local, config)
        zoo_dir = local / config
        info = _read_json(zoo_dir / "zoo_info.json", f"rebuild the zoo with `hyperrep zoo build {config} --overwrite`")
        _check_format(info, config)
        data_files = _verified_files(zoo_dir, info)
        if not data_files:
            summary = info.get("health", {}).get("summary", f"all {len(info.get('dropped', []))} networks dropped")
            raise ValueError(
                f"zoo {config!r} in {local} holds no networks: every one was dropped ({summary}). Its card "
                "(README.md) counts them per reason; change the recipe (learning rate, init, epochs or its filter) "
                "and rebuild it with --overwrite."
            )
        fingerprint = info.get("fingerprint") or _fingerprint(
            [{"name": name, "sha256": _sha256_file(zoo_dir / name)} for name in _names(data_files)]
        )
        streaming = load_dataset_kwargs.get("streaming", False)
        if not streaming:
            cache_root = load_dataset_kwargs.pop("cache_dir", None) or datasets.config.HF_DATASETS_CACHE
            load_dataset_kwargs["cache_dir"] = str(Path(cache_root) / "hyperrep_zoos" / fingerprint[:32])
        try:
            dataset = datasets.load_dataset("parquet", data_files=data_files, **load_dataset_kwargs)
        except (OSError, ValueError, pa.ArrowException) as error:
            raise ZooIntegrityError(
                f"zoo {config!r} in {local}: its Parquet files could not be read ({error}); rebuild it with "
                f"`hyperrep zoo build {config} --out {local} --overwrite`."
            ) from error
        where = str(zoo_dir)
    else:
        if _looks_like_path(str(path_or_repo)):
            raise FileNotFoundError(
                f"no zoo at {path_or_repo}: the folder does not exist. Build one with "
                f"`hyperrep zoo build RECIPE --out {path_or_repo}`, or give a Hub dataset repo id (org/name)."
            )
        config, info = _hub_info(str(path_or_repo), config, cache_only=hub_unreachable())
        _check_format(info, config)
        dataset = datasets.load_dataset(str(path_or_repo), config, **load_dataset_kwargs)
        where = f"{path_or_repo} ({config})"
    if isinstance(dataset, datasets.DatasetDict):
        check_rows(dataset, info, where)
    return dataset, info


def _local_config(local: Path, config: str | None) -> str:
    available = sorted(p.parent.name for p in local.glob("*/zoo_info.json"))
    if config is None:
        if not available and (local / "zoo_info.json").is_file():
            raise FileNotFoundError(
                f"{local} is one zoo's own folder; pass the folder that holds it and the zoo's name: "
                f"load_zoo({str(local.parent)!r}, {local.name!r}), or --zoo {local.parent}:{local.name}."
            )
        if not available:
            raise FileNotFoundError(
                f"no zoo at {local}: it holds no complete zoo (no <zoo>/zoo_info.json); build one with "
                "`hyperrep zoo build RECIPE --out DIR`."
            )
        if len(available) > 1:
            infos = {name: _read_json(local / name / "zoo_info.json", "rebuild that zoo") for name in available}
            _check_one_architecture(infos, f"{local} holds zoos")
            raise ValueError(f"{local} holds {len(available)} zoos ({', '.join(available)}); name one.")
        return available[0]
    if config not in available:
        raise FileNotFoundError(
            f"{local} holds no complete zoo {config!r} (complete: {', '.join(available) or 'none'}). "
            f"A folder {local / config} with a .build/ inside is an interrupted build: re-run its command."
        )
    return config


def _check_format(info: dict, config: str) -> None:
    if info.get("format_version", 0) > ZOO_FORMAT_VERSION:
        raise ValueError(
            f"Zoo {config!r} has format version {info['format_version']}; this hyperrep_hf reads up to "
            f"{ZOO_FORMAT_VERSION}. Upgrade hyperrep_hf."
        )
    for key in ("architecture", "counts", "splits", "epochs"):
        if key not in info:
            raise ZooIntegrityError(f"zoo {config!r}: zoo_info.json has no {key!r}; rebuild the zoo with --overwrite.")


def _names(data_files: dict[str, list[str]]) -> list[str]:
    return [Path(file).name for files in data_files.values() for file in files]


def _shipped_recipe_of(info: dict) -> str | None:
    """The shipped recipe that built this zoo (its recorded recipe equals the recipe's own record), if any."""
    from .recipes import list_recipes, load_recipe

    recorded = info.get("recipe")
    for candidate in list_recipes():
        try:
            if load_recipe(candidate).to_dict() == recorded:
                return candidate
        except ValueError:  # a broken recipe file is reported where it is built, not here
            continue
    return None


def _verified_files(zoo_dir: Path, info: dict) -> dict[str, list[str]]:
    """The zoo's Parquet files by split, checked against ``zoo_info.json``'s records (when it has them)."""
    name = info.get("name", zoo_dir.name)
    flags = {"num_models": "--num-models", "epochs": "--epochs", "subset": "--subset", "seed": "--seed"}
    options = info.get("options") or {}
    given = "".join(f" {flag} {options[key]}" for key, flag in flags.items() if options.get(key))
    recipe = _shipped_recipe_of(info)  # e.g. a data-version-1 zoo: `tetris_seed_v1`, not today's `tetris_seed`
    if recipe is None:
        recipe = name
        if info.get("recipe", {}).get("data_version", 1) != 1:
            given += f" --data-version {info['recipe']['data_version']}"
    rebuild = f"rebuild the zoo with `hyperrep zoo build {recipe} --out {zoo_dir.parent}{given} --overwrite`"
    present = sorted(zoo_dir.glob("*.parquet"))
    records = info.get("files")
    if records is not None:
        recorded = {record["name"]: record for record in records}
        foreign = [p.name for p in present if p.name not in recorded]
        if foreign:
            raise ZooIntegrityError(
                f"{zoo_dir} holds Parquet files its zoo_info.json does not list: {', '.join(foreign)} (from another "
                f"build?). Delete them, or {rebuild}."
            )
        missing = sorted(set(recorded) - {p.name for p in present})
        if missing:
            raise ZooIntegrityError(
                f"{zoo_dir} lacks Parquet files its zoo_info.json lists: {', '.join(missing)}; {rebuild}."
            )
        for path in present:
            record = recorded[path.name]
            size = path.stat().st_size
            if size != record["bytes"]:
                raise ZooIntegrityError(
                    f"{path} is damaged or was replaced: {size} bytes, zoo_info.json records "
                    f"{record['bytes']}; {rebuild}."
                )
            if _sha256_file(path) != record["sha256"]:
                raise ZooIntegrityError(
                    f"{path} is damaged: its SHA-256 differs from the one zoo_info.json records; {rebuild}."
                )
    data_files = {}
    for split in SPLITS:
        files = [str(p) for p in present if p.name.startswith(f"{split}-")]
        if files:
            data_files[split] = files
    if not data_files and records == [] and info.get("counts", {}).get("models") == 0:
        return data_files  # a complete zoo whose every network was dropped (load_zoo says so)
    if not data_files:
        raise ZooIntegrityError(f"{zoo_dir} holds no Parquet files; {rebuild}.")
    return data_files


def _looks_like_path(text: str) -> bool:
    """True for what can only be a local path (a Hub repo id is ``name`` or ``org/name``)."""
    return (
        text.startswith((".", "/", "~"))
        or "\\" in text
        or text.count("/") > 1
        or Path(text).exists()
        or text.endswith("/")
    )


def _hub_info(repo: str, config: str | None, cache_only: bool = False) -> tuple[str, dict]:
    """The config name and ``zoo_info.json`` of a Hub zoo; ``cache_only`` (the Hub cannot be reached): from the cache.

    Without network the zoo must be named with its config (``REPO:CONFIG``) and be in the Hub cache; anything else
    is reported at once instead of after huggingface_hub's half a minute of retries.
    """
    import datasets
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    if cache_only:  # a config is needed: listing a repo's configs takes the Hub
        cached = try_to_load_from_cache(repo, f"{config}/zoo_info.json", repo_type="dataset") if config else None
        if not isinstance(cached, str):  # None (not cached) or the cache's "known not to exist" marker
            raise FileNotFoundError(
                f"no zoo at {repo}: no such folder (in {os.getcwd()}), and the Hub at {hub_endpoint()} cannot be "
                f"reached to look for a dataset repo of that name (nor is {repo}"
                f"{f':{config}' if config else ''} in the Hub cache). Give the zoo's folder (`hyperrep zoo build "
                "RECIPE --out DIR` writes one), or check the network (and HF_ENDPOINT)."
            )
        return config, _read_json(Path(cached), f"the cached Hub zoo {repo} has a damaged {config}/zoo_info.json")
    try:
        if config is None:
            names = datasets.get_dataset_config_names(repo)
            if len(names) > 1:  # the first is taken, unless the zoos are of different architectures
                infos = {name: _hub_info(repo, name)[1] for name in names}
                _check_one_architecture(infos, f"the Hub dataset repo {repo} holds zoos")
            config = names[0]
        info_path = hf_hub_download(repo, f"{config}/zoo_info.json", repo_type="dataset")
    except Exception as error:  # connection, not found, offline: all mean "no zoo here" to the user
        raise FileNotFoundError(
            f"no zoo at {repo}: it is not a local folder, and the Hub dataset repo {repo!r}"
            f"{f' (config {config!r})' if config else ''} could not be read ({type(error).__name__}: {error})."
        ) from error
    return config, _read_json(Path(info_path), f"the Hub repo {repo} holds a damaged {config}/zoo_info.json")


class MixedArchitecturesError(ValueError):
    """Zoos of different architectures where an encoder needs networks of one."""


def describe_architecture(architecture: dict) -> str:
    """``mnist_cnn_dropout (2464 parameters)``: an architecture record's name and size."""
    return f"{architecture.get('name', 'unnamed')} ({architecture.get('num_parameters', '?')} parameters)"


def _check_one_architecture(infos: dict[str, dict], where: str) -> None:
    """Refuses zoos (name → zoo_info) whose networks differ in parameter names or shapes, naming each one's."""
    shapes = {
        name: [(p["name"], list(p["shape"])) for p in info["architecture"]["parameters"]]
        for name, info in infos.items()
    }
    if len({json.dumps(value) for value in shapes.values()}) > 1:
        listing = ", ".join(f"{name}: {describe_architecture(info['architecture'])}" for name, info in infos.items())
        raise MixedArchitecturesError(
            f"{where} of different architectures ({listing}); an encoder reads networks of one architecture. "
            "Name the zoo (DIR:CONFIG or REPO:CONFIG), or put zoos of one architecture together."
        )


def check_one_architecture(zoos: list[str | os.PathLike]) -> None:
    """Refuses zoo arguments (``DIR[:CONFIG]`` / ``REPO[:CONFIG]``) whose networks are of different architectures.

    Reads only each zoo's ``zoo_info.json`` (the folder's, or the Hub repo's).

    Raises:
        MixedArchitecturesError: Naming every zoo and its architecture.
        FileNotFoundError: A zoo that is not there.
    """
    infos = {}
    for zoo in zoos:
        source, config = parse_zoo_argument(zoo)
        local = Path(source)
        if local.is_dir():
            config = _local_config(local, config)
            infos[os.fspath(zoo)] = _read_json(local / config / "zoo_info.json", "rebuild that zoo")
        else:
            infos[os.fspath(zoo)] = _hub_info(str(source), config)[1]
    _check_one_architecture(infos, "the zoos given are")


def check_rows(dataset, info: dict, where: str) -> None:
    """Checks a loaded zoo's rows against its ``zoo_info.json``: splits, rows per split, models, weight length.

    Raises:
        ZooIntegrityError: naming what disagrees (a stale cache, a damaged or foreign file, a wrong zoo_info.json).
    """
    rows_per_model = info["epochs"] + 1
    recorded_rows = info.get("counts", {}).get("rows_per_split", {})  # imported zoos: checkpoints vary per model
    expected_splits = {split for split, models in info["splits"].items() if models}
    if set(dataset) != expected_splits:
        raise ZooIntegrityError(
            f"zoo {where}: splits {sorted(dataset)} loaded, zoo_info.json records {sorted(expected_splits)}."
        )
    num_parameters = info["architecture"].get("num_parameters")
    for split, rows in dataset.items():
        models = info["splits"][split]
        expected = recorded_rows.get(split, len(models) * rows_per_model)
        if len(rows) != expected:
            raise ZooIntegrityError(
                f"zoo {where}: the {split} split has {len(rows)} rows, zoo_info.json records {expected} "
                f"({len(models)} models). The files or the cache are not this "
                "zoo's: rebuild it with --overwrite (or clear the datasets cache)."
            )
        loaded = rows.unique("model_id")
        if sorted(loaded) != sorted(models):
            raise ZooIntegrityError(
                f"zoo {where}: the {split} split holds models other than zoo_info.json records "
                f"(e.g. {sorted(set(loaded) ^ set(models))[:5]}); rebuild it with --overwrite."
            )
        length = getattr(rows.features["weights"], "length", None)
        if length != num_parameters:
            raise ZooIntegrityError(
                f"zoo {where}: rows hold {length} weights per network, but zoo_info.json's architecture "
                f"{info['architecture'].get('name')!r} has {num_parameters} parameters; the zoo_info.json is not "
                "this zoo's: rebuild it with --overwrite."
            )
    if sum(len(rows) for rows in dataset.values()) != info["counts"]["rows"]:
        raise ZooIntegrityError(f"zoo {where}: the splits' rows do not add up to counts.rows in zoo_info.json.")
