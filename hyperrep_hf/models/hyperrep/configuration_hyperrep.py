"""Configuration of the hyper-representation auto-encoder (Schürholt et al., NeurIPS 2021).

This file travels to the Hub as remote code: it imports only ``math``, ``sys`` and transformers.
"""

import math
import sys

from transformers import PreTrainedConfig

VARIANTS = ("attn_t", "attn", "attw_t", "attw", "ffn")
TOKEN_LAYOUTS = ("per_layer", "padded", "weight")
LOSS_TYPES = ("ed", "ec", "ecd", "ec+d")
FUNCTION_TARGETS = ("probe_outputs", "linear_map")  # what the function term of training predicts from z
# The prior of probe_outputs' fixed inputs: N(0, 1), U(0, 1) or fair coin flips in {0, 1} (no data either way).
FUNCTION_INPUTS = ("normal", "uniform", "bernoulli")
WEIGHT_STATISTICS = ("s(W)", "s(W)+shape")  # what append_weight_statistics appends (weight_statistics.py)
# Which token layouts each variant can read: neuron tokens for AttN, one scalar per token for AttW.
VARIANT_LAYOUTS = {
    "attn_t": ("per_layer", "padded"),
    "attn": ("per_layer", "padded"),
    "attw_t": ("weight",),
    "attw": ("weight",),
    "ffn": TOKEN_LAYOUTS,
}


# The model folder's format (config.json, processor, probes/, eval/) as this code writes it; a newer one is refused.
FORMAT_VERSION = 1
PIPELINE_TASK = "network-property-prediction"
# config.json's entry that lets `pipeline(PIPELINE_TASK, model=..., trust_remote_code=True)` find the pipeline in the
# repo's remote code (pipelines.py) when hyperrep_hf is not installed.
CUSTOM_PIPELINES = {
    PIPELINE_TASK: {"impl": "pipelines.NetworkPropertyPredictionPipeline", "pt": ["AutoModel"], "type": "multimodal"}
}


