import json

import datasets
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from hyperrep_hf.cli import main
from hyperrep_hf.zoo.folder import ZooExistsError, build_zoo, load_zoo, split_by_model
from hyperrep_hf.zoo.recipes import BuildOptions, ZooRecipe, list_recipes, load_recipe, select_networks

TINY = BuildOptions(num_models=12, epochs=3, subset=120, seed=0)


def _tables(zoo_dir):
    return {path.name: pq.read_table(path) for path in sorted(zoo_dir.glob("*.parquet"))}


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    build_zoo(load_recipe("tetris_seed"), out, TINY, progress=False)
    return out


def test_zoo_loads_with_load_dataset(tiny_zoo, tmp_path):
    dataset = datasets.load_dataset(str(tiny_zoo), "tetris_seed", cache_dir=str(tmp_path))
    assert set(dataset) == {"train", "validation", "test"}
    assert sum(len(split) for split in dataset.values()) == 12 * 4
    weights = dataset["train"].with_format("torch")["weights"][:]
    assert weights.dtype == torch.float32 and weights.shape == (len(dataset["train"]), 100)
    row = dataset["test"][0]
    for column in (
        "model_id",
        "epoch",
        "seed",
        "activation",
        "learning_rate",
        "train_accuracy",
        "test_loss",
        "validation_accuracy",
        "generalization_gap",
        "f1_class_3",
    ):
        assert column in row
    assert row["generalization_gap"] == pytest.approx(row["train_accuracy"] - row["test_accuracy"])


def test_split_is_by_model_and_complete(tiny_zoo):
    dataset, info = load_zoo(tiny_zoo, "tetris_seed")
    models = {split: set(dataset[split]["model_id"]) for split in dataset}
    assert models["train"].isdisjoint(models["test"]) and models["train"].isdisjoint(models["validation"])
    assert sorted(models["train"] | models["validation"] | models["test"]) == list(range(12))
    assert {split: sorted(ids) for split, ids in models.items()} == {k: sorted(v) for k, v in info["splits"].items()}
    for split in dataset:  # every model has all epochs 0..3
        epochs = dataset[split].to_pandas().groupby("model_id")["epoch"].apply(sorted)
        assert all(list(e) == [0, 1, 2, 3] for e in epochs)


