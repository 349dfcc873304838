"""Declarative network specs: one description drives the plain module, the population trainer and the tokens.

A zoo holds networks of one *family*: the same layers, each trained with its own seed and hyper-parameters.
A :class:`NetworkSpec` describes that family once, as a short list of layer strings::

    tetris = NetworkSpec.parse((1, 4, 4), ["flatten", "linear:5:nobias", "act", "linear:4:nobias"])
    cnn = NetworkSpec.parse((1, 28, 28), ["conv:8:5", "maxpool:2", "act", "conv:6:5", "maxpool:2", "act",
                                          "conv:6:4:2"...])

Layer strings:

=====================  ===========================================================
``linear:OUT[:nobias]``  fully connected layer with OUT outputs
``conv:OUT:K[:sS][:pP][:nobias]``  2-D convolution, OUT channels, K×K kernel, stride S, padding P
``maxpool:K`` / ``avgpool:K``  pooling with kernel and stride K
``gap``                  global average pooling (channels, H, W) → (channels,)
``flatten``              (channels, H, W) → (channels·H·W,)
``act``                  the network's activation function (chosen per network)
``dropout``              dropout with the network's rate (chosen per network)
=====================  ===========================================================

Parameters are keyed by name and shape — ``layers.<index>.weight`` / ``.bias``, the names of
:func:`make_module`'s state_dict — never by module position alone, so inserting a dropout layer can never
silently shift which tensor is which.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

ACTIVATIONS = ("tanh", "relu", "sigmoid", "gelu", "leaky_relu", "identity")
INITS = ("uniform", "normal", "kaiming_uniform", "kaiming_normal", "xavier_uniform", "xavier_normal", "default")
LAYER_KINDS = ("linear", "conv", "maxpool", "avgpool", "gap", "flatten", "act", "dropout")


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a network family.

    Attributes:
        kind: One of ``LAYER_KINDS``.
        out: Output features (linear) or channels (conv).
        kernel_size: Conv or pooling kernel size.
        stride: Conv stride (pooling uses ``kernel_size``).
        padding: Conv zero padding.
        bias: Whether a linear/conv layer has a bias.
    """

    kind: str
    out: int = 0
    kernel_size: int = 0
    stride: int = 1
    padding: int = 0
    bias: bool = True

    @classmethod
    def parse(cls, text: str) -> LayerSpec:
        """Parses a layer string such as ``"conv:8:5"`` or ``"linear:5:nobias"`` (see the module docstring)."""
        parts = text.strip().split(":")
        kind, args = parts[0], parts[1:]
        if kind not in LAYER_KINDS:
            raise ValueError(f"Unknown layer kind {kind!r} in {text!r}; expected one of {LAYER_KINDS}.")
        bias = "nobias" not in args
        args = [a for a in args if a != "nobias"]
        try:
            if kind == "linear":
                (out,) = args
                return cls(kind, out=int(out), bias=bias)
            if kind == "conv":
                out, kernel = args[0], args[1]
                stride, padding = 1, 0
                for extra in args[2:]:
                    if extra.startswith("s"):
                        stride = int(extra[1:])
                    elif extra.startswith("p"):
                        padding = int(extra[1:])
                    else:
                        raise ValueError(extra)
                return cls(kind, out=int(out), kernel_size=int(kernel), stride=stride, padding=padding, bias=bias)
            if kind in ("maxpool", "avgpool"):
                (kernel,) = args
                return cls(kind, kernel_size=int(kernel))
            if args:
                raise ValueError(args)
            return cls(kind)
        except ValueError as error:
            raise ValueError(
                f"Cannot parse layer {text!r}: see hyperrep_hf.zoo.networks for the layer syntax."
            ) from error

    def __str__(self) -> str:
        if self.kind == "linear":
            return f"linear:{self.out}" + ("" if self.bias else ":nobias")
        if self.kind == "conv":
            text = f"conv:{self.out}:{self.kernel_size}"
            text += f":s{self.stride}" if self.stride != 1 else ""
            text += f":p{self.padding}" if self.padding else ""
            return text + ("" if self.bias else ":nobias")
        if self.kind in ("maxpool", "avgpool"):
            return f"{self.kind}:{self.kernel_size}"
        return self.kind


