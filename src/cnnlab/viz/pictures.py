"""Pictures of what :mod:`cnnlab.analysis` measures: filters, feature maps from low to high
level, the equivariance audit as a heat map, a receptive field and the effective field over
an input, a convolution's sparse matrix beside the dense layer's, fastai's "colorful
dimension" of activation histograms over training, learning curves, the CNN-vs-MLP chart
and accuracy against shift size.

Each function returns a :class:`Picture`: the PNG rendered once (matplotlib's Agg backend,
imported lazily), ``panels`` (how many plots it holds), ``save(path)`` (atomic),
``_repr_png_`` for Jupyter, and with ``path=`` it is written at once. Layers are named as
:func:`cnnlab.analysis.trace` names them (a module path such as "conv2", or a row name such
as "conv2:conv"); each function picks a sensible default. Models may be cnnlab's or torch's.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write
from ..analysis.equivariance import EquivarianceReport
from ..analysis.graph import Capture, Graph, Node, check_batch, evaluating, one_input
from ..analysis.matrix import conv_matrix
from ..analysis.receptive import effective_receptive_field, receptive_fields
from ..train.stats import TrainingStats


def _pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, imported only when something is drawn."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


@dataclass(frozen=True)
class Picture:
    """A rendered picture: ``png`` (the bytes), ``panels`` (plots in it), ``title``."""

    png: bytes
    panels: int
    title: str = ""

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the PNG, atomically."""
        return atomic_write(Path(path), lambda file: file.write(self.png))

    def image(self) -> Any:
        """The picture as a PIL image."""
        from PIL import Image

        return Image.open(io.BytesIO(self.png))

    def _repr_png_(self) -> bytes:
        return self.png


def _render(fig: Any, panels: int, title: str, path: str | os.PathLike[str] | None
            ) -> Picture:
    plt = _pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    picture = Picture(buffer.getvalue(), panels, title)
    if path is not None:
        picture.save(path)
    return picture


def filter_grid(weight: np.ndarray) -> Any:
    """A figure of ``weight (C_out, C_in, *kernel)``, one panel per output channel:
    kernels averaged over input channels, 2-D as tiles (diverging colours around 0),
    3-D flattened to tiles, 1-D as bars."""
    plt = _pyplot()
    weight = np.asarray(weight)
    count = weight.shape[0]
    cols = min(count, 8)
    rows = -(-count // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.4 * cols, 1.4 * rows), squeeze=False)
    limit = float(np.abs(weight).max()) or 1.0
    for index, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if index >= count:
            ax.axis("off")
            continue
        kernel = weight[index].mean(axis=0)  # average over input channels
        if kernel.ndim == 1:
            ax.bar(np.arange(kernel.size), kernel, color=np.where(kernel >= 0, "C0", "C3"))
            ax.set_ylim(-limit, limit)
            ax.axhline(0, color="black", linewidth=0.5)
        else:
            ax.imshow(kernel.reshape(kernel.shape[0], -1), cmap="RdBu_r", vmin=-limit,
                      vmax=limit)
        ax.set_title(str(index), fontsize=7)
    return fig


def _pick(graph: Graph, layer: str | None, ops: Sequence[str], fn: str,
          default: str = "first") -> Node:
    """The node ``layer`` names (a module path or a row name), among ops ``ops``."""
    candidates = [n for n in graph if n.op in ops]
    if not candidates:
        raise ValueError(f"{fn}: the model has no {' or '.join(ops)} layer")
    if layer is None:
        return candidates[0] if default == "first" else candidates[-1]
    for node in candidates:
        if layer in (node.name, node.module):
            return node
    names = [n.module or n.name for n in candidates]
    raise ValueError(f"{fn}: layer must name one of {names}, got {layer!r}")


def _weights(model: Any, name: str) -> np.ndarray:
    for param_name, p in model.named_parameters():
        if param_name == name:
            data = p.detach().cpu().numpy() if hasattr(p, "cpu") else p.data
            return np.asarray(data)
    raise ValueError(f"no parameter named {name!r}")


def _example(model: Any, shape: Sequence[int]) -> np.ndarray:
    return np.zeros((1, *shape), Capture(model, "viz").dtype())


def plot_filters(model: Any, input_shape: Sequence[int], *, layer: str | None = None,
                 path: str | os.PathLike[str] | None = None) -> Picture:
    """One convolution's filters (default: the first), one panel per output channel:
    2-D kernels as tiles (averaged over input channels, diverging colours around 0), 1-D
    kernels as bars."""
    fn = "plot_filters"
    capture = Capture(model, fn)
    with evaluating(model):
        graph = capture.run(_example(model, input_shape)).graph
    node = _pick(graph, layer, ("conv",), fn)
    weight = _weights(model, node.inputs[1]) if len(node.inputs) > 1 and not \
        node.inputs[1].startswith("<") else None
    if weight is None:
        raise ValueError(f"{fn}: {node.name}'s weight is not a parameter")
    fig = filter_grid(weight)
    count = weight.shape[0]
    title = f"filters of {node.module or node.name} {tuple(weight.shape)}"
    fig.suptitle(title)
    return _render(fig, count, title, path)


def plot_feature_maps(model: Any, x: np.ndarray, *, layers: Sequence[str] | None = None,
                      channels: int = 8, path: str | os.PathLike[str] | None = None
                      ) -> Picture:
    """Feature maps of one input ``x`` ((C, *spatial), no batch axis) for every
    convolution, from low to high level (or ``layers``): a row per layer, up to
    ``channels`` maps each (images for 2-D, curves for 1-D), the input first."""
    fn = "plot_feature_maps"
    x = one_input(x, fn)
    capture = Capture(model, fn)
    with evaluating(model):
        recording = capture.run(x[None])
    graph = recording.graph
    if layers is None:
        nodes = [n for n in graph if n.op == "conv"]
        if not nodes:
            raise ValueError(f"{fn}: the model has no convolution")
    else:
        nodes = [_pick(graph, name, tuple({n.op for n in graph}), fn) for name in layers]
    rows = [("input", x)] + [(node.module or node.name, recording.array(node.index)[0])
                             for node in nodes]
    plt = _pyplot()
    cols = max(min(channels, len(maps)) for _, maps in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.4 * cols, 1.3 * len(rows) + 0.3),
                             squeeze=False)
    panels = 0
    for r, (name, maps) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= min(channels, len(maps)):
                ax.axis("off")
                continue
            panels += 1
            if maps[c].ndim == 1:
                ax.plot(maps[c], linewidth=1)
            else:
                ax.imshow(maps[c], cmap="viridis")
            if c == 0:
                ax.set_ylabel(name, fontsize=7)
    title = "feature maps, low to high level"
    fig.suptitle(title)
    return _render(fig, panels, title, path)


