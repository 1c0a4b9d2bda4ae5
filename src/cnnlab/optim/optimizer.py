"""The optimizer base class: parameter groups, gradient reset, pickle-free state dicts.

An optimizer updates each parameter's ``.data`` array **in place** from its ``.grad``
(parameters whose ``.grad`` is None are skipped), so every module holding the parameter sees
the new values. Hyperparameters live in ``param_groups``, a list of dicts as in PyTorch, so a
learning-rate scheduler changes ``group["lr"]`` between steps.

The state dict is flat, ``dict[str, np.ndarray | int | float]``, ready for safetensors or
``np.savez`` next to the model weights:

- ``"group.{g}.params"``: int64 indices of group ``g``'s parameters (numbered over all groups
  in order, as in PyTorch);
- ``"group.{g}.{option}"``: a hyperparameter (bools as 0/1 ints, tuples such as ``betas`` as
  float64 arrays);
- ``"state.{i}.{name}"``: per-parameter state of parameter ``i``, an array of the parameter's
  shape (``exp_avg``, ``momentum_buffer``, ...) or an int (``step``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from ..autograd import Tensor

__all__ = ["Optimizer"]

StateValue = np.ndarray | int | float
ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def check_real(value: Any, name: str, where: str) -> float:
    """``value`` as a Python float, or TypeError naming ``where`` and ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{where}: {name} must be a real number, got {_describe(value)}")
    return float(value)


def check_nonnegative(value: Any, name: str, where: str) -> float:
    """``value`` as a float >= 0; ``not value >= 0`` also rejects NaN, as PyTorch does."""
    value = check_real(value, name, where)
    if not value >= 0.0:
        raise ValueError(f"{where}: {name} must be >= 0, got {value}")
    return value


