"""Convolution as a matrix: the lecture's "a convolutional layer is a sparse, weight-shared
matrix", built exactly.

For an input ``x`` of shape ``(C_in, *spatial)``, :func:`conv_matrix` returns the CSR
matrix ``M`` with ``M @ x.ravel() == conv(x[None], weight, ...)[0].ravel()``. Row
``(c_out, o)`` holds ``weight[c_out, c_in, k]`` in column ``(c_in, source(o * stride + k *
dilation - pad_lo))``, where ``source`` maps a coordinate of the padded input back to the
input: outside it for zeros (no entry), modulo the length for circular, mirrored without
repeating the edge for reflect, clamped for replicate (the four ``padding_mode``s of
``torch.nn.Conv2d``). Two taps that reach one input pixel (a wide circular padding) add up.
The entries are built with NumPy broadcasting over (output position, tap) per axis, and
``scipy.sparse`` sums and compresses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse

from ..autograd import Tensor
from ..ops._args import (
    PADDING_MODES,
    check_choice,
    check_conv_operands,
    check_conv_transpose_operands,
    checked_conv_output_shape,
    checked_conv_transpose_output_shape,
    conv_padding,
    pad_pairs,
    prod,
    to_tuple,
)
from ..ops.pad import check_pad_fits


def _weight_array(weight: Any, fn: str) -> np.ndarray:
    if isinstance(weight, Tensor):
        w = weight.data
    elif hasattr(weight, "detach") and hasattr(weight, "numpy"):  # a torch tensor
        w = weight.detach().cpu().numpy()
    else:
        w = np.asarray(weight)
    if w.dtype.kind not in "fiu" or (w.dtype.kind == "f" and w.dtype.itemsize < 4):
        raise TypeError(f"{fn}: weight must be a float32 or float64 array, got dtype {w.dtype}")
    if w.ndim < 3:
        raise ValueError(f"{fn}: weight must be (C_out, C_in/groups, *kernel), at least 3-D, "
                         f"got shape {w.shape}")
    return w if w.dtype.kind == "f" else w.astype(np.float64)


def _input_shape(input_shape: Any, spatial_dims: int, fn: str) -> tuple[int, ...]:
    if (not isinstance(input_shape, Sequence) or isinstance(input_shape, str)
            or len(input_shape) != spatial_dims + 1
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1
                       for n in input_shape)):
        raise ValueError(f"{fn}: input_shape must be (C_in, *spatial) with {spatial_dims} "
                         f"spatial size(s), all positive ints, for a weight of "
                         f"{spatial_dims + 2} dimensions, got {input_shape!r}")
    return tuple(int(n) for n in input_shape)


def source_index(padded: np.ndarray, lo: int, n: int, padding_mode: str) -> np.ndarray:
    """The input coordinate each padded coordinate ``padded`` reads (-1: a zero), for an
    axis of length ``n`` padded by ``lo`` in front."""
    s = padded - lo
    if padding_mode == "circular":
        return s % n
    if padding_mode == "replicate":
        return np.clip(s, 0, n - 1)
    if padding_mode == "reflect":
        if n == 1:
            return np.zeros_like(s)
        m = s % (2 * n - 2)
        return np.where(m < n, m, 2 * n - 2 - m)
    return np.where((s >= 0) & (s < n), s, -1)


def _matrix(w: np.ndarray, input_shape: tuple[int, ...], stride: tuple[int, ...],
            pads: Sequence[tuple[int, int]], dilation: tuple[int, ...], groups: int,
            padding_mode: str, out_spatial: tuple[int, ...]) -> scipy.sparse.csr_matrix:
    d = len(out_spatial)
    spatial = input_shape[1:]
    c_out, c_in_group = w.shape[:2]
    kernel = w.shape[2:]
    # Per axis: (out_a, K_a) input coordinates; broadcast to (out..., K...).
    flat = np.zeros((1,) * (2 * d), np.int64)
    valid = np.ones((1,) * (2 * d), bool)
    step = 1
    for axis in reversed(range(d)):
        padded = (np.arange(out_spatial[axis])[:, None] * stride[axis]
                  + np.arange(kernel[axis])[None, :] * dilation[axis])
        src = source_index(padded, pads[axis][0], spatial[axis], padding_mode)
        shape = [1] * (2 * d)
        shape[axis], shape[d + axis] = out_spatial[axis], kernel[axis]
        src = src.reshape(shape)
        valid = valid & (src >= 0)
        flat = flat + src * step
        step *= spatial[axis]
    out_size, in_size = prod(out_spatial), prod(spatial)
    out_flat = np.arange(out_size).reshape(*out_spatial, *(1,) * d)
    co = np.arange(c_out).reshape(-1, 1, *(1,) * (2 * d))
    ci = np.arange(c_in_group).reshape(1, -1, *(1,) * (2 * d))
    group = co // (c_out // groups)
    full = (c_out, c_in_group, *out_spatial, *kernel)
    rows = np.broadcast_to(co * out_size + out_flat, full)
    cols = np.broadcast_to((group * c_in_group + ci) * in_size + flat, full)
    vals = np.broadcast_to(w.reshape(c_out, c_in_group, *(1,) * d, *kernel), full)
    keep = np.broadcast_to(valid, full)
    matrix = scipy.sparse.coo_matrix((vals[keep], (rows[keep], cols[keep])),
                                     shape=(c_out * out_size, input_shape[0] * in_size))
    csr = matrix.tocsr()  # sums the taps that land on one entry (circular wrap)
    csr.eliminate_zeros()  # a zero tap, or taps that cancel, are no entry
    return csr


def conv_matrix(weight: Any, input_shape: Sequence[int], *, stride: Any = 1,
                padding: Any = 0, dilation: Any = 1, groups: int = 1,
                padding_mode: str = "zeros", transposed: bool = False,
                output_padding: Any = 0) -> scipy.sparse.csr_matrix:
    """The convolution of ``weight`` over inputs of ``input_shape``, as a sparse matrix.

    Parameters
    ----------
    weight : (C_out, C_in/groups, *kernel) array, Tensor or torch tensor; for
        ``transposed=True`` the transposed convolution's layout, (C_in, C_out/groups,
        *kernel).
    input_shape : (C_in, *spatial), one sample without the batch axis.
    stride, padding, dilation, groups, padding_mode
        As :func:`cnnlab.functional.conv2d` takes them: every padding form (ints, per-side
        pairs, ``"valid"``, ``"same"``, ``"full"``, ``"causal"``) and mode.
    transposed, output_padding
        ``transposed=True`` gives :func:`cnnlab.functional.conv_transpose2d`'s matrix,
        which is the matching convolution's matrix transposed (zeros padding only).

    Returns
    -------
    scipy.sparse.csr_matrix of shape (prod(output_shape), prod(input_shape)), the weight's
    dtype, with ``M @ x.ravel() == conv(x[None], weight, ...)[0].ravel()``.

    >>> m = conv_matrix(np.array([[[1.0, 2.0]]]), (1, 3))
    >>> m.toarray().tolist()
    [[1.0, 2.0, 0.0], [0.0, 1.0, 2.0]]
    """
    fn = "conv_matrix"
    w = _weight_array(weight, fn)
    d = w.ndim - 2
    shape = _input_shape(input_shape, d, fn)
    check_choice(padding_mode, PADDING_MODES, "padding_mode", fn)
    kernel = w.shape[2:]
    stride_t = to_tuple(stride, d, "stride", fn)
    dilation_t = to_tuple(dilation, d, "dilation", fn)
    if not isinstance(transposed, (bool, np.bool_)):
        raise TypeError(f"{fn}: transposed must be a bool, got {type(transposed).__name__}")
    if transposed:
        if padding_mode != "zeros":
            raise ValueError(f"{fn}: a transposed convolution pads with zeros only, got "
                             f"padding_mode={padding_mode!r}")
        check_conv_transpose_operands((1, *shape), w.shape, None, groups, fn)
        pads = pad_pairs(padding, d, "padding", fn)
        out_pad = to_tuple(output_padding, d, "output_padding", fn, minimum=0)
        out_spatial = checked_conv_transpose_output_shape(shape[1:], kernel, stride_t, pads,
                                                          dilation_t, out_pad, fn)
        # The transposed convolution is the adjoint of the convolution from its output
        # grid to its input grid with the same weight (C_out of that one = C_in here).
        conv_input = (w.shape[1] * int(groups), *out_spatial)
        return _matrix(w, conv_input, stride_t, pads, dilation_t, int(groups), "zeros",
                       tuple(shape[1:])).T.tocsr()
    if any(to_tuple(output_padding, d, "output_padding", fn, minimum=0)):
        raise ValueError(f"{fn}: output_padding applies to transposed=True only, got "
                         f"{output_padding!r}")
    check_conv_operands((1, *shape), w.shape, None, groups, fn)
    pads = conv_padding(padding, shape[1:], kernel, stride_t, dilation_t, fn)
    if padding_mode != "zeros":
        check_pad_fits(shape[1:], pads, padding_mode, fn)
    out_spatial = checked_conv_output_shape(shape[1:], kernel, stride_t, pads, dilation_t, fn)
    return _matrix(w, shape, stride_t, pads, dilation_t, int(groups), padding_mode,
                   tuple(out_spatial))


# The dense check below builds F M F^H as a dense complex array: at most this many entries.
MAX_DENSE_ENTRIES = 1 << 24


@dataclass(frozen=True)
class ConvMatrixStats:
    """What :func:`conv_matrix_stats` measures of one convolution's matrix ``M``.

    ``shape``, ``nonzeros`` and ``distinct_values`` (weight sharing: at most the weight's
    size however large ``M`` is); ``weight_params``, the convolution's weights;
    ``dense_params``, the entries of a dense layer with the same input and output sizes
    (``M``'s own shape). ``dft_error`` (None with ``dft_reason`` where it does not apply):
    with ``F`` the unitary DFT of the spatial axes, the largest entry of
    ``F M F^H - Lambda`` relative to the largest of ``Lambda``, where ``Lambda`` is
    block-diagonal per frequency, block ``w`` holding ``eigenvalues[:, :, w]``, the kernel's
    DFT for each (C_out, C_in) pair. It is 0 to rounding for circular padding at stride 1,
    and large where zero padding breaks the circulant structure.
    """

    shape: tuple[int, int]
    nonzeros: int
    distinct_values: int
    weight_params: int
    dense_params: int
    dft_error: float | None
    dft_reason: str
    eigenvalues: np.ndarray | None = field(default=None, repr=False)

    def to_table(self) -> str:
        rows = [("matrix shape", f"{self.shape[0]:,} x {self.shape[1]:,}"),
                ("nonzeros", f"{self.nonzeros:,}"),
                ("distinct values", f"{self.distinct_values:,}"),
                ("weights", f"{self.weight_params:,}"),
                ("dense layer parameters", f"{self.dense_params:,}"),
                ("DFT diagonalisation error",
                 f"{self.dft_error:.3g}" if self.dft_error is not None else self.dft_reason)]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name.ljust(width)}  {value}" for name, value in rows)

    def __str__(self) -> str:
        return self.to_table()


def _kernel_eigenvalues(w: np.ndarray, c_in: int, groups: int, spatial: tuple[int, ...],
                        dilation: tuple[int, ...], pads_lo: tuple[int, ...]) -> np.ndarray:
    """(C_out, C_in, *spatial) complex: lambda[co, ci, w] = sum_k weight[co, ci, k]
    exp(+2 pi i w . (k * dilation - pad_lo) / n), the eigenvalue of the circulant block
    (co, ci) for the Fourier mode exp(2 pi i w . j / n)."""
    c_out, c_in_group = w.shape[:2]
    full = np.zeros((c_out, c_in, *w.shape[2:]), w.dtype)
    per_group = c_out // groups
    for g in range(groups):  # a grouped weight is block-diagonal over channels
        full[g * per_group:(g + 1) * per_group, g * c_in_group:(g + 1) * c_in_group] = \
            w[g * per_group:(g + 1) * per_group]
    h = np.zeros((c_out, c_in, *spatial), np.float64)
    taps = np.indices(w.shape[2:]).reshape(len(spatial), -1).T
    for tap in taps:  # a few taps: place each at its offset modulo n
        where = tuple((t * d - lo) % n for t, d, lo, n in zip(tap, dilation, pads_lo, spatial))
        h[(Ellipsis, *where)] += full[(Ellipsis, *tap)]
    axes = tuple(range(2, 2 + len(spatial)))
    return np.fft.ifftn(h, axes=axes) * prod(spatial)


def conv_matrix_stats(weight: Any, input_shape: Sequence[int], *, stride: Any = 1,
                      padding: Any = 0, dilation: Any = 1, groups: int = 1,
                      padding_mode: str = "zeros", transposed: bool = False,
                      output_padding: Any = 0) -> ConvMatrixStats:
    """Sparsity, weight sharing and the DFT's diagonalisation of :func:`conv_matrix`'s
    matrix (same arguments).

    >>> s = conv_matrix_stats(np.array([[[1.0, 2.0, 3.0]]]), (1, 8), padding=1,
    ...                       padding_mode="circular")
    >>> s.nonzeros, s.distinct_values, s.dense_params, s.dft_error < 1e-12
    (24, 3, 64, True)
    """
    matrix = conv_matrix(weight, input_shape, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, padding_mode=padding_mode,
                         transposed=transposed, output_padding=output_padding)
    w = _weight_array(weight, "conv_matrix_stats")
    d = w.ndim - 2
    shape = tuple(int(n) for n in input_shape)
    spatial = shape[1:]
    c_in = shape[0]
    stride_t = to_tuple(stride, d, "stride", "conv_matrix_stats")
    dilation_t = to_tuple(dilation, d, "dilation", "conv_matrix_stats")
    reason, error, eigen = "", None, None
    pads, out_spatial = None, None
    if not transposed:
        pads = conv_padding(padding, spatial, w.shape[2:], stride_t, dilation_t,
                            "conv_matrix_stats")
        out_spatial = checked_conv_output_shape(spatial, w.shape[2:], stride_t, pads,
                                                dilation_t, "conv_matrix_stats")
    if transposed:
        reason = "not computed for a transposed convolution"
    elif any(s != 1 for s in stride_t):
        reason = "the DFT diagonalises a stride-1 convolution only"
    elif tuple(out_spatial) != spatial:
        reason = f"the output grid {tuple(out_spatial)} differs from the input grid {spatial}"
    elif matrix.shape[0] * matrix.shape[1] > MAX_DENSE_ENTRIES:
        reason = f"too large for the dense check (over {MAX_DENSE_ENTRIES:,} entries)"
    else:
        eigen = _kernel_eigenvalues(w, c_in, int(groups), spatial, dilation_t,
                                    tuple(lo for lo, _ in pads))
        dense = matrix.toarray().reshape(w.shape[0], *spatial, c_in, *spatial)
        out_axes = tuple(range(1, 1 + d))
        in_axes = tuple(range(2 + d, 2 + 2 * d))
        # F M F^H: the unitary DFT over the output axes, its inverse over the input axes.
        rotated = np.fft.fftn(np.fft.ifftn(dense, axes=in_axes, norm="ortho"), axes=out_axes,
                              norm="ortho")
        expected = np.zeros_like(rotated)
        freqs = tuple(np.indices(spatial).reshape(d, -1))  # every frequency, both sides
        expected[(slice(None), *freqs, slice(None), *freqs)] = np.moveaxis(
            eigen[(slice(None), slice(None), *freqs)], -1, 0)
        scale = max(float(np.abs(eigen).max()), np.finfo(np.float64).tiny)
        error = float(np.abs(rotated - expected).max()) / scale
    return ConvMatrixStats(tuple(matrix.shape), int(matrix.nnz),
                           int(np.unique(matrix.data).size), int(w.size),
                           int(matrix.shape[0] * matrix.shape[1]), error, reason, eigen)
