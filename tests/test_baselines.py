"""Baseline features of flat weight vectors: hand-computed statistics, train-only fitting, optional UMAP."""

import logging
import sys

import numpy as np
import pytest

from hyperrep_hf.probing.baselines import (
    BASELINE_NAMES,
    compute_baseline_features,
    kernel_pca_features,
    layer_slices,
    statistics_feature_names,
    unterthiner_statistics,
    weight_statistics,
)
from hyperrep_hf.probing.probes import probe_targets
from hyperrep_hf.zoo.networks import MNIST_CNN, TETRIS_MLP

# Layer 0: weight (2, 2) and bias (2,); layer 2: weight (1, 2), no bias. Flat order: w0, b0, w2.
TWO_LAYERS = {
    "parameters": [
        {"name": "layers.0.weight", "shape": [2, 2]},
        {"name": "layers.0.bias", "shape": [2]},
        {"name": "layers.2.weight", "shape": [1, 2]},
    ]
}
VECTOR = np.array([[1.0, 2.0, 3.0, 4.0, 10.0, 20.0, -1.0, 1.0]])


def test_layer_slices_pair_weights_with_their_biases():
    layers = layer_slices(TWO_LAYERS)
    assert [layer.name for layer in layers] == ["layers.0", "layers.2"]
    assert layers[0].weight == slice(0, 4) and layers[0].bias == slice(4, 6)
    assert layers[1].weight == slice(6, 8) and layers[1].bias is None
    with pytest.raises(ValueError, match="does not directly follow"):
        layer_slices({"parameters": [{"name": "a.bias", "shape": [2]}, {"name": "a.weight", "shape": [2, 2]}]})
    with pytest.raises(ValueError, match="parameters"):
        layer_slices({"name": "no parameter list"})


def test_reference_statistics_by_hand():
    # layer 0 weights 1, 2, 3, 4: mean 2.5, variance 1.25; linear-interpolated percentile q = 1 + 3q/100
    # layer 2 weights −1, 1: mean 0, variance 1; percentile q = −1 + 2q/100
    layer_0 = [2.5, 1.25, 1.03, 1.75, 2.5, 3.25, 3.97]
    layer_2 = [0.0, 1.0, -0.98, -0.5, 0.0, 0.5, 0.98]
    np.testing.assert_allclose(weight_statistics(VECTOR, TWO_LAYERS), [[*layer_0, *layer_2]], atol=1e-12)
    names = statistics_feature_names(TWO_LAYERS)
    assert names[:3] == ["layers.0.weight.mean", "layers.0.weight.variance", "layers.0.weight.p1"]
    assert len(names) == 14


def test_unterthiner_statistics_by_hand():
    # per tensor: percentiles 0/25/50/75/100, mean, std (ddof 0); the bias of layer 0 after its weight
    weight_0 = [1.0, 1.75, 2.5, 3.25, 4.0, 2.5, np.sqrt(1.25)]
    bias_0 = [10.0, 12.5, 15.0, 17.5, 20.0, 15.0, 5.0]
    weight_2 = [-1.0, -0.5, 0.0, 0.5, 1.0, 0.0, 1.0]
    np.testing.assert_allclose(
        unterthiner_statistics(VECTOR, TWO_LAYERS), [[*weight_0, *bias_0, *weight_2]], atol=1e-12
    )
    names = statistics_feature_names(TWO_LAYERS, "unterthiner")
    assert names[7:9] == ["layers.0.bias.p0", "layers.0.bias.p25"] and len(names) == 21


def test_statistics_shapes_on_the_real_architecture_records():
    rng = np.random.default_rng(0)
    tetris = TETRIS_MLP.to_dict()  # two layers, no biases
    vectors = rng.normal(size=(3, tetris["num_parameters"]))
    assert weight_statistics(vectors, tetris).shape == (3, 14)
    assert unterthiner_statistics(vectors, tetris).shape == (3, 14)
    cnn = MNIST_CNN.to_dict()  # five layers, each with a bias
    vectors = rng.normal(size=(4, cnn["num_parameters"]))
    assert weight_statistics(vectors, cnn).shape == (4, 35)
    assert unterthiner_statistics(vectors, cnn).shape == (4, 70)
    assert len(statistics_feature_names(cnn, "unterthiner")) == 70
    with pytest.raises(ValueError, match="Expected weight vectors"):
        weight_statistics(vectors[:, :-1], cnn)


@pytest.fixture
def vectors_by_split():
    rng = np.random.default_rng(1)
    return {split: rng.normal(size=(rows, 8)) for split, rows in [("train", 60), ("validation", 20), ("test", 20)]}


