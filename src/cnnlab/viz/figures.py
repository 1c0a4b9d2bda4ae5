"""Pictures of training and of learned filters (matplotlib, imported lazily, Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._files import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Save a figure atomically (temp file in the same folder, then rename)."""
    target = Path(path)
    try:
        return atomic_write(target, lambda file: fig.savefig(
            file, format=target.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight"))
    finally:
        _pyplot().close(fig)


def plot_learning_curves(histories: dict[str, Sequence[dict[str, float]]],
                         path: str | os.PathLike[str], title: str = "") -> Path:
    """Test accuracy and training loss against steps, one line per run."""
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
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


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


def plot_filters(weight: np.ndarray, path: str | os.PathLike[str], title: str = "") -> Path:
    """First-layer filters (:func:`filter_grid`), written to ``path``."""
    fig = filter_grid(weight)
    if title:
        rows = fig.axes[0].get_gridspec().nrows
        fig.suptitle(title, y=1.0 + 0.12 / rows)  # above the tiles' own titles
    return _save(fig, path)
