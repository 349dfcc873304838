"""The bad-input and fault catalogue (issue 10): each row a test of the message, the exit code, and that nothing
was written, replaced or lost. Zoo-file integrity (locks, checksums, damaged shards) is in test_zoo_integrity.py.
"""

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import make_model_folder

from hyperrep_hf import HyperRepModel, NetworkPropertyPredictionPipeline, NeuronTokenProcessor
from hyperrep_hf import checks as checks_module
from hyperrep_hf.cli import main
from hyperrep_hf.models.hyperrep.pipelines import predict_networks
from hyperrep_hf.models.hyperrep.weight_statistics import clip_to_range, compute_statistics, distribution_warnings
from hyperrep_hf.probing.evaluation import evaluate_model, load_zoo_arrays
from hyperrep_hf.probing.probe_heads import (
    ProbeIndexError,
    ProbesExistError,
    ProbesNotFoundError,
    load_probe_heads,
    load_probe_statistics,
    read_probe_index,
    zoo_key,
)
from hyperrep_hf.zoo.folder import build_zoo
from hyperrep_hf.zoo.networks import TETRIS_MLP, unflatten_vector
from hyperrep_hf.zoo.recipes import BuildOptions, load_recipe

TINY = BuildOptions(num_models=16, epochs=2, subset=120)
QUIET = {"baselines": [], "plots": False, "progress": False}


# ----------------------------------------------------------------------------------------------------------------
# Fixtures: two zoos of one config name (different seeds, different folders), a model evaluated on the first
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zoos(tmp_path_factory):
    first, second = tmp_path_factory.mktemp("zoo_a"), tmp_path_factory.mktemp("zoo_b")
    build_zoo(load_recipe("tetris_seed_v1"), first, TINY, progress=False)
    build_zoo(load_recipe("tetris_seed_v1"), second, BuildOptions(num_models=16, epochs=2, subset=120, seed=1), False)
    return first, second


@pytest.fixture(scope="module")
def evaluated(zoos, tmp_path_factory):
    """A model folder with probes for the first zoo (kept pristine: tests that change a model copy it)."""
    model_dir = make_model_folder(zoos[0], tmp_path_factory.mktemp("model"))
    evaluate_model(model_dir, f"{zoos[0]}:tetris_seed", tmp_path_factory.mktemp("out"), **QUIET)
    return model_dir


@pytest.fixture
def model_copy(evaluated, tmp_path):
    return Path(shutil.copytree(evaluated, tmp_path / "model"))


@pytest.fixture(scope="module")
def networks(zoos, tmp_path_factory):
    """Files of zoo networks: plain, ×1000, ×1e20, truncated, a pickle renamed .safetensors, empty."""
    folder = tmp_path_factory.mktemp("networks")
    zoo = load_zoo_arrays(zoos[0])
    spec = TETRIS_MLP
    vector = torch.from_numpy(zoo.vectors["test"][-1].copy())
    state_dict = {name: tensor.clone() for name, tensor in unflatten_vector(spec, vector).items()}
    files = {"plain": folder / "plain.safetensors"}
    save_file(state_dict, files["plain"])
    for name, scale in (("x1000", 1e3), ("x1e20", 1e20)):
        files[name] = folder / f"{name}.safetensors"
        save_file({key: tensor * scale for key, tensor in state_dict.items()}, files[name])
    data = files["plain"].read_bytes()
    files["truncated"] = folder / "truncated.safetensors"
    files["truncated"].write_bytes(data[: len(data) - 7])
    files["pickle"] = folder / "pickle.safetensors"
    files["pickle"].write_bytes(pickle.dumps({key: tensor.numpy() for key, tensor in state_dict.items()}))
    files["empty"] = folder / "empty.safetensors"
    files["empty"].write_bytes(b"")
    return files


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path → SHA-256 of every file below ``folder`` (what 'nothing written or replaced' compares)."""
    return {
        path.relative_to(folder).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file()
    }


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity (which Python's json accepts and JSON does not)."""

    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(argument) for argument in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# ----------------------------------------------------------------------------------------------------------------
# 1. evaluate on a second zoo: probes, eval/ and card go beside; replacing needs --overwrite
# ----------------------------------------------------------------------------------------------------------------


