"""Publishing to and pulling from a Hub, against the local Hub of tests/hub_server.py (loopback only).

Pushes run in this process (``endpoint=`` and ``token=`` given, offline mode lifted for the test); pulls run in
fresh processes with ``HF_ENDPOINT`` pointing at the local Hub, since HF libraries read it at import time.
"""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from hub_server import start_hub
from safetensors.torch import save_file
from test_remote_code import assert_same_story, run_user_story
from tiny_models import make_evaluated_model, make_zoo
from transformers import pipeline

from hyperrep_hf import HyperRepConfig, HyperRepForPreTraining, NeuronTokenProcessor
from hyperrep_hf.cli import main as cli_main
from hyperrep_hf.hub.publish import PushError, check_model_source, folder_kind, push
from hyperrep_hf.zoo.folder import _hub_info, load_zoo
from hyperrep_hf.zoo.recipes import BuildOptions

TOKEN = "hf_test_write_token"
MODEL_REPO = "org/tiny-hyperrep"
ZOO_REPO = "org/zoos"


@pytest.fixture(scope="module")
def local_hub(tmp_path_factory):
    hub, server = start_hub(tmp_path_factory.mktemp("hub"))
    yield hub
    server.shutdown()
    server.server_close()


@pytest.fixture
def online(monkeypatch):
    """This process may reach the local Hub (conftest sets offline mode for every other test)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)  # the local Hub has no Xet storage


@pytest.fixture(scope="module")
def zoo_dir(tmp_path_factory):
    return make_zoo(tmp_path_factory.mktemp("zoos"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, zoo_dir):
    folder = make_evaluated_model(tmp_path_factory.mktemp("model"), zoo_dir, tmp_path_factory.mktemp("out"))
    # A training run folder: its root is the final model; checkpoints/ holds accelerate's state, never published.
    state = folder / "checkpoints" / "step_1"
    (state / "training_state").mkdir(parents=True)
    (state / "training_state" / "optimizer.bin").write_bytes(b"pickled optimizer state")
    (state / "pretrained_model").mkdir()
    (state / "pretrained_model" / "config.json").write_text("{}")
    return folder


def push_to(hub, folder, repo_id, **options):
    return push(folder, repo_id, endpoint=hub.url, token=options.pop("token", TOKEN), progress=False, **options)


def hub_environment(hub, hf_home: Path, offline: bool = False) -> dict:
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    flag = "1" if offline else "0"
    environment.update(
        HF_ENDPOINT=hub.url,
        HF_HUB_DISABLE_XET="1",
        HF_TOKEN=TOKEN,
        HF_HOME=str(hf_home),
        HF_HUB_OFFLINE=flag,
        HF_DATASETS_OFFLINE=flag,
        OMP_NUM_THREADS="1",
    )
    return environment


def run_python(arguments: list[str], environment: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *arguments], env=environment, cwd=cwd, capture_output=True, text=True, timeout=300
    )


# ----------------------------------------------------------------------------------------------------------------
# Bad input: refused before anything is sent
# ----------------------------------------------------------------------------------------------------------------


def test_a_folder_that_is_neither_model_nor_zoo_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(PushError, match=r"neither a model folder .* nor a zoo folder .* it holds: notes.txt"):
        push(tmp_path, "org/x", endpoint="http://127.0.0.1:9", token=TOKEN)
    (tmp_path / "checkpoints" / "step_1").mkdir(parents=True)
    with pytest.raises(PushError, match=r"training run without its final model.*checkpoints/<step>/pretrained_model"):
        push(tmp_path, "org/x", endpoint="http://127.0.0.1:9", token=TOKEN)
    with pytest.raises(PushError, match="is not a folder"):
        push(tmp_path / "missing", "org/x", endpoint="http://127.0.0.1:9", token=TOKEN)


def test_a_model_folder_without_probes_and_card_names_both_and_the_command(tmp_path):
    processor = NeuronTokenProcessor.from_network({"0.weight": torch.zeros(5, 16), "2.weight": torch.zeros(4, 5)})
    config = HyperRepConfig(**processor.model_config_kwargs(), d_model=16, num_attention_heads=2, latent_dim=4)
    HyperRepForPreTraining(config).save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert folder_kind(tmp_path) == "model"
    with pytest.raises(PushError) as caught:
        push(tmp_path, "org/x", endpoint="http://127.0.0.1:9", token=TOKEN)
    message = str(caught.value)
    assert "probe heads (probes/index.json)" in message and "model card (README.md)" in message
    assert f"hyperrep evaluate {tmp_path}" in message
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(PushError, match=r"lacks model.safetensors.*hyperrep train"):
        push(tmp_path, "org/x", endpoint="http://127.0.0.1:9", token=TOKEN)


def test_another_librarys_model_is_named_when_pulled(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ValueError, match=r"type 'bert' \(library: unknown, architectures: \['BertModel'\]\)"):
        check_model_source(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "hyperrep", "hyperrep_format_version": 7}))
    with pytest.raises(ValueError, match="format version 7; this hyperrep_hf reads up to 1"):
        check_model_source(tmp_path)
    with pytest.raises(PushError, match="'bert' model, not a hyperrep_hf encoder"):
        (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
        push(tmp_path, "org/x", endpoint="http://127.0.0.1:9", token=TOKEN)


def test_dataset_card_licences_are_spdx_ids():
    from hyperrep_hf.hub.cards import _license_id
    from hyperrep_hf.zoo.image_data import LICENSES

    expected = {"tetris": "cc0-1.0", "digits": "cc-by-4.0", "mnist": "cc-by-sa-3.0", "fashion_mnist": "mit"}
    assert {name: _license_id({"name": name, "license": LICENSES[name]}) for name in LICENSES} == expected
    assert _license_id({"name": "svhn", "license": "CC BY-SA 3.0 (something, BSD code)"}) == "cc-by-sa-3.0"
    assert _license_id({"name": "cifar", "license": "unknown terms"}) == "other"


# ----------------------------------------------------------------------------------------------------------------
# Pushing: one commit, the right files, nothing on failure
# ----------------------------------------------------------------------------------------------------------------


def test_model_push_is_one_commit_without_training_state(local_hub, model_dir, online):
    result = push_to(local_hub, model_dir, "org/one-commit")
    repo = local_hub.repo("model", "org/one-commit")
    assert len(repo["commits"]) == 2  # the repo's creation, then the push
    files = set(local_hub.files("model", "org/one-commit"))
    assert not any(name.startswith("checkpoints/") for name in files)
    expected = {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", "probes/index.json"}
    expected |= {"pipelines.py", "processing_hyperrep.py", "modeling_hyperrep.py", "configuration_hyperrep.py"}
    expected |= {"eval/results.json"}
    assert expected <= files, expected - files
    assert result.commit_oid == repo["branches"]["main"]
    # The same folder with its checkpoints, on a branch: main is left alone.
    push_to(local_hub, model_dir, "org/one-commit", revision="with-checkpoints", include_checkpoints=True)
    assert not repo["private"]
    push_to(local_hub, model_dir, "org/private-one", private=True)
    assert local_hub.repo("model", "org/private-one")["private"]
    branch = set(local_hub.files("model", "org/one-commit", "with-checkpoints"))
    assert "checkpoints/step_1/training_state/optimizer.bin" in branch
    assert set(local_hub.files("model", "org/one-commit")) == files


def test_a_push_to_an_unreachable_hub_is_named_without_a_traceback(model_dir, online):
    endpoint = closed_endpoint()
    with pytest.raises(PushError, match=rf"Cannot reach the Hub at {endpoint} \(ConnectError.*nothing was published"):
        push(model_dir, "org/unreachable", endpoint=endpoint, token=TOKEN, progress=False)


def closed_endpoint() -> str:
    """A loopback address nothing listens on: a Hub that cannot be reached."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def point_at(monkeypatch, endpoint: str) -> None:
    """This process's huggingface_hub talks to ``endpoint`` (it read HF_ENDPOINT at import)."""
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", endpoint)
    template = f"{endpoint}/{{repo_id}}/resolve/{{revision}}/{{filename}}"
    monkeypatch.setattr(huggingface_hub.constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)


