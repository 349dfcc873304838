"""bench/reproduce.py's machinery: row selection, cache and resume, the parallel scheduler, the markdown (not the real
rows)."""

import dataclasses
import importlib.util
import json
import random
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce_under_test", REPO / "bench" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


def _context(reproduce, tmp_path):
    return reproduce.Context(tmp_path / "out", tmp_path / "zoos")


# ---------------------------------------------------------------------------------------------------------------
# Row selection
# ---------------------------------------------------------------------------------------------------------------


def test_default_rows_are_consistent(reproduce):
    from hyperrep_hf.probing.report import HYPERREP_METHOD

    assert reproduce.HYPERREP == HYPERREP_METHOD  # the name results.json gives z̄
    rows = reproduce.default_rows()
    keys = [row.key for row in rows]
    assert len(keys) == len(set(keys))
    by_key = {row.key: row for row in rows}
    for row in rows:
        assert row.section in reproduce.SECTIONS and row.kind in reproduce.RUNNERS
        assert all(need in by_key for need in row.requires)
        if row.same_as:
            assert by_key[row.same_as].same_as is None and by_key[row.same_as].kind == row.kind
    assert {"t1_ed", "t1_ec", "t1_ecd", "t1_ec+d"} <= set(keys)  # Table 1
    assert {"t2_ffn", "t2_attw", "t2_attw_t", "t2_attn", "t2_attn_t"} <= set(keys)  # Table 2
    assert {"seed_baselines", "hyp_baselines", "seed_preset", "hyp_preset", "ood_hyp_model"} <= set(keys)


def test_every_training_row_makes_a_valid_config(reproduce, tmp_path):
    from hyperrep_hf.training.trainer import make_train_config

    for row in reproduce.default_rows():
        if row.kind == "train" and not row.same_as:
            overrides = {"zoo": "z:tetris_seed", "output_dir": str(tmp_path / row.key), **dict(row.overrides)}
            config = make_train_config(reproduce._preset_mapping(row.preset), overrides)
            for name, value in row.overrides.items():
                assert getattr(config, name) == value, (row.key, name)


def test_select_rows_adds_what_a_row_needs_in_report_order(reproduce):
    rows = reproduce.default_rows()
    order = [row.key for row in rows]
    rng = random.Random(0)
    for _ in range(30):
        keys = rng.sample(order, rng.randint(1, 6))
        selected = reproduce.select_rows(rows, keys)
        chosen = [row.key for row in selected]
        assert set(keys) <= set(chosen)
        assert chosen == [key for key in order if key in chosen]  # the report's order, whatever was asked
        for row in selected:
            assert set(row.requires) <= set(chosen)
            if row.same_as:
                assert row.same_as in chosen
            elif row.kind in ("train", "baselines"):
                assert {f"zoo_{config}" for config in (row.zoo, *row.extra_zoos)} <= set(chosen)
    assert [row.key for row in reproduce.select_rows(rows, None)] == order
    with pytest.raises(ValueError, match=r"Unknown rows \['t9'\].*t1_ed"):
        reproduce.select_rows(rows, ["t1_ed", "t9"])


def test_a_rows_chain_is_its_estimate_and_its_longest_readers_chain(reproduce):
    rows = reproduce.select_rows(reproduce.default_rows(), None)
    chains = reproduce.critical_minutes(reproduce.runnable(rows))
    by_key = {row.key: row for row in rows}
    # The TETRIS-HYP zoo heads two chains: the preset trained on it (with TETRIS-SEED's networks) and that model's
    # OOD row, or the preset trained on it alone and that model's OOD row; its chain is the longer.
    expected = max(
        sum(by_key[key].estimate_min for key in ("zoo_tetris_hyp", "hyp_preset", "ood_hyp_preset")),
        sum(by_key[key].estimate_min for key in ("zoo_tetris_hyp", "hyp_alone", "ood_hyp_model")),
    )
    assert chains["zoo_tetris_hyp"] == pytest.approx(expected)
    for row in reproduce.runnable(rows):  # a row's chain is at least its own and any reader's plus its own
        for need in reproduce._needs(row, by_key):
            if need in chains:
                assert chains[need] >= chains[row.key] + by_key[need].estimate_min - 1e-9


