"""Symmetry-averaged hyper-representations: the transforms preserve the function, the average is deterministic."""

import numpy as np
import pytest
import torch

from hyperrep_hf import HyperRepConfig, HyperRepModel, NeuronTokenProcessor
from hyperrep_hf.models.hyperrep.embeddings import SymmetryTransforms, symmetry_transforms
from hyperrep_hf.probing.evaluation import compute_embeddings
from hyperrep_hf.zoo.networks import TETRIS_MLP, make_module


def tetris_model(**fields):
    torch.manual_seed(0)
    processor = NeuronTokenProcessor(TETRIS_MLP)
    config = HyperRepConfig(
        **processor.model_config_kwargs(), d_model=16, num_attention_heads=2, intermediate_size=32, latent_dim=8,
        **fields,
    )  # fmt: skip
    return HyperRepModel(config).eval(), processor


def test_every_transform_preserves_the_function_and_the_first_is_the_identity():
    transforms = SymmetryTransforms(TETRIS_MLP.to_dict(), 16, ["permutation", "sign_flip"], "tanh")
    torch.manual_seed(0)
    module = make_module(TETRIS_MLP, activation="tanh").eval()
    processor = NeuronTokenProcessor(TETRIS_MLP)
    vector = processor.networks_to_vectors(module)
    inputs = torch.randn(32, *TETRIS_MLP.input_shape)
    assert torch.equal(transforms(vector, 0), vector)
    copies = torch.cat([transforms(vector, k) for k in range(16)])
    assert len({tuple(row.tolist()) for row in copies}) == 16  # 16 different weight vectors …
    for state_dict in processor.vectors_to_state_dicts(copies):
        copy = make_module(TETRIS_MLP, activation="tanh").eval()
        copy.load_state_dict(state_dict)
        assert torch.allclose(copy(inputs), module(inputs), rtol=0, atol=1e-6)  # … one function


def test_averaged_embeddings_do_not_depend_on_the_batch():
    model, processor = tetris_model(symmetries=["permutation", "sign_flip"], activation="tanh")
    vectors = torch.randn(10, 100).numpy()
    together = compute_embeddings(model, processor, vectors, batch_size=10, symmetry_samples=8)
    one_by_one = compute_embeddings(model, processor, vectors, batch_size=1, symmetry_samples=8)
    np.testing.assert_allclose(together, one_by_one, atol=1e-5)
    with torch.no_grad():
        plain = model(**processor(torch.from_numpy(vectors))).embeddings.double().numpy()
    np.testing.assert_allclose(compute_embeddings(model, processor, vectors, symmetry_samples=1), plain, atol=1e-6)
    assert np.abs(together - plain).max() > 1e-3  # the average is not the plain z


def test_the_config_decides_what_is_averaged():
    model, _ = tetris_model(symmetries=["permutation"], embedding_symmetry_samples=6)
    transforms = symmetry_transforms(model.config, TETRIS_MLP.to_dict())
    assert transforms.num_samples == 6 and bool((transforms.sign == 1).all())
    untrained_on_symmetries, _ = tetris_model(embedding_symmetry_samples=6)
    assert symmetry_transforms(untrained_on_symmetries.config, TETRIS_MLP.to_dict()).num_samples == 1
    with pytest.raises(ValueError, match="activation"):
        tetris_model(symmetries=["sign_flip"])
    with pytest.raises(ValueError, match="embedding_symmetry_samples=0"):
        tetris_model(embedding_symmetry_samples=0)
    with pytest.raises(ValueError, match="symmetries"):
        tetris_model(symmetries=["rotation"])