class HyperRepConfig(PreTrainedConfig):
    r"""Configuration of `HyperRepModel` (encoder) and `HyperRepForPreTraining` (encoder + decoder + losses).

    The defaults are the paper's reference settings for the Tetris zoos (MLP 16→5→4 without biases, neuron
    tokens: 5 tokens of width 16 and 4 of width 5). The five token fields come from the processor:
    ``HyperRepConfig(**processor.model_config_kwargs(), latent_dim=...)``.

    Args:
        token_layout: How weights become tokens: ``"per_layer"`` (one token per neuron, paper AttN),
            ``"padded"`` (neuron rows cut into chunks of ``token_dim``, SANE-style) or ``"weight"`` (one token
            per scalar, paper AttW).
        token_dim: Width of every token tensor (the widest neuron row for ``per_layer``, 1 for ``weight``).
        num_tokens: Tokens per network.
        layer_token_widths: Values per neuron row of each layer, ``w_l = fan_in + bias``.
        layer_num_tokens: Tokens of each layer; sums to ``num_tokens``.
        num_parameters: Length of the flat weight vector. ``None`` derives it from the token fields; a given
            value must agree with them.
        variant: ``"attn_t"`` (neuron tokens + compression token, default), ``"attn"`` (neuron tokens, the whole
            output sequence is compressed linearly), ``"attw_t"`` / ``"attw"`` (the same on weight tokens) or
            ``"ffn"`` (fully connected baseline on the flat vector).
        num_hidden_layers: Transformer blocks in the encoder, and again in the decoder.
        d_model: Width of the transformer (alias ``hidden_size``; give one of the two).
        hidden_size: Alias of ``d_model``.
        num_attention_heads: Attention heads; must divide ``d_model``.
        intermediate_size: Hidden width of each block's feed-forward network.
        latent_dim: Size of the hyper-representation z; at most ``num_parameters`` unless ``function_weight`` > 0.
        dropout: Dropout probability in the transformer blocks and embeddings, in [0, 1).
        max_layers: Size of the layer-index position table; ``None`` = the number of layers.
        ffn_num_layers: [FC-ReLU] layers of the ``ffn`` encoder and, again, of its decoder (paper: 10).
        projection_layers: [Linear + BatchNorm + ReLU] blocks of the projection head before its final
            Linear + BatchNorm (hidden width ``latent_dim``).
        projection_dim: Output size of the projection head.
        loss_type: ``"ed"`` (reconstruction), ``"ec"`` (NT-Xent contrast), ``"ecd"`` (β·MSE + (1−β)·NT-Xent) or
            ``"ec+d"`` (β·MSE + (1−β)·positive-pair term of the paper's eq. 3).
        beta: Weight of the reconstruction term for ``"ecd"`` / ``"ec+d"``, in [0, 1].
        temperature: Softmax temperature of the contrastive terms, > 0.
        reference_losses: Reproduce the reference code instead of the paper: its positive-pair loss pushes the
            cosine similarity towards 0 (mean of (cos/T)² divided by 2·batch), and the augmented input, not
            ``labels``, is the reconstruction target. For reproduction studies only.
        symmetries: The function-preserving transforms the encoder was trained to see (``"permutation"``,
            ``"sign_flip"``); written by training.
        activation: The zoo networks' activation (sign flips need it); written by training.
        embedding_symmetry_samples: K: a network's hyper-representation is the mean of z over the network and K − 1
            fixed symmetric copies of it (:mod:`embeddings`); 1 = the plain z of the paper. Used by
            evaluation, probes and the prediction pipeline; ``HyperRepModel.forward`` itself always returns plain z.
        append_weight_statistics: The hyper-representation is z̄ followed by s(W), the per-layer weight statistics of
            the network's weights (mean, variance, percentiles 1/25/50/75/99 of each layer's weights: the ``s(W)``
            baseline's features, ``weight_statistics.weight_statistics``, taken over the same canonical views or
            symmetric copies as z̄, so the canonical form keeps them invariant to sign flips too),
            ``latent_dim + 7 · num_layers`` values.
            s(W) holds the scale of each layer's weights exactly, which z need not keep (it is trained to
            reconstruct and contrast views, not to preserve scale); probes on the concatenation read both. Used
            wherever the representation is (evaluation, probe heads, the pipeline); training and
            ``HyperRepModel.forward`` are unchanged, so a trained encoder can be switched
            (``hyperrep evaluate ... --append-weight-statistics``). False: z̄ alone, the paper's.
        weight_statistics: What ``append_weight_statistics`` appends: ``"s(W)"`` (the baseline's 7 values per layer)
            or ``"s(W)+shape"``, s(W) followed by 5 statistics per layer of its distribution's shape that are free
            of its scale (kurtosis, mean |w − m| / σ, ln σ, the share of positive weights, max |w| / σ;
            ``weight_statistics.shape_statistics``), ``latent_dim + 12 · num_layers`` values; layout
            ``"z+s(W)+shape"``. Ignored without ``append_weight_statistics``.
        function_weight: γ of an auxiliary self-supervised term of training (0: off, the paper's losses): a linear
            head on z predicts what the network *computes*, standardised over the training rows, and γ · its MSE
            is added to the loss. What it computes is read off the weights themselves (no data, no label), and it
            is invariant to every symmetry of the network, so it teaches z what reconstruction and contrast leave
            out. Only the pre-training model has the head; the encoder and the hyper-representation are unchanged.
        function_target: What the head predicts: ``"probe_outputs"``, the network's √softmax outputs on fixed random
            inputs (``hyperrep_hf.probing.baselines.probe_output_features``: 256 draws of N(0, 1), seed 0), or
            ``"linear_map"``, its affine map input → logits with the activations made the identity (``W₂ W₁`` for
            TETRIS's MLP; ``hyperrep_hf.probing.baselines.linear_map_features``).
        function_inputs: The prior of ``probe_outputs``' fixed inputs, one of :data:`FUNCTION_INPUTS`: ``"normal"``
            (N(0, 1)), ``"uniform"`` (U(0, 1)) or ``"bernoulli"`` (each input value 0 or 1, p ½). Still no data: it
            says only which values an input takes, as an image's pixels lie in [0, 1].
        function_dim: Width of that target; needed when ``function_weight`` > 0, written by training.
        initializer_range: Standard deviation of the position embeddings and the compression token.
        layer_norm_eps: Epsilon of the LayerNorms.
        kwargs: Passed on to `PreTrainedConfig`.

    Raises:
        ValueError: Naming the field and the value when a field is out of range or inconsistent.
    """

    model_type = "hyperrep"
    attribute_map = {"hidden_size": "d_model"}
    # `temperature` is also a generation parameter; transformers refuses to save one in a model config unless it is
    # a declared (annotated) config field, which it is here.
    temperature: float = 0.1

    def __init__(
        self,
        token_layout: str = "per_layer",
        token_dim: int = 16,
        num_tokens: int = 9,
        layer_token_widths: list[int] | tuple[int, ...] = (16, 5),
        layer_num_tokens: list[int] | tuple[int, ...] = (5, 4),
        num_parameters: int | None = None,
        variant: str = "attn_t",
        num_hidden_layers: int = 2,
        d_model: int | None = None,
        hidden_size: int | None = None,
        num_attention_heads: int = 4,
        intermediate_size: int = 512,
        latent_dim: int = 50,
        dropout: float = 0.1,
        max_layers: int | None = None,
        ffn_num_layers: int = 10,
        projection_layers: int = 3,
        projection_dim: int = 20,
        loss_type: str = "ecd",
        beta: float = 0.5,
        temperature: float = 0.1,
        reference_losses: bool = False,
        symmetries: list[str] | tuple[str, ...] = (),
        activation: str | None = None,
        embedding_symmetry_samples: int = 1,
        append_weight_statistics: bool = False,
        weight_statistics: str = "s(W)",
        function_weight: float = 0.0,
        function_target: str = "probe_outputs",
        function_inputs: str = "normal",
        function_dim: int | None = None,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-5,
        **kwargs,
    ):
        if d_model is not None and hidden_size is not None and d_model != hidden_size:
            raise ValueError(f"d_model={d_model} and its alias hidden_size={hidden_size} disagree; give one.")
        self.token_layout = token_layout
        self.token_dim = token_dim
        self.num_tokens = num_tokens
        self.layer_token_widths = [int(width) for width in layer_token_widths]
        self.layer_num_tokens = [int(count) for count in layer_num_tokens]
        self.num_parameters = num_parameters
        self.variant = variant
        self.num_hidden_layers = num_hidden_layers
        self.d_model = d_model if d_model is not None else (hidden_size if hidden_size is not None else 256)
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.latent_dim = latent_dim
        self.dropout = dropout
        self.max_layers = max_layers
        self.ffn_num_layers = ffn_num_layers
        self.projection_layers = projection_layers
        self.projection_dim = projection_dim
        self.loss_type = loss_type
        self.beta = beta
        self.temperature = temperature
        self.reference_losses = reference_losses
        self.symmetries = list(symmetries)
        self.activation = activation
        self.embedding_symmetry_samples = embedding_symmetry_samples
        self.append_weight_statistics = append_weight_statistics
        self.weight_statistics = weight_statistics
        self.function_weight = function_weight
        self.function_target = function_target
        self.function_inputs = function_inputs
        self.function_dim = function_dim
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        kwargs.pop("custom_pipelines", None)  # a constant of this code (see the property), not a field
        format_version = kwargs.pop("hyperrep_format_version", FORMAT_VERSION)
        if not isinstance(format_version, int) or format_version > FORMAT_VERSION:
            raise ValueError(
                f"This model was written in hyperrep_hf model format version {format_version!r}; this code reads up "
                f"to version {FORMAT_VERSION}. Upgrade hyperrep_hf (or load with trust_remote_code=True to use the "
                "repo's own code)."
            )
        super().__init__(**kwargs)
        self._validate_and_derive()

    @property
    def custom_pipelines(self) -> dict:
        """The remote-code pipeline, unless the installed hyperrep_hf registered the task (installed code wins)."""
        pipelines = sys.modules.get("transformers.pipelines")
        registry = getattr(pipelines, "PIPELINE_REGISTRY", None)
        if registry is not None and PIPELINE_TASK in registry.supported_tasks:
            return {}
        return {task: dict(entry) for task, entry in CUSTOM_PIPELINES.items()}

    @custom_pipelines.setter
    def custom_pipelines(self, value: dict) -> None:
        # Pipeline.save_pretrained assigns its own entry (the same class); config.json always gets CUSTOM_PIPELINES.
        pass

    def to_dict(self) -> dict:
        """Serialises like ``PreTrainedConfig.to_dict``, plus the format version and the remote pipeline entry."""
        output = super().to_dict()
        output["hyperrep_format_version"] = FORMAT_VERSION
        output["custom_pipelines"] = {task: dict(entry) for task, entry in CUSTOM_PIPELINES.items()}
        return output

    def _validate_and_derive(self) -> None:
        """Checks every field; fills ``num_parameters`` and ``max_layers`` when they were left ``None``."""

        def fail(field: str, value, why: str) -> None:
            raise ValueError(f"HyperRepConfig: {field}={value!r} is invalid: {why}.")

        for field, allowed in (("variant", VARIANTS), ("token_layout", TOKEN_LAYOUTS), ("loss_type", LOSS_TYPES)):
            if getattr(self, field) not in allowed:
                fail(field, getattr(self, field), f"expected one of {allowed}")
        if self.token_layout not in VARIANT_LAYOUTS[self.variant]:
            fail("token_layout", self.token_layout, f"variant {self.variant!r} reads {VARIANT_LAYOUTS[self.variant]}")
        positive_ints = ("token_dim", "num_tokens", "num_hidden_layers", "d_model", "num_attention_heads")
        positive_ints += ("intermediate_size", "latent_dim", "ffn_num_layers", "projection_dim")
        for field in positive_ints:
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                fail(field, value, "expected a positive integer")
        if not isinstance(self.projection_layers, int) or self.projection_layers < 0:
            fail("projection_layers", self.projection_layers, "expected an integer >= 0")
        if self.d_model % self.num_attention_heads != 0:
            fail("d_model", self.d_model, f"not divisible by num_attention_heads={self.num_attention_heads}")
        widths, counts = self.layer_token_widths, self.layer_num_tokens
        if not widths or len(widths) != len(counts) or min(widths + counts) < 1:
            fail("layer_token_widths", widths, f"need one positive width per entry of layer_num_tokens={counts}")
        if sum(counts) != self.num_tokens:
            fail("layer_num_tokens", counts, f"sums to {sum(counts)}, not num_tokens={self.num_tokens}")
        if self.token_layout == "per_layer" and self.token_dim != max(widths):
            fail("token_dim", self.token_dim, f"per_layer tokens are as wide as the widest row, {max(widths)}")
        if self.token_layout == "weight" and self.token_dim != 1:
            fail("token_dim", self.token_dim, "weight tokens hold one scalar each")
        if self.token_layout == "padded":
            for width, count in zip(widths, counts, strict=True):
                if count % math.ceil(width / self.token_dim) != 0:
                    fail("layer_num_tokens", counts, f"{count} tokens do not split into rows of width {width}")
        derived = derive_num_parameters(self.token_layout, self.token_dim, self.num_tokens, widths, counts)
        if self.num_parameters is None:
            self.num_parameters = derived
        elif self.num_parameters != derived:
            fail("num_parameters", self.num_parameters, f"the token fields describe {derived} parameters")
        if self.latent_dim > self.num_parameters and not self.function_weight:
            # Reconstruction and contrast alone: z wider than the weights could copy them. With the function term
            # z also has to carry what the network computes, which the weights hold only non-linearly.
            fail(
                "latent_dim",
                self.latent_dim,
                f"larger than the input, num_parameters={self.num_parameters} (allowed only with a function "
                "term, function_weight > 0)",
            )
        if self.max_layers is None:
            self.max_layers = len(widths)
        elif self.max_layers < len(widths):
            fail("max_layers", self.max_layers, f"the tokens come from {len(widths)} layers")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", self.dropout, "expected a probability in [0, 1)")
        if not 0.0 <= self.beta <= 1.0:
            fail("beta", self.beta, "expected a weight in [0, 1]")
        if not self.temperature > 0:
            fail("temperature", self.temperature, "expected a temperature > 0")
        if not isinstance(self.reference_losses, bool):
            fail("reference_losses", self.reference_losses, "expected a bool")
        if not set(self.symmetries) <= {"permutation", "sign_flip"}:
            fail("symmetries", self.symmetries, "expected a subset of ['permutation', 'sign_flip']")
        if "sign_flip" in self.symmetries and not self.activation:
            fail("activation", self.activation, "sign_flip symmetry needs the networks' activation")
        samples = self.embedding_symmetry_samples
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            fail("embedding_symmetry_samples", samples, "expected a positive integer")
        if not isinstance(self.append_weight_statistics, bool):
            fail("append_weight_statistics", self.append_weight_statistics, "expected a bool (true or false)")
        if self.weight_statistics not in WEIGHT_STATISTICS:
            fail("weight_statistics", self.weight_statistics, f"expected one of {list(WEIGHT_STATISTICS)}")
        weight = self.function_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight < math.inf:
            fail("function_weight", weight, "expected a finite weight >= 0 (0: no function term)")
        if self.function_target not in FUNCTION_TARGETS:
            fail("function_target", self.function_target, f"expected one of {list(FUNCTION_TARGETS)}")
        if self.function_inputs not in FUNCTION_INPUTS:
            fail("function_inputs", self.function_inputs, f"expected one of {list(FUNCTION_INPUTS)}")
        dim = self.function_dim
        if weight > 0 and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
            fail("function_dim", dim, "a function term (function_weight > 0) needs its target's width")


def derive_num_parameters(
    token_layout: str, token_dim: int, num_tokens: int, layer_token_widths: list[int], layer_num_tokens: list[int]
) -> int:
    """Number of real values the tokens hold (the flat vector's length), following docs/CONTRACTS.md."""
    if token_layout == "weight":
        return num_tokens
    if token_layout == "per_layer":
        return sum(width * count for width, count in zip(layer_token_widths, layer_num_tokens, strict=True))
    # padded: each neuron row of width w is cut into ceil(w / D) chunks.
    return sum(
        width * (count // math.ceil(width / token_dim))
        for width, count in zip(layer_token_widths, layer_num_tokens, strict=True)
    )


__all__ = ["HyperRepConfig"]

# Saved configs carry `auto_map` and this file, so `AutoConfig.from_pretrained(..., trust_remote_code=True)` works
# where hyperrep_hf is not installed.
HyperRepConfig.register_for_auto_class()
