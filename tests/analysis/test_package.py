"""The analysis package's ground rules as a user meets them: importing it pulls in no
plotting library and no torch (torch is read lazily, only when a torch model is given),
and every function takes a torch model or tensor where it takes a cnnlab one."""

import subprocess
import sys

import numpy as np
import pytest

from cnnlab.analysis import conv_matrix, shift_consistency


def test_importing_analysis_imports_neither_matplotlib_nor_torch():
    code = ("import sys, cnnlab.analysis, cnnlab.analysis.equivariance, "
            "cnnlab.analysis.kernel, cnnlab.analysis.receptive, cnnlab.analysis.stats; "
            "print(sorted(m for m in ('matplotlib', 'torch', 'PIL') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_torch_weights_and_models_are_taken_as_they_are():
    torch = pytest.importorskip("torch")
    layer = torch.nn.Conv2d(2, 3, 3, padding=1)
    matrix = conv_matrix(layer.weight, (2, 6, 6), padding=1)
    x = np.random.default_rng(0).standard_normal((2, 6, 6)).astype(np.float32)
    with torch.no_grad():
        y = layer(torch.from_numpy(x[None])) - layer.bias[:, None, None]
    np.testing.assert_allclose(matrix @ x.ravel(), y.numpy().ravel(), atol=1e-5)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular"), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    images = np.random.default_rng(1).standard_normal((10, 1, 8, 8)).astype(np.float32)
    found = shift_consistency(model, images, max_shift=3, rng=np.random.default_rng(0))
    assert found.consistency == 1.0 and found.samples == 100


def test_torch_forward_reading_self_training_is_audited_in_eval_mode():
    # fx bakes ``self.training`` into the graph when it traces: it must trace in eval mode
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    from cnnlab.analysis import (
        effective_receptive_field,
        equivariance_report,
        parameter_table,
        receptive_fields,
        trace,
    )

    class FunctionalBN(torch.nn.Module):
        def __init__(self, c):
            super().__init__()
            self.w, self.b = torch.nn.Parameter(torch.ones(c)), torch.nn.Parameter(
                torch.zeros(c))
            self.register_buffer("mean", torch.zeros(c))
            self.register_buffer("var", torch.ones(c))

        def forward(self, x):
            x = tf.batch_norm(x, self.mean, self.var, self.w, self.b, self.training, 0.1)
            return tf.dropout(x, 0.5, self.training)

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular")
            self.bn = FunctionalBN(4)

        def forward(self, x):
            return tf.relu(self.bn(self.conv(x)))

    model = Model().train()
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8)).astype(np.float32)
    trace(model, x)
    receptive_fields(model, (1, 8, 8))
    parameter_table(model, (1, 8, 8))
    report = equivariance_report(model, x, shifts=(1, 2))
    erf_train = effective_receptive_field(model, (1, 8, 8), rng=np.random.default_rng(0))
    assert torch.equal(model.bn.mean, torch.zeros(4)) and torch.equal(model.bn.var,
                                                                        torch.ones(4))
    assert model.training and model.bn.training
    assert max(r.error for r in report.rows) < 1e-5  # no dropout: eval mode
    erf_eval = effective_receptive_field(model.eval(), (1, 8, 8),
                                         rng=np.random.default_rng(0))
    np.testing.assert_allclose(erf_train.map, erf_eval.map)
