"""bench/target_reliability.py: how much of a measured target is not test-set noise, by two routes."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from hyperrep_hf.zoo.folder import build_zoo
from hyperrep_hf.zoo.recipes import BuildOptions, load_recipe

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "target_reliability_under_test", REPO / "bench" / "target_reliability.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _simulated(rng, true_accuracy: np.ndarray, images_per_class: int, num_classes: int = 4):
    """Rows whose every prediction is right with the row's own probability (else a random wrong class)."""
    labels = np.repeat(np.arange(num_classes), images_per_class)
    right = rng.random((len(true_accuracy), len(labels))) < true_accuracy[:, None]
    wrong = (labels[None, :] + rng.integers(1, num_classes, size=right.shape)) % num_classes
    return np.where(right, labels[None, :], wrong).astype(np.int8), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_target_that_is_all_noise_has_no_reliability_and_a_real_spread_has_nearly_all(bench, seed):
    rng = np.random.default_rng(seed)
    rows = 300
    # Every row equally good: the spread across rows is the test set's sampling noise alone.
    predicted, labels = _simulated(rng, np.full(rows, rng.uniform(0.4, 0.8)), images_per_class=100)
    train_accuracy = np.full(rows, 0.9)
    noise = bench.reliability(predicted, labels, train_accuracy, 4, halvings=10, resamples=60, rng=rng)
    for target in ("test_accuracy", "generalization_gap", "f1_class_0", "f1_class_3"):
        assert abs(noise[target]["split_half"]) < 0.2, (target, noise[target])
        assert abs(noise[target]["bootstrap"]) < 0.2, (target, noise[target])
    # Rows far apart, many images: almost all of the spread is the rows' own.
    predicted, labels = _simulated(rng, rng.uniform(0.3, 0.95, rows), images_per_class=500)
    signal = bench.reliability(predicted, labels, train_accuracy, 4, halvings=10, resamples=60, rng=rng)
    for target in ("test_accuracy", "generalization_gap", "f1_class_1"):
        assert signal[target]["split_half"] > 0.95 and signal[target]["bootstrap"] > 0.95, (target, signal[target])


@pytest.mark.parametrize("seed", [3, 4])
def test_the_two_routes_agree_in_between_and_follow_the_signal_share(bench, seed):
    """Known true spread and known binomial noise: both routes near var(true) / (var(true) + noise)."""
    rng = np.random.default_rng(seed)
    rows, per_class = 400, 60
    true_accuracy = rng.normal(0.6, 0.04, rows).clip(0.3, 0.9)
    predicted, labels = _simulated(rng, true_accuracy, images_per_class=per_class)
    expected = true_accuracy.var() / (true_accuracy.var() + (true_accuracy * (1 - true_accuracy)).mean() / len(labels))
    result = bench.reliability(predicted, labels, np.full(rows, 0.9), 4, halvings=20, resamples=100, rng=rng)
    accuracy = result["test_accuracy"]
    assert accuracy["split_half"] == pytest.approx(expected, abs=0.1)
    assert accuracy["bootstrap"] == pytest.approx(expected, abs=0.1)
    assert accuracy["split_half"] == pytest.approx(accuracy["bootstrap"], abs=0.08)


def test_a_noise_shared_by_every_row_is_no_spread_across_rows(bench):
    """All rows identical: the images' noise moves every row alike, so it is no variance at all."""
    rng = np.random.default_rng(5)
    predicted, labels = _simulated(rng, np.array([0.7]), images_per_class=200)
    rows = np.repeat(predicted, 50, axis=0)
    rows[:25] = (labels + 1) % 4  # and a second group, always wrong
    result = bench.reliability(rows, labels, np.full(50, 0.9), 4, halvings=5, resamples=40, rng=rng)
    assert result["test_accuracy"]["bootstrap"] == pytest.approx(1.0, abs=1e-3)
    assert result["test_accuracy"]["split_half"] == pytest.approx(1.0, abs=1e-3)


def test_a_zoo_is_re_run_on_its_own_images_and_reproduces_its_targets(bench, tmp_path):
    build_zoo(load_recipe("tetris_seed"), tmp_path / "zoo", BuildOptions(num_models=12, epochs=2, subset=120), False)
    out = tmp_path / "reliability.json"
    bench.main(["--zoo", f"{tmp_path / 'zoo'}:tetris_seed", "--out", str(out), "--halvings", "4", "--resamples", "20"])
    measured = json.loads(out.read_text())["zoos"]["tetris_seed"]
    assert measured["rows"] > 0 and measured["test_images"] > 0
    assert max(measured["largest_difference_from_stored_targets"].values()) < 1e-6
    assert set(measured["all_rows"]) == {"test_accuracy", "generalization_gap"} | {f"f1_class_{k}" for k in range(4)}
    for routes in measured["all_rows"].values():
        assert routes["bootstrap"] is None or routes["bootstrap"] <= 1.0


def test_a_zoo_whose_images_cannot_be_rebuilt_is_refused(bench, tmp_path):
    zoo = tmp_path / "zoo"
    build_zoo(load_recipe("tetris_seed"), zoo, BuildOptions(num_models=12, epochs=2, subset=120), False)
    info = json.loads((zoo / "tetris_seed" / "zoo_info.json").read_text())
    info["recipe"]["data_options"]["noise_std"] = 0.05  # not the images the networks were measured on
    (zoo / "tetris_seed" / "zoo_info.json").write_text(json.dumps(info))
    with pytest.raises(SystemExit, match="does not reproduce the stored targets"):
        bench.measure_zoo(f"{zoo}:tetris_seed", "test", halvings=2, resamples=5, seed=0)