def test_zoo_info_and_card(tiny_zoo):
    info = json.loads((tiny_zoo / "tetris_seed" / "zoo_info.json").read_text())
    assert info["format_version"] == 1
    assert [p["name"] for p in info["architecture"]["parameters"]] == ["layers.1.weight", "layers.3.weight"]
    assert info["counts"] == {
        "configured": 12,
        "models": 12,
        "dropped": 0,
        "rows": 48,
        "models_per_split": {"train": 8, "validation": 2, "test": 2},
    }
    card = (tiny_zoo / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["configs"][0]["config_name"] == "tetris_seed"
    assert {f["split"] for f in metadata["configs"][0]["data_files"]} == {"train", "validation", "test"}
    assert "Final test accuracy" in card and "Split policy" in card
    assert "**This build** (options below): 12 networks × 3 epochs." in card  # not only the recipe's 1000 × 75
    assert not (tiny_zoo / "tetris_seed" / ".build").exists()


def test_epoch_zero_is_the_initialisation(tiny_zoo):
    from hyperrep_hf.zoo.networks import TETRIS_MLP, flatten_state_dict, init_parameters

    dataset, _ = load_zoo(tiny_zoo, "tetris_seed")
    row = dataset["train"].filter(lambda r: r["epoch"] == 0)[0]
    initial = init_parameters(TETRIS_MLP, "default", torch.Generator().manual_seed(row["seed"]))
    assert torch.equal(torch.tensor(row["weights"]), flatten_state_dict(TETRIS_MLP, initial))


def test_killed_build_resumes_to_the_same_zoo(tiny_zoo, tmp_path):
    class Killed(Exception):
        pass

    def kill_at_epoch_two(report):
        if report.epoch == 2:
            raise Killed

    recipe = load_recipe("tetris_seed")
    with pytest.raises(Killed):
        build_zoo(recipe, tmp_path, TINY, progress=False, on_epoch_end=kill_at_epoch_two)
    assert not (tmp_path / "tetris_seed" / "zoo_info.json").exists()
    assert not list((tmp_path / "tetris_seed").glob("*.parquet"))  # nothing that looks complete
    with pytest.raises(FileNotFoundError, match="interrupted build"):
        load_zoo(tmp_path, "tetris_seed")
    seen = []
    build_zoo(recipe, tmp_path, TINY, progress=False, on_epoch_end=lambda report: seen.append(report.epoch))
    assert seen == [3]  # epochs 0-2 were not trained again
    resumed, uninterrupted = _tables(tmp_path / "tetris_seed"), _tables(tiny_zoo / "tetris_seed")
    assert resumed.keys() == uninterrupted.keys()
    for name in resumed:
        assert resumed[name].equals(uninterrupted[name]), name


def test_same_seed_same_weights_other_seed_other_split(tiny_zoo, tmp_path):
    build_zoo(load_recipe("tetris_seed"), tmp_path, TINY, progress=False)
    assert all(
        a.equals(b)
        for a, b in zip(
            _tables(tmp_path / "tetris_seed").values(), _tables(tiny_zoo / "tetris_seed").values(), strict=True
        )
    )
    assert split_by_model(12, 0) != split_by_model(12, 1)


def test_complete_zoo_is_not_rebuilt_and_a_different_one_is_refused(tiny_zoo):
    before = {p: p.stat().st_mtime_ns for p in tiny_zoo.rglob("*") if p.is_file()}
    build_zoo(load_recipe("tetris_seed"), tiny_zoo, TINY, progress=False)
    with pytest.raises(ZooExistsError, match="epochs"):
        build_zoo(
            load_recipe("tetris_seed"), tiny_zoo, BuildOptions(num_models=12, epochs=4, subset=120), progress=False
        )
    assert {p: p.stat().st_mtime_ns for p in tiny_zoo.rglob("*") if p.is_file()} == before


def test_diverging_networks_are_dropped_and_recorded(tmp_path):
    recipe = ZooRecipe(
        name="explode",
        dataset="tetris",
        network="tetris_mlp",
        epochs=2,
        seeds=(1, 4),
        fixed={"optimizer": "sgd", "activation": "relu", "init": "normal"},
        grid={"learning_rate": [1e-2, 1e30]},
    )
    build_zoo(recipe, tmp_path, BuildOptions(subset=100), progress=False)
    dataset, info = load_zoo(tmp_path, "explode")
    assert info["counts"]["dropped"] == 4 and info["counts"]["models"] == 4
    assert all(d["reason"].startswith("non-finite") for d in info["dropped"])
    kept = {m for split in dataset.values() for m in split["learning_rate"]}
    assert kept == {1e-2}


def test_two_zoos_in_one_folder_share_one_card(tiny_zoo, tmp_path):
    options = BuildOptions(num_models=4, epochs=1, subset=60)
    build_zoo(load_recipe("tetris_seed"), tmp_path, options, progress=False)
    build_zoo(load_recipe("tetris_hyp_v1"), tmp_path, options, progress=False)  # unfiltered: all 4 networks kept
    assert sorted(datasets.get_dataset_config_names(str(tmp_path))) == ["tetris_hyp", "tetris_seed"]
    _, info = load_zoo(tmp_path, "tetris_hyp", cache_dir=str(tmp_path / "cache"))
    assert info["counts"]["models"] == 4


def test_recipes_are_shipped_and_valid():
    names = list_recipes()
    for name in (
        "tetris_seed",
        "tetris_hyp",
        "mnist_seed",
        "fashion_seed",
        "mnist_hyp_1_fix_seed",
        "mnist_hyp_1_rand_seed",
        "mnist_hyp_5_fix_seed",
        "mnist_hyp_5_rand_seed",
    ):
        assert name in names
    assert len(load_recipe("tetris_seed").networks(0)) == 1000
    assert len(load_recipe("tetris_hyp").networks(0)) == 3600
    hyp5 = load_recipe("mnist_hyp_5_rand_seed").networks(0)
    assert len(hyp5) == 1280 and len({c.seed for c in hyp5}) > 1000
    assert {c.seed for c in load_recipe("mnist_hyp_5_fix_seed").networks(0)} == {1, 2, 3, 4, 5}
    assert load_recipe("mnist_seed").network_spec().num_parameters == 2464
    assert load_recipe("mnist_hyp_1_fix_seed").network_spec().num_parameters == 2464


def test_mini_variant_selection():
    seed_recipe = load_recipe("tetris_seed")
    assert [c.seed for c in select_networks(seed_recipe, BuildOptions(num_models=5))] == [1, 2, 3, 4, 5]
    hyp = select_networks(load_recipe("tetris_hyp"), BuildOptions(num_models=50))
    assert len(hyp) == 50 and len({c.activation for c in hyp}) == 2


def test_bad_input_is_refused_before_anything_is_written(tmp_path, capsys):
    assert main(["zoo", "build", "no_such_zoo", "--out", str(tmp_path / "a")]) == 2
    assert "Unknown recipe 'no_such_zoo'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["zoo", "build", "tetris_seed", "--out", str(tmp_path / "b"), "--num-modles", "3"])
    assert main(["zoo", "build", "tetris_seed", "--out", str(tmp_path / "c"), "--epochs", "-1"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: tetris\nnetwork: tetris_mlp\nepochs: 2\nseeds: [1, 2]\nfixed: {learning_rate: -1}\n")
    assert main(["zoo", "build", str(bad), "--out", str(tmp_path / "d")]) == 2
    assert "learning_rate=-1" in capsys.readouterr().err
    typo = tmp_path / "typo.yaml"
    typo.write_text("dataset: tetris\nnetwork: tetris_mlp\nepochs: 2\nseeds: [1, 2]\nfixed: {learning_rat: 1}\n")
    assert main(["zoo", "build", str(typo), "--out", str(tmp_path / "e")]) == 2
    assert "unknown hyper-parameter 'learning_rat'" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "typo.yaml"]


def test_missing_data_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch, capsys):
    import hyperrep_hf.zoo.folder as zoo_module
    from hyperrep_hf.zoo.image_data import DatasetNotAvailableError

    def missing(*args, **kwargs):
        raise DatasetNotAvailableError("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")

    monkeypatch.setattr(zoo_module, "load_image_dataset", missing)
    assert main(["zoo", "build", "fashion_seed", "--out", str(tmp_path / "z"), "--num-models", "2"]) == 2
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err
    assert not (tmp_path / "z").exists()


def test_cli_build_prints_progress_and_lists(tmp_path, capsys):
    assert main(["zoo", "list"]) == 0
    assert "tetris_seed" in capsys.readouterr().out
    arguments = [
        "zoo",
        "build",
        "tetris_seed",
        "--out",
        str(tmp_path),
        "--num-models",
        "3",
        "--epochs",
        "2",
        "--subset",
        "40",
    ]
    assert main(arguments) == 0
    output = capsys.readouterr().out
    assert "epoch   2/2" in output and "models·epochs/s" in output and str(tmp_path) in output
