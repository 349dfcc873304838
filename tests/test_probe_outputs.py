"""The probe_outputs baseline: √ of each network's softmax outputs on fixed random inputs, under the zoo's activations.

Checked against each network run by hand as a plain ``nn.Module`` under each activation, for invariance under
random permutations and (before tanh) sign flips of real networks of every shipped architecture, and through
``hyperrep evaluate`` on a mixed-activation zoo (no row's own activation is read: it is a label).
"""

import json

import numpy as np
import pytest
import torch
from tiny_models import evaluated_test_scores, make_model_folder, make_zoo, run_compare_baseline

from hyperrep_hf.cli import main
from hyperrep_hf.models.hyperrep.augmentations import NeuronPermutation, NeuronSignFlip, sign_flip_layers
from hyperrep_hf.probing.baselines import compute_baseline_features, probe_inputs, probe_output_features
from hyperrep_hf.zoo.networks import ACTIVATIONS, MNIST_CNN, SMALL_CNN_ZOO, TETRIS_MLP, make_module, unflatten_vector

SPECS = [TETRIS_MLP, SMALL_CNN_ZOO, MNIST_CNN]
ALPHAS = ["1e5", "1e3", "10", "0.1"]  # not the default grid: the bench must pass its own on


def _real_networks(spec, count, seed):
    torch.manual_seed(seed)
    return torch.stack(
        [torch.cat([p.detach().reshape(-1) for p in make_module(spec).parameters()]) for _ in range(count)]
    )


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
@pytest.mark.parametrize("seed", range(2))
def test_the_features_are_each_network_run_by_hand_under_each_activation(spec, seed):
    vectors = _real_networks(spec, 4, seed) * 3  # a larger scale, so that activations differ visibly
    rng = np.random.default_rng(seed)
    activations = list(rng.choice([a for a in ACTIVATIONS if a != "identity"], size=2, replace=False))
    features = probe_output_features(vectors.numpy(), spec.to_dict(), activations, count=16)
    assert features.shape == (4, 2 * 16 * spec.num_classes)
    inputs = probe_inputs(spec.input_shape, 16)
    for vector, row in zip(vectors, features, strict=True):
        expected = []
        for activation in activations:
            module = make_module(spec, str(activation)).eval()
            module.load_state_dict(unflatten_vector(spec, vector))
            with torch.no_grad():
                expected.append(module(inputs).softmax(-1).sqrt().reshape(-1).numpy())
        np.testing.assert_allclose(row, np.concatenate(expected), rtol=1e-4, atol=1e-5)
        assert np.allclose((row.reshape(2 * 16, -1) ** 2).sum(axis=1), 1, atol=1e-5)  # squared: a softmax each


@pytest.mark.parametrize("spec", SPECS, ids=[spec.name for spec in SPECS])
@pytest.mark.parametrize("seed", range(2))
def test_permuted_and_sign_flipped_networks_get_the_same_features(spec, seed):
    generator = torch.Generator().manual_seed(seed)
    vectors = _real_networks(spec, 4, seed)
    permuted = NeuronPermutation(spec, num_permutations=50, generator=generator)(vectors, generator)
    assert not torch.equal(permuted, vectors)
    for activation in ("relu", "tanh"):
        moved = permuted
        if activation == "tanh" and sign_flip_layers(spec, "tanh"):
            moved = NeuronSignFlip(spec, "tanh")(permuted, generator)
        original = probe_output_features(vectors.numpy(), spec.to_dict(), activation, count=32)
        np.testing.assert_allclose(
            probe_output_features(moved.numpy(), spec.to_dict(), activation, count=32), original, atol=2e-5
        )


def test_the_inputs_are_fixed_noise_and_the_features_see_them():
    first, again = probe_inputs((1, 4, 4)), probe_inputs((1, 4, 4))
    assert first.shape == (256, 1, 4, 4) and torch.equal(first, again)
    assert abs(float(first.mean())) < 0.05 and abs(float(first.std()) - 1) < 0.05
    vectors = _real_networks(TETRIS_MLP, 3, 0).numpy()
    assert not np.allclose(
        probe_output_features(vectors, TETRIS_MLP.to_dict(), "tanh", seed=0),
        probe_output_features(vectors, TETRIS_MLP.to_dict(), "tanh", seed=1),
    )


