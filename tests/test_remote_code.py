"""A model folder loads with trust_remote_code=True in a Python where hyperrep_hf cannot be imported.

The user story, run in a fresh ``python -I``: tokenise networks, get z and the hyper-representation z̄, run every
probe head, run the pipeline — bit-identical to the same story with ``import hyperrep_hf``.
"""

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import make_evaluated_model, make_zoo

from hyperrep_hf import HyperRepConfig, HyperRepForPreTraining
from hyperrep_hf.hub.publish import remote_code_files

USER_STORY = Path(__file__).with_name("user_story.py")
ALLOWED_IMPORTS = {
    "__future__", "collections", "dataclasses", "importlib", "itertools", "json", "math", "numpy", "os",
    "safetensors", "sys", "torch", "transformers", "typing",
}  # fmt: skip


def run_user_story(source: str, networks: Path, out_dir: Path, mode: str, environment: dict) -> dict:
    """Runs tests/user_story.py in a fresh, isolated Python; returns its tensors and outputs."""
    result = subprocess.run(
        [sys.executable, "-I", str(USER_STORY), source, str(networks), str(out_dir), mode],
        cwd=out_dir.parent,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return {
        "tensors": load_file(out_dir / "tensors.safetensors"),
        **json.loads((out_dir / "outputs.json").read_text()),
    }


def offline_environment(hf_home: Path) -> dict:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(HF_HUB_OFFLINE="1", HF_HOME=str(hf_home), OMP_NUM_THREADS="1")
    return environment


def remote_and_library_stories(model_dir: Path, tmp_path: Path, seed: int) -> tuple[dict, dict]:
    """The user story on 4 random networks (seeded), once from the repo's remote code and once from the library."""
    networks = tmp_path / "networks.safetensors"
    save_file({"vectors": torch.randn(4, 100, generator=torch.Generator().manual_seed(seed)) * 0.3}, networks)
    environment = offline_environment(tmp_path / "hf_home")
    remote = run_user_story(str(model_dir), networks, tmp_path / "remote", "--remote-code", environment)
    library = run_user_story(str(model_dir), networks, tmp_path / "library", "--library", environment)
    return remote, library


def assert_same_story(remote: dict, library: dict) -> None:
    assert not remote["hyperrep_hf_imported"] and library["hyperrep_hf_imported"]
    for name, classes in (("remote", remote["classes"]), ("library", library["classes"])):
        modules = [classes["processor"], classes["encoder"], classes["pipeline"], *classes["probe_heads"]]
        expected = "transformers_modules" if name == "remote" else "hyperrep_hf"
        assert all(module.startswith(expected) for module in modules), (name, classes)
    assert remote["tensors"].keys() == library["tensors"].keys()
    assert any(key.startswith("probe/") for key in remote["tensors"])
    for key, value in library["tensors"].items():
        assert torch.equal(remote["tensors"][key], value), key
    assert remote["predictions"] == library["predictions"]


def copied_model_story(model_dir: Path, tmp_path: Path, seed: int) -> dict:
    """A copy of ``model_dir`` run both ways (:func:`remote_and_library_stories`), checked equal; the remote story."""
    model_dir = Path(shutil.copytree(model_dir, tmp_path / "model"))
    remote, library = remote_and_library_stories(model_dir, tmp_path, seed=seed)
    assert_same_story(remote, library)
    return remote


@pytest.fixture(scope="module")
def evaluated_model(tmp_path_factory):
    zoo_dir = make_zoo(tmp_path_factory.mktemp("zoo"))
    model_dir = make_evaluated_model(tmp_path_factory.mktemp("model"), zoo_dir, tmp_path_factory.mktemp("out"))
    networks = tmp_path_factory.mktemp("networks") / "networks.safetensors"
    vectors = torch.randn(5, 100, generator=torch.Generator().manual_seed(1)) * 0.3
    vectors[3:] *= 1000  # far outside the zoo: the statistics warning and clipping must travel with the remote code
    save_file({"vectors": vectors}, networks)
    return model_dir, networks


def test_remote_code_files_are_flat_and_self_contained():
    files = remote_code_files()
    assert {"configuration_hyperrep.py", "modeling_hyperrep.py", "processing_hyperrep.py", "pipelines.py"} <= set(
        files
    )
    assert "modeling_hyperrep_probe.py" in files
    for name, content in files.items():
        for node in ast.walk(ast.parse(content)):
            if isinstance(node, ast.Import):
                assert {alias.name.split(".")[0] for alias in node.names} <= ALLOWED_IMPORTS, name
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: a flat sibling that travels too
                    assert node.level == 1 and f"{node.module}.py" in files, (name, node.module)
                else:
                    assert node.module.split(".")[0] in ALLOWED_IMPORTS, (name, node.module)


def test_evaluated_folder_carries_auto_maps_and_the_pipeline(evaluated_model):
    model_dir, _ = evaluated_model
    config = json.loads((model_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_hyperrep.HyperRepModel"
    assert (
        config["custom_pipelines"]["network-property-prediction"]["impl"]
        == "pipelines.NetworkPropertyPredictionPipeline"
    )
    processor = json.loads((model_dir / "preprocessor_config.json").read_text())
    assert processor["auto_map"] == {"AutoFeatureExtractor": "processing_hyperrep.NeuronTokenProcessor"}
    index = json.loads((model_dir / "probes" / "index.json").read_text())
    for entry in index["probes"]:
        probe = json.loads((model_dir / entry["path"] / "config.json").read_text())
        assert probe["auto_map"]["AutoModel"] == "modeling_hyperrep_probe.HyperRepProbeModel"
        assert (model_dir / entry["path"] / "modeling_hyperrep_probe.py").is_file()
    for name, content in remote_code_files().items():
        assert (model_dir / name).read_bytes() == content, name


@pytest.mark.slow
def test_user_story_without_the_package_equals_the_library(evaluated_model, tmp_path):
    model_dir, networks = evaluated_model
    model_dir = Path(shutil.copytree(model_dir, tmp_path / "model"))
    for statistics_path in (model_dir / "probes").glob("*/statistics.json"):  # a narrow range: every value clipped
        statistics = json.loads(statistics_path.read_text())
        statistics["targets"] = {target: [0.0, 0.0] for target in statistics["targets"]}
        statistics_path.write_text(json.dumps(statistics))
    environment = offline_environment(tmp_path / "hf_home")
    remote = run_user_story(str(model_dir), networks, tmp_path / "remote", "--remote-code", environment)
    library = run_user_story(str(model_dir), networks, tmp_path / "library", "--library", environment)
    assert_same_story(remote, library)
    warned = [any("warning" in value for value in prediction.values()) for prediction in remote["predictions"]]
    assert warned == [False, False, False, True, True]  # statistics.json is read without hyperrep_hf too
    assert all("far outside" in value["warning"] for value in remote["predictions"][3].values())
    clipped = [value for prediction in remote["predictions"] for value in prediction.values() if "clipped" in value]
    assert clipped and all(value["value"] == 0.0 != value["unclipped_value"] for value in clipped)


@pytest.mark.slow
def test_canonical_model_without_the_package_equals_the_library(tmp_path_factory, tmp_path):
    """The canonical form (blended views, sign fixing) runs from the repo's processing code exactly as installed."""
    zoo_dir = make_zoo(tmp_path_factory.mktemp("zoo"))
    model_dir = make_evaluated_model(
        tmp_path_factory.mktemp("model"), zoo_dir, tmp_path_factory.mktemp("out"), canonical="tanh"
    )
    assert json.loads((model_dir / "preprocessor_config.json").read_text())["canonical"] is True
    remote, library = remote_and_library_stories(model_dir, tmp_path, seed=2)
    assert_same_story(remote, library)


def test_bare_encoder_loads_with_trust_remote_code_without_the_package(tmp_path):
    config = HyperRepConfig(d_model=16, num_attention_heads=2, intermediate_size=32, latent_dim=6, loss_type="ed")
    model = HyperRepForPreTraining(config).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokens = torch.randn(3, 9, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(tokens).embeddings
    save_file({"tokens": tokens, "embeddings": expected}, tmp_path / "expected.safetensors")
    loader = f"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hyperrep_hf":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
import torch
from safetensors.torch import load_file
from transformers import AutoModel
data = load_file({str(tmp_path / "expected.safetensors")!r})
encoder = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True)
assert type(encoder).__module__.startswith("transformers_modules"), type(encoder).__module__
assert torch.equal(encoder(data["tokens"]).embeddings, data["embeddings"])
print("remote code OK")
"""
    result = subprocess.run(
        [sys.executable, "-I", "-c", loader],
        env=offline_environment(tmp_path / "hf_home"),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_newer_model_format_is_refused_with_the_version(tmp_path):
    HyperRepConfig(d_model=16, num_attention_heads=2, intermediate_size=32, latent_dim=6).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config | {"hyperrep_format_version": 99}))
    with pytest.raises(ValueError, match=r"format version 99.*reads up to version 1"):
        HyperRepConfig.from_pretrained(tmp_path)
