"""Importing the Small CNN Zoo and the Model Zoos: fixtures written in the sources' own formats, checked by function.

The Small CNN Zoo fixture holds random networks in Keras layout; an independent numpy forward pass of that layout
(NHWC, stride-2 valid convolutions, global average pooling, dense) must give the logits of the PyTorch module
built from the imported (converted) weights. The Model Zoos fixture is written with real ``torch.save`` of
state_dicts of a module with Dropout layers (which shift ``module_list`` indices past 10).
"""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from hyperrep_hf import NeuronTokenProcessor
from hyperrep_hf.cli import main as cli_main
from hyperrep_hf.zoo.folder import load_zoo
from hyperrep_hf.zoo.importers import (
    ImportFormatError,
    import_model_zoos,
    import_small_cnn_zoo,
    read_layout,
    small_cnn_zoo_layout,
    small_cnn_zoo_spec,
    write_small_cnn_zoo_source,
)
from hyperrep_hf.zoo.networks import MNIST_CNN, SMALL_CNN_ZOO, make_module, unflatten_vector

STEPS = (0, 1, 2, 3, 20, 86)


# ----------------------------------------------------------------------------------------------------------------
# Small CNN Zoo fixture and the independent Keras-layout forward pass
# ----------------------------------------------------------------------------------------------------------------


def keras_forward(row: np.ndarray, variables, images_nhwc: np.ndarray, activation: str) -> np.ndarray:
    """Logits of a Keras-layout row: conv (HWIO kernel, stride 2, valid) + act, …, GAP, dense (IO kernel)."""
    named = {variable.name: row[variable.start : variable.end].reshape(variable.shape) for variable in variables}
    layers = list(dict.fromkeys(variable.layer for variable in variables))
    act = {"relu": lambda x: np.maximum(x, 0.0), "tanh": np.tanh}[activation]
    x = images_nhwc.astype(np.float64)
    for layer in layers[:-1]:
        kernel, bias = named[f"{layer}/kernel:0"], named[f"{layer}/bias:0"]
        k = kernel.shape[0]
        out_h, out_w = (x.shape[1] - k) // 2 + 1, (x.shape[2] - k) // 2 + 1
        y = np.zeros((x.shape[0], out_h, out_w, kernel.shape[3]))
        for i in range(out_h):
            for j in range(out_w):
                patch = x[:, 2 * i : 2 * i + k, 2 * j : 2 * j + k, :]  # (batch, kh, kw, in)
                y[:, i, j, :] = np.einsum("bhwc,hwco->bo", patch, kernel) + bias
        x = act(y)
    pooled = x.mean(axis=(1, 2))
    return pooled @ named[f"{layers[-1]}/kernel:0"] + named[f"{layers[-1]}/bias:0"]


def make_small_cnn_source(folder, num_models=20, seed=0, compress=False, nan_rows=(), nan_accuracy_rows=()):
    rng = np.random.default_rng(seed)
    variables = small_cnn_zoo_layout()
    rows, metrics = [], []
    for model in range(num_models):
        activation = ("relu", "tanh")[model % 2]
        learning_rate = float(10 ** rng.uniform(-4, -2))
        for step in STEPS:
            rows.append(rng.normal(0, 0.3, variables[-1].end).astype(np.float32))
            accuracy = float(rng.uniform(0.1, 0.9))
            metrics.append(
                {
                    "config.activation": activation,
                    "config.dataset": "mnist",
                    "config.l2reg": 1e-4 * (1 + model % 3),
                    "config.learning_rate": learning_rate,
                    "config.optimizer": ("adam", "sgd", "rmsprop")[model % 3],
                    "config.train_fraction": 0.5 + 0.25 * (model % 2),
                    "config.w_init": "he_normal",
                    "modeldir": f"run_{model:04d}/",
                    "step": step,
                    "test_accuracy": accuracy,
                    "test_loss": 1.0 - accuracy,
                    "train_accuracy": accuracy + 0.01,
                    "train_loss": 0.9 - accuracy,
                }
            )
    weights = np.stack(rows)
    for row in nan_rows:
        weights[row, 5] = np.nan
    for row in nan_accuracy_rows:
        metrics[row]["test_accuracy"] = "nan"
    write_small_cnn_zoo_source(folder, weights, metrics, variables, compress=compress)
    return weights, metrics, variables


