"""SciPy-named convolution and correlation of N-D arrays (``scipy.signal`` semantics).

The lecture's convolution flips the filter, ``(f * g)[n] = sum_k f[k] g[n - k]``; its
correlation does not, ``(f ⋆ g)[n] = sum_k f[n + k] conj(g[k])``, so
``correlate(f, g) == convolve(f, reverse_conj(g))``. ``mode`` says which part of the
``full`` result (every partial overlap, ``s1 + s2 - 1`` long) is returned: ``same`` keeps
``s1`` samples centred as SciPy centres them, ``valid`` only full overlaps.

``method``: ``'direct'`` is the exact direct sum, ``numpy.convolve`` for 1-D inputs (as
SciPy) and otherwise the layers' GEMM engine (:func:`cnnlab.ops.gemm.conv_forward`) with a
batch of 1, one channel and the mode's zero padding folded into its grid; bool and integer
inputs are summed in integers, exactly (wrapping like SciPy's integer sums). ``'fft'`` is
:func:`fftconvolve`, the layers' FFT module too (:func:`cnnlab.ops.fft.fft_convolve`;
overlap-add: :func:`cnnlab.ops.fft.oa_convolve`). ``'auto'`` asks
:func:`choose_conv_method`, whose cost model is the layers' (:mod:`cnnlab.ops.dispatch`).

As SciPy: empty inputs make :func:`fftconvolve` and :func:`oaconvolve` return an empty
array and :func:`choose_conv_method` answer ``'direct'``; :func:`convolve` and
:func:`correlate` raise; ``method='fft'`` on input with NaN or inf warns (RuntimeWarning).
"""

from __future__ import annotations

import timeit
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from cnnlab.ops._args import all_finite, check_choice, signal_mode_window
from cnnlab.ops.dispatch import convolve_seconds
from cnnlab.ops.fft import fft_convolve, fft_represents_sums, fft_rounds_exactly, oa_convolve
from cnnlab.ops.gemm import conv_forward, gemm_plan

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

# --- argument checks -------------------------------------------------------------------------

