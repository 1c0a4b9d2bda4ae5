"""receptive_fields against the support of the layers' own matrices (conv_matrix, a product
of them for a stack: with positive weights nothing cancels, so unit u depends on input pixel
j exactly where row u of the product is nonzero), against closed forms (WaveNet's
1 + (k-1) * sum(dilations), the n-fold uniform filter's variance 2n/3), and on the zoo's
residual, concatenating and functional models. tests/analysis/test_receptive_reference.py
checks torch models (VGG-16, ResNet-50, U-Net) against gradient extents."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab import functional as F
from cnnlab import nn
from cnnlab.analysis import conv_matrix, effective_receptive_field, receptive_fields
from cnnlab.models import UNet, WaveNet, build_model

# (kind, kernel, stride, padding, dilation) of a 1-D layer
LAYER = st.one_of(
    st.tuples(st.just("conv"), st.integers(1, 4), st.integers(1, 3), st.integers(0, 3),
              st.integers(1, 3)),
    st.tuples(st.just("transposed"), st.integers(1, 4), st.integers(1, 3),
              st.integers(0, 2), st.integers(1, 2)),
    st.tuples(st.just("avg"), st.integers(1, 3), st.integers(1, 3), st.just(0),
              st.just(1)),
)


def _module(layer):
    kind, k, s, p, d = layer
    if kind == "conv":
        module = nn.Conv1d(1, 1, k, stride=s, padding=p, dilation=d, bias=False)
    elif kind == "transposed":
        module = nn.ConvTranspose1d(1, 1, k, stride=s, padding=p, dilation=d, bias=False)
    else:
        return nn.AvgPool1d(k, s)
    module.weight.data[...] = 1.0
    return module


def _matrix(layer, n):
    kind, k, s, p, d = layer
    weight = np.ones((1, 1, k))
    if kind == "avg":
        return conv_matrix(weight / k, (1, n), stride=s), None
    if kind == "conv":
        matrix = conv_matrix(weight, (1, n), stride=s, padding=p, dilation=d)
    else:
        matrix = conv_matrix(weight, (1, n), stride=s, padding=p, dilation=d,
                             transposed=True)
    return matrix, None


def _support_product(layers, n):
    """The dependency pattern of the stack: the product of the layers' matrices."""
    total = None
    size = n
    for layer in layers:
        matrix, _ = _matrix(layer, size)
        total = matrix if total is None else matrix @ total
        size = matrix.shape[0]
    return total.tocsr()


def _border_reach(layers):
    """How far inside the input a unit's field may reach while the unit still reads a
    position beyond some layer's real map (padding, or units a transposed conv's padding
    cropped): the sum over layers of the reach of their pads and windows, at the largest
    input jump so far."""
    reach, jump = 0, 1
    for kind, k, s, p, d in layers:
        reach += (2 * p + (k - 1) * d + 1) * jump
        if kind != "transposed":
            jump *= s
    return reach


@settings(max_examples=60, deadline=None)
@given(st.lists(LAYER, min_size=1, max_size=3), st.integers(150, 250))
def test_each_unit_matches_the_support_of_the_matrix_product(layers, n):
    model = nn.Sequential(*[_module(layer) for layer in layers])
    try:
        out = model(np.zeros((1, 1, n), np.float32))
    except ValueError:
        return  # an impossible stack (the map shrank to nothing)
    fields = receptive_fields(model, (1, n))
    product = _support_product(layers, n)
    assert product.shape[0] == out.shape[-1]
    name = fields.rows[-1].name
    checked = 0
    for unit in range(out.shape[-1]):
        (lo, hi), = fields.field_of(name, (unit,))
        columns = product[unit].indices[product[unit].data != 0]
        if lo > hi:  # a unit no input reaches (a transposed conv's stride > kernel)
            assert len(columns) == 0
            continue
        reach = _border_reach(layers)
        if lo < reach or hi > n - 1 - reach:
            continue  # near a border, some layer reads padding: clipped in the matrix
        assert (columns.min(), columns.max()) == (lo, hi), (unit, layers)
        checked += 1
    # the row's box, start + u * jump -+ (size - 1) / 2, holds every unit's field and
    # is the smallest that does: some unit touches each side
    row = fields.rows[-1]
    lows, highs = [], []
    for unit in range(out.shape[-1]):
        (lo, hi), = fields.field_of(name, (unit,))
        if lo <= hi:
            centre = row.start[0] + unit * row.jump[0]
            lows.append(lo - (centre - (row.size[0] - 1) / 2))
            highs.append(centre + (row.size[0] - 1) / 2 - hi)
    assert min(lows) == pytest.approx(0, abs=1e-9)
    assert min(highs) == pytest.approx(0, abs=1e-9)


