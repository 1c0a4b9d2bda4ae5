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