_WORKER = """
import json, sys, time
log, path, fingerprint, seconds, code = sys.argv[1:]
with open(log, "a") as handle:
    handle.write(json.dumps({"row": path, "at": time.time(), "event": "start"}) + "\\n")
time.sleep(float(seconds))
if int(code) == 0:
    with open(path, "w") as handle:
        json.dump({"status": "done", "fingerprint": fingerprint, "cpu_seconds": 1.0, "wall_seconds": 1.0}, handle)
with open(log, "a") as handle:
    handle.write(json.dumps({"row": path, "at": time.time(), "event": "end"}) + "\\n")
sys.exit(int(code))
"""


@pytest.mark.parametrize("seed", range(3))
def test_parallel_rows_start_when_what_they_read_is_finished(reproduce, tmp_path, seed):
    """Random dependency graphs of stand-in worker processes: never more than `jobs` at once, no row before the rows
    it needs, a failed row's readers skipped, every other row done."""
    rng = random.Random(seed)
    context = _context(reproduce, tmp_path)
    context.rows_dir.mkdir(parents=True)
    script, log = tmp_path / "worker.py", tmp_path / "log.jsonl"
    script.write_text(_WORKER)
    rows = [reproduce.Row("zoo_a", "zoos", "A", "zoo", zoo="a"), reproduce.Row("zoo_b", "zoos", "B", "zoo", zoo="b")]
    for index in range(10):
        requires = tuple(rng.sample([row.key for row in rows if row.kind != "zoo"], k=min(index, rng.randint(0, 2))))
        rows.append(reproduce.Row(f"r{index}", "t1", f"R{index}", "fake", zoo=rng.choice("ab"), requires=requires,
                                  overrides={"n": index}, estimate_min=rng.uniform(0.5, 5)))  # fmt: skip
    failing = rows[rng.randrange(2, 7)].key

    def worker_command(row):
        path = reproduce.row_path(context, row.key)
        seconds = rng.uniform(0.05, 0.3)
        return [sys.executable, str(script), str(log), str(path), row.fingerprint(), f"{seconds}",
                "3" if row.key == failing else "0"]  # fmt: skip

    said = []
    outcome = reproduce.run_rows(rows, context, jobs=3, worker_command=worker_command, say=said.append)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    by_key = {row.key: row for row in rows}
    start = {Path(e["row"]).stem: e["at"] for e in events if e["event"] == "start"}
    end = {Path(e["row"]).stem: e["at"] for e in events if e["event"] == "end"}
    assert max(sum(1 for k in start if start[k] <= e["at"] < end[k]) for e in events) <= 3
    for key in start:
        assert all(end[need] <= start[key] for need in reproduce._needs(by_key[key], by_key)), key
    assert outcome[failing] == "failed: its worker exited with code 3 (its traceback is above)"
    skipped = {key for key, what in outcome.items() if what.startswith("skipped")}
    for key in skipped:  # skipped exactly when something it needs failed or was skipped
        assert set(reproduce._needs(by_key[key], by_key)) & (skipped | {failing}), key
    assert set(start) == set(outcome) - skipped
    assert all(outcome[key] == "done" for key in set(outcome) - skipped - {failing})
    assert any(line.startswith(f"[reproduce] {failing}: FAILED its worker exited with code 3") for line in said)


def test_a_worker_runs_only_its_row(reproduce, fake_runner, tmp_path):
    rows = [reproduce.Row("zoo_tetris_seed", "zoos", "Z", "fake"), *_fake_rows(reproduce, a=1, b=2)]
    out = tmp_path / "out"
    assert reproduce.main(["--out", str(out), "--worker", "b"], rows=rows) == 0
    assert fake_runner == ["b"] and not (tmp_path / "report.md").exists()
    assert [path.name for path in (out / "rows").iterdir()] == ["b.json"]


def test_intervals_take_r2_for_numbers_and_accuracy_for_classes(reproduce):
    def result(target, metric, difference, subset="all_epochs"):
        return {"target": target, "metric": metric, "subset": subset, "difference": difference,
                "low": difference - 0.1, "high": difference + 0.1, "significant": difference > 0.1}  # fmt: skip

    document = {
        "categorical_targets": ["init"],
        "final_checkpoints": {"baseline": "s(W)", "results": [
            result("epoch", "r2", 0.02), result("epoch", "kendall_tau", 0.5), result("epoch", "r2", 0.9, "final"),
            result("init", "accuracy", 0.05), result("init", "kendall_tau", 0.7),
        ]},
    }  # fmt: skip
    intervals = reproduce._intervals(document)
    assert intervals.keys() == {"epoch", "init"}
    assert intervals["epoch"]["difference"] == 2.0 and intervals["init"]["difference"] == 5.0
    assert intervals["init"]["low"] == pytest.approx(-5.0) and intervals["init"]["baseline"] == "s(W)"


