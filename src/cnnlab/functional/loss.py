"""Losses as functions: cross_entropy, nll_loss, mse_loss, binary_cross_entropy_with_logits.

Each checks its arguments (class indices against the scores, weights, shapes) and binds the
kernel and fused VJP of :mod:`cnnlab.ops.loss`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tensor
from ..ops import loss as kernels
from ..ops._args import (
    check_choice,
)
from ..ops.loss import REDUCTIONS
from ._binding import (
    ArrayOrTensor,
    _float_arrays,
    _float_input,
    _needs,
    _wrap,
)


def _class_target(target: Any, scores: np.ndarray, ignore_index: int, fn: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    """Validate class indices against scores (N, C, *d) or (C,).

    Returns ``(scores (N, C, *d), safe_target (N, *d), valid mask or None, unbatched)``:
    ignored entries of ``safe_target`` are replaced by class 0 and masked by ``valid``.
    """
    target_arr = target.data if isinstance(target, Tensor) else np.asarray(target)
    if target_arr.dtype.kind not in "iu":
        raise TypeError(f"{fn}: target must hold integer class indices, got dtype "
                        f"{target_arr.dtype}")
    unbatched = scores.ndim == 1
    if unbatched:
        scores, target_arr = scores[None], target_arr[None]
    if scores.ndim < 2:
        raise ValueError(f"{fn}: input must be (C,), (N, C) or (N, C, d1, ...), got shape "
                         f"{scores.shape}")
    expected = (scores.shape[0], *scores.shape[2:])
    if target_arr.shape != expected:
        raise ValueError(f"{fn}: target shape {target_arr.shape[unbatched:]} must be "
                         f"{expected[unbatched:]} for input shape {scores.shape[unbatched:]}")
    ignored = target_arr == ignore_index
    valid = None
    if ignored.any():
        valid = ~ignored
        target_arr = np.where(valid, target_arr, 0)
    if target_arr.size and (target_arr.min() < 0 or target_arr.max() >= scores.shape[1]):
        bad = target_arr[(target_arr < 0) | (target_arr >= scores.shape[1])][0]
        raise ValueError(f"{fn}: target values must be in [0, {scores.shape[1]}) or "
                         f"ignore_index ({ignore_index}), got {bad}")
    return scores, target_arr, valid, unbatched


def _constant(value: Any, dtype: np.dtype, name: str, fn: str) -> np.ndarray | None:
    """A constant operand (class or element weights; no gradient) in the input's dtype."""
    if value is None:
        return None
    return _float_input(value, fn, name).astype(dtype, copy=False)


def _class_weight(weight: Any, scores: np.ndarray, fn: str) -> np.ndarray | None:
    if weight is None:
        return None
    w = _constant(weight, scores.dtype, "weight", fn)
    if w.shape != (scores.shape[1],):
        raise ValueError(f"{fn}: weight must have shape ({scores.shape[1]},) (one per "
                         f"class), got {w.shape}")
    return w


def _batch_out(out: np.ndarray, unbatched: bool, reduction: str) -> np.ndarray:
    """An unbatched input's per-element losses lose the batch axis the kernel ran with."""
    return out[0] if unbatched and reduction == "none" else out


def _batched_loss_grad(g: np.ndarray, unbatched: bool, reduction: str) -> np.ndarray:
    """The upstream gradient in the kernel's batched layout (adjoint of :func:`_batch_out`)."""
    return g[None] if unbatched and reduction == "none" else g


def cross_entropy(
    input: ArrayOrTensor,
    target: Any,
    weight: ArrayOrTensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> ArrayOrTensor:
    """Cross-entropy of logits against class indices: ``log_softmax`` + ``nll_loss`` fused.

    Parameters
    ----------
    input : (N, C), (N, C, d1, ..., dk) or (C,)
        Unnormalised scores (logits); the class axis is 1.
    target : int array (N,), (N, d1, ..., dk) or ()
        Class indices in ``[0, C)``, or ``ignore_index`` (contributes nothing).
    weight : (C,) or None
        Per-class rescaling (a constant, cast to the input's dtype: no gradient flows to it).
    reduction : ``'mean'`` (divide by the summed weights of the non-ignored targets),
        ``'sum'`` or ``'none'``.
    label_smoothing : float in [0, 1]
        Target distribution ``(1 - eps) onehot + eps / C`` (Szegedy et al. 2016, sec. 7).

    Returns
    -------
    Scalar, or (N, d1, ..., dk) with ``reduction='none'``. Per element, with
    ``q_c = (1 - eps) w_y [c = y] + (eps / C) w_c``: ``loss = -sum_c q_c log softmax(x)_c``.
    Its gradient w.r.t. the logits is ``softmax(x) * sum_c q_c - q`` (``softmax - onehot``
    without weights or smoothing).

    >>> float(cross_entropy(np.zeros((1, 4)), np.array([2]))) == float(np.log(4))
    True
    """
    fn = "cross_entropy"
    check_choice(reduction, REDUCTIONS, "reduction", fn)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing}")
    logits = _float_input(input, fn)
    logits, safe_target, valid, unbatched = _class_target(target, logits, ignore_index, fn)
    w = _class_weight(weight, logits, fn)
    loss, saved = kernels.cross_entropy(logits, safe_target, valid, w, label_smoothing,
                                        reduction)

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        grad = kernels.cross_entropy_backward(_batched_loss_grad(g, unbatched, reduction),
                                              saved)
        return (grad[0] if unbatched else grad,)

    return _wrap(_batch_out(loss, unbatched, reduction), [input], vjp, False,
                 "cross_entropy")


