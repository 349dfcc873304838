"""Gathers several ``hyperrep evaluate`` results files into one JSON of R² (%) per run, split and target.

Used for a preset's selection and seed runs (``bench/results/tetris_seed_*.json``): the validation split chose, the
test split is reported, each run's paired bootstrap difference to the baseline beside it.

    python bench/collect_evaluations.py --run "latent 200, seed 0=eval/l200_s0/results.json" ... \\
        --what "what these runs are" --command "hyperrep train ..." --out bench/results/NAME.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SPLITS = ("validation", "test")


def r2_by_split(document: dict, method: str) -> dict[str, dict[str, float]]:
    """method's R² in % (all rows of each split), split → target → value."""
    return {
        split: {
            record["target"]: round(100 * record["value"], 2)
            for record in document["results"]
            if record["method"] == method
            and record["metric"] == "r2"
            and record["split"] == split
            and not record.get("rows")
        }
        for split in SPLITS
    }


def differences(document: dict) -> dict[str, list[float]]:
    """hyperrep − baseline test R² (%), all epochs, and its 95 % paired bootstrap interval: target → [Δ, lo, hi]."""
    return {
        record["target"]: [round(100 * record[key], 2) for key in ("difference", "low", "high")]
        for record in document.get("final_checkpoints", {}).get("results", [])
        if record["subset"] == "all_epochs" and record["metric"] == "r2"
    }


def collect(runs: dict[str, Path], baseline: str = "s(W)") -> dict:
    documents = {name: json.loads(Path(path).read_text()) for name, path in runs.items()}
    first = next(iter(documents.values()))
    if baseline not in first["methods"]:
        raise SystemExit(
            f"{runs[next(iter(runs))]} has no {baseline} results; evaluate with --baselines '{baseline}'."
        )
    return {
        baseline: r2_by_split(first, baseline),
        "runs": {
            name: {
                **r2_by_split(document, "hyperrep"),
                f"test difference to {baseline} [95 %]": differences(document),
                "model": document["model"],
            }
            for name, document in documents.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="NAME=PATH/results.json (repeatable)")
    parser.add_argument("--what", required=True, help="one sentence: what these runs are")
    parser.add_argument("--zoo", default="zoos_built:tetris_seed (data version 2, 1000 x 75 epochs)")
    parser.add_argument("--command", action="append", default=[], help="a command that produced them (repeatable)")
    parser.add_argument("--out", required=True)
    arguments = parser.parse_args(argv)
    runs = {}
    for item in arguments.run:
        name, separator, path = item.rpartition("=")
        if not separator or not name:
            raise SystemExit(f"--run {item!r}: expected NAME=PATH.")
        runs[name] = Path(path)
    document = {
        "what": arguments.what,
        "zoo": arguments.zoo,
        "commands": arguments.command,
        "units": "R^2 in %, all epochs; validation chooses, test is reported",
        **collect(runs),
    }
    Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.out).write_text(json.dumps(document, indent=1) + "\n")
    for name, run in document["runs"].items():
        for split in SPLITS:
            values = list(run[split].values())
            print(
                f"{name:40s} {split:10s} "
                + " / ".join(f"{v:.1f}" for v in values)
                + f"  mean {sum(values) / len(values):.1f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
