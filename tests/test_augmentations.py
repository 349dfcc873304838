"""Augmentations: permuted networks compute the same function (real nn.Module forward passes), exact identities,
erasing geometry, independent views."""

import math
from copy import deepcopy

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_processing import network_specs

from hyperrep_hf.models.hyperrep.augmentations import (
    GaussianNoise,
    NeuronPermutation,
    NeuronSignFlip,
    RandomErasing,
    TwoViewCollator,
    make_augmentations,
    make_permutation_indices,
    sign_flip_layers,
)
from hyperrep_hf.models.hyperrep.processing_hyperrep import NeuronTokenProcessor
from hyperrep_hf.zoo.networks import MNIST_CNN, SMALL_CNN_ZOO, TETRIS_MLP, NetworkSpec, make_module

MLP_WITH_DROPOUT = NetworkSpec.parse(
    (12,), ["linear:7", "dropout", "act", "linear:6", "act", "dropout", "linear:5", "act", "linear:3"], "mlp_dropout"
)


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny forward passes: a second thread only adds contention (10-50x slower on a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def assert_permutations_preserve_the_function(spec: NetworkSpec, permutation: NeuronPermutation, seed: int) -> None:
    """Loads each permuted state dict into a fresh module and compares outputs on random inputs."""
    torch.manual_seed(seed)
    module = make_module(spec, activation="tanh", dropout=0.5).eval()
    for parameter in module.parameters():  # biases too: the default init of some layers leaves them small
        torch.nn.init.normal_(parameter, std=0.5)
    processor = NeuronTokenProcessor(spec)
    vector = processor.networks_to_vectors(module)
    permuted = vector[0][permutation.indices.long()]  # every precomputed permutation
    inputs = torch.randn(16, *spec.input_shape)
    expected = module(inputs)
    changed = 0
    for state_dict in processor.vectors_to_state_dicts(permuted):
        copy = make_module(spec, activation="tanh", dropout=0.5).eval()
        copy.load_state_dict(state_dict)
        assert torch.allclose(copy(inputs), expected, rtol=0, atol=1e-5)
        changed += not torch.equal(torch.cat([t.reshape(-1) for t in state_dict.values()]), vector[0])
    assert changed >= permutation.num_permutations - 1  # at most the identity leaves the weights unchanged


def test_all_120_tetris_permutations_preserve_the_function():
    permutation = NeuronPermutation(TETRIS_MLP)
    assert permutation.enumerated and permutation.num_permutations == math.factorial(5) == 120
    assert len({tuple(row.tolist()) for row in permutation.indices}) == 120
    assert_permutations_preserve_the_function(TETRIS_MLP, permutation, seed=0)


@pytest.mark.parametrize("spec", [MNIST_CNN, MLP_WITH_DROPOUT, SMALL_CNN_ZOO], ids=lambda spec: spec.name)
def test_random_permutations_preserve_the_function(spec):
    permutation = NeuronPermutation(spec, num_permutations=20, generator=torch.Generator().manual_seed(1))
    assert not permutation.enumerated and permutation.num_permutations == 20
    assert_permutations_preserve_the_function(spec, permutation, seed=1)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=network_specs(), seed=st.integers(0, 2**16))
def test_permutations_preserve_the_function_of_random_networks(spec, seed):
    generator = torch.Generator().manual_seed(seed)
    permutation = NeuronPermutation(spec, num_permutations=4, enumerate_limit=6, generator=generator)
    for row in permutation.indices:  # a gather index that is a permutation of the flat vector
        assert torch.equal(row.sort().values, torch.arange(spec.num_parameters, dtype=row.dtype))
    torch.manual_seed(seed)
    module = make_module(spec).eval()
    processor = NeuronTokenProcessor(spec)
    vector = processor.networks_to_vectors(module)[0]
    inputs = torch.randn(8, *spec.input_shape)
    for state_dict in processor.vectors_to_state_dicts(vector[permutation.indices.long()]):
        copy = make_module(spec).eval()
        copy.load_state_dict(state_dict)
        assert torch.allclose(copy(inputs), module(inputs), rtol=0, atol=1e-5)