@dataclass(frozen=True)
class ParameterLayer:
    """A layer that owns parameters, with everything the trainer and the token processor need.

    Attributes:
        index: Position of the layer in ``NetworkSpec.layers`` (and in :func:`make_module`).
        kind: ``"linear"`` or ``"conv"``.
        weight_name: State-dict key of the weight, e.g. ``"layers.1.weight"``.
        weight_shape: PyTorch layout: (out, in) or (out, in, k, k).
        bias_name: State-dict key of the bias, or None.
        input_shape: Shape of one example entering the layer: (in,) or (in, H, W).
        output_shape: Shape of one example leaving the layer.
        flatten_block: For a linear layer fed by the flattened (channels, H, W) output of a previous conv
            layer, H·W: the number of consecutive input columns that belong to one channel of that layer
            (permuting the channel moves the whole block). 1 otherwise.
    """

    index: int
    kind: str
    weight_name: str
    weight_shape: tuple[int, ...]
    bias_name: str | None
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    flatten_block: int = 1

    @property
    def num_neurons(self) -> int:
        """Output neurons (linear) or channels (conv): the layer's number of neuron tokens."""
        return self.weight_shape[0]

    @property
    def fan_in(self) -> int:
        """Incoming weights per neuron: in or in·k·k."""
        return math.prod(self.weight_shape[1:])

    @property
    def bias_shape(self) -> tuple[int, ...] | None:
        """Shape of the bias, or None."""
        return (self.weight_shape[0],) if self.bias_name else None

    @property
    def num_parameters(self) -> int:
        """Weights plus biases of this layer."""
        return math.prod(self.weight_shape) + (self.weight_shape[0] if self.bias_name else 0)


