"""equivariance_report, shift_consistency and swap_pooling: exact zeros where the lecture
says so (circular stride-1 stacks, shifts by multiples of a stride), errors at borders and
after poolings, errors computed by hand with the functional API, Zhang's BlurPool against
the antialiased-cnns formula written in torch, and the audit's manners (eval mode
restored, BatchNorm statistics and gradients untouched)."""

import numpy as np
import pytest

from cnnlab import functional as F
from cnnlab import nn
from cnnlab.analysis import (
    AntialiasedPool,
    equivariance_report,
    shift_consistency,
    swap_pooling,
)
from cnnlab.analysis.equivariance import shift_array
from cnnlab.models import build_model


def _circular_stack(nd, layers=3, stride_last=1):
    conv = (nn.Conv1d, nn.Conv2d)[nd - 1]
    modules = []
    for i in range(layers):
        modules += [conv(1 if i == 0 else 3, 3, 3, padding=1, padding_mode="circular",
                         stride=stride_last if i == layers - 1 else 1,
                         rng=np.random.default_rng(i)), nn.Tanh()]
    return nn.Sequential(*modules).to(np.float64)


@pytest.mark.parametrize("nd", [1, 2])
def test_circular_stride_one_stack_is_exactly_equivariant(nd):
    model = _circular_stack(nd)
    x = np.random.default_rng(0).standard_normal((5, 1) + (16,) * nd)
    report = equivariance_report(model, x, shifts=(1, 2, 5))
    assert len(report.rows) == 6
    for row in report.rows:
        assert row.jump == (1.0,) * nd
        assert row.error <= 1e-12, row


def test_torch_stack_is_equivariant_too():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"), torch.nn.ReLU(),
        torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular")).double()
    x = np.random.default_rng(0).standard_normal((3, 1, 12, 12))
    report = equivariance_report(model, x, shifts=(1, 3))
    assert [r.kind for r in report.rows] == ["conv", "relu", "conv"]
    assert max(r.error for r in report.rows) <= 1e-12


def test_a_stride_commutes_only_with_its_multiples():
    model = _circular_stack(1, stride_last=2)
    x = np.random.default_rng(1).standard_normal((4, 1, 32))
    report = equivariance_report(model, x, shifts=(1, 2, 4))
    last = report.rows[-1]
    assert last.jump == (2.0,)
    assert last.errors[0] is None and last.errors[1] <= 1e-12 and last.errors[2] <= 1e-12
    assert last.error <= 1e-12
    only_odd = equivariance_report(model, x, shifts=(1, 3)).rows[-1]
    assert only_odd.error is None and "not a multiple of the stride 2" in only_odd.reason


def test_the_error_is_the_one_computed_by_hand():
    # zero padding: a roll wraps content across the border, where the padding differs
    rng = np.random.default_rng(2)
    weight = rng.standard_normal((2, 1, 3, 3))
    model = nn.Conv2d(1, 2, 3, padding=1, bias=False).to(np.float64)
    model.weight.data[...] = weight
    x = rng.standard_normal((3, 1, 10, 10))
    row = equivariance_report(model, x, shifts=(2,)).rows[0]
    y = F.conv2d(x, weight, padding=1)
    y_shifted = F.conv2d(np.roll(x, (2, 2), axis=(2, 3)), weight, padding=1)
    expected = np.linalg.norm(y_shifted - np.roll(y, (2, 2), axis=(2, 3))) / np.linalg.norm(y)
    assert row.error == pytest.approx(expected, rel=1e-12) and row.error > 0.1


def test_zero_fill_keeps_a_centred_object_exact_at_stride_one():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(2, 2, 3, padding=1)).to(np.float64)
    x = np.zeros((2, 1, 20, 20))
    x[:, :, 8:12, 8:12] = np.random.default_rng(3).standard_normal((2, 1, 4, 4))
    crop = equivariance_report(model, x, shifts=(1, 3), mode="crop")
    # biases make the background nonzero: only the interior of the map stays exact, so
    # compare the exact case without biases
    assert crop.rows[0].error > 0
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.bias.data[...] = 0
    crop = equivariance_report(model, x, shifts=(1, 3), mode="crop")
    assert max(r.error for r in crop.rows) <= 1e-12