@pytest.fixture(scope="module")
def small_cnn(tmp_path_factory):
    source = tmp_path_factory.mktemp("smallcnn")
    weights, metrics, variables = make_small_cnn_source(source, nan_rows=(7,), nan_accuracy_rows=(13,))
    out = tmp_path_factory.mktemp("zoo")
    report = import_small_cnn_zoo(source, out, rows_per_shard=40, chunk_rows=16, progress=False)
    return source, out, report, weights, metrics, variables


def all_rows(out, config="small_cnn_zoo_mnist"):
    dataset, info = load_zoo(out, config)
    return {split: dataset[split].with_format("numpy")[:] for split in dataset}, info


# ----------------------------------------------------------------------------------------------------------------
# Small CNN Zoo
# ----------------------------------------------------------------------------------------------------------------


def test_layout_has_bias_before_kernel_and_the_spec_is_the_small_cnn_zoo_network():
    variables = small_cnn_zoo_layout()
    assert [v.role for v in variables] == ["bias", "kernel"] * 4
    spec = small_cnn_zoo_spec(variables, 28)
    assert spec == SMALL_CNN_ZOO  # the project's own spec of the network
    assert spec.num_parameters == 4970 == variables[-1].end
    assert [tuple(s) for s in spec.parameter_shapes.values()] == [
        (16, 1, 3, 3), (16,), (16, 16, 3, 3), (16,), (16, 16, 3, 3), (16,), (10, 16), (10,),
    ]  # fmt: skip


