"""Probe heads: a fitted probe as a transformers model computes exactly the probe's predictions; index.json."""

import json

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel

import hyperrep_hf  # noqa: F401 (registers hyperrep_probe)
from hyperrep_hf.probing.probe_heads import (
    HyperRepProbeConfig,
    HyperRepProbeModel,
    ProbesNotFoundError,
    load_probe_heads,
    read_probe_index,
    save_probe_heads,
)
from hyperrep_hf.probing.probes import RidgeProbe, SoftmaxProbe, fit_probes


def planted(seed=0, num_rows=300, num_features=6):
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(num_rows, num_features)) * rng.uniform(0.2, 4.0, num_features) + rng.normal(
        size=num_features
    )
    targets = features @ rng.normal(size=num_features) + 1.5
    labels = np.where(features[:, 0] > np.median(features[:, 0]), "relu", "tanh")
    return features, targets, labels


def fitted_ridge(features, targets):
    return RidgeProbe().fit(features[:200], targets[:200], features[200:250], targets[200:250])


def fitted_softmax(features, labels):
    return SoftmaxProbe().fit(features[:200], labels[:200], features[200:250], labels[200:250])


def test_ridge_head_round_trips_the_probe_exactly(tmp_path):
    features, targets, _ = planted()
    probe = fitted_ridge(features, targets)
    HyperRepProbeModel.from_probe(probe, "test_accuracy", zoo="tiny").save_pretrained(tmp_path)
    head = HyperRepProbeModel.from_pretrained(tmp_path)
    with torch.no_grad():
        predictions = head(torch.tensor(features, dtype=torch.float32)).predictions.double().numpy()
    assert predictions.shape == (300,)
    np.testing.assert_allclose(predictions, probe.predict(features), rtol=1e-4, atol=1e-4)
    config = head.config
    assert (config.target, config.task, config.metric, config.zoo) == ("test_accuracy", "regression", "r2", "tiny")
    assert config.alpha == probe.alpha and config.validation_score == pytest.approx(probe.validation_score)
    np.testing.assert_allclose(config.standardization_mean, probe.mean)
    np.testing.assert_allclose(config.standardization_std, probe.std)


def test_softmax_head_gives_the_probes_logits_and_label_names(tmp_path):
    features, _, labels = planted(1)
    probe = fitted_softmax(features, labels)
    HyperRepProbeModel.from_probe(probe, "activation").save_pretrained(tmp_path)
    head = HyperRepProbeModel.from_pretrained(tmp_path)
    with torch.no_grad():
        output = head(torch.tensor(features, dtype=torch.float32))
    np.testing.assert_allclose(output.logits.double().numpy(), probe.logits(features), rtol=1e-4, atol=1e-4)
    assert output.predicted_labels == probe.predict(features).tolist()
    assert head.config.labels == ["relu", "tanh"] and head.config.id2label == {0: "relu", 1: "tanh"}
    assert head.config.metric == "accuracy" and head.config.inverse_regularization == probe.inverse_regularization


def test_auto_classes_load_a_probe_head(tmp_path):
    features, targets, _ = planted()
    HyperRepProbeModel.from_probe(fitted_ridge(features, targets), "epoch").save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is HyperRepProbeConfig
    assert type(AutoModel.from_pretrained(tmp_path)) is HyperRepProbeModel


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"task": "ranking"}, "task"),
        ({"task": "classification", "labels": ["a"]}, "two labels"),
        ({"task": "regression", "labels": ["a", "b"]}, "no labels"),
        ({"input_dim": 3, "standardization_mean": [0.0, 1.0]}, "standardization_mean"),
        ({"input_dim": 0}, "input_dim"),
    ],
)
def test_config_names_the_invalid_field(arguments, message):
    with pytest.raises(ValueError, match=message):
        HyperRepProbeConfig(**arguments)


def test_nan_validation_score_is_stored_as_null(tmp_path):
    HyperRepProbeConfig(validation_score=float("nan")).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["validation_score"] is None


def test_index_lists_probes_and_a_second_save_replaces_only_that_zoo(tmp_path):
    features, targets, labels = planted()
    splits = {"train": features[:200], "validation": features[200:250], "test": features[250:]}
    target_values = {
        split: {"epoch": targets[rows], "activation": labels[rows]}
        for split, rows in (("train", slice(0, 200)), ("validation", slice(200, 250)), ("test", slice(250, None)))
    }
    report = fit_probes(splits, target_values, {"activation"}, method="hyperrep")
    save_probe_heads(tmp_path, "zoo_a", report.probes, report.results)
    save_probe_heads(tmp_path, "zoo_b", {"epoch": report.probes["epoch"]}, report.results)
    save_probe_heads(tmp_path, "zoo_a", {"activation": report.probes["activation"]}, report.results)

    index = read_probe_index(tmp_path)
    assert index["default_zoo"] == "zoo_a"
    assert {(entry["zoo"], entry["target"]) for entry in index["probes"]} == {
        ("zoo_b", "epoch"),
        ("zoo_a", "activation"),
    }
    assert not (tmp_path / "probes" / "zoo_a" / "epoch").exists()  # the stale head of the first save is gone
    entry = next(entry for entry in index["probes"] if entry["zoo"] == "zoo_a")
    assert entry["task"] == "classification" and entry["metric"] == "accuracy"
    assert entry["path"] == "probes/zoo_a/activation" and (tmp_path / entry["path"] / "model.safetensors").is_file()
    assert entry["test_score"] is not None and 0.0 <= entry["validation_score"] <= 1.0

    zoo, heads = load_probe_heads(tmp_path)
    assert zoo == "zoo_a" and list(heads) == ["activation"]
    zoo, heads = load_probe_heads(tmp_path, "zoo_b")
    assert list(heads) == ["epoch"] and not heads["epoch"].training
    with pytest.raises(ProbesNotFoundError, match=r"zoo_a, zoo_b|zoo_b, zoo_a"):
        load_probe_heads(tmp_path, "zoo_c")


def test_a_folder_without_probes_says_to_run_evaluate(tmp_path):
    with pytest.raises(ProbesNotFoundError, match="hyperrep evaluate"):
        load_probe_heads(tmp_path)
