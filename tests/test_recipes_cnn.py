"""The CNN recipes of issue 13: CPU mini variants and the initialisation finding they rest on."""

import pytest
import torch

from hyperrep_hf.zoo.networks import MNIST_CNN, init_parameters, make_module
from hyperrep_hf.zoo.recipes import load_recipe


def _mnist_like_images(num_images: int, seed: int) -> torch.Tensor:
    """Strokes on a background, normalised as the recipes' data: (x / 255 − 0.1307) / 0.3081."""
    generator = torch.Generator().manual_seed(seed)
    strokes = torch.rand(num_images, 1, 28, 28, generator=generator) < 0.19
    return (strokes.float() - 0.1307) / 0.3081


def _saturated_fraction(init: str, bias_init: float, seed: int) -> list[float]:
    module = make_module(MNIST_CNN, "tanh")
    module.load_state_dict(init_parameters(MNIST_CNN, init, torch.Generator().manual_seed(seed), bias_init))
    hidden, fractions = _mnist_like_images(64, seed), []
    with torch.no_grad():
        for layer in module.layers:
            hidden = layer(hidden)
            if isinstance(layer, torch.nn.Tanh):
                fractions.append((hidden.abs() == 1).float().mean().item())
    return fractions


@pytest.mark.parametrize("seed", [1, 7, 123])
def test_uniform_init_cuts_the_gradient_and_default_does_not(seed):
    """U(0, 1) + tanh: the last hidden tanh is (almost) all exactly ±1, so tanh' = 0 and nothing below learns."""
    uniform = _saturated_fraction("uniform", 0.01, seed)
    default = _saturated_fraction("default", 0.0, seed)
    assert uniform[-1] > 0.9 and uniform[-2] > 0.9
    assert max(default) == 0.0


def test_seed_recipes_use_the_init_that_trains():
    for name in ("mnist_seed", "fashion_seed", "mnist_seed_mini"):
        configs = load_recipe(name).networks(0)
        assert {c.init for c in configs} == {"default"}, name
    lab = load_recipe("mnist_seed_lab_uniform").networks(0)
    assert {(c.init, c.bias_init) for c in lab} == {("uniform", 0.01)} and len(lab) == 1000


def test_mini_recipes_are_small_and_keep_the_family():
    seed_mini = load_recipe("mnist_seed_mini")
    assert [c.seed for c in seed_mini.networks(0)] == list(range(1, 51)) and seed_mini.epochs == 5
    assert seed_mini.network_spec() == load_recipe("mnist_seed").network_spec()
    hyp_mini = load_recipe("mnist_hyp_mini")  # the demo's zoo: the full grid, 2 random seeds, 3 epochs
    configs = hyp_mini.networks(0)
    assert len(configs) == 512 and hyp_mini.epochs == 3 and hyp_mini.random_seeds == 2
    assert hyp_mini.network_spec().num_parameters == load_recipe("mnist_hyp_1_fix_seed").network_spec().num_parameters
    keys = ("activation", "init", "optimizer", "dropout", "learning_rate", "weight_decay")
    full = {tuple(getattr(c, k) for k in keys) for c in load_recipe("mnist_hyp_1_fix_seed").networks(0)}
    assert {tuple(getattr(c, k) for k in keys) for c in configs} == full
