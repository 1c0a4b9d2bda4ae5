"""What a channel responds to: the dataset inputs that excite it most (OpenAI Microscope's
second column) and an input optimised to excite it (activation maximisation, Olah et al.
2017, "Feature Visualization", Distill).

Both read a layer by the names :func:`~.graph.trace` gives (a module path such as "conv2",
or a row name such as "conv2:conv"; default: the last convolution) and a channel of its
output. A channel's activation for one input is its largest value over positions (the
unit where it fires most).

Activation maximisation follows Olah et al.'s recipe for legible pictures: the input is
parameterised in the Fourier domain with each frequency's amplitude scaled by 1/f
(decorrelated, so gradient steps do not amplify high frequencies), and every step applies
a random jitter (a circular shift of a few pixels) and, in 2-D, a small random rescaling
(transformation robustness); the result is squashed into the data's range by a sigmoid.
1-D and 2-D inputs, any number of channels (grayscale, colour, several sensors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._random import check_rng
from ..nn.linear import check_positive_int
from .graph import Capture, Graph, Node, check_batch, evaluating


def _layer(graph: Graph, layer: str | None, rank: int, fn: str) -> Node:
    spatial = [n for n in graph if len(n.output_shape) == rank]
    if layer is None:
        convs = [n for n in spatial if n.op in ("conv", "conv_transpose")]
        if not convs:
            raise ValueError(f"{fn}: the model has no convolution")
        return convs[-1]
    for node in reversed(spatial):
        if layer in (node.name, node.module):
            return node
    names = sorted({n.module or n.name for n in spatial})
    raise ValueError(f"{fn}: layer must name an op with spatial output, one of {names}, "
                     f"got {layer!r}")


@dataclass(frozen=True)
class TopActivations:
    """The ``k`` inputs of a dataset that excite ``channel`` of ``layer`` most:
    ``indices`` into the dataset (strongest first) and their ``values`` (the channel's
    largest value over positions)."""

    layer: str
    channel: int
    indices: np.ndarray
    values: np.ndarray

    def __str__(self) -> str:
        pairs = ", ".join(f"#{i} ({v:.3g})" for i, v in zip(self.indices, self.values))
        return f"top inputs of {self.layer} channel {self.channel}: {pairs}"


def top_activations(model: Any, x: np.ndarray, *, layer: str | None = None,
                    channel: int = 0, k: int = 9, batch_size: int = 256) -> TopActivations:
    """The ``k`` inputs of ``x`` ((N, C, *spatial)) whose ``channel`` of ``layer`` fires
    most (largest value over positions), strongest first. Eval mode, modes restored."""
    fn = "top_activations"
    x = check_batch(x, fn)
    k = check_positive_int(k, "k", fn)
    capture = Capture(model, fn)
    strongest = []
    node = None
    with evaluating(model):
        for lo in range(0, len(x), batch_size):
            recording = capture.run(x[lo:lo + batch_size])
            if node is None:
                node = _layer(recording.graph, layer, x.ndim, fn)
                if not 0 <= channel < node.output_shape[1]:
                    raise ValueError(f"{fn}: channel must be in 0..{node.output_shape[1] - 1}"
                                     f" for {node.name}, got {channel}")
            maps = recording.array(node.index)[:, channel]
            strongest.append(maps.reshape(len(maps), -1).max(axis=1))
    assert node is not None
    values = np.concatenate(strongest)
    order = np.argsort(-values, kind="stable")[:k]
    return TopActivations(node.name, int(channel), order, values[order])


@dataclass(frozen=True)
class FeatureVisualisation:
    """The input optimised to excite ``channel`` of ``layer`` (``image``, the model's
    input shape, in ``value_range``), the channel's ``activation`` on it (its mean over
    positions, the objective) along the ``history`` of steps, and on a random start."""

    layer: str
    channel: int
    image: np.ndarray
    activation: float
    history: tuple[float, ...]
    baseline: float

    def __str__(self) -> str:
        return (f"{self.layer} channel {self.channel}: activation {self.activation:.3g} "
                f"(a random input: {self.baseline:.3g})")


def _spectrum_scale(spatial: Sequence[int]) -> np.ndarray:
    """1/f amplitude of each rFFT frequency (the DC term kept at the first frequency's)."""
    freqs = [np.fft.fftfreq(n) for n in spatial[:-1]] + [np.fft.rfftfreq(spatial[-1])]
    grid = np.meshgrid(*freqs, indexing="ij")
    radius = np.sqrt(sum(g ** 2 for g in grid))
    radius[(0,) * len(spatial)] = 1.0 / max(spatial)
    return 1.0 / np.maximum(radius, 1.0 / max(spatial))


def _to_image(coefficients: np.ndarray, scale: np.ndarray, spatial: tuple[int, ...]
              ) -> np.ndarray:
    axes = tuple(range(1, 1 + len(spatial)))
    return np.fft.irfftn(coefficients * scale, s=spatial, axes=axes, norm="ortho")


def _from_image_gradient(grad: np.ndarray, scale: np.ndarray, spatial: tuple[int, ...]
                         ) -> np.ndarray:
    """The adjoint of :func:`_to_image`, as a real-valued gradient on the coefficients
    (stored as a complex array: real and imaginary parts are the parameters)."""
    axes = tuple(range(1, 1 + len(spatial)))
    adjoint = np.fft.rfftn(grad, axes=axes, norm="ortho")
    # irfftn counts every non-edge frequency twice (its conjugate): so does the adjoint
    n_last = spatial[-1]
    weight = np.full(adjoint.shape[-1], 2.0)
    weight[0] = 1.0
    if n_last % 2 == 0:
        weight[-1] = 1.0
    return adjoint * weight * scale


def _channel_gradient(model: Any, capture: Capture, image: np.ndarray, node: Node,
                      channel: int) -> tuple[float, np.ndarray]:
    """The channel's mean activation on ``image`` (C, *spatial) and its gradient."""
    batch = image[None].astype(capture.dtype())
    recording = capture.run(batch, differentiable=True)
    value = recording.array(node.index)[0, channel]
    seed = np.zeros(node.output_shape, dtype=capture.dtype())
    seed[0, channel] = 1.0 / value.size
    grad = recording.input_gradient(node.index, seed)[0]
    return float(value.mean()), grad.astype(np.float64)


def _rescale(image: np.ndarray, factor: float) -> np.ndarray:
    """Zoom a (C, H, W) image about its centre by ``factor`` (bilinear, same size)."""
    from scipy import ndimage

    _, h, w = image.shape
    matrix = np.diag([1.0, 1.0 / factor, 1.0 / factor])
    centre = np.array([0.0, (h - 1) / 2, (w - 1) / 2])
    offset = centre - matrix @ centre
    return ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="reflect")


