"""The linear-map term of training (``linear_map_weight``): z also predicts each network's linear map.

The term is checked by hand on the model (loss = the loss type's + γ · MSE of a linear head on z), its target by
hand (the standardised ``linear_map_features`` of the training rows), and through the trainer: recorded, saved in the
config, resumed bit for bit, and off by default with the model exactly as before.
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
from hyperrep_hf.probing.baselines import linear_map_features
from hyperrep_hf.training.trainer import Trainer, linear_map_targets, make_train_config
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
    return views, torch.randn(batch, config.linear_map_dim or 64, generator=generator)


@pytest.mark.parametrize("loss_type", ["ed", "ecd", "ec"])
@pytest.mark.parametrize("weight", [0.5, 3.0])
def test_the_loss_adds_gamma_times_the_heads_mse_to_the_loss_types_own(loss_type, weight):
    torch.manual_seed(0)
    config = HyperRepConfig(**TINY_MODEL, loss_type=loss_type, beta=0.7, linear_map_weight=weight, linear_map_dim=64)
    model = HyperRepForPreTraining(config).train()
    views, target = _batch(config)
    # The same weights without the term: the loss type's own loss, in training mode too (batch statistics).
    twin = HyperRepForPreTraining(HyperRepConfig(**TINY_MODEL, loss_type=loss_type, beta=0.7)).train()
    twin.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("linear_map_head")})
    torch.manual_seed(1)
    output = model(**views, linear_map=target)
    torch.manual_seed(1)
    without = twin(**views)
    expected = F.mse_loss(model.linear_map_head(output.embeddings), target)
    assert output.linear_map_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert output.loss.item() == pytest.approx(without.loss.item() + weight * expected.item(), rel=1e-5)
    # The term's gradient reaches the encoder: it shapes z, not only the head.
    output.linear_map_loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.hyperrep.parameters())


def test_without_a_weight_there_is_no_head_and_the_model_is_as_before():
    torch.manual_seed(0)
    plain = HyperRepForPreTraining(HyperRepConfig(**TINY_MODEL))
    assert plain.linear_map_head is None
    assert not any(name.startswith("linear_map_head") for name in plain.state_dict())
    views, _ = _batch(plain.config)
    assert plain(**views).linear_map_loss is None


def test_training_without_the_target_or_with_a_wrong_one_is_refused():
    config = HyperRepConfig(**TINY_MODEL, linear_map_weight=1.0, linear_map_dim=64)
    model = HyperRepForPreTraining(config).train()
    views, target = _batch(config)
    with pytest.raises(ValueError, match="training needs the networks' linear maps"):
        model(**views)
    with pytest.raises(ValueError, match=r"linear_map has shape \(5, 63\), expected \(5, 64\)"):
        model(**views, linear_map=target[:, :63])
    model.eval()
    assert model(**views).linear_map_loss is None  # embedding / evaluation need no target


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"linear_map_weight": -1.0, "linear_map_dim": 4}, "linear_map_weight=-1.0"),
        ({"linear_map_weight": math.nan, "linear_map_dim": 4}, "linear_map_weight=nan"),
        ({"linear_map_weight": math.inf, "linear_map_dim": 4}, "linear_map_weight=inf"),
        ({"linear_map_weight": True, "linear_map_dim": 4}, "linear_map_weight=True"),
        ({"linear_map_weight": 1.0}, "linear_map_dim=None"),
        ({"linear_map_weight": 1.0, "linear_map_dim": 0}, "linear_map_dim=0"),
    ],
)
def test_bad_fields_are_named(fields, message):
    with pytest.raises(ValueError, match=message):
        HyperRepConfig(**TINY_MODEL, **fields)


@pytest.mark.parametrize("value", ["-0.5", "nan", "inf"])
def test_the_training_option_refuses_a_bad_weight(value):
    with pytest.raises(ValueError, match="linear_map_weight="):
        make_train_config({"zoo": "z", "output_dir": "o", "linear_map_weight": float(value)})


@pytest.mark.parametrize("seed", range(3))
def test_the_targets_are_the_standardised_linear_maps(seed):
    vectors = torch.randn(40, TETRIS_MLP.num_parameters, generator=torch.Generator().manual_seed(seed))
    targets = linear_map_targets(vectors, TETRIS_MLP.to_dict())
    maps = linear_map_features(vectors.double().numpy(), TETRIS_MLP.to_dict())
    np.testing.assert_allclose(targets.numpy(), (maps - maps.mean(0)) / maps.std(0), rtol=1e-5, atol=1e-5)
    vectors[3, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        linear_map_targets(vectors, TETRIS_MLP.to_dict())
    with pytest.raises(ValueError, match=r"layer list.*--linear-map-weight 0"):
        linear_map_targets(vectors, {"parameters": TETRIS_MLP.to_dict()["parameters"]})


def test_a_run_records_the_term_saves_the_field_and_resumes_bit_for_bit(tiny_zoo, tmp_path):
    run = tmp_path / "run"
    config = {**TINY_RUN, "zoo": f"{tiny_zoo}:tetris_seed", "output_dir": str(run), "epochs": 2}
    config |= {"checkpoint_every": 1, "keep_checkpoints": 5, "linear_map_weight": 2.0, "loss_type": "ecd"}
    trainer = Trainer(make_train_config(config))
    trainer.train()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [record["train/linear_map_loss"] for record in records if "train/linear_map_loss" in record]
    assert len(losses) == 2 and all(np.isfinite(losses))
    saved = json.loads((run / "config.json").read_text())
    assert saved["linear_map_weight"] == 2.0 and saved["linear_map_dim"] == 64
    encoder, loading = HyperRepModel.from_pretrained(run, output_loading_info=True)
    assert isinstance(encoder, HyperRepModel) and not loading["unexpected_keys"]  # the head is left, silently
    pretraining = HyperRepForPreTraining.from_pretrained(run)
    assert pretraining.linear_map_head is not None

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
    assert resumed.keys() == uninterrupted.keys() and any(name.startswith("linear_map_head") for name in resumed)
    assert all(torch.equal(resumed[name], tensor) for name, tensor in uninterrupted.items())
