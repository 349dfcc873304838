"""bench/whitened_function_targets.py: training with the function target on its top k directions, whitened."""

import json

import numpy as np
import pytest
import torch
from tiny_models import load_bench, make_zoo

import hyperrep_hf.training.trainer as trainer
from hyperrep_hf.zoo.recipes import BuildOptions

pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


@pytest.fixture(scope="module")
def bench():
    return load_bench("whitened_function_targets")


def _standardised(seed: int, rows: int = 300, columns: int = 24) -> torch.Tensor:
    generator = np.random.default_rng(seed)
    values = generator.normal(size=(rows, columns)) @ generator.normal(size=(columns, columns))
    return torch.from_numpy((values - values.mean(axis=0)) / values.std(axis=0)).float()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("power", [0.0, 0.5, 1.0])
def test_the_target_is_its_top_directions_uncorrelated_with_their_scale_raised_to_the_power(bench, seed, power):
    values = _standardised(seed)
    k = 1 + seed * 3
    result = bench.whitened(values, k, power).double().numpy()
    matrix = values.double().numpy()
    _, singular, directions = np.linalg.svd(matrix - matrix.mean(axis=0), full_matrices=False)
    # the same k-dimensional subspace: the columns span what the top k directions project onto
    projection = matrix @ directions[:k].T
    coefficients, *_ = np.linalg.lstsq(projection, result, rcond=None)
    np.testing.assert_allclose(projection @ coefficients, result, atol=1e-5)
    covariance = np.cov(result.T, bias=True).reshape(k, k)
    np.testing.assert_allclose(covariance - np.diag(np.diag(covariance)), 0, atol=1e-5)  # uncorrelated
    np.testing.assert_allclose(np.diag(covariance).mean(), 1.0, rtol=1e-5)  # mean column variance 1
    expected = singular[:k] ** (2 * (1 - power))  # each direction's variance, relative
    np.testing.assert_allclose(np.diag(covariance) / np.diag(covariance)[0], expected / expected[0], rtol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_the_signs_do_not_depend_on_the_order_of_the_rows(bench, seed):
    values = _standardised(seed)
    order = np.random.default_rng(seed).permutation(len(values))
    np.testing.assert_allclose(bench.whitened(values[order], 5, 1.0), bench.whitened(values, 5, 1.0)[order], atol=1e-4)


def test_more_directions_than_the_target_has_are_refused(bench):
    with pytest.raises(ValueError, match="--components 30"):
        bench.whitened(_standardised(0), 30, 1.0)


def test_a_run_trains_a_head_of_k_outputs_and_leaves_the_trainer_as_it_was(bench, tmp_path):
    zoo = make_zoo(tmp_path / "zoo", "tetris_seed", BuildOptions(num_models=12, epochs=3, subset=120))
    original = trainer.function_targets
    run = tmp_path / "run"
    arguments = ["--components", "7", "--power", "1", "--", "tetris_seed", "--zoo", f"{zoo}:tetris_seed"]
    arguments += ["--output-dir", str(run), "--epochs", "1", "--d-model", "16", "--num-attention-heads", "2"]
    arguments += ["--intermediate-size", "32", "--latent-dim", "8", "--projection-dim", "4", "--batch-size", "8"]
    arguments += ["--eval-batch-size", "50", "--num-threads", "1", "--no-progress"]
    assert bench.main(arguments) == 0
    assert trainer.function_targets is original
    saved = json.loads((run / "config.json").read_text())
    assert saved["function_dim"] == 7 and saved["function_weight"] > 0
    losses = [json.loads(line).get("train/function_loss") for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(loss is not None and np.isfinite(loss) for loss in losses)
