"""Linear probes and metrics: exact answers against hand computations, scikit-learn and scipy."""

import json
import logging
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from scipy.stats import kendalltau
from sklearn.linear_model import Ridge

from hyperrep_hf.probing.probes import (
    ALPHA_GRID,
    METRIC_NAMES,
    ProbeResult,
    RidgeProbe,
    SoftmaxProbe,
    accuracy,
    fit_probes,
    kendall_tau,
    metric_path,
    probe_targets,
    r2_score,
    standardization_statistics,
)


def planted_regression(rng, num_rows, num_features, noise=0.0):
    """Features with varied scales and offsets, a linear target plus optional Gaussian noise."""
    scales = rng.uniform(0.1, 5.0, size=num_features)
    offsets = rng.normal(size=num_features) * 3
    features = rng.normal(size=(num_rows, num_features)) * scales + offsets
    coefficients = rng.normal(size=num_features)
    targets = features @ coefficients + 2.0 + noise * rng.normal(size=num_rows)
    return features, targets


def split_rows(features, targets, sizes=(0.6, 0.2, 0.2)):
    cut_train = int(sizes[0] * len(features))
    cut_validation = cut_train + int(sizes[1] * len(features))
    splits = {"train": slice(0, cut_train), "validation": slice(cut_train, cut_validation)}
    splits["test"] = slice(cut_validation, None)
    return {name: features[rows] for name, rows in splits.items()}, {
        name: targets[rows] for name, rows in splits.items()
    }


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------


def test_r2_hand_computed():
    # mean 7/3; SS_tot = 42/9; SS_res = 1 → 1 − 9/42
    assert r2_score(np.array([1.0, 2.0, 4.0]), np.array([1.0, 2.0, 3.0])) == pytest.approx(1 - 9 / 42)
    assert r2_score(np.array([1.0, 2.0]), np.array([1.0, 2.0])) == 1.0
    assert math.isnan(r2_score(np.array([3.0, 3.0]), np.array([1.0, 2.0])))  # undefined for constant targets


def test_kendall_tau_hand_computed():
    # pairs of (1,2,3,4) vs (1,3,2,4): 5 concordant, 1 discordant → (5 − 1) / 6
    assert kendall_tau(np.array([1, 2, 3, 4]), np.array([1, 3, 2, 4])) == pytest.approx(2 / 3)
    # with a tie in the first input: 2 concordant pairs, 1 tied pair → τ-b = 2 / sqrt((3 − 1) · 3)
    assert kendall_tau(np.array([1, 1, 2]), np.array([1, 2, 3])) == pytest.approx(2 / math.sqrt(6))
    assert math.isnan(kendall_tau(np.array([1.0]), np.array([2.0])))


def test_kendall_tau_matches_scipy_on_random_data():
    rng = np.random.default_rng(0)
    first = rng.normal(size=500)
    second = first + rng.normal(size=500)
    second[::7] = np.round(second[::7])  # some ties
    assert kendall_tau(first, second) == pytest.approx(kendalltau(first, second).statistic, abs=1e-12)


def test_accuracy():
    assert accuracy(["tanh", "relu", "relu"], ["tanh", "tanh", "relu"]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="differ in length"):
        accuracy([1, 2], [1])


def test_metric_path_points_at_module_folders():
    for name in METRIC_NAMES:
        folder = metric_path(name)
        assert (folder / f"{name}.py").is_file()
    with pytest.raises(ValueError, match="Unknown metric"):
        metric_path("f1")


# ---------------------------------------------------------------------------------------------------------------
# Ridge
# ---------------------------------------------------------------------------------------------------------------


def test_standardization_handles_constant_features():
    features = np.column_stack([np.full(5, 0.1), np.arange(5.0)])
    mean, std = standardization_statistics(features)
    assert mean[0] == pytest.approx(0.1)
    assert std[0] == 1.0  # rounding-level std of a constant column is treated as 0 → 1
    assert std[1] == pytest.approx(np.arange(5.0).std())


def test_ridge_recovers_noise_free_planted_target():
    rng = np.random.default_rng(1)
    features, targets = planted_regression(rng, num_rows=300, num_features=20)
    features_by_split, targets_by_split = split_rows(features, targets)
    probe = RidgeProbe().fit(
        features_by_split["train"], targets_by_split["train"],
        features_by_split["validation"], targets_by_split["validation"],
    )  # fmt: skip
    assert probe.alpha == min(ALPHA_GRID)  # nothing to regularise against
    assert probe.score(features_by_split["test"], targets_by_split["test"]) == pytest.approx(1.0, abs=1e-8)


