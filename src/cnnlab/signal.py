"""SciPy-named convolution and correlation of N-D arrays (``scipy.signal`` semantics).

The lecture's convolution flips the filter, ``(f * g)[n] = sum_k f[k] g[n - k]``; its
correlation does not, ``(f ⋆ g)[n] = sum_k f[n + k] conj(g[k])``, so
``correlate(f, g) == convolve(f, reverse_conj(g))``. ``mode`` says which part of the
``full`` result (every partial overlap, ``s1 + s2 - 1`` long) is returned: ``same`` keeps
``s1`` samples centred as SciPy centres them, ``valid`` only full overlaps.

Algorithms (``method``):

* ``'direct'`` reuses the layer engine, :func:`cnnlab.ops.gemm.conv_forward` (one GEMM over
  exact columns), with a batch of 1, one channel and the flipped kernel; the zero padding
  that selects the mode is folded into the engine's grid.
* ``'fft'`` is :func:`fftconvolve`: the convolution theorem with real transforms
  (``scipy.fft.rfftn``) of ``next_fast_len`` size, full ``fftn`` for complex input.
* :func:`oaconvolve` is overlap-add: the larger input is cut into blocks, each block is
  FFT-convolved with the smaller input and the overlapping tails are added.
* ``'auto'`` asks :func:`choose_conv_method`, whose cost model is below.

Cost model (mirrors :mod:`cnnlab.ops.dispatch`): the direct path costs a fixed call overhead,
one Python-level slice copy per kernel tap and column chunk, and one write plus one read of
the column buffer; the FFT path a fixed overhead plus the flops that
:func:`cnnlab.ops.fft.fft_flops` counts for three transforms of the full size. The constants
were fitted on the 2-core development machine (NumPy 2.4, SciPy 1.17, OpenBLAS 0.3.31 with
``OPENBLAS_NUM_THREADS=1``, float64) from ``choose_conv_method(..., measure=True)`` timings of
84 cases: 1-D signals of 50 to 10^5 samples with 3 to 1000 taps, 2-D images of 16^2 to 256^2
with 3^2 to 31^2 kernels and two 3-D volumes, in all three modes; least squares on the
log-times. The model picks the faster method in 78 of the 84 cases, and the six misses are
near-ties (at most 2.2x apart).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.fft as sfft

from cnnlab.ops._args import prod
from cnnlab.ops.fft import fft_flops
from cnnlab.ops.gemm import COLS_BUDGET_BYTES, conv_forward, gemm_plan

__all__ = [
    "choose_conv_method",
    "convolve",
    "convolve2d",
    "correlate",
    "correlate2d",
    "fftconvolve",
    "oaconvolve",
]

MODES = ("full", "valid", "same")
METHODS = ("auto", "direct", "fft")
# SciPy's boundary names -> the np.pad mode that extends in1 the same way.
BOUNDARIES = {"fill": "constant", "pad": "constant", "wrap": "wrap", "circular": "wrap",
              "symm": "symmetric", "symmetric": "symmetric"}

# Cost model constants (see the module docstring for how they were fitted).
DIRECT_CALL_SECONDS = 4.5e-5       # geometry, padded grid, output crop of one engine call
DIRECT_SLICE_SECONDS = 2.4e-6      # one tap's slice copy into one column chunk
DIRECT_BYTES_PER_S = 2.2e10        # writing plus reading the column buffer
FFT_CALL_SECONDS = 5.5e-5          # three scipy.fft calls, the product and the crop
FFT_FLOPS_PER_S = 3.7e9            # on the flops counted by cnnlab.ops.fft.fft_flops

# Integers whose products and sums stay below 2**53 are exact in float64 (SciPy's rule).
FLOAT64_EXACT_INT = 2 ** np.finfo(np.float64).nmant - 1


# --- argument checks -------------------------------------------------------------------------

def _as_arrays(in1: Any, in2: Any, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of a numeric dtype, the same ndim and no empty input, or a clear error."""
    arrays = (np.asarray(in1), np.asarray(in2))
    for name, array in zip(("in1", "in2"), arrays, strict=True):
        if array.dtype.kind not in "biufc":
            raise TypeError(
                f"{fn}: {name} must have a numeric (bool, int, float or complex) dtype, "
                f"got {array.dtype}"
            )
    if arrays[0].ndim != arrays[1].ndim:
        raise ValueError(
            f"{fn}: in1 and in2 must have the same number of dimensions, "
            f"got in1.ndim={arrays[0].ndim} and in2.ndim={arrays[1].ndim}"
        )
    for name, array in zip(("in1", "in2"), arrays, strict=True):
        if array.size == 0:
            raise ValueError(f"{fn}: {name} must not be empty, got shape {array.shape}")
    return arrays


