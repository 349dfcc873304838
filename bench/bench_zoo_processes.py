"""A zoo built by one process and by several (torchrun), timed and compared byte for byte → JSON.

    python bench/bench_zoo_processes.py [--recipe tetris_seed] [--num-models 200] [--epochs 75] [--processes 2]

Both builds use the same shard plan (``--chunk-size num_models / processes``) and ``--threads 1`` per process, so
the ratio is what spreading the shards over processes buys on this machine; the folders must be identical.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="tetris_seed")
    parser.add_argument("--num-models", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=75)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", default="bench/results/zoo_processes.json")
    arguments = parser.parse_args()
    chunk = -(-arguments.num_models // arguments.processes)
    common = ["zoo", "build", arguments.recipe, "--num-models", str(arguments.num_models)]
    common += ["--epochs", str(arguments.epochs), "--threads", "1", "--quiet", "--chunk-size", str(chunk)]
    folder = Path(tempfile.mkdtemp(prefix="hyperrep-bench-processes-"))
    load_before = round(os.getloadavg()[0], 1)  # other work on the machine: the ratio means little on a busy one
    one = _run([sys.executable, "-m", "hyperrep_hf.cli", *common, "--out", str(folder / "one")])
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    many = _run([*launcher, str(arguments.processes), "-m", "hyperrep_hf.cli", *common, "--out", str(folder / "many")])
    results = {
        "recipe": arguments.recipe,
        "num_models": arguments.num_models,
        "epochs": arguments.epochs,
        "chunk_size": chunk,
        "cpus": os.cpu_count(),
        "load_average_1min_before": load_before,
        "seconds_1_process": round(one, 1),
        f"seconds_{arguments.processes}_processes": round(many, 1),
        "speedup": round(one / many, 2),
        "identical": _files(folder / "one") == _files(folder / "many"),
    }
    Path(arguments.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
