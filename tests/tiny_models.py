"""A tiny evaluated encoder (model folder with processor, probe heads, card) and tiny zoos, built for the tests."""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import torch

from hyperrep_hf import HyperRepConfig, HyperRepForPreTraining, HyperRepModel, NeuronTokenProcessor
from hyperrep_hf.probing.evaluation import evaluate_model
from hyperrep_hf.zoo.folder import build_zoo
from hyperrep_hf.zoo.recipes import BuildOptions, ZooRecipe, load_recipe

TINY_HYP = BuildOptions(num_models=30, epochs=2, subset=120)
TINY_SEED = BuildOptions(num_models=16, epochs=3, subset=120)  # a TETRIS-SEED zoo with a few test networks
BENCH = Path(__file__).resolve().parents[1] / "bench"


def load_bench(name: str):
    """A script of bench/ as a module (``name`` without .py), registered so that its dataclasses work."""
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def make_zoo(folder: Path, recipe: str = "tetris_hyp_v1", options: BuildOptions = TINY_HYP) -> Path:
    """A real zoo folder (Parquet + zoo_info.json + card) of a shipped recipe at a tiny size."""
    # tetris_hyp_v1: unfiltered — at 2 epochs the default recipe's filter would leave too few networks to split.
    build_zoo(load_recipe(recipe), folder, options, progress=False)
    return folder


def make_model_folder(
    zoo_dir: Path,
    folder: Path,
    seed: int = 0,
    model_class: type = HyperRepModel,
    canonical: str | None = None,
    **fields,
) -> Path:
    """An untrained tiny encoder of the zoo's architecture and its processor (d_model 32, latent 8 unless `fields`).

    ``model_class`` ``HyperRepForPreTraining`` saves it as a training run does; ``canonical`` (an activation) saves
    the processor with the canonical form. ``fields`` are further model config fields (sizes, symmetries, ...).
    """
    torch.manual_seed(seed)
    processor = NeuronTokenProcessor.from_zoo(zoo_dir)
    if canonical is not None:
        processor.set_canonical(canonical)
    config = HyperRepConfig(
        **processor.model_config_kwargs(),
        **{"d_model": 32, "num_attention_heads": 2, "intermediate_size": 64, "latent_dim": 8, **fields},
    )
    model_class(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def make_evaluated_model(model_dir: Path, zoo_dir: Path, out_dir: Path, canonical: str | None = None) -> Path:
    """An untrained tiny encoder of the zoo's architecture, with probes fitted by ``evaluate_model`` and a card.

    Saved as a training run saves it (``HyperRepForPreTraining`` + processor), with permutation symmetry and K = 4,
    so the symmetry average is exercised. ``canonical="tanh"`` (or ``"relu"``) saves a processor with the canonical
    form instead (permutation and, for tanh, sign canonicalised; K = 1), as the canonical presets train it.
    """
    symmetries = {"symmetries": ["permutation"], "embedding_symmetry_samples": 4}
    if canonical is not None:
        symmetries = {"symmetries": [], "embedding_symmetry_samples": 1}
    make_model_folder(zoo_dir, model_dir, model_class=HyperRepForPreTraining, canonical=canonical, **symmetries)
    evaluate_model(model_dir, zoo_dir, out_dir, baselines=[], plots=False, progress=False)
    return model_dir


def tetris_lr_recipe(name: str, epochs: int, num_seeds: int, learning_rates: list[float], **changes) -> ZooRecipe:
    """A tiny Tetris-MLP grid over learning rate only (Adam, tanh, Kaiming-uniform, batch 8), seeds 1..num_seeds."""
    recipe = ZooRecipe(
        name=name,
        dataset="tetris",
        network="tetris_mlp",
        epochs=epochs,
        seeds=(1, num_seeds),
        fixed={"optimizer": "adam", "batch_size": 8, "activation": "tanh", "init": "kaiming_uniform"},
        grid={"learning_rate": learning_rates},
    )
    return dataclasses.replace(recipe, **changes)


def run_compare_baseline(model_dir: Path, zoo_dir: Path, out_json: Path, *options: str) -> dict:
    """``bench/compare_baseline.py`` on one (model, zoo) with ``options``; asserts it succeeded, returns its result."""
    spec = importlib.util.spec_from_file_location("compare_baseline", BENCH / "compare_baseline.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--model", str(model_dir), "--zoo", str(zoo_dir), "--out", str(out_json), *options]) == 0
    (result,) = json.loads(Path(out_json).read_text())
    return result


def evaluated_test_scores(out: Path) -> dict[tuple[str, str], float]:
    """(method, target) → the test score in % that ``hyperrep evaluate`` wrote to ``out/results.json``."""
    return {
        (r["method"], r["target"]): 100 * r["value"]
        for r in json.loads((Path(out) / "results.json").read_text())["results"]
        if r["split"] == "test" and r["metric"] in ("r2", "accuracy")
    }
