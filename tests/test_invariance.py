"""One network, one answer: the canonical form makes z exactly invariant to neuron permutations and sign flips.

Real networks of every shipped architecture (Tetris MLP, the 2464-parameter CNN, a dropout CNN, the GAP CNN) are
transformed in random function-preserving ways; the function, the canonical views, the embeddings and the
pipeline's predictions must not change. Equal and near-equal keys must not make the answer jump.
"""

import json

import numpy as np
import pytest
import torch

from hyperrep_hf import HyperRepConfig, HyperRepModel, NeuronTokenProcessor
from hyperrep_hf.models.hyperrep.augmentations import NeuronPermutation, NeuronSignFlip, sign_flip_layers
from hyperrep_hf.models.hyperrep.embeddings import SymmetryTransforms, embed_vectors
from hyperrep_hf.probing.report import bootstrap_difference, last_epoch_rows
from hyperrep_hf.zoo.networks import MNIST_CNN, SMALL_CNN_ZOO, TETRIS_MLP, NetworkSpec, make_module

DROPOUT_CNN = NetworkSpec.parse(
    (1, 12, 12),
    ["conv:6:3", "act", "dropout", "conv:5:3:s2", "act", "dropout", "flatten", "linear:7", "act", "linear:3"],
    "dropout_cnn",
)
ARCHITECTURES = [
    (TETRIS_MLP, "tanh"),
    (MNIST_CNN, "tanh"),  # conv1/conv2 feed max pooling: permutations only there, signs after conv3 and fc1
    (DROPOUT_CNN, "tanh"),
    (SMALL_CNN_ZOO, "tanh"),
    (MNIST_CNN, "relu"),  # no sign flips at all
]
IDS = [f"{spec.name}-{activation}" for spec, activation in ARCHITECTURES]


def real_networks(spec: NetworkSpec, activation: str, count: int, seed: int) -> torch.Tensor:
    """Flat vectors of ``count`` freshly initialised torch modules (PyTorch's default init), biases included."""
    torch.manual_seed(seed)
    processor = NeuronTokenProcessor(spec)
    return processor.networks_to_vectors([make_module(spec, activation) for _ in range(count)])


def random_symmetry(spec: NetworkSpec, activation: str, generator: torch.Generator):
    """A random function-preserving transform the architecture admits: a permutation, then sign flips (if any)."""
    permutation = NeuronPermutation(spec, num_permutations=50, generator=generator)
    flip = NeuronSignFlip(spec, activation) if sign_flip_layers(spec, activation) else None

    def apply(vectors):
        vectors = permutation(vectors, generator)
        return flip(vectors, generator) if flip is not None else vectors

    return apply


def logits(spec, activation, processor, vectors, inputs):
    module = make_module(spec, activation).double().eval()
    outputs = []
    with torch.no_grad():
        for state_dict in processor.vectors_to_state_dicts(vectors):
            module.load_state_dict({name: value.double() for name, value in state_dict.items()})
            outputs.append(module(inputs))
    return torch.stack(outputs)


def blended(processor, vectors, **kwargs):
    """Σ_b p_b · canon_b(w) per network (float64): what the encoder's blend sees, as one comparable vector."""
    views, weights, owner = processor.canonical_views(vectors, **kwargs)
    total = torch.zeros(vectors.shape[0], vectors.shape[1], dtype=torch.float64)
    return total.index_add_(0, owner, views.double() * weights[:, None])


def tiny_encoder(processor, seed=0):
    torch.manual_seed(seed)
    config = HyperRepConfig(
        **processor.model_config_kwargs(), d_model=16, num_attention_heads=2, intermediate_size=32, latent_dim=6,
        num_hidden_layers=1, dropout=0.0,
    )  # fmt: skip
    return HyperRepModel(config).eval()


