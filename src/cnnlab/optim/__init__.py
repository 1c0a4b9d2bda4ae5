"""Optimizers, learning-rate schedules and gradient clipping, with PyTorch's names and maths.

Optimizers update each parameter's ``.data`` in place from its ``.grad``; schedulers in
:mod:`cnnlab.optim.lr_scheduler` set ``param_groups[g]["lr"]`` between steps. State dicts
are flat ``dict[str, np.ndarray | int | float]`` so they save with the model (no pickle).

>>> import numpy as np
>>> from cnnlab import Tensor
>>> w = Tensor(np.zeros(2))
>>> optimizer = SGD([w], lr=0.5, momentum=0.9)
>>> w.grad = np.array([1.0, -2.0])
>>> optimizer.step()
>>> optimizer.zero_grad()
>>> w.data, w.grad
(array([-0.5,  1. ]), None)
"""

from . import lr_scheduler
from .adam import Adam, AdamW
from .clip import clip_grad_norm_, clip_grad_value_
from .optimizer import Optimizer
from .sgd import SGD

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Optimizer",
    "clip_grad_norm_",
    "clip_grad_value_",
    "lr_scheduler",
]
