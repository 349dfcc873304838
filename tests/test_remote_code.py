"""A saved model folder loads with trust_remote_code=True in a Python where hyperrep_hf cannot be imported."""

import ast
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import save_file

from hyperrep_hf import HyperRepConfig, HyperRepForPreTraining

ALLOWED_IMPORTS = {"torch", "numpy", "transformers", "math", "dataclasses", "itertools", "json", "typing"}

# Runs in `python -I` (no cwd, no PYTHONPATH, no user site); the editable install of hyperrep_hf still sits in
# site-packages, so a meta-path hook makes importing it fail, exactly as on a machine without the package.
LOADER = """
import importlib.abc, importlib.util, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "hyperrep_hf":
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining
folder, data = sys.argv[1], load_file(sys.argv[2])
assert "hyperrep_hf" not in sys.modules
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
encoder = AutoModel.from_pretrained(folder, trust_remote_code=True)
pretraining = AutoModelForPreTraining.from_pretrained(folder, trust_remote_code=True)
assert type(encoder).__module__.startswith("transformers_modules"), type(encoder).__module__
assert type(encoder).__name__ == "HyperRepModel" and type(pretraining).__name__ == "HyperRepForPreTraining"
assert torch.equal(encoder(data["tokens"]).embeddings, data["embeddings"])
assert torch.equal(pretraining(data["tokens"]).reconstruction, data["reconstruction"])
assert "hyperrep_hf" not in sys.modules
print("remote code OK", config.model_type)
"""


def test_saved_folder_carries_auto_map_and_flat_code(tmp_path):
    config = HyperRepConfig(d_model=16, num_attention_heads=2, intermediate_size=32, latent_dim=6, loss_type="ed")
    HyperRepForPreTraining(config).save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": "configuration_hyperrep.HyperRepConfig",
        "AutoModel": "modeling_hyperrep.HyperRepModel",
        "AutoModelForPreTraining": "modeling_hyperrep.HyperRepForPreTraining",
    }
    for name in ("configuration_hyperrep.py", "modeling_hyperrep.py"):
        tree = ast.parse((tmp_path / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert {alias.name.split(".")[0] for alias in node.names} <= ALLOWED_IMPORTS, name
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: a flat sibling only, never processing (another engineer's file)
                    assert node.level == 1 and node.module == "configuration_hyperrep", (name, node.module)
                else:
                    assert node.module.split(".")[0] in ALLOWED_IMPORTS, (name, node.module)


def test_loads_with_trust_remote_code_without_the_package(tmp_path):
    config = HyperRepConfig(d_model=16, num_attention_heads=2, intermediate_size=32, latent_dim=6, loss_type="ed")
    model = HyperRepForPreTraining(config).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tokens = torch.randn(3, 9, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output = model(tokens)
    expected = {"tokens": tokens, "embeddings": output.embeddings, "reconstruction": output.reconstruction}
    save_file(expected, tmp_path / "expected.safetensors")
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-I", "-c", LOADER, str(folder), str(tmp_path / "expected.safetensors")],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "remote code OK hyperrep" in result.stdout
