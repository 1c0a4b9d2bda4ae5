"""Generated tasks for the models that are not classifiers: WaveNet and U-Net.

- :func:`train_wavenet_delay`: a WaveNet learns to output its input delayed by ``delay``
  samples (:func:`cnnlab.data.synthetic.delayed_copy`). Its output t sees inputs
  ``t - receptive_field + 1 .. t``, so the task is solvable exactly when
  ``receptive_field > delay``; otherwise the needed sample lies outside what the output
  sees and the mean squared error cannot fall below the target's variance (about 1).
- :func:`train_unet_segmentation`: a U-Net learns per-pixel masks of noisy shapes
  (:func:`cnnlab.data.synthetic.shapes_segmentation`) with binary cross-entropy.

Each run draws data and initial weights from one seeded generator, trains with Adam on
fresh batches, and reports its metric before and after on a fixed held-out set. The
defaults take a few seconds on a laptop CPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from .._random import check_rng
from ..autograd import Tensor, no_grad
from ..data.synthetic import delayed_copy, shapes_segmentation
from ..models import UNet, WaveNet
from ..optim import Adam


def _check_steps(steps: Any, fn: str) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"{fn}: steps must be an int, got {type(steps).__name__}")
    if steps < 0:
        raise ValueError(f"{fn}: steps must be >= 0, got {steps}")
    return int(steps)


def _predict(model: Any, x: np.ndarray) -> np.ndarray:
    model.eval()
    with no_grad():
        out = model(Tensor(x)).data
    model.train()
    return out


def train_wavenet_delay(steps: int = 200, delay: int = 6, *, layers: int = 4,
                        channels: int = 16, kernel_size: int = 2, length: int = 64,
                        batch_size: int = 16, lr: float = 3e-3, seed: int = 0,
                        rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Train a :class:`~cnnlab.models.WaveNet` to copy its input ``delay`` samples late.

    Parameters
    ----------
    steps : Adam steps, each on a fresh batch of ``batch_size`` sequences ``(B, 1, length)``
    delay : the shift to learn, in samples
    layers, channels, kernel_size : the WaveNet (dilations 1, 2, ..., 2**(layers-1))
    lr : Adam's learning rate
    seed, rng : the generator for data and weights (``rng`` wins; else ``seed``)

    Returns
    -------
    dict with ``mse_before`` and ``mse_after`` (mean squared error on 64 held-out
    sequences, :func:`cnnlab.functional.mse_loss`), ``receptive_field``
    (``1 + (kernel_size - 1) * sum(dilations)``), ``delay`` and ``solvable``
    (``receptive_field > delay``).
    """
    fn = "train_wavenet_delay"
    steps = _check_steps(steps, fn)
    rng = check_rng(rng, fn, default_seed=seed)
    init_rng, data_rng = rng.spawn(2)
    model = WaveNet(init_rng, in_channels=1, out_channels=1, channels=channels,
                    kernel_size=kernel_size, layers=layers)
    x_test, y_test = delayed_copy(64, length, delay, data_rng)
    mse_before = float(F.mse_loss(_predict(model, x_test), y_test))
    optimizer = Adam(list(model.parameters()), lr=lr)
    for _ in range(steps):
        xb, yb = delayed_copy(batch_size, length, delay, data_rng)
        # WaveNet's output at t depends on inputs <= t only, so output t is compared with
        # y[t] = x[t - delay] directly: no shifting of the target is needed.
        loss = F.mse_loss(model(Tensor(xb)), yb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    mse_after = float(F.mse_loss(_predict(model, x_test), y_test))
    return {"mse_before": mse_before, "mse_after": mse_after,
            "receptive_field": model.receptive_field, "delay": delay,
            "solvable": model.receptive_field > delay}


def segmentation_scores(logits: np.ndarray, masks: np.ndarray) -> tuple[float, float]:
    """Intersection over union of the foreground, and pixel accuracy, over a whole set.

    ``logits, masks: (N, 1, H, W)``; a pixel is predicted foreground when its logit > 0.

    >>> masks = np.array([[[[1.0, 1.0], [0.0, 0.0]]]])
    >>> segmentation_scores(np.array([[[[3.0, -1.0], [2.0, -2.0]]]]), masks)
    (0.3333333333333333, 0.5)
    """
    predicted = logits > 0
    truth = masks > 0.5
    union = np.logical_or(predicted, truth).sum()
    iou = float(np.logical_and(predicted, truth).sum() / union) if union else 1.0
    return iou, float((predicted == truth).mean())


def train_unet_segmentation(steps: int = 100, *, size: int = 16, base: int = 8,
                            depth: int = 2, batch_size: int = 16, lr: float = 3e-3,
                            noise: float = 0.5, seed: int = 0,
                            rng: np.random.Generator | None = None) -> dict[str, Any]:
    """Train a :class:`~cnnlab.models.UNet` to segment noisy rectangles and discs.

    Parameters
    ----------
    steps : Adam steps, each on a fresh batch ``(batch_size, 1, size, size)``
    size : image side; divisible by ``2**depth``
    base, depth : the U-Net's first width and number of poolings
    lr : Adam's learning rate
    noise : pixel noise standard deviation of the images
    seed, rng : the generator for data and weights (``rng`` wins; else ``seed``)

    Returns
    -------
    dict with ``iou_before``, ``iou_after`` (foreground IoU on 64 held-out images),
    ``pixel_accuracy`` (after training), ``iou_all_foreground`` (the trivial baseline of
    predicting every pixel foreground: the foreground fraction) and ``foreground_fraction``.
    """
    fn = "train_unet_segmentation"
    steps = _check_steps(steps, fn)
    if size % 2**depth:
        raise ValueError(f"{fn}: size ({size}) must be divisible by 2**depth ({2**depth})")
    rng = check_rng(rng, fn, default_seed=seed)
    init_rng, data_rng = rng.spawn(2)
    model = UNet(init_rng, in_channels=1, out_channels=1, base=base, depth=depth)
    x_test, m_test = shapes_segmentation(64, size, data_rng, noise=noise)
    iou_before, _ = segmentation_scores(_predict(model, x_test), m_test)
    optimizer = Adam(list(model.parameters()), lr=lr)
    for _ in range(steps):
        xb, mb = shapes_segmentation(batch_size, size, data_rng, noise=noise)
        loss = F.binary_cross_entropy_with_logits(model(Tensor(xb)), mb)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    iou_after, accuracy = segmentation_scores(_predict(model, x_test), m_test)
    foreground = float(m_test.mean())
    return {"iou_before": iou_before, "iou_after": iou_after, "pixel_accuracy": accuracy,
            "iou_all_foreground": foreground, "foreground_fraction": foreground}