def plot_equivariance(report: EquivarianceReport, *,
                      path: str | os.PathLike[str] | None = None) -> Picture:
    """The equivariance audit as a heat map: a row per op with spatial axes, a column per
    shift, the relative error in colour (log scale), the whole map on the left and its
    interior on the right; grey where the shift is not a multiple of the stride."""
    rows = [r for r in report.rows if r.errors]
    if not rows:
        raise ValueError("plot_equivariance: the report has no op with spatial axes")
    plt = _pyplot()
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(1, 2, figsize=(3 + 1.1 * len(report.shifts),
                                            0.9 + 0.32 * len(rows)), squeeze=False)
    floor = 1e-12
    for ax, label, attr in ((axes[0, 0], "whole map", "errors"),
                            (axes[0, 1], "interior", "interior_errors")):
        values = np.array([[np.nan if e is None else max(e, floor) for e in getattr(r, attr)]
                           for r in rows], dtype=float)
        cmap = plt.get_cmap("magma_r").with_extremes(bad="#dddddd")
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, aspect="auto",
                          norm=LogNorm(vmin=floor, vmax=max(1.0, np.nanmax(values)
                                                            if np.isfinite(values).any()
                                                            else 1.0)))
        ax.set_xticks(range(len(report.shifts)), [str(s) for s in report.shifts])
        ax.set_yticks(range(len(rows)), [r.name for r in rows] if ax is axes[0, 0]
                      else [""] * len(rows), fontsize=7)
        ax.set_xlabel(f"shift ({report.mode})")
        ax.set_title(label)
        fig.colorbar(image, ax=ax, fraction=0.05)
    title = "equivariance error per op and shift"
    fig.suptitle(title, y=1.04)
    return _render(fig, 2, title, path)


