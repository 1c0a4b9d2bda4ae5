"""Losses as functions: cross_entropy, nll_loss, mse_loss, binary_cross_entropy_with_logits.

Each loss has one fused VJP (``softmax - onehot`` for cross-entropy) instead of a graph of
primitives: they run in every training step."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tensor
from ..ops._args import (
    check_choice,
)
from ._binding import (
    ArrayOrTensor,
    _float_arrays,
    _float_input,
    _needs,
    _wrap,
)
from .activation import _sigmoid_parts

REDUCTIONS = ("mean", "sum", "none")


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


def _at_target(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``scores[n, target[n, *d], *d]``: (N, C, *d), (N, *d) -> (N, *d)."""
    if scores.ndim == 2:
        return scores[np.arange(scores.shape[0]), target]
    return np.take_along_axis(scores, target[:, None], axis=1)[:, 0]


def _add_at_target(scores: np.ndarray, target: np.ndarray, values: Any) -> None:
    """``scores[n, target[n, *d], *d] += values`` in place (one class per position)."""
    if scores.ndim == 2:
        scores[np.arange(scores.shape[0]), target] += values
        return
    values = np.broadcast_to(values, target.shape)
    index = target[:, None]
    picked = np.take_along_axis(scores, index, axis=1)
    np.put_along_axis(scores, index, picked + np.expand_dims(values, 1), axis=1)


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


def _reduce(loss: np.ndarray, reduction: str, denominator: float) -> np.ndarray:
    if reduction == "none":
        return loss
    total = loss.sum()
    return np.asarray(total / denominator if reduction == "mean" else total)


def _reduction_scale(g: np.ndarray, unbatched: bool, reduction: str, denominator: float
                     ) -> np.ndarray:
    """Upstream gradient of each element's loss: (N, *d) for 'none', else a scalar."""
    if reduction == "none":
        return g[None] if unbatched else g
    return g / denominator if reduction == "mean" else g


def _batch_out(out: np.ndarray, unbatched: bool, reduction: str) -> np.ndarray:
    return out[0] if unbatched and reduction == "none" else out


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
    num_classes = logits.shape[1]

    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    log_probs = shifted
    log_probs -= np.log(sum_exp)

    # Weight of the target class per element (zero where ignored), and the mean's divisor.
    target_weight = None if w is None else w[safe_target]
    if valid is not None:
        target_weight = valid.astype(logits.dtype) if w is None else target_weight * valid
    loss = -_at_target(log_probs, safe_target)
    if target_weight is not None:
        loss *= target_weight
    class_w = 1 if w is None else w.reshape((1, -1) + (1,) * (logits.ndim - 2))
    if label_smoothing > 0:
        smooth = -(log_probs * class_w).sum(axis=1)
        if valid is not None:
            smooth *= valid
        loss = (1 - label_smoothing) * loss + (label_smoothing / num_classes) * smooth
    denominator = float(loss.size if target_weight is None else target_weight.sum())
    out = _batch_out(_reduce(loss, reduction, denominator), unbatched, reduction)

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        scale = _reduction_scale(g, unbatched, reduction, denominator)
        grad = exp / sum_exp  # softmax
        if target_weight is None and label_smoothing == 0:
            _add_at_target(grad, safe_target, -1)
        else:
            # grad = softmax * sum_c q_c - q, with q = hot * onehot + smooth (per class).
            hot = ((1 - label_smoothing) * target_weight if target_weight is not None
                   else np.full(safe_target.shape, 1 - label_smoothing, logits.dtype))
            smooth_total = label_smoothing * (1.0 if w is None else float(w.mean()))
            if valid is not None:
                mask = valid.astype(logits.dtype)
            total = hot + (smooth_total if valid is None else smooth_total * mask)
            grad *= np.expand_dims(total, 1)
            if label_smoothing > 0:
                smooth = (label_smoothing / num_classes) * class_w
                grad -= smooth if valid is None else smooth * np.expand_dims(mask, 1)
            _add_at_target(grad, safe_target, -hot)
        grad *= np.expand_dims(scale, 1) if reduction == "none" else scale
        return (grad[0] if unbatched else grad,)

    return _wrap(out, [input], vjp, False)


