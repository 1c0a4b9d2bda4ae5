"""Receptive fields: which input pixels each unit of each layer can see.

:func:`receptive_fields` reads the model through its graph (:func:`~.graph.trace`), so it
sees what module hooks miss: a residual ``+``, a U-Net's concatenation, ``F.pad``, a
crop. For every value and spatial axis it keeps, for every unit ``u``, the first and last
input pixel the unit reads, ``lo[u]`` and ``hi[u]``, and pushes them forward op by op:

- a convolution or pooling unit ``o`` reads units ``o*s - p + t*d`` (t = 0..k-1), so
  ``lo'[o] = min_t lo[o*s - p + t*d]`` and ``hi'[o] = max_t hi[...]``;
- a transposed convolution unit ``o`` reads the units ``u`` with ``u*s + t*d - p = o``
  (none, for some ``o``, when the stride exceeds the kernel);
- an elementwise op, a residual addition or a channel concatenation reads the same unit of
  each input: the union of their fields (the union over paths);
- padding, a crop and an upsampling move or repeat units; an adaptive or global pooling
  reads its windows of the whole map.

This is the definition itself, unit by unit. Each row reports the usual (size, jump,
start), the smallest box that moves by the jump from unit to unit and holds every unit's
field; after a transposed convolution whose kernel is not a multiple of its stride,
neighbouring units see fields of different widths inside that box, and
:meth:`ReceptiveFields.field_of` gives each unit's own. The fields are those of an input
without borders: a unit at the border sees padding, and its field is reported as if the
padding were input (so ``start`` may be negative). The arrays cover the model's units plus
a margin on each side, widened until every real unit's reads fall inside it.

Checks (tests/analysis/test_receptive*.py): VGG-16 up to pool5 gives 212 with jump 32
and effective padding 90 (google-research/receptive_field's table); ResNet-50 and a
U-Net in torch match the extent of the nonzero input gradient of a unit, measured in
float64 with constant positive weights, average pools and no nonlinearities.

:func:`effective_receptive_field` is Luo et al. 2016's gradient-based field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import Any

import numpy as np

from .._random import check_rng
from ..nn.linear import check_positive_int
from .graph import Capture, Graph, Node, evaluating

# Ops that read each unit of their inputs at the same place: the output field is the union
# of the inputs' fields (inputs without spatial axes, such as parameters, add nothing).
ELEMENTWISE = frozenset({
    "relu", "leaky_relu", "gelu", "sigmoid", "tanh", "elu", "selu", "celu", "silu",
    "relu6", "hardtanh", "hardswish", "hardsigmoid", "softplus", "mish", "prelu",
    "dropout", "batch_norm", "clip", "pow", "exp", "log", "sqrt", "abs", "neg",
    "reciprocal", "add", "sub", "mul", "div", "maximum", "minimum", "where", "identity",
    "erf", "sign", "square", "rsqrt", "logsigmoid", "softsign", "tanhshrink",
})
WINDOWED = frozenset({"conv", "max_pool", "avg_pool", "lp_pool"})
GLOBAL_REDUCTIONS = frozenset({"mean", "sum", "max", "amax"})
AXIS_WIDE = frozenset({"softmax", "log_softmax"})


@dataclass
class _Axis:
    """One spatial axis of one value: the fields of units ``-margin .. n + margin - 1``
    (``lo[u + margin]``, ``hi[u + margin]``, input pixel indices; an empty field has
    ``lo = +inf, hi = -inf``) and the jump (input pixels from one unit to the next,
    exact as a fraction)."""

    lo: np.ndarray
    hi: np.ndarray
    margin: int
    jump: Fraction

    @property
    def n(self) -> int:
        return len(self.lo) - 2 * self.margin

    def read(self, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """lo and hi of ``units`` (indices relative to unit 0; inside the margins)."""
        return self.lo[units + self.margin], self.hi[units + self.margin]


_Field = tuple[_Axis, ...] | None  # None: the value has no spatial axes


class _MarginTooNarrowError(Exception):
    """The margins ran out: some real unit reads a unit beyond them."""


@dataclass(frozen=True)
class ReceptiveFieldRow:
    """One op's output, per spatial axis: ``size`` (input pixels), ``jump`` (input pixels
    between neighbouring units, the cumulative stride) and ``start`` (the input coordinate
    of unit 0's field centre; pixel centres at 0, 1, ...), such that unit i's field lies
    in ``start + i * jump -+ (size - 1) / 2``, the smallest such box. In most CNNs every
    unit's field is exactly that box. After a transposed convolution whose kernel is not a
    multiple of its stride (a U-Net's decoder), neighbouring units see fields of different
    widths and places, and the box is the smallest one that holds them all, the answer of
    the usual arithmetic (``size += (k - 1) * jump_in / stride``); each unit's own field
    is :meth:`ReceptiveFields.field_of`. All three are None for a value without spatial
    axes, with ``reason`` saying why."""

    name: str
    op: str
    output_shape: tuple[int, ...]
    size: tuple[float, ...] | None
    jump: tuple[float, ...] | None
    start: tuple[float, ...] | None
    reason: str = ""

    @property
    def effective_padding(self) -> tuple[float, ...] | None:
        """google-research/receptive_field's effective padding per axis: how far unit 0's
        field reaches before the input's first pixel, ``(size - 1) / 2 - start``."""
        if self.size is None or self.start is None:
            return None
        return tuple((s - 1) / 2 - c for s, c in zip(self.size, self.start))


def _number(value: float) -> float | int:
    """An int where ``value`` is one up to float rounding (a jump of 1/3 times 3), else
    the float."""
    rounded = round(float(value))
    if abs(float(value) - rounded) < 1e-9:
        return int(rounded)
    return float(value)


@dataclass(frozen=True)
class ReceptiveFields:
    """:func:`receptive_fields`' answer: ``rows`` in execution order and each unit's own
    field through :meth:`field_of`."""

    rows: tuple[ReceptiveFieldRow, ...]
    input_shape: tuple[int, ...]
    _fields: tuple[_Field, ...] = field(default=(), repr=False, compare=False)

    def _index(self, name: str) -> int:
        for i in range(len(self.rows) - 1, -1, -1):
            row = self.rows[i]
            if row.name == name or row.name.startswith(f"{name}:") or (
                    row.name.startswith(f"{name}.")):
                return i
        raise KeyError(f"receptive_fields: no row named {name!r}; rows: "
                       f"{[r.name for r in self.rows]}")

    def row(self, name: str) -> ReceptiveFieldRow:
        """The last row of the module ``name`` (a module path such as "layer4" or
        "features.30", or a full row name such as "features.30:max_pool")."""
        return self.rows[self._index(name)]

    def field_of(self, name: str, unit: Sequence[int]) -> tuple[tuple[int, int], ...]:
        """The input pixels (first, last) per axis that ``unit`` (one index per spatial
        axis) of row ``name`` reads, for an input without borders."""
        axes = self._fields[self._index(name)]
        if axes is None:
            raise ValueError(f"field_of: {name!r} has no spatial axes")
        if len(unit) != len(axes):
            raise ValueError(f"field_of: unit must have {len(axes)} indices, got {unit!r}")
        result = []
        for axis, u in zip(axes, unit):
            if not -axis.margin <= u < axis.n + axis.margin:
                raise ValueError(f"field_of: unit index {u} outside 0..{axis.n - 1}")
            lo, hi = axis.read(np.array([u]))
            result.append((int(lo[0]), int(hi[0])) if lo[0] <= hi[0] else (0, -1))
        return tuple(result)

    def extents(self, index: int) -> tuple[tuple[np.ndarray, np.ndarray], ...] | None:
        """Row ``index``'s units' fields: per spatial axis, the first and last input pixel
        (``lo``, ``hi``, float arrays over the units; ``lo > hi`` for a unit that reads no
        input), or None for a value without spatial axes."""
        axes = self._fields[index]
        if axes is None:
            return None
        return tuple((a.lo[a.margin:a.margin + a.n], a.hi[a.margin:a.margin + a.n])
                     for a in axes)

    def to_table(self) -> str:
        """One line per op: name, output shape, size, jump, start."""

        def show(values: tuple[Any, ...] | None) -> str:
            return "-" if values is None else "x".join(f"{_number(v):.6g}" for v in values)

        cells = [("layer", "output shape", "size", "jump", "start")]
        cells += [(r.name, str(r.output_shape[1:]), show(r.size), show(r.jump),
                   show(r.start) if r.size is not None else r.reason) for r in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                 for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


def _check_input_shape(input_shape: Any, fn: str) -> tuple[int, ...]:
    if (not isinstance(input_shape, Sequence) or isinstance(input_shape, str)
            or len(input_shape) < 2 or not all(
                isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                for n in input_shape)):
        raise ValueError(f"{fn}: input_shape must be (C, *spatial), positive ints without "
                         f"the batch axis, with at least one spatial axis, got "
                         f"{input_shape!r}")
    return tuple(int(n) for n in input_shape)


def _input_field(spatial: Sequence[int], margin: int) -> tuple[_Axis, ...]:
    axes = []
    for n in spatial:
        units = np.arange(-margin, n + margin, dtype=np.float64)
        axes.append(_Axis(units, units.copy(), margin, Fraction(1)))
    return tuple(axes)


def _windowed(axis: _Axis, n_out: int, kernel: int, stride: int, pad_lo: int,
              dilation: int) -> _Axis:
    """Unit o reads units o*stride - pad_lo + t*dilation, t = 0..kernel-1."""
    reach = (kernel - 1) * dilation
    margin = min((axis.margin - pad_lo) // stride,
                 (axis.n - 1 + axis.margin + pad_lo - reach) // stride - n_out + 1)
    if margin < 0:
        raise _MarginTooNarrowError
    first = np.arange(-margin, n_out + margin) * stride - pad_lo
    lo = np.full(len(first), np.inf)
    hi = np.full(len(first), -np.inf)
    for t in range(kernel):
        tap_lo, tap_hi = axis.read(first + t * dilation)
        np.minimum(lo, tap_lo, out=lo)
        np.maximum(hi, tap_hi, out=hi)
    return _Axis(lo, hi, margin, axis.jump * stride)


def _transposed(axis: _Axis, n_out: int, kernel: int, stride: int, pad_lo: int,
                dilation: int) -> _Axis:
    """Unit o reads the units u with u*stride + t*dilation - pad_lo = o."""
    reach = (kernel - 1) * dilation
    margin = min(axis.margin * stride + pad_lo - reach,
                 (axis.n - 1 + axis.margin) * stride - pad_lo - n_out + 1)
    if margin < 0:
        raise _MarginTooNarrowError
    units = np.arange(-margin, n_out + margin)
    lo = np.full(len(units), np.inf)
    hi = np.full(len(units), -np.inf)
    for t in range(kernel):
        source, phase = np.divmod(units + pad_lo - t * dilation, stride)
        hit = phase == 0
        tap_lo, tap_hi = axis.read(source[hit])
        lo[hit] = np.minimum(lo[hit], tap_lo)
        hi[hit] = np.maximum(hi[hit], tap_hi)
    return _Axis(lo, hi, margin, axis.jump / stride)


def _whole(axis: _Axis, n_out: int, windows: list[tuple[int, int]] | None = None) -> _Axis:
    """Each output unit reads a window of the real units (adaptive pooling), or all of
    them; no margin: these windows exist only on the real map."""
    windows = windows or [(0, axis.n - 1)] * n_out
    lo = np.empty(n_out)
    hi = np.empty(n_out)
    for o, (a, b) in enumerate(windows):
        tap_lo, tap_hi = axis.read(np.arange(a, b + 1))
        lo[o], hi[o] = tap_lo.min(), tap_hi.max()
    return _Axis(lo, hi, 0, axis.jump * Fraction(axis.n, n_out))


def _union(fields: list[tuple[_Axis, ...]], spatial: Sequence[int]) -> tuple[_Axis, ...]:
    """Each unit reads the same unit of every input (a size-1 axis broadcasts)."""
    axes = []
    for i, n in enumerate(spatial):
        full = [f[i] for f in fields if f[i].n == n]
        broadcast = [f[i] for f in fields if f[i].n != n]
        margin = min(a.margin for a in full) if full else 0
        units = np.arange(-margin, n + margin)
        lo = np.full(len(units), np.inf)
        hi = np.full(len(units), -np.inf)
        for a in full:
            tap_lo, tap_hi = a.read(units)
            np.minimum(lo, tap_lo, out=lo)
            np.maximum(hi, tap_hi, out=hi)
        for a in broadcast:  # one unit seen by every output unit
            tap_lo, tap_hi = a.read(np.zeros(1, dtype=np.int64))
            np.minimum(lo, tap_lo[0], out=lo)
            np.maximum(hi, tap_hi[0], out=hi)
        jump = max((a.jump for a in full), default=broadcast[0].jump if broadcast else 1)
        axes.append(_Axis(lo, hi, margin, jump))
    return tuple(axes)


def _slice_axis(axis: _Axis, index: Any, n_out: int) -> _Axis:
    start, _, step = index.indices(axis.n)
    if step < 1:
        raise _UnknownOpError("a crop with a negative step")
    return _windowed(axis, n_out, 1, step, -start, 1)


class _UnknownOpError(Exception):
    """An op, or a use of one, the receptive-field arithmetic does not know."""


def _upsample_axis(axis: _Axis, n_out: int, mode: str) -> _Axis:
    if n_out % axis.n:
        raise _UnknownOpError(f"an upsampling from {axis.n} to {n_out} units (not a multiple)")
    scale = n_out // axis.n
    # nearest: unit o copies unit floor(o / scale); linear (bilinear, trilinear) without
    # aligned corners reads the two units around (o + 0.5) / scale - 0.5, bicubic the four
    # (PyTorch's interpolate; aligned corners and other modes are not followed).
    taps = {"nearest": None, "linear": (0, 1), "bilinear": (0, 1), "trilinear": (0, 1),
            "bicubic": (-1, 0, 1, 2)}
    if mode not in taps:
        raise _UnknownOpError(f"an upsampling in mode {mode!r}")
    reach = 0 if taps[mode] is None else 2 * scale + 2
    margin = axis.margin * scale - reach
    if margin < 0:
        raise _MarginTooNarrowError
    units = np.arange(-margin, n_out + margin)
    offsets = taps[mode]
    if offsets is None:
        lo, hi = axis.read(units // scale)
    else:
        left = np.floor((units + 0.5) / scale - 0.5).astype(np.int64)
        lo = np.min([axis.read(left + d)[0] for d in offsets], axis=0)
        hi = np.max([axis.read(left + d)[1] for d in offsets], axis=0)
    return _Axis(lo, hi, margin, axis.jump / scale)


def _propagate(graph: Graph, node: Node, fields: dict[str, _Field], rank: int) -> _Field:
    """The field of ``node``'s output from its inputs' fields."""
    out_spatial = node.output_shape[2:]
    spatial_inputs = [fields[ref] for ref in node.inputs if fields.get(ref) is not None]
    if len(node.output_shape) != rank:
        if node.op in ("flatten", "reshape", "linear", "transpose", "getitem", "matmul",
                       "stack") or node.op in GLOBAL_REDUCTIONS or not spatial_inputs:
            return None
        raise _UnknownOpError("an op that changes the number of axes")
    if not spatial_inputs:
        return None
    x = spatial_inputs[0]
    attrs = node.attrs
    op = node.op
    if op in ELEMENTWISE or op == "concatenate":
        if op == "concatenate" and attrs.get("axis", 1) % rank != 1:
            raise _UnknownOpError("a concatenation along a spatial axis")
        return _union(spatial_inputs, out_spatial)
    if op in WINDOWED:
        kernel = attrs["kernel_size"]
        if op == "conv":
            pads = [p[0] for p in attrs["padding"]]
        else:
            pads = list(attrs.get("padding", (0,) * len(kernel)))
        dilation = attrs.get("dilation", (1,) * len(kernel))
        return tuple(_windowed(a, n, k, s, p, d) for a, n, k, s, p, d in zip(
            x, out_spatial, kernel, attrs["stride"], pads, dilation))
    if op == "conv_transpose":
        return tuple(_transposed(a, n, k, s, p[0], d) for a, n, k, s, p, d in zip(
            x, out_spatial, attrs["kernel_size"], attrs["stride"], attrs["padding"],
            attrs["dilation"]))
    if op == "pad":
        pad = attrs["pad"]  # torch order: last axis first, (lo, hi) pairs
        lows = [0] * len(x)
        for i in range(len(pad) // 2):
            axis = len(x) - 1 - i
            if axis >= 0:
                lows[axis] = pad[2 * i]
        return tuple(_windowed(a, n, 1, 1, lo, 1) for a, n, lo in zip(x, out_spatial, lows))
    if op == "getitem":
        index = attrs["index"]
        index = index if isinstance(index, tuple) else (index,)
        if sum(i is Ellipsis for i in index) == 1:  # x[..., 1:]: spell out the axes
            at = next(k for k, i in enumerate(index) if i is Ellipsis)
            fill = (slice(None),) * (rank - len(index) + 1)
            index = index[:at] + fill + index[at + 1:]
        if any(i is Ellipsis or i is None for i in index) or len(index) > rank:
            raise _UnknownOpError(f"an index {index!r}")
        spatial_index = list(index[2:]) + [slice(None)] * (rank - len(index))
        if not all(isinstance(i, slice) for i in spatial_index[:len(x)]):
            raise _UnknownOpError(f"an index {index!r} that picks spatial positions")
        return tuple(_slice_axis(a, i, n) for a, i, n in zip(x, spatial_index, out_spatial))
    if op in ("adaptive_avg_pool", "adaptive_max_pool"):
        axes = []
        for a, m in zip(x, out_spatial):
            n = a.n
            windows = [(o * n // m, -(-(o + 1) * n // m) - 1) for o in range(m)]
            axes.append(a if m == n else _whole(a, m, windows))
        return tuple(axes)
    if op in GLOBAL_REDUCTIONS or op in AXIS_WIDE or op in ("linear", "layer_norm"):
        reduced = _reduced_axes(node, rank, graph)
        return tuple(_whole(a, n) if i + 2 in reduced else a
                     for i, (a, n) in enumerate(zip(x, out_spatial)))
    if op == "upsample":
        if attrs.get("align_corners"):
            raise _UnknownOpError("an upsampling with aligned corners")
        return tuple(_upsample_axis(a, n, attrs.get("mode") or "nearest")
                     for a, n in zip(x, out_spatial))
    if op in ("flatten", "reshape"):
        source = graph.shape_of(node.inputs[0])
        if source is not None and tuple(source[2:]) == tuple(out_spatial):
            return x
        raise _UnknownOpError("a reshape that moves spatial axes")
    raise _UnknownOpError("an op the receptive-field arithmetic does not know")


def _reduced_axes(node: Node, rank: int, graph: Graph) -> set[int]:
    """The axes a reduction, softmax, linear layer or layer norm reads whole."""
    if node.op == "linear":
        return {rank - 1}
    if node.op == "layer_norm":
        shape = node.attrs.get("normalized_shape")
        if shape is None and len(node.inputs) > 1:
            shape = graph.shape_of(node.inputs[1])
        if shape is None:
            raise _UnknownOpError("a layer norm whose normalized shape is not known")
        return set(range(rank - len(shape), rank))
    axis = node.attrs.get("axis")
    if axis is None:
        return set(range(rank))
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    return {a % rank for a in axes}


def _rows_from(graph: Graph, margin: int, strict: bool
               ) -> tuple[list[ReceptiveFieldRow], list[_Field]]:
    """Each node's field, pushed forward from the input's. ``strict``: an op the
    arithmetic does not know raises; otherwise its row (and every row that reads only
    such values) has no field and says why."""
    rank = len(graph.input_shape)
    fields: dict[str, _Field] = {"<input>": _input_field(graph.input_shape[2:], margin)}
    unknown: set[str] = set()
    rows, kept = [], []
    for node in graph:
        try:
            result = _propagate(graph, node, fields, rank)
            reason = ""
            if result is None and any(ref in unknown for ref in node.inputs):
                unknown.add(node.ref)
                reason = "after an op without a known field"
        except _UnknownOpError as error:
            message = (f"{error.args[0]}: op {node.op!r} {node.attrs or ''} in layer "
                       f"{node.module or '<model>'!r} ({node.module_type}), node "
                       f"%{node.index}")
            if strict:
                raise ValueError(f"receptive_fields: {message}") from None
            result, reason = None, message
            unknown.add(node.ref)
        fields[node.ref] = result
        kept.append(result)
        row = _row(node, result)
        rows.append(replace(row, reason=reason) if reason else row)
    return rows, kept


def graph_fields(graph: Graph, *, strict: bool = True) -> ReceptiveFields:
    """:func:`receptive_fields` of a traced graph (see :func:`_rows_from` for
    ``strict``)."""
    margin = 2 * max(graph.input_shape[2:], default=1) + 64
    while True:
        try:
            rows, kept = _rows_from(graph, margin, strict)
            break
        except _MarginTooNarrowError:
            if margin > 1 << 22:
                raise ValueError("receptive_fields: fields wider than 4 million pixels"
                                 ) from None
            margin *= 4
    return ReceptiveFields(tuple(rows), tuple(graph.input_shape[1:]), tuple(kept))


def _row(node: Node, axes: _Field) -> ReceptiveFieldRow:
    if axes is None:
        return ReceptiveFieldRow(node.name, node.op, node.output_shape, None, None, None,
                                 "no spatial axes")
    sizes, jumps, starts = [], [], []
    for a in axes:
        real = slice(a.margin, a.margin + a.n)
        lo, hi = a.lo[real], a.hi[real]
        seen = lo <= hi
        if not seen.any():
            return ReceptiveFieldRow(node.name, node.op, node.output_shape, None, None,
                                     None, "reads no input")
        # The smallest box that moves by the jump from unit to unit and holds every
        # unit's field: lo_u - u*jump >= first and hi_u - u*jump <= last for every u.
        shift = np.arange(a.n)[seen] * float(a.jump)
        first = float((lo[seen] - shift).min())
        last = float((hi[seen] - shift).max())
        sizes.append(_number(last - first + 1))  # fractional after some up-samplings
        jumps.append(_number(float(a.jump)))
        starts.append(_number((first + last) / 2))
    return ReceptiveFieldRow(node.name, node.op, node.output_shape, tuple(sizes),
                             tuple(jumps), tuple(starts))


def receptive_fields(model: Any, input_shape: Sequence[int]) -> ReceptiveFields:
    """Every op's receptive field on inputs of ``input_shape`` ((C, *spatial), no batch).

    Parameters
    ----------
    model : cnnlab.nn.Module or torch.nn.Module
    input_shape : (C, *spatial)
        1, 2 or 3 spatial axes.

    Returns
    -------
    ReceptiveFields
        ``rows`` in execution order, each with ``name`` ("module path:op"), ``op``,
        ``output_shape`` (batch axis 1 included), ``size``, ``jump`` and ``start``
        (tuples with one entry per spatial axis, None for a value without spatial axes).

    Raises ValueError naming the op and the layer for an op it does not know.

    >>> from cnnlab import nn
    >>> model = nn.Sequential(nn.Conv1d(1, 1, 3), nn.MaxPool1d(2), nn.Conv1d(1, 1, 3))
    >>> [(r.size, r.jump, r.start) for r in receptive_fields(model, (1, 32)).rows]
    [((3,), (1,), (1,)), ((4,), (2,), (1.5,)), ((8,), (2,), (3.5,))]
    """
    shape = _check_input_shape(input_shape, "receptive_fields")
    capture = Capture(model, "receptive_fields")
    with evaluating(model):
        graph = capture.run(np.zeros((1, *shape), capture.dtype())).graph
    return graph_fields(graph)


@dataclass(frozen=True)
class EffectiveReceptiveField:
    """Luo et al. 2016's effective receptive field of the centre unit of ``layer``:
    ``map`` (the input's spatial shape) is |d centre / d input|, summed over input
    channels, averaged over the random inputs and normalised to sum 1; ``sigma`` its
    width per axis (the square root of the second central moment of the map's marginal on
    that axis); ``centre`` the unit (per axis) and ``mean`` the map's centroid (input
    pixels); ``theoretical_size`` the receptive field of that unit
    (:func:`receptive_fields`)."""

    map: np.ndarray
    sigma: tuple[float, ...]
    mean: tuple[float, ...]
    layer: str
    centre: tuple[int, ...]
    theoretical_size: tuple[int, ...] | None

    def __str__(self) -> str:
        sig = ", ".join(f"{s:.3g}" for s in self.sigma)
        return (f"effective receptive field of {self.layer} at unit {self.centre}: "
                f"sigma ({sig}) pixels; theoretical size {self.theoretical_size}")


def _pick_layer(graph: Graph, layer: str | None, rank: int) -> Node:
    spatial = [n for n in graph if len(n.output_shape) == rank]
    if not spatial:
        raise ValueError("effective_receptive_field: the model has no layer with spatial "
                         "axes")
    if layer is None:
        return spatial[-1]
    for node in reversed(spatial):
        if node.name == layer or node.module == layer or node.name.startswith(f"{layer}:"):
            return node
    names = sorted({n.module or "<model>" for n in spatial})
    raise ValueError(f"effective_receptive_field: layer must name a layer with spatial "
                     f"axes, one of {names}, got {layer!r}")


def effective_receptive_field(model: Any, input_shape: Sequence[int], *,
                              layer: str | None = None, samples: int = 16,
                              rng: np.random.Generator | None = None
                              ) -> EffectiveReceptiveField:
    """The gradient-based effective receptive field (Luo et al. 2016) of a layer's centre
    unit, over ``samples`` standard-normal inputs of ``input_shape`` ((C, *spatial)).

    ``layer`` names a module (its last op with spatial axes) or a row name ("conv3:conv");
    the default is the last op whose output has spatial axes. The gradient is 1 at the
    centre unit of every output channel (Luo et al.'s "gradient signal of 1 at the centre
    of the output plane"), 0 elsewhere. The model runs in eval mode, each module's mode
    restored after; no parameter's ``.grad`` is written.

    For a linear stack of n uniform 3x3 convolutions the map is the n-fold convolution of
    the uniform 3-tap filter with itself along each axis, so ``sigma`` is sqrt(2n/3)
    (each 3-tap filter adds variance 2/3) while the theoretical field is 2n+1.
    """
    fn = "effective_receptive_field"
    shape = _check_input_shape(input_shape, fn)
    samples = check_positive_int(samples, "samples", fn)
    generator = check_rng(rng, fn)
    capture = Capture(model, fn)
    dtype = capture.dtype()
    x = generator.standard_normal((int(samples), *shape)).astype(dtype)
    with evaluating(model):
        recording = capture.run(x, differentiable=True)
        target = _pick_layer(recording.graph, layer, len(shape) + 1)
        out_spatial = target.output_shape[2:]
        centre = tuple(n // 2 for n in out_spatial)
        gradient = np.zeros(target.output_shape, dtype)
        gradient[(slice(None), slice(None), *centre)] = 1
        grads = recording.input_gradient(target.index, gradient)
    erf = np.abs(grads).sum(axis=1).mean(axis=0)
    total = erf.sum()
    if total == 0:
        raise ValueError(f"{fn}: the centre unit of {target.name} does not depend on the "
                         f"input")
    erf = erf / total
    sigmas, means = [], []
    for axis in range(erf.ndim):
        marginal = erf.sum(axis=tuple(a for a in range(erf.ndim) if a != axis))
        coords = np.arange(len(marginal))
        mean = float((coords * marginal).sum())
        means.append(mean)
        sigmas.append(float(np.sqrt(((coords - mean) ** 2 * marginal).sum())))
    fields = receptive_fields(model, shape)
    row = fields.rows[target.index]
    return EffectiveReceptiveField(erf, tuple(sigmas), tuple(means), target.name, centre,
                                   row.size)


__all__ = ["EffectiveReceptiveField", "ReceptiveFieldRow", "ReceptiveFields",
           "effective_receptive_field", "graph_fields", "receptive_fields"]

