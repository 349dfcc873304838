"""Function-preserving weight-space augmentations on batches of flat weight vectors (training only).

All transforms take ``vectors`` of shape (batch, num_parameters) — the flat vector of the token contract: per
layer, weight row-major then bias — and an explicit ``torch.Generator``. They never modify their input.

- :class:`NeuronPermutation`: permutes hidden neurons / conv channels together with the matching inputs of the
  next layer (eq. 1 of the paper), so the network computes the same function. Precomputed as gather indices.
- :class:`NeuronSignFlip`: flips the sign of hidden neurons whose activation is odd (tanh) — incoming weights and
  bias and the matching inputs of the next layer — which also leaves the function unchanged.
- :class:`RandomErasing`: with probability p, a random contiguous block of the vector is set to 0.
- :class:`GaussianNoise`: multiplicative w·(1 + σ_m ε) and additive w + σ_a ε noise.
- :func:`augment_with_target`: one view and its reconstruction target — the clean vector in the view's neuron
  order (the permutation applied, noise and erasing not).
- :class:`TwoViewCollator`: a batch → two independently augmented copies + the clean vectors + view 1's target.

Permuting layer l by π (new neuron i = old neuron π[i])::

    W_l[i, :]      ← W_l[π[i], :]           b_l[i] ← b_l[π[i]]
    W_{l+1}[:, i]  ← W_{l+1}[:, π[i]]       (conv: the k×k kernel slice; after a flatten: the h·w block)
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .processing_hyperrep import ODD_ACTIVATIONS, _flat_length, _layer_table, _sign_flip_layers
from .processing_hyperrep import SIGN_NEUTRAL_LAYERS as SIGN_NEUTRAL_LAYERS  # re-exported

Augmentation = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _architecture_record(architecture: Any) -> dict:
    """The architecture record of a ``NetworkSpec``, a processor or the record itself."""
    if hasattr(architecture, "to_dict") and not isinstance(architecture, Mapping):
        record = architecture.to_dict()
        return record["architecture"] if "architecture" in record else record
    return dict(architecture)


def _permutable_layers(architecture: Any) -> list[tuple[dict, dict, int]]:
    """Each hidden layer with the next layer and the number of next-layer inputs that belong to one neuron."""
    table = _layer_table(_architecture_record(architecture))
    pairs = []
    for layer, next_layer in itertools.pairwise(table):
        if next_layer["kind"] == "conv":
            block = math.prod(next_layer["weight_shape"][2:])  # one input channel = a k×k kernel slice
        else:
            block = next_layer["flatten_block"]  # h·w columns after a flatten, 1 otherwise
        num_inputs = next_layer["weight_shape"][1] * (block if next_layer["kind"] == "conv" else 1)
        if num_inputs != layer["num_neurons"] * block:
            raise ValueError(
                f"{next_layer['weight_name']!r} (shape {next_layer['weight_shape']}) does not read the "
                f"{layer['num_neurons']} outputs of {layer['weight_name']!r} in blocks of {block}."
            )
        pairs.append((layer, next_layer, block))
    return pairs


def _permute_region(index: torch.Tensor, start: int, shape: tuple[int, ...], dim: int, perm: torch.Tensor) -> None:
    """In place: index[:, start : start + prod(shape)] viewed as (K, *shape) is gathered along ``dim`` by perm."""
    size = math.prod(shape)
    region = index[:, start : start + size].view(index.shape[0], *shape)
    view_shape = [index.shape[0]] + [1] * len(shape)
    view_shape[dim + 1] = shape[dim]
    expanded = perm.view(view_shape).expand(index.shape[0], *shape)
    index[:, start : start + size] = region.gather(dim + 1, expanded).reshape(index.shape[0], size)


def make_permutation_indices(architecture: Any, permutations: Sequence[torch.Tensor]) -> torch.Tensor:
    """Gather indices that apply neuron permutations to flat vectors: ``permuted = vectors[:, index]``.

    Args:
        architecture: A ``NetworkSpec`` or its architecture record.
        permutations: One tensor per hidden layer (all parameter layers but the last), each (K, num_neurons_l)
            of permutations of range(num_neurons_l).

    Returns:
        (K, num_parameters) int64 gather indices.
    """
    pairs = _permutable_layers(architecture)
    if len(permutations) != len(pairs):
        raise ValueError(f"Expected {len(pairs)} permutation tensors (one per hidden layer), got {len(permutations)}.")
    table = _layer_table(_architecture_record(architecture))
    num_parameters = _flat_length(table)
    num_permutations = permutations[0].shape[0] if permutations else 1
    index = torch.arange(num_parameters).repeat(num_permutations, 1)
    for (layer, next_layer, block), perm in zip(pairs, permutations, strict=True):
        num_neurons = layer["num_neurons"]
        # Rows of W_l and entries of b_l, then the matching input blocks of W_{l+1}: they commute, so the
        # column permutation of W_{l+1} composes with its own row permutation in the next iteration.
        _permute_region(index, layer["weight_offset"], (num_neurons, layer["fan_in"]), 0, perm)
        if layer["bias_offset"] is not None:
            _permute_region(index, layer["bias_offset"], (num_neurons,), 0, perm)
        next_shape = (next_layer["num_neurons"], num_neurons, block)
        _permute_region(index, next_layer["weight_offset"], next_shape, 1, perm)
    return index


class NeuronPermutation:
    """Random neuron permutations of hidden layers, precomputed as gather indices over the flat vector.

    When the number of all permutations (the product of num_neurons_l! over hidden layers) is at most
    ``enumerate_limit``, all are enumerated (Tetris: 5! = 120); otherwise ``num_permutations`` random ones are
    drawn from ``generator``. The output layer is never permuted.

    Args:
        architecture: A ``NetworkSpec`` or its architecture record.
        num_permutations: How many random permutations to precompute for larger networks.
        enumerate_limit: Enumerate all permutations up to this count.
        generator: Source of the random permutations (default: seeded with 0).
    """

    def __init__(
        self,
        architecture: Any,
        num_permutations: int = 1000,
        enumerate_limit: int = 10_000,
        generator: torch.Generator | None = None,
    ) -> None:
        sizes = [layer["num_neurons"] for layer, _, _ in _permutable_layers(architecture)]
        total = math.prod(math.factorial(size) for size in sizes)
        if total <= enumerate_limit:
            combinations = list(itertools.product(*(itertools.permutations(range(size)) for size in sizes)))
            permutations = [torch.tensor([c[i] for c in combinations]) for i in range(len(sizes))]
        else:
            generator = generator if generator is not None else torch.Generator().manual_seed(0)
            permutations = [
                torch.argsort(torch.rand(num_permutations, size, generator=generator), dim=1) for size in sizes
            ]
        self.enumerated = total <= enumerate_limit
        indices = make_permutation_indices(architecture, permutations)
        # int32 halves the memory of many precomputed permutations; gathered rows are widened per batch.
        self.indices = indices.to(torch.int32) if indices.shape[1] < 2**31 else indices

    @property
    def num_permutations(self) -> int:
        """Precomputed permutations."""
        return int(self.indices.shape[0])

    def __call__(self, vectors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One random precomputed permutation per network: (batch, num_parameters) → (batch, num_parameters)."""
        choice = torch.randint(self.num_permutations, (vectors.shape[0],), generator=generator)
        return vectors.gather(1, self.indices[choice].to(device=vectors.device, dtype=torch.long))