@pytest.mark.parametrize("activation_model", [0, 1])  # relu, tanh
def test_converted_weights_reproduce_the_keras_forward_pass(small_cnn, activation_model):
    _source, out, _, weights, metrics, variables = small_cnn
    rows, _info = all_rows(out)
    spec = small_cnn_zoo_spec(variables, 28)
    images = np.random.default_rng(1).normal(size=(5, 28, 28, 1))
    checked = 0
    for split_rows in rows.values():
        for index in np.flatnonzero(split_rows["model_id"] % 2 == activation_model)[:6]:
            source_row = int(split_rows["source_row"][index])
            activation = metrics[source_row]["config.activation"]
            assert split_rows["activation"][index] == activation
            module = make_module(spec, activation).double().eval()
            vector = torch.from_numpy(split_rows["weights"][index].astype(np.float64))
            module.load_state_dict(unflatten_vector(spec, vector))
            with torch.no_grad():
                torch_logits = module(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
            keras_logits = keras_forward(weights[source_row].astype(np.float64), variables, images, activation)
            np.testing.assert_allclose(torch_logits, keras_logits, rtol=1e-5, atol=1e-6)
            checked += 1
    assert checked >= 6


def test_configs_metrics_kept_non_finite_rows_dropped_and_split_by_model_directory(small_cnn):
    _, out, report, _weights, metrics, _ = small_cnn
    rows, info = all_rows(out)
    assert report.dropped == {"rows with non-finite weights": 1, "rows with a missing or non-finite test_accuracy": 1}
    assert info["counts"]["dropped_rows"] == report.dropped
    assert sum(len(r["model_id"]) for r in rows.values()) == len(metrics) - 2 == info["counts"]["rows"]
    seen_sources = np.concatenate([r["source_row"] for r in rows.values()])
    assert 7 not in seen_sources and 13 not in seen_sources
    models_per_split = {split: set(r["model_dir"].tolist()) for split, r in rows.items()}
    assert not (models_per_split["train"] & models_per_split["test"])
    assert not (models_per_split["train"] & models_per_split["validation"])
    assert [len(models_per_split[s]) for s in ("train", "validation", "test")] == [14, 3, 3]
    for split_rows in rows.values():
        for index in range(0, len(split_rows["source_row"]), 7):
            source = metrics[int(split_rows["source_row"][index])]
            assert split_rows["model_dir"][index] == source["modeldir"]
            assert split_rows["epoch"][index] == source["step"]
            assert split_rows["config.l2reg"][index] == pytest.approx(source["config.l2reg"])
            assert split_rows["weight_decay"][index] == pytest.approx(source["config.l2reg"])
            assert split_rows["config.w_init"][index] == source["config.w_init"]
            assert split_rows["test_loss"][index] == pytest.approx(source["test_loss"])
            assert split_rows["generalization_gap"][index] == pytest.approx(
                source["train_accuracy"] - source["test_accuracy"]
            )
    assert info["epochs"] == 86
    assert info["architecture"]["num_parameters"] == 4970
    assert len(list((out / "small_cnn_zoo_mnist").glob("train-*-of-*.parquet"))) > 1  # rows_per_shard=40
    assert not list((out / "small_cnn_zoo_mnist").glob(".*tmp"))
    assert "small_cnn_zoo_mnist" in (out / "README.md").read_text()
    processor = NeuronTokenProcessor.from_zoo(out)
    assert processor.num_tokens == 16 * 3 + 10


def test_gzip_metrics_and_cli(tmp_path, capsys):
    make_small_cnn_source(tmp_path / "src", num_models=4, compress=True)
    assert (tmp_path / "src" / "metrics.csv.gz").is_file()
    code = cli_main(["zoo", "import", "small-cnn-zoo", str(tmp_path / "src"), "--out", str(tmp_path / "zoo"),
                     "--config", "mine"])  # fmt: skip
    assert code == 0
    assert "imported 24 checkpoints" in capsys.readouterr().out
    _rows, info = all_rows(tmp_path / "zoo", "mine")
    assert info["name"] == "mine"
    assert cli_main(["zoo", "import", "small-cnn-zoo", str(tmp_path / "src"), "--out", str(tmp_path / "zoo"),
                     "--config", "mine"]) == 2  # fmt: skip
    assert "--overwrite" in capsys.readouterr().err


def _no_zoo_written(out):
    return not out.exists() or not any(out.rglob("*.parquet"))


def test_truncated_weights_npy_is_a_clear_error(tmp_path):
    make_small_cnn_source(tmp_path / "src", num_models=3)
    path = tmp_path / "src" / "weights.npy"
    path.write_bytes(path.read_bytes()[: path.stat().st_size - 1000])
    with pytest.raises(ImportFormatError, match="truncated"):
        import_small_cnn_zoo(tmp_path / "src", tmp_path / "zoo", progress=False)
    assert _no_zoo_written(tmp_path / "zoo")


def test_metrics_rows_that_do_not_match_the_weights_are_a_clear_error(tmp_path):
    _weights, metrics, variables = make_small_cnn_source(tmp_path / "src", num_models=3)
    write_small_cnn_zoo_source(tmp_path / "src", None, metrics[:-1], variables)  # one line short
    with pytest.raises(ImportFormatError, match=r"17 data rows but .* has 18"):
        import_small_cnn_zoo(tmp_path / "src", tmp_path / "zoo", progress=False)
    duplicated = [*metrics[:-1], dict(metrics[0])]  # right count, but one (model, step) twice
    write_small_cnn_zoo_source(tmp_path / "src", None, duplicated, variables)
    with pytest.raises(ImportFormatError, match="both describe model 'run_0000/' at step 0"):
        import_small_cnn_zoo(tmp_path / "src", tmp_path / "zoo", progress=False)
    ragged = tmp_path / "src" / "metrics.csv"
    lines = ragged.read_text().splitlines()
    lines[3] += ",extra"
    ragged.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportFormatError, match="data row 2 has 14 fields, the header has 13"):
        import_small_cnn_zoo(tmp_path / "src", tmp_path / "zoo", progress=False)
    assert _no_zoo_written(tmp_path / "zoo")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda rows: rows[:-1], "describes rows of 4810 values"),  # the dense kernel is missing
        (lambda rows: [r.replace("conv2d_1/bias", "conv2d_9/bias") for r in rows], "needs a kernel and a bias"),
        (lambda rows: [r.replace("(16, 10)", "(10, 16)") for r in rows], "takes 10 inputs"),
        (lambda rows: [r.replace("(3, 3, 16, 16)", "(9, 16, 16)") for r in rows], "needs a conv"),
        (lambda rows: [r.replace("kernel:0", "gamma:0", 1) for r in rows], "neither a kernel:0 nor a bias:0"),
    ],
)
def test_layout_that_does_not_describe_a_supported_network_is_a_clear_error(tmp_path, edit, message):
    make_small_cnn_source(tmp_path / "src", num_models=3)
    layout = tmp_path / "src" / "layout.csv"
    header, *rows = layout.read_text().splitlines()
    layout.write_text("\n".join([header, *edit(rows)]) + "\n")
    with pytest.raises(ImportFormatError, match=message):
        import_small_cnn_zoo(tmp_path / "src", tmp_path / "zoo", progress=False)
    assert _no_zoo_written(tmp_path / "zoo")


