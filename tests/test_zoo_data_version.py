"""Data versions in zoo recipes (recorded in zoo_info.json and the card) and the paper's TETRIS-HYP filter."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from tiny_models import tetris_lr_recipe

from hyperrep_hf.cli import main
from hyperrep_hf.zoo.filter import never_trained
from hyperrep_hf.zoo.folder import ZooIntegrityError, build_zoo, load_zoo
from hyperrep_hf.zoo.image_data import zoo_data_version
from hyperrep_hf.zoo.recipes import BuildOptions, ZooRecipe, load_recipe

SMALL = BuildOptions(epochs=4, subset=80)


def small_hyp_recipe(**changes) -> ZooRecipe:
    """Eight networks, half of them with a learning rate too small to move in 4 epochs."""
    return tetris_lr_recipe("hyp_small", 4, 4, [3e-2, 1e-7], **changes)


def kept_models(zoo_dir) -> list[int]:
    ids = set()
    for path in zoo_dir.glob("*.parquet"):
        ids |= set(pq.read_table(path, columns=["model_id"]).column("model_id").to_pylist())
    return sorted(ids)


def best_validation_accuracy(zoo_dir) -> dict[int, float]:
    """Second route: each model's best validation accuracy over epochs ≥ 1, from the Parquet rows."""
    best: dict[int, float] = {}
    for path in zoo_dir.glob("*.parquet"):
        table = pq.read_table(path, columns=["model_id", "epoch", "validation_accuracy"]).to_pydict()
        for model, epoch, accuracy in zip(*table.values(), strict=True):
            if epoch >= 1:
                best[model] = max(best.get(model, 0.0), accuracy)
    return best


def test_version_1_recipes_keep_their_identity_and_version_2_is_recorded(tmp_path):
    seed_recipe = load_recipe("tetris_seed_v1")
    assert (
        seed_recipe.name == "tetris_seed"
        and seed_recipe.data_version == 1
        and "data_version" not in seed_recipe.to_dict()
    )  # old zoos stay "complete"
    options = BuildOptions(num_models=3, epochs=1, subset=40)
    build_zoo(seed_recipe, tmp_path / "v1", options, progress=False)
    _, info = load_zoo(tmp_path / "v1", "tetris_seed", cache_dir=str(tmp_path / "cache"))
    assert zoo_data_version(info) == 1 and "data version 1" in info["dataset"]["source"]
    assert "data version 1" in (tmp_path / "v1" / "README.md").read_text()

    build_zoo(dataclasses.replace(seed_recipe, data_version=2), tmp_path / "v2", options, progress=False)
    dataset, info = load_zoo(tmp_path / "v2", "tetris_seed", cache_dir=str(tmp_path / "cache"))
    assert info["recipe"]["data_version"] == 2 and zoo_data_version(info) == 2
    assert "data version 2" in info["dataset"]["source"]
    assert "data version 2" in (tmp_path / "v2" / "README.md").read_text()
    # different data, so different trained weights from the same seeds
    v1_rows, _ = load_zoo(tmp_path / "v1", "tetris_seed", cache_dir=str(tmp_path / "cache"))
    last = {split: rows.filter(lambda row: row["epoch"] == 1) for split, rows in dataset.items()}
    other = {split: rows.filter(lambda row: row["epoch"] == 1) for split, rows in v1_rows.items()}
    assert not torch.equal(torch.tensor(last["train"]["weights"]), torch.tensor(other["train"]["weights"]))


def test_zoo_info_without_data_version_reads_as_version_1():
    assert zoo_data_version({"recipe": {"name": "old"}}) == 1
    assert zoo_data_version({"recipe": {"data_version": 2}}) == 2


def test_cli_data_version_override_and_bad_values(tmp_path, capsys):
    arguments = ["zoo", "build", "tetris_seed_v1", "--num-models", "2", "--epochs", "1", "--subset", "40", "--quiet"]
    assert main([*arguments, "--out", str(tmp_path / "ok"), "--data-version", "2"]) == 0
    info = json.loads((tmp_path / "ok" / "tetris_seed" / "zoo_info.json").read_text())
    assert info["recipe"]["data_version"] == 2
    assert main([*arguments, "--out", str(tmp_path / "bad"), "--data-version", "9"]) == 2
    assert "data version 9" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data_version": 3}, "data_version"),
        ({"dataset": "digits", "data_version": 2}, "data_version"),
        ({"filter": {"min_validation_accuracy": 1.5}}, "min_validation_accuracy"),
        ({"filter": {"min_accuracy": 0.3}}, "filter"),
        ({"filter": 0.3}, "filter"),
        ({"data_options": {"train_sise": 10}}, "data_options"),
        ({"data_options": {"train_size": 0}}, "train_size"),
        ({"data_options": {"label_noise": 0.1}}, "data version 2 only"),
    ],
)
def test_bad_recipe_fields_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        small_hyp_recipe(**changes)


def test_never_trained_on_random_accuracies():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        epochs, networks = torch.randint(1, 10, (2,), generator=generator).tolist()
        accuracy = torch.rand(epochs + 1, networks, generator=generator)
        accuracy[torch.rand(accuracy.shape, generator=generator) < 0.1] = float("nan")
        threshold = float(torch.rand((), generator=generator))
        drop = never_trained(accuracy, threshold)
        trained = accuracy[1:] if epochs >= 1 else accuracy
        for network in range(networks):
            values = [v for v in trained[:, network].tolist() if not np.isnan(v)]
            assert bool(drop[network]) == (max(values, default=0.0) <= threshold)
    # the initialisation alone never counts as having left chance
    assert never_trained(torch.tensor([[0.9], [0.2], [0.3]]), 0.35).tolist() == [True]