def test_closed_form_of_a_conv_pool_stack():
    # Araujo et al. 2019 (Distill), r_out = r_in + (k - 1) * j_in, j_out = j_in * s,
    # start_out = start_in + ((k - 1) / 2 - p) * j_in.
    model = nn.Sequential(nn.Conv2d(1, 2, 5, padding=2), nn.MaxPool2d(2),
                          nn.Conv2d(2, 2, 3, stride=2, padding=1), nn.AvgPool2d(3, 2, 1),
                          nn.Conv2d(2, 2, (3, 1), dilation=2))
    rows = receptive_fields(model, (1, 64, 64)).rows
    assert [r.size for r in rows] == [(5, 5), (6, 6), (10, 10), (18, 18), (50, 18)]
    assert [r.jump for r in rows] == [(1, 1), (2, 2), (4, 4), (8, 8), (8, 8)]
    assert [r.start for r in rows] == [(0, 0), (0.5, 0.5), (0.5, 0.5), (0.5, 0.5),
                                       (16.5, 0.5)]
    assert rows[-1].effective_padding == (8.0, 8.0)


def test_wavenet_field_is_one_plus_k_minus_one_times_the_sum_of_dilations():
    model = WaveNet(np.random.default_rng(0), layers=5)
    fields = receptive_fields(model, (1, 100))
    assert fields.rows[-1].size == (model.receptive_field,) == (32,)
    # causal: unit t reads inputs t - 31 .. t
    assert fields.field_of(fields.rows[-1].name, (40,)) == ((9, 40),)


def test_unet_union_over_the_skip_and_the_deep_path():
    model = UNet(np.random.default_rng(0), depth=2)
    model.pool = nn.AvgPool2d(2)  # a max pool's gradient picks one tap among equals
    fields = receptive_fields(model, (1, 64, 64))
    # A float64 gradient extent with every weight and bias 1 and an input of ones: every
    # activation is positive, so no ReLU cuts a path and nothing cancels.
    for p in model.parameters():
        p.data[...] = 1.0
    model.to(np.float64)
    from cnnlab import Tensor
    from cnnlab.autograd import grad
    x = Tensor(np.ones((1, 1, 64, 64)), requires_grad=True)
    measured = {}
    for unit in range(28, 36):  # two periods of the two 2x2 transposed convolutions
        gradient = np.zeros((1, 1, 64, 64))
        gradient[0, 0, unit, unit] = 1
        (g,) = grad(model(x), [x], gradient)
        rows, cols = np.nonzero(g[0, 0])
        field = fields.field_of(fields.rows[-1].name, (unit, unit))
        assert field == ((rows.min(), rows.max()), (cols.min(), cols.max()))
        assert 0 < field[0][0] and field[0][1] < 63  # inside: nothing clipped
        measured[unit] = field[0]
    # units see fields of one width at places that do not move by one pixel per unit
    # (two 2x2 up-convolutions: period 4); the row's box holds them all
    assert {hi - lo + 1 for lo, hi in measured.values()} == {44}
    assert len({lo - u for u, (lo, hi) in measured.items()}) == 4
    first = min(lo - u for u, (lo, hi) in measured.items())
    last = max(hi - u for u, (lo, hi) in measured.items())
    row = fields.rows[-1]
    assert row.size == (last - first + 1,) * 2 == (47, 47)
    assert row.start == ((first + last) / 2,) * 2 and row.jump == (1, 1)


