"""hyperrep_hf.atomic: the one way files and folders are written atomically."""

import json

import numpy as np
import pytest

from hyperrep_hf.atomic import atomic_path, json_default, temporary_sibling, write_json_atomic, write_text_atomic


@pytest.mark.parametrize("seed", range(5))
def test_atomic_path_replaces_on_success_and_keeps_the_old_file_on_failure(tmp_path, seed):
    rng = np.random.default_rng(seed)
    path = tmp_path / "file.bin"
    old, new = rng.bytes(int(rng.integers(0, 500))), rng.bytes(int(rng.integers(1, 500)))
    path.write_bytes(old)
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(path) as temporary:
            temporary.write_bytes(new[: len(new) // 2])
            raise RuntimeError("interrupted")
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]  # no temporary left behind
    with atomic_path(path) as temporary:
        assert temporary.parent == path.parent and temporary.name.startswith(".") and not temporary.exists()
        temporary.write_bytes(new)
        assert path.read_bytes() == old  # not visible before the block ends
    assert path.read_bytes() == new
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"]


def test_atomic_path_replaces_a_folder_and_clears_a_leftover_temporary(tmp_path):
    target = tmp_path / "checkpoint"
    (target / "old").mkdir(parents=True)
    temporary_sibling(target).mkdir()
    (temporary_sibling(target) / "stale").write_text("from an interrupted run")
    with atomic_path(target) as temporary:
        assert not temporary.exists()
        (temporary / "new").mkdir(parents=True)
    assert sorted(p.name for p in target.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_unique_temporaries_differ_and_plain_ones_agree(tmp_path):
    path = tmp_path / "cache.safetensors"
    assert temporary_sibling(path) == temporary_sibling(path)
    assert temporary_sibling(path, unique=True) != temporary_sibling(path, unique=True)


@pytest.mark.parametrize("seed", range(3))
def test_write_json_atomic_matches_json_dumps_and_converts_numpy_scalars(tmp_path, seed):
    rng = np.random.default_rng(seed)
    data = {f"k{i}": float(rng.normal()) for i in range(5)} | {"list": [int(v) for v in rng.integers(0, 9, 4)]}
    path = write_json_atomic(tmp_path / "a.json", data)
    assert path.read_text() == json.dumps(data, indent=2) + "\n"
    assert write_json_atomic(tmp_path / "b.json", data, trailing_newline=False).read_text() == json.dumps(
        data, indent=2
    )
    value = rng.normal()
    write_json_atomic(tmp_path / "c.json", {"x": np.float32(value), "n": np.int64(3)})
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": float(np.float32(value)), "n": 3}
    with pytest.raises(TypeError, match="not JSON serialisable"):
        json_default(object())
    assert write_text_atomic(tmp_path / "t.md", "# x\n").read_text() == "# x\n"
