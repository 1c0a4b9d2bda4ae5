"""Stochastic gradient descent with momentum, PyTorch's formulation (``torch.optim.SGD``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .optimizer import Optimizer, ParamsT, check_bool, check_nonnegative, check_real

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""Stochastic gradient descent, optionally with (Nesterov) momentum.

    For each parameter :math:`\theta` with gradient :math:`g`, one step is (PyTorch's
    ``torch.optim.SGD`` pseudo-code)::

        g = -g                      if maximize
        g = g + weight_decay * θ    if weight_decay != 0
        b = g                       on the first step with momentum != 0
        b = momentum * b + (1 - dampening) * g      afterwards
        g = g + momentum * b        if nesterov, else g = b
        θ = θ - lr * g

    This is Sutskever et al. (2013)'s momentum with the learning rate outside the buffer, as
    in PyTorch, so changing ``lr`` mid-run does not rescale the stored velocity.

    Parameters
    ----------
    params : iterable of Tensor, or iterable of dict
        Parameters (any shape) or parameter groups; see :class:`Optimizer`.
    lr : float
        Learning rate, >= 0.
    momentum : float
        Momentum factor, >= 0; 0 keeps no state.
    dampening : float
        Dampening of the gradient's contribution to the momentum buffer.
    weight_decay : float
        L2 penalty coefficient, >= 0 (added to the gradient).
    nesterov : bool
        Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
    maximize : bool
        Ascend the objective instead of descending it.

    Notes
    -----
    State per parameter: ``momentum_buffer``, an array of the parameter's shape and dtype
    (only when momentum != 0).

    >>> from cnnlab import Tensor
    >>> w = Tensor([1.0, 2.0])
    >>> w.grad = np.array([0.5, -1.0])
    >>> SGD([w], lr=0.1).step()
    >>> w.data
    array([0.95, 2.1 ])
    """

    _state_names = ("momentum_buffer",)

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0,
                 dampening: float = 0, weight_decay: float = 0, nesterov: bool = False, *,
                 maximize: bool = False) -> None:
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening,
                    "weight_decay": weight_decay, "nesterov": nesterov, "maximize": maximize}
        super().__init__(params, defaults)

    def _check_options(self, options: dict[str, Any], where: str) -> dict[str, Any]:
        checked = {
            "lr": check_nonnegative(options["lr"], "lr", where),
            "momentum": check_nonnegative(options["momentum"], "momentum", where),
            "dampening": check_real(options["dampening"], "dampening", where),
            "weight_decay": check_nonnegative(options["weight_decay"], "weight_decay", where),
            "nesterov": check_bool(options["nesterov"], "nesterov", where),
            "maximize": check_bool(options["maximize"], "maximize", where),
        }
        if checked["nesterov"] and (checked["momentum"] <= 0 or checked["dampening"] != 0):
            raise ValueError(
                f"{where}: nesterov=True requires momentum > 0 and dampening == 0, got "
                f"momentum={checked['momentum']}, dampening={checked['dampening']}"
            )
        return checked

    def _step_group(self, group: dict[str, Any]) -> None:
        lr = group["lr"]
        momentum = group["momentum"]
        damped = 1.0 - group["dampening"]
        weight_decay = group["weight_decay"]
        nesterov = group["nesterov"]
        maximize = group["maximize"]
        for param in group["params"]:
            grad = param.grad
            if grad is None:
                continue
            data = param.data
            if grad.shape != data.shape:
                raise self._grad_shape_error(group, param)
            # ``grad`` is rebound, never written: the caller's .grad array stays as it was.
            if maximize:
                grad = -grad
            if weight_decay != 0:
                grad = grad + weight_decay * data
            if momentum != 0:
                state = self.state.setdefault(id(param), {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = np.array(grad, dtype=data.dtype)
                else:
                    buf *= momentum
                    buf += grad if damped == 1.0 else damped * grad
                grad = grad + momentum * buf if nesterov else buf
            data -= lr * grad
