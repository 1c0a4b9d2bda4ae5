"""animate_convolution / cnnlab animate, checked against the engine: the output size is
F.conv's (or F.conv_transpose's), every footprint covers the input positions the
convolution's own matrix reads (conv_matrix), the running sums are the engine's values,
and the GIF is opened and looked at (frame count, size, colours where the footprint is)."""

from __future__ import annotations

import base64
import io
from itertools import product

import numpy as np
import pytest
from PIL import Image

from cnnlab import functional as F
from cnnlab.analysis import conv_matrix
from cnnlab.cli import main
from cnnlab.viz.animation import COLOURS, animate_convolution, convolution_steps

SETTINGS = [
    # (input, kernel, keyword arguments)
    (7, 3, {}),
    (8, 4, {"padding": "same"}),
    (6, 3, {"padding": "full"}),
    (9, 3, {"padding": "causal", "dilation": 2}),
    (10, 3, {"stride": 3, "padding": ((2, 0),)}),
    (7, 2, {"padding": 1, "padding_mode": "circular"}),
    (7, 3, {"padding": 2, "padding_mode": "reflect", "stride": 2}),
    (5, 3, {"padding": 2, "padding_mode": "replicate", "dilation": 2}),
    ((6, 5), (3, 2), {"stride": (2, 1), "padding": (1, 0)}),
    ((7, 7), (3, 3), {"padding": "same", "dilation": 2, "padding_mode": "circular"}),
]
TRANSPOSED = [
    (4, 3, {"stride": 2}),
    (5, 3, {"stride": 2, "padding": 1, "output_padding": 1}),
    (4, 2, {"stride": 3, "dilation": 2}),
    ((3, 4), (3, 2), {"stride": (2, 1), "padding": (1, 0)}),
]


def _engine(n, k, kwargs, x, w, transposed):
    nd = 1 if isinstance(n, int) else len(n)
    if transposed:
        conv = (F.conv_transpose1d, F.conv_transpose2d)[nd - 1]
        return np.asarray(conv(x[None, None], w[None, None], **kwargs))[0, 0]
    conv = (F.conv1d, F.conv2d)[nd - 1]
    return np.asarray(conv(x[None, None], w[None, None], **kwargs))[0, 0]


@pytest.mark.parametrize("n, k, kwargs", SETTINGS + [(*t[:2], {**t[2], "transposed": True})
                                                    for t in TRANSPOSED])
def test_sizes_and_running_sums_are_the_engines(n, k, kwargs):
    rng = np.random.default_rng(0)
    shape_n = (n,) if isinstance(n, int) else n
    shape_k = (k,) if isinstance(k, int) else k
    x, w = rng.standard_normal(shape_n), rng.standard_normal(shape_k)
    transposed = kwargs.get("transposed", False)
    engine_kwargs = {key: v for key, v in kwargs.items() if key != "transposed"}
    expected = _engine(n, k, engine_kwargs, x, w, transposed)
    steps = convolution_steps(n, k, **kwargs, input=x, kernel=w)
    assert steps.output_size == expected.shape
    values = np.array([s.value for s in steps.steps]).reshape(expected.shape)
    np.testing.assert_allclose(values, expected, atol=1e-12)
    animation = animate_convolution(n, k, **kwargs)
    assert len(animation.frames) == expected.size + 2  # title + one per output + summary
    assert animation.output_size == expected.shape


@pytest.mark.parametrize("n, k, kwargs", [s for s in SETTINGS
                                          if s[2].get("padding_mode", "zeros") == "zeros"])
def test_each_footprint_reads_what_the_convolution_matrix_reads(n, k, kwargs):
    shape_n = (n,) if isinstance(n, int) else n
    shape_k = (k,) if isinstance(k, int) else k
    matrix = conv_matrix(np.ones((1, 1, *shape_k)), (1, *shape_n), **kwargs)
    steps = convolution_steps(n, k, **kwargs)
    for row, step in enumerate(steps.steps):
        inside = {steps.sources[tap] for tap in step.taps if steps.sources[tap] is not None}
        flat = {int(np.ravel_multi_index(pos, shape_n)) for pos in inside}
        assert flat == set(matrix[row].indices.tolist()), step


