"""Batch transforms: callables ``xb -> xb`` on ``(N, C, *spatial)`` float arrays.

They act on a whole batch at once (the ``DataLoader`` calls them per batch), so every
per-sample choice is vectorised over ``N``. ``RandomTranslate`` is the lecture's translation
prior used as data augmentation: a translated digit is still the same digit, so training on
shifted copies teaches the invariance the architecture's convolutions and pooling build in
(lecture, "Translation invariance": ``T_v f(x) = f(x - v)``). ``PermutePositions`` does the
opposite: one fixed reordering of the positions destroys the spatial order that prior relies on
while keeping every value (Greydanus 2020's "shuffled" MNIST-1D, after Zhang et al. 2017).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._random import check_rng


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_batch(xb: Any, fn: str) -> np.ndarray:
    array = np.asarray(xb)
    if array.ndim < 2:
        raise ValueError(
            f"{fn}: input must have shape (N, C, *spatial), got shape {array.shape}"
        )
    return array


def _per_channel(values: float | Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim > 1:
        raise ValueError(f"Normalize: {name} must be a float or a 1-D sequence, got {values!r}")
    return array.reshape(-1)


class Normalize:
    """``(x - mean[c]) / std[c]`` per channel.

    Parameters
    ----------
    mean, std : float or sequence of C floats
        One value for all channels or one per channel; ``std > 0``.

    Shape
    -----
    ``(N, C, *spatial) -> (N, C, *spatial)``, float32 (a new array; the input is untouched).

    Examples
    --------
    >>> Normalize(0.5, 0.25)(np.ones((1, 1, 2), np.float32)).tolist()
    [[[2.0, 2.0]]]
    """

    def __init__(self, mean: float | Sequence[float], std: float | Sequence[float]) -> None:
        self.mean = _per_channel(mean, "mean")
        self.std = _per_channel(std, "std")
        if not np.all(self.std > 0):
            raise ValueError(f"Normalize: std must be > 0 in every channel, got {std!r}")
        if self.mean.size != self.std.size and 1 not in (self.mean.size, self.std.size):
            raise ValueError(
                f"Normalize: mean and std must have the same number of channels (or one), "
                f"got {self.mean.size} and {self.std.size}"
            )

    def __call__(self, xb: np.ndarray) -> np.ndarray:
        xb = _check_batch(xb, "Normalize")
        channels = xb.shape[1]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values.size not in (1, channels):
                raise ValueError(
                    f"Normalize: {name} has {values.size} values but the input has "
                    f"{channels} channels (shape {xb.shape})"
                )
        broadcast = (1, -1) + (1,) * (xb.ndim - 2)
        mean = self.mean.reshape(broadcast).astype(np.float32)
        std = self.std.reshape(broadcast).astype(np.float32)
        return ((xb - mean) / std).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class RandomTranslate:
    """Shift each sample by a random integer vector, filling the vacated border with zeros.

    Every sample ``n`` gets its own shift ``v_n`` drawn uniformly from
    ``[-max_shift, max_shift]`` in each spatial dimension (all channels move together), and
    ``out[n, c, i] = x[n, c, i - v_n]`` where ``i - v_n`` is inside the input, else 0.

    Parameters
    ----------
    max_shift : int or tuple of ints
        Largest shift per spatial dimension (one int for all); ``>= 0``.
    rng : numpy.random.Generator, optional
        Source of the shifts; default a fresh unseeded ``np.random.default_rng()``.

    Shape
    -----
    ``(N, C, *spatial) -> (N, C, *spatial)`` for any number of spatial dimensions (1-D
    sequences, 2-D images, ...).

    Examples
    --------
    >>> shift = RandomTranslate(1, rng=np.random.default_rng(0))
    >>> shift(np.ones((2, 1, 3), np.float32)).shape
    (2, 1, 3)
    """

    def __init__(
        self, max_shift: int | Sequence[int], rng: np.random.Generator | None = None
    ) -> None:
        if _is_int(max_shift):
            shifts = (max_shift,)
        elif isinstance(max_shift, Sequence) and not isinstance(max_shift, str):
            shifts = tuple(max_shift)
        else:
            shifts = ()
        if not shifts or not all(_is_int(s) for s in shifts):
            raise TypeError(
                f"RandomTranslate: max_shift must be an int or a tuple of ints, "
                f"got {max_shift!r}"
            )
        if any(s < 0 for s in shifts):
            raise ValueError(f"RandomTranslate: max_shift must be >= 0, got {max_shift!r}")
        self.max_shift = tuple(int(s) for s in shifts)
        self._broadcast = _is_int(max_shift)
        self.rng = check_rng(rng, "RandomTranslate")

    def _max_shift_for(self, n_spatial: int) -> tuple[int, ...]:
        if self._broadcast:
            return self.max_shift * n_spatial
        if len(self.max_shift) != n_spatial:
            raise ValueError(
                f"RandomTranslate: max_shift has {len(self.max_shift)} values but the input "
                f"has {n_spatial} spatial dimensions"
            )
        return self.max_shift

    def sample_shifts(self, n: int, n_spatial: int) -> np.ndarray:
        """Draw the shifts for a batch: int64 array of shape ``(n, n_spatial)``."""
        limits = np.asarray(self._max_shift_for(n_spatial), dtype=np.int64)
        return self.rng.integers(-limits, limits, size=(n, n_spatial), endpoint=True)

    def __call__(self, xb: np.ndarray) -> np.ndarray:
        xb = _check_batch(xb, "RandomTranslate")
        shifts = self.sample_shifts(xb.shape[0], xb.ndim - 2)
        return translate(xb, shifts)

    def state_dict(self) -> dict[str, Any]:
        """``{"rng_state": rng.bit_generator.state}`` (plain str/int values)."""
        return {"rng_state": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["rng_state"]

    def __repr__(self) -> str:
        shift = self.max_shift[0] if self._broadcast else self.max_shift
        return f"RandomTranslate(max_shift={shift})"


def translate(xb: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shift sample ``n`` of ``xb`` by ``shifts[n]`` with zero fill: ``out[i] = x[i - v]``.

    Parameters
    ----------
    xb : ndarray of shape (N, C, *spatial)
    shifts : int array of shape (N, len(spatial))
        Positive values move content towards higher indices.

    Returns
    -------
    ndarray of shape (N, C, *spatial), same dtype as ``xb``.

    Examples
    --------
    >>> translate(np.arange(1, 5.0).reshape(1, 1, 4), np.array([[1]])).tolist()
    [[[0.0, 1.0, 2.0, 3.0]]]
    """
    xb = np.asarray(xb)
    shifts = np.asarray(shifts, dtype=np.int64)
    n_spatial = xb.ndim - 2
    if shifts.shape != (xb.shape[0], n_spatial):
        raise ValueError(
            f"translate: shifts must have shape (N, n_spatial) = {(xb.shape[0], n_spatial)}, "
            f"got {shifts.shape}"
        )
    out = xb
    # One gather per spatial axis, each vectorised over the whole batch: the source index
    # i - v_n is clipped into range for the gather, and positions whose true source falls
    # outside the input are zeroed afterwards.
    for axis_offset in range(n_spatial):
        axis = 2 + axis_offset
        size = xb.shape[axis]
        positions = np.arange(size).reshape([1] * axis + [size] + [1] * (xb.ndim - axis - 1))
        sample_shift = shifts[:, axis_offset].reshape([-1] + [1] * (xb.ndim - 1))
        source = positions - sample_shift  # (N, 1, ..., size, ..., 1)
        inside = (source >= 0) & (source < size)
        gathered = np.take_along_axis(out, np.clip(source, 0, size - 1), axis=axis)
        out = np.where(inside, gathered, np.zeros((), dtype=xb.dtype))
    return out if n_spatial else xb.copy()