def test_read_layout_refuses_a_slice_that_does_not_fit_its_shape(tmp_path):
    make_small_cnn_source(tmp_path / "src", num_models=1)
    layout = tmp_path / "src" / "layout.csv"
    layout.write_text(layout.read_text().replace("(3, 3, 1, 16)", "(3, 3, 2, 16)"))
    with pytest.raises(ImportFormatError, match="spans 144 values but has shape"):
        read_layout(layout)


# ----------------------------------------------------------------------------------------------------------------
# Model Zoos
# ----------------------------------------------------------------------------------------------------------------


class ModelZooCNN(nn.Module):
    """The MNIST CNN as the Model Zoos code builds it: a module_list with Dropout layers between the others."""

    def __init__(self):
        super().__init__()
        self.module_list = nn.ModuleList(
            [
                nn.Conv2d(1, 8, 5), nn.MaxPool2d(2), nn.Tanh(), nn.Dropout(0.5),
                nn.Conv2d(8, 6, 5), nn.MaxPool2d(2), nn.Tanh(), nn.Dropout(0.5),
                nn.Conv2d(6, 4, 2), nn.Tanh(), nn.Dropout(0.5), nn.Flatten(),
                nn.Linear(36, 20), nn.Tanh(), nn.Dropout(0.5), nn.Linear(20, 10),
            ]
        )  # fmt: skip

    def forward(self, x):
        for module in self.module_list:
            x = module(x)
        return x


