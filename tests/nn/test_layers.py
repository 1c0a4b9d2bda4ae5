"""cnnlab.nn layers against torch.nn: same state-dict keys and shapes, same outputs and
gradients (float32, 1e-5) after loading one framework's weights into the other, BatchNorm
running statistics updated identically in training, identical behaviour in eval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as tnn

from _check import assert_close
from cnnlab import Tensor, nn
from cnnlab import functional as F

ATOL = RTOL = 1e-5  # float32 outputs; assert_close scales atol by the output's magnitude
GRAD_TOL = 1e-4  # parameter gradients sum over the batch


def to_torch(ours: nn.Module, theirs: tnn.Module) -> None:
    """Load cnnlab's weights into torch (the reverse direction)."""
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})


def from_torch(theirs: tnn.Module, ours: nn.Module) -> None:
    """Load torch's weights into cnnlab (as NumPy arrays)."""
    ours.load_state_dict({k: v.detach().numpy().copy() for k, v in theirs.state_dict().items()})


def assert_same_state(ours: nn.Module, theirs: tnn.Module, tol: float = ATOL) -> None:
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(reference)
    for key, value in mine.items():
        expected = reference[key].detach().numpy()
        assert value.shape == expected.shape and value.dtype == expected.dtype, key
        assert_close(value, expected, tol, tol, key)


def run_both(ours: Any, theirs: Any, x: np.ndarray, seed: int = 0, grad: bool = True
             ) -> None:
    """One forward (and backward with a random upstream gradient) in each framework."""
    x_ours, x_torch = Tensor(x.copy(), requires_grad=True), torch.tensor(x, requires_grad=True)
    y_ours, y_torch = ours(x_ours), theirs(x_torch)
    assert y_ours.dtype == np.float32
    assert_close(y_ours.data, y_torch.detach().numpy(), ATOL, RTOL, "forward")
    if not grad:
        return
    upstream = np.random.default_rng(seed).standard_normal(y_ours.shape).astype(np.float32)
    y_ours.backward(upstream)
    y_torch.backward(torch.from_numpy(upstream))
    assert_close(x_ours.grad, x_torch.grad.numpy(), GRAD_TOL, GRAD_TOL, "input grad")
    if isinstance(ours, nn.Module):
        torch_params = dict(theirs.named_parameters())
        for name, param in ours.named_parameters():
            assert_close(param.grad, torch_params[name].grad.numpy(), GRAD_TOL, GRAD_TOL,
                         f"grad of {name}")
        ours.zero_grad()
        theirs.zero_grad()


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# (cnnlab factory, torch factory, input shape): weights go cnnlab -> torch.
LAYERS: list[tuple[Callable[[], nn.Module], Callable[[], tnn.Module], tuple[int, ...]]] = [
    (lambda: nn.Linear(5, 3, rng=_rng()), lambda: tnn.Linear(5, 3), (4, 5)),
    (lambda: nn.Linear(5, 3, bias=False, rng=_rng()), lambda: tnn.Linear(5, 3, bias=False),
     (2, 3, 5)),
    (lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1, rng=_rng()),
     lambda: tnn.Conv1d(3, 4, 3, stride=2, padding=1), (2, 3, 9)),
    (lambda: nn.Conv1d(4, 6, 3, dilation=2, groups=2, padding=2, padding_mode="circular",
                       rng=_rng()),
     lambda: tnn.Conv1d(4, 6, 3, dilation=2, groups=2, padding=2, padding_mode="circular"),
     (2, 4, 8)),
    (lambda: nn.Conv1d(2, 3, 4, padding="same", padding_mode="reflect", rng=_rng()),
     lambda: tnn.Conv1d(2, 3, 4, padding="same", padding_mode="reflect"), (2, 2, 7)),
    (lambda: nn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), bias=False, rng=_rng()),
     lambda: tnn.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), bias=False),
     (2, 3, 7, 6)),
    (lambda: nn.Conv2d(4, 4, 3, groups=4, padding="same", padding_mode="replicate",
                       rng=_rng()),
     lambda: tnn.Conv2d(4, 4, 3, groups=4, padding="same", padding_mode="replicate"),
     (2, 4, 5, 5)),
    (lambda: nn.Conv2d(2, 3, 3, padding="valid", dilation=(1, 2), rng=_rng()),
     lambda: tnn.Conv2d(2, 3, 3, padding="valid", dilation=(1, 2)), (1, 2, 6, 7)),
    (lambda: nn.Conv3d(2, 3, 2, padding=1, rng=_rng()), lambda: tnn.Conv3d(2, 3, 2, padding=1),
     (2, 2, 3, 4, 3)),
    (lambda: nn.ConvTranspose1d(3, 4, 3, stride=2, padding=1, output_padding=1, rng=_rng()),
     lambda: tnn.ConvTranspose1d(3, 4, 3, stride=2, padding=1, output_padding=1), (2, 3, 5)),
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, dilation=2, bias=False,
                                rng=_rng()),
     lambda: tnn.ConvTranspose2d(4, 6, 3, stride=2, groups=2, dilation=2, bias=False),
     (2, 4, 3, 4)),
    (lambda: nn.ConvTranspose3d(2, 3, 2, stride=2, rng=_rng()),
     lambda: tnn.ConvTranspose3d(2, 3, 2, stride=2), (1, 2, 2, 3, 2)),
    (lambda: nn.LayerNorm((4, 5)), lambda: tnn.LayerNorm((4, 5)), (3, 4, 5)),
    (lambda: nn.LayerNorm(5, elementwise_affine=False),
     lambda: tnn.LayerNorm(5, elementwise_affine=False), (3, 5)),
    (lambda: nn.LayerNorm(5, bias=False), lambda: tnn.LayerNorm(5, bias=False), (2, 3, 5)),
    (nn.ReLU, tnn.ReLU, (3, 4)),
    (lambda: nn.LeakyReLU(0.1), lambda: tnn.LeakyReLU(0.1), (3, 4)),
    (nn.GELU, tnn.GELU, (3, 4)),
    (lambda: nn.GELU("tanh"), lambda: tnn.GELU("tanh"), (3, 4)),
    (nn.Sigmoid, tnn.Sigmoid, (3, 4)),
    (nn.Tanh, tnn.Tanh, (3, 4)),
    (lambda: nn.Softmax(1), lambda: tnn.Softmax(1), (3, 4, 2)),
    (lambda: nn.LogSoftmax(-1), lambda: tnn.LogSoftmax(-1), (3, 4)),
    (nn.Flatten, tnn.Flatten, (2, 3, 4)),
    (lambda: nn.Flatten(0, 1), lambda: tnn.Flatten(0, 1), (2, 3, 4)),
    (nn.Identity, tnn.Identity, (2, 3)),
]

