"""Weights move between cnnlab and PyTorch unchanged (torch is only an oracle here).

cnnlab's ``state_dict()`` keys and array layouts are PyTorch's, so a cnnlab model's weights
load into the same architecture written in ``torch.nn`` and give the same logits, and a
torch-initialised model's weights (as NumPy arrays, or through a safetensors file) load into
cnnlab. BatchNorm buffers, including the int64 ``num_batches_tracked``, travel too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.numpy import load_file  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import nn as tnn  # noqa: E402

from cnnlab.autograd import Tensor, no_grad  # noqa: E402
from cnnlab.models import MNIST1DCNN, LeNet1989, ResNetSmall, build_model, lenet5  # noqa: E402

ATOL = 1e-5


# -- the same architectures in torch.nn ---------------------------------------------------


def torch_lenet5() -> tnn.Module:
    return tnn.Sequential(
        tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Flatten(),
        tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
        tnn.Linear(84, 10),
    )


class TorchMNIST1DCNN(tnn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = tnn.Conv1d(1, 25, 5, stride=2, padding=1)
        self.conv2 = tnn.Conv1d(25, 25, 3, stride=2, padding=1)
        self.conv3 = tnn.Conv1d(25, 25, 3, stride=2, padding=1)
        self.linear = tnn.Linear(125, 10)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.conv3(h))
        return self.linear(h.flatten(1))


class TorchLeNet1989(tnn.Module):
    H2_INPUTS = LeNet1989.H2_INPUTS

    def __init__(self) -> None:
        super().__init__()
        self.h1 = tnn.Conv2d(1, 12, 5, stride=2, bias=False)
        self.h1_bias = tnn.Parameter(torch.zeros(12, 8, 8))
        self.h2 = tnn.ModuleList([tnn.Conv2d(8, 4, 5, stride=2, bias=False)
                                  for _ in self.H2_INPUTS])
        self.h2_bias = tnn.Parameter(torch.zeros(12, 4, 4))
        self.h3 = tnn.Linear(192, 30)
        self.out = tnn.Linear(30, 10)

    def forward(self, x):
        x = tnn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
        h1 = torch.tanh(self.h1(x) + self.h1_bias)
        h1 = tnn.functional.pad(h1, (2, 2, 2, 2), value=0.0)
        maps = [conv(h1[:, list(inputs)]) for conv, inputs in zip(self.h2, self.H2_INPUTS)]
        h2 = torch.tanh(torch.cat(maps, dim=1) + self.h2_bias)
        return self.out(torch.tanh(self.h3(h2.flatten(1))))


class TorchBasicBlock(tnn.Module):
    """torchvision's BasicBlock, as cnnlab.nn.ResidualBlock mirrors it."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(c_out)
        self.relu = tnn.ReLU()
        self.conv2 = tnn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = tnn.Sequential(tnn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                             tnn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class TorchResNetSmall(tnn.Module):
    def __init__(self, in_channels: int = 3, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(widths[0])
        blocks, width = [], widths[0]
        for index, channels in enumerate(widths):
            blocks.append(TorchBasicBlock(width, channels, 1 if index == 0 else 2))
            width = channels
        self.layers = tnn.Sequential(*blocks)
        self.pool = tnn.AdaptiveAvgPool2d(1)
        self.fc = tnn.Linear(width, 10)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(self.pool(self.layers(h)).flatten(1))


# (name, cnnlab builder, torch builder, input shape)
PAIRS = {
    "lenet5": (lambda rng: lenet5(rng), torch_lenet5, (1, 28, 28)),
    "mnist1d-cnn": (lambda rng: MNIST1DCNN(rng), TorchMNIST1DCNN, (1, 40)),
    "lenet1989": (lambda rng: LeNet1989(rng), TorchLeNet1989, (1, 16, 16)),
}


def _input(shape: tuple[int, ...], n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _cnnlab_logits(model, x: np.ndarray) -> np.ndarray:
    model.eval()
    with no_grad():
        return model(Tensor(x)).data


def _torch_logits(model, x: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _to_torch(state: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in state.items()}


def _to_numpy(state) -> dict[str, np.ndarray]:
    return {key: value.detach().cpu().numpy() for key, value in state.items()}


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_cnnlab_weights_load_into_torch(name):
    build, build_torch, shape = PAIRS[name]
    ours = build(np.random.default_rng(1))
    theirs = build_torch()
    state = ours.state_dict()
    assert list(state) == list(theirs.state_dict())  # same keys, same order
    result = theirs.load_state_dict(_to_torch(state), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    x = _input(shape)
    expected = _torch_logits(theirs, x)
    np.testing.assert_allclose(_cnnlab_logits(ours, x), expected, rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_torch_weights_load_into_cnnlab_as_numpy(name):
    build, build_torch, shape = PAIRS[name]
    torch.manual_seed(0)
    theirs = build_torch()
    ours = build(np.random.default_rng(1))
    ours.load_state_dict(_to_numpy(theirs.state_dict()))
    x = _input(shape, seed=1)
    np.testing.assert_allclose(_cnnlab_logits(ours, x), _torch_logits(theirs, x), rtol=0,
                               atol=ATOL)


@pytest.mark.parametrize("name", ["lenet5", "mnist1d-cnn"])
def test_torch_weights_load_into_cnnlab_through_safetensors(name, tmp_path: Path):
    build, build_torch, shape = PAIRS[name]
    torch.manual_seed(1)
    theirs = build_torch()
    path = tmp_path / "weights.safetensors"
    save_file(theirs.state_dict(), str(path))
    arrays = load_file(str(path))  # NumPy arrays, no torch involved from here on
    assert all(isinstance(value, np.ndarray) for value in arrays.values())
    ours = build(np.random.default_rng(2))
    ours.load_state_dict(arrays)
    x = _input(shape, seed=2)
    np.testing.assert_allclose(_cnnlab_logits(ours, x), _torch_logits(theirs, x), rtol=0,
                               atol=ATOL)


def test_registry_builds_the_same_keys_as_torch():
    model = build_model("lenet5", np.random.default_rng(0), (1, 28, 28), 10)
    assert list(model.state_dict()) == list(torch_lenet5().state_dict())


def _trained_resnet(rng: np.random.Generator):
    """A ResNetSmall whose BatchNorm buffers moved away from their initial values."""
    model = ResNetSmall(rng, in_channels=1, widths=(4, 8, 8))
    model.train()
    for seed in range(3):  # three training-mode forwards update the running statistics
        model(Tensor(_input((1, 8, 8), n=6, seed=10 + seed)))
    return model


def test_resnet_small_with_batchnorm_buffers_loads_into_torch():
    ours = _trained_resnet(np.random.default_rng(0))
    state = ours.state_dict()
    tracked = [key for key in state if key.endswith("num_batches_tracked")]
    assert tracked and all(state[key].dtype == np.int64 and state[key].shape == ()
                           and int(state[key]) == 3 for key in tracked)
    assert not np.allclose(state["bn1.running_mean"], 0)
    theirs = TorchResNetSmall(in_channels=1, widths=(4, 8, 8))
    assert list(state) == list(theirs.state_dict())
    theirs.load_state_dict(_to_torch(state))
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(value.numpy(), state[key], err_msg=key)
    x = _input((1, 8, 8), n=5, seed=4)
    # Evaluation uses the running statistics, so equal logits mean equal buffers in use.
    np.testing.assert_allclose(_cnnlab_logits(ours, x), _torch_logits(theirs, x), rtol=0,
                               atol=ATOL)
    # One more training-mode step in both: batch statistics and buffer updates agree.
    ours.train()
    theirs.train()
    out = ours(Tensor(x)).data
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, expected, rtol=0, atol=ATOL)
    after = ours.state_dict()
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(after[key], value.numpy(), rtol=1e-5, atol=1e-6,
                                   err_msg=key)


def test_resnet_small_round_trips_through_torch_and_safetensors(tmp_path: Path):
    torch.manual_seed(3)
    theirs = TorchResNetSmall(in_channels=1, widths=(4, 8, 8))
    theirs.train()
    with torch.no_grad():
        for seed in range(2):
            theirs(torch.from_numpy(_input((1, 8, 8), n=6, seed=seed)))
    path = tmp_path / "resnet.safetensors"
    save_file(theirs.state_dict(), str(path))
    ours = ResNetSmall(np.random.default_rng(5), in_channels=1, widths=(4, 8, 8))
    ours.load_state_dict(load_file(str(path)))
    back = ours.state_dict()
    for key, value in theirs.state_dict().items():
        assert back[key].dtype == value.numpy().dtype, key
        np.testing.assert_array_equal(back[key], value.numpy(), err_msg=key)
    assert int(back["bn1.num_batches_tracked"]) == 2
    x = _input((1, 8, 8), n=3, seed=9)
    np.testing.assert_allclose(_cnnlab_logits(ours, x), _torch_logits(theirs, x), rtol=0,
                               atol=ATOL)
