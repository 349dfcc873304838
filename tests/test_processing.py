"""NeuronTokenProcessor: token layouts per docs/CONTRACTS.md, bit-exact inverse, inputs, errors, saving."""

import ast
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from torch import nn
from transformers import AutoFeatureExtractor

import hyperrep_hf
from hyperrep_hf.models.hyperrep.processing_hyperrep import NeuronTokenProcessor
from hyperrep_hf.zoo.networks import MNIST_CNN, SMALL_CNN_ZOO, TETRIS_MLP, NetworkSpec, make_module

LAYOUTS = [("per_layer", None), ("padded", 32), ("padded", 7), ("weight", None)]


@st.composite
def network_specs(draw: st.DrawFn) -> NetworkSpec:
    """Random small MLPs and CNNs (with or without biases, dropout, pooling, flatten or global pooling)."""

    def bias() -> str:
        return "" if draw(st.booleans()) else ":nobias"

    if draw(st.booleans()):
        layers = []
        for _ in range(draw(st.integers(0, 3))):
            layers += [f"linear:{draw(st.integers(1, 6))}{bias()}", "act"]
            layers += ["dropout"] if draw(st.booleans()) else []
        return NetworkSpec.parse((draw(st.integers(1, 7)),), [*layers, f"linear:{draw(st.integers(1, 4))}{bias()}"])
    size = draw(st.integers(5, 9))
    layers = []
    for _ in range(draw(st.integers(1, 2))):
        kernel, stride = draw(st.integers(1, 3)), draw(st.integers(1, 2))
        layers += [f"conv:{draw(st.integers(1, 4))}:{kernel}:s{stride}:p{draw(st.integers(0, 1))}{bias()}", "act"]
        layers += ["maxpool:2"] if draw(st.booleans()) else []
    layers.append(draw(st.sampled_from(["flatten", "gap"])))
    if draw(st.booleans()):
        layers += [f"linear:{draw(st.integers(1, 5))}{bias()}", "act", "dropout"]
    layers.append(f"linear:{draw(st.integers(1, 4))}{bias()}")
    try:
        return NetworkSpec.parse((draw(st.integers(1, 2)), size, size), layers)
    except ValueError:  # the maps became smaller than a kernel: not a network
        assume(False)
        raise


def random_vectors(num_networks: int, num_parameters: int, seed: int) -> torch.Tensor:
    """Float32 vectors including the awkward values a bit-exact round trip must keep (-0.0, tiny, huge)."""
    vectors = torch.randn(num_networks, num_parameters, generator=torch.Generator().manual_seed(seed))
    special = torch.tensor([-0.0, 0.0, 1e-40, -3.4e38, 1.5e-45])
    vectors.view(-1)[: min(special.numel(), vectors.numel())] = special[: vectors.numel()]
    return vectors


def as_json(record: dict) -> dict:
    return json.loads(json.dumps(record))


def same_bits(first: torch.Tensor, second: torch.Tensor) -> bool:
    return first.shape == second.shape and torch.equal(first.view(torch.int32), second.view(torch.int32))


def test_per_layer_tokens_match_the_paper_counts_and_hold_each_neurons_row():
    processor = NeuronTokenProcessor(MNIST_CNN)
    module = make_module(MNIST_CNN)
    inputs = processor(module)
    assert processor.model_config_kwargs() == {
        "token_layout": "per_layer",
        "token_dim": 201,
        "num_tokens": 48,
        "layer_token_widths": [26, 201, 25, 37, 21],
        "layer_num_tokens": [8, 6, 4, 20, 10],
    }
    assert inputs["input_tokens"].shape == (1, 48, 201) and inputs["input_tokens"].dtype == torch.float32
    assert inputs["attention_mask"].dtype == torch.long and bool(inputs["attention_mask"].eq(1).all())
    state, token = module.state_dict(), 0
    for layer_index, layer in enumerate(MNIST_CNN.parameter_layers):
        for neuron in range(layer.num_neurons):
            row = torch.cat(
                [state[layer.weight_name][neuron].reshape(-1), state[layer.bias_name][neuron : neuron + 1]]
            )
            expected = torch.zeros(201)
            expected[: row.numel()] = row
            assert torch.equal(inputs["input_tokens"][0, token], expected)
            assert inputs["position_ids"][0, token].tolist() == [token, layer_index, neuron]
            token += 1