def test_a_name_that_is_no_folder_is_named_at_once_when_the_hub_cannot_be_reached(tmp_path, online, monkeypatch):
    # Without network huggingface_hub retries each request for half a minute; a mistyped folder is named at once
    # (only the cache is looked at), for models and zoos, with or without the zoo's config.
    endpoint = closed_endpoint()
    point_at(monkeypatch, endpoint)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"No model folder runs/typo \(in {tmp_path}\).*Hub at {endpoint}"):
        check_model_source("runs/typo")
    for name, config in (("zoos_built", "tetris_seed"), ("zoos/typo", None)):
        expected = rf"no zoo at {name}: no such folder \(in {tmp_path}\).*{endpoint}"
        with pytest.raises(FileNotFoundError, match=expected):
            load_zoo(name, config)


def test_a_cached_repo_is_read_when_the_hub_cannot_be_reached(local_hub, model_dir, zoo_dir, online, monkeypatch):
    push_to(local_hub, model_dir, "org/cached-model")
    push_to(local_hub, zoo_dir, "org/cached-zoo")
    point_at(monkeypatch, local_hub.url)
    config = check_model_source("org/cached-model")  # downloads config.json and zoo_info.json into the cache
    _, info = _hub_info("org/cached-zoo", "tetris_hyp")
    point_at(monkeypatch, closed_endpoint())
    assert check_model_source("org/cached-model") == config
    assert _hub_info("org/cached-zoo", "tetris_hyp", cache_only=True) == ("tetris_hyp", info)
    with pytest.raises(FileNotFoundError, match="nor is org/cached-zoo:tetris_seed in the Hub cache"):
        _hub_info("org/cached-zoo", "tetris_seed", cache_only=True)


