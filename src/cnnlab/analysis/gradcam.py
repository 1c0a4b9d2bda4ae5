"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization"), for 1-D and 2-D inputs, on any convolution layer.

For the class score ``y_c`` and a layer's feature maps ``A_k``, each map is weighted by
its gradient averaged over positions, ``alpha_k = mean_u dy_c / dA_k[u]``, and the map is
``ReLU(sum_k alpha_k A_k)`` at the layer's resolution. It is brought to the input's grid by
placing each unit at the centre of its receptive field (``start + i * jump``,
:func:`~.receptive.receptive_fields`) and interpolating linearly, so a strided layer's map
lines up with the input it looked at.

The gradient with respect to the layer's output is taken without touching the model: a
forward hook hands the rest of the network a copy of the layer's output that is a leaf of
the graph, and ``grad`` (cnnlab's or torch's) differentiates the score with respect to it;
no parameter's ``.grad`` is written. The model runs in eval mode, its modes restored after.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..autograd import Tensor, grad
from ._torch import is_torch_module
from .graph import Capture, evaluating, one_input
from .receptive import graph_fields


@dataclass(frozen=True)
class GradCAM:
    """``map``: the class-discriminative map on the input's spatial grid, scaled to
    [0, 1] (all zeros where nothing speaks for the class); ``coarse``: the same at the
    layer's resolution, before scaling; ``layer`` (module path), ``target`` (the class)
    and ``score`` (the model's score for it)."""

    map: np.ndarray
    coarse: np.ndarray
    layer: str
    target: int
    score: float

    def __str__(self) -> str:
        return (f"Grad-CAM of class {self.target} (score {self.score:.3g}) at {self.layer}: "
                f"{self.coarse.shape} -> {self.map.shape}")


def _module(model: Any, path: str) -> Any:
    modules = dict(model.named_modules())
    if path not in modules:
        raise ValueError(f"grad_cam: layer must name a module of the model, got {path!r}")
    return modules[path]


def _upsample(coarse: np.ndarray, starts: Sequence[float], jumps: Sequence[float],
              spatial: Sequence[int]) -> np.ndarray:
    """Linear interpolation of a map whose unit i sits at ``start + i * jump``, onto the
    input's pixel grid (constant beyond the outermost units)."""
    result = coarse
    for axis, (start, jump, n) in enumerate(zip(starts, jumps, spatial)):
        m = result.shape[axis]
        centres = start + jump * np.arange(m)
        # the interpolation as a matrix (n, m): column j is unit j's hat function
        weights = np.stack([np.interp(np.arange(n), centres, column)
                            for column in np.eye(m)], axis=1)
        result = np.moveaxis(np.tensordot(weights, result, axes=([1], [axis])), 0, axis)
    return result


def grad_cam(model: Any, x: np.ndarray, *, layer: str | None = None,
             target: int | None = None) -> GradCAM:
    """Grad-CAM of one input ``x`` ((C, L) or (C, H, W), no batch axis) at ``layer`` (a
    module path as :func:`~.graph.trace` names it, or a row name such as "conv2:conv";
    default: the last convolution) for class ``target`` (default: the predicted one).
    The model must output (1, classes) scores; cnnlab or torch."""
    fn = "grad_cam"
    x = one_input(x, fn)
    capture = Capture(model, fn)
    batch = x[None].astype(capture.dtype())
    with evaluating(model):
        graph = capture.run(batch).graph
    convs = [n for n in graph if n.op in ("conv", "conv_transpose") and n.module]
    if layer is None:
        if not convs:
            raise ValueError(f"{fn}: the model has no convolution layer")
        node = convs[-1]
    else:
        path = layer.split(":", 1)[0]
        found = [n for n in graph if n.module == path and len(n.output_shape) == x.ndim + 1]
        if not found:
            names = sorted({n.module for n in graph if n.module
                            and len(n.output_shape) == x.ndim + 1})
            raise ValueError(f"{fn}: layer must name a module with spatial output, one of "
                             f"{names}, got {layer!r}")
        node = found[-1]
    module = _module(model, node.module)
    kept: dict[str, Any] = {}

    def swap_in_leaf(_module: Any, _inputs: Any, output: Any) -> Any:
        if is_torch_module(model):
            leaf = output.detach().requires_grad_(True)
        else:
            leaf = Tensor(np.array(output.data), requires_grad=True)
        kept["leaf"] = leaf
        return leaf

    with evaluating(model):
        handle = module.register_forward_hook(swap_in_leaf)
        try:
            scores, gradient = _scores_and_gradient(model, batch, kept, target, fn)
        finally:
            handle.remove()
    target_class = int(np.argmax(scores[0])) if target is None else int(target)
    activation = np.asarray(kept["activation"])[0]  # (K, *spatial)
    weights = gradient[0].reshape(gradient.shape[1], -1).mean(axis=1)
    coarse = np.maximum(np.tensordot(weights, activation, axes=1), 0.0)
    fields = graph_fields(graph, strict=False)
    row = fields.rows[node.index]
    if row.jump is None or row.start is None:
        raise ValueError(f"{fn}: {node.name} has no receptive-field arithmetic "
                         f"({row.reason})")
    full = _upsample(coarse, row.start, row.jump, x.shape[1:])
    peak = float(full.max())
    return GradCAM(full / peak if peak > 0 else full, coarse, node.module, target_class,
                   float(scores[0, target_class]))


def _scores_and_gradient(model: Any, batch: np.ndarray, kept: dict[str, Any],
                         target: int | None, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """The scores, and d score[target] / d (the hooked layer's output)."""
    if is_torch_module(model):
        import torch

        from ._torch import torch_input

        with torch.enable_grad():
            out = model(torch_input(model, batch))
            scores = out.detach().cpu().numpy()
            _check_scores(scores, fn)
            chosen = int(np.argmax(scores[0])) if target is None else int(target)
            _check_target(chosen, scores, fn)
            (g,) = torch.autograd.grad(out[0, chosen], kept["leaf"])
        kept["activation"] = kept["leaf"].detach().cpu().numpy()
        return scores, g.detach().cpu().numpy()
    from ..autograd import enable_grad

    with enable_grad():
        out = model(Tensor(batch))
        scores = np.asarray(out.data)
        _check_scores(scores, fn)
        chosen = int(np.argmax(scores[0])) if target is None else int(target)
        _check_target(chosen, scores, fn)
        seed = np.zeros_like(scores)
        seed[0, chosen] = 1.0
        (g,) = grad(out, [kept["leaf"]], seed)
    kept["activation"] = kept["leaf"].data
    return scores, np.zeros_like(kept["leaf"].data) if g is None else g


def _check_scores(scores: np.ndarray, fn: str) -> None:
    if scores.ndim != 2 or scores.shape[1] < 2:
        raise ValueError(f"{fn}: the model must output (1, classes) scores, got shape "
                         f"{scores.shape}")


def _check_target(target: int, scores: np.ndarray, fn: str) -> None:
    if not 0 <= target < scores.shape[1]:
        raise ValueError(f"{fn}: target must be a class in 0..{scores.shape[1] - 1}, got "
                         f"{target}")


__all__ = ["GradCAM", "grad_cam"]
