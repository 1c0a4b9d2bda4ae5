"""cnnlab.nn.init against torch.nn.init: fans, gains, bounds and sample statistics, and the
default initialisation of Linear / ConvNd (PyTorch's ``reset_parameters``)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as tnn

from cnnlab import Tensor, nn
from cnnlab.nn import init

SHAPES = [(3, 5), (6, 4, 3), (8, 2, 3, 3), (4, 6, 2, 3, 2), (1, 1)]


@pytest.mark.parametrize("shape", SHAPES)
def test_fans_like_torch(shape):
    expected = tnn.init._calculate_fan_in_and_fan_out(torch.empty(shape))
    assert init._calculate_fan_in_and_fan_out(np.empty(shape)) == expected
    assert init._calculate_fan_in_and_fan_out(Tensor(np.empty(shape))) == expected
    with pytest.raises(ValueError, match=r"at least 2 dimensions, got shape \(3,\)"):
        init._calculate_fan_in_and_fan_out(np.empty(3))


@pytest.mark.parametrize(("nonlinearity", "param"), [
    ("linear", None), ("conv2d", None), ("conv_transpose3d", None), ("sigmoid", None),
    ("tanh", None), ("relu", None), ("selu", None), ("leaky_relu", None),
    ("leaky_relu", 0.2), ("leaky_relu", math.sqrt(5)), ("leaky_relu", 0),
])
def test_gains_like_torch(nonlinearity, param):
    expected = tnn.init.calculate_gain(nonlinearity, param)
    assert init.calculate_gain(nonlinearity, param) == pytest.approx(expected, rel=1e-15)


def test_gain_errors():
    with pytest.raises(ValueError, match="calculate_gain: nonlinearity must be one of"):
        init.calculate_gain("swish")
    with pytest.raises(ValueError, match="negative_slope must be a number"):
        init.calculate_gain("leaky_relu", "0.1")


def _bound_and_draw(fn, shape, **kwargs):
    array = np.zeros(shape, np.float64)
    fn(array, rng=np.random.default_rng(0), **kwargs)
    return array


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize(("a", "nonlinearity"), [(0, "relu"), (math.sqrt(5), "leaky_relu"),
                                                 (0.1, "leaky_relu"), (0, "tanh")])
def test_kaiming_uniform_bound_matches_torch_formula(mode, a, nonlinearity):
    shape = (64, 32, 3, 3)
    fan = tnn.init._calculate_correct_fan(torch.empty(shape), mode)
    bound = tnn.init.calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    drawn = _bound_and_draw(init.kaiming_uniform_, shape, a=a, mode=mode,
                            nonlinearity=nonlinearity)
    assert np.abs(drawn).max() <= bound
    assert np.abs(drawn).max() > 0.999 * bound  # 18k draws reach the edge
    assert drawn.var() == pytest.approx(bound**2 / 3, rel=0.03)
    normal = _bound_and_draw(init.kaiming_normal_, shape, a=a, mode=mode,
                             nonlinearity=nonlinearity)
    assert normal.std() == pytest.approx(bound / math.sqrt(3), rel=0.03)


def test_xavier_uniform_normal_and_simple_fills():
    shape = (50, 70)
    bound = math.sqrt(6.0 / (50 + 70)) * 2.0
    drawn = _bound_and_draw(init.xavier_uniform_, shape, gain=2.0)
    assert np.abs(drawn).max() <= bound and np.abs(drawn).max() > 0.99 * bound
    normal = _bound_and_draw(init.xavier_normal_, shape)
    assert normal.std() == pytest.approx(math.sqrt(2.0 / 120), rel=0.05)
    uniform = _bound_and_draw(init.uniform_, shape, a=-2.0, b=3.0)
    assert uniform.min() >= -2.0 and uniform.max() < 3.0
    assert uniform.mean() == pytest.approx(0.5, abs=0.05)
    gauss = _bound_and_draw(init.normal_, shape, mean=1.0, std=0.5)
    assert gauss.mean() == pytest.approx(1.0, abs=0.02)
    param = nn.Parameter(np.empty((2, 3), np.float32))
    assert init.ones_(param) is param and np.all(param.data == 1)
    assert param.dtype == np.float32
    assert np.all(init.zeros_(param).data == 0)
    assert np.all(init.constant_(param, 2.5).data == 2.5)
    with pytest.raises(TypeError, match="uniform_: tensor must be a Tensor or numpy array"):
        init.uniform_([1.0, 2.0])
    with pytest.raises(ValueError, match="mode must be one of"):
        init.kaiming_uniform_(np.empty((2, 2)), mode="fan_avg")


def test_same_generator_gives_same_weights():
    first = init.kaiming_uniform_(np.empty((4, 4)), rng=np.random.default_rng(7))
    second = init.kaiming_uniform_(np.empty((4, 4)), rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first, second)
    with pytest.raises(TypeError, match="rng must be a numpy"):
        init.normal_(np.empty(2), rng=7)


@pytest.mark.parametrize(("factory", "torch_factory"), [
    (lambda rng: nn.Linear(200, 30, rng=rng), lambda: tnn.Linear(200, 30)),
    (lambda rng: nn.Conv1d(16, 32, 5, rng=rng), lambda: tnn.Conv1d(16, 32, 5)),
    (lambda rng: nn.Conv2d(8, 24, 3, groups=2, rng=rng), lambda: tnn.Conv2d(8, 24, 3, groups=2)),
    (lambda rng: nn.Conv3d(4, 8, 2, rng=rng), lambda: tnn.Conv3d(4, 8, 2)),
    (lambda rng: nn.ConvTranspose2d(12, 30, 3, groups=3, rng=rng),
     lambda: tnn.ConvTranspose2d(12, 30, 3, groups=3)),
])
def test_default_layer_init_like_torch(factory, torch_factory):
    """Weight and bias are U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with torch's fan_in
    (``weight.shape[1] * prod(kernel)``, also for transposed weights)."""
    layer = factory(np.random.default_rng(0))
    reference = torch_factory()
    fan_in, _ = tnn.init._calculate_fan_in_and_fan_out(reference.weight)
    weight_bound = tnn.init.calculate_gain("leaky_relu", math.sqrt(5)) * math.sqrt(3 / fan_in)
    bias_bound = 1 / math.sqrt(fan_in)
    assert weight_bound == pytest.approx(bias_bound)
    assert layer.weight.shape == tuple(reference.weight.shape)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    for param, bound in ((layer.weight.data, weight_bound), (layer.bias.data, bias_bound)):
        assert np.abs(param).max() <= bound * (1 + 1e-7)
        assert param.std() == pytest.approx(bound / math.sqrt(3), rel=0.25)
    # Torch's own draws obey the same bound: the two initialisations are one distribution.
    assert reference.weight.abs().max().item() <= weight_bound * (1 + 1e-7)
    assert np.abs(layer.weight.data).max() > 0.95 * weight_bound
    np.testing.assert_array_equal(layer.weight.data,
                                  factory(np.random.default_rng(0)).weight.data)