class PermutePositions:
    """Reorder the spatial positions of every sample by one fixed permutation.

    The spatial positions are counted in C order (for images, row by row), and
    ``out[n, c, j] = x[n, c, permutation[j]]`` for every sample ``n`` and channel ``c``:
    position ``j`` of the output holds what position ``permutation[j]`` of the input held
    (NumPy's ``x[..., permutation]`` for sequences). The same permutation applies to every
    sample and channel and on every call, so the batch keeps every value and label but loses
    which values were neighbours: a dense layer can undo it exactly (it is a relabelling of
    its input weights), a convolution cannot.

    Parameters
    ----------
    permutation : sequence of ints
        Each of ``0 .. P-1`` exactly once, ``P`` the number of spatial positions.

    Shape
    -----
    ``(N, C, *spatial) -> (N, C, *spatial)`` with ``prod(spatial) == len(permutation)``; a
    new array of the input's dtype (the input is untouched).

    Examples
    --------
    >>> shuffle = PermutePositions([2, 0, 1])
    >>> shuffle(np.array([[[10.0, 20.0, 30.0]]])).tolist()
    [[[30.0, 10.0, 20.0]]]
    >>> shuffle.inverse()(shuffle(np.array([[[10.0, 20.0, 30.0]]]))).tolist()
    [[[10.0, 20.0, 30.0]]]
    """

    def __init__(self, permutation: Sequence[int] | np.ndarray) -> None:
        try:
            array = np.asarray(permutation)
        except ValueError:  # a ragged sequence
            array = np.asarray(())
        if array.ndim != 1 or array.size == 0 or not np.issubdtype(array.dtype, np.integer):
            raise TypeError(
                f"PermutePositions: permutation must be a non-empty 1-D sequence of ints, "
                f"got {permutation!r}"
            )
        if not np.array_equal(np.sort(array), np.arange(array.size)):
            raise ValueError(
                f"PermutePositions: permutation must hold each of 0..{array.size - 1} exactly "
                f"once, got {array.tolist()}"
            )
        self.permutation = array.astype(np.int64)
        self.permutation.flags.writeable = False

    def inverse(self) -> PermutePositions:
        """The transform that puts every position back: ``p.inverse()(p(x)) == x``."""
        return PermutePositions(np.argsort(self.permutation))

    def __call__(self, xb: np.ndarray) -> np.ndarray:
        xb = _check_batch(xb, "PermutePositions")
        spatial = xb.shape[2:]
        positions = int(np.prod(spatial))
        if positions != self.permutation.size:
            raise ValueError(
                f"PermutePositions: the permutation has {self.permutation.size} positions but "
                f"the input has {positions} (spatial shape {spatial}, input shape {xb.shape})"
            )
        flat = xb.reshape(*xb.shape[:2], positions)
        return flat[..., self.permutation].reshape(xb.shape)

    def __repr__(self) -> str:
        return f"PermutePositions({self.permutation.tolist()})"


