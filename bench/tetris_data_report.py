"""How the networks of a Tetris zoo train: the measurements behind the choice of Tetris data version 2.

For each zoo (``--zoo DIR:CONFIG``, several allowed; v1 and v2 side by side):

- **leaving chance**: the share of configured networks whose validation accuracy passed ``--chance-threshold`` at
  some epoch ≥ 1, overall and by learning rate, activation and init (read from the Parquet rows, so networks that
  a recipe filter dropped are counted from ``zoo_info.json``'s ``dropped`` entries, which carry their best accuracy);
  with how many the zoo kept;
- **final test accuracy** by learning rate;
- **generalisation gap** (train − test accuracy): its distribution over networks at the final epoch (mean, std,
  percentiles, histogram), its mean and spread across networks at chosen epochs, and how much of it is shared by a
  network's seed over epochs (correlation of a network's gap at epoch 50 and at the last epoch);
- **predictability**: test R² of the project's ridge probe on s(W) (the paper's weight statistics) for the epoch,
  test accuracy and generalisation gap — the figure the paper reports at 96.4 / 86.9 / 81.0 on TETRIS-SEED.

    python bench/tetris_data_report.py --zoo zoos_v2:tetris_seed --zoo zoos_v2:tetris_hyp [--out FILE]

Writes JSON (default ``bench/results/tetris_data_report.json``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from hyperrep_hf.hub.cards import text_histogram
from hyperrep_hf.probing.baselines import compute_baseline_features
from hyperrep_hf.probing.evaluation import load_zoo_arrays
from hyperrep_hf.probing.probes import RidgeProbe
from hyperrep_hf.zoo.folder import SPLITS
from hyperrep_hf.zoo.image_data import zoo_data_version

GROUPS = ("learning_rate", "activation", "init")


def leaving_chance(zoo, threshold: float) -> dict:
    """Share of networks whose validation accuracy passed ``threshold`` after epoch 0, by hyper-parameter."""
    best, config = {}, {}
    for split in SPLITS:
        columns = zoo.columns[split]
        for model, epoch, accuracy, *values in zip(
            zoo.model_ids[split],
            columns["epoch"],
            columns["validation_accuracy"],
            *(columns[g] for g in GROUPS),
            strict=True,
        ):
            if epoch >= 1:
                best[int(model)] = max(best.get(int(model), -1.0), float(accuracy))
            config[int(model)] = dict(zip(GROUPS, values, strict=True))
    filtered = [entry for entry in zoo.info.get("dropped", []) if entry.get("filtered")]
    recipe_grid = zoo.info["recipe"]["grid"]
    fixed = zoo.info["recipe"]["fixed"]
    for entry in filtered:  # networks a recipe filter dropped: not in the rows, their best accuracy is recorded
        best[entry["model_id"]] = entry["best_validation_accuracy"]
        config[entry["model_id"]] = None
    kept = {model: accuracy > threshold for model, accuracy in best.items()}
    result = {
        "threshold": threshold,
        "networks": len(best),
        "left_chance": round(float(np.mean(list(kept.values()))), 4),
        "kept_in_zoo": zoo.info["counts"]["models"],
        "configured": zoo.info["counts"]["configured"],
        "filtered_by_recipe": len(filtered),
        "diverged": sum(1 for entry in zoo.info.get("dropped", []) if not entry.get("filtered")),
    }
    if filtered:
        # the filtered networks' configurations come from the recipe (they have no rows)
        from hyperrep_hf.zoo.recipes import BuildOptions, ZooRecipe, select_networks

        recipe = ZooRecipe(**{**zoo.info["recipe"], "seeds": tuple(zoo.info["recipe"]["seeds"] or ()) or None})
        options = zoo.info["options"]
        configs = select_networks(recipe, BuildOptions(num_models=options["num_models"], seed=options["seed"]))
        for entry in filtered:
            network = configs[entry["model_id"]]
            config[entry["model_id"]] = {g: getattr(network, g) for g in GROUPS}
    for group in GROUPS:
        if group not in recipe_grid and group not in fixed:
            continue
        values = sorted({config[m][group] for m in best}, key=str)
        result[f"by_{group}"] = {
            str(value): round(float(np.mean([kept[m] for m in best if config[m][group] == value])), 4)
            for value in values
        }
    return result


def gap_statistics(zoo) -> dict:
    rows = {key: np.concatenate([zoo.columns[s][key] for s in SPLITS]) for key in ("epoch", "generalization_gap")}
    rows["test_accuracy"] = np.concatenate([zoo.columns[s]["test_accuracy"] for s in SPLITS])
    models = np.concatenate([zoo.model_ids[s] for s in SPLITS])
    last = int(rows["epoch"].max())
    final = rows["generalization_gap"][rows["epoch"] == last]
    by_epoch = {}
    for epoch in sorted({0, 1, 5, 10, 25, 50, last} & set(rows["epoch"].astype(int).tolist())):
        values = rows["generalization_gap"][rows["epoch"] == epoch]
        by_epoch[str(epoch)] = {"mean": round(float(values.mean()), 4), "std": round(float(values.std()), 4)}
    order = np.lexsort((rows["epoch"], models))
    per_model = rows["generalization_gap"][order].reshape(len(np.unique(models)), last + 1)
    middle = min(50, last)
    accuracy = rows["test_accuracy"][rows["epoch"] == last]
    return {
        "final_epoch": last,
        "final_test_accuracy": {"mean": round(float(accuracy.mean()), 4), "std": round(float(accuracy.std()), 4)},
        "final_gap": {
            "mean": round(float(final.mean()), 4),
            "std_across_networks": round(float(final.std()), 4),
            **{f"p{q}": round(float(np.percentile(final, q)), 4) for q in (5, 25, 50, 75, 95)},
            "histogram": text_histogram(final.tolist(), low=float(final.min()), high=float(final.max()) + 1e-9),
        },
        "gap_by_epoch": by_epoch,
        f"corr_gap_epoch{middle}_vs_epoch{last}": round(
            float(np.corrcoef(per_model[:, middle], per_model[:, last])[0, 1]), 4
        ),
        "gap_std_over_epochs_within_a_network_mean": round(float(per_model[:, 1:].std(axis=1).mean()), 4),
    }


def predictability(zoo) -> dict:
    features = compute_baseline_features("s(W)", zoo.vectors, zoo.info["architecture"])
    result = {}
    for target in ("epoch", "test_accuracy", "generalization_gap"):
        y = {s: zoo.columns[s][target] for s in SPLITS}
        probe = RidgeProbe().fit(features["train"], y["train"], features["validation"], y["validation"])
        result[target] = round(probe.score(features["test"], y["test"]), 4)
    return {"s(W) test R²": result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", action="append", required=True, help="DIR:CONFIG of a Tetris zoo (repeatable)")
    parser.add_argument("--chance-threshold", type=float, default=0.35, help="chance is 0.25 on Tetris")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "tetris_data_report.json"))
    arguments = parser.parse_args(argv)
    report = {}
    for zoo_argument in arguments.zoo:
        started = time.perf_counter()
        zoo = load_zoo_arrays(zoo_argument)
        report[zoo_argument] = {
            "data_version": zoo_data_version(zoo.info),
            "dataset_source": zoo.info["dataset"]["source"],
            "dataset_sizes": zoo.info["dataset"]["sizes"],
            "recipe_filter": zoo.info["recipe"].get("filter"),
            "leaving_chance": leaving_chance(zoo, arguments.chance_threshold),
            "generalization_gap": gap_statistics(zoo),
            "predictability": predictability(zoo),
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(json.dumps({zoo_argument: report[zoo_argument]}, indent=1), flush=True)
    out = Path(arguments.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