def test_every_zoo_model_has_a_table():
    shapes = {"lenet1989": (1, 16, 16), "lenet5": (1, 28, 28), "vgg-small": (3, 32, 32),
              "resnet-small": (3, 32, 32), "digits-cnn": (1, 8, 8), "unet": (1, 32, 32),
              "wavenet": (1, 64), "mnist1d-cnn": (1, 40)}
    for name, shape in shapes.items():
        model = build_model(name, np.random.default_rng(0), shape, 10)
        fields = receptive_fields(model, shape)
        assert len(fields.rows) > 0
        spatial = [r for r in fields.rows if r.size is not None]
        assert spatial, name
        # fields never shrink along the execution order of a chain's main path
        assert all(s >= 1 for r in spatial for s in r.size)
        assert "size" in str(fields)


def test_rows_without_spatial_axes_carry_the_reason():
    model = build_model("lenet5", np.random.default_rng(0), (1, 28, 28), 10)
    fields = receptive_fields(model, (1, 28, 28))
    last = fields.rows[-1]
    assert last.size is None and last.reason == "no spatial axes"
    assert fields.row(last.name.split(":")[0]) == last


def test_lenet1989_functional_ops_are_followed():
    model = build_model("lenet1989", np.random.default_rng(0), (1, 16, 16), 10)
    fields = receptive_fields(model, (1, 16, 16))
    # H1: 5x5 stride 2 on the input padded by 2 (F.pad); H2: 5x5 stride 2 on H1 padded
    sizes = [r.size for r in fields.rows if r.op == "conv"]
    assert sizes[0] == (5, 5) and sizes[1] == (5 + 4 * 2,) * 2


def test_three_dimensional_and_transposed():
    model = nn.Sequential(nn.Conv3d(1, 1, 3), nn.ConvTranspose3d(1, 1, 2, stride=2))
    rows = receptive_fields(model, (1, 8, 8, 8)).rows
    assert rows[0].size == (3, 3, 3) and rows[1].jump == (0.5, 0.5, 0.5)


def test_functional_concat_along_space_and_unknown_ops_name_the_layer():
    class Odd(nn.Module):
        def forward(self, x):
            return F.conv_transpose1d(x, np.ones((1, 1, 2), np.float32), stride=2).flatten(1)

    class Glue(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(1, 1, 3)

        def forward(self, x):
            from cnnlab.autograd import concatenate
            return concatenate([self.conv(x), self.conv(x)], axis=2)

    with pytest.raises(ValueError, match=r"concatenation along a spatial axis: op "
                                         r"'concatenate'.*'<model>'"):
        receptive_fields(Glue(), (1, 16))
    rows = receptive_fields(Odd(), (1, 16)).rows
    # the weight is a constant; units 2i and 2i+1 both read pixel i: a box of 1.5 pixels
    assert rows[0].size == (1.5,) and rows[0].jump == (0.5,)
    assert rows[-1].size is None

    class Swap(nn.Module):
        def forward(self, x):
            return (x * 2).transpose(0, 1, 3, 2)

    with pytest.raises(ValueError, match=r"does not know: op 'transpose'.*\(Swap\), "
                                         r"node %1"):
        receptive_fields(Swap(), (1, 8, 6))


@pytest.mark.parametrize("bad", [(1,), (1, 0), "1x16", (1, 2.5), None])
def test_bad_input_shape(bad):
    with pytest.raises(ValueError, match="receptive_fields: input_shape"):
        receptive_fields(nn.Conv1d(1, 1, 3), bad)


def test_modes_restored_and_no_gradients_left():
    model = build_model("vgg-small", np.random.default_rng(0), (3, 32, 32), 10)
    model.train()
    stats = [b.copy() for _, b in model.named_buffers()]
    effective_receptive_field(model, (3, 32, 32), samples=2, rng=np.random.default_rng(0))
    receptive_fields(model, (3, 32, 32))
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(np.array_equal(a, b) for a, (_, b) in zip(stats, model.named_buffers()))


@pytest.mark.parametrize("n", [5, 10, 20, 40])
def test_erf_of_n_uniform_convolutions_has_sigma_sqrt_2n_over_3(n):
    # The centre unit's gradient is the n-fold convolution of the uniform 3-tap filter
    # along each axis; each tap adds variance ((-1)^2 + 0 + 1^2) / 3 = 2/3.
    model = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1, bias=False) for _ in range(n)])
    for p in model.parameters():
        p.data[...] = 1 / 9
    model.to(np.float64)
    erf = effective_receptive_field(model, (1, 4 * n + 3, 4 * n + 3), samples=2,
                                    rng=np.random.default_rng(0))
    np.testing.assert_allclose(erf.sigma, [np.sqrt(2 * n / 3)] * 2, rtol=1e-10)
    assert erf.theoretical_size == (2 * n + 1, 2 * n + 1)
    assert erf.map.shape == (4 * n + 3, 4 * n + 3)
    np.testing.assert_allclose(erf.map.sum(), 1.0)
    np.testing.assert_allclose(erf.mean, [2 * n + 1] * 2)


