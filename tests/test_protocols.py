"""The peers' Small CNN Zoo protocol: split-file semantics, and the command end to end on an imported fixture zoo."""

import json

import numpy as np
import pytest
import torch
from test_importers import make_small_cnn_source
from tiny_models import make_model_folder

from hyperrep_hf.cli import main as cli_main
from hyperrep_hf.models.hyperrep.pipelines import make_prediction_pipeline
from hyperrep_hf.probing.baselines import unterthiner_statistics
from hyperrep_hf.probing.evaluation import compute_embeddings, load_encoder
from hyperrep_hf.probing.probe_heads import load_probe_heads, read_probe_index, save_probe_heads
from hyperrep_hf.probing.probes import RidgeProbe, kendall_tau
from hyperrep_hf.probing.protocols import evaluate_protocol, load_final_checkpoints, protocol_rows, read_split_file
from hyperrep_hf.zoo.importers import import_small_cnn_zoo
from hyperrep_hf.zoo.networks import NetworkSpec, unflatten_vector


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_file_order_defines_test_as_the_second_half_and_train_validation_80_20(seed, tmp_path):
    rng = np.random.default_rng(seed)
    num_rows = int(rng.integers(40, 90))
    source_rows = np.sort(rng.choice(1000, num_rows, replace=False))  # final checkpoints present in the zoo
    listed = rng.permutation(np.concatenate([source_rows, rng.choice(np.arange(1000, 1100), 7, replace=False)]))
    (tmp_path / "split.csv").write_text("".join(f"{row}\n" for row in listed))
    vectors = np.arange(num_rows, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    targets = rng.uniform(size=num_rows)
    rows = protocol_rows(vectors, targets, source_rows, 86, tmp_path / "split.csv")
    kept = [row for row in listed if row in set(source_rows.tolist())]
    half = len(kept) // 2
    assert rows.split_file_rows_skipped == 7
    assert rows.source_rows["test"].tolist() == kept[half:]
    first = set(rows.source_rows["train"].tolist()) | set(rows.source_rows["validation"].tolist())
    assert first == set(kept[:half]) and not first & set(kept[half:])
    assert rows.source_rows["train"].size == int(0.8 * half)
    for split in ("train", "validation", "test"):  # vectors and targets travel with their rows
        positions = np.searchsorted(source_rows, rows.source_rows[split])
        np.testing.assert_array_equal(rows.vectors[split][:, 0], positions)
        np.testing.assert_array_equal(rows.targets[split], targets[positions])
    again = protocol_rows(vectors, targets, source_rows, 86, tmp_path / "split.csv")
    assert all(np.array_equal(rows.source_rows[s], again.source_rows[s]) for s in rows.source_rows)


@pytest.mark.parametrize(
    ("text", "message"),
    [("index\n1\n2\n", "line 1"), ("1\n-2\n", "non-negative"), ("1\n2\n1\n", "more than once"), ("\n", "no row")],
)
def test_bad_split_files_are_refused(tmp_path, text, message):
    (tmp_path / "split.csv").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_split_file(tmp_path / "split.csv")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    source = tmp_path_factory.mktemp("src")
    make_small_cnn_source(source, num_models=40, nan_rows=(5 * 6 + 5,))  # model 5's final checkpoint is NaN
    out = tmp_path_factory.mktemp("zoo")
    import_small_cnn_zoo(source, out, progress=False)
    return out, make_model_folder(out, tmp_path_factory.mktemp("model"))


def test_protocol_end_to_end_with_the_peers_split_file(imported, tmp_path, capsys):
    out, model_dir = imported
    features = np.random.default_rng(0).normal(size=(20, 8))
    earlier = RidgeProbe().fit(features, features[:, 0], features, features[:, 0])
    save_probe_heads(model_dir, "other_zoo", {"epoch": earlier})  # an earlier evaluation's default must survive
    listed = np.random.default_rng(0).permutation(40 * 6)  # every source row; non-final rows are skipped
    (tmp_path / "split.csv").write_text("".join(f"{row}\n" for row in listed))
    code = cli_main(["evaluate", str(model_dir), "--zoo", f"{out}:small_cnn_zoo_mnist", "--out", str(tmp_path / "r"),
                     "--protocol", "small-cnn-zoo", "--split-file", str(tmp_path / "split.csv")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    document = json.loads((tmp_path / "r" / "protocol_results.json").read_text())
    assert document["num_final_checkpoints"] == 39 and document["split_file_rows_skipped"] == 40 * 6 - 39
    assert document["rows_per_split"] == {"train": 15, "validation": 4, "test": 20}
    tau = {
        r["method"]: r["value"] for r in document["results"] if r["split"] == "test" and r["metric"] == "kendall_tau"
    }
    assert set(tau) == {"s(W)+MLP", "s(W)+linear", "hyperrep+linear", "hyperrep+MLP"}
    assert all(-1 <= value <= 1 for value in tau.values())
    markdown = (tmp_path / "r" / "protocol_results.md").read_text()
    assert "StatNN" in markdown and "| hyperrep+MLP |" in markdown

    # Second route for s(W)+linear: rebuild the split from the files and fit the ridge probe directly.
    info, vectors, targets, source_rows, final_epoch = load_final_checkpoints(f"{out}:small_cnn_zoo_mnist")
    rows = protocol_rows(vectors, targets, source_rows, final_epoch, tmp_path / "split.csv")
    features = {s: unterthiner_statistics(v, info["architecture"]) for s, v in rows.vectors.items()}
    probe = RidgeProbe().fit(
        features["train"], rows.targets["train"], features["validation"], rows.targets["validation"]
    )
    assert tau["s(W)+linear"] == pytest.approx(kendall_tau(rows.targets["test"], probe.predict(features["test"])))

    index = read_probe_index(model_dir)
    assert index["default_zoo"] == "other_zoo"
    _, heads = load_probe_heads(model_dir, "small_cnn_zoo_mnist-final")
    assert set(heads) == {"test_accuracy", "test_accuracy@mlp"}
    assert heads["test_accuracy@mlp"].config.hidden_sizes == [64, 64]


def test_protocol_without_split_file_and_a_split_file_on_a_zoo_built_here(imported, tmp_path):
    out, model_dir = imported
    document = evaluate_protocol(model_dir, out, tmp_path / "r", seed=3, save_to_model=False, progress=False)
    assert document["split_file"] is None and sum(document["rows_per_split"].values()) == 39
    info_path = out / "small_cnn_zoo_mnist" / "zoo_info.json"
    info = json.loads(info_path.read_text())
    info["source"]["format"] = "built here"
    info_path.write_text(json.dumps(info))
    (tmp_path / "split.csv").write_text("1\n2\n")
    try:
        with pytest.raises(ValueError, match="not imported from one"):
            evaluate_protocol(model_dir, out, tmp_path / "r", split_file=tmp_path / "split.csv", progress=False)
    finally:
        info["source"]["format"] = "small-cnn-zoo"
        info_path.write_text(json.dumps(info))


def test_the_final_checkpoint_heads_predict_through_the_pipeline(imported, tmp_path):
    out, model_dir = imported
    evaluate_protocol(model_dir, out, tmp_path / "r", progress=False)
    info, vectors, *_ = load_final_checkpoints(out)
    spec = NetworkSpec.from_dict(info["architecture"])
    state = {k: v.clone() for k, v in unflatten_vector(spec, torch.from_numpy(vectors[0].copy())).items()}
    predictor = make_prediction_pipeline(model_dir, zoo="small_cnn_zoo_mnist-final")
    prediction = predictor(state)
    assert set(prediction) == {"test_accuracy", "test_accuracy@mlp"}
    _, heads = load_probe_heads(model_dir, "small_cnn_zoo_mnist-final")
    z = torch.from_numpy(compute_embeddings(*load_encoder(model_dir), vectors[:1])).float()
    with torch.no_grad():
        expected = float(heads["test_accuracy@mlp"](z).predictions[0])
    value = prediction["test_accuracy@mlp"]
    value = value["value"] if isinstance(value, dict) else value
    assert value == pytest.approx(expected, rel=1e-4, abs=1e-5)
