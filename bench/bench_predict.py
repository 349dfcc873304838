"""Predictions per second of `hyperrep predict` / the network-property-prediction pipeline on 1000 Tetris networks.

    python bench/bench_predict.py [--model MODEL_DIR] [--zoo ZOO_DIR[:CONFIG]] [--num-networks 1000]

Compares, in one run on the same networks: ``predict_networks`` on safetensors files (load + tokens + encoder +
probes, batched), the pipeline on in-memory state_dicts (batched), the pipeline one network at a time, and the
pipeline with the plain z (K = 1) instead of the model's canonical form / symmetry average, and with the 32-copy
symmetry average of the previous release (32 encoder rows per network). Without
``--model`` it builds a tiny TETRIS-SEED zoo and an untrained encoder of the default (paper) size with probes
fitted on it: speed depends on the architecture, not on training. Writes bench/results/predict.json.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder with probes (default: build a tiny one)")
    parser.add_argument("--zoo", help="zoo the networks come from (default: the tiny one)")
    parser.add_argument("--num-networks", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "predict.json"))
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
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
