"""Peak memory of `hyperrep zoo import` on synthetic sources of the real zoos' shapes → JSON.

    python bench/bench_import.py [--rows 27000 270000] [--work-dir DIR] [--out bench/results/import.json]
    python bench/bench_import.py --format model-zoos --rows 2700 27000 --out bench/results/import_model_zoos.json

A source of the Small CNN Zoo's shape (4970 float32 weights per row, 9 checkpoints per model directory, the
released columns) is written to disk in a streaming way, then imported in a child process whose peak resident
memory (ru_maxrss of the child) is read back. Bounded memory means: the peak does not grow with the number of
rows — compared in one run between the sizes given (default 27k and 270k rows, the size of one data set of the
real zoo), and against the size of weights.npy (what loading it whole would cost). ``--format model-zoos``
writes Model Zoos folders instead (the 2464-parameter CNN as ``module_list`` state_dicts with Dropout-shifted
indices, 10 checkpoints per model, ``torch.save``) and imports them the same way.
"""

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hyperrep_hf.zoo.importers import small_cnn_zoo_layout, write_small_cnn_zoo_source
from hyperrep_hf.zoo.networks import MNIST_CNN

STEPS = (0, 1, 2, 3, 20, 40, 60, 80, 86)


def write_source(folder: Path, rows: int, seed: int = 0) -> Path:
    """A synthetic Small CNN Zoo source of ``rows`` checkpoints, written chunk by chunk (never all in memory)."""
    variables = small_cnn_zoo_layout()
    folder.mkdir(parents=True, exist_ok=True)
    weights = np.lib.format.open_memmap(folder / "weights.npy", mode="w+", dtype=np.float32, shape=(rows, 4970))
    rng = np.random.default_rng(seed)
    for start in range(0, rows, 8192):
        stop = min(rows, start + 8192)
        weights[start:stop] = rng.standard_normal((stop - start, 4970), dtype=np.float32) * 0.1
    weights.flush()
    del weights

    def metrics():
        for row in range(rows):
            model, step = divmod(row, len(STEPS))
            accuracy = float(rng.uniform(0.1, 0.9))
            yield {
                "config.activation": ("relu", "tanh")[model % 2],
                "config.b_init": "zeros",
                "config.dataset": "cifar10",
                "config.dnn_architecture": "cnn",
                "config.dropout": 0.1 * (model % 5),
                "config.init_std": 0.05,
                "config.l2reg": float(10 ** rng.uniform(-8, -2)),
                "config.learning_rate": float(10 ** rng.uniform(-4, -2)),
                "config.num_layers": 3,
                "config.num_units": 16,
                "config.optimizer": ("adam", "sgd", "rmsprop")[model % 3],
                "config.stddev": 0.05,
                "config.train_fraction": (0.1, 0.25, 0.5, 1.0)[model % 4],
                "config.w_init": "he_normal",
                "modeldir": f"/data/cifar10/run_{model:06d}",
                "step": STEPS[step],
                "test_accuracy": accuracy,
                "test_loss": 2.3 - 2 * accuracy,
                "train_accuracy": accuracy + 0.02,
                "train_loss": 2.2 - 2 * accuracy,
            }

    return write_small_cnn_zoo_source(folder, None, metrics(), variables, compress=True)


