"""What load_zoo's integrity checks cost on a real zoo → bench/results/zoo_verify.json.

    hyperrep zoo build tetris_seed --out /tmp/zoos          # the full 76k-row TETRIS-SEED zoo
    python bench/bench_zoo_verify.py --zoo /tmp/zoos:tetris_seed [--repeats 5]

Times, in one run and on the same files (median of the repeats, warm page cache and warm ``datasets`` cache):
- ``verify_files``: sizes + SHA-256 of every Parquet file against zoo_info.json (what load_zoo adds per call);
- ``check_rows``: rows, splits, model ids and weight length of the loaded DatasetDict against zoo_info.json;
- ``load_zoo``: the whole checked load; ``load_dataset_unchecked``: ``datasets.load_dataset("parquet", ...)`` on
  the same files and cache, no checks — the baseline the ratio is against.
The recorded hashes are checked by a second route, the ``sha256sum`` program, when it is installed.
"""

import argparse
import json
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import datasets

from hyperrep_hf.zoo.folder import _verified_files, check_rows, load_zoo


def _median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zoo", required=True, help="DIR:CONFIG of a built zoo")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bench/results/zoo_verify.json")
    arguments = parser.parse_args()
    folder, _, config = arguments.zoo.rpartition(":")
    zoo_dir = Path(folder) / config
    cache = Path(folder) / ".bench-cache"
    dataset, info = load_zoo(folder, config, cache_dir=str(cache))  # warms the cache
    data_files = _verified_files(zoo_dir, info)
    plain_cache = Path(cache) / "hyperrep_zoos" / info["fingerprint"][:32]
    results = {
        "zoo": arguments.zoo,
        "rows": info["counts"]["rows"],
        "bytes": sum(record["bytes"] for record in info["files"]),
        "files": len(info["files"]),
        "repeats": arguments.repeats,
        "seconds": {
            "verify_files": _median_seconds(lambda: _verified_files(zoo_dir, info), arguments.repeats),
            "check_rows": _median_seconds(lambda: check_rows(dataset, info, str(zoo_dir)), arguments.repeats),
            "load_zoo": _median_seconds(lambda: load_zoo(folder, config, cache_dir=str(cache)), arguments.repeats),
            "load_dataset_unchecked": _median_seconds(
                lambda: datasets.load_dataset("parquet", data_files=data_files, cache_dir=str(plain_cache)),
                arguments.repeats,
            ),
        },
    }
    seconds = results["seconds"]
    results["overhead_ratio"] = seconds["load_zoo"] / seconds["load_dataset_unchecked"]
    results["verify_mb_per_s"] = results["bytes"] / 1e6 / seconds["verify_files"]
    if shutil.which("sha256sum"):
        started = time.perf_counter()
        listing = subprocess.run(
            ["sha256sum", *(str(zoo_dir / r["name"]) for r in info["files"])], capture_output=True, text=True
        ).stdout
        results["seconds"]["sha256sum_program"] = time.perf_counter() - started
        by_name = {Path(line.split()[1]).name: line.split()[0] for line in listing.splitlines()}
        results["hashes_agree_with_sha256sum"] = all(by_name[r["name"]] == r["sha256"] for r in info["files"])
    shutil.rmtree(cache, ignore_errors=True)
    Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
