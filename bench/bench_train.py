"""Training throughput (samples/s) of the TETRIS-SEED preset on this machine, in one run.

Compares, on the same zoo and the same process: the preset as shipped, the other loss family (ED: one view;
EcD: two views), one vs two torch threads, and the bare model step (forward + backward + AdamW on ready tokens)
that bounds what the loop (augmentation, tokenisation, accelerate) can reach.

    python bench/bench_train.py [--zoo DIR[:CONFIG]] [--rows 2500]

Without --zoo it builds a mini TETRIS-SEED (100 networks × 10 epochs) in a temporary folder. Writes
bench/results/train.json.
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from accelerate.state import AcceleratorState, PartialState
from tqdm import tqdm

from hyperrep_hf.training.trainer import Trainer, parse_args
from hyperrep_hf.zoo.folder import build_zoo
from hyperrep_hf.zoo.recipes import BuildOptions, load_recipe

REPOSITORY = Path(__file__).resolve().parents[1]
PRESET = REPOSITORY / "training" / "configs" / "tetris_seed.yaml"


def measure_loop(zoo: str, output_dir: str, overrides: list[str], epochs_to_use: str) -> dict:
    """samples/s of one training epoch of the real loop (evaluation excluded)."""
    arguments = [str(PRESET), "--zoo", zoo, "--output-dir", output_dir, "--overwrite", "--progress", "false"]
    config = parse_args(
        [*arguments, "--epochs-to-use", *epochs_to_use.split(","), "--checkpoint-every", "0", *overrides]
    )
    trainer = Trainer(config)
    trainer.train_epoch(0, tqdm(disable=True))  # warm-up: allocator, kernels, thread pools
    record = trainer.train_epoch(1, tqdm(disable=True))
    samples = trainer.steps_per_epoch * trainer.global_batch
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    return {
        "overrides": " ".join(overrides) or "(preset)",
        "loss_type": config.loss_type,
        "num_threads": config.num_threads,
        "samples": samples,
        "samples_per_second": samples / record["seconds"],
    }


def measure_bare_step(zoo: str, output_dir: str, steps: int = 5) -> dict:
    """samples/s of forward + backward + AdamW on pre-made tokens, with the preset's model and batch."""
    config = parse_args([str(PRESET), "--zoo", zoo, "--output-dir", output_dir, "--overwrite", "--progress", "false"])
    trainer = Trainer(config)
    torch.set_num_threads(config.num_threads or 1)
    rows = trainer.data.vectors["train"][: trainer.per_process_batch]
    batch = trainer.collator(rows)
    names = ["input_tokens", "attention_mask", "position_ids", "labels"]
    if config.loss_type != "ed":
        names += ["input_tokens_view2", "attention_mask_view2", "position_ids_view2"]
    model, optimizer = trainer.model, trainer.optimizer
    timings = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        model(**{name: batch[name] for name in names}).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        timings.append(time.perf_counter() - started)
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    return {"batch": len(rows), "samples_per_second": len(rows) * steps / sum(timings[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", help="a TETRIS-SEED zoo folder (DIR[:CONFIG]); default: build a mini one")
    parser.add_argument("--epochs-to-use", default="0,25,50,75", help="zoo epochs forming the measured epoch")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        zoo = arguments.zoo
        if zoo is None:
            build_zoo(load_recipe("tetris_seed"), scratch, BuildOptions(num_models=100, epochs=10), progress=False)
            zoo, arguments.epochs_to_use = f"{scratch}:tetris_seed", "0,2,4,6,8,10"
        output_dir = os.path.join(scratch, "run")
        preset = parse_args([str(PRESET)])
        other_loss = "ed" if preset.loss_type != "ed" else "ecd"
        variants = [[], ["--loss-type", other_loss], ["--num-threads", "2" if preset.num_threads == 1 else "1"]]
        loops = [measure_loop(zoo, output_dir, overrides, arguments.epochs_to_use) for overrides in variants]
        bare = measure_bare_step(zoo, output_dir)
    result = {
        "benchmark": "training throughput, TETRIS-SEED preset (training/configs/tetris_seed.yaml)",
        "zoo": arguments.zoo or "mini TETRIS-SEED (100 networks × 10 epochs, built here)",
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_average_1min": os.getloadavg()[0],
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "loop": loops,
        "bare_model_step_preset": bare,
        "loop_over_bare": loops[0]["samples_per_second"] / bare["samples_per_second"],
    }
    for loop in loops:
        print(f"{loop['overrides']:<24} loss {loop['loss_type']:<4} threads {loop['num_threads']}: "
              f"{loop['samples_per_second']:8.1f} samples/s")  # fmt: skip
    print(f"bare model step (preset)          : {bare['samples_per_second']:8.1f} samples/s")
    path = REPOSITORY / "bench" / "results" / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
