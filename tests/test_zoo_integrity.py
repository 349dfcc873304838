"""A zoo folder is exactly what it claims: content-keyed loading, checksums, the build lock, multi-process builds.

Every test builds real tiny zoos (TETRIS-SEED, a few networks, a few epochs, 100 images per split).
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from hyperrep_hf.cli import main
from hyperrep_hf.zoo.folder import (
    ZooExistsError,
    ZooIntegrityError,
    ZooLockedError,
    _BuildLock,
    build_zoo,
    check_rows,
    load_zoo,
)
from hyperrep_hf.zoo.recipes import BuildOptions, ZooRecipe, load_recipe

RECIPE = load_recipe("tetris_seed")
REPO = Path(__file__).resolve().parents[1]


def _options(num_models=6, epochs=2, seed=0, chunk_size=None):
    return BuildOptions(num_models=num_models, epochs=epochs, subset=100, seed=seed, chunk_size=chunk_size)


def _build(out, **kwargs):
    overwrite = kwargs.pop("overwrite", False)
    on_epoch_end = kwargs.pop("on_epoch_end", None)
    return build_zoo(RECIPE, out, _options(**kwargs), overwrite=overwrite, progress=False, on_epoch_end=on_epoch_end)


def _files_rows(zoo_dir):
    """(split → (model_id, epoch, weights) rows) read straight from the Parquet files, bypassing every cache."""
    rows = {}
    for path in sorted(Path(zoo_dir).glob("*.parquet")):
        table = pq.read_table(path, columns=["model_id", "epoch", "weights"]).to_pydict()
        split = path.name.split("-")[0]
        rows.setdefault(split, []).extend(zip(table["model_id"], table["epoch"], table["weights"], strict=True))
    return rows


def _loaded_rows(dataset):
    return {
        split: list(zip(rows["model_id"], rows["epoch"], rows["weights"], strict=True))
        for split, rows in dataset.items()
    }


class _Stop(Exception):
    pass


def _stop_after(shard, epoch):
    def hook(report):
        if report.shard == shard and report.epoch == epoch:
            raise _Stop

    return hook


def _flip_bit(path, position, bit):
    data = bytearray(path.read_bytes())
    data[position] ^= 1 << bit
    path.write_bytes(bytes(data))


# A: the datasets cache must never serve another zoo's rows -------------------------------------------------------


def test_two_zoos_in_folders_with_the_same_base_name_load_their_own_rows(tmp_path):
    cache = tmp_path / "cache"  # one shared cache, as a user's ~/.cache is
    zoo_a = _build(tmp_path / "a" / "zoos", num_models=6)
    zoo_b = _build(tmp_path / "b" / "zoos", num_models=10, seed=1)
    for zoo_dir in (zoo_a, zoo_b, zoo_a):  # a again: its cache entry must still be its own
        dataset, info = load_zoo(zoo_dir.parent, "tetris_seed", cache_dir=str(cache))
        assert _loaded_rows(dataset) == _files_rows(zoo_dir)
        assert sum(len(rows) for rows in dataset.values()) == info["counts"]["rows"]
    # the defect this guards against: plain load_dataset keys the two folders alike and serves one zoo for both
    plain_a = datasets.load_dataset(str(zoo_a.parent), "tetris_seed", cache_dir=str(tmp_path / "plain"))
    plain_b = datasets.load_dataset(str(zoo_b.parent), "tetris_seed", cache_dir=str(tmp_path / "plain"))
    assert _loaded_rows(plain_b) == _loaded_rows(plain_a) != _files_rows(zoo_b)


def test_a_folder_rebuilt_with_overwrite_loads_the_new_rows(tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "zoos"
    first, _ = load_zoo(_build(out, seed=0).parent, "tetris_seed", cache_dir=str(cache))
    # the same counts, other weights: only a content key tells the two apart
    zoo_dir = _build(out, seed=3, overwrite=True)
    second, info = load_zoo(out, "tetris_seed", cache_dir=str(cache))
    assert _loaded_rows(second) == _files_rows(zoo_dir)
    assert _loaded_rows(second) != _loaded_rows(first)
    assert info["options"]["seed"] == 3
    # and a rebuild with other counts
    zoo_dir = _build(out, num_models=9, overwrite=True)
    third, info = load_zoo(out, "tetris_seed")  # the default cache (HF_HOME of the test session)
    assert _loaded_rows(third) == _files_rows(zoo_dir)
    assert sum(len(rows) for rows in third.values()) == info["counts"]["rows"] == 9 * 3


def test_rows_that_disagree_with_zoo_info_are_refused(tmp_path):
    small = _build(tmp_path / "a", num_models=6)
    large = _build(tmp_path / "b", num_models=10)
    wrong, _ = load_zoo(large.parent, "tetris_seed")
    info = json.loads((small / "zoo_info.json").read_text())
    with pytest.raises(ZooIntegrityError, match=re.escape("rows, zoo_info.json records")):
        check_rows(wrong, info, str(small))


def test_every_reader_goes_through_load_zoo():
    """train, evaluate, demo and the bench scripts read zoos only through load_zoo (which checks them)."""
    readers = [*REPO.glob("hyperrep_hf/**/*.py"), *REPO.glob("bench/*.py"), *REPO.glob("training/*.py")]
    for path in readers:
        text = path.read_text()
        if path.name in (
            "folder.py",
            "image_data.py",
            "bench_zoo_verify.py",
        ):  # image data sets; the unchecked baseline
            continue
        assert "load_dataset(" not in text, f"{path} calls load_dataset directly; use hyperrep_hf.load_zoo"
        assert "read_table(" not in text and "read_parquet(" not in text, f"{path} reads Parquet directly"


# B: fingerprints, checksums, damaged files ----------------------------------------------------------------------


def test_zoo_info_records_every_file_and_a_fingerprint(tmp_path):
    zoo_dir = _build(tmp_path, num_models=6)
    info = json.loads((zoo_dir / "zoo_info.json").read_text())
    assert sorted(f["name"] for f in info["files"]) == sorted(p.name for p in zoo_dir.glob("*.parquet"))
    assert sum(f["rows"] for f in info["files"]) == info["counts"]["rows"]
    assert len(info["fingerprint"]) == 64
    other = json.loads((_build(tmp_path / "other", num_models=6, seed=1) / "zoo_info.json").read_text())
    assert other["fingerprint"] != info["fingerprint"]


@pytest.mark.parametrize("seed", range(4))
def test_a_bit_flipped_anywhere_in_a_shard_is_named_on_load(tmp_path, seed):
    zoo_dir = _build(tmp_path, num_models=6)
    rng = random.Random(seed)
    target = rng.choice(sorted(zoo_dir.glob("*.parquet")))
    _flip_bit(target, rng.randrange(target.stat().st_size), rng.randrange(8))
    with pytest.raises(ZooIntegrityError, match=rf"{target.name} is damaged.*--overwrite"):
        load_zoo(tmp_path, "tetris_seed")


def test_truncated_and_foreign_and_missing_shards_are_named(tmp_path):
    zoo_dir = _build(tmp_path / "z", num_models=6)
    train = zoo_dir / "train-00000-of-00001.parquet"
    original = train.read_bytes()
    train.write_bytes(original[: len(original) // 2])
    with pytest.raises(ZooIntegrityError, match=re.escape("train-00000-of-00001.parquet is damaged or was replaced")):
        load_zoo(zoo_dir.parent, "tetris_seed")
    train.write_bytes(original)
    foreign = _build(tmp_path / "other", num_models=6, seed=2) / "test-00000-of-00001.parquet"
    shutil.copy(foreign, zoo_dir / "test-00000-of-00003.parquet")
    with pytest.raises(ZooIntegrityError, match=re.escape("does not list: test-00000-of-00003.parquet")):
        load_zoo(zoo_dir.parent, "tetris_seed")
    (zoo_dir / "test-00000-of-00003.parquet").unlink()
    (zoo_dir / "validation-00000-of-00001.parquet").unlink()
    with pytest.raises(ZooIntegrityError, match=r"lacks Parquet files .* validation-00000-of-00001\.parquet"):
        load_zoo(zoo_dir.parent, "tetris_seed")


def test_damaged_parquet_of_a_zoo_without_records_is_named(tmp_path):
    """A zoo_info.json from before the file records: the reader's own error is wrapped, naming the zoo."""
    zoo_dir = _build(tmp_path, num_models=6)
    info = json.loads((zoo_dir / "zoo_info.json").read_text())
    del info["files"], info["fingerprint"]
    (zoo_dir / "zoo_info.json").write_text(json.dumps(info))
    load_zoo(tmp_path, "tetris_seed")  # intact: loads (keyed by the fingerprint computed from the files)
    train = zoo_dir / "train-00000-of-00001.parquet"
    train.write_bytes(train.read_bytes()[:-100])
    with pytest.raises(ZooIntegrityError, match=r"zoo 'tetris_seed' in .*could not be read.*--overwrite"):
        load_zoo(tmp_path, "tetris_seed")


