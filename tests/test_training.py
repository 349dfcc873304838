import dataclasses
import json
import math
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState, PartialState
from safetensors.torch import load_file
from transformers import AutoFeatureExtractor, AutoModel

from hyperrep_hf import HyperRepForPreTraining, HyperRepModel, NeuronTokenProcessor
from hyperrep_hf.training.trainer import (
    CHOICES,
    TrainConfig,
    Trainer,
    find_last_checkpoint,
    main,
    make_lr_scheduler,
    make_train_config,
    parse_args,
    zoo_activation,
)
from hyperrep_hf.zoo.folder import build_zoo, load_zoo
from hyperrep_hf.zoo.recipes import BuildOptions, load_recipe

REPOSITORY = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPOSITORY / "training" / "train.py"
# A model small enough that a launch is dominated by process start-up (~9 s), not by training.
TINY_MODEL = ["--d-model", "16", "--num-attention-heads", "2", "--intermediate-size", "32", "--latent-dim", "8"]
TINY_MODEL += ["--projection-dim", "4", "--num-threads", "1", "--eval-batch-size", "3", "--progress", "false"]


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    build_zoo(load_recipe("tetris_seed"), out, BuildOptions(num_models=12, epochs=3, subset=120), progress=False)
    return out


pytestmark = pytest.mark.usefixtures("fresh_accelerator_state")


def _launch(arguments, num_processes=1, timeout=240):
    """Runs the real training/train.py through `accelerate launch`; returns the completed process."""
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--dynamo_backend", "no"]
    if num_processes == 1:
        launcher += ["--cpu", "--num_processes", "1", "--mixed_precision", "no"]
    else:
        environment["ACCELERATE_USE_CPU"] = "1"
        launcher += ["--config_file", str(REPOSITORY / "training" / "accelerate" / "cpu_2proc.yaml")]
    launcher += ["--num_cpu_threads_per_process", "1", str(TRAIN_SCRIPT), *arguments]
    result = subprocess.run(launcher, capture_output=True, text=True, env=environment, timeout=timeout)
    # Each rank's own traceback first: the launcher's summary at the end hides which rank failed and why.
    ranks = [line for line in result.stderr.splitlines() if line.startswith("[rank")]
    assert result.returncode == 0, "\n".join(ranks[-60:]) + "\n…\n" + result.stderr[-3000:]
    return result


