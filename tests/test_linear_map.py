"""The linear_map baseline: the affine map of each network with its non-linearities taken out.

Checked against hand computation (W₂ W₁ for a bias-free MLP, W₂ b₁ + b₂ with biases), against the linearised
network run on random inputs, and for invariance under random permutations and sign flips of real networks of every
shipped architecture.
"""

import json
import math

import numpy as np
import pytest
import torch
from tiny_models import evaluated_test_scores, make_model_folder, make_zoo, run_compare_baseline

from hyperrep_hf.cli import main
from hyperrep_hf.models.hyperrep.augmentations import NeuronPermutation, NeuronSignFlip, sign_flip_layers
from hyperrep_hf.probing.baselines import compute_baseline_features, linear_map_features
from hyperrep_hf.zoo.networks import MNIST_CNN, SMALL_CNN_ZOO, TETRIS_MLP, NetworkSpec, make_module, unflatten_vector

MLP_WITH_BIASES = NetworkSpec.parse((1, 3, 3), ["flatten", "linear:6", "act", "linear:4", "act", "linear:3"], "mlp")
DROPOUT_CNN = NetworkSpec.parse(
    (1, 12, 12),
    ["conv:6:3", "act", "dropout", "conv:5:3:s2", "act", "dropout", "flatten", "linear:7", "act", "linear:3"],
    "dropout_cnn",
)
SPECS = [TETRIS_MLP, MLP_WITH_BIASES, DROPOUT_CNN, SMALL_CNN_ZOO, MNIST_CNN]


