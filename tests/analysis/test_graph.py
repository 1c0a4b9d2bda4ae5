"""trace: the graph capture read from the autograd tape (issue 14).

Each test states what a reader of the model's ``forward`` knows independently: which ops
it runs in which order, what feeds what, the shapes the layers produce (read from forward
hooks, a second observer), and that tracing leaves the model as it found it."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab import Tensor, models, nn
from cnnlab.analysis import CONSTANT, INPUT, trace
from cnnlab.autograd import concatenate, no_grad
from cnnlab.nn.fusion import has_hooks


def _hooked_shapes(model: nn.Module, x: np.ndarray) -> dict[str, tuple[int, ...]]:
    """Each leaf module's output shape, by forward hooks (independent of trace)."""
    shapes: dict[str, tuple[int, ...]] = {}
    handles = [module.register_forward_hook(
        lambda _m, _a, out, path=path: shapes.__setitem__(path, tuple(out.shape)))
        for path, module in model.named_modules() if path and not list(module.children())]
    with no_grad():
        model.eval()(Tensor(x))
    for handle in handles:
        handle.remove()
    return shapes


def _check_well_formed(graph) -> None:
    """Every reference names the input, a parameter, a constant or an earlier node."""
    for node in graph:
        for index in node.node_inputs():
            assert index < node.index


def test_lenet5_ops_in_order_with_modules_shapes_and_params():
    model = models.lenet5(np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 1, 28, 28)).astype(np.float32)
    graph = trace(model, x)
    _check_well_formed(graph)
    # The fusion pass would run conv + pool as one op; trace must see the two layers.
    assert [n.op for n in graph] == ["conv", "max_pool", "relu", "conv", "max_pool", "relu",
                                     "flatten", "linear", "relu", "linear", "relu", "linear"]
    assert [n.module for n in graph] == [str(i) for i in range(12)]
    shapes = _hooked_shapes(model, x)
    assert {n.module: n.output_shape for n in graph} == shapes
    first = graph[0]
    assert first.inputs == (INPUT, "0.weight", "0.bias") and first.params == ("0.weight",
                                                                               "0.bias")
    assert first.attrs["stride"] == (1, 1) and first.attrs["padding"] == ((2, 2), (2, 2))
    assert graph[1].attrs["kernel_size"] == (2, 2) and graph[1].attrs["stride"] == (2, 2)
    for node in graph[1:]:
        assert node.inputs[0] == f"%{node.index - 1}"  # a chain
    assert graph.outputs == ("%11",) and graph.input_shape == (2, 1, 28, 28)
    assert "max_pool" in graph.to_table() and str(graph) == graph.to_table()


def test_residual_addition_and_functional_calls_are_seen():
    model = models.ResNetSmall(np.random.default_rng(0), in_channels=1, widths=(4, 8))
    graph = trace(model, np.ones((1, 1, 16, 16), np.float32))
    _check_well_formed(graph)
    # ResNetSmall.forward calls F.relu itself: the op belongs to the model, not a layer.
    assert graph[2].op == "relu" and graph[2].module == "" and graph[2].inputs == ("%1",)
    adds = [n for n in graph if n.op == "add"]
    assert len(adds) == 2  # one residual addition per block
    for add in adds:
        assert add.module.startswith("layers.")
        left, right = (graph[i] for i in add.node_inputs())
        assert left.output_shape == right.output_shape == add.output_shape
        assert left.index != right.index  # two paths meet
    # The second block has a strided 1x1 projection shortcut.
    convs = [n for n in graph if n.op == "conv" and n.module.startswith("layers.1")]
    assert sorted(n.attrs["stride"] for n in convs) == [(1, 1), (2, 2), (2, 2)]


def test_unet_concatenation_reads_the_skip_and_the_upsampled_path():
    model = models.UNet(np.random.default_rng(0), base=2, depth=2)
    graph = trace(model, np.ones((1, 1, 8, 8), np.float32))
    _check_well_formed(graph)
    cats = [n for n in graph if n.op == "concatenate"]
    assert len(cats) == 2 and all(n.attrs["axis"] == 1 for n in cats)
    for cat in cats:
        up, skip = (graph[i] for i in cat.node_inputs())
        assert up.op == "conv_transpose" and up.attrs["stride"] == (2, 2)
        assert skip.op == "relu" and skip.module.startswith("down.")
        assert cat.output_shape[1] == up.output_shape[1] + skip.output_shape[1]
    assert graph[len(graph) - 1].module == "head"


def test_lenet1989_per_unit_biases_padding_and_channel_selection():
    model = models.LeNet1989(np.random.default_rng(0))
    graph = trace(model, np.zeros((1, 1, 16, 16), np.float32))
    _check_well_formed(graph)
    pad = graph[0]
    assert pad.op == "pad" and pad.attrs["pad"] == (2, 2, 2, 2) and pad.attrs["value"] == -1
    bias_adds = [n for n in graph if n.op == "add" and "h1_bias" in n.inputs]
    assert len(bias_adds) == 1 and bias_adds[0].module == ""
    assert any(n.op == "getitem" for n in graph)  # h1[:, inputs] for each H2 map


