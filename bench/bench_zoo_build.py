"""Full zoo builds, timed → bench/results/zoo_build.json.

    python bench/bench_zoo_build.py [--recipes tetris_seed tetris_hyp] [--threads T] [--out-dir DIR]

Wall time of `build_zoo` (training, evaluation of every checkpoint on all three splits, writing Parquet), the
throughput in models·epochs/s and the mean final test accuracy of the zoo.
"""

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

from hyperrep_hf.zoo.folder import build_zoo, load_zoo
from hyperrep_hf.zoo.recipes import BuildOptions, load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipes", nargs="+", default=["tetris_seed", "tetris_hyp"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out-dir", help="keep the zoos here (default: a temporary folder, removed)")
    parser.add_argument("--out", default="bench/results/zoo_build.json")
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    folder = Path(arguments.out_dir or tempfile.mkdtemp(prefix="hyperrep-bench-zoo-"))
    results = {
        "torch": torch.__version__,
        "threads": arguments.threads,
        "device": arguments.device,
        "cpus": os.cpu_count(),
        "zoos": [],
    }
    for name in arguments.recipes:
        recipe = load_recipe(name)
        shutil.rmtree(folder / name, ignore_errors=True)
        started = time.perf_counter()
        build_zoo(recipe, folder, BuildOptions(device=arguments.device), progress=False)
        seconds = time.perf_counter() - started
        dataset, info = load_zoo(folder, name, cache_dir=str(folder / ".cache"))
        final = [
            a
            for split in dataset.values()
            for a, e in zip(split["test_accuracy"], split["epoch"], strict=True)
            if e == info["epochs"]
        ]
        record = {
            "zoo": name,
            "models": info["counts"]["models"],
            "dropped": info["counts"]["dropped"],
            "epochs": info["epochs"],
            "seconds": round(seconds, 1),
            "models_epochs_per_s": round(info["counts"]["configured"] * info["epochs"] / seconds, 1),
            "mean_final_test_accuracy": round(statistics.fmean(final), 4),
            "std_final_test_accuracy": round(statistics.pstdev(final), 4),
        }
        results["zoos"].append(record)
        print(json.dumps(record), flush=True)
    if not arguments.out_dir:
        shutil.rmtree(folder)
    Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {arguments.out}")


if __name__ == "__main__":
    main()
