"""Datasets: indexable collections of ``(x, y)`` pairs, and the in-memory ``ArrayDataset``.

Conventions shared by every cnnlab dataset, so a training loop needs no conversions:
inputs are float32 ``(C, *spatial)`` per sample (``(N, C, H, W)`` images and ``(N, C, L)``
sequences once batched) and class labels are int64 scalars.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


class Dataset:
    """Base class: ``len(ds)`` samples, ``ds[i] -> (x, y)``.

    Subclasses implement ``__len__`` and ``__getitem__``. ``get_batch`` stacks samples one by
    one; datasets that hold arrays override it with a single fancy-indexing call, which is
    what ``DataLoader`` uses.
    """

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[np.ndarray, Any]:
        raise NotImplementedError

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Samples ``indices`` stacked: ``(xb, yb)`` with ``xb: (B, *x.shape)``."""
        samples = [self[int(i)] for i in indices]
        xs = [np.asarray(x) for x, _ in samples]
        shapes = {x.shape for x in xs}
        if len(shapes) > 1:
            raise ValueError(
                f"{type(self).__name__}.get_batch: samples must share one shape to be "
                f"batched, got shapes {sorted(shapes)}; resize them (e.g. ImageFolder(size=...))"
            )
        yb = np.asarray([y for _, y in samples])
        return np.stack(xs), yb


def _as_float32(x: Any, fn: str, name: str) -> np.ndarray:
    array = np.asarray(x)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise TypeError(f"{fn}: {name} must be a numeric array, got dtype {array.dtype}")
    return array.astype(np.float32, copy=False)


def _as_targets(y: Any, fn: str) -> np.ndarray:
    """Integer (class) targets become int64, real-valued targets float32."""
    array = np.asarray(y)
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        return array.astype(np.int64, copy=False)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    raise TypeError(f"{fn}: y must be an integer or float array, got dtype {array.dtype}")


class ArrayDataset(Dataset):
    """Samples held in two arrays with one row per sample.

    Parameters
    ----------
    x : array_like, shape (N, C, *spatial)
        Inputs; stored as float32 (no copy when already float32).
    y : array_like, shape (N,) or (N, *target_shape)
        Targets; integer labels are stored as int64, real targets as float32.

    Attributes
    ----------
    x : ndarray of shape (N, C, *spatial), float32
    y : ndarray of shape (N, ...), int64 or float32

    Examples
    --------
    >>> ds = ArrayDataset(np.zeros((5, 1, 4, 4)), np.arange(5))
    >>> len(ds), ds[2][0].shape, ds[2][1]
    (5, (1, 4, 4), np.int64(2))
    """

    def __init__(self, x: Any, y: Any) -> None:
        self.x = _as_float32(x, "ArrayDataset", "x")
        self.y = _as_targets(y, "ArrayDataset")
        if self.x.ndim < 1 or self.y.ndim < 1:
            raise ValueError(
                f"ArrayDataset: x and y need a leading sample axis, got shapes "
                f"{self.x.shape} and {self.y.shape}"
            )
        if len(self.x) != len(self.y):
            raise ValueError(
                f"ArrayDataset: x and y must have the same number of samples, got "
                f"len(x)={len(self.x)} and len(y)={len(self.y)}"
            )

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.x[index], self.y[index]

    def get_batch(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One fancy-indexing call per array: ``xb: (B, C, *spatial)``, ``yb: (B, ...)``."""
        return self.x[indices], self.y[indices]

    def subset(self, indices: Sequence[int] | np.ndarray) -> ArrayDataset:
        """A new ArrayDataset holding rows ``indices`` (copied)."""
        indices = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(self.x[indices], self.y[indices])

    def __repr__(self) -> str:
        return f"ArrayDataset(x: {self.x.shape} {self.x.dtype}, y: {self.y.shape} {self.y.dtype})"


def stratified_split(
    y: Any, n_test: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split sample indices into train and test, keeping class proportions.

    Each class gives ``n_test * count / N`` test samples, rounded by largest remainder so the
    test set has exactly ``n_test`` samples. Both index arrays come back shuffled by ``rng``.

    Parameters
    ----------
    y : array_like of shape (N,)
        Integer class labels.
    n_test : int
        Test-set size, ``0 < n_test < N``.
    rng : numpy.random.Generator
        Source of the shuffle.

    Returns
    -------
    train, test : ndarray of int64, shapes (N - n_test,) and (n_test,)

    Examples
    --------
    >>> train, test = stratified_split(np.repeat(np.arange(2), 5), 4, np.random.default_rng(0))
    >>> len(train), len(test), np.bincount(np.repeat(np.arange(2), 5)[test]).tolist()
    (6, 4, [2, 2])
    """
    labels = np.asarray(y)
    n = len(labels)
    if not 0 < n_test < n:
        raise ValueError(f"stratified_split: n_test must be in (0, {n}), got {n_test}")
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    quota = n_test * counts / n
    per_class = np.floor(quota).astype(np.int64)
    # Largest-remainder rounding: the classes that lost most to the floor get one more.
    shortfall = n_test - int(per_class.sum())
    order = np.argsort(-(quota - per_class), kind="stable")
    per_class[order[:shortfall]] += 1
    test_parts = []
    train_parts = []
    for label_index, n_class_test in enumerate(per_class):
        members = rng.permutation(np.flatnonzero(inverse == label_index))
        test_parts.append(members[:n_class_test])
        train_parts.append(members[n_class_test:])
    train = rng.permutation(np.concatenate(train_parts))
    test = rng.permutation(np.concatenate(test_parts))
    return train.astype(np.int64), test.astype(np.int64)