def _check_choice(value: Any, allowed: Sequence[str], name: str, fn: str) -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"{fn}: {name} must be a str, one of {tuple(allowed)}, "
            f"got {type(value).__name__} {value!r}"
        )
    if value not in allowed:
        raise ValueError(f"{fn}: {name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def _valid_swap(shape1: Sequence[int], shape2: Sequence[int], fn: str,
                axes: Sequence[int] | None = None) -> bool:
    """SciPy's ``_inputs_swap_needed`` for mode 'valid': True when in2 is the larger input."""
    axes = range(len(shape1)) if axes is None else axes
    in1_larger = all(shape1[a] >= shape2[a] for a in axes)
    in2_larger = all(shape2[a] >= shape1[a] for a in axes)
    if not (in1_larger or in2_larger):
        raise ValueError(
            f"{fn}: mode='valid' needs in1 or in2 to be at least as large as the other in "
            f"every dimension, got in1.shape={tuple(shape1)} and in2.shape={tuple(shape2)}"
        )
    return not in1_larger


# --- dtypes ----------------------------------------------------------------------------------

def _compute_dtype(dtype: np.dtype) -> np.dtype:
    """Where a result of ``dtype`` is computed: bool and ints in float64, float16 in float32."""
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    if dtype == np.float16:
        return np.dtype(np.float32)
    return dtype