def test_ridge_chooses_strong_regularisation_for_noisy_small_data():
    rng = np.random.default_rng(2)
    # 60 train rows, 50 features, a weak signal in heavy noise: the least-squares fit would overfit badly.
    features, targets = planted_regression(rng, num_rows=400, num_features=50, noise=0.0)
    targets = targets / targets.std() + 3.0 * rng.normal(size=400)
    train, validation = slice(0, 60), slice(60, 400)
    probe = RidgeProbe().fit(features[train], targets[train], features[validation], targets[validation])
    assert probe.alpha >= 10
    weak = RidgeProbe(alphas=[min(ALPHA_GRID)]).fit(
        features[train], targets[train], features[validation], targets[validation]
    )
    assert probe.validation_score > weak.validation_score


@pytest.mark.parametrize(("num_rows", "num_features"), [(120, 15), (30, 80)])  # primal and dual solver
def test_ridge_matches_sklearn_with_same_alpha_and_standardisation(num_rows, num_features):
    rng = np.random.default_rng(3)
    features, targets = planted_regression(rng, num_rows, num_features, noise=1.0)
    validation_features, validation_targets = planted_regression(rng, 40, num_features, noise=1.0)
    for alpha in (1e3, 1.0, 1e-2):
        probe = RidgeProbe(alphas=[alpha]).fit(features, targets, validation_features, validation_targets)
        mean, std = features.mean(axis=0), features.std(axis=0)
        reference = Ridge(alpha=alpha).fit((features - mean) / std, targets)
        np.testing.assert_allclose(probe.coef, reference.coef_, atol=1e-6, rtol=0)
        assert probe.intercept == pytest.approx(reference.intercept_, abs=1e-6)
        np.testing.assert_allclose(
            probe.predict(validation_features),
            reference.predict((validation_features - mean) / std),
            atol=1e-6,
            rtol=0,
        )


def test_ridge_alpha_selection_matches_brute_force():
    rng = np.random.default_rng(4)
    features, targets = planted_regression(rng, num_rows=150, num_features=40, noise=4.0)
    train, validation = slice(0, 80), slice(80, 150)
    probe = RidgeProbe().fit(features[train], targets[train], features[validation], targets[validation])
    mean, std = features[train].mean(axis=0), features[train].std(axis=0)
    brute_force = []
    for alpha in ALPHA_GRID:
        reference = Ridge(alpha=alpha).fit((features[train] - mean) / std, targets[train])
        brute_force.append(r2_score(targets[validation], reference.predict((features[validation] - mean) / std)))
    np.testing.assert_allclose(probe.validation_scores, brute_force, atol=1e-9)
    assert probe.alpha == ALPHA_GRID[int(np.argmax(brute_force))]
    assert probe.validation_score == pytest.approx(max(brute_force))


def test_ridge_as_linear_reproduces_predictions_and_handles_constant_features():
    rng = np.random.default_rng(5)
    features, targets = planted_regression(rng, num_rows=80, num_features=6)
    features[:, 2] = 7.0  # constant column: must not produce NaN or inf
    probe = RidgeProbe().fit(features, targets, features, targets)
    weight, bias = probe.as_linear()
    assert weight.shape == (1, 6) and bias.shape == (1,)
    assert np.all(np.isfinite(weight))
    np.testing.assert_allclose(features @ weight.T + bias, probe.predict(features)[:, None], atol=1e-9)
    manual = ((features - probe.mean) / probe.std) @ probe.coef + probe.intercept
    np.testing.assert_allclose(manual, probe.predict(features))


def test_ridge_rejects_bad_input():
    with pytest.raises(RuntimeError, match="not fitted"):
        RidgeProbe().predict(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="positive"):
        RidgeProbe(alphas=[0.0])
    probe = RidgeProbe().fit(np.eye(3), np.arange(3.0), np.eye(3), np.arange(3.0))
    with pytest.raises(ValueError, match="features"):
        probe.predict(np.zeros((2, 4)))


# ---------------------------------------------------------------------------------------------------------------
# Softmax
# ---------------------------------------------------------------------------------------------------------------


def planted_classes(rng, num_rows, num_features, names):
    features = rng.normal(size=(num_rows, num_features)) * rng.uniform(0.5, 3.0, size=num_features) + 1.0
    class_weights = rng.normal(size=(num_features, len(names)))
    labels = np.asarray(names)[np.argmax(features @ class_weights, axis=1)]
    return features, labels