def test_lenet5_rows_and_outputs():
    model = build_model("lenet5", np.random.default_rng(0), (1, 28, 28), 10)
    x = np.random.default_rng(1).standard_normal((16, 1, 28, 28)).astype(np.float32)
    report = equivariance_report(model, x, shifts=(1, 2, 4))
    pool2 = report.rows[4]
    assert pool2.kind == "max_pool" and pool2.jump == (4.0, 4.0)
    assert pool2.errors[:2] == (None, None) and pool2.errors[2] is not None
    flat = report.rows[6]
    assert flat.error is None and flat.reason == "no spatial axes"
    assert len(report.output_change) == 3
    assert all(0 <= p <= 1 for p in report.prediction_change)
    assert "output change per shift" in str(report)
    assert report.row("3").kind == "conv"


def test_audit_restores_modes_and_touches_no_statistics():
    model = build_model("vgg-small", np.random.default_rng(0), (3, 32, 32), 10)
    model.train()
    buffers = [b.copy() for _, b in model.named_buffers()]
    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    equivariance_report(model, x, shifts=(2,))
    shift_consistency(model, x, max_shift=2, pairs=2, rng=np.random.default_rng(0))
    assert all(m.training for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    assert all(np.array_equal(a, b) for a, (_, b) in zip(buffers, model.named_buffers()))


def test_bad_arguments():
    model = nn.Conv1d(1, 1, 3)
    x = np.zeros((2, 1, 8), np.float32)
    with pytest.raises(ValueError, match="equivariance_report: shifts must be nonzero ints"):
        equivariance_report(model, x, shifts=(0,))
    with pytest.raises(ValueError, match="equivariance_report: mode must be one of"):
        equivariance_report(model, x, mode="wrap")
    with pytest.raises(TypeError, match="equivariance_report: x must be a float32 or float64"):
        equivariance_report(model, [[1.0]])
    with pytest.raises(ValueError, match=r"x must be a batch \(N, C, \*spatial\)"):
        equivariance_report(model, np.zeros((8,), np.float32))


def _reference_consistency(model, x, max_shift, pairs, mode, seed):
    """One input and one pair at a time, with the same draws."""
    offsets = np.random.default_rng(seed).integers(-max_shift, max_shift + 1,
                                                   size=(len(x), pairs, 2, x.ndim - 2))
    same = []
    for n in range(len(x)):
        for p in range(pairs):
            a = model(shift_array(x[n:n + 1], offsets[n, p, 0], mode)).data.argmax()
            b = model(shift_array(x[n:n + 1], offsets[n, p, 1], mode)).data.argmax()
            same.append(a == b)
    return float(np.mean(same))


@pytest.mark.parametrize("mode", ["circular", "crop"])
def test_shift_consistency_against_a_loop(mode):
    model = build_model("digits-cnn", np.random.default_rng(0), (1, 8, 8), 10).to(np.float64)
    x = np.random.default_rng(1).standard_normal((6, 1, 8, 8))
    found = shift_consistency(model, x, max_shift=2, pairs=5, mode=mode,
                              rng=np.random.default_rng(7))
    assert found.samples == 30
    assert found.consistency == _reference_consistency(model, x, 2, 5, mode, 7)
    assert 0 < found.standard_error < 0.2 or found.consistency in (0.0, 1.0)


def test_global_pooling_of_circular_convolutions_is_invariant():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular"), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten()).to(np.float64)
    x = np.random.default_rng(0).standard_normal((20, 1, 9, 9))
    assert shift_consistency(model, x, max_shift=4, rng=np.random.default_rng(0)
                             ).consistency == 1.0
    labels = model(x).data.argmax(axis=1)
    found = shift_consistency(model, x, max_shift=4, rng=np.random.default_rng(0),
                              labels=labels)
    assert found.accuracy == 1.0
    # a dense layer on the pixels cares where things are
    dense = nn.Sequential(nn.Flatten(), nn.Linear(81, 10, rng=np.random.default_rng(0))
                          ).to(np.float64)
    assert shift_consistency(dense, x, max_shift=4, rng=np.random.default_rng(0)
                             ).consistency < 0.5
    assert shift_consistency(dense, x, max_shift=0).consistency == 1.0


def test_shift_consistency_errors():
    model = nn.Conv1d(1, 1, 3)
    x = np.zeros((2, 1, 8), np.float32)
    with pytest.raises(ValueError, match=r"must output \(N, classes\) scores"):
        shift_consistency(model, x, max_shift=1)
    with pytest.raises(ValueError, match="max_shift must be an int >= 0"):
        shift_consistency(model, x, max_shift=-1)
    with pytest.raises(ValueError, match="pairs must be a positive int"):
        shift_consistency(model, x, max_shift=1, pairs=0)
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        shift_consistency(model, x, max_shift=1, labels=np.zeros(3))


def test_swap_pooling_shares_weights_and_can_be_undone():
    model = build_model("lenet5", np.random.default_rng(0), (1, 28, 28), 10)
    blurred = swap_pooling(model, "blur")
    assert isinstance(model[1], nn.MaxPool2d)  # the original is untouched
    assert isinstance(blurred[1], AntialiasedPool) and blurred[1].filter_size == 4
    assert blurred[0].weight is model[0].weight
    blurred[0].weight.data[0, 0, 0, 0] = 42.0
    assert model[0].weight.data[0, 0, 0, 0] == 42.0
    x = np.random.default_rng(1).standard_normal((3, 1, 28, 28)).astype(np.float32)
    assert blurred(x).shape == model(x).shape
    back = swap_pooling(blurred, "max")
    assert isinstance(back[4], nn.MaxPool2d) and back[4].kernel_size == (2, 2)
    np.testing.assert_array_equal(back(x).data, model(x).data)
    averaged = swap_pooling(model, "avg")
    assert isinstance(averaged[1], nn.AvgPool2d) and averaged[1].stride == (2, 2)


@pytest.mark.parametrize("n, kernel, stride, padding", [(28, 2, 2, 0), (27, 2, 2, 0),
                                                        (16, 3, 2, 1), (11, 3, 3, 0)])
def test_blur_pool_follows_the_antialiased_cnns_formula(n, kernel, stride, padding):
    torch = pytest.importorskip("torch")
    pool = nn.MaxPool2d(kernel, stride, padding)
    swapped = swap_pooling(nn.Sequential(pool), "blur", filter_size=4)[0]
    x = np.random.default_rng(0).standard_normal((2, 3, n, n))
    ours = swapped(x).data
    # antialiased-cnns' MaxBlurPool: MaxPool2d(k, stride=1), then reflect padding
    # [1, 2, 1, 2] and a depthwise conv with the outer product of [1, 3, 3, 1] / 8
    t = torch.nn.functional.max_pool2d(torch.from_numpy(x), kernel, 1, padding)
    t = torch.nn.functional.pad(t, [1, 2, 1, 2], mode="reflect")
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0], dtype=torch.float64)
    taps = (taps[:, None] * taps[None, :]) / 64
    t = torch.nn.functional.conv2d(t, taps.expand(3, 1, 4, 4), stride=stride, groups=3)
    np.testing.assert_allclose(ours, t.numpy(), atol=1e-12)
    assert ours.shape == F.max_pool2d(x, kernel, stride, padding).shape