def plot_receptive_field(model: Any, x: np.ndarray, *, layer: str | None = None,
                         unit: Sequence[int] | None = None, samples: int = 16,
                         rng: np.random.Generator | None = None,
                         path: str | os.PathLike[str] | None = None) -> Picture:
    """The receptive field of one unit of ``layer`` (default: the last op with spatial
    axes, its centre unit) drawn over the input ``x`` ((C, *spatial)), beside the
    effective receptive field (Luo et al. 2016) of the same layer's centre unit."""
    fn = "plot_receptive_field"
    x = one_input(x, fn)
    shape = tuple(x.shape)
    fields = receptive_fields(model, shape)
    spatial_rows = [i for i, r in enumerate(fields.rows) if r.size is not None]
    if not spatial_rows:
        raise ValueError(f"{fn}: the model has no op with spatial axes")
    index = spatial_rows[-1]
    if layer is not None:
        matches = [i for i in spatial_rows if fields.rows[i].name == layer
                   or fields.rows[i].name.startswith(f"{layer}:")]
        if not matches:
            raise ValueError(f"{fn}: layer must name an op with spatial axes, one of "
                             f"{[fields.rows[i].name for i in spatial_rows]}, got {layer!r}")
        index = matches[-1]
    row = fields.rows[index]
    out_spatial = row.output_shape[2:]
    unit_t = tuple(unit) if unit is not None else tuple(n // 2 for n in out_spatial)
    extent = fields.field_of(row.name, unit_t) if unit is not None else None
    if extent is None:
        extent = fields.field_of(row.name, unit_t)
    erf = effective_receptive_field(model, shape, layer=row.name, samples=samples, rng=rng)
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    image = x.mean(axis=0)
    if image.ndim == 1:
        axes[0].plot(image, color="black", linewidth=1)
        (lo, hi), = extent
        axes[0].axvspan(lo - 0.5, hi + 0.5, color="C1", alpha=0.3,
                        label=f"field {hi - lo + 1}")
        axes[0].legend(fontsize=7)
        axes[1].plot(erf.map, color="C0")
    else:
        axes[0].imshow(image, cmap="gray")
        (r0, r1), (c0, c1) = extent
        axes[0].add_patch(Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0 + 1, r1 - r0 + 1,
                                    fill=False, edgecolor="C1", linewidth=2))
        axes[1].imshow(erf.map, cmap="inferno")
    axes[0].set_title(f"{row.name} unit {unit_t}: field {row.size}", fontsize=8)
    sig = ", ".join(f"{s:.2g}" for s in erf.sigma)
    axes[1].set_title(f"effective field, sigma ({sig})", fontsize=8)
    title = f"receptive field of {row.name}"
    fig.suptitle(title)
    return _render(fig, 2, title, path)


def plot_grad_cam(model: Any, x: np.ndarray, *, layer: str | None = None,
                  target: int | None = None, path: str | os.PathLike[str] | None = None
                  ) -> Picture:
    """Grad-CAM (:func:`cnnlab.analysis.grad_cam`) of one input ``x`` ((C, *spatial)):
    the input, and the class map over it (2-D: a heat overlay; 1-D: the signal coloured by
    the map)."""
    from ..analysis.gradcam import grad_cam

    cam = grad_cam(model, x, layer=layer, target=target)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    image = np.asarray(x).mean(axis=0)
    if image.ndim == 1:
        axes[0].plot(image, color="black", linewidth=1)
        axes[1].plot(image, color="lightgray", linewidth=1)
        axes[1].scatter(np.arange(image.size), image, c=cam.map, cmap="jet", s=14,
                        vmin=0, vmax=1)
    else:
        axes[0].imshow(image, cmap="gray")
        axes[1].imshow(image, cmap="gray")
        axes[1].imshow(cam.map, cmap="jet", alpha=0.5, vmin=0, vmax=1)
    axes[0].set_title("input", fontsize=8)
    axes[1].set_title(f"Grad-CAM at {cam.layer}, class {cam.target} "
                      f"(score {cam.score:.3g})", fontsize=8)
    title = f"Grad-CAM, class {cam.target}"
    fig.suptitle(title)
    return _render(fig, 2, title, path)


def _show_input(ax: Any, sample: np.ndarray) -> None:
    """One input (C, *spatial): a 1-D signal per channel as curves, a 2-D image as gray
    (one channel) or colour (three, scaled to [0, 1])."""
    ax.set_xticks([])
    ax.set_yticks([])
    if sample.ndim == 2:
        for channel in sample:
            ax.plot(channel, linewidth=1)
        return
    if sample.shape[0] == 3:
        low, high = float(sample.min()), float(sample.max())
        ax.imshow(np.moveaxis((sample - low) / ((high - low) or 1.0), 0, -1))
    else:
        ax.imshow(sample.mean(axis=0), cmap="gray")