def test_fingerprint_follows_the_configuration_only(reproduce):
    row = reproduce.Row("a", "t1", "A", "train", preset="tetris_seed", overrides={"epochs": 2})
    same = reproduce.Row("a", "t1", "renamed", "train", preset="tetris_seed", overrides={"epochs": 2}, note="n")
    other = reproduce.Row("a", "t1", "A", "train", preset="tetris_seed", overrides={"epochs": 3})
    assert row.fingerprint() == same.fingerprint() != other.fingerprint()
    pooled = reproduce.Row("a", "t1", "A", "train", preset="tetris_seed", overrides={"epochs": 2}, extra_zoos=("x",))
    assert pooled.fingerprint() not in (row.fingerprint(), other.fingerprint())
    assert any(row.extra_zoos for row in reproduce.default_rows())  # select_rows' test covers their zoo rows


def test_a_rows_extra_zoos_replace_its_presets(reproduce, tmp_path, monkeypatch):
    # A preset's extra_zoos name the user's folders (zoos_built:tetris_seed); the report trains on its own zoo folder,
    # with the extra zoos its row names (none, for a row without): they decide the result and the fingerprint.
    import hyperrep_hf.probing.evaluation as evaluation
    import hyperrep_hf.training.trainer as trainer

    preset = tmp_path / "p.yaml"
    preset.write_text("zoo: zoos_built:tetris_hyp\noutput_dir: runs/p\n")
    before = reproduce.Row("a", "t5_hyp", "A", "train", zoo="tetris_hyp", preset=str(preset)).fingerprint()
    preset.write_text("zoo: zoos_built:tetris_hyp\noutput_dir: runs/p\nextra_zoos: [zoos_built:tetris_seed]\n")
    pooled = reproduce.Row(
        "p", "t5_hyp", "P", "train", zoo="tetris_hyp", preset=str(preset), extra_zoos=("tetris_seed",)
    )
    alone = reproduce.Row("a", "t5_hyp", "A", "train", zoo="tetris_hyp", preset=str(preset))
    assert alone.fingerprint() == before  # the preset's own extra_zoos are replaced, so they do not count
    assert pooled.fingerprint() != alone.fingerprint()
    trained = []

    def fake_train(config):
        trained.append(config.extra_zoos)
        raise RuntimeError("stop after the configuration")

    monkeypatch.setattr(trainer, "train", fake_train)
    monkeypatch.setattr(evaluation, "evaluate_model", lambda *a, **k: None)
    context = reproduce.Context(tmp_path / "out", tmp_path / "zoos")
    for row in (pooled, alone):
        with pytest.raises(RuntimeError, match="stop after"):
            reproduce.run_train(row, context)
    assert trained == [[f"{tmp_path / 'zoos'}:tetris_seed"], None]
    rows = {row.key: row for row in reproduce.default_rows()}
    assert rows["hyp_preset"].extra_zoos == ("tetris_seed",) and not rows["hyp_alone"].extra_zoos
    assert reproduce._preset_mapping(rows["hyp_preset"].preset)["extra_zoos"] == ["zoos_built:tetris_seed"]


def test_a_seed_reaches_every_training_row_and_nothing_else(reproduce, tmp_path):
    from hyperrep_hf.training.trainer import make_train_config

    rows = reproduce.default_rows()
    seeded = reproduce.with_seed(rows, 7)
    assert reproduce.with_seed(rows, None) == rows
    for before, after in zip(rows, seeded, strict=True):
        if before.kind != "train":
            assert after == before
            continue
        assert after.overrides == {**before.overrides, "seed": 7} and after.fingerprint() != before.fingerprint()
        if after.same_as:  # an alias trains nothing
            continue
        overrides = {"zoo": "z:tetris_seed", "output_dir": str(tmp_path), **dict(after.overrides)}
        assert make_train_config(reproduce._preset_mapping(after.preset), overrides).seed == 7