POOLS = [
    (lambda: nn.MaxPool1d(2), lambda: tnn.MaxPool1d(2), (2, 3, 9)),
    (lambda: nn.MaxPool2d(3, stride=2, padding=1), lambda: tnn.MaxPool2d(3, 2, 1),
     (2, 3, 7, 6)),
    (lambda: nn.MaxPool2d(2, dilation=2, ceil_mode=True),
     lambda: tnn.MaxPool2d(2, dilation=2, ceil_mode=True), (1, 2, 7, 8)),
    (lambda: nn.MaxPool3d(2), lambda: tnn.MaxPool3d(2), (1, 2, 4, 4, 5)),
    (lambda: nn.AvgPool1d(3, stride=2, padding=1), lambda: tnn.AvgPool1d(3, 2, 1), (2, 3, 8)),
    (lambda: nn.AvgPool2d(2), lambda: tnn.AvgPool2d(2), (2, 3, 6, 5)),
    (lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False),
     lambda: tnn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 2, 7, 7)),
    (lambda: nn.AvgPool2d(2, divisor_override=3), lambda: tnn.AvgPool2d(2, divisor_override=3),
     (1, 2, 4, 4)),
    (lambda: nn.AvgPool3d(2), lambda: tnn.AvgPool3d(2), (1, 2, 4, 4, 4)),
    (lambda: nn.AdaptiveAvgPool1d(3), lambda: tnn.AdaptiveAvgPool1d(3), (2, 3, 8)),
    (lambda: nn.AdaptiveAvgPool2d((2, 3)), lambda: tnn.AdaptiveAvgPool2d((2, 3)),
     (2, 3, 5, 7)),
    (lambda: nn.AdaptiveAvgPool2d(1), lambda: tnn.AdaptiveAvgPool2d(1), (2, 3, 5, 5)),
    (lambda: nn.AdaptiveAvgPool3d(2), lambda: tnn.AdaptiveAvgPool3d(2), (1, 2, 3, 5, 4)),
    (lambda: nn.AdaptiveMaxPool1d(3), lambda: tnn.AdaptiveMaxPool1d(3), (2, 3, 8)),
    (lambda: nn.AdaptiveMaxPool2d(2), lambda: tnn.AdaptiveMaxPool2d(2), (2, 3, 5, 7)),
    (lambda: nn.AdaptiveMaxPool3d(2), lambda: tnn.AdaptiveMaxPool3d(2), (1, 2, 3, 5, 4)),
]