def plot_channel(model: Any, x: np.ndarray, *, layer: str | None = None, channel: int = 0,
                 k: int = 8, steps: int = 256, rng: np.random.Generator | None = None,
                 path: str | os.PathLike[str] | None = None) -> Picture:
    """One channel as OpenAI Microscope shows it: the input optimised to excite it
    (:func:`cnnlab.analysis.visualise_channel`, in ``x``'s value range) beside the ``k``
    inputs of the dataset ``x`` ((N, C, *spatial)) that excite it most
    (:func:`cnnlab.analysis.top_activations`)."""
    from ..analysis.features import top_activations, visualise_channel

    x = check_batch(np.asarray(x), "plot_channel")
    top = top_activations(model, x, layer=layer, channel=channel, k=k)
    feature = visualise_channel(model, x.shape[1:], layer=top.layer, channel=channel,
                                steps=steps, rng=rng,
                                value_range=(float(x.min()), float(x.max())))
    plt = _pyplot()
    count = 1 + len(top.indices)
    fig, axes = plt.subplots(1, count, figsize=(1.5 * count, 1.9), squeeze=False)
    _show_input(axes[0, 0], feature.image)
    axes[0, 0].set_title(f"optimised\n{feature.activation:.3g}", fontsize=7)
    for ax, index, value in zip(axes[0, 1:], top.indices, top.values):
        _show_input(ax, x[index])
        ax.set_title(f"#{index}\n{value:.3g}", fontsize=7)
    title = f"{top.layer}, channel {channel}: optimised input and top dataset inputs"
    fig.suptitle(title, y=1.12, fontsize=9)
    return _render(fig, count, title, path)


def plot_shift_robustness(curves: dict[str, Any], *,
                          path: str | os.PathLike[str] | None = None) -> Picture:
    """Accuracy against shift size, one line per model
    (:func:`cnnlab.analysis.shift_robustness` results by label: the MLP, the CNN, the
    CNN with BlurPool...)."""
    if not curves:
        raise ValueError("plot_shift_robustness: curves must name at least one model")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    for label, curve in curves.items():
        ax.plot(curve.shifts, [100 * a for a in curve.accuracy], marker="o", label=label)
    modes = sorted({curve.mode for curve in curves.values()})
    ax.set_xlabel(f"shift (pixels, {', '.join(modes)})")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    title = "accuracy against shift size"
    ax.set_title(title)
    return _render(fig, 1, title, path)


def plot_learning_curves(histories: dict[str, Sequence[dict[str, float]]], *,
                         title: str = "", path: str | os.PathLike[str] | None = None
                         ) -> Picture:
    """Test accuracy and training loss against steps, one line per run: ``histories``
    maps a label to a run's evaluation history (``TrainResult.history``, a checkpoint's
    ``history``: dicts with "step", "test_accuracy" and "train_loss")."""
    fn = "plot_learning_curves"
    if not histories:
        raise ValueError(f"{fn}: histories must name at least one run, got none")
    for label, history in histories.items():
        missing = [key for h in history for key in ("step", "test_accuracy", "train_loss")
                   if key not in h]
        if not history or missing:
            raise ValueError(f"{fn}: run {label!r} needs evaluations with step, "
                             f"test_accuracy and train_loss, got {list(history)[:1]}")
    plt = _pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, history in histories.items():
        steps = [h["step"] for h in history]
        ax_acc.plot(steps, [100 * h["test_accuracy"] for h in history], marker="o",
                    markersize=3, label=label)
        ax_loss.plot(steps, [h["train_loss"] for h in history], marker="o", markersize=3,
                     label=label)
    ax_acc.set(xlabel="step", ylabel="test accuracy (%)", title="Test accuracy")
    ax_loss.set(xlabel="step", ylabel="cross-entropy", title="Training loss", yscale="log")
    for ax in (ax_acc, ax_loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _render(fig, 2, title or "learning curves", path)


def plot_cnn_vs_mlp(rows: Sequence[dict[str, Any]], *,
                    path: str | os.PathLike[str] | None = None) -> Picture:
    """The lecture's CNN-vs-MLP comparison as a chart, one panel per dataset: each
    model's test accuracy and its accuracy on shifted test inputs as bars, its parameter
    count under its name. ``rows`` are :func:`cnnlab.demo.run_demo`'s: dicts with "data",
    "model", "params", "test_accuracy", "shifted_accuracy" and "max_shift"."""
    fn = "plot_cnn_vs_mlp"
    keys = ("data", "model", "params", "test_accuracy", "shifted_accuracy", "max_shift")
    if not rows:
        raise ValueError(f"{fn}: rows must hold at least one trained model, got none")
    for row in rows:
        if any(key not in row for key in keys):
            raise ValueError(f"{fn}: each row needs {list(keys)}, got {sorted(row)}")
    datasets = list(dict.fromkeys(row["data"] for row in rows))
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.6),
                             squeeze=False)
    for ax, data in zip(axes[0], datasets):
        chosen = [row for row in rows if row["data"] == data]
        at = np.arange(len(chosen))
        clean = [100 * row["test_accuracy"] for row in chosen]
        moved = [100 * row["shifted_accuracy"] for row in chosen]
        ax.bar(at - 0.2, clean, 0.4, label="test inputs", color="C0")
        ax.bar(at + 0.2, moved, 0.4, color="C1",
               label=f"shifted by up to ±{chosen[0]['max_shift']}")
        for x_at, value in zip(np.concatenate([at - 0.2, at + 0.2]), clean + moved):
            ax.text(x_at, value + 1, f"{value:.0f}", ha="center", fontsize=7)
        ax.set_xticks(at, [f"{row['model']}\n{row['params']:,} params" for row in chosen],
                      fontsize=8)
        ax.set(ylim=(0, 125), xlim=(-0.8, len(chosen) - 0.2), ylabel="accuracy (%)",
               title=data)
        ax.legend(fontsize=7, loc="upper center", ncol=2)  # above the bars, hiding none
    title = "CNN vs MLP: accuracy, parameters and shifted inputs"
    fig.suptitle(title, y=1.03)
    return _render(fig, len(datasets), title, path)