# ---------------------------------------------------------------------------------------------------------------
# The cache and resume (a stand-in runner: the machinery, not the rows)
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def fake_runner(reproduce, monkeypatch):
    calls = []

    def run(row, context):
        calls.append(row.key)
        if row.overrides.get("fail"):
            raise RuntimeError("boom")
        value = float(row.overrides.get("value", 50.0))
        return {"scores": {reproduce.HYPERREP: {"epoch": value}, "s(W)": {"epoch": value - 10}}}

    monkeypatch.setitem(reproduce.RUNNERS, "fake", run)
    return calls


def _fake_rows(reproduce, **values):
    return [reproduce.Row(key, "t1", key.upper(), "fake", overrides={"value": value}) for key, value in values.items()]


def test_a_rerun_skips_finished_rows_and_reruns_changed_or_forced_ones(reproduce, fake_runner, tmp_path):
    context = _context(reproduce, tmp_path)
    rows = _fake_rows(reproduce, a=1, b=2, c=3)
    assert reproduce.run_rows(rows, context, say=lambda _: None) == {"a": "done", "b": "done", "c": "done"}
    assert fake_runner == ["a", "b", "c"]
    record = json.loads((context.rows_dir / "b.json").read_text())
    assert record["status"] == "done" and record["scores"][reproduce.HYPERREP]["epoch"] == 2
    assert {"cpu_seconds", "wall_seconds"} <= record.keys() and record["fingerprint"] == rows[1].fingerprint()

    assert set(reproduce.run_rows(rows, context, say=lambda _: None).values()) == {"cached"}
    assert fake_runner == ["a", "b", "c"]

    changed = [rows[0], _fake_rows(reproduce, b=20)[0], rows[2]]
    assert reproduce.run_rows(changed, context, say=lambda _: None)["b"] == "done"
    (context.rows_dir / "c.json").write_text("{ not json")  # a damaged cache entry is rerun
    assert reproduce.run_rows(changed, context, say=lambda _: None) == {"a": "cached", "b": "cached", "c": "done"}
    assert fake_runner == ["a", "b", "c", "b", "c"]
    reproduce.run_rows(changed, context, force=True, say=lambda _: None)
    assert fake_runner[-3:] == ["a", "b", "c"]


def test_a_row_reruns_when_a_row_it_reads_was_rerun(reproduce, fake_runner, tmp_path):
    context = _context(reproduce, tmp_path)
    model, reader, other = _fake_rows(reproduce, model=1, reader=2, other=3)
    reader = dataclasses.replace(reader, requires=("model",))
    rows = [model, reader, other]
    reproduce.run_rows(rows, context, say=lambda _: None)
    assert json.loads((context.rows_dir / "reader.json").read_text())["inputs"] == {
        "model": json.loads((context.rows_dir / "model.json").read_text())["run_id"]
    }
    assert set(reproduce.run_rows(rows, context, say=lambda _: None).values()) == {"cached"}
    reproduce.run_rows([model], context, force=True, say=lambda _: None)  # e.g. its preset was retrained
    assert reproduce.read_row(context, reader) is None and reproduce.read_row(context, other) is not None
    assert reproduce.run_rows(rows, context, say=lambda _: None) == {
        "model": "cached",
        "reader": "done",
        "other": "cached",
    }
    assert fake_runner == ["model", "reader", "other", "model", "reader"]
    # The model's configuration changes: it reruns, and so does its reader, in the same invocation.
    changed = [_fake_rows(reproduce, model=10)[0], reader, other]
    assert reproduce.run_rows(changed, context, say=lambda _: None) == {
        "model": "done",
        "reader": "done",
        "other": "cached",
    }
    assert fake_runner[-2:] == ["model", "reader"]
    assert reproduce.read_row(context, reader) is not None


def test_a_failing_row_is_reported_and_the_others_go_on(reproduce, fake_runner, tmp_path):
    context = _context(reproduce, tmp_path)
    rows = [
        reproduce.Row("bad", "t1", "Bad", "fake", overrides={"fail": True}),
        reproduce.Row("reader", "t1", "Reader", "fake", requires=("bad",)),
        *_fake_rows(reproduce, good=5),
    ]
    outcome = reproduce.run_rows(rows, context, say=lambda _: None)
    assert outcome["bad"].startswith("failed: RuntimeError: boom")
    assert outcome["reader"] == "skipped: needs bad" and outcome["good"] == "done"
    assert not (context.rows_dir / "bad.json").exists() and (context.rows_dir / "good.json").exists()


