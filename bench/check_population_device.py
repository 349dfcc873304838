"""Correctness of every population engine on a device, against a float64 CPU reference (run before timing).

    python bench/check_population_device.py --device cuda

Checks, each on fresh random inputs, as ‖out − ref‖ / ‖ref‖ (float32 lands near 1e-7; TF32 convolutions in
cuDNN near 3e-4; a wrong index or mask near 1):
1. forward logits and the gradient of every engine on the device vs the grouped engine in float64 on the CPU,
   with dropout active (the same noise is replayed on the CPU from the device's draw);
2. two epochs of training (Adam and SGD, weight decay) on the device vs the same population on the CPU;
3. evaluation (loss, accuracy) on the device vs the CPU.
Prints one line per check and exits 1 if any fails.
"""

import argparse
import sys

import torch

from hyperrep_hf.zoo.networks import MNIST_CNN, NetworkSpec
from hyperrep_hf.zoo.population import NetworkConfig, Population

DROPOUT_CNN = NetworkSpec.parse(
    (1, 28, 28),
    ["conv:8:5", "maxpool:2", "act", "dropout", "conv:6:5", "maxpool:2", "act", "dropout", "conv:4:2", "act",
     "dropout", "flatten", "linear:20", "act", "dropout", "linear:10"],
    name="mnist_cnn_dropout",
)  # fmt: skip
ENGINES = ("grouped", "channels_last", "unfold")
FAILURES = []


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    value, reference = value.detach().double().cpu(), reference.detach().double().cpu()
    if not torch.isfinite(value).all():
        return float("inf")
    return ((value - reference).norm() / reference.norm().clamp(min=1e-30)).item()


def report(name: str, error: float, limit: float) -> None:
    ok = error < limit
    print(f"{'ok  ' if ok else 'FAIL'} {name:60s} {error:.2e} (limit {limit:.0e})", flush=True)
    if not ok:
        FAILURES.append(name)


def check_forward(device: torch.device, limit: float) -> None:
    """Each engine on the device vs the same engine in float64 on the CPU, replaying the device's dropout masks.

    (The CPU tests prove the engines equal to each other and to the plain module; this proves the device runs
    them right.)
    """
    generator = torch.Generator().manual_seed(torch.seed() % 2**31)
    configs = [
        NetworkConfig(seed=s, init="kaiming_normal", dropout=0.25 * (s % 3), activation="tanh") for s in range(7)
    ]
    images = torch.randn(len(configs), 10, 1, 28, 28, generator=generator)
    for engine in ENGINES:
        population = Population(DROPOUT_CNN, configs, device, engine=engine)
        masks = []
        recorded = population._dropout

        def record(hidden, layout, num_networks, generator, recorded=recorded, masks=masks):
            out = recorded(hidden, layout, num_networks, generator)
            masks.append((out != 0).cpu())  # kept units (tanh outputs are never exactly 0 on random data)
            return out

        population._dropout = record
        logits = population.forward(images.to(device), torch.Generator(device=device).manual_seed(3))
        (gradient,) = torch.autograd.grad(logits.square().mean(), [population.flat_parameters])

        reference = Population(DROPOUT_CNN, configs, "cpu", engine=engine)
        with torch.no_grad():
            reference.flat_parameters.data = reference.flat_parameters.data.double()
        rates = reference.dropout.double()
        replayed = iter(masks)

        def replay(hidden, layout, num_networks, generator, rates=rates, replayed=replayed):
            if layout == "grouped":  # (B, N·C, H, W)
                keep = (1 - rates).repeat_interleave(hidden.shape[1] // num_networks).view(1, -1, 1, 1)
            else:  # (N, B, …)
                keep = (1 - rates).view(-1, *[1] * (hidden.dim() - 1))
            return hidden * next(replayed).to(hidden.dtype) / keep

        reference._dropout = replay
        expected = reference.forward(images.double(), torch.Generator())
        (expected_gradient,) = torch.autograd.grad(expected.square().mean(), [reference.flat_parameters])
        report(f"forward with dropout, {engine} on {device} vs float64 cpu", relative_error(logits, expected), limit)
        error = relative_error(gradient, expected_gradient)
        report(f"gradient with dropout, {engine} on {device} vs float64 cpu", error, limit)


def check_training(device: torch.device, limit: float) -> None:
    generator = torch.Generator().manual_seed(torch.seed() % 2**31)
    images = torch.randn(40, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (40,), generator=generator)
    for optimizer, rate in (("adam", 1e-3), ("sgd", 1e-2)):
        configs = [
            NetworkConfig(seed=s, optimizer=optimizer, learning_rate=rate * (1 + s % 3), weight_decay=1e-3 * (s % 2),
                          init="kaiming_uniform", bias_init=0.01, batch_size=10)
            for s in range(12)
        ]  # fmt: skip
        reference = Population(MNIST_CNN, configs, "cpu", engine="grouped")
        for epoch in (1, 2):
            reference.train_epoch(images, labels, epoch)
        expected = reference.flat_weights()
        evaluation = reference.evaluate(images, labels, 10)
        for engine in ENGINES:
            population = Population(MNIST_CNN, configs, device, engine=engine)
            for epoch in (1, 2):
                population.train_epoch(images.to(device), labels.to(device), epoch)
            error = relative_error(population.flat_weights(), expected)
            report(f"2 epochs {optimizer}, {engine} on {device} vs cpu", error, limit)
            metrics = population.evaluate(images.to(device), labels.to(device), 10)
            error = relative_error(metrics["loss"], evaluation["loss"])
            report(f"evaluation loss, {engine} on {device} vs cpu", error, limit)
            agreement = (metrics["accuracy"].cpu() - evaluation["accuracy"]).abs().max().item()
            report(f"evaluation accuracy, {engine} on {device} vs cpu (max |Δ|)", agreement, 0.051)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--limit", type=float, default=2e-3, help="relative error allowed (TF32 convolutions)")
    arguments = parser.parse_args()
    device = torch.device(arguments.device)
    torch.manual_seed(0)
    check_forward(device, arguments.limit)
    check_training(device, arguments.limit)
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed: {FAILURES}")
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