@pytest.mark.parametrize(("ours_factory", "torch_factory", "shape"), LAYERS + POOLS,
                         ids=[f"{i}" for i in range(len(LAYERS + POOLS))])
def test_layer_like_torch(ours_factory, torch_factory, shape):
    ours, theirs = ours_factory(), torch_factory()
    assert_same_state_keys(ours, theirs)
    to_torch(ours, theirs)
    assert repr(ours) == repr(theirs)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    run_both(ours, theirs, x)


def assert_same_state_keys(ours: nn.Module, theirs: tnn.Module) -> None:
    mine = {k: v.shape for k, v in ours.state_dict().items()}
    reference = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert mine == reference


BATCH_NORMS = [
    (lambda: nn.BatchNorm1d(4), lambda: tnn.BatchNorm1d(4), (6, 4)),
    (lambda: nn.BatchNorm1d(4, momentum=0.3), lambda: tnn.BatchNorm1d(4, momentum=0.3),
     (6, 4, 5)),
    (lambda: nn.BatchNorm2d(3), lambda: tnn.BatchNorm2d(3), (4, 3, 5, 5)),
    (lambda: nn.BatchNorm2d(3, momentum=None), lambda: tnn.BatchNorm2d(3, momentum=None),
     (4, 3, 2, 3)),
    (lambda: nn.BatchNorm2d(3, affine=False), lambda: tnn.BatchNorm2d(3, affine=False),
     (2, 3, 4, 4)),
    (lambda: nn.BatchNorm2d(3, track_running_stats=False),
     lambda: tnn.BatchNorm2d(3, track_running_stats=False), (2, 3, 4, 4)),
    (lambda: nn.BatchNorm3d(2, eps=1e-3), lambda: tnn.BatchNorm3d(2, eps=1e-3),
     (2, 2, 3, 4, 3)),
]


@pytest.mark.parametrize(("ours_factory", "torch_factory", "shape"), BATCH_NORMS,
                         ids=[f"{i}" for i in range(len(BATCH_NORMS))])
def test_batch_norm_layer_like_torch_in_train_and_eval(ours_factory, torch_factory, shape):
    ours, theirs = ours_factory(), torch_factory()
    assert repr(ours) == repr(theirs)
    rng = np.random.default_rng(2)
    if ours.affine:  # non-trivial affine parameters, loaded torch -> cnnlab
        with torch.no_grad():
            theirs.weight.uniform_(0.5, 1.5)
            theirs.bias.normal_()
    from_torch(theirs, ours)
    for step, training in enumerate([True, True, True, False, True, False]):
        ours.train(training)
        theirs.train(training)
        x = (rng.standard_normal(shape) * 2 + step).astype(np.float32)
        run_both(ours, theirs, x, seed=step)
        assert_same_state(ours, theirs)


