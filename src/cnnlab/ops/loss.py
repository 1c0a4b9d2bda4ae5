"""Losses on arrays, each forward with its VJP below it.

Arguments are already checked (``cnnlab.functional.loss`` does that): scores ``(N, C, *d)``
with a batch axis, class indices ``(N, *d)`` in ``[0, C)`` with ignored entries replaced by
class 0 and marked by ``valid``, weights in the scores' dtype. Each loss has one fused VJP
(``softmax - onehot`` for cross-entropy) instead of a graph of primitives: they run in every
training step. A forward returns the reduced loss and what its VJP needs.

Reductions: ``'none'`` keeps one loss per element (N, *d), ``'sum'`` adds them, ``'mean'``
divides the sum by ``denominator`` (the element count, or the summed weights of the
non-ignored targets, as PyTorch).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .activation import sigmoid_parts

REDUCTIONS = ("mean", "sum", "none")


def at_target(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``scores[n, target[n, *d], *d]``: (N, C, *d), (N, *d) -> (N, *d).

    >>> at_target(np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([1, 0])).tolist()
    [2.0, 3.0]
    """
    if scores.ndim == 2:
        return scores[np.arange(scores.shape[0]), target]
    return np.take_along_axis(scores, target[:, None], axis=1)[:, 0]


def add_at_target(scores: np.ndarray, target: np.ndarray, values: Any) -> None:
    """``scores[n, target[n, *d], *d] += values`` in place (one class per position)."""
    if scores.ndim == 2:
        scores[np.arange(scores.shape[0]), target] += values
        return
    values = np.broadcast_to(values, target.shape)
    index = target[:, None]
    picked = np.take_along_axis(scores, index, axis=1)
    np.put_along_axis(scores, index, picked + np.expand_dims(values, 1), axis=1)


def reduce(loss: np.ndarray, reduction: str, denominator: float) -> np.ndarray:
    """One loss per element -> the reduction's value (an array, 0-d unless ``'none'``)."""
    if reduction == "none":
        return loss
    total = loss.sum()
    return np.asarray(total / denominator if reduction == "mean" else total)


def reduction_scale(g: np.ndarray, reduction: str, denominator: float) -> np.ndarray:
    """Upstream gradient of each element's loss: ``g`` itself (N, *d) for 'none', else a
    scalar."""
    if reduction == "none":
        return g
    return g / denominator if reduction == "mean" else g


def target_weights(target: np.ndarray, valid: np.ndarray | None,
                   class_weight: np.ndarray | None, dtype: np.dtype) -> np.ndarray | None:
    """Each element's weight: ``class_weight[target]``, zero where ignored; None when all
    are 1."""
    weights = None if class_weight is None else class_weight[target]
    if valid is not None:
        weights = valid.astype(dtype) if class_weight is None else weights * valid
    return weights


# ---------------------------------------------------------------------------------------
# Cross-entropy of logits against class indices: log_softmax and nll_loss fused.


class CrossEntropySaved(NamedTuple):
    """What :func:`cross_entropy_backward` needs from the forward."""

    exp: np.ndarray  # exp(x - max(x)) (N, C, *d)
    sum_exp: np.ndarray  # its sum over the classes (N, 1, *d)
    target: np.ndarray
    valid: np.ndarray | None
    class_weight: np.ndarray | None
    weights: np.ndarray | None  # per element (N, *d), or None when all are 1
    label_smoothing: float
    reduction: str
    denominator: float


