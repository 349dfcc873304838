"""The small MLP probe: planted non-linear targets, determinism, early stopping, and its published head."""

import numpy as np
import pytest
import torch

from hyperrep_hf.probing.probe_heads import HyperRepProbeModel, load_probe_heads, read_probe_index, save_probe_heads
from hyperrep_hf.probing.probes import MLPProbe, RidgeProbe, SoftmaxProbe, fit_mlp_probes


def planted(seed, num_rows=600, num_features=6):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_rows, num_features)) * rng.uniform(0.5, 20, num_features) + rng.normal(
        0, 5, num_features
    )
    scaled = (features - features.mean(0)) / features.std(0)
    target = np.abs(scaled[:, 0]) + scaled[:, 1] * scaled[:, 2] + 0.05 * rng.normal(size=num_rows)
    return features, 3.0 * target + 10.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mlp_recovers_a_planted_nonlinear_target_that_ridge_cannot(seed):
    features, target = planted(seed)
    train, validation, test = slice(0, 400), slice(400, 500), slice(500, 600)
    mlp = MLPProbe(seed=seed).fit(features[train], target[train], features[validation], target[validation])
    ridge = RidgeProbe().fit(features[train], target[train], features[validation], target[validation])
    assert mlp.score(features[test], target[test]) > 0.8
    assert mlp.score(features[test], target[test]) > ridge.score(features[test], target[test]) + 0.3
    assert mlp.best_epoch <= mlp.epochs_trained
    assert mlp.validation_score == pytest.approx(mlp.score(features[validation], target[validation]))


def test_fit_is_deterministic_per_seed_and_stops_early():
    features, target = planted(3)
    fit = lambda seed: MLPProbe(seed=seed, patience=5).fit(features[:400], target[:400], features[400:], target[400:])  # noqa: E731
    first, again, other = fit(0), fit(0), fit(1)
    for (w1, b1), (w2, b2) in zip(first.layers, again.layers, strict=True):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(b1, b2)
    assert not np.array_equal(first.layers[0][0], other.layers[0][0])
    assert first.epochs_trained - first.best_epoch == 5 or first.epochs_trained == first.max_epochs


@pytest.mark.parametrize("seed", [0, 1])
def test_folded_layers_compute_the_predictions(seed):
    features, target = planted(seed)
    mlp = MLPProbe(seed=seed, max_epochs=30).fit(features[:400], target[:400], features[400:], target[400:])
    hidden = features
    layers = mlp.as_layers()
    for weight, bias in layers[:-1]:
        hidden = np.maximum(hidden @ weight.T + bias, 0)
    np.testing.assert_allclose(hidden @ layers[-1][0].T + layers[-1][1], mlp.predict(features)[:, None], rtol=1e-9)


def test_classification_mlp_and_both_head_kinds_round_trip_through_save_pretrained(tmp_path):
    features, target = planted(4)
    labels = np.where(target > np.median(target), "high", "low")
    classifier = MLPProbe("classification", seed=0, max_epochs=100).fit(
        features[:400], labels[:400], features[400:], labels[400:]
    )
    assert classifier.score(features[400:], labels[400:]) > 0.8
    regressor = MLPProbe(seed=0, max_epochs=50).fit(features[:400], target[:400], features[400:], target[400:])
    linear = RidgeProbe().fit(features[:400], target[:400], features[400:], target[400:])
    softmax = SoftmaxProbe().fit(features[:400], labels[:400], features[400:], labels[400:])
    save_probe_heads(tmp_path, "zoo_a", {"y": linear, "label": softmax})
    save_probe_heads(
        tmp_path, "zoo_a_final", {"y": linear, "y@mlp": regressor, "label@mlp": classifier}, make_default=False
    )
    assert read_probe_index(tmp_path)["default_zoo"] == "zoo_a"
    _, heads = load_probe_heads(tmp_path, "zoo_a_final")
    assert heads["y@mlp"].config.hidden_sizes == [64, 64] and heads["y"].config.hidden_sizes is None
    embeddings = torch.from_numpy(features).float()
    with torch.no_grad():
        np.testing.assert_allclose(
            heads["y@mlp"](embeddings).predictions.numpy(), regressor.predict(features), rtol=1e-4, atol=1e-3
        )
        np.testing.assert_allclose(
            heads["y"](embeddings).predictions.numpy(), linear.predict(features), rtol=1e-4, atol=1e-3
        )
        predicted = heads["label@mlp"](embeddings).predicted_labels
    assert np.mean(np.asarray(predicted) == classifier.predict(features)) > 0.99  # float32 vs float64 near ties
    assert isinstance(HyperRepProbeModel.from_probe(regressor, "y").hidden[0], torch.nn.Linear)


def test_fit_mlp_probes_scores_every_split_and_skips_constant_targets():
    features, target = planted(5)
    splits = {"train": slice(0, 400), "validation": slice(400, 500), "test": slice(500, 600)}
    report = fit_mlp_probes(
        {split: features[rows] for split, rows in splits.items()},
        {split: {"y": target[rows], "constant": np.ones(100 if split != "train" else 400)} for split, rows in
         splits.items()},
        method="s(W)+MLP",
        max_epochs=40,
    )  # fmt: skip
    assert set(report.skipped) == {"constant"}
    metrics = {(r.split, r.metric) for r in report.results}
    assert metrics == {(s, m) for s in splits for m in ("r2", "kendall_tau")}
    assert all(r.method == "s(W)+MLP" and r.alpha is None for r in report.results)
