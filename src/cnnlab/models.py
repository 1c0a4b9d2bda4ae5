"""The lecture's networks, built from ``cnnlab.nn`` with PyTorch-compatible state_dict keys.

Each builder takes ``rng: np.random.Generator`` (initialisation is PyTorch's default) and
returns a :class:`cnnlab.nn.Module`. :data:`MODELS` maps CLI names to builders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import functional as F
from . import nn
from .autograd import Tensor, concatenate
from .ops._args import check_choice


class Logistic(nn.Module):
    """Multinomial logistic regression: flatten, one linear layer."""

    def __init__(self, in_features: int, num_classes: int, rng: np.random.Generator) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.linear = nn.Linear(in_features, num_classes, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.flatten(x))


def mlp(in_features: int, num_classes: int, rng: np.random.Generator,
        hidden: tuple[int, ...] = (100, 100)) -> nn.Module:
    """Flatten, then Linear-ReLU blocks (the MNIST-1D paper's MLP is 40-100-100-10)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size, rng=rng), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, num_classes, rng=rng))
    return nn.Sequential(*layers)


class MNIST1DCNN(nn.Module):
    """The MNIST-1D paper's CNN (Greydanus 2020): three 1-D convolutions of 25 channels,
    kernels 5/3/3, stride 2, padding 1, ReLU, then a linear layer.

    x: (N, 1, 40) -> 19 -> 10 -> 5 positions x 25 channels = 125 features -> (N, 10).
    """

    def __init__(self, rng: np.random.Generator, length: int = 40, channels: int = 25,
                 num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, channels, 5, stride=2, padding=1, rng=rng)
        self.conv2 = nn.Conv1d(channels, channels, 3, stride=2, padding=1, rng=rng)
        self.conv3 = nn.Conv1d(channels, channels, 3, stride=2, padding=1, rng=rng)
        out = length
        for k in (5, 3, 3):
            out = (out + 2 - k) // 2 + 1
        self.linear = nn.Linear(channels * out, num_classes, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.conv1(x))
        h = F.relu(self.conv2(h))
        h = F.relu(self.conv3(h))
        return self.linear(h.flatten(1))


class LeNet1989(nn.Module):
    """LeCun et al. 1989's zip-code network, as the paper describes it.

    16x16 input (padded with -1, the background), H1: 12 feature maps 8x8 from shared 5x5
    kernels with stride 2; H2: 12 maps 4x4, each combining 8 of the 12 H1 maps (three
    groups of 4 maps read H1 maps 0-7, 4-11 and {0-3, 8-11}); H3: 30 units; 10 outputs.
    Every unit has its own bias, as in the paper; tanh activations. 9,760 parameters.
    """

    H2_INPUTS = ((0, 1, 2, 3, 4, 5, 6, 7), (4, 5, 6, 7, 8, 9, 10, 11),
                 (0, 1, 2, 3, 8, 9, 10, 11))

    def __init__(self, rng: np.random.Generator, num_classes: int = 10) -> None:
        super().__init__()
        self.h1 = nn.Conv2d(1, 12, 5, stride=2, bias=False, rng=rng)
        self.h1_bias = nn.Parameter(np.zeros((12, 8, 8), np.float32))
        self.h2 = nn.ModuleList(
            [nn.Conv2d(8, 4, 5, stride=2, bias=False, rng=rng) for _ in self.H2_INPUTS])
        self.h2_bias = nn.Parameter(np.zeros((12, 4, 4), np.float32))
        self.h3 = nn.Linear(12 * 4 * 4, 30, rng=rng)
        self.out = nn.Linear(30, num_classes, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)  # 16 -> 20 -> (20 - 5)//2 + 1 = 8
        h1 = F.tanh(self.h1(x) + self.h1_bias)
        h1 = F.pad(h1, (2, 2, 2, 2), value=0.0)  # 8 -> 12 -> 4
        maps = [conv(h1[:, list(inputs)]) for conv, inputs in zip(self.h2, self.H2_INPUTS)]
        h2 = F.tanh(concatenate(maps, axis=1) + self.h2_bias)
        h3 = F.tanh(self.h3(h2.flatten(1)))
        return self.out(h3)


def lenet5(rng: np.random.Generator, in_channels: int = 1, num_classes: int = 10
           ) -> nn.Module:
    """LeNet-5 as usually written today: 28x28 input, ReLU and max pooling.

    Each stage pools before its ReLU, as LeNet-5's S2/S4 layers subsample before they
    squash. For max pooling and ReLU the order does not matter: ReLU is non-decreasing, so
    ``maxpool(relu(x)) == relu(maxpool(x))`` element for element, and the gradients agree
    too (a window's gradient goes to the same first maximum, or is zero in both when the
    maximum is <= 0). The keys and the function are those of the usual
    ``Conv2d, ReLU, MaxPool2d`` order; the ReLU just runs on a quarter of the values.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, rng=rng), nn.MaxPool2d(2), nn.ReLU(),
        nn.Conv2d(6, 16, 5, rng=rng), nn.MaxPool2d(2), nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120, rng=rng), nn.ReLU(),
        nn.Linear(120, 84, rng=rng), nn.ReLU(),
        nn.Linear(84, num_classes, rng=rng),
    )


def digits_cnn(rng: np.random.Generator, in_channels: int = 1, num_classes: int = 10
               ) -> nn.Module:
    """A small CNN for 8x8 digits: two 3x3 conv-ReLU-maxpool stages, then a linear layer."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, rng=rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 2 * 2, num_classes, rng=rng),
    )