def cross_entropy(logits: np.ndarray, target: np.ndarray, valid: np.ndarray | None,
                  class_weight: np.ndarray | None, label_smoothing: float, reduction: str
                  ) -> tuple[np.ndarray, CrossEntropySaved]:
    """Per element, with ``q_c = (1 - eps) w_y [c = y] + (eps / C) w_c`` (Szegedy et al.
    2016, sec. 7, for the smoothing): ``loss = -sum_c q_c log softmax(x)_c``, reduced.

    logits (N, C, *d), target (N, *d), class_weight (C,) or None -> (the loss, saved).

    >>> loss, _ = cross_entropy(np.zeros((1, 4)), np.array([2]), None, None, 0.0, "mean")
    >>> bool(np.isclose(loss, np.log(4)))
    True
    """
    num_classes = logits.shape[1]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    log_probs = shifted
    log_probs -= np.log(sum_exp)
    weights = target_weights(target, valid, class_weight, logits.dtype)
    loss = -at_target(log_probs, target)
    if weights is not None:
        loss *= weights
    if label_smoothing > 0:
        class_w = 1 if class_weight is None else class_weight.reshape(
            (1, -1) + (1,) * (logits.ndim - 2))
        smooth = -(log_probs * class_w).sum(axis=1)
        if valid is not None:
            smooth *= valid
        loss = (1 - label_smoothing) * loss + (label_smoothing / num_classes) * smooth
    denominator = float(loss.size if weights is None else weights.sum())
    saved = CrossEntropySaved(exp, sum_exp, target, valid, class_weight, weights, label_smoothing,
                              reduction, denominator)
    return reduce(loss, reduction, denominator), saved


def cross_entropy_backward(g: np.ndarray, saved: CrossEntropySaved) -> np.ndarray:
    """VJP of :func:`cross_entropy` w.r.t. the logits: ``softmax(x) * sum_c q_c - q``
    (``softmax - onehot`` without weights or smoothing), times the upstream gradient."""
    target, valid = saved.target, saved.valid
    class_weight, weights, smoothing = saved.class_weight, saved.weights, saved.label_smoothing
    scale = reduction_scale(g, saved.reduction, saved.denominator)
    grad = saved.exp / saved.sum_exp  # the softmax, a new array
    if weights is None and smoothing == 0:
        add_at_target(grad, target, -1)
    else:
        # grad = softmax * sum_c q_c - q, with q = hot * onehot + smooth (per class).
        hot = ((1 - smoothing) * weights if weights is not None
               else np.full(target.shape, 1 - smoothing, grad.dtype))
        smooth_total = smoothing * (1.0 if class_weight is None else float(class_weight.mean()))
        if valid is not None:
            mask = valid.astype(grad.dtype)
        total = hot + (smooth_total if valid is None else smooth_total * mask)
        grad *= np.expand_dims(total, 1)
        if smoothing > 0:
            class_w = 1 if class_weight is None else class_weight.reshape(
                (1, -1) + (1,) * (grad.ndim - 2))
            smooth = (smoothing / grad.shape[1]) * class_w
            grad -= smooth if valid is None else smooth * np.expand_dims(mask, 1)
        add_at_target(grad, target, -hot)
    grad *= np.expand_dims(scale, 1) if saved.reduction == "none" else scale
    return grad


# ---------------------------------------------------------------------------------------
# Negative log-likelihood of log-probabilities.


def nll_loss(log_probs: np.ndarray, target: np.ndarray, valid: np.ndarray | None,
             class_weight: np.ndarray | None, reduction: str
             ) -> tuple[np.ndarray, np.ndarray | None, float]:
    """``-w[y] * log_probs[n, y, *d]``, reduced: (the loss, the element weights, the mean's
    denominator), the last two for :func:`nll_loss_backward`.

    >>> float(nll_loss(np.log([[0.5, 0.5]]), np.array([0]), None, None, "sum")[0])
    0.6931471805599453
    """
    weights = target_weights(target, valid, class_weight, log_probs.dtype)
    loss = -at_target(log_probs, target)
    if weights is not None:
        loss *= weights
    denominator = float(loss.size if weights is None else weights.sum())
    return reduce(loss, reduction, denominator), weights, denominator


