"""parameter_table against published counts and an independent count of products (the
nonzeros of the layer's matrix, conv_matrix)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab import models, nn
from cnnlab.analysis import conv_matrix, parameter_table


def test_lenet5_matches_the_published_counts():
    # LeNet-5 with a fully connected C3 (28x28 input padded by 2), layer by layer:
    # 6*(25+1) + 16*(6*25+1) + (400+1)*120 + (120+1)*84 + (84+1)*10 = 61,706 parameters.
    # LeCun et al. 1998 give C1 "156 trainable parameters and 122,304 connections": the
    # 117,600 products plus one bias connection per output value.
    table = parameter_table(models.lenet5(np.random.default_rng(0)), (1, 28, 28))
    assert table.total_params == 61_706
    assert table.total_macs == 416_520
    assert [r.params for r in table.rows if r.params] == [156, 2_416, 48_120, 10_164, 850]
    c1 = table.rows[0]
    assert c1.output_shape == (6, 28, 28) and c1.macs == 28 * 28 * 6 * 25
    assert c1.params == 156 and c1.macs + 6 * 28 * 28 == 122_304
    # The lecture's point: a dense layer between the same sizes needs over 23,000 times as many.
    assert c1.dense_params == 28 * 28 * (6 * 28 * 28) + 6 * 28 * 28
    assert sum(r.params for r in table.rows) == table.total_params
    assert "416,520 MACs" in str(table)


def test_macs_equal_the_nonzeros_of_the_layers_matrix():
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), dilation=(1, 2), groups=2, rng=rng)
    up = nn.ConvTranspose1d(4, 6, 3, stride=2, groups=2, rng=rng)
    for layer, shape in ((conv, (4, 9, 8)), (up, (4, 7))):
        row = parameter_table(layer, shape).rows[0]
        matrix = conv_matrix(layer.weight, shape, stride=layer.stride, dilation=layer.dilation,
                             groups=layer.groups, transposed=isinstance(layer, nn.ConvTranspose1d))
        assert row.macs == matrix.nnz  # no padding: every product is one matrix entry
        assert row.params == layer.weight.data.size + layer.bias.data.size
        assert row.dense_params == matrix.shape[0] * matrix.shape[1] + matrix.shape[0]


def test_shared_parameters_count_once():
    layer = nn.Linear(4, 4, rng=np.random.default_rng(0))
    model = nn.Sequential(layer, nn.ReLU(), layer)
    table = parameter_table(model, (4,))
    assert table.total_params == 20 and [r.params for r in table.rows] == [20, 0, 0]
    assert [r.macs for r in table.rows] == [16, 0, 16]


@pytest.mark.parametrize("shape", [(), (1, 0), "1x28", (1, 2.5)])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError, match="parameter_table: input_shape"):
        parameter_table(nn.ReLU(), shape)


def test_a_torch_lenet5_has_the_same_table():
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    model = tnn.Sequential(tnn.Conv2d(1, 6, 5, padding=2), tnn.MaxPool2d(2), tnn.ReLU(),
                           tnn.Conv2d(6, 16, 5), tnn.MaxPool2d(2), tnn.ReLU(), tnn.Flatten(),
                           tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
                           tnn.Linear(84, 10))
    table = parameter_table(model, (1, 28, 28))
    ours = parameter_table(models.build_model("lenet5", np.random.default_rng(0), (1, 28, 28), 10),
                           (1, 28, 28))
    assert table.total_params == 61_706 == ours.total_params
    assert table.total_macs == 416_520 == ours.total_macs
    assert [(r.op, r.output_shape, r.params, r.macs, r.dense_params) for r in table.rows] \
        == [(r.op, r.output_shape, r.params, r.macs, r.dense_params) for r in ours.rows]


def test_a_torch_residual_add_is_a_row():
    torch = pytest.importorskip("torch")

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(2, 2, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x)) + x

    table = parameter_table(Block(), (2, 16))
    assert [r.op for r in table.rows] == ["conv", "relu", "add"]
    assert table.rows[0].params == 14 and table.total_params == 14


def test_a_concatenation_reads_all_its_inputs():
    model = models.build_model("lenet1989", np.random.default_rng(0), (1, 16, 16), 10)
    table = parameter_table(model, (1, 16, 16))
    cat = next(r for r in table.rows if r.op == "concatenate")
    assert cat.output_shape == (12, 4, 4)
    assert cat.dense_params == (3 * 4 * 4 * 4) * 192 + 192  # three 4x4x4 maps -> 192