def test_batch_norm_input_rank_is_checked():
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected input \(N, C, H, W\), got a "
                                         r"3-D input"):
        nn.BatchNorm2d(3)(np.ones((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected input \(N, C\) or \(N, C, L\)"):
        nn.BatchNorm1d(3)(np.ones((2, 3, 4, 4), np.float32))


# ---------------------------------------------------------------------------------------
# Whole networks: state-dict compatibility in both directions.


def small_cnn_pair() -> tuple[nn.Module, tnn.Module]:
    ours = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, rng=_rng(3)), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5, rng=_rng(4)),
    )
    theirs = tnn.Sequential(
        tnn.Conv2d(1, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(),
        tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(4 * 3 * 3, 5),
    )
    return ours, theirs


@pytest.mark.parametrize("direction", ["torch_to_cnnlab", "cnnlab_to_torch"])
def test_sequential_cnn_matches_torch_in_train_and_eval(direction):
    torch.manual_seed(0)
    ours, theirs = small_cnn_pair()
    assert_same_state_keys(ours, theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    if direction == "torch_to_cnnlab":
        from_torch(theirs, ours)
    else:
        to_torch(ours, theirs)
    assert_same_state(ours, theirs, tol=0.0)
    rng = np.random.default_rng(5)
    for step, training in enumerate([True, True, False, True, False]):
        ours.train(training)
        theirs.train(training)
        run_both(ours, theirs, rng.standard_normal((8, 1, 6, 6)).astype(np.float32), step)
        assert_same_state(ours, theirs)


def test_training_step_with_loss_matches_torch():
    """Conv1d network + CrossEntropyLoss, as on MNIST-1D: same loss and gradients."""
    torch.manual_seed(1)
    ours = nn.Sequential(nn.Conv1d(1, 6, 5, stride=2, padding=2, rng=_rng(6)),
                         nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.0), nn.Flatten(),
                         nn.Linear(6 * 20, 10, rng=_rng(7)))
    theirs = tnn.Sequential(tnn.Conv1d(1, 6, 5, stride=2, padding=2), tnn.BatchNorm1d(6),
                            tnn.ReLU(), tnn.Dropout(0.0), tnn.Flatten(), tnn.Linear(120, 10))
    to_torch(ours, theirs)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((16, 1, 40)).astype(np.float32)
    target = rng.integers(0, 10, 16)
    loss_ours = nn.CrossEntropyLoss(label_smoothing=0.1)(ours(Tensor(x)), target)
    loss_torch = tnn.CrossEntropyLoss(label_smoothing=0.1)(theirs(torch.from_numpy(x)),
                                                           torch.from_numpy(target))
    assert loss_ours.dtype == np.float32
    assert_close(loss_ours.data, loss_torch.detach().numpy(), ATOL, RTOL, "loss")
    loss_ours.backward()
    loss_torch.backward()
    torch_params = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        assert_close(param.grad, torch_params[name].grad.numpy(), GRAD_TOL, GRAD_TOL, name)


class TorchBasicBlock(tnn.Module):
    """torchvision's BasicBlock, written out."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dims: int = 2) -> None:
        super().__init__()
        conv = {1: tnn.Conv1d, 2: tnn.Conv2d}[dims]
        norm = {1: tnn.BatchNorm1d, 2: tnn.BatchNorm2d}[dims]
        self.conv1 = conv(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = norm(planes)
        self.relu = tnn.ReLU(inplace=True)
        self.conv2 = conv(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = tnn.Sequential(conv(inplanes, planes, 1, stride, bias=False),
                                             norm(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


@pytest.mark.parametrize(("in_channels", "out_channels", "stride", "dims"),
                         [(4, 4, 1, 2), (3, 6, 2, 2), (4, 4, 2, 1), (2, 5, 1, 1)])
def test_residual_block_matches_torchvision_basic_block(in_channels, out_channels, stride,
                                                        dims):
    torch.manual_seed(2)
    ours = nn.ResidualBlock(in_channels, out_channels, stride, dims=dims, rng=_rng(9))
    theirs = TorchBasicBlock(in_channels, out_channels, stride, dims)
    assert_same_state_keys(ours, theirs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert (ours.downsample is None) == (theirs.downsample is None)
    from_torch(theirs, ours)
    rng = np.random.default_rng(10)
    spatial = (7, 6) if dims == 2 else (11,)
    for step, training in enumerate([True, True, False]):
        ours.train(training)
        theirs.train(training)
        x = rng.standard_normal((3, in_channels, *spatial)).astype(np.float32)
        run_both(ours, theirs, x, seed=step)
        assert_same_state(ours, theirs)
    with pytest.raises(ValueError, match="ResidualBlock: dims must be 1, 2 or 3, got 4"):
        nn.ResidualBlock(2, 2, dims=4)


# ---------------------------------------------------------------------------------------
# Losses, dropout, blur pooling.


def test_loss_modules_like_torch():
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((5, 4, 3)).astype(np.float32)
    target = rng.integers(0, 4, (5, 3))
    weight = rng.uniform(0.5, 2, 4).astype(np.float32)
    cases = [
        (nn.CrossEntropyLoss(weight, label_smoothing=0.2, reduction="sum"),
         tnn.CrossEntropyLoss(torch.from_numpy(weight), label_smoothing=0.2, reduction="sum")),
        (nn.CrossEntropyLoss(ignore_index=2), tnn.CrossEntropyLoss(ignore_index=2)),
        (nn.NLLLoss(weight), tnn.NLLLoss(torch.from_numpy(weight))),
    ]
    for ours, theirs in cases:
        assert_same_state(ours, theirs, tol=0.0)
        run_both(lambda x, m=ours: m(x, target),
                 lambda x, m=theirs: m(x, torch.from_numpy(target)), logits)
    probs = rng.random((5, 4)).astype(np.float32)
    pos_weight = rng.uniform(0.5, 2, 4).astype(np.float32)
    cases = [
        (nn.MSELoss(reduction="none"), tnn.MSELoss(reduction="none")),
        (nn.BCEWithLogitsLoss(pos_weight=pos_weight),
         tnn.BCEWithLogitsLoss(pos_weight=torch.from_numpy(pos_weight))),
    ]
    for ours, theirs in cases:
        assert_same_state(ours, theirs, tol=0.0)
        run_both(lambda x, m=ours: m(x, probs),
                 lambda x, m=theirs: m(x, torch.from_numpy(probs)), logits[:, :, 0].copy())
    with pytest.raises(ValueError, match="CrossEntropyLoss: reduction must be one of"):
        nn.CrossEntropyLoss(reduction="avg")


def test_dropout_layer_train_eval_and_reproducibility():
    x = np.ones((100, 20), np.float32)
    first = nn.Dropout(0.25, rng=_rng(12))
    second = nn.Dropout(0.25, rng=_rng(12))
    out = first(x)
    np.testing.assert_array_equal(out, second(x))
    assert abs((out == 0).mean() - 0.25) < 0.03
    assert not np.array_equal(out, first(x))  # the stored generator advances
    assert first.eval()(x) is x
    assert repr(first) == "Dropout(p=0.25)"
    with pytest.raises(ValueError, match=r"Dropout: p must be a probability in \[0, 1\]"):
        nn.Dropout(-0.1)
    with pytest.raises(TypeError, match="Dropout: rng must be a numpy"):
        nn.Dropout(0.5, rng=0)


@pytest.mark.parametrize(("module", "fn", "shape"), [
    (nn.BlurPool1d(), F.blur_pool1d, (2, 3, 9)),
    (nn.BlurPool2d(kernel_size=4, stride=2, padding_mode="zeros"),
     lambda x: F.blur_pool2d(x, 4, 2, "zeros"), (2, 3, 8, 7)),
    (nn.BlurPool3d(), F.blur_pool3d, (1, 2, 4, 5, 4)),
])
def test_blur_pool_modules_call_the_functional_op(module, fn, shape):
    x = np.random.default_rng(13).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(module(x), fn(x))
    assert module(Tensor(x)).shape == fn(x).shape


# ---------------------------------------------------------------------------------------
# Constructor validation and dtype / rng options.


def test_layer_constructor_errors():
    with pytest.raises(ValueError, match=r"Conv2d: in_channels \(3\) must be divisible by "
                                         r"groups \(2\)"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="Conv1d: padding_mode must be one of"):
        nn.Conv1d(1, 1, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match=r"ConvTranspose2d: padding_mode must be one of "
                                         r"\('zeros',\)"):
        nn.ConvTranspose2d(1, 1, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="ConvTranspose1d: padding must be an int or a tuple"):
        nn.ConvTranspose1d(1, 1, 3, padding="same")
    with pytest.raises(ValueError, match=r"Conv2d: kernel_size must be an int or a tuple of 2"):
        nn.Conv2d(1, 1, (3, 3, 3))
    with pytest.raises(ValueError, match="Linear: in_features must be a positive int, got 0"):
        nn.Linear(0, 3)
    with pytest.raises(TypeError, match="Linear: dtype must be float32 or float64"):
        nn.Linear(2, 3, dtype=np.int64)
    with pytest.raises(TypeError, match=r"Conv2d: rng must be a numpy\.random\.Generator"):
        nn.Conv2d(1, 1, 3, rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match="BatchNorm2d: momentum must be in"):
        nn.BatchNorm2d(3, momentum=2.0)
    with pytest.raises(ValueError, match="GELU: approximate must be one of"):
        nn.GELU("erf")


def test_float64_layers_and_per_side_padding():
    conv = nn.Conv2d(2, 3, 3, padding=((1, 0), (2, 1)), rng=_rng(), dtype=np.float64)
    assert conv.weight.dtype == np.float64 and conv.bias.dtype == np.float64
    assert conv.padding == ((1, 0), (2, 1))
    x = np.random.default_rng(14).standard_normal((1, 2, 5, 5))
    expected = F.conv2d(x, conv.weight.data, conv.bias.data, padding=((1, 0), (2, 1)))
    np.testing.assert_allclose(conv(x), expected)
    assert "padding=((1, 0), (2, 1))" in repr(conv)
    assert nn.BatchNorm1d(3, dtype=np.float64).running_var.dtype == np.float64
