"""The seed spread of the report's training rows: the same rows trained with two seeds, side by side.

    python bench/reproduce.py --out seed1 --zoo-dir reproduction/zoos --seed 1 --rows t2_attn t3_p --jobs 2
    python bench/seed_spread.py reproduction seed1 --out docs/results/seed_spread.md

Reads the two folders' cached rows (``OUT/rows/<key>.json``, as ``bench/reproduce.py`` writes them) and writes, per
table of the report, each training row's test scores under both seeds ("seed 0 / seed 1"), the largest change, its
verdicts against s(W) under each seed (by each run's bootstrap interval over the test networks), and whether the
table's best row per target is the same under both seeds. A row is compared only when both folders hold it finished
under the report's current configuration (the seed aside) and on the same zoo (equal s(W) scores); the others are
named at the end with the reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def _load_reproduce():
    if "reproduce" in sys.modules:
        return sys.modules["reproduce"]
    spec = importlib.util.spec_from_file_location("reproduce", BENCH / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


reproduce = _load_reproduce()
VERDICTS = ("ahead", "level", "behind")


def _seed_of(row, record: Mapping) -> int:
    """The training seed a cached row ran with: its ``--seed`` override, else its preset's."""
    seed = (record.get("row") or {}).get("overrides", {}).get("seed")
    if seed is not None:
        return seed
    return reproduce._preset_mapping(row.preset).get("seed", 0)


def _finished(row, folder: Path) -> tuple[dict | None, str]:
    """``folder``'s record of ``row`` when it is finished under the current configuration (any seed), else a reason."""
    record = reproduce._load_record(reproduce.Context(folder, folder / "zoos"), row.key)
    if record is None:
        return None, "not run"
    if record.get("status") != "done":
        return None, f"status {record.get('status')!r}"
    seed = (record.get("row") or {}).get("overrides", {}).get("seed")
    if record.get("fingerprint") != reproduce.with_seed([row], seed)[0].fingerprint():
        return None, "trained under another configuration than the report's"
    return record, ""


def pairs(rows: Sequence, first: Path, second: Path) -> tuple[list[tuple], list[str]]:
    """(row, its record in ``first``, in ``second``, the two seeds) for every training row both hold; reasons for the
    rest."""
    compared, left_out = [], []
    by_key = {row.key: row for row in reproduce.default_rows()}
    for row in rows:
        if row.kind != "train":
            continue
        source = by_key[row.same_as] if row.same_as else row  # "= Table 1 ED": that row's records, this row's label
        (a, why_a), (b, why_b) = _finished(source, first), _finished(source, second)
        if a is None or b is None:
            reasons = [f"{folder.name}: {why}" for folder, why in ((first, why_a), (second, why_b)) if why]
            left_out.append(f"{row.key} ({'; '.join(reasons)})")
        elif a["scores"].get("s(W)") != b["scores"].get("s(W)"):
            left_out.append(f"{row.key} (the two runs' s(W) scores differ: not the same zoo)")
        elif (seeds := (_seed_of(source, a), _seed_of(source, b)))[0] == seeds[1]:
            left_out.append(f"{row.key} (both runs used seed {seeds[0]})")
        else:
            compared.append((row, a, b, seeds))
    return compared, left_out


def _verdicts(record: Mapping, targets: Sequence[str]) -> list[str]:
    ours, sw = record["scores"].get(reproduce.HYPERREP, {}), record["scores"].get("s(W)", {})
    intervals = record.get("intervals") or {}
    return [reproduce._verdict(ours.get(t), sw.get(t), intervals.get(t)) for t in targets]


def _gain_verdicts(record: Mapping, targets: Sequence[str], zoo: str) -> list[str]:
    """Our gain over s(W) against the paper's EcD − s(W), per target (bench/reproduce.py's rule)."""
    ours, sw = record["scores"].get(reproduce.HYPERREP, {}), record["scores"].get("s(W)", {})
    intervals, paper_gain = record.get("intervals") or {}, reproduce._paper_gain(zoo)
    return [reproduce._gain_verdict(ours.get(t), sw.get(t), paper_gain.get(t), intervals.get(t)) for t in targets]


def _counts(verdicts: Sequence[str]) -> str:
    return " / ".join(str(verdicts.count(word)) for word in VERDICTS)


def _best(section_pairs: Sequence[tuple], targets: Sequence[str], which: int) -> dict[str, str]:
    """The label of the section's best row per target under the first (``which`` 1) or second (2) seed."""
    best = {}
    for target in targets:
        scored = [(p[which]["scores"][reproduce.HYPERREP].get(target), p[0].label) for p in section_pairs]
        scored = [(value, label) for value, label in scored if value is not None]
        if scored:
            best[target] = max(scored)[1]
    return best