def test_softmax_recovers_planted_classes():
    rng = np.random.default_rng(6)
    names = ["gelu", "relu", "sigmoid", "tanh"]
    features, labels = planted_classes(rng, num_rows=900, num_features=8, names=names)
    probe = SoftmaxProbe().fit(features[:500], labels[:500], features[500:700], labels[500:700])
    assert probe.labels == names
    assert probe.weight.shape == (4, 8) and probe.bias.shape == (4,)
    assert probe.score(features[700:], labels[700:]) > 0.93
    assert probe.inverse_regularization == probe.inverse_regularizations[int(np.argmax(probe.validation_scores))]
    weight, bias = probe.as_linear()
    np.testing.assert_allclose(features @ weight.T + bias, probe.logits(features), atol=1e-9)
    np.testing.assert_allclose(probe.predict_proba(features).sum(axis=1), 1.0)


def test_softmax_binary_probe_is_a_two_row_linear_layer():
    rng = np.random.default_rng(7)
    features, labels = planted_classes(rng, num_rows=400, num_features=5, names=["adam", "sgd"])
    probe = SoftmaxProbe().fit(features[:300], labels[:300], features[300:], labels[300:])
    assert probe.weight.shape == (2, 5)
    assert probe.score(features[300:], labels[300:]) > 0.9


def test_softmax_needs_two_classes():
    with pytest.raises(ValueError, match="two classes"):
        SoftmaxProbe().fit(np.zeros((4, 2)), ["a"] * 4, np.zeros((2, 2)), ["a", "b"])


# ---------------------------------------------------------------------------------------------------------------
# probe_targets
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def zoo_like():
    """Features of three splits with a linear regression target, a class target and extras for edge cases."""
    rng = np.random.default_rng(8)
    features, accuracy_target = planted_regression(rng, num_rows=300, num_features=10, noise=0.1)
    activation = np.where(features[:, 0] > np.median(features[:, 0]), "relu", "tanh")
    constant = np.full(300, 0.5)
    features_by_split, targets = split_rows(features, accuracy_target)
    _, activations = split_rows(features, activation)
    _, constants = split_rows(features, constant)
    targets_by_split = {
        split: {"test_accuracy": targets[split], "activation": activations[split], "dropout": constants[split]}
        for split in features_by_split
    }
    return features_by_split, targets_by_split


def results_by_key(results):
    return {(result.target, result.split, result.metric): result for result in results}


def test_probe_targets_reports_every_target_split_and_metric(zoo_like, caplog):
    features_by_split, targets_by_split = zoo_like
    with caplog.at_level(logging.WARNING, logger="hyperrep_hf"):
        results = probe_targets(features_by_split, targets_by_split, categorical={"activation"}, method="W")
    table = results_by_key(results)
    assert set(table) == {
        (target, split, metric)
        for split in ("train", "validation", "test")
        for target, metric in [("test_accuracy", "r2"), ("test_accuracy", "kendall_tau"), ("activation", "accuracy")]
    }
    assert table[("test_accuracy", "test", "r2")].value > 0.99
    assert table[("test_accuracy", "test", "kendall_tau")].value > 0.9
    assert table[("activation", "test", "accuracy")].value > 0.9
    regression = table[("test_accuracy", "test", "r2")]
    assert regression.task == "regression" and regression.method == "W" and regression.alpha in ALPHA_GRID
    assert regression.selection_split == "validation" and regression.num_rows == 60 and regression.num_dropped == 0
    classification = table[("activation", "validation", "accuracy")]
    assert classification.task == "classification" and classification.inverse_regularization is not None
    assert classification.alpha is None
    # the constant target was skipped, with a message naming it
    assert "dropout" in caplog.text and "constant" in caplog.text
    json.dumps([result.to_dict() for result in results])


def test_missing_and_all_nan_targets_are_skipped_with_a_message(zoo_like, caplog):
    features_by_split, targets_by_split = zoo_like
    targets_by_split["validation"]["epoch"] = np.arange(60.0)  # not in train
    for split in targets_by_split:
        targets_by_split[split]["train_loss"] = np.full(len(features_by_split[split]), np.nan)
    with caplog.at_level(logging.WARNING, logger="hyperrep_hf"):
        report = fit_probes(features_by_split, targets_by_split, categorical={"activation"})
    assert set(report.skipped) == {"epoch", "train_loss", "dropout"}
    assert "missing from the train split" in report.skipped["epoch"]
    assert "'epoch'" in caplog.text and "'train_loss'" in caplog.text
    assert set(report.probes) == {"test_accuracy", "activation"}
    assert isinstance(report.probes["test_accuracy"], RidgeProbe)
    assert isinstance(report.probes["activation"], SoftmaxProbe)