def test_compute_baseline_features_names_and_shapes(vectors_by_split):
    assert compute_baseline_features("W", vectors_by_split)["test"] is vectors_by_split["test"]
    statistics = compute_baseline_features("s(W)_unterthiner", vectors_by_split, TWO_LAYERS)
    assert {split: values.shape for split, values in statistics.items()} == {
        "train": (60, 21), "validation": (20, 21), "test": (20, 21),
    }  # fmt: skip
    pca = compute_baseline_features("pca_rbf", vectors_by_split, num_components=5)
    assert pca["validation"].shape == (20, 5)
    with pytest.raises(ValueError, match="Unknown baseline"):
        compute_baseline_features("tsne", vectors_by_split)
    with pytest.raises(ValueError, match="architecture"):
        compute_baseline_features("s(W)", vectors_by_split)
    assert set(BASELINE_NAMES) >= {"W", "s(W)", "s(W)_unterthiner", "pca_linear", "pca_cosine", "pca_rbf", "umap"}


@pytest.mark.parametrize("kernel", ["linear", "cosine", "rbf"])
def test_kernel_pca_is_fitted_on_train_rows_only(vectors_by_split, kernel):
    features = kernel_pca_features(vectors_by_split, kernel, num_components=4)
    changed = {**vectors_by_split, "test": vectors_by_split["test"] * 5 + 1}
    changed_features = kernel_pca_features(changed, kernel, num_components=4)
    np.testing.assert_allclose(changed_features["train"], features["train"], atol=1e-10)
    np.testing.assert_allclose(changed_features["validation"], features["validation"], atol=1e-10)
    assert not np.allclose(changed_features["test"], features["test"])


def test_kernel_pca_subsamples_train_rows_with_a_seed_and_marks_non_finite_rows(vectors_by_split):
    vectors_by_split["test"][3, 0] = np.nan
    first = kernel_pca_features(vectors_by_split, "linear", num_components=3, max_fit_rows=20, seed=7)
    second = kernel_pca_features(vectors_by_split, "linear", num_components=3, max_fit_rows=20, seed=7)
    np.testing.assert_allclose(first["train"], second["train"])
    assert np.isnan(first["test"][3]).all() and np.isfinite(np.delete(first["test"], 3, axis=0)).all()
    assert kernel_pca_features(vectors_by_split, "linear", num_components=50, max_fit_rows=20)["train"].shape[1] == 20


def test_umap_is_skipped_with_a_message_when_not_installed(vectors_by_split, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "umap", None)  # makes `import umap` raise ImportError
    with caplog.at_level(logging.WARNING, logger="hyperrep_hf"):
        assert compute_baseline_features("umap", vectors_by_split) is None
    assert "umap-learn is not installed" in caplog.text


def test_statistics_baseline_with_probes_recovers_a_statistic_target():
    # A target that is a linear function of s(W) must be predicted (almost) exactly from s(W) by the ridge probe.
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(300, 8)) * rng.uniform(0.5, 2.0, size=(300, 1))
    target = vectors[:, :4].mean(axis=1) - 2 * vectors[:, 6:].var(axis=1)
    splits = {"train": slice(0, 200), "validation": slice(200, 250), "test": slice(250, 300)}
    features = compute_baseline_features("s(W)", {split: vectors[rows] for split, rows in splits.items()}, TWO_LAYERS)
    targets = {split: {"target": target[rows]} for split, rows in splits.items()}
    results = probe_targets(features, targets, method="s(W)")
    test_r2 = next(result for result in results if result.split == "test" and result.metric == "r2")
    assert test_r2.method == "s(W)" and test_r2.value > 0.999


@pytest.mark.slow
def test_umap_features_are_fitted_on_train_rows_only(vectors_by_split):
    pytest.importorskip("umap")
    features = compute_baseline_features("umap", vectors_by_split, num_components=2, seed=0)
    assert {split: values.shape for split, values in features.items()} == {
        "train": (60, 2), "validation": (20, 2), "test": (20, 2),
    }  # fmt: skip
    changed = {**vectors_by_split, "test": vectors_by_split["test"] + 3}
    changed_features = compute_baseline_features("umap", changed, num_components=2, seed=0)
    np.testing.assert_allclose(changed_features["validation"], features["validation"], atol=1e-5)


@pytest.mark.slow
def test_umap_embeds_at_most_max_transform_rows_per_split(vectors_by_split):
    pytest.importorskip("umap")
    from hyperrep_hf.probing.baselines import umap_features

    features = umap_features(vectors_by_split, num_components=2, max_transform_rows=15, seed=0)
    embedded = {split: np.isfinite(values).all(axis=1) for split, values in features.items()}
    assert {split: int(mask.sum()) for split, mask in embedded.items()} == {"train": 15, "validation": 15, "test": 15}
    assert all(np.isnan(features[split][~mask]).all() for split, mask in embedded.items())