def render(compared: Sequence[tuple], left_out: Sequence[str], command: str) -> str:
    titles = reproduce.TARGET_TITLES
    lines = [
        "# Seed spread of the report's training rows",
        "",
        f"Generated by `{command}`. Test R² in % (accuracy in % for activation and init) of z̄, the first run /",
        "the second; s(W) does not depend on the training seed (checked: equal in both runs). Verdicts against s(W):",
        "ahead / level / behind by each run's 95 % bootstrap interval over the test networks, which covers the draw",
        "of test networks, not the training seed. The second run is `bench/reproduce.py` with `--seed` on the rows",
        "below, reading the first run's zoos (`--zoo-dir`), e.g. `python bench/reproduce.py --out seed1 --zoo-dir",
        "reproduction/zoos --seed 1 --rows t1_ed t2_attn … --jobs 2`; CPU minutes are each row's training and",
        "evaluation, first run / second.",
        "",
    ]
    changes_all: list[float] = []
    for key, section in reproduce.SECTIONS.items():
        section_pairs = [p for p in compared if p[0].section == key]
        if not section_pairs:
            continue
        targets = section.targets
        seeds = {p[3] for p in section_pairs}
        seed_names = " / ".join(f"seed {s}" for s in next(iter(seeds))) if len(seeds) == 1 else "first run / second"
        lines += [f"## {section.title}", "", f"Cells: {seed_names}.", ""]
        header = " | ".join(titles[t] for t in targets)
        lines.append(f"| row | {header} | recon. R² | largest change | CPU min |")
        lines.append("|---" * (len(targets) + 4) + "|")
        changes_section: list[float] = []
        for row, a, b, _ in section_pairs:
            ours_a, ours_b = a["scores"][reproduce.HYPERREP], b["scores"][reproduce.HYPERREP]
            cells, changes = [], []
            for target in targets:
                x, y = ours_a.get(target), ours_b.get(target)
                cells.append(f"{reproduce._number(x)} / {reproduce._number(y)}")
                if x is not None and y is not None:
                    changes.append(abs(y - x))
            recon = " / ".join(reproduce._number(record.get("reconstruction_r2")) for record in (a, b))
            largest = reproduce._number(max(changes)) if changes else "–"
            label = f"{row.label} (= {row.same_as})" if row.same_as else row.label
            minutes = " / ".join(f"{record['cpu_seconds'] / 60:.1f}" for record in (a, b))
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {recon} | {largest} | {minutes} |")
            if not row.same_as:  # counted once, in its own table
                changes_section += changes
        changes_all += changes_section
        judged = [("Against s(W)", partial(_verdicts, targets=targets), section_pairs)]
        # rows the report sets beside the paper's EcD row (Table 1's EcD, the presets)
        with_paper = [p for p in section_pairs if any(t in p[0].paper for t in targets)]
        if with_paper:
            judged.append((
                "Our gain over s(W) against the paper's EcD − s(W)",
                partial(_gain_verdicts, targets=targets, zoo=section.zoo),
                with_paper,
            ))  # fmt: skip
        for title, verdicts_of, judged_pairs in judged:
            lines += ["", f"{title} (ahead / level / behind):", ""]
            lines += ["| row | first run | second run | targets whose verdict changed |", "|---|---|---|---|"]
            for row, a, b, _ in judged_pairs:
                va, vb = verdicts_of(a), verdicts_of(b)
                moved = [f"{titles[t]} ({x} → {y})" for t, x, y in zip(targets, va, vb, strict=True) if x != y]
                lines.append(f"| {row.label} | {_counts(va)} | {_counts(vb)} | {', '.join(moved) or 'none'} |")
        lines.append("")
        if changes_section:
            lines.append(
                f"Median change over the {len(changes_section)} cells "
                f"{statistics.median(changes_section):.1f} points, largest {max(changes_section):.1f}."
            )
        if len(section_pairs) > 1:
            first, second = _best(section_pairs, targets, 1), _best(section_pairs, targets, 2)
            same = [t for t in targets if t in first and first[t] == second.get(t)]
            differ = [f"{titles[t]}: {first[t]} → {second[t]}" for t in targets if t in first and t not in same]
            lines.append(
                f"The best row of the table is the same under both seeds on {len(same)} of {len(first)} targets"
                + (f" ({', '.join(titles[t] + ': ' + first[t] for t in same)})" if same else "")
                + (f"; it changes on {'; '.join(differ)}." if differ else ".")
            )
        lines.append("")
    if changes_all:
        rows_counted = sum(not p[0].same_as for p in compared)
        lines += [
            "## All compared rows",
            "",
            f"{rows_counted} rows, {len(changes_all)} cells: median change {statistics.median(changes_all):.1f} "
            f"points, largest {max(changes_all):.1f}.",
            "",
        ]
    if left_out:
        lines += ["Not compared: " + "; ".join(left_out) + ".", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="a bench/reproduce.py --out folder (e.g. reproduction)")
    parser.add_argument("second", type=Path, help="another, trained with another --seed")
    parser.add_argument("--rows", nargs="+", help="only these rows (default: every training row both folders hold)")
    parser.add_argument("--out", type=Path, help="write the markdown here (default: print it)")
    args = parser.parse_args(argv)
    for folder in (args.first, args.second):
        if not (folder / "rows").is_dir():
            parser.error(f"{folder} has no rows/ folder: give the --out folder of a bench/reproduce.py run")
    rows = reproduce.default_rows()
    if args.rows:
        known = {row.key for row in rows}
        unknown = [key for key in args.rows if key not in known]
        if unknown:
            parser.error(f"unknown rows {unknown}; bench/reproduce.py --list names them")
        rows = [row for row in rows if row.key in args.rows]
    compared, left_out = pairs(rows, args.first, args.second)
    if not compared:
        parser.error("no training row is finished in both folders with different seeds: " + "; ".join(left_out))
    shown = [args.first.name, args.second.name, *(["--rows", *args.rows] if args.rows else [])]
    command = "python bench/seed_spread.py " + " ".join(shown)  # folder names only: no machine's paths
    text = render(compared, left_out, command)
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
