"""HyperRepConfig, HyperRepModel and HyperRepForPreTraining at tiny sizes, with tokens built from the contract."""

import math

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

import hyperrep_hf
from hyperrep_hf import (
    HyperRepConfig,
    HyperRepForPreTraining,
    HyperRepModel,
    make_position_ids,
    make_value_mask,
    reconstruction_r2,
)

TETRIS = [(5, 16, False), (4, 5, False)]  # (neurons, fan_in, bias) per layer: MLP 16→5→4, no biases
SMALL_MLP = [(3, 6, True), (2, 3, True)]  # 6→3→2 with biases: rows of width 7 and 4


def make_tokens(flat: torch.Tensor, layers, layout: str, token_dim: int | None = None):
    """Flat weight vectors (batch, P) → (tokens, model config kwargs), following docs/CONTRACTS.md."""
    rows_per_layer, start = [], 0
    for neurons, fan_in, bias in layers:
        weight = flat[:, start : start + neurons * fan_in].reshape(-1, neurons, fan_in)
        start += neurons * fan_in
        if bias:
            weight = torch.cat([weight, flat[:, start : start + neurons, None]], dim=-1)
            start += neurons
        rows_per_layer.append(weight)
    assert start == flat.shape[1]
    widths = [rows.shape[-1] for rows in rows_per_layer]
    if layout == "weight":
        counts = [rows.shape[1] * rows.shape[2] for rows in rows_per_layer]
        return flat[..., None], dict(
            token_layout="weight",
            token_dim=1,
            num_tokens=sum(counts),
            layer_token_widths=[1] * len(counts),
            layer_num_tokens=counts,
        )
    token_dim = token_dim or max(widths)
    tokens, counts = [], []
    for rows in rows_per_layer:
        chunks = math.ceil(rows.shape[-1] / token_dim) if layout == "padded" else 1
        padded = torch.nn.functional.pad(rows, (0, chunks * token_dim - rows.shape[-1]))
        layer_tokens = padded.reshape(rows.shape[0], rows.shape[1] * chunks, token_dim)
        tokens.append(torch.nn.functional.pad(layer_tokens, (0, token_dim - layer_tokens.shape[-1])))
        counts.append(layer_tokens.shape[1])
    kwargs = dict(
        token_layout=layout,
        token_dim=token_dim,
        num_tokens=sum(counts),
        layer_token_widths=widths,
        layer_num_tokens=counts,
    )
    return torch.cat(tokens, dim=1), kwargs


TINY = dict(
    d_model=16,
    num_attention_heads=2,
    intermediate_size=32,
    latent_dim=6,
    projection_dim=4,
    projection_layers=1,
    dropout=0.0,
    ffn_num_layers=3,
)


def tetris_batch(batch: int = 4, seed: int = 0):
    flat = torch.randn(batch, 100, generator=torch.Generator().manual_seed(seed))
    return make_tokens(flat, TETRIS, "per_layer")


def test_defaults_are_the_papers_tetris_settings():
    config = HyperRepConfig()
    assert (config.num_hidden_layers, config.d_model, config.num_attention_heads) == (2, 256, 4)
    assert (config.intermediate_size, config.latent_dim, config.dropout) == (512, 50, 0.1)
    assert (config.projection_layers, config.projection_dim, config.temperature) == (3, 20, 0.1)
    assert (config.num_tokens, config.token_dim, config.num_parameters, config.variant) == (9, 16, 100, "attn_t")
    assert config.hidden_size == 256 and HyperRepConfig(hidden_size=64).d_model == 64


def test_helper_tokens_match_the_config_masks():
    tokens, kwargs = tetris_batch()
    config = HyperRepConfig(**kwargs)
    assert tokens.shape == (4, 9, 16) and config.num_parameters == 100
    assert (tokens[:, ~make_value_mask(config)] == 0).all()
    assert make_position_ids(config).tolist()[4:6] == [[4, 0, 4], [5, 1, 0]]
    _, padded_kwargs = make_tokens(torch.randn(2, 29), SMALL_MLP, "padded", token_dim=3)
    padded = HyperRepConfig(**padded_kwargs, latent_dim=6)
    assert padded.layer_num_tokens == [9, 4] and padded.num_parameters == 29
    assert make_value_mask(padded).sum(1).tolist() == [3, 3, 1] * 3 + [3, 1] * 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(d_model=30), "d_model=30"),
        (dict(latent_dim=101), "latent_dim=101"),
        (dict(variant="transformer"), "variant='transformer'"),
        (dict(token_layout="rows"), "token_layout='rows'"),
        (dict(loss_type="mse"), "loss_type='mse'"),
        (dict(beta=1.5), "beta=1.5"),
        (dict(beta=-0.1), "beta=-0.1"),
        (dict(temperature=0.0), "temperature=0.0"),
        (dict(dropout=1.0), "dropout=1.0"),
        (dict(variant="attw"), "token_layout='per_layer'"),
        (dict(num_tokens=10), "layer_num_tokens=[5, 4]"),
        (dict(token_dim=20), "token_dim=20"),
        (dict(num_parameters=99), "num_parameters=99"),
        (dict(max_layers=1), "max_layers=1"),
        (dict(d_model=64, hidden_size=32), "d_model=64"),
    ],
)
def test_config_rejects_bad_values_naming_field_and_value(kwargs, field):
    with pytest.raises(ValueError, match=field.replace("[", r"\[").replace("]", r"\]")):
        HyperRepConfig(**kwargs)