@pytest.mark.parametrize("spec", [TETRIS_MLP, MLP_WITH_DROPOUT, SMALL_CNN_ZOO, MNIST_CNN], ids=lambda spec: spec.name)
def test_sign_flips_preserve_the_function_of_tanh_networks(spec):
    torch.manual_seed(0)
    module = make_module(spec, activation="tanh", dropout=0.5).eval()
    for parameter in module.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    processor = NeuronTokenProcessor(spec)
    vectors = processor.networks_to_vectors(module).repeat(8, 1)
    flipped = NeuronSignFlip(spec, "tanh")(vectors, torch.Generator().manual_seed(0))
    inputs = torch.randn(16, *spec.input_shape)
    expected = module(inputs)
    for state_dict in processor.vectors_to_state_dicts(flipped):
        copy = make_module(spec, activation="tanh", dropout=0.5).eval()
        copy.load_state_dict(state_dict)
        assert torch.allclose(copy(inputs), expected, rtol=0, atol=1e-5)
    assert torch.equal(flipped.abs(), vectors.abs())
    assert (flipped != vectors).any(dim=1).sum() >= 6  # most of the 8 copies changed
    # Weights of no flippable neuron (the output layer's bias, layers before max pooling) never change sign.
    untouched = (NeuronSignFlip(spec, "tanh").row_neuron < 0) & (NeuronSignFlip(spec, "tanh").column_neuron < 0)
    assert torch.equal(flipped[:, untouched], vectors[:, untouched])


def test_sign_flips_skip_layers_before_max_pooling_and_non_odd_activations():
    assert sign_flip_layers(TETRIS_MLP, "tanh") == [0]
    assert sign_flip_layers(MNIST_CNN, "tanh") == [2, 3]  # conv1 and conv2 feed max pooling
    assert sign_flip_layers(SMALL_CNN_ZOO, "tanh") == [0, 1, 2]
    assert sign_flip_layers(TETRIS_MLP, "relu") == []
    with pytest.raises(ValueError, match="relu"):
        NeuronSignFlip(TETRIS_MLP, "relu")
    pooled = NetworkSpec.parse((1, 6, 6), ["conv:3:3", "maxpool:2", "act", "flatten", "linear:2"], "pooled")
    with pytest.raises(ValueError, match="max"):
        NeuronSignFlip(pooled, "tanh")


def test_a_weight_between_two_flippable_layers_takes_both_signs():
    spec = NetworkSpec.parse((3,), ["linear:2:nobias", "act", "linear:2:nobias", "act", "linear:1:nobias"], "deep")
    flip = NeuronSignFlip(spec, "tanh")
    vectors = torch.ones(256, spec.num_parameters)
    flipped = flip(vectors, torch.Generator().manual_seed(0))
    first, middle = flipped[:, :6].view(-1, 2, 3), flipped[:, 6:10].view(-1, 2, 2)
    last = flipped[:, 10:].view(-1, 1, 2)
    signs_1, signs_2 = first[:, :, 0], last[:, 0, :]  # the output layer only carries layer 2's signs
    assert torch.equal(middle, signs_2[:, :, None] * signs_1[:, None, :])
    assert torch.equal(first, signs_1[:, :, None].expand(-1, -1, 3))


