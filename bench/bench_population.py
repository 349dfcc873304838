"""Population training vs one network at a time, same data, same run → bench/results/population.json.

    python bench/bench_population.py [--threads T]

Throughput is models·epochs per second of training (evaluation excluded on both sides). The one-at-a-time
baseline is `train_alone`: a plain nn.Module with torch.optim.Adam, the loop a user would write.
"""

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from hyperrep_hf.data import load_image_dataset
from hyperrep_hf.networks import MNIST_CNN, TETRIS_MLP
from hyperrep_hf.population import NetworkConfig, Population, train_alone


def population_rate(spec, configs, images, labels, epochs: int) -> float:
    population = Population(spec, configs)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        population.train_epoch(images, labels, epoch)
    return len(configs) * epochs / (time.perf_counter() - started)


def alone_rate(spec, configs, images, labels, epochs: int) -> float:
    started = time.perf_counter()
    for config in configs:
        train_alone(spec, config, images, labels, epochs)
    return len(configs) * epochs / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="bench/results/population.json")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    results = {
        "torch": torch.__version__,
        "threads": arguments.threads,
        "machine": platform.processor() or platform.machine(),
        "cases": [],
    }

    tetris = load_image_dataset("tetris")
    images, labels = tetris.train_images, tetris.train_labels
    for num_networks in (64, 1000):
        configs = [
            NetworkConfig(seed=s, activation="tanh", init="xavier_uniform", learning_rate=3e-3, batch_size=16)
            for s in range(1, num_networks + 1)
        ]
        population = population_rate(TETRIS_MLP, configs, images, labels, epochs=10)
        alone = alone_rate(TETRIS_MLP, configs[:8], images, labels, epochs=5)
        results["cases"].append(
            {
                "network": "tetris_mlp",
                "num_networks": num_networks,
                "train_images": len(labels),
                "batch_size": 16,
                "population_models_epochs_per_s": population,
                "alone_models_epochs_per_s": alone,
                "speedup": population / alone,
            }
        )
        print(json.dumps(results["cases"][-1]))

    generator = torch.Generator().manual_seed(0)
    cnn_images = torch.randn(500, 1, 28, 28, generator=generator)
    cnn_labels = torch.randint(0, 10, (500,), generator=generator)
    configs = [
        NetworkConfig(seed=s, init="uniform", bias_init=0.01, learning_rate=3e-4, batch_size=10) for s in range(1, 101)
    ]
    population = population_rate(MNIST_CNN, configs, cnn_images, cnn_labels, epochs=1)
    alone = alone_rate(MNIST_CNN, configs[:4], cnn_images, cnn_labels, epochs=1)
    results["cases"].append(
        {
            "network": "mnist_cnn",
            "num_networks": 100,
            "train_images": 500,
            "batch_size": 10,
            "population_models_epochs_per_s": population,
            "alone_models_epochs_per_s": alone,
            "speedup": population / alone,
        }
    )
    print(json.dumps(results["cases"][-1]))
    Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {arguments.out}")


if __name__ == "__main__":
    main()
