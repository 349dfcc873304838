"""Hyper-representations of networks: the encoder's z, averaged over function-preserving copies of each network.

A network has many equivalent weight vectors: its hidden neurons can be permuted and, before an odd activation
(tanh), their signs flipped, without changing what it computes. The encoder is trained on all of them (the
augmentations), yet its z still moves a little with the orientation it is shown. The representation of a network
should not depend on which of its equivalent vectors happened to be stored, so it is the mean of z over the stored
vector and ``K − 1`` fixed, seeded symmetry transforms of it::

    z̄(w) = 1/K · Σ_k z(g_k · w),   g_0 = identity

The transforms are drawn once (seed 0) and shared by every network, so z̄ is a deterministic function of the
network, whatever the batch it comes in. ``K = 1`` is the plain z of the paper. The model config records which
symmetries the encoder was trained with (``symmetries``, ``activation``) and ``K``
(``embedding_symmetry_samples``); training writes them.

A processor with ``canonical`` set (an encoder trained on canonical inputs, ``TrainConfig.canonical``) replaces the
average: each network is brought to its canonical form (``NeuronTokenProcessor.canonical_views``), blended over
the few branches of its near-ties, so z is exactly invariant to the symmetries at about one encoder row per network::

    z(w) = Σ_b p_b(w) · z(canon_b(w)),   Σ_b p_b = 1, one branch (p = 1) for most networks

With ``append_weight_statistics`` in the model config, the hyper-representation is z̄ followed by s(W), the
per-layer weight statistics (:func:`weight_statistics.weight_statistics`, the ``s(W)`` baseline's features), taken
over the same copies or canonical views as z (so the canonical form keeps the whole representation invariant)::

    h(w) = 1/K · Σ_k [z(g_k · w), s(g_k · w)]   or   Σ_b p_b(w) · [z(canon_b(w)), s(canon_b(w))]

(``latent_dim + 7 · num_layers`` values; layout "z+s(W)", else "z"). With ``weight_statistics: "s(W)+shape"`` in the
config each layer's s(W) is followed by five statistics of its shape (:func:`weight_statistics.shape_statistics`;
``latent_dim + 12 · num_layers`` values, layout "z+s(W)+shape").

:func:`embed_vectors` is the one place that builds it, for evaluation, probe heads and the pipeline alike.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .augmentations import NeuronPermutation, NeuronSignFlip
from .processing_hyperrep import _flat_length, _layer_table
from .weight_statistics import num_weight_statistics, weight_statistics_variant

SYMMETRIES = ("permutation", "sign_flip")
Z_LAYOUT = "z"
"""Representation layout of z̄ alone (the paper's); recorded in every probe head (``representation``)."""
Z_WEIGHT_STATISTICS_LAYOUT = "z+s(W)"
"""Representation layout of z̄ followed by s(W) (``append_weight_statistics``)."""
Z_SHAPE_STATISTICS_LAYOUT = "z+s(W)+shape"
"""Representation layout of z̄ followed by s(W) and the shape statistics (``weight_statistics: "s(W)+shape"``)."""
WEIGHT_STATISTICS_LAYOUTS = (Z_WEIGHT_STATISTICS_LAYOUT, Z_SHAPE_STATISTICS_LAYOUT)
"""The layouts that append weight statistics to z̄."""


def representation_layout(config: Any) -> str:
    """The layout of a model's hyper-representation: ``"z"``, ``"z+s(W)"`` or ``"z+s(W)+shape"``."""
    if not getattr(config, "append_weight_statistics", False):
        return Z_LAYOUT
    return "z+" + weight_statistics_of(config)


def weight_statistics_of(config: Any) -> str:
    """The variant of weight statistics a config appends (``"s(W)"`` for configs written before the field)."""
    return getattr(config, "weight_statistics", "s(W)")


def representation_dim(config: Any, architecture: dict) -> int:
    """Size of a hyper-representation: ``latent_dim``, + 7 (12 with the shape) per layer with appended statistics."""
    appended = representation_layout(config) != Z_LAYOUT
    extra = num_weight_statistics(architecture, weight_statistics_of(config)) if appended else 0
    return int(config.latent_dim) + extra


class SymmetryTransforms:
    """``K`` fixed symmetry transforms of flat weight vectors (raw, un-normalised), the identity first.

    Transform k maps ``vectors`` to ``vectors[:, index[k]] * sign[k]``: a neuron permutation, then sign flips.

    Args:
        architecture: The networks' architecture record (``processor.architecture``).
        num_samples: K, including the identity.
        symmetries: Subset of :data:`SYMMETRIES`.
        activation: The networks' activation (sign flips need an odd one).
        seed: Seed of the draw.
    """

    def __init__(
        self,
        architecture: dict,
        num_samples: int,
        symmetries: list[str] | tuple[str, ...] = SYMMETRIES,
        activation: str | None = None,
        seed: int = 0,
    ) -> None:
        unknown = set(symmetries) - set(SYMMETRIES)
        if unknown or num_samples < 1:
            raise ValueError(
                f"Need num_samples >= 1 and symmetries from {SYMMETRIES}; got {num_samples}, {list(symmetries)}."
            )
        num_parameters = _flat_length(_layer_table(architecture))
        generator = torch.Generator().manual_seed(seed)
        index = torch.arange(num_parameters).repeat(num_samples, 1)
        sign = torch.ones(num_samples, num_parameters)
        if num_samples > 1 and "permutation" in symmetries:
            permutation = NeuronPermutation(architecture, num_permutations=max(1000, num_samples), generator=generator)
            count = permutation.num_permutations
            choice = (
                torch.randperm(count, generator=generator)[: num_samples - 1]
                if num_samples - 1 <= count
                else torch.randint(count, (num_samples - 1,), generator=generator)
            )
            index[1:] = permutation.indices[choice].long()
        if num_samples > 1 and "sign_flip" in symmetries:
            if activation is None:
                raise ValueError("Sign-flip symmetry needs the networks' activation (config.activation).")
            sign[1:] = NeuronSignFlip(architecture, activation)(sign[1:], generator)
        self.index, self.sign = index, sign

    @property
    def num_samples(self) -> int:
        """K, the identity included."""
        return int(self.index.shape[0])

    def __call__(self, vectors: torch.Tensor, k: int) -> torch.Tensor:
        """Transform ``k`` of (batch, num_parameters) vectors."""
        return vectors[:, self.index[k].to(vectors.device)] * self.sign[k].to(vectors.device, vectors.dtype)


def symmetry_transforms(config: Any, architecture: dict, num_samples: int | None = None) -> SymmetryTransforms:
    """The transforms a model's config asks for; ``num_samples`` overrides ``config.embedding_symmetry_samples``."""
    samples = int(getattr(config, "embedding_symmetry_samples", 1) if num_samples is None else num_samples)
    symmetries = list(getattr(config, "symmetries", None) or [])
    samples = samples if symmetries else 1  # an encoder trained without symmetries: nothing to average over
    return SymmetryTransforms(architecture, samples, symmetries, getattr(config, "activation", None))


def networks_per_pass(max_rows_per_pass: int, transforms: SymmetryTransforms, processor: Any) -> int:
    """How many networks fill ``max_rows_per_pass`` encoder rows.

    Each network brings K symmetric copies (one row each) or, with a canonical processor, its canonical views (one
    for most networks; the views are chunked by ``max_rows_per_pass`` anyway).
    """
    if not isinstance(max_rows_per_pass, int) or isinstance(max_rows_per_pass, bool) or max_rows_per_pass < 1:
        raise ValueError(f"The batch size (encoder rows per forward pass) must be ≥ 1, got {max_rows_per_pass!r}.")
    copies = 1 if getattr(processor, "canonical", False) else transforms.num_samples
    return max(1, max_rows_per_pass // copies)


@torch.no_grad()
def embed_vectors(
    model: torch.nn.Module,
    processor: Any,
    vectors: torch.Tensor,
    transforms: SymmetryTransforms,
    max_rows_per_pass: int = 2048,
) -> torch.Tensor:
    """The hyper-representation of raw flat vectors (batch, num_parameters), on the model's device and dtype.

    z̄ (batch, latent_dim); with ``model.config.append_weight_statistics`` each encoder row carries s(W) of the very
    weights it encoded, so the statistics are averaged (or blended) over the same copies (or canonical views) as z:
    (batch, :func:`representation_dim`). With a canonical processor that makes the whole representation exactly
    invariant, sign flips before tanh included (a raw tanh network's layer mean and percentiles depend on the
    orientation its neurons happened to be stored in); with permutations alone s(W) is the raw network's, since a
    layer's statistics do not depend on the order of its weights. The copies of a batch go through the encoder
    together, up to ``max_rows_per_pass`` rows per forward pass, so a single network costs one pass of K rows rather
    than K passes. With a canonical processor (``processor.canonical``) the rows are the network's weighted canonical
    views instead and ``transforms`` is not used.
    """
    vectors = vectors.detach().to("cpu", torch.float32)  # the processor tokenises on the CPU
    device = next(model.parameters()).device
    with_statistics = representation_layout(model.config) != Z_LAYOUT
    variant = weight_statistics_of(model.config)

    def rows_of(weights: torch.Tensor, check: bool = True) -> torch.Tensor:
        """The representation of each encoder row: z of the weights, then (if asked) their s(W)."""
        inputs = processor.vectors_to_tokens(weights, check=check)  # checks shape and finiteness
        embeddings = model(**{key: value.to(device) for key, value in inputs.items()}).embeddings
        if not with_statistics:
            return embeddings
        # float64 statistics of the float32 weights (as the s(W) baseline computes them), then the encoder's dtype.
        statistics = torch.from_numpy(weight_statistics_variant(weights.numpy(), processor.architecture, variant))
        return torch.cat([embeddings, statistics.to(embeddings.device, embeddings.dtype)], dim=1)

    if getattr(processor, "canonical", False):
        return _embed_canonical(rows_of, processor, vectors, max_rows_per_pass)
    batch, num_samples = vectors.shape[0], transforms.num_samples
    group = max(1, max_rows_per_pass // max(batch, 1))  # copies per forward pass
    total = None
    for first in range(0, num_samples, group):
        copies = torch.cat([transforms(vectors, k) for k in range(first, min(first + group, num_samples))])
        embeddings = rows_of(copies)
        summed = embeddings.view(-1, batch, embeddings.shape[-1]).sum(0)
        total = summed if total is None else total + summed
    return total / num_samples


def _embed_canonical(
    rows_of: Callable[..., torch.Tensor], processor: Any, vectors: torch.Tensor, max_rows_per_pass: int
) -> torch.Tensor:
    """Σ_b p_b · h(canon_b(w)) per network: its canonical views' rows (``rows_of``), weighted and summed."""
    views, weights, owner = processor.canonical_views(vectors)  # checks shape and finiteness
    pieces = [
        rows_of(views[first : first + max_rows_per_pass], check=False)
        for first in range(0, views.shape[0], max_rows_per_pass)
    ]
    embeddings = torch.cat(pieces)
    if views.shape[0] == vectors.shape[0]:  # one view each (weight exactly 1): z itself, bit for bit
        return embeddings
    weighted = embeddings * weights.to(embeddings.device, embeddings.dtype)[:, None]
    total = embeddings.new_zeros(vectors.shape[0], embeddings.shape[-1])
    return total.index_add_(0, owner.to(embeddings.device), weighted)