def test_non_finite_rows_get_nan_features_and_the_others_are_unchanged():
    vectors = np.random.default_rng(0).normal(size=(6, TETRIS_MLP.num_parameters)).astype(np.float32)
    clean = probe_output_features(vectors, TETRIS_MLP.to_dict(), "relu")
    vectors[2, 7], vectors[4, 90] = np.nan, np.inf
    features = probe_output_features(vectors, TETRIS_MLP.to_dict(), "relu")
    assert np.isnan(features[[2, 4]]).all()
    np.testing.assert_array_equal(features[[0, 1, 3, 5]], clean[[0, 1, 3, 5]])


def test_what_cannot_run_is_refused_with_what_to_do():
    parameters_only = {"parameters": TETRIS_MLP.to_dict()["parameters"]}
    vectors = {"train": np.zeros((2, 100), dtype=np.float32)}
    with pytest.raises(ValueError, match=r"layer list.*Leave probe_outputs out of --baselines"):
        compute_baseline_features("probe_outputs", vectors, parameters_only, activations=["tanh"])
    with pytest.raises(ValueError, match=r"zoo's activations.*Leave probe_outputs out of --baselines"):
        compute_baseline_features("probe_outputs", vectors, TETRIS_MLP.to_dict())
    with pytest.raises(ValueError, match=r"activations \['tanh', 'swish'\]"):
        probe_output_features(vectors["train"], TETRIS_MLP.to_dict(), np.array(["tanh", "swish"]))
    with pytest.raises(ValueError, match=r"activations \[\]"):
        probe_output_features(vectors["train"], TETRIS_MLP.to_dict(), [])
    with pytest.raises(ValueError, match=r"shape \(num_rows, 100\)"):
        probe_output_features(np.zeros((2, 99)), TETRIS_MLP.to_dict(), "tanh")


@pytest.fixture(scope="module")
def evaluated_with_probe_outputs(tmp_path_factory):
    """A tiny encoder on a mixed-activation zoo (tanh and relu), evaluated with s(W) and probe_outputs (CLI)."""
    zoo_dir = make_zoo(tmp_path_factory.mktemp("zoo"))
    model_dir = make_model_folder(
        zoo_dir, tmp_path_factory.mktemp("model"), d_model=16, intermediate_size=32, latent_dim=4
    )
    out = tmp_path_factory.mktemp("out")
    arguments = ["evaluate", str(model_dir), "--zoo", str(zoo_dir), "--out", str(out), "--quiet", "--threads", "1"]
    assert main([*arguments, "--baselines", "s(W)", "probe_outputs", "--ridge-alphas", *ALPHAS]) == 0
    return model_dir, zoo_dir, out


def test_evaluate_probes_the_outputs_of_a_mixed_activation_zoo(evaluated_with_probe_outputs):
    """Opt-in, on every target, every row run under the zoo's activations (tanh and relu), titled in results.md."""
    out = evaluated_with_probe_outputs[2]
    records = json.loads((out / "results.json").read_text())["results"]
    assert {record["method"] for record in records} == {"s(W)", "probe_outputs", "hyperrep"}
    assert {r["target"] for r in records if r["method"] == "probe_outputs"} == {r["target"] for r in records}
    assert "| target | s(W) | outputs on random inputs | hyperrep |" in (out / "results.md").read_text()


def test_the_baseline_bench_probes_as_evaluate_does(evaluated_with_probe_outputs, tmp_path):
    """bench/compare_baseline.py --baseline probe_outputs, with evaluate's ridge grid: evaluate's scores."""
    model_dir, zoo_dir, out = evaluated_with_probe_outputs
    options = ("--baseline", "probe_outputs", "--ridge-alphas", *ALPHAS)
    result = run_compare_baseline(model_dir, zoo_dir, tmp_path / "b.json", *options)
    evaluated = evaluated_test_scores(out)
    activations = json.loads((zoo_dir / "tetris_hyp" / "zoo_info.json").read_text())["hyperparameters"]["activation"]
    assert sorted(activations) == ["relu", "tanh"]
    assert result["targets"] and result["probe_outputs_width"] == 2 * 256 * 4
    assert result["ridge_alphas"] == [float(alpha) for alpha in ALPHAS]
    for target, row in result["targets"].items():
        for method in ("s(W)", "probe_outputs", "hyperrep"):
            assert row[method] == pytest.approx(evaluated[(method, target)], abs=1e-9), (method, target)
