"""Shift-equivariance, layer by layer, and shift-invariance of a model's decision.

The lecture: a convolution commutes with shifts, and so does a stack of stride-1
convolutions and pointwise nonlinearities; a stride s only commutes with shifts by
multiples of s, pooling buys approximate invariance, and borders break all of it.
:func:`equivariance_report` measures each claim on a model, op by op: it runs the model on
an input and on its shifts, and compares every op's output on the shifted input with the
op's output shifted by ``shift / jump`` (the op's cumulative stride, from
:func:`~.receptive.receptive_fields`). :func:`shift_consistency` is Zhang 2019's
consistency of the top-1 class under random shifts, and :func:`swap_pooling` gives a
copy of the model with anti-aliased (or plain) pooling to compare.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import numpy as np

from .. import nn
from .._random import check_rng
from ..nn.linear import check_positive_int
from ..nn.pooling import (
    POOL_KINDS,
    AntialiasedPool,
    PoolSpec,
    replace_pooling,
)
from ..nn.pooling import ceil_mode_extra as _ceil_mode_extra
from ..ops._args import check_choice
from .graph import Capture, Recording, check_batch, evaluating
from .receptive import graph_fields

MODES = ("circular", "crop")


def shift_array(array: np.ndarray, offsets: Sequence[int], mode: str) -> np.ndarray:
    """``array`` (N, C, *spatial) moved by ``offsets`` (one int per spatial axis, positive
    moves content to higher indices): ``circular`` rolls, ``crop`` fills with zeros."""
    axes = tuple(range(2, 2 + len(offsets)))
    if mode == "circular":
        return np.roll(array, tuple(int(o) for o in offsets), axis=axes)
    out = np.zeros_like(array)
    source = [slice(None)] * array.ndim
    target = [slice(None)] * array.ndim
    for axis, o in zip(axes, offsets):
        n = array.shape[axis]
        o = int(o)
        if abs(o) >= n:
            return out
        source[axis] = slice(0, n - o) if o >= 0 else slice(-o, n)
        target[axis] = slice(o, n) if o >= 0 else slice(0, n + o)
    out[tuple(target)] = array[tuple(source)]
    return out


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.linalg.norm(b))
    diff = float(np.linalg.norm(a - b))
    if scale == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / scale


@dataclass(frozen=True)
class EquivarianceRow:
    """One op: ``jump`` is its cumulative stride per axis; ``errors`` has one relative
    error per shift, ``||f(shift x) - shift(f(x), shift / jump)|| / ||f(x)||`` over the
    batch, None where that shift is not a multiple of the jump; ``error`` is the largest
    of them (None, with ``reason``, where no shift applies or the op has no spatial
    axes). ``interior_errors`` and ``interior_error`` are the same on the interior: the
    units whose receptive field reads only input pixels that are neither wrapped nor
    filled by the shift, and neither padding (None where no unit is that far inside).
    They separate what the borders do from what strides and poolings do: a stack of
    stride-1 convolutions, zero-padded or not, is exact there."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    jump: tuple[float, ...] | None
    error: float | None
    errors: tuple[float | None, ...]
    reason: str = ""
    interior_error: float | None = None
    interior_errors: tuple[float | None, ...] = ()


