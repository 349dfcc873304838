"""``hyperrep demo``: a main job end to end — TETRIS-SEED (the embedded default) or the MNIST-HYP mini CNN zoo.

1. build the zoo as a dataset folder (TETRIS-SEED: 1000 MLPs × 75 epochs; ``--zoo mnist_hyp``: the recipe
   ``mnist_hyp_mini``, CNNs of 2464 parameters over the MNIST-HYP hyper-parameter grid);
2. train the hyper-representation on it (``training/configs/tetris_seed.yaml`` / ``mnist_hyp_mini.yaml``);
3. probe it beside the baselines (W, s(W), kernel PCA; UMAP too on the small CNN zoo), save the probe heads into
   the model folder;
4. predict the properties of a few test-split networks from their weights alone, next to the truth.

``--quick`` runs a mini version (a small zoo, a short training) that finishes in about two minutes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class DemoJob:
    """One main job: the zoo recipe, the training preset and what the evaluation and the prediction step show."""

    title: str
    recipe: str
    preset: str
    baselines: tuple[str, ...]
    truth: tuple[str, ...]
    max_rows: int | None = None
    quick_zoo: BuildOptions = QUICK_ZOO
    quick_training: dict = field(default_factory=lambda: dict(QUICK_TRAINING))
    quick_max_rows: int | None = 2000


DEMO_JOBS = {
    # UMAP is left out of TETRIS-SEED: on the full 76k-row zoo it takes longer than everything else together.
    "tetris_seed": DemoJob("TETRIS-SEED", "tetris_seed", "tetris_seed", DEMO_BASELINES, ("test_accuracy",
                           "generalization_gap", "epoch")),
    "mnist_hyp": DemoJob(
        "MNIST-HYP mini", "mnist_hyp_mini", "mnist_hyp_mini", (*DEMO_BASELINES, "umap"),
        ("test_accuracy", "generalization_gap", "epoch", "activation", "init", "optimizer", "dropout", "learning_rate",
         "weight_decay"),
        quick_zoo=BuildOptions(num_models=16, epochs=1, subset=200),
        quick_training={"epochs": 2, "batch_size": 8, "d_model": 32, "intermediate_size": 64, "latent_dim": 8,
                        "eval_every": 1, "checkpoint_every": 2},
        quick_max_rows=None,
    ),
}  # fmt: skip
"""``hyperrep demo --zoo NAME``: the Tetris main job (default) and the CNN one."""


def run_demo(
    out: str | os.PathLike = "demo_output",
    quick: bool = False,
    zoo: str = "tetris_seed",
    zoo_options: BuildOptions | None = None,
    training_overrides: dict | None = None,
    baselines: tuple[str, ...] | None = None,
) -> dict:
    """Runs the four steps into ``out`` (``zoos/``, ``model/``, ``eval/``, ``networks/``); returns the predictions.

    Every step is resumable: re-running continues a killed build or training and skips finished steps.

    Args:
        out: The demo's folder.
        quick: A mini version of the job (a small zoo, a short training).
        zoo: A key of :data:`DEMO_JOBS`: ``"tetris_seed"`` or ``"mnist_hyp"``.
        zoo_options: Build options instead of the job's (tests use a tiny zoo).
        training_overrides: Training fields over the preset (and over ``quick``'s).
        baselines: The baselines to probe instead of the job's (tests leave out the slow UMAP).
    """
    from .models.hyperrep.pipelines import predict_networks
    from .probing.evaluation import evaluate_model
    from .training.trainer import make_train_config, train

    if zoo not in DEMO_JOBS:
        raise ValueError(f"demo --zoo {zoo!r}: choose one of {sorted(DEMO_JOBS)}.")
    job = DEMO_JOBS[zoo]
    out = Path(out)
    zoo_folder, model_dir = out / "zoos", out / "model"
    zoo_argument = f"{zoo_folder}:{job.recipe}"
    _step(1, f"build the {job.title} zoo")
    options = zoo_options or (job.quick_zoo if quick else BuildOptions())
    build_zoo(load_recipe(job.recipe), zoo_folder, options)

    _step(2, "train the hyper-representation")
    preset = Path(str(resources.files("hyperrep_hf.train_configs"))) / f"{job.preset}.yaml"
    overrides = {"zoo": zoo_argument, "output_dir": str(model_dir)}
    if quick:
        overrides |= job.quick_training
    overrides |= training_overrides or {}
    if (model_dir / "train_config.json").is_file() and (model_dir / "model.safetensors").is_file():
        print(f"[demo] {model_dir} already holds a trained model: skipping training.")
    else:
        if (model_dir / "checkpoints" / "last").is_file():
            overrides["resume"] = True
        train(make_train_config(yaml.safe_load(preset.read_text()), overrides))

    baselines = job.baselines if baselines is None else tuple(baselines)
    _step(3, f"probe it beside {', '.join(baselines)}")
    evaluation = evaluate_model(
        model_dir,
        zoo_argument,
        out / "eval",
        baselines=baselines,
        max_rows=job.quick_max_rows if quick else job.max_rows,
        overwrite=True,  # the demo's own model: a re-run refreshes its probes
    )
    print((out / "eval" / "results.md").read_text())

    _step(4, "predict the properties of unseen networks from their weights")
    dataset, info = load_zoo(zoo_folder, job.recipe, cache_dir=str(out / ".cache"))
    test = dataset["test"].filter(lambda row: row["epoch"] == info["epochs"])
    test = test.select(range(min(3, len(test))))
    spec = NetworkSpec.from_dict(info["architecture"])
    files, truth = [], []
    (out / "networks").mkdir(parents=True, exist_ok=True)
    for row in test:
        path = out / "networks" / f"model_{row['model_id']}.safetensors"
        weights = unflatten_vector(spec, torch.tensor(row["weights"], dtype=torch.float32))
        save_file({name: tensor.clone() for name, tensor in weights.items()}, path)
        files.append(path)
        truth.append({key: row[key] for key in job.truth if key in row})
    predictions = predict_networks(model_dir, files)
    for prediction, actual in zip(predictions, truth, strict=True):
        prediction["truth"] = actual
    print(json.dumps(predictions, indent=2))
    print(
        f"[demo] done: zoo {zoo_folder}, model {model_dir} (probe heads in {model_dir / 'probes'}), "
        f"evaluation {out / 'eval'}; {len(evaluation.results)} probe results."
    )
    return {"predictions": predictions, "evaluation": out / "eval"}


def _step(number: int, text: str) -> None:
    print(f"\n[demo] step {number}/4: {text}", flush=True)