def vgg_small(rng: np.random.Generator, in_channels: int = 3, num_classes: int = 10,
              size: int = 32) -> nn.Module:
    """A small VGG for 32x32 inputs: two 3x3 convs per stage, max pooling between stages."""
    layers: list[nn.Module] = []
    width = in_channels
    for channels in (32, 64, 128):
        layers += [nn.Conv2d(width, channels, 3, padding=1, rng=rng),
                   nn.BatchNorm2d(channels), nn.ReLU(),
                   nn.Conv2d(channels, channels, 3, padding=1, rng=rng),
                   nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2)]
        width = channels
    side = size // 8
    layers += [nn.Flatten(), nn.Linear(width * side * side, num_classes, rng=rng)]
    return nn.Sequential(*layers)


class ResNetSmall(nn.Module):
    """A small ResNet for 32x32 inputs: stem, three stages of basic residual blocks."""

    def __init__(self, rng: np.random.Generator, in_channels: int = 3,
                 num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False, rng=rng)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks = []
        width = widths[0]
        for index, channels in enumerate(widths):
            blocks.append(nn.ResidualBlock(width, channels, stride=1 if index == 0 else 2,
                                           rng=rng))
            width = channels
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes, rng=rng)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        h = self.pool(self.layers(h))
        return self.fc(h.flatten(1))


