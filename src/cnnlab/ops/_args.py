"""Argument normalisation and shape rules: the one source of truth for conv arithmetic.

Public functions turn ``int | tuple | str`` arguments into canonical tuples here, once;
kernels below them never re-check. Shape rules follow Dumoulin & Visin (2016),
"A guide to convolution arithmetic for deep learning":

    o = floor((i + p_lo + p_hi - d*(k - 1) - 1) / s) + 1          (convolution)
    o = (i - 1)*s - p_lo - p_hi + d*(k - 1) + output_padding + 1  (transposed)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

PadPairs = tuple[tuple[int, int], ...]

PADDING_STRINGS = ("valid", "same", "full", "causal")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def to_tuple(
    value: int | Sequence[int], ndim: int, name: str, fn: str, minimum: int | None = 1
) -> tuple[int, ...]:
    """Broadcast an int to ``ndim`` ints, or check a sequence has ``ndim`` ints.

    >>> to_tuple(3, 2, "stride", "conv2d")
    (3, 3)
    """
    if _is_int(value):
        values = (int(value),) * ndim
    elif isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) == 1 and ndim != 1:
            values = (value[0],) * ndim
        elif len(value) != ndim:
            raise ValueError(
                f"{fn}: {name} must be an int or a tuple of {ndim} ints, got {tuple(value)!r}"
            )
        else:
            values = tuple(value)
        if not all(_is_int(v) for v in values):
            raise TypeError(f"{fn}: {name} must contain ints, got {tuple(value)!r}")
        values = tuple(int(v) for v in values)
    else:
        raise TypeError(
            f"{fn}: {name} must be an int or a tuple of {ndim} ints, "
            f"got {type(value).__name__} {value!r}"
        )
    if minimum is not None and any(v < minimum for v in values):
        raise ValueError(f"{fn}: {name} must be >= {minimum} in every dimension, got {values}")
    return values


def same_padding(
    in_size: int, kernel: int, stride: int, dilation: int
) -> tuple[int, int]:
    """TensorFlow/Keras 'SAME': ``ceil(in / stride)`` outputs, extra padding on the high side.

    For stride 1 this is PyTorch's ``padding='same'``: total ``d*(k-1)``, ``lo = total // 2``.
    """
    out = -(-in_size // stride)
    total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - in_size, 0)
    return total // 2, total - total // 2


def conv_padding(
    padding: int | Sequence[int] | Sequence[Sequence[int]] | str,
    in_spatial: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    fn: str,
) -> PadPairs:
    """Canonical per-dimension ``(lo, hi)`` padding for a convolution.

    Accepts an int, a per-dimension tuple, per-side pairs ``((lo, hi), ...)``, or one of
    ``'valid'`` (none), ``'same'`` (``ceil(n / stride)`` outputs), ``'full'`` (every partial
    overlap: ``d*(k-1)`` on both sides) and ``'causal'`` (1-D only: ``d*(k-1)`` on the left,
    as in WaveNet, so output ``t`` sees inputs ``<= t``).
    """
    ndim = len(in_spatial)
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise ValueError(
                f"{fn}: padding must be an int, a tuple or one of {PADDING_STRINGS}, "
                f"got {padding!r}"
            )
        extent = [d * (k - 1) for k, d in zip(kernel, dilation)]
        if padding == "valid":
            return ((0, 0),) * ndim
        if padding == "full":
            return tuple((e, e) for e in extent)
        if padding == "causal":
            if ndim != 1:
                raise ValueError(f"{fn}: padding='causal' needs 1 spatial dimension, got {ndim}")
            return ((extent[0], 0),)
        return tuple(
            same_padding(n, k, s, d)
            for n, k, s, d in zip(in_spatial, kernel, stride, dilation, strict=True)
        )
    return pad_pairs(padding, ndim, "padding", fn)


def pad_pairs(padding: Any, ndim: int, name: str, fn: str) -> PadPairs:
    """``int``, ``(p1, ..., pn)`` or ``((lo1, hi1), ..., (lon, hin))`` -> canonical pairs."""
    if (
        isinstance(padding, Sequence)
        and not isinstance(padding, str)
        and len(padding) > 0
        and all(isinstance(p, Sequence) and not isinstance(p, str) for p in padding)
    ):
        if len(padding) != ndim or any(len(p) != 2 for p in padding):
            raise ValueError(
                f"{fn}: {name} as per-side pairs must be {ndim} (lo, hi) pairs, got {padding!r}"
            )
        flat = to_tuple(tuple(v for p in padding for v in p), 2 * ndim, name, fn, minimum=0)
        return tuple((flat[2 * i], flat[2 * i + 1]) for i in range(ndim))
    per_dim = to_tuple(padding, ndim, name, fn, minimum=0)
    return tuple((p, p) for p in per_dim)


def conv_output_shape(
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: PadPairs,
    dilation: Sequence[int],
) -> tuple[int, ...]:
    """``o = floor((i + lo + hi - d*(k-1) - 1) / s) + 1`` per spatial dimension.

    >>> conv_output_shape((6, 6), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1))
    (6, 6)
    """
    return tuple(
        (i + lo + hi - d * (k - 1) - 1) // s + 1
        for i, k, s, (lo, hi), d in zip(in_spatial, kernel, stride, padding, dilation, strict=True)
    )


def checked_conv_output_shape(in_spatial: Sequence[int], kernel: Sequence[int],
                              stride: Sequence[int], padding: PadPairs,
                              dilation: Sequence[int], fn: str) -> tuple[int, ...]:
    """:func:`conv_output_shape`, refusing a kernel that does not fit the padded input.

    >>> checked_conv_output_shape((7,), (5,), (1,), ((0, 0),), (2,), "conv1d")
    Traceback (most recent call last):
    ...
    ValueError: conv1d: kernel (dilated size (9,)) is larger than the padded input (7,)
    """
    out_spatial = conv_output_shape(in_spatial, kernel, stride, padding, dilation)
    if any(o < 1 for o in out_spatial):
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(in_spatial, padding))
        extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        raise ValueError(f"{fn}: kernel (dilated size {extent}) is larger than the padded "
                         f"input {padded}")
    return out_spatial


def checked_conv_transpose_output_shape(in_spatial: Sequence[int], kernel: Sequence[int],
                                        stride: Sequence[int], padding: PadPairs,
                                        dilation: Sequence[int],
                                        output_padding: Sequence[int], fn: str
                                        ) -> tuple[int, ...]:
    """:func:`conv_transpose_output_shape`, refusing an ``output_padding`` not smaller than
    the stride or the dilation (PyTorch's rule) and a non-positive size."""
    for axis, (op, s, d) in enumerate(zip(output_padding, stride, dilation)):
        if op >= max(s, d):
            raise ValueError(f"{fn}: output_padding ({op}) must be smaller than stride ({s}) "
                             f"or dilation ({d}) in spatial dim {axis}")
    out_spatial = conv_transpose_output_shape(in_spatial, kernel, stride, padding, dilation,
                                              output_padding)
    if any(o < 1 for o in out_spatial):
        raise ValueError(f"{fn}: output size {out_spatial} is not positive; padding "
                         f"{padding} is too large for input {tuple(in_spatial)}")
    return out_spatial


def signal_mode_window(shape1: Sequence[int], shape2: Sequence[int], mode: str
                       ) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """SciPy's modes of a convolution of ``shape1`` with ``shape2``: (the full result's
    shape ``s1 + s2 - 1``, where the kept block starts in it, the kept shape), per axis.

    ``full`` keeps it all, ``same`` ``s1`` samples, ``valid`` ``|s1 - s2| + 1``; the kept
    block starts ``(full - kept) // 2`` in (SciPy's ``_centered``), so 'same' starts at
    ``(s2 - 1) // 2`` and 'valid' at ``min(s1, s2) - 1``.

    >>> signal_mode_window((8,), (3,), "same")
    ((10,), (1,), (8,))
    """
    full = tuple(n1 + n2 - 1 for n1, n2 in zip(shape1, shape2, strict=True))
    kept = {"full": full, "same": tuple(shape1),
            "valid": tuple(abs(n1 - n2) + 1 for n1, n2 in zip(shape1, shape2, strict=True))
            }[mode]
    starts = tuple((f - k) // 2 for f, k in zip(full, kept, strict=True))
    return full, starts, kept


def check_conv_operands(x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                        b_shape: tuple[int, ...] | None, groups: Any, fn: str) -> None:
    """A convolution's operands fit together: input (N, C_in, *spatial), weight
    (C_out, C_in/groups, *kernel) of the same rank, bias (C_out,); groups divide both.

    >>> check_conv_operands((1, 4, 6, 6), (6, 3, 3, 3), None, 2, "conv2d")
    Traceback (most recent call last):
    ...
    ValueError: conv2d: weight.shape[1]*groups (3*2 = 6) must equal input.shape[1] (4)
    """
    spatial_dims = len(x_shape) - 2
    if len(w_shape) != spatial_dims + 2:
        raise ValueError(f"{fn}: weight must be {spatial_dims + 2}-D (C_out, C_in/groups, "
                         f"*kernel), got shape {w_shape}")
    check_groups(groups, fn)
    if w_shape[1] * groups != x_shape[1]:
        raise ValueError(f"{fn}: weight.shape[1]*groups ({w_shape[1]}*{groups} = "
                         f"{w_shape[1] * groups}) must equal input.shape[1] ({x_shape[1]})")
    if w_shape[0] % groups:
        raise ValueError(f"{fn}: weight.shape[0] (out_channels {w_shape[0]}) must be "
                         f"divisible by groups ({groups})")
    if any(k < 1 for k in w_shape[2:]) or w_shape[0] < 1:
        raise ValueError(f"{fn}: weight sizes must be positive, got shape {w_shape}")
    if b_shape is not None and b_shape != (w_shape[0],):
        raise ValueError(f"{fn}: bias must have shape ({w_shape[0]},), got {b_shape}")


def check_conv_transpose_operands(x_shape: tuple[int, ...], w_shape: tuple[int, ...],
                                  b_shape: tuple[int, ...] | None, groups: Any,
                                  fn: str) -> None:
    """A transposed convolution's operands fit together: input (N, C_in, *spatial), weight
    (C_in, C_out/groups, *kernel) of the same rank, bias (C_out,); groups divide C_in."""
    spatial_dims = len(x_shape) - 2
    if len(w_shape) != spatial_dims + 2:
        raise ValueError(f"{fn}: weight must be {spatial_dims + 2}-D "
                         f"(C_in, C_out/groups, *kernel), got shape {w_shape}")
    check_groups(groups, fn)
    if w_shape[0] != x_shape[1]:
        raise ValueError(f"{fn}: weight.shape[0] ({w_shape[0]}) must equal "
                         f"input.shape[1] ({x_shape[1]})")
    if x_shape[1] % groups:
        raise ValueError(f"{fn}: input channels ({x_shape[1]}) must be divisible by "
                         f"groups ({groups})")
    c_out = w_shape[1] * groups
    if b_shape is not None and b_shape != (c_out,):
        raise ValueError(f"{fn}: bias must have shape ({c_out},), got {b_shape}")


def conv_transpose_output_shape(
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: PadPairs,
    dilation: Sequence[int],
    output_padding: Sequence[int],
) -> tuple[int, ...]:
    """``o = (i - 1)*s - lo - hi + d*(k-1) + output_padding + 1`` per spatial dimension."""
    return tuple(
        (i - 1) * s - lo - hi + d * (k - 1) + op + 1
        for i, k, s, (lo, hi), d, op in zip(
            in_spatial, kernel, stride, padding, dilation, output_padding, strict=True
        )
    )


def pool_output_shape(
    in_spatial: Sequence[int],
    kernel: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
    ceil_mode: bool,
) -> tuple[int, ...]:
    """PyTorch's pooling output size; with ``ceil_mode`` the last window must start inside
    the input or left padding (it may not start in the right padding)."""
    out = []
    for i, k, s, p, d in zip(in_spatial, kernel, stride, padding, dilation, strict=True):
        span = i + 2 * p - d * (k - 1) - 1
        o = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (o - 1) * s >= i + p:
            o -= 1
        out.append(o)
    return tuple(out)


def receptive_field(layers: Sequence[dict[str, Any]]) -> list[dict[str, float]]:
    """Receptive field (size, jump, start) after each layer, per axis (Dumoulin & Visin).

    Each layer is a dict with ``kernel``, ``stride``, ``padding``, ``dilation`` and optional
    ``transposed``. ``start`` is the centre of the first output's field in input coordinates.
    For a transposed layer the jump divides by the stride and the size is the largest over
    output phases.
    """
    size, jump, start = 1.0, 1.0, 0.5
    result = []
    for layer in layers:
        k = layer["dilation"] * (layer["kernel"] - 1) + 1
        s, p = layer["stride"], layer["padding"]
        if layer.get("transposed", False):
            # Zero-insertion view: an output sees at most ceil(k / s) inputs of the layer.
            size = size + (ceil_div(k, s) - 1) * jump
            jump = jump / s
            start = start + (p - (k - 1) / 2) * jump
        else:
            size = size + (k - 1) * jump
            start = start + ((k - 1) / 2 - p) * jump
            jump = jump * s
        result.append({"size": size, "jump": jump, "start": start})
    return result


def check_positive_shape(shape: Sequence[int], what: str, fn: str) -> None:
    if any(n <= 0 for n in shape):
        raise ValueError(f"{fn}: {what} must be positive in every dimension, got {tuple(shape)}")


# Arrays up to this many values are checked through a mask (one fast pass, no warnings);
# larger ones through their sum, which needs no mask the size of the array.
FINITE_MASK_VALUES = 2**22


def all_finite(a: np.ndarray | None) -> bool:
    """No NaN or inf in ``a`` (None counts as finite)."""
    if a is None:
        return True
    if a.size <= FINITE_MASK_VALUES:
        return bool(np.isfinite(a).all())
    # A sum is NaN/inf whenever an element is (and, rarely, on overflow: callers then only
    # take their slower NaN-aware path).
    with np.errstate(over="ignore", invalid="ignore"):  # inf + -inf, or a finite overflow
        return bool(np.isfinite(np.add.reduce(a, axis=None)))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def prod(values: Sequence[int]) -> int:
    return math.prod(values)


# ---------------------------------------------------------------------------------------
# Option checks and the pooling, window and unpooling arguments of the functional layer.


@dataclass(frozen=True)
class ConvRequest:
    """Canonical settings of one convolution (``padding``: per-dimension (lo, hi)): what a
    caller asked for, once normalised; the GEMM kernel's own plan is ``gemm.GemmPlan``."""

    stride: tuple[int, ...]
    padding: PadPairs
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str = "zeros"
    algorithm: str = "auto"  # "auto", "direct", "gemm" or "fft" (dispatch.ALGORITHMS)
    layout: str = "auto"  # GEMM column order: "auto", "image" or "batch" (gemm_plan)


@dataclass(frozen=True)
class PoolRequest:
    """Canonical settings of one fixed-window pooling (``padding``: the same on both sides)."""

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    out_spatial: tuple[int, ...]


def is_default_stride(stride: Any) -> bool:
    """PyTorch's pooling reads ``stride=None`` and an empty ``stride=()`` as "the kernel
    size" (``torch.nn.functional.max_pool2d``: "Default: kernel_size")."""
    return stride is None or (isinstance(stride, Sequence) and not isinstance(stride, str)
                              and len(stride) == 0)


def check_groups(groups: Any, fn: str) -> None:
    """``groups`` is an int >= 1 (TypeError for another type, ValueError below 1)."""
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)):
        raise TypeError(f"{fn}: groups must be an int, got {type(groups).__name__} {groups!r}")
    if groups < 1:
        raise ValueError(f"{fn}: groups must be >= 1, got {groups}")


