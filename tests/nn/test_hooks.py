"""cnnlab.nn's module hooks against torch.nn's: forward pre-hooks, forward hooks and full
backward hooks, their return values, removal, and the fusion pass standing aside for a
hooked layer so the hook sees the layer's own output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab import Tensor, nn


def _conv_pair(rng):
    ours = nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64, rng=rng)
    theirs = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    theirs.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in
                            ours.state_dict().items()})
    return ours, theirs


def test_forward_hooks_see_and_replace_like_torch():
    rng = np.random.default_rng(0)
    ours, theirs = _conv_pair(rng)
    x = rng.standard_normal((2, 2, 5, 5))
    calls = {"ours": [], "theirs": []}
    for name, layer in (("ours", ours), ("theirs", theirs)):
        layer.register_forward_pre_hook(lambda m, args, n=name: calls[n].append("pre")
                                        or (args[0] * 2,))
        layer.register_forward_hook(lambda m, args, out, n=name: calls[n].append(
            ("post", tuple(out.shape))) or out + 1)
    ours_out = ours(Tensor(x))
    theirs_out = theirs(torch.from_numpy(x))
    np.testing.assert_allclose(ours_out.data, theirs_out.detach().numpy(), rtol=1e-12)
    assert calls["ours"] == calls["theirs"] == ["pre", ("post", (2, 3, 5, 5))]


def test_a_removed_hook_no_longer_runs():
    layer = nn.ReLU()
    seen = []
    handle = layer.register_forward_hook(lambda m, args, out: seen.append(1))
    layer(np.ones(2))
    handle.remove()
    layer(np.ones(2))
    with layer.register_forward_pre_hook(lambda m, args: seen.append(2)):
        layer(np.ones(2))
    layer(np.ones(2))
    assert seen == [1, 2]
    with pytest.raises(TypeError, match=r"ReLU.register_forward_hook: hook must be callable"):
        layer.register_forward_hook(3)


def test_full_backward_hook_gets_torchs_gradients_and_may_replace_them():
    rng = np.random.default_rng(1)
    ours, theirs = _conv_pair(rng)
    x = rng.standard_normal((2, 2, 5, 5))
    upstream = rng.standard_normal((2, 3, 5, 5))
    got = {}
    for name, layer in (("ours", ours), ("theirs", theirs)):
        layer.register_full_backward_hook(
            lambda m, gi, go, n=name: got.__setitem__(n, (gi, go)) or (gi[0] * 3,))
    xt = Tensor(x.copy(), requires_grad=True)
    ours(xt).backward(upstream)
    x_torch = torch.from_numpy(x.copy()).requires_grad_()
    theirs(x_torch).backward(torch.from_numpy(upstream))
    (ours_gi,), (ours_go,) = got["ours"]
    (theirs_gi,), (theirs_go,) = got["theirs"]
    np.testing.assert_allclose(ours_go, theirs_go.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours_gi, theirs_gi.numpy(), rtol=1e-10, atol=1e-12)
    # the replaced gradient is what reaches the input, in both
    np.testing.assert_allclose(xt.grad, x_torch.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xt.grad, 3 * ours_gi, rtol=1e-12)


def test_a_backward_hook_on_a_module_with_two_graded_inputs_is_refused():
    class Add(nn.Module):
        def forward(self, a, b):
            return a + b

    add = Add()
    add.register_full_backward_hook(lambda m, gi, go: None)
    with pytest.raises(TypeError, match=r"Add: register_full_backward_hook supports modules "
                                        r"with one input that needs a gradient, got 2"):
        add(Tensor(np.ones(2), requires_grad=True), Tensor(np.ones(2), requires_grad=True))


def test_the_fusion_pass_stands_aside_for_a_hooked_layer():
    """Issue 12: with a hook, conv + max-pool run as their own layers, so the conv's hook
    sees the conv's own output (the fused op never builds it)."""
    rng = np.random.default_rng(2)
    model = nn.Sequential(nn.Conv2d(1, 6, 5, rng=rng), nn.MaxPool2d(2))
    x = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    fused = model(x)
    shapes = []
    model[0].register_forward_hook(lambda m, args, out: shapes.append(out.shape))
    hooked = model(x)
    assert shapes == [(4, 6, 24, 24)]
    np.testing.assert_allclose(hooked, fused, rtol=1e-5, atol=1e-5)