def test_filter_drops_exactly_the_networks_that_never_left_chance(tmp_path):
    build_zoo(small_hyp_recipe(), tmp_path / "all", SMALL, progress=False)
    best = best_validation_accuracy(tmp_path / "all" / "hyp_small")
    assert len(best) == 8
    threshold = float(np.median(list(best.values())))  # some networks on each side of it
    expected = sorted(model for model, accuracy in best.items() if accuracy > threshold)
    assert 0 < len(expected) < 8

    recipe = small_hyp_recipe(filter={"min_validation_accuracy": threshold})
    build_zoo(recipe, tmp_path / "filtered", SMALL, progress=False)
    zoo_dir = tmp_path / "filtered" / "hyp_small"
    assert kept_models(zoo_dir) == expected
    info = json.loads((zoo_dir / "zoo_info.json").read_text())
    assert info["recipe"]["filter"] == {"min_validation_accuracy": threshold}
    filtered = [entry for entry in info["dropped"] if entry.get("filtered")]
    assert sorted(entry["model_id"] for entry in filtered) == sorted(set(best) - set(expected))
    assert all(entry["reason"].startswith("never left chance") for entry in filtered)
    assert all(abs(entry["best_validation_accuracy"] - best[entry["model_id"]]) < 1e-6 for entry in filtered)
    assert info["counts"]["models"] == len(expected) and info["counts"]["configured"] == 8
    assert sum(info["counts"]["models_per_split"].values()) == len(expected)
    card = (tmp_path / "filtered" / "README.md").read_text()
    assert f"{len(expected)} kept of 8 configured; {8 - len(expected)} dropped" in card
    assert f"{8 - len(expected)} never left chance (validation accuracy never above {threshold})" in card

    # a killed and resumed filtered build gives the same zoo
    class Killed(Exception):
        pass

    def kill(report):
        if report.epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        build_zoo(recipe, tmp_path / "resumed", SMALL, progress=False, on_epoch_end=kill)
    build_zoo(recipe, tmp_path / "resumed", SMALL, progress=False)
    resumed = json.loads((tmp_path / "resumed" / "hyp_small" / "zoo_info.json").read_text())
    assert resumed["dropped"] == info["dropped"] and kept_models(tmp_path / "resumed" / "hyp_small") == expected


def test_shipped_recipes_default_to_version_2_and_keep_version_1():
    hyp = load_recipe("tetris_hyp")
    assert hyp.name == "tetris_hyp" and hyp.data_version == 2 and len(hyp.networks(0)) == 3600
    assert hyp.filter is not None and 0.25 < hyp.filter["min_validation_accuracy"] < 0.5
    seed = load_recipe("tetris_seed")
    assert seed.name == "tetris_seed" and seed.data_version == 2 and len(seed.networks(0)) == 1000
    assert seed.data_arguments() == {"version": 2, "train_size": 500, "noise_std": 0.4, "label_noise": 0.2}
    for name, config in (("tetris_seed_v1", "tetris_seed"), ("tetris_hyp_v1", "tetris_hyp")):  # version 1 stays
        old = load_recipe(name)
        assert old.name == config and old.data_arguments() == {"version": 1} and old.filter is None
        assert "data_version" not in old.to_dict()  # its zoos, built before data versions, stay "complete"
    assert (
        len(load_recipe("tetris_hyp_v1").networks(0)) == 3600
        and len(load_recipe("tetris_seed_v1").networks(0)) == 1000
    )


def test_data_options_are_recorded(tmp_path):
    recipe = small_hyp_recipe(data_version=2, data_options={"train_size": 40, "label_noise": 0.25})
    build_zoo(recipe, tmp_path, BuildOptions(num_models=2, epochs=1), progress=False)
    info = json.loads((tmp_path / "hyp_small" / "zoo_info.json").read_text())
    assert info["recipe"]["data_options"] == {"train_size": 40, "label_noise": 0.25}
    assert info["dataset"]["sizes"]["train"] == 40 and "label_noise 0.25" in info["dataset"]["source"]


def test_cli_data_version_1_on_a_version_2_recipe_names_the_v1_recipe(tmp_path, capsys):
    arguments = ["zoo", "build", "tetris_seed", "--out", str(tmp_path / "z"), "--num-models", "2", "--epochs", "1"]
    assert main([*arguments, "--data-version", "1", "--quiet"]) == 2
    assert "Build the recipe 'tetris_seed_v1' for data version 1" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


def test_a_damaged_version_1_zoo_is_rebuilt_by_its_own_recipe(tmp_path):
    """The advice names `tetris_seed_v1`: `tetris_seed` now builds data version 2, another zoo."""
    build_zoo(load_recipe("tetris_seed_v1"), tmp_path, BuildOptions(num_models=3, epochs=1, subset=40), progress=False)
    target = tmp_path / "tetris_seed" / "train-00000-of-00001.parquet"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(
        ZooIntegrityError, match=r"hyperrep zoo build tetris_seed_v1 --out .* --num-models 3 --epochs 1"
    ):
        load_zoo(tmp_path, "tetris_seed", cache_dir=str(tmp_path / "cache"))
