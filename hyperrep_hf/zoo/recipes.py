"""Zoo recipes: one small YAML file per zoo, in the repository's ``zoos/`` folder.

A recipe names the data set, the network family, the number of epochs and the population: fixed
hyper-parameters, a grid of varied ones and the seeds each grid point is trained with::

    name: tetris_hyp
    dataset: tetris
    network: tetris_mlp
    epochs: 75
    seeds: [1, 100]          # every grid point with seeds 1..100 ("fixed" seeds) — or
    # random_seeds: 5        # 5 seeds per grid point drawn from the build's master seed
    fixed: {optimizer: adam, batch_size: 32}
    # configurations: 64     # only a seeded random choice of 64 grid points (from the build's master seed)
    grid:
      activation: [tanh, relu]
      learning_rate: [1.0e-3, 1.0e-4, 1.0e-5]

:class:`BuildOptions` are the command-line overrides for the "mini" variants a CPU can build.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import torch
import yaml

from .filter import FILTER_KEYS
from .image_data import check_data_version, check_generator_options
from .networks import KNOWN_NETWORKS, NetworkSpec
from .population import NetworkConfig

RECIPE_KEYS = {
    "name",
    "description",
    "dataset",
    "network",
    "epochs",
    "seeds",
    "random_seeds",
    "fixed",
    "grid",
    "chunk_size",
    "reference",
    "data_version",
    "data_options",
    "filter",
    "configurations",
}
DATA_OPTION_KEYS = {"train_size", "noise_std", "label_noise"}


@dataclass(frozen=True)
class BuildOptions:
    """Overrides of a recipe for one build (``hyperrep zoo build … --num-models N --epochs E …``).

    Attributes:
        num_models: Keep this many networks (a seeded random choice when the recipe has more).
        epochs: Train this many epochs instead of the recipe's.
        subset: Keep at most this many images of each split of the data set.
        seed: Master seed: data generation, split by model, the choice of networks, random seeds, dropout.
        device: Where to train ("cpu", "cuda", "cuda:1"); not part of the zoo's identity.
        chunk_size: Networks trained at once (memory); not part of the zoo's identity.
    """

    num_models: int | None = None
    epochs: int | None = None
    subset: int | None = None
    seed: int = 0
    device: str = "cpu"
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("num_models", "epochs", "subset", "chunk_size"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"--{name.replace('_', '-')} must be a positive integer (≥ 1), got {value!r}.")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"--seed must be a non-negative integer, got {self.seed!r}.")
        from ..checks import check_device

        check_device(self.device)  # unknown, or CUDA / MPS that this machine or PyTorch build lacks

    def identity(self) -> dict:
        """The options that change the zoo's contents (what a resumed build must repeat)."""
        return {"num_models": self.num_models, "epochs": self.epochs, "subset": self.subset, "seed": self.seed}


