"""The network-property-prediction pipeline and predict_networks, on a tiny TETRIS-HYP zoo (regression + classes)."""

import json

import pytest
import torch
from safetensors.torch import save_file
from tiny_models import make_model_folder
from transformers import pipeline
from transformers.pipelines import PIPELINE_REGISTRY

import hyperrep_hf
from hyperrep_hf import HyperRepConfig, HyperRepModel, NetworkPropertyPredictionPipeline, NeuronTokenProcessor
from hyperrep_hf.models.hyperrep.embeddings import SymmetryTransforms
from hyperrep_hf.models.hyperrep.pipelines import TASK, predict_networks
from hyperrep_hf.probing.evaluation import evaluate_model, load_zoo_arrays
from hyperrep_hf.probing.probe_heads import ProbesNotFoundError
from hyperrep_hf.zoo.folder import build_zoo
from hyperrep_hf.zoo.recipes import BuildOptions, load_recipe


@pytest.fixture(scope="module")
def evaluated_model(tmp_path_factory):
    """A tiny encoder with probes fitted on a tiny TETRIS-HYP zoo; returns (model_dir, zoo arrays, report)."""
    zoo_dir = tmp_path_factory.mktemp("zoo")
    build_zoo(load_recipe("tetris_hyp_v1"), zoo_dir, BuildOptions(num_models=30, epochs=2, subset=120), progress=False)
    model_dir = make_model_folder(
        zoo_dir, tmp_path_factory.mktemp("model"), symmetries=["permutation"], embedding_symmetry_samples=4
    )
    report = evaluate_model(
        model_dir, zoo_dir, tmp_path_factory.mktemp("out"), baselines=[], plots=False, progress=False
    )
    return model_dir, load_zoo_arrays(zoo_dir), report


@pytest.fixture(scope="module")
def predictor(evaluated_model):
    return pipeline(TASK, model=str(evaluated_model[0]), device=-1)


def state_dicts(zoo, rows):
    processor_vectors = torch.from_numpy(zoo.vectors["test"][rows])
    return [
        {"layers.1.weight": v[:80].reshape(5, 16), "layers.3.weight": v[80:].reshape(4, 5)} for v in processor_vectors
    ]


def test_task_is_registered_at_import():
    assert TASK in PIPELINE_REGISTRY.get_supported_tasks()


def test_predictions_equal_the_fitted_probes_on_z(evaluated_model, predictor):
    model_dir, zoo, report = evaluated_model
    assert isinstance(predictor, NetworkPropertyPredictionPipeline)
    vectors = zoo.vectors["test"][:3]
    outputs = predictor(torch.from_numpy(vectors))
    model, processor = HyperRepModel.from_pretrained(model_dir), NeuronTokenProcessor.from_pretrained(model_dir)
    transforms = SymmetryTransforms(processor.architecture, 4, ["permutation"])
    with torch.no_grad():  # z averaged over the network and 3 permuted copies, as the probes were fitted on
        copies = [model(**processor(transforms(torch.from_numpy(vectors), k))).embeddings for k in range(4)]
    embeddings = torch.stack(copies).mean(0).double().numpy()
    probes = report.reports["hyperrep"].probes
    assert set(outputs[0]) == set(probes)
    for index, output in enumerate(outputs):
        assert output["test_accuracy"]["value"] == pytest.approx(
            probes["test_accuracy"].predict(embeddings[index : index + 1])[0], abs=1e-4
        )
        assert output["activation"]["value"] == probes["activation"].predict(embeddings[index : index + 1])[0]
    validation = probes["test_accuracy"].validation_score
    assert outputs[0]["test_accuracy"]["validation_r2"] == pytest.approx(validation)
    activation = outputs[0]["activation"]
    assert set(activation["probabilities"]) == {"relu", "tanh"}
    assert sum(activation["probabilities"].values()) == pytest.approx(1.0)
    assert activation["validation_accuracy"] == pytest.approx(probes["activation"].validation_score)
    json.dumps(outputs)  # plain JSON values only


def test_accepts_every_network_form(evaluated_model, predictor, tmp_path):
    _, zoo, _ = evaluated_model
    state_dict = state_dicts(zoo, [0])[0]
    module = hyperrep_hf.make_module(hyperrep_hf.TETRIS_MLP)
    module.load_state_dict(state_dict)
    save_file(state_dict, tmp_path / "network.safetensors")
    flat = torch.from_numpy(zoo.vectors["test"][0])
    reference = predictor(state_dict)
    assert isinstance(reference, dict)
    for network in (module, str(tmp_path / "network.safetensors"), flat, flat.numpy(), flat.tolist()):
        output = predictor(network)
        assert output["epoch"]["value"] == pytest.approx(reference["epoch"]["value"], abs=1e-5)
    batch = predictor([state_dict, module, flat], batch_size=2)
    assert isinstance(batch, list) and len(batch) == 3
    assert batch[2]["init"]["value"] == reference["init"]["value"]


def test_mismatched_architecture_is_refused_naming_the_parameter(predictor):
    with pytest.raises(ValueError, match=r"parameter 'layers.1.weight' has shape \[5, 12\], expected \[5, 16\]"):
        predictor({"layers.1.weight": torch.zeros(5, 12), "layers.3.weight": torch.zeros(4, 5)})
    with pytest.raises(ValueError, match="tetris_mlp"):
        predictor(torch.zeros(99))


def test_predict_networks_reads_files_and_returns_json(evaluated_model, tmp_path):
    model_dir, zoo, _ = evaluated_model
    files = []
    for index, state_dict in enumerate(state_dicts(zoo, [0, 1])):
        files.append(tmp_path / f"network_{index}.safetensors")
        save_file(state_dict, files[-1])
    results = predict_networks(model_dir, files)
    assert [result["network"] for result in results] == [str(path) for path in files]
    assert {"test_accuracy", "activation", "init", "learning_rate"} <= set(results[0]["predictions"])
    json.dumps(results)
    with pytest.raises(FileNotFoundError, match=r"missing\.safetensors"):
        predict_networks(model_dir, [tmp_path / "missing.safetensors"])


def test_model_folder_without_probes_says_to_run_evaluate(evaluated_model, tmp_path):
    model_dir, _, _ = evaluated_model
    bare = tmp_path / "bare"
    HyperRepModel.from_pretrained(model_dir).save_pretrained(bare)
    NeuronTokenProcessor.from_pretrained(model_dir).save_pretrained(bare)
    with pytest.raises(ProbesNotFoundError, match="hyperrep evaluate"):
        predict_networks(bare, [])
    with pytest.raises(ProbesNotFoundError, match="hyperrep evaluate"):
        pipeline(TASK, model=str(bare), device=-1)


def test_probes_of_another_encoder_are_refused(evaluated_model):
    model_dir, _, _ = evaluated_model
    model = HyperRepModel.from_pretrained(model_dir)
    config = HyperRepConfig(**{**model.config.to_dict(), "latent_dim": 4})
    probes = hyperrep_hf.probing.probe_heads.load_probe_heads(model_dir)[1]
    processor = NeuronTokenProcessor.from_pretrained(model_dir)
    with pytest.raises(ValueError, match="another encoder"):
        NetworkPropertyPredictionPipeline(model=HyperRepModel(config), feature_extractor=processor, probes=probes)