@dataclass(frozen=True)
class NetworkSpec:
    """A network family: input shape, layers and the number of classes they produce.

    Attributes:
        input_shape: Shape of one input example, e.g. (1, 4, 4) or (16,).
        layers: The layers, in forward order.
        name: A short name for messages and cards.
    """

    input_shape: tuple[int, ...]
    layers: tuple[LayerSpec, ...]
    name: str = "network"
    _parameter_layers: tuple[ParameterLayer, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(int(s) for s in self.input_shape))
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "_parameter_layers", tuple(_trace(self)))
        if not self._parameter_layers:
            raise ValueError(f"Network spec {self.name!r} has no linear or conv layer.")

    @classmethod
    def parse(cls, input_shape: tuple[int, ...] | list[int], layers: list[str], name: str = "network") -> NetworkSpec:
        """Builds a spec from layer strings (see the module docstring)."""
        return cls(tuple(input_shape), tuple(LayerSpec.parse(text) for text in layers), name)

    @property
    def parameter_layers(self) -> tuple[ParameterLayer, ...]:
        """The linear/conv layers in forward order."""
        return self._parameter_layers

    @property
    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """State-dict keys and shapes in PyTorch order: per layer, weight then bias."""
        shapes: dict[str, tuple[int, ...]] = {}
        for layer in self._parameter_layers:
            shapes[layer.weight_name] = layer.weight_shape
            if layer.bias_name:
                shapes[layer.bias_name] = (layer.weight_shape[0],)
        return shapes

    @property
    def num_parameters(self) -> int:
        """Length of the flat weight vector."""
        return sum(layer.num_parameters for layer in self._parameter_layers)

    @property
    def num_classes(self) -> int:
        """Outputs of the last layer."""
        return math.prod(self._parameter_layers[-1].output_shape)

    @property
    def activation_positions(self) -> list[int]:
        """Indices of the ``act`` layers."""
        return [i for i, layer in enumerate(self.layers) if layer.kind == "act"]

    def to_dict(self) -> dict:
        """JSON-ready description, including the derived parameter table (read by humans and other tools)."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "layers": [str(layer) for layer in self.layers],
            "num_parameters": self.num_parameters,
            "num_classes": self.num_classes,
            "activation_positions": self.activation_positions,
            "parameters": [{"name": name, "shape": list(shape)} for name, shape in self.parameter_shapes.items()],
            "parameter_layers": [
                {**asdict(layer), "weight_shape": list(layer.weight_shape)} for layer in self._parameter_layers
            ],
        }

    @classmethod
    def from_dict(cls, data: dict) -> NetworkSpec:
        """Inverse of :meth:`to_dict` (derived fields are recomputed and checked)."""
        spec = cls.parse(data["input_shape"], data["layers"], data.get("name", "network"))
        if "parameters" in data:
            recorded = {p["name"]: tuple(p["shape"]) for p in data["parameters"]}
            if recorded != spec.parameter_shapes:
                raise ValueError(
                    f"Architecture record is inconsistent: layers give {spec.parameter_shapes}, "
                    f"the record lists {recorded}."
                )
        return spec

    def to_json(self) -> str:
        """The spec as a JSON string."""
        return json.dumps(self.to_dict())

    def __str__(self) -> str:
        return f"{self.name}{list(self.input_shape)}: " + " → ".join(str(layer) for layer in self.layers)


def _trace(spec: NetworkSpec) -> list[ParameterLayer]:
    """Walks the layers, tracking the example shape, and records every parameter layer."""
    shape = spec.input_shape
    flatten_block = 1
    result = []
    for index, layer in enumerate(spec.layers):
        where = f"layer {index} ({layer}) of {spec.name!r} with input shape {shape}"
        if layer.kind == "linear":
            if len(shape) != 1:
                raise ValueError(f"{where}: a linear layer needs a flat input; add 'flatten' or 'gap' before it.")
            weight_shape = (layer.out, shape[0])
            out_shape: tuple[int, ...] = (layer.out,)
        elif layer.kind == "conv":
            if len(shape) != 3:
                raise ValueError(f"{where}: a conv layer needs a (channels, H, W) input.")
            size = [(s + 2 * layer.padding - layer.kernel_size) // layer.stride + 1 for s in shape[1:]]
            if min(size) < 1:
                raise ValueError(f"{where}: the kernel does not fit the input.")
            weight_shape = (layer.out, shape[0], layer.kernel_size, layer.kernel_size)
            out_shape = (layer.out, *size)
        elif layer.kind in ("maxpool", "avgpool"):
            if len(shape) != 3 or min(shape[1:]) < layer.kernel_size:
                raise ValueError(f"{where}: pooling needs a (channels, H, W) input at least as large as its kernel.")
            shape = (shape[0], shape[1] // layer.kernel_size, shape[2] // layer.kernel_size)
            continue
        elif layer.kind == "gap":
            if len(shape) != 3:
                raise ValueError(f"{where}: global average pooling needs a (channels, H, W) input.")
            shape = (shape[0],)
            continue
        elif layer.kind == "flatten":
            flatten_block = math.prod(shape[1:]) if len(shape) == 3 else 1
            shape = (math.prod(shape),)
            continue
        else:  # act, dropout: shape-preserving
            continue
        result.append(
            ParameterLayer(
                index=index,
                kind=layer.kind,
                weight_name=f"layers.{index}.weight",
                weight_shape=weight_shape,
                bias_name=f"layers.{index}.bias" if layer.bias else None,
                input_shape=shape,
                output_shape=out_shape,
                flatten_block=flatten_block if layer.kind == "linear" and result else 1,
            )
        )
        flatten_block = 1
        shape = out_shape
    return result


def make_activation(name: str) -> nn.Module:
    """The activation module for a name in ``ACTIVATIONS``."""
    modules = {
        "tanh": nn.Tanh,
        "relu": nn.ReLU,
        "sigmoid": nn.Sigmoid,
        "gelu": nn.GELU,
        "leaky_relu": nn.LeakyReLU,
        "identity": nn.Identity,
    }
    if name not in modules:
        raise ValueError(f"Unknown activation {name!r}; expected one of {ACTIVATIONS}.")
    return modules[name]()


class SpecNetwork(nn.Module):
    """A plain ``nn.Module`` for one network of a family (``layers`` is an ``nn.Sequential``)."""

    def __init__(self, spec: NetworkSpec, activation: str = "tanh", dropout: float = 0.0) -> None:
        super().__init__()
        self.spec = spec
        modules: list[nn.Module] = []
        input_shapes = [spec.input_shape, *_trace_shapes(spec)]
        for layer, shape in zip(spec.layers, input_shapes, strict=False):
            if layer.kind == "linear":
                modules.append(nn.Linear(shape[0], layer.out, bias=layer.bias))
            elif layer.kind == "conv":
                modules.append(
                    nn.Conv2d(shape[0], layer.out, layer.kernel_size, layer.stride, layer.padding, bias=layer.bias)
                )
            elif layer.kind == "maxpool":
                modules.append(nn.MaxPool2d(layer.kernel_size))
            elif layer.kind == "avgpool":
                modules.append(nn.AvgPool2d(layer.kernel_size))
            elif layer.kind == "gap":
                modules.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1)))
            elif layer.kind == "flatten":
                modules.append(nn.Flatten(1))
            elif layer.kind == "act":
                modules.append(make_activation(activation))
            elif layer.kind == "dropout":
                modules.append(nn.Dropout(dropout))
        self.layers = nn.Sequential(*modules)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """inputs: (batch, *input_shape) → logits (batch, num_classes)."""
        return self.layers(inputs)


def _trace_shapes(spec: NetworkSpec) -> list[tuple[int, ...]]:
    """Example shape after each layer."""
    shapes = []
    shape = spec.input_shape
    for layer in spec.layers:
        if layer.kind == "linear":
            shape = (layer.out,)
        elif layer.kind == "conv":
            size = [(s + 2 * layer.padding - layer.kernel_size) // layer.stride + 1 for s in shape[1:]]
            shape = (layer.out, *size)
        elif layer.kind in ("maxpool", "avgpool"):
            shape = (shape[0], shape[1] // layer.kernel_size, shape[2] // layer.kernel_size)
        elif layer.kind == "gap":
            shape = (shape[0],)
        elif layer.kind == "flatten":
            shape = (math.prod(shape),)
        shapes.append(shape)
    return shapes


def make_module(spec: NetworkSpec, activation: str = "tanh", dropout: float = 0.0) -> SpecNetwork:
    """A plain ``nn.Module`` of the family whose ``state_dict`` keys are ``spec.parameter_shapes``."""
    return SpecNetwork(spec, activation, dropout)


def batched_outputs(
    module: nn.Module, spec: NetworkSpec, vectors: torch.Tensor, inputs: torch.Tensor, max_floats: int = 20_000_000
) -> Iterator[tuple[slice, torch.Tensor]]:
    """Runs ``module`` with each row of ``vectors`` as its weights on the same ``inputs``, a chunk of rows at a time.

    Args:
        module: A module of the family (:func:`make_module`, possibly altered), in the mode and dtype wanted.
        spec: The family: how a flat vector becomes the module's state dict.
        vectors: (rows, num_parameters) flat weight vectors, in the module's dtype.
        inputs: (examples, *input_shape).
        max_floats: Bound on one layer's output held at once: chunk rows × examples × the widest layer.

    Yields:
        (the chunk's rows as a slice of ``vectors``, outputs (chunk rows, examples, num_classes)), without autograd.
    """
    widest = max(math.prod(layer.output_shape) for layer in spec.parameter_layers)
    chunk = max(1, max_floats // (len(inputs) * widest))

    def outputs(vector: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(module, unflatten_vector(spec, vector), (inputs,))

    batched = torch.vmap(outputs)
    with torch.no_grad():
        for start in range(0, len(vectors), chunk):
            rows = slice(start, min(start + chunk, len(vectors)))
            yield rows, batched(vectors[rows])


def init_parameters(
    spec: NetworkSpec, init: str, generator: torch.Generator, bias_init: float = 0.0
) -> dict[str, torch.Tensor]:
    """Draws one network's initial parameters, in state-dict order, from its own generator.

    ``uniform`` and ``normal`` are PyTorch's ``nn.init`` defaults, U(0, 1) and N(0, 1), as in the reference
    zoos; ``default`` is ``nn.Linear``/``nn.Conv2d``'s own initialisation (kaiming-uniform with a=√5 and a
    fan-in bias). Biases are filled with ``bias_init`` unless ``init == "default"``.

    Returns:
        name → float32 tensor of the parameter's shape.
    """
    if init not in INITS:
        raise ValueError(f"Unknown init {init!r}; expected one of {INITS}.")
    params: dict[str, torch.Tensor] = {}
    for layer in spec.parameter_layers:
        weight = torch.empty(layer.weight_shape)
        if init == "uniform":
            nn.init.uniform_(weight, generator=generator)
        elif init == "normal":
            nn.init.normal_(weight, generator=generator)
        elif init == "kaiming_uniform":
            nn.init.kaiming_uniform_(weight, generator=generator)
        elif init == "kaiming_normal":
            nn.init.kaiming_normal_(weight, generator=generator)
        elif init == "xavier_uniform":
            nn.init.xavier_uniform_(weight, generator=generator)
        elif init == "xavier_normal":
            nn.init.xavier_normal_(weight, generator=generator)
        else:
            nn.init.kaiming_uniform_(weight, a=math.sqrt(5), generator=generator)
        params[layer.weight_name] = weight
        if layer.bias_name:
            if init == "default":
                bound = 1 / math.sqrt(layer.fan_in)
                bias = torch.empty(layer.num_neurons).uniform_(-bound, bound, generator=generator)
            else:
                bias = torch.full((layer.num_neurons,), float(bias_init))
            params[layer.bias_name] = bias
    return params


def flatten_state_dict(spec: NetworkSpec, state_dict: dict[str, torch.Tensor]) -> torch.Tensor:
    """One network's parameters as the flat vector (per layer: weight row-major, then bias), float32.

    Raises:
        ValueError: naming any missing, extra or mis-shaped parameter.
    """
    check_state_dict(spec, state_dict)
    return torch.cat([state_dict[name].detach().reshape(-1).float() for name in spec.parameter_shapes])


def unflatten_vector(spec: NetworkSpec, vector: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inverse of :func:`flatten_state_dict`: vector (num_parameters,) → state_dict (views into vector)."""
    if vector.shape != (spec.num_parameters,):
        raise ValueError(f"Expected a flat vector of {spec.num_parameters} weights, got shape {tuple(vector.shape)}.")
    result, offset = {}, 0
    for name, shape in spec.parameter_shapes.items():
        size = math.prod(shape)
        result[name] = vector[offset : offset + size].view(shape)
        offset += size
    return result