def test_second_zoo_of_the_same_config_goes_beside_the_first(zoos, model_copy, tmp_path):
    before = snapshot(model_copy / "probes")
    first_key = read_probe_index(model_copy)["default_zoo"]
    evaluate_model(model_copy, f"{zoos[1]}:tetris_seed", tmp_path / "out_b", **QUIET)
    index = read_probe_index(model_copy)
    keys = list(dict.fromkeys(entry["zoo"] for entry in index["probes"]))
    second_key = index["default_zoo"]
    assert len(keys) == 2 and first_key in keys and second_key != first_key  # default = the last evaluated
    assert first_key.startswith("tetris_seed-") and second_key.startswith("tetris_seed-")
    assert {entry["zoo_source"] for entry in index["probes"]} == {str(zoos[0]), str(zoos[1])}
    # The first zoo's heads and statistics are untouched, byte for byte.
    after = snapshot(model_copy / "probes")
    assert {path: digest for path, digest in after.items() if path.startswith(first_key)} == {
        path: digest for path, digest in before.items() if path.startswith(first_key)
    }
    evaluations = json.loads((model_copy / "eval" / "results.json").read_text())["evaluations"]
    assert [document["zoo_key"] for document in evaluations] == [first_key, second_key]
    card = (model_copy / "README.md").read_text()
    assert f"probes `{first_key}`" in card and f"probes `{second_key}`" in card
    # Either zoo's probes load by key; the shared config name is ambiguous and says so, naming both.
    assert load_probe_heads(model_copy)[0] == second_key
    assert load_probe_heads(model_copy, first_key)[0] == first_key
    with pytest.raises(ProbesNotFoundError, match=rf"2 zoos of config 'tetris_seed'.*{first_key}.*{second_key}"):
        load_probe_heads(model_copy, "tetris_seed")


def test_re_evaluating_a_zoo_needs_overwrite_and_writes_nothing(zoos, model_copy, tmp_path, capsys):
    before = snapshot(model_copy)
    with pytest.raises(ProbesExistError, match=r"already has probes for zoo tetris_seed-.*--overwrite"):
        evaluate_model(model_copy, f"{zoos[0]}:tetris_seed", tmp_path / "out", **QUIET)
    code, out, err = run(capsys, "evaluate", model_copy, "--zoo", f"{zoos[0]}:tetris_seed", "--out", tmp_path / "o2")
    assert code == 2 and "--overwrite" in err and not out
    assert snapshot(model_copy) == before and not (tmp_path / "out").exists() and not (tmp_path / "o2").exists()
    evaluate_model(model_copy, f"{zoos[0]}:tetris_seed", tmp_path / "out", overwrite=True, **QUIET)
    assert len({entry["zoo"] for entry in read_probe_index(model_copy)["probes"]}) == 1


def test_zoo_key_follows_content_not_folder(zoos, model_copy, tmp_path):
    """The same zoo copied elsewhere keeps its key (so it is refused as a duplicate); another seed does not."""
    copy = Path(shutil.copytree(zoos[0], tmp_path / "elsewhere"))
    first, second = load_zoo_arrays(zoos[0]), load_zoo_arrays(zoos[1])
    assert zoo_key("tetris_seed", first.info) == zoo_key("tetris_seed", load_zoo_arrays(copy).info)
    assert zoo_key("tetris_seed", first.info) != zoo_key("tetris_seed", second.info)
    with pytest.raises(ProbesExistError):
        evaluate_model(model_copy, f"{copy}:tetris_seed", tmp_path / "out", **QUIET)


