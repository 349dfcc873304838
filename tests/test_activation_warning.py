"""A network whose activation the encoder was not trained on: predictions carry a warning naming the activation,
with the probes' validation scores on networks of that activation (saved per activation by `hyperrep evaluate`)."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tiny_models import make_evaluated_model, make_model_folder, make_zoo
from torch import nn

from hyperrep_hf import HyperRepForPreTraining
from hyperrep_hf.cli import main
from hyperrep_hf.models.hyperrep.pipelines import make_prediction_pipeline, network_activation
from hyperrep_hf.probing.evaluation import evaluate_model, load_zoo_arrays
from hyperrep_hf.probing.probe_heads import read_probe_index


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return make_zoo(tmp_path_factory.mktemp("zoo"))  # tetris_hyp: tanh and relu networks


@pytest.fixture(scope="module")
def mixed_model(tmp_path_factory, zoo):
    """Encoder of the mixed zoo (config.activation None): it knows the activations its probes were validated on."""
    return make_evaluated_model(tmp_path_factory.mktemp("mixed"), zoo, tmp_path_factory.mktemp("eval"))


@pytest.fixture(scope="module")
def tanh_model(tmp_path_factory, zoo):
    """An encoder trained on tanh networks only (config.activation 'tanh'), probed on the mixed zoo."""
    folder = make_model_folder(
        zoo, tmp_path_factory.mktemp("tanh"), seed=1, model_class=HyperRepForPreTraining,
        symmetries=["permutation"], embedding_symmetry_samples=2, activation="tanh",
    )  # fmt: skip
    evaluate_model(folder, zoo, tmp_path_factory.mktemp("eval"), baselines=[], plots=False, progress=False)
    return folder


def user_mlp(vector: torch.Tensor, activation: nn.Module) -> nn.Module:
    """The user's own Tetris MLP (names of its own) carrying a zoo network's weights."""
    module = nn.Sequential(nn.Flatten(), nn.Linear(16, 5, bias=False), activation, nn.Linear(5, 4, bias=False))
    with torch.no_grad():
        module[1].weight.copy_(vector[:80].reshape(5, 16))
        module[3].weight.copy_(vector[80:].reshape(4, 5))
    return module


def score(metric: str, truth: np.ndarray, predicted: np.ndarray) -> float:
    if metric == "accuracy":
        return float(np.mean(truth == predicted))
    truth, predicted = truth.astype(float), predicted.astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant target in a group: R² undefined
        return float(1 - ((truth - predicted) ** 2).sum() / ((truth - truth.mean()) ** 2).sum())


def test_scores_by_activation_are_saved_and_recomputed_from_the_heads(mixed_model, zoo):
    arrays = load_zoo_arrays(zoo)
    validation_activations = set(arrays.columns["validation"]["activation"].tolist())
    assert validation_activations == {"tanh", "relu"}  # the tiny zoo's validation split has both
    predictor = make_prediction_pipeline(mixed_model)
    z_bar = predictor.embed(torch.from_numpy(arrays.vectors["validation"]))
    index = read_probe_index(mixed_model)
    for entry in index["probes"]:
        head = predictor.probes[entry["target"]]
        saved = head.config.validation_score_by_activation
        assert saved == entry["validation_score_by_activation"] and set(saved) == validation_activations
        truth = arrays.columns["validation"][entry["target"]]
        with torch.no_grad():
            output = head(z_bar)
        predicted = (
            output.predictions.double().numpy()
            if head.config.task == "regression"
            else np.asarray(output.predicted_labels, dtype=object)
        )
        for activation, value in saved.items():
            rows = arrays.columns["validation"]["activation"] == activation
            expected = score(head.config.metric, truth[rows], predicted[rows])
            if value is None:
                assert not np.isfinite(expected) or rows.sum() < 2
            else:
                assert value == pytest.approx(expected, abs=1e-3), (entry["target"], activation)


def test_an_unseen_activation_is_named_and_seen_ones_are_not(mixed_model, zoo):
    vector = torch.from_numpy(load_zoo_arrays(zoo).vectors["test"][-1].copy())
    predictor = make_prediction_pipeline(mixed_model)
    assert predictor.trained_activations() == ["relu", "tanh"]
    gelu = user_mlp(vector, nn.GELU())
    assert network_activation(gelu) == "gelu" and network_activation(user_mlp(vector, nn.Tanh())) == "tanh"
    for prediction in predictor(gelu).values():
        assert (
            "activation 'gelu': the encoder was not trained on gelu networks (it was on relu, tanh)"
            in (prediction["warning"])
        )
        assert "the probes have no validation score on gelu networks" in prediction["warning"]
    for activation in (nn.Tanh(), nn.ReLU()):
        for prediction in predictor(user_mlp(vector, activation)).values():
            assert "activation" not in (prediction.get("warning") or "")
    # A plain state_dict tells no activation: none is assumed; activation= says it.
    assert all("activation" not in (p.get("warning") or "") for p in predictor(gelu.state_dict()).values())
    named = predictor([gelu.state_dict(), gelu.state_dict()], activation=["sigmoid", "tanh"])
    assert all("activation 'sigmoid'" in p["warning"] for p in named[0].values())
    assert all("activation" not in (p.get("warning") or "") for p in named[1].values())
    with pytest.raises(ValueError, match="activation= has 1 names for 2 networks"):
        predictor([vector, vector], activation=["tanh"])


def test_an_encoder_of_one_activation_quotes_the_probes_scores_on_the_other(tanh_model, zoo):
    vector = torch.from_numpy(load_zoo_arrays(zoo).vectors["test"][-1].copy())
    predictor = make_prediction_pipeline(tanh_model)
    assert predictor.trained_activations() == ["tanh"]
    prediction = predictor(user_mlp(vector, nn.ReLU()))
    for target, value in prediction.items():
        head = predictor.probes[target].config
        relu_score = head.validation_score_by_activation["relu"]
        shown = "n/a" if relu_score is None else format(relu_score, ".3f")
        assert "activation 'relu': the encoder was not trained on relu networks (it was on tanh)" in value["warning"]
        assert "the probes' validation scores on relu networks: " in value["warning"]
        assert f"{target} {head.metric} {shown}" in value["warning"]


def test_predict_activation_option(mixed_model, zoo, tmp_path, capsys):
    vector = torch.from_numpy(load_zoo_arrays(zoo).vectors["test"][-1].copy())
    network = tmp_path / "network.safetensors"
    save_file({"1.weight": vector[:80].reshape(5, 16).clone(), "3.weight": vector[80:].reshape(4, 5).clone()}, network)
    assert main(["predict", str(mixed_model), str(network), "--activation", "gelu"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert "activation 'gelu'" in result["warning"] and "not trained on gelu" in result["warning"]
    assert main(["predict", str(mixed_model), str(network), "--activation", "relu"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert "activation" not in (result["warning"] or "")