def test_config_round_trips_through_json(tmp_path):
    config = HyperRepConfig(**TINY, loss_type="ec+d", beta=0.3, temperature=0.5, reference_losses=True)
    config.save_pretrained(tmp_path)
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, HyperRepConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict() and loaded.temperature == 0.5


def test_auto_classes_are_registered_at_import():
    config = AutoConfig.for_model("hyperrep", **TINY)
    assert isinstance(AutoModel.from_config(config), HyperRepModel)
    assert isinstance(AutoModelForPreTraining.from_config(config), HyperRepForPreTraining)
    assert hyperrep_hf.HyperRepConfig is HyperRepConfig


def _inputs_for(variant: str, layout: str, batch: int = 4):
    network = SMALL_MLP if layout == "padded" else TETRIS
    flat = torch.randn(batch, 29 if layout == "padded" else 100, generator=torch.Generator().manual_seed(1))
    tokens, kwargs = make_tokens(flat, network, layout, token_dim=3 if layout == "padded" else None)
    return tokens, HyperRepConfig(**kwargs, **TINY, variant=variant)


@pytest.mark.parametrize(
    ("variant", "layout"),
    [
        ("attn_t", "per_layer"),
        ("attn_t", "padded"),
        ("attn", "per_layer"),
        ("attn", "padded"),
        ("attw_t", "weight"),
        ("attw", "weight"),
        ("ffn", "per_layer"),
        ("ffn", "padded"),
    ],
)
def test_every_variant_runs_forward_and_backward(variant, layout):
    tokens, config = _inputs_for(variant, layout)
    model = HyperRepForPreTraining(config)
    output = model(tokens, input_tokens_view2=tokens + 0.01 * torch.randn_like(tokens))
    assert output.reconstruction.shape == tokens.shape and output.embeddings.shape == (4, 6)
    assert output.projections.shape == (4, 4) and output.embeddings.abs().max() <= 1  # tanh latent
    assert (output.reconstruction[:, ~make_value_mask(config)] == 0).all()
    output.loss.backward()
    unused = [name for name, parameter in model.named_parameters() if parameter.grad is None]
    assert unused == []
    encoder = HyperRepModel(config)
    assert encoder(tokens).embeddings.shape == (4, 6)


def test_attention_mask_hides_tokens_from_the_embedding():
    tokens, config = _inputs_for("attn_t", "per_layer")
    model = HyperRepModel(config).eval()
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[:, 6:] = 0
    changed = tokens.clone()
    changed[:, 6:] = 5.0
    before, after = model(tokens, attention_mask=mask).embeddings, model(changed, attention_mask=mask).embeddings
    torch.testing.assert_close(before, after)
    assert not torch.allclose(model(changed).embeddings, model(tokens).embeddings)


def test_default_position_ids_are_the_contracts():
    tokens, config = _inputs_for("attn_t", "padded")
    model = HyperRepModel(config).eval()
    position_ids = make_position_ids(config).expand(4, -1, -1)
    torch.testing.assert_close(model(tokens).embeddings, model(tokens, position_ids=position_ids).embeddings)
    assert not torch.allclose(model(tokens).embeddings, model(tokens, position_ids=position_ids.flip(1)).embeddings)


def test_labels_are_the_reconstruction_target_unless_reference_losses():
    tokens, kwargs = tetris_batch()
    clean = tokens * 0.5
    for reference, expected_target in ((False, clean), (True, tokens)):
        model = HyperRepForPreTraining(HyperRepConfig(**kwargs, **TINY, loss_type="ed", reference_losses=reference))
        output = model(tokens, labels=clean)
        expected = (output.reconstruction - expected_target)[:, make_value_mask(model.config)].pow(2).mean()
        torch.testing.assert_close(output.reconstruction_loss, expected)
        torch.testing.assert_close(output.loss, expected)


def test_contrastive_loss_types_require_a_second_view():
    tokens, kwargs = tetris_batch()
    for loss_type in ("ec", "ecd", "ec+d"):
        model = HyperRepForPreTraining(HyperRepConfig(**kwargs, **TINY, loss_type=loss_type))
        with pytest.raises(ValueError, match="input_tokens_view2"):
            model(tokens)
    model = HyperRepForPreTraining(HyperRepConfig(**kwargs, **TINY, loss_type="ed"))
    assert model(tokens).contrastive_loss is None


def test_return_dict_false_gives_a_tuple():
    tokens, kwargs = tetris_batch()
    model = HyperRepForPreTraining(HyperRepConfig(**kwargs, **TINY, loss_type="ed")).eval()
    loss, reconstruction_loss, reconstruction, embeddings = model(tokens, return_dict=False)
    torch.testing.assert_close(loss, reconstruction_loss)
    assert reconstruction.shape == tokens.shape and embeddings.shape == (4, 6)


