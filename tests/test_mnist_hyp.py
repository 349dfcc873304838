"""MNIST-HYP (issue 14): the CNN encoder presets, symmetries on a mixed-activation zoo, the evaluation's targets,
and ``hyperrep demo --zoo mnist_hyp`` on a tiny zoo."""

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from accelerate.state import AcceleratorState, PartialState

from hyperrep_hf import HyperRepForPreTraining, NeuronTokenProcessor
from hyperrep_hf.cli import main as cli_main
from hyperrep_hf.demo import DEMO_JOBS, run_demo
from hyperrep_hf.models.hyperrep.augmentations import NeuronPermutation, NeuronSignFlip
from hyperrep_hf.probing.evaluation import load_zoo_arrays, select_targets
from hyperrep_hf.probing.report import _fixed_hyperparameters, bootstrap_difference
from hyperrep_hf.training.trainer import main as train_main
from hyperrep_hf.training.trainer import make_train_config, train
from hyperrep_hf.zoo.folder import build_zoo
from hyperrep_hf.zoo.networks import make_module, unflatten_vector
from hyperrep_hf.zoo.recipes import BuildOptions, load_recipe

PRESETS = Path(str(resources.files("hyperrep_hf.train_configs")))
TINY_CNN_ZOO = BuildOptions(num_models=12, epochs=1, subset=120)
ACTIVATIONS = ("tanh", "relu", "sigmoid", "gelu")


@pytest.fixture(scope="module")
def cnn_zoo(tmp_path_factory):
    """A tiny mixed-activation MNIST-HYP zoo of the demo's recipe (12 CNNs, epochs 0-1, 120 images)."""
    out = tmp_path_factory.mktemp("zoo")
    build_zoo(load_recipe("mnist_hyp_mini"), out, TINY_CNN_ZOO, progress=False)
    return out


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    yield
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def _preset(name: str) -> dict:
    return yaml.safe_load((PRESETS / f"{name}.yaml").read_text())


# ------------------------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("name", ["mnist_hyp", "mnist_hyp_mini"])
def test_presets_resolve_with_the_cnn_layout_and_no_sign_symmetry(name):
    config = make_train_config(_preset(name))
    assert config.token_layout == "per_layer" and config.variant == "attn_t"
    # Mixed activations: the canonical order of channels / neurons, never signs (docs/model.md, mixed activations).
    assert config.canonical and not config.sign_flip and not config.permute
    assert config.zoo.endswith(f":{name}") or config.zoo.endswith(":mnist_hyp_1_fix_seed")


def test_gpu_preset_is_the_papers_cnn_size():
    config = make_train_config(_preset("mnist_hyp"))
    sizes = (config.num_hidden_layers, config.d_model, config.num_attention_heads, config.intermediate_size)
    assert (*sizes, config.latent_dim) == (4, 512, 4, 1000, 700)
    assert config.mixed_precision == "auto"


def test_gpu_preset_runs_one_step_on_cpu_on_a_tiny_zoo(cnn_zoo, tmp_path):
    overrides = {"zoo": f"{cnn_zoo}:mnist_hyp_mini", "output_dir": str(tmp_path / "run"), "epochs": 1}
    overrides |= {"num_threads": 1, "progress": False, "eval_batch_size": 8, "mixed_precision": "no"}
    config = make_train_config(_preset("mnist_hyp"), overrides)
    final = train(config)
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["final"] and lines[-1]["step"] == 1  # batch 500 over the tiny zoo's rows: one step
    assert np.isfinite(final["test/reconstruction_r2"])
    model = HyperRepForPreTraining.from_pretrained(tmp_path / "run")
    assert model.config.d_model == 512 and model.config.latent_dim == 700
    assert model.config.activation is None  # four activations in the zoo: no sign symmetry recorded


# ----------------------------------------------------------------------------------- mixed-activation symmetries
def test_hyperrep_train_on_a_mixed_activation_zoo_trains_with_the_mini_preset(cnn_zoo, tmp_path, capsys):
    zoo_info = json.loads((cnn_zoo / "mnist_hyp_mini" / "zoo_info.json").read_text())
    assert len(zoo_info["hyperparameters"]["activation"]) > 1
    arguments = [str(PRESETS / "mnist_hyp_mini.yaml"), "--zoo", f"{cnn_zoo}:mnist_hyp_mini", "--epochs", "1"]
    arguments += ["--output-dir", str(tmp_path / "run"), "--d-model", "16", "--intermediate-size", "32"]
    arguments += ["--num-attention-heads", "2", "--latent-dim", "8", "--progress", "false"]
    assert train_main(arguments) == 0
    processor = NeuronTokenProcessor.from_pretrained(tmp_path / "run")
    assert processor.canonical and processor.canonical_activation is None