class WaveNet(nn.Module):
    """WaveNet (van den Oord et al. 2016): dilated causal 1-D convolutions.

    Each layer: ``z = tanh(W_f * x) . sigmoid(W_g * x)`` with causal dilated convolutions
    (dilations 1, 2, 4, ...), a 1x1 residual projection added to its input (all but the last
    layer) and a 1x1 skip projection summed over layers, then ReLU-1x1-ReLU-1x1 to
    ``out_channels`` per time step.
    Receptive field: ``1 + (kernel_size - 1) * sum(dilations)``; output t sees inputs <= t.
    """

    def __init__(self, rng: np.random.Generator, in_channels: int = 1, out_channels: int = 1,
                 channels: int = 16, kernel_size: int = 2, layers: int = 6) -> None:
        super().__init__()
        self.dilations = tuple(2**i for i in range(layers))
        self.input = nn.Conv1d(in_channels, channels, 1, rng=rng)
        self.filters = nn.ModuleList([
            nn.Conv1d(channels, channels, kernel_size, dilation=d, rng=rng)
            for d in self.dilations])
        self.gates = nn.ModuleList([
            nn.Conv1d(channels, channels, kernel_size, dilation=d, rng=rng)
            for d in self.dilations])
        # The last layer's residual output would feed no later layer (the head reads the
        # skips), so it has none: every parameter is trained.
        self.residual = nn.ModuleList([nn.Conv1d(channels, channels, 1, rng=rng)
                                       for _ in self.dilations[:-1]])
        self.skip = nn.ModuleList([nn.Conv1d(channels, channels, 1, rng=rng)
                                   for _ in self.dilations])
        self.head1 = nn.Conv1d(channels, channels, 1, rng=rng)
        self.head2 = nn.Conv1d(channels, out_channels, 1, rng=rng)
        self.kernel_size = kernel_size

    @property
    def receptive_field(self) -> int:
        return 1 + (self.kernel_size - 1) * sum(self.dilations)

    def forward(self, x: Tensor) -> Tensor:
        h = self.input(x)
        skips = None
        for index, (d, filt, gate, skip) in enumerate(zip(self.dilations, self.filters,
                                                          self.gates, self.skip)):
            causal = F.pad(h, ((self.kernel_size - 1) * d, 0))  # left padding only
            z = F.tanh(filt(causal)) * F.sigmoid(gate(causal))
            if index < len(self.residual):
                h = h + self.residual[index](z)
            skips = skip(z) if skips is None else skips + skip(z)
        return self.head2(F.relu(self.head1(F.relu(skips))))


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015), small: encoder of conv blocks with max pooling,
    decoder of 2x2 transposed convolutions, skip connections by channel concatenation.

    x: (N, in_channels, H, W) with H, W divisible by 2**depth -> (N, out_channels, H, W).
    """

    def __init__(self, rng: np.random.Generator, in_channels: int = 1, out_channels: int = 1,
                 base: int = 8, depth: int = 2) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        width = in_channels
        for channels in widths:
            self.down.append(self._block(width, channels, rng))
            width = channels
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for channels in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(width, channels, 2, stride=2, rng=rng))
            self.merge.append(self._block(2 * channels, channels, rng))
            width = channels
        self.head = nn.Conv2d(width, out_channels, 1, rng=rng)

    @staticmethod
    def _block(c_in: int, c_out: int, rng: np.random.Generator) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, rng=rng), nn.ReLU(),
                             nn.Conv2d(c_out, c_out, 3, padding=1, rng=rng), nn.ReLU())

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        h = x
        for index, block in enumerate(self.down):
            h = block(h)
            if index < len(self.down) - 1:
                skips.append(h)
                h = self.pool(h)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            h = merge(concatenate([up(h), skip], axis=1))
        return self.head(h)


@dataclass(frozen=True)
class ModelInfo:
    """A registered model: builder(rng, input_shape, num_classes) and a description."""

    build: Callable[[np.random.Generator, tuple[int, ...], int], nn.Module]
    description: str
    task: str = "classify"
    input_size: tuple[int, ...] | None = None  # spatial size the architecture requires


def _features(shape: tuple[int, ...]) -> int:
    return int(np.prod(shape))


MODELS: dict[str, ModelInfo] = {
    "logistic": ModelInfo(lambda rng, shape, k: Logistic(_features(shape), k, rng),
                          "multinomial logistic regression"),
    "mlp": ModelInfo(lambda rng, shape, k: mlp(_features(shape), k, rng),
                     "MLP with two hidden layers of 100 ReLU units"),
    "mnist1d-cnn": ModelInfo(lambda rng, shape, k: MNIST1DCNN(rng, shape[-1], 25, k),
                             "MNIST-1D paper CNN: 3 conv1d (25 ch, k 5/3/3, stride 2)"),
    "lenet1989": ModelInfo(lambda rng, shape, k: LeNet1989(rng, k),
                           "LeCun 1989 zip-code net: 16x16 input, 9,760 parameters",
                           input_size=(16, 16)),
    "digits-cnn": ModelInfo(lambda rng, shape, k: digits_cnn(rng, shape[0], k),
                            "small CNN for 8x8 digits: two conv3-pool stages"),
    "lenet5": ModelInfo(lambda rng, shape, k: lenet5(rng, shape[0], k),
                        "LeNet-5: conv5-pool-conv5-pool-fc120-fc84 on 28x28",
                        input_size=(28, 28)),
    "vgg-small": ModelInfo(lambda rng, shape, k: vgg_small(rng, shape[0], k, shape[-1]),
                           "small VGG (3 stages of two 3x3 convs + BN) for 32x32"),
    "resnet-small": ModelInfo(lambda rng, shape, k: ResNetSmall(rng, shape[0], k),
                              "small ResNet (3 stages of basic blocks) for 32x32"),
    "wavenet": ModelInfo(lambda rng, shape, k: WaveNet(rng, shape[0], k),
                         "WaveNet: gated dilated causal conv1d stack", task="sequence"),
    "unet": ModelInfo(lambda rng, shape, k: UNet(rng, shape[0], k),
                      "U-Net: conv encoder, transposed-conv decoder, skips", task="segment"),
}


def build_model(name: str, rng: np.random.Generator, input_shape: tuple[int, ...],
                num_classes: int) -> nn.Module:
    """Build a registered model for inputs of ``input_shape`` (C, *spatial)."""
    check_choice(name, tuple(sorted(MODELS)), "model", "build_model")
    return MODELS[name].build(rng, tuple(input_shape), num_classes)