def test_the_output_layer_keeps_its_neuron_order():
    permutation = NeuronPermutation(MNIST_CNN, num_permutations=50)
    last = MNIST_CNN.parameter_layers[-1]  # Linear(20, 10): weight at 2244..2443, bias at 2444..2453
    start = MNIST_CNN.num_parameters - 10 * 21
    weight = permutation.indices[:, start : start + 200].view(-1, 10, 20).long() - start
    assert torch.equal(weight // 20, torch.arange(10).view(1, 10, 1).expand_as(weight))  # rows stay
    assert not torch.equal(weight % 20, torch.arange(20).expand_as(weight))  # columns follow the hidden layer
    bias = permutation.indices[:, -10:].long()
    assert torch.equal(bias, torch.arange(start + 200, start + 210).expand_as(bias)) and last.bias_name


def test_flatten_boundary_moves_whole_blocks():
    # Swap channels 0 and 1 of the third conv layer (4 channels, 3×3 maps) of the CNN only.
    identity = [torch.arange(8)[None], torch.arange(6)[None]]
    swap = torch.tensor([[1, 0, 2, 3]])
    index = make_permutation_indices(MNIST_CNN, [*identity, swap, torch.arange(20)[None]])[0]
    vector = torch.arange(MNIST_CNN.num_parameters, dtype=torch.float32)
    state = NeuronTokenProcessor(MNIST_CNN).vectors_to_state_dicts(vector[index][None])[0]
    original = NeuronTokenProcessor(MNIST_CNN).vectors_to_state_dicts(vector[None])[0]
    assert torch.equal(state["layers.9.weight"][:, 0:9], original["layers.9.weight"][:, 9:18])
    assert torch.equal(state["layers.9.weight"][:, 18:], original["layers.9.weight"][:, 18:])
    assert torch.equal(state["layers.6.weight"][0], original["layers.6.weight"][1])


def test_permutations_are_seeded():
    def indices(seed: int) -> torch.Tensor:
        return NeuronPermutation(MNIST_CNN, num_permutations=5, generator=torch.Generator().manual_seed(seed)).indices

    assert torch.equal(indices(3), indices(3)) and not torch.equal(indices(3), indices(4))
    vectors = torch.randn(6, MNIST_CNN.num_parameters)
    permutation = NeuronPermutation(MNIST_CNN, num_permutations=5)
    first = permutation(vectors, torch.Generator().manual_seed(9))
    assert torch.equal(first, permutation(vectors, torch.Generator().manual_seed(9)))


def test_zero_probability_erasing_and_zero_noise_are_exact_identities():
    vectors = torch.randn(4, 100)
    vectors[0, :3] = torch.tensor([-0.0, 0.0, -0.0])
    generator = torch.Generator().manual_seed(0)
    for augmentation in (RandomErasing(probability=0.0), GaussianNoise(0.0, 0.0)):
        result = augmentation(vectors, generator)
        assert torch.equal(result.view(torch.int32), vectors.view(torch.int32))


def test_erasing_zeroes_one_contiguous_block_of_the_drawn_length():
    vectors = torch.rand(200, 1000) + 1.0  # no zeros of their own
    erased = RandomErasing(probability=1.0, scale=(0.03, 0.3))(vectors, torch.Generator().manual_seed(0))
    for row in erased:
        zeros = (row == 0).nonzero().squeeze(1)
        assert 30 <= zeros.numel() <= 300
        assert zeros[-1] - zeros[0] + 1 == zeros.numel()  # contiguous
    half = RandomErasing(probability=0.5)(vectors, torch.Generator().manual_seed(1))
    assert 60 < int((half == 0).any(dim=1).sum()) < 140
    assert bool(vectors.ne(0).all())  # the input is untouched


def test_noise_has_the_requested_scale():
    vectors = torch.full((100, 1000), 2.0)
    generator = torch.Generator().manual_seed(0)
    additive = GaussianNoise(additive_std=0.05)(vectors, generator) - vectors
    multiplicative = GaussianNoise(multiplicative_std=0.1)(vectors, generator) / vectors - 1
    assert abs(float(additive.std()) - 0.05) < 1e-3 and abs(float(multiplicative.std()) - 0.1) < 2e-3


def storage(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage().data_ptr()


@pytest.mark.parametrize("with_augmentations", [False, True])
def test_two_views_never_share_storage(with_augmentations):
    augmentations = make_augmentations(TETRIS_MLP) if with_augmentations else []
    batch = torch.randn(32, TETRIS_MLP.num_parameters)
    output = TwoViewCollator(augmentations, generator=torch.Generator().manual_seed(0))(batch)
    view_1, view_2, clean = output["view_1_vectors"], output["view_2_vectors"], output["clean_vectors"]
    assert len({storage(view_1), storage(view_2), storage(clean)}) == 3
    assert storage(batch) not in {storage(view_1), storage(view_2)}
    assert torch.equal(clean, batch)
    if with_augmentations:
        assert not torch.equal(view_1, view_2)
    else:  # the no-augmentation ablation: equal values, distinct tensors
        assert torch.equal(view_1, batch) and torch.equal(view_2, batch)
        view_1.add_(1.0)
        assert torch.equal(view_2, batch) and torch.equal(clean, batch)


def test_collator_is_reproducible_from_its_generator():
    vectors = torch.randn(16, MNIST_CNN.num_parameters)

    def views(seed: int) -> dict:
        augmentations = make_augmentations(MNIST_CNN, num_permutations=10, multiplicative_noise_std=0.1)
        return TwoViewCollator(augmentations, torch.Generator().manual_seed(seed))(vectors)

    first, second, other = views(5), views(5), views(6)
    assert torch.equal(first["view_1_vectors"], second["view_1_vectors"])
    assert torch.equal(first["view_2_vectors"], second["view_2_vectors"])
    assert not torch.equal(first["view_1_vectors"], other["view_1_vectors"])


def test_collator_with_a_processor_returns_tokens_of_each_view():
    processor = NeuronTokenProcessor(MNIST_CNN, token_layout="padded", token_dim=48)
    vectors = torch.randn(10, MNIST_CNN.num_parameters)
    processor.fit_normalization(vectors)
    rows = [{"weights": vector.tolist(), "epoch": 3} for vector in vectors]  # dataset rows
    collator = TwoViewCollator(make_augmentations(MNIST_CNN, num_permutations=10), torch.Generator().manual_seed(2))
    collator.processor = processor
    output = collator(rows)
    assert torch.allclose(output["clean_vectors"], processor.normalize_vectors(vectors))
    assert output["input_tokens"].shape == output["input_tokens_view2"].shape == (10, processor.num_tokens, 48)
    assert output["attention_mask"].shape == output["attention_mask_view2"].shape == (10, processor.num_tokens)
    assert output["position_ids_view2"].shape == (10, processor.num_tokens, 3)
    names = (("labels", "view_1_target"), ("input_tokens", "view_1"), ("input_tokens_view2", "view_2"))
    for tokens, vectors_name in names:
        assert torch.equal(processor.to_vectors(output[tokens], denormalize=False), output[f"{vectors_name}_vectors"])


@pytest.mark.parametrize("permute", [True, False])
def test_collator_labels_are_the_clean_weights_in_view_1s_neuron_order(permute):
    """The target is view 1's permutation of the clean vector: erasing and noise not applied, the permutation kept."""
    processor = NeuronTokenProcessor(TETRIS_MLP)
    vectors = torch.randn(64, TETRIS_MLP.num_parameters)
    augmentations = make_augmentations(TETRIS_MLP, permute=permute, erasing_probability=1.0, additive_noise_std=0.05)
    output = TwoViewCollator(augmentations, torch.Generator().manual_seed(3), processor=processor)(vectors)
    clean, view_1 = output["clean_vectors"], output["view_1_vectors"]
    labels = processor.to_vectors(output["labels"], denormalize=False)
    assert torch.equal(labels, output["view_1_target_vectors"])
    assert not torch.equal(view_1, labels)  # erased and noisy
    assert (view_1 == 0).any(dim=1).all() and not (labels == 0).any()
    if not permute:
        assert torch.equal(labels, clean)
        return
    # View 1's permutation is the collator's first draw: the same generator state reproduces it exactly.
    permuted_clean = augmentations[0](clean, torch.Generator().manual_seed(3))
    assert torch.equal(labels, permuted_clean)
    assert not torch.equal(labels, clean)  # 64 draws out of 120 permutations: not all the identity
    kept = view_1 != 0
    # The view is its label plus noise (σ 0.05) where not erased; against the un-permuted clean weights it is not.
    assert (view_1 - labels)[kept].abs().max() < 0.5
    assert (view_1 - clean)[kept].abs().max() > 1.0


def test_a_plain_module_with_dropout_is_keyed_by_parameter_name():
    """Architecture derived from an nn.Sequential's state_dict (module indices shifted by Dropout/Flatten)."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(2, 3, 3),
        torch.nn.Tanh(),
        torch.nn.Dropout(0.3),
        torch.nn.Conv2d(3, 4, 2),
        torch.nn.Flatten(),
        torch.nn.Dropout(0.3),
        torch.nn.Linear(4 * 4 * 4, 5),
        torch.nn.Tanh(),
        torch.nn.Linear(5, 2),
    ).eval()
    processor = NeuronTokenProcessor.from_network(module)
    assert [layer["flatten_block"] for layer in processor.architecture["parameter_layers"]] == [1, 1, 16, 1]
    permutation = NeuronPermutation(processor, num_permutations=10)
    inputs = torch.randn(6, 2, 7, 7)
    permuted = processor.networks_to_vectors(module)[0][permutation.indices.long()]
    for state_dict in processor.vectors_to_state_dicts(permuted):
        permuted_module = deepcopy(module)
        permuted_module.load_state_dict(state_dict)
        assert torch.allclose(permuted_module(inputs), module(inputs), rtol=0, atol=1e-5)
    assert int((permuted != processor.networks_to_vectors(module)).any(dim=1).sum()) >= 9
