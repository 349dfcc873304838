"""A second route to the hyper-representation's scores in ``hyperrep evaluate``: the public API and a numpy ridge.

``hyperrep evaluate`` embeds a zoo with the project's evaluation code and probes it with
:class:`hyperrep_hf.probing.RidgeProbe`. This script reaches the same numbers another way, so that a figure in a
results table is not checked only by the code that produced it:

1. every row is embedded through public calls, ``AutoModel`` + ``AutoFeatureExtractor`` on the model folder, with
   the saved embedding rebuilt outside the project's embedding code (the canonical views, blended; :func:`embed`);
2. z is standardised on the train split in numpy and probed by ``bench/explain_w_baseline.raw_ridge_fit`` (normal
   equations, α chosen on validation from the paper's grid), for every regression target of the zoo;
3. the test R² gets a 95 % bootstrap interval over the test models (whole models resampled).

With ``--compare RESULTS.json`` (what ``hyperrep evaluate`` wrote for the same model and zoo) it prints both routes
side by side and exits 1 when a target differs by more than ``--tolerance`` points of R².

    python bench/second_route.py --model runs/tetris_seed --zoo zoos_built:tetris_seed \\
        [--compare eval/tetris_seed/results.json] [--out FILE]

Classification targets (activation, init, optimizer of a HYP zoo) are left out: this route has no softmax probe.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from explain_w_baseline import raw_ridge_fit

from hyperrep_hf.probing.evaluation import load_zoo_arrays, select_targets
from hyperrep_hf.probing.probes import ALPHA_GRID
from hyperrep_hf.zoo.folder import SPLITS

EMBED_BATCH = 2048


def embed(model_dir: str, vectors: np.ndarray) -> np.ndarray:
    """The saved embedding of every row, built from public calls: (rows, num_parameters) → (rows, latent) float64.

    ``encoder(**processor(networks)).embeddings`` is z of the weights as given. A model saved with the canonical
    embedding (the presets) reads z of each network's canonical views, blended by their weights
    (``processor.canonical_views``); that sum is taken here in float64, apart from
    ``hyperrep_hf.models.hyperrep.embeddings``. A model that averages z over K > 1 symmetric copies is refused.
    """
    from transformers import AutoFeatureExtractor, AutoModel

    import hyperrep_hf  # noqa: F401  (registers the auto classes)

    encoder = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoFeatureExtractor.from_pretrained(model_dir)
    if not processor.canonical and encoder.config.embedding_symmetry_samples > 1:
        raise SystemExit(
            f"{model_dir} averages z over symmetric copies; this route covers plain z and the canonical form."
        )
    out = []
    with torch.no_grad():
        for start in range(0, len(vectors), EMBED_BATCH):
            batch = torch.from_numpy(vectors[start : start + EMBED_BATCH])
            if not processor.canonical:
                out.append(encoder(**processor(batch)).embeddings.double())
                continue
            views, weights, owner = processor.canonical_views(batch)
            z = torch.cat(
                [
                    encoder(**processor(views[i : i + EMBED_BATCH])).embeddings
                    for i in range(0, len(views), EMBED_BATCH)
                ]
            )
            total = torch.zeros(len(batch), z.shape[1], dtype=torch.float64)
            out.append(total.index_add_(0, owner, z.double() * weights[:, None]))
    return torch.cat(out).numpy()


def r2(truth: np.ndarray, predicted: np.ndarray) -> float:
    return float(1 - ((predicted - truth) ** 2).sum() / ((truth - truth.mean()) ** 2).sum())


def bootstrap_interval(truth, predicted, model_ids, resamples: int, seed: int = 0) -> list[float]:
    """95 % percentile interval of the test R² over resampled test models (each model with all its rows)."""
    ids, inverse = np.unique(model_ids, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == index) for index in range(len(ids))]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(resamples):
        rows = np.concatenate([rows_of[index] for index in rng.integers(0, len(ids), len(ids))])
        draws.append(r2(truth[rows], predicted[rows]))
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def second_route(model_dir: str, zoo: str, resamples: int = 1000) -> dict:
    """Test R² (fractions) of a ridge probe on z for every regression target, with its α and bootstrap interval."""
    arrays = load_zoo_arrays(zoo)
    targets, categorical = select_targets(arrays)
    z = {split: embed(model_dir, arrays.vectors[split].astype(np.float32)) for split in SPLITS}
    mean, std = z["train"].mean(axis=0), z["train"].std(axis=0)
    std[std == 0] = 1.0
    features = {split: (values - mean) / std for split, values in z.items()}
    scores = {}
    for target in targets:
        if target in categorical:
            continue
        values = {split: np.asarray(arrays.columns[split][target], dtype=np.float64) for split in SPLITS}
        if np.ptp(values["train"]) == 0:
            continue
        alpha, predicted = raw_ridge_fit(features, values, ALPHA_GRID)
        scores[target] = {
            "test_r2": r2(values["test"], predicted),
            "test_r2_95": bootstrap_interval(values["test"], predicted, arrays.model_ids["test"], resamples),
            "alpha": alpha,
        }
    return {"model": model_dir, "zoo": zoo, "rows": {s: len(v) for s, v in z.items()}, "targets": scores}


def evaluate_scores(results_path: str) -> dict[str, float]:
    """The hyperrep test R² of every target in a ``hyperrep evaluate`` results file (all test rows)."""
    document = json.loads(Path(results_path).read_text())
    return {
        record["target"]: record["value"]
        for record in document["results"]
        if record["method"] == "hyperrep"
        and record["metric"] == "r2"
        and record["split"] == "test"
        and not record.get("rows")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained model folder (hyperrep train's output)")
    parser.add_argument("--zoo", required=True, help="DIR[:CONFIG] or ORG/NAME[:CONFIG], as hyperrep evaluate takes")
    parser.add_argument("--compare", help="hyperrep evaluate's results.json for the same model and zoo")
    parser.add_argument("--tolerance", type=float, default=1.0, help="largest allowed difference, points of R²")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write the JSON here")
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    started = time.process_time()
    report = second_route(arguments.model, arguments.zoo, arguments.resamples)
    report["cpu_seconds"] = round(time.process_time() - started, 1)
    worst = 0.0
    reference = evaluate_scores(arguments.compare) if arguments.compare else {}
    print(f"{'target':22s} {'second route [95 %]':>26s}" + (f" {'evaluate':>9s} {'Δ':>6s}" if reference else ""))
    for target, score in report["targets"].items():
        low, high = (100 * value for value in score["test_r2_95"])
        line = f"{target:22s} {100 * score['test_r2']:8.1f} [{low:6.1f}, {high:6.1f}]"
        if target in reference:
            difference = 100 * (score["test_r2"] - reference[target])
            score["evaluate_test_r2"], worst = reference[target], max(worst, abs(difference))
            line += f"      {100 * reference[target]:8.1f} {difference:+6.1f}"
        print(line)
    if arguments.out:
        Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
        Path(arguments.out).write_text(json.dumps(report, indent=2))
    if reference:
        missing = sorted(set(report["targets"]) - set(reference))
        if missing:
            print(f"{arguments.compare} has no hyperrep test R² for {missing}: is it this model's evaluation?")
            return 1
        print(f"largest difference {worst:.2f} points (tolerance {arguments.tolerance})")
        return int(worst > arguments.tolerance)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
