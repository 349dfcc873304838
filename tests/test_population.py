import pytest
import torch

from hyperrep_hf.networks import MNIST_CNN, SMALL_CNN_ZOO, TETRIS_MLP, NetworkSpec, flatten_state_dict
from hyperrep_hf.population import NetworkConfig, Population, train_alone


def _random_data(spec: NetworkSpec, num_examples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(num_examples, *spec.input_shape, generator=generator)
    labels = torch.randint(0, spec.num_classes, (num_examples,), generator=generator)
    return images, labels


def _train_population(spec, configs, images, labels, epochs):
    population = Population(spec, configs)
    for epoch in range(1, epochs + 1):
        population.train_epoch(images, labels, epoch)
    return population


@pytest.mark.parametrize(
    ("optimizer", "learning_rate", "weight_decay", "init"),
    [("adam", 1e-2, 0.0, "kaiming_uniform"), ("adam", 3e-3, 1e-3, "xavier_normal"), ("sgd", 5e-2, 1e-4, "normal")],
)
def test_population_matches_networks_trained_alone_mlp(optimizer, learning_rate, weight_decay, init):
    images, labels = _random_data(TETRIS_MLP, 70)
    configs = [
        NetworkConfig(
            seed=seed,
            optimizer=optimizer,
            learning_rate=learning_rate * (1 + seed / 10),
            weight_decay=weight_decay,
            init=init,
            batch_size=16,
        )
        for seed in (1, 2, 3)
    ]
    population = _train_population(TETRIS_MLP, configs, images, labels, epochs=3)
    for index, config in enumerate(configs):
        alone = train_alone(TETRIS_MLP, config, images, labels, epochs=3)
        expected = flatten_state_dict(TETRIS_MLP, alone.state_dict())
        torch.testing.assert_close(population.flat_weights()[index], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("spec", [MNIST_CNN, SMALL_CNN_ZOO], ids=lambda s: s.name)
def test_population_matches_networks_trained_alone_cnn(spec):
    images, labels = _random_data(spec, 12)
    configs = [
        NetworkConfig(seed=seed, activation="relu", learning_rate=1e-3 * seed, batch_size=5, bias_init=0.01)
        for seed in (4, 5)
    ]
    population = _train_population(spec, configs, images, labels, epochs=2)
    for index, config in enumerate(configs):
        alone = train_alone(spec, config, images, labels, epochs=2)
        expected = flatten_state_dict(spec, alone.state_dict())
        torch.testing.assert_close(population.flat_weights()[index], expected, atol=1e-5, rtol=1e-4)


def test_evaluation_matches_plain_forward():
    images, labels = _random_data(MNIST_CNN, 20, seed=3)
    configs = [NetworkConfig(seed=seed, activation="tanh") for seed in (1, 2)]
    population = Population(MNIST_CNN, configs)
    metrics = population.evaluate(images, labels, num_classes=10)
    for index, config in enumerate(configs):
        alone = train_alone(MNIST_CNN, config, images, labels, epochs=0).eval()
        logits = alone(images)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        accuracy = (logits.argmax(1) == labels).float().mean()
        torch.testing.assert_close(metrics["loss"][index], loss, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(metrics["accuracy"][index], accuracy)


def test_per_class_f1_matches_definition():
    population = Population(TETRIS_MLP, [NetworkConfig(seed=1)])
    images, labels = _random_data(TETRIS_MLP, 200, seed=5)
    metrics = population.evaluate(images, labels, num_classes=4)
    predicted = population.forward(images.unsqueeze(0))[0].argmax(1)
    for label in range(4):
        tp = ((predicted == label) & (labels == label)).sum().item()
        fp = ((predicted == label) & (labels != label)).sum().item()
        fn = ((predicted != label) & (labels == label)).sum().item()
        expected = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0
        assert metrics["f1"][0, label].item() == pytest.approx(expected)


def test_diverging_network_is_dropped_and_contained():
    images, labels = _random_data(TETRIS_MLP, 64)
    configs = [NetworkConfig(seed=1, learning_rate=1e-2), NetworkConfig(seed=2, learning_rate=1e-2)]
    population = Population(TETRIS_MLP, configs)
    with torch.no_grad():
        population.flat_parameters[1, 0] = float("nan")
    population.train_epoch(images, labels, epoch=1)
    dropped = population.drop_diverged()
    assert dropped.tolist() == [False, True]
    assert torch.isfinite(population.flat_weights()).all()
    reference = _train_population(TETRIS_MLP, configs[:1], images, labels, epochs=1)
    torch.testing.assert_close(population.flat_weights()[0], reference.flat_weights()[0])


def test_mixed_activation_is_refused():
    with pytest.raises(ValueError, match="share activation"):
        Population(TETRIS_MLP, [NetworkConfig(seed=1, activation="tanh"), NetworkConfig(seed=2, activation="relu")])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("learning_rate", -1.0),
        ("learning_rate", float("nan")),
        ("dropout", 1.0),
        ("activation", "swish"),
        ("optimizer", "lbfgs"),
        ("batch_size", 0),
        ("init", "zeros"),
    ],
)
def test_invalid_hyper_parameter_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        NetworkConfig(seed=1, **{field: value})


def test_dropout_is_active_in_training_only():
    spec = NetworkSpec.parse((8,), ["linear:6", "act", "dropout", "linear:3"])
    population = Population(spec, [NetworkConfig(seed=1, dropout=0.5)])
    inputs = torch.rand(1, 10, 8)
    assert torch.equal(population.forward(inputs), population.forward(inputs))
    noisy = population.forward(inputs, torch.Generator().manual_seed(0))
    assert not torch.allclose(noisy, population.forward(inputs))
