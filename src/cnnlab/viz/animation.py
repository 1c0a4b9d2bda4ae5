"""Convolution arithmetic, animated: the kernel sliding over the (padded) input, one frame
per output position, drawn with Pillow alone (no LaTeX, no ImageMagick, no matplotlib).

:func:`convolution_steps` is the arithmetic as data, from the engine's own shape rules
(:mod:`cnnlab.ops._args`): the padded grid (which cells are input, padding, a wrapped or
mirrored copy, or, for a transposed convolution, the zeros inserted between inputs) and,
for every output position, the grid cells its footprint covers. :func:`animate_convolution`
draws it. A transposed convolution is drawn as the convolution it equals (Dumoulin and
Visin 2016, "A guide to convolution arithmetic", section 4): stride - 1 zeros inserted
between the inputs, ``d (k - 1) - p`` cells of padding on each side (``output_padding``
more at the end), the flipped kernel at stride 1.

Every frame labels the input, the padding, the output and the current footprint; given
input values and a kernel, it shows the products and their running sum, which is the
engine's output value (checked against :mod:`cnnlab.functional` when the steps are made).
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np

from .. import functional as F
from .._files import atomic_write
from ..ops._args import PADDING_MODES, check_choice, conv_padding, pad_pairs, to_tuple
from ..ops.pad import check_pad_fits

# What a cell of the padded grid is.
INPUT, PADDING, INSERTED = "input", "padding", "inserted"


@dataclass(frozen=True)
class Step:
    """One output position: ``output`` (its index per axis), ``taps`` (the grid cells its
    footprint covers, one per kernel tap, in kernel order), and with values, ``terms``
    (input value, kernel value) per tap and ``value`` (their sum: the output's value)."""

    output: tuple[int, ...]
    taps: tuple[tuple[int, ...], ...]
    terms: tuple[tuple[float, float], ...] = ()
    value: float | None = None


@dataclass
class ConvolutionSteps:
    """The arithmetic of one convolution, per spatial axis: ``input_size``, ``kernel_size``,
    ``stride``, ``dilation``, ``padding`` ((lo, hi), what the padded grid adds on each
    side; for a transposed convolution, that of the equivalent stride-1 convolution),
    ``grid`` (the padded grid's size), ``output_size`` (the engine's), ``kinds`` (per grid
    cell: "input", "padding" or "inserted"), ``sources`` (per grid cell, the input index
    per axis it holds, or None: zero padding and inserted zeros), and ``steps``."""

    input_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: tuple[tuple[int, int], ...]
    padding_mode: str
    transposed: bool
    grid: tuple[int, ...]
    output_size: tuple[int, ...]
    kinds: np.ndarray
    sources: np.ndarray
    steps: list[Step] = field(default_factory=list)
    values: np.ndarray | None = None
    kernel: np.ndarray | None = None

    @property
    def spatial_dims(self) -> int:
        return len(self.input_size)


def _source_index(j: int, n: int, mode: str) -> int | None:
    """Which input sample position ``j`` (may be outside 0..n-1) of a padded axis holds."""
    if 0 <= j < n:
        return j
    if mode == "zeros":
        return None
    if mode == "circular":
        return j % n
    if mode == "replicate":
        return min(max(j, 0), n - 1)
    return -j if j < 0 else 2 * (n - 1) - j  # reflect (the edge sample not repeated)


def _check_sizes(values: Any, name: str, nd: int | None) -> tuple[int, ...]:
    sizes = to_tuple(values, nd if nd is not None else
                     (len(values) if isinstance(values, Sequence) else 1), name,
                     "animate_convolution", minimum=1)
    if not 1 <= len(sizes) <= 2:
        raise ValueError(f"animate_convolution: {name} must have 1 (1-D) or 2 (2-D) "
                         f"numbers, got {values!r}")
    return sizes


def convolution_steps(input_size: int | Sequence[int], kernel_size: int | Sequence[int], *,
                      stride: Any = 1, padding: Any = 0, padding_mode: str = "zeros",
                      dilation: Any = 1, transposed: bool = False, output_padding: Any = 0,
                      input: np.ndarray | None = None, kernel: np.ndarray | None = None
                      ) -> ConvolutionSteps:
    """The arithmetic :func:`animate_convolution` draws, as data (see
    :class:`ConvolutionSteps`). ``input`` (``input_size``) and ``kernel``
    (``kernel_size``) are optional values; with them every step carries its terms and
    value, checked against ``cnnlab.functional``'s convolution.

    Raises ValueError with the arithmetic reason for impossible settings, e.g. "kernel 5
    at dilation 2 spans 9 > padded input 7".
    """
    fn = "animate_convolution"
    n = _check_sizes(input_size, "input_size", None)
    nd = len(n)
    k = _check_sizes(kernel_size, "kernel_size", nd)
    s = to_tuple(stride, nd, "stride", fn, minimum=1)
    d = to_tuple(dilation, nd, "dilation", fn, minimum=1)
    check_choice(padding_mode, PADDING_MODES, "padding_mode", fn)
    spans = tuple(di * (ki - 1) + 1 for ki, di in zip(k, d))
    if transposed:
        if padding_mode != "zeros":
            raise ValueError(f"{fn}: a transposed convolution pads with zeros only (as "
                             f"PyTorch's), got padding_mode={padding_mode!r}")
        if isinstance(padding, str):
            raise ValueError(f"{fn}: a transposed convolution takes a number of samples "
                             f"for padding, got {padding!r}")
        pads = pad_pairs(padding, nd, "padding", fn)
        out_pad = to_tuple(output_padding, nd, "output_padding", fn, minimum=0)
        for axis, (op, si, di) in enumerate(zip(out_pad, s, d)):
            if op >= max(si, di):
                raise ValueError(f"{fn}: output_padding {op} must be smaller than the "
                                 f"stride {si} or the dilation {di} (axis {axis})")
        # the equivalent convolution: zeros inserted, d (k - 1) - p padding, stride 1
        stuffed = tuple((ni - 1) * si + 1 for ni, si in zip(n, s))
        grid_pads = tuple((span - 1 - lo, span - 1 - hi + op)
                          for span, (lo, hi), op in zip(spans, pads, out_pad))
        grid = tuple(m + lo + hi for m, (lo, hi) in zip(stuffed, grid_pads))
        for axis, (g, span, m) in enumerate(zip(grid, spans, stuffed)):
            if g < span:
                raise ValueError(f"{fn}: padding {pads[axis]} crops the {m} samples the "
                                 f"stride spreads the input over below the kernel's span "
                                 f"{span} (axis {axis}): no output")
        conv_stride = (1,) * nd
    else:
        if output_padding not in (0, (0,) * nd, [0] * nd):
            raise ValueError(f"{fn}: output_padding applies to a transposed convolution "
                             f"only, got {output_padding!r}")
        if padding == "causal" and nd != 1:
            raise ValueError(f"{fn}: padding='causal' is 1-D only (as in the engine), got "
                             f"{nd}-D sizes")
        grid_pads = conv_padding(padding, n, k, s, d, fn)
        if padding_mode != "zeros":
            check_pad_fits(n, grid_pads, padding_mode, fn)
        grid = tuple(ni + lo + hi for ni, (lo, hi) in zip(n, grid_pads))
        for axis, (g, ki, di, span) in enumerate(zip(grid, k, d, spans)):
            if g < span:
                raise ValueError(f"{fn}: kernel {ki} at dilation {di} spans {span} > "
                                 f"padded input {g} (axis {axis}): no output")
        conv_stride = s
    out = tuple((g - span) // cs + 1 for g, span, cs in zip(grid, spans, conv_stride))

    kinds = np.empty(grid, dtype=object)
    sources = np.empty(grid, dtype=object)
    for cell in product(*(range(g) for g in grid)):
        index, kind = [], INPUT
        for axis, q in enumerate(cell):
            j = q - grid_pads[axis][0]
            if transposed:
                inside = 0 <= j <= (n[axis] - 1) * s[axis]
                if inside and j % s[axis] == 0:
                    index.append(j // s[axis])
                    continue
                kind = PADDING if not inside else (INSERTED if kind == INPUT else kind)
                index.append(None)
                continue
            source = _source_index(j, n[axis], padding_mode)
            if not 0 <= j < n[axis]:
                kind = PADDING
            index.append(source)
        kinds[cell] = kind
        sources[cell] = None if any(i is None for i in index) else tuple(index)

    values, weights = _values(input, kernel, n, k)
    steps = []
    for o in product(*(range(m) for m in out)):
        taps = tuple(tuple(oi * cs + ti * di for oi, cs, ti, di in zip(o, conv_stride, t, d))
                     for t in product(*(range(ki) for ki in k)))
        if values is None:
            steps.append(Step(o, taps))
            continue
        flipped = weights[tuple(slice(None, None, -1) for _ in k)] if transposed else weights
        terms = []
        for t, tap in zip(product(*(range(ki) for ki in k)), taps):
            source = sources[tap]
            terms.append((0.0 if source is None else float(values[source]),
                          float(flipped[t])))
        steps.append(Step(o, taps, tuple(terms), float(sum(a * b for a, b in terms))))
    result = ConvolutionSteps(n, k, s, d, tuple(grid_pads), padding_mode, bool(transposed),
                              grid, out, kinds, sources, steps, values, weights)
    if values is not None:
        _check_against_engine(result, padding, output_padding)
    return result


def _values(input: Any, kernel: Any, n: tuple[int, ...], k: tuple[int, ...]
            ) -> tuple[np.ndarray | None, np.ndarray | None]:
    if input is None and kernel is None:
        return None, None
    fn = "animate_convolution"
    values = np.ones(n) if input is None else np.asarray(input, dtype=np.float64)
    weights = np.ones(k) if kernel is None else np.asarray(kernel, dtype=np.float64)
    if values.shape != n:
        raise ValueError(f"{fn}: input must have the input size {n}, got shape "
                         f"{values.shape}")
    if weights.shape != k:
        raise ValueError(f"{fn}: kernel must have the kernel size {k}, got shape "
                         f"{weights.shape}")
    return values, weights


def _check_against_engine(steps: ConvolutionSteps, padding: Any, output_padding: Any) -> None:
    """The drawn sums are the engine's output (a check on the drawing's arithmetic)."""
    assert steps.values is not None and steps.kernel is not None
    x = steps.values[None, None]
    w = steps.kernel[None, None]
    nd = steps.spatial_dims
    if steps.transposed:
        conv_t = (F.conv_transpose1d, F.conv_transpose2d)[nd - 1]
        y = conv_t(x, w, stride=steps.stride, padding=padding,
                   output_padding=output_padding, dilation=steps.dilation)
    else:
        conv = (F.conv1d, F.conv2d)[nd - 1]
        y = conv(x, w, stride=steps.stride, padding=steps.padding,
                 dilation=steps.dilation, padding_mode=steps.padding_mode)
    engine = np.asarray(y)[0, 0]
    drawn = np.array([step.value for step in steps.steps]).reshape(steps.output_size)
    if engine.shape != drawn.shape or not np.allclose(engine, drawn, atol=1e-9):
        raise AssertionError(f"animate_convolution: the drawn sums {drawn.ravel()[:6]} "
                             f"differ from the engine's {engine.ravel()[:6]}")


# -- drawing ------------------------------------------------------------------------------

COLOURS = {INPUT: (198, 219, 239), PADDING: (222, 222, 222), INSERTED: (255, 255, 255),
           "wrap": (253, 208, 162), "footprint": (33, 113, 181), "output": (199, 233, 192),
           "current": (35, 139, 69), "text": (20, 20, 20), "grid": (120, 120, 120),
           "background": (255, 255, 255)}


@dataclass
class ConvolutionAnimation:
    """The frames of :func:`animate_convolution` (Pillow images) and the arithmetic they
    draw (``steps``). :meth:`save` writes an animated GIF; in Jupyter it shows inline
    (``_repr_html_``: the GIF; ``_repr_png_``: the last frame)."""

    frames: list[Any]
    durations: list[int]
    steps: ConvolutionSteps

    @property
    def output_size(self) -> tuple[int, ...]:
        return self.steps.output_size

    def gif_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self._write(buffer)
        return buffer.getvalue()

    def _write(self, file: Any) -> None:
        self.frames[0].save(file, format="GIF", save_all=True, append_images=self.frames[1:],
                            duration=self.durations, loop=0, disposal=1)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the animation as a GIF, atomically."""
        return atomic_write(Path(path), self._write)

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.gif_bytes()).decode("ascii")
        return f'<img src="data:image/gif;base64,{data}" alt="convolution animation">'

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.frames[-1].save(buffer, format="PNG")
        return buffer.getvalue()


def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size)


class _Canvas:
    """Cell geometry of one frame: the padded grid on the left, the output on the right."""

    def __init__(self, steps: ConvolutionSteps) -> None:
        self.steps = steps
        grid = steps.grid if steps.spatial_dims == 2 else (1, steps.grid[0])
        out = steps.output_size if steps.spatial_dims == 2 else (1, steps.output_size[0])
        self.grid_shape, self.out_shape = grid, out
        biggest = max(grid + out)
        self.cell = max(14, min(40, 480 // max(biggest, 1)))
        self.margin, self.top = 16, 58
        self.gap = 3 * self.cell
        self.out_left = self.margin + grid[1] * self.cell + self.gap
        width = self.out_left + out[1] * self.cell + self.margin
        height = self.top + max(grid[0], out[0]) * self.cell + 78
        self.size = (max(width, 420), height)

    def cell_box(self, left: int, index: tuple[int, int]) -> tuple[int, int, int, int]:
        r, c = index
        x0, y0 = left + c * self.cell, self.top + r * self.cell
        return x0, y0, x0 + self.cell, y0 + self.cell

    def grid_cell(self, index: tuple[int, ...]) -> tuple[int, int]:
        return index if len(index) == 2 else (0, index[0])


def _draw_frame(canvas: _Canvas, step_index: int | None, title: str, note: str,
                filled: int) -> Any:
    """One frame: ``step_index`` is the current output position (None: no footprint),
    ``filled`` how many outputs are computed so far."""
    from PIL import Image, ImageDraw

    steps = canvas.steps
    image = Image.new("RGB", canvas.size, COLOURS["background"])
    draw = ImageDraw.Draw(image)
    small, large = _font(max(9, canvas.cell // 3)), _font(13)
    draw.text((canvas.margin, 6), title, fill=COLOURS["text"], font=large)
    # legend: what the colours are, on every frame
    x = canvas.margin
    for label, colour in (("input", COLOURS[INPUT]), ("padding", COLOURS[PADDING]),
                          ("output", COLOURS["output"]), ("footprint", COLOURS["footprint"])):
        draw.rectangle((x, 26, x + 12, 38), fill=colour, outline=COLOURS["grid"])
        draw.text((x + 16, 25), label, fill=COLOURS["text"], font=large)
        x += 22 + int(draw.textlength(label, font=large)) + 12
    extra = {"circular": "padding: wrap (copies the far side)",
             "reflect": "padding: mirror (copies inside)",
             "replicate": "padding: edge copy"}.get(steps.padding_mode)
    if steps.transposed:
        draw.rectangle((x, 26, x + 12, 38), fill=COLOURS[INSERTED], outline=COLOURS["grid"])
        draw.text((x + 16, 25), "inserted zero", fill=COLOURS["text"], font=large)
    elif extra is not None:
        draw.rectangle((x, 26, x + 12, 38), fill=COLOURS["wrap"], outline=COLOURS["grid"])
        draw.text((x + 16, 25), extra, fill=COLOURS["text"], font=large)
    current = steps.steps[step_index] if step_index is not None else None
    taps = set(current.taps) if current is not None else set()
    # the padded input
    for cell in product(*(range(g) for g in steps.grid)):
        kind = steps.kinds[cell]
        source = steps.sources[cell]
        colour = COLOURS[kind]
        if kind == PADDING and source is not None:
            colour = COLOURS["wrap"]  # a copy of an input sample (circular, reflect...)
        box = canvas.cell_box(canvas.margin, canvas.grid_cell(cell))
        draw.rectangle(box, fill=colour, outline=COLOURS["grid"])
        if cell in taps:
            draw.rectangle(box, outline=COLOURS["footprint"], width=max(2, canvas.cell // 8))
        label = ""
        if steps.values is not None:
            label = "0" if source is None else f"{steps.values[source]:g}"
        elif kind == PADDING and source is not None:
            label = "".join(str(i) for i in source) if len(source) == 1 else ",".join(
                str(i) for i in source)
        if label and canvas.cell >= 18:
            draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), label,
                      fill=COLOURS["text"], font=small, anchor="mm")
    grid_width = canvas.grid_shape[1] * canvas.cell
    draw.text((canvas.margin + grid_width / 2, canvas.top - 6), "input + padding",
              fill=COLOURS["text"], font=large, anchor="ms")
    # the output
    done = filled
    for i, step in enumerate(steps.steps):
        box = canvas.cell_box(canvas.out_left, canvas.grid_cell(step.output))
        fill = COLOURS["output"] if i < done else COLOURS["background"]
        draw.rectangle(box, fill=fill, outline=COLOURS["grid"])
        if current is not None and i == step_index:
            draw.rectangle(box, outline=COLOURS["current"], width=max(2, canvas.cell // 8))
        if step.value is not None and i < done and canvas.cell >= 18:
            draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), f"{step.value:.3g}",
                      fill=COLOURS["text"], font=small, anchor="mm")
    out_width = canvas.out_shape[1] * canvas.cell
    draw.text((canvas.out_left + out_width / 2, canvas.top - 6), "output",
              fill=COLOURS["text"], font=large, anchor="ms")
    bottom = canvas.top + max(canvas.grid_shape[0], canvas.out_shape[0]) * canvas.cell + 10
    draw.text((canvas.margin, bottom), note, fill=COLOURS["text"], font=large)
    if current is not None:
        draw.text((canvas.margin, bottom + 20), _footprint_text(current, steps),
                  fill=COLOURS["text"], font=large)
        if current.value is not None:
            draw.text((canvas.margin, bottom + 40), _sum_text(current), fill=COLOURS["text"],
                      font=large)
    return image


def _footprint_text(step: Step, steps: ConvolutionSteps) -> str:
    names = ("rows", "cols") if steps.spatial_dims == 2 else ("cells",)
    spans = []
    for axis, name in enumerate(names):
        coords = sorted({tap[axis] for tap in step.taps})
        spans.append(f"{name} {coords[0]}..{coords[-1]}")
    where = ", ".join(str(i) for i in step.output)
    return f"footprint over grid {', '.join(spans)} -> output [{where}]"


def _sum_text(step: Step, limit: int = 6) -> str:
    parts = [f"{a:g}*{b:g}" for a, b in step.terms[:limit]]
    more = " + ..." if len(step.terms) > limit else ""
    return f"running sum: {' + '.join(parts)}{more} = {step.value:.4g}"


def _title(steps: ConvolutionSteps, padding: Any) -> str:
    def show(values: Sequence[int]) -> str:
        return "x".join(str(v) for v in values)

    kind = "transposed convolution" if steps.transposed else "convolution"
    pad = padding if isinstance(padding, str) else show(lo for lo, _ in steps.padding)
    return (f"{kind}: input {show(steps.input_size)}, kernel {show(steps.kernel_size)}, "
            f"stride {show(steps.stride)}, dilation {show(steps.dilation)}, padding {pad} "
            f"({steps.padding_mode}) -> output {show(steps.output_size)}")


def animate_convolution(input_size: int | Sequence[int], kernel_size: int | Sequence[int],
                        *, stride: Any = 1, padding: Any = 0, padding_mode: str = "zeros",
                        dilation: Any = 1, transposed: bool = False, output_padding: Any = 0,
                        input: np.ndarray | None = None, kernel: np.ndarray | None = None,
                        path: str | os.PathLike[str] | None = None, frame_ms: int = 500
                        ) -> ConvolutionAnimation:
    """An animated GIF of the kernel sliding over the input, 1-D or 2-D.

    One frame per output position (row-major), plus a title frame and a closing frame
    with the whole output. Padding is any form the engine takes (an int, per-axis or
    per-side pairs, "valid", "same", "full", "causal" in 1-D) in any mode (circular and
    the other modes draw the padding cells as the input samples they copy); stride,
    dilation and the transposed case (with ``output_padding``) are drawn as in Dumoulin
    and Visin's guide. The output size always equals the engine's. With ``input`` and
    ``kernel`` values, every frame shows the products and their running sum.

    Parameters
    ----------
    input_size, kernel_size : one int (1-D) or two (2-D)
    path : also write the GIF there (atomically)
    frame_ms : how long each frame shows

    Returns
    -------
    ConvolutionAnimation
        ``frames`` (PIL images), ``steps`` (the arithmetic, :func:`convolution_steps`),
        ``save(path)``.

    >>> anim = animate_convolution(5, 3, padding="same")
    >>> anim.output_size, len(anim.frames)
    ((5,), 7)
    """
    steps = convolution_steps(input_size, kernel_size, stride=stride, padding=padding,
                              padding_mode=padding_mode, dilation=dilation,
                              transposed=transposed, output_padding=output_padding,
                              input=input, kernel=kernel)
    if not isinstance(frame_ms, int) or isinstance(frame_ms, bool) or frame_ms < 20:
        raise ValueError(f"animate_convolution: frame_ms must be an int >= 20, got "
                         f"{frame_ms!r}")
    canvas = _Canvas(steps)
    title = _title(steps, padding)
    lo_pads = ", ".join(f"{lo}+{hi}" for lo, hi in steps.padding)
    intro = (f"padding adds {lo_pads} cells per axis (before+after); the footprint moves "
             f"{'1 (the stride spreads the input)' if transposed else 'by the stride'}")
    count = len(steps.steps)
    frames = [_draw_frame(canvas, None, title, intro, 0)]
    durations = [2 * frame_ms]
    for index in range(count):
        frames.append(_draw_frame(canvas, index, title,
                                  f"output position {index + 1} of {count}", index + 1))
        durations.append(frame_ms)
    frames.append(_draw_frame(canvas, None, title,
                              f"done: {count} outputs, the engine's size", count))
    durations.append(3 * frame_ms)
    animation = ConvolutionAnimation(frames, durations, steps)
    if path is not None:
        animation.save(path)
    return animation


__all__ = ["ConvolutionAnimation", "ConvolutionSteps", "Step", "animate_convolution",
           "convolution_steps"]