@dataclass(frozen=True)
class ZooRecipe:
    """A zoo's prescription, as read from ``zoos/<name>.yaml`` (see the module docstring)."""

    name: str
    dataset: str
    network: str | dict
    epochs: int
    description: str = ""
    seeds: tuple[int, int] | None = None
    random_seeds: int | None = None
    fixed: dict = field(default_factory=dict)
    grid: dict = field(default_factory=dict)
    chunk_size: int = 1000
    reference: str = ""
    data_version: int = 1
    data_options: dict = field(default_factory=dict)
    filter: dict | None = None
    configurations: int | None = None

    def __post_init__(self) -> None:
        where = f"recipe {self.name!r}"
        try:
            check_data_version(self.dataset, self.data_version)
        except ValueError as error:
            raise ValueError(f"{where}: 'data_version': {error}") from None
        if not isinstance(self.data_options, dict) or not set(self.data_options) <= DATA_OPTION_KEYS:
            raise ValueError(
                f"{where}: 'data_options' must be a mapping with keys among {sorted(DATA_OPTION_KEYS)}, "
                f"got {self.data_options!r}."
            )
        size = self.data_options.get("train_size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"{where}: data_options 'train_size' must be a positive integer, got {size!r}.")
        try:
            check_generator_options(
                self.dataset,
                self.data_version,
                self.data_options.get("noise_std"),
                self.data_options.get("label_noise"),
            )
        except ValueError as error:
            raise ValueError(f"{where}: 'data_options': {error}") from None
        if self.filter is not None:
            if not isinstance(self.filter, dict) or not self.filter or not set(self.filter) <= set(FILTER_KEYS):
                raise ValueError(
                    f"{where}: 'filter' must be a mapping with one or both of {list(FILTER_KEYS)}, "
                    f"got {self.filter!r}."
                )
            threshold = self.filter.get("min_validation_accuracy", 0.5)
            if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 < threshold < 1:
                raise ValueError(f"{where}: filter 'min_validation_accuracy' must lie in (0, 1), got {threshold!r}.")
            limit = self.filter.get("max_abs_weight", 1.0)
            if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 < limit < float("inf"):
                raise ValueError(f"{where}: filter 'max_abs_weight' must be a finite number > 0, got {limit!r}.")
        if self.configurations is not None:
            total = math.prod(len(values) for values in self.grid.values() if isinstance(values, list))
            count = self.configurations
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= total:
                raise ValueError(
                    f"{where}: 'configurations' must be an integer from 1 to the grid's {total} points, got {count!r}."
                )
        if (self.seeds is None) == (self.random_seeds is None):
            raise ValueError(f"{where}: give exactly one of 'seeds: [first, last]' or 'random_seeds: count'.")
        if self.seeds is not None and (len(self.seeds) != 2 or self.seeds[0] > self.seeds[1]):
            raise ValueError(f"{where}: 'seeds' must be [first, last] with first ≤ last, got {self.seeds!r}.")
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"{where}: 'epochs' must be a non-negative integer, got {self.epochs!r}.")
        known = set(NetworkConfig.field_names()) - {"seed"}
        for key in (*self.fixed, *self.grid):
            if key not in known:
                raise ValueError(f"{where}: unknown hyper-parameter {key!r}; expected one of {sorted(known)}.")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ValueError(f"{where}: grid entry {key!r} must be a non-empty list, got {values!r}.")
        self.network_spec()  # fails early on a bad network
        self.networks(0)  # validates every hyper-parameter combination

    def network_spec(self) -> NetworkSpec:
        """The network family."""
        if isinstance(self.network, dict):
            return NetworkSpec.parse(
                self.network["input_shape"], self.network["layers"], self.network.get("name", self.name)
            )
        if self.network not in KNOWN_NETWORKS:
            raise ValueError(
                f"recipe {self.name!r}: unknown network {self.network!r}; use one of {sorted(KNOWN_NETWORKS)} "
                "or an inline {input_shape, layers} spec."
            )
        return KNOWN_NETWORKS[self.network]

    def networks(self, master_seed: int) -> list[NetworkConfig]:
        """Every network the recipe prescribes, in a fixed order (grid point, then seed)."""
        keys = list(self.grid)
        points = [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.grid.values())]
        if self.configurations is not None:  # a seeded choice of grid points, in grid order
            choice = torch.randperm(len(points), generator=torch.Generator().manual_seed(master_seed + 104_729))
            points = [points[index] for index in sorted(choice[: self.configurations].tolist())]
        configs = []
        generator = torch.Generator().manual_seed(master_seed)
        for point in points:
            if self.seeds is not None:
                seeds = list(range(self.seeds[0], self.seeds[1] + 1))
            else:
                seeds = torch.randint(1, 2**31 - 1, (self.random_seeds,), generator=generator).tolist()
            for seed in seeds:
                configs.append(NetworkConfig(seed=seed, **{**self.fixed, **point}))
        return configs

    def to_dict(self) -> dict:
        """JSON-ready recipe (as stored in ``zoo_info.json``).

        ``data_version`` 1 and empty ``data_options`` or ``filter`` are left out, so that a zoo built before these
        fields existed keeps its identity (its build resumes, its completed folder is recognised).
        """
        data = asdict(self)
        data["seeds"] = list(self.seeds) if self.seeds else None
        if self.data_version == 1:
            del data["data_version"]
        if not self.data_options:
            del data["data_options"]
        if self.filter is None:
            del data["filter"]
        if self.configurations is None:
            del data["configurations"]
        return data

    def data_arguments(self) -> dict:
        """Keyword arguments of :func:`hyperrep_hf.zoo.image_data.load_image_dataset` that the recipe fixes."""
        return {"version": self.data_version, **self.data_options}

    def apply_filter(self, shard, dropped: list[dict]) -> list[dict]:
        """Adds the networks of a finished shard that the recipe's ``filter`` drops to its dropped list.

        See :func:`hyperrep_hf.zoo.filter.filter_shard`; without a ``filter`` the list comes back unchanged.
        """
        if self.filter is None:
            return dropped
        from .filter import filter_shard

        return filter_shard(self.filter, shard.folder, shard.members, shard.configs, dropped)


def recipe_directory() -> Path:
    """The folder of the shipped recipes (``zoos/`` in the repository, ``hyperrep_hf.zoo_recipes`` when installed)."""
    override = os.environ.get("HYPERREP_RECIPES")
    if override:
        return Path(override)
    return Path(str(resources.files("hyperrep_hf.zoo_recipes")))


def list_recipes() -> list[str]:
    """Names of the shipped recipes."""
    return sorted(path.stem for path in recipe_directory().glob("*.yaml"))


def load_recipe(name_or_path: str | os.PathLike) -> ZooRecipe:
    """Reads a shipped recipe by name, or a recipe YAML file by path.

    Raises:
        ValueError: for an unknown recipe (listing the shipped ones) or an invalid recipe file.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = recipe_directory() / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(
            f"Unknown recipe {str(name_or_path)!r}; shipped recipes: {', '.join(list_recipes())} "
            "(or pass the path of a recipe .yaml file)."
        )
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ValueError(f"Recipe file {path} is not valid YAML ({' '.join(str(error).split())}); fix it.") from None
    if not isinstance(data, dict):
        raise ValueError(f"Recipe file {path} does not hold a mapping.")
    unknown = set(data) - RECIPE_KEYS
    if unknown:
        raise ValueError(f"Recipe file {path}: unknown keys {sorted(unknown)}; allowed: {sorted(RECIPE_KEYS)}.")
    data.setdefault("name", path.stem)
    if data.get("seeds") is not None:
        data["seeds"] = tuple(data["seeds"])
    return ZooRecipe(**data)


def select_networks(recipe: ZooRecipe, options: BuildOptions) -> list[NetworkConfig]:
    """The networks of one build: the recipe's, or ``options.num_models`` of them.

    A seed-only recipe keeps its first seeds (``--num-models 100`` of TETRIS-SEED is seeds 1..100); a recipe with
    a grid keeps a seeded random choice, so that a mini zoo still covers the grid.
    """
    configs = recipe.networks(options.seed)
    if options.num_models is None or options.num_models >= len(configs):
        return configs
    if not recipe.grid:
        return configs[: options.num_models]
    generator = torch.Generator().manual_seed(options.seed + 7919)
    keep = torch.randperm(len(configs), generator=generator)[: options.num_models].sort().values.tolist()
    return [configs[index] for index in keep]
