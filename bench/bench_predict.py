"""Predictions per second of `hyperrep predict` / the network-property-prediction pipeline on 1000 Tetris networks.

    python bench/bench_predict.py [--model MODEL_DIR] [--zoo ZOO_DIR[:CONFIG]] [--num-networks 1000]
    python bench/bench_predict.py --family cnn [--preset mnist_seed] [--symmetry-samples 8] [--device cuda]

Compares, in one run on the same networks: ``predict_networks`` on safetensors files (load + tokens + encoder +
probes, batched), the pipeline on in-memory state_dicts (batched), the pipeline one network at a time, and the
pipeline with the plain z (K = 1) instead of the model's canonical form / symmetry average, and with the 32-copy
symmetry average of the previous release (32 encoder rows per network). Without
``--model`` it builds a tiny TETRIS-SEED zoo and an untrained encoder of the default (paper) size with probes
fitted on it: speed depends on the architecture, not on training. Writes bench/results/predict.json.

``--family cnn``: new MNIST-HYP CNNs (2464 parameters) with the symmetry average on (K copies per network), through
an untrained encoder of a training preset's size (default ``mnist_seed``, the paper's CNN encoder) with probes fitted
on a tiny ``mnist_hyp_mini`` zoo. Compared in one run: the K copies of many networks in one forward pass (chunked by
``--batch-size`` rows, as `hyperrep predict` does), one network at a time (its K copies in one pass), the copies one
per pass (K passes per batch: the unbatched baseline), and the plain z (K = 1). Rates in wall and CPU seconds (the
machine is shared); on ``--device cuda`` also the GPU. Writes bench/results/predict_cnn.json.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import pipeline

import hyperrep_hf
from hyperrep_hf.models.hyperrep.augmentations import sign_flip_layers
from hyperrep_hf.models.hyperrep.embeddings import SymmetryTransforms, symmetry_transforms
from hyperrep_hf.models.hyperrep.pipelines import TASK, predict_networks
from hyperrep_hf.probing.evaluation import evaluate_model, load_zoo_arrays
from hyperrep_hf.zoo.folder import build_zoo
from hyperrep_hf.zoo.recipes import BuildOptions, load_recipe


def make_model(work: Path) -> tuple[Path, Path]:
    """A tiny TETRIS-SEED zoo and a default-size untrained encoder with probes fitted on it."""
    zoo_dir = work / "zoo"
    build_zoo(load_recipe("tetris_seed"), zoo_dir, BuildOptions(num_models=40, epochs=5, subset=200), progress=False)
    processor = hyperrep_hf.NeuronTokenProcessor.from_zoo(zoo_dir)
    model_dir = work / "model"
    hyperrep_hf.HyperRepModel(hyperrep_hf.HyperRepConfig(**processor.model_config_kwargs())).save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    evaluate_model(model_dir, zoo_dir, work / "eval", baselines=[], plots=False, progress=False)
    return model_dir, zoo_dir


def networks(zoo: str, count: int) -> list[dict[str, torch.Tensor]]:
    """``count`` state_dicts from the zoo's rows (all splits, repeated if the zoo is smaller)."""
    arrays = load_zoo_arrays(zoo)
    vectors = torch.cat([torch.from_numpy(v) for v in arrays.vectors.values()])
    vectors = vectors[torch.arange(count) % vectors.shape[0]]
    processor = hyperrep_hf.NeuronTokenProcessor(arrays.info["architecture"])
    return processor.vectors_to_state_dicts(vectors)