# ------------------------------------------------------------------------------------------------------- config
def test_yaml_preset_and_overrides_are_typed(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text(
        "zoo: zoos_dir:tetris_seed\noutput_dir: run\nepochs: 7\nlearning_rate: 1.0e-3\nbeta: 0.9\n"
        "weight_decay: 1e-5\nwarmup_epochs: 2\nmax_grad_norm: null\nepochs_to_use: [0, 5]\n"
    )
    config = parse_args(
        [
            *[str(preset), "--epochs", "3", "--output-dir", "elsewhere", "--batch_size=64", "--learning-rate", "3e-4"],
            *["--epochs-to-use", "0", "25", "50", "--erasing-scale", "0.1", "0.2", "--resume", "--seed", "5"],
            *["--normalize", "false", "--no-permute", "--probe-train-rows", "none", "--zoo=-odd:name"],
        ]
    )
    assert config.epochs == 3 and config.batch_size == 64 and config.seed == 5
    assert config.output_dir == "elsewhere" and config.zoo == "-odd:name"
    assert config.learning_rate == pytest.approx(3e-4) and isinstance(config.learning_rate, float)
    assert config.weight_decay == 1e-5 and isinstance(config.weight_decay, float)  # YAML reads 1e-5 as a string
    assert config.warmup_epochs == 2.0 and isinstance(config.warmup_epochs, float)
    assert config.beta == 0.9 and config.epochs_to_use == [0, 25, 50] and config.erasing_scale == [0.1, 0.2]
    assert config.resume is True and config.normalize is False and config.permute is False
    assert config.max_grad_norm is None and config.probe_train_rows is None
    assert parse_args([str(preset), "--epochs-to-use", "none"]).epochs_to_use is None
    assert parse_args([str(preset)]).epochs_to_use == [0, 5]


def test_shipped_presets_parse():
    for path in sorted((REPOSITORY / "training" / "configs").glob("*.yaml")):
        config = parse_args([str(path)])
        assert config.zoo and config.output_dir, path


def test_the_deep_tetris_preset_is_the_default_with_four_blocks():
    """tetris_seed_deep is measured against tetris_seed with one field changed: it must stay that way."""
    presets = REPOSITORY / "training" / "configs"
    default = dataclasses.asdict(parse_args([str(presets / "tetris_seed.yaml")]))
    deep = dataclasses.asdict(parse_args([str(presets / "tetris_seed_deep.yaml")]))
    changed = {name for name in default if default[name] != deep[name]}
    assert changed == {"num_hidden_layers", "output_dir"}
    assert (default["num_hidden_layers"], deep["num_hidden_layers"]) == (2, 4)


@pytest.mark.parametrize("seed", range(5))
def test_mapping_and_command_line_read_the_same(seed):
    """Any config written out (train_config.json) reads back equal, as a mapping and as --field value options."""
    generator = random.Random(seed)
    config = TrainConfig(zoo="z", output_dir="o")
    for item in dataclasses.fields(TrainConfig):
        value = getattr(config, item.name)
        if isinstance(value, bool):
            value = generator.random() < 0.5
        elif isinstance(value, int) and item.name not in ("checkpoint_every",):
            value = generator.randint(1, 10**6)
        elif isinstance(value, float) and item.name not in ("beta", "dropout", "min_learning_rate_ratio"):
            value = generator.uniform(0, 1) * 10 ** generator.randint(-9, 2)
        setattr(config, item.name, value)
    config.epochs_to_use = generator.choice([None, sorted(generator.sample(range(100), 5))])
    config.max_grad_norm = generator.choice([None, generator.uniform(0.1, 5)])
    config.erasing_scale = sorted(generator.uniform(0, 1) for _ in range(2))
    config.adam_betas = [generator.uniform(0, 0.999) for _ in range(2)]
    config.variant, config.loss_type = generator.choice(CHOICES["variant"]), generator.choice(CHOICES["loss_type"])
    if config.canonical_embedding:  # it embeds each network once, on the canonical form: the others would contradict
        config.canonical, config.embedding_symmetry_samples = False, 1
    if config.load_best_model_at_end:  # picked among evaluated checkpoints
        config.checkpoint_every = config.eval_every * generator.randint(1, 3)
    config.metric_for_best_model = generator.choice(CHOICES["metric_for_best_model"])
    saved = json.loads(json.dumps(config.to_dict()))
    assert make_train_config(saved) == config
    options = []
    for name, value in saved.items():
        values = value if isinstance(value, list) else [value]
        options += [f"--{name.replace('_', '-')}", *("none" if item is None else str(item) for item in values)]
    assert parse_args(options) == config


def test_help_says_what_each_field_means(capsys):
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for item in dataclasses.fields(TrainConfig):
        assert item.metadata["help"] and f"--{item.name.replace('_', '-')}" in text, item.name
        assert " ".join(item.metadata["help"].split()) in text, item.name
    assert "CONFIG.yaml" in text and "(default: 0.0001)" in text


def test_unknown_keys_are_named(tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text("zoo: z\noutput_dir: o\nlearnig_rate: 1.0\nepoch: 3\n")
    with pytest.raises(ValueError, match=r"config file .*preset.yaml: epoch, learnig_rate"):
        parse_args([str(preset)])
    with pytest.raises(ValueError, match="command line: bach_size"):
        parse_args(["--zoo", "z", "--output-dir", "o", "--bach-size", "3"])
    with pytest.raises(ValueError, match="command line: epoch"):  # no prefix matching
        parse_args(["--zoo", "z", "--output-dir", "o", "--epoch", "3"])
    with pytest.raises(ValueError, match="overrides: bach_size"):
        make_train_config({"zoo": "z", "output_dir": "o"}, {"bach_size": 3})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--epochs", "many"], "--epochs: invalid int value: 'many'"),
        (["--epochs", "2.5"], "--epochs: invalid int value"),
        (["--loss-type", "mse"], "--loss-type: invalid choice: 'mse'"),
        (["--batch-size", "0"], "batch_size=0"),
        (["--epochs"], "--epochs: expected one argument"),
        (["--normalize", "maybe"], "--normalize: .*got maybe"),
        (["--seed", "none"], "--seed: invalid int value: 'none'"),
        (["--erasing-scale", "0.1"], r"erasing_scale=\[0.1\]"),
        (["--epochs-to-use", "none", "3"], "epochs_to_use=.* mixes none"),
        (["stray"], "Unexpected argument 'stray'"),
    ],
)
def test_bad_values_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        parse_args(["--zoo", "z", "--output-dir", "o", *arguments])


@pytest.mark.parametrize(
    ("preset", "message"),
    [
        ("epochs: 2.5", "config file .*: argument --epochs: invalid int value: '2.5'"),
        ("epochs: [1, 2]", "epochs takes one value"),
        ("zoo: null", "zoo may not be null"),
        ("normalize: maybe", "--normalize: .*got maybe"),
        ("- a list", "must be a YAML mapping"),
    ],
)
def test_bad_preset_values_are_named(tmp_path, preset, message):
    path = tmp_path / "preset.yaml"
    path.write_text(preset + "\n")
    with pytest.raises(ValueError, match=message):
        parse_args([str(path), "--zoo", "z", "--output-dir", "o"])


def test_required_fields():
    with pytest.raises(ValueError, match=r"zoo is required.*output_dir is required"):
        make_train_config({})