def _as_arrays(in1: Any, in2: Any, fn: str, allow_empty: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """Arrays of a numeric dtype and the same ndim (and not empty, unless allowed)."""
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
        if array.size == 0 and not allow_empty:
            raise ValueError(f"{fn}: {name} must not be empty, got shape {array.shape}")
    return arrays


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
    """Where the direct sum of a ``dtype`` result runs: bool and ints in int64 (exact, and
    wrapping modulo 2**64 agrees with narrower types' wrapping), float16 in float32."""
    if dtype.kind in "biu":
        return np.dtype(np.int64)
    if dtype == np.float16:
        return np.dtype(np.float32)
    return dtype


def _to_result(out: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the result dtype: FFT sums of integers are rounded first; bool means "some
    product was nonzero"; integers wrap like integer arithmetic."""
    if dtype.kind in "biu" and out.dtype.kind == "f":
        out = np.rint(out).astype(np.int64)
    if dtype.kind == "b":
        return out != 0
    return out.astype(dtype, copy=False)


# --- mode windows: which part of the full result each mode keeps -----------------------------

def _mode_window(shape1: Sequence[int], shape2: Sequence[int], mode: str
                 ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(starts, lengths) of the kept part of the full convolution, per dimension
    (:func:`cnnlab.ops._args.signal_mode_window`)."""
    _, starts, kept = signal_mode_window(shape1, shape2, mode)
    return starts, kept


def _centered(full: np.ndarray, kept: Sequence[int]) -> np.ndarray:
    starts = [(f - k) // 2 for f, k in zip(full.shape, kept, strict=True)]
    window = tuple(slice(s, s + k) for s, k in zip(starts, kept, strict=True))
    return np.ascontiguousarray(full[window])


# --- direct ----------------------------------------------------------------------------------

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
    """Zero-padded correlation of one N-D array with one kernel through the layer engine.

    The "batch" layout lets the engine cut its column buffer along the first output axis:
    bounded memory, 2x faster than one chunk per image on a 256^2 image, 31^2 kernel.
    """
    ones = (1,) * x.ndim
    x4, w4 = x[None, None], w[None, None]
    geo = gemm_plan(x4.shape, w4.shape, ones, pairs, ones, 1, "batch")
    return conv_forward(x4, w4, geo)[0, 0]


def _direct_convolve(in1: np.ndarray, in2: np.ndarray, mode: str) -> np.ndarray:
    """The exact direct sum ``convolve(in1, in2, mode)``, dtype ``np.result_type``."""
    if in1.ndim == 1:
        # numpy.convolve: one dot product per output, in the result dtype (SciPy's 1-D
        # path). Its 'same' keeps the larger input's length, SciPy's in1's.
        if mode != "same" or in1.size >= in2.size:
            return np.convolve(in1, in2, mode)
        return _centered(np.convolve(in1, in2, "full"), in1.shape)
    dtype = np.result_type(in1, in2)
    work = _compute_dtype(dtype)
    starts, lengths = _mode_window(in1.shape, in2.shape, mode)
    # Convolution commutes: the smaller array is the kernel, one column row per tap.
    signal, kernel = (in1, in2) if in2.size <= in1.size else (in2, in1)
    crop, pairs = _window_padding(signal.shape, kernel.shape, starts, lengths)
    flipped = kernel[(slice(None, None, -1),) * kernel.ndim]
    out = _gemm_correlate(np.asarray(signal[crop], dtype=work),
                          np.asarray(flipped, dtype=work), pairs)
    return _to_result(out, dtype)


# --- FFT -------------------------------------------------------------------------------------

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


def _frequency_domain(in1: Any, in2: Any, mode: str, axes: Any, algorithm, fn: str
                      ) -> np.ndarray:
    """:func:`fftconvolve` / :func:`oaconvolve`: checks, then ``algorithm`` and the crop."""
    in1, in2 = _as_arrays(in1, in2, fn, allow_empty=True)
    if in1.ndim == 0:
        return in1 * in2
    check_choice(mode, MODES, "mode", fn)
    if in1.size == 0 or in2.size == 0:
        return np.array([])  # SciPy's answer for any empty input, whatever the shapes
    in1, in2, axes_list = _freq_axes(in1, in2, mode, axes, fn)
    full = algorithm(in1, in2, axes_list)
    return _apply_mode(full, in1.shape, in2.shape, mode, axes_list)


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
        An empty input gives an empty float64 array of shape (0,), as in SciPy.

    >>> fftconvolve([1.0, 2.0, 3.0], [1.0, 0.5]).round(12)
    array([1. , 2.5, 4. , 1.5])
    """
    return _frequency_domain(in1, in2, mode, axes, fft_convolve, "fftconvolve")


def oaconvolve(in1: Any, in2: Any, mode: str = "full", axes: Any = None) -> np.ndarray:
    """Convolve two N-D arrays by overlap-add (``scipy.signal.oaconvolve``).

    The larger input is cut into blocks of ``N - k + 1`` samples along each axis where the
    smaller input (length ``k``) is under half its length; each block is FFT-convolved with
    it at length ``N ~ k ln(2 e N)`` and the ``k - 1`` sample tails are added
    (:func:`cnnlab.ops.fft.oa_convolve`). :func:`fftconvolve`'s result, cheaper when one
    input is much longer.

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
    return _frequency_domain(in1, in2, mode, axes, oa_convolve, "oaconvolve")


# --- choosing the method ---------------------------------------------------------------------

def _best_of(call, repeat: int = 3) -> float:
    """Seconds per call: the best of ``repeat`` runs of enough calls to last 5 ms."""
    timer = timeit.Timer(call)
    number = 1
    while (elapsed := timer.timeit(number)) < 5e-3 and number < 10**6:
        number *= 10
    if elapsed > 1.0:
        return elapsed / number
    return min([elapsed, *timer.repeat(repeat - 1, number)]) / number


def _choose(in1: np.ndarray, in2: np.ndarray, mode: str) -> str:
    """:func:`choose_conv_method` on checked, non-empty inputs (swapped for 'valid')."""
    kinds = {in1.dtype.kind, in2.dtype.kind}
    if kinds == {"b"}:
        return "direct"
    if not (all_finite(in1) and all_finite(in2)):
        return "direct"  # a transform would spread NaN/inf over the whole output
    dtype = np.result_type(in1, in2)
    if kinds & set("iu") and not fft_represents_sums(in1, in2):
        return "direct"  # SciPy's rule
    if dtype.kind in "biu" and not fft_rounds_exactly(in1, in2):
        return "direct"
    seconds = convolve_seconds(in1.shape, in2.shape, mode, dtype)
    return "fft" if seconds["fft"] < seconds["direct"] else "direct"


def choose_conv_method(in1: Any, in2: Any, mode: str = "full", measure: bool = False
                       ) -> str | tuple[str, dict[str, float]]:
    """``'direct'`` or ``'fft'``: the faster method for ``convolve(in1, in2, mode)``.

    SciPy's rules first: boolean inputs, empty inputs, and integer inputs whose largest
    possible sum exceeds ``2**53 - 1`` use ``'direct'``. cnnlab adds two: an integer result
    stays direct unless the FFT's rounding error bound guarantees exact sums
    (:func:`cnnlab.ops.fft.fft_rounds_exactly`), and input with NaN or inf stays direct (a
    transform would spread them). Otherwise the cost model
    (:func:`cnnlab.ops.dispatch.convolve_seconds`) decides.

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

    >>> choose_conv_method(np.ones(100_000), np.ones(1000)), choose_conv_method(np.ones(8),
    ...                                                                          np.ones(6))
    ('fft', 'direct')
    """
    fn = "choose_conv_method"
    in1, in2 = _as_arrays(in1, in2, fn, allow_empty=not measure)
    check_choice(mode, MODES, "mode", fn)
    if not measure and (in1.ndim == 0 or in1.size == 0 or in2.size == 0):
        return "direct"
    if mode == "valid" and _valid_swap(in1.shape, in2.shape, fn):
        in1, in2 = in2, in1
    if measure:
        times = {m: _best_of(lambda m=m: convolve(in1, in2, mode, m)) for m in ("fft", "direct")}
        return ("fft" if times["fft"] < times["direct"] else "direct"), times
    return _choose(in1, in2, mode)


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
        method = _choose(in1, in2, mode)  # 'fft' only for finite input
    elif method == "fft" and not (all_finite(in1) and all_finite(in2)):
        warnings.warn(
            f"{fn}: method='fft' on input with NaN or inf makes the whole output NaN or inf "
            "(every output sample mixes every input sample); method='direct' keeps them to "
            "the windows they touch", RuntimeWarning, stacklevel=3)
    if method == "direct":
        return _direct_convolve(in1, in2, mode)
    axes = [a for a in range(in1.ndim) if in1.shape[a] != 1 and in2.shape[a] != 1]
    out = _apply_mode(fft_convolve(in1, in2, axes), in1.shape, in2.shape, mode, axes)
    return _to_result(out, np.result_type(in1, in2))


def convolve(in1: Any, in2: Any, mode: str = "full", method: str = "auto") -> np.ndarray:
    """True N-D convolution, ``out[n] = sum_k in1[k] in2[n - k]`` (``scipy.signal.convolve``).

    Parameters
    ----------
    in1 : array_like of shape (*s1), not empty
    in2 : array_like of shape (*s2), same ndim as ``in1``, not empty.
    mode : {'full', 'valid', 'same'}
        ``'full'``: shape ``s1 + s2 - 1``. ``'same'``: shape ``s1``, the centre of the full
        result (it starts ``(s2 - 1) // 2`` in). ``'valid'``: shape ``|s1 - s2| + 1``, only
        complete overlaps; one input must be at least as large as the other in every
        dimension (the inputs are swapped when ``in2`` is the larger, as SciPy does).
    method : {'auto', 'direct', 'fft'}
        ``'direct'``: the exact direct sum; ``'fft'``: :func:`fftconvolve`, rounded for
        integer results; ``'auto'``: :func:`choose_conv_method`.

    Returns
    -------
    ndarray
        dtype ``np.result_type(in1, in2)``; integer results of ``'direct'`` and ``'auto'``
        are exact.

    Warns
    -----
    RuntimeWarning
        ``method='fft'`` on input with NaN or inf (the whole output becomes NaN or inf).

    >>> convolve([1, 2, 3], [0, 1, 0.5])
    array([0. , 1. , 2.5, 4. , 1.5])
    """
    fn = "convolve"
    in1, in2 = _as_arrays(in1, in2, fn)
    if in1.ndim == 0:
        return in1 * in2
    check_choice(mode, MODES, "mode", fn)
    check_choice(method, METHODS, "method", fn)
    return _convolve(in1, in2, mode, method, fn)


def correlate(in1: Any, in2: Any, mode: str = "full", method: str = "auto") -> np.ndarray:
    """N-D cross-correlation, ``out[n] = sum_k in1[n + k] conj(in2[k])`` (SciPy's correlate).

    Computed as ``convolve(in1, reverse_conj(in2))``, which is exactly SciPy's alignment:
    the full result's index ``n`` is the lag ``n - (s2 - 1)``; 'same' keeps ``s1`` samples
    starting ``(s2 - 1) // 2`` into the full result, and ``correlate(in2, in1)`` in 'full'
    mode is ``correlate(in1, in2)`` reversed and conjugated.

    Parameters
    ----------
    in1 : array_like of shape (*s1), not empty
    in2 : array_like of shape (*s2), same ndim as ``in1``, not empty.
    mode : {'full', 'valid', 'same'}
    method : {'auto', 'direct', 'fft'}

    Returns
    -------
    ndarray
        Shape and dtype as :func:`convolve`; warns as :func:`convolve`.

    >>> correlate([1, 2, 3], [0, 1, 0.5])
    array([0.5, 2. , 3.5, 3. , 0. ])
    """
    fn = "correlate"
    in1, in2 = _as_arrays(in1, in2, fn)
    if in1.ndim == 0:
        return in1 * np.conj(in2) if np.iscomplexobj(in2) else in1 * in2
    check_choice(mode, MODES, "mode", fn)
    check_choice(method, METHODS, "method", fn)
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
    """convolve2d (``flip``) or correlate2d: pad in1 by the boundary rule, then GEMM.

    Empty inputs as SciPy: the mode's shape, zeros for an empty kernel (an empty sum), the
    fill value's sums for an empty ``in1``; errors where SciPy fails or crashes.
    """
    in1, in2 = _as_arrays(in1, in2, fn, allow_empty=True)
    if in1.ndim != 2:
        raise ValueError(f"{fn}: in1 and in2 must both be 2-D, got ndim {in1.ndim}")
    check_choice(mode, MODES, "mode", fn)
    check_choice(boundary, tuple(BOUNDARIES), "boundary", fn)
    dtype = np.result_type(in1, in2)
    fill = _fill_value(fillvalue, dtype, fn)
    swapped = mode == "valid" and _valid_swap(in1.shape, in2.shape, fn)
    if swapped:
        in1, in2 = in2, in1
    out_shape = _mode_window(in1.shape, in2.shape, mode)[1]
    if min(out_shape) < 0:
        raise ValueError(f"{fn}: mode={mode!r} output shape {out_shape} has a negative size "
                         f"(in1.shape={in1.shape}, in2.shape={in2.shape})")
    if in2.size == 0 or min(out_shape) == 0:
        return np.zeros(out_shape, dtype)
    np_mode = BOUNDARIES[boundary]
    if in1.size == 0 and np_mode != "constant":
        raise ValueError(f"{fn}: boundary={boundary!r} cannot extend an empty in1 "
                         f"(shape {in1.shape}); use boundary='fill'")
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
    constant = {"constant_values": fill.astype(work)} if np_mode == "constant" else {}
    padded = np.pad(image, pairs, mode=np_mode, **constant)
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
        dtype ``np.result_type(in1, in2)``; integer results are exact.

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