def timed(function, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls (the first also warms up)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def make_cnn_model(work: Path, preset: str, symmetry_samples: int) -> tuple[Path, Path]:
    """A tiny mnist_hyp_mini zoo and an untrained encoder of ``preset``'s size (K copies) with probes fitted on it."""
    from hyperrep_hf.cli import resolve_train_config
    from hyperrep_hf.training.trainer import make_model_config, parse_args
    from hyperrep_hf.zoo.folder import load_zoo

    zoo_dir = work / "zoo"
    build_zoo(
        load_recipe("mnist_hyp_mini"), zoo_dir, BuildOptions(num_models=16, epochs=1, subset=100), progress=False
    )
    processor = hyperrep_hf.NeuronTokenProcessor.from_zoo(zoo_dir)
    options = ["--embedding-symmetry-samples", str(symmetry_samples), "--sign-flip", "false", "--canonical", "false"]
    train_config = parse_args([str(resolve_train_config(preset)), *options])
    config = make_model_config(train_config, processor, load_zoo(zoo_dir)[1])
    model_dir = work / "model"
    hyperrep_hf.HyperRepModel(config).save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    evaluate_model(model_dir, zoo_dir, work / "eval", baselines=[], plots=False, progress=False)
    return model_dir, zoo_dir


def timed_both(function, repeats: int = 1) -> tuple[float, float]:
    """Best (wall seconds, CPU seconds of this process) of ``repeats`` calls."""
    best = (float("inf"), float("inf"))
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        function()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best


def time_cnn_device(model_dir: Path, device: str, state_dicts: list, rows: int) -> dict:
    """The rates of one device: batched copies, one network at a time, copies one per pass, plain z."""
    count = len(state_dicts)
    predictor = pipeline(TASK, model=str(model_dir), device=device, max_rows_per_pass=rows)
    samples = predictor.transforms.num_samples
    few = state_dicts[: max(1, count // 4)]
    scale = count / len(few)
    predictor(few[:2])  # warm-up
    seconds = {
        f"batched: K copies of up to {rows // samples} networks per pass": timed_both(lambda: predictor(state_dicts))
    }
    one = timed_both(lambda: [predictor(state_dict) for state_dict in few])
    seconds["one network at a time (its K copies in one pass)"] = (one[0] * scale, one[1] * scale)
    predictor.max_rows_per_pass = predictor.networks_per_pass  # copies one per pass: K passes over the batch
    unbatched = timed_both(lambda: predictor(few))
    seconds["copies one per pass (K passes per batch)"] = (unbatched[0] * scale, unbatched[1] * scale)
    predictor.max_rows_per_pass = rows
    predictor.transforms = symmetry_transforms(predictor.model.config, predictor.feature_extractor.architecture, 1)
    seconds["plain z (K = 1), batched"] = timed_both(lambda: predictor(state_dicts))
    for name, (wall, cpu) in seconds.items():
        print(f"[{device}] {name:<56} {count / wall:>9,.1f} networks/s wall  {count / cpu:>9,.1f} per CPU second")
    return {
        "embedding_symmetry_samples": samples,
        "latent_dim": predictor.model.config.latent_dim,
        "d_model": predictor.model.config.d_model,
        "num_hidden_layers": predictor.model.config.num_hidden_layers,
        "num_probes": len(predictor.probes),
        "networks_per_second_wall": {name: round(count / wall, 2) for name, (wall, _) in seconds.items()},
        "networks_per_second_cpu": {name: round(count / cpu, 2) for name, (_, cpu) in seconds.items()},
        "seconds_wall": {name: round(wall, 3) for name, (wall, _) in seconds.items()},
    }


def cnn_main(arguments: argparse.Namespace) -> None:
    """Predictions per second for new CNNs with the symmetry average on (see the module docstring)."""
    work = Path(tempfile.mkdtemp(prefix="bench-predict-cnn-"))
    if arguments.model:
        model_dir, zoo = Path(arguments.model), arguments.zoo
    else:
        model_dir, zoo = make_cnn_model(work, arguments.preset, arguments.symmetry_samples)
    state_dicts = networks(str(zoo), arguments.num_networks)
    rows = arguments.batch_size
    results = {"num_networks": len(state_dicts), "model": str(model_dir), "preset": arguments.preset}
    results["batch_size_rows"] = rows
    devices = ["cpu"] + ([arguments.device] if arguments.device not in (None, "cpu") else [])
    for device in devices:
        results[device] = time_cnn_device(model_dir, device, state_dicts, rows)
    if not any(device.startswith("cuda") for device in devices):
        results["gpu"] = "unmeasured: no CUDA device here (run with --device cuda on a GPU machine)"
    results.update(
        threads=arguments.threads,
        machine=f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
        note="Wall rates suffer from other processes on a shared machine; CPU-second rates (time.process_time, one "
        "thread) less so. One-at-a-time and copies-one-per-pass are timed on a quarter of the networks, scaled.",
    )
    out = Path(arguments.out or Path(__file__).parent / "results" / "predict_cnn.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder with probes (default: build a tiny one)")
    parser.add_argument("--zoo", help="zoo the networks come from (default: the tiny one)")
    parser.add_argument("--num-networks", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--out", help="JSON output (default bench/results/predict.json, or predict_cnn.json)")
    parser.add_argument("--family", choices=["tetris", "cnn"], default="tetris")
    parser.add_argument("--preset", default="mnist_seed", help="cnn: training preset whose encoder size is timed")
    parser.add_argument("--symmetry-samples", type=int, default=8, help="cnn: K, copies averaged per network")
    parser.add_argument("--batch-size", type=int, default=2048, help="cnn: encoder rows per forward pass")
    parser.add_argument("--device", help="cnn: also time this device (cuda, cuda:1)")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    if arguments.family == "cnn":
        cnn_main(arguments)
        return
    arguments.out = arguments.out or str(Path(__file__).parent / "results" / "predict.json")
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    model_dir, zoo = (Path(arguments.model), arguments.zoo) if arguments.model else make_model(work)
    state_dicts = networks(str(zoo), arguments.num_networks)
    files = []
    for index, state_dict in enumerate(state_dicts):
        files.append(work / "networks" / f"{index:05d}.safetensors")
        files[-1].parent.mkdir(parents=True, exist_ok=True)
        save_file(state_dict, files[-1])

    predictor = pipeline(TASK, model=str(model_dir), device=-1)
    count = len(state_dicts)
    one_at_a_time = timed(lambda: [predictor(state_dict) for state_dict in state_dicts[:200]], 1) * count / 200
    seconds = {
        "predict_networks (files, batch 256)": timed(lambda: predict_networks(model_dir, files, batch_size=256)),
        "pipeline (state_dicts, batch 256)": timed(lambda: predictor(state_dicts, batch_size=256)),
        "pipeline (state_dicts, one at a time)": one_at_a_time,
    }
    symmetry_samples = predictor.transforms.num_samples
    processor = predictor.feature_extractor
    canonical = bool(getattr(processor, "canonical", False))
    processor.canonical = False  # the encoder without the canonical form (issue 12), same networks, same run
    predictor.transforms = symmetry_transforms(predictor.model.config, processor.architecture, 1)
    plain_z = timed(lambda: predictor(state_dicts, batch_size=256))
    seconds["pipeline (state_dicts, batch 256, plain z: K = 1)"] = plain_z
    if canonical or symmetry_samples != 32:
        # The previous release's invariance: z averaged over 32 symmetric copies (K = 32 encoder rows per network).
        activation = getattr(predictor.model.config, "activation", None)
        symmetries = ["permutation"] + (["sign_flip"] if sign_flip_layers(processor.architecture, activation) else [])
        predictor.transforms = SymmetryTransforms(processor.architecture, 32, symmetries, activation)
        seconds["pipeline (state_dicts, batch 256, 32-copy symmetry average)"] = timed(
            lambda: predictor(state_dicts, batch_size=256)
        )
    processor.canonical = canonical
    results = {
        "num_networks": count,
        "model": str(model_dir),
        "latent_dim": predictor.model.config.latent_dim,
        "num_probes": len(predictor.probes),
        "embedding_symmetry_samples": symmetry_samples,
        "canonical": canonical,
        "threads": arguments.threads,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
        "networks_per_second": {name: round(count / value, 1) for name, value in seconds.items()},
        "seconds": {name: round(value, 3) for name, value in seconds.items()},
        "note": "predict_networks includes loading the encoder and probes once per call; best of 3 "
        "(the one-at-a-time loop is timed on 200 networks and scaled).",
    }
    for name, rate in results["networks_per_second"].items():
        print(f"{name:<52} {rate:>10,.0f} networks/s  ({seconds[name]:.2f} s for {count})")
    Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {arguments.out}")


if __name__ == "__main__":
    main()