@pytest.mark.parametrize("seed", range(3))
def test_a_bias_free_mlp_gives_the_product_of_its_weight_matrices(seed):
    vectors = np.random.default_rng(seed).normal(size=(7, TETRIS_MLP.num_parameters))
    first, second = vectors[:, :80].reshape(-1, 5, 16), vectors[:, 80:].reshape(-1, 4, 5)
    expected = np.einsum("nkj,nji->nki", second, first).reshape(7, -1)
    np.testing.assert_allclose(linear_map_features(vectors, TETRIS_MLP.to_dict()), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_biases_compose_into_the_offset(seed):
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(4, MLP_WITH_BIASES.num_parameters))
    features = linear_map_features(vectors, MLP_WITH_BIASES.to_dict())
    for vector, row in zip(vectors, features, strict=True):
        p = {
            name: value.numpy() for name, value in unflatten_vector(MLP_WITH_BIASES, torch.from_numpy(vector)).items()
        }
        (w1, b1), (w2, b2), (w3, b3) = [(p[f"layers.{i}.weight"], p[f"layers.{i}.bias"]) for i in (1, 3, 5)]
        matrix = w3 @ w2 @ w1
        offset = w3 @ (w2 @ b1 + b2) + b3
        np.testing.assert_allclose(row, np.concatenate([matrix.reshape(-1), offset]), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
def test_the_features_are_the_linearised_network(spec):
    """A x + c from the features equals the network with identity activations and average pooling, on random x."""
    torch.manual_seed(0)
    vectors = torch.randn(3, spec.num_parameters, dtype=torch.float64) * 0.3
    features = linear_map_features(vectors.numpy(), spec.to_dict())
    module = make_module(spec, "identity").double().eval()
    for index, layer in enumerate(module.layers):
        if isinstance(layer, torch.nn.MaxPool2d):
            module.layers[index] = torch.nn.AvgPool2d(layer.kernel_size)
    inputs = torch.randn(5, *spec.input_shape, dtype=torch.float64)
    num_inputs = math.prod(spec.input_shape)
    has_bias = any(layer.bias_name for layer in spec.parameter_layers)
    for vector, row in zip(vectors, features, strict=True):
        module.load_state_dict(unflatten_vector(spec, vector))
        with torch.no_grad():
            expected = module(inputs).numpy()
        matrix = row[: spec.num_classes * num_inputs].reshape(spec.num_classes, num_inputs)
        offset = row[spec.num_classes * num_inputs :] if has_bias else 0.0
        np.testing.assert_allclose(inputs.reshape(5, -1).numpy() @ matrix.T + offset, expected, atol=1e-9)


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
@pytest.mark.parametrize("seed", range(2))
def test_permuted_and_sign_flipped_networks_get_the_same_features(spec, seed):
    """Real networks (PyTorch's init, biases included) under random function-preserving transforms."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.stack(
        [torch.cat([p.detach().reshape(-1) for p in make_module(spec).parameters()]) for _ in range(4)]
    )
    transformed = NeuronPermutation(spec, num_permutations=50, generator=generator)(vectors, generator)
    if sign_flip_layers(spec, "tanh"):
        transformed = NeuronSignFlip(spec, "tanh")(transformed, generator)
    assert not torch.equal(transformed, vectors)
    original = linear_map_features(vectors.double().numpy(), spec.to_dict())
    moved = linear_map_features(transformed.double().numpy(), spec.to_dict())
    np.testing.assert_allclose(moved, original, rtol=1e-9, atol=1e-12)


def test_non_finite_rows_get_nan_features_and_the_others_are_unchanged():
    vectors = np.random.default_rng(0).normal(size=(6, TETRIS_MLP.num_parameters))
    clean = linear_map_features(vectors, TETRIS_MLP.to_dict())
    vectors[2, 7], vectors[4, 90] = np.nan, np.inf
    features = linear_map_features(vectors, TETRIS_MLP.to_dict())
    assert np.isnan(features[[2, 4]]).all()
    np.testing.assert_array_equal(features[[0, 1, 3, 5]], clean[[0, 1, 3, 5]])


def test_an_architecture_without_its_layer_list_is_refused_with_what_to_do():
    parameters_only = {"parameters": TETRIS_MLP.to_dict()["parameters"]}
    with pytest.raises(ValueError, match=r"layer list.*Leave linear_map out of --baselines"):
        compute_baseline_features("linear_map", {"train": np.zeros((2, 100))}, parameters_only)
    with pytest.raises(ValueError, match=r"shape \(num_rows, 100\)"):
        linear_map_features(np.zeros((2, 99)), TETRIS_MLP.to_dict())


@pytest.fixture(scope="module")
def evaluated_with_linear_map(tmp_path_factory):
    """A tiny encoder on a mixed-activation zoo (tanh and relu), evaluated with s(W) and linear_map, from the CLI."""
    zoo_dir = make_zoo(tmp_path_factory.mktemp("zoo"))
    model_dir = make_model_folder(
        zoo_dir, tmp_path_factory.mktemp("model"), d_model=16, intermediate_size=32, latent_dim=4
    )
    out = tmp_path_factory.mktemp("out")
    arguments = ["evaluate", str(model_dir), "--zoo", str(zoo_dir), "--out", str(out), "--quiet", "--threads", "1"]
    assert main([*arguments, "--baselines", "s(W)", "linear_map"]) == 0
    return model_dir, zoo_dir, out


def test_evaluate_probes_the_linear_map_beside_the_others(evaluated_with_linear_map):
    """Opt-in like s(W)_unterthiner, on every target, and titled in results.md."""
    out = evaluated_with_linear_map[2]
    records = json.loads((out / "results.json").read_text())["results"]
    assert {record["method"] for record in records} == {"s(W)", "linear_map", "hyperrep"}
    assert {r["target"] for r in records if r["method"] == "linear_map"} == {r["target"] for r in records}
    assert "| target | s(W) | linear map | hyperrep |" in (out / "results.md").read_text()


def test_the_linear_map_bench_probes_as_evaluate_does(evaluated_with_linear_map, tmp_path):
    """bench/compare_baseline.py (linear_map): its s(W), linear_map and hyperrep columns are `hyperrep evaluate`'s."""
    model_dir, zoo_dir, out = evaluated_with_linear_map
    result = run_compare_baseline(model_dir, zoo_dir, tmp_path / "lm.json")
    evaluated = evaluated_test_scores(out)
    assert result["targets"] and result["linear_map_width"] == 4 * 16
    for target, row in result["targets"].items():
        for method in ("s(W)", "linear_map", "hyperrep"):
            assert row[method] == pytest.approx(evaluated[(method, target)], abs=1e-9), (method, target)
        assert row["hyperrep − linear_map"][0] == pytest.approx(row["hyperrep"] - row["linear_map"], abs=1e-9)
    counts = result["summary"]["hyperrep − linear_map"]
    assert sum(counts.values()) == len(result["targets"])