def _to_result(out: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the result dtype; integer sums are rounded, then wrap like integer arithmetic."""
    if dtype.kind == "b":
        return np.rint(out) != 0
    if dtype.kind in "iu":
        return np.rint(out).astype(np.int64).astype(dtype)
    return out.astype(dtype, copy=False)


# --- mode windows: which part of the full result each mode keeps -----------------------------

def _mode_window(shape1: Sequence[int], shape2: Sequence[int], mode: str
                 ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(starts, lengths) of the kept part of the full convolution, per dimension.

    SciPy's ``_centered``: the kept block starts ``(full - kept) // 2`` into the full result,
    so 'same' starts at ``(s2 - 1) // 2`` and 'valid' at ``min(s1, s2) - 1``.
    """
    full = [n1 + n2 - 1 for n1, n2 in zip(shape1, shape2, strict=True)]
    if mode == "full":
        kept = full
    elif mode == "same":
        kept = list(shape1)
    else:
        kept = [abs(n1 - n2) + 1 for n1, n2 in zip(shape1, shape2, strict=True)]
    starts = tuple((f - k) // 2 for f, k in zip(full, kept, strict=True))
    return starts, tuple(kept)


def _centered(full: np.ndarray, kept: Sequence[int]) -> np.ndarray:
    starts = [(f - k) // 2 for f, k in zip(full.shape, kept, strict=True)]
    window = tuple(slice(s, s + k) for s, k in zip(starts, kept, strict=True))
    return np.ascontiguousarray(full[window])


# --- direct: the GEMM engine with a batch of 1 and one channel -------------------------------

def _window_padding(signal_shape: Sequence[int], kernel_shape: Sequence[int],
                    starts: Sequence[int], lengths: Sequence[int]):
    """Input crop and zero padding so a correlation returns ``full[start : start + length]``.

    Full convolution pads ``k - 1`` zeros on both sides; starting ``start`` samples later
    removes ``start`` of them, and where that is negative the input itself is cropped.
    """
    crop, pairs = [], []
    for n, k, start, length in zip(signal_shape, kernel_shape, starts, lengths, strict=True):
        lo = k - 1 - start
        hi = length + k - 1 - n - lo
        crop.append(slice(max(-lo, 0), n - max(-hi, 0)))
        pairs.append((max(lo, 0), max(hi, 0)))
    return tuple(crop), tuple(pairs)


def _gemm_correlate(x: np.ndarray, w: np.ndarray, pairs: tuple[tuple[int, int], ...]
                    ) -> np.ndarray:
    """Zero-padded correlation of one N-D array with one kernel through the layer engine."""
    ones = (1,) * x.ndim
    x4, w4 = x[None, None], w[None, None]
    geo = gemm_plan(x4.shape, w4.shape, ones, pairs, ones, 1)
    return conv_forward(x4, w4, geo)[0, 0]


def _direct_operands(in1: np.ndarray, in2: np.ndarray, mode: str):
    """(signal, kernel, crop, pairs) of the engine call computing ``convolve(in1, in2, mode)``.

    Convolution commutes, so the smaller array becomes the kernel: the column buffer holds
    one row per kernel tap.
    """
    starts, lengths = _mode_window(in1.shape, in2.shape, mode)
    signal, kernel = (in1, in2) if in2.size <= in1.size else (in2, in1)
    crop, pairs = _window_padding(signal.shape, kernel.shape, starts, lengths)
    return signal, kernel, crop, pairs


def _direct_convolve(in1: np.ndarray, in2: np.ndarray, mode: str) -> np.ndarray:
    dtype = np.result_type(in1, in2)
    work = _compute_dtype(dtype)
    signal, kernel, crop, pairs = _direct_operands(np.asarray(in1, dtype=work),
                                                   np.asarray(in2, dtype=work), mode)
    flipped = kernel[(slice(None, None, -1),) * kernel.ndim]
    return _to_result(_gemm_correlate(signal[crop], flipped, pairs), dtype)


# --- FFT -------------------------------------------------------------------------------------

def _fft_ready(array: np.ndarray) -> np.ndarray:
    """scipy.fft works in float32/float64: bool and ints go to float64, float16 to float32."""
    if array.dtype.kind in "biu":
        return array.astype(np.float64)
    if array.dtype == np.float16:
        return array.astype(np.float32)
    return array


def _transforms(in1: np.ndarray, in2: np.ndarray):
    """(forward, inverse, real): real FFTs unless an input is complex."""
    real = not (np.iscomplexobj(in1) or np.iscomplexobj(in2))
    return (sfft.rfftn, sfft.irfftn, real) if real else (sfft.fftn, sfft.ifftn, real)


def _fft_full(in1: np.ndarray, in2: np.ndarray, axes: list[int]) -> np.ndarray:
    """Full linear convolution along ``axes`` (broadcast product along the others)."""
    if not axes:
        return in1 * in2  # nothing to transform: SciPy keeps the input dtype here
    in1, in2 = _fft_ready(in1), _fft_ready(in2)
    forward, inverse, real = _transforms(in1, in2)
    full = [in1.shape[a] + in2.shape[a] - 1 for a in axes]
    # Zero padding to s1 + s2 - 1 stops the circular product from wrapping around;
    # next_fast_len rounds up to a size with small prime factors.
    fshape = [sfft.next_fast_len(n, real=real) for n in full]
    spectrum = forward(in1, fshape, axes=axes) * forward(in2, fshape, axes=axes)
    out = inverse(spectrum, fshape, axes=axes)
    index = [slice(None)] * out.ndim
    for a, n in zip(axes, full, strict=True):
        index[a] = slice(0, n)
    return out[tuple(index)]


def _apply_mode(full: np.ndarray, shape1: Sequence[int], shape2: Sequence[int], mode: str,
                axes: Sequence[int]) -> np.ndarray:
    """SciPy's ``_apply_conv_mode``: crop the full result along ``axes``."""
    if mode == "full":
        return np.ascontiguousarray(full)
    if mode == "same":
        return _centered(full, shape1)
    kept = [shape1[a] - shape2[a] + 1 if a in axes else full.shape[a]
            for a in range(full.ndim)]
    return _centered(full, kept)


def _freq_axes(in1: np.ndarray, in2: np.ndarray, mode: str, axes: Any, fn: str):
    """Canonical FFT axes and the (possibly swapped) inputs, as SciPy's _init_freq_conv_axes.

    Axes where either input has length 1 need no transform (the product broadcasts); along
    axes not convolved the shapes must be equal or 1.
    """
    ndim = in1.ndim
    if axes is None:
        axes_list = list(range(ndim))
    else:
        given = [axes] if isinstance(axes, (int, np.integer)) else list(axes)
        if not given:
            raise ValueError(f"{fn}: axes, when given, must not be empty, got {axes!r}")
        axes_list = []
        for a in given:
            if not isinstance(a, (int, np.integer)) or isinstance(a, bool):
                raise TypeError(f"{fn}: axes must be ints, got {axes!r}")
            if not -ndim <= a < ndim:
                raise ValueError(f"{fn}: axes must lie in [-{ndim}, {ndim}), got {axes!r}")
            axes_list.append(int(a) % ndim)
        if len(set(axes_list)) != len(axes_list):
            raise ValueError(f"{fn}: axes must be unique, got {axes!r}")
    s1, s2 = in1.shape, in2.shape
    for a in range(ndim):
        if a not in axes_list and not (s1[a] == s2[a] or s1[a] == 1 or s2[a] == 1):
            raise ValueError(
                f"{fn}: along axis {a}, which is not convolved, in1 and in2 must have equal "
                f"sizes or size 1, got in1.shape={s1} and in2.shape={s2}"
            )
    axes_list = [a for a in axes_list if s1[a] != 1 and s2[a] != 1]
    if mode == "valid" and _valid_swap(s1, s2, fn, axes_list):
        in1, in2 = in2, in1
    return in1, in2, axes_list


def fftconvolve(in1: Any, in2: Any, mode: str = "full", axes: Any = None) -> np.ndarray:
    """Convolve two N-D arrays by FFT (``scipy.signal.fftconvolve``).

    Parameters
    ----------
    in1 : array_like of shape (*s1)
    in2 : array_like of shape (*s2), same ndim; along axes not in ``axes`` the sizes must be
        equal or 1 (they broadcast).
    mode : {'full', 'valid', 'same'}
        Output size along ``axes``: ``s1 + s2 - 1``, ``|s1 - s2| + 1`` or ``s1``.
    axes : int or sequence of int, optional
        Axes to convolve over (default: all).

    Returns
    -------
    ndarray
        Float (or complex) convolution; integer input gives float64, float32 stays float32.

    >>> fftconvolve([1.0, 2.0, 3.0], [1.0, 0.5]).round(12)
    array([1. , 2.5, 4. , 1.5])
    """
    fn = "fftconvolve"
    in1, in2 = _as_arrays(in1, in2, fn)
    if in1.ndim == 0:
        return in1 * in2
    _check_choice(mode, MODES, "mode", fn)
    in1, in2, axes_list = _freq_axes(in1, in2, mode, axes, fn)
    full = _fft_full(in1, in2, axes_list)
    return _apply_mode(full, in1.shape, in2.shape, mode, axes_list)


# --- overlap-add -----------------------------------------------------------------------------

def _oa_fft_length(kernel_length: int) -> int:
    """Block FFT length minimising the cost per output sample of overlap-add.

    With overlap ``K = kernel_length - 1`` and FFT length ``N``, each block yields ``N - K``
    new samples for ``~N log2(2N)`` work; setting the derivative of ``N log(2N) / (N - K)``
    to zero gives ``N = K ln(2 e N)`` (SciPy's ``_calc_oa_lens``, which solves it with the
    Lambert W function). The fixed-point iteration converges because ``K / N < 1`` there.
    """
    overlap = kernel_length - 1
    if overlap == 0:
        return 1  # a one-tap kernel: blocks of one sample, nothing overlaps
    n = 4.0 * overlap
    for _ in range(50):
        n = overlap * (1.0 + math.log(2.0 * n))
    return sfft.next_fast_len(math.ceil(n))


def _overlap_add(blocks: np.ndarray, block_axis: int, step: int, length: int) -> np.ndarray:
    """(..., n_blocks, L, ...) -> (..., length, ...): block b starts at ``b * step``.

    Each block's ``L`` samples are cut into ``ceil(L / step)`` pieces of ``step``; piece
    ``j`` of every block lands ``j`` steps later, one vectorised add per piece.
    """
    moved = np.moveaxis(blocks, (block_axis, block_axis + 1), (-2, -1))
    n_blocks, block_length = moved.shape[-2:]
    pieces = -(-block_length // step)
    padded = np.zeros((*moved.shape[:-1], pieces * step), dtype=moved.dtype)
    padded[..., :block_length] = moved
    out = np.zeros((*moved.shape[:-2], n_blocks + pieces - 1, step), dtype=moved.dtype)
    for j in range(pieces):
        out[..., j : j + n_blocks, :] += padded[..., j * step : (j + 1) * step]
    out = out.reshape(*moved.shape[:-2], -1)[..., :length]
    return np.moveaxis(out, -1, block_axis)


def _oa_full(in1: np.ndarray, in2: np.ndarray, axes: list[int]) -> np.ndarray:
    """Full convolution along ``axes`` by overlap-add of the larger input's blocks."""
    if not axes:
        return in1 * in2
    in1, in2 = _fft_ready(in1), _fft_ready(in2)
    signal, kernel = (in1, in2) if in1.size >= in2.size else (in2, in1)
    steps = {}
    for a in axes:
        n, k = signal.shape[a], kernel.shape[a]
        step = _oa_fft_length(k) - k + 1
        # Blocks pay off only for a kernel under half the signal (SciPy's rule) and when
        # there is more than one of them.
        if 2 * k < n and step < n:
            steps[a] = step
    if not steps:
        return _fft_full(in1, in2, axes)
    forward, inverse, real = _transforms(signal, kernel)
    # Zero-pad the signal to whole blocks and split each blocked axis into (n_blocks, step);
    # the kernel gets a size-1 block axis there so the spectra broadcast over the blocks.
    pad, blocked_shape, kernel_shape, fft_axes, fshape, keep = [], [], [], [], [], []
    for a in range(signal.ndim):
        n, k = signal.shape[a], kernel.shape[a]
        if a in steps:
            n_blocks = -(-n // steps[a])
            pad.append((0, n_blocks * steps[a] - n))
            blocked_shape += [n_blocks, steps[a]]
            kernel_shape += [1, k]
            length = steps[a] + k - 1
        else:
            pad.append((0, 0))
            blocked_shape.append(n)
            kernel_shape.append(k)
            length = n + k - 1
        if a in axes:
            fft_axes.append(len(blocked_shape) - 1)
            fshape.append(sfft.next_fast_len(length, real=real))
            keep.append(length)
    blocks = np.pad(signal, pad).reshape(blocked_shape)
    spectrum = forward(blocks, fshape, axes=fft_axes) * forward(
        kernel.reshape(kernel_shape), fshape, axes=fft_axes)
    out = inverse(spectrum, fshape, axes=fft_axes)
    index = [slice(None)] * out.ndim
    for a, n in zip(fft_axes, keep, strict=True):
        index[a] = slice(0, n)
    out = out[tuple(index)]
    # Fold the blocked axes from the last to the first so earlier positions stay put.
    block_positions = [fft_axes[axes.index(a)] - 1 for a in sorted(steps)]
    for a, position in reversed(list(zip(sorted(steps), block_positions, strict=True))):
        out = _overlap_add(out, position, steps[a], signal.shape[a] + kernel.shape[a] - 1)
    return out


def oaconvolve(in1: Any, in2: Any, mode: str = "full", axes: Any = None) -> np.ndarray:
    """Convolve two N-D arrays by overlap-add (``scipy.signal.oaconvolve``).

    The larger input is cut into blocks of ``N - k + 1`` samples along each axis where the
    smaller input (length ``k``) is under half its length; each block is FFT-convolved with
    the smaller input at FFT length ``N`` (:func:`_oa_fft_length`, about ``k ln(2 e N)``) and
    the overlapping ``k - 1`` sample tails are added. Same result as :func:`fftconvolve`,
    cheaper when one input is much longer than the other.

    Parameters
    ----------
    in1 : array_like of shape (*s1)
    in2 : array_like of shape (*s2), same ndim; non-convolved axes equal or 1.
    mode : {'full', 'valid', 'same'}
    axes : int or sequence of int, optional

    Returns
    -------
    ndarray
        As :func:`fftconvolve`.

    >>> oaconvolve(np.ones(8), [1.0, -1.0]).round(12)
    array([ 1.,  0.,  0.,  0.,  0.,  0.,  0.,  0., -1.])
    """
    fn = "oaconvolve"
    in1, in2 = _as_arrays(in1, in2, fn)
    if in1.ndim == 0:
        return in1 * in2
    _check_choice(mode, MODES, "mode", fn)
    in1, in2, axes_list = _freq_axes(in1, in2, mode, axes, fn)
    full = _oa_full(in1, in2, sorted(axes_list))
    return _apply_mode(full, in1.shape, in2.shape, mode, axes_list)


# --- choosing the method ---------------------------------------------------------------------

def _direct_seconds(in1: np.ndarray, in2: np.ndarray, mode: str) -> float:
    """Modelled time of :func:`_direct_convolve`: overhead, slice copies, column traffic."""
    signal, kernel, crop, pairs = _direct_operands(in1, in2, mode)
    # Sized by the padded input, as when DIRECT_BYTES_PER_S was fitted; the engine now
    # builds columns for the output positions only, so this errs towards FFT.
    kept = [len(range(*c.indices(n))) for c, n in zip(crop, signal.shape, strict=True)]
    grid_size = prod([n + lo + hi for n, (lo, hi) in zip(kept, pairs, strict=True)])
    itemsize = _compute_dtype(np.result_type(in1, in2)).itemsize
    taps = kernel.size
    chunk = max(1, min(grid_size, COLS_BUDGET_BYTES // (taps * itemsize)))
    chunks = -(-grid_size // chunk)
    column_bytes = 2.0 * taps * grid_size * itemsize
    return (DIRECT_CALL_SECONDS + DIRECT_SLICE_SECONDS * taps * chunks
            + column_bytes / DIRECT_BYTES_PER_S)


def _fft_seconds(in1: np.ndarray, in2: np.ndarray) -> float:
    """Modelled time of :func:`fftconvolve`: overhead plus three transforms of the full size."""
    full = tuple(n1 + n2 - 1 for n1, n2 in zip(in1.shape, in2.shape, strict=True))
    # Complex input needs full (not half-spectrum) transforms: counted as twice the flops.
    complex_factor = 2.0 if np.iscomplexobj(in1) or np.iscomplexobj(in2) else 1.0
    return FFT_CALL_SECONDS + complex_factor * fft_flops(1, 1, 1, 1, full) / FFT_FLOPS_PER_S


def _best_of(call, repeat: int = 3) -> float:
    """Seconds per call, best of ``repeat`` runs of enough calls to last ~5 ms."""
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            call()
        elapsed = time.perf_counter() - start
        if elapsed >= 5e-3 or number >= 10**6:
            break
        number *= 10
    if elapsed > 1.0:
        return elapsed / number
    best = elapsed
    for _ in range(repeat - 1):
        start = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, time.perf_counter() - start)
    return best / number


def choose_conv_method(in1: Any, in2: Any, mode: str = "full", measure: bool = False
                       ) -> str | tuple[str, dict[str, float]]:
    """``'direct'`` or ``'fft'``: the faster method for ``convolve(in1, in2, mode)``.

    Integer inputs whose result could exceed ``2**53 - 1`` and boolean inputs always use
    ``'direct'``, as in SciPy (whose direct kernel sums in integers; cnnlab's sums in
    float64 too, so both methods are exact only below ``2**53``). Otherwise the cost model
    of this module decides (see the module docstring for its constants).

    Parameters
    ----------
    in1 : array_like of shape (*s1)
    in2 : array_like of shape (*s2), same ndim.
    mode : {'full', 'valid', 'same'}
    measure : bool
        Time both methods instead and also return ``{'direct': s, 'fft': s}`` (seconds
        per call, best of three).

    Returns
    -------
    str or (str, dict)

    >>> choose_conv_method(np.ones(100_000), np.ones(1000)), choose_conv_method(np.ones(50),
    ...                                                                          np.ones(3))
    ('fft', 'direct')
    """
    fn = "choose_conv_method"
    in1, in2 = _as_arrays(in1, in2, fn)
    _check_choice(mode, MODES, "mode", fn)
    if mode == "valid" and _valid_swap(in1.shape, in2.shape, fn):
        in1, in2 = in2, in1
    if measure:
        times = {m: _best_of(lambda m=m: convolve(in1, in2, mode, m)) for m in ("fft", "direct")}
        return ("fft" if times["fft"] < times["direct"] else "direct"), times
    if in1.ndim == 0:
        return "direct"
    kinds = in1.dtype.kind + in2.dtype.kind
    if all(k == "b" for k in kinds):
        return "direct"
    if any(k in "iu" for k in kinds):
        largest = int(np.abs(in1).max()) * int(np.abs(in2).max()) * min(in1.size, in2.size)
        if largest > FLOAT64_EXACT_INT:
            return "direct"
    faster = _fft_seconds(in1, in2) < _direct_seconds(in1, in2, mode)
    return "fft" if faster else "direct"


# --- the public N-D functions ----------------------------------------------------------------

def _reverse_conj(array: np.ndarray) -> np.ndarray:
    flipped = array[(slice(None, None, -1),) * array.ndim]
    return np.conj(flipped) if np.iscomplexobj(flipped) else flipped


def _convolve(in1: np.ndarray, in2: np.ndarray, mode: str, method: str, fn: str
              ) -> np.ndarray:
    """Checked inputs -> ``convolve`` with SciPy's dispatch: swap, resolve auto, run."""
    if mode == "valid" and _valid_swap(in1.shape, in2.shape, fn):
        in1, in2 = in2, in1  # convolution commutes; 'valid' wants the larger first
    if method == "auto":
        method = choose_conv_method(in1, in2, mode)
    if method == "direct":
        return _direct_convolve(in1, in2, mode)
    dtype = np.result_type(in1, in2)
    axes = [a for a in range(in1.ndim) if in1.shape[a] != 1 and in2.shape[a] != 1]
    out = _apply_mode(_fft_full(in1, in2, axes), in1.shape, in2.shape, mode, axes)
    return _to_result(out, dtype)


def convolve(in1: Any, in2: Any, mode: str = "full", method: str = "auto") -> np.ndarray:
    """True N-D convolution, ``out[n] = sum_k in1[k] in2[n - k]`` (``scipy.signal.convolve``).

    Parameters
    ----------
    in1 : array_like of shape (*s1)
    in2 : array_like of shape (*s2), same ndim as ``in1``.
    mode : {'full', 'valid', 'same'}
        ``'full'``: shape ``s1 + s2 - 1``. ``'same'``: shape ``s1``, the centre of the full
        result (it starts ``(s2 - 1) // 2`` in). ``'valid'``: shape ``|s1 - s2| + 1``, only
        complete overlaps; one input must be at least as large as the other in every
        dimension (the inputs are swapped when ``in2`` is the larger, as SciPy does).
    method : {'auto', 'direct', 'fft'}
        ``'direct'``: the GEMM layer engine; ``'fft'``: :func:`fftconvolve`;
        ``'auto'``: :func:`choose_conv_method`.

    Returns
    -------
    ndarray
        dtype ``np.result_type(in1, in2)``; integer results are exact below ``2**53``.

    >>> convolve([1, 2, 3], [0, 1, 0.5])
    array([0. , 1. , 2.5, 4. , 1.5])
    """
    fn = "convolve"
    in1, in2 = _as_arrays(in1, in2, fn)
    if in1.ndim == 0:
        return in1 * in2
    _check_choice(mode, MODES, "mode", fn)
    _check_choice(method, METHODS, "method", fn)
    return _convolve(in1, in2, mode, method, fn)


def correlate(in1: Any, in2: Any, mode: str = "full", method: str = "auto") -> np.ndarray:
    """N-D cross-correlation, ``out[n] = sum_k in1[n + k] conj(in2[k])`` (SciPy's correlate).

    Computed as ``convolve(in1, reverse_conj(in2))``, which is exactly SciPy's alignment:
    the full result's index ``n`` is the lag ``n - (s2 - 1)``; 'same' keeps ``s1`` samples
    starting ``(s2 - 1) // 2`` into the full result, and ``correlate(in2, in1)`` in 'full'
    mode is ``correlate(in1, in2)`` reversed and conjugated.

    Parameters
    ----------
    in1 : array_like of shape (*s1)
    in2 : array_like of shape (*s2), same ndim as ``in1``.
    mode : {'full', 'valid', 'same'}
    method : {'auto', 'direct', 'fft'}

    Returns
    -------
    ndarray
        Shape and dtype as :func:`convolve`.

    >>> correlate([1, 2, 3], [0, 1, 0.5])
    array([0.5, 2. , 3.5, 3. , 0. ])
    """
    fn = "correlate"
    in1, in2 = _as_arrays(in1, in2, fn)
    if in1.ndim == 0:
        return in1 * np.conj(in2) if np.iscomplexobj(in2) else in1 * in2
    _check_choice(mode, MODES, "mode", fn)
    _check_choice(method, METHODS, "method", fn)
    return _convolve(in1, _reverse_conj(in2), mode, method, fn)


# --- 2-D with boundary conditions ------------------------------------------------------------

def _fill_value(fillvalue: Any, dtype: np.dtype, fn: str) -> Any:
    """``fillvalue`` cast to the output dtype, as SciPy casts it (ints truncate)."""
    value = np.asarray(fillvalue)
    if value.size != 1:
        raise ValueError(f"{fn}: fillvalue must be a scalar, got shape {value.shape}")
    if value.dtype.kind not in "biufc":
        raise TypeError(f"{fn}: fillvalue must be a number, got {value.dtype} {fillvalue!r}")
    value = value.reshape(())
    if value.dtype.kind == "c" and dtype.kind != "c":
        if value.imag != 0:
            raise ValueError(
                f"{fn}: fillvalue {fillvalue!r} is complex but the output dtype is {dtype}"
            )
        value = value.real
    return value.astype(dtype)


def _conv2d(in1: Any, in2: Any, mode: str, boundary: str, fillvalue: Any, flip: bool,
            fn: str) -> np.ndarray:
    """convolve2d (``flip``) or correlate2d: pad in1 by the boundary rule, then GEMM."""
    in1, in2 = _as_arrays(in1, in2, fn)
    if in1.ndim != 2:
        raise ValueError(f"{fn}: in1 and in2 must both be 2-D, got ndim {in1.ndim}")
    _check_choice(mode, MODES, "mode", fn)
    _check_choice(boundary, tuple(BOUNDARIES), "boundary", fn)
    dtype = np.result_type(in1, in2)
    fill = _fill_value(fillvalue, dtype, fn)
    swapped = mode == "valid" and _valid_swap(in1.shape, in2.shape, fn)
    if swapped:
        in1, in2 = in2, in1
    work = _compute_dtype(dtype)
    image, kernel = in1.astype(work), in2.astype(work)
    kernel = kernel[::-1, ::-1] if flip else np.conj(kernel)
    # Padding before the first output: 'full' sees every overlap (k - 1); 'same' is centred
    # as SciPy's _convolve2d centres it: k // 2 for convolution, (k - 1) // 2 for correlation.
    pairs = []
    for k in kernel.shape:
        lo = {"full": k - 1, "valid": 0, "same": k // 2 if flip else (k - 1) // 2}[mode]
        hi = {"full": k - 1, "valid": 0, "same": k - 1 - lo}[mode]
        pairs.append((lo, hi))
    np_mode = BOUNDARIES[boundary]
    if np_mode == "constant":
        padded = np.pad(image, pairs, mode="constant", constant_values=fill.astype(work))
    else:
        padded = np.pad(image, pairs, mode=np_mode)
    out = _gemm_correlate(padded, kernel, ((0, 0), (0, 0)))
    if swapped and not flip:
        # SciPy reverses the swapped correlation without conjugating it back.
        out = out[::-1, ::-1]
    return _to_result(np.ascontiguousarray(out), dtype)


def convolve2d(in1: Any, in2: Any, mode: str = "full", boundary: str = "fill",
               fillvalue: Any = 0) -> np.ndarray:
    """2-D convolution with a boundary condition (``scipy.signal.convolve2d``).

    Parameters
    ----------
    in1 : array_like of shape (H1, W1)
    in2 : array_like of shape (H2, W2)
    mode : {'full', 'valid', 'same'}
        Output shape ``(H1 + H2 - 1, W1 + W2 - 1)``, ``(|H1 - H2| + 1, |W1 - W2| + 1)`` or
        ``(H1, W1)``, as :func:`convolve`.
    boundary : {'fill', 'wrap', 'symm'}
        How ``in1`` is extended beyond its edges: the constant ``fillvalue``; periodically
        (``'wrap'``, alias ``'circular'``: convolution on the torus, exactly
        shift-equivariant); mirrored with the edge repeated (``'symm'``, alias
        ``'symmetric'``, NumPy's 'symmetric'). ``'pad'`` is an alias of ``'fill'``.
    fillvalue : scalar
        Value outside ``in1`` for ``'fill'``, cast to the output dtype.

    Returns
    -------
    ndarray
        dtype ``np.result_type(in1, in2)``.

    >>> convolve2d(np.eye(2), [[1, 2], [3, 4]], mode='same', boundary='wrap')
    array([[5., 5.],
           [5., 5.]])
    """
    return _conv2d(in1, in2, mode, boundary, fillvalue, True, "convolve2d")


def correlate2d(in1: Any, in2: Any, mode: str = "full", boundary: str = "fill",
                fillvalue: Any = 0) -> np.ndarray:
    """2-D cross-correlation with a boundary condition (``scipy.signal.correlate2d``).

    The lecture's "convolution" of CNN layers: the filter slides un-flipped. 'same' keeps
    ``(H1, W1)`` outputs with ``(k - 1) // 2`` samples of boundary before the first (SciPy's
    centring, which differs from :func:`correlate` for even kernel sizes).

    Parameters
    ----------
    in1 : array_like of shape (H1, W1)
    in2 : array_like of shape (H2, W2)
    mode : {'full', 'valid', 'same'}
    boundary : {'fill', 'wrap', 'symm'}
        As :func:`convolve2d`.
    fillvalue : scalar

    Returns
    -------
    ndarray
        Shape and dtype as :func:`convolve2d`.

    >>> correlate2d([[1, 2], [3, 4]], [[1, 0], [0, 1]], mode='valid')
    array([[5]])
    """
    return _conv2d(in1, in2, mode, boundary, fillvalue, False, "correlate2d")