def test_swap_pooling_on_torch_models():
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.MaxPool1d(2),
                                torch.nn.AvgPool1d(2), torch.nn.MaxPool1d(3, stride=1))
    blurred = swap_pooling(model, "blur", filter_size=3)
    assert type(blurred[1]).__name__ == "TorchAntialiasedPool"
    assert type(blurred[2]).__name__ == "TorchAntialiasedPool"
    assert isinstance(blurred[3], torch.nn.MaxPool1d)  # stride 1: not downsampling
    assert blurred[0].weight is model[0].weight
    x = torch.randn(2, 1, 30)
    mine = swap_pooling(nn.Sequential(nn.MaxPool1d(2)), "blur", filter_size=3)
    y = blurred[1](model[0](x)).detach().numpy()
    np.testing.assert_allclose(y, mine(model[0](x).detach().numpy()).data, atol=1e-6)
    back = swap_pooling(blurred, "max")
    assert isinstance(back[1], torch.nn.MaxPool1d) and back[1].kernel_size == (2,)


def test_swap_pooling_errors():
    with pytest.raises(ValueError, match="swap_pooling: kind must be one of"):
        swap_pooling(nn.MaxPool2d(2), "median")
    with pytest.raises(ValueError, match="swap_pooling: filter_size must be a positive int"):
        swap_pooling(nn.MaxPool2d(2), "blur", filter_size=0)
    with pytest.raises(TypeError, match="swap_pooling: model must be"):
        swap_pooling(object(), "blur")
    assert isinstance(swap_pooling(nn.MaxPool2d(2), "blur"), AntialiasedPool)


