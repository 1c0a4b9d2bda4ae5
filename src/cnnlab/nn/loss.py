"""Loss layers: ``CrossEntropyLoss``, ``NLLLoss``, ``MSELoss``, ``BCEWithLogitsLoss``.

Options after the first are keyword-only: PyTorch's second positional argument is the
deprecated ``size_average``, so a positional call would silently mean something else.
Class / element weights are buffers (in ``state_dict`` as ``weight``, ``pos_weight``), as in
PyTorch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from ..ops._args import check_choice
from .module import Module


def _check_reduction(reduction: str, owner: str) -> str:
    return check_choice(reduction, F.REDUCTIONS, "reduction", owner)


def _buffer(value: Any) -> np.ndarray | None:
    return None if value is None else np.array(getattr(value, "data", value), copy=True)


class CrossEntropyLoss(Module):
    """Cross-entropy of logits (N, C, *d) against class indices (N, *d); see
    :func:`cnnlab.functional.cross_entropy`.

    >>> float(CrossEntropyLoss()(np.zeros((2, 4)), np.array([0, 3]))) == float(np.log(4))
    True
    """

    def __init__(self, weight: Any = None, *, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weight", _buffer(weight))
        self.ignore_index = ignore_index
        self.reduction = _check_reduction(reduction, "CrossEntropyLoss")
        self.label_smoothing = label_smoothing

    def forward(self, input: Any, target: Any) -> Any:
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index,
                               reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(Module):
    """Negative log-likelihood of log-probabilities; see :func:`cnnlab.functional.nll_loss`."""

    def __init__(self, weight: Any = None, *, ignore_index: int = -100,
                 reduction: str = "mean") -> None:
        super().__init__()
        self.register_buffer("weight", _buffer(weight))
        self.ignore_index = ignore_index
        self.reduction = _check_reduction(reduction, "NLLLoss")

    def forward(self, input: Any, target: Any) -> Any:
        return F.nll_loss(input, target, self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction)


class MSELoss(Module):
    """Mean squared error; see :func:`cnnlab.functional.mse_loss`."""

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _check_reduction(reduction, "MSELoss")

    def forward(self, input: Any, target: Any) -> Any:
        return F.mse_loss(input, target, reduction=self.reduction)


class BCEWithLogitsLoss(Module):
    """Sigmoid + binary cross-entropy, fused and stable; see
    :func:`cnnlab.functional.binary_cross_entropy_with_logits`."""

    def __init__(self, weight: Any = None, *, reduction: str = "mean",
                 pos_weight: Any = None) -> None:
        super().__init__()
        self.register_buffer("weight", _buffer(weight))
        self.register_buffer("pos_weight", _buffer(pos_weight))
        self.reduction = _check_reduction(reduction, "BCEWithLogitsLoss")

    def forward(self, input: Any, target: Any) -> Any:
        return F.binary_cross_entropy_with_logits(input, target, self.weight,
                                                  reduction=self.reduction,
                                                  pos_weight=self.pos_weight)
