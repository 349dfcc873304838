"""Hyper-representations: a transformer auto-encoder on the weights of neural networks.

Schürholt et al., NeurIPS 2021. The variant in the config picks the encoder: ``attn_t`` (default) reads neuron
tokens, prepends a learned compression token and compresses only that token::

    [compression] [neuron 1] [neuron 2] ... [neuron S]      one token per neuron: its incoming weights (+ bias)
          │            │          │              │          per-layer Linear → d_model, + position embedding
    ┌─────┴────────────┴──────────┴──────────────┴─────┐
    │          pre-LayerNorm transformer blocks        │
    └─────┬────────────────────────────────────────────┘
          ▼
    Linear + tanh → z (latent_dim)     ← the hyper-representation
          ├─► decoder: Linear(z → S·d_model) + position embedding → blocks → per-layer Linear → weights
          └─► projection head → contrastive loss between two augmented views

Token tensors follow docs/CONTRACTS.md. This file travels to the Hub as remote code: it imports only torch,
transformers and its sibling ``configuration_hyperrep``.
"""

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, logging

from .configuration_hyperrep import HyperRepConfig

logger = logging.get_logger(__name__)


def make_position_ids(config: HyperRepConfig) -> torch.Tensor:
    """The processor's position ids: (num_tokens, 3) = (token index, layer index, index of the token in its layer)."""
    layer_index = torch.repeat_interleave(
        torch.arange(len(config.layer_num_tokens)), torch.tensor(config.layer_num_tokens)
    )
    index_in_layer = torch.cat([torch.arange(count) for count in config.layer_num_tokens])
    return torch.stack([torch.arange(config.num_tokens), layer_index, index_in_layer], dim=-1)


def make_value_mask(config: HyperRepConfig) -> torch.Tensor:
    """Which entries of a token tensor hold real values (the rest is zero padding): bool (num_tokens, token_dim)."""
    rows = []
    for width, count in zip(config.layer_token_widths, config.layer_num_tokens, strict=True):
        if config.token_layout == "weight":
            rows += [1] * count
        elif config.token_layout == "per_layer":
            rows += [width] * count
        else:  # padded: chunk c of a row of width w holds min(D, w - c·D) values
            chunks = math.ceil(width / config.token_dim)
            rows += [min(config.token_dim, width - chunk * config.token_dim) for chunk in range(chunks)] * (
                count // chunks
            )
    return torch.arange(config.token_dim)[None, :] < torch.tensor(rows)[:, None]