def test_frames_show_the_footprint_where_the_arithmetic_puts_it(tmp_path):
    animation = animate_convolution((6, 6), (3, 3), stride=2, padding=1,
                                    path=tmp_path / "a.gif")
    steps = animation.steps
    from cnnlab.viz.animation import _Canvas

    canvas = _Canvas(steps)
    for frame_index, step in [(1, steps.steps[0]), (5, steps.steps[4])]:
        frame = animation.frames[frame_index]
        for cell in product(range(steps.grid[0]), range(steps.grid[1])):
            x0, y0, _, y1 = canvas.cell_box(canvas.margin, cell)
            pixel = frame.getpixel((x0 + 1, (y0 + y1) // 2))
            assert (pixel == COLOURS["footprint"]) == (cell in step.taps), (frame_index, cell)
    with Image.open(tmp_path / "a.gif") as gif:
        assert gif.n_frames == 9 + 2 and gif.size == animation.frames[0].size
        seen = []
        for i in range(gif.n_frames):
            gif.seek(i)
            rgb = gif.convert("RGB")
            colours = np.unique(np.asarray(rgb).reshape(-1, 3), axis=0)
            assert len(colours) > 4  # not blank, not one colour
            seen.append(rgb.tobytes())
        assert len(set(seen)) == gif.n_frames  # every frame differs: the footprint moves


def test_notebook_reprs():
    animation = animate_convolution(4, 2)
    html = animation._repr_html_()
    assert html.startswith('<img src="data:image/gif;base64,')
    data = base64.b64decode(html.split(",", 1)[1].split('"', 1)[0])
    assert Image.open(io.BytesIO(data)).n_frames == 3 + 2
    assert animation._repr_png_().startswith(b"\x89PNG")


@pytest.mark.parametrize("kwargs, message", [
    ({"input_size": 7, "kernel_size": 5, "dilation": 2},
     "kernel 5 at dilation 2 spans 9 > padded input 7"),
    ({"input_size": (8, 8), "kernel_size": (3, 3), "padding": "causal"},
     "padding='causal' is 1-D only"),
    ({"input_size": 5, "kernel_size": 3, "transposed": True, "padding_mode": "circular"},
     "pads with zeros only"),
    ({"input_size": 5, "kernel_size": 3, "transposed": True, "stride": 2,
      "output_padding": 2}, "output_padding 2 must be smaller than the stride 2"),
    ({"input_size": 4, "kernel_size": 3, "padding": 4, "padding_mode": "reflect"},
     "padding_mode='reflect' needs padding < input size"),
    ({"input_size": (4, 4, 4), "kernel_size": 3}, "must have 1 .* or 2"),
    ({"input_size": 4, "kernel_size": 3, "input": np.ones(5)}, r"input must have the "
                                                               r"input size \(4,\)"),
])
def test_impossible_settings_say_why(kwargs, message):
    with pytest.raises(ValueError, match=message):
        animate_convolution(**kwargs)


def test_cli_writes_the_gif_and_explains_errors(capsys, tmp_path):
    out = tmp_path / "conv.gif"
    assert main(["animate", "--input-size", "5", "5", "--kernel-size", "3", "3",
                 "--padding", "same", "--values", "--out", str(out)]) == 0
    assert "25 outputs" not in capsys.readouterr().err
    with Image.open(out) as gif:
        assert gif.n_frames == 25 + 2
    assert main(["animate", "--input-size", "7", "--kernel-size", "5", "--dilation", "2",
                 "--out", str(tmp_path / "x.gif")]) == 2
    err = capsys.readouterr().err
    assert "kernel 5 at dilation 2 spans 9 > padded input 7" in err
    assert not (tmp_path / "x.gif").exists()
    assert main(["animate", "--input-size", "6", "--kernel-size", "2", "--stride", "2",
                 "--transposed", "--output-padding", "1", "--out", str(out)]) == 0
    assert "output 13" in capsys.readouterr().out