def test_sign_flip_on_a_mixed_activation_zoo_names_the_activations_and_the_way_out(cnn_zoo, tmp_path, capsys):
    arguments = [str(PRESETS / "mnist_hyp_mini.yaml"), "--zoo", f"{cnn_zoo}:mnist_hyp_mini", "--epochs", "1"]
    arguments += ["--output-dir", str(tmp_path / "run"), "--sign-flip", "true", "--canonical", "false"]
    assert train_main(arguments) == 2
    message = capsys.readouterr().err
    assert "sign_flip" in message and "relu" in message and "--sign-flip false" in message
    assert not (tmp_path / "run" / "model.safetensors").exists()


@pytest.mark.parametrize("seed", range(4))
def test_mixed_zoo_canonical_form_keeps_every_activations_function_and_is_permutation_invariant(seed):
    """Random CNNs of every activation: the canonical form (permutations only) computes the same outputs as the
    network, and two random permutations of one network give the same canonical vector."""
    spec = load_recipe("mnist_hyp_mini").network_spec()
    processor = NeuronTokenProcessor(spec).set_canonical(None)
    generator = torch.Generator().manual_seed(seed)
    vectors = torch.randn(4, spec.num_parameters, generator=generator) * 0.3
    images = torch.rand(5, 1, 28, 28, generator=generator)
    canonical = processor.canonicalize(vectors)
    permuted = NeuronPermutation(spec, num_permutations=8, generator=generator)(vectors, generator)
    assert not torch.equal(permuted, vectors)
    torch.testing.assert_close(processor.canonicalize(permuted), canonical, rtol=0, atol=1e-6)
    for activation, vector, form in zip(ACTIVATIONS, vectors, canonical, strict=True):
        module = make_module(spec, activation).eval()
        module.load_state_dict(unflatten_vector(spec, vector))
        expected = module(images)
        module.load_state_dict(unflatten_vector(spec, form))
        torch.testing.assert_close(module(images), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(3))
def test_a_sign_flip_changes_the_function_of_a_non_odd_activation(seed):
    """Why no per-network signs without the activation: the tanh flip is exact, the same flip on relu, sigmoid or
    gelu changes the outputs."""
    spec = load_recipe("mnist_hyp_mini").network_spec()
    generator = torch.Generator().manual_seed(seed)
    vector = torch.randn(1, spec.num_parameters, generator=generator) * 0.3
    flipped = NeuronSignFlip(spec, "tanh")(vector, generator)
    images = torch.rand(5, 1, 28, 28, generator=generator)
    for activation in ACTIVATIONS:
        module = make_module(spec, activation).eval()
        module.load_state_dict(unflatten_vector(spec, vector[0]))
        expected = module(images)
        module.load_state_dict(unflatten_vector(spec, flipped[0]))
        gap = (module(images) - expected).abs().max().item()
        assert gap < 1e-5 if activation == "tanh" else gap > 1e-4, (activation, gap)


# ----------------------------------------------------------------------------------------------------- evaluation
def test_mnist_hyp_targets_are_the_papers_with_dropout_a_class(cnn_zoo):
    zoo = load_zoo_arrays(f"{cnn_zoo}:mnist_hyp_mini")
    targets, categorical = select_targets(zoo)
    assert targets[:3] == ["epoch", "test_accuracy", "generalization_gap"]
    assert categorical == {"activation", "init", "optimizer", "dropout"}
    # the mini zoo keeps the paper's whole grid: learning rate and weight decay vary and are read as numbers
    assert {"learning_rate", "weight_decay"} <= set(targets) and not {"learning_rate", "weight_decay"} & categorical


def test_a_hyperparameter_with_one_value_is_named_not_probed(cnn_zoo):
    zoo = load_zoo_arrays(f"{cnn_zoo}:mnist_hyp_mini")
    for columns in zoo.columns.values():
        columns["weight_decay"] = np.full(columns["weight_decay"].shape, 1.0e-4)
    zoo.info["hyperparameters"].pop("weight_decay", None)
    targets, _ = select_targets(zoo)
    assert "weight_decay" not in targets and "learning_rate" in targets
    document = {"fixed_hyperparameters": _fixed_hyperparameters(zoo, targets)}
    assert document["fixed_hyperparameters"] == {"weight_decay": 1.0e-4}