def test_multi_zoo_evaluate_checks_every_zoo_before_the_first(zoos, model_copy, tmp_path, capsys):
    before = snapshot(model_copy)
    code, _, err = run(
        capsys, "evaluate", model_copy, "--zoo", f"{zoos[1]}:tetris_seed", "--zoo", f"{zoos[0]}:tetris_seed",
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert code == 2 and "already has probes" in err
    assert snapshot(model_copy) == before and not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------------
# 2. predict on out-of-range weights: strict JSON, a warning, clipped values
# ----------------------------------------------------------------------------------------------------------------


def test_predict_on_huge_weights_gives_strict_json_with_nulls_and_a_warning(evaluated, networks, capsys):
    code, out, err = run(capsys, "predict", evaluated, networks["x1e20"], networks["plain"])
    assert code == 0, err
    huge, plain = strict_json(out)  # no NaN / Infinity anywhere
    assert "far outside the weight distribution" in huge["warning"] and "layers.1.weight" in huge["warning"]
    for prediction in huge["predictions"].values():
        assert prediction["value"] is None or np.isfinite(prediction["value"])
        assert "far outside" in prediction["warning"]
    assert plain["warning"] is None
    assert all("warning" not in prediction for prediction in plain["predictions"].values())


def test_predict_on_weights_times_1000_warns_and_stays_in_range(evaluated, networks):
    (result,) = predict_networks(evaluated, [networks["x1000"]])
    assert "far outside the weight distribution" in result["warning"]
    statistics = load_probe_statistics(evaluated, read_probe_index(evaluated)["default_zoo"])
    for target, prediction in result["predictions"].items():
        if target in statistics["targets"]:
            low, high = statistics["targets"][target]
            assert low <= prediction["value"] <= high


def test_out_of_range_predictions_are_clipped_and_marked(evaluated, networks):
    zoo, probes = load_probe_heads(evaluated)
    statistics = load_probe_statistics(evaluated, zoo)
    statistics["targets"] = {target: [0.5, 0.5 + 1e-9] for target in statistics["targets"]}  # a range no one hits
    pipeline = NetworkPropertyPredictionPipeline(
        model=HyperRepModel.from_pretrained(evaluated),
        feature_extractor=NeuronTokenProcessor.from_pretrained(evaluated),
        probes=probes,
        statistics=statistics,
    )
    output = pipeline(str(networks["plain"]))
    for target in statistics["targets"]:
        assert output[target]["clipped"] is True and output[target]["value"] in (0.5, 0.5 + 1e-9)
        assert output[target]["unclipped_value"] != output[target]["value"]


def test_clip_to_range_on_random_values():
    rng = np.random.default_rng(0)
    statistics = {"targets": {"t": [-1.0, 2.0]}}
    for value in rng.normal(scale=5.0, size=200):
        fields = clip_to_range(float(value), "t", statistics)
        assert -1.0 <= fields["value"] <= 2.0
        assert fields.get("clipped", False) == (not -1.0 <= value <= 2.0)
    for value in (float("nan"), float("inf"), -float("inf")):
        assert clip_to_range(value, "t", statistics)["value"] is None
    assert clip_to_range(7.0, "other", statistics) == {"value": 7.0}  # no range known: left alone


def test_zoo_networks_are_never_flagged_and_rescaled_ones_are(zoos):
    zoo = load_zoo_arrays(zoos[0])
    parameters = zoo.info["architecture"]["parameters"]
    vectors = np.concatenate(list(zoo.vectors.values()))
    statistics = compute_statistics(vectors, parameters)
    assert distribution_warnings(vectors, parameters, statistics) == [None] * len(vectors)
    rng = np.random.default_rng(1)
    rows = vectors[rng.integers(0, len(vectors), 50)]
    decades = rng.choice([-1, 1], 50) * rng.uniform(2.0, 20.0, 50)  # ×/÷ 100 … 1e20
    warnings = distribution_warnings(rows * (10.0**decades)[:, None], parameters, statistics)
    assert all(warning and "far outside" in warning for warning in warnings)
    zero = distribution_warnings(np.zeros((1, vectors.shape[1])), parameters, statistics)[0]
    assert f"{parameters[0]['name']} norm 0 (zoo: " in zero and "e-30" not in zero  # not the log floor
    # Another zoo (other seed) of the same recipe is in distribution for the most part.
    other = np.concatenate(list(load_zoo_arrays(zoos[1]).vectors.values()))
    assert np.mean([w is None for w in distribution_warnings(other, parameters, statistics)]) > 0.9


# ----------------------------------------------------------------------------------------------------------------
# 3. clear errors instead of tracebacks; nothing written
# ----------------------------------------------------------------------------------------------------------------


def test_device_cuda_without_cuda_fails_before_writing(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = run(capsys, "zoo", "build", "tetris_seed", "--out", tmp_path / "zoo", "--device", "cuda")
    assert code == 2 and "--device cuda" in err and "sees no CUDA GPU" in err and "--device cpu" in err
    assert not (tmp_path / "zoo").exists()
    with pytest.raises(ValueError, match="not a device PyTorch knows"):
        checks_module.check_device("banana")


def test_malformed_recipe_yaml_names_the_file(tmp_path, capsys):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("name: broken\nepochs: [1,\n")
    code, _, err = run(capsys, "zoo", "build", recipe, "--out", tmp_path / "zoo")
    assert code == 2 and f"Recipe file {recipe} is not valid YAML" in err and "Traceback" not in err
    assert not (tmp_path / "zoo").exists()


@pytest.mark.parametrize("command", ["zoo", "evaluate", "demo", "train"])
def test_out_pointing_at_a_file_is_refused_and_the_file_kept(command, evaluated, zoos, tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("keep me\n")
    argv = {
        "zoo": ["zoo", "build", "tetris_seed", "--out", target, "--num-models", 4, "--epochs", 1, "--subset", 40],
        "evaluate": ["evaluate", evaluated, "--zoo", zoos[0], "--out", target],
        "demo": ["demo", "--out", target, "--quick"],
        "train": ["train", "tetris_seed", "--zoo", f"{zoos[0]}:tetris_seed", "--output-dir", target, "--epochs", 1],
    }[command]
    code, _, err = run(capsys, *argv)
    assert code == 2 and str(target) in err and "is a file, not a folder" in err
    assert target.read_text() == "keep me\n"


@pytest.mark.parametrize(
    ("kind", "message"),
    [("truncated", "truncated or damaged"), ("pickle", "never unpickled"), ("empty", "header too small")],
)
def test_unreadable_network_file_is_named(kind, message, evaluated, networks, capsys):
    code, out, err = run(capsys, "predict", evaluated, networks["plain"], networks[kind])
    assert code == 2 and not out
    assert f"{networks[kind]} is not a readable .safetensors file" in err and message in err


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.uint8])
def test_non_float_network_is_refused_naming_the_tensor(dtype, evaluated, networks, tmp_path, capsys):
    tensors = {name: tensor.to(dtype) for name, tensor in load_file(networks["plain"]).items()}
    save_file(tensors, tmp_path / "int.safetensors")
    code, out, err = run(capsys, "predict", evaluated, tmp_path / "int.safetensors")
    assert code == 2 and not out and "not floating point: layers.1.weight" in err


def test_missing_network_and_a_folder_as_network(evaluated, tmp_path, capsys):
    code, _, err = run(capsys, "predict", evaluated, tmp_path / "nope.safetensors")
    assert code == 2 and "No such network file" in err and "nope.safetensors" in err
    code, _, err = run(capsys, "predict", evaluated, tmp_path)
    assert code == 2 and "is a folder" in err


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"probes": [', "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"probes": [{"zoo": "x"}]}', "lacks target, path"),
        ('{"probes": [{"zoo": "x", "target": "t", "path": "../../etc"}]}', "outside probes/"),
    ],
)
def test_corrupt_probe_index_is_named_and_left_alone(text, problem, model_copy, networks, zoos, tmp_path, capsys):
    index = model_copy / "probes" / "index.json"
    index.write_text(text)
    before = snapshot(model_copy)
    code, out, err = run(capsys, "predict", model_copy, networks["plain"])
    assert code == 2 and not out and f"{index} is damaged (" in err and problem in err and "--overwrite" in err
    with pytest.raises(ProbeIndexError, match=problem):  # evaluate refuses before fitting anything
        evaluate_model(model_copy, f"{zoos[1]}:tetris_seed", tmp_path / "out", **QUIET)
    assert snapshot(model_copy) == before and not (tmp_path / "out").exists()