def test_zoo_argument(tmp_path):
    from hyperrep_hf.zoo import parse_zoo_argument

    assert parse_zoo_argument("/data/zoos:tetris_seed") == ("/data/zoos", "tetris_seed")
    assert parse_zoo_argument("org/zoos") == ("org/zoos", None)
    assert parse_zoo_argument("org/zoos:mnist_seed") == ("org/zoos", "mnist_seed")
    colon_folder = tmp_path / "zoos:v2"
    colon_folder.mkdir()
    assert parse_zoo_argument(colon_folder) == (str(colon_folder), None)  # an existing path is never split


def _reference_factor(step, schedule, warmup_steps, total_steps, floor):
    """The schedule written out: warm-up step s at s / warm-up steps, then the decay to ``floor`` at the last step.

    It equals the hand-written schedule this project had before transformers' own, except in the warm-up, where
    that one used (s + 1) / warm-up steps: transformers starts the warm-up at 0, one step later.
    """
    if step < warmup_steps:
        return step / warmup_steps
    if schedule == "constant" or total_steps == warmup_steps:
        return 1.0
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    decay = 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1 - progress
    return floor + (1 - floor) * decay


@pytest.mark.parametrize("seed", range(12))
def test_learning_rate_schedule_per_step(seed):
    generator = random.Random(seed)
    schedule = ("cosine", "linear", "constant")[seed % 3]
    epochs, steps_per_epoch = generator.randint(1, 12), generator.randint(1, 40)
    warmup_epochs = generator.choice([0, 0.5, 1, generator.uniform(0, epochs), epochs])
    floor = generator.choice([0.0, generator.uniform(0, 1)])
    config = TrainConfig(
        zoo="z", output_dir="o", epochs=epochs, lr_schedule=schedule, learning_rate=generator.uniform(1e-5, 1e-2),
        warmup_epochs=warmup_epochs, min_learning_rate_ratio=floor,
    )  # fmt: skip
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.learning_rate)
    scheduler = make_lr_scheduler(optimizer, config, steps_per_epoch)
    total_steps = epochs * steps_per_epoch
    warmup_steps = min(round(warmup_epochs * steps_per_epoch), total_steps)
    for step in range(total_steps + 1):  # the scheduler is stepped after each optimizer step, the last one too
        expected = config.learning_rate * _reference_factor(step, schedule, warmup_steps, total_steps, floor)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9, abs=1e-15), step
        optimizer.step()
        scheduler.step()


# ------------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        ({"d_model": 30, "num_attention_heads": 4}, ["d_model=30", "num_attention_heads=4"]),
        ({"latent_dim": 101}, ["latent_dim=101", "num_parameters=100"]),
    ],
)
def test_impossible_model_fails_before_training(tiny_zoo, tmp_path, overrides, fields):
    config = make_train_config({"zoo": str(tiny_zoo), "output_dir": str(tmp_path / "run"), **overrides})
    with pytest.raises(ValueError) as error:
        Trainer(config)
    assert all(field in str(error.value) for field in fields), error.value
    assert not (tmp_path / "run").exists()


def test_processor_of_another_architecture_is_refused(tiny_zoo, tmp_path):
    other = {"layers.1.weight": torch.zeros(6, 16), "layers.3.weight": torch.zeros(4, 6)}  # 6 hidden neurons, not 5
    NeuronTokenProcessor.from_network(other).save_pretrained(tmp_path / "processor")
    config = make_train_config(
        {"zoo": str(tiny_zoo), "output_dir": str(tmp_path / "run"), "processor": str(tmp_path / "processor")}
    )
    with pytest.raises(
        ValueError, match=r"processor: .*does not match.*layers\.1\.weight: processor \[6, 16\] vs zoo \[5, 16\]"
    ):
        Trainer(config)


def test_sign_flips_need_one_odd_activation(tiny_zoo, tmp_path):
    from hyperrep_hf.models.hyperrep.augmentations import NeuronSignFlip, make_augmentations
    from hyperrep_hf.zoo.networks import TETRIS_MLP

    model = {"d_model": 16, "num_attention_heads": 2, "intermediate_size": 32, "latent_dim": 8, "projection_dim": 4}
    run = {"zoo": str(tiny_zoo), "output_dir": str(tmp_path / "run"), "sign_flip": True}
    run["embedding_symmetry_samples"] = 4
    trainer = Trainer(make_train_config({**run, **model}))  # TETRIS-SEED: tanh
    assert [type(step) for step in trainer.collator.reorder][-1] is NeuronSignFlip
    # The saved model knows what its hyper-representation averages over.
    assert trainer.model_config.symmetries == ["permutation", "sign_flip"]
    assert trainer.model_config.activation == "tanh" and trainer.model_config.embedding_symmetry_samples == 4
    with pytest.raises(ValueError, match=r"sign_flip: .*\['relu', 'tanh'\]"):
        zoo_activation({"hyperparameters": {"activation": ["relu", "tanh"]}})
    with pytest.raises(ValueError, match=r"'relu'.*sign_flip off"):
        make_augmentations(TETRIS_MLP, sign_flip_activation="relu")