def masked_mse_loss(prediction: torch.Tensor, target: torch.Tensor, value_mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the real values only (for per_layer tokens: the MSE of the flat weight vectors).

    Args:
        prediction: (batch, num_tokens, token_dim).
        target: (batch, num_tokens, token_dim).
        value_mask: bool, broadcastable to (batch, num_tokens, token_dim).
    """
    value_mask = value_mask.expand_as(prediction)
    return (prediction - target)[value_mask].pow(2).mean()


def nt_xent_loss(projections: torch.Tensor, projections_view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (SimCLR): each of the 2·batch projections must pick its partner view among all the others.

    Args:
        projections: (batch, projection_dim), view 1.
        projections_view2: (batch, projection_dim), view 2; row i is the positive of row i of view 1.
        temperature: Softmax temperature.

    Returns:
        Scalar: mean over the 2·batch anchors of −log(exp(cos(i, j)/T) / Σ_{k≠i} exp(cos(i, k)/T)).
    """
    batch = projections.shape[0]
    unit = F.normalize(torch.cat([projections, projections_view2]), dim=-1)
    logits = unit @ unit.T / temperature
    # A projection is never its own negative.
    logits = logits.masked_fill(torch.eye(2 * batch, dtype=torch.bool, device=logits.device), float("-inf"))
    partner = torch.cat([torch.arange(batch, 2 * batch), torch.arange(batch)]).to(logits.device)
    return F.cross_entropy(logits, partner)


def positive_pair_loss(
    projections: torch.Tensor, projections_view2: torch.Tensor, temperature: float, reference: bool = False
) -> torch.Tensor:
    """The Ec+D contrast without negatives (paper eq. 3): mean of −cos(z̄_i, z̄_j)/T + log T.

    With ``reference=True`` the reference code's version: mean of (cos/T)² divided by 2·batch, which drives the
    cosine similarity of positive pairs to 0 instead of 1.

    Args:
        projections: (batch, projection_dim), view 1.
        projections_view2: (batch, projection_dim), view 2.
        temperature: Temperature T.
        reference: Reproduce the reference code.
    """
    similarity = F.cosine_similarity(projections, projections_view2, dim=-1)
    if reference:
        return (similarity / temperature).pow(2).mean() / (2 * projections.shape[0])
    return (-similarity / temperature).mean() + math.log(temperature)


@dataclass
class HyperRepModelOutput(ModelOutput):
    """Output of `HyperRepModel`.

    Attributes:
        embeddings: (batch, latent_dim), the hyper-representations z.
        last_hidden_state: (batch, sequence, d_model), the encoder's output sequence (compression token first for
            the ``_t`` variants); ``None`` for ``ffn``.
    """

    embeddings: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None


@dataclass
class HyperRepForPreTrainingOutput(ModelOutput):
    """Output of `HyperRepForPreTraining`.

    Attributes:
        loss: Scalar, the loss of ``config.loss_type``.
        reconstruction_loss: Scalar, masked MSE of view 1's reconstruction (reported for every loss type).
        contrastive_loss: Scalar, NT-Xent or positive-pair term; ``None`` without view 2 or for ``"ed"``.
        reconstruction: (batch, num_tokens, token_dim), zero at padding.
        embeddings: (batch, latent_dim), z of view 1.
        projections: (batch, projection_dim) of view 1; ``None`` without view 2.
        projections_view2: (batch, projection_dim) of view 2; ``None`` without view 2.
        embeddings_view2: (batch, latent_dim), z of view 2; ``None`` without view 2.
        function_loss: Scalar, MSE of the function head (``config.function_weight`` > 0 and ``function_values``
            given); ``None`` otherwise.
    """

    loss: torch.FloatTensor | None = None
    reconstruction_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    reconstruction: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    projections: torch.FloatTensor | None = None
    projections_view2: torch.FloatTensor | None = None
    embeddings_view2: torch.FloatTensor | None = None
    function_loss: torch.FloatTensor | None = None  # last: the tuple form of the other fields keeps its order


class HyperRepAttention(nn.Module):
    """Multi-head self-attention through ``scaled_dot_product_attention``."""

    def __init__(self, config: HyperRepConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.dropout = config.dropout
        self.query = nn.Linear(config.d_model, config.d_model)
        self.key = nn.Linear(config.d_model, config.d_model)
        self.value = nn.Linear(config.d_model, config.d_model)
        self.output = nn.Linear(config.d_model, config.d_model)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """hidden: (batch, sequence, d_model); key_mask: bool (batch, sequence), True = may be attended to."""
        batch, sequence, width = hidden.shape
        heads = (batch, sequence, self.num_heads, width // self.num_heads)
        query = self.query(hidden).view(heads).transpose(1, 2)
        key = self.key(hidden).view(heads).transpose(1, 2)
        value = self.value(hidden).view(heads).transpose(1, 2)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        dropout = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, dropout_p=dropout)
        return self.output(attended.transpose(1, 2).reshape(batch, sequence, width))


class HyperRepBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: HyperRepConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.attention = HyperRepAttention(config)
        self.mlp_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        self.mlp_in = nn.Linear(config.d_model, config.intermediate_size)
        self.mlp_out = nn.Linear(config.intermediate_size, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """hidden: (batch, sequence, d_model) → (batch, sequence, d_model)."""
        hidden = hidden + self.dropout(self.attention(self.attention_norm(hidden), key_mask))
        return hidden + self.dropout(self.mlp_out(F.gelu(self.mlp_in(self.mlp_norm(hidden)))))


class HyperRepPositionEmbedding(nn.Module):
    """Sum of learned embeddings of the three position parts: token index, layer index, index in the layer."""

    def __init__(self, config: HyperRepConfig):
        super().__init__()
        self.token = nn.Embedding(config.num_tokens, config.d_model)
        self.layer = nn.Embedding(config.max_layers, config.d_model)
        self.index_in_layer = nn.Embedding(max(config.layer_num_tokens), config.d_model)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        """position_ids: int (batch, num_tokens, 3) → (batch, num_tokens, d_model)."""
        return (
            self.token(position_ids[..., 0])
            + self.layer(position_ids[..., 1])
            + self.index_in_layer(position_ids[..., 2])
        )


class HyperRepFeedForwardStack(nn.Module):
    """The ``ffn`` baseline: [FC-ReLU] layers whose widths shrink (or grow) linearly from one size to another."""

    def __init__(self, in_features: int, out_features: int, num_layers: int, final_activation: str | None):
        super().__init__()
        sizes = [round(in_features + (out_features - in_features) * i / num_layers) for i in range(num_layers + 1)]
        self.layers = nn.ModuleList(nn.Linear(size_in, size_out) for size_in, size_out in itertools.pairwise(sizes))
        self.final_activation = final_activation

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden: (batch, in_features) → (batch, out_features)."""
        for layer in self.layers[:-1]:
            hidden = F.relu(layer(hidden))
        hidden = self.layers[-1](hidden)
        return torch.tanh(hidden) if self.final_activation == "tanh" else hidden


class HyperRepPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading glue shared by the encoder and the pre-training model."""

    config_class = HyperRepConfig
    base_model_prefix = "hyperrep"
    main_input_name = "input_tokens"
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Initialises one module; transformers calls it for every module whose weights were not loaded.

        The ``init`` helpers skip tensors already loaded from a checkpoint, so this only fills what is missing.
        """
        if isinstance(module, nn.Linear):
            # He initialisation, as in the reference code: the ffn baseline stacks 10 ReLU layers.
            init.kaiming_normal_(module.weight, nonlinearity="relu")
            init.zeros_(module.bias)
        elif isinstance(module, HyperRepModel) and module.compression_token is not None:
            init.normal_(module.compression_token, std=self.config.initializer_range)
        elif isinstance(module, HyperRepDecoder) and module.position_embedding is not None:
            init.normal_(module.position_embedding, std=self.config.initializer_range)
        else:
            super()._init_weights(module)  # LayerNorm, BatchNorm, Embedding


class HyperRepModel(HyperRepPreTrainedModel):
    """The encoder: tokens → hyper-representation z."""

    # Loading the encoder from a pre-training checkpoint is the normal case: its decoder and head are not needed.
    _keys_to_ignore_on_load_unexpected = [
        r"^decoder\.",
        r"^projection_head\.",
        r"^function_head\.",
        r"^linear_map_head\.",
    ]

    def __init__(self, config: HyperRepConfig):
        super().__init__(config)
        self.variant = config.variant
        self.compression_token = None
        if config.variant == "ffn":
            self.feed_forward = HyperRepFeedForwardStack(
                config.num_parameters, config.latent_dim, config.ffn_num_layers, final_activation="tanh"
            )
        else:
            if config.token_layout == "per_layer":  # each layer has its own row width w_l
                self.token_embedding = nn.ModuleList(nn.Linear(w, config.d_model) for w in config.layer_token_widths)
            else:
                self.token_embedding = nn.Linear(config.token_dim, config.d_model)
            self.position_embedding = HyperRepPositionEmbedding(config)
            if config.variant.endswith("_t"):
                self.compression_token = nn.Parameter(torch.empty(1, 1, config.d_model))
            self.dropout = nn.Dropout(config.dropout)
            self.blocks = nn.ModuleList(HyperRepBlock(config) for _ in range(config.num_hidden_layers))
            self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
            sequence_width = config.d_model if config.variant.endswith("_t") else config.num_tokens * config.d_model
            self.to_latent = nn.Linear(sequence_width, config.latent_dim)
        self.post_init()

    def forward(
        self,
        input_tokens: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        return_dict: bool = True,
        **kwargs,
    ) -> HyperRepModelOutput | tuple:
        """Encodes networks.

        Args:
            input_tokens: float (batch, num_tokens, token_dim), as the processor returns them.
            attention_mask: int (batch, num_tokens), 1 for real tokens; default all ones.
            position_ids: int (batch, num_tokens, 3); default `make_position_ids(config)`.
            return_dict: Return a `HyperRepModelOutput` rather than a tuple.
            kwargs: Ignored, so that ``model(**processor(...))`` passes extra processor fields harmlessly.

        Returns:
            `HyperRepModelOutput` with ``embeddings`` (batch, latent_dim).
        """
        batch, num_tokens, _ = input_tokens.shape
        if self.variant == "ffn":
            # The baseline sees the flat vector: the real values, in token order.
            embeddings = self.feed_forward(input_tokens[:, make_value_mask(self.config).to(input_tokens.device)])
            output = HyperRepModelOutput(embeddings=embeddings)
            return output if return_dict else output.to_tuple()

        if position_ids is None:
            position_ids = make_position_ids(self.config).to(input_tokens.device).expand(batch, -1, -1)
        key_mask = None if attention_mask is None else attention_mask.bool()
        if isinstance(self.token_embedding, nn.ModuleList):
            pieces, start = [], 0
            layers = zip(
                self.token_embedding, self.config.layer_token_widths, self.config.layer_num_tokens, strict=True
            )
            for embed, width, count in layers:
                pieces.append(embed(input_tokens[:, start : start + count, :width]))
                start += count
            hidden = torch.cat(pieces, dim=1)
        else:
            hidden = self.token_embedding(input_tokens)
        hidden = hidden + self.position_embedding(position_ids)
        if self.compression_token is not None:
            # The compression token carries no position: it is itself a learned vector, always attended to.
            hidden = torch.cat([self.compression_token.expand(batch, -1, -1), hidden], dim=1)
            if key_mask is not None:
                key_mask = torch.cat([key_mask.new_ones(batch, 1), key_mask], dim=1)
        hidden = self.dropout(hidden)
        for block in self.blocks:
            hidden = block(hidden, key_mask)
        hidden = self.final_norm(hidden)

        if self.compression_token is not None:
            summary = hidden[:, 0]
        else:
            # Without a compression token the whole sequence is compressed; masked tokens must not leak into z.
            masked = hidden if key_mask is None else hidden * key_mask[..., None]
            summary = masked.reshape(batch, num_tokens * hidden.shape[-1])
        embeddings = torch.tanh(self.to_latent(summary))
        output = HyperRepModelOutput(embeddings=embeddings, last_hidden_state=hidden)
        return output if return_dict else output.to_tuple()


class HyperRepDecoder(nn.Module):
    """z → tokens: Linear(z → num_tokens·d_model) + own position embedding → blocks → per-layer Linear."""

    def __init__(self, config: HyperRepConfig):
        super().__init__()
        self.config = config
        self.position_embedding = None
        if config.variant == "ffn":
            self.feed_forward = HyperRepFeedForwardStack(
                config.latent_dim, config.num_parameters, config.ffn_num_layers, final_activation=None
            )
            return
        self.from_latent = nn.Linear(config.latent_dim, config.num_tokens * config.d_model)
        self.position_embedding = nn.Parameter(torch.empty(1, config.num_tokens, config.d_model))
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(HyperRepBlock(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.d_model, eps=config.layer_norm_eps)
        if config.token_layout == "per_layer":
            self.to_tokens = nn.ModuleList(nn.Linear(config.d_model, w) for w in config.layer_token_widths)
        else:
            self.to_tokens = nn.Linear(config.d_model, config.token_dim)

    def forward(self, embeddings: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """embeddings: (batch, latent_dim) → reconstruction (batch, num_tokens, token_dim), zero at padding."""
        config, batch = self.config, embeddings.shape[0]
        value_mask = make_value_mask(config).to(embeddings.device)
        if config.variant == "ffn":
            flat = self.feed_forward(embeddings)
            reconstruction = flat.new_zeros(batch, config.num_tokens, config.token_dim)
            reconstruction[:, value_mask] = flat
            return reconstruction

        hidden = self.from_latent(embeddings).view(batch, config.num_tokens, config.d_model)
        hidden = self.dropout(hidden + self.position_embedding)
        key_mask = None if attention_mask is None else attention_mask.bool()
        for block in self.blocks:
            hidden = block(hidden, key_mask)
        hidden = self.final_norm(hidden)
        if isinstance(self.to_tokens, nn.ModuleList):
            pieces, start = [], 0
            layers = zip(self.to_tokens, config.layer_token_widths, config.layer_num_tokens, strict=True)
            for project, width, count in layers:
                pieces.append(F.pad(project(hidden[:, start : start + count]), (0, config.token_dim - width)))
                start += count
            reconstruction = torch.cat(pieces, dim=1)
        else:
            reconstruction = self.to_tokens(hidden)
        # Padding entries are not values: keep them exactly zero, as in the processor's tokens.
        return reconstruction * value_mask


class HyperRepProjectionHead(nn.Module):
    """[Linear + BatchNorm + ReLU] × projection_layers → Linear + BatchNorm (SimCLR projection head)."""

    def __init__(self, config: HyperRepConfig):
        super().__init__()
        self.hidden_layers = nn.ModuleList(
            nn.Linear(config.latent_dim, config.latent_dim) for _ in range(config.projection_layers)
        )
        self.hidden_norms = nn.ModuleList(nn.BatchNorm1d(config.latent_dim) for _ in range(config.projection_layers))
        self.output = nn.Linear(config.latent_dim, config.projection_dim)
        self.output_norm = nn.BatchNorm1d(config.projection_dim)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """embeddings: (batch, latent_dim) → (batch, projection_dim)."""
        hidden = embeddings
        for layer, norm in zip(self.hidden_layers, self.hidden_norms, strict=True):
            hidden = F.relu(norm(layer(hidden)))
        return self.output_norm(self.output(hidden))


class HyperRepForPreTraining(HyperRepPreTrainedModel):
    """Encoder + decoder + projection head (+ the function head), trained with the loss ``config.loss_type``."""

    def __init__(self, config: HyperRepConfig):
        super().__init__(config)
        self.hyperrep = HyperRepModel(config)
        self.decoder = HyperRepDecoder(config)
        self.projection_head = HyperRepProjectionHead(config)
        # z → what the network computes, standardised (an auxiliary self-supervised target); only when it is weighed.
        self.function_head = nn.Linear(config.latent_dim, config.function_dim) if config.function_weight else None
        self.post_init()

    def forward(
        self,
        input_tokens: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        input_tokens_view2: torch.Tensor | None = None,
        attention_mask_view2: torch.Tensor | None = None,
        position_ids_view2: torch.Tensor | None = None,
        function_values: torch.Tensor | None = None,
        return_dict: bool = True,
        **kwargs,
    ) -> HyperRepForPreTrainingOutput | tuple:
        """Reconstructs view 1 and contrasts it with view 2.

        Args:
            input_tokens: float (batch, num_tokens, token_dim), view 1 (usually augmented).
            attention_mask: int (batch, num_tokens) for view 1.
            position_ids: int (batch, num_tokens, 3) for view 1.
            labels: float (batch, num_tokens, token_dim), the reconstruction target (the clean weights' tokens);
                default the input. Ignored when ``config.reference_losses`` (the reference reconstructs the input).
            input_tokens_view2: float (batch, num_tokens, token_dim), view 2; required by ``ec``, ``ecd``, ``ec+d``.
            attention_mask_view2: int (batch, num_tokens) for view 2.
            position_ids_view2: int (batch, num_tokens, 3) for view 2.
            function_values: float (batch, function_dim), what the clean networks compute (``config.function_target``),
                standardised: with ``config.function_weight`` > 0 the loss adds ``function_weight`` ·
                MSE(head(z), function_values). Required in training mode when the weight is > 0.
            return_dict: Return a `HyperRepForPreTrainingOutput` rather than a tuple.
            kwargs: Ignored (extra processor fields).

        Returns:
            `HyperRepForPreTrainingOutput`.

        Raises:
            ValueError: A contrastive loss type without ``input_tokens_view2``, labels of the wrong shape, or a
                function term without its target (or with one of the wrong shape).
        """
        config = self.config
        if self.function_head is not None and function_values is None and self.training:
            raise ValueError(
                f"function_weight={config.function_weight}: training needs what the networks compute "
                f"({config.function_target}: function_values, (batch, function_dim)); hyperrep_hf's trainer passes it."
            )
        if function_values is not None and function_values.shape != (input_tokens.shape[0], config.function_dim):
            raise ValueError(
                f"function_values has shape {tuple(function_values.shape)}, expected "
                f"({input_tokens.shape[0]}, {config.function_dim}) (function_dim)."
            )
        needs_contrast = config.loss_type != "ed"
        if needs_contrast and input_tokens_view2 is None:
            raise ValueError(
                f"loss_type={config.loss_type!r} contrasts two views: pass input_tokens_view2 (and its mask and "
                "position ids), or use loss_type='ed'."
            )
        if labels is not None and labels.shape != input_tokens.shape:
            raise ValueError(f"labels have shape {tuple(labels.shape)}, input_tokens {tuple(input_tokens.shape)}.")
        if labels is not None and config.reference_losses:
            logger.warning_once("reference_losses=True: the input, not labels, is the reconstruction target.")
            labels = None
        target = input_tokens if labels is None else labels

        embeddings = self.hyperrep(input_tokens, attention_mask, position_ids).embeddings
        reconstruction = self.decoder(embeddings, attention_mask)
        value_mask = make_value_mask(config).to(input_tokens.device)
        if attention_mask is not None:
            value_mask = value_mask & attention_mask.bool()[..., None]
        reconstruction_loss = masked_mse_loss(reconstruction, target, value_mask)

        projections = projections_view2 = embeddings_view2 = contrastive_loss = None
        if input_tokens_view2 is not None:
            embeddings_view2 = self.hyperrep(input_tokens_view2, attention_mask_view2, position_ids_view2).embeddings
            # One BatchNorm pass over both views, so that both are normalised with the same statistics.
            both = self.projection_head(torch.cat([embeddings, embeddings_view2]))
            projections, projections_view2 = both.split(embeddings.shape[0])
            if config.loss_type in ("ec", "ecd"):
                contrastive_loss = nt_xent_loss(projections, projections_view2, config.temperature)
            elif config.loss_type == "ec+d":
                contrastive_loss = positive_pair_loss(
                    projections, projections_view2, config.temperature, reference=config.reference_losses
                )

        if config.loss_type == "ed":
            loss = reconstruction_loss
        elif config.loss_type == "ec":
            loss = contrastive_loss
        else:
            loss = config.beta * reconstruction_loss + (1 - config.beta) * contrastive_loss
        function_loss = None
        if self.function_head is not None and function_values is not None:
            function_loss = F.mse_loss(self.function_head(embeddings), function_values.to(embeddings.dtype))
            loss = loss + config.function_weight * function_loss
        output = HyperRepForPreTrainingOutput(
            loss=loss,
            reconstruction_loss=reconstruction_loss,
            contrastive_loss=contrastive_loss,
            function_loss=function_loss,
            reconstruction=reconstruction,
            embeddings=embeddings,
            projections=projections,
            projections_view2=projections_view2,
            embeddings_view2=embeddings_view2,
        )
        return output if return_dict else output.to_tuple()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves like `PreTrainedModel.save_pretrained`; with remote code, maps AutoModel to the encoder too."""
        if self._auto_class is not None:
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModel": "modeling_hyperrep.HyperRepModel",
            }
        return super().save_pretrained(save_directory, *args, **kwargs)


# Saved models carry `auto_map` and the code files, so they load with `trust_remote_code=True` without hyperrep_hf.
HyperRepModel.register_for_auto_class("AutoModel")
HyperRepForPreTraining.register_for_auto_class("AutoModelForPreTraining")

__all__ = [
    "HyperRepForPreTraining",
    "HyperRepForPreTrainingOutput",
    "HyperRepModel",
    "HyperRepModelOutput",
    "HyperRepPreTrainedModel",
    "make_position_ids",
    "make_value_mask",
    "masked_mse_loss",
    "nt_xent_loss",
    "positive_pair_loss",
]
