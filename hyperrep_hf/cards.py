"""Dataset and model cards, rendered from the Jinja2 templates in the repository's ``cards/`` folder."""

from __future__ import annotations

import statistics
from importlib import resources

import jinja2


def _template(name: str) -> jinja2.Template:
    text = resources.files("hyperrep_hf.card_templates").joinpath(name).read_text()
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True).from_string(text)


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


def render_dataset_card(infos: list[dict]) -> str:
    """The README.md of a zoo folder: YAML ``configs:`` for every zoo, then a section per zoo.

    Args:
        infos: The ``zoo_info.json`` of every zoo in the folder, each with ``final_test_accuracy`` (a list of the
            final-epoch test accuracies) and ``available_splits`` (the splits that have rows) added.
    """
    zoos = []
    for info in infos:
        recipe = info["recipe"]
        seeds = recipe["seeds"]
        zoos.append(
            info
            | {
                "accuracy": _accuracy_summary(info["final_test_accuracy"]),
                "fixed_text": ", ".join(f"{k} = {v}" for k, v in recipe["fixed"].items()) or "nothing",
                "grid_text": ", ".join(f"{k} ∈ {{{', '.join(map(str, v))}}}" for k, v in recipe["grid"].items())
                or "only the seed",
                "seeds_text": f"{seeds[0]}..{seeds[1]} for every configuration"
                if seeds
                else f"{recipe['random_seeds']} random seed(s) per configuration",
                "options_text": ", ".join(f"{k} = {v}" for k, v in info["options"].items() if v is not None),
                "data_version": recipe.get("data_version", 1),
                "num_filtered": sum(1 for entry in info["dropped"] if entry.get("filtered")),
                "num_diverged": sum(1 for entry in info["dropped"] if not entry.get("filtered")),
            }
        )
    licenses = sorted({_license_id(info["dataset"]["license"]) for info in infos}) or ["other"]
    return _template("dataset_card.md").render(
        zoos=zoos,
        licenses=licenses,
        pretty_name="hyperrep_hf model zoos: " + ", ".join(info["name"] for info in infos),
        size_category=_size_category(sum(info["counts"]["rows"] for info in infos)),
    )


def _license_id(text: str) -> str:
    """A Hub licence identifier for the card's metadata (the full text stays in each zoo's section)."""
    lowered = text.lower()
    for needle, identifier in (
        ("mit", "mit"),
        ("cc by-sa 3.0", "cc-by-sa-3.0"),
        ("cc0", "cc0-1.0"),
        ("bsd", "bsd-3-clause"),
        ("cc by 4.0", "cc-by-4.0"),
    ):
        if needle in lowered:
            return identifier
    return "other"