@pytest.mark.parametrize("damage", ["truncated", "not an object", "binary"])
def test_damaged_zoo_info_is_named(tmp_path, damage):
    zoo_dir = _build(tmp_path, num_models=6)
    path = zoo_dir / "zoo_info.json"
    text = path.read_text()
    path.write_bytes(
        {"truncated": text[: len(text) // 2].encode(), "not an object": b"[1, 2]", "binary": b"\xff\xfe\x00"}[damage]
    )
    with pytest.raises(ZooIntegrityError, match=r"zoo_info.json is damaged.*--overwrite"):
        load_zoo(tmp_path, "tetris_seed")
    # a rebuild finds it too, instead of a bare JSONDecodeError
    with pytest.raises(ZooIntegrityError, match=r"zoo_info.json is damaged"):
        _build(tmp_path, num_models=6)


def test_zoo_info_with_another_architecture_is_refused(tmp_path):
    zoo_dir = _build(tmp_path, num_models=6)
    info = json.loads((zoo_dir / "zoo_info.json").read_text())
    info["architecture"] = load_recipe("mnist_seed").network_spec().to_dict()
    (zoo_dir / "zoo_info.json").write_text(json.dumps(info))
    with pytest.raises(ZooIntegrityError, match=r"rows hold 100 weights per network, but .* has 2464 parameters"):
        load_zoo(tmp_path, "tetris_seed")


def test_missing_zoo_folder_says_no_zoo_at(tmp_path):
    for missing in (tmp_path / "nowhere", "./nowhere/zoos", "a/b/c"):
        with pytest.raises(FileNotFoundError, match=f"no zoo at {missing}"):
            load_zoo(missing, "tetris_seed")
    # a name that could be a Hub repo: offline in the tests, still "no zoo at", not a connection traceback
    with pytest.raises(FileNotFoundError, match="no zoo at someorg/somezoo"):
        load_zoo("someorg/somezoo", "tetris_seed")


def _interrupted(tmp_path, **kwargs):
    out = tmp_path / "zoos"
    with pytest.raises(_Stop):
        _build(out, on_epoch_end=_stop_after(0, 2), epochs=3, **kwargs)
    return out, out / "tetris_seed" / ".build" / "shard-00000"


@pytest.mark.parametrize("seed", range(3))
def test_a_damaged_resume_file_is_named_and_deleting_the_shard_recovers(tmp_path, seed):
    reference = _build(tmp_path / "reference", epochs=3)
    out, shard = _interrupted(tmp_path)
    rng = random.Random(seed)
    target = shard / rng.choice(["state.safetensors", "epoch-00001.safetensors", "epoch-00002.safetensors"])
    _flip_bit(target, rng.randrange(target.stat().st_size), rng.randrange(8))
    with pytest.raises(ZooIntegrityError, match=rf"resume file {target} is damaged.*Delete {shard}"):
        _build(out, epochs=3)
    assert not (out / "tetris_seed" / "zoo_info.json").exists()
    shutil.rmtree(shard)  # what the message says to do
    _build(out, epochs=3)
    assert _files_rows(out / "tetris_seed") == _files_rows(reference)


def test_a_shard_folder_of_another_build_is_refused(tmp_path):
    out, shard = _interrupted(tmp_path, chunk_size=3)
    with pytest.raises(ZooIntegrityError, match=rf"{shard} belongs to another build"):
        _build(out, epochs=3, chunk_size=6)  # chunk size is not part of the zoo's identity, so only the claim knows
    _build(out, epochs=3, chunk_size=3)  # the original command resumes


def test_a_parquet_shard_of_another_build_is_refused_by_the_build(tmp_path):
    other = _build(tmp_path / "other", seed=5)
    out, _ = _interrupted(tmp_path)
    shutil.copy(other / "train-00000-of-00001.parquet", out / "tetris_seed" / "train-00002-of-00004.parquet")
    with pytest.raises(ZooIntegrityError, match=re.escape("would not write: train-00002-of-00004.parquet")):
        _build(out, epochs=3)


# B: the build lock -------------------------------------------------------------------------------------------------


def test_a_held_lock_names_its_holder_and_nothing_is_written(tmp_path):
    holder = _BuildLock(tmp_path, "tetris_seed")
    holder.acquire()
    try:
        with pytest.raises(ZooLockedError, match=rf"being built by pid {os.getpid()} on host .* since 20"):
            _build(tmp_path)
        assert not (tmp_path / "tetris_seed").exists()
    finally:
        holder.release()
    _build(tmp_path)
    assert not (tmp_path / ".tetris_seed.lock").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".tetris_seed.lock").write_text(f"pid {dead.pid} on host here since 2020-01-01 00:00:00 UTC\n")
    _build(tmp_path)
    load_zoo(tmp_path, "tetris_seed")


def _cli_build(out, *extra, **popen):
    command = [sys.executable, "-m", "hyperrep_hf.cli", "zoo", "build", "tetris_seed", "--out", str(out)]
    command += ["--num-models", "20", "--epochs", "5", "--subset", "100", "--threads", "1", "--quiet", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.slow
def test_two_concurrent_builds_of_one_zoo(tmp_path):
    first = _cli_build(tmp_path)
    started = tmp_path / "tetris_seed" / ".build" / "shard-00000" / "epoch-00001.safetensors"
    deadline = time.monotonic() + 120
    while not started.is_file() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGSTOP)  # the first build is mid-way, holding the lock, however fast this machine is
    try:
        second = _cli_build(tmp_path)
        _, second_err = second.communicate(timeout=300)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, first_err = first.communicate(timeout=600)
    assert first.returncode == 0, first_err
    assert second.returncode == 2 and f"being built by pid {first.pid}" in second_err, second_err
    dataset, info = load_zoo(tmp_path, "tetris_seed")
    assert sum(len(rows) for rows in dataset.values()) == info["counts"]["rows"] == 20 * 6
    assert (tmp_path / "README.md").is_file() and not (tmp_path / "tetris_seed" / ".build").exists()


# B: bad options: a clear error, nothing written --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--threads", "0"], "--threads must be ≥ 1"),
        (["--num-models", "5000"], "--num-models 5000: recipe 'tetris_seed' prescribes only 1000 networks"),
        (["--num-models", "0"], "--num-models must be a positive integer"),
    ],
)
def test_bad_build_options_fail_before_writing(tmp_path, capsys, extra, message):
    out = tmp_path / "zoos"
    assert main(["zoo", "build", "tetris_seed", "--out", str(out), "--subset", "100", "--quiet", *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_out_pointing_at_a_file_is_refused(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["zoo", "build", "tetris_seed", "--out", str(target), "--num-models", "2", "--quiet"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert target.read_text() == "x"


# Issue 13: networks that do not learn are counted, per reason, in the summary and the card ---------------------


def _recipe(**fixed):
    data = yaml.safe_load((REPO / "zoos" / "tetris_seed.yaml").read_text()) | {"name": "tetris_bad"}
    data["fixed"] = data["fixed"] | fixed
    data["seeds"] = tuple(data["seeds"])
    return ZooRecipe(**data)


@pytest.mark.parametrize(
    ("fixed", "learned", "diverged", "at_chance"),
    [({"learning_rate": 1e-12}, 0, 0, 8), ({"learning_rate": 1e38, "optimizer": "sgd"}, 0, 8, 0)],
)
def test_a_recipe_that_does_not_learn_says_so(tmp_path, capsys, fixed, learned, diverged, at_chance):
    build_zoo(_recipe(**fixed), tmp_path, _options(num_models=8, epochs=3))
    said = capsys.readouterr().out
    info = json.loads((tmp_path / "tetris_bad" / "zoo_info.json").read_text())
    health = info["health"]
    assert (health["learned"], health["diverged"], health["at_chance"]) == (learned, diverged, at_chance)
    assert health["summary"] in said and "WARNING: no network of this zoo learned" in said
    card = (tmp_path / "README.md").read_text()
    assert health["summary"] in card and "no network of this zoo learned" in card


def test_health_counts_match_the_rows(tmp_path):
    zoo_dir = _build(tmp_path, num_models=12, epochs=4)
    info = json.loads((zoo_dir / "zoo_info.json").read_text())
    dataset, _ = load_zoo(tmp_path, "tetris_seed")
    best = {}
    for rows in dataset.values():
        for model, epoch, accuracy in zip(rows["model_id"], rows["epoch"], rows["test_accuracy"], strict=True):
            if epoch > 0:
                best[model] = max(best.get(model, 0.0), accuracy)
    threshold = info["health"]["chance_threshold"]
    assert info["health"]["at_chance"] == sum(value <= threshold for value in best.values())
    assert info["health"]["learned"] + info["health"]["at_chance"] == info["counts"]["models"]


# C: builds across processes ----------------------------------------------------------------------------------------


def _torchrun(out, *extra):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "hyperrep_hf.cli", "zoo", "build", "tetris_seed", "--out", str(out)]
    command += ["--num-models", "10", "--subset", "100", "--threads", "1", *extra]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def _same_folder(left, right):
    names = sorted(str(p.relative_to(left)) for p in left.rglob("*") if p.is_file())
    assert names == sorted(str(p.relative_to(right)) for p in right.rglob("*") if p.is_file())
    for name in names:
        assert (left / name).read_bytes() == (right / name).read_bytes(), name


@pytest.mark.slow
def test_a_two_process_build_equals_a_one_process_build(tmp_path):
    one = tmp_path / "one"
    build_zoo(RECIPE, one, BuildOptions(num_models=10, epochs=3, subset=100, chunk_size=5), progress=False)
    run = _torchrun(tmp_path / "two", "--epochs", "3")
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output
    assert "`--chunk-size 5` in one process builds the same zoo" in output
    _same_folder(one, tmp_path / "two")  # every byte: Parquet files, zoo_info.json (with their hashes), card


def _children(pid):
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
def test_a_killed_process_resumes_its_share(tmp_path):
    one = tmp_path / "one"
    build_zoo(RECIPE, one, BuildOptions(num_models=10, epochs=30, subset=100, chunk_size=5), progress=False)
    out = tmp_path / "two"
    run = _torchrun(out, "--epochs", "30")
    marker = out / "tetris_seed" / ".build" / "shard-00001" / "epoch-00005.safetensors"
    deadline = time.monotonic() + 300
    while not marker.is_file() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    workers = _children(run.pid)
    victims = [
        pid
        for pid in workers
        if "LOCAL_RANK=1" in Path(f"/proc/{pid}/environ").read_bytes().replace(b"\0", b"\n").decode(errors="replace")
    ]
    assert len(victims) == 1, workers
    os.kill(victims[0], signal.SIGKILL)
    output, _ = run.communicate(timeout=300)
    assert run.returncode != 0, output
    assert not (out / "tetris_seed" / "zoo_info.json").exists()  # incomplete until every share is done
    run = _torchrun(out, "--epochs", "30")
    output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output
    assert "shard 2/2: resuming at epoch" in output
    _same_folder(one, out)


def test_zoos_still_load_with_plain_load_dataset(tmp_path):
    """The folder stays a Hub dataset repo: load_dataset with a fresh cache gives the same rows as load_zoo."""
    _build(tmp_path / "zoos", num_models=6)
    plain = datasets.load_dataset(str(tmp_path / "zoos"), "tetris_seed", cache_dir=str(tmp_path / "cache"))
    checked, _ = load_zoo(tmp_path / "zoos", "tetris_seed")
    assert _loaded_rows(plain) == _loaded_rows(checked)
    assert torch.equal(
        plain["train"].with_format("torch")["weights"][:], checked["train"].with_format("torch")["weights"][:]
    )
    with pytest.raises(ZooExistsError):
        _build(tmp_path / "zoos", num_models=7)


def test_a_damaged_complete_zoo_is_named_by_build_and_rebuilt_by_the_advised_overwrite(tmp_path):
    zoo_dir = _build(tmp_path, num_models=6)
    target = zoo_dir / "train-00000-of-00001.parquet"
    original = target.read_bytes()
    _flip_bit(target, len(original) // 2, 3)
    with pytest.raises(ZooIntegrityError, match=r"--num-models 6 --epochs 2 --subset 100 --overwrite") as error:
        load_zoo(tmp_path, "tetris_seed")
    with pytest.raises(ZooIntegrityError, match=re.escape(f"{target.name} is damaged")):
        _build(tmp_path, num_models=6)  # not "already complete"
    assert "--overwrite" in str(error.value)
    _build(tmp_path, num_models=6, overwrite=True)
    assert target.read_bytes() == original  # the same build again, byte for byte
    assert sum(len(rows) for rows in _files_rows(zoo_dir).values()) == 6 * 3


def test_a_zoos_own_folder_is_refused_naming_its_parent_and_name(tmp_path):
    zoo_dir = _build(tmp_path / "zoos", num_models=6)
    with pytest.raises(FileNotFoundError, match=re.escape(f"--zoo {zoo_dir.parent}:tetris_seed")):
        load_zoo(zoo_dir)
    dataset, info = load_zoo(zoo_dir.parent, "tetris_seed")  # the advice works
    assert info["counts"]["rows"] == sum(split.num_rows for split in dataset.values())