def test_erf_on_a_relu_network_lies_within_the_theoretical_field():
    model = build_model("digits-cnn", np.random.default_rng(0), (1, 8, 8), 10)
    erf = effective_receptive_field(model, (1, 8, 8), samples=8,
                                    rng=np.random.default_rng(1))
    assert erf.map.shape == (8, 8) and erf.theoretical_size is not None
    assert all(0 < s < t for s, t in zip(erf.sigma, erf.theoretical_size))
    erf_1d = effective_receptive_field(WaveNet(np.random.default_rng(0), layers=3),
                                       (1, 32), samples=4, rng=np.random.default_rng(0))
    # causal: nothing to the right of the centre unit
    assert erf_1d.map[17:].sum() == 0 and erf_1d.map[16] > 0


def test_erf_layer_choice_and_errors():
    model = nn.Sequential(nn.Conv1d(1, 1, 3), nn.ReLU(), nn.Conv1d(1, 1, 3))
    erf = effective_receptive_field(model, (1, 21), layer="0", samples=1)
    assert erf.layer == "0:conv" and erf.theoretical_size == (3,)
    with pytest.raises(ValueError, match="layer must name a layer with spatial axes"):
        effective_receptive_field(model, (1, 21), layer="nope")
    with pytest.raises(ValueError, match="samples must be a positive int"):
        effective_receptive_field(model, (1, 21), samples=0)


def test_upsampling_modes_against_torch_gradients():
    torch = pytest.importorskip("torch")
    for mode in ("nearest", "bilinear", "bicubic"):
        model = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, bias=False),
                                    torch.nn.Upsample(scale_factor=2, mode=mode)).double()
        torch.nn.init.constant_(model[0].weight, 1.0)
        fields = receptive_fields(model, (1, 16, 16))
        x = torch.ones(1, 1, 16, 16, dtype=torch.float64, requires_grad=True)
        for unit in (11, 12):
            out = model(x)
            (grad,) = torch.autograd.grad(out[0, 0, unit, unit], x)
            rows = np.nonzero(grad[0, 0].abs().sum(1).numpy() > 0)[0]
            (lo, hi), _ = fields.field_of(fields.rows[-1].name, (unit, unit))
            assert (lo, hi) == (rows.min(), rows.max()), (mode, unit)
    model = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="bilinear",
                                                  align_corners=True))
    with pytest.raises(ValueError, match="aligned corners"):
        receptive_fields(model, (1, 8, 8))


def test_sizes_carry_no_float_noise():
    model = nn.Sequential(nn.ConvTranspose1d(1, 1, 3, stride=3), nn.Conv1d(1, 1, 2))
    row = receptive_fields(model, (1, 12)).rows[-1]
    assert row.size == (2,) and isinstance(row.size[0], int)  # 1 2/3 + 1/3, snapped
    assert row.jump == (1 / 3,)
    assert "000000" not in str(receptive_fields(model, (1, 12)))
