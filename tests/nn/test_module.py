"""cnnlab.nn.Module bookkeeping: registration, traversal, modes, state dicts, containers."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

from cnnlab import Tensor, nn


class Affine(nn.Module):
    def __init__(self, size: int = 3) -> None:
        super().__init__()
        self.weight = nn.Parameter(np.ones(size, np.float32))
        self.bias = nn.Parameter(np.zeros(size, np.float32))
        self.register_buffer("count", np.array(0, np.int64))
        self.register_buffer("scratch", np.zeros(2), persistent=False)
        self.plain = Tensor(np.ones(2))  # not a Parameter: not registered

    def forward(self, x):
        return x * self.weight + self.bias


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.first = Affine()
        self.body = nn.Sequential(Affine(), nn.ReLU(), Affine())
        self.shared = self.first  # the same module twice
        self.scale = nn.Parameter(np.full(3, 2.0, np.float32))

    def forward(self, x):
        return self.body(self.first(x)) * self.scale


def test_registration_and_traversal_order():
    net = Net()
    names = [name for name, _ in net.named_parameters()]
    assert names == ["scale", "first.weight", "first.bias", "body.0.weight", "body.0.bias",
                     "body.2.weight", "body.2.bias"]  # shared module counted once
    assert len(list(net.parameters())) == 7
    assert [name for name, _ in net.named_buffers()] == [
        "first.count", "first.scratch", "body.0.count", "body.0.scratch", "body.2.count",
        "body.2.scratch"]
    assert [name for name, _ in net.named_children()] == ["first", "body"]
    assert [name for name, _ in net.named_modules()] == ["", "first", "body", "body.0",
                                                        "body.1", "body.2"]
    assert len(list(net.modules())) == 6
    assert [name for name, _ in net.named_parameters(recurse=False)] == ["scale"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in net.parameters())


def test_state_dict_keys_order_copies_and_shared_entries():
    net = Net()
    state = net.state_dict()
    assert list(state) == [
        "scale",
        "first.weight", "first.bias", "first.count",
        "body.0.weight", "body.0.bias", "body.0.count",
        "body.2.weight", "body.2.bias", "body.2.count",
        "shared.weight", "shared.bias", "shared.count",  # as torch: shared modules repeat
    ]
    assert isinstance(state, OrderedDict)
    assert state["first.count"].dtype == np.int64 and state["first.count"].shape == ()
    state["scale"][...] = 7  # a copy: the model is untouched
    assert np.all(net.scale.data == 2)


def test_load_state_dict_copies_in_place_keeping_dtype_and_identity():
    net, other = Net(), Net()
    for param in other.parameters():
        param.data[...] = np.arange(param.size)
    source = {key: value.astype(np.float64) if value.dtype.kind == "f" else value + 5
              for key, value in other.state_dict().items()}
    weight_before = net.first.weight
    array_before = net.first.weight.data
    result = net.load_state_dict(source)
    assert result == nn.IncompatibleKeys([], [])
    assert net.first.weight is weight_before and net.first.weight.data is array_before
    assert net.first.weight.dtype == np.float32
    np.testing.assert_array_equal(net.body[2].bias.data, np.arange(3))
    assert int(net.first.count) == 5


def test_load_state_dict_errors_name_the_key():
    net = Net()
    state = net.state_dict()
    missing = {k: v for k, v in state.items() if k != "body.0.bias"}
    with pytest.raises(ValueError, match=r"missing keys \['body\.0\.bias'\], unexpected keys"
                                         r" \[\]"):
        net.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected keys \['extra\.weight'\]"):
        net.load_state_dict({**state, "extra.weight": np.zeros(1)})
    bad = dict(state)
    bad["body.2.weight"] = np.zeros((4,))
    bad["scale"] = np.full(3, 9.0)
    with pytest.raises(ValueError, match=r"shape mismatch for 'body\.2\.weight': state_dict "
                                         r"has \(4,\), model has \(3,\)"):
        net.load_state_dict(bad)
    assert np.all(net.scale.data == 2)  # nothing copied when a check fails
    with pytest.raises(ValueError, match="shape mismatch"):
        net.load_state_dict(bad, strict=False)
    with pytest.raises(TypeError, match="value for 'scale' must be numeric"):
        net.load_state_dict({**state, "scale": np.array(["a", "b", "c"])})
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        net.load_state_dict([("scale", np.ones(3))])


def test_load_state_dict_non_strict_reports_keys():
    net = Net()
    state = {"scale": np.zeros(3), "nonsense": np.zeros(2)}
    result = net.load_state_dict(state, strict=False)
    assert result.unexpected_keys == ["nonsense"]
    assert "first.weight" in result.missing_keys and "scale" not in result.missing_keys
    assert np.all(net.scale.data == 0)


def test_train_eval_zero_grad_and_requires_grad():
    net = Net()
    assert net.training and net.body[1].training
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    with pytest.raises(TypeError, match="mode must be a bool"):
        net.train("no")
    out = net(Tensor(np.ones((2, 3), np.float32)))
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.requires_grad_(False)
    assert not any(p.requires_grad for p in net.parameters())


def test_setattr_rules():
    module = Affine()
    module.bias = None  # a declared parameter may become None
    assert "bias" not in dict(module.named_parameters()) and module.bias is None
    with pytest.raises(TypeError, match=r"cannot assign ndarray to parameter 'weight' "
                                        r"\(Parameter or None expected\)"):
        module.weight = np.ones(3)
    with pytest.raises(TypeError, match="cannot assign list to buffer 'count'"):
        module.count = [1]
    module.count = np.array(3)
    assert module.state_dict()["count"] == 3
    module.weight = nn.Parameter(np.zeros(3))  # re-assignment keeps the key order
    assert list(module.state_dict()) == ["weight", "count"]
    del module.weight
    assert list(module.state_dict()) == ["count"]

    class Forgetful(nn.Module):
        def __init__(self):
            self.weight = nn.Parameter(np.ones(1))

    with pytest.raises(AttributeError, match=r"call super\(\).__init__\(\) before"):
        Forgetful()


def test_register_errors():
    module = Affine()
    with pytest.raises(ValueError, match=r"name must be non-empty and contain no '\.'"):
        module.register_buffer("a.b", np.zeros(1))
    with pytest.raises(ValueError, match="attribute 'forward' already exists"):
        module.register_parameter("forward", None)
    with pytest.raises(TypeError, match="buffer 'x' must be a numpy array or None"):
        module.register_buffer("x", [1.0])
    with pytest.raises(TypeError, match="parameter 'p' must be a Parameter or None"):
        module.register_parameter("p", np.ones(1))
    with pytest.raises(TypeError, match="module 'm' must be a Module or None"):
        module.add_module("m", np.ones(1))


def test_to_dtype_and_apply():
    net = Net().to(np.float64)
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.first.count.dtype == np.int64
    assert net.first.scratch.dtype == np.float64
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        net.to(np.int32)
    visited = []
    net.apply(lambda m: visited.append(type(m).__name__))
    assert visited[-1] == "Net" and visited.count("Affine") == 3


def test_forward_is_required():
    with pytest.raises(NotImplementedError, match="Module: forward"):
        nn.Module()(1)


def test_repr_like_torch():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False, rng=np.random.default_rng(0)),
        nn.Sequential(nn.ReLU(), nn.Identity()),
        nn.Linear(4, 2, rng=np.random.default_rng(0)),
    )
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), bias=False)\n"
        "  (1): Sequential(\n"
        "    (0): ReLU()\n"
        "    (1): Identity()\n"
        "  )\n"
        "  (2): Linear(in_features=4, out_features=2, bias=True)\n"
        ")"
    )
    assert repr(nn.Parameter(np.zeros(1))).startswith("Parameter containing:\nTensor(")


# ---------------------------------------------------------------------------------------
# Containers.


def test_sequential_indexing_and_growth():
    relu, ident, flat = nn.ReLU(), nn.Identity(), nn.Flatten()
    seq = nn.Sequential(relu, ident)
    assert len(seq) == 2 and seq[0] is relu and seq[-1] is ident and list(seq) == [relu, ident]
    seq.append(flat)
    assert seq[2] is flat
    sliced = seq[1:]
    assert isinstance(sliced, nn.Sequential) and list(sliced._modules) == ["1", "2"]
    seq[0] = nn.Tanh()
    assert isinstance(seq[0], nn.Tanh) and list(seq._modules) == ["0", "1", "2"]
    named = nn.Sequential(OrderedDict([("act", nn.ReLU()), ("out", nn.Identity())]))
    assert [name for name, _ in named.named_children()] == ["act", "out"]
    np.testing.assert_array_equal(named(np.array([-1.0, 2.0])), [0.0, 2.0])
    with pytest.raises(IndexError, match="index 3 is out of range for 3 modules"):
        seq[3]
    with pytest.raises(TypeError, match="index must be an int or slice"):
        seq["0"]


def test_module_list_and_dict():
    layers = nn.ModuleList([nn.Linear(2, 2, rng=np.random.default_rng(i)) for i in range(2)])
    layers.append(nn.ReLU())
    layers.insert(0, nn.Tanh())
    assert [type(m).__name__ for m in layers] == ["Tanh", "Linear", "Linear", "ReLU"]
    assert list(layers.state_dict()) == ["1.weight", "1.bias", "2.weight", "2.bias"]
    assert isinstance(layers[1:3], nn.ModuleList) and len(layers[1:3]) == 2
    layers[0] = nn.Sigmoid()
    assert isinstance(layers[0], nn.Sigmoid)
    blocks = nn.ModuleDict({"enc": nn.Linear(2, 3, rng=np.random.default_rng(0))})
    blocks["act"] = nn.ReLU()
    assert list(blocks) == ["enc", "act"] and "act" in blocks and len(blocks) == 2
    assert list(blocks.state_dict()) == ["enc.weight", "enc.bias"]
    assert isinstance(blocks.pop("act"), nn.ReLU) and list(blocks.keys()) == ["enc"]
    assert [name for name, _ in blocks.items()] == ["enc"]
