"""Reference tests for :func:`cnnlab.analysis.receptive_fields` and
:func:`cnnlab.analysis.effective_receptive_field`, written from their contract alone.

The oracle for the theoretical field is a measurement that shares no code with the library:
copy a torch model, make it linear with positive weights (every conv/linear weight a positive
constant, bias 0, max pools -> average pools of the same window, activations, BatchNorm and
Dropout -> identity), run it in float64, backpropagate from one output unit and read off,
per spatial axis, the first and last input index with a nonzero gradient. With positive
weights nothing cancels, so "nonzero" is an exact test; float64, narrow layers and an input
wider than the field keep the field's edges from underflowing or hitting the border (both
asserted). The measurement is validated first against published numbers (VGG-16: 212) and
closed forms, in tests that need nothing from cnnlab.analysis.

Conventions from the contract: input pixel centres at 0..n-1; ``start`` is the centre of
output unit 0's field, unit i's centre is ``start + i * jump``, and its field is
``[centre - (size - 1) / 2, centre + (size - 1) / 2]``.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn as tnn

from cnnlab import nn


# -- the API under test, imported on use so that the self-checks run without it ------------
def _receptive_fields(model: Any, input_shape: tuple[int, ...]) -> Any:
    from cnnlab.analysis import receptive_fields

    return receptive_fields(model, input_shape)


def _effective_receptive_field(model: Any, input_shape: tuple[int, ...], **kwargs: Any) -> Any:
    from cnnlab.analysis import effective_receptive_field

    return effective_receptive_field(model, input_shape, **kwargs)


# -- the independent measurement ---------------------------------------------------------
_TO_IDENTITY = (tnn.ReLU, tnn.ReLU6, tnn.LeakyReLU, tnn.GELU, tnn.SiLU, tnn.ELU, tnn.Tanh,
                tnn.Sigmoid, tnn.BatchNorm1d, tnn.BatchNorm2d, tnn.BatchNorm3d, tnn.Dropout,
                tnn.Dropout1d, tnn.Dropout2d)
_AVG_FOR_MAX = {tnn.MaxPool1d: tnn.AvgPool1d, tnn.MaxPool2d: tnn.AvgPool2d,
                tnn.MaxPool3d: tnn.AvgPool3d}


def _linear_twin(child: tnn.Module) -> tnn.Module | None:
    if isinstance(child, _TO_IDENTITY):
        return tnn.Identity()
    avg = _AVG_FOR_MAX.get(type(child))
    if avg is not None:
        assert not child.ceil_mode and child.dilation in (1, (1,), (1, 1), (1, 1, 1))
        return avg(child.kernel_size, child.stride, child.padding)
    return None


def _linearised(model: tnn.Module) -> tnn.Module:
    """A float64 copy of ``model`` that is linear with positive weights (see the docstring).

    Only modules are swapped: the models below call every nonlinearity as a module."""
    twin = copy.deepcopy(model).double().eval()
    for module in list(twin.modules()):
        for name, child in list(module.named_children()):
            replacement = _linear_twin(child)
            if replacement is not None:
                setattr(module, name, replacement)
    with torch.no_grad():
        for module in twin.modules():
            if isinstance(module, (tnn.modules.conv._ConvNd, tnn.Linear)):
                module.weight.fill_(1.0 / module.weight[0].numel())  # ~1/fan_in: no overflow
                if module.bias is not None:
                    module.bias.zero_()
    return twin


def _supports(twin: tnn.Module, input_shape: tuple[int, ...], units: list[tuple[int, ...]]
              ) -> tuple[tuple[int, ...], list[tuple[tuple[int, int], ...]]]:
    """(output shape with batch 1, per unit the (first, last) input index per axis whose
    gradient is nonzero), output channel 0 of the linear ``twin``. One backward pass: sample
    b of the batch seeds unit b."""
    x = torch.ones((len(units), *input_shape), dtype=torch.float64, requires_grad=True)
    y = twin(x)
    seed = torch.zeros_like(y)
    for b, unit in enumerate(units):
        seed[(b, 0, *unit)] = 1.0
    y.backward(seed)
    grad = x.grad.abs().sum(dim=1)  # over input channels
    extents = []
    for b in range(len(units)):
        nonzero = grad[b] > 0
        assert nonzero.any()
        # no underflow: the field's faintest edge is far above the smallest double
        assert grad[b][nonzero].min().item() > 1e-250
        per_axis = []
        for axis in range(nonzero.ndim):
            others = tuple(a for a in range(nonzero.ndim) if a != axis)
            hit = torch.nonzero(nonzero.any(dim=others) if others else nonzero).flatten()
            first, last = int(hit[0]), int(hit[-1])
            # the field lies inside the input: not clipped by the border
            assert 0 < first and last < nonzero.shape[axis] - 1, (unit, axis, first, last)
            per_axis.append((first, last))
        extents.append(tuple(per_axis))
    return (1, *y.shape[1:]), extents


@dataclass(frozen=True)
class Measured:
    output_shape: tuple[int, ...]
    jump: tuple[int, ...]
    start: tuple[float, ...]  # centre of unit 0's field, from the tightest symmetric envelope
    size: tuple[int, ...]  # width of that envelope
    widths: tuple[tuple[int, ...], ...]  # per axis, the sorted distinct true field widths
    units: list[tuple[int, ...]]
    extents: list[tuple[tuple[int, int], ...]]

    @property
    def exact(self) -> bool:
        """Every unit's field has the same width (no transposed-convolution phase effects)."""
        return all(w == (s,) for w, s in zip(self.widths, self.size))


