"""Prediction drift under random function-preserving transforms, as % of the spread of predictions (issue 12).

    python bench/bench_invariance.py --model MODEL_DIR --zoo ZOO_DIR[:CONFIG] [--num-transforms 20]

Takes each test-split network's final checkpoint, draws random equivalent copies of it — hidden-neuron
permutations, sign flips of the neurons the activation lets flip (tanh, no max pooling after), and both — checks
that every copy computes the same logits (float64, random inputs), and predicts every copy with the
``network-property-prediction`` pipeline (the model's probe heads, written by ``hyperrep evaluate``). For each
regression target: drift = mean |prediction(copy) − prediction(network)| / std of the predictions across networks,
in %, and the worst case. The same encoder is also run without its canonical form (plain z, and the 32-copy
symmetry average of the previous release), so the table shows what the canonical form changes. Writes JSON.
"""

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

import hyperrep_hf  # noqa: F401  (registers the pipeline task)
from hyperrep_hf.models.hyperrep.augmentations import NeuronPermutation, NeuronSignFlip, sign_flip_layers
from hyperrep_hf.models.hyperrep.embeddings import SymmetryTransforms, symmetry_transforms
from hyperrep_hf.models.hyperrep.pipelines import make_prediction_pipeline
from hyperrep_hf.probing.evaluation import load_zoo_arrays
from hyperrep_hf.probing.report import last_epoch_rows
from hyperrep_hf.training.trainer import zoo_activation
from hyperrep_hf.zoo.networks import NetworkSpec, make_module


def draw_transforms(architecture: dict, activation: str | None, kind: str, count: int, seed: int):
    """``count`` random transforms of one kind, each a function (batch, P) → (batch, P) of raw vectors."""
    generator = torch.Generator().manual_seed(seed)
    permutation = NeuronPermutation(architecture, num_permutations=max(count, 100), generator=generator)
    flippable = activation is not None and bool(sign_flip_layers(architecture, activation))
    flip = NeuronSignFlip(architecture, activation) if flippable else None
    if kind != "permutation" and flip is None:
        return []
    steps = ([permutation] if kind != "sign_flip" else []) + ([flip] if kind != "permutation" else [])

    def transform(index: int):
        def apply(vectors):  # the same draw on every call: transform `index` is one fixed g per network
            generator = torch.Generator().manual_seed(seed * 100_003 + index)
            for step in steps:
                vectors = step(vectors, generator)
            return vectors

        return apply

    return [transform(index) for index in range(count)]


def max_logit_change(spec: NetworkSpec, activation: str, processor, original, transformed, num_inputs=256) -> float:
    """Largest |logit(copy) − logit(network)| over random inputs, float64, over all networks."""
    module = make_module(spec, activation).double().eval()
    inputs = torch.randn(num_inputs, *spec.input_shape, generator=torch.Generator().manual_seed(0)).double()
    worst = 0.0
    with torch.no_grad():
        for a, b in zip(
            processor.vectors_to_state_dicts(original), processor.vectors_to_state_dicts(transformed), strict=True
        ):
            module.load_state_dict({k: v.double() for k, v in a.items()})
            logits = module(inputs)
            module.load_state_dict({k: v.double() for k, v in b.items()})
            worst = max(worst, float((module(inputs) - logits).abs().max()))
    return worst


def predict(predictor, vectors: torch.Tensor) -> dict[str, np.ndarray]:
    """Regression predictions per target: (num_networks,)."""
    outputs = predictor(vectors, batch_size=512)
    return {
        target: np.array([row[target]["value"] for row in outputs], dtype=np.float64)
        for target, head in predictor.probes.items()
        if head.config.task == "regression"
    }


