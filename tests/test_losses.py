"""The losses against values computed by hand or with explicit formulas."""

import math

import pytest
import torch

from hyperrep_hf import HyperRepConfig, HyperRepForPreTraining, reconstruction_r2
from hyperrep_hf.models.hyperrep.modeling_hyperrep import masked_mse_loss, nt_xent_loss, positive_pair_loss


def test_nt_xent_on_two_orthogonal_pairs_by_hand():
    # Anchor a1 = (1, 0): cosine 1 with its partner b1, 0 with a2 and b2 → −log(e / (e + 1 + 1)); all 4 alike.
    view1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    view2 = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # lengths do not matter: cosine similarity
    assert nt_xent_loss(view1, view2, temperature=1.0).item() == pytest.approx(math.log(math.e + 2) - 1)


def test_nt_xent_matches_the_explicit_formula():
    view1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    view2 = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])
    temperature = 0.5
    vectors = [v / v.norm() for v in torch.cat([view1, view2])]
    partner = [2, 3, 0, 1]
    terms = []
    for i in range(4):
        numerator = math.exp(float(vectors[i] @ vectors[partner[i]]) / temperature)
        denominator = sum(math.exp(float(vectors[i] @ vectors[k]) / temperature) for k in range(4) if k != i)
        terms.append(-math.log(numerator / denominator))
    assert nt_xent_loss(view1, view2, temperature).item() == pytest.approx(sum(terms) / 4, rel=1e-6)


def test_positive_pair_loss_eq3_and_reference_variant_by_hand():
    view1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    view2 = torch.tensor([[1.0, 1.0], [-1.0, 1.0]])  # both pairs have cosine 1/√2
    cosine, temperature = 1 / math.sqrt(2), 0.5
    paper = positive_pair_loss(view1, view2, temperature)
    assert paper.item() == pytest.approx(-cosine / temperature + math.log(temperature))
    # Reference code: MSE of cos/T against 0, over 2·batch entries, divided again by 2·batch.
    reference = positive_pair_loss(view1, view2, temperature, reference=True)
    assert reference.item() == pytest.approx((cosine / temperature) ** 2 / 4)
    # The paper's loss is lowest for aligned pairs, the reference's for orthogonal ones.
    aligned, orthogonal = view1.clone(), view1.flip(1)
    assert positive_pair_loss(view1, aligned, 0.5) < positive_pair_loss(view1, orthogonal, 0.5)
    assert positive_pair_loss(view1, aligned, 0.5, True) > positive_pair_loss(view1, orthogonal, 0.5, True)


def test_masked_mse_ignores_padding():
    target = torch.tensor([[[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]]])
    value_mask = torch.tensor([[True, True, False], [True, False, False]])
    loss = masked_mse_loss(torch.zeros_like(target), target, value_mask)
    assert loss.item() == pytest.approx((1 + 4 + 9) / 3)


def test_reconstruction_r2_by_hand():
    # Targets (1, 3) and (3, 5): per-coordinate means (2, 4), total sum of squares 4; residual 1 → R² = 0.75.
    target = torch.tensor([[[1.0, 3.0, 0.0]], [[3.0, 5.0, 0.0]]])
    prediction = torch.tensor([[[1.0, 3.0, 50.0]], [[3.0, 4.0, -7.0]]])  # the padded coordinate is ignored
    value_mask = torch.tensor([[True, True, False]])
    assert reconstruction_r2(prediction, target, value_mask) == pytest.approx(0.75)
    assert reconstruction_r2(target, target, value_mask) == pytest.approx(1.0)
    mean_prediction = target.mean(0, keepdim=True).expand_as(target)
    assert reconstruction_r2(mean_prediction, target, value_mask) == pytest.approx(0.0)


@pytest.mark.parametrize("seed", range(6))
def test_one_r2_for_weight_vectors_tokens_and_probes(seed):
    """R² of reconstructed weights is the same number from flat vectors (training), from tokens in any layout
    (``reconstruction_r2``) and from scikit-learn's variance-weighted multi-output R² (a second route)."""
    from sklearn.metrics import r2_score as sklearn_r2_score

    from hyperrep_hf import NeuronTokenProcessor, make_value_mask
    from hyperrep_hf.probing.probes import r2_score
    from hyperrep_hf.zoo.networks import MNIST_CNN, TETRIS_MLP

    generator = torch.Generator().manual_seed(seed)
    spec = (TETRIS_MLP, MNIST_CNN)[seed % 2]
    layout = ("per_layer", "padded", "weight")[seed % 3]
    processor = NeuronTokenProcessor(spec.to_dict(), layout, 7 if layout == "padded" else None)
    rows = int(torch.randint(2, 12, (1,), generator=generator))
    scale = torch.rand(spec.num_parameters, generator=generator) * 3  # every weight its own spread and mean
    vectors = torch.randn(rows, spec.num_parameters, generator=generator) * scale + scale
    predictions = vectors + 0.5 * torch.randn(rows, spec.num_parameters, generator=generator)
    expected = sklearn_r2_score(
        vectors.double().numpy(), predictions.double().numpy(), multioutput="variance_weighted"
    )
    assert r2_score(vectors.numpy(), predictions.numpy()) == pytest.approx(expected, rel=1e-9)
    mask = make_value_mask(HyperRepConfig(**processor.model_config_kwargs(), latent_dim=1, variant="ffn"))
    tokens = [processor.vectors_to_tokens(v, normalize=False)["input_tokens"] for v in (predictions, vectors)]
    assert reconstruction_r2(tokens[0], tokens[1], mask) == pytest.approx(expected, rel=1e-6)
    assert math.isnan(r2_score(vectors[:1].numpy(), predictions[:1].numpy()))  # one row: no variance to explain


@pytest.mark.parametrize("loss_type", ["ed", "ec", "ecd", "ec+d"])
def test_model_combines_the_loss_parts_as_configured(loss_type):
    config = HyperRepConfig(
        d_model=16,
        num_attention_heads=2,
        intermediate_size=32,
        latent_dim=6,
        projection_dim=4,
        projection_layers=1,
        loss_type=loss_type,
        beta=0.3,
        temperature=0.2,
    )
    model = HyperRepForPreTraining(config).eval()
    generator = torch.Generator().manual_seed(0)
    tokens, view2 = torch.randn(4, 9, 16, generator=generator), torch.randn(4, 9, 16, generator=generator)
    output = model(tokens, input_tokens_view2=view2)
    projections, projections_view2 = output.projections, output.projections_view2
    if loss_type == "ed":
        assert output.contrastive_loss is None
        torch.testing.assert_close(output.loss, output.reconstruction_loss)
        return
    contrast = (nt_xent_loss if loss_type != "ec+d" else positive_pair_loss)(projections, projections_view2, 0.2)
    torch.testing.assert_close(output.contrastive_loss, contrast)
    expected = contrast if loss_type == "ec" else 0.3 * output.reconstruction_loss + 0.7 * contrast
    torch.testing.assert_close(output.loss, expected)