class Compose:
    """Apply transforms in order: ``Compose([a, b])(x) == b(a(x))``.

    ``state_dict`` collects the states of the transforms that have one (keyed by position),
    so a ``DataLoader`` resumes random augmentations exactly.

    Examples
    --------
    >>> t = Compose([Normalize(0.0, 2.0), Normalize(1.0, 1.0)])
    >>> t(np.full((1, 1, 1), 4.0, np.float32)).tolist()
    [[[1.0]]]
    """

    def __init__(self, transforms: Sequence[Callable[[np.ndarray], np.ndarray]]) -> None:
        transforms = list(transforms)
        for position, transform in enumerate(transforms):
            if not callable(transform):
                raise TypeError(
                    f"Compose: transforms[{position}] must be callable, got {transform!r}"
                )
        self.transforms = transforms

    def __call__(self, xb: np.ndarray) -> np.ndarray:
        for transform in self.transforms:
            xb = transform(xb)
        return xb

    def state_dict(self) -> dict[str, Any]:
        return {
            str(position): transform.state_dict()
            for position, transform in enumerate(self.transforms)
            if hasattr(transform, "state_dict")
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for position, transform in enumerate(self.transforms):
            if str(position) in state and hasattr(transform, "load_state_dict"):
                transform.load_state_dict(state[str(position)])

    def __repr__(self) -> str:
        return f"Compose([{', '.join(repr(t) for t in self.transforms)}])"
