"""The paper's filter for hyper-parameter zoos: drop the networks that never trained.

Schürholt et al. kept 2900 of TETRIS-HYP's 3600 networks, "the ones that trained". A recipe asks for the same with

    filter:
      min_validation_accuracy: 0.35   # keep a network only if its validation accuracy passed 0.35 at some epoch ≥ 1

Networks that diverge (non-finite weights, loss or accuracy) are dropped by every build anyway; the filter adds the
ones whose validation accuracy never exceeded the threshold (Tetris: chance is 0.25). The decision is taken when a
shard has finished training, from the validation accuracies it recorded for every epoch, so a resumed build decides
exactly as an uninterrupted one. Filtered networks are listed in ``zoo_info.json["dropped"]`` with
``"filtered": true`` and their best validation accuracy; ``counts.models`` is the number kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..atomic import write_json_atomic

FILTER_REASON = "never left chance"


def never_trained(validation_accuracy: torch.Tensor, threshold: float) -> torch.Tensor:
    """Which networks never passed ``threshold``.

    Args:
        validation_accuracy: (epochs + 1, networks), epoch 0 = the initialisation (non-finite where diverged).
        threshold: The accuracy a network must exceed at some epoch ≥ 1 (at epoch 0 when nothing was trained).

    Returns:
        (networks,) bool, True for the networks to drop.
    """
    trained = validation_accuracy[1:] if validation_accuracy.shape[0] > 1 else validation_accuracy
    best = torch.nan_to_num(trained.double(), nan=0.0, posinf=0.0, neginf=0.0).amax(dim=0)
    return best <= threshold


def filter_shard(rule: dict, folder: Path, members: list[int], configs: list, dropped: list[dict]) -> list[dict]:
    """Adds a finished shard's never-trained networks to its dropped list, on disk (``done.json``) and returned.

    Idempotent: entries a previous call added are recomputed, not duplicated.

    Args:
        rule: The recipe's ``filter`` (``{"min_validation_accuracy": t}``).
        folder: The shard's build folder, with ``epoch-*.safetensors`` and ``done.json``.
        members: The shard's model ids.
        configs: Their configurations (for the seed in each entry).
        dropped: The shard's dropped list so far (diverged networks).

    Returns:
        The diverged entries, then one entry per filtered network.
    """
    threshold = float(rule["min_validation_accuracy"])
    diverged = [entry for entry in dropped if not entry.get("filtered")]
    epoch_files = sorted(Path(folder).glob("epoch-*.safetensors"))
    if not epoch_files:
        raise FileNotFoundError(f"{folder} holds no epoch-*.safetensors: cannot apply the zoo filter.")
    accuracy = torch.stack([load_file(path)["validation_accuracy"] for path in epoch_files])
    drop = never_trained(accuracy, threshold)
    already = {entry["model_id"] for entry in diverged}
    trained = accuracy[1:] if accuracy.shape[0] > 1 else accuracy
    best = torch.nan_to_num(trained.double(), nan=0.0).amax(dim=0)
    filtered = [
        {
            "model_id": members[i],
            "seed": configs[i].seed,
            "epoch": len(epoch_files) - 1,
            "reason": f"{FILTER_REASON}: best validation accuracy {best[i]:.3f} ≤ {threshold}",
            "filtered": True,
            "best_validation_accuracy": round(float(best[i]), 6),
        }
        for i in range(len(members))
        if bool(drop[i]) and members[i] not in already
    ]
    result = diverged + filtered
    done_path = Path(folder) / "done.json"
    record = json.loads(done_path.read_text())
    if record.get("dropped") != result:
        write_json_atomic(done_path, record | {"dropped": result}, trailing_newline=False)
    return result
