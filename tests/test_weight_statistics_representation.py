"""The hyper-representation z̄ ⊕ s(W) (``append_weight_statistics``): the baseline's s(W), everywhere z̄ is used.

On: the appended columns are the s(W) baseline's features, taken over the same canonical views or symmetric copies
as z̄ (so with permutations alone exactly the baseline's columns); z̄ itself does not move; the probe heads read
``latent_dim + 7 · num_layers`` values and say so; evaluation reports z̄ alone beside it; the pipeline, ``hyperrep
predict`` and the repo's remote code give the probes' predictions; a mismatch between the probes and the config is
refused. Off: nothing changes (the other test files check the old behaviour itself).
"""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tiny_models import make_model_folder, make_zoo
from transformers import pipeline

from hyperrep_hf import HyperRepConfig, HyperRepForPreTraining, HyperRepModel, NeuronTokenProcessor
from hyperrep_hf.cli import main
from hyperrep_hf.models.hyperrep.augmentations import NeuronPermutation, NeuronSignFlip
from hyperrep_hf.models.hyperrep.embeddings import (
    SymmetryTransforms,
    embed_vectors,
    representation_dim,
    representation_layout,
    symmetry_transforms,
)
from hyperrep_hf.models.hyperrep.pipelines import TASK, predict_networks
from hyperrep_hf.probing.baselines import compute_baseline_features
from hyperrep_hf.probing.evaluation import evaluate_model, load_zoo_arrays, set_append_weight_statistics
from hyperrep_hf.probing.ood import evaluate_ood
from hyperrep_hf.probing.probe_heads import ProbeMismatchError, load_probe_heads
from hyperrep_hf.zoo.networks import MNIST_CNN, TETRIS_MLP, make_module

LATENT_DIM = 8
BENCH = Path(__file__).resolve().parents[1] / "bench"


def tiny_encoder(processor: NeuronTokenProcessor, **fields) -> HyperRepModel:
    torch.manual_seed(0)
    config = HyperRepConfig(
        **processor.model_config_kwargs(), d_model=16, num_attention_heads=2, intermediate_size=32,
        latent_dim=LATENT_DIM, num_hidden_layers=1, dropout=0.0, **fields,
    )  # fmt: skip
    return HyperRepModel(config).eval()


