"""NeuronTokenProcessor: a network's weights ⇄ neuron tokens, exactly invertible.

This file travels to the Hub as remote code, so it is flat and self-contained: it reads the *architecture
record* (``NetworkSpec.to_dict()``, see ``docs/CONTRACTS.md``) as a plain dict and never imports the library.

Every layout is an index map over the flat weight vector (per layer: weight row-major, then bias)::

    flat vector (batch, num_parameters) ──append one 0──► gather ──► input_tokens (batch, num_tokens, token_dim)
    input_tokens ──reshape──► gather at each weight's token position ──► flat vector (bit-exact)

``"per_layer"`` (AttN): one token per neuron/channel = its incoming weights (in, kh, kw) then its bias,
zero-padded to the widest layer. ``"padded"``: every neuron row cut into chunks of ``token_dim``.
``"weight"`` (AttW): one token per scalar.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoFeatureExtractor
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin

TOKEN_LAYOUTS = ("per_layer", "padded", "weight")
MODEL_INPUT_NAMES = ["input_tokens", "attention_mask", "position_ids"]
ODD_ACTIVATIONS = ("tanh", "identity")
"""Activations with σ(−x) = −σ(x): flipping a neuron's sign before them is undone by its next layer."""
SIGN_NEUTRAL_LAYERS = ("act", "flatten", "dropout", "avgpool", "gap")
"""Layers between two parameter layers that commute with a sign flip (odd activation given); not ``maxpool``."""


def _layer_table(architecture: dict) -> list[dict]:
    """Per parameter layer: neurons, fan-in, token width and offsets of weight and bias in the flat vector."""
    table, offset = [], 0
    for layer_index, layer in enumerate(architecture["parameter_layers"]):
        weight_shape = [int(size) for size in layer["weight_shape"]]
        num_neurons, fan_in = weight_shape[0], math.prod(weight_shape[1:])
        has_bias = bool(layer.get("bias_name"))
        table.append(
            {
                "layer_index": layer_index,
                "kind": layer["kind"],
                "weight_name": layer["weight_name"],
                "weight_shape": weight_shape,
                "bias_name": layer.get("bias_name"),
                "num_neurons": num_neurons,
                "fan_in": fan_in,
                "width": fan_in + int(has_bias),
                "weight_offset": offset,
                "bias_offset": offset + num_neurons * fan_in if has_bias else None,
                "flatten_block": int(layer.get("flatten_block", 1)),
            }
        )
        offset += num_neurons * fan_in + (num_neurons if has_bias else 0)
    return table


def _flat_length(table: list[dict]) -> int:
    """Length of the flat vector a layer table describes: every neuron's row (weights, then bias)."""
    return sum(layer["num_neurons"] * layer["width"] for layer in table)


def _neuron_rows(layer: dict) -> torch.Tensor:
    """Flat-vector indices of each neuron's row, (num_neurons, width): incoming weights, then bias."""
    weights = layer["weight_offset"] + torch.arange(layer["num_neurons"] * layer["fan_in"])
    rows = weights.view(layer["num_neurons"], layer["fan_in"])
    if layer["bias_offset"] is not None:
        bias = layer["bias_offset"] + torch.arange(layer["num_neurons"])
        rows = torch.cat([rows, bias[:, None]], dim=1)
    return rows


def _sign_flip_layers(architecture: dict, activation: str | None) -> list[int]:
    """Hidden parameter layers (indices) whose neurons can be sign-flipped without changing the function.

    A hidden neuron's sign can flip when everything between its layer and the next parameter layer is odd:
    ``activation`` in :data:`ODD_ACTIVATIONS` and only :data:`SIGN_NEUTRAL_LAYERS` in between (max pooling is not:
    max(−x) = −min(x)). An architecture record without its layer list (derived from a state dict) has none.
    """
    layers = architecture.get("layers")
    if activation not in ODD_ACTIVATIONS or not layers:
        return []
    positions = [layer["index"] for layer in architecture["parameter_layers"]]
    return [
        hidden
        for hidden, (start, stop) in enumerate(zip(positions, positions[1:], strict=False))  # noqa: RUF007
        if all(layers[k].split(":")[0] in SIGN_NEUTRAL_LAYERS for k in range(start + 1, stop))
    ]


def _neuron_footprints(table: list[dict]) -> list[torch.Tensor]:
    """Per hidden layer: flat indices (num_neurons, width + outgoing) of each neuron's row and its next-layer inputs.

    The outgoing part of neuron j is W_{l+1}[:, j] (conv: the k×k kernel slices; after a flatten: the h·w block
    of columns). Permuting or sign-flipping a neuron moves / negates its whole footprint.
    """
    footprints = []
    for layer, next_layer in zip(table, table[1:], strict=False):  # noqa: RUF007 (remote code: few imports)
        num_neurons, next_neurons = layer["num_neurons"], next_layer["num_neurons"]
        if next_layer["fan_in"] % num_neurons:
            raise ValueError(
                f"{next_layer['weight_name']!r} (shape {next_layer['weight_shape']}) does not read the "
                f"{num_neurons} outputs of {layer['weight_name']!r} in equal blocks."
            )
        block = next_layer["fan_in"] // num_neurons
        columns = next_layer["weight_offset"] + torch.arange(next_neurons * num_neurons * block)
        columns = columns.view(next_neurons, num_neurons, block).transpose(0, 1).reshape(num_neurons, -1)
        footprints.append(torch.cat([_neuron_rows(layer), columns], dim=1))
    return footprints


