"""Population engines side by side, same data, same run → bench/results/population_<device>.json.

    python bench/bench_population.py --device cpu --threads 1 [--repeats 3]
    python bench/bench_population.py --device cuda --networks 1000 --images 3000

The headline case is the paper's: 1000 MNIST CNNs (2464 parameters) at batch size 10. For each engine
(``grouped`` = the previous conv2d(groups=N) engine, the baseline; ``channels_last``; ``unfold``) it times
``train_epoch`` over ``--images`` training images (image·model steps/s = networks × images / seconds; evaluation
excluded) and one ``evaluate`` over ``--eval-images`` images; engines are interleaved and repeated, the median is
reported with the spread. ``--mlp`` adds the TETRIS-SEED MLP population against one-at-a-time training, on Tetris
data versions 1 and 2; ``--mlp-only`` runs only that (→ ``population_mlp_<device>_<T>threads.json``).

On a CUDA device the data lives on the device and every timing is bracketed by ``torch.cuda.synchronize``. On the
CPU every engine runs with the package's allocator settings (transparent huge pages, heap-kept memory:
``population.tune_cpu_allocator``); ``--default-allocator`` measures all of them without, as before session 4
(→ ``population_cpu_<T>threads_default_allocator.json``). The CPU figure to compare is the rate per CPU second.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

if "--default-allocator" in sys.argv:  # read by PyTorch at its first CPU allocation, so before importing it
    os.environ["THP_MEM_ALLOC_ENABLE"] = "0"

import torch

from hyperrep_hf.zoo import population as population_module
from hyperrep_hf.zoo.networks import MNIST_CNN, TETRIS_MLP
from hyperrep_hf.zoo.population import NetworkConfig, Population, default_engine, train_alone

ENGINES = ("grouped", "channels_last", "unfold")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_engine(engine, configs, images, labels, eval_images, eval_labels, device) -> dict:
    """One timed epoch and one timed evaluation of a fresh population (after a two-step warm-up)."""
    population = Population(MNIST_CNN, configs, device, engine=engine)
    batch = configs[0].batch_size
    population.train_epoch(images[: 2 * batch], labels[: 2 * batch], epoch=1, dropout_seed=1)  # warm-up
    population.evaluate(eval_images[:batch], eval_labels[:batch], num_classes=10)
    synchronize(device)
    started, started_cpu = time.perf_counter(), time.process_time()
    population.train_epoch(images, labels, epoch=2, dropout_seed=2)
    synchronize(device)
    train_seconds = time.perf_counter() - started
    train_cpu_seconds = time.process_time() - started_cpu
    started = time.perf_counter()
    metrics = population.evaluate(eval_images, eval_labels, num_classes=10)
    synchronize(device)
    eval_seconds = time.perf_counter() - started
    if not bool(torch.isfinite(population.flat_parameters).all()) or not bool(torch.isfinite(metrics["loss"]).all()):
        raise RuntimeError(f"engine {engine}: non-finite weights or loss after the timed epoch")
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**30
        torch.cuda.reset_peak_memory_stats(device)
    else:
        peak = None
    return {
        "train_image_model_steps_per_s": len(configs) * len(labels) / train_seconds,
        "ms_per_step": 1000 * train_seconds / -(-len(labels) // batch),
        # per CPU second of this process: what the engine costs when other processes share the cores
        "train_image_model_steps_per_cpu_s": len(configs) * len(labels) / train_cpu_seconds,
        "eval_image_models_per_s": len(configs) * len(eval_labels) / eval_seconds,
        "peak_gib": peak,
    }


def cnn_case(arguments, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    # Random data of MNIST's shape and scale: engine speed does not depend on the pixels (no zeros, see METHOD).
    images = torch.randn(arguments.images, *MNIST_CNN.input_shape, generator=generator).to(device)
    labels = torch.randint(0, 10, (arguments.images,), generator=generator).to(device)
    eval_images = torch.randn(arguments.eval_images, *MNIST_CNN.input_shape, generator=generator).to(device)
    eval_labels = torch.randint(0, 10, (arguments.eval_images,), generator=generator).to(device)
    configs = [
        NetworkConfig(
            seed=seed,
            init="kaiming_uniform",
            bias_init=0.01,
            learning_rate=3e-4,
            batch_size=arguments.batch_size,
            dropout=arguments.dropout,
        )
        for seed in range(1, arguments.networks + 1)
    ]
    runs = {engine: [] for engine in arguments.engines}
    for _ in range(arguments.repeats):  # interleaved, so a busy machine slows every engine alike
        for engine in arguments.engines:
            runs[engine].append(time_engine(engine, configs, images, labels, eval_images, eval_labels, device))
            print(engine, json.dumps(runs[engine][-1]), flush=True)
    engines = {}
    for engine, samples in runs.items():
        rates = [s["train_image_model_steps_per_s"] for s in samples]
        evals = [s["eval_image_models_per_s"] for s in samples]
        engines[engine] = {
            "train_image_model_steps_per_s": statistics.median(rates),
            "train_min": min(rates),
            "train_max": max(rates),
            "train_image_model_steps_per_cpu_s": statistics.median(
                s["train_image_model_steps_per_cpu_s"] for s in samples
            ),
            "eval_image_models_per_s": statistics.median(evals),
            "ms_per_step": statistics.median(s["ms_per_step"] for s in samples),
            "peak_gib": max((s["peak_gib"] or 0) for s in samples) if device.type == "cuda" else None,
            "samples": samples,
        }
    case = {
        "network": "mnist_cnn",
        "num_parameters": MNIST_CNN.num_parameters,
        "num_networks": arguments.networks,
        "batch_size": arguments.batch_size,
        "dropout": arguments.dropout,
        "train_images": arguments.images,
        "eval_images": arguments.eval_images,
        "engines": engines,
        "auto_engine": default_engine(device),
    }
    if "grouped" in engines:
        baseline = engines["grouped"]["train_image_model_steps_per_s"]
        case["speedup_vs_grouped"] = {e: v["train_image_model_steps_per_s"] / baseline for e, v in engines.items()}
        baseline = engines["grouped"]["train_image_model_steps_per_cpu_s"]
        case["cpu_time_speedup_vs_grouped"] = {
            e: v["train_image_model_steps_per_cpu_s"] / baseline for e, v in engines.items()
        }
        baseline = engines["grouped"]["eval_image_models_per_s"]
        case["eval_speedup_vs_grouped"] = {e: v["eval_image_models_per_s"] / baseline for e, v in engines.items()}
    return case


def mlp_case(version: int = 1) -> dict:
    """TETRIS-SEED MLPs: population vs one network at a time (models·epochs/s), on Tetris data ``version``.

    Version 1 has 200 training images (13 steps an epoch), version 2, which the shipped Tetris zoos train on, 4000
    (250 steps): the per-epoch work outside the steps weighs less there.
    """
    from hyperrep_hf.zoo.image_data import load_image_dataset

    tetris = load_image_dataset("tetris", version=version)
    images, labels = tetris.train_images, tetris.train_labels
    epochs, alone_epochs = (10, 5) if version == 1 else (2, 1)
    configs = [
        NetworkConfig(seed=s, activation="tanh", init="xavier_uniform", learning_rate=3e-3, batch_size=16)
        for s in range(1, 1001)
    ]
    population = Population(TETRIS_MLP, configs)
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        population.train_epoch(images, labels, epoch)
    population_rate = len(configs) * epochs / (time.perf_counter() - started)
    started = time.perf_counter()
    for config in configs[:8]:
        train_alone(TETRIS_MLP, config, images, labels, alone_epochs)
    alone_rate = 8 * alone_epochs / (time.perf_counter() - started)
    return {
        "network": "tetris_mlp",
        "data_version": version,
        "training_images": len(labels),
        "num_networks": 1000,
        "population_models_epochs_per_s": population_rate,
        "alone_models_epochs_per_s": alone_rate,
        "speedup": population_rate / alone_rate,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    parser.add_argument("--networks", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--images", type=int, default=None, help="timed training images (cpu 50, cuda 3000)")
    parser.add_argument("--eval-images", type=int, default=None, help="timed evaluation images (cpu 50, cuda 750)")
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    parser.add_argument("--mlp", action="store_true", help="also the TETRIS MLPs (data v1, v2) population vs alone")
    parser.add_argument("--mlp-only", action="store_true", help="only the TETRIS MLP case (→ population_mlp_….json)")
    parser.add_argument(
        "--default-allocator",
        action="store_true",
        help="CPU: glibc's and PyTorch's default allocation (no huge pages, no heap-kept memory), as before session 4",
    )
    parser.add_argument("--out", default=None, help="default: bench/results/population_<device>[_<T>threads].json")
    arguments = parser.parse_args()
    device = torch.device(arguments.device)
    if arguments.default_allocator:
        population_module.tune_cpu_allocator = lambda: False
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    cuda = device.type == "cuda"
    arguments.images = arguments.images or (3000 if cuda else 50)
    arguments.eval_images = arguments.eval_images or (750 if cuda else 50)
    results = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if cuda else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "load_average_before": list(_load_average()),
        "command": " ".join(["python", *sys.argv]),
        "cpu_allocator": {
            "transparent_huge_pages": os.environ.get("THP_MEM_ALLOC_ENABLE", "0") == "1",
            "heap_kept": not arguments.default_allocator and population_module.tune_cpu_allocator(),
        },
        "cases": [] if arguments.mlp_only else [cnn_case(arguments, device)],
    }
    results["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    if arguments.mlp or arguments.mlp_only:
        results["cases"] += [mlp_case(version) for version in (1, 2)]
    results["load_average_after"] = list(_load_average())
    suffix = "" if cuda else f"_{torch.get_num_threads()}threads"
    suffix += "_default_allocator" if arguments.default_allocator else ""
    kind = "mlp_" if arguments.mlp_only else ""
    out = arguments.out or f"bench/results/population_{kind}{device.type}{suffix}.json"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2) + "\n")
    if arguments.mlp_only:
        for case in results["cases"]:
            population, alone = case["population_models_epochs_per_s"], case["alone_models_epochs_per_s"]
            print(f"{case['num_networks']} Tetris MLPs, {case['training_images']} images, models·epochs/s: "
                  f"population {population:,.0f}, one at a time {alone:,.1f}: {case['speedup']:.1f}×")  # fmt: skip
        print(f"wrote {out}")
        return
    case = results["cases"][0]
    print(f"\n{case['num_networks']} MNIST CNNs, batch {case['batch_size']}, {results['device']}, "
          f"{results['threads']} threads")  # fmt: skip
    print(f"{'engine':15s} {'image·model steps/s':>20s} {'per CPU s':>10s} {'ms/step':>9s} {'eval img·model/s':>17s} "
          f"{'× grouped':>10s} {'(CPU s)':>8s}")  # fmt: skip
    for engine, values in case["engines"].items():
        ratio = case.get("speedup_vs_grouped", {}).get(engine, float("nan"))
        cpu_ratio = case.get("cpu_time_speedup_vs_grouped", {}).get(engine, float("nan"))
        print(
            f"{engine:15s} {values['train_image_model_steps_per_s']:20,.0f} "
            f"{values['train_image_model_steps_per_cpu_s']:10,.0f} {values['ms_per_step']:9.1f} "
            f"{values['eval_image_models_per_s']:17,.0f} {ratio:10.2f} {cpu_ratio:8.2f}"
        )
    print(f"wrote {out}")


def _load_average() -> tuple[float, ...]:
    try:
        return tuple(round(x, 2) for x in os.getloadavg())
    except OSError:
        return ()


if __name__ == "__main__":
    main()