def test_the_model_is_left_as_it_was_found():
    model = models.ResNetSmall(np.random.default_rng(0), in_channels=1, widths=(4,))
    model.train()
    model.layers.eval()  # mixed modes come back as they were
    model.fc.weight.requires_grad = False
    model.conv1.weight.grad = np.full(model.conv1.weight.shape, 7.0, np.float32)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(1).standard_normal((3, 1, 8, 8)).astype(np.float32)
    graph = trace(model, x)
    assert model.training and model.bn1.training and not model.layers.training
    assert not model.fc.weight.requires_grad and model.fc.weight.grad is None
    assert np.all(model.conv1.weight.grad == 7.0)
    assert all(p.grad is None for n, p in model.named_parameters() if n != "conv1.weight")
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)  # BN statistics too
    assert not any(has_hooks(m) for m in model.modules())
    # The frozen layer's op is still an op, with its parameter named.
    assert graph[len(graph) - 1].inputs[1:] == ("fc.weight", "fc.bias")


def test_trace_records_inside_no_grad_and_without_backward_hook_identities():
    model = nn.Sequential(nn.Conv1d(1, 2, 3, rng=np.random.default_rng(0)), nn.ReLU())
    model[0].register_full_backward_hook(lambda *args: None)
    with no_grad():
        graph = trace(model, np.ones((1, 1, 8), np.float32))
    assert [n.op for n in graph] == ["conv", "relu"]
    assert graph[1].inputs == ("%0",)


def test_constants_and_multiple_outputs():
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv1d(1, 1, 1, rng=np.random.default_rng(0))

        def forward(self, x):
            h = self.conv(x)
            return h * 2.0, concatenate([h, x], axis=1)

    graph = trace(TwoHeads(), np.ones((1, 1, 4), np.float32))
    assert [n.op for n in graph] == ["conv", "mul", "concatenate"]
    assert graph[1].inputs == ("%0", CONSTANT)
    assert graph[2].inputs == ("%0", INPUT)
    assert graph.outputs == ("%1", "%2")
    assert [n.ref for n in graph.consumers(0)] == ["%1", "%2"]


@pytest.mark.parametrize("bad, message", [
    (lambda: trace(lambda x: x, np.ones((1, 1, 4))), "model must be a cnnlab.nn.Module"),
    (lambda: trace(nn.ReLU(), [1.0, 2.0]), "example_input must be a NumPy array"),
    (lambda: trace(nn.ReLU(), np.ones(3, np.int64)),
     "example_input must be float32 or float64, got dtype int64"),
])
def test_bad_arguments_name_the_function_and_the_argument(bad, message):
    with pytest.raises(TypeError, match="trace: " + message):
        bad()


def test_wavenet_padding_is_causal_and_dilations_recorded():
    model = models.WaveNet(np.random.default_rng(0), channels=2, layers=3)
    graph = trace(model, np.ones((1, 1, 16), np.float32))
    _check_well_formed(graph)
    pads = [n for n in graph if n.op == "pad"]
    assert [n.attrs["pad"] for n in pads] == [(1, 0), (2, 0), (4, 0)]
    dilated = [n.attrs["dilation"] for n in graph if n.module.startswith("filters.")]
    assert dilated == [(1,), (2,), (4,)]
    # The head's F.relu calls are the model's own: no module ran them.
    assert [n.module for n in graph if n.op == "relu"] == ["", ""]


def test_an_exception_caught_inside_forward_does_not_shift_module_paths():
    class Failing(nn.Module):
        def forward(self, x):
            _ = x * 2.0
            raise ValueError("refused")

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bad = Failing()
            self.act = nn.ReLU()

        def forward(self, x):
            try:
                x = self.bad(x)
            except ValueError:
                pass
            return self.act(x + 1.0)

    graph = trace(Model(), np.ones((1, 1, 4), np.float32))
    assert [(n.op, n.module) for n in graph] == [("mul", "bad"), ("add", ""), ("relu", "act")]


def test_calls_on_other_threads_are_neither_recorded_nor_attributed():
    import threading

    started, release = threading.Event(), threading.Event()

    class Slow(nn.Module):
        def forward(self, x):
            if threading.current_thread() is threading.main_thread():
                started.set()
                release.wait(5)
            return x * 2.0

    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = Slow(), Slow()

        def forward(self, x):
            return self.a(x) + 1.0

    model = Model()
    other = threading.Thread(target=lambda: (started.wait(5), model.b(Tensor(
        np.ones((1, 1, 4), np.float32), requires_grad=True)), release.set()))
    other.start()
    graph = trace(model, np.ones((1, 1, 4), np.float32))
    other.join()
    assert [(n.op, n.module) for n in graph] == [("mul", "a"), ("add", "")]