@pytest.mark.parametrize(("spec", "activation"), ARCHITECTURES, ids=IDS)
def test_random_equivalent_networks_get_the_same_canonical_form_and_embedding(spec, activation):
    processor = NeuronTokenProcessor(spec, canonical=True, canonical_activation=activation)
    vectors = real_networks(spec, activation, 6, seed=1)
    model = tiny_encoder(processor)
    inputs = torch.randn(8, *spec.input_shape, generator=torch.Generator().manual_seed(2)).double()
    reference_logits = logits(spec, activation, processor, vectors, inputs)
    reference_views = blended(processor, vectors)
    reference_z = embed_vectors(model, processor, vectors, SymmetryTransforms(processor.architecture, 1))
    hard = processor.canonicalize(vectors)
    generator = torch.Generator().manual_seed(3)
    for _ in range(5):
        moved = random_symmetry(spec, activation, generator)(vectors)
        assert not torch.equal(moved, vectors)  # the transform does something ...
        torch.testing.assert_close(  # ... yet the function is the same
            logits(spec, activation, processor, moved, inputs), reference_logits, atol=1e-12, rtol=1e-12
        )
        torch.testing.assert_close(blended(processor, moved), reference_views, atol=1e-12, rtol=0)
        # Fresh networks have no exact ties: the hard form is the same vector bit for bit.
        assert torch.equal(processor.canonicalize(moved), hard)
        z = embed_vectors(model, processor, moved, SymmetryTransforms(processor.architecture, 1))
        torch.testing.assert_close(z, reference_z, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(("spec", "activation"), ARCHITECTURES, ids=IDS)
def test_canonical_form_is_equivalent_to_the_network_and_idempotent(spec, activation):
    processor = NeuronTokenProcessor(spec, canonical=True, canonical_activation=activation)
    vectors = real_networks(spec, activation, 4, seed=4)
    inputs = torch.randn(8, *spec.input_shape, generator=torch.Generator().manual_seed(5)).double()
    views, weights, owner = processor.canonical_views(vectors)
    torch.testing.assert_close(
        logits(spec, activation, processor, views, inputs),
        logits(spec, activation, processor, vectors[owner], inputs),
        atol=1e-12,
        rtol=1e-12,
    )
    torch.testing.assert_close(
        torch.zeros(4, dtype=torch.float64).index_add_(0, owner, weights), torch.ones(4, dtype=torch.float64)
    )
    hard = processor.canonicalize(vectors)
    assert torch.equal(processor.canonicalize(hard), hard)


def test_relu_networks_are_not_sign_canonicalised():
    """Before relu a sign flip changes the function: the canonical form must not use one."""
    processor = NeuronTokenProcessor(TETRIS_MLP, canonical=True, canonical_activation="relu")
    vectors = real_networks(TETRIS_MLP, "relu", 20, seed=6)
    hidden = processor.canonicalize(vectors)[:, :80].view(20, 5, 16)
    assert (hidden.sum(-1) < 0).any()  # some neurons keep a negative incoming sum
    assert (hidden.sum(-1).diff(dim=1) >= 0).all()  # sorted by the signed sum


def test_state_dict_without_a_layer_list_gets_no_sign_canonicalisation():
    processor = NeuronTokenProcessor.from_network(
        make_module(TETRIS_MLP).state_dict(), canonical=True, canonical_activation="tanh"
    )
    assert processor.architecture["layers"] is None and processor._sign_layers == set()


def tied_network(gap: float, sign_key: float) -> torch.Tensor:
    """A Tetris network with hidden neurons 0 and 1 at sort keys ``gap`` apart and neuron 2's incoming sum at
    ``sign_key`` (0: an exact sign tie); the other neurons are far from any tie."""
    generator = torch.Generator().manual_seed(7)
    first = torch.randn(5, 16, generator=generator)
    first -= first.mean(1, keepdim=True)  # incoming sums 0, then placed exactly
    first[:, 0] += torch.tensor([3.0, 3.0 + gap, sign_key, 6.0, 9.0]) / 1.0
    second = torch.randn(4, 5, generator=generator)
    return torch.cat([first.reshape(-1), second.reshape(-1)])[None].double().float()


@pytest.mark.parametrize("gap", [0.0, 1e-7])
def test_equal_and_near_equal_keys_are_blended_and_still_invariant(gap):
    processor = NeuronTokenProcessor(TETRIS_MLP, canonical=True, canonical_activation="tanh")
    vectors = tied_network(gap, 0.0)
    views, weights, _ = processor.canonical_views(vectors)
    assert views.shape[0] == 4  # a sort tie × a sign tie: four branches ...
    torch.testing.assert_close(weights, torch.full((4,), 0.25, dtype=torch.float64), atol=1e-4, rtol=0)
    reference = blended(processor, vectors)
    generator = torch.Generator().manual_seed(8)
    for _ in range(10):
        moved = random_symmetry(TETRIS_MLP, "tanh", generator)(vectors)
        torch.testing.assert_close(blended(processor, moved), reference, atol=1e-6, rtol=0)


def test_three_bit_identical_keys_are_still_invariant():
    """Integer weights make three incoming sums exactly equal: the squared norm orders them, invariantly."""
    processor = NeuronTokenProcessor(TETRIS_MLP, canonical=True, canonical_activation="tanh")
    generator = torch.Generator().manual_seed(12)
    for _ in range(5):
        first = torch.randint(-3, 4, (5, 16), generator=generator).float()
        first[:, 0] += torch.tensor([5.0, 5.0, 5.0, 9.0, 14.0]) - first.sum(1)
        vectors = torch.cat([first.reshape(-1), torch.randn(20, generator=generator)])[None]
        assert (vectors[0, :80].view(5, 16).sum(1)[:3] == 5).all()
        reference = blended(processor, vectors)
        for _ in range(10):
            moved = random_symmetry(TETRIS_MLP, "tanh", generator)(vectors)
            torch.testing.assert_close(blended(processor, moved), reference, atol=1e-6, rtol=0)


def test_the_answer_moves_by_order_delta_across_a_tie():
    """Perturbing a tie by ±δ moves the blended form and z by O(δ); the hard form jumps (the test can fail)."""
    processor = NeuronTokenProcessor(TETRIS_MLP, canonical=True, canonical_activation="tanh")
    model = tiny_encoder(processor)
    transforms = SymmetryTransforms(processor.architecture, 1)
    for which in ("sort", "sign"):
        changes = []
        for delta in (1e-3, 1e-4):
            below = tied_network(-delta if which == "sort" else 0.0, -delta if which == "sign" else 0.0)
            above = tied_network(delta if which == "sort" else 0.0, delta if which == "sign" else 0.0)
            jump = (processor.canonicalize(below) - processor.canonicalize(above)).abs().max()
            assert jump > 0.1  # the hard canonical form is discontinuous at the tie
            moved = (blended(processor, below) - blended(processor, above)).abs().max()
            z_moved = embed_vectors(model, processor, below, transforms) - embed_vectors(
                model, processor, above, transforms
            )
            changes.append(float(z_moved.abs().max()))
            assert moved < 20 * delta
        assert changes[1] < 0.2 * changes[0] + 1e-6  # shrinks with δ, like δ


def test_branches_beyond_the_bound_are_decided_hard_and_reported():
    processor = NeuronTokenProcessor(TETRIS_MLP, canonical=True, canonical_activation="tanh", canonical_max_branches=2)
    vectors = tied_network(0.0, 0.0)  # two ties: four branches wanted
    views, weights, _, truncated = processor.canonical_views(vectors, return_truncated=True)
    assert views.shape[0] == 2 and bool(truncated[0])
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    free = real_networks(TETRIS_MLP, "tanh", 3, seed=9)
    assert not processor.canonical_views(free, return_truncated=True)[3].any()


def test_canonical_options_travel_in_the_processor_config(tmp_path):
    processor = NeuronTokenProcessor(TETRIS_MLP, canonical=True, canonical_activation="tanh", canonical_epsilon=0.1)
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["canonical"] is True and saved["canonical_activation"] == "tanh"
    loaded = NeuronTokenProcessor.from_pretrained(tmp_path)
    vectors = real_networks(TETRIS_MLP, "tanh", 5, seed=10)
    assert torch.equal(loaded.canonicalize(vectors), processor.canonicalize(vectors))
    with pytest.raises(ValueError, match="canonical_epsilon"):
        NeuronTokenProcessor(TETRIS_MLP, canonical_epsilon=-1.0)


@pytest.fixture(scope="module")
def canonical_model(tmp_path_factory):
    """A tiny canonical Tetris encoder with probes fitted (hyperrep evaluate, with s(W)) on a tiny TETRIS-SEED zoo."""
    from hyperrep_hf.probing.evaluation import evaluate_model, load_zoo_arrays
    from hyperrep_hf.zoo.folder import build_zoo
    from hyperrep_hf.zoo.recipes import BuildOptions, load_recipe

    zoo_dir = tmp_path_factory.mktemp("zoo")
    build_zoo(load_recipe("tetris_seed"), zoo_dir, BuildOptions(num_models=30, epochs=3, subset=120), progress=False)
    processor = NeuronTokenProcessor.from_zoo(zoo_dir, canonical=True, canonical_activation="tanh")
    model_dir = tmp_path_factory.mktemp("model")
    tiny_encoder(processor).save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    out = tmp_path_factory.mktemp("out")
    report = evaluate_model(model_dir, zoo_dir, out, baselines=["s(W)"], plots=False, progress=False)
    return model_dir, load_zoo_arrays(zoo_dir), report, out, zoo_dir


@pytest.mark.slow
def test_pipeline_predictions_do_not_move_under_symmetries(canonical_model):
    from hyperrep_hf.models.hyperrep.pipelines import make_prediction_pipeline

    model_dir, zoo, _, _, _ = canonical_model
    predictor = make_prediction_pipeline(model_dir, device=-1)
    assert predictor.feature_extractor.canonical
    vectors = torch.from_numpy(zoo.vectors["test"])
    reference = predictor(vectors)
    generator = torch.Generator().manual_seed(11)
    for _ in range(3):
        moved = predictor(random_symmetry(TETRIS_MLP, "tanh", generator)(vectors))
        for before, after in zip(reference, moved, strict=True):
            for target, value in before.items():
                assert after[target]["value"] == pytest.approx(value["value"], abs=1e-5)


@pytest.mark.slow
def test_evaluate_reports_final_checkpoints_with_bootstrap_intervals(canonical_model):
    _, zoo, report, out, _ = canonical_model
    comparison = report.document["final_checkpoints"]
    assert comparison["baseline"] == "s(W)"
    subsets = {(r["target"], r["subset"], r["metric"]) for r in comparison["results"]}
    assert ("test_accuracy", "final_checkpoint", "kendall_tau") in subsets
    assert ("test_accuracy", "all_epochs", "r2") in subsets
    finals = [r for r in comparison["results"] if r["subset"] == "final_checkpoint"]
    assert all(r["num_rows"] <= np.unique(zoo.model_ids["test"]).size for r in finals)
    intervals = [r for r in comparison["results"] if r["low"] is not None]
    assert intervals and all(r["low"] <= r["high"] for r in intervals)
    assert "Final checkpoints and all epochs" in (out / "results.md").read_text()
    assert json.loads((out / "results.json").read_text())["final_checkpoints"]["results"]


def test_last_epoch_rows_picks_each_models_final_checkpoint():
    rng = np.random.default_rng(0)
    model_ids = np.repeat(np.arange(7), 5)
    epochs = np.tile(np.arange(5), 7).astype(float)
    order = rng.permutation(model_ids.size)
    rows = last_epoch_rows(model_ids[order], epochs[order])
    assert sorted(model_ids[order][rows].tolist()) == list(range(7)) and (epochs[order][rows] == 4).all()


def test_bootstrap_difference_separates_signal_from_noise():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=300)
    groups = np.repeat(np.arange(100), 3)
    good, bad = truth + 0.1 * rng.normal(size=300), truth + 2.0 * rng.normal(size=300)
    for metric in ("r2", "kendall_tau"):
        better = bootstrap_difference(metric, truth, good, bad, groups, num_resamples=200)
        assert better["low"] > 0 and better["difference"] > 0
        same = bootstrap_difference(metric, truth, good, good, groups, num_resamples=50)
        assert same["low"] == same["high"] == same["difference"] == 0


@pytest.mark.slow
def test_training_with_canonical_sees_canonical_rows_and_saves_a_canonical_processor(canonical_model, tmp_path):
    from hyperrep_hf.training.trainer import TrainConfig, load_zoo_tensors, make_model_config

    zoo_dir = canonical_model[4]
    config = TrainConfig(zoo=str(zoo_dir), output_dir=str(tmp_path), canonical=True, permute=False)
    data = load_zoo_tensors(config)
    processor = data.processor
    assert processor.canonical and processor.canonical_activation == "tanh" and processor._sign_layers == {0}
    for vectors in data.vectors.values():
        assert torch.equal(processor.canonicalize(vectors), vectors)  # already canonical
        assert (vectors[:, :80].view(-1, 5, 16).sum(-1) >= 0).all()  # signs fixed before tanh
    # Normalisation is fitted on the canonical rows (a sign fix moves the layer means).
    first = data.vectors["train"][:, :80].double()
    assert processor.normalization_stats["mean"][0] == pytest.approx(float(first.mean()), rel=1e-5)
    assert make_model_config(config, processor, data.zoo_info).activation == "tanh"