def _branch_weight(distance: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """Weight of the other branch at a key ``distance`` from a tie: ½ at 0, falling smoothly (C¹) to 0 at ε."""
    ratio = distance / epsilon.clamp_min(torch.finfo(distance.dtype).tiny)
    t = torch.where(epsilon > 0, ratio, (distance > 0).to(distance.dtype)).clamp(0, 1)
    return 0.5 * (1 - t * t * (3 - 2 * t))


def _build_layout(architecture: dict, token_layout: str, token_dim: int) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Gather index and positions of a layout.

    Returns:
        gather_index: (num_tokens * token_dim,) int64 into the flat vector with one zero appended
            (index ``num_parameters`` = padding).
        position_ids: (num_tokens, 3) int64 = (token index, layer index, index of the token in its layer).
        layer_num_tokens: tokens of each parameter layer.
    """
    table = _layer_table(architecture)
    num_parameters = _flat_length(table)
    pieces, positions, layer_num_tokens = [], [], []
    for layer in table:
        rows = _neuron_rows(layer)
        if token_layout == "weight":
            # Flat-vector order: the whole weight, then the whole bias (not neuron rows).
            tokens = torch.sort(rows.reshape(-1)).values[:, None]
        else:
            # per_layer: one chunk as wide as the widest layer; padded: ceil(width / token_dim) chunks.
            num_chunks = 1 if token_layout == "per_layer" else math.ceil(layer["width"] / token_dim)
            padded = torch.full((layer["num_neurons"], num_chunks * token_dim), num_parameters, dtype=torch.long)
            padded[:, : layer["width"]] = rows
            tokens = padded.view(layer["num_neurons"] * num_chunks, token_dim)
        pieces.append(tokens.reshape(-1))
        within_layer = torch.arange(tokens.shape[0])
        positions.append(torch.stack([within_layer, torch.full_like(within_layer, layer["layer_index"])], dim=1))
        layer_num_tokens.append(int(tokens.shape[0]))
    gather_index = torch.cat(pieces)
    within = torch.cat(positions)
    token_index = torch.arange(within.shape[0])
    position_ids = torch.stack([token_index, within[:, 1], within[:, 0]], dim=1)
    return gather_index, position_ids, layer_num_tokens


def _architecture_from_state_dict(state_dict: Mapping[str, Any]) -> dict:
    """Derives an architecture record from parameter names and shapes alone.

    Linear weights are (out, in), conv weights (out, in, k, k); a ``<prefix>.bias`` of shape (out,) belongs to
    ``<prefix>.weight``. A linear layer after a conv layer whose in-features are a multiple of that layer's
    out-channels reads its flattened map: ``flatten_block`` = in-features / channels (1 after global pooling).
    Spatial sizes are unknown here, recorded as null.
    """
    names = list(state_dict)
    shapes = {name: [int(size) for size in state_dict[name].shape] for name in names}
    layers, used = [], set()
    for name in names:
        if not name.endswith("weight"):
            continue
        shape = shapes[name]
        if len(shape) not in (2, 4):
            raise ValueError(
                f"Parameter {name!r} has shape {shape}: expected a linear (out, in) or conv (out, in, k, k) weight."
            )
        bias_name = name[: -len("weight")] + "bias"
        if bias_name in shapes and shapes[bias_name] != [shape[0]]:
            raise ValueError(f"Parameter {bias_name!r} has shape {shapes[bias_name]}, expected {[shape[0]]}.")
        bias_name = bias_name if bias_name in shapes else None
        used.update({name, bias_name} - {None})
        kind = "linear" if len(shape) == 2 else "conv"
        flatten_block = 1
        if kind == "linear" and layers and layers[-1]["kind"] == "conv":
            channels = layers[-1]["weight_shape"][0]
            if shape[1] % channels:
                raise ValueError(
                    f"Parameter {name!r} has {shape[1]} in-features, not a multiple of the {channels} channels of "
                    f"{layers[-1]['weight_name']!r}: pass the architecture (a NetworkSpec) explicitly."
                )
            flatten_block = shape[1] // channels
        pieces = name.split(".")
        index = int(pieces[-2]) if len(pieces) >= 2 and pieces[-2].isdigit() else len(layers)
        spatial = [None, None] if kind == "conv" else []
        layers.append(
            {
                "index": index,
                "kind": kind,
                "weight_name": name,
                "weight_shape": shape,
                "bias_name": bias_name,
                "input_shape": [shape[1], *spatial],
                "output_shape": [shape[0], *spatial],
                "flatten_block": flatten_block,
            }
        )
    leftover = [name for name in names if name not in used]
    if leftover or not layers:
        raise ValueError(
            f"Cannot derive an architecture: parameters {[(n, shapes[n]) for n in leftover]} are not linear/conv "
            "weights or their biases; pass the architecture (a NetworkSpec) explicitly."
        )
    parameters = []
    for layer in layers:
        parameters.append({"name": layer["weight_name"], "shape": layer["weight_shape"]})
        if layer["bias_name"]:
            parameters.append({"name": layer["bias_name"], "shape": [layer["weight_shape"][0]]})
    return {
        "name": "derived",
        "input_shape": None,
        "layers": None,
        "num_parameters": sum(math.prod(p["shape"]) for p in parameters),
        "num_classes": layers[-1]["weight_shape"][0],
        "activation_positions": None,
        "parameters": parameters,
        "parameter_layers": layers,
    }


class NeuronTokenProcessor(FeatureExtractionMixin):
    """Turns networks of one architecture into neuron tokens for the HyperRep encoder, and back.

    Args:
        architecture: The architecture record (``NetworkSpec.to_dict()``); anything with ``.to_dict()`` works.
        token_layout: ``"per_layer"`` (AttN), ``"padded"`` (one width, rows chunked) or ``"weight"`` (AttW).
        token_dim: Token width. Required for ``"padded"``; derived otherwise (widest layer row / 1).
        normalize: Standardise each layer's weights with ``normalization_stats`` in ``__call__`` (and invert it in
            :meth:`to_vectors`). The inverse is exact up to float rounding (one multiply-add in float32).
        normalization_stats: ``{"mean": [per layer], "std": [per layer]}``, fitted by :meth:`fit_normalization`.
        canonical: Bring every network to a canonical form of its neuron permutations (and sign flips, see
            ``canonical_activation``) before tokenising it: :meth:`canonical_views`, used by
            ``hyperrep_hf.models.hyperrep.embeddings.embed_vectors``. Tokenising itself (``__call__``) is unchanged.
        canonical_activation: The networks' activation: with an odd one (tanh), hidden neurons not followed by max
            pooling also get a canonical sign. ``None``: permutations only.
        canonical_epsilon: Width of the blend at (near-)ties, relative to the spread of a layer's keys / its neurons.
        canonical_max_branches: At most this many canonical views per network.
    """

    model_input_names = MODEL_INPUT_NAMES

    def __init__(
        self,
        architecture: dict | Any,
        token_layout: str = "per_layer",
        token_dim: int | None = None,
        normalize: bool = False,
        normalization_stats: dict | None = None,
        canonical: bool = False,
        canonical_activation: str | None = None,
        canonical_epsilon: float = 0.05,
        canonical_max_branches: int = 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if hasattr(architecture, "to_dict"):
            architecture = architecture.to_dict()
        if not isinstance(architecture, dict) or "parameter_layers" not in architecture:
            raise ValueError(
                "architecture must be an architecture record (NetworkSpec.to_dict()) with 'parameter_layers'."
            )
        if token_layout not in TOKEN_LAYOUTS:
            raise ValueError(f"Unknown token_layout {token_layout!r}; expected one of {TOKEN_LAYOUTS}.")
        self.architecture = json.loads(json.dumps(architecture))  # a JSON-clean private copy
        self.token_layout = token_layout
        self.token_dim = self._resolve_token_dim(token_layout, token_dim)
        self.normalize = bool(normalize)
        self.normalization_stats = normalization_stats
        self.canonical = bool(canonical)
        self.canonical_activation = canonical_activation
        self.canonical_epsilon = float(canonical_epsilon)
        self.canonical_max_branches = int(canonical_max_branches)
        if not (self.canonical_epsilon >= 0 and self.canonical_max_branches >= 1):
            raise ValueError(
                f"Need canonical_epsilon >= 0 and canonical_max_branches >= 1, got {canonical_epsilon!r}, "
                f"{canonical_max_branches!r}."
            )
        if self.normalize and normalization_stats is None:
            raise ValueError("normalize=True needs normalization_stats: call fit_normalization(train_vectors) first.")
        self._prepare()

    def _resolve_token_dim(self, token_layout: str, token_dim: int | None) -> int:
        widest = max(layer["width"] for layer in _layer_table(self.architecture))
        if token_layout == "padded":
            if token_dim is None or int(token_dim) < 1:
                raise ValueError(f"token_layout 'padded' needs a positive token_dim, got {token_dim!r}.")
            return int(token_dim)
        required = widest if token_layout == "per_layer" else 1
        if token_dim is not None and int(token_dim) != required:
            raise ValueError(
                f"token_layout {token_layout!r} has token_dim {required} for this architecture, got {token_dim}."
            )
        return required

    def _prepare(self) -> None:
        """Precomputes the index maps (private attributes: not part of the saved config)."""
        self._table = _layer_table(self.architecture)
        self._parameter_shapes = {p["name"]: [int(s) for s in p["shape"]] for p in self.architecture["parameters"]}
        self._num_parameters = sum(math.prod(shape) for shape in self._parameter_shapes.values())
        self._gather_index, self._position_ids, self._layer_num_tokens = _build_layout(
            self.architecture, self.token_layout, self.token_dim
        )
        # The inverse map: where each weight sits in the flattened (num_tokens * token_dim) token array.
        real = (self._gather_index < self._num_parameters).nonzero().squeeze(1)
        self._scatter_index = torch.empty(self._num_parameters, dtype=torch.long)
        self._scatter_index[self._gather_index[real]] = real
        self._set_normalization(self.normalization_stats)
        self._footprints = _neuron_footprints(self._table)
        self._sign_layers = set(_sign_flip_layers(self.architecture, self.canonical_activation))

    def _set_normalization(self, stats: dict | None) -> None:
        self._mean = self._std = None
        if stats is None:
            return
        if len(stats["mean"]) != len(self._table) or len(stats["std"]) != len(self._table):
            raise ValueError(f"normalization_stats need one mean and std per layer ({len(self._table)}), got {stats}.")
        sizes = torch.tensor([layer["num_neurons"] * layer["width"] for layer in self._table])
        self._mean = torch.tensor(stats["mean"], dtype=torch.float32).repeat_interleave(sizes)
        self._std = torch.tensor(stats["std"], dtype=torch.float32).repeat_interleave(sizes)

    # ----------------------------------------------------------------------------------------- constructors
    @classmethod
    def from_network(cls, network: Any, architecture: dict | Any | None = None, **kwargs: Any) -> NeuronTokenProcessor:
        """A processor for the architecture of ``network`` (an ``nn.Module`` or a state_dict).

        A module with a ``spec`` attribute (``make_module``) gives its spec; otherwise the record is derived from
        parameter names and shapes (pass ``architecture`` when that is ambiguous).
        """
        if architecture is None and hasattr(getattr(network, "spec", None), "to_dict"):
            architecture = network.spec
        if architecture is None:
            state_dict = network.state_dict() if isinstance(network, torch.nn.Module) else network
            architecture = _architecture_from_state_dict(state_dict)
        return cls(architecture, **kwargs)

    @classmethod
    def from_zoo(
        cls, zoo_dir: str | os.PathLike, config_name: str | None = None, **kwargs: Any
    ) -> NeuronTokenProcessor:
        """A processor for a zoo folder: reads ``<zoo_dir>/<config_name>/zoo_info.json["architecture"]``.

        With ``config_name=None`` the folder must hold exactly one config with a ``zoo_info.json``.
        """
        zoo_dir = os.fspath(zoo_dir)
        if config_name is None:
            configs = sorted(
                name for name in os.listdir(zoo_dir) if os.path.isfile(os.path.join(zoo_dir, name, "zoo_info.json"))
            )
            if len(configs) != 1:
                raise ValueError(f"{zoo_dir} holds zoo configs {configs}: pass config_name (exactly one is needed).")
            config_name = configs[0]
        with open(os.path.join(zoo_dir, config_name, "zoo_info.json"), encoding="utf-8") as handle:
            zoo_info = json.load(handle)
        return cls(zoo_info["architecture"], **kwargs)

    # ----------------------------------------------------------------------------------------- config
    def to_dict(self) -> dict[str, Any]:
        """The JSON config (``preprocessor_config.json``): constructor arguments, no precomputed tensors."""
        output = {key: value for key, value in self.__dict__.items() if not key.startswith("_")}
        output = json.loads(json.dumps(output))
        output["feature_extractor_type"] = type(self).__name__
        return output

    @property
    def num_parameters(self) -> int:
        """Length of the flat weight vector."""
        return self._num_parameters

    @property
    def num_tokens(self) -> int:
        """Tokens per network."""
        return int(self._position_ids.shape[0])

    def model_config_kwargs(self) -> dict[str, Any]:
        """The token fields of ``HyperRepConfig`` (see docs/CONTRACTS.md).

        ``layer_token_widths`` is each layer's neuron-row width w_l = fan_in + bias in every layout.
        """
        return {
            "token_layout": self.token_layout,
            "token_dim": self.token_dim,
            "num_tokens": self.num_tokens,
            "layer_token_widths": [layer["width"] for layer in self._table],
            "layer_num_tokens": list(self._layer_num_tokens),
        }

    def fit_normalization(self, vectors: torch.Tensor | np.ndarray) -> dict:
        """Fits per-layer mean and std on training vectors (batch, num_parameters) and enables normalisation.

        A layer with zero spread gets std 1 (nothing to scale). Returns the stats stored in the config.
        """
        vectors = self._check_vectors(torch.as_tensor(vectors))
        means, stds = [], []
        for values in self._split_by_layer(vectors.double()):
            std = float(values.std(unbiased=False))
            means.append(float(np.float32(values.mean())))
            stds.append(float(np.float32(std)) if std > 0 else 1.0)
        self.normalization_stats = {"mean": means, "std": stds}
        self.normalize = True
        self._set_normalization(self.normalization_stats)
        return self.normalization_stats

    def _split_by_layer(self, vectors: torch.Tensor) -> list[torch.Tensor]:
        sizes = [layer["num_neurons"] * layer["width"] for layer in self._table]
        return list(torch.split(vectors, sizes, dim=1))

    # ----------------------------------------------------------------------------------------- networks → vectors
    def networks_to_vectors(self, networks: Any) -> torch.Tensor:
        """Flat float32 vectors (batch, num_parameters) of state_dicts, modules, safetensors paths or vectors.

        Raises:
            ValueError: for a missing, extra or mis-shaped parameter, or a NaN/Inf weight (naming it).
        """
        if isinstance(networks, np.ndarray | torch.Tensor):
            vectors = torch.as_tensor(networks)
            if vectors.dim() == 1:
                vectors = vectors[None]
            return self._check_vectors(vectors)
        if isinstance(networks, Mapping | torch.nn.Module | str | os.PathLike):
            networks = [networks]
        if not isinstance(networks, Sequence) or len(networks) == 0:
            raise ValueError(f"Expected a network or a non-empty list of networks, got {type(networks).__name__}.")
        return torch.stack([self._one_vector(network, position) for position, network in enumerate(networks)])

    def _one_vector(self, network: Any, position: int) -> torch.Tensor:
        if isinstance(network, str | os.PathLike):
            from safetensors.torch import load_file

            network = load_file(os.fspath(network))
        if isinstance(network, torch.nn.Module):
            network = network.state_dict()
        if isinstance(network, Mapping):
            return self._state_dict_to_vector(network, position)
        vector = torch.as_tensor(network)
        if vector.dim() != 1:
            raise ValueError(f"Network {position}: a flat vector must be 1-D, got shape {list(vector.shape)}.")
        return self._check_vectors(vector[None], first=position)[0]

    def _state_dict_to_vector(self, state_dict: Mapping[str, Any], position: int) -> torch.Tensor:
        # A plain nn.Sequential's keys ('1.weight') or a wrapper's ('net.layers.1.weight') are read under the
        # architecture's names ('layers.1.weight') when each name ends, or is the end of, exactly one key.
        def matches(name: str, key: str) -> bool:
            return name == key or name.endswith("." + key) or key.endswith("." + name)

        keys = {name: [key for key in state_dict if matches(name, key)] for name in self._parameter_shapes}
        if all(len(found) == 1 for found in keys.values()) and len({f[0] for f in keys.values()}) == len(state_dict):
            state_dict = {name: state_dict[found[0]] for name, found in keys.items()}
        else:  # names of its own (conv1.weight, fc1.bias; a Sequential without our dropouts): by architecture
            try:
                state_dict = self._match_by_architecture(state_dict, position)
            except ValueError:
                if not any(keys.values()):
                    raise
                # Some of its names are ours: the listing below names what is missing, extra or mis-shaped.
        problems = []
        for name, shape in self._parameter_shapes.items():
            if name not in state_dict:
                problems.append(f"missing parameter {name!r} (expected shape {shape})")
            elif list(state_dict[name].shape) != shape:
                problems.append(f"parameter {name!r} has shape {list(state_dict[name].shape)}, expected {shape}")
        for name in state_dict:
            if name not in self._parameter_shapes:
                problems.append(f"unexpected parameter {name!r} with shape {list(state_dict[name].shape)}")
        if problems:
            raise ValueError(f"Network {position} does not match the architecture: " + "; ".join(problems) + ".")
        parts = [torch.as_tensor(state_dict[name]).detach().reshape(-1) for name in self._parameter_shapes]
        return self._check_vectors(torch.cat(parts).float()[None], first=position)[0]

    def _match_by_architecture(self, state_dict: Mapping[str, Any], position: int) -> dict[str, Any]:
        """A state_dict whose keys share no name with the architecture's, read under the architecture's names.

        Its tensors are taken in their order (an ``nn.Module``'s registration order: layer by layer, weight then
        bias) when their shapes are the architecture's, in its order; otherwise by shape, when every shape occurs
        once (the MNIST CNN's do: so a ``.safetensors`` file, whose tensors come back sorted by name, is read too).
        A weight and its bias must come from one module (``conv1.weight`` with ``conv1.bias``).

        Raises:
            ValueError: Other shapes (naming each parameter whose shape differs and both shapes), or the same
                shapes in another order with a shape shared by several parameters (which is which is ambiguous).
        """
        names, shapes = list(self._parameter_shapes), list(self._parameter_shapes.values())
        keys = list(state_dict)
        found = [list(torch.as_tensor(state_dict[key]).shape) for key in keys]
        where = f"Network {position} (keys of its own, matched to the architecture by shape and order)"
        if found == shapes:
            mapping = dict(zip(names, keys, strict=True))
        elif sorted(map(str, found)) == sorted(map(str, shapes)):
            texts = [str(shape) for shape in shapes]
            shared = sorted({text for text in texts if texts.count(text) > 1})
            if shared:
                listing = "; ".join(
                    f"{[key for key, shape in zip(keys, found, strict=True) if str(shape) == text]} share shape {text}"
                    for text in shared
                )
                raise ValueError(
                    f"{where}: its parameters have the architecture's shapes but not in its order, and {listing}, so "
                    "which is which cannot be told. Pass the module or a state_dict in forward order (layer by layer, "
                    "weight then bias; a .safetensors file keeps no order: its tensors come back sorted by name), or "
                    f"one with the architecture's names ({', '.join(names)})."
                )
            by_shape = {str(shape): key for key, shape in zip(keys, found, strict=True)}
            mapping = {name: by_shape[str(shape)] for name, shape in zip(names, shapes, strict=True)}
        else:
            problems = [
                f"parameter {index} {key!r} has shape {shape}, the encoder's {name!r} has {expected}"
                for index, (key, shape, name, expected) in enumerate(zip(keys, found, names, shapes, strict=False))
                if shape != expected
            ]
            if len(keys) != len(names):
                problems.append(f"it has {len(keys)} parameter tensors, the architecture {len(names)}")
            raise ValueError(
                f"{where} is of another architecture: " + "; ".join(problems) + f". The encoder reads networks with "
                f"parameters {', '.join(f'{name} {shape}' for name, shape in zip(names, shapes, strict=True))}."
            )
        for layer in self._table:
            weight, bias = mapping[layer["weight_name"]], mapping.get(layer["bias_name"] or "")
            if bias is not None and weight.rpartition(".")[0] != bias.rpartition(".")[0]:
                raise ValueError(
                    f"{where}: its weight {weight!r} and bias {bias!r} take the places of {layer['weight_name']!r} "
                    f"and {layer['bias_name']!r} but belong to different modules, so the order is ambiguous. Pass "
                    f"a state_dict in forward order, or with the architecture's names ({', '.join(names)})."
                )
        return {name: state_dict[key] for name, key in mapping.items()}

    def _check_vectors(self, vectors: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Checks (batch, num_parameters) and finiteness; returns float32, naming the first bad parameter."""
        if vectors.dim() != 2 or vectors.shape[1] != self._num_parameters:
            raise ValueError(
                f"Flat weight vectors must have shape (batch, {self._num_parameters}), got {list(vectors.shape)}."
            )
        vectors = vectors.detach().to(torch.float32)
        # A finite sum proves every entry finite (NaN and ±Inf propagate) at a fraction of an elementwise test.
        if bool(torch.isfinite(vectors.sum(dtype=torch.float64))):
            return vectors
        finite = torch.isfinite(vectors)
        if not bool(finite.all()):
            row, column = (~finite).nonzero()[0].tolist()
            name, shape, offset = self._parameter_at(column)
            raise ValueError(
                f"Network {first + row}: parameter {name!r} (shape {shape}) holds a non-finite value "
                f"({float(vectors[row, column])}) at flat index {column} (entry {offset} of the parameter)."
            )
        return vectors

    def _parameter_at(self, flat_index: int) -> tuple[str, list[int], int]:
        offset = 0
        for name, shape in self._parameter_shapes.items():
            size = math.prod(shape)
            if flat_index < offset + size:
                return name, shape, flat_index - offset
            offset += size
        raise IndexError(flat_index)

    # ----------------------------------------------------------------------------------------- canonical form
    def set_canonical(self, activation: str | None, epsilon: float | None = None, max_branches: int | None = None):
        """Turns the canonical form on (``activation``: see the class arguments); returns ``self``."""
        self.canonical, self.canonical_activation = True, activation
        self.canonical_epsilon = self.canonical_epsilon if epsilon is None else float(epsilon)
        self.canonical_max_branches = self.canonical_max_branches if max_branches is None else int(max_branches)
        self._sign_layers = set(_sign_flip_layers(self.architecture, activation))
        return self

    def canonicalize(self, vectors: torch.Tensor) -> torch.Tensor:
        """The hard canonical form of raw flat vectors (batch, num_parameters): one view each, no blending.

        Exactly invariant to the symmetries, but discontinuous where keys tie; for training rows. Embeddings use
        :meth:`canonical_views`.
        """
        views, _, _ = self.canonical_views(vectors, max_branches=1)
        return views

    def canonical_views(
        self, vectors: torch.Tensor, max_branches: int | None = None, return_truncated: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """Canonical forms of raw flat vectors, blended at near-ties: (views, weights, owner).

        Layer by layer from the input, each hidden layer's neurons are brought to a canonical order (and sign),
        reading their incoming weights in the already canonical coordinates of the previous layers:

        1. sign (flippable layers only): s_i = sum of neuron i's incoming weights and bias; neuron i is negated
           (row and outgoing weights) when s_i < 0, so that its key becomes |s_i|;
        2. order: neurons sorted by the key k_i = sum of the (sign-fixed) row (= |s_i| when flippable); exact ties
           by the row's squared norm, then by position.

        Both keys are invariant to every earlier transform, so g·w (a permutation / sign flip g) gives the same
        canonical vector as w, bit for bit. A hard choice jumps where a key crosses a tie, so within ε of one both
        branches are kept: |s_i| < ε_s keeps the flipped neuron too, and two sort-adjacent keys closer than ε_k keep
        the swapped order too (swaps of several near-tied pairs compose in order of position); the other branch
        weighs ½·(1 − smoothstep(distance/ε)) — ½ at an exact tie, 0 from ε on — so a network's weighted views
        change continuously with its weights. ε_s = ε·RMS(s)/n, ε_k = ε·std(k)/n over the layer's n neurons (about
        ε of the typical spacing of n keys, so the share of networks with a near-tie does not grow with n).

        Args:
            vectors: (batch, num_parameters) raw (un-normalised) flat weights.
            max_branches: At most this many views per network (default ``canonical_max_branches``). The near-ties
                of a network are expanded in canonical order (layer, then position; each doubles the views that
                have it) while its views fit; the rest are decided hard (the branch weighing ≥ ½): still
                invariant, but a network with that many near-ties can jump where one of those keys crosses a tie.
                Exactness limit: three or more neurons with bit-identical (key, norm) — e.g. duplicated neurons —
                get the adjacent swaps, not all their orders, so such a network is invariant only up to those.
            return_truncated: Also return (batch,) bool: which networks had near-ties decided hard.

        Returns:
            views (num_views, num_parameters) float32 raw canonical vectors, weights (num_views,) float64 summing to
            1 per network, owner (num_views,) int64 network index; views of one network are contiguous.
        """
        vectors = self._check_vectors(torch.as_tensor(vectors))
        limit = self.canonical_max_branches if max_branches is None else int(max_branches)
        batch = vectors.shape[0]
        views, weights = vectors.clone(), torch.ones(batch, dtype=torch.float64)
        owner, truncated = torch.arange(batch), torch.zeros(batch, dtype=torch.bool)
        relative = self.canonical_epsilon
        for position, footprint in enumerate(self._footprints):
            width = self._table[position]["width"]
            rows = views[:, footprint[:, :width]].double()  # (views, neurons, width)
            sign = distance_s = None
            if position in self._sign_layers:
                sums = rows.sum(-1)
                sign = torch.where(sums < 0, -1.0, 1.0)
                keys = distance_s = sums.abs()
                epsilon_s = relative / len(footprint) * sums.pow(2).mean(1, keepdim=True).sqrt()
                flip_weight = _branch_weight(distance_s, epsilon_s)
            else:
                keys = rows.sum(-1)
            # Exact ties of the key are ordered by a second invariant key (the row's squared norm), so the hard
            # order — and the branches built on it — stays invariant when three or more keys are bit-identical.
            by_norm = torch.argsort(rows.pow(2).sum(-1), dim=1, stable=True)
            order = by_norm.gather(1, torch.argsort(keys.gather(1, by_norm), dim=1, stable=True))
            gaps = keys.gather(1, order).diff(dim=1)
            epsilon_k = relative / len(footprint) * keys.std(1, keepdim=True, unbiased=False)
            swap_weight = _branch_weight(gaps, epsilon_k)
            near = (swap_weight > 0).any(1)
            if sign is not None:
                near |= (flip_weight > 0).any(1)
            if limit == 1 or not bool(near.any()):
                views = self._apply_canonical(views, footprint, order, sign)
                truncated |= torch.zeros(batch, dtype=torch.bool).index_fill_(0, owner[near], True)
                continue
            # Near-ties are expanded in canonical order — position k: the flip of the neuron ranked k, then the
            # swap of positions k, k + 1 — each doubling the rows that have it while their network's views fit.
            hard_order, source = order, torch.arange(views.shape[0])
            flip_sorted = None if sign is None else flip_weight.gather(1, hard_order)
            slots = [(kind, k) for k in range(len(footprint)) for kind in ("flip", "swap")]
            for kind, k in slots:
                if (kind == "flip" and sign is None) or (kind == "swap" and k >= gaps.shape[1]):
                    continue
                other = (flip_sorted if kind == "flip" else swap_weight)[source, k]
                active = other > 0
                if not bool(active.any()):
                    continue
                wanted = torch.bincount(owner[active], minlength=batch)
                fits = torch.bincount(owner, minlength=batch) + wanted <= limit
                truncated |= (wanted > 0) & ~fits
                chosen = (active & fits[owner]).nonzero().squeeze(1)
                if chosen.numel() == 0:
                    continue
                branch_order = order[chosen].clone()
                branch_sign = None if sign is None else sign[chosen].clone()
                if kind == "swap":
                    branch_order[:, [k, k + 1]] = branch_order[:, [k + 1, k]]
                else:
                    neuron = hard_order[source[chosen], k]
                    rows = torch.arange(chosen.numel())
                    branch_sign[rows, neuron] = -branch_sign[rows, neuron]
                branch_weight = weights[chosen] * other[chosen]
                weights = weights.clone()
                weights[chosen] = weights[chosen] * (1 - other[chosen])
                order = torch.cat([order, branch_order])
                sign = None if sign is None else torch.cat([sign, branch_sign])
                weights = torch.cat([weights, branch_weight])
                owner, source = torch.cat([owner, owner[chosen]]), torch.cat([source, source[chosen]])
            # A network's views together (stable: in the order they were made).
            regroup = torch.argsort(owner, stable=True)
            order, weights, owner, source = order[regroup], weights[regroup], owner[regroup], source[regroup]
            sign = None if sign is None else sign[regroup]
            views = views[source]
            views = self._apply_canonical(views, footprint, order, sign)
        return (views, weights, owner, truncated) if return_truncated else (views, weights, owner)

    @staticmethod
    def _apply_canonical(
        views: torch.Tensor, footprint: torch.Tensor, order: torch.Tensor, sign: torch.Tensor | None
    ) -> torch.Tensor:
        """New neuron j = old neuron order[j], times its sign (row and outgoing weights): (views, num_parameters)."""
        count, num_neurons, size = views.shape[0], footprint.shape[0], footprint.shape[1]
        values = views.gather(1, footprint[order].reshape(count, -1)).view(count, num_neurons, size)
        if sign is not None:
            values = values * sign.gather(1, order).to(values.dtype)[:, :, None]
        output = views.clone()
        output[:, footprint.reshape(-1)] = values.reshape(count, -1)
        return output

    # ----------------------------------------------------------------------------------------- vectors ⇄ tokens
    def normalize_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """(batch, num_parameters) → standardised per layer (identity when normalisation is off)."""
        return (vectors - self._mean) / self._std if self.normalize else vectors

    def denormalize_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_vectors` (to within float32 rounding)."""
        return vectors * self._std + self._mean if self.normalize else vectors

    def vectors_to_tokens(
        self, vectors: torch.Tensor, normalize: bool | None = None, check: bool = True
    ) -> BatchFeature:
        """Tokens of flat vectors (batch, num_parameters), normalised when ``normalize`` (default: config).

        ``check=False`` skips the shape and finiteness checks, for vectors derived from checked ones
        (augmented views in the training collator).

        Returns:
            ``BatchFeature`` with input_tokens (batch, num_tokens, token_dim) float32, attention_mask
            (batch, num_tokens) int64 and position_ids (batch, num_tokens, 3) int64.
        """
        vectors = self._check_vectors(torch.as_tensor(vectors)) if check else vectors
        if self.normalize if normalize is None else normalize:
            vectors = self.normalize_vectors(vectors)
        batch = vectors.shape[0]
        padded = torch.cat([vectors, vectors.new_zeros(batch, 1)], dim=1)
        tokens = padded.index_select(1, self._gather_index).view(batch, self.num_tokens, self.token_dim)
        return BatchFeature(
            {
                "input_tokens": tokens,
                # Every token holds at least one weight: all real. Kept for batching with other architectures.
                "attention_mask": torch.ones(batch, self.num_tokens, dtype=torch.long),
                "position_ids": self._position_ids.expand(batch, -1, -1).clone(),
            }
        )

    def __call__(self, networks: Any, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        """Tokens of one network or a batch: state_dicts, modules, safetensors paths or flat vectors.

        Args:
            networks: A network or a list of them, or a (batch, num_parameters) tensor/array of flat vectors.
            return_tensors: ``"pt"`` (default) or ``"np"``.
            **kwargs: Accepted for the transformers call convention; any given is an error.

        Returns:
            What ``model(**inputs)`` takes: input_tokens, attention_mask, position_ids (see
            :meth:`vectors_to_tokens`).
        """
        if kwargs:
            raise TypeError(f"Unexpected arguments {sorted(kwargs)}.")
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}.")
        features = self.vectors_to_tokens(self.networks_to_vectors(networks))
        if return_tensors == "np":
            return BatchFeature({key: value.numpy() for key, value in features.items()})
        return features

    def to_vectors(self, inputs_or_tokens: Any, denormalize: bool | None = None) -> torch.Tensor:
        """Exact inverse of the tokenisation: flat vectors (batch, num_parameters) float32.

        Args:
            inputs_or_tokens: The processor's output (or any mapping with ``input_tokens``), or tokens of shape
                (batch, num_tokens, token_dim) or (num_tokens, token_dim).
            denormalize: Undo the normalisation (default: when the config normalises).
        """
        tokens = inputs_or_tokens["input_tokens"] if isinstance(inputs_or_tokens, Mapping) else inputs_or_tokens
        tokens = torch.as_tensor(tokens)
        if tokens.dim() == 2:
            tokens = tokens[None]
        expected = [self.num_tokens, self.token_dim]
        if tokens.dim() != 3 or list(tokens.shape[1:]) != expected:
            raise ValueError(
                f"Tokens must have shape (batch, {expected[0]}, {expected[1]}), got {list(tokens.shape)}."
            )
        vectors = tokens.reshape(tokens.shape[0], -1).index_select(1, self._scatter_index)
        return (
            self.denormalize_vectors(vectors) if (self.normalize if denormalize is None else denormalize) else vectors
        )

    def to_state_dicts(self, inputs_or_tokens: Any, denormalize: bool | None = None) -> list[dict[str, torch.Tensor]]:
        """State dicts of tokens or processor outputs: the exact inverse of ``__call__`` (see :meth:`to_vectors`)."""
        return self.vectors_to_state_dicts(self.to_vectors(inputs_or_tokens, denormalize=denormalize))

    def vectors_to_state_dicts(self, vectors: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Flat vectors (batch, num_parameters) → state dicts (name → tensor of its shape, own storage)."""
        vectors = self._check_vectors(torch.as_tensor(vectors))
        sizes = [math.prod(shape) for shape in self._parameter_shapes.values()]
        state_dicts = []
        for vector in vectors:
            pieces = torch.split(vector, sizes)
            state_dicts.append(
                {
                    name: piece.reshape(shape).clone()
                    for (name, shape), piece in zip(self._parameter_shapes.items(), pieces, strict=True)
                }
            )
        return state_dicts


def register_processor(config_class: type | None = None) -> None:
    """Registers :class:`NeuronTokenProcessor` with ``AutoFeatureExtractor``.

    Args:
        config_class: The model config class (``HyperRepConfig``). Without it, the processor is registered under
            the key ``"hyperrep"``, which is enough for ``AutoFeatureExtractor.from_pretrained`` to resolve the
            ``feature_extractor_type`` written in ``preprocessor_config.json``.
    """
    AutoFeatureExtractor.register(config_class or "hyperrep", NeuronTokenProcessor, exist_ok=True)


# Saved processors carry `auto_map` and this file, so AutoFeatureExtractor loads them with trust_remote_code=True.
NeuronTokenProcessor.register_for_auto_class("AutoFeatureExtractor")
