"""``weight_statistics: "s(W)+shape"``: s(W) followed by five per-layer statistics of the weights' shape.

The statistics equal an independent computation (scipy's kurtosis, numpy) on random networks of two families, do not
move under neuron permutations, separate a uniform from a normal layer of any scale, and stay finite on a constant
layer. The representation is z̄ ⊕ s(W) ⊕ shape everywhere z̄ ⊕ s(W) is (evaluation, probe heads, pipeline, card), the
``s(W)+shape`` baseline gives the same columns, and a mismatch between the probes and the config names the fields.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from tiny_models import evaluated_test_scores, make_model_folder, make_zoo, run_compare_baseline
from transformers import pipeline

from hyperrep_hf import HyperRepConfig, HyperRepForPreTraining, NeuronTokenProcessor
from hyperrep_hf.cli import main
from hyperrep_hf.models.hyperrep.augmentations import NeuronPermutation
from hyperrep_hf.models.hyperrep.embeddings import (
    SymmetryTransforms,
    embed_vectors,
    representation_dim,
    representation_layout,
)
from hyperrep_hf.models.hyperrep.pipelines import TASK
from hyperrep_hf.models.hyperrep.weight_statistics import (
    layer_slices,
    num_weight_statistics,
    shape_statistics,
    weight_statistics,
    weight_statistics_variant,
)
from hyperrep_hf.probing.baselines import compute_baseline_features
from hyperrep_hf.probing.evaluation import load_zoo_arrays, set_append_weight_statistics
from hyperrep_hf.probing.probe_heads import ProbeMismatchError, load_probe_heads
from hyperrep_hf.zoo.networks import MNIST_CNN, TETRIS_MLP, make_module

LATENT_DIM = 8


def random_networks(spec, count: int, seed: int) -> np.ndarray:
    """Networks of ``spec`` with each layer drawn at its own random scale, shift and distribution."""
    rng = np.random.default_rng(seed)
    architecture = NeuronTokenProcessor(spec).architecture
    vectors = np.zeros((count, architecture["num_parameters"]), dtype=np.float32)
    for row in range(count):
        for layer in layer_slices(architecture):
            for part in (layer.weight, layer.bias):
                if part is None:
                    continue
                size = part.stop - part.start
                draw = rng.standard_normal(size) if rng.random() < 0.5 else rng.uniform(-1, 1, size)
                vectors[row, part] = draw * 10 ** rng.uniform(-2, 1) + rng.normal(0, 0.1)
    return vectors


def independent_shape(vectors: np.ndarray, architecture: dict) -> np.ndarray:
    columns = []
    for layer in layer_slices(architecture):
        for row in np.asarray(vectors[:, layer.weight], dtype=np.float64):
            std = row.std()
            columns.append(
                [
                    stats.kurtosis(row, fisher=False, bias=True),
                    np.mean(np.abs(row - row.mean())) / std,
                    np.log(std),
                    np.count_nonzero(row > 0) / row.size,
                    np.max(np.abs(row)) / std,
                ]
            )
    per_layer = np.asarray(columns).reshape(len(layer_slices(architecture)), len(vectors), 5)
    return np.concatenate(list(per_layer), axis=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("spec", [TETRIS_MLP, MNIST_CNN], ids=["tetris_mlp", "mnist_cnn"])
def test_shape_statistics_equal_an_independent_computation(spec, seed):
    architecture = NeuronTokenProcessor(spec).architecture
    vectors = random_networks(spec, 6, seed)
    shape = shape_statistics(vectors, architecture)
    layers = len(layer_slices(architecture))
    assert shape.shape == (6, 5 * layers) and shape.dtype == np.float64
    np.testing.assert_allclose(shape, independent_shape(vectors, architecture), rtol=1e-9, atol=1e-12)
    both = weight_statistics_variant(vectors, architecture, "s(W)+shape")
    assert both.shape[1] == num_weight_statistics(architecture, "s(W)+shape") == 12 * layers
    np.testing.assert_array_equal(both[:, : 7 * layers], weight_statistics(vectors, architecture))
    np.testing.assert_array_equal(both[:, 7 * layers :], shape)
    baseline = compute_baseline_features("s(W)+shape", {"test": vectors}, architecture)["test"]
    np.testing.assert_array_equal(baseline, both)


@pytest.mark.parametrize("seed", [3, 4, 5])
@pytest.mark.parametrize("spec", [TETRIS_MLP, MNIST_CNN], ids=["tetris_mlp", "mnist_cnn"])
def test_shape_statistics_do_not_move_under_neuron_permutations(spec, seed):
    architecture = NeuronTokenProcessor(spec).architecture
    vectors = torch.from_numpy(random_networks(spec, 4, seed))
    generator = torch.Generator().manual_seed(seed)
    moved = NeuronPermutation(spec, num_permutations=20, generator=generator)(vectors, generator)
    assert not torch.equal(moved, vectors)
    np.testing.assert_allclose(
        shape_statistics(moved.numpy(), architecture), shape_statistics(vectors.numpy(), architecture), rtol=1e-9
    )


def test_kurtosis_separates_uniform_from_normal_at_any_scale():
    architecture = {"parameters": [{"name": "layer.weight", "shape": [200, 100]}]}
    rng = np.random.default_rng(0)
    for scale in (1e-3, 1.0, 1e3):
        uniform = shape_statistics(rng.uniform(-scale, scale, (1, 20_000)), architecture)[0]
        normal = shape_statistics(rng.normal(0.0, scale, (1, 20_000)), architecture)[0]
        assert uniform[0] == pytest.approx(1.8, abs=0.05) and normal[0] == pytest.approx(3.0, abs=0.15)
        assert uniform[1] == pytest.approx(np.sqrt(3) / 2, abs=0.01) and normal[1] == pytest.approx(0.798, abs=0.01)
        assert uniform[3] == pytest.approx(0.5, abs=0.02) and normal[2] == pytest.approx(np.log(scale), abs=0.02)


def test_a_constant_layer_gives_finite_statistics():
    architecture = NeuronTokenProcessor(TETRIS_MLP).architecture
    vectors = np.zeros((2, 100))
    vectors[1, :80] = 0.5  # the first layer constant, the second all zero
    shape = shape_statistics(vectors, architecture)
    assert np.isfinite(shape).all()
    assert shape[0, 0] == 0 and shape[1, 3] == 1.0 and shape[0, 3] == 0.0


def test_unknown_variants_are_refused_by_name():
    with pytest.raises(ValueError, match=r"weight_statistics='shape'.*\['s\(W\)', 's\(W\)\+shape'\]"):
        HyperRepConfig(weight_statistics="shape")
    architecture = NeuronTokenProcessor(TETRIS_MLP).architecture
    with pytest.raises(ValueError, match="Unknown weight statistics 'shape'"):
        weight_statistics_variant(np.zeros((1, 100)), architecture, "shape")


@pytest.mark.parametrize(("spec", "activation"), [(TETRIS_MLP, "tanh"), (MNIST_CNN, "relu")], ids=["mlp", "cnn"])
def test_the_representation_appends_the_shape_and_stays_invariant(spec, activation):
    processor = NeuronTokenProcessor(spec, canonical=True, canonical_activation=activation)
    torch.manual_seed(0)
    config = HyperRepConfig(
        **processor.model_config_kwargs(), d_model=16, num_attention_heads=2, intermediate_size=32,
        latent_dim=LATENT_DIM, num_hidden_layers=1, append_weight_statistics=True, weight_statistics="s(W)+shape",
    )  # fmt: skip
    from hyperrep_hf import HyperRepModel

    model = HyperRepModel(config).eval()
    layers = len(layer_slices(processor.architecture))
    assert representation_layout(config) == "z+s(W)+shape"
    assert representation_dim(config, processor.architecture) == LATENT_DIM + 12 * layers
    torch.manual_seed(1)
    vectors = processor.networks_to_vectors([make_module(spec, activation) for _ in range(4)])
    identity = SymmetryTransforms(processor.architecture, 1)
    reference = embed_vectors(model, processor, vectors, identity)
    assert reference.shape == (4, LATENT_DIM + 12 * layers)
    views, weights, owner = processor.canonical_views(vectors)  # the appended values: those of the canonical views
    expected = np.zeros((4, 12 * layers))
    statistics = weight_statistics_variant(views.numpy(), processor.architecture, "s(W)+shape")
    np.add.at(expected, owner.numpy(), weights.double().numpy()[:, None] * statistics)
    np.testing.assert_allclose(reference[:, LATENT_DIM:].double().numpy(), expected, rtol=1e-5, atol=1e-6)
    generator = torch.Generator().manual_seed(2)
    moved = NeuronPermutation(spec, num_permutations=30, generator=generator)(vectors, generator)
    torch.testing.assert_close(embed_vectors(model, processor, moved, identity), reference, atol=1e-5, rtol=1e-5)


def test_the_training_config_carries_the_field():
    from hyperrep_hf.training.trainer import make_model_config, make_train_config

    processor = NeuronTokenProcessor(TETRIS_MLP)
    fields = {"zoo": "unused", "output_dir": "unused", "append_weight_statistics": True}
    config = make_train_config({**fields, "weight_statistics": "s(W)+shape"})
    assert make_model_config(config, processor).weight_statistics == "s(W)+shape"
    assert make_model_config(make_train_config(fields), processor).weight_statistics == "s(W)"


@pytest.fixture(scope="module")
def shape_model(tmp_path_factory):
    """A tiny encoder switched to z̄ ⊕ s(W) ⊕ shape by `hyperrep evaluate --weight-statistics s(W)+shape`."""
    zoo_dir = make_zoo(tmp_path_factory.mktemp("zoo"))
    model_dir = make_model_folder(
        zoo_dir, tmp_path_factory.mktemp("model"), model_class=HyperRepForPreTraining, latent_dim=LATENT_DIM,
        symmetries=["permutation"],
    )  # fmt: skip
    out = tmp_path_factory.mktemp("out")
    arguments = ["evaluate", str(model_dir), "--zoo", str(zoo_dir), "--out", str(out), "--quiet", "--threads", "1"]
    assert main([*arguments, "--baselines", "s(W)", "s(W)+shape", "--weight-statistics", "s(W)+shape"]) == 0
    return model_dir, zoo_dir, out


def test_evaluate_writes_the_config_probes_report_and_card(shape_model):
    model_dir, _, out = shape_model
    saved = json.loads((model_dir / "config.json").read_text())
    assert saved["append_weight_statistics"] is True and saved["weight_statistics"] == "s(W)+shape"
    _, heads = load_probe_heads(model_dir)
    assert heads and all(head.config.representation == "z+s(W)+shape" for head in heads.values())
    assert all(head.config.input_dim == LATENT_DIM + 24 for head in heads.values())
    document = json.loads((out / "results.json").read_text())
    assert document["representation"] == "z+s(W)+shape"
    assert document["methods"] == ["s(W)", "s(W)+shape", "hyperrep_z", "hyperrep"]
    markdown = (out / "results.md").read_text()
    assert "| s(W) ⊕ shape |" in markdown and "hyperrep (z ⊕ s(W) ⊕ shape)" in markdown
    card = (model_dir / "README.md").read_text()
    assert "z̄ ⊕ s(W) ⊕ shape" in card and f"{LATENT_DIM} + 24 = {LATENT_DIM + 24} values" in card


def test_the_baseline_bench_compares_with_the_shape_as_evaluate_does(shape_model, tmp_path):
    """bench/compare_baseline.py --baseline 's(W)+shape': evaluate's scores, and intervals for every target."""
    model_dir, zoo_dir, out = shape_model
    result = run_compare_baseline(model_dir, zoo_dir, tmp_path / "b.json", "--baseline", "s(W)+shape")
    evaluated = evaluated_test_scores(out)
    assert result["s(W)+shape_width"] == 24 and result["representation_width"] == LATENT_DIM + 24
    assert set(result["targets"]) == {target for _, target in evaluated}
    for target, row in result["targets"].items():
        for method in ("s(W)", "s(W)+shape", "hyperrep"):
            assert row[method] == pytest.approx(evaluated[(method, target)], abs=1e-9), (method, target)
        difference, low, high = row["hyperrep − s(W)+shape"]
        assert difference == pytest.approx(row["hyperrep"] - row["s(W)+shape"], abs=1e-9) and low <= high


