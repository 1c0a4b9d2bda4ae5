"""Activation statistics (``activation_stats``): each leaf layer's mean, standard deviation,
fraction at or below zero and histogram of magnitudes over all batches are those of its
outputs computed layer by layer with NumPy's own functions; batches combine exactly; a
torch model with the same weights gives the same numbers; the model is left as it was
found (modes, BatchNorm statistics, no gradients, no hooks)."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab import nn
from cnnlab.analysis import ActivationStats, LayerStats, activation_stats
from cnnlab.autograd import Tensor, no_grad
from cnnlab.train.stats import MAGNITUDE_EDGES

NAMES = ("0", "1", "2", "3", "4", "5")


def _model(seed: int = 0) -> nn.Sequential:
    """Conv, BatchNorm (with running statistics that make eval differ from train), ReLU,
    max pooling, flatten, linear: every kind of layer the statistics see."""
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=rng), nn.BatchNorm2d(3),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 5, rng=rng))
    model[1].running_mean[...] = rng.normal(size=3).astype(np.float32)
    model[1].running_var[...] = rng.uniform(0.5, 2.0, size=3).astype(np.float32)
    model[1].weight.data[...] = rng.uniform(0.5, 1.5, size=3).astype(np.float32)
    return model


def _batches(sizes=(5, 3, 4), seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, 2, 8, 8)).astype(np.float32) for n in sizes]


def _layer_outputs(model: nn.Sequential, batches: list[np.ndarray]) -> list[np.ndarray]:
    """Each layer's outputs, layer by layer in eval mode (no hooks), per batch, then
    concatenated over the batches."""
    model.eval()
    outputs: list[list[np.ndarray]] = [[] for _ in NAMES]
    with no_grad():
        for x in batches:
            value = Tensor(x)
            for index, layer in enumerate(model):
                value = layer(value)
                outputs[index].append(value.data)
    model.train()
    return [np.concatenate(parts) for parts in outputs]


def _assert_matches(stats: LayerStats, values: np.ndarray, edges=MAGNITUDE_EDGES) -> None:
    values64 = values.astype(np.float64)
    assert stats.count == values.size
    assert stats.mean == pytest.approx(np.mean(values64), rel=1e-12, abs=1e-12)
    assert stats.std == pytest.approx(np.std(values64), rel=1e-9)
    assert stats.nonpositive == np.count_nonzero(values <= 0) / values.size
    np.testing.assert_array_equal(stats.histogram, np.histogram(np.abs(values), edges)[0])


def test_statistics_are_those_of_the_layer_outputs():
    model, batches = _model(), _batches()
    expected = _layer_outputs(_model(), batches)
    stats = activation_stats(model, batches)
    assert isinstance(stats, ActivationStats)
    assert stats.names == NAMES
    assert [layer.kind for layer in stats.layers] == ["Conv2d", "BatchNorm2d", "ReLU",
                                                      "MaxPool2d", "Flatten", "Linear"]
    assert (stats.batches, stats.samples) == (3, 12)
    assert stats.edges is MAGNITUDE_EDGES and len(stats["0"].histogram) == 82
    for name, values in zip(NAMES, expected, strict=True):
        _assert_matches(stats[name], values)
    assert stats["2"].nonpositive > 0.2  # the ReLU's units that are off
    assert stats["2"].nonpositive == stats["1"].nonpositive  # ... where BatchNorm's <= 0


def test_pairs_are_read_as_inputs_and_batches_combine_to_the_whole():
    model, batches = _model(), _batches()
    apart = activation_stats(model, batches)
    pairs = activation_stats(model, [(x, np.zeros(len(x), np.int64)) for x in batches])
    whole = activation_stats(model, iter([np.concatenate(batches)]))
    assert (apart.batches, pairs.batches, whole.batches) == (3, 3, 1)
    for a, p, w in zip(apart.layers, pairs.layers, whole.layers, strict=True):
        assert (a.count, a.mean, a.std, a.nonpositive) == (p.count, p.mean, p.std,
                                                           p.nonpositive)
        np.testing.assert_array_equal(a.histogram, p.histogram)
        # One forward pass over all samples: the layer outputs themselves may round
        # otherwise than per batch (GEMM sizes), so a value may cross a bin edge.
        assert a.count == w.count
        assert a.nonpositive == pytest.approx(w.nonpositive, abs=2 / a.count)
        assert np.abs(a.histogram - w.histogram).sum() <= 4
        assert a.mean == pytest.approx(w.mean, rel=1e-6, abs=1e-7)
        assert a.std == pytest.approx(w.std, rel=1e-6)


def test_the_model_is_left_as_it_was_found():
    model = _model()
    model.train()
    model[5].eval()  # a mixed mode comes back mixed
    buffers = {name: value.copy() for name, value in model.named_buffers()}
    flags = [p.requires_grad for p in model.parameters()]
    stats = activation_stats(model, _batches())
    assert [m.training for m in model.modules()] == [True] * 6 + [False]
    for name, value in model.named_buffers():  # eval mode: BatchNorm used, not updated
        assert value.tobytes() == buffers[name].tobytes(), name
    assert all(p.grad is None for p in model.parameters())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not any(m._forward_hooks for m in model.modules())
    # and it ran in eval mode: BatchNorm's output is the running statistics'
    eval_outputs = _layer_outputs(_model(), _batches())
    assert stats["1"].mean == pytest.approx(np.mean(eval_outputs[1], dtype=np.float64),
                                            rel=1e-9)


def test_chosen_layers_and_other_bins():
    model, batches = _model(), _batches()
    edges = np.linspace(0.0, 4.0, 9)
    stats = activation_stats(model, batches, layers=["5", "2"], edges=edges)
    assert stats.names == ("5", "2")
    expected = _layer_outputs(_model(), batches)
    _assert_matches(stats["5"], expected[5], edges)
    _assert_matches(stats["2"], expected[2], edges)
    # the model itself is a module too: its output is the last layer's
    outer = activation_stats(model, batches, layers=[""])
    assert outer.layers[0].kind == "Sequential"
    _assert_matches(outer[""], expected[5])


def test_a_layer_a_model_of_one_layer_and_the_table():
    layer = nn.Linear(2, 3, rng=np.random.default_rng(0))
    stats = activation_stats(layer, [np.ones((4, 2), np.float32)])
    assert stats.names == ("",) and stats[""].count == 12
    table = str(activation_stats(_model(), _batches()))
    assert table.splitlines()[0].split() == ["layer", "kind", "values", "mean", "std",
                                             "<=", "0", "median", "|value|"]
    assert "BatchNorm2d" in table and table.endswith("3 batches, 12 samples")
    with pytest.raises(KeyError, match=r"no layer 'nope'; the layers are \['0'"):
        activation_stats(_model(), _batches())["nope"]


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda m: activation_stats(object(), [np.zeros((1, 2, 8, 8))]), TypeError,
     r"^activation_stats: model must be a cnnlab\.nn\.Module or a torch\.nn\.Module, got "
     r"builtins\.object$"),
    (lambda m: activation_stats(m, np.zeros((4, 2, 8, 8), np.float32)), TypeError,
     r"^activation_stats: batches must be an iterable of input batches \(or of \(x, y\) "
     r"pairs\), got a single ndarray of shape \(4, 2, 8, 8\); pass \[x\] for one batch$"),
    (lambda m: activation_stats(m, 3), TypeError,
     r"^activation_stats: batches must be an iterable .* got int$"),
    (lambda m: activation_stats(m, []), ValueError,
     r"^activation_stats: batches must hold at least one batch, got none$"),
    (lambda m: activation_stats(m, [(1, 2, 3)]), TypeError,
     r"^activation_stats: batches must yield input arrays or \(x, y\) pairs, got a tuple "
     r"of 3 items as batch 0$"),
    (lambda m: activation_stats(m, ["x"]), TypeError,
     r"^activation_stats: each batch must be a NumPy array or a cnnlab Tensor \(or an "
     r"\(x, y\) pair of them\), got str as batch 0$"),
    (lambda m: activation_stats(m, [np.zeros((1, 2, 8, 8))], layers=["0", "9"]), ValueError,
     r"^activation_stats: layers must name modules of the model, got \['9'\]; its modules "
     r"are \['0', '1', '2', '3', '4', '5'\]$"),
    (lambda m: activation_stats(m, [np.zeros((1, 2, 8, 8))], layers="0"), TypeError,
     r"^activation_stats: layers must be a sequence of module paths \(str\), got '0'$"),
    (lambda m: activation_stats(m, [np.zeros((1, 2, 8, 8))], edges=[1.0, 0.5]), ValueError,
     r"^activation_stats: edges must be a 1-D increasing array of at least two histogram "
     r"edges for magnitudes, the first >= 0, got \[1\.0, 0\.5\]$"),
])
def test_bad_arguments_are_refused_naming_the_argument(call, error, message):
    model = _model()
    with pytest.raises(error, match=message):
        call(model)
    assert not any(m._forward_hooks for m in model.modules())
    assert all(m.training for m in model.modules())


def test_a_torch_model_with_the_same_weights_gives_the_same_statistics():
    torch = pytest.importorskip("torch")
    from torch import nn as tnn

    model, batches = _model(), _batches()
    twin = tnn.Sequential(tnn.Conv2d(2, 3, 3, padding=1), tnn.BatchNorm2d(3), tnn.ReLU(),
                          tnn.MaxPool2d(2), tnn.Flatten(), tnn.Linear(3 * 4 * 4, 5))
    twin.load_state_dict({k: torch.from_numpy(np.array(v))
                          for k, v in model.state_dict().items()})
    twin.train()
    twin[5].eval()
    buffers = {k: v.clone() for k, v in twin.state_dict().items()}
    ours = activation_stats(model, batches)
    theirs = activation_stats(twin, [(x, None) for x in batches])
    assert theirs.names == ours.names
    assert [layer.kind for layer in theirs.layers] == [layer.kind for layer in ours.layers]
    for a, b in zip(ours.layers, theirs.layers, strict=True):
        assert a.count == b.count
        assert b.mean == pytest.approx(a.mean, rel=1e-5, abs=1e-6)
        assert b.std == pytest.approx(a.std, rel=1e-5)
        assert b.nonpositive == pytest.approx(a.nonpositive, abs=2 / a.count)
        # float rounding may move a value across a bin edge, rarely
        assert np.abs(b.histogram - a.histogram).sum() <= 4
    # left as found: modes, BatchNorm statistics, no gradients, no hooks
    assert [m.training for m in twin.modules()] == [True] * 6 + [False]
    for key, value in twin.state_dict().items():
        assert torch.equal(value, buffers[key]), key
    assert all(p.grad is None for p in twin.parameters())
    assert not any(m._forward_hooks for m in twin.modules())
    with pytest.raises(TypeError, match=r"single Tensor of shape \(4, 2, 8, 8\)"):
        activation_stats(twin, torch.zeros(4, 2, 8, 8))