def test_initialisation_is_seeded_and_fills_the_custom_parameters():
    config = HyperRepConfig(**TINY)
    torch.manual_seed(0)
    first = HyperRepForPreTraining(config).state_dict()
    torch.manual_seed(0)
    second = HyperRepForPreTraining(config).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)
    for key in ("hyperrep.compression_token", "decoder.position_embedding"):
        assert 0.005 < first[key].std() < 0.05  # normal(0, initializer_range)
    assert all(torch.isfinite(value.float()).all() for value in first.values())


def _assert_same_outputs(model, loaded, tokens):
    assert not loaded.training
    expected, actual = model.eval()(tokens, input_tokens_view2=tokens), loaded(tokens, input_tokens_view2=tokens)
    for name in ("loss", "reconstruction", "embeddings", "projections"):
        assert torch.equal(expected[name], actual[name]), name


def test_save_and_load_give_bit_identical_outputs(tmp_path):
    tokens, config = _inputs_for("attn_t", "per_layer")
    model = HyperRepForPreTraining(config)
    model(tokens, input_tokens_view2=tokens)  # moves the BatchNorm running statistics away from their init
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert type(loaded) is HyperRepForPreTraining
    _assert_same_outputs(model, loaded, tokens)
    # The encoder alone loads from the pre-training checkpoint (prefix "hyperrep.") with the same z.
    encoder = AutoModel.from_pretrained(tmp_path)
    assert type(encoder) is HyperRepModel
    assert torch.equal(encoder(tokens).embeddings, model.hyperrep(tokens).embeddings)
    model.hyperrep.save_pretrained(tmp_path / "encoder")
    assert torch.equal(
        HyperRepModel.from_pretrained(tmp_path / "encoder")(tokens).embeddings, encoder(tokens).embeddings
    )


def test_a_checkpoint_missing_the_compression_token_gets_it_initialised(tmp_path):
    from safetensors.torch import load_file, save_file

    _, config = _inputs_for("attn_t", "per_layer")
    HyperRepModel(config).save_pretrained(tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    del state["compression_token"]
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = HyperRepModel.from_pretrained(tmp_path)
    assert torch.isfinite(loaded.compression_token).all() and 0.005 < loaded.compression_token.std() < 0.05


@pytest.mark.parametrize("variant", ["attn_t", "ffn"])
def test_a_few_adam_steps_reduce_the_reconstruction_loss(variant):
    tokens, config = _inputs_for(variant, "per_layer", batch=16)
    config.latent_dim = 16
    model = HyperRepForPreTraining(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = model(tokens, input_tokens_view2=tokens + 0.05 * torch.randn_like(tokens)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    model.eval()
    with torch.no_grad():
        first_r2 = reconstruction_r2(
            model(tokens, input_tokens_view2=tokens).reconstruction, tokens, make_value_mask(config)
        )
    assert math.isfinite(first_r2)


def test_reference_tetris_model_size_is_in_the_papers_range():
    parameters = sum(p.numel() for p in HyperRepForPreTraining(HyperRepConfig()).parameters())
    assert 225_000 <= parameters <= 65_000_000


@pytest.mark.parametrize(
    ("spec_name", "layout", "token_dim"),
    [
        ("TETRIS_MLP", "per_layer", None),
        ("MNIST_CNN", "per_layer", None),
        ("MNIST_CNN", "padded", 32),
        ("TETRIS_MLP", "weight", None),
    ],
)
def test_processor_tokens_feed_the_model(spec_name, layout, token_dim):
    """Integration with the NeuronTokenProcessor written against the same contract: processor → model → loss."""
    from hyperrep_hf import NeuronTokenProcessor, make_module

    spec = getattr(hyperrep_hf, spec_name)
    networks = [make_module(spec) for _ in range(3)]
    processor = NeuronTokenProcessor.from_network(networks[0], token_layout=layout, token_dim=token_dim)
    inputs = processor(networks, return_tensors="pt")
    config = HyperRepConfig(
        **processor.model_config_kwargs(), **TINY, variant="attw_t" if layout == "weight" else "attn_t"
    )
    assert config.num_parameters == processor.num_parameters
    assert torch.equal(inputs["position_ids"][0], make_position_ids(config))
    assert (inputs["input_tokens"][:, ~make_value_mask(config)] == 0).all()
    if spec_name == "TETRIS_MLP" and layout == "per_layer":  # the test helper agrees with the processor
        assert torch.equal(
            make_tokens(processor.networks_to_vectors(networks), TETRIS, layout)[0], inputs["input_tokens"]
        )
    model = HyperRepForPreTraining(config).eval()
    view2 = {f"{key}_view2": value for key, value in inputs.items()}
    output = model(**inputs, **view2, labels=inputs["input_tokens"])
    assert torch.isfinite(output.loss) and output.reconstruction.shape == inputs["input_tokens"].shape
    vectors = processor.to_vectors(output.reconstruction)
    assert vectors.shape == (3, config.num_parameters)