def test_damaged_probe_head_and_statistics_are_named(evaluated, model_copy, networks, capsys):
    key = read_probe_index(model_copy)["default_zoo"]
    head = model_copy / "probes" / key / "epoch" / "model.safetensors"
    head.write_bytes(head.read_bytes()[:20])
    code, out, err = run(capsys, "predict", model_copy, networks["plain"])
    assert code == 2 and not out and f"Probe head {head.parent}" in err and "target epoch" in err
    shutil.copyfile(evaluated / "probes" / key / "epoch" / "model.safetensors", head)
    statistics = model_copy / "probes" / key / "statistics.json"
    statistics.write_text("{")
    code, out, err = run(capsys, "predict", model_copy, networks["plain"])
    assert code == 2 and not out and f"{statistics} is damaged" in err
    assert statistics.read_text() == "{"


def test_damaged_encoder_is_named(model_copy, networks, capsys):
    (model_copy / "model.safetensors").write_bytes(b"not safetensors at all")
    code, out, err = run(capsys, "predict", model_copy, networks["plain"])
    assert code == 2 and not out and f"Cannot load the encoder from {model_copy}" in err
    (model_copy / "config.json").write_text("{")
    code, _, err = run(capsys, "predict", model_copy, networks["plain"])
    assert code == 2 and "Cannot load the encoder" in err


def test_unknown_and_malformed_training_presets(tmp_path, capsys):
    code, _, err = run(capsys, "train", "no_such_preset", "--zoo", "z", "--output-dir", tmp_path / "run")
    assert code == 2 and "no_such_preset" in err and "tetris_seed" in err  # lists the shipped presets
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1,\n")
    code, _, err = run(capsys, "train", broken, "--zoo", "z", "--output-dir", tmp_path / "run")
    assert code == 2 and f"Training config {broken} is not valid YAML" in err
    broken.write_text("- a\n- b\n")
    code, _, err = run(capsys, "train", broken)
    assert code == 2 and "YAML mapping" in err
    assert not (tmp_path / "run").exists()


