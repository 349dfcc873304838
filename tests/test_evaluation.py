"""hyperrep evaluate / OOD on tiny zoos built in fixtures: files, tables, probe heads, NaN handling, fallbacks."""

import dataclasses
import itertools
import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from tiny_models import make_model_folder

from hyperrep_hf import HyperRepConfig, HyperRepModel, NeuronTokenProcessor
from hyperrep_hf.cli import main
from hyperrep_hf.probing import evaluation as evaluation_module
from hyperrep_hf.probing.evaluation import (
    compute_embeddings,
    evaluate_model,
    load_zoo_arrays,
    parse_zoo_argument,
    select_targets,
    subsample_by_model,
)
from hyperrep_hf.probing.ood import _differences_to_baselines, evaluate_ood, format_difference
from hyperrep_hf.probing.probe_heads import read_probe_index
from hyperrep_hf.probing.probes import ALPHA_GRID
from hyperrep_hf.probing.report import PAPER_RESULTS
from hyperrep_hf.zoo.folder import build_zoo
from hyperrep_hf.zoo.recipes import BuildOptions, load_recipe

TINY = BuildOptions(num_models=12, epochs=3, subset=120)


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    build_zoo(load_recipe("tetris_seed"), out, TINY, progress=False)
    return out


@pytest.fixture(scope="module")
def evaluated(tiny_zoo, tmp_path_factory):
    """One full evaluation (three baselines, PCA map) shared by the tests that read its files."""
    model_dir = make_model_folder(tiny_zoo, tmp_path_factory.mktemp("model"))
    out_dir = tmp_path_factory.mktemp("out")
    report = evaluate_model(
        model_dir, f"{tiny_zoo}:tetris_seed", out_dir, baselines=["W", "s(W)", "pca_linear"], map_method="pca",
        progress=False,
    )  # fmt: skip
    return model_dir, out_dir, report


def test_results_json_has_a_record_per_method_target_split_and_metric(evaluated, tiny_zoo):
    _, out_dir, _ = evaluated
    document = json.loads((out_dir / "results.json").read_text())
    assert (document["config"], document["recipe"], document["zoo"]) == ("tetris_seed", "tetris_seed", str(tiny_zoo))
    assert document["methods"] == ["W", "s(W)", "pca_linear", "hyperrep"]
    expected_targets = ["epoch", "test_accuracy", "generalization_gap"] + [f"f1_class_{k}" for k in range(4)]
    assert document["targets"] == expected_targets  # no hyper-parameter varies in TETRIS-SEED
    keys = {(r["method"], r["target"], r["split"], r["metric"]) for r in document["results"]}
    for method in document["methods"]:
        for target in expected_targets:
            for split in ("train", "validation", "test"):
                assert {(method, target, split, "r2"), (method, target, split, "kendall_tau")} <= keys
    record = document["results"][0]
    assert {"target", "task", "method", "metric", "split", "value"} <= set(record)
    assert record["task"] == "regression"
    assert document["paper"] == PAPER_RESULTS["tetris_seed"]


def test_results_markdown_table_has_every_method_and_the_papers_numbers(evaluated):
    _, out_dir, report = evaluated
    markdown = (out_dir / "results.md").read_text()
    header = next(line for line in markdown.splitlines() if line.startswith("| target | W |"))
    for column in ("s(W)", "PCA linear", "hyperrep", "paper W", "paper s(W)", "paper EcD", "hyperrep − s(W)"):
        assert f"| {column} |" in header + " |"
    epoch_row = next(line for line in markdown.splitlines() if line.startswith("| epoch |"))
    hyperrep_r2 = next(
        r.value
        for r in report.results
        if (r.method, r.target, r.split, r.metric) == ("hyperrep", "epoch", "test", "r2")
    )
    assert f"{100 * hyperrep_r2:.1f}" in epoch_row and "| 97.0 |" in epoch_row
    assert "## Kendall τ (test)" in markdown


