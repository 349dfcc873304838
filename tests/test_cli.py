import json

import pytest

from hyperrep_hf.cli import main, resolve_train_config


def test_train_presets_are_shipped_and_resolved():
    assert resolve_train_config("tetris_seed").name == "tetris_seed.yaml"
    with pytest.raises(FileNotFoundError, match="shipped preset"):
        resolve_train_config("no_such_preset")


def test_train_rejects_unknown_field(capsys):
    assert main(["train", "tetris_seed", "--no-such-field", "3"]) == 2
    assert "no_such_field" in capsys.readouterr().err


def test_predict_without_probes_says_to_evaluate_first(tmp_path, capsys):
    from hyperrep_hf import HyperRepConfig, HyperRepModel, NeuronTokenProcessor
    from hyperrep_hf.zoo.networks import TETRIS_MLP

    processor = NeuronTokenProcessor(TETRIS_MLP)
    HyperRepModel(
        HyperRepConfig(
            **processor.model_config_kwargs(), d_model=16, intermediate_size=16, num_attention_heads=2, latent_dim=8
        )
    ).save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    network = tmp_path / "net.safetensors"
    from safetensors.torch import save_file

    from hyperrep_hf.zoo.networks import make_module

    save_file(make_module(TETRIS_MLP).state_dict(), network)
    assert main(["predict", str(tmp_path / "model"), str(network)]) == 2
    assert "hyperrep evaluate" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--quick"]) == 0
    output = capsys.readouterr().out
    assert "step 4/4" in output and "[demo] done" in output
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    methods = {record["method"] for record in results["results"]}
    assert {"W", "s(W)", "hyperrep"} <= methods
    assert (tmp_path / "model" / "probes" / "index.json").is_file()
    assert (tmp_path / "zoos" / "README.md").is_file()


def test_zoos_sharing_a_config_name_get_their_own_results_folders():
    from hyperrep_hf.cli import _zoo_label

    assert [_zoo_label(z, ["a/Z:tetris_seed", "Z3:tetris_hyp"]) for z in ("a/Z:tetris_seed", "Z3:tetris_hyp")] == [
        "tetris_seed",
        "tetris_hyp",
    ]
    zoos = ["zoos/seed0:tetris_seed", "zoos/seed3:tetris_seed", "x/seed3:tetris_seed", "org/repo"]
    labels = [_zoo_label(z, zoos) for z in zoos]
    assert labels == ["seed0-tetris_seed", "2-seed3-tetris_seed", "3-seed3-tetris_seed", "repo"]
    assert len(set(labels)) == len(zoos)