def test_main_selects_rows_and_regenerates_the_report(reproduce, fake_runner, tmp_path):
    rows = _fake_rows(reproduce, a=11, b=22)
    report = tmp_path / "report.md"
    common = ["--out", str(tmp_path / "out"), "--report", str(report)]
    assert reproduce.main([*common, "--rows", "b"], rows=rows) == 0
    assert fake_runner == ["b"]
    text = report.read_text()
    assert "| B |" in text and "22.0" in text
    assert "| A | value 11 | not run yet" in text
    assert "Finished rows: 1 of 2" in text
    run = json.loads((tmp_path / "out" / "invocations.jsonl").read_text())  # the one-run time beside the rows'
    assert run["rows_run"] == 1 and run["rows_failed"] == 0 and run["jobs"] == 1 and "wall_seconds" in run
    assert run["outcome"] == {"b": "done"}
    assert f"Last run ({run['finished']}, `--jobs 1`" in text and "1 row run (0 failed)" in text
    assert reproduce.main([*common, "--report-only"], rows=rows) == 0 and fake_runner == ["b"]
    assert reproduce.main([*common, "--rows", "b"], rows=rows) == 0 and fake_runner == ["b"]  # cached: no new run
    assert len((tmp_path / "out" / "invocations.jsonl").read_text().splitlines()) == 1
    with pytest.raises(SystemExit):
        reproduce.main([*common, "--rows", "nope"], rows=rows)


# ---------------------------------------------------------------------------------------------------------------
# The markdown
# ---------------------------------------------------------------------------------------------------------------


def _write_record(reproduce, context, row, **result):
    from hyperrep_hf.atomic import write_json_atomic

    record = {"status": "done", "fingerprint": row.fingerprint(), "cpu_seconds": 90.0, "wall_seconds": 180.0, **result}
    context.rows_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(context.rows_dir / f"{row.key}.json", record)


def test_report_shows_finished_rows_beside_the_paper_and_the_rest_as_not_run(reproduce, tmp_path):
    context = _context(reproduce, tmp_path)
    rows = [  # the CNN row pointed at a results file that does not exist (the repository ships one)
        dataclasses.replace(row, sources=(str(tmp_path / "missing.json"),)) if row.kind == "external" else row
        for row in reproduce.default_rows()
    ]
    by_key = {row.key: row for row in rows}
    targets = reproduce.SEED_TARGETS
    ours = dict(zip(targets, (98.0, 90.0, 70.0, 72.0, 60.0, 69.4, 90.0), strict=True))
    sw = dict(zip(targets, (97.0, 91.0, 50.0, 70.0, 61.0, 69.0, 80.0), strict=True))
    intervals = {
        "epoch": {"difference": 1.0, "low": 0.2, "high": 1.8, "baseline": "s(W)", "significant": True},
        "test_accuracy": {"difference": -1.0, "low": -1.9, "high": -0.1, "baseline": "s(W)", "significant": True},
        "generalization_gap": {"difference": 20.0, "low": -1.0, "high": 40.0, "baseline": "s(W)", "significant": 0},
    }
    _write_record(reproduce, context, by_key["seed_preset"], scores={reproduce.HYPERREP: ours, "s(W)": sw},
                  intervals=intervals)  # fmt: skip
    _write_record(reproduce, context, by_key["t1_ecd"], scores={reproduce.HYPERREP: ours}, reconstruction_r2=80.0)
    _write_record(reproduce, context, by_key["seed_baselines"], scores={"W": {"epoch": -3.0}, "s(W)": sw},
                  cpu_seconds_by_baseline={"W": 6.0, "s(W)": 12.0})  # fmt: skip
    text = reproduce.render_report(rows, context)
    ecd = next(line for line in text.splitlines() if line.startswith("| EcD |"))
    assert "98.0 (97.0)" in ecd and "90.0 (90.2)" in ecd and "80.0 (84.1)" in ecd and "1.5 (3.0)" in ecd
    ed = next(line for line in text.splitlines() if line.startswith("| ED |"))
    assert "not run yet" in ed and f"est. {by_key['t1_ed'].estimate_min:g}" in ed
    assert next(line for line in text.splitlines() if line.startswith("| AttN+t |")).count("not run yet") == 1
    assert "| W | -3.0 (55.4) |" in text and "| pca_rbf | – |" in text  # a baseline the row did not give
    goals = text[text.index("Goals (vs s(W)") :]
    cells = [line.strip("| ").split(" | ") for line in goals.splitlines() if line.startswith("| ")]
    rows_of = {parts[0]: parts for parts in cells}
    assert rows_of["Eph"][3] == "ahead" and rows_of["Acc"][3] == "behind" and rows_of["GGap"][3] == "level"
    assert rows_of["F1C0"][3] == "ahead"  # no interval: by ±1 point (72.0 vs 70.0)
    assert rows_of["F1C2"][5] == "level" and rows_of["F1C3"][5] == "ahead" and rows_of["F1C1"][5] == "behind"
    # our gain over s(W) against the paper's EcD − s(W) (epoch 97.0 − 96.4, accuracy 90.2 − 86.9, gap 81.9 − 81.0):
    # by our interval where there is one, else by ±1 point (F1 class 3: +10.0 against +11.4)
    assert rows_of["Eph"][6:] == ["+1.0 [0.2, 1.8]", "+0.6", "level"]
    assert rows_of["Acc"][6:] == ["-1.0 [-1.9, -0.1]", "+3.3", "behind"]
    assert rows_of["GGap"][7:] == ["+0.9", "level"] and rows_of["F1C3"][6:] == ["+10.0", "+11.4", "behind"]
    assert "Finished rows: 3 of" in text and "## What differs from the paper's set-up" in text
    standing = text[text.index("## Ahead, level or behind") : text.index("## What differs")]
    # vs s(W): epoch ahead, accuracy behind, gap level by their intervals; F1 0 / 3 ahead, 1 / 2 level by ±1 point
    assert "| TETRIS-SEED hyperrep (preset) | 3 / 3 / 1 | 2 / 3 / 2 | 0 / 2 / 5 |" in standing
    assert "| TETRIS-SEED EcD | 0 / 0 / 0 | 2 / 3 / 2 | 0 / 0 / 0 |" in standing  # no s(W) scores: no verdicts
    assert "seed_baselines" not in standing and "ED |" not in standing  # baselines and unfinished rows left out
    hyp = text[text.index("TETRIS-HYP, Table 5") :]
    assert "Goals: the preset row has not run yet." in hyp
    assert "not run (no results file" in text  # the CNN rows without a results file