def real_networks(spec, activation: str, count: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return NeuronTokenProcessor(spec).networks_to_vectors([make_module(spec, activation) for _ in range(count)])


def baseline_statistics(vectors: torch.Tensor, architecture: dict) -> np.ndarray:
    return compute_baseline_features("s(W)", {"test": vectors.numpy()}, architecture)["test"]


@pytest.mark.parametrize(("spec", "layers"), [(TETRIS_MLP, 2), (MNIST_CNN, 5)], ids=["tetris_mlp", "mnist_cnn"])
def test_appended_columns_are_the_baseline_s_w_and_z_is_untouched(spec, layers):
    processor = NeuronTokenProcessor(spec)
    vectors = real_networks(spec, "tanh", 4, seed=1)
    symmetries = {"symmetries": ["permutation"], "embedding_symmetry_samples": 3}
    plain = tiny_encoder(processor, **symmetries)
    appended = tiny_encoder(processor, **symmetries, append_weight_statistics=True)
    assert representation_layout(plain.config) == "z" and representation_layout(appended.config) == "z+s(W)"
    assert representation_dim(appended.config, processor.architecture) == LATENT_DIM + 7 * layers
    transforms = symmetry_transforms(plain.config, processor.architecture)
    z = embed_vectors(plain, processor, vectors, transforms)
    both = embed_vectors(appended, processor, vectors, transforms)
    assert z.shape == (4, LATENT_DIM) and both.shape == (4, LATENT_DIM + 7 * layers)
    assert torch.equal(both[:, :LATENT_DIM], z)  # the same encoder pass, bit for bit
    expected = baseline_statistics(vectors, processor.architecture)
    np.testing.assert_allclose(both[:, LATENT_DIM:].double().numpy(), expected, rtol=1e-6, atol=1e-9)
    assert np.ptp(expected, axis=0).max() > 0  # the networks differ in s(W): the comparison is not vacuous


@pytest.mark.parametrize(("spec", "activation"), [(TETRIS_MLP, "tanh"), (MNIST_CNN, "relu")], ids=["mlp", "cnn"])
def test_canonical_representation_is_invariant_to_permutations(spec, activation):
    processor = NeuronTokenProcessor(spec, canonical=True, canonical_activation=activation)
    model = tiny_encoder(processor, append_weight_statistics=True)
    vectors = real_networks(spec, activation, 4, seed=2)
    reference = embed_vectors(model, processor, vectors, SymmetryTransforms(processor.architecture, 1))
    generator = torch.Generator().manual_seed(3)
    permutation = NeuronPermutation(spec, num_permutations=50, generator=generator)
    for _ in range(3):
        moved = permutation(vectors, generator)
        assert not torch.equal(moved, vectors)
        representation = embed_vectors(model, processor, moved, SymmetryTransforms(processor.architecture, 1))
        torch.testing.assert_close(representation, reference, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_canonical_representation_is_invariant_to_sign_flips_though_raw_s_w_is_not(seed):
    """A tanh neuron's sign moves its layer's raw s(W); s over the canonical views (like z) does not move."""
    processor = NeuronTokenProcessor(TETRIS_MLP, canonical=True, canonical_activation="tanh")
    model = tiny_encoder(processor, append_weight_statistics=True)
    vectors = real_networks(TETRIS_MLP, "tanh", 4, seed=seed)
    identity = SymmetryTransforms(processor.architecture, 1)
    reference = embed_vectors(model, processor, vectors, identity)
    generator = torch.Generator().manual_seed(seed + 100)
    permutation = NeuronPermutation(TETRIS_MLP, num_permutations=50, generator=generator)
    moved = permutation(NeuronSignFlip(TETRIS_MLP, "tanh")(vectors, generator), generator)
    raw_before = baseline_statistics(vectors, processor.architecture)
    raw_after = baseline_statistics(moved, processor.architecture)
    assert not np.allclose(raw_before, raw_after)  # the baseline's raw s(W) reads the stored orientation
    torch.testing.assert_close(embed_vectors(model, processor, moved, identity), reference, atol=1e-6, rtol=1e-6)
    views, weights, owner = processor.canonical_views(vectors)  # s of the canonical views, blended like z
    blended = np.zeros_like(raw_before)
    np.add.at(
        blended, owner.numpy(), weights.double().numpy()[:, None] * baseline_statistics(views, processor.architecture)
    )
    np.testing.assert_allclose(reference[:, LATENT_DIM:].double().numpy(), blended, rtol=1e-5, atol=1e-7)


def test_sign_flip_average_averages_s_w_over_the_same_copies_as_z():
    processor = NeuronTokenProcessor(TETRIS_MLP)
    symmetries = {"symmetries": ["permutation", "sign_flip"], "activation": "tanh", "embedding_symmetry_samples": 5}
    model = tiny_encoder(processor, **symmetries, append_weight_statistics=True)
    vectors = real_networks(TETRIS_MLP, "tanh", 3, seed=7)
    transforms = symmetry_transforms(model.config, processor.architecture)
    representation = embed_vectors(model, processor, vectors, transforms)
    copies = [baseline_statistics(transforms(vectors, k), processor.architecture) for k in range(5)]
    np.testing.assert_allclose(
        representation[:, LATENT_DIM:].double().numpy(), np.mean(copies, axis=0), rtol=1e-5, atol=1e-7
    )
    assert not np.allclose(copies[0], copies[1])  # the copies' raw statistics differ: the average is not vacuous


def test_config_and_training_config_carry_the_option():
    with pytest.raises(ValueError, match="append_weight_statistics='yes'"):
        HyperRepConfig(append_weight_statistics="yes")
    from hyperrep_hf.training.trainer import make_model_config, make_train_config

    processor = NeuronTokenProcessor(TETRIS_MLP)
    config = make_train_config({"zoo": "unused", "output_dir": "unused", "append_weight_statistics": True})
    assert make_model_config(config, processor).append_weight_statistics is True
    assert (
        make_model_config(
            make_train_config({"zoo": "unused", "output_dir": "unused"}), processor
        ).append_weight_statistics
        is False
    )


@pytest.fixture(scope="module")
def switched_model(tmp_path_factory):
    """A tiny encoder trained without the option, switched on by `hyperrep evaluate --append-weight-statistics`."""
    zoo_dir = make_zoo(tmp_path_factory.mktemp("zoo"))
    model_dir = make_model_folder(
        zoo_dir, tmp_path_factory.mktemp("model"), model_class=HyperRepForPreTraining, latent_dim=LATENT_DIM,
        symmetries=["permutation"], embedding_symmetry_samples=2,
    )  # fmt: skip
    config_path = model_dir / "config.json"  # as a model trained before the option existed saved it
    saved = json.loads(config_path.read_text())
    assert saved.pop("append_weight_statistics") is False
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    out = tmp_path_factory.mktemp("out")
    arguments = ["evaluate", str(model_dir), "--zoo", str(zoo_dir), "--out", str(out), "--baselines", "s(W)"]
    assert main([*arguments, "--append-weight-statistics", "--quiet", "--threads", "1"]) == 0
    return model_dir, zoo_dir, out


def test_evaluate_switches_the_config_and_saves_wider_probe_heads(switched_model):
    model_dir = switched_model[0]
    assert json.loads((model_dir / "config.json").read_text())["append_weight_statistics"] is True
    assert HyperRepModel.from_pretrained(model_dir).config.append_weight_statistics is True
    index = json.loads((model_dir / "probes" / "index.json").read_text())
    assert index["probes"] and all(entry["representation"] == "z+s(W)" for entry in index["probes"])
    _, heads = load_probe_heads(model_dir)
    for head in heads.values():
        assert head.config.input_dim == LATENT_DIM + 14 and head.config.representation == "z+s(W)"
    card = (model_dir / "README.md").read_text()
    assert "z̄ ⊕ s(W)" in card and f"{LATENT_DIM + 14}" in card


def test_evaluate_reports_z_alone_beside_z_with_s_w(switched_model, tmp_path):
    model_dir, zoo_dir, out = switched_model
    document = json.loads((out / "results.json").read_text())
    assert document["methods"] == ["s(W)", "hyperrep_z", "hyperrep"] and document["representation"] == "z+s(W)"
    assert document["final_checkpoints"]["results"] and "method" not in document["final_checkpoints"]
    assert document["final_checkpoints_z_only"]["method"] == "hyperrep_z"
    assert document["final_checkpoints_z_only"]["results"]
    markdown = (out / "results.md").read_text()
    assert "| target | s(W) | hyperrep (z only) | hyperrep (z ⊕ s(W)) |" in markdown
    assert "hyperrep (z only) − s(W) | hyperrep (z ⊕ s(W)) − s(W) |" in markdown
    assert "hyperrep (z ⊕ s(W)) vs s(W)" in markdown and "hyperrep (z only) vs s(W)" in markdown
    # The z-only row is exactly the evaluation of the same encoder with the option off (nothing saved).
    plain = evaluate_model(
        model_dir, zoo_dir, tmp_path / "plain", baselines=[], plots=False, progress=False, save_to_model=False,
        append_weight_statistics=False,
    )  # fmt: skip
    assert "representation" not in plain.document
    z_only = {
        (r["target"], r["split"], r["metric"]): r["value"] for r in document["results"] if r["method"] == "hyperrep_z"
    }
    for record in plain.document["results"]:
        key = (record["target"], record["split"], record["metric"])
        assert record["method"] == "hyperrep" and record["value"] == pytest.approx(z_only[key], abs=1e-12), key
    assert json.loads((model_dir / "config.json").read_text())["append_weight_statistics"] is True  # not saved


def test_pipeline_and_predict_use_the_same_features_as_the_probes(switched_model, tmp_path):
    model_dir, zoo_dir, _ = switched_model
    zoo = load_zoo_arrays(zoo_dir)
    vectors = torch.from_numpy(zoo.vectors["test"][:3])
    predictor = pipeline(TASK, model=str(model_dir), device=-1)
    embeddings = predictor.embed(vectors)
    assert embeddings.shape == (3, LATENT_DIM + 14)
    expected = baseline_statistics(vectors, zoo.info["architecture"])
    np.testing.assert_allclose(embeddings[:, LATENT_DIM:].double().numpy(), expected, rtol=1e-6, atol=1e-9)
    predictions = predictor(vectors)
    _, heads = load_probe_heads(model_dir)
    with torch.no_grad():
        for target, head in heads.items():
            output = head(embeddings)
            for index, prediction in enumerate(predictions):
                if head.config.task == "regression":
                    value = float(output.predictions[index])
                    low, high = predictor.statistics["targets"][target]
                    assert prediction[target]["value"] == pytest.approx(min(max(value, low), high), abs=1e-6)
                else:
                    assert prediction[target]["value"] == output.predicted_labels[index]
    files = []
    for index, vector in enumerate(vectors):
        files.append(tmp_path / f"network_{index}.safetensors")
        save_file(
            {"layers.1.weight": vector[:80].reshape(5, 16), "layers.3.weight": vector[80:].reshape(4, 5)}, files[-1]
        )
    from_files = predict_networks(model_dir, files)
    assert [entry["predictions"] for entry in from_files] == predictions


def test_probes_of_another_layout_are_refused(switched_model, tmp_path):
    model_dir = Path(shutil.copytree(switched_model[0], tmp_path / "model"))
    set_append_weight_statistics(model_dir, False)  # the config says z alone, the probes read z ⊕ s(W)
    assert json.loads((model_dir / "config.json").read_text())["append_weight_statistics"] is False
    message = r"fitted on the representation 'z\+s\(W\)'.*gives 'z' \(append_weight_statistics=false\)"
    with pytest.raises(ProbeMismatchError, match=message):
        pipeline(TASK, model=str(model_dir), device=-1)
    network = tmp_path / "network.safetensors"
    save_file({"layers.1.weight": torch.zeros(5, 16), "layers.3.weight": torch.zeros(4, 5)}, network)
    with pytest.raises(ProbeMismatchError, match=message):  # not reworded as a damaged folder
        predict_networks(model_dir, [network])
    assert main(["predict", str(model_dir), str(network)]) == 2
    set_append_weight_statistics(model_dir, True)
    pipeline(TASK, model=str(model_dir), device=-1)  # matching again: loads


def test_evaluate_warns_about_other_zoos_probes_of_another_layout(switched_model, caplog):
    from hyperrep_hf.probing.evaluation import _warn_other_layouts

    model_dir = switched_model[0]
    (key,) = {entry["zoo"] for entry in json.loads((model_dir / "probes" / "index.json").read_text())["probes"]}
    with caplog.at_level("WARNING", logger="hyperrep_hf"):
        _warn_other_layouts(model_dir, key, "z+s(W)")  # the same layout: nothing to say
        assert not caplog.records
        _warn_other_layouts(model_dir, "another-zoo", "z")  # a z evaluation of another zoo beside these probes
    assert len(caplog.records) == 1 and key in caplog.text and "re-evaluate" in caplog.text


@pytest.mark.slow
def test_user_story_without_the_package_equals_the_library(switched_model, tmp_path):
    from test_remote_code import copied_model_story

    remote = copied_model_story(switched_model[0], tmp_path, seed=1)
    assert remote["tensors"]["z_bar"].shape == (4, LATENT_DIM + 14)


def test_group_weighted_probes_choose_recorded_weights_and_save_them_in_the_heads(switched_model, tmp_path):
    """--group-weights: every hyperrep probe records its weights, the note counts them, the heads carry them."""
    model_dir = shutil.copytree(switched_model[0], tmp_path / "model")
    zoo_dir, plain_out = switched_model[1], switched_model[2]
    report = evaluate_model(
        model_dir, zoo_dir, tmp_path / "out", baselines=["s(W)"], plots=False, progress=False, overwrite=True,
        group_weights=True,
    )  # fmt: skip
    document = json.loads((tmp_path / "out" / "results.json").read_text())
    assert document["group_weights"]["feature_groups"] == [LATENT_DIM, 14]
    probes = report.reports["hyperrep"].probes
    for record in document["results"]:
        if record["method"] == "hyperrep":
            assert record["group_weights"] == probes[record["target"]].group_weights
            assert set(record["group_weights"]) <= {1.0, 1 / 3, 1 / 10, 0.0} and 1.0 in record["group_weights"]
        else:
            assert "group_weights" not in record
    # Second route for the note: counted from the fitted probes, not from the records it is rendered from.
    left_out_z = sum(probe.group_weights[0] == 0 for probe in probes.values())
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert f"Of its {len(probes)} probes:" in markdown
    assert (f"z̄ left out {left_out_z}" in markdown) == (left_out_z > 0)
    # The equal-weight candidate is among those tried: validation never falls below the shared-α probe's.
    plain = json.loads((plain_out / "results.json").read_text())
    for record in plain["results"]:
        if record["method"] == "hyperrep" and record["split"] == "validation" and record["metric"] != "kendall_tau":
            assert probes[record["target"]].validation_score >= record["value"] - 1e-12, record["target"]
    _, heads = load_probe_heads(model_dir)  # the saved heads are the chosen probes, weights folded in
    for target, head in heads.items():
        weight, _ = probes[target].as_linear()
        np.testing.assert_allclose(head.linear.weight.detach().double().numpy(), weight, rtol=1e-5, atol=1e-7)
        assert head.config.group_weights == probes[target].group_weights


def test_group_weights_on_z_alone_are_refused_before_anything_is_written(tmp_path, capsys):
    zoo_dir = make_zoo(tmp_path / "zoo")
    processor = NeuronTokenProcessor.from_zoo(zoo_dir)
    model_dir = tmp_path / "model"
    tiny_encoder(processor).save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    with pytest.raises(ValueError, match=r"--group-weights .* add --append-weight-statistics"):
        evaluate_model(model_dir, zoo_dir, tmp_path / "out", baselines=[], progress=False, group_weights=True)
    assert not (tmp_path / "out").exists() and not (model_dir / "probes").exists()
    arguments = ["evaluate", str(model_dir), "--zoo", str(zoo_dir), "--out", str(tmp_path / "out"), "--group-weights"]
    assert main([*arguments, "--quiet"]) == 2
    assert "--group-weights" in capsys.readouterr().err
    assert main([*arguments, "--protocol", "small-cnn-zoo"]) == 2
    assert "not to --protocol" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (model_dir / "probes").exists()


def test_ood_probes_of_hyperrep_weigh_the_groups_too(switched_model, tmp_path):
    model_dir, zoo_dir, _ = switched_model
    document = evaluate_ood(
        model_dir, [zoo_dir, zoo_dir], tmp_path / "ood", methods=("hyperrep", "s(W)"), progress=False,
        group_weights=True,
    )  # fmt: skip
    records = [record for record in document["results"] if record["method"] == "hyperrep"]
    assert records and all(len(record["group_weights"]) == 2 for record in records)
    assert all("group_weights" not in record for record in document["results"] if record["method"] == "s(W)")
    assert document["group_weights"] == {"feature_groups": [LATENT_DIM, 14]}
    assert "weigh z̄ against s(W) (`--group-weights`" in (tmp_path / "ood" / "ood.md").read_text()


def test_the_group_weights_bench_probes_as_evaluate_does(switched_model, tmp_path):
    """bench/compare_group_weights.py: its s(W) and shared-α columns are `hyperrep evaluate`'s s(W) and hyperrep."""
    model_dir, zoo_dir, out = switched_model
    spec = importlib.util.spec_from_file_location("compare_group_weights", BENCH / "compare_group_weights.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--model", str(model_dir), "--zoo", str(zoo_dir), "--out", str(tmp_path / "gw.json")]) == 0
    (result,) = json.loads((tmp_path / "gw.json").read_text())
    evaluated = {
        (r["method"], r["target"]): 100 * r["value"]
        for r in json.loads((out / "results.json").read_text())["results"]
        if r["split"] == "test" and r["metric"] in ("r2", "accuracy")
    }
    assert result["targets"] and result["feature_groups"] == [LATENT_DIM, 14]
    for target, row in result["targets"].items():
        assert row["s(W)"] == pytest.approx(evaluated[("s(W)", target)], abs=1e-9)
        assert row["shared α"] == pytest.approx(evaluated[("hyperrep", target)], abs=1e-9)
        assert row["shared α − s(W)"][0] == pytest.approx(row["shared α"] - row["s(W)"], abs=1e-9)
        assert len(row["chosen group weights"]) == 2