def check_bool(value: Any, name: str, where: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{where}: {name} must be a bool, got {_describe(value)}")
    return bool(value)


class Optimizer:
    """Base class: holds parameter groups and per-parameter state; subclasses update.

    Parameters
    ----------
    params : iterable of Tensor, or iterable of dict
        Parameters to optimize, or parameter groups: dicts with a ``"params"`` entry (a list
        of Tensors) and any hyperparameters overriding ``defaults`` for that group.
    defaults : dict
        Default hyperparameters, used for every group that does not set its own.

    Attributes
    ----------
    param_groups : list of dict
        One dict per group: ``"params"`` (list of Tensor) and every hyperparameter.
    state : dict
        ``state[id(param)]`` is that parameter's state dict (empty until its first step).
    defaults : dict
        The default hyperparameters.

    Subclasses implement ``_step_group(group)`` and ``_check_options(options, where)``; they
    list their per-parameter state names in ``_state_names`` and the names that must be
    present together in ``_required_state(group)``.
    """

    _state_names: tuple[str, ...] = ()

    def __init__(self, params: ParamsT, defaults: dict[str, Any]) -> None:
        name = type(self).__name__
        self.defaults: dict[str, Any] = self._check_options(dict(defaults), name)
        self.state: dict[int, dict[str, Any]] = {}
        self.param_groups: list[dict[str, Any]] = []
        if isinstance(params, Tensor):
            raise TypeError(
                f"{name}: params must be an iterable of Tensors or of dicts, got a single "
                f"Tensor; wrap it in a list"
            )
        if isinstance(params, (set, frozenset)):
            raise TypeError(f"{name}: params must be an ordered iterable (list), got a set")
        groups = list(params)
        if not groups:
            raise ValueError(f"{name}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- groups -------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Append a group: fill missing hyperparameters from ``defaults``, then validate.

        Raises
        ------
        TypeError
            If the group is not a dict or holds something other than Tensors.
        ValueError
            If it names an unknown option, repeats a parameter, shares one with another
            group, or has an invalid hyperparameter.
        """
        name = type(self).__name__
        index = len(self.param_groups)
        where = f"{name} param_groups[{index}]"
        if not isinstance(param_group, dict):
            raise TypeError(f"{where}: a param group must be a dict, got {_describe(param_group)}")
        if "params" not in param_group:
            raise ValueError(f"{where}: a param group needs a 'params' entry")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, (set, frozenset)):
            raise TypeError(f"{where}: params must be an ordered iterable (list), got a set")
        else:
            params = list(params)
        for position, param in enumerate(params):
            if not isinstance(param, Tensor):
                raise TypeError(
                    f"{where}: params[{position}] must be a cnnlab Tensor, "
                    f"got {type(param).__name__}"
                )
        unknown = sorted(set(param_group) - set(self.defaults) - {"params"})
        if unknown:
            raise ValueError(
                f"{where}: unknown option(s) {unknown}; expected some of {sorted(self.defaults)}"
            )
        ids = [id(p) for p in params]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{where}: a parameter appears more than once in the group")
        taken = {id(p) for group in self.param_groups for p in group["params"]}
        if taken.intersection(ids):
            raise ValueError(f"{where}: some parameters appear in more than one parameter group")
        options = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        self.param_groups.append({"params": params, **self._check_options(options, where)})

    def _check_options(self, options: dict[str, Any], where: str) -> dict[str, Any]:
        """Validate and normalise one group's hyperparameters (Python floats and bools)."""
        raise NotImplementedError

    def _required_state(self, group: dict[str, Any]) -> tuple[str, ...]:
        """State names a parameter must have all of, once it has any state."""
        return ()

    # -- stepping -----------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset every parameter's gradient: to None (default) or to zeros in place."""
        for group in self.param_groups:
            for param in group["params"]:
                if set_to_none:
                    param.grad = None
                elif param.grad is not None:
                    param.grad[...] = 0

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; return ``closure()`` if given.

        ``closure`` re-evaluates the model and returns the loss (PyTorch's protocol); it is
        called before the update.
        """
        loss = None if closure is None else closure()
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    def _grad_shape_error(self, group: dict[str, Any], param: Tensor) -> ValueError:
        g = self.param_groups.index(group)
        i = next(k for k, p in enumerate(group["params"]) if p is param)
        return ValueError(
            f"{type(self).__name__}.step: param_groups[{g}]['params'][{i}].grad has shape "
            f"{param.grad.shape}, expected the parameter's shape {param.shape}"
        )

    # -- state dict -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, StateValue]:
        """A flat, pickle-free snapshot (arrays are copies); see the module docstring."""
        out: dict[str, StateValue] = {}
        index = 0
        for g, group in enumerate(self.param_groups):
            count = len(group["params"])
            out[f"group.{g}.params"] = np.arange(index, index + count, dtype=np.int64)
            for option, value in group.items():
                if option != "params":
                    out[f"group.{g}.{option}"] = _encode_option(value, f"group.{g}.{option}")
            for param in group["params"]:
                for name, value in self.state.get(id(param), {}).items():
                    key = f"state.{index}.{name}"
                    out[key] = value.copy() if isinstance(value, np.ndarray) else int(value)
                index += 1
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyperparameters and state saved by :meth:`state_dict`.

        Everything is validated before anything changes. Arrays are copied and cast to their
        parameter's dtype.

        Raises
        ------
        ValueError
            Naming the offending key: a different number of groups or of parameters per
            group, an array whose shape differs from its parameter's, an unknown key or state
            name, a missing hyperparameter, or incomplete state for a parameter.
        """
        fn = f"{type(self).__name__}.load_state_dict"
        params = [p for group in self.param_groups for p in group["params"]]
        group_values: list[dict[str, Any]] = [{} for _ in self.param_groups]
        state_values: dict[int, dict[str, Any]] = {}
        for key, value in state_dict.items():
            parts = key.split(".")
            if len(parts) != 3 or parts[0] not in ("group", "state") or not parts[1].isdigit():
                raise ValueError(
                    f"{fn}: unexpected key {key!r}; expected 'group.<g>.<option>' "
                    f"or 'state.<i>.<name>'"
                )
            kind, number, name = parts[0], int(parts[1]), parts[2]
            if kind == "group":
                if number >= len(self.param_groups):
                    raise ValueError(
                        f"{fn}: key {key!r} names param group {number}, but the optimizer has "
                        f"{len(self.param_groups)} group(s)"
                    )
                group_values[number][name] = value
            else:
                if number >= len(params):
                    raise ValueError(
                        f"{fn}: key {key!r} names parameter {number}, but the optimizer has "
                        f"{len(params)} parameter(s)"
                    )
                state_values.setdefault(number, {})[name] = value

        new_groups = []
        first = 0
        for g, (group, saved) in enumerate(zip(self.param_groups, group_values, strict=True)):
            new_groups.append(self._decode_group(fn, g, group, saved, first))
            first += len(group["params"])

        new_state: dict[int, dict[str, Any]] = {}
        owner = [g for g, group in enumerate(new_groups) for _ in group["params"]]
        for i, saved in sorted(state_values.items()):
            param = params[i]
            state: dict[str, Any] = {}
            for name, value in saved.items():
                key = f"state.{i}.{name}"
                if name not in self._state_names:
                    raise ValueError(
                        f"{fn}: unknown state {key!r}; {type(self).__name__} keeps "
                        f"{list(self._state_names)}"
                    )
                if name == "step":
                    state[name] = _decode_int(fn, key, value)
                    continue
                array = np.asarray(value)
                if array.shape != param.shape:
                    raise ValueError(
                        f"{fn}: {key!r} has shape {array.shape}, but parameter {i} has shape "
                        f"{param.shape}"
                    )
                state[name] = np.array(array, dtype=param.dtype, copy=True)
            missing = [n for n in self._required_state(new_groups[owner[i]]) if n not in state]
            if missing:
                raise ValueError(
                    f"{fn}: state of parameter {i} is incomplete: missing "
                    f"{[f'state.{i}.{n}' for n in missing]}"
                )
            new_state[id(param)] = state

        for group, new in zip(self.param_groups, new_groups, strict=True):
            group.update(new)
        self.state = new_state
        self._state_loaded()

    def _state_loaded(self) -> None:
        """Hook: ``self.state`` was just replaced by :meth:`load_state_dict`."""

    def _decode_group(self, fn: str, g: int, group: dict[str, Any], saved: dict[str, Any],
                      first: int) -> dict[str, Any]:
        """One group's saved options, checked against the live group, as Python values."""
        key = f"group.{g}.params"
        if "params" not in saved:
            raise ValueError(f"{fn}: missing key {key!r}")
        indices = np.asarray(saved["params"]).reshape(-1)
        expected = np.arange(first, first + len(group["params"]))
        if indices.shape != expected.shape or not np.array_equal(indices, expected):
            raise ValueError(
                f"{fn}: {key!r} lists {indices.size} parameter(s) {indices.tolist()}, but "
                f"param_groups[{g}] holds {expected.size}: {expected.tolist()}"
            )
        missing = [f"group.{g}.{name}" for name in self.defaults if name not in saved]
        if missing:
            raise ValueError(f"{fn}: missing key(s) {missing}")
        options: dict[str, Any] = {}
        for name, value in saved.items():
            if name != "params":
                options[name] = _decode_option(fn, f"group.{g}.{name}", value, group.get(name))
        known = {name: options[name] for name in self.defaults}
        options.update(self._check_options(known, f"{fn}: group {g}"))
        return {"params": group["params"], **options}

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for g, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {g}")
            lines.extend(f"    {k}: {group[k]}" for k in sorted(group) if k != "params")
        lines.append(")")
        return "\n".join(lines)


def _encode_option(value: Any, key: str) -> StateValue:
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (tuple, list)):
        return np.array(value, dtype=np.float64)
    raise TypeError(
        f"Optimizer.state_dict: option {key!r} must be a number, bool or tuple of numbers to "
        f"be saved, got {_describe(value)}"
    )


def _decode_int(fn: str, key: str, value: Any) -> int:
    number = np.asarray(value)
    if number.shape != () or number.dtype.kind not in "iuf" or number != np.round(number):
        raise ValueError(f"{fn}: {key!r} must be an integer scalar, got {_describe(value)}")
    return int(number)


def _decode_option(fn: str, key: str, value: Any, current: Any) -> Any:
    """A saved option as the Python type of the live one (bool, tuple, int or float)."""
    array = np.asarray(value)
    if isinstance(current, (tuple, list)):
        if array.shape != (len(current),):
            raise ValueError(
                f"{fn}: {key!r} has shape {array.shape}, expected ({len(current)},)"
            )
        return tuple(float(v) for v in array)
    if array.shape != () or array.dtype.kind not in "biuf":
        raise ValueError(f"{fn}: {key!r} must be a number, got {_describe(value)}")
    if isinstance(current, (bool, np.bool_)):
        return bool(array)
    if array.dtype.kind in "biu":
        return int(array)
    return float(array)
