"""``hyperrep demo``: the main job on the embedded default, TETRIS-SEED, end to end.

1. build the TETRIS-SEED zoo (1000 MLPs × 75 epochs) as a dataset folder;
2. train the default hyper-representation on it (``training/configs/tetris_seed.yaml``);
3. probe it beside the baselines (W, s(W), kernel PCA), save the probe heads into the model folder;
4. predict the properties of a few test-split networks from their weights alone, next to the truth.

``--quick`` runs a mini version (a small zoo, a short training) that finishes in about two minutes.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from .zoo.folder import build_zoo, load_zoo
from .zoo.networks import NetworkSpec, unflatten_vector
from .zoo.recipes import BuildOptions, load_recipe

DEMO_BASELINES = ("W", "s(W)", "pca_linear", "pca_cosine", "pca_rbf")
QUICK_ZOO = BuildOptions(num_models=60, epochs=15)
QUICK_TRAINING = {
    "epochs": 3,
    "batch_size": 64,
    "d_model": 64,
    "intermediate_size": 128,
    "eval_every": 1,
    "checkpoint_every": 3,
}


def run_demo(out: str | os.PathLike = "demo_output", quick: bool = False) -> dict:
    """Runs the four steps into ``out`` (``zoos/``, ``model/``, ``eval/``, ``networks/``); returns the predictions.

    Every step is resumable: re-running continues a killed build or training and skips finished steps.
    """
    from .models.hyperrep.pipelines import predict_networks
    from .probing.evaluation import evaluate_model
    from .training.trainer import make_train_config, train

    out = Path(out)
    zoo_folder, model_dir = out / "zoos", out / "model"
    _step(1, "build the TETRIS-SEED zoo")
    build_zoo(load_recipe("tetris_seed"), zoo_folder, QUICK_ZOO if quick else BuildOptions())

    _step(2, "train the hyper-representation")
    preset = Path(str(resources.files("hyperrep_hf.train_configs"))) / "tetris_seed.yaml"
    overrides = {"zoo": f"{zoo_folder}:tetris_seed", "output_dir": str(model_dir)}
    if quick:
        overrides |= QUICK_TRAINING
    if (model_dir / "train_config.json").is_file() and (model_dir / "model.safetensors").is_file():
        print(f"[demo] {model_dir} already holds a trained model: skipping training.")
    else:
        if (model_dir / "checkpoints" / "last").is_file():
            overrides["resume"] = True
        train(make_train_config(yaml.safe_load(preset.read_text()), overrides))

    _step(3, "probe it beside W, s(W) and kernel PCA")
    # UMAP is left out: on the full 76k-row zoo it takes longer than everything else together.
    evaluation = evaluate_model(
        model_dir,
        f"{zoo_folder}:tetris_seed",
        out / "eval",
        baselines=DEMO_BASELINES,
        max_rows=2000 if quick else None,
        overwrite=True,  # the demo's own model: a re-run refreshes its probes
    )
    print((out / "eval" / "results.md").read_text())

    _step(4, "predict the properties of unseen networks from their weights")
    dataset, info = load_zoo(zoo_folder, "tetris_seed", cache_dir=str(out / ".cache"))
    test = dataset["test"].filter(lambda row: row["epoch"] == info["epochs"]).select(range(3))
    spec = NetworkSpec.from_dict(info["architecture"])
    files, truth = [], []
    (out / "networks").mkdir(parents=True, exist_ok=True)
    for row in test:
        path = out / "networks" / f"model_{row['model_id']}.safetensors"
        weights = unflatten_vector(spec, torch.tensor(row["weights"], dtype=torch.float32))
        save_file({name: tensor.clone() for name, tensor in weights.items()}, path)
        files.append(path)
        truth.append({key: row[key] for key in ("test_accuracy", "generalization_gap", "epoch")})
    predictions = predict_networks(model_dir, files)
    for prediction, actual in zip(predictions, truth, strict=True):
        prediction["truth"] = actual
    print(json.dumps(predictions, indent=2))
    print(
        f"[demo] done: zoo {zoo_folder}, model {model_dir} (probe heads in {model_dir / 'probes'}), "
        f"evaluation {out / 'eval'}; {len(evaluation.results)} probe results."
    )
    return {"predictions": predictions}


def _step(number: int, text: str) -> None:
    print(f"\n[demo] step {number}/4: {text}", flush=True)