def make_model_zoos_source(folder, num_models=8, epochs=3, missing=None):
    modules = {}
    for model in range(num_models):
        directory = folder / f"NN_tune_trainable_{model:05d}_seed={model}"
        directory.mkdir(parents=True)
        torch.manual_seed(model)
        module = ModelZooCNN()
        config = {"model::nlin": "tanh", "optim::lr": [1e-3, 1e-4][model % 2], "seed": model, "model::dropout": 0.5}
        lines = []
        for epoch in range(epochs + 1):
            if epoch:
                with torch.no_grad():
                    for parameter in module.parameters():
                        parameter.add_(0.01 * torch.randn_like(parameter))
            checkpoint = directory / f"checkpoint_{epoch:06d}"
            checkpoint.mkdir()
            if (model, epoch) != missing:
                torch.save(module.state_dict(), checkpoint / "checkpoints")
            modules[(model, epoch)] = {k: v.clone() for k, v in module.state_dict().items()}
            accuracy = 0.1 * epoch + model / 100
            lines.append(
                {"training_iteration": epoch + 1, "train_acc": accuracy + 0.05, "test_acc": accuracy,
                 "train_loss": 2 - accuracy, "test_loss": 2.1 - accuracy, "timestamp": 123, "config": config}
            )  # fmt: skip
        (directory / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return modules


def test_model_zoos_import_keys_layers_by_name_and_matches_epochs_to_result_lines(tmp_path):
    modules = make_model_zoos_source(tmp_path / "src")
    report = import_model_zoos(tmp_path / "src", tmp_path / "zoo", "mz", progress=False)
    rows, info = all_rows(tmp_path / "zoo", "mz")
    assert info["architecture"]["name"] == MNIST_CNN.name
    assert report.rows_read == 32 and sum(report.rows_written.values()) == 32 and not report.dropped
    images = torch.randn(4, 1, 28, 28)
    for split_rows in rows.values():
        for index in range(len(split_rows["model_id"])):
            folder = split_rows["model_dir"][index]
            model, epoch = int(folder.split("=")[-1]), int(split_rows["epoch"][index])
            assert split_rows["test_accuracy"][index] == pytest.approx(0.1 * epoch + model / 100)  # offset 1
            assert split_rows["learning_rate"][index] == [1e-3, 1e-4][model % 2]
            assert split_rows["config.model::nlin"][index] == "tanh"
            source = ModelZooCNN().eval()
            source.load_state_dict(modules[(model, epoch)])
            ours = make_module(MNIST_CNN, "tanh").eval()
            ours.load_state_dict(unflatten_vector(MNIST_CNN, torch.from_numpy(split_rows["weights"][index].copy())))
            with torch.no_grad():
                torch.testing.assert_close(ours(images), source(images))
    model_dirs = {split: set(r["model_dir"].tolist()) for split, r in rows.items()}
    assert not (model_dirs["train"] & model_dirs["test"])


def test_model_directory_with_a_missing_checkpoint_is_skipped_counted_and_reported(tmp_path, capsys):
    make_model_zoos_source(tmp_path / "src", num_models=4, missing=(2, 1))
    (tmp_path / "src" / "NN_tune_trainable_00003_seed=3" / "checkpoint_000002" / "checkpoints").write_bytes(b"junk")
    assert cli_main(["zoo", "import", "model-zoos", str(tmp_path / "src"), "--out", str(tmp_path / "zoo")]) == 0
    printed = capsys.readouterr().out
    assert "2 model(s) incomplete" in printed
    rows, info = all_rows(tmp_path / "zoo", "src")
    assert info["counts"]["dropped_rows"] == {
        "checkpoints without a file or a result line": 1,
        "checkpoints that cannot be read or do not match the network": 1,
    }
    assert "checkpoint_000001 has no 'checkpoints' file" in info["incomplete_models"]["NN_tune_trainable_00002_seed=2"]
    assert "checkpoint 2" in info["incomplete_models"]["NN_tune_trainable_00003_seed=3"]
    kept = {(d, int(e)) for r in rows.values() for d, e in zip(r["model_dir"], r["epoch"], strict=True)}
    assert len(kept) == 14
    assert ("NN_tune_trainable_00002_seed=2", 1) not in kept and ("NN_tune_trainable_00003_seed=3", 2) not in kept


def test_model_zoos_refuses_an_unknown_architecture_and_a_missing_result_line(tmp_path):
    folder = tmp_path / "src" / "model_0"
    (folder / "checkpoint_000000").mkdir(parents=True)
    torch.save(nn.Sequential(nn.Linear(3, 2)).state_dict(), folder / "checkpoint_000000" / "checkpoints")
    (folder / "result.json").write_text(json.dumps({"training_iteration": 1, "test_acc": 0.5}) + "\n")
    with pytest.raises(ImportFormatError, match=r"shapes \[\[2, 3\], \[2\]\] match no supported network"):
        import_model_zoos(tmp_path / "src", tmp_path / "zoo", progress=False)
    assert _no_zoo_written(tmp_path / "zoo")


def test_parquet_shards_have_one_schema(small_cnn):
    _, out, *_ = small_cnn
    schemas = {str(pq.read_schema(path)) for path in (out / "small_cnn_zoo_mnist").glob("*.parquet")}
    assert len(schemas) == 1


def test_an_import_that_fails_midway_leaves_no_shard_and_no_zoo_info(tmp_path, monkeypatch):
    import hyperrep_hf.zoo.importers as importers

    make_small_cnn_source(tmp_path / "src", num_models=6)
    original, calls = importers._write_rows, []

    def failing(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        original(*args)

    monkeypatch.setattr(importers, "_write_rows", failing)
    with pytest.raises(KeyboardInterrupt):
        import_small_cnn_zoo(tmp_path / "src", tmp_path / "zoo", chunk_rows=8, progress=False)
    zoo_dir = tmp_path / "zoo" / "small_cnn_zoo_mnist"
    assert not (zoo_dir / "zoo_info.json").exists() and not list(zoo_dir.iterdir())
    monkeypatch.setattr(importers, "_write_rows", original)
    report = import_small_cnn_zoo(tmp_path / "src", tmp_path / "zoo", progress=False)  # an empty folder is reused
    assert sum(report.rows_written.values()) == 36


def test_a_metrics_row_without_step_is_a_clear_error(tmp_path):
    _, metrics, variables = make_small_cnn_source(tmp_path / "src", num_models=2)
    metrics[4]["step"] = ""
    write_small_cnn_zoo_source(tmp_path / "src", None, metrics, variables)
    with pytest.raises(ImportFormatError, match="data row 4 has no step or no modeldir"):
        import_small_cnn_zoo(tmp_path / "src", tmp_path / "zoo", progress=False)
    assert _no_zoo_written(tmp_path / "zoo")


@pytest.mark.parametrize("importer", [import_small_cnn_zoo, import_model_zoos])
def test_a_missing_source_folder_or_a_file_is_named_with_what_to_pass(tmp_path, importer):
    with pytest.raises(ImportFormatError, match=rf"{tmp_path / 'missing'} does not exist: pass the"):
        importer(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "file").write_text("")
    with pytest.raises(ImportFormatError, match=r"file is a file, not a folder: pass the"):
        importer(tmp_path / "file", tmp_path / "out")
    assert not (tmp_path / "out").exists()