def test_the_interior_is_exact_where_only_borders_break_equivariance():
    # zero padding and valid convolutions change the border, not the interior; a max pool
    # shifted by its stride commutes exactly away from the border too
    model = nn.Sequential(nn.Conv2d(1, 3, 5, padding=2, rng=np.random.default_rng(0)),
                          nn.ReLU(), nn.Conv2d(3, 3, 3, rng=np.random.default_rng(1)),
                          nn.MaxPool2d(2), nn.Conv2d(3, 2, 3, rng=np.random.default_rng(2))
                          ).to(np.float64)
    x = np.random.default_rng(3).standard_normal((4, 1, 30, 30))
    for mode in ("circular", "crop"):
        report = equivariance_report(model, x, shifts=(2, 4, -2), mode=mode)
        for row in report.rows:
            assert row.error > 0.05, row  # the whole map sees the wrap or the fill
            assert row.interior_error <= 1e-12, row
            assert all(e is not None for e in row.interior_errors)
    # by hand, on an op that weights positions (not equivariant anywhere): circular
    # shift 2, a 5x5 window reads only unwrapped pixels (rows/cols 2..29 of the shifted
    # input) for output units 4..27, compared with units 2..25 of the unshifted run
    ramp = np.linspace(0.5, 1.5, 30)

    class Weighted(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = model[0]

        def forward(self, x):
            return self.conv(x) * ramp

    report = equivariance_report(Weighted(), x, shifts=(2,))
    y = model[0](x).data * ramp
    y_shifted = model[0](np.roll(x, (2, 2), axis=(2, 3))).data * ramp
    inner, before = y_shifted[:, :, 4:28, 4:28], y[:, :, 2:26, 2:26]
    expected = np.linalg.norm(inner - before) / np.linalg.norm(before)
    assert report.rows[-1].interior_errors[0] == pytest.approx(expected, rel=1e-12)
    assert expected > 0.01
    assert "(" in str(report)  # the table shows the interior beside the whole map


def test_no_interior_when_the_field_covers_the_input():
    model = nn.Sequential(nn.Conv1d(1, 1, 7, padding=3)).to(np.float64)
    report = equivariance_report(model, np.ones((1, 1, 6)), shifts=(1,))
    assert report.rows[0].interior_error is None and report.rows[0].error is not None


@pytest.mark.parametrize("make", ["cnnlab", "torch"])
def test_swaps_keep_ceil_mode_dilation_and_count_include_pad(make):
    torch = pytest.importorskip("torch")
    lib = nn if make == "cnnlab" else torch.nn
    pools = [lib.MaxPool2d(3, 2, ceil_mode=True), lib.MaxPool2d(2, 2, dilation=2),
             lib.AvgPool2d(3, 2, 1, count_include_pad=False), lib.AvgPool2d(3, 2, 1,
                                                                            ceil_mode=True)]
    x = np.random.default_rng(0).standard_normal((2, 3, 14, 14))

    def run(module):
        if make == "torch":
            with torch.no_grad():
                return module.double()(torch.from_numpy(x)).numpy()
        return module.to(np.float64)(x).data

    for pool in pools:
        expected = run(pool)
        for kind in ("max", "avg", "blur"):
            if kind == "avg" and getattr(pool, "dilation", 1) not in (1, (1, 1)):
                with pytest.raises(ValueError, match="has no average pooling"):
                    swap_pooling(pool, kind)
                continue
            swapped = swap_pooling(pool, kind)
            assert run(swapped).shape == expected.shape, (pool, kind)
        back = swap_pooling(swap_pooling(pool, "blur"), type(pool).__name__[:3].lower())
        np.testing.assert_allclose(run(back), expected, atol=1e-12)


def test_blur_with_ceil_mode_matches_between_cnnlab_and_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).standard_normal((1, 2, 13, 13))
    ours = swap_pooling(nn.MaxPool2d(3, 2, ceil_mode=True), "blur")(x).data
    theirs = swap_pooling(torch.nn.MaxPool2d(3, 2, ceil_mode=True), "blur").double()
    with torch.no_grad():
        np.testing.assert_allclose(ours, theirs(torch.from_numpy(x)).numpy(), atol=1e-12)


def test_functional_poolings_in_a_torch_forward_are_reported():
    torch = pytest.importorskip("torch")

    class Functional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return torch.nn.functional.max_pool2d(self.conv(x), 2)

    with pytest.warns(UserWarning, match="1 pooling.*calls as functions"):
        swap_pooling(Functional(), "blur")