def visualise_channel(model: Any, input_shape: Sequence[int], *, layer: str | None = None,
                      channel: int = 0, steps: int = 256, lr: float = 0.05,
                      jitter: int = 2, scales: Sequence[float] = (0.95, 1.0, 1.05),
                      value_range: tuple[float, float] = (0.0, 1.0),
                      rng: np.random.Generator | None = None) -> FeatureVisualisation:
    """An input of ``input_shape`` ((C, *spatial)) that excites ``channel`` of ``layer``:
    gradient ascent (Adam) on the mean activation, through a 1/f Fourier
    parameterisation, with random jitter (a circular shift of up to ``jitter`` pixels
    per axis) and, in 2-D, a random rescaling by one of ``scales`` at every step. The
    image lies in ``value_range`` (a sigmoid of the parameterised signal). Eval mode,
    modes restored; no parameter's ``.grad`` is written."""
    fn = "visualise_channel"
    shape = tuple(int(n) for n in input_shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ValueError(f"{fn}: input_shape must be (C, L) or (C, H, W), got "
                         f"{input_shape!r}")
    steps = check_positive_int(steps, "steps", fn)
    generator = check_rng(rng, fn)
    capture = Capture(model, fn)
    spatial = shape[1:]
    low, high = value_range
    with evaluating(model):
        graph = capture.run(np.zeros((1, *shape), capture.dtype())).graph
        node = _layer(graph, layer, len(shape) + 1, fn)
        if not 0 <= channel < node.output_shape[1]:
            raise ValueError(f"{fn}: channel must be in 0..{node.output_shape[1] - 1} for "
                             f"{node.name}, got {channel}")
        scale = _spectrum_scale(spatial)
        coefficients = 0.01 * (generator.standard_normal((shape[0], *scale.shape))
                               + 1j * generator.standard_normal((shape[0], *scale.shape)))
        baseline, _ = _channel_gradient(model, capture, low + (high - low) * _sigmoid(
            _to_image(coefficients, scale, spatial)), node, channel)
        m = np.zeros_like(coefficients)
        v = np.zeros(coefficients.shape)
        history = []
        for step in range(1, steps + 1):
            signal = _to_image(coefficients, scale, spatial)
            squashed = _sigmoid(signal)
            image = low + (high - low) * squashed
            shifts = tuple(int(s) for s in generator.integers(-jitter, jitter + 1,
                                                              size=len(spatial)))
            axes = tuple(range(1, 1 + len(spatial)))
            seen = np.roll(image, shifts, axis=axes)
            factor = 1.0
            if len(spatial) == 2 and scales:
                factor = float(generator.choice(np.asarray(scales, dtype=float)))
                if factor != 1.0:
                    seen = _rescale(seen, factor)
            value, grad = _channel_gradient(model, capture, seen, node, channel)
            history.append(value)
            if factor != 1.0:
                grad = _rescale(grad, 1.0 / factor)  # an approximate adjoint of the zoom
            grad = np.roll(grad, tuple(-s for s in shifts), axis=axes)
            grad = grad * (high - low) * squashed * (1 - squashed)
            g = _from_image_gradient(grad, scale, spatial)
            # Adam, ascending; one second moment per complex coefficient
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * np.abs(g) ** 2
            m_hat = m / (1 - 0.9 ** step)
            v_hat = v / (1 - 0.999 ** step)
            coefficients = coefficients + lr * m_hat / (np.sqrt(v_hat) + 1e-8)
        image = low + (high - low) * _sigmoid(_to_image(coefficients, scale, spatial))
        final, _ = _channel_gradient(model, capture, image, node, channel)
    return FeatureVisualisation(node.name, int(channel), image, final, tuple(history),
                                baseline)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


__all__ = ["FeatureVisualisation", "TopActivations", "top_activations", "visualise_channel"]

