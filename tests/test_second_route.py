"""bench/second_route.py: the public API and a numpy ridge reach hyperrep evaluate's scores by another road."""

import json

import pytest
from tiny_models import TINY_SEED, load_bench, make_evaluated_model, make_zoo


@pytest.fixture(scope="module")
def bench():
    return load_bench("second_route")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    folder = make_zoo(tmp_path_factory.mktemp("zoo"), "tetris_seed", TINY_SEED)
    return folder


def test_the_canonical_embedding_and_the_probes_agree_with_evaluate_and_a_changed_figure_is_caught(
    bench, zoo, tmp_path
):
    model = make_evaluated_model(tmp_path / "model", zoo, tmp_path / "eval", canonical="tanh")
    results = tmp_path / "eval" / "results.json"
    out = tmp_path / "route.json"
    arguments = ["--model", str(model), "--zoo", f"{zoo}:tetris_seed"]
    assert bench.main([*arguments, "--compare", str(results), "--out", str(out)]) == 0
    route = json.loads(out.read_text())
    assert set(route["targets"]) >= {"epoch", "test_accuracy", "generalization_gap", "f1_class_0"}
    for target, score in route["targets"].items():
        assert score["test_r2"] == pytest.approx(score["evaluate_test_r2"], abs=1e-6), target
        low, high = score["test_r2_95"]
        assert low <= high

    document = json.loads(results.read_text())
    record = next(r for r in document["results"] if r["method"] == "hyperrep" and r["split"] == "test")
    record["value"] += 0.05  # a figure that the model does not give
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    assert bench.main([*arguments, "--compare", str(tampered), "--resamples", "10"]) == 1


def test_a_symmetry_averaged_model_is_refused_by_name(bench, zoo, tmp_path):
    model = make_evaluated_model(tmp_path / "model", zoo, tmp_path / "eval")  # K = 4 copies
    with pytest.raises(SystemExit, match="averages z over symmetric copies"):
        bench.main(["--model", str(model), "--zoo", f"{zoo}:tetris_seed"])
