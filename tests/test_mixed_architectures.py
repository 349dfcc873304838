"""Zoos of different architectures given where an encoder needs one: a clear error naming each zoo's architecture,
before anything is written (train: no run folder; evaluate: no results, the model folder untouched)."""

import pytest
from tiny_models import make_evaluated_model, make_zoo

from hyperrep_hf.cli import main
from hyperrep_hf.zoo.folder import MixedArchitecturesError, check_one_architecture, load_zoo
from hyperrep_hf.zoo.recipes import BuildOptions

TETRIS = "tetris_seed: tetris_mlp (100 parameters)"
CNN = "mnist_hyp_mini: mnist_cnn_dropout (2464 parameters)"


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """One folder holding a Tetris MLP zoo and an MNIST CNN zoo."""
    folder = tmp_path_factory.mktemp("zoos")
    make_zoo(folder, "tetris_seed", BuildOptions(num_models=8, epochs=1, subset=60))
    make_zoo(folder, "mnist_hyp_mini", BuildOptions(num_models=8, epochs=1, subset=40))
    return folder


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """An evaluated encoder of the Tetris MLP (its own one-zoo folder)."""
    zoo = make_zoo(tmp_path_factory.mktemp("tetris"), "tetris_seed", BuildOptions(num_models=8, epochs=1, subset=60))
    return make_evaluated_model(tmp_path_factory.mktemp("model"), zoo, tmp_path_factory.mktemp("eval"))


def listing(folder):
    return sorted((path.relative_to(folder).as_posix(), path.stat().st_mtime_ns) for path in folder.rglob("*"))


def test_a_folder_of_two_architectures_names_both(mixed):
    with pytest.raises(MixedArchitecturesError) as caught:
        load_zoo(mixed)
    assert CNN in str(caught.value) and TETRIS in str(caught.value) and "DIR:CONFIG" in str(caught.value)
    check_one_architecture([f"{mixed}:tetris_seed", f"{mixed}:tetris_seed"])  # one architecture: fine


def test_train_on_a_folder_of_two_architectures_is_refused_before_writing(mixed, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "tetris_seed", "--zoo", str(mixed), "--output-dir", str(run)]) == 2
    err = capsys.readouterr().err
    assert "of different architectures" in err and TETRIS in err and CNN in err
    assert not run.exists()


@pytest.mark.parametrize("zoos", [["{d}"], ["{d}:tetris_seed", "{d}:mnist_hyp_mini"]])
def test_evaluate_on_zoos_of_two_architectures_is_refused_before_writing(zoos, mixed, model, tmp_path, capsys):
    before = listing(model)
    arguments = [argument for zoo in zoos for argument in ("--zoo", zoo.format(d=mixed))]
    out = tmp_path / "eval"
    assert main(["evaluate", str(model), *arguments, "--out", str(out), "--baselines", "s(W)"]) == 2
    err = capsys.readouterr().err
    assert "of different architectures" in err and TETRIS in err and CNN in err
    assert not out.exists() and listing(model) == before


def test_an_extra_zoo_of_another_architecture_is_refused_before_writing(mixed, tmp_path, capsys):
    run = tmp_path / "run"
    arguments = ["train", "tetris_seed", "--zoo", f"{mixed}:tetris_seed", "--output-dir", str(run)]
    assert main([*arguments, "--extra-zoos", f"{mixed}:mnist_hyp_mini"]) == 2
    err = capsys.readouterr().err
    assert f"extra_zoos: {mixed}:mnist_hyp_mini: processor: its architecture (tetris_mlp) does not match" in err
    assert "layers.1.weight: processor [5, 16] vs zoo None" in err
    assert not run.exists()