@pytest.mark.parametrize("failure", ["server error", "token revoked mid-push"])
def test_a_failed_push_publishes_nothing(local_hub, model_dir, online, failure):
    repo_id = f"org/failing-{failure.split()[0]}"
    token = f"token-{failure.split()[0]}"
    push_to(local_hub, model_dir, repo_id, token=token)
    before = local_hub.repo("model", repo_id)["branches"]["main"]
    (model_dir / "eval" / "extra.json").write_text("{}")  # something new to publish
    try:
        if failure == "server error":
            local_hub.fail_commits = True
            match = r"HTTP 500.*Nothing was published"
        else:
            local_hub.revoke_after_upload = token
            (model_dir / "eval" / "extra.png").write_bytes(os.urandom(100))  # an LFS upload, then the revocation
            match = r"HTTP 401.*Nothing was published.*Check HF_TOKEN"
        with pytest.raises(PushError, match=match):
            push_to(local_hub, model_dir, repo_id, token=token)
    finally:
        local_hub.fail_commits, local_hub.revoke_after_upload = False, None
        for name in ("extra.json", "extra.png"):
            (model_dir / "eval" / name).unlink(missing_ok=True)
    assert local_hub.repo("model", repo_id)["branches"]["main"] == before
    assert "eval/extra.json" not in local_hub.files("model", repo_id)


def test_zoo_push_adds_a_config_and_keeps_the_others(local_hub, zoo_dir, tmp_path, online):
    push_to(local_hub, zoo_dir, "org/merged-zoos")
    second = make_zoo(tmp_path / "zoos", "tetris_seed", BuildOptions(num_models=10, epochs=1, subset=120))
    push_to(local_hub, second, "org/merged-zoos")
    files = local_hub.files("dataset", "org/merged-zoos")
    for zoo in ("tetris_hyp", "tetris_seed"):
        assert f"{zoo}/zoo_info.json" in files and f"{zoo}/final_test_accuracy.png" in files
        assert any(name.startswith(f"{zoo}/train-") for name in files)
    card = local_hub.read(files["README.md"]["sha256"]).decode()
    metadata = yaml.safe_load(card.split("---")[1])
    assert [config["config_name"] for config in metadata["configs"]] == ["tetris_hyp", "tetris_seed"]
    assert metadata["license"] == "cc0-1.0" and "tabular-regression" in metadata["task_categories"]
    assert "## `tetris_hyp`" in card and "## `tetris_seed`" in card
    # Re-pushing a zoo replaces its files (no stale shards) and leaves the other zoo's untouched.
    before = {name: entry for name, entry in files.items() if name.startswith("tetris_hyp/")}
    from huggingface_hub import HfApi

    stale = "tetris_seed/train-99999-of-99999.parquet"  # e.g. a shard of an earlier, larger build of the zoo
    HfApi(endpoint=local_hub.url, token=TOKEN).upload_file(
        path_or_fileobj=b"stale", path_in_repo=stale, repo_id="org/merged-zoos", repo_type="dataset"
    )
    push_to(local_hub, second, "org/merged-zoos")
    after = local_hub.files("dataset", "org/merged-zoos")
    assert stale not in after and set(after) == set(files)
    assert {name: entry for name, entry in after.items() if name.startswith("tetris_hyp/")} == before