def check_choice(value: Any, allowed: Sequence[str], name: str, fn: str) -> str:
    """``value`` itself when it is one of the names in ``allowed``; otherwise a TypeError
    (not a string) or ValueError (an unknown name) in the one template every option check
    uses: ``"conv2d: padding_mode must be one of ('zeros', ...), got 'wrap'"``.

    >>> check_choice("fft", ("auto", "fft"), "algorithm", "conv2d")
    'fft'
    """
    if not isinstance(value, str):
        raise TypeError(f"{fn}: {name} must be one of {tuple(allowed)}, got "
                        f"{type(value).__name__} {value!r}")
    if value not in allowed:
        raise ValueError(f"{fn}: {name} must be one of {tuple(allowed)}, got {value!r}")
    return value


def check_bool(value: Any, name: str, fn: str) -> bool:
    """``value`` as a bool when it is one (Python's or NumPy's); anything else, the string
    ``"False"`` included (which is truthy), is a TypeError.

    >>> check_bool(np.bool_(True), "ceil_mode", "max_pool2d")
    True
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be a bool, got {type(value).__name__} {value!r}")
    return bool(value)


def check_dim(dim: Any, ndim: int, fn: str) -> int:
    """A dimension index of a ``ndim``-D array, negative counting from the end -> [0, ndim)."""
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{fn}: dim must be an int, got {type(dim).__name__} {dim!r}")
    if ndim == 0 or not -ndim <= dim < ndim:
        raise ValueError(f"{fn}: dim must be in [{-ndim}, {ndim}) for a {ndim}-D input, "
                         f"got {dim}")
    return int(dim) % ndim


def pool_request(in_spatial: tuple[int, ...], kernel_size: Any, stride: Any, padding: Any,
                 dilation: Any, ceil_mode: bool, fn: str) -> PoolRequest:
    """Normalise pooling arguments; PyTorch's rules: stride defaults to kernel_size and
    padding may be at most half the (undilated) kernel."""
    spatial_dims = len(in_spatial)
    kernel = to_tuple(kernel_size, spatial_dims, "kernel_size", fn)
    stride_t = kernel if is_default_stride(stride) else to_tuple(stride, spatial_dims,
                                                                 "stride", fn)
    padding_t = to_tuple(padding, spatial_dims, "padding", fn, minimum=0)
    dilation_t = to_tuple(dilation, spatial_dims, "dilation", fn)
    half = tuple(k // 2 for k in kernel)
    if any(p > h for p, h in zip(padding_t, half, strict=True)):
        raise ValueError(
            f"{fn}: padding {padding_t} must be <= kernel_size // 2 {half} in every "
            f"dimension, got kernel_size {kernel}"
        )
    out_spatial = pool_output_shape(in_spatial, kernel, stride_t, padding_t, dilation_t,
                                    check_bool(ceil_mode, "ceil_mode", fn))
    if any(o < 1 for o in out_spatial):
        raise ValueError(
            f"{fn}: output size {out_spatial} must be >= 1 in every dimension; input "
            f"{tuple(in_spatial)} is too small for kernel_size {kernel}, stride {stride_t}, "
            f"padding {padding_t}, dilation {dilation_t}"
        )
    return PoolRequest(kernel, stride_t, padding_t, dilation_t, out_spatial)


def adaptive_output_size(output_size: Any, in_spatial: tuple[int, ...], fn: str
                         ) -> tuple[int, ...]:
    """int or tuple, where ``None`` keeps that input size -> positive ints."""
    ndim = len(in_spatial)
    if output_size is None:
        output_size = in_spatial
    elif (isinstance(output_size, Sequence) and not isinstance(output_size, str)
          and len(output_size) == ndim):
        pairs = zip(in_spatial, output_size, strict=True)
        output_size = tuple(n if o is None else o for n, o in pairs)
    return to_tuple(output_size, ndim, "output_size", fn)


def unpool_output_size(in_spatial: tuple[int, ...], kernel: tuple[int, ...],
                        stride: tuple[int, ...], padding: tuple[int, ...], output_size: Any,
                        fn: str) -> tuple[int, ...]:
    """Default ``(n - 1)*s - 2p + k``; a given size must lie strictly within one stride of
    it (``torch.nn.functional.unpool_output_size``)."""
    ndim = len(in_spatial)
    default = tuple((n - 1) * s - 2 * p + k
                    for n, k, s, p in zip(in_spatial, kernel, stride, padding, strict=True))
    if output_size is None:
        sizes = default
    else:
        if (isinstance(output_size, Sequence) and not isinstance(output_size, str)
                and len(output_size) == ndim + 2):
            output_size = tuple(output_size)[2:]
        sizes = to_tuple(output_size, ndim, "output_size", fn)
        for axis, (size, base, s) in enumerate(zip(sizes, default, stride, strict=True)):
            if not base - s < size < base + s:
                raise ValueError(
                    f"{fn}: output_size[{axis}] must be strictly between {base - s} and "
                    f"{base + s} (default {base} +- stride {s}), got {size}"
                )
    if any(o < 1 for o in sizes):
        raise ValueError(f"{fn}: output size {sizes} must be >= 1 in every dimension")
    return sizes


def window_rank(*sizes: Any) -> int:
    """Spatial rank of unfold/fold: the first argument given as a tuple, else 2 (torch)."""
    for size in sizes:
        if isinstance(size, Sequence) and not isinstance(size, str) and len(size) > 0:
            return len(size)
    return 2


def window_args(kernel_size: Any, dilation: Any, padding: Any, stride: Any,
                 spatial_dims: int, fn: str) -> tuple[tuple[int, ...], ...]:
    kernel = to_tuple(kernel_size, spatial_dims, "kernel_size", fn)
    dilation_t = to_tuple(dilation, spatial_dims, "dilation", fn)
    padding_t = to_tuple(padding, spatial_dims, "padding", fn, minimum=0)
    stride_t = to_tuple(stride, spatial_dims, "stride", fn)
    return kernel, dilation_t, padding_t, stride_t


def block_grid(in_spatial: tuple[int, ...], kernel: tuple[int, ...],
                dilation: tuple[int, ...], padding: tuple[int, ...],
                stride: tuple[int, ...], fn: str) -> tuple[int, ...]:
    """Number of sliding blocks per axis (the convolution output size), each >= 1."""
    blocks = conv_output_shape(in_spatial, kernel, stride, tuple((p, p) for p in padding),
                               dilation)
    if any(b < 1 for b in blocks):
        raise ValueError(
            f"{fn}: no sliding block fits: spatial size {tuple(in_spatial)} with padding "
            f"{padding} is smaller than the dilated kernel "
            f"{tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))}"
        )
    return blocks