def write_model_zoos_source(folder: Path, rows: int, checkpoints: int = 10, seed: int = 0) -> Path:
    """A synthetic Model Zoos source: rows / checkpoints model folders, each with result.json and state_dicts."""
    generator = torch.Generator().manual_seed(seed)
    module_indices = [0, 4, 8, 12, 15]  # conv, conv, conv, linear, linear between pooling/activation/dropout modules
    shapes = list(MNIST_CNN.parameter_shapes.values())
    for model in range(rows // checkpoints):
        directory = folder / f"NN_tune_trainable_{model:06d}"
        directory.mkdir(parents=True, exist_ok=True)
        lines = []
        config = {"model::nlin": "tanh", "optim::lr": 1e-3 * (1 + model % 3), "seed": model}
        for epoch in range(checkpoints):
            state = {}
            for position, index in enumerate(module_indices):
                state[f"module_list.{index}.weight"] = torch.randn(shapes[2 * position], generator=generator)
                state[f"module_list.{index}.bias"] = torch.randn(shapes[2 * position + 1], generator=generator)
            (directory / f"checkpoint_{epoch:06d}").mkdir(exist_ok=True)
            torch.save(state, directory / f"checkpoint_{epoch:06d}" / "checkpoints")
            accuracy = 0.1 + 0.08 * epoch
            line = {"training_iteration": epoch + 1, "test_acc": accuracy, "train_acc": accuracy, "config": config}
            lines.append(json.dumps(line))
        (directory / "result.json").write_text("\n".join(lines) + "\n")
    return folder


def measure_import(source: Path, out: Path, source_format: str = "small-cnn-zoo") -> dict:
    """Imports in a child process; its wall time and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    function = "import_small_cnn_zoo" if source_format == "small-cnn-zoo" else "import_model_zoos"
    code = (
        f"import torch; torch.set_num_threads(1); from hyperrep_hf.zoo.importers import {function}; "
        f"r = {function}({str(source)!r}, {str(out)!r}, progress=False); "
        "import json; print(json.dumps({'rows': sum(r.rows_written.values()), 'dropped': r.dropped}))"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kib <= before:
        raise RuntimeError("ru_maxrss of the children did not rise: measure each size in a fresh process.")
    written = json.loads(completed.stdout.strip().splitlines()[-1])
    parquet_bytes = sum(path.stat().st_size for path in out.rglob("*.parquet"))
    return {
        "rows_written": written["rows"],
        "seconds": round(seconds, 1),
        "rows_per_second": round(written["rows"] / seconds),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "parquet_mib": round(parquet_bytes / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[27_000, 270_000])
    parser.add_argument("--work-dir", default="/tmp/hyperrep-bench-import")
    parser.add_argument("--out", default="bench/results/import.json")
    parser.add_argument("--keep", action="store_true", help="keep the sources and zoos")
    parser.add_argument("--format", choices=["small-cnn-zoo", "model-zoos"], default="small-cnn-zoo")
    arguments = parser.parse_args()
    work = Path(arguments.work_dir)
    results = {"format": arguments.format, "cpus": os.cpu_count(), "numpy": np.__version__, "sizes": []}
    # ru_maxrss of RUSAGE_CHILDREN is the maximum over all children so far: measure the sizes in increasing order,
    # each in its own invocation of this script, to read one peak per size.
    for rows in sorted(arguments.rows):
        source = work / f"{arguments.format}-source-{rows}"
        if not source.is_dir():
            started = time.perf_counter()
            partial = source.with_name(source.name + ".partial")  # a killed run never leaves a source that looks whole
            shutil.rmtree(partial, ignore_errors=True)
            (write_source if arguments.format == "small-cnn-zoo" else write_model_zoos_source)(partial, rows)
            os.replace(partial, source)
            print(f"wrote a {rows}-row source in {time.perf_counter() - started:.0f}s", flush=True)
        source_bytes = sum(path.stat().st_size for path in source.rglob("*") if path.is_file())
        record = {"rows": rows, "source_mib": round(source_bytes / 2**20, 1)}
        probe = subprocess.run(
            [sys.executable, __file__, "--child", str(source), str(work / f"zoo-{rows}"), arguments.format],
            check=True,
            capture_output=True,
            text=True,
        )
        record |= json.loads(probe.stdout.strip().splitlines()[-1])
        print(json.dumps(record), flush=True)
        results["sizes"].append(record)
        if not arguments.keep:
            shutil.rmtree(work / f"zoo-{rows}", ignore_errors=True)
    first, last = results["sizes"][0], results["sizes"][-1]
    results["peak_rss_ratio_largest_vs_smallest"] = round(last["peak_rss_mib"] / first["peak_rss_mib"], 3)
    results["rows_ratio_largest_vs_smallest"] = round(last["rows"] / first["rows"], 1)
    Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {arguments.out}")
    if not arguments.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        print(json.dumps(measure_import(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4])))
    else:
        main()
