"""The fast convolution kernel: N-D cross-correlation by GEMM (im2col), with its two VJPs.

The reader's version of the same sums is ``reference.py``; ``dispatch.py`` decides when
this kernel runs (most convolutions) and when ``fft.py`` does (large kernels).

The layer computes (PyTorch's convention, the lecture's sum with the filter un-flipped)::

    y[n, o, p] = sum_{c in group(o)} sum_k x_pad[n, c, p*s + k*d] * w[o, c, k]

Algorithm ("channel-major phase grid, exact columns"): the zero-padded input is stored once
as ``grid[phase, c, n, *g]``, where a stride-``s`` axis of padded length ``P`` is split into
``s`` phases of length ``G = ceil(P / s)`` (stride = stride 1 on each phase, the lecture's
"stride 1 followed by downsampling" read backwards). Kernel tap ``k`` then reads phase
``(k*d) % s`` shifted by ``(k*d) // s`` along each axis. The taps that read one phase
form a regular grid (:class:`TapGroup`), so the im2col matrix of a chunk is one strided
copy per stride phase (one in all at stride 1), and the layer is one wide GEMM per chunk::

    out[:, chunk] = W (C_out, K*C_in) @ cols (K*C_in, chunk)

or, when positions are image-major, one GEMM per image of the chunk, written straight into
the output array (N, C_out, *out) (:class:`_Chunk`).

Columns cover exactly the ``N * prod(out)`` output positions. Their memory order is either
image-major ``(n, *o)`` or, when output rows are short, batch-minor ``(*o, n)``: then the
slice a tap copies is contiguous over ``o_last * N`` items instead of ``o_last``
(:attr:`GemmPlan.batch_inner`). Chunks along the outermost position axis keep the
column buffer near :data:`COLS_BUDGET_BYTES`, whatever the batch size.

The VJPs reuse the same columns: ``grad_w = gy @ cols.T`` and ``grad_cols = W.T @ gy``
added back through the same slices (col2im), which is also the transposed convolution.

Why this module is longer than 600 lines: the plan (:class:`GemmPlan`), the column chunks
(:class:`_Chunk`) and the two passes over them (:func:`conv_forward`, :func:`conv_backward`)
share every private helper here; split apart, reading the forward or its VJP would take a
second file open.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, fields
from functools import lru_cache
from itertools import product
from math import gcd
from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._args import (  # noqa: F401 - all_finite: its old import path
    PadPairs,
    all_finite,
    ceil_div,
    conv_output_shape,
    prod,
)

# Upper bound on one chunk's im2col buffer (and its gradient). 8 MiB keeps a chunk and the
# weight within the L3 share of one core pair while leaving GEMMs wide enough to run at
# full BLAS speed (benchmarks/bench_conv.py, shapes ResNet 3x3 and LeNet C3).
COLS_BUDGET_BYTES = 8 * 2**20
# Training keeps a layer's whole column matrix from the forward for the weight gradient
# when it is at most this large (LeNet-5's layers: 10 and 8 MB); larger layers keep the
# input grid and rebuild their columns chunk by chunk.
KEEP_COLS_BYTES = 16 * 2**20


class TapGroup(NamedTuple):
    """The taps that read one stride phase: a regular grid of taps (every ``s/gcd(s, d)``-th
    along each axis) reading a regular grid of shifts, so one strided view of the phase."""

    first: int  # flat (C-order) index of the group's first tap
    taps: tuple[tuple[int, int, int], ...]  # per axis: its taps as range(start, stop, step)
    shifts: tuple[int, ...]  # per axis: the grid shift between consecutive taps


@dataclass(frozen=True)
class GemmPlan:
    """Everything a GEMM convolution needs to know about its shapes, computed once.

    ``grid``: per-phase padded size ``ceil(P / s)``; ``phases``: the stride phases that some
    tap reads; ``tap_phase``/``tap_shift``: for each kernel tap (C-order over the kernel
    axes) its phase index and its shift along each grid axis; ``batch_inner``: positions
    are stored ``(*spatial, n)`` rather than ``(n, *spatial)`` (see the module docstring);
    ``tap_groups``: per phase, the taps that read it (:class:`TapGroup`); ``shift_groups``:
    when every grid shift is read from all stride phases (no dilation, each kernel size a
    multiple of its stride, several phases), per shift (the flat index of its tap in phase
    0, the shift), else empty.
    """

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: PadPairs
    out_spatial: tuple[int, ...]
    grid: tuple[int, ...]
    phases: tuple[tuple[int, ...], ...]
    tap_phase: tuple[int, ...]
    tap_shift: tuple[tuple[int, ...], ...]
    batch_inner: bool
    tap_groups: tuple[TapGroup, ...]
    shift_groups: tuple[tuple[int, tuple[int, ...]], ...]

    def __hash__(self) -> int:
        # Computed once: geometries key several caches that a training step queries dozens
        # of times, and the generated hash would rehash every tap tuple each time.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", cached)
        return cached

    @property
    def columns(self) -> int:
        """Number of im2col columns: one per output position, ``N * prod(out)``."""
        return self.batch * prod(self.out_spatial)

    def positions(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """Memory order of the (batch, *spatial) position axes: ``(*spatial, N)`` or
        ``(N, *spatial)``."""
        return (*spatial, self.batch) if self.batch_inner else (self.batch, *spatial)

    def logical(self, a: np.ndarray, lead: int) -> np.ndarray:
        """View of ``a`` (*lead, *positions) in logical order (*lead, N, *spatial)."""
        if not self.batch_inner:
            return a
        return a.transpose(_batch_to_front(a.ndim, lead, len(self.kernel)))


@lru_cache(maxsize=64)
def _batch_to_front(ndim: int, lead: int, spatial: int) -> tuple[int, ...]:
    """Axis order moving axis ``lead + spatial`` to ``lead`` (np.moveaxis, without its
    per-call Python overhead: a training step makes dozens of these views)."""
    order = list(range(ndim))
    order.insert(lead, order.pop(lead + spatial))
    return tuple(order)


# Rows of at least this many outputs are copied fast enough image by image; shorter rows
# store the batch innermost so that a tap's slice stays contiguous over ``o_last * N``.
LONG_ROW = 16


@lru_cache(maxsize=512)
def gemm_plan(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    stride: tuple[int, ...],
    padding: PadPairs,
    dilation: tuple[int, ...],
    groups: int,
    layout: str = "auto",
) -> GemmPlan:
    """Geometry of ``conv(x: (N, C_in, *spatial), w: (C_out, C_in/groups, *kernel))``.

    ``layout``: the column order, ``"auto"`` (by output row length, see :data:`LONG_ROW`),
    ``"image"`` (image-major) or ``"batch"`` (batch-minor). Cached: a training loop asks
    for the same few geometries at every step.
    """
    in_spatial, kernel = tuple(x_shape[2:]), tuple(w_shape[2:])
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(in_spatial, padding))
    grid = tuple(ceil_div(p, s) for p, s in zip(padded, stride))
    phase_ids: dict[tuple[int, ...], int] = {}
    tap_phase, tap_shift = [], []
    for tap in product(*(range(k) for k in kernel)):
        reach = [t * d for t, d in zip(tap, dilation)]
        phase = tuple(r % s for r, s in zip(reach, stride))
        tap_phase.append(phase_ids.setdefault(phase, len(phase_ids)))
        tap_shift.append(tuple(r // s for r, s in zip(reach, stride)))
    out_spatial = conv_output_shape(in_spatial, kernel, stride, padding, dilation)
    image_bytes = prod(out_spatial) * len(tap_phase) * x_shape[1] // groups * 4
    batch_inner = bool(out_spatial) and (out_spatial[-1] < LONG_ROW
                                         or image_bytes > COLS_BUDGET_BYTES)
    if layout not in ("auto", "image", "batch"):
        raise ValueError(f"gemm_plan: layout must be 'auto', 'image' or 'batch', got "
                         f"{layout!r}")
    if layout != "auto" and out_spatial:
        batch_inner = layout == "batch"
    shift_groups = _shift_groups(kernel, stride, dilation)
    # _add_cols splits the phase axis per spatial axis: the phases must come in C order.
    assert not shift_groups or tuple(phase_ids) == tuple(product(*map(range, stride)))
    return GemmPlan(
        batch=x_shape[0], in_channels=x_shape[1], out_channels=w_shape[0], groups=groups,
        in_spatial=in_spatial, kernel=kernel, stride=stride, dilation=dilation,
        padding=padding, out_spatial=out_spatial, grid=grid, phases=tuple(phase_ids),
        tap_phase=tuple(tap_phase), tap_shift=tuple(tap_shift), batch_inner=batch_inner,
        tap_groups=tuple(_tap_group(phase, kernel, stride, dilation) for phase in phase_ids),
        shift_groups=shift_groups,
    )


def _shift_groups(kernel: tuple[int, ...], stride: tuple[int, ...],
                  dilation: tuple[int, ...]) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """See :attr:`GemmPlan.shift_groups`. Phases are then numbered in C order of their
    per-axis offsets, as tap order first meets them, so they split per axis."""
    if (any(d != 1 for d in dilation) or prod(stride) == 1
            or any(k % s for k, s in zip(kernel, stride))):
        return ()
    shifts = product(*(range(k // s) for k, s in zip(kernel, stride)))
    return tuple((int(np.ravel_multi_index(tuple(i * s for i, s in zip(shift, stride)),
                                           kernel)), shift) for shift in shifts)


def _tap_group(phase: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
               dilation: tuple[int, ...]) -> TapGroup:
    """The taps reading stride ``phase``."""
    ranges, shifts = [], []
    for q, k, s, d in zip(phase, kernel, stride, dilation):
        taps = [t for t in range(k) if t * d % s == q]
        step = s // gcd(s, d)
        assert taps == list(range(taps[0], k, step))  # an arithmetic progression
        ranges.append((taps[0], k, step))
        shifts.append(step * d // s)
    first = int(np.ravel_multi_index(tuple(r[0] for r in ranges), kernel))
    return TapGroup(first, tuple(ranges), tuple(shifts))


@lru_cache(maxsize=512)
def _phase_slices(geo: GemmPlan, phase: tuple[int, ...]):
    """For one stride phase: (grid slices, input slices) of the input samples it holds
    (cached: every step asks for the same few)."""
    grid_index, input_index = [], []
    for n, (lo, _), s, r, g in zip(geo.in_spatial, geo.padding, geo.stride, phase, geo.grid):
        # padded position u = g*s + r holds input position u - lo when 0 <= u - lo < n
        first = max(ceil_div(lo - r, s), 0)
        stop = min(ceil_div(n + lo - r, s), g)
        count = max(stop - first, 0)
        start_in = first * s + r - lo
        grid_index.append(slice(first, first + count))
        input_index.append(slice(start_in, start_in + (count - 1) * s + 1 if count else 0, s))
    return tuple(grid_index), tuple(input_index)


def to_grid(x: np.ndarray, geo: GemmPlan) -> np.ndarray:
    """(N, C, *spatial) -> zero-padded phase grid (phases, C, *positions(grid)), one copy."""
    shape = (len(geo.phases), geo.in_channels, *geo.positions(geo.grid))
    flat = np.zeros(shape, x.dtype)
    grid = geo.logical(flat, 2)  # (phases, C, N, *G)
    x_cm = x.swapaxes(0, 1)  # (C, N, *spatial), a view
    for index, phase in enumerate(geo.phases):
        grid_index, input_index = _phase_slices(geo, phase)
        grid[(index, slice(None), slice(None), *grid_index)] = x_cm[(Ellipsis, *input_index)]
    return flat


def from_grid(flat: np.ndarray, geo: GemmPlan) -> np.ndarray:
    """Adjoint of :func:`to_grid`: phase grid -> (N, C, *spatial), one copy.

    Input samples in a stride phase that no tap reads get no gradient (zeros).
    """
    shape = (geo.batch, geo.in_channels, *geo.in_spatial)
    all_read = len(geo.phases) == prod(geo.stride)
    out = np.empty(shape, flat.dtype) if all_read else np.zeros(shape, flat.dtype)
    out_cm = out.swapaxes(0, 1)  # (C, N, *spatial) view: write channel-major, no 2nd copy
    grid = geo.logical(flat, 2)
    for index, phase in enumerate(geo.phases):
        grid_index, input_index = _phase_slices(geo, phase)
        out_cm[(Ellipsis, *input_index)] = grid[(index, slice(None), slice(None), *grid_index)]
    return out


def new_output_rows(geo: GemmPlan, dtype: np.dtype) -> np.ndarray:
    """Where the forward's GEMMs write: image-major, the output array itself
    (N, C_out, *out); batch-minor, an array (C_out, *positions(out)) that
    :func:`output_from_rows` lays out."""
    if geo.batch_inner:
        return np.empty((geo.out_channels, *geo.positions(geo.out_spatial)), dtype)
    return np.empty((geo.batch, geo.out_channels, *geo.out_spatial), dtype)


def output_from_rows(rows: np.ndarray, geo: GemmPlan, bias: np.ndarray | None = None
                     ) -> np.ndarray:
    """The forward's GEMM results (see :func:`new_output_rows`) [+ bias (C_out,)] ->
    (N, C_out, *out_spatial), a new array; the bias is added in the layout pass."""
    if not geo.batch_inner:
        if bias is not None:
            rows += bias.reshape((-1,) + (1,) * len(geo.out_spatial))
        return rows
    # Batch-minor rows are laid out as (N, C_out, *out): one copy, with the bias added in it.
    out = np.empty((geo.batch, geo.out_channels, *geo.out_spatial), dtype=rows.dtype)
    logical = geo.logical(rows, 1)
    if bias is None:
        out.swapaxes(0, 1)[...] = logical
    else:
        np.add(logical, bias.reshape((-1,) + (1,) * (logical.ndim - 1)),
               out=out.swapaxes(0, 1))
    return out


def output_rows(gy: np.ndarray, geo: GemmPlan) -> np.ndarray:
    """Adjoint of :func:`output_from_rows`: (N, C_out, *o) -> the GEMMs' layout,
    (C_out, *positions(out)) batch-minor or C-contiguous (N, C_out, *out) image-major.

    ``gy`` may be smaller than ``out_spatial`` (transposed convolution with output
    padding): the positions it lacks are zeros.
    """
    partial = tuple(gy.shape[2:]) != geo.out_spatial
    if not geo.batch_inner and not partial:
        return np.ascontiguousarray(gy)
    shape = ((geo.out_channels, *geo.positions(geo.out_spatial)) if geo.batch_inner
             else (geo.batch, geo.out_channels, *geo.out_spatial))
    flat = (np.zeros if partial else np.empty)(shape, gy.dtype)
    crop = tuple(slice(0, o) for o in gy.shape[2:])
    if geo.batch_inner:
        geo.logical(flat, 1)[(slice(None), slice(None), *crop)] = gy.swapaxes(0, 1)
    else:
        flat[(slice(None), slice(None), *crop)] = gy
    return flat


def _column_rows(geo: GemmPlan) -> tuple[int, int, int]:
    """Leading axes of every column array: (groups, taps K, C_in/groups)."""
    return geo.groups, len(geo.tap_phase), geo.in_channels // geo.groups


def _chunk_units(geo: GemmPlan, itemsize: int, budget: int) -> tuple[int, int]:
    """(units along the outermost position axis, units per chunk of at most ``budget``
    bytes of columns, but at least one)."""
    positions = geo.positions(geo.out_spatial)
    unit_bytes = prod(positions[1:]) * prod(_column_rows(geo)) * itemsize
    units = positions[0] if positions else 1
    return units, max(1, min(units, budget // max(unit_bytes, 1)))


def _weight_matrix(w: np.ndarray, groups: int) -> np.ndarray:
    """(C_out, C_in/g, *kernel) -> (g, C_out/g, K*C_in/g), tap-major rows to match cols."""
    c_out, c_in_g = w.shape[:2]
    taps = prod(w.shape[2:])
    wm = w.reshape(groups, c_out // groups, c_in_g, taps).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(wm.reshape(groups, c_out // groups, taps * c_in_g))


def _weight_from_matrix(wm: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`_weight_matrix`: (g, C_out/g, K*C_in/g) -> ``shape``."""
    groups, c_out_g = wm.shape[:2]
    c_in_g, taps = shape[1], prod(shape[2:])
    w = wm.reshape(groups, c_out_g, taps, c_in_g).transpose(0, 1, 3, 2)
    return np.ascontiguousarray(w.reshape(shape))