def test_pushed_model_card_names_the_published_zoo_and_the_repo(local_hub, model_dir, zoo_dir, online):
    from huggingface_hub import ModelCard

    push_to(local_hub, zoo_dir, "org/card-zoos")
    push_to(local_hub, model_dir, "org/card-model")
    files = local_hub.files("model", "org/card-model")
    card = ModelCard(local_hub.read(files["README.md"]["sha256"]).decode())
    assert card.data.datasets == ["org/card-zoos"]
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "feature-extraction"
    assert card.data.license == "mit" and "hyperrep_hf" in card.data.tags
    results = card.data.eval_results
    assert results and {result.dataset_type for result in results} == {"org/card-zoos"}
    document = json.loads((model_dir / "eval" / "results.json").read_text())["evaluations"][0]
    expected = {
        (f"{r['target']} ({r['metric']})", round(float(r["value"]), 4))
        for r in document["results"]
        if r["method"] == "hyperrep" and r["split"] == "test" and r["value"] is not None
    }
    assert {(result.metric_name, result.metric_value) for result in results} == expected
    assert 'pipeline("network-property-prediction", model="org/card-model", trust_remote_code=True)' in card.text
    assert "Schürholt" in card.text and "@inproceedings{schurholt2021hyperrepresentations" in card.text


# ----------------------------------------------------------------------------------------------------------------
# Round trips: pull in fresh processes, with and without hyperrep_hf
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_model_round_trip_with_and_without_the_package(local_hub, model_dir, tmp_path, online, monkeypatch, capsys):
    # `hyperrep push` as a user runs it: endpoint and token from the environment (HF_ENDPOINT is read at import).
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", local_hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert cli_main(["push", str(model_dir), MODEL_REPO, "--quiet"]) == 0
    assert f"to model repo {MODEL_REPO}@main" in capsys.readouterr().out
    networks = tmp_path / "networks.safetensors"
    vectors = torch.randn(4, 100, generator=torch.Generator().manual_seed(2)) * 0.3
    save_file({"vectors": vectors}, networks)

    remote = run_user_story(
        MODEL_REPO, networks, tmp_path / "remote", "--remote-code", hub_environment(local_hub, tmp_path / "a")
    )
    library = run_user_story(
        MODEL_REPO, networks, tmp_path / "library", "--library", hub_environment(local_hub, tmp_path / "b")
    )
    assert_same_story(remote, library)
    # ... and both equal what this process computes from the local folder.
    local = pipeline("network-property-prediction", model=str(model_dir))
    assert torch.equal(library["tensors"]["z_bar"], local.embed(vectors))
    assert library["predictions"] == json.loads(json.dumps(local(vectors)))

    # hyperrep predict with the repo id, offline: the cache the library story warmed serves it; a cold one fails fast.
    network_file = tmp_path / "network.safetensors"
    weights = {"layers.1.weight": vectors[0, :80].reshape(5, 16), "layers.3.weight": vectors[0, 80:].reshape(4, 5)}
    save_file(weights, network_file)
    predicted = run_python(
        ["-m", "hyperrep_hf.cli", "predict", MODEL_REPO, str(network_file)],
        hub_environment(local_hub, tmp_path / "b", offline=True),
        tmp_path,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    expected = local(vectors[:1])[0]  # one network per forward pass, as `hyperrep predict` of one file
    assert json.loads(predicted.stdout)[0]["predictions"] == json.loads(json.dumps(expected))
    cold = run_python(
        ["-m", "hyperrep_hf.cli", "predict", MODEL_REPO, str(network_file)],
        hub_environment(local_hub, tmp_path / "cold", offline=True),
        tmp_path,
    )
    assert cold.returncode == 2
    assert f"{MODEL_REPO} is not a local folder and not in the Hub cache" in cold.stderr
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in cold.stderr


@pytest.mark.slow
def test_pulling_another_librarys_repo_names_what_was_found(local_hub, tmp_path, online):
    from huggingface_hub import HfApi

    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "bert", "architectures": ["BertModel"], "transformers_version": "5.0.0"})
    )
    api = HfApi(endpoint=local_hub.url, token=TOKEN)
    api.create_repo("org/bert")
    api.upload_folder(folder_path=folder, repo_id="org/bert")
    network_file = tmp_path / "network.safetensors"
    save_file({"layers.1.weight": torch.zeros(5, 16), "layers.3.weight": torch.zeros(4, 5)}, network_file)
    result = run_python(
        ["-m", "hyperrep_hf.cli", "predict", "org/bert", str(network_file)],
        hub_environment(local_hub, tmp_path / "h"),
        tmp_path,
    )
    assert result.returncode == 2
    assert "org/bert holds a model of type 'bert' (library: transformers" in result.stderr