def test_tetris_without_biases_gives_five_tokens_of_16_and_four_of_5():
    processor = NeuronTokenProcessor(TETRIS_MLP)
    kwargs = processor.model_config_kwargs()
    assert (kwargs["layer_num_tokens"], kwargs["layer_token_widths"], kwargs["token_dim"]) == ([5, 4], [16, 5], 16)
    module = make_module(TETRIS_MLP)
    tokens = processor(module)["input_tokens"][0]
    assert torch.equal(tokens[5, :5], module.state_dict()["layers.3.weight"][0]) and not tokens[5, 5:].any()


def test_padded_layout_chunks_rows_in_order_and_pads_the_last_chunk():
    processor = NeuronTokenProcessor(MNIST_CNN, token_layout="padded", token_dim=32)
    module = make_module(MNIST_CNN)
    inputs = processor(module)
    kwargs = processor.model_config_kwargs()
    assert kwargs["layer_num_tokens"] == [8 * 1, 6 * 7, 4 * 1, 20 * 2, 10 * 1]
    assert inputs["input_tokens"].shape == (1, kwargs["num_tokens"], 32)
    # Second conv layer, neuron 1: tokens 8 + 7..13; its row of 201 values = 6 full chunks + 9 values.
    state = module.state_dict()
    row = torch.cat([state["layers.3.weight"][1].reshape(-1), state["layers.3.bias"][1:2]])
    chunks = inputs["input_tokens"][0, 15:22].reshape(-1)
    assert torch.equal(chunks[:201], row) and not chunks[201:].any()
    assert inputs["position_ids"][0, 15].tolist() == [15, 1, 7]


def test_weight_layout_is_the_flat_vector():
    processor = NeuronTokenProcessor(SMALL_CNN_ZOO, token_layout="weight")
    vectors = random_vectors(3, SMALL_CNN_ZOO.num_parameters, seed=0)
    inputs = processor(vectors)
    assert inputs["input_tokens"].shape == (3, 4970, 1) and processor.token_dim == 1
    assert same_bits(inputs["input_tokens"][..., 0], vectors)
    assert processor.model_config_kwargs()["layer_num_tokens"] == [160, 2320, 2320, 170]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=network_specs(), layout=st.sampled_from(LAYOUTS), seed=st.integers(0, 2**16))
def test_round_trip_is_bit_exact_for_random_networks(spec, layout, seed):
    token_layout, token_dim = layout
    processor = NeuronTokenProcessor(spec, token_layout=token_layout, token_dim=token_dim)
    vectors = random_vectors(3, spec.num_parameters, seed)
    inputs = processor(vectors)
    kwargs = processor.model_config_kwargs()
    assert inputs["input_tokens"].shape == (3, kwargs["num_tokens"], kwargs["token_dim"])
    assert sum(kwargs["layer_num_tokens"]) == kwargs["num_tokens"]
    # Every weight appears exactly once; everything else is padding.
    assert int((inputs["input_tokens"] != 0).sum()) <= vectors.numel()
    assert same_bits(processor.to_vectors(inputs), vectors)
    assert same_bits(processor.to_vectors(inputs["input_tokens"][1]), vectors[1:2])
    for state_dict, vector in zip(processor.to_state_dicts(inputs), vectors, strict=True):
        assert list(state_dict) == list(spec.parameter_shapes)
        flat = torch.cat([tensor.reshape(-1) for tensor in state_dict.values()])
        assert same_bits(flat, vector)


