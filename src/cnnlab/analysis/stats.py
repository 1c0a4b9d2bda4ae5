"""Activation statistics of a model's layers over a set of inputs (fastai's
ActivationStats, TensorBoard's histograms, as data): :func:`activation_stats`.

The layers are the model's leaf modules (those without children), each named by its
``named_modules()`` path ("conv1", "features.3"; "" for a model that is one layer), and
what is recorded is each one's own output, seen by a forward hook: so a functional
``F.relu`` between two layers is not a layer of its own, and its effect shows as the
fraction at or below zero of the layer before it. The same numbers are what
``cnnlab train --stats`` records during training, step by step
(:mod:`cnnlab.train.stats`, read back with :func:`read_training_stats`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..autograd import Tensor, no_grad
from ..nn.module import Module
from ..train.stats import (
    LayerSums,
    TrainingStats,
    check_edges,
    leaf_layers,
    read_training_stats,
)
from .graph import evaluating


@dataclass(frozen=True, eq=False)
class LayerStats:
    """One layer's statistics over every value of its outputs.

    ``name``: its ``named_modules`` path; ``kind``: its class; ``count``: values seen;
    ``mean`` and ``std`` over all of them (``ddof=0``; NaN when none was seen);
    ``nonpositive``: the fraction <= 0 (for a ReLU layer: its units that are off);
    ``histogram`` (B,) int64: counts of ``|value|`` per bin of the result's ``edges``.
    """

    name: str
    kind: str
    count: int
    mean: float
    std: float
    nonpositive: float
    histogram: np.ndarray


@dataclass(frozen=True, eq=False)
class ActivationStats:
    """Per-layer statistics of a model's outputs over ``batches`` batches of ``samples``
    samples in all: ``layers`` in ``named_modules`` order, their histograms over the bins
    ``edges`` ((B + 1,): bin j counts ``edges[j] <= |value| < edges[j + 1]``, the last bin
    closed). ``stats["conv1"]`` is a layer's :class:`LayerStats`."""

    layers: tuple[LayerStats, ...]
    edges: np.ndarray
    batches: int
    samples: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def __getitem__(self, name: str) -> LayerStats:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"ActivationStats: no layer {name!r}; the layers are "
                       f"{list(self.names)}")

    def to_table(self) -> str:
        """One line per layer: kind, values, mean, standard deviation, fraction <= 0 and
        the median magnitude's bin."""
        header = ("layer", "kind", "values", "mean", "std", "<= 0", "median |value|")
        rows = [header] + [(layer.name or "<model>", layer.kind, f"{layer.count:,}",
                            f"{layer.mean:.4g}", f"{layer.std:.4g}",
                            f"{layer.nonpositive:.1%}", self._median_bin(layer))
                           for layer in self.layers]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths))).rstrip()
                 for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(f"{self.batches} batches, {self.samples:,} samples")
        return "\n".join(lines)

    def _median_bin(self, layer: LayerStats) -> str:
        total = int(layer.histogram.sum())
        if total == 0:
            return "-"
        j = int(np.searchsorted(np.cumsum(layer.histogram), (total + 1) // 2))
        return f"[{self.edges[j]:.2g}, {self.edges[j + 1]:.2g})"

    def __str__(self) -> str:
        return self.to_table()


def _inputs(item: Any, index: int) -> Any:
    """A batch's input: the item itself, or the first of an (x, y) pair."""
    if isinstance(item, (tuple, list)):
        if len(item) != 2:
            raise TypeError(f"activation_stats: batches must yield input arrays or (x, y) "
                            f"pairs, got a {type(item).__name__} of {len(item)} items as "
                            f"batch {index}")
        return item[0]
    return item


def _torch_module(model: Any) -> Any:
    """torch.nn.Module when ``model`` is one (torch is imported only if already loaded:
    a model of it cannot exist otherwise), else None."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return torch
    return None


def activation_stats(model: Any, batches: Iterable[Any], *,
                     layers: Sequence[str] | None = None, edges: Any = None
                     ) -> ActivationStats:
    """Run ``model`` on every batch of ``batches`` and return each layer's statistics over
    all of them.

    Parameters
    ----------
    model : cnnlab.nn.Module or torch.nn.Module
        Run in eval mode without gradients; every module gets back the mode it had, no
        gradient is left behind and BatchNorm statistics are not updated (eval mode). For a
        torch model the hooks are torch's and outputs are read with ``.detach().cpu()``.
    batches : iterable of arrays, or of (x, y) pairs
        Each item is one input batch ((N, C, *spatial) for a CNN: a NumPy array, a cnnlab
        Tensor, or for a torch model a torch tensor), or a pair whose first element is
        one (a ``DataLoader``'s batches: the targets are ignored). A single array is
        refused: wrap it in a list (``[x]``) to pass it as one batch.
    layers : sequence of str, optional
        The ``named_modules`` paths of the layers to record (default: every leaf module,
        in ``named_modules`` order).
    edges : array, optional
        Histogram edges for ``|value|``, increasing, the first >= 0 (default
        :data:`~cnnlab.train.stats.MAGNITUDE_EDGES`: [0, 1e-6), 8 log-spaced bins per
        decade up to 1e4, and [1e4, inf]).

    Returns
    -------
    ActivationStats
        Sums over batches combine exactly: the counts, the fractions and the histograms
        equal those of one pass over the batches concatenated; the means and standard
        deviations (float64 sums and sums of squares) equal them to float rounding.

    >>> from cnnlab import nn
    >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    >>> stats = activation_stats(model, [np.ones((4, 2), np.float32)] * 2)
    >>> stats.names, stats["1"].count, stats.samples
    (('0', '1'), 24, 8)
    """
    torch = _torch_module(model)
    if torch is None and not isinstance(model, Module):
        kind = type(model)
        raise TypeError(f"activation_stats: model must be a cnnlab.nn.Module or a "
                        f"torch.nn.Module, got {kind.__module__}.{kind.__qualname__}")
    if isinstance(batches, (np.ndarray, Tensor)) or (
            torch is not None and isinstance(batches, torch.Tensor)):
        raise TypeError(f"activation_stats: batches must be an iterable of input batches "
                        f"(or of (x, y) pairs), got a single {type(batches).__name__} of "
                        f"shape {tuple(batches.shape)}; pass [x] for one batch")
    if not isinstance(batches, Iterable):
        raise TypeError(f"activation_stats: batches must be an iterable of input batches "
                        f"(or of (x, y) pairs), got {type(batches).__name__}")
    edges = check_edges(edges, "activation_stats")
    named = (_torch_leaves(model) if torch is not None
             else [(name, module) for name, module in leaf_layers(model)])
    chosen = _chosen(named, layers, dict(model.named_modules()))
    sums = LayerSums.zeros(len(chosen), len(edges) - 1)
    run = _run_torch if torch is not None else _run_cnnlab
    count, samples = run(model, chosen, batches, sums, edges)
    if count == 0:
        raise ValueError("activation_stats: batches must hold at least one batch, got none")
    mean, std, nonpositive = sums.moments()
    return ActivationStats(
        tuple(LayerStats(name, type(module).__name__, int(sums.count[i]), float(mean[i]),
                         float(std[i]), float(nonpositive[i]), sums.histogram[i].copy())
              for i, (name, module) in enumerate(chosen)),
        edges, count, samples)


def _torch_leaves(model: Any) -> list[tuple[str, Any]]:
    return [(name, module) for name, module in model.named_modules()
            if next(iter(module.children()), None) is None]


def _chosen(leaves: list[tuple[str, Any]], layers: Sequence[str] | None,
            modules: dict[str, Any]) -> list[tuple[str, Any]]:
    """The leaves, or the modules ``layers`` names (any module, leaf or not), in order."""
    if layers is None:
        return leaves
    if isinstance(layers, str) or not isinstance(layers, Sequence) or not all(
            isinstance(name, str) for name in layers):
        raise TypeError(f"activation_stats: layers must be a sequence of module paths "
                        f"(str), got {layers!r}")
    unknown = [name for name in layers if name not in modules]
    if unknown:
        raise ValueError(f"activation_stats: layers must name modules of the model, got "
                         f"{unknown}; its modules are {[n for n in modules if n]}")
    return [(name, modules[name]) for name in dict.fromkeys(layers)]


def _hook(sums: LayerSums, index: int, edges: np.ndarray, to_numpy: Any) -> Any:
    def hook(module: Any, args: Any, output: Any) -> None:
        values = to_numpy(output)
        if values is not None:
            sums.add(index, values, edges)
    return hook


def _run_cnnlab(model: Module, chosen: list[tuple[str, Any]], batches: Iterable[Any],
                sums: LayerSums, edges: np.ndarray) -> tuple[int, int]:
    def to_numpy(output: Any) -> np.ndarray | None:
        if isinstance(output, Tensor):
            return output.data
        return output if isinstance(output, np.ndarray) else None

    handles = [module.register_forward_hook(_hook(sums, i, edges, to_numpy))
               for i, (_, module) in enumerate(chosen)]
    count = samples = 0
    try:
        with evaluating(model), no_grad():
            for index, item in enumerate(batches):
                x = _inputs(item, index)
                if not isinstance(x, (np.ndarray, Tensor)):
                    raise TypeError(f"activation_stats: each batch must be a NumPy array or "
                                    f"a cnnlab Tensor (or an (x, y) pair of them), got "
                                    f"{type(x).__name__} as batch {index}")
                model(x if isinstance(x, Tensor) else Tensor(x))
                count, samples = count + 1, samples + int(x.shape[0])
    finally:
        for handle in handles:
            handle.remove()
    return count, samples


def _run_torch(model: Any, chosen: list[tuple[str, Any]], batches: Iterable[Any],
               sums: LayerSums, edges: np.ndarray) -> tuple[int, int]:
    import torch

    def to_numpy(output: Any) -> np.ndarray | None:
        if isinstance(output, torch.Tensor):
            return output.detach().cpu().numpy()
        return None

    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    handles = [module.register_forward_hook(_hook(sums, i, edges, to_numpy))
               for i, (_, module) in enumerate(chosen)]
    count = samples = 0
    try:
        with evaluating(model), torch.no_grad():
            for index, item in enumerate(batches):
                x = _inputs(item, index)
                if isinstance(x, np.ndarray):
                    x = torch.from_numpy(x)
                if not isinstance(x, torch.Tensor):
                    raise TypeError(f"activation_stats: each batch must be a NumPy array or "
                                    f"a torch tensor (or an (x, y) pair of them), got "
                                    f"{type(x).__name__} as batch {index}")
                model(x.to(device))
                count, samples = count + 1, samples + int(x.shape[0])
    finally:
        for handle in handles:
            handle.remove()
    return count, samples


__all__ = ["ActivationStats", "LayerStats", "TrainingStats", "activation_stats",
           "read_training_stats"]
