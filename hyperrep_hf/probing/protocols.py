"""The peers' evaluation protocol on the Small CNN Zoo: Kendall τ of test accuracy on final checkpoints.

NFN, Neural Graphs, ScaleGMN and DNG report (``PAPER.md`` §7)::

    final checkpoints only (step == 86) ─► a fixed order of rows (the published split file: one column of row
    indices into weights.npy / metrics.csv, no header; else a seeded shuffle)
      ├─ second half ──────────────────────────────► test
      └─ first half, shuffled with seed 0, cut 80/20 ─► train / validation

and the Kendall τ between predicted and true test accuracy on the test half. :func:`evaluate_protocol` runs it for

- ``s(W)+MLP`` — Unterthiner et al.'s statistics (weights and biases: percentiles 0/25/50/75/100, mean, std) with
  a small MLP: the peers' StatNN baseline;
- ``s(W)+linear`` — the same statistics with this project's ridge probe;
- ``hyperrep+linear`` and ``hyperrep+MLP`` — the hyper-representation z (:func:`~hyperrep_hf.probing.evaluation.
  compute_embeddings`) with the ridge probe and with the same MLP.

The protocol's rows ignore the zoo's own 70/15/15 split: every final checkpoint of the zoo takes part. For a zoo
imported with :func:`hyperrep_hf.zoo.importers.import_small_cnn_zoo` the split file's indices are matched to the
``source_row`` column; for any other zoo (e.g. one built here) a seeded shuffle of the final checkpoints is used.
The two linear/MLP heads on z are saved into the model folder as probe heads of the zoo ``<zoo>-final``.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..atomic import write_json_atomic, write_text_atomic
from ..checks import say
from .baselines import unterthiner_statistics
from .probes import ProbeReport, fit_mlp_probes, fit_probes

PROTOCOLS = ("small-cnn-zoo",)
TARGET = "test_accuracy"
METHODS = ("s(W)+MLP", "s(W)+linear", "hyperrep+linear", "hyperrep+MLP")

PEER_RESULTS: dict[str, dict[str, str]] = {
    "StatNN (statistics + MLP)": {"CIFAR10-GS": "0.915", "SVHN-GS": "0.843"},
    "NFN (permutation-equivariant)": {"CIFAR10-GS": "0.922–0.934", "SVHN-GS": "0.856–0.931"},
    "Neural Graphs (GNN / transformer)": {"CIFAR10-GS": "0.930 / 0.935", "SVHN-GS": "0.863 / 0.872"},
    "DNG": {"CIFAR10-GS": "0.936", "SVHN-GS": "0.867"},
}
"""Kendall τ of test-accuracy prediction reported by the peers (Small CNN Zoo, final checkpoints, 50 % test)."""


@dataclass
class ProtocolRows:
    """The final checkpoints of a zoo, split the peers' way.

    Attributes:
        vectors: Split → (num_rows, num_parameters) float32 flat weights.
        targets: Split → (num_rows,) test accuracy.
        source_rows: Split → (num_rows,) the row's index in the source (``source_row``) or its model id.
        final_epoch: The epoch kept.
        num_final: Final checkpoints in the zoo.
        split_file: The split file used, or None (seeded shuffle).
        split_file_rows_skipped: Split-file indices that name no final checkpoint of the zoo: other steps (the
            peers' files list every row), or rows dropped at import for non-finite values.
    """

    vectors: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    source_rows: dict[str, np.ndarray]
    final_epoch: int
    num_final: int
    split_file: str | None
    split_file_rows_skipped: int


def read_split_file(path: str | os.PathLike) -> np.ndarray:
    """A split file of the peers: one column of non-negative row indices, no header.

    Raises:
        ValueError: Naming the line that is not a single integer, or a repeated index.
    """
    indices = []
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        text = line.strip().rstrip(",")
        if not text:
            continue
        try:
            value = float(text)
        except ValueError as error:
            raise ValueError(
                f"{path} line {number}: {line!r} is not a row index (expected one column of integers, no header)."
            ) from error
        if value != int(value) or value < 0:
            raise ValueError(f"{path} line {number}: {line!r} is not a non-negative integer row index.")
        indices.append(int(value))
    result = np.asarray(indices, dtype=np.int64)
    unique, counts = np.unique(result, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{path} lists row {int(unique[counts > 1][0])} more than once.")
    if result.size == 0:
        raise ValueError(f"{path} lists no row index.")
    return result


def load_final_checkpoints(zoo: str | os.PathLike) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray, int]:
    """Every final checkpoint of a zoo, whatever its split, without materialising the other epochs.

    Returns:
        (zoo_info, vectors (rows, num_parameters) float32, test accuracy (rows,), source rows (rows,), final epoch),
        rows ordered by source row (or model id when the zoo has no ``source_row`` column).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from ..zoo.folder import load_zoo, parse_zoo_argument
    from .evaluation import _weights_array

    source, config = parse_zoo_argument(zoo)
    dataset, info = load_zoo(source, config)
    final_epoch = int(info["epochs"])
    vectors, targets, keys = [], [], []
    for rows in dataset.values():
        table = rows.data.table if rows._indices is None else rows.flatten_indices().data.table
        table = table.filter(pc.equal(table.column("epoch"), pa.scalar(final_epoch, pa.int64())))
        key = "source_row" if "source_row" in table.column_names else "model_id"
        vectors.append(_weights_array(table.column("weights")))
        targets.append(table.column(TARGET).to_numpy(zero_copy_only=False).astype(np.float64))
        keys.append(table.column(key).to_numpy().astype(np.int64))
    order = np.argsort(np.concatenate(keys), kind="stable")
    return (
        info,
        np.concatenate(vectors)[order],
        np.concatenate(targets)[order],
        np.concatenate(keys)[order],
        final_epoch,
    )


def protocol_rows(
    vectors: np.ndarray,
    targets: np.ndarray,
    source_rows: np.ndarray,
    final_epoch: int,
    split_file: str | os.PathLike | None = None,
    seed: int = 0,
) -> ProtocolRows:
    """Splits final checkpoints the peers' way (module docstring): test = second half, train/validation 80/20.

    Args:
        vectors: (rows, num_parameters) final checkpoints.
        targets: (rows,) their test accuracy.
        source_rows: (rows,) their indices in the source, matched against the split file.
        final_epoch: Recorded in the result.
        split_file: The peers' split file; None: a shuffle of the rows seeded with ``seed``.
        seed: Seed of that shuffle (the train/validation shuffle always uses seed 0, as the peers do).
    """
    absent = 0
    if split_file is not None:
        listed = read_split_file(split_file)
        position = {int(row): index for index, row in enumerate(source_rows)}
        order = np.array([position[row] for row in listed if row in position], dtype=np.int64)
        absent = int(listed.size - order.size)
    else:
        order = np.random.default_rng(seed).permutation(len(source_rows))
    if order.size < 4:
        raise ValueError(f"Only {order.size} final checkpoints (epoch {final_epoch}) to split: need at least 4.")
    half = order.size // 2
    first, test = order[:half], order[half:]
    first = first[np.random.default_rng(0).permutation(first.size)]
    cut = int(0.8 * first.size)
    parts = {"train": first[:cut], "validation": first[cut:], "test": test}
    return ProtocolRows(
        vectors={split: vectors[rows] for split, rows in parts.items()},
        targets={split: targets[rows] for split, rows in parts.items()},
        source_rows={split: source_rows[rows] for split, rows in parts.items()},
        final_epoch=final_epoch,
        num_final=len(source_rows),
        split_file=None if split_file is None else str(split_file),
        split_file_rows_skipped=absent,
    )


def evaluate_protocol(
    model_dir: str | os.PathLike,
    zoo: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    protocol: str = "small-cnn-zoo",
    split_file: str | os.PathLike | None = None,
    seed: int = 0,
    batch_size: int = 1024,
    save_to_model: bool = True,
    progress: bool = True,
    mlp_options: dict | None = None,
    append_weight_statistics: bool | None = None,
) -> dict:
    """Runs the peers' protocol (module docstring) and writes ``protocol_results.json`` and ``.md`` into out_dir.

    Args:
        model_dir: Model folder (encoder + processor).
        zoo: ``ZOO_DIR[:CONFIG]``.
        out_dir: Where the results go.
        protocol: ``"small-cnn-zoo"``.
        split_file: The peers' split file (row indices of the source); None: a seeded shuffle.
        seed: Seed of that shuffle and of the MLPs.
        batch_size: Networks per encoder pass.
        save_to_model: Save the linear and MLP heads on z as probe heads of zoo ``<zoo>-final`` (not the default).
        progress: Print one line per method.
        mlp_options: Passed to :class:`~hyperrep_hf.probing.probes.MLPProbe`.
        append_weight_statistics: None: the model config's; True / False: "hyperrep" is z̄ ⊕ s(W) / z̄ alone (written
            into the model folder's config.json with the heads when ``save_to_model``).

    Returns:
        The results document.
    """
    from ..zoo.folder import parse_zoo_argument
    from .evaluation import _check_architecture, compute_embeddings, load_encoder, set_append_weight_statistics

    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}; known: {list(PROTOCOLS)}.")
    info, vectors, targets, source_rows, final_epoch = load_final_checkpoints(zoo)
    if split_file is not None and info.get("source", {}).get("format") != "small-cnn-zoo":
        raise ValueError(
            f"A split file indexes the rows of a Small CNN Zoo source; zoo {info['name']!r} was not imported from "
            "one (`hyperrep zoo import small-cnn-zoo`). Leave --split-file out to use a seeded shuffle."
        )
    rows = protocol_rows(vectors, targets, source_rows, final_epoch, split_file, seed)
    model, processor = load_encoder(model_dir, append_weight_statistics)
    zoo_name = parse_zoo_argument(zoo)[1] or info["name"]
    _check_architecture(processor, _ZooView(zoo_name, info))
    say(progress, f"[{zoo_name}] {_rows_text(rows)}")
    targets_by_split = {split: {TARGET: values} for split, values in rows.targets.items()}
    options = {"seed": seed, **(mlp_options or {})}
    statistics = {split: unterthiner_statistics(v, info["architecture"]) for split, v in rows.vectors.items()}
    started = time.perf_counter()
    embeddings = {split: compute_embeddings(model, processor, v, batch_size) for split, v in rows.vectors.items()}
    embedding_seconds = time.perf_counter() - started
    reports: dict[str, ProbeReport] = {}
    for method, features, mlp in (
        ("s(W)+MLP", statistics, True),
        ("s(W)+linear", statistics, False),
        ("hyperrep+linear", embeddings, False),
        ("hyperrep+MLP", embeddings, True),
    ):
        started = time.perf_counter()
        if mlp:
            reports[method] = fit_mlp_probes(features, targets_by_split, method=method, **options)
        else:
            reports[method] = fit_probes(features, targets_by_split, method=method)
        seconds = time.perf_counter() - started
        say(progress, f"[{zoo_name}] {method}: {_headline(reports[method])} ({seconds:.1f}s)")
    document = {
        "format_version": 1,
        "protocol": protocol,
        "model": str(model_dir),
        "zoo": {"source": str(zoo), "config": zoo_name, "architecture": info["architecture"]["name"]},
        "final_epoch": rows.final_epoch,
        "num_final_checkpoints": rows.num_final,
        "rows_per_split": {split: int(v.shape[0]) for split, v in rows.vectors.items()},
        "split_file": rows.split_file,
        "split_file_rows_skipped": rows.split_file_rows_skipped,
        "seed": seed,
        "embedding_seconds": round(embedding_seconds, 2),
        "results": [result.to_dict() for report in reports.values() for result in report.results],
        "peers": PEER_RESULTS,
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [
        write_json_atomic(out_dir / "protocol_results.json", document),
        write_text_atomic(out_dir / "protocol_results.md", render_protocol_markdown(document)),
    ]
    if save_to_model and Path(model_dir).is_dir():
        from .probe_heads import save_probe_heads

        heads = {
            TARGET: reports["hyperrep+linear"].probes[TARGET],
            f"{TARGET}@mlp": reports["hyperrep+MLP"].probes[TARGET],
        }
        results = reports["hyperrep+linear"].results + [
            _renamed(result, f"{TARGET}@mlp") for result in reports["hyperrep+MLP"].results
        ]
        from ..models.hyperrep.embeddings import representation_layout

        representation = representation_layout(model.config)  # the features compute_embeddings gave the heads
        if append_weight_statistics is not None:
            paths.append(set_append_weight_statistics(model_dir, append_weight_statistics))
        paths.append(
            save_probe_heads(
                model_dir, f"{zoo_name}-final", heads, results, make_default=False, representation=representation
            )
        )
    for path in paths:
        say(progress, f"wrote {path}")
    return document


@dataclass
class _ZooView:
    """What ``evaluation._check_architecture`` reads from a zoo."""

    name: str
    info: dict


def _renamed(result, target: str):
    from dataclasses import replace

    return replace(result, target=target)


def _headline(report: ProbeReport) -> str:
    values = {(r.split, r.metric): r.value for r in report.results if r.target == TARGET}
    return (
        f"test Kendall τ {_format(values.get(('test', 'kendall_tau')))}, test R² {_format(values.get(('test', 'r2')))}"
    )


def _format(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _rows_text(rows: ProtocolRows) -> str:
    text = f"{rows.num_final} final checkpoints (epoch {rows.final_epoch}); " + ", ".join(
        f"{split} {v.shape[0]}" for split, v in rows.vectors.items()
    )
    if rows.split_file:
        skipped = rows.split_file_rows_skipped
        text += f"; split file {rows.split_file} ({skipped} listed rows skipped: not final checkpoints of the zoo)"
    return text


def render_protocol_markdown(document: dict) -> str:
    """``protocol_results.md``: our four methods, then the peers' published numbers."""
    values = {
        (record["method"], record["split"], record["metric"]): record["value"]
        for record in document["results"]
        if record["target"] == TARGET
    }
    lines = [
        f"# Small CNN Zoo protocol — {document['zoo']['config']}",
        "",
        f"Final checkpoints (epoch {document['final_epoch']}): {document['num_final_checkpoints']}; rows "
        + ", ".join(f"{split} {count}" for split, count in document["rows_per_split"].items())
        + ". Split: "
        + (
            f"the split file `{document['split_file']}` ({document['split_file_rows_skipped']} listed rows skipped: "
            "other steps, or dropped at import)"
            if document["split_file"]
            else f"a shuffle seeded with {document['seed']} (no split file)"
        )
        + "; test = second half, train/validation = first half shuffled with seed 0, cut 80/20.",
        "",
        "| method | test Kendall τ | test R² | validation Kendall τ |",
        "|---|---|---|---|",
    ]
    for method in METHODS:
        lines.append(
            f"| {method} | {_format(values.get((method, 'test', 'kendall_tau')))} | "
            f"{_format(values.get((method, 'test', 'r2')))} | "
            f"{_format(values.get((method, 'validation', 'kendall_tau')))} |"
        )
    lines += [
        "",
        "Peers (Kendall τ, test accuracy, PAPER.md §7):",
        "",
        "| method | CIFAR10-GS | SVHN-GS |",
        "|---|---|---|",
    ]
    lines += [f"| {name} | {row['CIFAR10-GS']} | {row['SVHN-GS']} |" for name, row in document["peers"].items()]
    return "\n".join(lines) + "\n"