def drift_table(predictor, vectors, transforms_by_kind) -> dict:
    """Per kind and target: mean / max |Δ prediction| and as % of the spread of predictions across networks."""
    base = predict(predictor, vectors)
    table = {}
    for kind, transforms in transforms_by_kind.items():
        deltas = {target: [] for target in base}
        for transform in transforms:
            moved = predict(predictor, transform(vectors))
            for target in base:
                deltas[target].append(np.abs(moved[target] - base[target]))
        table[kind] = {}
        for target, values in deltas.items():
            values = np.concatenate(values)
            spread = float(np.std(base[target]))
            table[kind][target] = {
                "mean_abs_change": float(values.mean()),
                "max_abs_change": float(values.max()),
                "spread": spread,
                "drift_percent": float(100 * values.mean() / spread) if spread > 0 else None,
                "worst_percent": float(100 * values.max() / spread) if spread > 0 else None,
            }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder with probe heads (hyperrep evaluate)")
    parser.add_argument("--zoo", required=True, help="ZOO_DIR[:CONFIG] the networks come from")
    parser.add_argument("--split", default="test")
    parser.add_argument("--num-transforms", type=int, default=20, help="random copies per kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "invariance.json"))
    arguments = parser.parse_args()
    torch.set_num_threads(arguments.threads)
    zoo = load_zoo_arrays(arguments.zoo)
    final = last_epoch_rows(zoo.model_ids[arguments.split], zoo.columns[arguments.split]["epoch"])
    vectors = torch.from_numpy(zoo.vectors[arguments.split][final])
    architecture = zoo.info["architecture"]
    activation = zoo_activation(zoo.info, required=False)
    spec = NetworkSpec.from_dict(architecture)
    predictor = make_prediction_pipeline(arguments.model, device=-1)
    processor = predictor.feature_extractor
    kinds = {
        kind: draw_transforms(architecture, activation, kind, arguments.num_transforms, arguments.seed + offset)
        for offset, kind in enumerate(("permutation", "sign_flip", "permutation+sign_flip"))
    }
    kinds = {kind: transforms for kind, transforms in kinds.items() if transforms}
    function_change = {
        kind: max(max_logit_change(spec, activation or "relu", processor, vectors, t(vectors)) for t in transforms)
        for kind, transforms in kinds.items()
    }
    results = {
        "model": str(arguments.model),
        "zoo": str(arguments.zoo),
        "split": arguments.split,
        "num_networks": int(vectors.shape[0]),
        "networks": "each model's final checkpoint",
        "num_transforms_per_kind": arguments.num_transforms,
        "activation": activation,
        "max_logit_change_float64": function_change,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
        "modes": {},
    }
    canonical = bool(getattr(processor, "canonical", False))
    symmetries = ["permutation"] + (["sign_flip"] if activation and sign_flip_layers(architecture, activation) else [])
    modes = [("canonical form" if canonical else "as saved", None, canonical)]
    modes += [
        ("plain z (no canonical form, K = 1)", 1, False),
        ("32-copy symmetry average, no canonical form", 32, False),
    ]
    for name, samples, use_canonical in modes:
        processor.canonical = use_canonical
        predictor.transforms = (
            symmetry_transforms(predictor.model.config, architecture)
            if samples is None
            else SymmetryTransforms(architecture, samples, symmetries, activation)
        )
        started = time.perf_counter()
        results["modes"][name] = drift_table(predictor, vectors, kinds)
        results["modes"][name]["seconds"] = round(time.perf_counter() - started, 2)
        for kind in kinds:
            line = ", ".join(
                f"{target} {values['drift_percent']:.3g}% (worst {values['worst_percent']:.3g}%)"
                for target, values in results["modes"][name][kind].items()
                if values["drift_percent"] is not None
            )
            print(f"{name:<46} {kind:<22} {line}")
    processor.canonical = canonical
    _, _, _, truncated = processor.canonical_views(vectors, return_truncated=True) if canonical else (0, 0, 0, None)
    if canonical:
        views, _, _ = processor.canonical_views(vectors)
        results["canonical_views_per_network"] = round(views.shape[0] / vectors.shape[0], 4)
        results["networks_beyond_branch_bound"] = int(truncated.sum())
    Path(arguments.out).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {arguments.out}")


if __name__ == "__main__":
    main()
