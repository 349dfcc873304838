"""The seed spread of the report's training rows: the same rows trained with two or more seeds, side by side.

    python bench/reproduce.py --out seed1 --zoo-dir reproduction/zoos --seed 1 --rows t2_attn t3_p --jobs 2
    python bench/seed_spread.py reproduction seed1 [seed2 ...] --out docs/results/seed_spread.md

Reads the folders' cached rows (``OUT/rows/<key>.json``, as ``bench/reproduce.py`` writes them) and writes, per table
of the report, each training row's test scores under every seed ("seed 0 / seed 1 / …"), the largest change (the
range over the seeds), its verdicts against s(W) under each seed (by each run's bootstrap interval over the test
networks), and whether the table's best row per target is the same under every seed. A row is compared over the
folders that hold it finished under the report's current configuration (the seed aside), when the first folder and
at least one other do, on the same zoo (equal s(W) scores) and with different seeds; the others are named at the end
with the reason.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
from collections.abc import Mapping, Sequence
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


def _override_seed(record: Mapping) -> int | None:
    """The ``--seed`` a cached row was run with (None: its preset's)."""
    return (record.get("row") or {}).get("overrides", {}).get("seed")


def _seed_of(row, record: Mapping) -> int:
    """The training seed a cached row ran with: its ``--seed`` override, else its preset's."""
    seed = _override_seed(record)
    return reproduce._preset_mapping(row.preset).get("seed", 0) if seed is None else seed


def _finished(row, folder: Path) -> tuple[dict | None, str]:
    """``folder``'s record of ``row`` when it is finished under the current configuration (any seed), else a reason."""
    record = reproduce._load_record(reproduce.Context(folder, folder / "zoos"), row.key)
    if record is None:
        return None, "not run"
    if record.get("status") != "done":
        return None, f"status {record.get('status')!r}"
    if record.get("fingerprint") != reproduce.with_seed([row], _override_seed(record))[0].fingerprint():
        return None, "trained under another configuration than the report's"
    return record, ""


def runs(rows: Sequence, folders: Sequence[Path]) -> tuple[list[tuple], list[str]]:
    """(row, its records, their seeds) for every training row the first folder and at least one other hold finished
    (the records in the folders' order, folders without it skipped); reasons for the rest."""
    compared, left_out = [], []
    by_key = {row.key: row for row in reproduce.default_rows()}
    for row in rows:
        if row.kind != "train":
            continue
        source = by_key[row.same_as] if row.same_as else row  # "= Table 1 ED": that row's records, this row's label
        found = [(folder, *_finished(source, folder)) for folder in folders]
        records = [record for _, record, _ in found if record is not None]
        if found[0][1] is None or len(records) < 2:
            reasons = [f"{folder.name}: {why}" for folder, _, why in found if why]
            left_out.append(f"{row.key} ({'; '.join(reasons)})")
        elif any(record["scores"].get("s(W)") != records[0]["scores"].get("s(W)") for record in records):
            left_out.append(f"{row.key} (the runs' s(W) scores differ: not the same zoo)")
        elif len(set(seeds := tuple(_seed_of(source, record) for record in records))) < len(seeds):
            repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
            left_out.append(f"{row.key} (two runs used seed {', '.join(map(str, repeated))})")
        else:
            compared.append((row, records, seeds))
    return compared, left_out


def _best(section_runs: Sequence[tuple], targets: Sequence[str], seed: int) -> dict[str, str]:
    """The label of the section's best row per target under ``seed`` (which every row of ``section_runs`` ran)."""
    best = {}
    for target in targets:
        scored = [(p[1][p[2].index(seed)]["scores"][reproduce.HYPERREP].get(target), p[0].label) for p in section_runs]
        scored = [(value, label) for value, label in scored if value is not None]
        if scored:
            best[target] = max(scored)[1]
    return best


def _per_seed(records: Sequence[dict | None], value_of) -> str:
    """One value per seed column, "–" where the row has no run of that seed."""
    return " / ".join("–" if record is None else value_of(record) for record in records)


def render(compared: Sequence[tuple], left_out: Sequence[str], command: str) -> str:
    titles = reproduce.TARGET_TITLES
    lines = [
        "# Seed spread of the report's training rows",
        "",
        f"Generated by `{command}`. Test R² in % (accuracy in % for activation and init) of z̄, one value per",
        "seed, in the seeds' order; s(W) does not depend on the training seed (checked: equal in every run).",
        "Verdicts against s(W): ahead / level / behind by each run's 95 % bootstrap interval over the test networks,",
        "which covers the draw of test networks, not the training seed. The other runs are `bench/reproduce.py` with",
        "`--seed` on the rows below, reading the first run's zoos (`--zoo-dir`), e.g. `python bench/reproduce.py",
        "--out seed1 --zoo-dir reproduction/zoos --seed 1 --rows t1_ed t2_attn … --jobs 2`; the largest change is a",
        "row's largest range over its runs; CPU minutes are each row's training and evaluation, one value per run.",
        "",
    ]
    changes_all: list[float] = []
    for key, section in reproduce.SECTIONS.items():
        section_runs = [p for p in compared if p[0].section == key]
        if not section_runs:
            continue
        targets = section.targets
        seeds = sorted({seed for p in section_runs for seed in p[2]})  # the columns; a row may lack some
        lines += [f"## {section.title}", "", f"Cells: {' / '.join(f'seed {seed}' for seed in seeds)}.", ""]
        header = " | ".join(titles[t] for t in targets)
        lines.append(f"| row | {header} | recon. R² | largest change | CPU min |")
        lines.append("|---" * (len(targets) + 4) + "|")
        changes_section: list[float] = []
        for row, records, row_seeds in section_runs:
            by_seed = [records[row_seeds.index(seed)] if seed in row_seeds else None for seed in seeds]
            ours = [{} if record is None else record["scores"][reproduce.HYPERREP] for record in by_seed]
            cells, changes = [], []
            for target in targets:
                values = [scores.get(target) for scores in ours]  # None ("–") where the row has no run
                cells.append(" / ".join(reproduce._number(value) for value in values))
                present = [value for value in values if value is not None]
                if len(present) > 1:
                    changes.append(max(present) - min(present))
            recon = _per_seed(by_seed, lambda record: reproduce._number(record.get("reconstruction_r2")))
            largest = reproduce._number(max(changes)) if changes else "–"
            label = f"{row.label} (= {row.same_as})" if row.same_as else row.label
            minutes = _per_seed(by_seed, lambda record: f"{record['cpu_seconds'] / 60:.1f}")
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {recon} | {largest} | {minutes} |")
            if not row.same_as:  # counted once, in its own table
                changes_section += changes
        changes_all += changes_section
        judged = [("Against s(W)", 0, section_runs)]
        # rows the report sets beside the paper's EcD row (Table 1's EcD, the presets)
        with_paper = [p for p in section_runs if any(t in p[0].paper for t in targets)]
        if with_paper:
            judged.append(("Our gain over s(W) against the paper's EcD − s(W)", 2, with_paper))
        for title, which, judged_runs in judged:
            lines += ["", f"{title} (ahead / level / behind):", ""]
            columns = " | ".join(f"seed {seed}" for seed in seeds)
            lines += [f"| row | {columns} | targets whose verdict changed |", "|---" * (len(seeds) + 2) + "|"]
            for row, records, row_seeds in judged_runs:
                # record_verdicts per target: (vs s(W), vs the paper's EcD, our gain vs the paper's gain)
                ordered = [records[row_seeds.index(seed)] for seed in seeds if seed in row_seeds]  # the columns' order
                verdicts = [[v[which] for v in reproduce.record_verdicts(r, section.zoo, targets)] for r in ordered]
                moved = [
                    f"{titles[t]} ({' → '.join(run[i] for run in verdicts)})"
                    for i, t in enumerate(targets)
                    if len({run[i] for run in verdicts}) > 1
                ]
                verdicts_at = dict(zip([seed for seed in seeds if seed in row_seeds], verdicts, strict=True))
                counts = [
                    reproduce.verdict_counts(verdicts_at[seed]) if seed in verdicts_at else "–" for seed in seeds
                ]
                lines.append(f"| {row.label} | {' | '.join(counts)} | {', '.join(moved) or 'none'} |")
        lines.append("")
        if changes_section:
            lines.append(
                f"Median change over the {len(changes_section)} cells "
                f"{statistics.median(changes_section):.1f} points, largest {max(changes_section):.1f}."
            )
        common = [seed for seed in seeds if all(seed in p[2] for p in section_runs)]  # seeds every row ran
        if len(section_runs) > 1 and len(common) > 1:
            best = [_best(section_runs, targets, seed) for seed in common]
            same = [t for t in targets if t in best[0] and all(b.get(t) == best[0][t] for b in best)]
            differ = [
                f"{titles[t]}: {' → '.join(b[t] for b in best)}" for t in targets if t in best[0] and t not in same
            ]
            every = "both seeds" if len(common) == 2 else f"all {len(common)} seeds"
            lines.append(
                f"The best row of the table is the same under {every} on {len(same)} of {len(best[0])} targets"
                + (f" ({', '.join(titles[t] + ': ' + best[0][t] for t in same)})" if same else "")
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
    parser.add_argument("more", type=Path, nargs="*", help="more such folders, each with another --seed")
    parser.add_argument("--rows", nargs="+", help="only these rows (default: every training row the folders hold)")
    parser.add_argument("--out", type=Path, help="write the markdown here (default: print it)")
    args = parser.parse_args(argv)
    folders = [args.first, args.second, *args.more]
    for folder in folders:
        if not (folder / "rows").is_dir():
            parser.error(f"{folder} has no rows/ folder: give the --out folder of a bench/reproduce.py run")
    rows = reproduce.default_rows()
    if args.rows:
        known = {row.key for row in rows}
        unknown = [key for key in args.rows if key not in known]
        if unknown:
            parser.error(f"unknown rows {unknown}; bench/reproduce.py --list names them")
        rows = [row for row in rows if row.key in args.rows]
    compared, left_out = runs(rows, folders)
    if not compared:
        parser.error(
            "no training row is finished in the first folder and another with different seeds: " + "; ".join(left_out)
        )
    shown = [folder.name for folder in folders] + (["--rows", *args.rows] if args.rows else [])
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