def _measure(model: tnn.Module, input_shape: tuple[int, ...], period: int = 1) -> Measured:
    """Measure 2 * period consecutive units (along the diagonal) around the output's middle.

    ``jump``: the shift between unit i and unit i + period, over period. ``start``/``size``:
    the narrowest interval [start + i*jump -+ (size-1)/2] that holds every measured unit's
    field. For a net without transposed convolutions every unit's field is the same interval
    moved by jump, so this is each unit's own field; with them (a U-Net's up-convolutions)
    neighbouring units see fields of different width and position, and the envelope over a
    whole period is the only affine description that holds every unit."""
    twin = _linearised(model)
    with torch.no_grad():
        out_spatial = twin(torch.zeros(1, *input_shape, dtype=torch.float64)).shape[2:]
    middle = [n // 2 - period for n in out_spatial]
    units = [tuple(m + k for m in middle) for k in range(2 * period)]
    output_shape, extents = _supports(twin, input_shape, units)
    jumps, starts, sizes, widths = [], [], [], []
    for axis in range(len(out_spatial)):
        shifts = {extents[k + period][axis][0] - extents[k][axis][0] for k in range(period)}
        shifts |= {extents[k + period][axis][1] - extents[k][axis][1] for k in range(period)}
        assert len(shifts) == 1 and shifts.pop() % period == 0
        jump = (extents[period][axis][0] - extents[0][axis][0]) // period
        firsts = [e[axis][0] - u[axis] * jump for u, e in zip(units, extents)]
        lasts = [e[axis][1] - u[axis] * jump for u, e in zip(units, extents)]
        jumps.append(jump)
        starts.append((max(lasts) + min(firsts)) / 2)
        sizes.append(max(lasts) - min(firsts) + 1)
        widths.append(tuple(sorted({e[axis][1] - e[axis][0] + 1 for e in extents})))
    return Measured(output_shape, tuple(jumps), tuple(starts), tuple(sizes), tuple(widths),
                    units, extents)


def _assert_row_matches(row: Any, measured: Measured) -> None:
    """The row against the measurement. Where every unit's field is the same interval moved
    by jump (``measured.exact``), size, start and each unit's field must equal the measured
    ones. Otherwise (stride-2 transposed convolutions: neighbouring units see fields of
    different width or position) only what holds under either reading of "size" is checked
    here: the reported size lies between the widest unit's field and the tightest envelope,
    and each reported field lies inside that envelope. :func:`_assert_row_holds_every_unit`
    is the stricter reading."""
    assert tuple(row.output_shape) == measured.output_shape, row
    assert tuple(row.jump) == pytest.approx(measured.jump), row
    if measured.exact:
        assert tuple(row.size) == pytest.approx(measured.size), row
        assert tuple(row.start) == pytest.approx(measured.start), row
        for unit, extent in zip(measured.units, measured.extents):
            for axis, (first, last) in enumerate(extent):
                centre = row.start[axis] + unit[axis] * row.jump[axis]
                half = (row.size[axis] - 1) / 2
                assert (first, last) == pytest.approx((centre - half, centre + half)), row
        return
    for axis, (size, start) in enumerate(zip(row.size, row.start)):
        widest, envelope = max(measured.widths[axis]), measured.size[axis]
        assert widest <= size <= envelope, (axis, row, measured.widths, measured.size)
        assert abs(start - measured.start[axis]) <= (envelope - size) / 2, (axis, row)


def _assert_row_holds_every_unit(row: Any, measured: Measured) -> None:
    """Unit i's reported field, [start + i*jump -+ (size-1)/2], holds its measured field, for
    every unit measured (two whole periods). With the bound in :func:`_assert_row_matches`
    this pins (start, size) to the measured envelope."""
    _assert_row_matches(row, measured)
    for unit, extent in zip(measured.units, measured.extents):
        for axis, (first, last) in enumerate(extent):
            centre = row.start[axis] + unit[axis] * row.jump[axis]
            half = (row.size[axis] - 1) / 2
            assert centre - half <= first and last <= centre + half, (unit, axis, row)


def _rows_named(result: Any, prefix: str) -> list[Any]:
    return [row for row in result.rows if row.name.startswith(prefix)]


# -- models: defined here, in torch (and in cnnlab where the builder takes ``lib``) ------------
def _vgg16_features(lib: Any = tnn, width: int = 1) -> Any:
    """VGG-16's convolutional part up to pool5: 13 3x3 convs (padding 1), five 2x2/2 pools."""
    layers: OrderedDict[str, Any] = OrderedDict()
    cin = 1
    for block, convs in enumerate((2, 2, 3, 3, 3), start=1):
        for i in range(1, convs + 1):
            layers[f"conv{block}_{i}"] = lib.Conv2d(cin, width, 3, padding=1)
            layers[f"relu{block}_{i}"] = lib.ReLU()
            cin = width
        layers[f"pool{block}"] = lib.MaxPool2d(2, 2)
    return lib.Sequential(layers)


class _Bottleneck(tnn.Module):
    """torchvision's ResNet-50 bottleneck (stride on the 3x3 conv, "ResNet v1.5")."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = tnn.Conv2d(cin, mid, 1, bias=False), tnn.BatchNorm2d(mid)
        self.conv2 = tnn.Conv2d(mid, mid, 3, stride, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(mid)
        self.conv3, self.bn3 = tnn.Conv2d(mid, cout, 1, bias=False), tnn.BatchNorm2d(cout)
        self.relu = tnn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = tnn.Sequential(tnn.Conv2d(cin, cout, 1, stride, bias=False),
                                             tnn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class _ResNet50(tnn.Module):
    """ResNet-50 up to the last bottleneck (before global pooling), torchvision's layout:
    7x7/2 stem (padding 3), 3x3/2 max pool (padding 1), [3, 4, 6, 3] bottlenecks, stride 2 in
    the first block of stages 2-4, 1x1 projection shortcuts. Widths are tiny (1 and 2
    channels; the expansion keeps the projection shortcuts) so float64 runs fast."""

    def __init__(self, width: int = 1, expansion: int = 2) -> None:
        super().__init__()
        self.conv1 = tnn.Conv2d(1, width, 7, 2, 3, bias=False)
        self.bn1, self.relu = tnn.BatchNorm2d(width), tnn.ReLU(inplace=True)
        self.maxpool = tnn.MaxPool2d(3, 2, 1)
        cin = width
        for stage, (blocks, stride) in enumerate(zip((3, 4, 6, 3), (1, 2, 2, 2)), start=1):
            layer = []
            for b in range(blocks):
                layer.append(_Bottleneck(cin, width, width * expansion, stride if b == 0 else 1))
                cin = width * expansion
            setattr(self, f"layer{stage}", tnn.Sequential(*layer))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _double_conv(cin: int, cout: int, pad: int) -> tnn.Sequential:
    return tnn.Sequential(tnn.Conv2d(cin, cout, 3, padding=pad), tnn.ReLU(),
                          tnn.Conv2d(cout, cout, 3, padding=pad), tnn.ReLU())


class _UNet(tnn.Module):
    """A U-Net (Ronneberger et al. 2015) with ``depth`` 2x2 max pools, two 3x3 convs per
    level, 2x2/2 up-convolutions, skips concatenated (centre-cropped when pad=0, the paper's
    valid convolutions) and a 1x1 head."""

    def __init__(self, depth: int = 3, pad: int = 1, width: int = 1) -> None:
        super().__init__()
        self.pad = pad
        self.down = tnn.ModuleList([_double_conv(1 if i == 0 else width, width, pad)
                                    for i in range(depth)])
        self.pools = tnn.ModuleList([tnn.MaxPool2d(2) for _ in range(depth)])
        self.bottom = _double_conv(width, width, pad)
        self.ups = tnn.ModuleList([tnn.ConvTranspose2d(width, width, 2, stride=2)
                                   for _ in range(depth)])
        self.up_convs = tnn.ModuleList([_double_conv(2 * width, width, pad)
                                        for _ in range(depth)])
        self.head = tnn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for conv, pool in zip(self.down, self.pools):
            x = conv(x)
            skips.append(x)
            x = pool(x)
        x = self.bottom(x)
        for up, conv, skip in zip(self.ups, self.up_convs, reversed(skips)):
            x = up(x)
            if self.pad == 0:
                dh = (skip.shape[2] - x.shape[2]) // 2
                dw = (skip.shape[3] - x.shape[3]) // 2
                skip = skip[:, :, dh:dh + x.shape[2], dw:dw + x.shape[3]]
            x = conv(torch.cat([skip, x], dim=1))
        return self.head(x)


def _dilated_residual_1d(lib: Any = tnn) -> Any:
    """1-D: dilated convs inside ``+`` residuals, an even-kernel strided conv (half-pixel
    shift), a padded max pool. The same architecture in torch or cnnlab (``lib``)."""

    class DilatedResidual1d(lib.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = lib.Conv1d(1, 2, 5, padding=2)
            self.b1a = lib.Conv1d(2, 2, 3, dilation=2, padding=2)
            self.b1b = lib.Conv1d(2, 2, 3, dilation=4, padding=4)
            self.down = lib.Conv1d(2, 2, 4, stride=2, padding=1)
            self.b2a = lib.Conv1d(2, 2, 3, dilation=3, padding=3)
            self.b2b = lib.Conv1d(2, 2, 3, padding=1)
            self.pool = lib.MaxPool1d(3, 2, 1)
            self.b3 = lib.Conv1d(2, 2, 3, dilation=8, padding=8)
            self.relu = lib.ReLU()

        def forward(self, x: Any) -> Any:
            x = self.relu(self.stem(x))
            x = self.relu(x + self.b1b(self.relu(self.b1a(x))))
            x = self.down(x)
            x = self.relu(x + self.b2b(self.relu(self.b2a(x))))
            x = self.pool(x)
            return x + self.b3(x)

    return DilatedResidual1d()


class _OffsetUnion1d(tnn.Module):
    """Two paths whose fields are offset from each other, joined by a concatenation: the
    output's field is their union, wider than either (13 vs 11 and 9). The crops are written
    ``x[:, :, 1:]`` or, with ``ellipsis``, ``x[..., 1:]``."""

    def __init__(self, ellipsis: bool = False) -> None:
        super().__init__()
        self.ellipsis = ellipsis
        self.stem = tnn.Conv1d(1, 1, 3, stride=2, padding=1)
        self.a = tnn.Conv1d(1, 1, 5, stride=2, padding=2)
        self.b = tnn.Conv1d(1, 1, 4, stride=2, padding=1)
        self.head = tnn.Conv1d(2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        a, b = self.a(x), self.b(x)
        if self.ellipsis:
            a, b = a[..., 1:], b[..., :-1]
        else:
            a, b = a[:, :, 1:], b[:, :, :-1]
        return self.head(torch.cat([a, b], dim=1))


def _dilated_transposed_2d() -> tnn.Sequential:
    """2-D, different per axis: a (3, 5) kernel, a strided conv, a (2, 3)-dilated conv, a
    stride-1 dilated transposed convolution in the middle, a padded max pool, a (1, 3) head."""
    return tnn.Sequential(OrderedDict(
        conv1=tnn.Conv2d(1, 1, (3, 5), padding=(1, 2)), relu1=tnn.ReLU(),
        conv2=tnn.Conv2d(1, 1, 3, stride=2, padding=1), relu2=tnn.ReLU(),
        dilated=tnn.Conv2d(1, 1, 3, dilation=(2, 3), padding=(2, 3)), relu3=tnn.ReLU(),
        up=tnn.ConvTranspose2d(1, 1, 3, dilation=(1, 2)), relu4=tnn.ReLU(),
        pool=tnn.MaxPool2d(3, 2, 1),
        head=tnn.Conv2d(1, 1, (1, 3)),
    ))


def _upsampling_2d() -> tnn.Sequential:
    """A stride-2 transposed convolution in the middle: neighbouring outputs see fields of
    different position (and, after more layers, width), so no affine description is exact."""
    return tnn.Sequential(OrderedDict(
        conv1=tnn.Conv2d(1, 1, (3, 5), padding=(1, 2)), relu1=tnn.ReLU(),
        conv2=tnn.Conv2d(1, 1, 3, stride=2, padding=1),
        dilated=tnn.Conv2d(1, 1, 3, dilation=(2, 3), padding=(2, 3)),
        up=tnn.ConvTranspose2d(1, 1, 4, stride=2, padding=1),
        up1=tnn.ConvTranspose2d(1, 1, 3),
        pool=tnn.MaxPool2d(3, 1, 1),
        head=tnn.Conv2d(1, 1, (1, 3)),
    ))


def _uniform_stack(lib: Any, n: int, dims: int = 2) -> Any:
    """n bias-free 3x3 (or 3-tap) convolutions with every weight 1/9 (1/3): a linear stack."""
    conv = lib.Conv2d if dims == 2 else lib.Conv1d
    model = lib.Sequential(*[conv(1, 1, 3, padding=1, bias=False) for _ in range(n)])
    for param in model.parameters():
        if lib is tnn:
            with torch.no_grad():
                param.fill_(1.0 / 3**dims)
        else:
            param.data[...] = 1.0 / 3**dims
    return model


# -- self-checks of the measurement: need nothing from cnnlab.analysis ----------------------
VGG16_POOL_SIZES = {"pool1": 6, "pool2": 16, "pool3": 44, "pool4": 100, "pool5": 212}


def test_measurement_reproduces_vgg16_published_field():
    # google-research/receptive_field's README: vgg_16 has receptive field 212, effective
    # stride 32 and effective padding 90, with "center = -padding + i * stride + (rf - 1)/2",
    # so unit 0's field is centred at -90 + 105.5 = 15.5 and spans input [-90, 121].
    model = _vgg16_features()
    measured = _measure(model, (1, 256, 256))
    assert measured.exact
    assert measured.size == (212, 212) and measured.jump == (32, 32)
    assert measured.start == (15.5, 15.5)
    assert measured.output_shape == (1, 1, 8, 8)
    assert measured.extents[0] == ((-90 + 32 * 3, 121 + 32 * 3),) * 2  # unit (3, 3)
    # and the end of every block (layer-by-layer arithmetic: 6, 16, 44, 100, 212)
    names = list(model._modules)
    for pool, size in VGG16_POOL_SIZES.items():
        prefix = tnn.Sequential(*[model._modules[k] for k in names[:names.index(pool) + 1]])
        assert _measure(prefix, (1, 256, 256)).size == (size, size)


def test_measurement_of_resnet50():
    # torchvision's layout gives 427 at layer4 by the layer-by-layer arithmetic
    # (7 + 2*2 = 11 after the stem; each 3x3 adds 2 * jump: 11 + 3*8 = 35, then stage 2
    # adds 8 + 3*16, stage 3 16 + 5*32, stage 4 32 + 2*64: 427), jump 32, unit 0 centred on
    # pixel 0. (TF-slim's resnet_v1_50, strides at the end of each stage, is tabulated at 483.)
    measured = _measure(_ResNet50(), (1, 512, 512))
    assert measured.exact
    assert measured.size == (427, 427) and measured.jump == (32, 32)
    assert measured.start == (0.0, 0.0)
    assert measured.output_shape == (1, 2, 16, 16)


@pytest.mark.parametrize(("pad", "side", "start"), [(1, 128, 0.0), (0, 188, 44.0)])
def test_measurement_of_unet(pad, side, start):
    # The deep path's field is 68 at the bottom; each 2x2/2 up-convolution maps an output
    # unit pair onto one input unit, so within a period of 8 output units the fields are 92
    # or 100 wide and centred at i - 1.5 ... i + 1.5 (pad 1; units 8m and 8m + 4 at i - 0.5,
    # 92 and 100 wide). Their envelope (the narrowest interval centred on start + i that
    # holds each) is 103 wide, centred on i: the layer-by-layer arithmetic with an
    # up-convolution adding (k - 1) * jump_in / stride.
    measured = _measure(_UNet(pad=pad), (1, side, side), period=8)
    assert not measured.exact
    assert measured.widths == ((92, 100),) * 2
    assert measured.size == (103, 103) and measured.jump == (1, 1)
    assert measured.start == (start, start)


def test_measurement_of_small_nets():
    # 1-D: stem 5; block 1 adds 2*2 + 2*4 -> 17; the 4/2 conv (padding 1) adds 3 -> 20,
    # jump 2, centre +0.5; block 2 adds 2*(3 + 1)*2 -> 36; the 3/2 pool adds 4 -> 40, jump 4;
    # block 3 adds 2*8*4 -> 104.
    measured = _measure(_dilated_residual_1d(), (1, 256))
    assert measured.exact
    assert (measured.size, measured.jump, measured.start) == ((104,), (4,), (0.5,))
    # the offset union: [4o-1, 4o+9] and [4o-3, 4o+5] -> [4o-3, 4o+9]
    measured = _measure(_OffsetUnion1d(), (1, 64))
    assert (measured.size, measured.jump, measured.start) == ((13,), (4,), (3.0,))
    # 2-D, layer by layer: axis 0: 3, 5 (jump 2), 13, 17, 21 (jump 4), 21; axis 1: 5, 7, 19,
    # 27, 31, 39. The transposed conv (stride 1, padding 0) moves the centre back by
    # dilation * (k - 1) / 2 input units: -2 and -4 pixels; the (1, 3) head then +4 on axis 1.
    measured = _measure(_dilated_transposed_2d(), (1, 96, 96))
    assert measured.exact
    assert measured.size == (21, 39) and measured.jump == (4, 4)
    assert measured.start == (-2.0, 0.0)
    # 2-D with a 4/2 up-convolution (padding 1): true fields 19 and 27 wide, their envelope
    # (20, 28) is the layer arithmetic's: axis 0: 3, 5, 13, 13 + 3*2/2 = 16 (jump 1), 18, 20,
    # 20; axis 1: 5, 7, 19, 22, 24, 26, 28
    measured = _measure(_upsampling_2d(), (1, 64, 64), period=4)
    assert not measured.exact
    assert measured.size == (20, 28) and measured.jump == (1, 1)
    assert measured.widths == ((19,), (27,))


def _box_power(n: int) -> np.ndarray:
    """The n-fold convolution of the uniform 3-tap [1, 1, 1] / 3, length 2n + 1."""
    out = np.ones(1)
    for _ in range(n):
        out = np.convolve(out, np.ones(3) / 3)
    return out


def _second_moment_sigma(p: np.ndarray) -> tuple[float, ...]:
    p = p / p.sum()
    sigmas = []
    for axis in range(p.ndim):
        marginal = p.sum(axis=tuple(a for a in range(p.ndim) if a != axis))
        x = np.arange(marginal.size)
        mean = (marginal * x).sum()
        sigmas.append(float(np.sqrt((marginal * (x - mean) ** 2).sum())))
    return tuple(sigmas)


@pytest.mark.parametrize("n", [5, 10, 20, 40])
def test_uniform_stack_sigma_closed_form(n):
    # A uniform 3-tap is a distribution on {-1, 0, 1} with variance 2/3; the centre output's
    # gradient through n of them (per axis: a 3x3 box of 1/9 is the product of two 1/3
    # 3-taps) is the n-fold convolution, the law of a sum of n independent such variables,
    # whose variance is 2n/3: sigma = sqrt(2n/3) = 1.83, 2.58, 3.65, 5.16 for n = 5..40.
    b = _box_power(n)
    assert b.size == 2 * n + 1
    assert _second_moment_sigma(b)[0] == pytest.approx(math.sqrt(2 * n / 3), rel=1e-12)
    # the torch gradient of the centre unit is exactly that map (outer product per axis)
    side = 4 * n + 3
    model = _uniform_stack(tnn, n).double()
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(1.0 / 9)  # exactly the float64 1/9, not float32's
    x = torch.randn(1, 1, side, side, dtype=torch.float64, requires_grad=True)
    model(x)[0, 0, side // 2, side // 2].backward()
    grad = x.grad[0, 0].abs().numpy()
    expected = np.zeros((side, side))
    lo = side // 2 - n
    expected[lo:lo + 2 * n + 1, lo:lo + 2 * n + 1] = np.outer(b, b)
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(_second_moment_sigma(grad), [math.sqrt(2 * n / 3)] * 2,
                               rtol=1e-12)
    assert _measure(_uniform_stack(tnn, n), (1, side, side)).size == (2 * n + 1,) * 2


# -- receptive_fields against the measurement ----------------------------------------------
def test_vgg16_torch_matches_published_numbers_and_measurement():
    model = _vgg16_features()
    result = _receptive_fields(model, (1, 224, 224))
    last = result.rows[-1]
    # google-research/receptive_field: 212, stride 32, effective padding 90
    assert tuple(last.size) == (212, 212) and tuple(last.jump) == (32, 32)
    padding = tuple((s - 1) / 2 - c for s, c in zip(last.size, last.start))
    assert padding == pytest.approx((90, 90))
    assert tuple(last.output_shape) == (1, 1, 7, 7)
    for pool, size in VGG16_POOL_SIZES.items():
        rows = _rows_named(result, pool)
        assert rows, f"no row for {pool}: {[r.name for r in result.rows]}"
        assert tuple(rows[-1].size) == (size, size)
    assert _rows_named(result, "pool5")[-1] is last
    # execution order: the pools come out in order
    order = [i for i, row in enumerate(result.rows) if row.name.startswith("pool")]
    assert [result.rows[i].name.split(":")[0] for i in order] == list(VGG16_POOL_SIZES)
    _assert_row_matches(_receptive_fields(model, (1, 256, 256)).rows[-1],
                        _measure(model, (1, 256, 256)))


def test_vgg16_cnnlab_matches_published_numbers_and_measurement():
    model = _vgg16_features(nn)
    result = _receptive_fields(model, (1, 256, 256))
    last = result.rows[-1]
    assert tuple(last.size) == (212, 212) and tuple(last.jump) == (32, 32)
    assert tuple(last.start) == pytest.approx((15.5, 15.5))  # effective padding 90
    # measured on the same architecture built in torch
    _assert_row_matches(last, _measure(_vgg16_features(tnn), (1, 256, 256)))


def test_resnet50_matches_measurement():
    model = _ResNet50()
    measured = _measure(model, (1, 512, 512))
    result = _receptive_fields(model, (1, 512, 512))
    _assert_row_matches(result.rows[-1], measured)
    assert _rows_named(result, "layer4")[-1] is result.rows[-1]


@pytest.mark.parametrize(("pad", "side"), [(1, 128), (0, 188)])
def test_unet_matches_measurement(pad, side):
    # The output's field is the union of the deep path's and the skips'; with 2x2/2
    # up-convolutions it differs between neighbouring output units (see the self-check).
    model = _UNet(pad=pad)
    _assert_row_matches(_receptive_fields(model, (1, side, side)).rows[-1],
                        _measure(model, (1, side, side), period=8))


@pytest.mark.parametrize("lib", [tnn, nn], ids=["torch", "cnnlab"])
def test_dilated_residual_1d_matches_measurement(lib):
    result = _receptive_fields(_dilated_residual_1d(lib), (1, 256))
    _assert_row_matches(result.rows[-1], _measure(_dilated_residual_1d(tnn), (1, 256)))


@pytest.mark.parametrize("ellipsis", [False, True], ids=["explicit-slices", "ellipsis"])
def test_offset_paths_union_matches_measurement(ellipsis):
    model = _OffsetUnion1d(ellipsis)
    _assert_row_matches(_receptive_fields(model, (1, 64)).rows[-1], _measure(model, (1, 64)))


def test_dilated_and_transposed_2d_matches_measurement():
    model = _dilated_transposed_2d()
    _assert_row_matches(_receptive_fields(model, (1, 96, 96)).rows[-1],
                        _measure(model, (1, 96, 96)))


def test_stride_two_transposed_conv_matches_measurement():
    model = _upsampling_2d()
    _assert_row_matches(_receptive_fields(model, (1, 64, 64)).rows[-1],
                        _measure(model, (1, 64, 64), period=4))


_UPSAMPLING_CASES = {"unet-pad1": (lambda: _UNet(pad=1), (1, 128, 128), 8),
                     "unet-pad0": (lambda: _UNet(pad=0), (1, 188, 188), 8),
                     "upsampling-2d": (_upsampling_2d, (1, 64, 64), 4)}


@pytest.mark.parametrize("case", list(_UPSAMPLING_CASES))
def test_reported_field_holds_every_unit_after_upsampling(case):
    # The contract's "unit i's centre is start + i*jump, its field [centre -+ (size-1)/2]",
    # read strictly: it must hold every output unit's field, so after stride-2 transposed
    # convolutions (start, size) is the narrowest envelope over a period of units (U-Net:
    # start 0 / 44 and size 103, not the widest single field, 100; upsampling-2d: (-1.5,
    # -0.5) and (20, 28), not (19, 27)). It is also what the layer-by-layer arithmetic gives
    # with a transposed convolution adding dilation * (k - 1) * jump_in / stride.
    build, shape, period = _UPSAMPLING_CASES[case]
    model = build()
    _assert_row_holds_every_unit(_receptive_fields(model, shape).rows[-1],
                                 _measure(model, shape, period=period))


# -- effective_receptive_field ---------------------------------------------------------------
def _erf_map(result: Any, spatial: tuple[int, ...]) -> np.ndarray:
    erf = np.asarray(result.map, dtype=np.float64)
    while erf.ndim > len(spatial):  # a leading channel (or batch) axis of 1, if any
        assert erf.shape[0] == 1
        erf = erf[0]
    assert erf.shape == spatial
    return erf


@pytest.mark.parametrize("n", [5, 10, 20, 40])
def test_erf_of_uniform_stack_cnnlab(n):
    side = 4 * n + 3  # the map (2n+1 wide) sits well inside the input
    model = _uniform_stack(nn, n)
    result = _effective_receptive_field(model, (1, side, side), samples=2,
                                        rng=np.random.default_rng(0))
    sigma = math.sqrt(2 * n / 3)
    assert tuple(result.sigma) == pytest.approx((sigma, sigma), rel=1e-3)
    erf = _erf_map(result, (side, side))
    b = _box_power(n)
    expected = np.zeros((side, side))
    lo = side // 2 - n
    expected[lo:lo + 2 * n + 1, lo:lo + 2 * n + 1] = np.outer(b, b)
    np.testing.assert_allclose(erf / erf.sum(), expected, atol=1e-5 * expected.max())
    assert tuple(_receptive_fields(model, (1, side, side)).rows[-1].size) == (2 * n + 1,) * 2


@pytest.mark.parametrize("dims", [1, 2])
def test_erf_of_uniform_stack_torch(dims):
    n = 10
    side = 4 * n + 3
    shape = (1, *(side,) * dims)
    model = _uniform_stack(tnn, n, dims)
    result = _effective_receptive_field(model, shape, samples=2, rng=np.random.default_rng(1))
    assert tuple(result.sigma) == pytest.approx((math.sqrt(2 * n / 3),) * dims, rel=1e-3)
    erf = _erf_map(result, shape[1:])
    assert int(np.argmax(erf)) == np.ravel_multi_index((side // 2,) * dims, erf.shape)
    assert tuple(_receptive_fields(model, shape).rows[-1].size) == (2 * n + 1,) * dims


def test_erf_restores_torch_mode_and_leaves_no_grads():
    model = tnn.Sequential(tnn.Conv2d(1, 2, 3, padding=1), tnn.BatchNorm2d(2), tnn.ReLU(),
                           tnn.Dropout(0.5), tnn.Conv2d(2, 1, 3, padding=1))
    model.train()
    model[1].eval()  # a mixed state must come back as it was
    running_mean = model[1].running_mean.clone()
    _effective_receptive_field(model, (1, 15, 15), samples=3, rng=np.random.default_rng(2))
    assert [m.training for m in model.modules()] == [True, True, False, True, True, True]
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    torch.testing.assert_close(model[1].running_mean, running_mean)


def test_erf_restores_cnnlab_mode_and_leaves_no_grads():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                          nn.Dropout(0.5), nn.Conv2d(2, 1, 3, padding=1))
    model.train()
    running_mean = model[1].running_mean.copy()
    _effective_receptive_field(model, (1, 15, 15), samples=3, rng=np.random.default_rng(3))
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    np.testing.assert_array_equal(model[1].running_mean, running_mean)
