"""A user's own nn.Module of the zoo's architecture (its own class and attribute names) is read as the zoo's network;
another architecture, or an order that cannot be told apart, is refused naming the parameters and shapes."""

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from hyperrep_hf import MNIST_CNN, NeuronTokenProcessor, make_module
from hyperrep_hf.zoo.networks import NetworkSpec, flatten_state_dict


class UserCNN(nn.Module):
    """The MNIST CNN as a user writes it (torchvision style): its own names, pooling and activation as modules."""

    def __init__(self, conv2_kernel: int = 5, fc_first: bool = False) -> None:
        super().__init__()
        if fc_first:  # registered before the convolutions: the state_dict's order is not the forward order
            self.fc1, self.fc2 = nn.Linear(36, 20), nn.Linear(20, 10)
        self.conv1 = nn.Conv2d(1, 8, 5)
        self.conv2 = nn.Conv2d(8, 6, conv2_kernel)
        self.conv3 = nn.Conv2d(6, 4, 2)
        if not fc_first:
            self.fc1, self.fc2 = nn.Linear(36 if conv2_kernel == 5 else 64, 20), nn.Linear(20, 10)
        self.pool, self.act = nn.MaxPool2d(2), nn.Tanh()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        hidden = self.act(self.pool(self.conv1(images)))
        hidden = self.act(self.pool(self.conv2(hidden)))
        hidden = self.act(self.conv3(hidden)).flatten(1)
        return self.fc2(self.act(self.fc1(hidden)))


def ours_from(user: UserCNN) -> nn.Module:
    """The library's module of MNIST_CNN carrying the user's weights, layer by layer."""
    ours = make_module(MNIST_CNN, "tanh")
    modules = [user.conv1, user.conv2, user.conv3, user.fc1, user.fc2]
    for layer, module in zip(MNIST_CNN.parameter_layers, modules, strict=True):
        ours.layers[layer.index].load_state_dict(module.state_dict())
    return ours


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("fc_first", [False, True])
def test_a_users_cnn_is_read_as_the_zoos_network(seed, fc_first):
    torch.manual_seed(seed)
    user = UserCNN(fc_first=fc_first)
    ours = ours_from(user)
    images = torch.randn(5, 1, 28, 28)
    assert torch.allclose(user(images), ours(images), atol=1e-6)  # the same function: the mapping is the right one
    processor = NeuronTokenProcessor(MNIST_CNN)
    expected = flatten_state_dict(MNIST_CNN, ours.state_dict())
    assert torch.equal(processor.networks_to_vectors([user])[0], expected)
    assert torch.equal(processor.networks_to_vectors([user.state_dict()])[0], expected)


def test_a_cnn_of_another_architecture_names_the_parameters_and_shapes():
    processor = NeuronTokenProcessor(MNIST_CNN)
    with pytest.raises(ValueError) as caught:
        processor([UserCNN(conv2_kernel=3)])
    message = str(caught.value)
    assert "another architecture" in message
    assert (
        "parameter 2 'conv2.weight' has shape [6, 8, 3, 3], the encoder's 'layers.3.weight' has [6, 8, 5, 5]"
        in message
    )
    assert "parameter 6 'fc1.weight' has shape [20, 64], the encoder's 'layers.9.weight' has [20, 36]" in message


def test_one_missing_layer_is_named_with_the_counts():
    state_dict = dict(UserCNN().state_dict())
    del state_dict["fc2.weight"], state_dict["fc2.bias"]
    with pytest.raises(ValueError, match=r"it has 8 parameter tensors, the architecture 10"):
        NeuronTokenProcessor(MNIST_CNN)([state_dict])


MLP = NetworkSpec.parse((16,), ["linear:16", "act", "linear:16", "act", "linear:4"], "mlp_16_16_4")


class UserMLP(nn.Module):
    def __init__(self, out_first: bool) -> None:
        super().__init__()
        if out_first:
            self.out = nn.Linear(16, 4)
        self.hidden1, self.hidden2 = nn.Linear(16, 16), nn.Linear(16, 16)
        if not out_first:
            self.out = nn.Linear(16, 4)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden2(torch.tanh(self.hidden1(inputs)))))


def test_an_order_that_cannot_be_told_apart_is_refused(tmp_path):
    processor = NeuronTokenProcessor(MLP)
    in_order = UserMLP(out_first=False)
    expected = torch.cat([tensor.reshape(-1) for tensor in in_order.state_dict().values()])
    assert torch.equal(processor.networks_to_vectors([in_order])[0], expected)
    with pytest.raises(
        ValueError, match=r"\['hidden1.weight', 'hidden2.weight'\] share shape \[16, 16\].*forward order"
    ):
        processor([UserMLP(out_first=True)])
    # A file keeps no order (its tensors come back sorted by name): with shapes shared, only our names will do.
    save_file(in_order.state_dict(), tmp_path / "mlp.safetensors")
    with pytest.raises(ValueError, match=r"share shape \[16, 16\].*keeps no order"):
        processor([str(tmp_path / "mlp.safetensors")])


@pytest.mark.parametrize("seed", range(3))
def test_a_users_cnn_saved_as_safetensors_is_read_by_its_unique_shapes(seed, tmp_path):
    torch.manual_seed(seed)
    user = UserCNN(fc_first=bool(seed % 2))
    save_file(user.state_dict(), tmp_path / "cnn.safetensors")
    expected = flatten_state_dict(MNIST_CNN, ours_from(user).state_dict())
    vector = NeuronTokenProcessor(MNIST_CNN).networks_to_vectors(str(tmp_path / "cnn.safetensors"))[0]
    assert torch.equal(vector, expected)


def test_a_weight_and_a_bias_of_different_modules_are_refused():
    renamed = {"a.weight" if key == "conv1.weight" else key: value for key, value in UserCNN().state_dict().items()}
    with pytest.raises(ValueError, match=r"'a.weight' and bias 'conv1.bias' .* different modules"):
        NeuronTokenProcessor(MNIST_CNN)([renamed])


def test_a_plain_sequential_without_the_zoos_dropout_layers_is_read_by_its_shapes():
    """MNIST-HYP's network has dropout layers, so its names are layers.0, .4, .8, .12, .15; a user's Sequential
    without them has 0, 3, 6, 9, 11 — '0.weight' matches one of ours by suffix, the others none."""
    hyp = NetworkSpec.parse(
        (1, 28, 28),
        ["conv:8:5", "maxpool:2", "act", "dropout", "conv:6:5", "maxpool:2", "act", "dropout", "conv:4:2", "act",
         "dropout", "flatten", "linear:20", "act", "dropout", "linear:10"],
        "mnist_cnn_dropout",
    )  # fmt: skip
    torch.manual_seed(0)
    user = nn.Sequential(
        nn.Conv2d(1, 8, 5), nn.MaxPool2d(2), nn.Tanh(), nn.Conv2d(8, 6, 5), nn.MaxPool2d(2), nn.Tanh(),
        nn.Conv2d(6, 4, 2), nn.Tanh(), nn.Flatten(), nn.Linear(36, 20), nn.Tanh(), nn.Linear(20, 10),
    )  # fmt: skip
    expected = torch.cat([tensor.reshape(-1) for tensor in user.state_dict().values()])
    assert torch.equal(NeuronTokenProcessor(hyp).networks_to_vectors([user])[0], expected)