def nll_loss(
    input: ArrayOrTensor,
    target: Any,
    weight: ArrayOrTensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> ArrayOrTensor:
    """Negative log-likelihood ``-w[y] * input[n, y]`` of log-probabilities.

    Shapes and ``reduction`` as :func:`cross_entropy` (``input`` holds log-probabilities,
    e.g. from :func:`log_softmax` over dim 1).
    """
    fn = "nll_loss"
    check_choice(reduction, REDUCTIONS, "reduction", fn)
    log_probs = _float_input(input, fn)
    log_probs, safe_target, valid, unbatched = _class_target(target, log_probs,
                                                             ignore_index, fn)
    w = _class_weight(weight, log_probs, fn)
    target_weight = None if w is None else w[safe_target]
    if valid is not None:
        target_weight = valid.astype(log_probs.dtype) if w is None else target_weight * valid
    loss = -_at_target(log_probs, safe_target)
    if target_weight is not None:
        loss *= target_weight
    denominator = float(loss.size if target_weight is None else target_weight.sum())
    out = _batch_out(_reduce(loss, reduction, denominator), unbatched, reduction)

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        scale = _reduction_scale(g, unbatched, reduction, denominator)
        grad = np.zeros_like(log_probs)
        hot = scale if target_weight is None else target_weight * scale
        _add_at_target(grad, safe_target, -np.broadcast_to(hot, safe_target.shape))
        return (grad[0] if unbatched else grad,)

    return _wrap(out, [input], vjp, False)


def _same_shape(input: np.ndarray, target: np.ndarray, fn: str) -> None:
    # PyTorch broadcasts with a warning; a shape mismatch is almost always a bug.
    if input.shape != target.shape:
        raise ValueError(f"{fn}: target shape {target.shape} must equal input shape "
                         f"{input.shape}")


def mse_loss(input: ArrayOrTensor, target: ArrayOrTensor, *, reduction: str = "mean"
             ) -> ArrayOrTensor:
    """Mean squared error ``(input - target)^2``, reduced by ``reduction``.

    ``input`` and ``target`` have the same shape (no broadcasting); the result is a scalar,
    or that shape with ``reduction='none'``. Gradients flow to both.

    >>> float(mse_loss(np.array([1.0, 3.0]), np.array([0.0, 0.0])))
    5.0
    """
    fn = "mse_loss"
    check_choice(reduction, REDUCTIONS, "reduction", fn)
    arrays = _float_arrays(fn, ("input", "target"), input=input, target=target)
    x_arr, t_arr = arrays["input"], arrays["target"]
    _same_shape(x_arr, t_arr, fn)
    diff = x_arr - t_arr
    if reduction == "none":
        out = diff * diff
    else:
        flat = diff.reshape(-1)
        total = np.dot(flat, flat)
        out = np.asarray(total / max(diff.size, 1) if reduction == "mean" else total)

    def vjp(g: np.ndarray) -> tuple[Any, Any]:
        scale = 2 * g if reduction != "mean" else g * (2.0 / max(diff.size, 1))
        grad = diff * scale
        return grad, (-grad if _needs(target) else None)

    return _wrap(out, [input, target], vjp, False)


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
    sigma, e = _sigmoid_parts(x_arr)
    softplus_neg = np.log1p(e)  # -log sigmoid(x) = max(-x, 0) + log(1 + exp(-|x|))
    softplus_neg += np.maximum(-x_arr, 0)
    positive_coef = 1 if p_arr is None else 1 + (p_arr - 1) * t_arr
    loss = (1 - t_arr) * x_arr + positive_coef * softplus_neg
    if w_arr is not None:
        loss *= w_arr
    out = _reduce(loss, reduction, float(max(loss.size, 1)))

    def vjp(g: np.ndarray) -> tuple[Any, Any]:
        scale = g if reduction != "mean" else g / max(loss.size, 1)
        if w_arr is not None:
            scale = scale * w_arr
        grad_x = sigma * positive_coef
        grad_x -= t_arr if p_arr is None else p_arr * t_arr
        grad_x *= scale
        grad_t = None
        if _needs(target):
            grad_t = -x_arr if p_arr is None else (p_arr - 1) * softplus_neg - x_arr
            grad_t = grad_t * scale
        return grad_x, grad_t

    return _wrap(out, [input, target], vjp, False)