def nll_loss_backward(g: np.ndarray, shape: tuple[int, ...], dtype: np.dtype,
                      target: np.ndarray, weights: np.ndarray | None, reduction: str,
                      denominator: float) -> np.ndarray:
    """VJP of :func:`nll_loss` w.r.t. the log-probabilities (of ``shape``): ``-w[y] g`` at
    each target, zeros elsewhere."""
    scale = reduction_scale(g, reduction, denominator)
    grad = np.zeros(shape, dtype)
    hot = scale if weights is None else weights * scale
    add_at_target(grad, target, -np.broadcast_to(hot, target.shape))
    return grad


# ---------------------------------------------------------------------------------------
# Regression and binary losses.


def mse_loss(x: np.ndarray, target: np.ndarray, reduction: str
             ) -> tuple[np.ndarray, np.ndarray]:
    """Squared error ``(x - target)^2`` of same-shaped arrays, reduced: (loss, x - target).

    >>> float(mse_loss(np.array([1.0, 3.0]), np.zeros(2), "mean")[0])
    5.0
    """
    diff = x - target
    if reduction == "none":
        return diff * diff, diff
    flat = diff.reshape(-1)
    total = np.dot(flat, flat)
    return np.asarray(total / max(diff.size, 1) if reduction == "mean" else total), diff


def mse_loss_backward(g: np.ndarray, diff: np.ndarray, reduction: str) -> np.ndarray:
    """VJP of :func:`mse_loss` w.r.t. ``x`` (the target's is its negative): ``2 g diff``."""
    scale = 2 * g if reduction != "mean" else g * (2.0 / max(diff.size, 1))
    return diff * scale


class BinaryCrossEntropySaved(NamedTuple):
    """What :func:`binary_cross_entropy_with_logits_backward` needs from the forward."""

    x: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None
    pos_weight: np.ndarray | None
    sigma: np.ndarray
    softplus_neg: np.ndarray
    positive_coef: Any
    reduction: str
    size: int


def binary_cross_entropy_with_logits(
    x: np.ndarray, target: np.ndarray, weight: np.ndarray | None,
    pos_weight: np.ndarray | None, reduction: str,
) -> tuple[np.ndarray, BinaryCrossEntropySaved]:
    """``-w [p t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]``, computed stably as
    ``w [(1 - t) x + (1 + (p - 1) t) softplus(-x)]``, reduced.

    >>> float(binary_cross_entropy_with_logits(np.zeros(2), np.ones(2), None, None,
    ...                                        "mean")[0]) == float(np.log(2))
    True
    """
    sigma, e = sigmoid_parts(x)
    softplus_neg = np.log1p(e)  # -log sigmoid(x) = max(-x, 0) + log(1 + exp(-|x|))
    softplus_neg += np.maximum(-x, 0)
    positive_coef = 1 if pos_weight is None else 1 + (pos_weight - 1) * target
    loss = (1 - target) * x + positive_coef * softplus_neg
    if weight is not None:
        loss *= weight
    out = reduce(loss, reduction, float(max(loss.size, 1)))
    return out, BinaryCrossEntropySaved(x, target, weight, pos_weight, sigma, softplus_neg,
                                        positive_coef, reduction, loss.size)


def binary_cross_entropy_with_logits_backward(
    g: np.ndarray, saved: BinaryCrossEntropySaved, need_target: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """VJPs of :func:`binary_cross_entropy_with_logits`: w.r.t. the logits,
    ``w (sigmoid(x) (1 + (p - 1) t) - p t)``, and (when asked) w.r.t. the target,
    ``w ((p - 1) softplus(-x) - x)``."""
    x, target, weight, pos_weight = saved.x, saved.target, saved.weight, saved.pos_weight
    scale = g if saved.reduction != "mean" else g / max(saved.size, 1)
    if weight is not None:
        scale = scale * weight
    grad_x = saved.sigma * saved.positive_coef
    grad_x -= target if pos_weight is None else pos_weight * target
    grad_x *= scale
    grad_t = None
    if need_target:
        grad_t = -x if pos_weight is None else (pos_weight - 1) * saved.softplus_neg - x
        grad_t = grad_t * scale
    return grad_x, grad_t