def test_existing_run_needs_resume_or_overwrite(tiny_zoo, tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileExistsError, match=r"--resume .* --overwrite"):
        Trainer(make_train_config({"zoo": str(tiny_zoo), "output_dir": str(tmp_path / "run")}))


def test_extra_zoos_join_the_training_rows_without_the_held_out_networks(tiny_zoo, tmp_path):
    # 20 TETRIS-SEED networks: seeds 1..12 are tiny_zoo's own networks, split differently, so some of tiny_zoo's
    # validation and test networks sit in this zoo's train split (MNIST-HYP-1-FIX and -5-FIX overlap the same way).
    overlap = tmp_path / "overlap"
    build_zoo(load_recipe("tetris_seed"), overlap, BuildOptions(num_models=20, epochs=3, subset=120), progress=False)
    model = {"d_model": 16, "num_attention_heads": 2, "intermediate_size": 32, "latent_dim": 8, "projection_dim": 4}
    run = {"zoo": str(tiny_zoo), "output_dir": str(tmp_path / "run"), "batch_size": 8, "epochs": 1, **model}
    run["progress"] = False
    alone = Trainer(make_train_config(run))
    pooled = Trainer(make_train_config({**run, "output_dir": str(tmp_path / "pooled"), "extra_zoos": [str(overlap)]}))

    # A second route to the rows that must be left out: by seed (the networks' identity), not by their bytes.
    mine, _ = load_zoo(tiny_zoo, "tetris_seed")
    theirs, _ = load_zoo(overlap, "tetris_seed")

    def networks(split):
        return zip(split["seed"], split["epoch"], strict=True)

    held_out = {row for split in ("validation", "test") for row in networks(mine[split])}
    expected_dropped = sum(row in held_out for row in networks(theirs["train"]))
    assert expected_dropped > 0
    assert pooled.data.extra_counts == {
        str(overlap): {"rows": len(theirs["train"]) - expected_dropped, "dropped": expected_dropped}
    }
    assert len(pooled.training_vectors) == len(mine["train"]) + len(theirs["train"]) - expected_dropped
    assert pooled.steps_per_epoch == len(pooled.training_vectors) // 8 > alone.steps_per_epoch
    kept = {row.numpy().tobytes() for row in pooled.data.extra_train}
    assert not kept & {row.numpy().tobytes() for split in ("validation", "test") for row in alone.data.vectors[split]}
    # The zoo's own splits, targets and quick-probe rows are untouched; normalisation is fitted on every training row.
    for split in ("train", "validation", "test"):
        assert torch.equal(pooled.data.vectors[split], alone.data.vectors[split])
    assert torch.equal(pooled.eval_rows["probe_train"], alone.eval_rows["probe_train"])
    refit = NeuronTokenProcessor(pooled.processor.architecture, "per_layer")
    refit.fit_normalization(pooled.training_vectors)
    rows = pooled.training_vectors
    assert torch.allclose(refit.normalize_vectors(rows), pooled.processor.normalize_vectors(rows))
    assert not torch.allclose(alone.processor.normalize_vectors(rows), refit.normalize_vectors(rows))
    # epochs_to_use picks the extra zoos' training rows too.
    late = Trainer(make_train_config({**run, "output_dir": str(tmp_path / "late"), "extra_zoos": [str(overlap)],
                                      "epochs_to_use": [3]}))  # fmt: skip
    late_rows = [row for row in networks(theirs["train"]) if row[1] == 3]
    assert late.data.extra_counts[str(overlap)] == {
        "rows": sum(row not in held_out for row in late_rows),
        "dropped": sum(row in held_out for row in late_rows),
    }
    assert len(late.training_vectors) == mine["train"]["epoch"].count(3) + len(late_rows) - sum(
        row in held_out for row in late_rows
    )
    pooled.train()  # the run records what it trained on
    final = json.loads((tmp_path / "pooled" / "metrics.jsonl").read_text().splitlines()[-1])
    assert final["train_rows"] == len(rows) and final["extra_zoo_rows"] == pooled.data.extra_counts
    assert json.loads((tmp_path / "pooled" / "train_config.json").read_text())["extra_zoos"] == [str(overlap)]


def test_an_extra_zoo_named_twice_is_refused(tiny_zoo, tmp_path):
    run = {"zoo": str(tiny_zoo), "output_dir": str(tmp_path / "run"), "extra_zoos": [f"{tiny_zoo}:tetris_seed"]}
    with pytest.raises(ValueError, match=r"extra_zoos: .* already named: its rows would count twice"):
        Trainer(make_train_config(run))
    assert not (tmp_path / "run").exists()


