"""``DataLoader``: NumPy mini-batches with seeded shuffling and a resumable data order.

The loader draws one permutation per epoch from the injected ``np.random.Generator`` and
walks it in ``batch_size`` steps. Its whole data order is the tuple (epoch, position,
permutation, generator state), which ``state_dict()`` exports as plain ints and arrays; a run
interrupted mid-epoch that restores it with ``load_state_dict()`` sees exactly the batches it
would have seen (the state of a random transform, e.g. ``RandomTranslate``, travels along).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .._random import check_rng

STATE_KEYS = ("epoch", "position", "permutation", "rng_state")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


class DataLoader:
    """Iterate over a dataset in mini-batches ``(xb, yb)`` of NumPy arrays.

    Parameters
    ----------
    dataset : Dataset
        Anything with ``__len__`` and ``__getitem__ -> (x, y)``. When it has
        ``get_batch(indices)`` (``ArrayDataset`` does) a batch is one fancy-indexing call,
        with no per-sample Python loop.
    batch_size : int, default 1
        Samples per batch; the last batch may be smaller unless ``drop_last``.
    shuffle : bool, default False
        Draw a new permutation of the samples at the start of every epoch.
    drop_last : bool, default False
        Skip the final incomplete batch.
    rng : numpy.random.Generator, optional
        Source of the shuffle. Default: a fresh ``np.random.default_rng()`` (unseeded, so
        pass one for a reproducible order; the order is resumable either way).
    transform : callable, optional
        Applied to each input batch ``xb: (B, C, *spatial)``, e.g. ``Compose([...])``.

    Yields
    ------
    xb : ndarray of shape (B, C, *spatial), float32
    yb : ndarray of shape (B,), int64

    Notes
    -----
    Each ``iter(loader)`` starts a new epoch, except the first one after
    ``load_state_dict`` of a mid-epoch state, which continues that epoch. Starting a new
    iteration invalidates an unfinished one. An epoch ends when its iterator is exhausted,
    not when its last batch is handed out: a state saved inside the loop after the last
    batch resumes into that epoch's (now empty) remainder, just as the training loop that
    saved it re-enters the interrupted epoch.

    Examples
    --------
    >>> from cnnlab.data import ArrayDataset
    >>> ds = ArrayDataset(np.zeros((10, 1, 4)), np.arange(10))
    >>> loader = DataLoader(ds, batch_size=4, shuffle=True, rng=np.random.default_rng(0))
    >>> len(loader), [yb.shape for _, yb in loader]
    (3, [(4,), (4,), (2,)])
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 1,
        shuffle: bool = False,
        drop_last: bool = False,
        rng: np.random.Generator | None = None,
        transform: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
            raise TypeError(
                f"DataLoader: dataset must have __len__ and __getitem__, "
                f"got {type(dataset).__name__}"
            )
        if not _is_int(batch_size):
            raise TypeError(f"DataLoader: batch_size must be an int, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"DataLoader: batch_size must be >= 1, got {batch_size}")
        if transform is not None and not callable(transform):
            raise TypeError(f"DataLoader: transform must be callable, got {transform!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.rng = check_rng(rng, "DataLoader")
        self.transform = transform
        self._epoch = 0
        self._position = 0
        self._permutation: np.ndarray | None = None  # set while an epoch is in progress
        self._resume = False
        self._generation = 0

    def __len__(self) -> int:
        """Batches per epoch: ``N // batch_size`` with ``drop_last``, else the ceiling."""
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    @property
    def epoch(self) -> int:
        """Index of the epoch in progress, or of the next one to start."""
        return self._epoch

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not (self._resume and self._permutation is not None):
            self._start_epoch()
        self._resume = False
        self._generation += 1
        return self._batches(self._generation)

    def _start_epoch(self) -> None:
        if self._permutation is not None:  # an unfinished epoch was abandoned
            self._epoch += 1
        n = len(self.dataset)
        self._permutation = self.rng.permutation(n) if self.shuffle else np.arange(n)
        self._position = 0

    def _batches(self, generation: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        get_batch = getattr(self.dataset, "get_batch", None)
        n_batches = len(self)
        while self._position < n_batches:
            if generation != self._generation:
                raise RuntimeError(
                    "DataLoader: this iterator was invalidated because a new iteration "
                    "over the loader started"
                )
            start = self._position * self.batch_size
            indices = self._permutation[start:start + self.batch_size]
            if get_batch is not None:
                xb, yb = get_batch(indices)
            else:
                xb, yb = _stack([self.dataset[int(i)] for i in indices])
            if self.transform is not None:
                xb = self.transform(xb)
            # Count the batch as delivered before handing it out, so a state_dict() taken
            # inside the loop body resumes with the next batch.
            self._position += 1
            yield xb, yb
        if generation == self._generation:
            self._epoch += 1
            self._position = 0
            self._permutation = None

    def state_dict(self) -> dict[str, Any]:
        """The data order as plain values (no pickle needed to store it).

        Returns
        -------
        dict
            ``epoch`` (int), ``position`` (int, batches already delivered in that epoch),
            ``permutation`` (int64 array of shape (N,), or shape (0,) between epochs),
            ``rng_state`` (``rng.bit_generator.state``: a dict of str, int and, for some
            bit generators, arrays) and, when the transform has one, ``transform``
            (its ``state_dict()``).
        """
        in_progress = self._permutation is not None
        state: dict[str, Any] = {
            "epoch": int(self._epoch),
            "position": int(self._position) if in_progress else 0,
            "permutation": (
                np.array(self._permutation, dtype=np.int64)
                if in_progress else np.zeros(0, dtype=np.int64)
            ),
            "rng_state": self.rng.bit_generator.state,
        }
        if hasattr(self.transform, "state_dict"):
            state["transform"] = self.transform.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()``; the next ``iter()`` continues where it left off."""
        missing = [key for key in STATE_KEYS if key not in state]
        if missing:
            raise ValueError(f"DataLoader.load_state_dict: missing keys {missing}")
        permutation = np.asarray(state["permutation"], dtype=np.int64).reshape(-1)
        n = len(self.dataset)
        if permutation.size and (
            permutation.size != n or not np.array_equal(np.sort(permutation), np.arange(n))
        ):
            raise ValueError(
                f"DataLoader.load_state_dict: permutation must be a permutation of "
                f"range({n}) (len(dataset)), got an array of length {permutation.size}"
            )
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise ValueError(
                f"DataLoader.load_state_dict: position must be in [0, {len(self)}], "
                f"got {position}"
            )
        rng_state = state["rng_state"]
        expected_name = type(self.rng.bit_generator).__name__
        got_name = rng_state.get("bit_generator") if isinstance(rng_state, dict) else None
        if got_name != expected_name:
            raise ValueError(
                f"DataLoader.load_state_dict: rng_state is for bit generator {got_name!r}, "
                f"but this loader's rng uses {expected_name!r}"
            )
        self.rng.bit_generator.state = rng_state
        if "transform" in state and hasattr(self.transform, "load_state_dict"):
            self.transform.load_state_dict(state["transform"])
        self._epoch = int(state["epoch"])
        self._position = position if permutation.size else 0
        self._permutation = permutation if permutation.size else None
        self._resume = True
        self._generation += 1  # invalidate any live iterator

    def __repr__(self) -> str:
        options = [f"batch_size={self.batch_size}"]
        if self.shuffle:
            options.append("shuffle=True")
        if self.drop_last:
            options.append("drop_last=True")
        if self.transform is not None:
            options.append(f"transform={self.transform!r}")
        return f"DataLoader({type(self.dataset).__name__}, {', '.join(options)})"


def _stack(samples: list[tuple[Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample fallback for datasets without ``get_batch``."""
    xb = np.stack([np.asarray(x) for x, _ in samples])
    yb = np.asarray([y for _, y in samples])
    return xb, yb