def test_every_kind_of_input_gives_the_same_tokens(tmp_path):
    processor = NeuronTokenProcessor(MNIST_CNN)
    modules = [make_module(MNIST_CNN) for _ in range(3)]
    state_dicts = [module.state_dict() for module in modules]
    vectors = torch.stack([torch.cat([t.reshape(-1) for t in sd.values()]) for sd in state_dicts])
    path = tmp_path / "network.safetensors"
    save_file({k: v.contiguous() for k, v in state_dicts[2].items()}, str(path))
    expected = processor(vectors)["input_tokens"]
    assert torch.equal(processor(modules)["input_tokens"], expected)
    assert torch.equal(processor(state_dicts)["input_tokens"], expected)
    assert torch.equal(processor([modules[0], state_dicts[1], str(path)])["input_tokens"], expected)
    assert torch.equal(processor(list(vectors))["input_tokens"], expected)
    assert torch.equal(processor(vectors.numpy())["input_tokens"], expected)
    assert torch.equal(processor(vectors[0])["input_tokens"], expected[:1])
    assert torch.equal(processor(path)["input_tokens"], expected[2:])
    as_numpy = processor(vectors, return_tensors="np")
    assert isinstance(as_numpy["input_tokens"], np.ndarray) and np.array_equal(as_numpy["input_tokens"], expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda sd: sd.pop("layers.3.bias"), r"missing parameter 'layers.3.bias' \(expected shape \[6\]\)"),
        (lambda sd: sd.update(extra=torch.zeros(2, 3)), r"unexpected parameter 'extra' with shape \[2, 3\]"),
        (
            lambda sd: sd.update({"layers.9.weight": torch.zeros(36, 20)}),
            r"'layers.9.weight' has shape \[36, 20\], expected \[20, 36\]",
        ),
    ],
)
def test_a_wrong_state_dict_names_the_parameter_and_both_shapes(change, message):
    state_dict = dict(make_module(MNIST_CNN).state_dict())
    change(state_dict)
    with pytest.raises(ValueError, match=message):
        NeuronTokenProcessor(MNIST_CNN)([make_module(MNIST_CNN), state_dict])


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_named(bad_value):
    processor = NeuronTokenProcessor(MNIST_CNN)
    state_dict = dict(make_module(MNIST_CNN).state_dict())
    state_dict["layers.6.weight"] = state_dict["layers.6.weight"].clone()
    state_dict["layers.6.weight"][1, 2, 0, 1] = bad_value
    with pytest.raises(ValueError, match=r"Network 0: parameter 'layers.6.weight' \(shape \[4, 6, 2, 2\]\)"):
        processor(state_dict)
    vectors = torch.zeros(2, MNIST_CNN.num_parameters)
    vectors[1, -1] = bad_value
    with pytest.raises(ValueError, match=r"Network 1: parameter 'layers.11.bias' \(shape \[10\]\)"):
        processor(vectors)


def test_wrong_vector_length_and_token_shape_are_errors():
    processor = NeuronTokenProcessor(TETRIS_MLP)
    with pytest.raises(ValueError, match=r"\(batch, 100\), got \[2, 99\]"):
        processor(torch.zeros(2, 99))
    with pytest.raises(ValueError, match=r"\(batch, 9, 16\)"):
        processor.to_vectors(torch.zeros(2, 9, 15))
    with pytest.raises(ValueError, match="token_dim"):
        NeuronTokenProcessor(TETRIS_MLP, token_layout="padded")


def test_architecture_derived_from_a_state_dict_matches_the_spec():
    for spec, flatten_block in ((MNIST_CNN, 9), (SMALL_CNN_ZOO, 1), (TETRIS_MLP, 1)):
        derived = NeuronTokenProcessor.from_network(make_module(spec).state_dict())
        assert derived.architecture["parameters"] == spec.to_dict()["parameters"]
        assert derived.architecture["parameter_layers"][-1 if spec is not MNIST_CNN else 3]["flatten_block"] == (
            flatten_block
        )
        from_module = NeuronTokenProcessor.from_network(make_module(spec))  # the module's own spec
        assert from_module.architecture == as_json(spec.to_dict())
        vectors = random_vectors(2, spec.num_parameters, seed=1)
        assert torch.equal(derived(vectors)["input_tokens"], from_module(vectors)["input_tokens"])


def test_from_zoo_reads_zoo_info(tmp_path):
    (tmp_path / "tetris_seed").mkdir()
    (tmp_path / "tetris_seed" / "zoo_info.json").write_text(json.dumps({"architecture": TETRIS_MLP.to_dict()}))
    assert NeuronTokenProcessor.from_zoo(tmp_path).architecture == as_json(TETRIS_MLP.to_dict())
    (tmp_path / "mnist_seed").mkdir()
    (tmp_path / "mnist_seed" / "zoo_info.json").write_text(json.dumps({"architecture": MNIST_CNN.to_dict()}))
    with pytest.raises(ValueError, match="config_name"):
        NeuronTokenProcessor.from_zoo(tmp_path)
    processor = NeuronTokenProcessor.from_zoo(tmp_path, "mnist_seed", token_layout="padded", token_dim=64)
    assert processor.num_tokens == 8 + 6 * 4 + 4 + 20 + 10


