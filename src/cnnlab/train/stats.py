"""Training diagnostics: per-layer activation statistics and per-parameter gradient norms,
recorded every N steps of a run (``cnnlab train --stats``): fastai's ActivationStats and
TensorBoard's histograms, as data.

What is recorded. The layers are the model's leaf modules (those without children), named
by their ``named_modules()`` path (``"conv1"``, ``"features.3"``; ``""`` when the model is
one layer); a forward hook on each sees the layer's own output. Per layer, over every value
of its output on the step's batch: the count, the mean and the standard deviation (of all
values, ``ddof=0``), the fraction at or below zero (for a ReLU layer its units that are off;
for a layer a ReLU follows, a functional ``F.relu`` included, the units that ReLU turns off)
and a histogram of the magnitudes ``|value|`` over fixed bins, :data:`MAGNITUDE_EDGES`, the
same for every layer and step (so a layer's histograms over a run are one (steps, bins)
array: fastai's "colorful dimension"). Per parameter (``named_parameters()`` order): the L2
norm of the batch's gradient, after the shards' gradients are summed and before the
optimizer steps; NaN for a parameter with no gradient (frozen, or not used).

Why sums. Everything recorded is a sum over values: ``count``, ``sum``, ``sum of squares``,
the count at or below zero and the histogram's counts (:class:`LayerSums`). Sums add across
batches and across the shards of a batch that worker processes compute
(:mod:`cnnlab.train.parallel`): each shard's sums come back with its gradient and the
trainer adds them in shard order, so a step's statistics are the whole batch's (the counts
exactly, the means and deviations to float rounding), the same bits for any ``--threads``.

On a step that records, the hooked layers run as themselves: the conv + max-pool fusion
pass stands aside for a layer with a hook (:mod:`cnnlab.nn.fusion`), so that a hook sees
its layer's own output. The fused op equals the two layers up to float rounding, so for
models with such pairs (LeNet-5) a run with ``--stats`` reaches the weights of one without
to float rounding, not bit for bit; it is bit for bit the same for any ``--threads`` and
when resumed with the same ``--stats-every``. Other steps run fused.

The files (:class:`StatsLog`, in the run's ``--checkpoint`` folder, written atomically
just before each checkpoint): ``stats.npz``, the arrays (read back with
``allow_pickle=False``: names are fixed-width unicode arrays), and ``stats.json``, what
they are (layers, parameters and their shapes, the bins, the interval, the steps
recorded). Each row is one recorded step; :func:`read_training_stats` reads them back as
a :class:`TrainingStats`.
"""

from __future__ import annotations

import contextlib
import io
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import nn
from .._files import atomic_write, atomic_write_bytes
from ..autograd import Tensor

# A zero-ish bin [0, 1e-6), 80 log-spaced bins from 1e-6 to 1e4 (8 per decade, each edge
# 10 ** (k / 8)) and [1e4, inf]: 82 bins of |value|, the same for every layer and step.
MAGNITUDE_EDGES = np.concatenate(([0.0], 10.0 ** (np.arange(-48, 33) / 8), [np.inf]))
MAGNITUDE_EDGES.setflags(write=False)

STATS_ARRAYS = "stats.npz"
STATS_INDEX = "stats.json"
STATS_SCHEMA = "cnnlab.stats/1"


def check_edges(edges: Any, fn: str) -> np.ndarray:
    """``edges`` as a read-only float64 array of histogram edges for magnitudes: 1-D, at
    least two, increasing, the first >= 0 (``inf`` allowed as the last)."""
    if edges is None:
        return MAGNITUDE_EDGES
    try:
        array = np.array(edges, dtype=np.float64)
    except (TypeError, ValueError):
        array = np.zeros(0)
    if (array.ndim != 1 or len(array) < 2 or np.isnan(array).any()
            or not np.all(np.diff(array) > 0) or array[0] < 0):
        raise ValueError(f"{fn}: edges must be a 1-D increasing array of at least two "
                         f"histogram edges for magnitudes, the first >= 0, got {edges!r}")
    array.setflags(write=False)
    return array