class _Chunk:
    """One chunk of output positions: units ``[start, stop)`` of the outermost position axis.

    ``cols``: the chunk's columns (g, K, C/g, *positions) in memory order, a view whose
    reshapes never copy, so ``matmul(out=...)`` writes into it: a contiguous prefix of the
    chunks' shared buffer, or a slice of a layer's kept column matrix.

    ``matrix``: the columns as GEMM operands. Batch-minor, one (g, K*C/g, L) matrix per
    group. Image-major, one (K*C/g, prod(out)) matrix per image and group, ``(n, g, R, P)``:
    the products then read and write arrays in their own (N, C, *out) layout (output,
    output gradient), with no layout pass, and OpenBLAS runs these per-image products of
    a few output channels faster than one long one (LeNet's first layer, 64 images, one
    BLAS thread: 0.28 ms against 0.65 ms for one product and the layout pass).
    """

    def __init__(self, geo: GemmPlan, cols: np.ndarray, start: int, stop: int) -> None:
        self.geo, self.start, self.stop, self.cols = geo, start, stop, cols
        self.positions = cols.shape[3:]
        self.length = prod(self.positions)
        rows = cols.shape[1] * cols.shape[2]
        if geo.batch_inner:
            self.matrix = cols.reshape(geo.groups, rows, self.length)
        else:
            per_image = prod(geo.out_spatial)
            self.matrix = cols.reshape(geo.groups, rows, stop - start, per_image
                                       ).transpose(2, 0, 1, 3)

    @property
    def windows(self) -> tuple[tuple, ...]:
        """For each tap, the index into a logical grid (phases, g, C/g, N, *G) of what it
        reads."""
        return _tap_windows(self.geo, self.start, self.stop)

    def clear_beyond(self, present: tuple[int, ...]) -> None:
        """Zero the columns of outputs at or past ``present`` along some axis (a gradient
        smaller than the output, see :func:`output_rows`): they do not exist, and
        0 * NaN/inf there (a non-finite W or input) must not reach the sums."""
        cols = self.geo.logical(self.cols, 3)  # (g, K, C/g, N, *o)
        for axis, (have, full) in enumerate(zip(present, self.geo.out_spatial)):
            if have < full:
                first = have - self.start if axis == 0 and self.geo.batch_inner else have
                index = [slice(None)] * cols.ndim
                index[4 + axis] = slice(max(first, 0), None)
                cols[tuple(index)] = 0

    def of(self, a: np.ndarray) -> np.ndarray:
        """This chunk's part of ``a``, an output-side array in :func:`output_rows` layout, as
        the GEMM operand that matches :attr:`matrix`: (g, rows/g, L) or (n, g, rows/g, P)."""
        groups = self.geo.groups
        if self.geo.batch_inner:
            part = a[:, self.start : self.stop]
            return part.reshape(groups, a.shape[0] // groups, self.length)
        part = a[self.start : self.stop]
        return part.reshape(part.shape[0], groups, a.shape[1] // groups,
                            prod(self.geo.out_spatial))


@lru_cache(maxsize=256)
def _tap_windows(geo: GemmPlan, start: int, stop: int) -> tuple[tuple, ...]:
    """For each tap, the index of what it reads for the chunk of units ``[start, stop)``
    (built once: a training step asks for the same few hundred windows every time)."""
    windows = []
    for phase, shift in zip(geo.tap_phase, geo.tap_shift):
        spatial = [slice(t, t + o) for t, o in zip(shift, geo.out_spatial)]
        batch = slice(None)
        if geo.batch_inner:
            first = spatial[0]
            spatial[0] = slice(first.start + start, first.start + stop)
        else:
            batch = slice(start, stop)
        windows.append((phase, slice(None), slice(None), batch, *spatial))
    return tuple(windows)


def _chunks(geo: GemmPlan, dtype: np.dtype, budget: int, kept: np.ndarray | None = None):
    """The chunks covering every output position, each with at most ``budget`` bytes of
    columns: views of ``kept`` (g, K, C/g, *positions) when given, else of one buffer the
    chunks take turns in."""
    units, per_chunk = _chunk_units(geo, np.dtype(dtype).itemsize, budget)
    positions = geo.positions(geo.out_spatial)
    shape = _column_rows(geo)
    if kept is None:
        buffer = np.empty(prod(shape) * per_chunk * prod(positions[1:]), dtype)
    for start in range(0, units, per_chunk):
        stop = min(units, start + per_chunk)
        if kept is not None:
            cols = kept[:, :, :, start:stop]
        else:
            chunk_shape = (*shape, stop - start, *positions[1:])
            cols = buffer[: prod(chunk_shape)].reshape(chunk_shape)
        yield _Chunk(geo, cols, start, stop)


def _grouped_grid(flat: np.ndarray, geo: GemmPlan) -> np.ndarray:
    """Physical phase grid (phases, C, *positions) -> logical (phases, g, C/g, N, *G) view."""
    grid = geo.logical(flat, 2)
    return grid.reshape(grid.shape[0], geo.groups, geo.in_channels // geo.groups,
                        *grid.shape[2:])


def _cols_bytes(geo: GemmPlan, itemsize: int) -> int:
    return prod(_column_rows(geo)) * geo.columns * itemsize


def _new_columns(geo: GemmPlan, dtype: np.dtype) -> np.ndarray:
    """A new (g, K, C/g, *positions(out)) array for columns that outlive the call."""
    return np.empty((*_column_rows(geo), *geo.positions(geo.out_spatial)), dtype)


# A batch-minor weight-gradient product with fewer than this many outputs (K*C_in/g by
# C_out/g) is split into blocks along its long inner dimension: OpenBLAS ran (25 x L) @
# (L x 6) at a third of the speed of 32 blocks of it (measured on LeNet's first layer when
# its columns were batch-minor; it now multiplies image by image, see _Chunk).
SMALL_WEIGHT_GRAD = 1024


def _weight_grad(cols: np.ndarray, gy: np.ndarray, units: int) -> np.ndarray:
    """d loss / d W, transposed: (g, R, C_out/g), from a chunk's :attr:`_Chunk.matrix` and
    its :meth:`_Chunk.of` output gradient, ``units`` outermost position units long.

    Image-major: per-image products summed over the images. Batch-minor, cols (g, R, L) @
    gy (g, C_out/g, L).T: cols @ gy.T runs about 1.7x faster in OpenBLAS than gy @ cols.T
    on these long, thin products; small outputs are summed over blocks of whole units.
    """
    if cols.ndim == 4:
        return np.matmul(cols, gy.transpose(0, 1, 3, 2)).sum(axis=0)
    groups, rows, length = cols.shape
    c_out_g = gy.shape[1]
    blocks = _block_count(units, length) if rows * c_out_g < SMALL_WEIGHT_GRAD else 1
    if blocks == 1:
        return np.matmul(cols, gy.transpose(0, 2, 1))
    part = length // blocks
    cols_b = cols.reshape(groups, rows, blocks, part).transpose(0, 2, 1, 3)
    gy_b = gy.reshape(groups, c_out_g, blocks, part).transpose(0, 2, 3, 1)
    return np.matmul(cols_b, gy_b).sum(axis=1)


def _block_count(units: int, length: int) -> int:
    """The largest divisor of ``units`` that leaves blocks of at least 2,048 columns, at
    most 64 blocks."""
    for blocks in range(min(units, 64, length // 2048), 1, -1):
        if units % blocks == 0:
            return blocks
    return 1


def _fill_cols(chunk: _Chunk, grid: np.ndarray) -> None:
    """chunk.cols (g, K, C/g, *positions) <- each tap's window of the logical ``grid``.

    One strided copy per stride phase (:attr:`GemmPlan.tap_groups`): all taps at once
    at stride 1, or when the stride divides the dilation; 4 copies for a 2x2 stride.
    """
    geo = chunk.geo
    ndim = len(geo.kernel)
    cols = chunk.cols.reshape(*chunk.cols.shape[:1], *geo.kernel, *chunk.cols.shape[2:])
    cols = geo.logical(cols, 2 + ndim)  # (g, *kernel, C/g, N, *o)
    for first, taps, shifts in geo.tap_groups:
        start = grid[chunk.windows[first]]  # (g, C/g, N, *o): what the first tap reads
        counts = tuple(len(range(*t)) for t in taps)
        steps = tuple(shift * stride for shift, stride in zip(shifts, grid.strides[4:]))
        group = as_strided(start, (start.shape[0], *counts, *start.shape[1:]),
                           (start.strides[0], *steps, *start.strides[1:]), writeable=False)
        np.copyto(cols[(slice(None), *(slice(*t) for t in taps))], group)


def _add_cols(chunk: _Chunk, cols: np.ndarray, grad_grid: np.ndarray) -> None:
    """col2im: ``grad_grid`` (phases, g, C/g, N, *G) += each tap's column rows ``cols``
    (g, K, C/g, N, *o) at the window it read.

    Taps that read different stride phases at the same shift write disjoint planes of the
    grid, so when every shift is read from all phases (no dilation, each kernel size a
    multiple of its stride, as the fused convolution + pooling's kernels) their adds are one
    operation: 9 instead of 36 for a 6x6 kernel at stride 2.
    """
    geo = chunk.geo
    if not geo.shift_groups:
        for tap, window in enumerate(chunk.windows):
            grad_grid[window] += cols[:, tap]
        return
    ndim = len(geo.kernel)
    # Phases are numbered in C order of their per-axis offsets here (gemm_plan checks),
    # and splitting the leading axis of a view is always a view: the adds reach grad_grid.
    by_phase = grad_grid.reshape(*geo.stride, *grad_grid.shape[1:])
    by_tap = cols.reshape(cols.shape[0], *geo.kernel, *cols.shape[2:])
    groups_after_phases = (*range(1, ndim + 1), 0, *range(ndim + 1, by_tap.ndim))
    for first, shift in geo.shift_groups:
        taps = by_tap[(slice(None), *(slice(i * s, (i + 1) * s)
                                      for i, s in zip(shift, geo.stride)))]
        by_phase[(slice(None),) * ndim + chunk.windows[first][1:]] += taps.transpose(
            groups_after_phases)


def is_pointwise(geo: GemmPlan) -> bool:
    """A 1x1 (x1...) kernel with no padding: a matrix product per image, no columns needed."""
    return all(k == 1 for k in geo.kernel) and all(p == (0, 0) for p in geo.padding)


def _pointwise_input(x: np.ndarray, geo: GemmPlan,
                     out_spatial: tuple[int, ...] | None = None) -> np.ndarray:
    """(N, C_in, *spatial) -> (N, g, C_in/g, prod(out)): the samples a 1x1 kernel reads."""
    out_spatial = geo.out_spatial if out_spatial is None else out_spatial
    kept = x[(Ellipsis, *(slice(0, (o - 1) * s + 1, s)
                          for o, s in zip(out_spatial, geo.stride)))]
    return kept.reshape(geo.batch, geo.groups, geo.in_channels // geo.groups,
                        prod(kept.shape[2:]))


def _pointwise_forward(x: np.ndarray, w: np.ndarray, geo: GemmPlan) -> np.ndarray:
    # y[n] = W (C_out, C_in) @ x[n] (C_in, H*W): NCHW in, NCHW out, no transposes.
    wm = w.reshape(geo.groups, geo.out_channels // geo.groups, -1)
    y = np.matmul(wm, _pointwise_input(x, geo))
    return y.reshape(geo.batch, geo.out_channels, *geo.out_spatial)


def _pointwise_backward(x: np.ndarray | None, w: np.ndarray, gy: np.ndarray,
                        geo: GemmPlan, need_input: bool, need_weight: bool
                        ) -> tuple[np.ndarray | None, np.ndarray | None]:
    groups, c_out_g = geo.groups, geo.out_channels // geo.groups
    wm = w.reshape(groups, c_out_g, -1)
    gy_m = gy.reshape(geo.batch, groups, c_out_g, prod(gy.shape[2:]))
    grad_x = grad_w = None
    if need_input:
        gx_m = np.matmul(wm.transpose(0, 2, 1), gy_m)  # (N, g, C_in/g, prod(gy spatial))
        gy_spatial = gy.shape[2:]  # may be smaller than out_spatial (transposed conv)
        if all(s == 1 for s in geo.stride) and gy_spatial == geo.in_spatial:
            grad_x = gx_m.reshape(geo.batch, geo.in_channels, *geo.in_spatial)
        else:
            grad_x = np.zeros((geo.batch, geo.in_channels, *geo.in_spatial), gy.dtype)
            kept = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(gy_spatial, geo.stride))
            grad_x[(Ellipsis, *kept)] = gx_m.reshape(geo.batch, geo.in_channels, *gy_spatial)
    if need_weight:
        x_m = _pointwise_input(x, geo, gy.shape[2:])
        grad_w = np.matmul(gy_m, x_m.transpose(0, 1, 3, 2)).sum(axis=0).reshape(w.shape)
    return grad_x, grad_w


def conv_forward(x: np.ndarray, w: np.ndarray, geo: GemmPlan,
                 saved: dict[str, np.ndarray] | None = None,
                 bias: np.ndarray | None = None) -> np.ndarray:
    """Zero-padded correlation: x (N, C_in, *spatial), w (C_out, C_in/g, *k) -> (N, C_out, *o),
    plus ``bias`` (C_out,) when given.

    ``saved``: a dict that receives what :func:`conv_backward` reuses for the weight
    gradient (training): the columns themselves when they fit :data:`KEEP_COLS_BYTES`,
    else the input grid.
    """
    if is_pointwise(geo):
        y = _pointwise_forward(x, w, geo)
        if bias is not None:
            y += bias.reshape((-1,) + (1,) * len(geo.kernel))
        return y
    keep_cols = saved is not None and _cols_bytes(geo, x.itemsize) <= KEEP_COLS_BYTES
    flat_grid = to_grid(x, geo)
    grid = _grouped_grid(flat_grid, geo)
    wm = _weight_matrix(w, geo.groups)
    out = new_output_rows(geo, x.dtype)
    kept = _new_columns(geo, x.dtype) if keep_cols else None
    if keep_cols:
        saved["cols"] = kept
    elif saved is not None:
        saved["grid"] = flat_grid
    for chunk in _chunks(geo, x.dtype, COLS_BUDGET_BYTES, kept):
        _fill_cols(chunk, grid)
        np.matmul(wm, chunk.matrix, out=chunk.of(out))
    return output_from_rows(out, geo, bias)


def conv_backward(
    x: np.ndarray | None,
    w: np.ndarray,
    gy: np.ndarray,
    geo: GemmPlan,
    need_input: bool = True,
    need_weight: bool = True,
    saved: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """VJPs of :func:`conv_forward`: (grad_x (N, C_in, *spatial), grad_w like w).

    One pass over the chunks serves both: ``grad_w.T += cols @ gy_chunk.T`` and
    ``grad_grid[tap window] += (W.T @ gy_chunk)[tap]`` (col2im). ``grad_x`` alone is the
    transposed convolution of ``gy``; ``x`` may then be ``None``.
    """
    if is_pointwise(geo):
        return _pointwise_backward(x, w, gy, geo, need_input, need_weight)
    groups, taps = geo.groups, len(geo.tap_phase)
    c_in_g, c_out_g = geo.in_channels // groups, geo.out_channels // groups
    dtype = gy.dtype
    gy_flat = output_rows(gy, geo)
    partial = tuple(gy.shape[2:]) != geo.out_spatial
    wm = _weight_matrix(w, groups)
    grid = grad_flat = grad_grid = None
    # grad_w accumulates transposed, (g, K*C_in/g, C_out/g) (see _weight_grad)
    grad_wm_t = np.zeros((groups, taps * c_in_g, c_out_g), dtype) if need_weight else None
    if need_weight and saved and "cols" in saved:
        units = geo.positions(geo.out_spatial)[0]
        kept = _Chunk(geo, saved["cols"], 0, units)
        if partial:
            kept.clear_beyond(gy.shape[2:])
        grad_wm_t += _weight_grad(kept.matrix, kept.of(gy_flat), units)
        need_weight = False  # done; the chunk loop below only serves the input gradient
    elif need_weight:
        flat_grid = saved["grid"] if saved and "grid" in saved else to_grid(x, geo)
        grid = _grouped_grid(flat_grid, geo)
    if need_input:
        grad_flat = np.zeros((len(geo.phases), geo.in_channels, *geo.positions(geo.grid)),
                             dtype)
        grad_grid = _grouped_grid(grad_flat, geo)
    wm_t = wm.transpose(0, 2, 1)
    for chunk in _chunks(geo, dtype, COLS_BUDGET_BYTES) if need_weight or need_input else ():
        gy_chunk = chunk.of(gy_flat)
        if need_weight:
            _fill_cols(chunk, grid)
            if partial:
                chunk.clear_beyond(gy.shape[2:])
            grad_wm_t += _weight_grad(chunk.matrix, gy_chunk, chunk.positions[0])
        if need_input:
            # Positions past a partial gradient are garbage until cleared below: no warning
            # for them; otherwise the caller's own error settings hold.
            with np.errstate(invalid="ignore") if partial else contextlib.nullcontext():
                np.matmul(wm_t, gy_chunk, out=chunk.matrix)
            cols = geo.logical(chunk.cols, 3)
            if partial:
                chunk.clear_beyond(gy.shape[2:])
            _add_cols(chunk, cols, grad_grid)
    grad_x = grad_w = None
    if need_input:
        grad_x = from_grid(grad_flat, geo)
    if grad_wm_t is not None:
        grad_w = _weight_from_matrix(grad_wm_t.transpose(0, 2, 1), w.shape)
    return grad_x, grad_w