def test_plots_and_model_folder_artefacts(evaluated):
    model_dir, out_dir, report = evaluated
    for name in ("embedding_map.png", "hyperrep_predictions.png"):
        assert (out_dir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (model_dir / "eval" / report.document["zoo_key"] / name).is_file()
    index = read_probe_index(model_dir)
    assert {entry["target"] for entry in index["probes"]} == set(report.reports["hyperrep"].probes)
    evaluations = json.loads((model_dir / "eval" / "results.json").read_text())["evaluations"]
    assert [document["config"] for document in evaluations] == ["tetris_seed"]
    card = ModelCard.load(model_dir / "README.md")
    metrics = {(result.metric_name, result.metric_type) for result in card.data.eval_results}
    assert ("test_accuracy (r2)", "r2") in metrics
    assert f"eval/{report.document['zoo_key']}/embedding_map.png" in card.text


def test_the_papers_ridge_grid_is_recorded_and_probes_at_its_edge_are_counted(evaluated):
    _, out_dir, report = evaluated
    document = json.loads((out_dir / "results.json").read_text())
    assert document["ridge_alphas"] == list(ALPHA_GRID)
    markdown = (out_dir / "results.md").read_text()
    assert "α from the paper's grid, 1e3 … 1e-5" in markdown
    # Second route: the count from the probes themselves, not from the records the note is rendered from.
    at_edge = {
        method: sum(getattr(probe, "alpha", None) == max(ALPHA_GRID) for probe in method_report.probes.values())
        for method, method_report in report.reports.items()
    }
    total = sum(at_edge.values())
    regression = sum(1 for r in document["results"] if (r["split"], r["metric"]) == ("test", "r2"))
    if total:
        assert f"{total} of {regression} ridge probes chose the grid's strongest α (1000;" in markdown
    else:
        assert "grid's strongest α" not in markdown


@pytest.mark.parametrize("grid", [[1e5, 1e3, 0.1], [7.0]])
def test_a_ridge_grid_of_ones_own_is_used_for_every_method_and_recorded(tiny_zoo, tmp_path, grid):
    model_dir = make_model_folder(tiny_zoo, tmp_path / "model")
    report = evaluate_model(
        model_dir, tiny_zoo, tmp_path / "out", baselines=["W", "s(W)"], plots=False, save_to_model=False,
        progress=False, ridge_alphas=grid,
    )  # fmt: skip
    assert report.document["ridge_alphas"] == grid
    alphas = [r.alpha for r in report.results if r.task == "regression"]
    assert alphas and set(alphas) <= set(grid)
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "α from the grid " + ", ".join(f"{alpha:g}" for alpha in grid) in markdown
    if grid == [7.0]:  # one value: every probe is at the edge
        probes = sum(len(method_report.probes) for method_report in report.reports.values())
        assert f"{probes} of {probes} ridge probes chose the grid's strongest α (7; W 7, s(W) 7, hyperrep 7)" in (
            markdown
        )


@pytest.mark.parametrize("grid", [[], [1.0, -1.0], [float("nan")], [0.0], [float("inf")]])
def test_a_bad_ridge_grid_is_refused_before_anything_is_written(tiny_zoo, tmp_path, grid, capsys):
    model_dir = make_model_folder(tiny_zoo, tmp_path / "model")
    with pytest.raises(ValueError, match=r"--ridge-alphas \(ridge_alphas\) must be positive finite numbers"):
        evaluate_model(model_dir, tiny_zoo, tmp_path / "out", baselines=[], progress=False, ridge_alphas=grid)
    with pytest.raises(ValueError, match=r"--ridge-alphas"):
        evaluate_ood(model_dir, [tiny_zoo, tiny_zoo], tmp_path / "ood", progress=False, ridge_alphas=grid)
    assert not (tmp_path / "out").exists() and not (tmp_path / "ood").exists()
    if grid:  # through the command line too (an empty list is refused by argparse itself)
        arguments = ["evaluate", str(model_dir), "--zoo", str(tiny_zoo), "--out", str(tmp_path / "out")]
        assert main([*arguments, "--ridge-alphas", *map(str, grid)]) == 2
        assert "--ridge-alphas (ridge_alphas) must be positive finite numbers" in capsys.readouterr().err
        assert not (tmp_path / "out").exists()


def test_embeddings_match_the_model_and_nan_rows_become_nan(tiny_zoo, tmp_path):
    model_dir = make_model_folder(tiny_zoo, tmp_path)
    model = HyperRepModel.from_pretrained(model_dir)
    processor = NeuronTokenProcessor.from_pretrained(model_dir)
    vectors = load_zoo_arrays(tiny_zoo).vectors["test"][:5].copy()
    vectors[2, 7] = np.nan
    embeddings = compute_embeddings(model, processor, vectors, batch_size=2)
    assert np.isnan(embeddings[2]).all() and np.isfinite(np.delete(embeddings, 2, axis=0)).all()
    with torch.no_grad():
        expected = model(**processor(torch.from_numpy(vectors[[0, 1, 3, 4]]))).embeddings.double().numpy()
    np.testing.assert_allclose(np.delete(embeddings, 2, axis=0), expected, rtol=1e-5, atol=1e-6)


def test_nan_features_and_targets_are_dropped_and_counted_in_results_md(tiny_zoo, tmp_path, monkeypatch):
    zoo = load_zoo_arrays(tiny_zoo)
    zoo.vectors["test"][0, 3] = np.nan  # → NaN embedding and NaN s(W) for that row
    zoo.columns["test"]["test_accuracy"][[1, 2]] = np.nan
    monkeypatch.setattr(evaluation_module, "load_zoo_arrays", lambda *args, **kwargs: zoo)
    model_dir = make_model_folder(tiny_zoo, tmp_path / "model")
    report = evaluate_model(
        model_dir, tiny_zoo, tmp_path / "out", baselines=["s(W)"], plots=False, save_to_model=False, progress=False
    )
    record = next(
        r
        for r in report.results
        if (r.method, r.target, r.split, r.metric) == ("hyperrep", "test_accuracy", "test", "r2")
    )
    assert record.num_dropped == 3 and record.num_rows == zoo.vectors["test"].shape[0] - 3
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "hyperrep · test_accuracy · test: 3 rows dropped" in markdown
    assert "s(W) · epoch · test: 1 rows dropped" in markdown


def test_zoo_without_validation_split_errors_or_falls_back_and_says_so(tiny_zoo, tmp_path, monkeypatch):
    zoo = load_zoo_arrays(tiny_zoo)
    for mapping in (zoo.vectors, zoo.columns, zoo.model_ids, zoo.total_rows):
        del mapping["validation"]
    monkeypatch.setattr(evaluation_module, "load_zoo_arrays", lambda *args, **kwargs: zoo)
    model_dir = make_model_folder(tiny_zoo, tmp_path / "model")
    with pytest.raises(ValueError, match=r"no validation split.*validation_fallback='train'"):
        evaluate_model(model_dir, tiny_zoo, tmp_path / "out", baselines=[], progress=False)
    evaluate_model(
        model_dir, tiny_zoo, tmp_path / "out", baselines=[], validation_fallback="train", plots=False, progress=False
    )
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "chosen on **train**" in markdown and "has no validation split" in markdown
    assert read_probe_index(model_dir)["probes"][0]["selection_split"] == "train"


def test_missing_umap_is_skipped_with_a_message(tiny_zoo, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # `import umap` now raises ImportError
    model_dir = make_model_folder(tiny_zoo, tmp_path / "model")
    report = evaluate_model(
        model_dir, tiny_zoo, tmp_path / "out", baselines=["umap"], plots=False, save_to_model=False, progress=False
    )
    assert "umap" not in report.reports and "umap-learn" in report.document["unavailable_methods"]["umap"]
    assert "UMAP skipped: umap-learn is not installed" in (tmp_path / "out" / "results.md").read_text()


def test_unknown_baseline_and_mismatched_architecture_are_refused(tiny_zoo, tmp_path):
    model_dir = make_model_folder(tiny_zoo, tmp_path / "model")
    with pytest.raises(ValueError, match="Unknown baselines"):
        evaluate_model(model_dir, tiny_zoo, tmp_path / "out", baselines=["pca_poly"], progress=False)
    other = NeuronTokenProcessor.from_network(
        {"layers.1.weight": torch.zeros(6, 16), "layers.3.weight": torch.zeros(4, 6)}
    )
    HyperRepModel(HyperRepConfig(**other.model_config_kwargs())).save_pretrained(tmp_path / "other")
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ValueError, match=r"parameter 'layers.1.weight' has shape \[5, 16\]"):
        evaluate_model(tmp_path / "other", tiny_zoo, tmp_path / "out", baselines=[], progress=False)


def test_subsample_by_model_keeps_whole_models_within_the_budget():
    model_ids = np.repeat(np.arange(10), 4)
    kept = subsample_by_model(model_ids, 13, seed=3)
    assert kept.size == 12 and np.all(np.bincount(model_ids[kept]) % 4 == 0)
    np.testing.assert_array_equal(kept, subsample_by_model(model_ids, 13, seed=3))
    assert not np.array_equal(kept, subsample_by_model(model_ids, 13, seed=4))
    assert subsample_by_model(model_ids, 2, seed=0).size == 4  # at least one model
    assert subsample_by_model(model_ids, None).size == 40


def test_max_rows_subsamples_each_split(tiny_zoo):
    zoo = load_zoo_arrays(tiny_zoo, max_rows=8, seed=0)
    assert all(vectors.shape[0] <= 8 for vectors in zoo.vectors.values())
    assert zoo.total_rows["train"] > zoo.vectors["train"].shape[0]


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("/data/zoos:tetris_seed", ("/data/zoos", "tetris_seed")),
        ("/data/zoos", ("/data/zoos", None)),
        ("org/zoos:mnist_seed", ("org/zoos", "mnist_seed")),
        ("C:/zoos", ("C:/zoos", None)),
    ],
)
def test_parse_zoo_argument(argument, expected):
    assert parse_zoo_argument(argument) == expected


