"""Kernel recovery: "any linear shift-equivariant operator is a convolution", shown on a
black box.

:func:`kernel_of` probes an operator on arrays of ``(C_in, *spatial)`` and answers, with
the measured errors behind each answer:

1. **Linear?** ``f(a x + b y) - f(0)`` against ``a (f(x) - f(0)) + b (f(y) - f(0))`` on
   random inputs; ``f(0)`` is the constant an affine operator adds (a convolution's bias).
2. **Shift-equivariant?** Shift the input by the stride along an axis (a roll) and the
   output must shift by one unit; compared on the middle half of the output, away from
   the borders, where boundary handling cannot show.
3. **Which kernel?** The responses to impulses at every input position in a window around
   the centre are columns of the operator's matrix; the row of the central output unit is
   the kernel (``(C_out, C_in, *k)``, the correlation layout of :mod:`cnnlab.functional`),
   with the dilation (the spacing of its taps), the stride (how far the next unit's row
   moves) and the padding (where unit 0's first tap falls: ``-padding``).
4. **Which boundary?** The convolution rebuilt from these fields with each of ``zeros``,
   ``circular``, ``reflect`` and ``replicate`` padding is compared with the operator on
   random inputs; the first that matches is the boundary.

scipy.ndimage's modes are torch's under other names: ``constant`` is zeros, ``wrap`` is
circular, ``nearest`` is replicate, ``mirror`` is reflect (scipy's own ``reflect``, the
half-sample mirror ``b a | a b c``, has no counterpart and gets ``boundary=None``).
``scipy.ndimage.convolve`` flips its weights: its correlation kernel is the flipped one.

A cnnlab or torch module is probed on a float64 copy (so the errors are float64's) in
eval mode, batched; a NumPy callable is called on float64 arrays, one probe at a time.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import gcd, prod
from typing import Any

import numpy as np

from .. import functional as F
from .._random import check_rng
from ..nn.module import Module
from ._torch import is_torch_module

BOUNDARIES = ("zeros", "circular", "reflect", "replicate")
_PAD_MODE = {"zeros": "constant", "circular": "circular", "reflect": "reflect",
             "replicate": "replicate"}


@dataclass(frozen=True)
class KernelEstimate:
    """What :func:`kernel_of` found. ``kernel`` is ``(C_out, C_in, *k)`` or None (not a
    convolution); ``stride``, ``dilation`` per axis and ``padding`` as (lo, hi) per axis
    (lo is the kernel's origin: unit 0's first tap reads input ``-lo``; negative values
    crop) are None where they cannot be inferred. The errors are relative (max-norm):
    ``linearity_error`` of the superposition test, ``equivariance_error`` of the shift
    test (None where an axis is too short to test), ``residual`` of the operator against
    the convolution rebuilt from the fields (None without a kernel)."""

    linear: bool
    affine: bool
    shift_equivariant: bool
    kernel: np.ndarray | None
    bias: np.ndarray | None
    boundary: str | None
    stride: tuple[int, ...] | None
    dilation: tuple[int, ...] | None
    padding: tuple[tuple[int, int], ...] | None
    linearity_error: float
    equivariance_error: float | None
    residual: float | None
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    note: str = ""

    def rebuild(self, x: np.ndarray) -> np.ndarray:
        """The convolution these fields describe, applied to ``x`` of ``input_shape``:
        ``boundary`` padding by ``padding``, correlation with ``kernel``, plus ``bias``."""
        if self.kernel is None or self.boundary is None:
            raise ValueError("rebuild: no convolution was recovered"
                             + (f" ({self.note})" if self.note else ""))
        assert self.stride is not None and self.dilation is not None
        assert self.padding is not None
        y = _correlate(np.asarray(x, np.float64), self.kernel, self.stride, self.dilation,
                       self.padding, self.boundary)
        if self.bias is not None:
            y = y + self.bias.reshape((-1,) + (1,) * (y.ndim - 1))
        return y

    def __str__(self) -> str:
        verdict = ("linear" if self.linear else "affine" if self.affine else "not linear")
        eq = ("shift-equivariant" if self.shift_equivariant else "not shift-equivariant")
        lines = [f"{verdict} (error {self.linearity_error:.2g}), {eq} "
                 f"(error {_show(self.equivariance_error)})"]
        if self.kernel is not None:
            lines.append(f"kernel {self.kernel.shape}, stride {self.stride}, dilation "
                         f"{self.dilation}, padding {self.padding}, boundary "
                         f"{self.boundary} (residual {_show(self.residual)})")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


def _show(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2g}"


def _relative(diff: np.ndarray, reference: np.ndarray) -> float:
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    err = float(np.max(np.abs(diff))) if diff.size else 0.0
    if scale == 0.0:
        return 0.0 if err == 0.0 else float("inf")
    return err / scale


class _Operator:
    """The probed operator as a function of a batch (B, C_in, *spatial) -> (B, C_out, ...)
    in float64, with one error message for whatever it raises or returns."""

    def __init__(self, operator: Any, input_shape: tuple[int, ...]) -> None:
        self.input_shape = input_shape
        self.calls = 0
        if isinstance(operator, Module):
            model = copy.deepcopy(operator)
            model.to(np.float64)
            model.eval()
            self._batch = lambda x: np.asarray(model(x).data)
        elif is_torch_module(operator):
            import torch

            model = copy.deepcopy(operator).double().eval()

            def run(x: np.ndarray) -> np.ndarray:
                with torch.no_grad():
                    return model(torch.from_numpy(x)).numpy()

            self._batch = run
        elif callable(operator):
            self._one: Callable[[np.ndarray], Any] = operator
            self._batch = self._loop
        else:
            raise TypeError(f"kernel_of: operator must be a callable, a cnnlab.nn.Module "
                            f"or a torch.nn.Module, got {type(operator).__name__}")

    def _loop(self, x: np.ndarray) -> np.ndarray:
        return np.stack([np.asarray(self._one(item), dtype=np.float64) for item in x])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.calls += len(x)
        try:
            y = self._batch(np.ascontiguousarray(x, dtype=np.float64))
        except Exception as error:
            raise ValueError(f"kernel_of: the operator raised {type(error).__name__} "
                             f"({error}) on an input of shape {self.input_shape}") from error
        y = np.asarray(y, dtype=np.float64)
        if y.ndim != x.ndim:
            raise ValueError(f"kernel_of: the operator must keep the number of dimensions "
                             f"(C, *spatial) -> (C_out, *spatial_out); it turned "
                             f"{self.input_shape} into {y.shape[1:]}")
        return y


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    if (not isinstance(input_shape, Sequence) or isinstance(input_shape, str)
            or not 2 <= len(input_shape) <= 4 or not all(
                isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                for n in input_shape)):
        raise ValueError(f"kernel_of: input_shape must be (C_in, *spatial) with 1 to 3 "
                         f"spatial axes of positive ints, got {input_shape!r}")
    return tuple(int(n) for n in input_shape)


def _shift_error(g: Callable[[np.ndarray], np.ndarray], x: np.ndarray, gx: np.ndarray,
                 strides: Sequence[int],
                 fields: tuple[Any, ...] | None = None) -> float | None:
    """Roll the input by the stride along each axis; the output must move one unit.

    Compared only on units that read no wrapped or padded value: for a recovered
    convolution, the units whose window (and their neighbour's) lies inside the input;
    otherwise the middle half of the output."""
    errors = []
    for axis, s in enumerate(strides):
        n_in, n_out = x.shape[axis + 2], gx.shape[axis + 2]
        if fields is not None:
            _, _, dilation, padding = fields
            lo = padding[axis][0]
            reach = (fields[0].shape[axis + 2] - 1) * dilation[axis] + 1
            first = max(-(-(lo + s) // s), 1)
            last = (n_in - reach + lo) // s
        else:
            first, last = max(n_out // 4, 1), n_out - n_out // 4 - 1
        last = min(last, n_out - 1)
        if last < first or (fields is None and n_out < 4):
            continue
        shifted = g(np.roll(x, s, axis=axis + 2))
        index_a = [slice(None)] * gx.ndim
        index_b = [slice(None)] * gx.ndim
        index_a[axis + 2] = slice(first, last + 1)
        index_b[axis + 2] = slice(first - 1, last)
        errors.append(_relative(shifted[tuple(index_a)] - gx[tuple(index_b)],
                                gx[tuple(index_b)]))
    return max(errors) if errors else None


def _support(values: np.ndarray, threshold: float) -> list[np.ndarray]:
    """Per spatial axis, the sorted positions where any entry is above ``threshold``."""
    mask = np.abs(values) > threshold
    result = []
    for axis in range(2, values.ndim):
        other = tuple(a for a in range(values.ndim) if a != axis)
        result.append(np.flatnonzero(mask.any(axis=other)))
    return result


def _correlate(x: np.ndarray, kernel: np.ndarray, stride: Sequence[int],
               dilation: Sequence[int], padding: Sequence[tuple[int, int]], boundary: str
               ) -> np.ndarray:
    """(C_in, *spatial) -> (C_out, *out): pad with the boundary (circular padding wraps
    the whole input), then crop where the padding is negative, then cnnlab's valid
    correlation."""
    batch = x[None]
    pads: list[int] = []
    for lo, hi in reversed(padding):  # F.pad: last axis first
        pads += [max(lo, 0), max(hi, 0)]
    if any(pads):
        batch = np.asarray(F.pad(batch, tuple(pads), mode=_PAD_MODE[boundary]))
    crop = tuple(slice(max(-lo, 0), n - max(-hi, 0))
                 for (lo, hi), n in zip(padding, batch.shape[2:]))
    batch = batch[(slice(None), slice(None), *crop)]
    conv = (F.conv1d, F.conv2d, F.conv3d)[x.ndim - 2]
    return np.asarray(conv(batch, kernel, None, stride=tuple(stride), padding=0,
                           dilation=tuple(dilation)))[0]


def _rebuild_error(fields: tuple[Any, ...], boundary: str, x: np.ndarray, gx: np.ndarray
                   ) -> float:
    """The relative error of the convolution ``fields`` describe, with ``boundary``
    padding, against the operator's responses ``gx`` to the inputs ``x``."""
    kernel, stride, dilation, padding = fields
    try:
        rebuilt = np.stack([_correlate(item, kernel, stride, dilation, padding, boundary)
                            for item in x])
    except ValueError:  # this padding does not fit this boundary (reflect > n - 1)
        return float("inf")
    if rebuilt.shape != gx.shape:
        return float("inf")
    return _relative(rebuilt - gx, gx)


def kernel_of(operator: Any, input_shape: Sequence[int], *,
              rng: np.random.Generator | None = None, tol: float = 1e-6) -> KernelEstimate:
    """Probe ``operator`` on arrays of ``input_shape`` ((C_in, *spatial)) and recover the
    convolution it is, if it is one.

    Parameters
    ----------
    operator : callable, cnnlab.nn.Module or torch.nn.Module
        A callable takes one (C_in, *spatial) array and returns (C_out, *spatial_out);
        a module takes and returns a batch, as modules do.
    input_shape : (C_in, *spatial), 1 to 3 spatial axes
    rng : numpy Generator for the random probes (default: a fresh one)
    tol : the relative error up to which linearity, equivariance and the rebuilt
        convolution count as exact.

    Returns
    -------
    KernelEstimate
        ``linear``, ``affine`` (with ``bias``), ``shift_equivariant``, ``kernel``,
        ``boundary``, ``stride``, ``dilation``, ``padding`` and the measured errors.

    Raises ValueError when the operator raises or changes the number of dimensions.

    >>> from scipy import ndimage
    >>> w = np.array([[1.0, 2.0, -1.0]])
    >>> found = kernel_of(lambda x: ndimage.correlate(x, w, mode="wrap"), (1, 16))
    >>> found.kernel.ravel().tolist(), found.boundary, found.padding
    ([1.0, 2.0, -1.0], 'circular', ((1, 1),))
    """
    shape = _check_shape(input_shape)
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not tol > 0:
        raise ValueError(f"kernel_of: tol must be a positive number, got {tol!r}")
    generator = check_rng(rng, "kernel_of")
    op = _Operator(operator, shape)
    spatial_in = shape[1:]

    zero = np.zeros((1, *shape))
    x = generator.standard_normal((2, *shape))
    a, b = generator.uniform(0.5, 2.0, size=2) * generator.choice([-1, 1], size=2)
    outputs = op(np.concatenate([zero, x, (a * x[0] + b * x[1])[None]]))
    y0, gx, mixed = outputs[:1], outputs[1:3] - outputs[:1], outputs[3:] - outputs[:1]
    out_shape = tuple(y0.shape[1:])
    linearity_error = _relative(mixed[0] - a * gx[0] - b * gx[1], np.abs(a * gx[0])
                                + np.abs(b * gx[1]))
    affine = linearity_error <= tol
    offset_scale = max(float(np.max(np.abs(gx))), 1e-300)
    linear = affine and float(np.max(np.abs(y0))) <= tol * offset_scale
    bias = None
    if affine and not linear:
        flat = y0[0].reshape(out_shape[0], -1)
        if np.all(np.abs(flat - flat[:, :1]) <= tol * offset_scale):
            bias = flat[:, 0].copy()

    def g(batch: np.ndarray) -> np.ndarray:
        return op(batch) - y0

    ratio_strides = tuple(max(1, n // max(m, 1)) for n, m in zip(spatial_in, out_shape[1:]))
    candidates = _recover(g, shape, out_shape, tol) if affine else []
    # The candidate fields (more than one where a row's neighbours read padding) and the
    # boundary that rebuild the operator; of those that do, the most compact kernel (a
    # small circular input has other, wrapped, descriptions too), else the closest.
    best: tuple[bool, int, float, Any, str | None] = (True, 0, float("inf"), None, None)
    for fields_tried in candidates:
        extent = prod((k - 1) * d + 1 for k, d in zip(fields_tried[0].shape[2:],
                                                      fields_tried[2]))
        for boundary_tried in BOUNDARIES:
            error = _rebuild_error(fields_tried, boundary_tried, x, gx)
            key = (error > tol, extent if error <= tol else 0, error)
            if key < best[:3]:
                best = (*key, fields_tried, boundary_tried)
    _, _, residual, fields, boundary = best
    if fields is None and candidates:
        fields = candidates[0]
    strides = fields[1] if fields is not None else ratio_strides
    # Shifts are tested on the operator itself, its constant included: a bias that
    # varies with position (LeNet-1989's per-unit biases) breaks equivariance too.
    fx = gx[:1] + y0
    equivariance_error = _shift_error(op, x[:1], fx, strides, fields)
    if equivariance_error is not None and fields is None and not affine:
        # a nonlinear operator: try the strides its shapes allow, keep the best
        for s in range(1, max(ratio_strides) + 2):
            trial = _shift_error(op, x[:1], fx, (s,) * len(spatial_in))
            if trial is not None and trial < equivariance_error:
                equivariance_error, strides = trial, (s,) * len(spatial_in)
    # Too few output units to compare shifted middles: a convolution rebuilt from the
    # fields that reproduces the operator proves it below.
    untested = equivariance_error is None and fields is not None
    shift_equivariant = untested or (equivariance_error is not None
                                     and equivariance_error <= tol)

    if not affine:
        return KernelEstimate(False, False, shift_equivariant, None, None, None,
                              strides if shift_equivariant else None, None, None,
                              linearity_error, equivariance_error, None, shape, out_shape,
                              "not linear: no kernel")
    # On a map of a few units every unit may read padding: no row shows the whole
    # kernel, and shifts cannot be told from the borders.
    small = min(out_shape[1:]) < 4 and (fields is None or residual > tol)
    hint = (f"; its output has {min(out_shape[1:])} units along an axis, too few to tell "
            f"a convolution from its borders: probe a larger input_shape" if small else "")
    if fields is None or not shift_equivariant:
        note = ("not shift-equivariant: no kernel" if not shift_equivariant
                else "no single kernel reproduces the operator's central rows") + hint
        return KernelEstimate(linear, affine, shift_equivariant, None, bias, None, None,
                              None, None, linearity_error, equivariance_error, None, shape,
                              out_shape, note)
    kernel, stride, dilation, padding = fields
    note = ""
    if boundary is not None and residual <= tol and not linear and bias is None:
        # The linear part is this convolution, but the constant f(0) is not one bias per
        # channel (LeNet-1989's padding with -1 shows at the borders): on the operator
        # itself, the rebuilt convolution misses it.
        rebuilt = np.stack([_correlate(item, kernel, stride, dilation, padding, boundary)
                            for item in x])
        residual = _relative(rebuilt - (gx + y0), gx + y0)
    if untested and residual > tol:
        return KernelEstimate(linear, affine, False, None, bias, None, None, None, None,
                              linearity_error, None, None, shape, out_shape,
                              "too few output units to test shifts, and no convolution "
                              "reproduces the operator" + hint)
    if boundary is None or residual > tol:
        note = ("the kernel holds away from the borders, but no boundary rule (zeros, "
                "circular, reflect, replicate) reproduces the borders"
                + (", and its constant f(0) is not one bias per channel"
                   if not linear and bias is None else ""))
        boundary = None
    return KernelEstimate(linear, affine, shift_equivariant, kernel, bias, boundary, stride,
                          dilation, padding, linearity_error, equivariance_error,
                          None if residual == float("inf") else residual, shape,
                          out_shape, note)


Fields = tuple[np.ndarray, tuple[int, ...], tuple[int, ...], tuple[tuple[int, int], ...]]


def _recover(g: Callable[[np.ndarray], np.ndarray], shape: tuple[int, ...],
             out_shape: tuple[int, ...], tol: float) -> list[Fields]:
    """Candidate (kernel, stride, dilation, padding) read off the central rows of the
    operator's matrix, from impulse responses in a window of the input; more than one
    where the stride cannot be told from a neighbouring row alone. Empty if the rows
    do not look like a convolution's."""
    c_in, spatial = shape[0], shape[1:]
    centre = tuple(n // 2 for n in spatial)
    # Impulses at a block of positions by the centre, one per phase of a stride up to
    # the shapes' ratio (a stride-2, dilation-2 convolution never reads odd positions).
    ratio = [max(1, -(-n // max(m, 1))) for n, m in zip(spatial, out_shape[1:])]
    block = [np.arange(c, min(c + r + 1, n)) for c, r, n in zip(centre, ratio, spatial)]
    columns = _rows(g, c_in, spatial, block)  # (C_out, *out, C_in, *block)
    scale = float(np.max(np.abs(columns)))
    if scale == 0.0:
        return []
    threshold = tol * scale
    # per axis, the output units the block's impulses reach
    hit = np.abs(columns) > threshold
    reach = [np.flatnonzero(hit.any(axis=tuple(a for a in range(hit.ndim) if a != 1 + i)))
             for i in range(len(spatial))]
    if any(len(r) == 0 for r in reach):
        return []
    # The output units the block reaches; the kernel is read off one of their rows.
    # (nearest the middle of the output map first: a wrapped row, under circular padding,
    # can be reached from the centre too)
    units = [tuple(int(i) for i in u) for u in itertools.product(
        *[range(int(r[0]), int(r[-1]) + 1) for r in reach])][:4096]
    middle = [(n - 1) / 2 for n in out_shape[1:]]
    units.sort(key=lambda u: sum(abs(i - m) for i, m in zip(u, middle)))
    # Half-width of the input window: enough that the central unit's row and its
    # neighbours' rows lie inside it.
    half = [(int(r[-1] - r[0]) + 2) * s + 1 for r, s in zip(reach, ratio)]
    while True:
        window = [np.arange(max(c - h, 0), min(c + h, n - 1) + 1)
                  for c, h, n in zip(centre, half, spatial)]
        rows = _rows(g, c_in, spatial, window)  # (C_out, *out, C_in, *window)
        found = _read_rows(rows, window, units, spatial, out_shape, threshold, c_in)
        if found or all(len(w) == n for w, n in zip(window, spatial)):
            return found
        half = [2 * h for h in half]


def _rows(g: Callable[[np.ndarray], np.ndarray], c_in: int, spatial: Sequence[int],
          window: list[np.ndarray]) -> np.ndarray:
    """Impulse responses at every (channel, position) of the window: the operator's
    matrix restricted to those columns, as (C_out, *out, C_in, *window)."""
    grid = np.stack(np.meshgrid(*window, indexing="ij"), axis=-1).reshape(-1, len(spatial))
    impulses = [(ci, *position) for ci in range(c_in) for position in grid]
    # In chunks of about 32 MB of probes: a 16-channel 64x64 window is thousands of them.
    chunk = max(1, (32 << 20) // (8 * c_in * prod(spatial)))
    parts = []
    for lo in range(0, len(impulses), chunk):
        batch = impulses[lo:lo + chunk]
        probes = np.zeros((len(batch), c_in, *spatial))
        for k, index in enumerate(batch):
            probes[(k, *index)] = 1.0
        parts.append(g(probes))
    responses = np.concatenate(parts)  # (count, C_out, *out)
    responses = responses.reshape(c_in, *[len(w) for w in window], *responses.shape[1:])
    nd = len(spatial)
    # -> (C_out, *out, C_in, *window)
    order = [nd + 1 + i for i in range(nd + 1)] + list(range(nd + 1))
    return responses.transpose(order)


def _read_rows(rows: np.ndarray, window: list[np.ndarray], units: list[tuple[int, ...]],
               spatial: Sequence[int], out_shape: tuple[int, ...], threshold: float,
               c_in: int) -> list[Fields]:
    """Candidate fields read off the rows of ``units`` (and their neighbours' rows, for
    the stride)."""
    c_out, out_spatial = out_shape[0], out_shape[1:]

    def row_support(u: Sequence[int]) -> list[np.ndarray] | None:
        """Per axis, the input positions row u reads (None if it touches the window's
        edge where the window is not the whole axis: the row may be cut)."""
        if any(not 0 <= i < n for i, n in zip(u, out_spatial)):
            return None
        row = rows[(slice(None), *u)]  # (C_out, C_in, *window)
        support = _support(row, threshold)
        result = []
        for positions, w, n in zip(support, window, spatial):
            if len(positions) == 0:
                return None
            absolute = w[positions]
            if (absolute[0] == w[0] and w[0] > 0) or (absolute[-1] == w[-1]
                                                       and w[-1] < n - 1):
                return None
            result.append(absolute)
        return result

    supports = [(u, row_support(u)) for u in units]
    complete = [(u, sup) for u, sup in supports if sup is not None]
    if not complete:
        return []

    def span(sup: list[np.ndarray]) -> int:
        return sum(int(a[-1] - a[0]) for a in sup)

    def at_border(sup: list[np.ndarray]) -> bool:
        return any(a[0] == 0 or a[-1] == n - 1 for a, n in zip(sup, spatial))

    # Which row is a whole kernel? One that reads zero padding is cut short, one that
    # wraps around (circular) reads both ends. The widest row away from the border comes
    # first, then the widest of all; the caller keeps the first whose convolution
    # reproduces the operator (``units`` is ordered by distance to the middle).
    ordered = [min(complete, key=lambda item: (at_border(item[1]), -span(item[1]))),
               min(complete, key=lambda item: -span(item[1])), *complete]
    chosen: list[tuple[tuple[int, ...], list[np.ndarray]]] = []
    for item in ordered:
        if all(item[0] != u for u, _ in chosen) and len(chosen) < 6:
            chosen.append(item)
    candidates: list[Fields] = []
    for unit, first in chosen:
        candidates += _fields_from_row(rows, window, unit, first, row_support, spatial,
                                       out_spatial, c_out, c_in)
    return candidates


def _fields_from_row(rows: np.ndarray, window: list[np.ndarray], unit: tuple[int, ...],
                     first: list[np.ndarray],
                     row_support: Callable[[Sequence[int]], list[np.ndarray] | None],
                     spatial: Sequence[int], out_spatial: Sequence[int], c_out: int,
                     c_in: int) -> list[Fields]:
    """Kernel, dilation, candidate strides and padding, taking row ``unit`` (which reads
    the positions ``first`` per axis) as a whole kernel."""
    nd = len(spatial)
    options, dilations, kernel_sizes = [], [], []
    for axis in range(nd):
        positions = first[axis]
        offsets = positions - positions[0]
        d = 0
        for o in offsets[1:]:
            d = gcd(d, int(o))
        d = max(d, 1)
        kernel_sizes.append(int(offsets[-1]) // d + 1)
        dilations.append(d)
        # The stride: how far a neighbouring unit's row moves. A neighbour that reads
        # padding is cut short (zeros) or reads the input's first or last sample for it
        # (replicate, circular): its first tap, or its last, may not move by the stride.
        # Neighbours with the central row's span, away from the border, come first.
        ranked = []
        for delta in (1, -1):
            neighbour = list(unit)
            neighbour[axis] += delta
            other = row_support(neighbour)
            if other is None:
                continue
            span = other[axis][-1] - other[axis][0]
            whole = span == positions[-1] - positions[0]
            inside = other[axis][0] > 0 and other[axis][-1] < spatial[axis] - 1
            # the move that lines up the most taps (a wrapped tap lines up with none),
            # then the first's and the last's moves
            theirs = set(int(i) for i in other[axis])
            overlap = {v: len(theirs & set(int(i) + v * delta for i in positions))
                       for v in range(1, spatial[axis] + 1)}
            lined_up = [v * delta for v in overlap if overlap[v] == max(overlap.values())]
            for moved in (*lined_up, other[axis][0] - positions[0],
                          other[axis][-1] - positions[-1]):
                ranked.append((not whole, not inside, int(moved) * delta))
        steps = [step for *_, step in sorted(ranked) if step >= 1]
        steps.append(max(1, -(-spatial[axis] // max(out_spatial[axis], 1))))
        options.append(list(dict.fromkeys(steps)))
    # the kernel: the central row at the taps
    kernel = np.zeros((c_out, c_in, *kernel_sizes))
    row = rows[(slice(None), *unit)]  # (C_out, C_in, *window)
    index: list[slice] = [slice(None), slice(None)]
    for axis in range(nd):
        start = int(first[axis][0]) - int(window[axis][0])
        index.append(slice(start, start + (kernel_sizes[axis] - 1) * dilations[axis] + 1,
                           dilations[axis]))
    kernel[...] = row[tuple(index)]
    candidates = []
    for strides in itertools.product(*options):
        padding = []
        for axis in range(nd):
            lo = int(unit[axis]) * strides[axis] - int(first[axis][0])
            reach = (kernel_sizes[axis] - 1) * dilations[axis] + 1
            hi = (out_spatial[axis] - 1) * strides[axis] + reach - spatial[axis] - lo
            padding.append((lo, hi))
        candidates.append((kernel, tuple(strides), tuple(dilations), tuple(padding)))
    return candidates


__all__ = ["BOUNDARIES", "KernelEstimate", "kernel_of"]


