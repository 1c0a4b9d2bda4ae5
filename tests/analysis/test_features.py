"""top_activations against a forward hook and a sort; visualise_channel: its Fourier
parameterisation's gradient is the exact adjoint, the optimised input excites the channel
far more than the random start, stays in the value range, and leaves the model as found;
shift_robustness against a loop."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab import nn
from cnnlab.analysis import shift_robustness, top_activations, visualise_channel
from cnnlab.analysis.equivariance import shift_array
from cnnlab.analysis.features import _from_image_gradient, _spectrum_scale, _to_image
from cnnlab.models import build_model


def _model():
    return build_model("digits-cnn", np.random.default_rng(0), (1, 8, 8), 10)


def test_top_activations_are_the_largest_channel_maxima():
    model = _model()
    x = np.random.default_rng(1).standard_normal((50, 1, 8, 8)).astype(np.float32)
    seen = []
    handle = model[3].register_forward_hook(lambda m, i, o: seen.append(o.data[:, 2]))
    model(x)
    handle.remove()
    strength = seen[0].reshape(50, -1).max(axis=1)
    found = top_activations(model, x, layer="3", channel=2, k=5, batch_size=16)
    np.testing.assert_array_equal(found.indices, np.argsort(-strength, kind="stable")[:5])
    np.testing.assert_allclose(found.values, np.sort(strength)[::-1][:5])
    assert found.layer == "3:conv" and "channel 2" in str(found)
    channels = model[3].weight.shape[0]
    with pytest.raises(ValueError, match=rf"channel must be in 0\.\.{channels - 1}"):
        top_activations(model, x, layer="3", channel=channels)
    with pytest.raises(ValueError, match="layer must name an op with spatial output"):
        top_activations(model, x, layer="nope")


@pytest.mark.parametrize("spatial", [(16,), (15,), (6, 8), (5, 7)])
def test_the_fourier_gradient_is_the_adjoint(spatial):
    rng = np.random.default_rng(0)
    scale = _spectrum_scale(spatial)
    c = rng.standard_normal((2, *scale.shape)) + 1j * rng.standard_normal((2, *scale.shape))
    g = rng.standard_normal((2, *spatial))
    # d <to_image(c), g> / d (Re c, Im c), by finite differences against the adjoint
    adjoint = _from_image_gradient(g, scale, spatial)
    eps = 1e-6
    for index in [(0,) + (0,) * len(spatial), (1,) + (1,) * len(spatial),
                  (0, *(n - 1 for n in scale.shape))]:
        for unit, part in ((1.0, "real"), (1j, "imag")):
            bumped = c.copy()
            bumped[index] += eps * unit
            numeric = (np.sum(_to_image(bumped, scale, spatial) * g)
                       - np.sum(_to_image(c, scale, spatial) * g)) / eps
            analytic = getattr(adjoint[index], part)
            assert numeric == pytest.approx(analytic, rel=1e-4, abs=1e-6), (index, part)


def test_visualisation_excites_the_channel_and_leaves_the_model_alone():
    model = _model()
    model.train()
    found = visualise_channel(model, (1, 8, 8), layer="3", channel=1, steps=64,
                              value_range=(-1.0, 2.0), rng=np.random.default_rng(0))
    assert found.image.shape == (1, 8, 8)
    assert found.image.min() >= -1.0 and found.image.max() <= 2.0
    assert found.activation > found.baseline + 0.5
    assert found.history[-1] > found.history[0]
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    again = visualise_channel(model, (1, 8, 8), layer="3", channel=1, steps=64,
                              value_range=(-1.0, 2.0), rng=np.random.default_rng(0))
    np.testing.assert_array_equal(again.image, found.image)


def test_visualisation_1d_and_colour():
    model = build_model("mnist1d-cnn", np.random.default_rng(0), (1, 40), 10)
    found = visualise_channel(model, (1, 40), channel=3, steps=48,
                              rng=np.random.default_rng(0))
    assert found.image.shape == (1, 40) and found.activation > found.baseline
    colour = nn.Sequential(nn.Conv2d(3, 4, 3, rng=np.random.default_rng(0)), nn.ReLU(),
                           nn.Conv2d(4, 2, 3, rng=np.random.default_rng(1)))
    found = visualise_channel(colour, (3, 12, 12), channel=0, steps=48,
                              rng=np.random.default_rng(0))
    assert found.image.shape == (3, 12, 12) and found.activation > found.baseline
    with pytest.raises(ValueError, match="input_shape must be"):
        visualise_channel(colour, (12,))


def test_shift_robustness_against_a_loop():
    model = _model()
    x = np.random.default_rng(2).standard_normal((30, 1, 8, 8)).astype(np.float32)
    labels = np.random.default_rng(3).integers(0, 10, 30)
    found = shift_robustness(model, x, labels, max_shift=2)
    for s, accuracy in zip(found.shifts, found.accuracy):
        offsets = [(0, 0)] if s == 0 else [(s, 0), (-s, 0), (0, s), (0, -s)]
        hits = [np.mean(model(shift_array(x, o, "crop")).data.argmax(1) == labels)
                for o in offsets]
        assert accuracy == pytest.approx(np.mean(hits))
    assert "shift" in str(found)
    with pytest.raises(ValueError, match=r"labels must have shape \(30,\)"):
        shift_robustness(model, x, labels[:3], max_shift=1)
