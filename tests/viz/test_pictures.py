"""The pictures, opened and looked at: PNGs of the expected size with the expected number of
panels, not blank, and content that says what it should (a sparse matrix is mostly empty
beside a dense one; an exactly equivariant stack is all floor in the heat map)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab import nn
from cnnlab.analysis import equivariance_report
from cnnlab.models import build_model
from cnnlab.train import Trainer, default_config
from cnnlab.viz.pictures import (
    plot_activation_histograms,
    plot_conv_matrix,
    plot_equivariance,
    plot_feature_maps,
    plot_filters,
    plot_receptive_field,
)


def _opened(picture, path):
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"))
    assert rgb.shape[0] > 100 and rgb.shape[1] > 100
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 20  # not blank, not one colour
    assert picture._repr_png_() == path.read_bytes()
    return rgb


@pytest.fixture(scope="module")
def lenet():
    return build_model("lenet5", np.random.default_rng(0), (1, 28, 28), 10)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).standard_normal((6, 1, 28, 28)).astype(np.float32)


def test_filters_of_the_first_and_a_named_layer(lenet, tmp_path):
    first = plot_filters(lenet, (1, 28, 28), path=tmp_path / "f.png")
    assert first.panels == 6
    _opened(first, tmp_path / "f.png")
    second = plot_filters(lenet, (1, 28, 28), layer="3", path=tmp_path / "g.png")
    assert second.panels == 16 and "(16, 6, 5, 5)" in second.title
    with pytest.raises(ValueError, match="layer must name one of"):
        plot_filters(lenet, (1, 28, 28), layer="nope")


def test_feature_maps_low_to_high_level_1d_and_2d(lenet, images, tmp_path):
    picture = plot_feature_maps(lenet, images[0], path=tmp_path / "m.png")
    assert picture.panels == 1 + 6 + 8  # the input, conv1's 6 maps, 8 of conv2's 16
    _opened(picture, tmp_path / "m.png")
    wavenet = build_model("mnist1d-cnn", np.random.default_rng(0), (1, 40), 10)
    signal = np.random.default_rng(0).standard_normal((1, 40)).astype(np.float32)
    picture = plot_feature_maps(wavenet, signal, channels=4, path=tmp_path / "w.png")
    assert picture.panels == 1 + 3 * 4
    _opened(picture, tmp_path / "w.png")
    with pytest.raises(ValueError, match="x must be one input"):
        plot_feature_maps(lenet, images)


def test_equivariance_heat_map_shows_exactness_as_the_floor(images, tmp_path):
    exact = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="circular"),
                          nn.ReLU()).to(np.float64)
    report = equivariance_report(exact, images.astype(np.float64), shifts=(1, 2))
    picture = plot_equivariance(report, path=tmp_path / "e.png")
    assert picture.panels == 2
    rgb = _opened(picture, tmp_path / "e.png")
    # the cells are the colour map's lightest end: (252, 253, 191) for magma_r
    light = np.all(np.abs(rgb.astype(int) - [252, 253, 191]) < 12, axis=-1)
    assert light.mean() > 0.2
    lenet_report = equivariance_report(
        build_model("lenet5", np.random.default_rng(0), (1, 28, 28), 10), images,
        shifts=(1, 2, 4))
    rgb = _opened(plot_equivariance(lenet_report, path=tmp_path / "l.png"),
                  tmp_path / "l.png")
    dark = np.all(rgb < 40, axis=-1)  # the whole map's large errors
    assert dark.mean() > 0.05


def test_receptive_field_overlay_2d_and_1d(lenet, images, tmp_path):
    picture = plot_receptive_field(lenet, images[0], layer="4", unit=(1, 1),
                                   rng=np.random.default_rng(0), path=tmp_path / "r.png")
    assert picture.panels == 2 and "4:max_pool" in picture.title
    _opened(picture, tmp_path / "r.png")
    model = build_model("mnist1d-cnn", np.random.default_rng(0), (1, 40), 10)
    signal = np.random.default_rng(0).standard_normal((1, 40)).astype(np.float32)
    _opened(plot_receptive_field(model, signal, path=tmp_path / "s.png"),
            tmp_path / "s.png")
    with pytest.raises(ValueError, match="layer must name an op with spatial axes"):
        plot_receptive_field(lenet, images[0], layer="7")


def test_conv_matrix_is_sparse_beside_the_dense_layer(tmp_path):
    weight = np.random.default_rng(0).standard_normal((1, 1, 3, 3))
    picture = plot_conv_matrix(weight, (1, 10, 10), padding=1, path=tmp_path / "c.png")
    rgb = _opened(picture, tmp_path / "c.png")
    white = np.all(rgb > 245, axis=-1)
    left, right = white[:, : rgb.shape[1] // 2], white[:, rgb.shape[1] // 2:]
    assert left.mean() > right.mean() + 0.3  # mostly zeros vs every weight free


def test_colorful_dimension_from_a_runs_stats(tmp_path):
    config = default_config("digits", "digits-cnn", steps=4, progress=False, stats_every=1)
    stats = Trainer(config).run().stats
    picture = plot_activation_histograms(stats, path=tmp_path / "h.png")
    assert picture.panels == len(stats.layers) > 3
    _opened(picture, tmp_path / "h.png")


def test_torch_models_too(tmp_path):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(),
                                torch.nn.Conv2d(4, 3, 3))
    assert plot_filters(model, (1, 12, 12), layer="2").panels == 3
    x = np.random.default_rng(0).standard_normal((1, 12, 12)).astype(np.float32)
    assert plot_feature_maps(model, x).panels == 1 + 4 + 3


def test_grad_cam_overlay_2d_and_1d(lenet, images, tmp_path):
    from cnnlab.viz.pictures import plot_grad_cam

    picture = plot_grad_cam(lenet, images[0], target=3, path=tmp_path / "g.png")
    assert picture.panels == 2 and "class 3" in picture.title
    _opened(picture, tmp_path / "g.png")
    model = build_model("mnist1d-cnn", np.random.default_rng(0), (1, 40), 10)
    signal = np.random.default_rng(0).standard_normal((1, 40)).astype(np.float32)
    _opened(plot_grad_cam(model, signal, path=tmp_path / "h.png"), tmp_path / "h.png")


def test_channel_as_microscope_shows_it_and_shift_robustness(tmp_path):
    from cnnlab.analysis import shift_robustness
    from cnnlab.viz.pictures import plot_channel, plot_shift_robustness

    model = build_model("digits-cnn", np.random.default_rng(0), (1, 8, 8), 10)
    x = np.random.default_rng(1).standard_normal((40, 1, 8, 8)).astype(np.float32)
    picture = plot_channel(model, x, layer="3", channel=0, k=5, steps=16,
                           rng=np.random.default_rng(0), path=tmp_path / "c.png")
    assert picture.panels == 6
    _opened(picture, tmp_path / "c.png")
    labels = np.random.default_rng(0).integers(0, 10, 40)
    curve = shift_robustness(model, x, labels, max_shift=2)
    picture = plot_shift_robustness({"CNN": curve, "again": curve}, path=tmp_path / "r.png")
    assert picture.panels == 1
    _opened(picture, tmp_path / "r.png")


def _pixels_of(rgb, hex_colour):
    colour = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return int(np.all(np.abs(rgb.astype(int) - colour) <= 2, axis=-1).sum())


def test_learning_curves_one_line_per_run(tmp_path):
    from cnnlab.viz.pictures import plot_learning_curves

    def run(rate):
        return [{"step": s, "test_accuracy": 1 - np.exp(-rate * s),
                 "train_loss": np.exp(-rate * s)} for s in range(10, 200, 10)]

    picture = plot_learning_curves({"cnn": run(0.03), "mlp": run(0.01)}, title="mnist5k",
                                   path=tmp_path / "curves.png")
    assert picture.panels == 2 and picture.title == "mnist5k"
    rgb = _opened(picture, tmp_path / "curves.png")
    assert _pixels_of(rgb, "#1f77b4") > 200 and _pixels_of(rgb, "#ff7f0e") > 200  # two runs
    one = _opened(plot_learning_curves({"cnn": run(0.03)}, path=tmp_path / "one.png"),
                  tmp_path / "one.png")
    assert _pixels_of(one, "#ff7f0e") == 0
    with pytest.raises(ValueError, match="plot_learning_curves: run 'cnn' needs"):
        plot_learning_curves({"cnn": [{"step": 1}]})
    with pytest.raises(ValueError, match="at least one run"):
        plot_learning_curves({})


def test_cnn_vs_mlp_chart_bars_are_the_accuracies(tmp_path):
    from cnnlab.viz.pictures import plot_cnn_vs_mlp

    rows = [{"data": "mnist5k", "model": "mlp", "params": 100_000, "test_accuracy": 0.9,
             "shifted_accuracy": 0.3, "max_shift": 3},
            {"data": "mnist5k", "model": "lenet5", "params": 60_000, "test_accuracy": 0.9,
             "shifted_accuracy": 0.6, "max_shift": 3},
            {"data": "mnist1d", "model": "mlp", "params": 20_000, "test_accuracy": 0.6,
             "shifted_accuracy": 0.3, "max_shift": 4}]
    assert plot_cnn_vs_mlp(rows).panels == 2  # a panel per dataset
    picture = plot_cnn_vs_mlp(rows[:2], path=tmp_path / "chart.png")
    rgb = _opened(picture, tmp_path / "chart.png")
    # In one panel the bars have equal widths, so their pixel areas are in the ratio of
    # their heights: blue (test) 90 + 90 against orange (shifted) 30 + 60.
    ratio = _pixels_of(rgb, "#1f77b4") / _pixels_of(rgb, "#ff7f0e")
    assert 1.8 < ratio < 2.2
    with pytest.raises(ValueError, match="plot_cnn_vs_mlp: each row needs"):
        plot_cnn_vs_mlp([{"data": "x"}])
