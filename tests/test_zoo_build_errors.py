"""A zoo build that runs out of memory, or finds another build's shard in its folder (issue 13's bad input).

Out of memory cannot be caused on a CPU test machine, so the population's forward pass raises
``torch.OutOfMemoryError`` the way CUDA does; everything around it (the message, the folder) is real.
"""

import dataclasses
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from hyperrep_hf.cli import main
from hyperrep_hf.zoo.folder import ZooIntegrityError, build_zoo
from hyperrep_hf.zoo.population import Population
from hyperrep_hf.zoo.recipes import BuildOptions, load_recipe

RECIPE = load_recipe("tetris_seed")
CUDA_MESSAGE = "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 139.81 GiB total capacity)"


def _options(seed=0, chunk_size=None, epochs=2):
    return BuildOptions(num_models=6, epochs=epochs, subset=100, seed=seed, chunk_size=chunk_size)


def _rows(zoo_dir):
    rows = {}
    for path in sorted(Path(zoo_dir).glob("*.parquet")):
        table = pq.read_table(path, columns=["model_id", "epoch", "weights"]).to_pydict()
        rows[path.name] = list(zip(table["model_id"], table["epoch"], table["weights"], strict=True))
    return rows


def _exhausted(*args, **kwargs):
    raise torch.OutOfMemoryError(CUDA_MESSAGE)


class _Stop(Exception):
    pass


def test_out_of_memory_names_a_smaller_chunk_size_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    out = tmp_path / "zoos"
    command = ["zoo", "build", "tetris_seed", "--out", str(out), "--num-models", "6", "--epochs", "2"]
    command += ["--subset", "100", "--threads", "1", "--quiet"]
    monkeypatch.setattr(Population, "_forward", _exhausted)
    assert main(command) == 1
    error = capsys.readouterr().err
    assert error.startswith("hyperrep: error: Out of memory evaluating 6 networks of 'tetris_mlp' at once on cpu")
    assert "`hyperrep zoo build … --chunk-size 3`" in error and "Tried to allocate 20.00 GiB" in error
    assert "Nothing was written: run the command again with `--chunk-size 3`" in error
    assert "Traceback" not in error
    assert not [path for path in out.rglob("*") if path.is_file()]  # no shard, no lock, no card
    monkeypatch.undo()
    assert main([*command, "--chunk-size", "3"]) == 0  # what the message says to do
    assert (out / "tetris_seed" / "zoo_info.json").is_file()


def test_out_of_memory_after_a_finished_shard_keeps_it_and_the_build_resumes(tmp_path, monkeypatch):
    reference = build_zoo(RECIPE, tmp_path / "reference", _options(chunk_size=3), progress=False)
    out = tmp_path / "zoos"
    forward = Population._forward
    state = {"full": False}

    def running_out(self, *args, **kwargs):
        if state["full"]:
            raise torch.OutOfMemoryError(CUDA_MESSAGE)
        return forward(self, *args, **kwargs)

    def fill_up(report):  # the memory runs out once the first shard is done
        state["full"] = state["full"] or (report.shard == 0 and report.epoch == report.epochs)

    monkeypatch.setattr(Population, "_forward", running_out)
    with pytest.raises(torch.OutOfMemoryError) as caught:
        build_zoo(RECIPE, out, _options(chunk_size=3), progress=False, on_epoch_end=fill_up)
    build_dir = out / "tetris_seed" / ".build"
    assert f"The trained epochs of 1 shard(s) stay in {build_dir}" in str(caught.value)
    assert "`--chunk-size 1 --overwrite`" in str(caught.value)
    assert (build_dir / "shard-00000" / "done.json").is_file()
    assert not (out / "tetris_seed" / "zoo_info.json").exists()
    monkeypatch.undo()
    build_zoo(RECIPE, out, _options(chunk_size=3), progress=False)  # the same command resumes
    assert _rows(out / "tetris_seed") == _rows(reference)


def test_out_of_memory_outside_a_population_still_names_the_chunk_size(tmp_path, monkeypatch):
    monkeypatch.setattr("hyperrep_hf.zoo.folder._data_tensors", _exhausted)  # moving the data to the device
    with pytest.raises(torch.OutOfMemoryError, match=r"Out of memory building 'tetris_seed'.*--chunk-size 3"):
        build_zoo(RECIPE, tmp_path, _options(), progress=False)
    assert not (tmp_path / "tetris_seed").exists()


def _interrupted(out, recipe, options, shard, epoch):
    def stop(report):
        if report.shard == shard and report.epoch == epoch:
            raise _Stop

    with pytest.raises(_Stop):
        build_zoo(recipe, out, options, progress=False, on_epoch_end=stop)
    return out / recipe.name / ".build"


@pytest.mark.parametrize("other", ["seed", "recipe"])
def test_a_shard_folder_of_another_seed_or_recipe_is_refused_naming_it(tmp_path, other):
    """Same shard index, same members: only the build (recipe or seed) differs, which the claim records."""
    options = _options(chunk_size=3, epochs=3)
    other_recipe = (
        dataclasses.replace(RECIPE, description="TETRIS-SEED, another recipe") if other == "recipe" else RECIPE
    )
    other_options = dataclasses.replace(options, seed=1) if other == "seed" else options
    foreign = _interrupted(tmp_path / "other", other_recipe, other_options, shard=1, epoch=1) / "shard-00001"
    build_dir = _interrupted(tmp_path / "zoos", RECIPE, options, shard=0, epoch=2)
    shutil.copytree(foreign, build_dir / "shard-00001")
    with pytest.raises(ZooIntegrityError, match=rf"{build_dir / 'shard-00001'} belongs to another build"):
        build_zoo(RECIPE, tmp_path / "zoos", options, progress=False)
    assert not (tmp_path / "zoos" / "tetris_seed" / "zoo_info.json").exists()
    shutil.rmtree(build_dir / "shard-00001")  # what the message says: that shard restarts
    build_zoo(RECIPE, tmp_path / "zoos", options, progress=False)
    assert _rows(tmp_path / "zoos" / "tetris_seed") == _rows(
        build_zoo(RECIPE, tmp_path / "ref", options, progress=False)
    )