def test_nan_rows_are_dropped_and_counted(zoo_like):
    features_by_split, targets_by_split = zoo_like
    features_by_split["train"][[0, 5], 3] = np.nan
    features_by_split["test"][1, 0] = np.inf
    targets_by_split["train"]["test_accuracy"][[5, 7, 9]] = np.nan  # row 5 overlaps a NaN feature row
    labels = targets_by_split["test"]["activation"].astype(object)
    labels[[2, 3]] = None
    targets_by_split["test"]["activation"] = labels
    table = results_by_key(probe_targets(features_by_split, targets_by_split, categorical={"activation"}))
    assert table[("test_accuracy", "train", "r2")].num_dropped == 4  # rows 0, 5, 7, 9
    assert table[("test_accuracy", "train", "r2")].num_rows == 180 - 4
    assert table[("test_accuracy", "test", "r2")].num_dropped == 1
    assert table[("activation", "train", "accuracy")].num_dropped == 2
    assert table[("activation", "test", "accuracy")].num_dropped == 3
    assert table[("test_accuracy", "test", "r2")].value > 0.99


def test_missing_validation_split_is_an_error_unless_falling_back_to_train(zoo_like):
    features_by_split, targets_by_split = zoo_like
    del features_by_split["validation"], targets_by_split["validation"]
    with pytest.raises(ValueError, match="validation_fallback='train'"):
        probe_targets(features_by_split, targets_by_split, categorical={"activation"})
    results = probe_targets(
        features_by_split, targets_by_split, categorical={"activation"}, validation_fallback="train"
    )
    assert results and all(result.selection_split == "train" for result in results)
    assert {result.split for result in results} == {"train", "test"}


def test_probe_targets_rejects_inconsistent_input(zoo_like):
    features_by_split, targets_by_split = zoo_like
    with pytest.raises(ValueError, match="non-numeric"):
        probe_targets(features_by_split, targets_by_split)  # "activation" not declared categorical
    with pytest.raises(ValueError, match="rows in split"):
        probe_targets(features_by_split, {"train": {"epoch": np.arange(3.0)}})
    with pytest.raises(ValueError, match="'train'"):
        probe_targets({"test": features_by_split["test"]}, targets_by_split, validation_fallback="train")
    with pytest.raises(ValueError, match="validation_fallback"):
        probe_targets(features_by_split, targets_by_split, validation_fallback="test")


def test_probe_result_to_dict_is_strict_json():
    result = ProbeResult("epoch", "regression", "W", "r2", "test", math.nan, num_rows=3, alpha=1.0)
    record = result.to_dict()
    assert record["value"] is None and record["alpha"] == 1.0
    json.dumps(record, allow_nan=False)


# ---------------------------------------------------------------------------------------------------------------
# evaluate modules (slow: `import evaluate` takes ~10 s)
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_modules_load_offline_by_path(tmp_path):
    grid = np.linspace(0, 1, 50).tolist()
    squares = (np.linspace(0, 1, 50) ** 2).tolist()
    script = textwrap.dedent(
        f"""
        import json, sys
        import evaluate
        from hyperrep_hf.probing.probes import metric_path
        r2 = evaluate.load(str(metric_path("r2")))
        tau = evaluate.load(str(metric_path("kendall_tau")))
        print(json.dumps([
            r2.compute(predictions=[1.0, 2.0, 3.0], references=[1.0, 2.0, 4.0]),
            tau.compute(predictions=[1.0, 3.0, 2.0, 4.0], references=[1.0, 2.0, 3.0, 4.0]),
            r2.compute(predictions={grid}, references={squares}),
        ]))
        """
    )
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_DATASETS_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300, check=False
    )
    assert completed.returncode == 0, completed.stderr
    small_r2, small_tau, large_r2 = json.loads(completed.stdout.strip().splitlines()[-1])
    assert small_r2["r2"] == pytest.approx(1 - 9 / 42)
    assert small_tau["kendall_tau"] == pytest.approx(2 / 3)
    assert large_r2["r2"] == pytest.approx(r2_score(np.asarray(squares), np.asarray(grid)))