def sign_flip_layers(architecture: Any, activation: str) -> list[int]:
    """Indices (into the hidden parameter layers) whose neurons can be sign-flipped without changing the function.

    A hidden neuron's sign can flip when everything between its layer and the next parameter layer is odd:
    ``activation`` in :data:`ODD_ACTIVATIONS` and only :data:`SIGN_NEUTRAL_LAYERS` in between (max pooling is not:
    max(−x) = −min(x)). The rule lives with the processor's canonical form (one rule for both).
    """
    return _sign_flip_layers(_architecture_record(architecture), activation)


class NeuronSignFlip:
    """Random sign flips of hidden neurons before an odd activation (tanh), a symmetry beside permutation.

    tanh(−x) = −tanh(x), so negating a neuron's incoming weights and bias and the next layer's weights that read it
    computes the same function — and, for an init distribution symmetric around 0, gives a network as likely in
    the zoo as the original. Each flippable neuron of each network flips with probability 1/2. The reconstruction
    target flips with the view (like a permutation, nothing in the weights tells which sign the zoo stored).

    Args:
        architecture: A ``NetworkSpec`` or its architecture record.
        activation: The zoo's activation; with a non-odd one (relu, …) no neuron is flippable.

    Raises:
        ValueError: No hidden neuron can be flipped (a non-odd activation, or max pooling after every layer).
    """

    def __init__(self, architecture: Any, activation: str) -> None:
        hidden = sign_flip_layers(architecture, activation)
        if not hidden:
            raise ValueError(
                f"Sign flips preserve the function only before an odd activation {ODD_ACTIVATIONS} with no max "
                f"pooling in between; this zoo (activation {activation!r}) has no such neuron. Turn sign_flip off."
            )
        pairs = _permutable_layers(architecture)
        num_parameters = _flat_length(_layer_table(_architecture_record(architecture)))
        # Flat index → the flippable neuron it is an incoming (row) / outgoing (column) weight of; −1: none. A weight
        # between two flippable layers has both and flips with the product of their signs.
        row_neuron = torch.full((num_parameters,), -1, dtype=torch.long)
        column_neuron = torch.full((num_parameters,), -1, dtype=torch.long)
        count = 0
        for position in hidden:
            layer, next_layer, block = pairs[position]
            ids = count + torch.arange(layer["num_neurons"])
            rows = layer["weight_offset"] + torch.arange(layer["num_neurons"] * layer["fan_in"])
            row_neuron[rows] = ids.repeat_interleave(layer["fan_in"])
            if layer["bias_offset"] is not None:
                row_neuron[layer["bias_offset"] + torch.arange(layer["num_neurons"])] = ids
            size = next_layer["num_neurons"] * layer["num_neurons"] * block
            columns = ids.view(1, -1, 1).expand(next_layer["num_neurons"], -1, block).reshape(-1)
            column_neuron[next_layer["weight_offset"] + torch.arange(size)] = columns
            count += layer["num_neurons"]
        self.num_neurons = count
        self.row_neuron, self.column_neuron = row_neuron, column_neuron

    def __call__(self, vectors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Independent ±1 per flippable neuron of each network: (batch, num_parameters) → same shape."""
        flips = torch.randint(0, 2, (vectors.shape[0], self.num_neurons + 1), generator=generator)
        signs = (1 - 2 * flips).to(vectors.dtype)
        signs[:, -1] = 1  # index −1: no flippable neuron on that side
        signs = signs.to(vectors.device)
        return vectors * signs[:, self.row_neuron] * signs[:, self.column_neuron]


class RandomErasing:
    """With probability ``probability``, sets a random contiguous block of each vector to 0.

    Args:
        probability: Chance that a network is erased (paper: 0.5).
        scale: (low, high) of the block length relative to num_parameters, drawn uniformly (paper: 0.03–0.3).
    """

    def __init__(self, probability: float = 0.5, scale: tuple[float, float] = (0.03, 0.3)) -> None:
        if not 0.0 <= probability <= 1.0 or not 0.0 <= scale[0] <= scale[1] <= 1.0:
            raise ValueError(f"Need 0 ≤ probability ≤ 1 and 0 ≤ low ≤ high ≤ 1, got {probability}, {scale}.")
        self.probability = probability
        self.scale = tuple(scale)

    def __call__(self, vectors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(batch, num_parameters) → a copy with the erased blocks at 0."""
        if self.probability == 0.0:
            return vectors
        batch, num_parameters = vectors.shape
        erase = torch.rand(batch, generator=generator) < self.probability
        relative = torch.empty(batch).uniform_(self.scale[0], self.scale[1], generator=generator)
        length = (relative * num_parameters).round().long().clamp(0, num_parameters)
        start = (torch.rand(batch, generator=generator) * (num_parameters - length + 1)).floor().long()
        positions = torch.arange(num_parameters)
        inside = (positions >= start[:, None]) & (positions < (start + length)[:, None]) & erase[:, None]
        return vectors.masked_fill(inside.to(vectors.device), 0.0)


class GaussianNoise:
    """Multiplicative w·(1 + σ_m ε) then additive w + σ_a ε Gaussian noise; σ = 0 leaves the weights exact.

    Args:
        additive_std: σ_a (paper ablation: 0.05).
        multiplicative_std: σ_m (follow-ups: ≈ 0.1).
    """

    def __init__(self, additive_std: float = 0.0, multiplicative_std: float = 0.0) -> None:
        if additive_std < 0 or multiplicative_std < 0:
            raise ValueError(f"Noise scales must be ≥ 0, got {additive_std}, {multiplicative_std}.")
        self.additive_std = additive_std
        self.multiplicative_std = multiplicative_std

    def __call__(self, vectors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(batch, num_parameters) → noisy copy (the input itself when both scales are 0)."""
        # Skipped, not multiplied by 0: w + 0·ε would turn -0.0 into +0.0 and the identity would not be exact.
        if self.multiplicative_std:
            noise = torch.randn(vectors.shape, generator=generator).to(vectors)
            vectors = vectors * (1.0 + self.multiplicative_std * noise)
        if self.additive_std:
            noise = torch.randn(vectors.shape, generator=generator).to(vectors)
            vectors = vectors + self.additive_std * noise
        return vectors


def make_augmentations(
    architecture: Any,
    permute: bool = True,
    num_permutations: int = 1000,
    sign_flip_activation: str | None = None,
    erasing_probability: float = 0.5,
    erasing_scale: tuple[float, float] = (0.03, 0.3),
    additive_noise_std: float = 0.0,
    multiplicative_noise_std: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[Augmentation]:
    """The paper's augmentation chain: permutation (→ sign flips) → noise → erasing (erased weights stay exactly 0).

    Args:
        architecture: A ``NetworkSpec`` or its architecture record.
        permute: Include :class:`NeuronPermutation`.
        num_permutations: Random permutations to precompute when they are too many to enumerate.
        sign_flip_activation: The zoo's activation, to include :class:`NeuronSignFlip` (None: no sign flips).
        erasing_probability: p of :class:`RandomErasing` (0 disables it).
        erasing_scale: Relative block length range.
        additive_noise_std: σ of additive noise (0 disables it).
        multiplicative_noise_std: σ of multiplicative noise (0 disables it).
        generator: Source of the precomputed permutations.
    """
    augmentations: list[Augmentation] = []
    if permute:
        augmentations.append(NeuronPermutation(architecture, num_permutations, generator=generator))
    if sign_flip_activation is not None:
        augmentations.append(NeuronSignFlip(architecture, sign_flip_activation))
    if additive_noise_std or multiplicative_noise_std:
        augmentations.append(GaussianNoise(additive_noise_std, multiplicative_noise_std))
    if erasing_probability:
        augmentations.append(RandomErasing(erasing_probability, erasing_scale))
    return augmentations


def split_augmentations(augmentations: Sequence[Augmentation]) -> tuple[list[Augmentation], list[Augmentation]]:
    """(reorder, corrupt): the symmetries (permutations, sign flips) and all others, each in the given order."""
    symmetries = (NeuronPermutation, NeuronSignFlip)
    reorder = [step for step in augmentations if isinstance(step, symmetries)]
    corrupt = [step for step in augmentations if not isinstance(step, symmetries)]
    return reorder, corrupt


def augment_with_target(
    vectors: torch.Tensor,
    reorder: Sequence[Augmentation],
    corrupt: Sequence[Augmentation],
    generator: torch.Generator,
    normalize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One view of ``vectors`` and its reconstruction target, from :func:`split_augmentations`' two lists.

    The target is the clean vector *in the view's neuron order and signs*: the symmetries applied, noise and
    erasing not. A permuted network computes the same function and nothing in it tells which of the equivalent
    orders the zoo happened to store, so the un-permuted weights cannot be predicted from a permuted input.
    Symmetries are drawn first, then the corruptions, all from ``generator``.

    Args:
        vectors: (batch, num_parameters) flat weights.
        reorder: The symmetry steps (permutations, sign flips).
        corrupt: The other steps (noise, erasing).
        generator: The only source of randomness.
        normalize: Applied between the symmetries and the corruptions. The symmetries act on raw weights (a sign
            flip commutes with per-layer standardisation only when the layer's mean is 0).

    Returns:
        ``(target, view)``, each (batch, num_parameters); either may be ``vectors`` itself when its steps are
        identities (callers that need distinct storage copy).
    """
    target = vectors
    for step in reorder:
        target = step(target, generator)
    if normalize is not None:
        target = normalize(target)
    view = target
    for step in corrupt:
        view = step(view, generator)
    return target, view


def stack_vectors(batch: Any) -> torch.Tensor:
    """A batch as (batch, num_parameters) float32: a tensor/array, a list of vectors or of rows with "weights"."""
    if isinstance(batch, torch.Tensor | np.ndarray):
        return torch.as_tensor(batch, dtype=torch.float32)
    rows = [row["weights"] if isinstance(row, Mapping) else row for row in batch]
    return torch.stack([torch.as_tensor(np.asarray(row), dtype=torch.float32) for row in rows])


class TwoViewCollator:
    """Collates flat vectors into two independently augmented views plus the clean vectors and view 1's target.

    Each view is its own copy (never sharing storage with the other view or the clean vectors), so an
    ablation without augmentations still compares two distinct tensors. Neuron permutations are applied before the
    other augmentations (see :func:`augment_with_target`, shared with the trainer's ``TrainingViews``). With a
    ``processor``, vectors are first normalised by it (when its config normalises), augmented in that space, and
    also returned as tokens.

    Args:
        augmentations: Transforms applied in order to each view (e.g. :func:`make_augmentations`).
        generator: The only source of randomness (default: seeded with 0). With DataLoader workers, give each
            worker its own (e.g. reseed in ``worker_init_fn``), or the workers repeat each other's draws.
        processor: Optional ``NeuronTokenProcessor`` to tokenise the clean vectors and both views.

    Returns (``__call__``):
        ``clean_vectors``, ``view_1_vectors``, ``view_2_vectors``, ``view_1_target_vectors`` (the clean vectors in
        view 1's neuron order): (batch, num_parameters) float32; with a processor also the keyword arguments of
        ``HyperRepForPreTraining.forward``: ``input_tokens`` (view 1, (batch, num_tokens, token_dim)),
        ``attention_mask`` (batch, num_tokens), ``position_ids`` (batch, num_tokens, 3), ``labels`` (the tokens of
        ``view_1_target_vectors``) and ``input_tokens_view2``, ``attention_mask_view2``, ``position_ids_view2``.
    """

    def __init__(
        self,
        augmentations: Sequence[Augmentation],
        generator: torch.Generator | None = None,
        processor: Any | None = None,
    ) -> None:
        self.augmentations = list(augmentations)
        self.reorder, self.corrupt = split_augmentations(self.augmentations)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.processor = processor

    def augment_with_target(self, vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One view and its target (:func:`augment_with_target`), each a fresh copy: (batch, num_parameters).

        With a processor, ``vectors`` are raw weights: the symmetries act on them, then the processor normalises.
        """
        normalize = self.processor.normalize_vectors if self.processor is not None else None
        target, view = augment_with_target(vectors.clone(), self.reorder, self.corrupt, self.generator, normalize)
        return target, view.clone() if view is target else view

    def augment(self, vectors: torch.Tensor) -> torch.Tensor:
        """One view: a fresh copy of ``vectors`` (batch, num_parameters) through every augmentation."""
        return self.augment_with_target(vectors)[1]

    def __call__(self, batch: Any) -> dict[str, torch.Tensor]:
        """See the class docstring."""
        raw = clean = stack_vectors(batch)
        if self.processor is not None:
            raw = self.processor.networks_to_vectors(raw)
            clean = self.processor.normalize_vectors(raw)
        target_1, view_1_vectors = self.augment_with_target(raw)
        output = {
            "clean_vectors": clean,
            "view_1_vectors": view_1_vectors,
            "view_2_vectors": self.augment(raw),
            "view_1_target_vectors": target_1,
        }
        if self.processor is not None:
            # Keyword names of HyperRepForPreTraining.forward: view 1 in, its clean weights (in view 1's neuron
            # order) as the target, view 2.
            view_1 = self.processor.vectors_to_tokens(view_1_vectors, normalize=False, check=False)
            view_2 = self.processor.vectors_to_tokens(output["view_2_vectors"], normalize=False, check=False)
            output.update(view_1)
            output["labels"] = self.processor.vectors_to_tokens(target_1, normalize=False, check=False)["input_tokens"]
            output.update({f"{name}_view2": value for name, value in view_2.items()})
        return output
