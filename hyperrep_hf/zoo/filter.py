"""The paper's filter for hyper-parameter zoos: drop the networks that never trained or that diverged.

Schürholt et al. kept 2900 of TETRIS-HYP's 3600 networks, "the ones that trained"; their code drops models that
crash or produce NaN/Inf, optionally also any whose weights exceed a threshold in absolute value. A recipe asks for
the same with

    filter:
      min_validation_accuracy: 0.35   # keep a network only if its validation accuracy passed 0.35 at some epoch ≥ 1
      max_abs_weight: 100.0           # and no weight of it ever exceeded 100 in absolute value (epochs ≥ 1)

(either key, or both). Networks that diverge to non-finite weights, loss or accuracy are dropped by every build
anyway. The decision is taken when a shard has finished training, from what it recorded for every epoch
(validation accuracy, weights), so a resumed build decides exactly as an uninterrupted one. Each network dropped
has one reason, the first that applies: non-finite (``DIVERGED``), weights above the threshold (``EXPLODED``),
validation accuracy never above the threshold (``AT_CHANCE``). Filtered networks are listed in
``zoo_info.json["dropped"]`` with ``"filtered": true``, the rule that dropped them (``"filter"``) and their best
validation accuracy and largest absolute weight; ``counts.models`` is the number kept. :func:`drop_reasons` counts
a zoo's dropped networks per reason, for the build summary and the card.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..atomic import write_json_atomic

FILTER_REASON = "never left chance"
FILTER_KEYS = ("min_validation_accuracy", "max_abs_weight")
# The reasons a network is dropped, in the order they are tried.
DIVERGED, EXPLODED, AT_CHANCE = "diverged", "exploded", "at_chance"


def never_trained(validation_accuracy: torch.Tensor, threshold: float) -> torch.Tensor:
    """Which networks never passed ``threshold``.

    Args:
        validation_accuracy: (epochs + 1, networks), epoch 0 = the initialisation (non-finite where diverged).
        threshold: The accuracy a network must exceed at some epoch ≥ 1 (at epoch 0 when nothing was trained).

    Returns:
        (networks,) bool, True for the networks to drop.
    """
    return _best_trained(validation_accuracy) <= threshold


def largest_weight(weights: torch.Tensor) -> torch.Tensor:
    """Each network's largest absolute weight over its trained checkpoints (epoch 0 when nothing was trained).

    Args:
        weights: (epochs + 1, networks, parameters); non-finite values are ignored (those networks are dropped as
            diverged anyway).

    Returns:
        (networks,) float64.
    """
    trained = weights[1:] if weights.shape[0] > 1 else weights
    magnitude = torch.nan_to_num(trained.double().abs(), nan=0.0, posinf=0.0, neginf=0.0)
    return magnitude.amax(dim=(0, 2))


def _best_trained(validation_accuracy: torch.Tensor) -> torch.Tensor:
    trained = validation_accuracy[1:] if validation_accuracy.shape[0] > 1 else validation_accuracy
    return torch.nan_to_num(trained.double(), nan=0.0, posinf=0.0, neginf=0.0).amax(dim=0)


def filter_shard(rule: dict, folder: Path, members: list[int], configs: list, dropped: list[dict]) -> list[dict]:
    """Adds a finished shard's filtered networks to its dropped list, on disk (``done.json``) and returned.

    Idempotent: entries a previous call added are recomputed, not duplicated.

    Args:
        rule: The recipe's ``filter`` (``min_validation_accuracy`` and / or ``max_abs_weight``).
        folder: The shard's build folder, with ``epoch-*.safetensors`` and ``done.json``.
        members: The shard's model ids.
        configs: Their configurations (for the seed in each entry).
        dropped: The shard's dropped list so far (diverged networks).

    Returns:
        The diverged entries, then one entry per filtered network, in model order.
    """
    diverged = [entry for entry in dropped if not entry.get("filtered")]
    epoch_files = sorted(Path(folder).glob("epoch-*.safetensors"))
    if not epoch_files:
        raise FileNotFoundError(f"{folder} holds no epoch-*.safetensors: cannot apply the zoo filter.")
    epochs = [load_file(path) for path in epoch_files]
    best = _best_trained(torch.stack([epoch["validation_accuracy"] for epoch in epochs]))
    largest = largest_weight(torch.stack([epoch["weights"] for epoch in epochs]))
    already = {entry["model_id"] for entry in diverged}
    filtered = []
    for i, model in enumerate(members):
        if model in already:
            continue
        reason = _filter_reason(rule, float(best[i]), float(largest[i]))
        if reason is not None:
            key, text = reason
            filtered.append(
                {
                    "model_id": model,
                    "seed": configs[i].seed,
                    "epoch": len(epoch_files) - 1,
                    "reason": text,
                    "filtered": True,
                    "filter": key,
                    "best_validation_accuracy": round(float(best[i]), 6),
                    "max_abs_weight": round(float(largest[i]), 6),
                }
            )
    result = diverged + filtered
    done_path = Path(folder) / "done.json"
    record = json.loads(done_path.read_text())
    if record.get("dropped") != result:
        write_json_atomic(done_path, record | {"dropped": result}, trailing_newline=False)
    return result


def _filter_reason(rule: dict, best: float, largest: float) -> tuple[str, str] | None:
    """The first rule that drops a network with this best validation accuracy and largest weight, or None."""
    limit = rule.get("max_abs_weight")
    if limit is not None and largest > limit:
        return "max_abs_weight", f"diverged: largest absolute weight {largest:.4g} > {limit}"
    threshold = rule.get("min_validation_accuracy")
    if threshold is not None and best <= threshold:
        return "min_validation_accuracy", f"{FILTER_REASON}: best validation accuracy {best:.3f} ≤ {threshold}"
    return None


def drop_reason(entry: dict) -> str:
    """The reason of one ``zoo_info.json["dropped"]`` entry: ``DIVERGED``, ``EXPLODED`` or ``AT_CHANCE``.

    Entries written before ``max_abs_weight`` existed have no ``"filter"``: a filtered one never left chance.
    """
    if not entry.get("filtered"):
        return DIVERGED
    return EXPLODED if entry.get("filter") == "max_abs_weight" else AT_CHANCE


def reason_text(reason: str, rule: dict | None) -> str:
    """A reason in words, with the recipe's threshold (for the build summary and the card)."""
    rule = rule or {}
    if reason == DIVERGED:
        return "diverged (non-finite weights, loss or accuracy)"
    if reason == EXPLODED:
        return f"diverged (a weight above {rule.get('max_abs_weight', '?')} in absolute value)"
    return f"never left chance (validation accuracy never above {rule.get('min_validation_accuracy', '?')})"


def drop_reasons(dropped: list[dict], rule: dict | None) -> dict[str, int]:
    """Networks dropped per reason, in words: every reason the build applied (a filter's only when the recipe has it).

    Args:
        dropped: ``zoo_info.json["dropped"]``.
        rule: The recipe's ``filter`` (None without one).

    Returns:
        Reason text (:func:`reason_text`) → count, diverged first, zero counts included.
    """
    reasons = [DIVERGED]
    if rule and "max_abs_weight" in rule:
        reasons.append(EXPLODED)
    if rule and "min_validation_accuracy" in rule:
        reasons.append(AT_CHANCE)
    counts = dict.fromkeys(reasons, 0)
    for entry in dropped:
        reason = drop_reason(entry)
        counts[reason] = counts.get(reason, 0) + 1
    return {reason_text(reason, rule): count for reason, count in counts.items()}
