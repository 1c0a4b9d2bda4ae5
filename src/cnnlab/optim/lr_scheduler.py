"""Learning-rate schedules that set ``group["lr"]`` between optimizer steps, as torch's.

Each scheduler takes one step at construction (``last_epoch`` becomes 0 and the step-0
learning rates are written into the optimizer), then one per :meth:`LRScheduler.step`, which
you call after ``optimizer.step()``. The value sequences equal ``torch.optim.lr_scheduler``'s
exactly: :class:`StepLR` and :class:`CosineAnnealingLR` use torch's recursive ("chainable")
updates of the current ``group["lr"]``, :class:`OneCycleLR` torch's closed form.

State dicts hold progress only (plain numbers: ``last_epoch``, ``base_lrs.{g}``,
``last_lr.{g}``); hyperparameters come from the constructor, so a resumed run rebuilds the
scheduler from its config, then loads the optimizer's and the scheduler's state.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..ops._args import check_choice
from .optimizer import Optimizer, check_bool, check_real

__all__ = ["CosineAnnealingLR", "LRScheduler", "OneCycleLR", "StepLR"]


def _check_positive_int(value: Any, name: str, where: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{where}: {name} must be a positive int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{where}: {name} must be a positive int, got {value}")
    return int(value)


def _per_group(value: Any, name: str, optimizer: Optimizer, where: str) -> list[float]:
    """A number for every param group: broadcast a scalar, or check a list's length."""
    count = len(optimizer.param_groups)
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != count:
            raise ValueError(
                f"{where}: {name} must have one value per param group ({count}), "
                f"got {len(value)}"
            )
        return [check_real(v, f"{name}[{g}]", where) for g, v in enumerate(value)]
    return [check_real(value, name, where)] * count


