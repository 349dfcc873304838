"""Peak memory of `hyperrep zoo import small-cnn-zoo` on synthetic sources of the real zoo's shape → JSON.

    python bench/bench_import.py [--rows 270000 27000] [--work-dir DIR] [--out bench/results/import.json]

A source of the Small CNN Zoo's shape (4970 float32 weights per row, 9 checkpoints per model directory, the
released columns) is written to disk in a streaming way, then imported in a child process whose peak resident
memory (ru_maxrss of the child) is read back. Bounded memory means: the peak does not grow with the number of
rows — compared in one run between the sizes given (default 27k and 270k rows, the size of one data set of the
real zoo), and against the size of weights.npy (what loading it whole would cost).
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

from hyperrep_hf.importers import small_cnn_zoo_layout, write_small_cnn_zoo_source

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


def measure_import(source: Path, out: Path) -> dict:
    """Imports in a child process; its wall time and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    code = (
        "import torch; torch.set_num_threads(1); from hyperrep_hf.importers import import_small_cnn_zoo; "
        f"r = import_small_cnn_zoo({str(source)!r}, {str(out)!r}, progress=False); "
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
    arguments = parser.parse_args()
    work = Path(arguments.work_dir)
    results = {"cpus": os.cpu_count(), "numpy": np.__version__, "sizes": []}
    # ru_maxrss of RUSAGE_CHILDREN is the maximum over all children so far: measure the sizes in increasing order,
    # each in its own invocation of this script, to read one peak per size.
    for rows in sorted(arguments.rows):
        source = work / f"source-{rows}"
        if not (source / "layout.csv").is_file():
            started = time.perf_counter()
            write_source(source, rows)
            print(f"wrote a {rows}-row source in {time.perf_counter() - started:.0f}s", flush=True)
        record = {"rows": rows, "weights_npy_mib": round((source / "weights.npy").stat().st_size / 2**20, 1)}
        probe = subprocess.run(
            [sys.executable, __file__, "--child", str(source), str(work / f"zoo-{rows}")],
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
        print(json.dumps(measure_import(Path(sys.argv[2]), Path(sys.argv[3]))))
    else:
        main()