def test_a_missing_extra_zoo_says_how_to_build_it_or_go_without(tiny_zoo, tmp_path):
    # The TETRIS-HYP preset names zoos_built:tetris_seed: a user who built only TETRIS-HYP learns what to do.
    missing = f"{tmp_path}/nowhere:tetris_seed"
    run = {"zoo": str(tiny_zoo), "output_dir": str(tmp_path / "run"), "extra_zoos": [missing]}
    with pytest.raises(FileNotFoundError) as caught:
        Trainer(make_train_config(run))
    message = str(caught.value)
    assert message.startswith("extra_zoos: ") and f"{tmp_path}/nowhere" in message
    assert f"hyperrep zoo build RECIPE --out {tmp_path}/nowhere" in message and "--extra-zoos none" in message
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------------- end to end
def _weights(folder):
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.slow
def test_train_script_checkpoints_resumes_and_saves(tiny_zoo, tmp_path):
    run = tmp_path / "run"
    arguments = [str(REPOSITORY / "training" / "configs" / "tetris_seed.yaml"), "--zoo", f"{tiny_zoo}:tetris_seed"]
    arguments += ["--epochs", "2", "--eval-every", "1", "--checkpoint-every", "1", "--keep-checkpoints", "5"]
    arguments += TINY_MODEL
    _launch([*arguments, "--output-dir", str(run)])

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in records] == [1, 2, 2] and records[-1]["final"] is True
    for record in records[:2]:
        assert {"train/loss", "train/reconstruction_loss", "validation/reconstruction_r2"} <= set(record)
        assert "validation/probe_r2_test_accuracy" in record and record["train/samples_per_second"] > 0
    assert {"test/reconstruction_r2", "test/probe_r2_test_accuracy"} <= set(records[-1])
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["epochs"] == 2 and saved["d_model"] == 16

    steps = sorted(int(path.name) for path in (run / "checkpoints").glob("[0-9]*"))
    assert len(steps) == 2 and (run / "checkpoints" / "last").read_text().strip() == f"{steps[-1]:06d}"
    first = run / "checkpoints" / f"{steps[0]:06d}"
    assert isinstance(HyperRepForPreTraining.from_pretrained(first / "pretrained_model"), HyperRepForPreTraining)
    assert (first / "training_state").is_dir() and json.loads((first / "trainer_state.json").read_text())["epoch"] == 1

    encoder = AutoModel.from_pretrained(run)
    processor = AutoFeatureExtractor.from_pretrained(run)
    assert isinstance(encoder, HyperRepModel) and isinstance(processor, NeuronTokenProcessor)
    dataset, _ = load_zoo(tiny_zoo, "tetris_seed")
    inputs = processor(dataset["test"].with_format("torch")["weights"][:4])
    assert encoder(**inputs).embeddings.shape == (4, 8)

    # A run killed after its first checkpoint: later checkpoints and the final files never got written.
    killed = tmp_path / "killed"
    shutil.copytree(run, killed)
    shutil.rmtree(killed / "checkpoints" / f"{steps[-1]:06d}")
    for name in ("model.safetensors", "config.json", "preprocessor_config.json"):
        (killed / name).unlink()
    (killed / "checkpoints" / "last").write_text(f"{steps[0]:06d}\n")
    assert find_last_checkpoint(killed / "checkpoints") == killed / "checkpoints" / f"{steps[0]:06d}"
    _launch([*arguments, "--output-dir", str(killed), "--resume"])
    resumed, uninterrupted = _weights(killed), _weights(run)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name  # bit for bit
    resumed_records = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in resumed_records] == [1, 2, 2]
    assert resumed_records[1]["train/loss"] == records[1]["train/loss"]