@dataclass(frozen=True)
class EquivarianceReport:
    """:func:`equivariance_report`'s answer: ``rows`` in execution order; per shift,
    ``output_change`` (relative change of the model's output, the same measure without
    shifting the output back) and ``prediction_change`` (the fraction of inputs whose
    top-1 class changes, for an (N, classes) output; None otherwise)."""

    rows: tuple[EquivarianceRow, ...]
    shifts: tuple[int, ...]
    mode: str
    output_change: tuple[float, ...]
    prediction_change: tuple[float | None, ...]

    def row(self, name: str) -> EquivarianceRow:
        """The last row of the module ``name`` or with the full row name ``name``."""
        for row in reversed(self.rows):
            if row.name == name or row.name.startswith(f"{name}:"):
                return row
        raise KeyError(f"equivariance_report: no row named {name!r}")

    def to_table(self) -> str:
        """One line per op, one column per shift: the error (the interior's error)."""
        head = ("layer", "output shape", "jump", *(f"shift {s}" for s in self.shifts))

        def show(value: float | None) -> str:
            return "-" if value is None else f"{value:.2e}"

        cells = [head]
        for r in self.rows:
            jump = "-" if r.jump is None else "x".join(f"{j:g}" for j in r.jump)
            errors = tuple(f"{show(e)} ({show(i)})" if e is not None else "-"
                           for e, i in zip(r.errors, r.interior_errors)
                           ) if r.errors else (r.reason,)
            cells.append((r.name, str(r.output_shape[1:]), jump, *errors))
        widths = [max(len(row[i]) for row in cells if i < len(row))
                  for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                 for row in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        change = ", ".join(f"{s}: {c:.3g}" for s, c in zip(self.shifts, self.output_change))
        lines.append(f"output change per shift ({self.mode}): {change}")
        if any(p is not None for p in self.prediction_change):
            flips = ", ".join(f"{s}: {p:.1%}" for s, p in zip(self.shifts,
                                                                self.prediction_change)
                              if p is not None)
            lines.append(f"top-1 changed per shift: {flips}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


def _check_max_shift(max_shift: Any, fn: str) -> int:
    if not isinstance(max_shift, (int, np.integer)) or isinstance(max_shift, bool) \
            or max_shift < 0:
        raise ValueError(f"{fn}: max_shift must be an int >= 0, got {max_shift!r}")
    return int(max_shift)


def _check_shifts(shifts: Any, fn: str) -> tuple[int, ...]:
    if isinstance(shifts, (int, np.integer)) and not isinstance(shifts, bool):
        shifts = (shifts,)
    if (not isinstance(shifts, Sequence) or not shifts or not all(
            isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s != 0
            for s in shifts)):
        raise ValueError(f"{fn}: shifts must be nonzero ints, got {shifts!r}")
    return tuple(int(s) for s in shifts)


def _interior_error(shifted: np.ndarray, reference: np.ndarray, offsets: Sequence[int],
                    shift: int, extents: Any, input_spatial: Sequence[int]) -> float | None:
    """The relative error on the units whose field, in the shifted run, reads only input
    pixels the shift moved (not wrapped or filled) and no padding, compared with the
    units ``offsets`` before them in the unshifted run; None if there are none."""
    if extents is None:
        return None
    index_shifted: list[Any] = [slice(None), slice(None)]
    index_reference: list[Any] = [slice(None), slice(None)]
    for (lo, hi), k, n in zip(extents, offsets, input_spatial):
        units = np.arange(len(lo))
        keep = ((lo >= max(0, shift)) & (hi <= min(n - 1, n - 1 + shift))
                & (units - k >= 0) & (units - k < len(lo)))
        if not keep.any():
            return None
        index_shifted.append(units[keep])
        index_reference.append(units[keep] - k)
    a = shifted[np.ix_(*[np.arange(n) if isinstance(i, slice) else i
                         for i, n in zip(index_shifted, shifted.shape)])]
    b = reference[np.ix_(*[np.arange(n) if isinstance(i, slice) else i
                           for i, n in zip(index_reference, reference.shape)])]
    return _relative(a, b)


def _prediction_change(a: np.ndarray, b: np.ndarray) -> float | None:
    if a.ndim != 2 or a.shape[1] < 2:
        return None
    return float(np.mean(a.argmax(axis=1) != b.argmax(axis=1)))


def equivariance_report(model: Any, x: np.ndarray, *, shifts: Sequence[int] = (1, 2, 4, 8),
                        mode: str = "circular") -> EquivarianceReport:
    """Each op's shift-equivariance error on the batch ``x`` ((N, C, *spatial)).

    Every shift moves the input by ``s`` along every spatial axis: ``mode="circular"``
    rolls it (exact equivariance is possible), ``"crop"`` fills with zeros (the borders
    show). The model runs in eval mode; each module's mode is restored after, and no
    gradient is written. For a stack of stride-1 circular convolutions and pointwise
    nonlinearities every error is 0 to float rounding; strides, poolings and borders make
    them grow. An op the shift cannot be followed through (after a flatten or a global
    pooling) gets error None with the reason.

    >>> from cnnlab import nn
    >>> model = nn.Sequential(nn.Conv1d(1, 2, 3, padding=1, padding_mode="circular"),
    ...                       nn.ReLU())
    >>> x = np.random.default_rng(0).standard_normal((4, 1, 16)).astype(np.float32)
    >>> [r.error < 1e-6 for r in equivariance_report(model, x, shifts=(1, 3)).rows]
    [True, True]
    """
    fn = "equivariance_report"
    x = check_batch(x, fn)
    shifts_t = _check_shifts(shifts, fn)
    check_choice(mode, MODES, "mode", fn)
    capture = Capture(model, fn)
    nd = x.ndim - 2
    with evaluating(model):
        base = capture.run(x)
        moved: list[Recording] = [capture.run(shift_array(x, (s,) * nd, mode))
                                  for s in shifts_t]
    for recording in moved:
        if len(recording.graph) != len(base.graph):
            raise ValueError(f"{fn}: the model ran {len(recording.graph)} ops on a shifted "
                             f"input and {len(base.graph)} on the input; its forward "
                             f"depends on the values")
    fields = graph_fields(base.graph, strict=False)
    rows = []
    for node, field_row in zip(base.graph, fields.rows):
        if field_row.jump is None:
            rows.append(EquivarianceRow(node.name, node.op, node.output_shape, None, None,
                                        (), field_row.reason or "no spatial axes"))
            continue
        reference = base.array(node.index)
        extents = fields.extents(node.index)
        errors: list[float | None] = []
        inside: list[float | None] = []
        reasons = []
        for s, recording in zip(shifts_t, moved):
            out_shift = [Fraction(s) / Fraction(j).limit_denominator(1 << 20)
                         for j in field_row.jump]
            if any(o.denominator != 1 for o in out_shift):
                errors.append(None)
                inside.append(None)
                reasons.append(f"shift {s} is not a multiple of the stride "
                               f"{'x'.join(f'{j:g}' for j in field_row.jump)}")
                continue
            offsets = [int(o) for o in out_shift]
            shifted = recording.array(node.index)
            expected = shift_array(reference, offsets, mode)
            errors.append(_relative(shifted, expected) if reference.size else 0.0)
            inside.append(_interior_error(shifted, reference, offsets, s, extents,
                                          x.shape[2:]))
        measured = [e for e in errors if e is not None]
        interior = [e for e in inside if e is not None]
        rows.append(EquivarianceRow(node.name, node.op, node.output_shape,
                                    tuple(float(j) for j in field_row.jump),
                                    max(measured) if measured else None, tuple(errors),
                                    "" if measured else "; ".join(reasons),
                                    max(interior) if interior else None, tuple(inside)))
    out = base.output_array()
    changes, flips = [], []
    for recording in moved:
        shifted_out = recording.output_array()
        changes.append(_relative(shifted_out, out))
        flips.append(_prediction_change(out, shifted_out))
    return EquivarianceReport(tuple(rows), shifts_t, mode, tuple(changes), tuple(flips))


@dataclass(frozen=True)
class ShiftConsistency:
    """Zhang 2019's consistency: the fraction of ``pairs`` random pairs of shifts of each
    input (each shift uniform in ``[-max_shift, max_shift]`` per axis) whose top-1
    classes agree; ``standard_error`` is that fraction's binomial standard error over the
    ``samples`` pairs. ``accuracy`` (with ``labels``) is the top-1 accuracy over all the
    shifted inputs."""

    consistency: float
    samples: int
    max_shift: int
    mode: str
    standard_error: float
    accuracy: float | None = None

    def __str__(self) -> str:
        text = (f"shift consistency {self.consistency:.2%} +- {self.standard_error:.2%} "
                f"over {self.samples} pairs of shifts up to {self.max_shift} ({self.mode})")
        if self.accuracy is not None:
            text += f"; accuracy on the shifted inputs {self.accuracy:.2%}"
        return text


def _predict(capture: Capture, batch: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Top-1 classes of ``batch``, run in chunks of ``chunk`` inputs."""
    classes = []
    for lo in range(0, len(batch), chunk):
        out = capture.forward(batch[lo:lo + chunk])
        if out.ndim != 2 or out.shape[1] < 2:
            raise ValueError(f"{capture.fn}: the model must output (N, classes) scores, "
                             f"got shape {out.shape}")
        classes.append(out.argmax(axis=1))
    return np.concatenate(classes)


def shift_consistency(model: Any, x: np.ndarray, *, max_shift: int, pairs: int = 10,
                      mode: str = "circular", rng: np.random.Generator | None = None,
                      labels: np.ndarray | None = None) -> ShiftConsistency:
    """How often the top-1 class survives a shift: for each input of ``x``
    ((N, C, *spatial)), ``pairs`` pairs of random shifts, each in ``[-max_shift,
    max_shift]`` per spatial axis (``mode``: ``circular`` roll or ``crop`` with zero
    fill); the fraction of pairs that get the same class (Zhang 2019, "Making
    Convolutional Networks Shift-Invariant Again", section 4.1). With ``labels`` (N,),
    also the accuracy on the shifted inputs. Eval mode, modes restored."""
    fn = "shift_consistency"
    x = check_batch(x, fn)
    check_choice(mode, MODES, "mode", fn)
    max_shift = _check_max_shift(max_shift, fn)
    pairs = check_positive_int(pairs, "pairs", fn)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(x),):
            raise ValueError(f"{fn}: labels must have shape ({len(x)},), got "
                             f"{labels.shape}")
    generator = check_rng(rng, fn)
    nd = x.ndim - 2
    n = len(x)
    offsets = generator.integers(-max_shift, max_shift + 1, size=(n, pairs, 2, nd))
    flat = offsets.reshape(-1, nd)
    source = np.repeat(np.arange(n), pairs * 2)
    # One shift per distinct offset, applied to every input that draws it at once.
    distinct, which = np.unique(flat, axis=0, return_inverse=True)
    batch = np.empty((len(flat), *x.shape[1:]), dtype=x.dtype)
    for k, offset in enumerate(distinct):
        rows = np.flatnonzero(which.ravel() == k)
        batch[rows] = shift_array(x[source[rows]], offset, mode)
    capture = Capture(model, fn)
    with evaluating(model):
        classes = _predict(capture, batch).reshape(n, pairs, 2)
    same = classes[..., 0] == classes[..., 1]
    consistency = float(same.mean())
    samples = int(same.size)
    error = float(np.sqrt(consistency * (1 - consistency) / samples))
    accuracy = None
    if labels is not None:
        accuracy = float((classes == labels[:, None, None]).mean())
    return ShiftConsistency(consistency, samples, int(max_shift), mode, error, accuracy)


@dataclass(frozen=True)
class ShiftRobustness:
    """Accuracy against shift size: ``accuracy[i]`` is the top-1 accuracy over the inputs
    moved by ``shifts[i]`` pixels (averaged over both directions of every spatial axis;
    ``mode`` circular or crop, the zero fill)."""

    shifts: tuple[int, ...]
    accuracy: tuple[float, ...]
    mode: str

    def to_table(self) -> str:
        head = "shift     " + "  ".join(f"{s:>6d}" for s in self.shifts)
        accuracy = "accuracy  " + "  ".join(f"{a:>6.1%}" for a in self.accuracy)
        return f"{head}\n{accuracy}  ({self.mode})"

    def __str__(self) -> str:
        return self.to_table()


def shift_robustness(model: Any, x: np.ndarray, labels: np.ndarray, *, max_shift: int,
                     mode: str = "crop") -> ShiftRobustness:
    """Top-1 accuracy on ``x`` ((N, C, *spatial)) moved by 0, 1, ..., ``max_shift``
    pixels, each shift size averaged over both directions of every spatial axis: how far
    a model's decision survives translation (an MLP's falls at once, a CNN's slowly).
    Eval mode, modes restored."""
    fn = "shift_robustness"
    x = check_batch(x, fn)
    check_choice(mode, MODES, "mode", fn)
    max_shift = _check_max_shift(max_shift, fn)
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise ValueError(f"{fn}: labels must have shape ({len(x)},), got {labels.shape}")
    capture = Capture(model, fn)
    nd = x.ndim - 2
    accuracy = []
    with evaluating(model):
        for s in range(max_shift + 1):
            offsets = [np.zeros(nd, dtype=int)] if s == 0 else [
                sign * s * np.eye(nd, dtype=int)[axis] for axis in range(nd)
                for sign in (1, -1)]
            hits = [np.mean(_predict(capture, shift_array(x, o, mode)) == labels)
                    for o in offsets]
            accuracy.append(float(np.mean(hits)))
    return ShiftRobustness(tuple(range(max_shift + 1)), tuple(accuracy), mode)


# -- pooling swaps ---------------------------------------------------------------------

_TORCH_CLASS: list[Any] = []


def _torch_antialiased() -> Any:
    """:class:`cnnlab.nn.AntialiasedPool` for torch models (defined when first needed:
    torch is optional)."""
    if _TORCH_CLASS:
        return _TORCH_CLASS[0]
    import torch
    import torch.nn.functional as TF

    from ..ops.pool import binomial_filter

    class TorchAntialiasedPool(torch.nn.Module):
        """:class:`cnnlab.nn.AntialiasedPool` in torch: the pooling at stride 1, then a
        binomial blur at the stride (Zhang 2019)."""

        def __init__(self, spec: PoolSpec, filter_size: int) -> None:
            super().__init__()
            self.spec, self.filter_size = spec, filter_size
            taps = binomial_filter((filter_size,) * spec.spatial_dims)
            self.register_buffer("taps", torch.as_tensor(taps), persistent=False)

        @property
        def kind(self) -> str:
            return self.spec.base

        def forward(self, x: Any) -> Any:
            spec = self.spec
            nd = spec.spatial_dims
            if spec.base == "max":
                dense = getattr(TF, f"max_pool{nd}d")(x, spec.kernel_size, 1, spec.padding,
                                                      spec.dilation)
            else:
                dense = getattr(TF, f"avg_pool{nd}d")(x, spec.kernel_size, 1, spec.padding,
                                                      False, spec.count_include_pad)
            if spec.ceil_mode:  # as AntialiasedPool: repeat the last values
                for axis in range(nd):
                    extra = _ceil_mode_extra(spec, axis, x.shape[2 + axis],
                                             dense.shape[2 + axis])
                    if extra:
                        last = dense.narrow(2 + axis, dense.shape[2 + axis] - 1, 1)
                        dense = torch.cat([dense] + [last] * extra, dim=2 + axis)
            k = self.filter_size
            padded = TF.pad(dense, [(k - 1) // 2, k - 1 - (k - 1) // 2] * nd,
                            mode="reflect")
            channels = x.shape[1]
            weight = self.taps.to(x.dtype).expand(channels, 1, *self.taps.shape)
            conv = getattr(TF, f"conv{nd}d")
            return conv(padded, weight, stride=spec.stride, groups=channels)

    _TORCH_CLASS.append(TorchAntialiasedPool)
    return TorchAntialiasedPool


def _torch_pooling(spec: PoolSpec, kind: str, filter_size: int) -> Any:
    """:func:`cnnlab.nn.pooling.cnnlab_pooling` with torch's layers."""
    import torch

    from ..nn.pooling import _checked_swap

    base = _checked_swap(spec, kind)
    nd = spec.spatial_dims
    if kind == "blur":
        return _torch_antialiased()(replace(spec, kind="blur", base=base), filter_size)
    if kind == "max":
        return getattr(torch.nn, f"MaxPool{nd}d")(spec.kernel_size, spec.stride,
                                                  spec.padding, spec.dilation,
                                                  ceil_mode=spec.ceil_mode)
    return getattr(torch.nn, f"AvgPool{nd}d")(spec.kernel_size, spec.stride, spec.padding,
                                              spec.ceil_mode, spec.count_include_pad)


def _functional_poolings(model: Any) -> int:
    """How many poolings a torch model's ``forward`` calls as functions (not layers, so
    not swapped), outside the pooling layers themselves; 0 when torch.fx cannot trace
    it."""
    import torch.fx

    from ..nn.pooling import pooling_spec

    if pooling_spec(model) is not None:
        return 0
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # fx raises many kinds; then nothing is known
        return 0
    count = 0
    for n in graph.nodes:
        name = getattr(n.target, "__name__", str(n.target))
        if n.op not in ("call_function", "call_method") or "pool" not in name \
                or "adaptive" in name:
            continue
        stack = list((n.meta.get("nn_module_stack") or {}).values())
        inside = stack[-1][0] if stack else ""
        if inside and pooling_spec(model.get_submodule(inside)) is not None:
            continue  # a pooling layer's own forward (an anti-aliased pooling's)
        count += 1
    return count


def swap_pooling(model: Any, kind: str, *, filter_size: int = 4) -> Any:
    """A copy of ``model`` whose every downsampling pooling (max, average or blur) is
    ``kind``: ``"blur"`` (Zhang's recipe: the pooling at stride 1, then a binomial blur of
    ``filter_size`` taps at the original stride, :class:`cnnlab.nn.AntialiasedPool`; max
    pooling becomes his MaxBlurPool), ``"max"`` or ``"avg"`` (that pooling with the
    original window, stride and padding). Parameters and buffers are shared with
    ``model`` (the same objects): training one trains the other. Swapping a swapped copy
    back restores the original pooling. The cnnlab half is
    :func:`cnnlab.nn.replace_pooling` (which ``cnnlab train --pool`` uses too).

    >>> from cnnlab import nn
    >>> blurred = swap_pooling(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)), "blur")
    >>> type(blurred[1]).__name__, swap_pooling(blurred, "max")[1].kernel_size
    ('AntialiasedPool', (2, 2))
    """
    fn = "swap_pooling"
    check_choice(kind, POOL_KINDS, "kind", fn)
    filter_size = check_positive_int(filter_size, "filter_size", fn)
    from ._torch import is_torch_module

    if is_torch_module(model):
        left = _functional_poolings(model)
        if left:
            warnings.warn(f"{fn}: {left} pooling(s) that {type(model).__name__}.forward "
                          f"calls as functions (F.max_pool2d...) are not layers and stay "
                          f"as they are", UserWarning, stacklevel=2)
        return replace_pooling(model, kind, int(filter_size), _torch_pooling)
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be a cnnlab.nn.Module or a torch.nn.Module, got "
                        f"{type(model).__name__}")
    return replace_pooling(model, kind, int(filter_size))


__all__ = ["AntialiasedPool", "EquivarianceReport", "EquivarianceRow", "ShiftConsistency",
           "ShiftRobustness", "equivariance_report", "shift_array", "shift_consistency",
           "shift_robustness", "swap_pooling"]