def test_report_reads_an_external_results_file(reproduce, tmp_path):
    document = {
        "targets": ["test_accuracy", "activation"],
        "results": [
            {"split": "test", "metric": "r2", "value": 0.5, "method": "s(W)", "target": "test_accuracy"},
            {
                "split": "test",
                "metric": "accuracy",
                "value": 0.9,
                "method": reproduce.HYPERREP,
                "target": "activation",
            },
            {"split": "train", "metric": "r2", "value": 0.99, "method": "s(W)", "target": "test_accuracy"},
            {"split": "test", "metric": "r2", "value": 0.6, "method": reproduce.HYPERREP, "target": "test_accuracy"},
        ],
        "categorical_targets": ["activation"],
        "final_checkpoints": {
            "baseline": "s(W)",
            "results": [  # hyperrep − s(W) on all test rows, with its bootstrap interval: ahead
                {
                    "target": "test_accuracy",
                    "subset": "all_epochs",
                    "metric": "r2",
                    "difference": 0.1,
                    "low": 0.02,
                    "high": 0.2,
                    "significant": True,
                },
            ],
        },
    }
    source = tmp_path / "cnn.json"
    source.write_text(json.dumps(document))
    row = reproduce.Row("cnn", "cnn", "CNN", "external", sources=(str(tmp_path / "missing.json"), str(source)))
    second = dataclasses.replace(row, key="cnn2", label="CNN 2")
    text = reproduce.render_report([row, second], _context(reproduce, tmp_path))
    assert "| s(W) | 50.0 | – |" in text and "| hyperrep | 60.0 | 90.0 |" in text
    assert "| hyperrep | 60.0 | 90.0 |\n\n**CNN 2**" in text  # each table ends before the next title
    assert "| CNN CNN (1 target) | 1 / 0 / 0 | – |" in text  # the verdict vs s(W) comes from the file's interval
    source.write_text("[1, 2]")  # not a results document: "not run"
    assert "not run (no results file" in reproduce.render_report([row], _context(reproduce, tmp_path))


