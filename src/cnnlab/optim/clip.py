"""Gradient clipping in place, as ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_``."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from ..autograd import Tensor
from .optimizer import check_nonnegative, check_real

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _grads(parameters: Tensor | Iterable[Tensor], fn: str) -> list[np.ndarray]:
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    grads = []
    for position, param in enumerate(parameters):
        if not isinstance(param, Tensor):
            raise TypeError(
                f"{fn}: parameters[{position}] must be a cnnlab Tensor, got {type(param).__name__}"
            )
        if param.grad is not None:
            grads.append(param.grad)
    return grads


def _check_norm_type(norm_type: float | str, fn: str) -> float:
    """A real order, or the strings ``'inf'`` / ``'-inf'`` that torch also accepts."""
    if isinstance(norm_type, str):
        if norm_type.strip().lower() not in ("inf", "-inf"):
            raise ValueError(f"{fn}: norm_type must be a number, 'inf' or '-inf', "
                             f"got {norm_type!r}")
        return float(norm_type)
    return check_real(norm_type, "norm_type", fn)


def _vector_norm(values: np.ndarray, norm_type: float) -> float:
    """``torch.linalg.vector_norm(values, norm_type)`` of a flattened array, as a float."""
    flat = values.reshape(-1)
    magnitude = np.abs(flat)
    if norm_type == math.inf:
        return float(magnitude.max()) if flat.size else 0.0
    if norm_type == -math.inf:
        return float(magnitude.min()) if flat.size else math.inf
    if norm_type == 0.0:
        return float(np.count_nonzero(flat))
    if norm_type == 1.0:
        return float(magnitude.sum())
    return float(np.sum(magnitude**norm_type)) ** (1.0 / norm_type)


def clip_grad_norm_(parameters: Tensor | Iterable[Tensor], max_norm: float,
                    norm_type: float = 2.0, error_if_nonfinite: bool = False) -> float:
    r"""Scale all gradients together so that their joint norm is at most ``max_norm``.

    The total norm is the ``norm_type``-norm of the vector of per-gradient norms (torch's
    definition; for p > 0 it equals the norm of all gradients concatenated). If it exceeds
    ``max_norm``, every gradient is multiplied in place by ``max_norm / (total_norm + 1e-6)``.
    Parameters whose ``.grad`` is None are skipped.

    Parameters
    ----------
    parameters : Tensor or iterable of Tensor
        Parameters whose ``.grad`` arrays (any shapes) are clipped.
    max_norm : float
        Largest allowed total norm, >= 0.
    norm_type : float or {'inf', '-inf'}
        Order p of the norm; ``math.inf`` (or ``'inf'``) for the max-norm.
    error_if_nonfinite : bool
        Raise instead of scaling when the total norm is NaN or infinite.

    Returns
    -------
    float
        The total norm before clipping (0.0 when no parameter has a gradient).

    Raises
    ------
    ValueError
        If ``max_norm`` is negative, or the total norm is not finite and
        ``error_if_nonfinite`` is True (torch raises RuntimeError there).

    >>> w = Tensor([0.0, 0.0])
    >>> w.grad = np.array([3.0, 4.0])
    >>> clip_grad_norm_([w], max_norm=1.0)
    5.0
    >>> w.grad.round(6)
    array([0.6, 0.8])
    """
    fn = "clip_grad_norm_"
    max_norm = check_nonnegative(max_norm, "max_norm", fn)
    norm_type = _check_norm_type(norm_type, fn)
    grads = _grads(parameters, fn)
    if not grads:
        return 0.0
    if norm_type == 2.0:
        # The 2-norm of the per-gradient 2-norms, without the square roots in between.
        total_norm = math.sqrt(sum(float(np.dot(flat, flat))
                                   for flat in (grad.reshape(-1) for grad in grads)))
    else:
        norms = np.array([_vector_norm(grad, norm_type) for grad in grads])
        total_norm = _vector_norm(norms, norm_type)
    if error_if_nonfinite and not math.isfinite(total_norm):
        raise ValueError(
            f"{fn}: the total norm of order {norm_type} of the gradients is non-finite "
            f"({total_norm}), so they cannot be clipped; pass error_if_nonfinite=False to "
            f"scale them by it anyway"
        )
    clip_coef = max_norm / (total_norm + 1e-6)
    # torch multiplies by min(clip_coef, 1); skipping the multiply by exactly 1 is the same.
    # ``not >=`` lets a NaN coefficient through, which poisons the grads as in torch.
    if not clip_coef >= 1.0:
        # inf * 0 -> NaN is the documented outcome here, not a surprise worth a warning.
        with np.errstate(invalid="ignore"):
            for grad in grads:
                grad *= clip_coef
    return total_norm


def clip_grad_value_(parameters: Tensor | Iterable[Tensor], clip_value: float) -> None:
    """Clamp every gradient elementwise into ``[-clip_value, clip_value]``, in place.

    Parameters
    ----------
    parameters : Tensor or iterable of Tensor
        Parameters whose ``.grad`` arrays (any shapes) are clamped; None grads are skipped.
    clip_value : float
        Largest allowed magnitude, >= 0.

    >>> w = Tensor([0.0, 0.0, 0.0])
    >>> w.grad = np.array([-3.0, 0.5, 2.0])
    >>> clip_grad_value_(w, 1.0)
    >>> w.grad
    array([-1. ,  0.5,  1. ])
    """
    fn = "clip_grad_value_"
    clip_value = check_nonnegative(clip_value, "clip_value", fn)
    for grad in _grads(parameters, fn):
        np.clip(grad, -clip_value, clip_value, out=grad)