class LRScheduler:
    """Base class: subclasses compute the next learning rates in :meth:`get_lr`.

    Parameters
    ----------
    optimizer : Optimizer
        Its ``param_groups[g]["lr"]`` are overwritten at every step. Each group's first
        ``lr`` is kept as ``group["initial_lr"]`` (unless already set) and in ``base_lrs``.

    Attributes
    ----------
    last_epoch : int
        Number of :meth:`step` calls since construction (0 right after it).
    base_lrs : list of float
        The initial learning rate of each param group.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{type(self).__name__}: optimizer must be a cnnlab Optimizer, "
                f"got {type(optimizer).__name__}"
            )
        self.optimizer = optimizer
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs: list[float] = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = -1
        self._last_lr: list[float] = []
        self.step()

    def get_lr(self) -> list[float]:
        """The learning rates for step ``last_epoch`` (called by :meth:`step`; read the
        current ones with :meth:`get_last_lr`)."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one step and write the new learning rates into the optimizer."""
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The learning rate of each param group set by the latest :meth:`step`."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, int | float]:
        """Progress as plain numbers: ``last_epoch``, ``base_lrs.{g}``, ``last_lr.{g}``."""
        out: dict[str, int | float] = {"last_epoch": self.last_epoch}
        out.update({f"base_lrs.{g}": float(lr) for g, lr in enumerate(self.base_lrs)})
        out.update({f"last_lr.{g}": float(lr) for g, lr in enumerate(self._last_lr)})
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore progress saved by :meth:`state_dict` and re-apply its learning rates.

        Writing ``last_lr`` back into the optimizer makes the result independent of whether
        the optimizer's own state was loaded before or after this call.

        Raises
        ------
        ValueError
            Naming the key: a missing or unknown key, or a non-numeric value.
        """
        fn = f"{type(self).__name__}.load_state_dict"
        count = len(self.optimizer.param_groups)
        expected = ["last_epoch", *(f"{name}.{g}" for name in ("base_lrs", "last_lr")
                                    for g in range(count))]
        unknown = sorted(set(state_dict) - set(expected))
        if unknown:
            raise ValueError(
                f"{fn}: unexpected key(s) {unknown} (the optimizer has {count} param group(s))"
            )
        missing = [key for key in expected if key not in state_dict]
        if missing:
            raise ValueError(f"{fn}: missing key(s) {missing}")
        values = {}
        for key in expected:
            array = np.asarray(state_dict[key])
            if array.shape != () or array.dtype.kind not in "iuf":
                raise ValueError(f"{fn}: {key!r} must be a number, got {state_dict[key]!r}")
            values[key] = array.item()
        if values["last_epoch"] != int(values["last_epoch"]):
            raise ValueError(f"{fn}: 'last_epoch' must be an integer, got {values['last_epoch']}")
        self.last_epoch = int(values["last_epoch"])
        self.base_lrs = [float(values[f"base_lrs.{g}"]) for g in range(count)]
        self._last_lr = [float(values[f"last_lr.{g}"]) for g in range(count)]
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr
        self._after_load()

    def _after_load(self) -> None:
        """Hook: re-apply any other optimizer option the schedule owns."""


class StepLR(LRScheduler):
    """Multiply each group's learning rate by ``gamma`` every ``step_size`` steps.

    ``lr_t = lr_0 * gamma ** (t // step_size)``, computed as torch does by multiplying the
    current ``group["lr"]`` by ``gamma`` when ``t`` is a positive multiple of ``step_size``.

    Parameters
    ----------
    optimizer : Optimizer
        Wrapped optimizer.
    step_size : int
        Period of the decay, in steps (> 0).
    gamma : float
        Multiplicative factor of the decay.

    >>> from cnnlab import Tensor
    >>> from cnnlab.optim import SGD
    >>> scheduler = StepLR(SGD([Tensor([0.0])], lr=1.0), step_size=2, gamma=0.5)
    >>> for _ in range(4):
    ...     scheduler.step()
    >>> scheduler.get_last_lr()
    [0.25]
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = _check_positive_int(step_size, "step_size", "StepLR")
        self.gamma = check_real(gamma, "gamma", "StepLR")
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return [group["lr"] for group in groups]
        return [group["lr"] * self.gamma for group in groups]


class CosineAnnealingLR(LRScheduler):
    r"""Anneal each group's learning rate along a half cosine from ``base_lr`` to ``eta_min``.

    The target is SGDR's schedule without restarts (Loshchilov & Hutter, 2017, eq. 5)::

        lr_t = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2

    computed, as torch does, recursively from the current ``group["lr"]``::

        lr_t = eta_min + (lr_{t-1} - eta_min) * ratio_t
        ratio_t = (1 + cos(pi t / T_max)) / (1 + cos(pi (t - 1) / T_max))

    The two agree to within 1e-14 relative over two full periods for ``T_max`` up to 6000
    (measured: 6e-16 at 50, 8e-15 at 6000). Past ``T_max`` the rate rises again (period
    ``2 * T_max``), as in torch.

    Parameters
    ----------
    optimizer : Optimizer
        Wrapped optimizer.
    T_max : int
        Number of steps of the half cycle (> 0).
    eta_min : float
        Minimum learning rate.

    >>> from cnnlab import Tensor
    >>> from cnnlab.optim import SGD
    >>> scheduler = CosineAnnealingLR(SGD([Tensor([0.0])], lr=1.0), T_max=4)
    >>> for _ in range(2):
    ...     scheduler.step()
    >>> round(scheduler.get_last_lr()[0], 12)
    0.5
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self.T_max = _check_positive_int(T_max, "T_max", "CosineAnnealingLR")
        self.eta_min = check_real(eta_min, "eta_min", "CosineAnnealingLR")
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        t, T_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        if t == 0:
            return [group["lr"] for group in groups]
        if (t - 1 - T_max) % (2 * T_max) == 0:
            # Leaving the minimum, the ratio below would divide by 1 + cos(pi) = 0; torch
            # adds the closed-form increment instead.
            rise = (1 - math.cos(math.pi / T_max)) / 2
            return [group["lr"] + (base_lr - eta_min) * rise
                    for base_lr, group in zip(self.base_lrs, groups, strict=True)]
        ratio = (1 + math.cos(math.pi * t / T_max)) / (1 + math.cos(math.pi * (t - 1) / T_max))
        return [ratio * (group["lr"] - eta_min) + eta_min for group in groups]


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin, 2018): warm up to ``max_lr``, then anneal far below.

    Per group, ``initial_lr = max_lr / div_factor`` and ``min_lr = initial_lr /
    final_div_factor``. Two phases (default): ``initial_lr -> max_lr`` over the first
    ``pct_start * total_steps - 1`` steps, then ``max_lr -> min_lr`` until step
    ``total_steps - 1``. With ``three_phase``: up, back down to ``initial_lr`` symmetrically,
    then down to ``min_lr``. Each phase is annealed by half a cosine or linearly.

    With ``cycle_momentum`` (default, as in torch) the momentum (SGD's ``momentum`` or Adam's
    ``beta1``) moves inversely, between ``max_momentum`` and ``base_momentum``. Note this
    turns on momentum for an ``SGD`` built with ``momentum=0``, as torch does.

    Parameters
    ----------
    optimizer : Optimizer
        Wrapped optimizer.
    max_lr : float or list of float
        Peak learning rate, one for all groups or one per group.
    total_steps : int, optional
        Number of steps in the cycle; or give ``epochs`` and ``steps_per_epoch``.
    epochs, steps_per_epoch : int, optional
        ``total_steps = epochs * steps_per_epoch`` when ``total_steps`` is None.
    pct_start : float
        Fraction of the cycle spent increasing the learning rate, in [0, 1].
    anneal_strategy : {'cos', 'linear'}
        Shape of each phase.
    cycle_momentum : bool
        Cycle the momentum inversely to the learning rate.
    base_momentum, max_momentum : float or list of float
        Momentum at the peak and at the ends of the cycle.
    div_factor : float
        ``initial_lr = max_lr / div_factor``.
    final_div_factor : float
        ``min_lr = initial_lr / final_div_factor``.
    three_phase : bool
        Use the three-phase schedule.

    Raises
    ------
    ValueError
        From :meth:`step`, when stepping beyond ``total_steps``.

    >>> from cnnlab import Tensor
    >>> from cnnlab.optim import SGD
    >>> optimizer = SGD([Tensor([0.0])], lr=1.0, momentum=0.9)
    >>> scheduler = OneCycleLR(optimizer, max_lr=1.0, total_steps=10)
    >>> lrs = [scheduler.get_last_lr()[0]]
    >>> for _ in range(9):
    ...     scheduler.step()
    ...     lrs.append(scheduler.get_last_lr()[0])
    >>> [round(lr, 3) for lr in lrs]
    [0.04, 0.52, 1.0, 0.95, 0.812, 0.611, 0.389, 0.188, 0.05, 0.0]
    """

    def __init__(self, optimizer: Optimizer, max_lr: float | list[float],
                 total_steps: int | None = None, epochs: int | None = None,
                 steps_per_epoch: int | None = None, pct_start: float = 0.3,
                 anneal_strategy: str = "cos", cycle_momentum: bool = True,
                 base_momentum: float | list[float] = 0.85,
                 max_momentum: float | list[float] = 0.95, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, three_phase: bool = False) -> None:
        where = "OneCycleLR"
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"{where}: optimizer must be a cnnlab Optimizer, got {type(optimizer).__name__}"
            )
        if total_steps is not None:
            self.total_steps = _check_positive_int(total_steps, "total_steps", where)
        elif epochs is not None and steps_per_epoch is not None:
            epochs = _check_positive_int(epochs, "epochs", where)
            steps_per_epoch = _check_positive_int(steps_per_epoch, "steps_per_epoch", where)
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError(f"{where}: give either total_steps or both epochs and "
                             f"steps_per_epoch, got total_steps=None, epochs={epochs}, "
                             f"steps_per_epoch={steps_per_epoch}")
        pct_start = check_real(pct_start, "pct_start", where)
        if not 0.0 <= pct_start <= 1.0:
            raise ValueError(f"{where}: pct_start must be in [0, 1], got {pct_start}")
        check_choice(anneal_strategy, ("cos", "linear"), "anneal_strategy", where)
        self.anneal_strategy = anneal_strategy
        self.three_phase = check_bool(three_phase, "three_phase", where)
        self.cycle_momentum = check_bool(cycle_momentum, "cycle_momentum", where)
        div_factor = check_real(div_factor, "div_factor", where)
        final_div_factor = check_real(final_div_factor, "final_div_factor", where)

        # Phases as (end_step, start key, end key, start momentum key, end momentum key);
        # the keys name entries of each param group, as in torch.
        up_end = float(pct_start * self.total_steps) - 1
        if self.three_phase:
            self._phases = [
                (up_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (float(2 * pct_start * self.total_steps) - 2, "max_lr", "initial_lr",
                 "base_momentum", "max_momentum"),
                (self.total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum"),
            ]
        else:
            self._phases = [
                (up_end, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                (self.total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum"),
            ]

        groups = optimizer.param_groups
        for group, peak in zip(groups, _per_group(max_lr, "max_lr", optimizer, where),
                               strict=True):
            group["initial_lr"] = peak / div_factor
            group["max_lr"] = peak
            group["min_lr"] = group["initial_lr"] / final_div_factor
        if self.cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ValueError(
                    f"{where}: cycle_momentum=True needs an optimizer with 'momentum' or "
                    f"'betas', got {type(optimizer).__name__}"
                )
            self._use_beta1 = "betas" in optimizer.defaults
            highs = _per_group(max_momentum, "max_momentum", optimizer, where)
            lows = _per_group(base_momentum, "base_momentum", optimizer, where)
            for group, high, low in zip(groups, highs, lows, strict=True):
                group["max_momentum"] = high
                group["base_momentum"] = low
                self._set_momentum(group, high)
        super().__init__(optimizer)

    def _set_momentum(self, group: dict[str, Any], momentum: float) -> None:
        if self._use_beta1:
            group["betas"] = (momentum, *group["betas"][1:])
        else:
            group["momentum"] = momentum

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _values_at(self, step: int, group: dict[str, Any]) -> tuple[float, float | None]:
        """(lr, momentum or None) of ``group`` at ``step``, torch's phase interpolation.

        The phase is the first whose end is >= ``step`` (the last one catches the rest);
        ``pct`` runs from 0 at the previous phase's end to 1 at this one's.
        """
        index, start_step = 0, 0.0
        while index < len(self._phases) - 1 and step > self._phases[index][0]:
            start_step = self._phases[index][0]
            index += 1
        end_step, lr_start, lr_end, momentum_start, momentum_end = self._phases[index]
        if end_step == start_step:
            raise ValueError(
                f"OneCycleLR.step: phase {index} of the schedule is empty at step {step} "
                f"(total_steps={self.total_steps}); choose another pct_start"
            )
        pct = (step - start_step) / (end_step - start_step)
        lr = self._anneal(group[lr_start], group[lr_end], pct)
        if not self.cycle_momentum:
            return lr, None
        return lr, self._anneal(group[momentum_start], group[momentum_end], pct)

    def get_lr(self) -> list[float]:
        if self.last_epoch > self.total_steps:
            raise ValueError(
                f"OneCycleLR.step: tried to step {self.last_epoch} times, but total_steps is "
                f"{self.total_steps}"
            )
        lrs = []
        for group in self.optimizer.param_groups:
            lr, momentum = self._values_at(self.last_epoch, group)
            lrs.append(lr)
            if momentum is not None:
                self._set_momentum(group, momentum)
        return lrs

    def _after_load(self) -> None:
        if self.cycle_momentum and 0 <= self.last_epoch <= self.total_steps:
            for group in self.optimizer.param_groups:
                _, momentum = self._values_at(self.last_epoch, group)
                self._set_momentum(group, momentum)
