"""The function term of training (``function_weight``): z also predicts what each network computes.

The term is checked by hand on the model (loss = the loss type's + γ · MSE of a linear head on z), its targets by
hand (the standardised ``probe_output_features`` or ``linear_map_features`` of the training rows, each row run with
its own activation), and through the trainer: recorded, saved in the config, resumed bit for bit, and off by default
with the model exactly as before.
"""

import json
import math
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate.state import AcceleratorState, PartialState
from safetensors.torch import load_file
from tiny_models import make_zoo

from hyperrep_hf import HyperRepConfig, HyperRepForPreTraining, HyperRepModel
from hyperrep_hf.probing.baselines import linear_map_features, probe_output_features
from hyperrep_hf.probing.evaluation import baseline_components, evaluate_model
from hyperrep_hf.training.trainer import Trainer, function_targets, make_train_config
from hyperrep_hf.zoo.networks import TETRIS_MLP
from hyperrep_hf.zoo.recipes import BuildOptions

TINY_RUN = {"d_model": 16, "num_attention_heads": 2, "intermediate_size": 32, "latent_dim": 8, "projection_dim": 4}
TINY_RUN |= {"batch_size": 8, "num_threads": 1, "progress": False, "eval_batch_size": 50, "eval_every": 1}
TINY_MODEL = {"d_model": 16, "num_attention_heads": 2, "intermediate_size": 32, "latent_dim": 6, "dropout": 0.0}


pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    return make_zoo(tmp_path_factory.mktemp("zoo"), "tetris_seed", BuildOptions(num_models=12, epochs=3, subset=120))


def _batch(config, batch=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, config.num_tokens, config.token_dim)
    views = {"input_tokens": torch.randn(shape, generator=generator)}
    views["input_tokens_view2"] = torch.randn(shape, generator=generator)
    return views, torch.randn(batch, config.function_dim or 64, generator=generator)


@pytest.mark.parametrize("loss_type", ["ed", "ecd", "ec"])
@pytest.mark.parametrize("weight", [0.5, 3.0])
def test_the_loss_adds_gamma_times_the_heads_mse_to_the_loss_types_own(loss_type, weight):
    torch.manual_seed(0)
    config = HyperRepConfig(**TINY_MODEL, loss_type=loss_type, beta=0.7, function_weight=weight, function_dim=64)
    model = HyperRepForPreTraining(config).train()
    views, target = _batch(config)
    # The same weights without the term: the loss type's own loss, in training mode too (batch statistics).
    twin = HyperRepForPreTraining(HyperRepConfig(**TINY_MODEL, loss_type=loss_type, beta=0.7)).train()
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("function_head")})
    torch.manual_seed(1)
    output = model(**views, function_values=target)
    torch.manual_seed(1)
    without = twin(**views)
    expected = F.mse_loss(model.function_head(output.embeddings), target)
    assert output.function_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert output.loss.item() == pytest.approx(without.loss.item() + weight * expected.item(), rel=1e-5)
    # The term's gradient reaches the encoder: it shapes z, not only the head.
    output.function_loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.hyperrep.parameters())


def test_without_a_weight_there_is_no_head_and_the_model_is_as_before():
    torch.manual_seed(0)
    plain = HyperRepForPreTraining(HyperRepConfig(**TINY_MODEL))
    assert plain.function_head is None
    assert not any(name.startswith("function_head") for name in plain.state_dict())
    views, _ = _batch(plain.config)
    assert plain(**views).function_loss is None


def test_training_without_the_target_or_with_a_wrong_one_is_refused():
    config = HyperRepConfig(**TINY_MODEL, function_weight=1.0, function_dim=64)
    model = HyperRepForPreTraining(config).train()
    views, target = _batch(config)
    with pytest.raises(ValueError, match=r"training needs what the networks compute \(probe_outputs"):
        model(**views)
    with pytest.raises(ValueError, match=r"function_values has shape \(5, 63\), expected \(5, 64\)"):
        model(**views, function_values=target[:, :63])
    model.eval()
    assert model(**views).function_loss is None  # embedding / evaluation need no target


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"function_weight": -1.0, "function_dim": 4}, "function_weight=-1.0"),
        ({"function_weight": math.nan, "function_dim": 4}, "function_weight=nan"),
        ({"function_weight": math.inf, "function_dim": 4}, "function_weight=inf"),
        ({"function_weight": True, "function_dim": 4}, "function_weight=True"),
        ({"function_weight": 1.0}, "function_dim=None"),
        ({"function_weight": 1.0, "function_dim": 0}, "function_dim=0"),
        ({"function_target": "outputs"}, "function_target='outputs'"),
        ({"function_inputs": "gaussian"}, "function_inputs='gaussian'"),
    ],
)
def test_bad_fields_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        HyperRepConfig(**TINY_MODEL, **fields)


