"""Adam (Kingma & Ba, 2015) and AdamW (Loshchilov & Hutter, 2019), as ``torch.optim``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..autograd import Tensor
from .optimizer import Optimizer, ParamsT, check_bool, check_nonnegative, check_real

__all__ = ["Adam", "AdamW"]


def _lerp_(start: np.ndarray, end: np.ndarray, weight: float) -> None:
    """``start += weight * (end - start)`` in place, in PyTorch's two-branch form.

    ATen's ``lerp`` (aten/src/ATen/native/Lerp.h) computes ``end - (end - start)*(1 - weight)``
    when ``|weight| >= 0.5``, which is more accurate there; we follow it to stay close to
    ``torch.optim.Adam``'s ``exp_avg.lerp_(grad, 1 - beta1)``.
    """
    diff = end - start
    if abs(weight) < 0.5:
        diff *= weight
        start += diff
    else:
        diff *= 1.0 - weight
        np.subtract(end, diff, out=start)


class Adam(Optimizer):
    r"""Adam: steps scaled by running estimates of the gradient's first and second moments.

    For each parameter :math:`\theta` with gradient :math:`g`, step :math:`t = 1, 2, \dots`
    (PyTorch's ``torch.optim.Adam`` pseudo-code)::

        g = -g                                      if maximize
        θ = θ * (1 - lr * weight_decay)             if decoupled_weight_decay (AdamW)
        g = g + weight_decay * θ                    otherwise, if weight_decay != 0
        m = β1 m + (1 - β1) g                       (exp_avg)
        v = β2 v + (1 - β2) g²                      (exp_avg_sq)
        v̂ = max(v̂, v); use v̂ for v below           if amsgrad (max_exp_avg_sq)
        θ = θ - lr / (1 - β1^t) * m / (sqrt(v) / sqrt(1 - β2^t) + eps)

    Parameters
    ----------
    params : iterable of Tensor, or iterable of dict
        Parameters (any shape) or parameter groups; see :class:`Optimizer`.
    lr : float
        Learning rate, >= 0.
    betas : (float, float)
        Decay rates ``(β1, β2)`` of the moment estimates, each in [0, 1).
    eps : float
        Added to the denominator for stability, >= 0.
    weight_decay : float
        Weight-decay coefficient, >= 0: an L2 term in the gradient, or (decoupled) a
        shrinking of the weights.
    amsgrad : bool
        Normalise by the running maximum of ``v`` (Reddi et al., 2018).
    maximize : bool
        Ascend the objective instead of descending it.
    decoupled_weight_decay : bool
        Apply weight decay to the weights directly (this is AdamW).

    Notes
    -----
    State per parameter: ``step`` (int), ``exp_avg`` and ``exp_avg_sq`` (and
    ``max_exp_avg_sq`` with amsgrad), arrays of the parameter's shape and dtype. They are
    views into one flat buffer per group, so that when every parameter of a group has a
    gradient the whole group is updated by one call of each NumPy operation (see
    ``_FlatState``), bitwise equal to updating parameter by parameter.

    >>> from cnnlab import Tensor
    >>> w = Tensor([1.0, 2.0])
    >>> w.grad = np.array([0.5, -1.0])
    >>> Adam([w], lr=0.1).step()
    >>> w.data.round(6)
    array([0.9, 2.1])
    """

    _state_names = ("step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        self._flat: dict[int, _FlatState] = {}
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay,
                    "amsgrad": amsgrad, "maximize": maximize,
                    "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)

    def _check_options(self, options: dict[str, Any], where: str) -> dict[str, Any]:
        betas = options["betas"]
        if not isinstance(betas, Sequence) or isinstance(betas, str) or len(betas) != 2:
            raise TypeError(f"{where}: betas must be a pair of floats, got {betas!r}")
        checked_betas = []
        for position, beta in enumerate(betas):
            beta = check_real(beta, f"betas[{position}]", where)
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"{where}: betas[{position}] must be in [0, 1), got {beta}")
            checked_betas.append(beta)
        return {
            "lr": check_nonnegative(options["lr"], "lr", where),
            "betas": tuple(checked_betas),
            "eps": check_nonnegative(options["eps"], "eps", where),
            "weight_decay": check_nonnegative(options["weight_decay"], "weight_decay", where),
            "amsgrad": check_bool(options["amsgrad"], "amsgrad", where),
            "maximize": check_bool(options["maximize"], "maximize", where),
            "decoupled_weight_decay": check_bool(options["decoupled_weight_decay"],
                                                 "decoupled_weight_decay", where),
        }

    def _required_state(self, group: dict[str, Any]) -> tuple[str, ...]:
        required = ("step", "exp_avg", "exp_avg_sq")
        return (*required, "max_exp_avg_sq") if group["amsgrad"] else required

    def _step_group(self, group: dict[str, Any]) -> None:
        flat = self._flat_state(group)
        stepping = []
        for param in group["params"]:
            grad = param.grad
            if grad is None:
                continue
            if grad.shape != param.data.shape:
                raise self._grad_shape_error(group, param)
            state = self.state.get(id(param))
            if not state:
                state = self.state[id(param)] = self._new_state(param, flat)
            stepping.append((param, grad, state))
        if not stepping:
            return
        if flat.can_step(stepping, len(group["params"])):
            step = stepping[0][2]["step"] + 1
            for _, _, state in stepping:
                state["step"] = step
            flat.step(stepping, step, group)
            return
        amsgrad = group["amsgrad"]
        for param, grad, state in stepping:
            if amsgrad and "max_exp_avg_sq" not in state:
                state["max_exp_avg_sq"] = np.zeros_like(param.data)
            step = state["step"] = state["step"] + 1
            _adam_update(param.data, grad, state["exp_avg"], state["exp_avg_sq"],
                         state["max_exp_avg_sq"] if amsgrad else None, step, group)

    def _flat_state(self, group: dict[str, Any]) -> _FlatState:
        """The group's flat buffers, rebuilt when its parameters or amsgrad changed."""
        flat = self._flat.get(id(group))
        if flat is None or not flat.matches(group):
            flat = self._flat[id(group)] = _FlatState(group, self.state)
        return flat

    def _new_state(self, param: Tensor, flat: _FlatState) -> dict[str, Any]:
        views = flat.views.get(id(param))
        if views is None:
            views = {name: np.zeros_like(param.data) for name in flat.names}
        return {"step": 0, **views}

    def _state_loaded(self) -> None:
        self._flat.clear()  # rebuilt from the loaded arrays at the next step


def _adam_update(data: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray,
                 exp_avg_sq: np.ndarray, max_exp_avg_sq: np.ndarray | None, step: int,
                 group: dict[str, Any]) -> None:
    """One Adam step on arrays of one shape, in place (``data`` and the moment arrays).

    The operations and their order follow torch's single-tensor Adam
    (torch/optim/adam.py, ``_single_tensor_adam``), so float64 results agree to ~1e-16.
    """
    lr = group["lr"]
    beta1, beta2 = group["betas"]
    weight_decay = group["weight_decay"]
    # ``grad`` is rebound, never written: the caller's .grad array stays as it was.
    if group["maximize"]:
        grad = -grad
    if weight_decay != 0:
        if group["decoupled_weight_decay"]:
            data *= 1.0 - lr * weight_decay
        else:
            grad = grad + weight_decay * data

    _lerp_(exp_avg, grad, 1.0 - beta1)
    exp_avg_sq *= beta2
    exp_avg_sq += (1.0 - beta2) * grad * grad

    # Bias corrections undo the zero initialisation of m and v (Kingma & Ba, §3).
    step_size = lr / (1.0 - beta1**step)
    bias_correction2_sqrt = (1.0 - beta2**step) ** 0.5
    if max_exp_avg_sq is not None:
        np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
        denom = np.sqrt(max_exp_avg_sq)
    else:
        denom = np.sqrt(exp_avg_sq)
    denom /= bias_correction2_sqrt
    denom += group["eps"]
    # θ += -step_size * (m / denom), reusing denom's memory for the update.
    update = np.divide(exp_avg, denom, out=denom)
    update *= -step_size
    data += update


class _FlatState:
    """A group's Adam state in one flat buffer per name; each parameter's arrays are views.

    Why: NumPy spends about a microsecond dispatching each ufunc call, and Adam makes about
    a dozen per step. When every parameter of a group has a gradient, the same step count
    and one dtype, :meth:`step` concatenates the gradients and parameters and runs
    :func:`_adam_update` once over all of them (torch's "multi-tensor" idea), then copies
    the parameters back. Elementwise IEEE operations round the same however the elements
    are laid out, so this gives bitwise the per-parameter result.
    """

    def __init__(self, group: dict[str, Any], state: dict[int, dict[str, Any]]) -> None:
        params = group["params"]
        self.params = list(params)
        self.names = ("exp_avg", "exp_avg_sq") + (
            ("max_exp_avg_sq",) if group["amsgrad"] else ())
        self.views: dict[int, dict[str, np.ndarray]] = {}
        self.spans: list[tuple[int, int]] = []
        self.buffers: dict[str, np.ndarray] = {}
        dtypes = {param.dtype for param in params}
        self.dtype = dtypes.pop() if len(dtypes) == 1 else None
        if self.dtype is None:  # mixed dtypes: per-parameter steps only
            return
        bounds = np.cumsum([0, *(param.size for param in params)]).tolist()
        self.spans = list(itertools.pairwise(bounds))
        self.buffers = {name: np.zeros(bounds[-1], self.dtype) for name in self.names}
        for param, (start, stop) in zip(params, self.spans, strict=True):
            views = {name: self.buffers[name][start:stop].reshape(param.shape)
                     for name in self.names}
            self.views[id(param)] = views
            # Existing state (earlier steps, or a loaded state dict) moves into the buffers.
            param_state = state.get(id(param))
            if param_state:
                for name, view in views.items():
                    if name in param_state:
                        view[...] = param_state[name]
                    param_state[name] = view

    def matches(self, group: dict[str, Any]) -> bool:
        needs_max = group["amsgrad"] and "max_exp_avg_sq" not in self.names
        params = group["params"]
        return (not needs_max and len(params) == len(self.params)
                and all(mine is theirs for mine, theirs in zip(self.params, params)))

    def can_step(self, stepping: list[tuple[Tensor, np.ndarray, dict[str, Any]]],
                 count: int) -> bool:
        if self.dtype is None or len(stepping) != count:
            return False
        step = stepping[0][2]["step"]
        dtype = self.dtype
        return all(state["step"] == step and grad.dtype == dtype
                   for _, grad, state in stepping)

    def step(self, stepping: list[tuple[Tensor, np.ndarray, dict[str, Any]]], step: int,
             group: dict[str, Any]) -> None:
        data = np.concatenate([param.data.reshape(-1) for param, _, _ in stepping])
        grad = np.concatenate([grad.reshape(-1) for _, grad, _ in stepping])
        buffers = self.buffers
        _adam_update(data, grad, buffers["exp_avg"], buffers["exp_avg_sq"],
                     buffers["max_exp_avg_sq"] if group["amsgrad"] else None, step, group)
        for (param, _, _), (start, stop) in zip(stepping, self.spans, strict=True):
            param.data[...] = data[start:stop].reshape(param.shape)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): ``θ *= 1 - lr*λ``.

    The decay shrinks the weights directly instead of entering the moment estimates, so it
    is not rescaled by Adam's per-coordinate step sizes. Parameters are those of
    :class:`Adam`, with ``weight_decay`` defaulting to ``1e-2``.

    >>> from cnnlab import Tensor
    >>> w = Tensor([1.0, 2.0])
    >>> w.grad = np.array([0.5, -1.0])
    >>> AdamW([w], lr=0.1).step()
    >>> w.data.round(6)
    array([0.899, 2.098])
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize,
                         decoupled_weight_decay=True)

    def _check_options(self, options: dict[str, Any], where: str) -> dict[str, Any]:
        checked = super()._check_options(options, where)
        # AdamW is Adam with this flag fixed, as torch's AdamW.__setstate__ forces it.
        checked["decoupled_weight_decay"] = True
        return checked