@pytest.mark.slow
def test_two_process_ddp_gathers_metrics_exactly(tiny_zoo, tmp_path):
    run = tmp_path / "ddp"
    arguments = ["--zoo", str(tiny_zoo), "--output-dir", str(run), "--epochs", "2", "--batch-size", "8"]
    arguments += ["--checkpoint-every", "1", "--loss-type", "ecd", *TINY_MODEL]
    _launch(arguments, num_processes=2)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [record.get("num_processes") for record in records] == [2, 2, None]
    final = records[-1]

    # The gathered R² must equal the one computed on one process from the saved model, with no row dropped or
    # counted twice (8 validation rows over 2 processes × batches of 3 pad the last round).
    model = HyperRepForPreTraining.from_pretrained(run).eval()
    processor = NeuronTokenProcessor.from_pretrained(run)
    dataset, _ = load_zoo(tiny_zoo, "tetris_seed")
    for split in ("validation", "test"):
        clean = dataset[split].with_format("torch")["weights"][:]
        inputs = processor(clean)
        with torch.no_grad():
            embeddings = model.hyperrep(**inputs).embeddings
            predicted = processor.to_vectors(model.decoder(embeddings, inputs["attention_mask"]))
        residual = (predicted.double() - clean.double()).pow(2).sum()
        r2 = 1 - residual / (clean.double() - clean.double().mean(0)).pow(2).sum()
        assert final[f"{split}/reconstruction_r2"] == pytest.approx(float(r2), abs=1e-5)
    assert (run / "checkpoints" / "last").is_file()
    # Every rank's RNG state is inside each checkpoint, and no half-written folder is left beside them.
    for checkpoint in (run / "checkpoints").glob("[0-9]*"):
        states = sorted(p.name for p in (checkpoint / "training_state").glob("random_states_*"))
        assert states == ["random_states_0.pkl", "random_states_1.pkl"], (checkpoint, states)
    assert not [p.name for p in (run / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_the_model_wrapper_is_let_go_before_the_process_group(tiny_zoo, tmp_path):
    """DDP's reducer must not outlive the process group: freed last by it, the group's destructor can deadlock.

    (A two-process CI run hung at exit this way: the reducer's destructor held the GIL while joining a gloo worker
    that waited for it.) What ``end_training`` finds here is what destroy_process_group would find on many processes.
    """
    run = {**TINY_RUN, "zoo": str(tiny_zoo), "output_dir": str(tmp_path / "run"), "epochs": 1}
    trainer = Trainer(make_train_config(run))
    accelerator, seen = trainer.accelerator, []
    real_end_training = accelerator.end_training

    def recording_end_training():
        seen.append((list(accelerator._models), trainer.model))
        real_end_training()

    accelerator.end_training = recording_end_training
    trainer.train()
    [(held_by_accelerate, model)] = seen
    assert held_by_accelerate == []
    assert type(model) is HyperRepForPreTraining  # the bare model stays usable after training


def test_checkpoint_folder_is_renamed_only_after_every_process_wrote_into_it(tiny_zoo, tmp_path, monkeypatch):
    """The checkpoint folder is written by every process (each its own RNG state) and renamed by the main one.

    A barrier must sit between the last write and the rename, or a slower rank writes into a folder that is gone
    (a two-process run once failed this way at random). The order of events is recorded on one process.
    """
    import hyperrep_hf.training.trainer as trainer_module

    run = {"zoo": str(tiny_zoo), "output_dir": str(tmp_path / "run"), "epochs": 1, "batch_size": 8}
    run |= {"num_threads": 1, "progress": False, "d_model": 16, "num_attention_heads": 2, "intermediate_size": 32}
    trainer = Trainer(make_train_config({**run, "latent_dim": 8, "projection_dim": 4}))
    events = []

    def recorded(function, event):
        def wrapper(*args, **kwargs):
            events.append(event)
            return function(*args, **kwargs)

        return wrapper

    accelerator = trainer.accelerator
    monkeypatch.setattr(accelerator, "save_state", recorded(accelerator.save_state, "write"))
    monkeypatch.setattr(accelerator, "wait_for_everyone", recorded(accelerator.wait_for_everyone, "barrier"))
    monkeypatch.setattr(trainer, "save_pretrained", recorded(trainer.save_pretrained, "write"))
    monkeypatch.setattr(trainer_module, "replace_path", recorded(trainer_module.replace_path, "rename"))

    final = trainer.save_checkpoint()
    assert (final / "training_state").is_dir() and (final / "pretrained_model" / "config.json").is_file()
    last_write, rename = max(i for i, e in enumerate(events) if e == "write"), events.index("rename")
    assert "barrier" in events[last_write:rename], events


# ------------------------------------------------------------------------------------------- canonical_embedding
@pytest.mark.parametrize(
    ("changes", "names"),
    [
        ({"embedding_symmetry_samples": 16}, ["canonical_embedding=True", "embedding_symmetry_samples=16"]),
        ({"canonical": True, "permute": False}, ["canonical_embedding=True", "canonical=True"]),
    ],
)
def test_canonical_embedding_refuses_contradictions_before_training(tmp_path, changes, names):
    run = {"zoo": "z", "output_dir": str(tmp_path / "run"), "canonical_embedding": True, **changes}
    with pytest.raises(ValueError) as error:
        make_train_config(run)
    assert all(name in str(error.value) for name in names), error.value
    assert not (tmp_path / "run").exists()


def _random_tanh_networks(processor, count, seed):
    """Raw flat vectors of random tanh networks of the processor's architecture (no two keys tied)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, processor.architecture["num_parameters"], generator=generator) * 0.5


def test_canonical_embedding_trains_the_same_and_saves_an_invariant_model(tiny_zoo, tmp_path):
    from hyperrep_hf.models.hyperrep.augmentations import NeuronPermutation, NeuronSignFlip
    from hyperrep_hf.models.hyperrep.embeddings import embed_vectors, symmetry_transforms

    model = {"d_model": 16, "num_attention_heads": 2, "intermediate_size": 32, "latent_dim": 8, "projection_dim": 4}
    run = {"zoo": str(tiny_zoo), "epochs": 1, "batch_size": 8, "sign_flip": True, "loss_type": "ecd", "beta": 0.9}
    run |= {"checkpoint_every": 1, "num_threads": 1, "progress": False, "eval_batch_size": 50, **model}
    folders = {}
    for canonical in (False, True):
        folders[canonical] = tmp_path / f"canonical_{canonical}"
        trainer = Trainer(
            make_train_config({**run, "output_dir": str(folders[canonical]), "canonical_embedding": canonical})
        )
        assert not trainer.processor.canonical  # training sees the raw weights either way
        trainer.train()
        AcceleratorState._reset_state(True)
        PartialState._reset_state()
    # Training is the same run bit for bit: only the saved processor differs.
    plain, canonical = _weights(folders[False]), _weights(folders[True])
    assert plain.keys() == canonical.keys()
    for name, tensor in plain.items():
        assert torch.equal(canonical[name], tensor), name
    saved = {c: json.loads((folders[c] / "preprocessor_config.json").read_text()) for c in folders}
    assert saved[True]["canonical"] is True and saved[True]["canonical_activation"] == "tanh"
    assert saved[False]["canonical"] is False
    assert saved[True]["normalization_stats"] == saved[False]["normalization_stats"]
    assert {k: v for k, v in saved[True].items() if not k.startswith("canonical")} == {
        k: v for k, v in saved[False].items() if not k.startswith("canonical")
    }
    checkpoint = find_last_checkpoint(folders[True] / "checkpoints") / "pretrained_model"
    assert json.loads((checkpoint / "preprocessor_config.json").read_text()) == saved[True]

    # One network, one answer: the saved canonical model's z does not move under permutations + sign flips.
    moved_by = {}
    for canonical, folder in folders.items():
        encoder = HyperRepModel.from_pretrained(folder).eval()
        processor = NeuronTokenProcessor.from_pretrained(folder)
        transforms = symmetry_transforms(encoder.config, processor.architecture)
        moved_by[canonical] = 0.0
        for seed in range(4):
            vectors = _random_tanh_networks(processor, 6, seed)
            permutation = NeuronPermutation(processor.architecture, generator=torch.Generator().manual_seed(seed))
            flip = NeuronSignFlip(processor.architecture, "tanh")
            generator = torch.Generator().manual_seed(100 + seed)
            with torch.no_grad():
                reference = embed_vectors(encoder, processor, vectors, transforms)
                for _ in range(3):
                    moved = flip(permutation(vectors, generator), generator)
                    assert not torch.equal(moved, vectors)
                    z = embed_vectors(encoder, processor, moved, transforms)
                    moved_by[canonical] = max(moved_by[canonical], float((z - reference).abs().max()))
    assert moved_by[True] < 1e-5, moved_by
    assert moved_by[False] > 1e-3, moved_by  # the raw model does move: the check can fail


# ------------------------------------------------------------------------------------------- load_best_model_at_end
TINY_RUN = {"d_model": 16, "num_attention_heads": 2, "intermediate_size": 32, "latent_dim": 8, "projection_dim": 4}
TINY_RUN |= {"batch_size": 8, "num_threads": 1, "progress": False, "eval_batch_size": 50, "eval_every": 1}


def _scripted_validation(monkeypatch, scores):
    """The real evaluation, with the validation reconstruction R² of each epoch replaced by the next of ``scores``."""
    real = getattr(Trainer.evaluate, "__wrapped__", Trainer.evaluate)  # scripted twice in one test: wrap the real one
    scores = iter(scores)

    def evaluate(self, final=False):
        metrics = real(self, final)
        if not final:
            metrics["validation/reconstruction_r2"] = next(scores)
        return metrics

    evaluate.__wrapped__ = real
    monkeypatch.setattr(Trainer, "evaluate", evaluate)


@pytest.mark.parametrize(
    ("scores", "best_epoch"),
    [([0.5, 0.9, 0.1, 0.3], 2), ([0.1, 0.2, 0.3, 0.4], 4), ([0.9, 0.2, 0.9, 0.1], 3), ([0.2, 0.1, 0.3, 0.3], 4)],
)
def test_load_best_model_at_end_saves_the_best_checkpoint_and_never_rotates_it_away(
    tiny_zoo, tmp_path, monkeypatch, scores, best_epoch
):
    _scripted_validation(monkeypatch, scores)
    run = tmp_path / "run"
    config = {**TINY_RUN, "zoo": str(tiny_zoo), "output_dir": str(run), "epochs": 4, "checkpoint_every": 1}
    trainer = Trainer(make_train_config({**config, "keep_checkpoints": 1, "load_best_model_at_end": True}))
    trainer.train()
    final = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    # A tie goes to the later model (epoch 3 against 1, epoch 4 against 3): it is the one trained longer.
    assert final["best_model"]["epoch"] == best_epoch and final["best_model"]["value"] == max(scores)
    checkpoints = {int(path.name): path for path in (run / "checkpoints").glob("[0-9]*")}
    steps_per_epoch = trainer.steps_per_epoch
    assert sorted(checkpoints) == sorted({best_epoch * steps_per_epoch, 4 * steps_per_epoch})  # newest + best
    best = _weights(checkpoints[best_epoch * steps_per_epoch] / "pretrained_model")
    saved = _weights(run)
    assert saved.keys() == best.keys() and all(torch.equal(saved[name], best[name]) for name in best)
    state = json.loads((checkpoints[4 * steps_per_epoch] / "trainer_state.json").read_text())
    assert state["best"] == final["best_model"]  # the last checkpoint records it: a resumed run knows it


def test_load_best_model_at_end_survives_a_killed_run(tiny_zoo, tmp_path, monkeypatch):
    """Killed before its epoch-4 checkpoint (best: epoch 2), resumed: the best is still known and still on disk."""
    run = tmp_path / "run"
    config = {**TINY_RUN, "zoo": str(tiny_zoo), "output_dir": str(run), "epochs": 4, "checkpoint_every": 1}
    config |= {"keep_checkpoints": 2, "load_best_model_at_end": True}
    _scripted_validation(monkeypatch, [0.5, 0.9, 0.1, 0.2])
    first = Trainer(make_train_config(config))
    first.train()
    AcceleratorState._reset_state(True)
    PartialState._reset_state()
    steps = first.steps_per_epoch
    best_weights = _weights(run / "checkpoints" / f"{2 * steps:06d}" / "pretrained_model")
    shutil.rmtree(run / "checkpoints" / f"{4 * steps:06d}")  # the kill: no epoch-4 checkpoint, no final model
    (run / "checkpoints" / "last").write_text(f"{3 * steps:06d}\n")
    (run / "model.safetensors").unlink()
    _scripted_validation(monkeypatch, [0.2])  # epoch 4, trained again, scores below epoch 2's 0.9
    resumed = Trainer(make_train_config({**config, "resume": True}))
    assert resumed.best["epoch"] == 2 and resumed.epoch == 3
    resumed.train()
    saved = _weights(run)
    assert saved.keys() == best_weights.keys()
    assert all(torch.equal(saved[name], tensor) for name, tensor in best_weights.items())


@pytest.mark.parametrize(("checkpoint_every", "eval_every"), [(0, 1), (3, 2)])
def test_load_best_model_at_end_needs_evaluated_checkpoints(checkpoint_every, eval_every):
    run = {"zoo": "z", "output_dir": "o", "load_best_model_at_end": True}
    with pytest.raises(ValueError, match="load_best_model_at_end=True with checkpoint_every"):
        make_train_config({**run, "checkpoint_every": checkpoint_every, "eval_every": eval_every})


def test_load_best_model_at_end_names_a_deleted_best_checkpoint(tiny_zoo, tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, [0.9, 0.1])
    run = tmp_path / "run"
    config = {**TINY_RUN, "zoo": str(tiny_zoo), "output_dir": str(run), "epochs": 2, "checkpoint_every": 1}
    trainer = Trainer(make_train_config({**config, "load_best_model_at_end": True}))
    real_save = Trainer.save_checkpoint

    def save_then_lose_the_first(self):
        saved = real_save(self)
        if self.epoch == 2:
            shutil.rmtree(run / "checkpoints" / f"{self.steps_per_epoch:06d}")
        return saved

    monkeypatch.setattr(Trainer, "save_checkpoint", save_then_lose_the_first)
    with pytest.raises(FileNotFoundError, match=r"epoch 1.*deleted by hand"):
        trainer.train()


@pytest.mark.parametrize("metric", ["reconstruction_r2", "probe_r2"])
def test_the_loaded_best_model_scores_what_was_recorded_for_it(tiny_zoo, tmp_path, metric):
    """Unscripted: the best is the maximum in metrics.jsonl; the final evaluation of the loaded model repeats it."""
    run = tmp_path / "run"
    config = {**TINY_RUN, "zoo": str(tiny_zoo), "output_dir": str(run), "epochs": 4, "checkpoint_every": 1}
    config |= {"learning_rate": 3e-2, "load_best_model_at_end": True, "metric_for_best_model": metric}
    Trainer(make_train_config(config)).train()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = {"reconstruction_r2": "validation/reconstruction_r2", "probe_r2": "validation/probe_r2_test_accuracy"}
    key = keys[metric]
    per_epoch = {record["epoch"]: record[key] for record in records if not record.get("final")}
    best_epoch = max(sorted(per_epoch, reverse=True), key=per_epoch.get)  # a tie: the later epoch
    final = records[-1]
    assert final["best_model"]["epoch"] == best_epoch and final["best_model"]["metric"] == key
    assert final[key] == pytest.approx(per_epoch[best_epoch], abs=1e-6)