@pytest.mark.parametrize("value", ["-0.5", "nan", "inf"])
def test_the_training_option_refuses_a_bad_weight(value):
    with pytest.raises(ValueError, match="function_weight="):
        make_train_config({"zoo": "z", "output_dir": "o", "function_weight": float(value)})


def test_the_old_field_name_says_what_to_write_instead():
    expected = r"linear_map_weight is now function_weight \(with function_target: linear_map\)"
    with pytest.raises(ValueError, match=expected):
        make_train_config({"zoo": "z", "output_dir": "o", "linear_map_weight": 5.0})


def test_the_training_option_refuses_an_unknown_target():
    with pytest.raises(ValueError, match="function_target"):
        make_train_config({"zoo": "z", "output_dir": "o", "function_target": "weights"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"function_inputs": "images"}, r"function_inputs.*'images'"),
        ({"function_inputs": "bernoulli", "function_target": "linear_map"}, "only probe_outputs runs the networks"),
    ],
)
def test_the_training_option_refuses_inputs_it_cannot_draw_or_use(fields, message):
    with pytest.raises(ValueError, match=message):
        make_train_config({"zoo": "z", "output_dir": "o", **fields})


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("inputs", ["uniform", "bernoulli"])
def test_the_probe_output_targets_on_another_prior_are_the_networks_run_by_hand_on_it(seed, inputs):
    """Second route: the inputs drawn here from their own generator, the MLP run as matrices, not modules."""
    vectors = torch.randn(30, TETRIS_MLP.num_parameters, generator=torch.Generator().manual_seed(seed))
    generator = torch.Generator().manual_seed(0)  # PROBE_SEED: the same inputs for every network and run
    if inputs == "uniform":
        drawn = torch.rand(256, 16, generator=generator)
    else:
        drawn = torch.bernoulli(torch.full((256, 16), 0.5), generator=generator)
        assert set(drawn.unique().tolist()) == {0.0, 1.0}
    first, second = vectors[:, :80].reshape(-1, 5, 16).double(), vectors[:, 80:].reshape(-1, 4, 5).double()
    logits = torch.tanh(drawn.double() @ first.transpose(1, 2)) @ second.transpose(1, 2)  # (networks, inputs, 4)
    outputs = logits.softmax(-1).sqrt().flatten(1).numpy()
    targets = function_targets("probe_outputs", vectors, TETRIS_MLP.to_dict(), ["tanh"], inputs)
    np.testing.assert_allclose(targets.numpy(), (outputs - outputs.mean(0)) / outputs.std(0), rtol=1e-4, atol=1e-4)
    normal = function_targets("probe_outputs", vectors, TETRIS_MLP.to_dict(), ["tanh"])
    assert not torch.allclose(targets, normal)