def test_parameters_named_like_the_reserved_references_stay_parameters():
    class Model(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.constant = nn.Parameter(np.ones(1, np.float32))
            self.input = nn.Parameter(np.ones(1, np.float32))

        def forward(self, x):
            return x * self.constant + self.input

    graph = trace(Model(), np.ones((1, 1, 4), np.float32))
    assert graph[0].inputs == (INPUT, "constant") and graph[0].params == ("constant",)
    assert graph[1].params == ("input",)
    assert len({graph[0], graph[1]}) == 2  # nodes are hashable


def test_hooks_ops_belong_to_their_module_and_fusion_stands_aside_only_while_tracing():
    from cnnlab.autograd import observe_ops

    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=np.random.default_rng(0)), nn.MaxPool2d(2))
    x = np.random.default_rng(1).standard_normal((1, 1, 8, 8)).astype(np.float32)
    assert [n.op for n in trace(model, x)] == ["conv", "max_pool"]
    seen: list[str] = []
    with observe_ops(lambda out, parents, op, attrs: seen.append(op)):
        model(Tensor(x, requires_grad=True))
    assert seen == ["conv_max_pool"]  # the pass is back on after the trace
    with model[1].register_forward_pre_hook(lambda m, args: (args[0] * 1.0,)):
        graph = trace(model, x)
    assert [(n.op, n.module) for n in graph] == [("conv", "0"), ("mul", "1"),
                                                  ("max_pool", "1")]


def test_settings_that_change_the_result_are_in_attrs():
    from cnnlab import functional as F

    class Model(nn.Module):
        def forward(self, x):
            a = F.avg_pool1d(x, 3, 2, padding=1, count_include_pad=False, divisor_override=2)
            b = F.max_pool1d(x, 3, 2, ceil_mode=True)
            return (x ** 3.0).sum(axis=1, keepdims=True), F.leaky_relu(a, 0.2), F.gelu(
                b, approximate="tanh")

    graph = trace(Model(), np.ones((1, 1, 8), np.float32))
    by_op = {n.op: n.attrs for n in graph}
    assert by_op["avg_pool"]["count_include_pad"] is False
    assert by_op["avg_pool"]["divisor_override"] == 2 and by_op["avg_pool"]["padding"] == (1,)
    assert by_op["max_pool"]["ceil_mode"] is True
    assert by_op["pow"] == {"exponent": 3.0}
    assert by_op["sum"] == {"axis": 1, "keepdims": True}
    assert by_op["leaky_relu"] == {"negative_slope": 0.2}
    assert by_op["gelu"] == {"approximate": "tanh"}


def test_torch_models_are_read_through_fx():
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional

    class Skip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 2, 3, padding="same", bias=False)
            self.bn = torch.nn.BatchNorm2d(2)
            self.weight = torch.nn.Parameter(torch.randn(4, 4, 1, 1))

        def forward(self, x):
            h = tf.relu(self.bn(self.conv(x))) + x
            h = torch.cat([h, x], dim=1)
            h = tf.conv2d(h, self.weight, stride=2)
            return h[..., 1:].flatten(1)

    model = Skip()
    model.train()
    graph = trace(model, np.zeros((1, 2, 8, 8), np.float32))
    assert [n.op for n in graph] == ["conv", "batch_norm", "relu", "add", "concatenate",
                                     "conv", "getitem", "flatten"]
    conv, bn, _, add, cat, conv2, crop, _ = graph
    assert conv.inputs == (INPUT, "conv.weight") and conv.module == "conv"
    assert conv.attrs["padding"] == ((1, 1), (1, 1)) and conv.attrs["kernel_size"] == (3, 3)
    assert bn.inputs == ("%0", "bn.weight", "bn.bias") and bn.module_type == "BatchNorm2d"
    assert add.inputs == ("%2", INPUT) and cat.inputs == ("%3", INPUT)
    assert cat.attrs == {"axis": 1} and cat.output_shape == (1, 4, 8, 8)
    assert conv2.inputs == ("%4", "weight") and conv2.attrs["stride"] == (2, 2)
    assert crop.output_shape == (1, 4, 4, 3) and graph.outputs == ("%7",)
    assert graph.parameter_shapes["weight"] == (4, 4, 1, 1)
    assert model.training and model.bn.training  # modes restored


def test_torch_forward_that_branches_on_values_is_refused():
    torch = pytest.importorskip("torch")

    class Branchy(torch.nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(ValueError, match=r"trace: torch\.fx cannot trace Branchy"):
        trace(Branchy(), np.zeros((1, 1, 4), np.float32))
