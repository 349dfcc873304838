"""The paper's tables, rerun on a CPU: one row per configuration, each cached, then ``docs/reproduction.md``.

    python bench/reproduce.py                          # every row not yet finished, then the report
    python bench/reproduce.py --rows seed_baselines t1_ecd --jobs 2
    python bench/reproduce.py --list                   # the rows, their configuration and estimated CPU time
    python bench/reproduce.py --report-only            # regenerate the markdown from the finished rows

Each row is a zoo build, the baselines of a zoo, a training run with an evaluation (a preset from
``training/configs`` plus the row's overrides), an out-of-distribution evaluation, or an external results file
(the CNN rows, written by ``hyperrep evaluate`` elsewhere). A finished row's result is written, atomically, to
``OUT/rows/<key>.json`` with its configuration, its scores and its CPU and wall time; a rerun skips it unless its
configuration changed, a row it reads (its zoo, the model it evaluates) was rerun since, or ``--force`` is given, so
a killed run resumes at the first unfinished row. ``--rows``
selects rows (their zoos and the rows they read are added); the markdown is rebuilt from whatever rows are
finished, the others shown as "not run yet". CPU time is the process's own (``time.process_time``, all its threads),
so it holds on a busy machine; wall time does not (the load average at the row's start is recorded beside it).

Rows run one after another in one process; ``--jobs N`` keeps N worker processes busy, one row each, each row
started as soon as the rows it reads are finished (the zoos, a model's training for its out-of-distribution row),
the row heading the longest chain of estimated work first: the Table 1–3 rows train on TETRIS-SEED while the
TETRIS-HYP zoo is still being built.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROW_FORMAT = 1
DEFAULT_OUT = "reproduction"
DEFAULT_REPORT = REPO / "docs" / "reproduction.md"
DEFAULT_CNN_RESULTS = (REPO / "docs" / "results" / "mnist_hyp_mini.json",)


def _mini_label(recipe: str) -> str:
    """``mnist_hyp_1_fix_seed_mini`` → ``MNIST-HYP-1-FIX-SEED mini`` (the paper's zoo name)."""
    return recipe.removesuffix("_mini").replace("_", "-").upper() + " mini"


# The paper's four MNIST-HYP zoos as CPU minis, each with the mnist_hyp_mini preset trained on it (issue 14;
# docs/results/mnist_hyp_paper_minis.md says how): recipe → its results file.
PAPER_MINI_RESULTS = {
    recipe: REPO / "docs" / "results" / "mnist_hyp_paper_minis" / f"{recipe}.json"
    for recipe in (f"mnist_hyp_{seeds}_{draw}_seed_mini" for seeds in (1, 5) for draw in ("fix", "rand"))
}

SEED_TARGETS = (
    "epoch",
    "test_accuracy",
    "generalization_gap",
    "f1_class_0",
    "f1_class_1",
    "f1_class_2",
    "f1_class_3",
)
HYP_TARGETS = ("epoch", "test_accuracy", "generalization_gap", "learning_rate", "activation", "init")
TARGET_TITLES = {
    "epoch": "Eph",
    "test_accuracy": "Acc",
    "generalization_gap": "GGap",
    "f1_class_0": "F1C0",
    "f1_class_1": "F1C1",
    "f1_class_2": "F1C2",
    "f1_class_3": "F1C3",
    **{f"f1_class_{digit}": f"F1C{digit}" for digit in range(4, 10)},  # the MNIST zoos' ten classes
    "learning_rate": "LR",
    "weight_decay": "WD",
    "dropout": "Drop (acc.)",
    "activation": "Act (acc.)",
    "init": "Init (acc.)",
    "optimizer": "Opt (acc.)",
}
# The MNIST-HYP targets the CNN rows are judged on: the paper's MNIST tables (the ten per-class F1s are in the
# tables, not in the verdict).
CNN_TARGETS = (
    "epoch", "test_accuracy", "generalization_gap", "learning_rate", "weight_decay",
    "dropout", "activation", "init", "optimizer",
)  # fmt: skip
HYPERREP = "hyperrep"  # the method name of z̄ in results.json (hyperrep_hf.probing HYPERREP_METHOD)
ALL_BASELINES = ("W", "s(W)", "pca_linear", "pca_cosine", "pca_rbf", "umap")
LEVEL_POINTS = 1.0  # |ours − paper| ≤ this many R² points reads "level"

# The paper's numbers as PAPER.md gives them (test R² in %; accuracy in % for activation / init). Tables 1–3 and 7
# are not transcribed there beyond these rows: the other rows show "–" in the paper column.
PAPER_SEED = {
    "W": dict(zip(SEED_TARGETS, (55.4, 49.1, 43.9, 26.6, 41.4, 41.5, 53.9), strict=True)),
    "s(W)": dict(zip(SEED_TARGETS, (96.4, 86.9, 81.0, 62.5, 63.1, 60.9, 75.2), strict=True)),
    "EcD": dict(zip(SEED_TARGETS, (97.0, 90.2, 81.9, 70.7, 75.9, 69.4, 86.6), strict=True)),
}
PAPER_HYP = {
    "W": dict(zip(HYP_TARGETS, (2.8, 11.0, 12.9, -4.7, 74.7, 38.5), strict=True)),
    "s(W)": dict(zip(HYP_TARGETS, (16.3, 80.2, 79.2, 53.4, 73.6, 46.6), strict=True)),
    "EcD": dict(zip(HYP_TARGETS, (16.7, 83.7, 81.6, 51.1, 86.9, 47.1), strict=True)),
}
PAPER_RECONSTRUCTION = {"ED": 96.1, "EcD": 84.1, "Ec+D": 95.9}  # TETRIS-SEED test reconstruction R² (%)


@dataclass(frozen=True)
class Row:
    """One row of the report: what to run and what to compare it with.

    Attributes:
        key: File name of the row's cached result (``OUT/rows/<key>.json``) and its ``--rows`` name.
        section: The table it belongs to (a key of :data:`SECTIONS`).
        label: The row's name in the table (``"EcD"``, ``"AttW+t"``, ``"P+E"`` …).
        kind: ``zoo``, ``baselines``, ``train``, ``ood`` or ``external`` (see :data:`RUNNERS`).
        zoo: The zoo config it reads (``tetris_seed`` / ``tetris_hyp``); a zoo row builds it.
        preset: Training preset (``train`` rows): a name in ``training/configs`` or a path.
        overrides: Training fields changed from the preset (``train`` rows) or build options (``zoo`` rows:
            ``num_models``, ``epochs``, ``subset``).
        baselines: Baselines probed (``baselines`` rows: the table's columns; ``train`` rows: the one their
            hyper-representation is compared with, with a bootstrap interval).
        max_rows: Rows per split the evaluation keeps (whole models, seeded); None: all.
        requires: Rows whose output this row reads (its zoo row is added automatically).
        paper: The paper's numbers for this row: target → value (``reconstruction`` for the test reconstruction R²).
        note: What differs from the preset or the paper (shown in the table).
        estimate_min: Expected CPU minutes with two rows sharing 2 cores (``--jobs 2``; session 6's one-run
            measurement), for the ``--list`` and the report's unfinished rows.
        same_as: This row is another row's configuration under a second name (nothing runs; its result is shown).
        zoos: ``ood`` rows: the zoo configs compared.
        sources: ``external`` rows: results files to read, first found wins.
        extra_zoos: ``train`` rows: zoo configs whose train splits join the training rows (``--extra-zoos``); their
            build rows are needed too.
    """

    key: str
    section: str
    label: str
    kind: str
    zoo: str = "tetris_seed"
    preset: str | None = None
    overrides: Mapping = field(default_factory=dict)
    baselines: tuple[str, ...] = ()
    max_rows: int | None = None
    requires: tuple[str, ...] = ()
    paper: Mapping = field(default_factory=dict)
    note: str = ""
    estimate_min: float = 1.0
    same_as: str | None = None
    zoos: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    extra_zoos: tuple[str, ...] = ()

    @property
    def model_row(self) -> str | None:
        """``ood`` rows: the row whose trained model they read (the one required row that is not a zoo)."""
        return next((key for key in self.requires if not key.startswith("zoo_")), None)

    def fingerprint(self) -> str:
        """Hash of everything that decides the row's result (not its label, note or estimate)."""
        decisive = {
            "format": ROW_FORMAT,
            "kind": self.kind,
            "zoo": self.zoo,
            "preset": self.preset,
            "overrides": dict(self.overrides),
            "baselines": list(self.baselines),
            "max_rows": self.max_rows,
            "zoos": list(self.zoos),
        }
        if self.extra_zoos:  # only then: the other rows keep their fingerprints (and caches)
            decisive["extra_zoos"] = list(self.extra_zoos)
        if self.kind == "ood":  # the model it reads (two rows may read two models of one zoo)
            decisive["model_row"] = [self.model_row]
        if self.preset is not None:  # a preset's content is part of the row; its extra_zoos name the user's
            # folders, which run_train replaces by the row's own (above)
            preset = _preset_mapping(self.preset)
            decisive["preset_content"] = {key: value for key, value in preset.items() if key != "extra_zoos"}
        return hashlib.sha256(json.dumps(decisive, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Section:
    """A table of the report."""

    title: str
    zoo: str
    targets: tuple[str, ...]
    text: str


SECTIONS: dict[str, Section] = {
    "zoos": Section("The zoos (data version 2)", "", (), "Built once; every other row reads them."),
    "t1": Section(
        "TETRIS-SEED, Table 1: self-supervised objectives",
        "tetris_seed",
        SEED_TARGETS,
        "AttN+t encoder of the ablation base (`bench/configs/tetris_seed_ablation.yaml`: d_model 128, 2 blocks, "
        "latent 50) on the raw weights with permutation, "
        "sign-flip and erasing augmentations (P+S+E: a contrastive loss needs two different views; the preset's "
        "canonical form gives one), 5 of the base's 11 epochs; β 0.9 for EcD and Ec+D. The last row is EcD plus our "
        "function term (γ 5 · the MSE of a linear head on z that predicts what the network computes: the √ of its "
        "softmax outputs on 256 fixed random inputs, read off the weights; `docs/model.md`). Reconstruction = test "
        "R² of the decoded weights. Each row is one training seed: a second seed moved these rows by 2.3 points "
        "(median; up to 21.4) and their verdicts against s(W) by up to 5 of 7 targets "
        "(`docs/results/seed_spread.md`).",
    ),
    "t2": Section(
        "TETRIS-SEED, Table 2: encoder architectures",
        "tetris_seed",
        SEED_TARGETS,
        "The Table 1 ED row with the encoder changed: FFN (fully connected on the flat vector), AttW / AttW+t "
        "(one token per weight: 100 tokens; fewer epochs, each epoch costs several times AttN's), AttN / AttN+t "
        "(one token per neuron; +t = the compression token). Each row is one training seed: a second seed moved "
        "these rows by 5.3 points (median; up to 20.3, FFN's F1 class 0) and changed the table's best row on 4 of 7 "
        "targets (`docs/results/seed_spread.md`).",
    ),
    "t3": Section(
        "TETRIS-SEED, Table 3: augmentations",
        "tetris_seed",
        SEED_TARGETS,
        "ED, AttN+t, 5 epochs. P = neuron permutation, E = erasing (p 0.5), N = additive noise (σ 0.05 of the "
        "standardised weights), S = sign flips before tanh (ours); 'symmetry average' = z averaged over the network "
        "and 15 symmetric copies; 'canonical' = the base's canonical form (no augmentation needed). Each row is one "
        "training seed: a second seed moved these rows by 1.5 points (median; up to 15.5, N's gap) and the verdicts "
        "of E, N, P+E and P+S against s(W) on 3–5 of 7 targets; the symmetry average stays the best row on 5 of 7 "
        "targets and ahead of s(W) on 6 (`docs/results/seed_spread.md`).",
    ),
    "t5_seed": Section(
        "TETRIS-SEED, Table 5 (left): the hyper-representation and the baselines",
        "tetris_seed",
        SEED_TARGETS,
        "The preset (`training/configs/tetris_seed.yaml`: EcD β 0.9 plus the function term γ 5, latent 200, on "
        "permutation + sign-flip + erasing views, 20 epochs, embedded on the canonical form) and every baseline "
        "through the same linear probes. Δ = hyperrep − s(W) on all test rows, with a 95 % paired bootstrap interval "
        "over the test models. The same preset through the command line: `docs/results/tetris_seed.md`. Trained "
        "under seeds 0 / 1 / 2 (session 18, `bench/results/tetris_seed_latent_epochs.json`) it scored 94.2–94.5 / "
        "90.6–91.1 / 78.2–79.6 / 80.3–81.0 / 67.9–70.1 / 43.4–45.1 / 75.1–75.8, ahead of s(W) on all 7 targets "
        "under each; at latent 100 and 10 epochs (the preset of session 17) 94.2–94.3 / 89.9–90.2 / 76.7–77.3 / "
        "78.1–78.7 / 66.7–67.8 / 42.8–43.8 / 72.0–72.8 (`bench/results/tetris_seed_function_preset.json`); EcD "
        "alone at latent 50, the preset until session 16, 93.8–93.9 / 83.2–84.1 / 67.6–68.5 / 66.5–69.2 / "
        "45.1–48.1 / 16.8–18.6 / 64.8–66.6 (`docs/results/seed_spread.md`). The baseline `s(W)+shape` (s(W) and "
        "five per-layer shape statistics, session 21) is stronger than s(W); the preset is ahead of it on all 7 "
        "targets too, every 95 % interval above 0 (session 22, `bench/compare_baseline.py --baseline 's(W)+shape'`, "
        "`docs/results/tetris_seed.md`).",
    ),
    "t5_hyp": Section(
        "TETRIS-HYP, Table 5 (right): the hyper-representation, the baselines, the hyper-parameters",
        "tetris_hyp",
        HYP_TARGETS,
        "The TETRIS-HYP preset (`training/configs/tetris_hyp.yaml`: EcD β 0.5 on permutation + erasing views, "
        "embedded on the canonical form, 6 epochs, trained on TETRIS-HYP's and TETRIS-SEED's training networks: "
        "`extra_zoos`, self-supervised, no TETRIS-SEED label is read; since session 21 probed on z̄ ⊕ s(W) ⊕ shape, "
        "s(W) and five per-layer shape statistics appended, which the baseline `s(W)+shape` reads alone) on the "
        "filtered zoo (networks that left chance); activation and init are accuracies of a linear softmax probe, the "
        "others test R². Evaluated on 10,000 rows per split (whole models, seeded). The same preset through the "
        "command line: `docs/results/tetris_hyp.md`. Trained with two more seeds (session 21, z̄ ⊕ s(W) ⊕ shape): "
        "4 / 1 / 1 and 3 / 3 / 0 against s(W) on these 6 targets (the gap behind under seed 1; test accuracy 86.3, "
        "83.2, 81.8; init 51.2, 52.5, 50.0 %). The last row is the preset on TETRIS-HYP's networks alone "
        "(`--extra-zoos none`, the preset until session 11); on z̄ ⊕ s(W) (session 11) it was 2 / 4 / 0 and 1 / 5 / 0 "
        "under the two other seeds, the preset ahead of it by +3.0, +1.0 and +0.3 points averaged over the 10 "
        "targets, and trained for as many steps it is not better than at 6 epochs (`docs/results/tetris_hyp.md`). "
        "Against the `s(W)+shape` baseline in a paired bootstrap (session 22) the preset is ahead on 7 / 5 / 2 of "
        "the 10 targets under seeds 0 / 1 / 2, behind only on the gap under seed 1: what z̄ adds beyond the "
        "hand-made features depends on the training seed.",
    ),
    "t7": Section(
        "Out of distribution, Table 7: the Tetris pair",
        "",
        (),
        "Kendall τ of test accuracy: the probe is fitted on the zoo of the row (train split, α on its validation "
        "split) and ranks the test networks of the column's zoo; 10,000 rows per split. The rows hyperrep − W and "
        "hyperrep − s(W) give the τ difference with its 95 % paired bootstrap interval over the column zoo's test "
        "networks (1,000 resamples); **bold**: the interval excludes 0. The encoder trained on TETRIS-HYP is the "
        "preset on TETRIS-HYP's networks alone (`--extra-zoos none`); the TETRIS-HYP preset's own encoder has also "
        "seen TETRIS-SEED's training networks (no labels, no test network), so for it the TETRIS-SEED column is not "
        "out of distribution for the encoder, only for the probe (fitted on the row's zoo).",
    ),
    "cnn": Section(
        "CNN rows (MNIST-HYP, CPU mini zoo)",
        "",
        (),
        "Read from the CNN evaluations' results files when they exist (`hyperrep evaluate` on the MNIST-HYP mini "
        "zoo, the demo's, and on the CPU minis of the paper's four MNIST-HYP zoos: docs/results/mnist_hyp_mini.md, "
        "docs/results/mnist_hyp_paper_minis.md, where the bootstrap intervals are); nothing is run here. `hyperrep` "
        "is z̄ ⊕ s(W), `hyperrep_z` z̄ alone.",
    ),
}

SEED_PRESET = "tetris_seed"
# Tables 1-3 train from a pinned copy of the preset, so the preset can move on without re-basing the ablations.
ABLATION_PRESET = "bench/configs/tetris_seed_ablation.yaml"
HYP_PRESET = "tetris_hyp"
# The ablations' common ground: raw weights with the paper's augmentations plus our sign flips, 5 epochs.
ABLATION = {
    "epochs": 5,
    "canonical": False,
    "permute": True,
    "sign_flip": True,
    "erasing_probability": 0.5,
    "embedding_symmetry_samples": 1,
}
NO_AUGMENTATION = {"permute": False, "sign_flip": False, "erasing_probability": 0.0, "additive_noise_std": 0.0}


# What each section's rows share (a row's configuration column shows only what it changes from this).
SECTION_BASES = {"t1": ABLATION, "t2": ABLATION, "t3": {**ABLATION, **NO_AUGMENTATION}}


def _ablation(**changes) -> dict:
    return {**ABLATION, **changes}


def _augmentation(**changes) -> dict:
    return {**ABLATION, **NO_AUGMENTATION, **changes}


def default_rows() -> list[Row]:
    """Every row of the report, in order."""
    seed_paper_ecd = PAPER_SEED["EcD"]
    rows = [
        Row("zoo_tetris_seed", "zoos", "TETRIS-SEED", "zoo", zoo="tetris_seed", estimate_min=1.5),
        Row("zoo_tetris_hyp", "zoos", "TETRIS-HYP", "zoo", zoo="tetris_hyp", estimate_min=16),
        # Table 1: objectives
        Row("t1_ed", "t1", "ED", "train", preset=ABLATION_PRESET, overrides=_ablation(loss_type="ed"),
            baselines=("s(W)",), paper={"reconstruction": PAPER_RECONSTRUCTION["ED"]}, note="5 epochs",
            estimate_min=5.3),
        Row("t1_ec", "t1", "Ec", "train", preset=ABLATION_PRESET, overrides=_ablation(loss_type="ec"),
            baselines=("s(W)",), note="5 epochs", estimate_min=5.9),
        Row("t1_ecd", "t1", "EcD", "train", preset=ABLATION_PRESET, overrides=_ablation(loss_type="ecd", beta=0.9),
            baselines=("s(W)",), paper={**seed_paper_ecd, "reconstruction": PAPER_RECONSTRUCTION["EcD"]},
            note="5 epochs", estimate_min=7.2),
        Row("t1_ec+d", "t1", "Ec+D", "train", preset=ABLATION_PRESET, overrides=_ablation(loss_type="ec+d", beta=0.9),
            baselines=("s(W)",), paper={"reconstruction": PAPER_RECONSTRUCTION["Ec+D"]}, note="5 epochs",
            estimate_min=7.1),
        Row("t1_ecd_function", "t1", "EcD + function term (ours)", "train", preset=ABLATION_PRESET,
            overrides=_ablation(loss_type="ecd", beta=0.9, function_weight=5.0), baselines=("s(W)",),
            paper=seed_paper_ecd, note="5 epochs; γ 5, target probe_outputs", estimate_min=7.3),
        # Table 2: architectures (ED, as the Table 1 ED row)
        Row("t2_ffn", "t2", "FFN", "train", preset=ABLATION_PRESET, overrides=_ablation(variant="ffn"),
            baselines=("s(W)",), note="5 epochs", estimate_min=1.9),
        Row("t2_attw", "t2", "AttW", "train", preset=ABLATION_PRESET,
            overrides=_ablation(variant="attw", token_layout="weight", epochs=2), baselines=("s(W)",),
            note="2 epochs", estimate_min=17),
        Row("t2_attw_t", "t2", "AttW+t", "train", preset=ABLATION_PRESET,
            overrides=_ablation(variant="attw_t", token_layout="weight", epochs=2), baselines=("s(W)",),
            note="2 epochs", estimate_min=17),
        Row("t2_attn", "t2", "AttN", "train", preset=ABLATION_PRESET, overrides=_ablation(variant="attn"),
            baselines=("s(W)",), note="5 epochs", estimate_min=4.7),
        Row("t2_attn_t", "t2", "AttN+t", "train", same_as="t1_ed", note="= Table 1 ED"),
        # Table 3: augmentations (ED, AttN+t)
        Row("t3_none", "t3", "none", "train", preset=ABLATION_PRESET, overrides=_augmentation(), baselines=("s(W)",),
            note="5 epochs", estimate_min=4.8),
        Row("t3_p", "t3", "P", "train", preset=ABLATION_PRESET, overrides=_augmentation(permute=True),
            baselines=("s(W)",), note="5 epochs", estimate_min=4.9),
        Row("t3_e", "t3", "E", "train", preset=ABLATION_PRESET, overrides=_augmentation(erasing_probability=0.5),
            baselines=("s(W)",), note="5 epochs", estimate_min=5),
        Row("t3_n", "t3", "N", "train", preset=ABLATION_PRESET, overrides=_augmentation(additive_noise_std=0.05),
            baselines=("s(W)",), note="5 epochs", estimate_min=4.9),
        Row("t3_pe", "t3", "P+E", "train", preset=ABLATION_PRESET,
            overrides=_augmentation(permute=True, erasing_probability=0.5), baselines=("s(W)",), note="5 epochs",
            estimate_min=5.2),
        Row("t3_pen", "t3", "P+E+N", "train", preset=ABLATION_PRESET,
            overrides=_augmentation(permute=True, erasing_probability=0.5, additive_noise_std=0.05),
            baselines=("s(W)",), note="5 epochs", estimate_min=5.2),
        Row("t3_ps", "t3", "P+S (ours)", "train", preset=ABLATION_PRESET,
            overrides=_augmentation(permute=True, sign_flip=True), baselines=("s(W)",), note="5 epochs",
            estimate_min=4.9),
        Row("t3_pse", "t3", "P+S+E (ours)", "train", same_as="t1_ed", note="= Table 1 ED"),
        Row("t3_ps_avg", "t3", "P+S + symmetry average (ours)", "train", preset=ABLATION_PRESET,
            overrides=_augmentation(permute=True, sign_flip=True, embedding_symmetry_samples=16),
            baselines=("s(W)",), note="5 epochs; z̄ over 16 copies", estimate_min=7.9),
        Row("t3_canonical", "t3", "canonical form (ours)", "train", preset=ABLATION_PRESET,
            overrides=_augmentation(canonical=True), baselines=("s(W)",), note="5 epochs", estimate_min=4.8),
        # Table 5
        Row("seed_baselines", "t5_seed", "baselines", "baselines", zoo="tetris_seed",
            baselines=(*ALL_BASELINES, "s(W)+shape"), paper={"W": PAPER_SEED["W"], "s(W)": PAPER_SEED["s(W)"]},
            estimate_min=2),
        Row("seed_preset", "t5_seed", "hyperrep (preset)", "train", preset=SEED_PRESET, baselines=("s(W)",),
            paper=seed_paper_ecd, note="the preset (EcD + function term γ 5, latent 200), 20 epochs", estimate_min=21),
        Row("hyp_baselines", "t5_hyp", "baselines", "baselines", zoo="tetris_hyp",
            baselines=(*ALL_BASELINES, "s(W)+shape"),
            max_rows=10000, paper={"W": PAPER_HYP["W"], "s(W)": PAPER_HYP["s(W)"]}, estimate_min=3.1),
        Row("hyp_preset", "t5_hyp", "hyperrep (preset)", "train", zoo="tetris_hyp", preset=HYP_PRESET,
            extra_zoos=("tetris_seed",), baselines=("s(W)",), max_rows=10000, paper=PAPER_HYP["EcD"],
            note="the preset, 6 epochs, on TETRIS-HYP's and TETRIS-SEED's training networks (42,688 rows)",
            estimate_min=17),
        Row("hyp_alone", "t5_hyp", "hyperrep (preset, TETRIS-HYP's networks only)", "train", zoo="tetris_hyp",
            preset=HYP_PRESET, baselines=("s(W)",), max_rows=10000, paper=PAPER_HYP["EcD"],
            note="the preset without its extra zoo (`--extra-zoos none`: 31,488 rows), 6 epochs", estimate_min=13),
        # Table 7
        Row("ood_hyp_model", "t7", "encoder trained on TETRIS-HYP", "ood", zoo="tetris_hyp",
            requires=("hyp_alone", "zoo_tetris_seed"), zoos=("tetris_hyp", "tetris_seed"), max_rows=10000,
            estimate_min=1.5),
        Row("ood_hyp_preset", "t7", "the TETRIS-HYP preset's encoder (also trained on TETRIS-SEED's training "
            "networks, no labels)", "ood", zoo="tetris_hyp", requires=("hyp_preset", "zoo_tetris_seed"),
            zoos=("tetris_hyp", "tetris_seed"), max_rows=10000, estimate_min=1.5),
        Row("ood_seed_model", "t7", "encoder trained on TETRIS-SEED", "ood", zoo="tetris_seed",
            requires=("seed_preset", "zoo_tetris_hyp"), zoos=("tetris_hyp", "tetris_seed"), max_rows=10000,
            estimate_min=1.1),
        # CNN
        Row("cnn_mnist_hyp_mini", "cnn", "MNIST-HYP mini", "external", zoo="", sources=tuple(
            str(path) for path in DEFAULT_CNN_RESULTS), estimate_min=0.0),
        *(Row(f"cnn_{recipe}", "cnn", _mini_label(recipe), "external", zoo="", sources=(str(path),), estimate_min=0.0)
          for recipe, path in PAPER_MINI_RESULTS.items()),
    ]  # fmt: skip
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Running rows
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class Context:
    """Where a run writes: ``out/rows`` (the cache), ``out/runs``, ``out/eval``, ``out/invocations.jsonl`` (each
    invocation's time); zoos in ``zoo_dir``."""

    out: Path
    zoo_dir: Path
    threads: int = 1
    progress: bool = False

    @property
    def rows_dir(self) -> Path:
        return self.out / "rows"

    def zoo(self, config: str) -> str:
        return f"{self.zoo_dir}:{config}"

    def run_dir(self, key: str) -> Path:
        return self.out / "runs" / key

    def eval_dir(self, key: str) -> Path:
        return self.out / "eval" / key


def _preset_mapping(preset: str) -> dict:
    from hyperrep_hf.cli import resolve_train_config
    from hyperrep_hf.training.trainer import read_preset

    in_repository = REPO / preset
    return read_preset(resolve_train_config(str(in_repository) if in_repository.is_file() else preset))


def _test_scores(document: Mapping) -> dict[str, dict[str, float]]:
    """method → target → test R² (or accuracy) in % from a results document (``results.json``)."""
    scores: dict[str, dict[str, float]] = {}
    for result in document["results"]:
        if result["split"] == "test" and result["metric"] in ("r2", "accuracy") and result["value"] is not None:
            scores.setdefault(result["method"], {})[result["target"]] = round(100 * result["value"], 2)
    return scores


def _intervals(document: Mapping) -> dict[str, dict]:
    """target → hyperrep − baseline on all test rows (R², or accuracy for a class target, in points) with its
    bootstrap interval."""
    comparison = document.get("final_checkpoints") or {}
    categorical = set(document.get("categorical_targets", ()))
    out = {}
    for record in comparison.get("results", []):
        metric = "accuracy" if record["target"] in categorical else "r2"
        if record["subset"] == "all_epochs" and record["metric"] == metric and record["difference"] is not None:
            out[record["target"]] = {
                "baseline": comparison["baseline"],
                "difference": round(100 * record["difference"], 2),
                "low": None if record["low"] is None else round(100 * record["low"], 2),
                "high": None if record["high"] is None else round(100 * record["high"], 2),
                "significant": record["significant"],
            }
    return out


def run_zoo(row: Row, context: Context) -> dict:
    """Builds the zoo of ``row.zoo`` (recipe of that name; ``row.overrides`` are build options)."""
    from hyperrep_hf.zoo.folder import build_zoo
    from hyperrep_hf.zoo.recipes import BuildOptions, load_recipe

    recipe = load_recipe(row.zoo)
    existed = (context.zoo_dir / recipe.name / "zoo_info.json").is_file()
    path = build_zoo(recipe, context.zoo_dir, BuildOptions(**dict(row.overrides)), progress=context.progress)
    info = json.loads((Path(path) / "zoo_info.json").read_text())
    return {
        "zoo": str(path),
        "counts": info["counts"],
        "data_version": info["recipe"].get("data_version", 1),
        "built": not existed,  # False: found complete (checked, not rebuilt), so its time is not a build's
    }


def run_baselines(row: Row, context: Context) -> dict:
    """The baselines' features of every split through the evaluation's probes (no model needed)."""
    from hyperrep_hf.probing.baselines import compute_baseline_features, zoo_activations
    from hyperrep_hf.probing.evaluation import load_zoo_arrays, select_targets
    from hyperrep_hf.probing.probes import fit_probes

    zoo = load_zoo_arrays(context.zoo(row.zoo), row.max_rows, seed=0)
    targets, categorical = select_targets(zoo)
    targets_by_split = {
        split: {target: zoo.columns[split][target] for target in targets if target in zoo.columns[split]}
        for split in zoo.vectors
    }
    scores, seconds, unavailable = {}, {}, {}
    for name in row.baselines:
        started = time.process_time()
        features = compute_baseline_features(
            name,
            zoo.vectors,
            zoo.info["architecture"],
            activations=zoo_activations(zoo.info),
            num_components=50,
            max_fit_rows=3000,
            seed=0,
        )
        if features is None:
            unavailable[name] = "umap-learn is not installed"
            continue
        report = fit_probes(features, targets_by_split, categorical, method=name)
        document = {"results": [result.to_dict() for result in report.results]}
        scores[name] = _test_scores(document).get(name, {})
        seconds[name] = round(time.process_time() - started, 1)
    return {
        "scores": scores,
        "cpu_seconds_by_baseline": seconds,
        "unavailable": unavailable,
        "rows": {split: int(v.shape[0]) for split, v in zoo.vectors.items()},
    }


def run_train(row: Row, context: Context) -> dict:
    """Trains the preset with the row's overrides, then probes z̄ (and ``row.baselines``) on the zoo."""
    from hyperrep_hf.probing.evaluation import evaluate_model
    from hyperrep_hf.training.trainer import make_train_config, train

    run_dir = context.run_dir(row.key)
    overrides = {
        "zoo": context.zoo(row.zoo),
        "output_dir": str(run_dir),
        "overwrite": True,
        "num_threads": context.threads,
        "progress": context.progress,
        **dict(row.overrides),
    }
    # The row's extra zoos, from the report's zoo folder, replace the preset's (which name the user's folders).
    overrides["extra_zoos"] = [context.zoo(config) for config in row.extra_zoos] or None
    config = make_train_config(_preset_mapping(row.preset), overrides)
    started = time.process_time()
    try:
        final = train(config)
    finally:  # the next row in this process starts from a fresh accelerate state
        from accelerate.state import AcceleratorState, PartialState

        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    train_seconds = time.process_time() - started
    report = evaluate_model(
        run_dir,
        context.zoo(row.zoo),
        context.eval_dir(row.key),
        baselines=list(row.baselines),
        max_rows=row.max_rows,
        plots=False,
        save_to_model=False,
        progress=context.progress,
        overwrite=True,
    )
    document = report.document
    return {
        "scores": _test_scores(document),
        "intervals": _intervals(document),
        "reconstruction_r2": None
        if final.get("test/reconstruction_r2") is None
        else round(100 * final["test/reconstruction_r2"], 2),
        "train_metrics": final,
        "cpu_seconds_training": round(train_seconds, 1),
        "rows": document["rows"],
        "run_dir": str(run_dir),
    }


def run_ood(row: Row, context: Context) -> dict:
    """Kendall τ of test accuracy across the row's zoos with the model of the row it requires."""
    from hyperrep_hf.probing.ood import evaluate_ood

    document = evaluate_ood(
        context.run_dir(row.model_row),
        [context.zoo(config) for config in row.zoos],
        context.eval_dir(row.key),
        max_rows=row.max_rows,
        methods=("W", "s(W)", HYPERREP),
        progress=context.progress,
    )
    return {"ood": document}


def run_external(row: Row, context: Context) -> dict:  # read at report time; never cached
    raise RuntimeError(f"row {row.key!r} reads a results file; it is not run")


RUNNERS: dict[str, Callable[[Row, Context], dict]] = {
    "zoo": run_zoo,
    "baselines": run_baselines,
    "train": run_train,
    "ood": run_ood,
    "external": run_external,
}


def row_path(context: Context, key: str) -> Path:
    return context.rows_dir / f"{key}.json"


def read_row(context: Context, row: Row) -> dict | None:
    """The cached result of ``row`` when it is finished under its current configuration, else None."""
    record = _load_record(context, row.key)  # a missing or damaged cache entry is rerun
    if record is None or record.get("status") != "done" or record.get("fingerprint") != row.fingerprint():
        return None
    inputs = record.get("inputs") or {}
    if any(_run_ids(context, row).get(key) != run_id for key, run_id in inputs.items()):
        return None  # a row it reads (a zoo, a trained model) was rerun since: this result is stale
    return record


def _run_ids(context: Context, row: Row) -> dict[str, str | None]:
    """The ``run_id`` of each cached row that ``row`` reads (:func:`_input_keys`); rows not cached are left out."""
    records = {key: _load_record(context, key) for key in _input_keys(row)}
    return {key: record.get("run_id") for key, record in records.items() if record is not None}


def _load_record(context: Context, key: str) -> dict | None:
    """The cached record of row ``key`` as written, unchecked; None when it is missing or not readable JSON."""
    try:
        record = json.loads(row_path(context, key).read_text())
    except (OSError, ValueError):  # ValueError: JSONDecodeError, UnicodeDecodeError
        return None
    return record if isinstance(record, dict) else None


def _environment() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def _utc(seconds: float | None = None) -> str:
    """A time stamp of the row records and run records (now, or ``seconds`` since the epoch)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def run_row(row: Row, context: Context) -> dict:
    """Runs one row and caches its result (atomically); returns the record."""
    import torch

    from hyperrep_hf.atomic import write_json_atomic

    torch.set_num_threads(context.threads)
    load = os.getloadavg()[0]
    started_cpu, started_wall = time.process_time(), time.perf_counter()
    inputs = _run_ids(context, row)  # what it read, before it ran
    result = RUNNERS[row.kind](row, context)
    record = {
        "format": ROW_FORMAT,
        "key": row.key,
        "status": "done",
        "fingerprint": row.fingerprint(),
        "run_id": uuid.uuid4().hex,  # the rows that read this one record it, and rerun when it changes
        "inputs": inputs,
        "row": {
            "kind": row.kind,
            "zoo": row.zoo,
            "preset": row.preset,
            "overrides": dict(row.overrides),
            "baselines": list(row.baselines),
            "max_rows": row.max_rows,
        },
        "cpu_seconds": round(time.process_time() - started_cpu, 1),
        "wall_seconds": round(time.perf_counter() - started_wall, 1),
        "load_average_at_start": round(load, 2),
        "threads": context.threads,
        "finished": _utc(),
        "environment": _environment(),
        **result,
    }
    context.rows_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(row_path(context, row.key), record)
    return record


def _input_keys(row: Row) -> list[str]:
    """The rows ``row`` reads: its zoos' build rows, the rows in ``requires`` and the row it aliases (``same_as``)."""
    keys = list(row.requires) + ([row.same_as] if row.same_as else [])
    if row.kind not in ("zoo", "external") and row.same_as is None:
        keys += [f"zoo_{config}" for config in (*(row.zoos or (row.zoo,)), *row.extra_zoos)]
    return list(dict.fromkeys(keys))


def _needs(row: Row, by_key: Mapping[str, Row]) -> list[str]:
    """The rows (keys of ``by_key``) that must be finished before ``row`` runs (:func:`_input_keys`)."""
    return [key for key in _input_keys(row) if key in by_key]


def select_rows(rows: Sequence[Row], keys: Sequence[str] | None) -> list[Row]:
    """The rows named (all when ``keys`` is None), with the rows they need, in the order of ``rows``.

    A row needs its zoo's build row (``zoo_<config>``) and the rows in ``requires``; a ``same_as`` row stands for
    the row it names.

    Raises:
        ValueError: an unknown key (naming the known ones).
    """
    by_key = {row.key: row for row in rows}
    if keys is None:
        wanted = set(by_key)
    else:
        unknown = [key for key in keys if key not in by_key]
        if unknown:
            raise ValueError(f"Unknown rows {unknown}; the rows are: {', '.join(by_key)} (see --list).")
        wanted = set(keys)
    pending = list(wanted)
    while pending:
        for need in _needs(by_key[pending.pop()], by_key):
            if need not in wanted:
                wanted.add(need)
                pending.append(need)
    return [row for row in rows if row.key in wanted]


def runnable(rows: Sequence[Row]) -> list[Row]:
    """The rows that run something (not ``same_as`` aliases, not external files)."""
    return [row for row in rows if row.same_as is None and row.kind != "external"]


def critical_minutes(rows: Sequence[Row]) -> dict[str, float]:
    """Each row's estimate plus the longest chain of estimates of the rows among ``rows`` that wait on it.

    The parallel scheduler starts the ready row with the longest chain first, so that a long zoo build and the
    training that reads it are not left for last.
    """
    by_key = {row.key: row for row in rows}
    waiting: dict[str, list[str]] = {key: [] for key in by_key}
    for row in rows:
        for need in _needs(row, by_key):
            waiting[need].append(row.key)
    chains: dict[str, float] = {}

    def chain(key: str) -> float:
        if key not in chains:
            chains[key] = by_key[key].estimate_min + max((chain(other) for other in waiting[key]), default=0.0)
        return chains[key]

    return {key: chain(key) for key in by_key}


def run_rows(
    rows: Sequence[Row],
    context: Context,
    *,
    force: bool = False,
    jobs: int = 1,
    say: Callable[[str], None] = print,
    worker_command: Callable[[Row], list[str]] | None = None,
) -> dict[str, str]:
    """Runs every row of ``rows`` that is not finished (all with ``force``); returns key → what happened.

    A row starts once every row it needs (:func:`_needs`) is finished. With ``jobs`` 1 (or no ``worker_command``)
    the rows run here, in the order given; with ``jobs`` > 1 each row runs in a worker process of its own
    (``worker_command(row)`` gives its command line), at most ``jobs`` at once, the ready row with the longest
    chain of work behind it (:func:`critical_minutes`) first. A failing row is reported, the rows that need it are
    skipped, and the others go on.
    """
    outcome: dict[str, str] = {}
    pending: dict[str, Row] = {}
    for row in runnable(rows):
        if not force and read_row(context, row) is not None:
            outcome[row.key] = "cached"
        else:
            pending[row.key] = row
    by_key = {row.key: row for row in rows}
    stale = True
    while stale:  # a finished row that reads a row about to rerun goes stale with it: it reruns after it
        stale = [key for key in outcome if any(need in pending for need in _needs(by_key[key], by_key))]
        for key in stale:
            del outcome[key]
            pending[key] = by_key[key]
    parallel = jobs > 1 and worker_command is not None
    chains = critical_minutes(list(pending.values()))
    running: dict[str, subprocess.Popen] = {}
    failed: set[str] = set()

    def succeeded(row: Row, record: dict) -> None:
        outcome[row.key] = "done"
        say(f"[reproduce] {row.key}: done in {_minutes(record)} CPU-min (wall)")

    def fail(row: Row, why: str) -> None:
        outcome[row.key] = f"failed: {why}"
        failed.add(row.key)
        say(f"[reproduce] {row.key}: FAILED {why}")

    while pending or running:
        for row in list(pending.values()):
            missing = [need for need in _needs(row, by_key) if need in failed]
            if missing:
                outcome[row.key] = f"skipped: needs {', '.join(missing)}"
                failed.add(row.key)
                del pending[row.key]
        ready = [row for row in pending.values() if not any(n in pending or n in running for n in _needs(row, by_key))]
        if parallel:
            ready.sort(key=lambda row: -chains[row.key])
        if not ready and not running:
            if pending:
                raise ValueError(f"Rows that need each other in a circle: {', '.join(pending)}.")
            break
        for row in ready[: (jobs - len(running)) if parallel else 1]:
            del pending[row.key]
            say(f"[reproduce] {row.key}: running ({row.kind}, ~{row.estimate_min:g} CPU-min)")
            if parallel:
                running[row.key] = subprocess.Popen(worker_command(row))
                continue
            try:
                succeeded(row, run_row(row, context))
            except Exception as error:  # one row's failure is reported; the others go on
                fail(row, f"{type(error).__name__}: {error}")
        if parallel and running:
            while not (done := [key for key, worker in running.items() if worker.poll() is not None]):
                time.sleep(0.2)
            for key in done:
                code, record = running.pop(key).returncode, read_row(context, by_key[key])
                if record is None:
                    fail(by_key[key], f"its worker exited with code {code} (its traceback is above)")
                else:
                    succeeded(by_key[key], record)
    return outcome


# ----------------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------------


def _number(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _minutes(record: Mapping | None) -> str:
    if record is None:
        return "–"
    return f"{record['cpu_seconds'] / 60:.1f} ({record['wall_seconds'] / 60:.1f})"


def _verdict(ours: float | None, reference: float | None, interval: Mapping | None = None) -> str:
    """ahead / level / behind: by the bootstrap interval when there is one, else by ±LEVEL_POINTS."""
    if ours is None or reference is None:
        return "–"
    if interval is not None and interval.get("low") is not None:
        if interval["low"] > 0:
            return "ahead"
        return "behind" if interval["high"] < 0 else "level"
    if ours - reference > LEVEL_POINTS:
        return "ahead"
    return "behind" if reference - ours > LEVEL_POINTS else "level"


def _paper_table(zoo: str) -> dict[str, dict[str, float]]:
    """The paper's rows (W, s(W), EcD) for a Tetris zoo."""
    return PAPER_HYP if zoo == "tetris_hyp" else PAPER_SEED


def _paper_gain(zoo: str) -> dict[str, float]:
    """The paper's EcD − s(W) per target: how far its hyper-representation got past the weight statistics."""
    paper = _paper_table(zoo)
    return {t: paper["EcD"][t] - paper["s(W)"][t] for t in paper["EcD"]}


def _target_verdicts(
    ours: float | None, sw: float | None, paper: float | None, paper_gain: float | None, interval: Mapping | None
) -> tuple[str, str, str]:
    """One target's three verdicts: vs s(W), vs the paper's EcD, our gain over s(W) vs the paper's gain."""
    return (
        _verdict(ours, sw, interval),
        _verdict(ours, paper),
        _gain_verdict(ours, sw, paper_gain, interval),
    )


def record_verdicts(record: Mapping, zoo: str, targets: Sequence[str]) -> list[tuple[str, str, str]]:
    """A finished training row's :func:`_target_verdicts` per target: vs s(W), vs the paper's EcD, gain vs gain."""
    paper, paper_gain = _paper_table(zoo)["EcD"], _paper_gain(zoo)
    ours, sw = record["scores"].get(HYPERREP, {}), record["scores"].get("s(W)", {})
    intervals = record.get("intervals") or {}
    return [
        _target_verdicts(ours.get(t), sw.get(t), paper.get(t), paper_gain.get(t), intervals.get(t)) for t in targets
    ]


def verdict_counts(verdicts: Sequence[str]) -> str:
    """ "ahead / level / behind" counts: "4 / 2 / 1"."""
    return " / ".join(str(verdicts.count(word)) for word in ("ahead", "level", "behind"))


def _gain_verdict(ours: float | None, sw: float | None, paper_gain: float | None, interval: Mapping | None) -> str:
    """Our gain over s(W) on our zoo against the paper's on its zoo: by our bootstrap interval where there is one.

    The zoos differ (our generator is not the paper's, docs/tetris_data.md), so absolute R² compare data sets as much
    as methods; the gain over the same zoo's s(W) compares what the encoder adds.
    """
    if ours is None or sw is None or paper_gain is None:
        return "–"
    shifted = None
    if interval is not None and interval.get("low") is not None:
        shifted = {"low": interval["low"] - paper_gain, "high": interval["high"] - paper_gain}
    return _verdict(ours - sw, paper_gain, shifted)


def _difference(interval: Mapping | None) -> str:
    """hyperrep − s(W) with its bootstrap interval: "+2.2 [1.3, 3.3]"."""
    if interval is None or interval.get("low") is None:
        return "–"
    return f"{interval['difference']:+.1f} [{_number(interval['low'])}, {_number(interval['high'])}]"


def _cell(ours: float | None, paper: float | None) -> str:
    if ours is None and paper is None:
        return "–"
    return f"{_number(ours)} ({_number(paper)})" if paper is not None else _number(ours)


def _train_table(section: Section, rows: Sequence[Row], records: Mapping[str, dict | None]) -> list[str]:
    targets = section.targets
    head = ["row", "configuration", *(TARGET_TITLES[t] for t in targets), "recon. R²", "s(W) (same rows)",
            "CPU min (wall)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        key = row.same_as or row.key
        record = records.get(key)
        configuration = _describe(row)
        if record is None:
            empty = " | ".join(["not run yet"] + ["–"] * (len(head) - 4))
            estimate = "see above" if row.same_as else f"est. {row.estimate_min:g}"
            lines.append(f"| {row.label} | {configuration} | {empty} | {estimate} |")
            continue
        scores = record.get("scores", {}).get(HYPERREP, {})
        paper = row.paper or {}
        cells = [_cell(scores.get(t), paper.get(t)) for t in targets]
        recon = _cell(record.get("reconstruction_r2"), paper.get("reconstruction"))
        sw = record.get("scores", {}).get("s(W)", {})
        sw_text = "/".join(_number(sw.get(t)) for t in targets) if sw else "–"
        minutes = "= above" if row.same_as else _minutes(record)
        lines.append(
            f"| {row.label} | {configuration} | " + " | ".join(cells) + f" | {recon} | {sw_text} | {minutes} |"
        )
    return lines


def _describe(row: Row) -> str:
    """The row's configuration in a few words: what it changes from its section's common ground."""
    if row.same_as:
        return row.note
    if row.kind == "baselines":
        return ", ".join(row.baselines) + (f"; {row.max_rows} rows per split" if row.max_rows else "")
    if row.kind == "zoo":
        return f"recipe `{row.zoo}`" + (f" {dict(row.overrides)}" if row.overrides else "")
    if row.kind == "ood":
        return f"model of `{row.requires[0]}` on {', '.join(row.zoos)}"
    if row.kind == "external":
        return "results file"
    base = SECTION_BASES.get(row.section, {})
    changes = [f"{name} {value}" for name, value in row.overrides.items() if base.get(name, object()) != value]
    if row.preset is None:
        return ", ".join(changes)
    return f"`{Path(row.preset).stem}`" + (" + " + ", ".join(changes) if changes else "")


def _baseline_table(section: Section, rows: Sequence[Row], records: Mapping[str, dict | None]) -> list[str]:
    """Table 5: each method a line (baselines and the preset's hyperrep), ours (paper), Δ with interval."""
    targets = section.targets
    head = ["method", *(TARGET_TITLES[t] for t in targets), "CPU min (wall)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        record = records.get(row.key)
        if row.kind == "baselines":
            methods = row.baselines
            for method in methods:
                paper = (row.paper or {}).get(method, {})
                if record is None:
                    cells = [_cell(None, paper.get(t)) for t in targets]
                    lines.append(
                        f"| {method} | " + " | ".join(cells) + f" | not run yet (est. {row.estimate_min:g} for all) |"
                    )
                    continue
                scores = record["scores"].get(method)
                if scores is None:
                    lines.append(f"| {method} | " + " | ".join(["–"] * len(targets)) + " | unavailable |")
                    continue
                seconds = record.get("cpu_seconds_by_baseline", {}).get(method)
                cells = [_cell(scores.get(t), paper.get(t)) for t in targets]
                lines.append(
                    f"| {method} | "
                    + " | ".join(cells)
                    + f" | {_number(None if seconds is None else seconds / 60, 2)} |"
                )
        else:
            paper = row.paper or {}
            if record is None:
                cells = [_cell(None, paper.get(t)) for t in targets]
                lines.append(f"| {row.label} | " + " | ".join(cells) + f" | not run yet (est. {row.estimate_min:g}) |")
                continue
            scores = record["scores"].get(HYPERREP, {})
            lines.append(
                f"| **{row.label}** | "
                + " | ".join(_cell(scores.get(t), paper.get(t)) for t in targets)
                + f" | {_minutes(record)} |"
            )
            intervals = record.get("intervals", {})
            deltas = [_difference(intervals.get(t)) for t in targets]
            lines.append("| Δ hyperrep − s(W) [95 %] | " + " | ".join(deltas) + " | |")
    return lines  # fmt: skip


def _goals(section: Section, rows: Sequence[Row], records: Mapping[str, dict | None]) -> list[str]:
    """Ahead / level / behind for the preset row: vs s(W) (bootstrap where there is one) and vs the paper's EcD."""
    preset = next((row for row in rows if row.kind == "train"), None)
    record = records.get(preset.key) if preset else None
    if record is None:
        return ["Goals: the preset row has not run yet."]
    scores = record["scores"]
    ours, sw = scores.get(HYPERREP, {}), scores.get("s(W)", {})
    paper, paper_gain = preset.paper or {}, _paper_gain(section.zoo)
    lines = [
        "| target | hyperrep | s(W) | vs s(W) | paper EcD | vs paper EcD | our gain over s(W) [95 %] | paper's gain "
        "| vs paper's gain |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in section.targets:
        interval = record.get("intervals", {}).get(t)
        gain = _difference(interval)
        if gain == "–" and ours.get(t) is not None and sw.get(t) is not None:
            gain = f"{ours[t] - sw[t]:+.1f}"
        paper_t = paper_gain.get(t)
        paper_t_text = "–" if paper_t is None else f"{paper_t:+.1f}"
        versus_sw, versus_paper, versus_gain = _target_verdicts(
            ours.get(t), sw.get(t), paper.get(t), paper_t, interval
        )
        lines.append(
            f"| {TARGET_TITLES[t]} | {_number(ours.get(t))} | {_number(sw.get(t))} | {versus_sw} | "
            f"{_number(paper.get(t))} | {versus_paper} | {gain} | {paper_t_text} | {versus_gain} |"
        )
    return lines


def _ood_table(rows: Sequence[Row], records: Mapping[str, dict | None]) -> list[str]:
    from hyperrep_hf.probing.ood import format_difference

    lines = []
    for row in rows:
        record = records.get(row.key)
        lines.append(f"**{row.label}** (CPU min (wall): {_minutes(record)})")
        lines.append("")
        if record is None:
            lines += [f"not run yet (est. {row.estimate_min:g} CPU-min)", ""]
            continue
        document = record["ood"]
        names = document.get("zoo_names") or [z.rsplit(":", 1)[-1] for z in document["zoos"]]
        lines.append("| method | fitted on ↓ / predicts → | " + " | ".join(names) + " |")
        lines.append("|---|---|" + "---|" * len(names))
        for method, matrices in document["matrices"].items():
            matrix = matrices.get("kendall_tau") if isinstance(matrices, dict) else None
            if matrix is None:
                continue
            for source, values in zip(names, matrix, strict=True):
                cells = " | ".join(_number(value, 3) for value in values)
                lines.append(f"| {METHOD_NAMES.get(method, method)} | {source} | {cells} |")
        for baseline, matrix in document.get("differences", {}).items():  # τ(hyperrep) − τ(baseline), 95 % interval
            for source, values in zip(names, matrix, strict=True):
                cells = " | ".join(format_difference(cell) for cell in values)
                lines.append(f"| hyperrep − {baseline} | {source} | {cells} |")
        lines.append("")
    return lines


METHOD_NAMES = {HYPERREP: "hyperrep"}


def _external_table(rows: Sequence[Row], records: Mapping[str, dict | None]) -> list[str]:
    lines = []
    for row in rows:
        record = records.get(row.key)
        if record is None:
            lines += [f"**{row.label}**: not run (no results file: {', '.join(row.sources) or '–'}).", ""]
            continue
        scores = _test_scores(record["document"])
        targets = [t for t in record["document"].get("targets", []) if any(t in s for s in scores.values())]
        lines.append(f"**{row.label}** (from `{record['source']}`; test R² in %, accuracy for categorical targets)")
        lines.append("")
        lines.append("| method | " + " | ".join(TARGET_TITLES.get(t, t) for t in targets) + " |")
        lines.append("|---|" + "---|" * len(targets))
        for method, values in scores.items():
            lines.append(
                f"| {METHOD_NAMES.get(method, method)} | " + " | ".join(_number(values.get(t)) for t in targets) + " |"
            )
        lines.append("")  # a table ends at a blank line: the next row's title would be read as one more table row
    return lines


def read_external(row: Row) -> dict | None:
    """The first results file of ``row.sources`` that exists and reads as a results document."""
    for source in row.sources:
        path = Path(source)
        if not path.is_absolute():
            path = REPO / path
        if path.is_file():
            try:
                document = json.loads(path.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(document, dict) and isinstance(document.get("results"), list):
                return {
                    "document": document,
                    "source": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
                }
    return None


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is below it; else the default's name and a note (the report
    names no machine's folders)."""
    try:
        return f"`{path.relative_to(Path.cwd())}/`"
    except ValueError:
        return f"`{DEFAULT_OUT}/rows/` by default (this run: an `--out` folder outside the working directory)"


def record_run(context: Context, started: float, outcome: Mapping[str, str], jobs: int) -> None:
    """Appends this invocation (wall time start to end, CPU time with its workers, rows run) to
    ``OUT/invocations.jsonl``.

    The report's one-run figure: with ``--jobs`` the rows overlap, so their wall times do not add up to the run's.
    """
    import resource

    if not any(what != "cached" for what in outcome.values()):
        return  # nothing ran: not a run worth timing
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    record = {
        "started": _utc(started),
        "finished": _utc(),
        "wall_seconds": round(time.time() - started, 1),
        "cpu_seconds": round(sum(u.ru_utime + u.ru_stime for u in usage), 1),
        "jobs": jobs,
        "cpus": os.cpu_count(),
        "rows_run": sum(what != "cached" for what in outcome.values()),
        "rows_failed": sum(what.startswith(("failed", "skipped")) for what in outcome.values()),
        "outcome": dict(outcome),
    }
    context.out.mkdir(parents=True, exist_ok=True)
    with open(context.out / "invocations.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")


def recorded_runs(context: Context) -> list[dict]:
    """The records of :func:`record_run`, oldest first (none when the file is missing or damaged)."""
    path = context.out / "invocations.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return []


def _run_line(title: str, run: dict) -> str:
    rows_run = f"{run['rows_run']} row" + ("" if run["rows_run"] == 1 else "s")
    return (
        f"{title} ({run['finished']}, `--jobs {run['jobs']}`, {run['cpus']} CPUs): {rows_run} run "
        f"({run['rows_failed']} failed) in **{run['wall_seconds'] / 60:.1f} min wall** from start to end, "
        f"{run['cpu_seconds'] / 60:.1f} CPU-min with its workers' start-up."
    )


def render_report(rows: Sequence[Row], context: Context, command: str = "python bench/reproduce.py") -> str:
    """The markdown report from the finished rows (the others: "not run yet")."""
    records: dict[str, dict | None] = {}
    for row in rows:
        if row.kind == "external":
            records[row.key] = read_external(row)
        elif row.same_as is None:
            records[row.key] = read_row(context, row)
    finished = [row for row in runnable(rows) if records.get(row.key) is not None]
    pending = [row for row in runnable(rows) if records.get(row.key) is None]
    cpu = sum(records[row.key]["cpu_seconds"] for row in finished) / 60
    wall = sum(records[row.key]["wall_seconds"] for row in finished) / 60
    estimate = sum(row.estimate_min for row in pending)
    lines = [
        "# Reproduction of the paper's tables on a CPU",
        "",
        f"Generated by `{command}` (the rows' results are cached in {_shown(context.rows_dir)}; rerun it to fill "
        'the rows marked "not run yet"). Values: test R² in % (accuracy in % for activation and init); **our value '
        "(the paper's)** where the project's PAPER.md gives the paper's number, else ours alone. CPU minutes are the "
        "process's own CPU time (one torch thread); wall minutes depend on the machine's load.",
        "",
        f"Finished rows: {len(finished)} of {len(runnable(rows))}, {cpu:.1f} CPU-min ({wall:.1f} min wall, summed "
        f"over the rows). Not run yet: {len(pending)} rows, estimated {estimate:.0f} CPU-min.",
        "",
    ]
    runs = recorded_runs(context)
    if runs:
        lines += [_run_line("Last run", runs[-1]), ""]
        largest = max(runs, key=lambda run: run["rows_run"])  # the time of a whole report, when only rows reran
        if largest["rows_run"] > runs[-1]["rows_run"]:
            lines += [_run_line("Largest run", largest), ""]
    lines += [
        "## Time per part",
        "",
        "| part | rows finished | CPU min | estimate for the rest (CPU min) |",
        "|---|---|---|---|",
    ]
    by_section: dict[str, list[Row]] = {}
    for row in rows:
        by_section.setdefault(row.section, []).append(row)
    for name, section_rows in by_section.items():
        run_rows_ = runnable(section_rows)
        done = [row for row in run_rows_ if records.get(row.key) is not None]
        rest = sum(row.estimate_min for row in run_rows_ if records.get(row.key) is None)
        minutes = sum(records[row.key]["cpu_seconds"] for row in done) / 60
        lines.append(f"| {SECTIONS[name].title} | {len(done)} of {len(run_rows_)} | {minutes:.1f} | {rest:.0f} |")
    lines.append("")
    for name, section_rows in by_section.items():
        section = SECTIONS[name]
        lines += [f"## {section.title}", "", section.text, ""]
        if name == "zoos":
            lines += ["| zoo | networks kept / configured | rows | CPU min (wall) |", "|---|---|---|---|"]
            for row in section_rows:
                record = records.get(row.key)
                if record is None:
                    lines.append(f"| {row.label} | not run yet | – | est. {row.estimate_min:g} |")
                else:
                    counts, version = record["counts"], record["data_version"]
                    kept = f"{counts['models']} / {counts['configured']}"
                    label = f"{row.label} (`{row.zoo}`, data version {version})"
                    minutes = (
                        _minutes(record)
                        if record.get("built", True)
                        else (f"found built, not timed (est. {row.estimate_min:g})")
                    )
                    lines.append(f"| {label} | {kept} | {counts['rows']} | {minutes} |")
        elif name in ("t5_seed", "t5_hyp"):
            lines += _baseline_table(section, section_rows, records)
            lines += ["", "Goals (vs s(W): by the bootstrap interval where there is one; vs the paper: level = within "
                      f"±{LEVEL_POINTS:g} point; our gain over s(W) against the paper's EcD − s(W): ahead when our "
                      "interval lies above it):", ""]  # fmt: skip
            lines += _goals(section, section_rows, records)
        elif name == "t7":
            lines += _ood_table(section_rows, records)
        elif name == "cnn":
            lines += _external_table(section_rows, records)
        else:
            lines += _train_table(section, section_rows, records)
        lines.append("")
    lines += _standing(rows, records)
    lines += DIFFERENCES
    return "\n".join(lines).rstrip() + "\n"


def _standing(rows: Sequence[Row], records: Mapping[str, dict | None]) -> list[str]:
    """Per finished training row: on how many targets it is ahead / level / behind s(W) and the paper's EcD row."""
    lines = [
        "## Ahead, level or behind (finished rows)",
        "",
        "vs s(W): by the 95 % bootstrap interval of hyperrep − s(W) on the same test rows; vs the paper's EcD row: "
        f"level = within ±{LEVEL_POINTS:g} point; gain: our hyperrep − s(W) (its interval) against the paper's EcD − "
        "s(W), each on its own zoo — the zoos differ, so this compares what the encoder adds over the weight "
        "statistics rather than the data sets.",
        "",
        "| row | vs s(W): ahead / level / behind | vs paper EcD: ahead / level / behind | gain over s(W) vs the "
        "paper's EcD gain: ahead / level / behind |",
        "|---|---|---|---|",
    ]
    for row in rows:
        record = records.get(row.key)
        if row.kind == "external" and record is not None:  # a CNN row: no paper numbers, intervals from its file
            scores, intervals = _test_scores(record["document"]), _intervals(record["document"])
            ours, sw = scores.get(HYPERREP, {}), scores.get("s(W)", {})
            versus_sw = [_verdict(ours.get(t), sw.get(t), intervals[t]) for t in CNN_TARGETS if t in intervals]
            judged = f"{len(versus_sw)} target" + ("" if len(versus_sw) == 1 else "s")
            lines.append(f"| CNN {row.label} ({judged}) | {verdict_counts(versus_sw)} | – | – |")
            continue
        if row.kind != "train" or row.same_as or record is None:
            continue
        section = SECTIONS[row.section]
        verdicts_by_target = record_verdicts(record, section.zoo, section.targets)
        # per comparison (vs s(W), vs paper EcD, gain vs the paper's gain)
        counts = [verdict_counts(verdicts) for verdicts in zip(*verdicts_by_target, strict=True)]
        lines.append(f"| {SECTIONS[row.section].title.split(',')[0]} {row.label} | " + " | ".join(counts) + " |")
    return [*lines, ""]


DIFFERENCES = [
    "## What differs from the paper's set-up, and why",
    "",
    "- **Our Tetris generator, data version 2** (`docs/tetris_data.md`): the paper does not publish its generator. "
    "TETRIS-SEED trains on 500 images with pixel noise σ 0.4 and 20 % wrong labels, so that the networks overfit "
    "measurably and the generalisation gap is a network's own (on version 1 it was sampling noise); TETRIS-HYP "
    "trains on 4000 clean images, so that the slow learning rates leave chance. The paper's filter keeps 2797 of "
    "3600 TETRIS-HYP networks (paper: 2900).",
    "- **Zoo sizes** are the paper's (1000 × 75 epochs; 3600 × 75 before filtering); the 70/15/15 split is by model.",
    "- **Encoder**: the paper's layout (2 blocks, 4 heads, latent 50) at half its width (d_model 128), trained for "
    "minutes on one CPU core instead of hours on a GPU; the ablation rows (Tables 1–3) train 5 epochs (AttW 2), "
    "the presets 6–20. The TETRIS-SEED preset adds our function term (γ 5: a linear head on z predicts each "
    "network's outputs on fixed random inputs, read off its weights; no data, no label), which the paper does not "
    "have, and with it widens the latent to 200 (wider than the network's 100 weights: z has to carry what the "
    "network computes) and trains 20 epochs; Table 1 shows the term on the ablation base.",
    "- **Symmetries**: besides the paper's permutation augmentation, our presets embed on the canonical form "
    "(TETRIS-SEED: neuron order and tanh signs fixed; TETRIS-HYP: neuron order only, its networks mix tanh and "
    "relu), so z is exactly invariant; sign flips are ours (the paper augments with permutations only).",
    "- **Probes** are the paper's (ridge with its α grid, α on validation; softmax for categorical targets), fitted "
    "on every training row; TETRIS-HYP rows are subsampled to 10,000 per split (whole models) for time.",
    "- **The paper's numbers** for the rows of Tables 1–3 and 7 other than those above are not transcribed in "
    "PAPER.md; those rows show ours alone.",
]


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------


def _list(rows: Sequence[Row]) -> str:
    lines = []
    for row in rows:
        what = f"= {row.same_as}" if row.same_as else _describe(row)
        lines.append(f"{row.key:20s} {row.section:8s} {row.label:30s} ~{row.estimate_min:4g} CPU-min  {what}")
    total = sum(row.estimate_min for row in runnable(rows))
    total_line = f"total: ~{total:.0f} CPU-min (as measured with --jobs 2 on 2 cores: 1 h 45 min wall in all)"
    return "\n".join([*lines, total_line])


def with_seed(rows: Sequence[Row], seed: int | None) -> list[Row]:
    """``rows`` with every training row trained with ``seed`` (None: unchanged).

    The seed joins the row's overrides, so it is part of the row's fingerprint: a cache of another seed is not
    mistaken for this one. Zoo builds, baselines and OOD rows are unchanged.
    """
    if seed is None:
        return list(rows)
    return [dataclasses.replace(r, overrides={**r.overrides, "seed": seed}) if r.kind == "train" else r for r in rows]


def main(argv: Sequence[str] | None = None, rows: Sequence[Row] | None = None) -> int:
    """Command line; ``rows`` replaces :func:`default_rows` (the tests' tiny rows)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"cache and run folder (default: ./{DEFAULT_OUT})")
    parser.add_argument("--zoo-dir", help="folder of the zoos (default: OUT/zoos); built there when missing")
    parser.add_argument("--rows", nargs="+", help="run only these rows (and the rows they need)")
    parser.add_argument("--force", action="store_true", help="rerun the selected rows even when cached")
    parser.add_argument("--jobs", type=int, default=1, help="rows run at once, each in a worker process")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--report", default=str(DEFAULT_REPORT), help="the markdown written at the end")
    parser.add_argument("--report-only", action="store_true", help="only regenerate the markdown")
    parser.add_argument("--no-report", action="store_true", help="do not write the markdown")
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    parser.add_argument("--progress", action="store_true", help="progress bars of the builds and trainings")
    parser.add_argument(
        "--seed",
        type=int,
        help="training seed of every training row (default: its preset's); for a seed spread, give it another "
        "--out (and --zoo-dir to reuse the zoos) and --report",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one row of --jobs; the rows it needs are finished
    arguments = parser.parse_args(argv)
    all_rows = with_seed(default_rows() if rows is None else rows, arguments.seed)
    if arguments.list:
        print(_list(all_rows))
        return 0
    if arguments.jobs < 1 or arguments.threads < 1:
        parser.error("--jobs and --threads must be at least 1")
    try:
        selected = select_rows(all_rows, arguments.rows)
    except ValueError as error:
        parser.error(str(error))
    out = Path(arguments.out).resolve()
    context = Context(out, Path(arguments.zoo_dir).resolve() if arguments.zoo_dir else out / "zoos",
                      threads=arguments.threads, progress=arguments.progress)  # fmt: skip
    if arguments.worker:  # a worker of --jobs: its row only (a failure's traceback goes to the log), no report
        run_row({row.key: row for row in all_rows}[arguments.worker], context)
        return 0
    if not arguments.report_only:

        def worker_command(row: Row) -> list[str]:
            command = [sys.executable, str(Path(__file__).resolve()), "--out", str(out), "--zoo-dir",
                       str(context.zoo_dir), "--threads", str(arguments.threads), "--worker", row.key]  # fmt: skip
            seed = [] if arguments.seed is None else ["--seed", str(arguments.seed)]
            return command + seed + (["--progress"] if arguments.progress else [])

        started = time.time()
        outcome = run_rows(selected, context, force=arguments.force, jobs=arguments.jobs,
                           worker_command=worker_command if rows is None else None)  # fmt: skip
        record_run(context, started, outcome, arguments.jobs)
        for key, what in outcome.items():
            print(f"[reproduce] {key}: {what}")
    if not arguments.no_report:
        report = Path(arguments.report)
        report.parent.mkdir(parents=True, exist_ok=True)
        from hyperrep_hf.atomic import write_text_atomic

        write_text_atomic(report, render_report(all_rows, context))
        print(f"wrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