@pytest.mark.parametrize("seed", range(3))
def test_the_linear_map_targets_are_the_standardised_linear_maps(seed):
    vectors = torch.randn(40, TETRIS_MLP.num_parameters, generator=torch.Generator().manual_seed(seed))
    targets = function_targets("linear_map", vectors, TETRIS_MLP.to_dict(), None)
    maps = linear_map_features(vectors.double().numpy(), TETRIS_MLP.to_dict())
    np.testing.assert_allclose(targets.numpy(), (maps - maps.mean(0)) / maps.std(0), rtol=1e-5, atol=1e-5)
    vectors[3, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        function_targets("linear_map", vectors, TETRIS_MLP.to_dict(), None)
    with pytest.raises(ValueError, match=r"layer list.*--function-weight 0"):
        function_targets("linear_map", vectors, {"parameters": TETRIS_MLP.to_dict()["parameters"]}, None)


@pytest.mark.parametrize("seed", range(3))
def test_the_probe_output_targets_run_every_row_under_the_zoos_activations(seed):
    vectors = torch.randn(40, TETRIS_MLP.num_parameters, generator=torch.Generator().manual_seed(seed))
    activations = ["relu", "tanh"]
    targets = function_targets("probe_outputs", vectors, TETRIS_MLP.to_dict(), activations)
    outputs = probe_output_features(vectors.numpy(), TETRIS_MLP.to_dict(), activations).astype(np.float64)
    np.testing.assert_allclose(targets.numpy(), (outputs - outputs.mean(0)) / outputs.std(0), rtol=1e-4, atol=1e-4)
    assert targets.shape == (40, 2 * 256 * 4)
    # Under another activation, another target: the zoo's activations are what the networks are run under.
    alone = function_targets("probe_outputs", vectors, TETRIS_MLP.to_dict(), ["relu"])
    torch.testing.assert_close(alone, function_targets("probe_outputs", vectors, TETRIS_MLP.to_dict(), ["relu"]))
    assert not torch.allclose(alone, function_targets("probe_outputs", vectors, TETRIS_MLP.to_dict(), ["tanh"]))
    with pytest.raises(ValueError, match=r"zoo's activations.*--function-weight 0"):
        function_targets("probe_outputs", vectors, TETRIS_MLP.to_dict(), None)
    vectors[3, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        function_targets("probe_outputs", vectors, TETRIS_MLP.to_dict(), activations)


@pytest.mark.parametrize(
    ("target", "inputs", "width"),
    [("probe_outputs", "normal", 256 * 4), ("probe_outputs", "bernoulli", 256 * 4), ("linear_map", "normal", 64)],
)
def test_a_run_records_the_term_saves_the_field_and_resumes_bit_for_bit(tiny_zoo, tmp_path, target, inputs, width):
    run = tmp_path / "run"
    config = {**TINY_RUN, "zoo": f"{tiny_zoo}:tetris_seed", "output_dir": str(run), "epochs": 2}
    config |= {"checkpoint_every": 1, "keep_checkpoints": 5, "function_weight": 2.0, "loss_type": "ecd"}
    config |= {"function_target": target, "function_inputs": inputs}
    trainer = Trainer(make_train_config(config))
    trainer.train()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [record["train/function_loss"] for record in records if "train/function_loss" in record]
    assert len(losses) == 2 and all(np.isfinite(losses))
    saved = json.loads((run / "config.json").read_text())
    assert saved["function_weight"] == 2.0 and saved["function_target"] == target and saved["function_dim"] == width
    assert saved["function_inputs"] == inputs
    encoder, loading = HyperRepModel.from_pretrained(run, output_loading_info=True)
    assert isinstance(encoder, HyperRepModel) and not loading["unexpected_keys"]  # the head is left, silently
    pretraining = HyperRepForPreTraining.from_pretrained(run)
    assert pretraining.function_head.out_features == width

    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    killed = tmp_path / "killed"
    shutil.copytree(run, killed)
    steps = sorted(int(path.name) for path in (killed / "checkpoints").glob("[0-9]*"))
    shutil.rmtree(killed / "checkpoints" / f"{steps[-1]:06d}")
    (killed / "checkpoints" / "last").write_text(f"{steps[0]:06d}\n")
    (killed / "model.safetensors").unlink()
    Trainer(make_train_config({**config, "output_dir": str(killed), "resume": True})).train()
    resumed, uninterrupted = load_file(str(killed / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert resumed.keys() == uninterrupted.keys() and any(name.startswith("function_head") for name in resumed)
    assert all(torch.equal(resumed[name], tensor) for name, tensor in uninterrupted.items())


def test_a_z_wider_than_the_network_needs_the_term_and_is_evaluated_against_every_pca_component(tiny_zoo, tmp_path):
    """latent_dim > num_parameters: refused for reconstruction and contrast alone (z could copy the weights), allowed
    with the function term; evaluation then caps the PCA baselines at the networks' size, not z's."""
    with pytest.raises(ValueError, match=r"latent_dim=101.*allowed only with a function term"):
        HyperRepConfig(**{**TINY_MODEL, "latent_dim": 101})
    assert HyperRepConfig(**{**TINY_MODEL, "latent_dim": 101}, function_weight=1.0, function_dim=4).latent_dim == 101
    with pytest.raises(ValueError, match="latent_dim=120"):
        Trainer(
            make_train_config({"zoo": f"{tiny_zoo}:tetris_seed", "output_dir": str(tmp_path / "x"), "latent_dim": 120})
        )
    assert not (tmp_path / "x").exists()

    run = tmp_path / "wide"
    config = {**TINY_RUN, "zoo": f"{tiny_zoo}:tetris_seed", "output_dir": str(run), "epochs": 1, "latent_dim": 120}
    Trainer(make_train_config(config | {"function_weight": 1.0, "loss_type": "ecd"})).train()
    report = evaluate_model(
        run, f"{tiny_zoo}:tetris_seed", tmp_path / "eval", baselines=["pca_linear"], plots=False, progress=False
    )
    assert report.reports["hyperrep"].probes["test_accuracy"].coef.shape == (120,)
    assert report.reports["pca_linear"].probes["test_accuracy"].coef.shape == (32,)  # capped by the 32 fit rows
    wide = HyperRepConfig(**{**TINY_MODEL, "latent_dim": 101}, function_weight=1.0, function_dim=4)
    assert baseline_components(wide) == 100 and baseline_components(HyperRepConfig(**TINY_MODEL)) == 6
