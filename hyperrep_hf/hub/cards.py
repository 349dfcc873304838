"""Dataset and model cards, rendered from the Jinja2 templates in the repository's ``cards/`` folder.

The metadata (YAML front matter) is built with ``huggingface_hub``'s card-data classes, so it is what the Hub
validates and reads: licences as SPDX ids, ``task_categories``, ``size_categories``, ``configs:`` of every zoo.
"""

from __future__ import annotations

import io
import math
import os
import statistics
from importlib import resources
from pathlib import Path

from ..atomic import write_bytes_atomic

ACCURACY_PLOT = "final_test_accuracy.png"
# The Hub's licence ids (SPDX, lower case) of the image data sets the zoos are trained on.
DATASET_LICENSES = {"tetris": "cc0-1.0", "digits": "cc-by-4.0", "mnist": "cc-by-sa-3.0", "fashion_mnist": "mit"}
# How the card names the data a zoo was trained on (hyperrep_hf.zoo.image_data.data_provenance's kinds).
DATA_KINDS = {
    "full": "the full data set",
    "subset": "a subset (not the paper's full data)",
    "generated": "generated",
    "bundled": "bundled with scikit-learn",
    "imported": "as the imported zoo records it",
}
TASK_CATEGORIES = ["tabular-regression", "tabular-classification"]
CITATION = """@inproceedings{schurholt2021hyperrepresentations,
  title     = {Self-Supervised Representation Learning on Neural Network Weights for Model Characteristic Prediction},
  author    = {Sch{\\"u}rholt, Konstantin and Kostadinov, Dimche and Borth, Damian},
  booktitle = {Advances in Neural Information Processing Systems},
  year      = {2021}
}"""


def text_histogram(values: list[float], bins: int = 10, low: float = 0.0, high: float = 1.0, width: int = 40) -> str:
    """A fixed-range histogram drawn with characters (readable in any Markdown viewer)."""
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, int((value - low) / (high - low) * bins)))] += 1
    top = max(counts) or 1
    lines = []
    for index, count in enumerate(counts):
        start = low + (high - low) * index / bins
        lines.append(
            f"{start:4.2f}–{start + (high - low) / bins:4.2f} {'█' * round(width * count / top):<{width}} {count}"
        )
    return "\n".join(lines)


def _accuracy_summary(values: list[float]) -> dict:
    if not values:
        return {"count": 0, "mean": "–", "std": "–", "min": "–", "median": "–", "max": "–", "histogram": "(none)"}
    return {
        "count": len(values),
        "mean": f"{statistics.fmean(values):.3f}",
        "std": f"{statistics.pstdev(values):.3f}",
        "min": f"{min(values):.3f}",
        "median": f"{statistics.median(values):.3f}",
        "max": f"{max(values):.3f}",
        "histogram": text_histogram(values),
    }


def _size_category(rows: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if rows < limit:
            return name
    return "1M<n<10M"


def write_accuracy_plot(path: str | os.PathLike, values: list[float], title: str) -> Path:
    """A histogram PNG of a zoo's final test accuracies (the card shows it)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axis = pyplot.subplots(figsize=(5, 3), dpi=100)
    axis.hist(values, bins=20, range=(0.0, 1.0), color="#4c72b0")
    axis.set_xlabel("final test accuracy")
    axis.set_ylabel("models")
    axis.set_title(f"{title}: {len(values)} models")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})  # no timestamp: same zoo, same bytes
    pyplot.close(figure)
    path = Path(path)
    if not path.is_file() or path.read_bytes() != buffer.getvalue():
        write_bytes_atomic(path, buffer.getvalue())
    return path


def render_dataset_card(infos: list[dict]) -> str:
    """The README.md of a zoo folder or dataset repo: metadata with ``configs:`` for every zoo, a section per zoo.

    Args:
        infos: The ``zoo_info.json`` of every zoo in the folder, each with ``final_test_accuracy`` (a list of the
            final-epoch test accuracies) and ``available_splits`` (the splits that have rows) added.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    from ..zoo.filter import drop_reasons
    from ..zoo.image_data import data_provenance

    zoos = []
    for info in infos:
        recipe = info["recipe"]
        seeds = recipe["seeds"]
        provenance = data_provenance(info)
        zoos.append(
            info
            | {
                "accuracy": _accuracy_summary(info["final_test_accuracy"]),
                "accuracy_plot": f"{info['name']}/{ACCURACY_PLOT}",
                "license_id": _license_id(info["dataset"]),
                "fixed_text": ", ".join(f"{k} = {v}" for k, v in recipe["fixed"].items()) or "nothing",
                "grid_text": (
                    ", ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in recipe["grid"].items())
                    or "only the seed"
                )
                + (
                    f" — {recipe['configurations']} of the grid's {math.prod(map(len, recipe['grid'].values()))} "
                    "points, a seeded choice"
                    if recipe.get("configurations")
                    else ""
                ),
                "seeds_text": f"{seeds[0]}..{seeds[1]} for every configuration"
                if seeds
                else f"{recipe['random_seeds']} random seed(s) per configuration",
                "options_text": ", ".join(f"{k} = {v}" for k, v in info["options"].items() if v is not None),
                "data_version": recipe.get("data_version", 1),
                "num_filtered": sum(1 for entry in info["dropped"] if entry.get("filtered")),
                "num_diverged": sum(1 for entry in info["dropped"] if not entry.get("filtered")),
                "drop_reasons": drop_reasons(info["dropped"], recipe.get("filter")),
                "data_kind": DATA_KINDS[provenance[0]],
                "data_provenance": provenance[1],
            }
        )
    licenses = sorted({zoo["license_id"] for zoo in zoos}) or ["other"]
    pretty_name = "hyperrep_hf model zoos: " + ", ".join(info["name"] for info in infos)
    card_data = DatasetCardData(
        license=licenses if len(licenses) > 1 else licenses[0],
        pretty_name=pretty_name,
        task_categories=TASK_CATEGORIES,
        size_categories=[_size_category(sum(info["counts"]["rows"] for info in infos))],
        tags=["model-zoo", "hyper-representations", "weight-space-learning", "hyperrep_hf"],
        configs=[
            {
                "config_name": zoo["name"],
                "data_files": [
                    {"split": split, "path": f"{zoo['name']}/{split}-*.parquet"} for split in zoo["available_splits"]
                ],
            }
            for zoo in zoos
        ],
    )
    template = resources.files("hyperrep_hf.card_templates").joinpath("dataset_card.md").read_text()
    card = DatasetCard.from_template(
        card_data, template_str=template, zoos=zoos, pretty_name=pretty_name, citation=CITATION
    )
    return str(card)


def _license_id(dataset: dict) -> str:
    """The Hub licence id (SPDX) of a zoo's image data set (its full licence text stays in the zoo's section)."""
    if dataset.get("name") in DATASET_LICENSES:
        return DATASET_LICENSES[dataset["name"]]
    lowered = dataset.get("license", "").lower()
    for needle, identifier in (
        ("cc by-sa 3.0", "cc-by-sa-3.0"),
        ("cc by 4.0", "cc-by-4.0"),
        ("cc0", "cc0-1.0"),
        ("mit", "mit"),
        ("bsd", "bsd-3-clause"),
    ):
        if lowered.startswith(needle) or f"({needle})" in lowered:
            return identifier
    return "other"