def test_hyperparameter_zoo_probes_varying_hyperparameters(tmp_path):
    options = BuildOptions(num_models=30, epochs=2, subset=120)  # v1: unfiltered (2 epochs leave few networks kept)
    build_zoo(load_recipe("tetris_hyp_v1"), tmp_path / "zoo", options, progress=False)
    zoo = load_zoo_arrays(tmp_path / "zoo")
    targets, categorical = select_targets(zoo)
    assert {"learning_rate", "activation", "init"} <= set(targets) and categorical == {"activation", "init"}
    assert "optimizer" not in targets and "weight_decay" not in targets  # constant in TETRIS-HYP
    model_dir = make_model_folder(tmp_path / "zoo", tmp_path / "model")
    report = evaluate_model(
        model_dir, tmp_path / "zoo", tmp_path / "out", baselines=["s(W)"], plots=False, progress=False
    )
    accuracy = [r for r in report.results if r.target == "activation" and r.split == "test"]
    assert {r.metric for r in accuracy} == {"accuracy"} and {r.task for r in accuracy} == {"classification"}
    assert "| activation (acc.) |" in (tmp_path / "out" / "results.md").read_text()
    entry = next(e for e in read_probe_index(model_dir)["probes"] if e["target"] == "activation")
    assert entry["task"] == "classification"


