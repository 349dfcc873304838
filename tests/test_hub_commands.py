"""`hyperrep train` and `hyperrep evaluate` take Hub repo ids where they take folders (against the local Hub).

Each command runs in a fresh process with ``HF_ENDPOINT`` pointing at the local Hub of tests/hub_server.py, as a user
runs it after `hyperrep push`.
"""

import json

import pytest
from test_hub import hub_environment, local_hub, online, push_to, run_python  # noqa: F401  (fixtures)
from test_training import TINY_MODEL
from tiny_models import make_evaluated_model, make_zoo

from hyperrep_hf.zoo.recipes import BuildOptions

MODEL_REPO = "org/evaluated-from-the-hub"
ZOO_REPO = "org/zoos-for-commands"


@pytest.mark.slow
def test_train_and_evaluate_read_repo_ids(local_hub, tmp_path, online):  # noqa: F811  (fixtures of test_hub)
    zoo_dir = make_zoo(tmp_path / "zoos", "tetris_seed", BuildOptions(num_models=12, epochs=2, subset=120))
    model_dir = make_evaluated_model(tmp_path / "model", zoo_dir, tmp_path / "eval_local")
    push_to(local_hub, zoo_dir, ZOO_REPO)
    push_to(local_hub, model_dir, MODEL_REPO)
    environment = hub_environment(local_hub, tmp_path / "hf_home")

    run = tmp_path / "run"
    command = ["-m", "hyperrep_hf.cli", "train", "tetris_seed", "--zoo", f"{ZOO_REPO}:tetris_seed", "--epochs", "1"]
    trained = run_python(
        [*command, "--output-dir", str(run), *TINY_MODEL],
        environment,
        tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["zoo"] == f"{ZOO_REPO}:tetris_seed"
    assert list(run.rglob("model.safetensors")), "training saved no model"

    out = tmp_path / "eval"
    command = ["-m", "hyperrep_hf.cli", "evaluate", MODEL_REPO, "--zoo", f"{ZOO_REPO}:tetris_seed"]
    evaluated = run_python(
        [*command, "--out", str(out), "--baselines", "s(W)", "--quiet"],
        environment,
        tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == MODEL_REPO and ZOO_REPO in results["zoo"]
    assert {"hyperrep", "s(W)"} <= set(results["methods"]), results["methods"]
    info = json.loads((zoo_dir / "tetris_seed" / "zoo_info.json").read_text())
    assert sum(results["rows"].values()) == info["counts"]["rows"]  # exactly the pushed zoo's rows
    assert not (tmp_path / "model" / "eval" / "tetris_seed").exists()  # a repo id is read, nothing written into it