# ---------------------------------------------------------------------------------------------------------------
# The real runners on a tiny zoo (seconds)
# ---------------------------------------------------------------------------------------------------------------

TINY = {"d_model": 16, "num_attention_heads": 2, "intermediate_size": 16, "latent_dim": 4, "projection_dim": 4,
        "epochs": 1, "batch_size": 16, "eval_batch_size": 64, "epochs_to_use": [0, 2]}  # fmt: skip


@pytest.mark.slow
def test_tiny_rows_run_end_to_end_and_resume(reproduce, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    rows = [
        reproduce.Row(
            "zoo_tetris_seed", "zoos", "TETRIS-SEED", "zoo", overrides={"num_models": 8, "epochs": 2, "subset": 80}
        ),
        reproduce.Row("seed_baselines", "t5_seed", "baselines", "baselines", baselines=("W", "s(W)")),
        reproduce.Row("t1_ed", "t1", "ED", "train", preset="tetris_seed", overrides=TINY, baselines=("s(W)",)),
        reproduce.Row("t2_attn_t", "t2", "AttN+t", "train", same_as="t1_ed", note="= Table 1 ED"),
    ]
    report = tmp_path / "report.md"
    arguments = ["--out", str(tmp_path / "out"), "--report", str(report)]
    assert reproduce.main([*arguments, "--rows", "t2_attn_t"], rows=rows) == 0  # pulls in t1_ed and the zoo
    finished = sorted(path.stem for path in (tmp_path / "out" / "rows").glob("*.json"))
    assert finished == ["t1_ed", "zoo_tetris_seed"]
    record = json.loads((tmp_path / "out" / "rows" / "t1_ed.json").read_text())
    assert set(record["scores"]) == {reproduce.HYPERREP, "s(W)"} and "epoch" in record["scores"]["s(W)"]
    assert record["reconstruction_r2"] is not None and "cpu_seconds" in record  # recorded, not judged: bench/
    zoo = json.loads((tmp_path / "out" / "rows" / "zoo_tetris_seed.json").read_text())
    assert zoo["built"] and zoo["data_version"] == 2 and zoo["counts"]["models"] == 8
    text = report.read_text()
    assert "not run yet (est." in next(line for line in text.splitlines() if line.startswith("| W |"))
    second = record["finished"]
    assert reproduce.main(arguments, rows=rows) == 0  # the rest; t1_ed is not trained again
    assert json.loads((tmp_path / "out" / "rows" / "t1_ed.json").read_text())["finished"] == second
    baselines = json.loads((tmp_path / "out" / "rows" / "seed_baselines.json").read_text())
    assert set(baselines["scores"]) == {"W", "s(W)"}
    assert baselines["scores"]["s(W)"] == record["scores"]["s(W)"]  # the same probe on the same rows, two routes
    assert "Finished rows: 3 of 3" in report.read_text()


def test_report_keeps_the_time_of_the_largest_run_after_a_partial_rerun(reproduce, tmp_path):
    context = _context(reproduce, tmp_path)
    rows = reproduce.default_rows()
    runs = [  # a whole report, then one row rerun alone
        {"finished": "day 1", "jobs": 2, "cpus": 2, "rows_run": 25, "rows_failed": 0, "wall_seconds": 6240.0,
         "cpu_seconds": 11765.4},
        {"finished": "day 2", "jobs": 1, "cpus": 2, "rows_run": 1, "rows_failed": 0, "wall_seconds": 1656.0,
         "cpu_seconds": 996.0},
    ]  # fmt: skip
    context.out.mkdir(parents=True, exist_ok=True)
    (context.out / "invocations.jsonl").write_text(json.dumps(runs[0]) + "\n")
    alone = reproduce.render_report(rows, context)
    assert "Last run (day 1, `--jobs 2`, 2 CPUs): 25 rows run (0 failed) in **104.0 min wall**" in alone
    assert "Largest run" not in alone
    with open(context.out / "invocations.jsonl", "a") as handle:
        handle.write(json.dumps(runs[1]) + "\n")
    both = reproduce.render_report(rows, context)
    assert "Last run (day 2, `--jobs 1`, 2 CPUs): 1 row run (0 failed) in **27.6 min wall** from start" in both
    assert "Largest run (day 1, `--jobs 2`, 2 CPUs): 25 rows run (0 failed) in **104.0 min wall**" in both
