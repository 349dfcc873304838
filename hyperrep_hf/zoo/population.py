"""Population training: N networks of one family trained at once, each as if it were trained alone.

Every parameter of the family is stored *stacked* in one (N, num_parameters) tensor; each layer's weight is a
(N, *shape) view of it. One forward pass runs all N networks with batched kernels. Three engines compute the
same function (tests/test_population.py checks them against the plain module):

    linear                x: (N, B, in)       ── baddbmm ──►  (N, B, out)
    conv, "unfold"        x: (N, B, H, W, C)  ── im2col view → (N, B·H'·W', C·k·k) ── baddbmm ──►  (N, B, H', W', out)
    conv, "channels_last" x: (B, N·C, H, W)   ── conv2d(groups=N/2), block-diagonal pairs, NHWC ──►  (B, N·out, H', W')
    conv, "grouped"       x: (B, N·C, H, W)   ── conv2d(groups=N) ──►  (B, N·out, H', W')

``"unfold"`` (the CUDA default) keeps every network's feature maps channels-last, so one strided copy builds the
patch matrix and one batched matrix product per layer (and two in the backward pass) serves all N networks;
pooling runs on the same memory as a channels-last ``max_pool2d``. ``"channels_last"`` (the CPU default) runs
oneDNN's grouped convolution on channels-last memory with two networks per group on the CPU (see
:func:`_paired_weight`), gathers each batch straight into that memory, and keeps freed memory in the process
(:func:`tune_cpu_allocator`). ``"grouped"`` is the previous engine, kept as the benchmark's baseline.

Each network keeps its own seed, initialisation, data order, learning rate, weight decay and dropout rate; the
optimizers below are written over stacked tensors with per-network hyper-parameters and follow
``torch.optim.Adam`` / ``SGD`` step for step, so a network trained here matches the same network trained alone
(tests/test_population.py checks it against a plain ``nn.Module`` loop).

Networks in one population share their activation, optimizer kind and batch size (these change the kernels or
the step structure); the zoo builder groups a recipe's networks accordingly.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from .networks import ACTIVATIONS, INITS, NetworkSpec, init_parameters

OPTIMIZERS = ("adam", "sgd")
ENGINES = ("auto", "channels_last", "unfold", "grouped")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
SGD_MOMENTUM = 0.9


@dataclass(frozen=True)
class NetworkConfig:
    """How one network of a zoo is trained.

    Attributes:
        seed: Seeds the network's initialisation and its data order.
        activation: One of ``networks.ACTIVATIONS``.
        init: One of ``networks.INITS``.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        learning_rate: Step size, > 0.
        weight_decay: L2 penalty added to the gradient (PyTorch's ``weight_decay``), ≥ 0.
        dropout: Dropout rate of the family's ``dropout`` layers, in [0, 1).
        batch_size: Training batch size.
        bias_init: Constant initial bias (ignored for ``init="default"``).
    """

    seed: int
    activation: str = "tanh"
    init: str = "kaiming_uniform"
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    dropout: float = 0.0
    batch_size: int = 32
    bias_init: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation={self.activation!r} (expected one of {ACTIVATIONS})")
        if self.init not in INITS:
            problems.append(f"init={self.init!r} (expected one of {INITS})")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer={self.optimizer!r} (expected one of {OPTIMIZERS})")
        if not (isinstance(self.learning_rate, int | float) and math.isfinite(self.learning_rate)) or (
            self.learning_rate <= 0
        ):
            problems.append(f"learning_rate={self.learning_rate!r} (expected a finite number > 0)")
        if not (isinstance(self.weight_decay, int | float) and 0 <= self.weight_decay < math.inf):
            problems.append(f"weight_decay={self.weight_decay!r} (expected a finite number ≥ 0)")
        if not (isinstance(self.dropout, int | float) and 0 <= self.dropout < 1):
            problems.append(f"dropout={self.dropout!r} (expected 0 ≤ dropout < 1)")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            problems.append(f"batch_size={self.batch_size!r} (expected an integer ≥ 1)")
        if not isinstance(self.seed, int):
            problems.append(f"seed={self.seed!r} (expected an integer)")
        if problems:
            raise ValueError("Invalid network configuration: " + "; ".join(problems) + ".")

    def to_dict(self) -> dict:
        """Plain dict of the fields."""
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of the configuration fields, in order."""
        return [f.name for f in fields(cls)]


def data_order(seed: int, epoch: int, num_examples: int) -> torch.Tensor:
    """The order in which a network with ``seed`` sees the training set in ``epoch`` (1-based): a permutation."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_examples, generator=generator)


class Population:
    """N networks of one family, trained together with batched kernels.

    Args:
        spec: The network family.
        configs: One configuration per network; activation, optimizer and batch size must agree.
        device: Where the stacked parameters live.
        engine: How convolutions run (all compute the same function): ``"channels_last"`` (``conv2d(groups=N)`` on
            channels-last memory; two networks per group on the CPU), ``"unfold"`` (im2col + batched matrix
            products), ``"grouped"`` (``conv2d(groups=N)`` on contiguous memory: the previous engine, the
            benchmark's baseline) or ``"auto"``: :func:`default_engine` for the device.
    """

    def __init__(
        self,
        spec: NetworkSpec,
        configs: list[NetworkConfig],
        device: str | torch.device = "cpu",
        engine: str = "auto",
    ) -> None:
        if not configs:
            raise ValueError("A population needs at least one network configuration.")
        if engine not in ENGINES:
            raise ValueError(f"Unknown population engine {engine!r}; expected one of {ENGINES}.")
        self.device = torch.device(device)
        self.engine = default_engine(self.device) if engine == "auto" else engine
        if self.device.type == "cpu":
            tune_cpu_allocator()
        for key in ("activation", "optimizer", "batch_size"):
            values = {getattr(config, key) for config in configs}
            if len(values) > 1:
                raise ValueError(f"All networks of a population must share {key}; got {sorted(values)}.")
        self.spec = spec
        self.configs = list(configs)
        self.activation = configs[0].activation
        self.optimizer = configs[0].optimizer
        self.batch_size = configs[0].batch_size
        self.size = len(configs)

        initial = [
            init_parameters(spec, config.init, torch.Generator().manual_seed(config.seed), config.bias_init)
            for config in configs
        ]
        # All parameters live in one (N, num_parameters) leaf in flat-vector order; the per-layer tensors are views
        # of it. The optimizer then runs a handful of kernels on one tensor instead of a handful per parameter.
        flat = torch.stack(
            [torch.cat([params[name].reshape(-1) for name in spec.parameter_shapes]) for params in initial]
        )
        self.flat_parameters = flat.to(self.device).requires_grad_()
        column = (self.size,)
        self.learning_rate = torch.tensor([c.learning_rate for c in configs], dtype=torch.float32).view(column)
        self.weight_decay = torch.tensor([c.weight_decay for c in configs], dtype=torch.float32).view(column)
        self.dropout = torch.tensor([c.dropout for c in configs], dtype=torch.float32).view(column)
        self.learning_rate, self.weight_decay, self.dropout = (
            t.to(self.device) for t in (self.learning_rate, self.weight_decay, self.dropout)
        )
        # Decided once on the host: a device tensor's `.any()` in the step would wait for the device every step.
        self._any_dropout = any(c.dropout > 0 for c in configs)
        self._any_weight_decay = any(c.weight_decay > 0 for c in configs)
        self.step_count = 0
        self.first_moment = torch.zeros_like(self.flat_parameters)
        self.second_moment = torch.zeros_like(self.flat_parameters)
        self.alive = torch.ones(self.size, dtype=torch.bool, device=self.device)
        # channels_last on the CPU runs two networks per convolution group, with block-diagonal weights (see
        # _paired_weight; oneDNN's blocking, so not on CUDA, where the per-step check below would also wait for the
        # device); a network whose weights turn non-finite is then contained at once (_contain), or 0 · NaN would
        # reach its partner.
        has_conv = any(layer.kind == "conv" for layer in spec.layers)
        paired_engine = self.engine == "channels_last" and self.device.type == "cpu"
        self._paired = paired_engine and self.size % 2 == 0 and has_conv
        self._contained = torch.zeros(self.size, dtype=torch.bool, device=self.device)

    @property
    def parameters(self) -> dict[str, torch.Tensor]:
        """Stacked per-parameter views of the flat parameters: name → (N, *shape)."""
        # One split (its backward is one concatenation), not a slice per parameter (each slice's backward
        # zero-fills an (N, num_parameters) tensor and adds it up).
        shapes = self.spec.parameter_shapes
        pieces = self.flat_parameters.split([math.prod(shape) for shape in shapes.values()], dim=1)
        return {
            name: piece.view(self.size, *shape) for (name, shape), piece in zip(shapes.items(), pieces, strict=True)
        }

    # ---------------------------------------------------------------- forward

    def forward(
        self, inputs: torch.Tensor, dropout_generator: torch.Generator | None = None, shared: bool = False
    ) -> torch.Tensor:
        """Runs every network on its own inputs, or all of them on the same inputs.

        Args:
            inputs: (N, B, *input_shape), network n reads inputs[n]; or with ``shared`` (B, *input_shape), read
                by every network (evaluation: the first layer then runs as one dense kernel, no copies).
            dropout_generator: When given, dropout layers are active (training) and draw from it (see
                :func:`dropout_noise`; the generator must live on the population's device).
            shared: Whether ``inputs`` are shared by all networks.

        Returns:
            logits: (N, B, num_classes).
        """
        return self._forward(inputs, dropout_generator, shared)

    def _forward(
        self, inputs: torch.Tensor, dropout_generator: torch.Generator | None, shared: bool, laid_out: bool = False
    ) -> torch.Tensor:
        """:meth:`forward`; with ``laid_out``, ``inputs`` are already (B, N·C, H, W) in channels-last memory."""
        num_networks = self.size
        batch = inputs.shape[0] if shared or laid_out else inputs.shape[1]
        parameters = self.parameters
        hidden = inputs
        # Layouts: "flat" (N, B, F); "shared_flat" (B, F); unfold engine: "nhwc" (N, B, H, W, C), "shared_nhwc"
        # (B, H, W, C); grouped engine: "grouped" (B, N·C, H, W), "shared_nchw" (B, C, H, W).
        if laid_out:
            layout = "grouped"
        elif len(self.spec.input_shape) == 1:
            layout = "shared_flat" if shared else "flat"
        elif self.engine == "unfold":
            layout = "shared_nhwc" if shared else "nhwc"
            hidden = inputs.movedim(-3, -1)
        elif shared:
            layout = "shared_nchw"
        else:
            layout = "grouped"
            hidden = inputs.transpose(0, 1).reshape(batch, num_networks * inputs.shape[2], *inputs.shape[3:])
        if self.engine == "channels_last" and layout in ("grouped", "shared_nchw"):
            hidden = hidden.contiguous(memory_format=torch.channels_last)
        for index, layer in enumerate(self.spec.layers):
            if layer.kind == "linear":
                weight = parameters[f"layers.{index}.weight"].transpose(1, 2)
                bias = parameters[f"layers.{index}.bias"].unsqueeze(1) if layer.bias else None
                if layout == "shared_flat":  # (B, F) @ (N, F, out) broadcasts to (N, B, out)
                    hidden = torch.matmul(hidden, weight) if bias is None else torch.add(bias, hidden @ weight)
                    layout = "flat"
                elif bias is None:
                    hidden = torch.bmm(hidden, weight)
                else:
                    hidden = torch.baddbmm(bias, hidden, weight)
            elif layer.kind == "conv" and layout in ("nhwc", "shared_nhwc"):
                weight = parameters[f"layers.{index}.weight"]
                bias = parameters[f"layers.{index}.bias"] if layer.bias else None
                hidden = _conv_unfold(hidden, weight, bias, layer.stride, layer.padding, layout == "shared_nhwc")
                layout = "nhwc"
            elif layer.kind == "conv":
                weight = parameters[f"layers.{index}.weight"]
                bias = parameters[f"layers.{index}.bias"].reshape(-1) if layer.bias else None
                if layout == "shared_nchw":  # shared input: one dense conv
                    weight, groups = weight.reshape(-1, *weight.shape[2:]), 1
                elif self._paired:
                    weight, groups = _paired_weight(weight), num_networks // 2
                else:
                    weight, groups = weight.reshape(-1, *weight.shape[2:]), num_networks
                hidden = F.conv2d(hidden, weight, bias, layer.stride, layer.padding, groups=groups)
                layout = "grouped"
            elif layer.kind in ("maxpool", "avgpool"):
                pool = F.max_pool2d if layer.kind == "maxpool" else F.avg_pool2d
                hidden = (
                    _pool_nhwc(hidden, pool, layer.kernel_size)
                    if "nhwc" in layout
                    else pool(hidden, layer.kernel_size)
                )
            elif layer.kind in ("flatten", "gap"):
                hidden, layout = _flatten(hidden, layout, layer.kind == "gap", num_networks)
            elif layer.kind == "act":
                hidden = _activate(hidden, self.activation)
            elif layer.kind == "dropout" and dropout_generator is not None:
                hidden = self._dropout(hidden, layout, num_networks, dropout_generator)
        return hidden

    def _dropout(
        self, hidden: torch.Tensor, layout: str, num_networks: int, generator: torch.Generator
    ) -> torch.Tensor:
        """Inverted dropout with each network's own rate; the noise is :func:`dropout_noise`, whatever the layout."""
        if not self._any_dropout:
            return hidden
        if layout == "nhwc":  # (N, B, H, W, C)
            feature_shape = (hidden.shape[-1], *hidden.shape[2:4])
        elif layout == "grouped":  # (B, N·C, H, W)
            feature_shape = (hidden.shape[1] // num_networks, *hidden.shape[2:])
        else:  # (N, B, F)
            feature_shape = tuple(hidden.shape[2:])
        batch = hidden.shape[0] if layout == "grouped" else hidden.shape[1]
        noise = dropout_noise(generator, num_networks, batch, feature_shape, hidden.device)  # (N, B, C, H, W)
        if layout == "nhwc":
            noise = noise.movedim(2, -1)
        elif layout == "grouped":  # (N, B, C, H, W) → (B, N·C, H, W) in hidden's memory format
            noise = noise.permute(1, 3, 4, 0, 2).reshape(batch, *hidden.shape[2:], hidden.shape[1]).permute(0, 3, 1, 2)
            noise = noise.contiguous(memory_format=_memory_format(hidden))
        keep = (1 - self.dropout).view(-1, *[1] * (noise.dim() - 1))
        if layout == "grouped":
            keep = (1 - self.dropout).repeat_interleave(feature_shape[0]).view(1, -1, 1, 1)
        return hidden * (noise < keep) / keep

    # ---------------------------------------------------------------- training

    def train_epoch(self, images: torch.Tensor, labels: torch.Tensor, epoch: int, dropout_seed: int = 0) -> None:
        """One pass over the training set; each network in its own order (see :func:`data_order`).

        Args:
            images: (num_examples, *input_shape) on the population's device.
            labels: (num_examples,) int64.
            epoch: 1-based epoch number (seeds the data order).
            dropout_seed: Seeds this epoch's dropout noise.
        """
        with self._suggest_chunk_size("training"):
            num_examples = images.shape[0]
            order = torch.stack([data_order(c.seed, epoch, num_examples) for c in self.configs]).to(self.device)
            generator = torch.Generator(device=self.device).manual_seed(dropout_seed)
            flat_images = images.reshape(num_examples, -1)  # index_select on rows is several times faster than x[idx]
            laid_out = self.engine == "channels_last" and len(self.spec.input_shape) == 3
            self._contain()
            if laid_out:  # (H·W, num_examples, C): one gather per example slot writes channels-last memory directly
                pixels = images.permute(2, 3, 0, 1).reshape(-1, num_examples, images.shape[1]).contiguous()
            for start in range(0, num_examples, self.batch_size):
                batch_index = order[:, start : start + self.batch_size]  # (N, B)
                batch = batch_index.shape[1]
                if laid_out:
                    batch_images = self._gather_channels_last(pixels, batch_index)
                else:
                    batch_images = flat_images.index_select(0, batch_index.reshape(-1)).view(
                        self.size, batch, *images.shape[1:]
                    )
                batch_labels = labels.index_select(0, batch_index.reshape(-1)).view(self.size, batch)
                logits = self._forward(batch_images, generator, shared=False, laid_out=laid_out)
                # Sum over networks of each network's mean loss: network n's gradient is that of its own loss alone.
                # (classes in dim 1: much faster than flattening to (N·B, classes) for few classes)
                loss = F.cross_entropy(logits.transpose(1, 2), batch_labels, reduction="none").mean(dim=1).sum()
                (gradient,) = torch.autograd.grad(loss, [self.flat_parameters])
                self._step(gradient)
                self._contain()

    @torch.no_grad()
    def _contain(self) -> None:
        """Zeroes every network whose parameters are no longer finite, marked for :meth:`drop_diverged`.

        Only where two networks share a convolution group (``channels_last``): there 0 · NaN in the group's
        off-diagonal block would carry one network's divergence into its partner within the epoch. One sum over
        the parameters per step; the exact check runs only when it is not finite.
        """
        if not self._paired or bool(torch.isfinite(self.flat_parameters.sum())):
            return
        diverged = ~torch.isfinite(self.flat_parameters).all(dim=1)
        if bool(diverged.any()):
            self._contained |= diverged
            for tensor in (self.flat_parameters, self.first_moment, self.second_moment):
                tensor[diverged] = 0.0
            self.learning_rate[diverged] = 0.0
            self.weight_decay[diverged] = 0.0

    def _gather_channels_last(self, pixels: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        """Network n's examples ``batch_index[n]`` as the grouped engine's (B, N·C, H, W), in channels-last memory.

        Args:
            pixels: (H·W, num_examples, C), the training images pixel-major.
            batch_index: (N, B) example indices.
        """
        channels, height, width = self.spec.input_shape
        batch = batch_index.shape[1]
        # memory (B, H·W, N, C) is the channels-last (B, N·C, H, W) with channel n·C + c: the groups' order
        out = torch.empty(batch, height * width, self.size, channels, device=pixels.device, dtype=pixels.dtype)
        for slot in range(batch):
            torch.index_select(pixels, 1, batch_index[:, slot], out=out[slot])
        return out.view(batch, height, width, self.size * channels).permute(0, 3, 1, 2)

    @torch.no_grad()
    def _step(self, gradient: torch.Tensor) -> None:
        """One optimizer step with per-network learning rate and weight decay (torch.optim semantics).

        Args:
            gradient: (N, num_parameters), each network's gradient of its own mean loss.
        """
        self.step_count += 1
        parameter = self.flat_parameters
        if self._any_weight_decay:
            gradient = gradient + self.weight_decay.unsqueeze(1) * parameter
        learning_rate = self.learning_rate.unsqueeze(1)
        if self.optimizer == "adam":
            beta1, beta2 = ADAM_BETAS
            self.first_moment.lerp_(gradient, 1 - beta1)
            self.second_moment.mul_(beta2).addcmul_(gradient, gradient, value=1 - beta2)
            bias_correction1 = 1 - beta1**self.step_count
            bias_correction2 = 1 - beta2**self.step_count
            denominator = (self.second_moment.sqrt() / math.sqrt(bias_correction2)).add_(ADAM_EPS)
            parameter.sub_(learning_rate / bias_correction1 * self.first_moment / denominator)
        elif self.step_count == 1:
            self.first_moment.copy_(gradient)
            parameter.sub_(learning_rate * self.first_moment)
        else:
            self.first_moment.mul_(SGD_MOMENTUM).add_(gradient)
            parameter.sub_(learning_rate * self.first_moment)

    # ---------------------------------------------------------------- evaluation

    @torch.no_grad()
    def evaluate(self, images: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict[str, torch.Tensor]:
        """Loss, accuracy and per-class F1 of every network on one split.

        Args:
            images: (num_examples, *input_shape).
            labels: (num_examples,).
            num_classes: Number of classes (for F1).

        Returns:
            ``loss``, ``accuracy``: (N,); ``f1``: (N, num_classes). Non-finite where a network diverged.
        """
        with self._suggest_chunk_size("evaluating"):
            self._contain()
            batch = self._evaluation_batch_size()
            total_loss = torch.zeros(self.size, device=self.device)
            predictions = []
            for start in range(0, images.shape[0], batch):
                chunk = images[start : start + batch]
                logits = self.forward(chunk, shared=True)
                target = labels[start : start + batch]
                loss = F.cross_entropy(logits.flatten(0, 1), target.repeat(self.size), reduction="none").view(
                    self.size, -1
                )
                total_loss += loss.sum(dim=1)
                predictions.append(logits.argmax(dim=2))
            predicted = torch.cat(predictions, dim=1)  # (N, num_examples)
            correct = predicted == labels.unsqueeze(0)
        f1 = torch.empty(self.size, num_classes, device=self.device)
        for label in range(num_classes):
            predicted_k, actual_k = predicted == label, (labels == label).unsqueeze(0)
            true_positive = (predicted_k & actual_k).sum(dim=1).float()
            false_total = (predicted_k ^ actual_k).sum(dim=1).float()  # false positives + false negatives
            denominator = 2 * true_positive + false_total
            f1[:, label] = torch.where(denominator > 0, 2 * true_positive / denominator.clamp(min=1), 0.0)
        return {"loss": total_loss / images.shape[0], "accuracy": correct.float().mean(dim=1), "f1": f1}

    @contextlib.contextmanager
    def _suggest_chunk_size(self, doing: str) -> Iterator[None]:
        """Turns running out of memory into an error that says how to train fewer networks at once."""
        try:
            yield
        except RuntimeError as error:
            text = str(error)
            if not isinstance(error, torch.OutOfMemoryError) and "can't allocate memory" not in text:
                raise
            same = (  # the dropout noise is one draw per population (dropout_noise), so it follows the chunks
                "the dropout noise, and so the zoo, depends on the chunk size"
                if self._any_dropout
                else "the zoo is the same whatever the chunk size"
            )
            raise torch.OutOfMemoryError(
                f"Out of memory {doing} {self.size} networks of {self.spec.name!r} at once on {self.device}: train "
                f"fewer at once, e.g. `hyperrep zoo build … --chunk-size {max(1, self.size // 2)}` (or a recipe's "
                f"chunk_size); {same}. ({text.splitlines()[0] if text else ''})"
            ) from error

    def _evaluation_batch_size(self) -> int:
        """Examples per evaluation chunk, keeping the largest activation near 2**25 floats (~128 MB) on the CPU.

        On a CUDA device, up to 2**29 floats (2 GB) or an eighth of the free memory, whichever is less: larger
        chunks mean fewer kernel launches, which is what bounds a GPU on these small networks.
        """
        largest = max(math.prod(layer.output_shape) for layer in self.spec.parameter_layers)
        largest = max(largest, math.prod(self.spec.input_shape))
        if self.engine == "unfold":  # the im2col matrix: fan-in × output positions per example
            largest = max(
                [largest]
                + [layer.fan_in * math.prod(layer.output_shape[1:]) for layer in self.spec.parameter_layers[1:]]
            )
        budget = 2**25
        if self.device.type == "cuda":
            free_bytes, _ = torch.cuda.mem_get_info(self.device)
            budget = max(budget, min(2**29, free_bytes // 4 // 8))
        return max(1, budget // (self.size * largest))

    # ---------------------------------------------------------------- state

    def flat_weights(self) -> torch.Tensor:
        """Every network's parameters as flat vectors: (N, num_parameters), float32 on the CPU."""
        return self.flat_parameters.detach().cpu().clone()

    @torch.no_grad()
    def drop_diverged(self, *metrics: torch.Tensor) -> torch.Tensor:
        """Marks networks whose weights or metrics are not finite; freezes them at zero so they stay contained.

        Returns:
            (N,) bool, the networks dropped by this call.
        """
        finite = torch.ones(self.size, dtype=torch.bool, device=self.device)
        for tensor in (self.flat_parameters, *metrics):
            finite &= torch.isfinite(tensor.reshape(self.size, -1)).all(dim=1)
        newly_dropped = self.alive & (~finite | self._contained)
        if bool(newly_dropped.any()):
            self.alive &= ~newly_dropped
            for tensor in (self.flat_parameters, self.first_moment, self.second_moment):
                tensor[newly_dropped] = 0.0
            self.learning_rate[newly_dropped] = 0.0
            self.weight_decay[newly_dropped] = 0.0
        return newly_dropped.cpu()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything needed to continue training exactly: parameters, optimizer moments, step, alive mask."""
        state = {"parameters": self.flat_parameters.detach().cpu(), "first_moment": self.first_moment.cpu()}
        state |= {"second_moment": self.second_moment.cpu()}
        state |= {"alive": self.alive.cpu(), "step_count": torch.tensor(self.step_count)}
        state |= {"learning_rate": self.learning_rate.cpu(), "weight_decay": self.weight_decay.cpu()}
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restores :meth:`state_dict`."""
        self.flat_parameters.copy_(state["parameters"])
        self.first_moment.copy_(state["first_moment"])
        self.second_moment.copy_(state["second_moment"])
        self.alive.copy_(state["alive"])
        self.learning_rate.copy_(state["learning_rate"])
        self.weight_decay.copy_(state["weight_decay"])
        self.step_count = int(state["step_count"])


_TUNED = False


def tune_cpu_allocator() -> bool:
    """Keeps freed memory in the process (glibc ``malloc``), so a training step re-uses the last step's pages.

    A population step on the CPU allocates and frees hundreds of MB of activations and gradients. By default glibc
    serves such blocks with fresh ``mmap`` s and returns them at ``free``, so every step page-faults its memory
    in again, one 4 KB page at a time (a third of a step's CPU time for 1000 CNNs). ``mallopt(M_MMAP_MAX, 0)`` and
    an unlimited ``M_TRIM_THRESHOLD`` keep them on the heap instead. Process-wide; the process keeps its peak
    memory until it exits. Called by :class:`Population` on the CPU; a no-op where glibc is not the allocator.

    Returns:
        Whether the setting was applied (now or earlier).
    """
    global _TUNED
    if _TUNED:
        return True
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # glibc's <malloc.h>
        _TUNED = bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, -1))
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to tune
        _TUNED = False
    return _TUNED


def default_engine(device: torch.device) -> str:
    """The engine ``engine="auto"`` picks: ``"unfold"`` on CUDA, ``"channels_last"`` elsewhere.

    On the CPU, oneDNN's grouped convolution on channels-last memory, two networks per group, beats both im2col
    (PyTorch's strided copies cost more than the products: 0.7×) and contiguous grouped convolution (2.1× per CPU
    second for 1000 MNIST CNNs, bench/results/population_cpu_1threads.json). On a GPU,
    grouped convolution with a handful of channels per group is launch- and layout-bound (issue 13: 108 ms a step
    for 1000 CNNs on an H200); batched matrix products are what the chip does well. bench/device_check.sh
    measures all engines there.
    """
    return "unfold" if device.type == "cuda" else "channels_last"


def _paired_weight(weight: torch.Tensor) -> torch.Tensor:
    """The weights of networks 2g and 2g+1 as one block-diagonal convolution group: (N/2 · 2·out, 2·in, k, k).

    Group g reads input channels [network 2g's | network 2g+1's] and writes output channels in the same order,
    which is the memory of ``groups=N``; the off-diagonal blocks are zeros, so each network's outputs and
    gradients are its own. oneDNN pads a group's channels to blocks of 16: with 8 → 6 channels per network, two
    networks per group halve the padded work (bench/bench_population.py measures it).
    """
    num_networks, out, channels = weight.shape[:3]
    pairs = weight.reshape(num_networks // 2, 2, out, channels, *weight.shape[3:])
    zeros = weight.new_zeros(num_networks // 2, out, channels, *weight.shape[3:])
    first = torch.cat([pairs[:, 0], zeros], dim=2)  # (N/2, out, 2·in, k, k)
    second = torch.cat([zeros, pairs[:, 1]], dim=2)
    return torch.cat([first, second], dim=1).reshape(num_networks * out, 2 * channels, *weight.shape[3:])


def _memory_format(tensor: torch.Tensor) -> torch.memory_format:
    if tensor.dim() == 4 and tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def dropout_noise(
    generator: torch.Generator, num_networks: int, batch: int, feature_shape: tuple[int, ...], device: torch.device
) -> torch.Tensor:
    """The uniform noise of one dropout layer in one step: (N, B, *feature_shape), in the plain module's layout.

    Network n, example b, feature f is dropped when ``noise[n, b, f] >= 1 - rate_n``. One draw per layer and step
    from the population's generator, whatever the engine, so both engines drop the same units.
    """
    return torch.rand((num_networks, batch, *feature_shape), generator=generator, device=device)


def _conv_unfold(
    hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, padding: int, shared: bool
) -> torch.Tensor:
    """Convolution of every network as im2col + one batched matrix product, channels-last.

    Args:
        hidden: (N, B, H, W, C), or (B, H, W, C) when every network reads the same input.
        weight: (N, out, C, k, k).
        bias: (N, out) or None.
        stride: Convolution stride.
        padding: Zero padding on each side.
        shared: Whether ``hidden`` is one input read by every network.

    Returns:
        (N, B, H', W', out).
    """
    num_networks, out, kernel = weight.shape[0], weight.shape[1], weight.shape[-1]
    if padding:
        hidden = F.pad(hidden, (0, 0, padding, padding, padding, padding))
    height_dim = hidden.dim() - 3
    # (…, H', W', C, k, k): a strided view; the reshape below is the only copy (the im2col matrix).
    patches = hidden.unfold(height_dim, kernel, stride).unfold(height_dim + 1, kernel, stride)
    out_height, out_width = patches.shape[height_dim], patches.shape[height_dim + 1]
    if shared:  # one dense product for all networks: (B·H'·W', C·k·k) @ (C·k·k, N·out)
        batch = hidden.shape[0]
        columns = patches.reshape(batch * out_height * out_width, -1)
        flat_weight = weight.reshape(num_networks * out, -1).t()
        result = columns @ flat_weight if bias is None else torch.addmm(bias.reshape(-1), columns, flat_weight)
        return result.view(batch, out_height, out_width, num_networks, out).movedim(3, 0)
    batch = hidden.shape[1]
    columns = patches.reshape(num_networks, batch * out_height * out_width, -1)
    flat_weight = weight.reshape(num_networks, out, -1).transpose(1, 2)
    if bias is None:
        result = torch.bmm(columns, flat_weight)
    else:
        result = torch.baddbmm(bias.unsqueeze(1), columns, flat_weight)
    return result.view(num_networks, batch, out_height, out_width, out)


def _pool_nhwc(hidden: torch.Tensor, pool, kernel: int) -> torch.Tensor:
    """Max/avg pooling (kernel = stride) of (N, B, H, W, C) maps, as a channels-last 2-D pooling of N·B images."""
    num_networks, batch, height, width, channels = hidden.shape
    images = hidden.reshape(num_networks * batch, height, width, channels).permute(0, 3, 1, 2)
    pooled = pool(images, kernel)  # channels-last in, channels-last out
    return pooled.permute(0, 2, 3, 1).reshape(num_networks, batch, pooled.shape[2], pooled.shape[3], channels)


def _flatten(hidden: torch.Tensor, layout: str, pool: bool, num_networks: int) -> tuple[torch.Tensor, str]:
    """Flattens (or globally average-pools) a feature map into the flat layout; returns the new tensor and layout."""
    if layout == "nhwc":  # (N, B, H, W, C) → (N, B, C·H·W) in the plain module's order, or (N, B, C)
        return (hidden.mean(dim=(2, 3)) if pool else hidden.movedim(-1, 2).flatten(2)), "flat"
    if layout == "shared_nhwc":  # (B, H, W, C) → (B, F)
        return (hidden.mean(dim=(1, 2)) if pool else hidden.movedim(-1, 1).flatten(1)), "shared_flat"
    if layout == "grouped":  # (B, N·C, H, W) → (N, B, C·H·W) or (N, B, C)
        spatial = hidden.reshape(hidden.shape[0], num_networks, -1, *hidden.shape[2:])
        spatial = spatial.mean(dim=(3, 4)) if pool else spatial.flatten(2)
        # Contiguous: from channels-last memory the transpose has a network stride of 1, for which bmm gives up its
        # batched kernel and copies each network's matrix (a Tetris MLP epoch 2.3× slower; the same numbers).
        return spatial.transpose(0, 1).contiguous(), "flat"
    if layout == "shared_nchw":  # (B, C, H, W) → (B, F)
        return (hidden.mean(dim=(2, 3)) if pool else hidden.flatten(1)), "shared_flat"
    return (hidden.mean(dim=(3, 4)) if pool else hidden.flatten(2)), layout


def _activate(hidden: torch.Tensor, name: str) -> torch.Tensor:
    if name == "tanh":
        return torch.tanh(hidden)
    if name == "relu":
        return F.relu(hidden)
    if name == "sigmoid":
        return torch.sigmoid(hidden)
    if name == "gelu":
        return F.gelu(hidden)
    if name == "leaky_relu":
        return F.leaky_relu(hidden)
    return hidden


class _ReplayedDropout(torch.nn.Module):
    """``nn.Dropout`` whose noise is network ``index``'s slice of the population's joint draw (see train_alone)."""

    def __init__(self, rate: float, index: int, size: int) -> None:
        super().__init__()
        self.rate, self.index, self.size = rate, index, size
        self.generator: torch.Generator | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return hidden
        noise = dropout_noise(self.generator, self.size, hidden.shape[0], tuple(hidden.shape[1:]), hidden.device)
        keep = 1 - self.rate
        return hidden * (noise[self.index] < keep) / keep


def train_alone(
    spec: NetworkSpec,
    config: NetworkConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    dropout_replay: tuple[int, int] | None = None,
) -> torch.nn.Module:
    """Trains one network the ordinary way: a plain ``nn.Module`` and a ``torch.optim`` loop.

    The reference that population training must match (same initialisation, data order and optimizer), and
    the one-at-a-time baseline of ``bench/bench_population.py``.

    Args:
        spec: The network family.
        config: The network's configuration.
        images: (num_examples, *input_shape).
        labels: (num_examples,).
        epochs: Epochs to train.
        dropout_replay: ``(index, size)``: the dropout layers use the noise network ``index`` of a population of
            ``size`` draws in :meth:`Population.train_epoch` with ``dropout_seed=epoch`` (the same function, so the
            two can be compared exactly). None: plain ``nn.Dropout`` on the global RNG.
    """
    from .networks import make_module

    module = make_module(spec, config.activation, config.dropout)
    replayed = []
    if dropout_replay is not None:
        for position, layer in enumerate(module.layers):
            if isinstance(layer, torch.nn.Dropout):
                module.layers[position] = _ReplayedDropout(config.dropout, *dropout_replay)
                replayed.append(module.layers[position])
    initial = init_parameters(spec, config.init, torch.Generator().manual_seed(config.seed), config.bias_init)
    module.load_state_dict(initial)
    if config.optimizer == "adam":
        optimizer = torch.optim.Adam(
            module.parameters(),
            lr=config.learning_rate,
            betas=ADAM_BETAS,
            eps=ADAM_EPS,
            weight_decay=config.weight_decay,
            foreach=False,
        )
    else:
        optimizer = torch.optim.SGD(
            module.parameters(),
            lr=config.learning_rate,
            momentum=SGD_MOMENTUM,
            weight_decay=config.weight_decay,
            foreach=False,
        )
    module.train()
    for epoch in range(1, epochs + 1):
        generator = torch.Generator(device=images.device).manual_seed(epoch)
        for layer in replayed:
            layer.generator = generator
        order = data_order(config.seed, epoch, images.shape[0])
        for start in range(0, images.shape[0], config.batch_size):
            batch_index = order[start : start + config.batch_size]
            loss = F.cross_entropy(module(images[batch_index]), labels[batch_index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return module
