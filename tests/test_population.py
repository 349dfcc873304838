import pytest
import torch

from hyperrep_hf.zoo.networks import MNIST_CNN, SMALL_CNN_ZOO, TETRIS_MLP, NetworkSpec, flatten_state_dict
from hyperrep_hf.zoo.population import ENGINES, NetworkConfig, Population, _flatten, default_engine, train_alone

CONV_ENGINES = [engine for engine in ENGINES if engine != "auto"]
# A CNN with every layer kind the engines lay out differently: padding, stride, both poolings, dropout after conv
# and linear layers, flatten.
CNN_WITH_DROPOUT = NetworkSpec.parse(
    (2, 11, 11),
    ["conv:5:3:p1", "maxpool:2", "act", "dropout", "conv:4:2:s2", "avgpool:1", "act", "dropout", "flatten",
     "linear:7", "act", "dropout", "linear:3"],
    name="cnn_with_dropout",
)  # fmt: skip


def _random_data(spec: NetworkSpec, num_examples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(num_examples, *spec.input_shape, generator=generator)
    labels = torch.randint(0, spec.num_classes, (num_examples,), generator=generator)
    return images, labels


def _train_population(spec, configs, images, labels, epochs, engine="auto"):
    population = Population(spec, configs, engine=engine)
    for epoch in range(1, epochs + 1):
        population.train_epoch(images, labels, epoch, dropout_seed=epoch)
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


@pytest.mark.parametrize("engine", CONV_ENGINES)
@pytest.mark.parametrize("spec", [MNIST_CNN, SMALL_CNN_ZOO], ids=lambda s: s.name)
def test_population_matches_networks_trained_alone_cnn(spec, engine):
    images, labels = _random_data(spec, 12)
    configs = [
        NetworkConfig(seed=seed, activation="relu", learning_rate=1e-3 * seed, batch_size=5, bias_init=0.01)
        for seed in (4, 5)
    ]
    population = _train_population(spec, configs, images, labels, epochs=2, engine=engine)
    for index, config in enumerate(configs):
        alone = train_alone(spec, config, images, labels, epochs=2)
        expected = flatten_state_dict(spec, alone.state_dict())
        torch.testing.assert_close(population.flat_weights()[index], expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("engine", CONV_ENGINES)
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_cnn_with_dropout_and_weight_decay_matches_networks_trained_alone(engine, optimizer):
    """Each network its own seed, init, rate, learning rate and weight decay; dropout noise replayed exactly."""
    images, labels = _random_data(CNN_WITH_DROPOUT, 14, seed=11)
    inits = ["kaiming_uniform", "xavier_normal", "default", "normal"]
    configs = [
        NetworkConfig(
            seed=seed,
            activation="tanh",
            init=inits[index],
            optimizer=optimizer,
            learning_rate=(3e-3 if optimizer == "adam" else 1e-2) * (1 + index),
            weight_decay=[0.0, 1e-3, 1e-2, 1e-4][index],
            dropout=[0.5, 0.0, 0.2, 0.7][index],
            batch_size=4,
            bias_init=0.01,
        )
        for index, seed in enumerate((3, 17, 8, 40))
    ]
    population = _train_population(CNN_WITH_DROPOUT, configs, images, labels, epochs=2, engine=engine)
    for index, config in enumerate(configs):
        alone = train_alone(CNN_WITH_DROPOUT, config, images, labels, epochs=2, dropout_replay=(index, len(configs)))
        expected = flatten_state_dict(CNN_WITH_DROPOUT, alone.state_dict())
        torch.testing.assert_close(population.flat_weights()[index], expected, atol=1e-5, rtol=1e-4)
    # the replay is not vacuous: the same networks with the global RNG's dropout end elsewhere
    unreplayed = flatten_state_dict(
        CNN_WITH_DROPOUT, train_alone(CNN_WITH_DROPOUT, configs[0], images, labels, 2).state_dict()
    )
    assert not torch.allclose(population.flat_weights()[0], unreplayed, atol=1e-4)


@pytest.mark.parametrize("spec", [MNIST_CNN, CNN_WITH_DROPOUT], ids=lambda s: s.name)
def test_engines_compute_the_same_function(spec):
    """Random weights, inputs and rates: every engine gives the same logits, gradients and evaluation."""
    generator = torch.Generator().manual_seed(123)
    configs = [NetworkConfig(seed=s, init="normal", dropout=0.3 * (s % 3), activation="gelu") for s in range(5)]
    images = torch.randn(len(configs), 6, *spec.input_shape, generator=generator)
    shared_images, shared_labels = _random_data(spec, 9, seed=7)
    outputs = {}
    for engine in CONV_ENGINES:
        population = Population(spec, configs, engine=engine)
        logits = population.forward(images, torch.Generator().manual_seed(5))
        (gradient,) = torch.autograd.grad(logits.square().sum(), [population.flat_parameters])
        metrics = population.evaluate(shared_images, shared_labels, spec.num_classes)
        outputs[engine] = (logits.detach(), gradient, metrics["loss"], metrics["accuracy"])
    reference = outputs.pop("grouped")
    for engine, values in outputs.items():
        # ‖a − b‖ / ‖b‖: single gradient entries are sums with cancellation, so elementwise tolerances would be
        # noise; float32 reorderings land near 1e-7, a wrong index or mask far above 1e-5.
        for name, value, expected in zip(("logits", "gradient", "loss", "accuracy"), values, reference, strict=True):
            assert torch.isfinite(value).all()
            error = ((value - expected).norm() / expected.norm()).item()
            assert error < 1e-5, f"{engine} {name}: relative error {error:.2e}"


@pytest.mark.parametrize("pool", [False, True])
def test_grouped_feature_maps_flatten_to_contiguous_rows(pool):
    # channels-last (B, N·C, H, W) maps, as the CPU engine lays out a batch: the flat (N, B, F) rows must come out
    # contiguous, or bmm copies each network's matrix on its own (a Tetris MLP epoch 2.3× slower).
    num_networks, channels, batch = 6, 2, 5
    hidden = torch.rand(batch, num_networks * channels, 3, 3).contiguous(memory_format=torch.channels_last)
    flat, layout = _flatten(hidden, "grouped", pool, num_networks)
    maps = hidden.reshape(batch, num_networks, channels, 3, 3).transpose(0, 1)  # (N, B, C, H, W)
    assert layout == "flat" and flat.is_contiguous()
    assert torch.equal(flat, maps.mean(dim=(3, 4)) if pool else maps.flatten(2))


def test_auto_engine_and_unknown_engine():
    configs = [NetworkConfig(seed=1)]
    assert Population(MNIST_CNN, configs).engine == default_engine(torch.device("cpu")) == "channels_last"
    assert default_engine(torch.device("cuda")) == "unfold"
    with pytest.raises(ValueError, match="engine 'fast'"):
        Population(MNIST_CNN, configs, engine="fast")


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


@pytest.mark.parametrize("when", ["before training", "during training"])
def test_paired_cnn_networks_contain_a_diverging_partner(when, monkeypatch):
    """channels_last runs networks 2g and 2g+1 in one convolution group (block-diagonal weights): a network that
    diverges must not reach its partner through the zero block (0 · NaN), and is dropped like any other."""
    images, labels = _random_data(MNIST_CNN, 12, seed=4)
    configs = [NetworkConfig(seed=seed, batch_size=4, learning_rate=1e-3) for seed in (1, 2, 3, 4)]

    def diverge(population):
        """Network 1's weights turn NaN before training, or in its first optimizer step."""
        if when == "before training":
            with torch.no_grad():
                population.flat_parameters[1, 0] = float("nan")
            return
        step = population._step

        def poisoned_step(gradient):
            gradient = gradient.clone()
            gradient[1, 5] = float("nan") if population.step_count == 0 else gradient[1, 5]
            step(gradient)

        monkeypatch.setattr(population, "_step", poisoned_step)

    population = Population(MNIST_CNN, configs, engine="channels_last")
    assert population._paired
    diverge(population)
    population.train_epoch(images, labels, epoch=1)
    metrics = population.evaluate(images, labels, num_classes=10)
    assert torch.isfinite(metrics["loss"]).all() and torch.isfinite(population.flat_weights()).all()
    assert population.drop_diverged(metrics["loss"]).tolist() == [False, True, False, False]
    for index in (0, 2, 3):  # the partner (0) and the other pair are exactly as if trained alone
        alone = train_alone(MNIST_CNN, configs[index], images, labels, epochs=1)
        expected = flatten_state_dict(MNIST_CNN, alone.state_dict())
        torch.testing.assert_close(population.flat_weights()[index], expected, atol=1e-5, rtol=1e-4)
    # not vacuous: without containment the divergence does reach the partner
    unguarded = Population(MNIST_CNN, configs, engine="channels_last")
    monkeypatch.setattr(unguarded, "_contain", lambda: None)
    diverge(unguarded)
    unguarded.train_epoch(images, labels, epoch=1)
    assert not torch.isfinite(unguarded.flat_weights()[0]).all()
    assert torch.isfinite(unguarded.flat_weights()[2:]).all()


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


def test_out_of_memory_suggests_chunk_size(monkeypatch):
    population = Population(MNIST_CNN, [NetworkConfig(seed=s, batch_size=4) for s in range(6)])
    images, labels = _random_data(MNIST_CNN, 8)

    def exhausted(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(population, "_forward", exhausted)
    for call in (lambda: population.train_epoch(images, labels, 1), lambda: population.evaluate(images, labels, 10)):
        with pytest.raises(torch.OutOfMemoryError, match=r"6 networks .* --chunk-size 3.*Tried to allocate"):
            call()
    with pytest.raises(torch.OutOfMemoryError, match="the zoo is the same whatever the chunk size"):
        population.train_epoch(images, labels, 1)
    # with dropout the noise is one draw per population, so the message must not promise the same zoo
    with_dropout = Population(MNIST_CNN, [NetworkConfig(seed=s, batch_size=4, dropout=0.1) for s in range(6)])
    monkeypatch.setattr(with_dropout, "_forward", exhausted)
    with pytest.raises(torch.OutOfMemoryError, match="the dropout noise, and so the zoo, depends on the chunk size"):
        with_dropout.train_epoch(images, labels, 1)
    monkeypatch.setattr(population, "_forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    with pytest.raises(RuntimeError, match=r"^shape mismatch$"):  # other errors pass through untouched
        population.train_epoch(images, labels, 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("engine", CONV_ENGINES)
def test_engines_on_cuda_match_the_cpu(engine):
    """Two epochs (Adam, weight decay) on the device vs the CPU; TF32 convolutions allowed (‖Δ‖/‖ref‖ < 2e-3)."""
    images, labels = _random_data(MNIST_CNN, 30, seed=21)
    configs = [NetworkConfig(seed=s, weight_decay=1e-3 * (s % 2), batch_size=10) for s in range(6)]
    expected = _train_population(MNIST_CNN, configs, images, labels, epochs=2, engine="grouped").flat_weights()
    population = Population(MNIST_CNN, configs, "cuda", engine=engine)
    for epoch in (1, 2):
        population.train_epoch(images.cuda(), labels.cuda(), epoch, dropout_seed=epoch)
    weights = population.flat_weights()
    assert torch.isfinite(weights).all()
    assert ((weights - expected).norm() / expected.norm()).item() < 2e-3