def plot_conv_matrix(weight: np.ndarray, input_shape: Sequence[int], *,
                     path: str | os.PathLike[str] | None = None, **conv: Any) -> Picture:
    """A convolution's matrix (:func:`~cnnlab.analysis.conv_matrix`) as a sparsity
    picture beside the dense layer with the same sizes: the lecture's "a convolutional
    layer is a sparse, weight-shared matrix". ``conv`` takes conv_matrix's settings."""
    matrix = conv_matrix(weight, input_shape, **conv)
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    dense = matrix.toarray()
    limit = float(np.abs(dense).max()) or 1.0
    axes[0].imshow(np.ma.masked_equal(dense, 0), cmap="RdBu_r", vmin=-limit, vmax=limit,
                   interpolation="nearest")
    distinct = np.unique(matrix.data).size
    axes[0].set_title(f"convolution: {matrix.nnz:,} nonzeros, {distinct} distinct values",
                      fontsize=8)
    axes[1].imshow(np.random.default_rng(0).standard_normal(dense.shape), cmap="RdBu_r",
                   interpolation="nearest")
    axes[1].set_title(f"dense layer: {dense.size:,} weights, all free", fontsize=8)
    for ax in axes:
        ax.set_xlabel("input")
        ax.set_ylabel("output")
    title = f"{tuple(np.shape(weight))} on {tuple(input_shape)}"
    fig.suptitle(title)
    return _render(fig, 2, title, path)


def plot_activation_histograms(stats: TrainingStats, *, layers: Sequence[str] | None = None,
                               path: str | os.PathLike[str] | None = None) -> Picture:
    """fastai's "colorful dimension": per layer, the histogram of activation magnitudes
    (vertical, log bins) at each recorded step (horizontal), log counts in colour, from a
    run's ``--stats`` (:func:`cnnlab.train.read_training_stats`)."""
    names = list(layers) if layers is not None else list(stats.layers)
    if not names:
        raise ValueError("plot_activation_histograms: no layers to draw")
    plt = _pyplot()
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 1.5 * len(names) + 0.4),
                             squeeze=False)
    steps = np.asarray(stats.steps)
    for ax, name in zip(axes[:, 0], names):
        counts = np.asarray(stats.histograms(name), dtype=float)  # (steps, bins)
        ax.imshow(np.log1p(counts).T, origin="lower", aspect="auto", cmap="viridis",
                  extent=(float(steps[0]), float(steps[-1]), 0, counts.shape[1]))
        ax.set_ylabel(name, fontsize=7)
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("step")
    title = "activation magnitudes over training (log counts)"
    fig.suptitle(title)
    return _render(fig, len(names), title, path)


__all__ = ["Picture", "filter_grid", "plot_activation_histograms", "plot_channel",
           "plot_cnn_vs_mlp", "plot_conv_matrix", "plot_equivariance", "plot_feature_maps",
           "plot_filters", "plot_grad_cam", "plot_learning_curves", "plot_receptive_field",
           "plot_shift_robustness"]