def test_continuous_dropout_stays_a_regression(cnn_zoo):
    zoo = load_zoo_arrays(f"{cnn_zoo}:mnist_hyp_mini")
    for columns in zoo.columns.values():
        columns["dropout"] = np.random.default_rng(0).uniform(0, 0.7, columns["dropout"].shape)
    zoo.info["hyperparameters"].pop("dropout", None)
    targets, categorical = select_targets(zoo)
    assert "dropout" in targets and "dropout" not in categorical


@pytest.mark.parametrize("seed", range(5))
def test_paired_bootstrap_of_an_accuracy_difference(seed):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(40), 3)
    truth = np.array(ACTIVATIONS, dtype=object)[np.repeat(rng.integers(0, 4, 40), 3)]
    perfect, noisy = truth.copy(), truth.copy()
    wrong = rng.random(truth.size) < 0.5
    noisy[wrong] = np.array(ACTIVATIONS, dtype=object)[rng.integers(0, 4, wrong.sum())]
    better = bootstrap_difference("accuracy", truth, perfect, noisy, groups, num_resamples=200, seed=seed)
    expected = 1.0 - np.mean(noisy == truth)
    assert better["difference"] == pytest.approx(expected) and 0 < better["low"] <= expected <= better["high"]
    same = bootstrap_difference("accuracy", truth, noisy, noisy, groups, num_resamples=50, seed=seed)
    assert same["difference"] == same["low"] == same["high"] == 0.0


# ----------------------------------------------------------------------------------------------------------- demo
def test_cnn_demo_job_is_the_mini_zoo_and_preset_with_every_baseline():
    job = DEMO_JOBS["mnist_hyp"]
    assert job.recipe == "mnist_hyp_mini" and job.preset == "mnist_hyp_mini"
    assert set(job.baselines) == {"W", "s(W)", "pca_linear", "pca_cosine", "pca_rbf", "umap"}
    assert make_train_config(_preset(job.preset), job.quick_training).epochs == 2


def test_cnn_demo_plumbing_on_a_tiny_zoo(tmp_path, capsys):
    result = run_demo(tmp_path, quick=True, zoo="mnist_hyp", zoo_options=TINY_CNN_ZOO, baselines=("s(W)",))
    output = capsys.readouterr().out
    assert "MNIST-HYP mini" in output and "step 4/4" in output and "[demo] done" in output
    document = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(document["categorical_targets"]) == {"activation", "init", "optimizer", "dropout"}
    # the preset appends s(W) (append_weight_statistics): hyperrep is z̄ ⊕ s(W), hyperrep_z the z̄ alone beside it
    assert document["methods"] == ["s(W)", "hyperrep_z", "hyperrep"]
    assert document["representation"] == "z+s(W)"
    # the mini recipe keeps the paper's whole grid: every hyper-parameter varies, so every one is probed
    assert document["fixed_hyperparameters"] == {} and {"learning_rate", "weight_decay"} <= set(document["targets"])
    bootstrapped = {(r["target"], r["metric"]) for r in document["final_checkpoints"]["results"]}
    assert ("test_accuracy", "r2") in bootstrapped and ("activation", "accuracy") in bootstrapped
    truth = result["predictions"][0]["truth"]
    assert truth["activation"] in ACTIVATIONS and "dropout" in truth and "test_accuracy" in truth


def test_demo_refuses_an_unknown_zoo_naming_the_choices(tmp_path):
    with pytest.raises(ValueError, match="mnist_hyp"):
        run_demo(tmp_path, zoo="mnist_hyp_full")
    with pytest.raises(SystemExit):
        cli_main(["demo", "--out", str(tmp_path / "x"), "--zoo", "cifar"])


def test_demo_command_passes_the_zoo_to_the_job(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr("hyperrep_hf.demo.run_demo", lambda out, quick, zoo: calls.append((out, quick, zoo)))
    assert cli_main(["demo", "--out", str(tmp_path / "d"), "--zoo", "mnist_hyp"]) == 0
    assert cli_main(["demo", "--out", str(tmp_path / "t"), "--quick"]) == 0
    assert calls == [(str(tmp_path / "d"), False, "mnist_hyp"), (str(tmp_path / "t"), True, "tetris_seed")]