ZOO_CHECK = """
import json, sys
import datasets
from hyperrep_hf.probing.evaluation import load_zoo_arrays
from hyperrep_hf.training.trainer import load_zoo_tensors, make_train_config
from hyperrep_hf.zoo.folder import load_zoo

repo, out = sys.argv[1], sys.argv[2]
report = {"configs": sorted(datasets.get_dataset_config_names(repo))}
for config in report["configs"]:
    loaded = datasets.load_dataset(repo, config)
    streamed = datasets.load_dataset(repo, config, streaming=True)
    report[config] = {}
    for split in loaded:
        rows = loaded[split].to_dict()
        stream = [row for row in streamed[split]]
        assert [row["weights"] for row in stream] == rows["weights"], (config, split)
        assert [row["model_id"] for row in stream] == rows["model_id"], (config, split)
        report[config][split] = {"model_id": rows["model_id"], "epoch": rows["epoch"], "weights": rows["weights"]}
    _, info = load_zoo(repo, config)
    arrays = load_zoo_arrays(f"{repo}:{config}")
    tensors = load_zoo_tensors(make_train_config(overrides={"zoo": f"{repo}:{config}", "output_dir": out}))
    report[config]["info_rows"] = info["counts"]["rows"]
    report[config]["arrays_rows"] = sum(len(v) for v in arrays.vectors.values())
    report[config]["train_tensor_rows"] = len(tensors.vectors["train"])
with open(out + "/zoo_report.json", "w") as file:
    json.dump(report, file)
print("zoo check OK")
"""


def local_rows(zoo_folder: Path, split: str) -> dict:
    table = pq.read_table(sorted(zoo_folder.glob(f"{split}-*.parquet")), columns=["model_id", "epoch", "weights"])
    return table.to_pydict()


@pytest.mark.slow
def test_zoo_round_trip_load_dataset_and_streaming(local_hub, zoo_dir, tmp_path, online):
    second = make_zoo(tmp_path / "zoos", "tetris_seed", BuildOptions(num_models=10, epochs=1, subset=120))
    push_to(local_hub, zoo_dir, ZOO_REPO)
    push_to(local_hub, second, ZOO_REPO)
    result = run_python(
        ["-c", ZOO_CHECK, ZOO_REPO, str(tmp_path)], hub_environment(local_hub, tmp_path / "h"), tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "zoo_report.json").read_text())
    assert report["configs"] == ["tetris_hyp", "tetris_seed"]
    for folder, zoo in ((zoo_dir, "tetris_hyp"), (second, "tetris_seed")):
        info = json.loads((folder / zoo / "zoo_info.json").read_text())
        total = 0
        for split in ("train", "validation", "test"):
            expected = local_rows(folder / zoo, split)
            got = report[zoo][split]
            assert got["model_id"] == expected["model_id"] and got["epoch"] == expected["epoch"]
            assert np.array_equal(np.asarray(got["weights"], np.float32), np.asarray(expected["weights"], np.float32))
            total += len(expected["model_id"])
        assert report[zoo]["info_rows"] == report[zoo]["arrays_rows"] == total == info["counts"]["rows"]
        assert report[zoo]["train_tensor_rows"] == len(local_rows(folder / zoo, "train")["model_id"])


def http(url: str, method: str = "GET", headers: dict | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_local_hub_answers_ranges_and_missing_entries(local_hub, tmp_path, online):
    from huggingface_hub import HfApi

    api = HfApi(endpoint=local_hub.url, token=TOKEN)
    api.create_repo("org/range", repo_type="dataset")
    content = os.urandom(5000)
    (tmp_path / "blob.bin").write_bytes(content)
    api.upload_file(
        path_or_fileobj=tmp_path / "blob.bin", path_in_repo="data/blob.bin", repo_id="org/range", repo_type="dataset"
    )
    url = f"{local_hub.url}/datasets/org/range/resolve/main/data/blob.bin"
    status, headers, body = http(url, headers={"Range": "bytes=100-199"})
    assert status == 206 and body == content[100:200] and headers["Content-Range"] == "bytes 100-199/5000"
    status, headers, body = http(url, method="HEAD")
    assert status == 200 and headers["Content-Length"] == "5000" and headers["X-Repo-Commit"] and body == b""
    status, headers, _ = http(f"{local_hub.url}/api/datasets/org/range/tree/main/nothing")
    assert status == 404 and headers["X-Error-Code"] == "EntryNotFound"
    status, headers, _ = http(f"{local_hub.url}/api/datasets/org/range/revision/no-such-branch")
    assert status == 404 and headers["X-Error-Code"] == "RevisionNotFound"
    status, headers, _ = http(f"{local_hub.url}/api/models/org/none")
    assert status == 404 and headers["X-Error-Code"] == "RepoNotFound"
