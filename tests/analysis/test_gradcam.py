"""grad_cam against Grad-CAM computed independently: with a linear head the gradient of a
class score with respect to the feature maps is the head's weights (so the map is known in
closed form), and on torch models against the classic hook recipe (forward hook for the
activation, backward hook for its gradient, ``backward`` on the score)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab import nn
from cnnlab.analysis import grad_cam
from cnnlab.models import build_model


def _linear_head_model(stride=1):
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, stride=stride, padding=1, rng=rng),
                          nn.Flatten(), nn.Linear(3 * (8 // stride) ** 2, 4, rng=rng))
    return model.to(np.float64)


def test_with_a_linear_head_the_weights_are_the_gradient():
    model = _linear_head_model()
    x = np.random.default_rng(1).standard_normal((1, 8, 8))
    found = grad_cam(model, x, target=2)
    activation = model[0](x[None]).data[0]  # (3, 8, 8)
    alpha = model[2].weight.data[2].reshape(3, 8, 8).mean(axis=(1, 2))
    expected = np.maximum(np.tensordot(alpha, activation, axes=1), 0)
    np.testing.assert_allclose(found.coarse, expected, atol=1e-12)
    assert found.layer == "0" and found.target == 2
    np.testing.assert_allclose(found.map, expected / expected.max(), atol=1e-12)
    scores = model(x[None]).data[0]
    assert found.score == pytest.approx(scores[2])
    assert grad_cam(model, x).target == int(np.argmax(scores))


def test_a_strided_layers_map_sits_on_its_units_field_centres():
    model = _linear_head_model(stride=2)  # unit i of the 4x4 map is centred on pixel 2i
    model[0].bias.data[...] = 0.0
    model[0].weight.data[...] = 0.0
    model[0].weight.data[:, :, 1, 1] = 1.0  # each unit copies the pixel at its centre
    model[2].weight.data[...] = 1.0  # every class likes every unit alike
    x = np.zeros((1, 8, 8))
    x[0, 4, 6] = 1.0  # the pixel at the centre of unit (2, 3)
    found = grad_cam(model, x, target=1)
    assert np.unravel_index(np.argmax(found.coarse), found.coarse.shape) == (2, 3)
    assert np.unravel_index(np.argmax(found.map), found.map.shape) == (4, 6)
    assert found.map.shape == (8, 8) and found.map.max() == 1.0
    # linear between unit centres: half way from pixel 6 to 8 (unit 4 is beyond the map,
    # the map is constant past the last centre) and from 4 to 2
    assert found.map[4, 5] == pytest.approx(0.5) and found.map[3, 6] == pytest.approx(0.5)


def test_torch_against_the_classic_hook_recipe():
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv1d(1, 4, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool1d(2),
        torch.nn.Conv1d(4, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(6 * 16, 5)).double()
    x = np.random.default_rng(0).standard_normal((1, 32))
    seen = {}
    layer = model[3]
    forward = layer.register_forward_hook(lambda m, i, o: seen.__setitem__("a", o))
    backward = layer.register_full_backward_hook(
        lambda m, gi, go: seen.__setitem__("g", go[0]))
    inputs = torch.from_numpy(x[None]).requires_grad_(True)
    model(inputs)[0, 3].backward()
    forward.remove()
    backward.remove()
    alpha = seen["g"][0].mean(dim=1)
    expected = torch.relu((alpha[:, None] * seen["a"][0]).sum(0)).detach().numpy()
    model.zero_grad()
    found = grad_cam(model, x, layer="3", target=3)
    np.testing.assert_allclose(found.coarse, expected, atol=1e-12)
    assert found.map.shape == (32,)
    assert all(p.grad is None for p in model.parameters())


def test_modes_gradients_and_errors():
    model = build_model("vgg-small", np.random.default_rng(0), (3, 32, 32), 10)
    model.train()
    buffers = [b.copy() for _, b in model.named_buffers()]
    x = np.random.default_rng(0).standard_normal((3, 32, 32)).astype(np.float32)
    found = grad_cam(model, x)
    assert found.map.shape == (32, 32)
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(np.array_equal(a, b) for a, (_, b) in zip(buffers, model.named_buffers()))
    with pytest.raises(ValueError, match="layer must name a module with spatial output"):
        grad_cam(model, x, layer="nope")
    with pytest.raises(ValueError, match=r"target must be a class in 0\.\.9"):
        grad_cam(model, x, target=10)
    with pytest.raises(ValueError, match="x must be one input"):
        grad_cam(model, x[None])
    with pytest.raises(ValueError, match=r"must output \(1, classes\) scores"):
        grad_cam(nn.Sequential(nn.Conv2d(1, 2, 3)), np.zeros((1, 5, 5), np.float32))
