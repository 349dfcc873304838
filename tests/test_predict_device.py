"""`hyperrep evaluate` and `hyperrep predict` take --device and --batch-size and report their rate.

The copies of many networks go through the encoder together, ``--batch-size`` rows at a time: whatever the batch
size, each network's z̄ is the same (up to float rounding of the sums). CUDA paths are marked ``gpu``.
"""

import json
import re
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from tiny_models import make_evaluated_model, make_zoo

from hyperrep_hf.cli import main
from hyperrep_hf.models.hyperrep.embeddings import embed_vectors, networks_per_pass, symmetry_transforms
from hyperrep_hf.models.hyperrep.pipelines import make_prediction_pipeline
from hyperrep_hf.probing.evaluation import load_encoder, load_zoo_arrays
from hyperrep_hf.zoo.networks import TETRIS_MLP, unflatten_vector
from hyperrep_hf.zoo.recipes import BuildOptions

RATE = re.compile(r"predicted (\d+) networks in [\d.]+ s \(([\d,.]+) networks/s on (\S+); (\d+) copies each")


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return make_zoo(tmp_path_factory.mktemp("zoo"), "tetris_seed", BuildOptions(num_models=12, epochs=2, subset=120))


@pytest.fixture(scope="module")
def model(tmp_path_factory, zoo):
    return make_evaluated_model(tmp_path_factory.mktemp("model"), zoo, tmp_path_factory.mktemp("eval"))


@pytest.fixture(scope="module")
def network_files(zoo, tmp_path_factory):
    folder = tmp_path_factory.mktemp("networks")
    vectors = torch.from_numpy(load_zoo_arrays(zoo).vectors["test"][:5].copy())
    files = []
    for index, vector in enumerate(vectors):
        files.append(folder / f"network{index}.safetensors")
        save_file({k: v.clone() for k, v in unflatten_vector(TETRIS_MLP, vector).items()}, files[-1])
    return [str(path) for path in files]


def values(predictions: list[dict]) -> np.ndarray:
    return np.array(
        [
            prediction["value"]
            for network in predictions
            for prediction in network["predictions"].values()
            if isinstance(prediction["value"], float)
        ]
    )


@pytest.mark.parametrize("seed", range(3))
def test_z_bar_does_not_depend_on_how_many_rows_go_through_at_once(model, seed):
    encoder, processor = load_encoder(model)
    transforms = symmetry_transforms(encoder.config, processor.architecture)
    assert transforms.num_samples == 4
    vectors = torch.randn(int(torch.randint(1, 9, (1,), generator=torch.Generator().manual_seed(seed))), 100)
    reference = embed_vectors(encoder, processor, vectors, transforms, max_rows_per_pass=1)  # one copy per pass
    for rows in (3, 4, 7, 2048):
        together = embed_vectors(encoder, processor, vectors, transforms, max_rows_per_pass=rows)
        torch.testing.assert_close(together, reference, atol=1e-5, rtol=1e-5)
    assert networks_per_pass(2048, transforms, processor) == 512 and networks_per_pass(3, transforms, processor) == 1
    with pytest.raises(ValueError, match="must be ≥ 1, got 0"):
        networks_per_pass(0, transforms, processor)


def test_predict_reports_its_rate_and_device_and_the_batch_size_does_not_change_predictions(
    model, network_files, capsys
):
    assert main(["predict", str(model), *network_files]) == 0
    captured = capsys.readouterr()
    default = json.loads(captured.out)  # stdout is one JSON document: the rate goes to stderr
    match = RATE.search(captured.err)
    assert match, captured.err
    assert int(match[1]) == 5 and float(match[2].replace(",", "")) > 0 and match[3] == "cpu" and match[4] == "4"
    for options in (["--device", "auto"], ["--device", "cpu", "--batch-size", "3"]):
        assert main(["predict", str(model), *network_files, *options]) == 0
        other = json.loads(capsys.readouterr().out)
        np.testing.assert_allclose(values(other), values(default), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--device", "cuda"], "sees no CUDA GPU"),
        (["--device", "banana"], "not a device PyTorch knows"),
        (["--batch-size", "0"], "must be a positive integer, got 0"),
    ],
)
def test_bad_device_or_batch_size_is_refused_before_anything_is_written(
    command, options, message, model, zoo, network_files, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = sorted(path.name for path in model.rglob("*"))
    out = tmp_path / "out"
    arguments = [str(model), *network_files] if command == "predict" else [str(model), "--zoo", str(zoo), "--out"]
    arguments += [] if command == "predict" else [str(out), "--overwrite"]
    assert main([command, *arguments, *options]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
    assert not out.exists() and sorted(path.name for path in model.rglob("*")) == before


def test_evaluate_reports_device_and_rate(model, zoo, tmp_path, capsys):
    copy = shutil.copytree(model, tmp_path / "model")
    options = ["--baselines", "s(W)", "--overwrite", "--device", "auto", "--batch-size", "5"]
    assert main(["evaluate", str(copy), "--zoo", str(zoo), "--out", str(tmp_path / "eval"), *options]) == 0
    out = capsys.readouterr().out
    assert re.search(r"encoder .* on cpu", out), out
    assert re.search(
        r"embeddings of \d+ networks on cpu \([\d,.]+ networks/s; 4 copies each, up to 5 encoder rows", out
    )


@pytest.mark.gpu
def test_predict_on_cuda_matches_the_cpu(model, network_files):
    cpu = make_prediction_pipeline(model, device="cpu")
    cuda = make_prediction_pipeline(model, device="cuda")
    assert next(cuda.model.parameters()).device.type == "cuda"
    torch.testing.assert_close(cuda.embed(network_files).cpu(), cpu.embed(network_files), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(
        values([{"predictions": p} for p in cuda(network_files)]),
        values([{"predictions": p} for p in cpu(network_files)]),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.gpu
def test_evaluate_on_cuda_runs(model, zoo, tmp_path, capsys):
    copy = shutil.copytree(model, tmp_path / "model")
    out = tmp_path / "eval"
    options = ["--baselines", "s(W)", "--overwrite", "--device", "cuda", "--quiet"]
    assert main(["evaluate", str(copy), "--zoo", str(zoo), "--out", str(out), *options]) == 0
    assert json.loads((out / "results.json").read_text())["methods"]