def leaf_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules of ``model`` without children, as (``named_modules`` path, module), in
    ``named_modules`` order: the layers whose outputs are recorded."""
    return [(name, module) for name, module in model.named_modules()
            if next(iter(module.children()), None) is None]


@dataclass(eq=False)
class LayerSums:
    """Sums over the output values of ``L`` layers, which add across batches and shards.

    ``count`` (L,) int64: values seen; ``total`` and ``squares`` (L,) float64: their sum
    and sum of squares (float64 accumulators); ``nonpositive`` (L,) int64: values <= 0;
    ``histogram`` (L, B) int64: values ``v`` with ``edges[j] <= |v| < edges[j + 1]`` in bin
    ``j``, the last bin closed (``np.histogram``'s rule; a NaN counts in ``count`` only).
    """

    count: np.ndarray
    total: np.ndarray
    squares: np.ndarray
    nonpositive: np.ndarray
    histogram: np.ndarray

    @classmethod
    def zeros(cls, layers: int, bins: int) -> LayerSums:
        return cls(np.zeros(layers, np.int64), np.zeros(layers), np.zeros(layers),
                   np.zeros(layers, np.int64), np.zeros((layers, bins), np.int64))

    def add(self, index: int, values: np.ndarray, edges: np.ndarray) -> None:
        """Add every value of ``values`` (any shape) to layer ``index``'s sums."""
        flat = np.asarray(values).reshape(-1)
        self.count[index] += flat.size
        self.total[index] += np.sum(flat, dtype=np.float64)
        self.squares[index] += np.sum(np.square(flat, dtype=np.float64))
        self.nonpositive[index] += np.count_nonzero(flat <= 0)
        self.histogram[index] += np.histogram(np.abs(flat), edges)[0]

    def __iadd__(self, other: LayerSums) -> LayerSums:
        for name in ("count", "total", "squares", "nonpositive", "histogram"):
            getattr(self, name)[...] += getattr(other, name)
        return self

    def moments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, standard deviation, fraction <= 0), each (L,) float64; NaN for a layer
        that saw no value."""
        with np.errstate(invalid="ignore", divide="ignore"):
            count = self.count.astype(np.float64)
            mean = self.total / count
            # E[x^2] - E[x]^2 in float64; rounding can leave it a hair below zero.
            std = np.sqrt(np.maximum(self.squares / count - mean * mean, 0.0))
            std[self.count == 0] = np.nan
            return mean, std, self.nonpositive / count


class ActivationProbe:
    """Forward hooks on a model's leaf layers that add each layer's output to the sums of
    the shard running on the calling thread: the trainer's shard probe
    (:class:`cnnlab.train.parallel.ShardProbe`).

    ``attached()`` registers the hooks on this process's model for a block (re-entrant and
    shared by threads: the hooks come off when the last block ends; a fork must not happen
    inside it); ``start()`` gives the calling thread fresh :class:`LayerSums` and
    ``stop()`` takes them back. A hook adds nothing on a thread that has not started, and
    an output that is not one Tensor (or array) is skipped.
    """

    def __init__(self, model: nn.Module, edges: np.ndarray | None = None) -> None:
        self.layers = leaf_layers(model)
        self.names = [name for name, _ in self.layers]
        self.kinds = [type(module).__name__ for _, module in self.layers]
        self.edges = check_edges(edges, "ActivationProbe")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._depth = 0
        self._handles: list[Any] = []

    @contextlib.contextmanager
    def attached(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._handles = [module.register_forward_hook(self._hook(index))
                                 for index, (_, module) in enumerate(self.layers)]
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    for handle in self._handles:
                        handle.remove()
                    self._handles = []

    def _hook(self, index: int) -> Any:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            sums = getattr(self._local, "sums", None)
            if sums is None:
                return
            values = output.data if isinstance(output, Tensor) else output
            if isinstance(values, np.ndarray):
                sums.add(index, values, self.edges)
        return hook

    def start(self) -> None:
        self._local.sums = LayerSums.zeros(len(self.layers), len(self.edges) - 1)

    def stop(self) -> LayerSums:
        sums, self._local.sums = self._local.sums, None
        return sums


def gradient_norms(params: list[Any], grads: dict[int, np.ndarray | None]) -> np.ndarray:
    """The L2 norm of each of ``params``' gradient in ``grads`` (by ``id``), float64;
    NaN where there is none."""
    norms = np.full(len(params), np.nan)
    for index, param in enumerate(params):
        g = grads.get(id(param))
        if g is not None:
            norms[index] = np.sqrt(np.sum(np.square(g, dtype=np.float64)))
    return norms


@dataclass(frozen=True, eq=False)
class TrainingStats:
    """A run's recorded statistics: ``S`` steps, ``L`` layers, ``P`` parameters, ``B`` bins.

    ``steps`` (S,) int64: the steps recorded (1-based: step ``k`` is the k-th optimizer
    step; its forward pass ran on the weights before that step's update). ``layers`` and
    ``kinds``: each layer's ``named_modules`` path and class; ``parameters``: each
    parameter's ``named_parameters`` name. ``edges`` (B + 1,): the histogram's bins of
    ``|value|`` (:data:`MAGNITUDE_EDGES`). ``count`` (S, L) int64: values per layer and
    step; ``mean``, ``std`` (S, L) float64; ``nonpositive`` (S, L) float64: the fraction
    <= 0; ``histogram`` (S, L, B) int64; ``grad_norm`` (S, P) float64 (NaN: no gradient).
    ``every``: the interval of the run that wrote them last.
    """

    steps: np.ndarray
    layers: tuple[str, ...]
    kinds: tuple[str, ...]
    parameters: tuple[str, ...]
    edges: np.ndarray
    count: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    nonpositive: np.ndarray
    histogram: np.ndarray
    grad_norm: np.ndarray
    every: int

    def layer_index(self, layer: str) -> int:
        if layer not in self.layers:
            raise KeyError(f"TrainingStats: no layer {layer!r}; the layers are "
                           f"{list(self.layers)}")
        return self.layers.index(layer)

    def histograms(self, layer: str) -> np.ndarray:
        """Layer ``layer``'s histograms over the run, (S, B) int64: row i is step
        ``steps[i]`` (the "colorful dimension" picture, steps by bins)."""
        return self.histogram[:, self.layer_index(layer)]

    def to_table(self) -> str:
        """The last recorded step: one line per layer, then the gradient norms."""
        if not len(self.steps):
            return "no steps recorded"
        last = len(self.steps) - 1
        rows = [("layer", "kind", "mean", "std", "<= 0")]
        rows += [(name or "<model>", kind, f"{self.mean[last, i]:.4g}",
                  f"{self.std[last, i]:.4g}", f"{self.nonpositive[last, i]:.1%}")
                 for i, (name, kind) in enumerate(zip(self.layers, self.kinds))]
        lines = [f"step {int(self.steps[last])} ({len(self.steps)} steps recorded, every "
                 f"{self.every})", *_columns(rows), "", *_columns(
                     [("parameter", "gradient norm")]
                     + [(name, f"{self.grad_norm[last, i]:.4g}")
                        for i, name in enumerate(self.parameters)])]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_table()


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


# The arrays of stats.npz: name -> (dtype kind, shape of one row after the step axis, as
# names of TrainingStats' sizes).
_ROW_ARRAYS = {"count": ("i", ("L",)), "mean": ("f", ("L",)), "std": ("f", ("L",)),
               "nonpositive": ("f", ("L",)), "histogram": ("i", ("L", "B")),
               "grad_norm": ("f", ("P",))}


class StatsLog:
    """The rows a run records, in memory, and their two files in the run's folder."""

    def __init__(self, probe: ActivationProbe, parameters: list[tuple[str, Any]],
                 every: int) -> None:
        self.layers, self.kinds, self.edges = probe.names, probe.kinds, probe.edges
        self.parameters = [name for name, _ in parameters]
        self.shapes = [list(param.shape) for _, param in parameters]
        self.every = every
        self.rows: list[dict[str, Any]] = []

    def append(self, step: int, sums: LayerSums, grad_norm: np.ndarray) -> None:
        mean, std, nonpositive = sums.moments()
        self.rows.append({"step": step, "count": sums.count.copy(), "mean": mean,
                          "std": std, "nonpositive": nonpositive,
                          "histogram": sums.histogram.copy(), "grad_norm": grad_norm})

    def result(self) -> TrainingStats:
        sizes = {"L": len(self.layers), "B": len(self.edges) - 1, "P": len(self.parameters)}
        arrays = {}
        for name, (kind, row_shape) in _ROW_ARRAYS.items():
            dtype = np.int64 if kind == "i" else np.float64
            shape = (len(self.rows), *(sizes[s] for s in row_shape))
            arrays[name] = (np.stack([row[name] for row in self.rows]).astype(dtype)
                            if self.rows else np.zeros(shape, dtype))
        steps = np.array([row["step"] for row in self.rows], dtype=np.int64)
        return TrainingStats(steps, tuple(self.layers), tuple(self.kinds),
                             tuple(self.parameters), np.array(self.edges), every=self.every,
                             **arrays)

    # -- files --------------------------------------------------------------------------------
    def write(self, folder: str | Path) -> None:
        """``stats.npz`` then ``stats.json`` in ``folder``, each atomically (the arrays are
        the record; the index describes them)."""
        folder = Path(folder)
        stats = self.result()
        arrays = {"steps": stats.steps, "edges": stats.edges,
                  "layers": np.array(self.layers, dtype=str),
                  "kinds": np.array(self.kinds, dtype=str),
                  "parameters": np.array(self.parameters, dtype=str),
                  **{name: getattr(stats, name) for name in _ROW_ARRAYS}}

        def save(file: Any) -> None:
            buffer = io.BytesIO()  # np.savez seeks; write the finished bytes in one go
            np.savez_compressed(buffer, **arrays)
            file.write(buffer.getvalue())

        atomic_write(folder / STATS_ARRAYS, save)
        bins = len(self.edges) - 1
        index = {
            "schema": STATS_SCHEMA, "arrays": STATS_ARRAYS, "every": self.every,
            "steps": len(self.rows),
            "last_step": int(stats.steps[-1]) if len(stats.steps) else None,
            "layers": [{"name": n, "kind": k} for n, k in zip(self.layers, self.kinds)],
            "parameters": [{"name": n, "shape": s}
                           for n, s in zip(self.parameters, self.shapes)],
            "histogram": {"of": "|value|", "bins": bins,
                          "edges": "stats.npz 'edges', (bins + 1,): bin j counts "
                                   "edges[j] <= |value| < edges[j + 1], the last bin closed",
                          "finite_edges": [float(e) for e in self.edges if np.isfinite(e)],
                          "last_edge_infinite": bool(np.isinf(self.edges[-1]))},
            "layout": {
                "steps": "(S,) int64, the steps recorded (1-based)",
                "layers, kinds, parameters": "names, unicode arrays (L,), (L,), (P,)",
                "count": "(S, L) int64, output values per layer",
                "mean, std": "(S, L) float64, over all output values (ddof=0)",
                "nonpositive": "(S, L) float64, fraction of output values <= 0",
                "histogram": "(S, L, bins) int64, counts of |value| per bin",
                "grad_norm": "(S, P) float64, L2 norm of the batch gradient (NaN: none)",
            },
        }
        atomic_write_bytes(folder / STATS_INDEX, (json.dumps(index, indent=2) + "\n").encode())

    def extend_from(self, folder: str | Path, until: int, fn: str) -> None:
        """Put the rows of the run in ``folder`` up to step ``until`` (its checkpoint's) in
        front of this log's, for a resumed run; rows after it (a run stopped between its
        stats and its checkpoint, or one that diverged) are dropped. No file: nothing."""
        path = Path(folder) / STATS_ARRAYS
        if not path.exists():
            return
        earlier = read_training_stats(folder, fn=fn)
        if (earlier.layers, earlier.parameters) != (tuple(self.layers),
                                                    tuple(self.parameters)):
            raise ValueError(f"{fn}: {path} records layers {list(earlier.layers)} and "
                             f"parameters {list(earlier.parameters)}, not this model's; move "
                             f"it away to record this run's")
        if not np.array_equal(earlier.edges, self.edges):
            raise ValueError(f"{fn}: {path} has other histogram edges than this run's; move "
                             f"it away to record this run's")
        keep = [i for i, step in enumerate(earlier.steps) if step <= until]
        rows = [{"step": int(earlier.steps[i]),
                 **{name: getattr(earlier, name)[i] for name in _ROW_ARRAYS}} for i in keep]
        self.rows = rows + [row for row in self.rows if row["step"] > until]


def read_training_stats(folder: str | Path, fn: str = "read_training_stats"
                        ) -> TrainingStats:
    """The statistics a run recorded in ``folder`` (its ``--checkpoint`` folder, or the
    ``stats.npz`` file itself), read with ``allow_pickle=False`` and checked: every array
    present with the dtype and shape the others imply, or a ValueError naming the file."""
    folder = Path(folder)
    path = folder if folder.suffix == ".npz" else folder / STATS_ARRAYS
    if not path.is_file():
        raise ValueError(f"{fn}: no statistics at {path} (train with --stats "
                         f"--checkpoint DIR to record them)")
    every = 0
    index_path = path.with_name(STATS_INDEX)
    with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
        every = int(json.loads(index_path.read_text()).get("every", 0))
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"{fn}: {path} is not a readable stats file "
                         f"({type(error).__name__}: {error})") from None
    names = {"layers", "kinds", "parameters", "steps", "edges", *_ROW_ARRAYS}
    if missing := sorted(names - set(arrays)):
        raise ValueError(f"{fn}: {path} lacks the arrays {missing}; it is not a stats file "
                         f"cnnlab wrote")
    for name in ("layers", "kinds", "parameters"):
        if arrays[name].ndim != 1 or arrays[name].dtype.kind != "U":
            raise ValueError(f"{fn}: {path} has {name!r} of dtype {arrays[name].dtype} and "
                             f"shape {arrays[name].shape}, expected 1-D unicode names")
    steps, edges = arrays["steps"], arrays["edges"]
    sizes = {"S": len(steps), "L": len(arrays["layers"]), "P": len(arrays["parameters"]),
             "B": len(edges) - 1}
    expected = {"steps": ("i", ("S",)), "edges": ("f", ("B+1",)),
                **{name: (kind, ("S", *shape)) for name, (kind, shape) in _ROW_ARRAYS.items()}}
    for name, (kind, shape) in expected.items():
        want = tuple(sizes["B"] + 1 if s == "B+1" else sizes[s] for s in shape)
        if arrays[name].dtype.kind != kind or arrays[name].shape != want:
            raise ValueError(f"{fn}: {path} has {name!r} of dtype {arrays[name].dtype} and "
                             f"shape {arrays[name].shape}, expected {shape} = {want} of "
                             f"{'ints' if kind == 'i' else 'floats'}")
    if len(arrays["kinds"]) != sizes["L"] or sizes["B"] < 1:
        raise ValueError(f"{fn}: {path} has {len(arrays['kinds'])} layer kinds for "
                         f"{sizes['L']} layers, and {sizes['B']} bins")
    return TrainingStats(steps.astype(np.int64), tuple(arrays["layers"].tolist()),
                         tuple(arrays["kinds"].tolist()),
                         tuple(arrays["parameters"].tolist()), edges.astype(np.float64),
                         every=every, **{name: arrays[name] for name in _ROW_ARRAYS})


__all__ = ["MAGNITUDE_EDGES", "ActivationProbe", "LayerSums", "StatsLog", "TrainingStats",
           "gradient_norms", "leaf_layers", "read_training_stats"]