def test_normalisation_is_fitted_saved_and_inverted(tmp_path):
    processor = NeuronTokenProcessor(MNIST_CNN, token_layout="padded", token_dim=64)
    scales = torch.tensor([3.0, 0.1, 1.0, 0.5, 2.0]).repeat_interleave(torch.tensor([208, 1206, 100, 740, 210]))
    vectors = random_vectors(50, MNIST_CNN.num_parameters, seed=2) * scales + 0.7
    vectors.view(-1)[:5] = 0.5  # no extreme values here: the statistics would be meaningless
    stats = processor.fit_normalization(vectors)
    assert len(stats["mean"]) == len(stats["std"]) == 5 and processor.normalize
    normalised = processor.normalize_vectors(vectors)
    for values in torch.split(normalised, [208, 1206, 100, 740, 210], dim=1):
        assert abs(float(values.mean())) < 1e-4 and abs(float(values.std(unbiased=False)) - 1) < 1e-4
    inputs = processor(vectors)
    assert torch.allclose(processor.to_vectors(inputs), vectors, rtol=1e-6, atol=1e-6)  # float rounding only
    assert same_bits(processor.to_vectors(inputs, denormalize=False), normalised)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["normalization_stats"] == stats and saved["normalize"] is True
    reloaded = NeuronTokenProcessor.from_pretrained(tmp_path)
    assert torch.equal(reloaded(vectors)["input_tokens"], inputs["input_tokens"])


def test_save_and_load_with_auto_feature_extractor(tmp_path):
    processor = NeuronTokenProcessor(SMALL_CNN_ZOO, token_layout="padded", token_dim=16)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert (
        saved["feature_extractor_type"] == "NeuronTokenProcessor" and saved["architecture"]["name"] == "small_cnn_zoo"
    )
    loaded = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(loaded) is hyperrep_hf.NeuronTokenProcessor and "Tokenizer" not in type(loaded).__name__
    assert loaded.to_dict() == processor.to_dict()
    vectors = random_vectors(2, SMALL_CNN_ZOO.num_parameters, seed=3)
    assert torch.equal(loaded(vectors)["input_tokens"], processor(vectors)["input_tokens"])


def test_remote_code_file_is_self_contained(tmp_path):
    """The processing file travels to the Hub: only third-party, stdlib and single-dot sibling imports."""
    source = open(hyperrep_hf.models.hyperrep.processing_hyperrep.__file__, encoding="utf-8").read()
    allowed = {"torch", "numpy", "transformers", "safetensors", "json", "math", "os", "collections", "typing"}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            assert {alias.name.split(".")[0] for alias in node.names} <= allowed
        elif isinstance(node, ast.ImportFrom) and node.module != "__future__":
            assert (
                node.level == 1 and "." not in (node.module or "")
                if node.level
                else node.module.split(".")[0] in allowed
            )
    assert NeuronTokenProcessor._auto_class == "AutoFeatureExtractor"  # registered at import: saves carry the code
    NeuronTokenProcessor(TETRIS_MLP).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["auto_map"] == {"AutoFeatureExtractor": "processing_hyperrep.NeuronTokenProcessor"}
    assert (tmp_path / "processing_hyperrep.py").read_text() == source


def test_position_ids_count_tokens_within_layers():
    processor = NeuronTokenProcessor(TETRIS_MLP, token_layout="weight")
    positions = processor(torch.zeros(1, 100))["position_ids"][0]
    assert positions[:, 0].tolist() == list(range(100))
    assert positions[:, 1].tolist() == [0] * 80 + [1] * 20
    assert positions[80:, 2].tolist() == list(range(20))
    assert math.prod(processor(torch.zeros(4, 100))["position_ids"].shape) == 4 * 100 * 3


@pytest.mark.parametrize("seed", range(3))
def test_a_plain_sequential_or_a_wrapped_module_is_read_under_the_architectures_names(seed):
    torch.manual_seed(seed)
    processor = NeuronTokenProcessor(TETRIS_MLP)
    plain = nn.Sequential(nn.Flatten(), nn.Linear(16, 5, bias=False), nn.Tanh(), nn.Linear(5, 4, bias=False))
    ours = make_module(TETRIS_MLP)
    ours.load_state_dict({"layers.1.weight": plain[1].weight, "layers.3.weight": plain[3].weight})
    wrapped = nn.ModuleDict({"net": ours})
    expected = processor(ours)["input_tokens"]
    assert torch.equal(processor(plain)["input_tokens"], expected)
    assert torch.equal(processor(wrapped)["input_tokens"], expected)
    # '0.', '2.': no name in common, so read by architecture (shapes in order; tests/test_user_networks.py)
    shifted = nn.Sequential(nn.Linear(16, 5, bias=False), nn.Tanh(), nn.Linear(5, 4, bias=False))
    shifted.load_state_dict({"0.weight": plain[1].weight, "2.weight": plain[3].weight})
    assert torch.equal(processor(shifted)["input_tokens"], expected)
    extra = dict(plain.state_dict(), **{"5.weight": torch.zeros(2)})
    with pytest.raises(ValueError, match=r"unexpected parameter '1.weight'"):
        processor(extra)