def nll_loss(
    input: ArrayOrTensor,
    target: Any,
    weight: ArrayOrTensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> ArrayOrTensor:
    """Negative log-likelihood ``-w[y] * input[n, y]`` of log-probabilities.

    Parameters
    ----------
    input : (N, C), (N, C, d1, ..., dk) or (C,)
        Log-probabilities (e.g. :func:`log_softmax` over dim 1); the class axis is 1.
    target : int array (N,), (N, d1, ..., dk) or ()
        Class indices in ``[0, C)``, or ``ignore_index`` (contributes nothing).
    weight : (C,) or None, a constant per-class rescaling.
    reduction : ``'mean'`` (by the summed weights of the non-ignored targets), ``'sum'``
        or ``'none'``.

    Returns
    -------
    Scalar, or (N, d1, ..., dk) with ``reduction='none'``.

    >>> round(float(nll_loss(np.log(np.array([[0.25, 0.75]])), np.array([1]))), 4)
    0.2877
    """
    fn = "nll_loss"
    check_choice(reduction, REDUCTIONS, "reduction", fn)
    log_probs = _float_input(input, fn)
    log_probs, safe_target, valid, unbatched = _class_target(target, log_probs,
                                                             ignore_index, fn)
    w = _class_weight(weight, log_probs, fn)
    loss, weights, denominator = kernels.nll_loss(log_probs, safe_target, valid, w, reduction)

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        grad = kernels.nll_loss_backward(_batched_loss_grad(g, unbatched, reduction),
                                         log_probs.shape, log_probs.dtype, safe_target,
                                         weights, reduction, denominator)
        return (grad[0] if unbatched else grad,)

    return _wrap(_batch_out(loss, unbatched, reduction), [input], vjp, False, "nll_loss")


def _same_shape(input: np.ndarray, target: np.ndarray, fn: str) -> None:
    # PyTorch broadcasts with a warning; a shape mismatch is almost always a bug.
    if input.shape != target.shape:
        raise ValueError(f"{fn}: target shape {target.shape} must equal input shape "
                         f"{input.shape}")


def mse_loss(input: ArrayOrTensor, target: ArrayOrTensor, *, reduction: str = "mean"
             ) -> ArrayOrTensor:
    """Mean squared error ``(input - target)^2``, reduced by ``reduction``.

    Parameters
    ----------
    input, target : (*), the same shape (no broadcasting); gradients flow to both.
    reduction : ``'mean'``, ``'sum'`` or ``'none'``.

    Returns
    -------
    Scalar, or (*) with ``reduction='none'``.

    >>> float(mse_loss(np.array([1.0, 3.0]), np.array([0.0, 0.0])))
    5.0
    """
    fn = "mse_loss"
    check_choice(reduction, REDUCTIONS, "reduction", fn)
    arrays = _float_arrays(fn, ("input", "target"), input=input, target=target)
    x_arr, t_arr = arrays["input"], arrays["target"]
    _same_shape(x_arr, t_arr, fn)
    out, diff = kernels.mse_loss(x_arr, t_arr, reduction)

    def vjp(g: np.ndarray) -> tuple[Any, Any]:
        grad = kernels.mse_loss_backward(g, diff, reduction)
        return grad, (-grad if _needs(target) else None)

    return _wrap(out, [input, target], vjp, False, "mse_loss")


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def binary_cross_entropy_with_logits(
    input: ArrayOrTensor,
    target: ArrayOrTensor,
    weight: ArrayOrTensor | None = None,
    *,
    reduction: str = "mean",
    pos_weight: ArrayOrTensor | None = None,
) -> ArrayOrTensor:
    """Binary cross-entropy of logits ``x`` against probabilities ``t``, sigmoid fused in.

    ``loss = -w [p t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]``, computed stably as
    ``w [(1 - t) x + (1 + (p - 1) t) softplus(-x)]``.

    Parameters
    ----------
    input, target : same shape (*)
    weight : broadcastable to (*), or None; a constant rescaling per element.
    pos_weight : broadcastable to (*) along the trailing (class) axes, or None; weight of
        the positive term. Both weights are constants, cast to the input's dtype.

    Returns
    -------
    Scalar, or (*) with ``reduction='none'``. Gradients flow to ``input`` (``w (sigmoid(x)
    (1 + (p - 1) t) - p t)``) and ``target``.

    >>> float(binary_cross_entropy_with_logits(np.zeros(3), np.ones(3))) == float(np.log(2))
    True
    """
    fn = "binary_cross_entropy_with_logits"
    check_choice(reduction, REDUCTIONS, "reduction", fn)
    arrays = _float_arrays(fn, ("input", "target"), input=input, target=target)
    x_arr, t_arr = arrays["input"], arrays["target"]
    w_arr = _constant(weight, x_arr.dtype, "weight", fn)
    p_arr = _constant(pos_weight, x_arr.dtype, "pos_weight", fn)
    _same_shape(x_arr, t_arr, fn)
    for name, extra in (("weight", w_arr), ("pos_weight", p_arr)):
        if extra is not None and not _broadcasts_to(extra.shape, x_arr.shape):
            raise ValueError(f"{fn}: {name} shape {extra.shape} must broadcast to input "
                             f"shape {x_arr.shape}")
    out, saved = kernels.binary_cross_entropy_with_logits(x_arr, t_arr, w_arr, p_arr,
                                                          reduction)
    return _wrap(out, [input, target], lambda g: kernels.binary_cross_entropy_with_logits_backward(
        g, saved, _needs(target)), False, op="binary_cross_entropy_with_logits")