def check_state_dict(spec: NetworkSpec, state_dict: dict[str, torch.Tensor]) -> None:
    """Checks names and shapes against the spec; raises a ValueError that names every mismatch."""
    expected = spec.parameter_shapes
    problems = []
    for name, shape in expected.items():
        if name not in state_dict:
            problems.append(f"missing parameter {name!r} (expected shape {list(shape)})")
        elif tuple(state_dict[name].shape) != shape:
            problems.append(f"parameter {name!r} has shape {list(state_dict[name].shape)}, expected {list(shape)}")
    for name in state_dict:
        if name not in expected:
            problems.append(f"unexpected parameter {name!r} with shape {list(state_dict[name].shape)}")
    if problems:
        raise ValueError(f"State dict does not match the architecture {spec.name!r}: " + "; ".join(problems) + ".")


TETRIS_MLP = NetworkSpec.parse((1, 4, 4), ["flatten", "linear:5:nobias", "act", "linear:4:nobias"], "tetris_mlp")
"""The paper's Tetris MLP: 16 → 5 → 4, no biases, 100 parameters."""

MNIST_CNN = NetworkSpec.parse(
    (1, 28, 28),
    [
        "conv:8:5",
        "maxpool:2",
        "act",
        "conv:6:5",
        "maxpool:2",
        "act",
        "conv:4:2",
        "act",
        "flatten",
        "linear:20",
        "act",
        "linear:10",
    ],
    "mnist_cnn",
)
"""The paper's 2464-parameter CNN for 28×28 images (MNIST-SEED, FASHION-SEED, MNIST-HYP)."""

SMALL_CNN_ZOO = NetworkSpec.parse(
    (1, 28, 28),
    ["conv:16:3:s2", "act", "conv:16:3:s2", "act", "conv:16:3:s2", "act", "gap", "dropout", "linear:10"],
    "small_cnn_zoo",
)
"""Unterthiner et al.'s Small CNN Zoo network (4970 parameters on one-channel 28×28 inputs)."""

KNOWN_NETWORKS = {spec.name: spec for spec in (TETRIS_MLP, MNIST_CNN, SMALL_CNN_ZOO)}
