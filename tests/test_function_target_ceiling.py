"""bench/function_target_ceiling.py: what the function term's outputs hold, in full and through k directions."""

import json

import numpy as np
import pytest
from tiny_models import TINY_SEED, load_bench, make_zoo

from hyperrep_hf.probing.baselines import probe_inputs, probe_output_features
from hyperrep_hf.probing.evaluation import load_zoo_arrays
from hyperrep_hf.zoo.networks import NetworkSpec


@pytest.fixture(scope="module")
def bench():
    return load_bench("function_target_ceiling")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    folder = make_zoo(tmp_path_factory.mktemp("zoo"), "tetris_seed", TINY_SEED)
    return f"{folder}:tetris_seed"


def test_its_outputs_are_the_probe_outputs_baseline_centred(bench, zoo):
    arrays = load_zoo_arrays(zoo)
    spec = NetworkSpec.from_dict(arrays.info["architecture"])
    ours = bench.outputs(arrays, ["tanh"], probe_inputs(spec.input_shape))  # given inputs: the default ones
    library = {s: probe_output_features(arrays.vectors[s], arrays.info["architecture"], ["tanh"]) for s in ours}
    mean = library["train"].astype(np.float64).mean(axis=0)
    for split, values in ours.items():
        np.testing.assert_allclose(values, library[split] - mean, atol=1e-6)


def test_a_run_reports_every_width_and_the_zoo_images(bench, zoo, tmp_path):
    out = tmp_path / "ceiling.json"
    arguments = ["--zoo", zoo, "--k", "2", "8", "--zoo-images", "--priors", "normal", "bernoulli", "--out", str(out)]
    assert bench.main(arguments) == 0
    report = json.loads(out.read_text())
    targets = {"epoch", "test_accuracy", "generalization_gap", "f1_class_0"}
    assert set(report["random_inputs"]) == {"normal", "bernoulli"}
    priors = report["random_inputs"].values()
    assert all(prior["width"] == 256 * 4 and set(prior["top_k"]) == {"2", "8"} for prior in priors)
    assert report["random_inputs"]["normal"]["full"] != report["random_inputs"]["bernoulli"]["full"]
    every = [report["zoo_images"]["full"], *(prior["full"] for prior in priors)]
    for scores in every + [scores for prior in priors for scores in prior["top_k"].values()]:
        assert targets <= set(scores) and all(np.isfinite(v) for v in scores.values() if v is not None)
