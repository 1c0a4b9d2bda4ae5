"""The conv + max-pool rewrite pass (``cnnlab.nn.fusion``): which layer pairs it fuses, that
it stands aside for hooks, patched layers and subclasses, that its plan follows the layers
as they are at each call, and that fusing changes neither the result nor the state-dict
keys. (Fused against unfused against PyTorch over many settings:
``tests/test_conv_max_pool_contract.py``.)"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from cnnlab import Tensor, nn
from cnnlab.nn.fusion import HOOK_DICTS, ConvMaxPool, fuse_conv_max_pool, has_hooks


def _pair(seed: int = 0) -> tuple[nn.Conv2d, nn.MaxPool2d]:
    rng = np.random.default_rng(seed)
    return nn.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64), nn.MaxPool2d(2)


def _kinds(steps) -> list[str]:
    return [type(step).__name__ for step in steps]


def _hook(module, args, output):
    return output


def test_the_pass_fuses_each_plain_pair_and_keeps_the_other_modules():
    conv, pool = _pair()
    conv_b, pool_b = _pair(1)
    steps = fuse_conv_max_pool([conv, pool, nn.ReLU(), nn.MaxPool2d(2), conv_b, pool_b])
    assert _kinds(steps) == ["ConvMaxPool", "ReLU", "MaxPool2d", "ConvMaxPool"]
    assert steps[0] == ConvMaxPool(conv, pool, (2, 2))
    assert fuse_conv_max_pool([]) == []
    assert _kinds(fuse_conv_max_pool([conv])) == ["Conv2d"]


def test_a_fused_step_computes_the_two_layers():
    conv, pool = _pair()
    x = np.random.default_rng(5).standard_normal((2, 2, 8, 6))
    step = fuse_conv_max_pool([conv, pool])[0]
    np.testing.assert_allclose(step(Tensor(x)).data, pool(conv(Tensor(x))).data,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("which", ["conv", "pool"])
@pytest.mark.parametrize("registry", HOOK_DICTS)
def test_a_module_with_a_hook_is_not_fused(which, registry):
    conv, pool = _pair()
    hooked = conv if which == "conv" else pool
    setattr(hooked, registry, OrderedDict())  # an empty registry: no hook yet
    assert not has_hooks(hooked)
    assert _kinds(fuse_conv_max_pool([conv, pool])) == ["ConvMaxPool"]
    getattr(hooked, registry)[0] = _hook
    assert has_hooks(hooked)
    assert _kinds(fuse_conv_max_pool([conv, pool])) == ["Conv2d", "MaxPool2d"]


def test_a_hook_registered_after_a_call_is_seen_by_the_next_call(monkeypatch):
    # The plan is rebuilt at every call: no cached plan can hide a new hook.
    conv, pool = _pair()
    model = nn.Sequential(conv, pool)
    calls = []
    original = nn.MaxPool2d._functional

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(nn.MaxPool2d, "_functional", staticmethod(spy))
    x = np.random.default_rng(6).standard_normal((1, 2, 6, 6))
    fused = model(x)
    assert calls == []
    conv._forward_hooks = OrderedDict([(0, _hook)])
    unfused = model(x)
    assert calls == [1]  # the pooling layer ran on its own
    np.testing.assert_allclose(unfused.data, fused.data, rtol=1e-12, atol=1e-12)
    del conv._forward_hooks
    model(x)
    assert calls == [1]


def test_a_layer_changed_after_a_call_is_seen_by_the_next_call():
    conv, pool = _pair()
    model = nn.Sequential(conv, pool)
    assert _kinds(fuse_conv_max_pool(list(model))) == ["ConvMaxPool"]
    pool.ceil_mode = True
    assert _kinds(fuse_conv_max_pool(list(model))) == ["Conv2d", "MaxPool2d"]
    pool.ceil_mode = False
    model[1] = nn.ReLU()
    assert _kinds(fuse_conv_max_pool(list(model))) == ["Conv2d", "ReLU"]


def test_a_patched_forward_or_a_subclass_is_not_fused():
    class OwnPool(nn.MaxPool2d):
        pass

    conv, pool = _pair()
    assert _kinds(fuse_conv_max_pool([conv, OwnPool(2)])) == ["Conv2d", "OwnPool"]
    pool.forward = lambda x: x
    assert _kinds(fuse_conv_max_pool([conv, pool])) == ["Conv2d", "MaxPool2d"]


def test_fusing_keeps_the_state_dict_keys_and_adds_no_module():
    conv, pool = _pair()
    model = nn.Sequential(OrderedDict([("conv1", conv), ("pool1", pool), ("act", nn.ReLU())]))
    keys = list(model.state_dict())
    model(np.zeros((1, 2, 4, 4)))
    assert keys == list(model.state_dict()) == ["conv1.weight", "conv1.bias"]
    assert [name for name, _ in model.named_modules()] == ["", "conv1", "pool1", "act"]


def test_fuse_conv_pool_false_runs_every_module(monkeypatch):
    conv, pool = _pair()
    model = nn.Sequential(conv, pool)
    seen = []
    monkeypatch.setattr("cnnlab.nn.container.fuse_conv_max_pool",
                        lambda modules: seen.append(len(modules)) or list(modules))
    model(np.zeros((1, 2, 4, 4)))
    model.fuse_conv_pool = False
    model(np.zeros((1, 2, 4, 4)))
    assert seen == [2]  # the pass is not even asked when switched off