def test_the_pipeline_reads_the_shape_and_refuses_a_mismatch(shape_model, tmp_path):
    model_dir, zoo_dir, _ = shape_model
    zoo = load_zoo_arrays(zoo_dir)
    vectors = torch.from_numpy(zoo.vectors["test"][:3])
    predictor = pipeline(TASK, model=str(model_dir), device=-1)
    embeddings = predictor.embed(vectors)
    expected = weight_statistics_variant(vectors.numpy(), zoo.info["architecture"], "s(W)+shape")
    np.testing.assert_allclose(embeddings[:, LATENT_DIM:].double().numpy(), expected, rtol=1e-6, atol=1e-9)
    assert len(predictor(vectors)) == 3
    copy = Path(shutil.copytree(model_dir, tmp_path / "model"))
    set_append_weight_statistics(copy, True, "s(W)")  # the config now says s(W) alone; the probes read the shape
    message = (
        r"'z\+s\(W\)\+shape'.*gives 'z\+s\(W\)'.*set append_weight_statistics=true, weight_statistics='s\(W\)\+shape'"
    )
    with pytest.raises(ProbeMismatchError, match=message):
        pipeline(TASK, model=str(copy), device=-1)
    set_append_weight_statistics(copy, True, "s(W)+shape")
    pipeline(TASK, model=str(copy), device=-1)  # matching again: loads


@pytest.mark.slow
def test_user_story_without_the_package_equals_the_library(shape_model, tmp_path):
    """The shape statistics travel in the repo's remote code: a Python without hyperrep_hf gives the same z̄."""
    from test_remote_code import copied_model_story

    remote = copied_model_story(shape_model[0], tmp_path, seed=3)
    assert remote["tensors"]["z_bar"].shape == (4, LATENT_DIM + 24)


def test_weight_statistics_with_no_append_is_refused_before_anything_is_written(tmp_path, capsys):
    zoo_dir = make_zoo(tmp_path / "zoo")
    out = tmp_path / "out"
    code = main(
        ["evaluate", str(tmp_path / "none"), "--zoo", str(zoo_dir), "--out", str(out), "--weight-statistics",
         "s(W)+shape", "--no-append-weight-statistics"]
    )  # fmt: skip
    assert code == 2 and "--weight-statistics" in capsys.readouterr().err and not out.exists()