def test_ood_matrix_over_two_zoos(tiny_zoo, tmp_path):
    build_zoo(load_recipe("tetris_seed"), tmp_path / "other", dataclasses.replace(TINY, seed=1), progress=False)
    model_dir = make_model_folder(tiny_zoo, tmp_path / "model")
    document = evaluate_ood(
        model_dir, [tiny_zoo, f"{tmp_path / 'other'}:tetris_seed"], tmp_path / "out", methods=["s(W)", "hyperrep"],
        progress=False,
    )  # fmt: skip
    assert len(set(document["names"])) == 2 and document["methods"] == ["s(W)", "hyperrep"]
    for method in document["methods"]:
        matrix = document["matrices"][method]["kendall_tau"]
        assert len(matrix) == 2 and all(len(row) == 2 for row in matrix)
        assert all(value is None or -1.0 <= value <= 1.0 for row in matrix for value in row)
    # second route: each cell's τ difference is the difference of the two matrices' cells
    differences = document["differences"]["s(W)"]
    ours, theirs = document["matrices"]["hyperrep"]["kendall_tau"], document["matrices"]["s(W)"]["kendall_tau"]
    for i, j in itertools.product(range(2), range(2)):
        cell = differences[i][j]
        if ours[i][j] is None or theirs[i][j] is None:
            continue
        assert cell["difference"] == pytest.approx(ours[i][j] - theirs[i][j])
        assert cell["low"] <= cell["high"] and cell["num_resamples"] == 1000
        assert cell["significant"] == (cell["low"] > 0 or cell["high"] < 0)
    assert json.loads((tmp_path / "out" / "ood.json").read_text())["target"] == "test_accuracy"
    markdown = (tmp_path / "out" / "ood.md").read_text()
    assert "## hyperrep" in markdown and markdown.count("| fitted on ↓ / predicts → |") == 3
    assert "## hyperrep − s(W)" in markdown
    with pytest.raises(ValueError, match="at least two zoos"):
        evaluate_ood(model_dir, [tiny_zoo], tmp_path / "out", progress=False)


@pytest.mark.parametrize("seed", range(3))
def test_ood_differences_find_a_better_ranking_and_not_an_equal_one(seed):
    rng = np.random.default_rng(seed)
    num_models, rows_per_model = int(rng.integers(30, 80)), int(rng.integers(1, 5))
    truth = rng.normal(size=num_models * rows_per_model)
    zoo = SimpleNamespace(
        columns={"test": {"test_accuracy": truth}},
        model_ids={"test": np.repeat(np.arange(num_models), rows_per_model)},
    )
    good, poor = truth + 0.2 * rng.normal(size=truth.size), truth + 3.0 * rng.normal(size=truth.size)
    good[rng.integers(truth.size)] = np.nan  # a row one method cannot predict is left out of both
    cells = _differences_to_baselines(
        [zoo], 0, {"hyperrep": [good], "s(W)": [poor], "W": [good.copy()]}, "test_accuracy", seed
    )
    better, same = cells["s(W)"][0], cells["W"][0]
    assert better["significant"] and better["low"] > 0 and better["num_groups"] == num_models
    assert same["difference"] == 0 and not same["significant"]
    assert format_difference(better).startswith("**+") and format_difference(None) == "–"