def test_evaluate_on_a_missing_or_non_model_folder(zoos, networks, tmp_path, capsys):
    code, _, err = run(capsys, "evaluate", tmp_path / "no_model", "--zoo", zoos[0], "--out", tmp_path / "out")
    assert code == 2 and f"No model folder {tmp_path / 'no_model'}" in err
    code, _, err = run(capsys, "evaluate", zoos[0], "--zoo", zoos[0], "--out", tmp_path / "out")
    assert code == 2 and "is not a trained model folder" in err and "config.json" in err
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "evaluate", tmp_path / "file", "--zoo", zoos[0], "--out", tmp_path / "out")
    assert code == 2 and "is a file" in err
    code, _, err = run(capsys, "predict", tmp_path / "file", networks["plain"])
    assert code == 2 and "is a file" in err
    assert not (tmp_path / "out").exists()


def test_read_only_output_folder_is_refused_before_writing(evaluated, zoos, tmp_path, capsys, monkeypatch):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: simulate the refusal the file system gives everyone else
        original = checks_module.tempfile.mkstemp

        def refuse(*args, dir=None, **kwargs):
            if Path(dir) == read_only:
                raise PermissionError(13, "Permission denied", str(dir))
            return original(*args, dir=dir, **kwargs)

        monkeypatch.setattr(checks_module.tempfile, "mkstemp", refuse)
    try:
        code, _, err = run(capsys, "evaluate", evaluated, "--zoo", zoos[0], "--out", read_only / "eval")
        assert code == 2 and f"--out {read_only / 'eval'} is not writable" in err and "Permission denied" in err
        code, _, err = run(capsys, "zoo", "build", "tetris_seed", "--out", read_only / "zoo")
        assert code == 2 and "is not writable" in err
        assert list(read_only.iterdir()) == []
    finally:
        read_only.chmod(0o755)


def test_damaged_eval_results_is_refused_before_work(zoos, model_copy, tmp_path):
    (model_copy / "eval" / "results.json").write_text('{"evaluations": 3}')
    before = snapshot(model_copy)
    with pytest.raises(ValueError, match=r"results\.json is damaged"):
        evaluate_model(model_copy, f"{zoos[1]}:tetris_seed", tmp_path / "out", **QUIET)
    assert snapshot(model_copy) == before


def test_hostile_arguments_of_every_subcommand_exit_2_without_traceback(evaluated, zoos, networks, tmp_path, capsys):
    cases = [
        (["zoo", "build", "no_such_recipe", "--out", tmp_path / "z"], "Unknown recipe"),
        (["zoo", "build", "tetris_seed", "--out", tmp_path / "z", "--num-models", "-3"], "--num-models"),
        (["zoo", "build", "tetris_seed", "--out", tmp_path / "z", "--threads", "0"], "--threads"),
        (["zoo", "build", "tetris_seed", "--out", tmp_path / "z", "--device", "banana"], "banana"),
        (["evaluate", evaluated, "--zoo", zoos[0], "--out", tmp_path / "e", "--max-rows", "0"], "--max-rows"),
        (["evaluate", evaluated, "--zoo", zoos[1], "--out", tmp_path / "e", "--seed", "-1"], "--seed"),
        (["evaluate", evaluated, "--zoo", zoos[1], "--out", tmp_path / "e", "--baselines", "nope"], "nope"),
        (["evaluate", evaluated, "--zoo", f"{zoos[0]}:no_config", "--out", tmp_path / "e"], "no_config"),
        (["predict", evaluated, networks["plain"], "--zoo", "no_such_zoo"], "no probes for zoo 'no_such_zoo'"),
        (["predict", evaluated, networks["plain"], "--threads", "-1"], "--threads"),
        (["train", "tetris_seed", "--zoo", zoos[0], "--output-dir", tmp_path / "t", "--epochs", "0"], "epochs"),
        (["train", "tetris_seed", "--no-such-field", "1"], "no_such_field"),
    ]
    for argv, message in cases:
        code, _, err = run(capsys, *argv)
        assert code == 2 and message in err and "Traceback" not in err, (argv, err)
    assert not any((tmp_path / name).exists() for name in ("z", "e", "t"))


def test_other_os_errors_are_one_line_naming_the_file(evaluated, networks, capsys, monkeypatch):
    import hyperrep_hf.models.hyperrep.pipelines as pipelines_module

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", "/data/predictions.json")

    monkeypatch.setattr(pipelines_module, "predict_files", full_disk)
    code, out, err = run(capsys, "predict", evaluated, networks["plain"])
    assert code == 1 and not out
    assert err.strip() == "hyperrep: error: No space left on device (/data/predictions.json)."
