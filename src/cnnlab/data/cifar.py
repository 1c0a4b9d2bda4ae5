"""CIFAR-10/100 python batches, read safely: a restricted unpickler that runs no code and
builds no array the file's own bytes do not fill (``_CifarUnpickler``), and labels checked
as class indices. Kept apart from ``readers.py`` (IDX, image folders), which re-exports
these names for their old import path.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..ops._args import check_choice
from .dataset import ArrayDataset
from .downloads import atomic_write
from .downloads import download as _download
from .limits import check_declared_bytes, file_size

# ---------------------------------------------------------------------------------------------
# CIFAR-10/100 python batches: https://www.cs.toronto.edu/~kriz/cifar.html. Each batch is a
# pickled dict with b"data" (uint8 array (N, 3072): 1024 red, 1024 green, 1024 blue values per
# row, each plane row-major 32x32) and b"labels" (CIFAR-10) or b"fine_labels" /
# b"coarse_labels" (CIFAR-100), lists of ints.

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("test_batch",)
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
CIFAR100_SHA256 = "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"
CIFAR100_DIR = "cifar-100-python"
CIFAR_LABEL_KEYS = ("labels", "fine_labels", "coarse_labels")


def _numpy_function(new_module: str, old_module: str, name: str) -> Any:
    """numpy 2 moved ``numpy.core`` to ``numpy._core``; find ``name`` in either."""
    import importlib

    try:
        return getattr(importlib.import_module(new_module), name)
    except (ImportError, AttributeError):
        return getattr(importlib.import_module(old_module), name)


CIFAR_CLASSES = {"labels": 10, "fine_labels": 100, "coarse_labels": 20}


class _CifarUnpickler(pickle.Unpickler):
    """Unpickler that resolves only what a pickled numpy array needs, and only as NumPy
    itself pickles an array.

    A pickle names the callables it wants run (``GLOBAL``/``STACK_GLOBAL`` opcodes resolve
    through ``find_class``); refusing every other name means a crafted file cannot reach
    ``os.system``, ``eval``, ``subprocess`` or any other code. The allowed ones are checked
    too, so that every array's bytes come from the file itself:

    - ``_reconstruct`` must build an empty array, as NumPy pickles one: it is then filled
      from the file's bytes (``ndarray.__setstate__``, which checks their length). One that
      declares elements of its own would be uninitialised memory of any size (a 234-byte
      file declaring a (2,000,000, 3072) array), and is refused;
    - ``_frombuffer`` (protocol 5) reads a buffer the file holds;
    - ``_codecs.encode`` only re-encodes Python 2 strings as latin-1 (other codecs could
      grow a string a file names many times over).
    """

    def __init__(self, file: io.BufferedIOBase, path: Path) -> None:
        super().__init__(file, encoding="bytes")  # Python 2 str -> bytes, as CIFAR needs
        import _codecs

        self._path = path
        self._numpy_reconstruct = _numpy_function("numpy._core.multiarray",
                                                  "numpy.core.multiarray", "_reconstruct")
        self._numpy_frombuffer = _numpy_function("numpy._core.numeric", "numpy.core.numeric",
                                                 "_frombuffer")
        self._codecs_encode = _codecs.encode
        self._allowed = {
            ("numpy.core.multiarray", "_reconstruct"): self._reconstruct,  # protocols 2-4
            ("numpy._core.multiarray", "_reconstruct"): self._reconstruct,  # (numpy 1, 2)
            ("numpy.core.numeric", "_frombuffer"): self._numpy_frombuffer,  # protocol 5
            ("numpy._core.numeric", "_frombuffer"): self._numpy_frombuffer,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("_codecs", "encode"): self._encode,  # bytes pickled by Python 3 at protocol 2
        }

    def _refuse(self, what: str) -> pickle.UnpicklingError:
        return pickle.UnpicklingError(f"read_cifar_batch: {self._path} {what}; refusing to "
                                      f"load it")

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not np.ndarray or not isinstance(shape, tuple) or math.prod(shape) != 0:
            raise self._refuse(f"reconstructs an array of shape {shape!r} that its own bytes "
                               f"do not fill (NumPy pickles arrays as empty ones filled "
                               f"from the file)")
        return self._numpy_reconstruct(subtype, shape, dtype)

    def _encode(self, text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        if encoding not in ("latin1", "latin-1"):
            raise self._refuse(f"re-encodes a string with the codec {encoding!r}; a CIFAR "
                               f"batch only uses latin1")
        return self._codecs_encode(text, encoding, errors)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            allowed = sorted(f"{m}.{n}" for m, n in self._allowed)
            raise self._refuse(f"asks for the global {module}.{name}, which a CIFAR batch "
                               f"never needs (allowed: {allowed})") from None

    def persistent_load(self, pid: Any) -> Any:
        raise self._refuse("uses persistent ids, which CIFAR batches never do")


def _as_str_keys(batch: dict) -> dict[str, Any]:
    return {k.decode("latin1") if isinstance(k, bytes) else str(k): v for k, v in batch.items()}


def read_cifar_batch(
    path: str | os.PathLike[str], label_key: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10/100 python batch safely (restricted unpickler).

    Parameters
    ----------
    path : path-like
        E.g. ``cifar-10-batches-py/data_batch_1`` or ``cifar-100-python/train``.
    label_key : {"labels", "fine_labels", "coarse_labels"}, optional
        Default: ``"labels"`` if present (CIFAR-10), else ``"fine_labels"`` (CIFAR-100).

    Returns
    -------
    images : ndarray of shape (N, 3, 32, 32), uint8
    labels : ndarray of shape (N,), int64

    Raises
    ------
    pickle.UnpicklingError
        The file asks for any global other than the numpy array constructors; nothing it
        names is run.
    ValueError
        The content is not a CIFAR batch (missing keys, wrong shapes).
    """
    path = Path(path)
    if label_key is not None and label_key not in CIFAR_LABEL_KEYS:
        raise ValueError(
            f"read_cifar_batch: label_key must be one of {CIFAR_LABEL_KEYS} or None, "
            f"got {label_key!r}"
        )
    with open(path, "rb") as file:
        batch = _CifarUnpickler(file, path).load()
    if not isinstance(batch, dict):
        raise ValueError(
            f"read_cifar_batch: {path} holds a {type(batch).__name__}, expected a dict"
        )
    batch = _as_str_keys(batch)
    if label_key is None:
        label_key = next((k for k in CIFAR_LABEL_KEYS if k in batch), "labels")
    if "data" not in batch or label_key not in batch:
        raise ValueError(
            f"read_cifar_batch: {path} lacks 'data' or {label_key!r}; keys are {sorted(batch)}"
        )
    data = batch["data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32):
        got = f"{data.shape} {data.dtype}" if isinstance(data, np.ndarray) else type(data)
        raise ValueError(
            f"read_cifar_batch: {path}: 'data' must be a uint8 array of shape (N, 3072), "
            f"got {got}"
        )
    check_declared_bytes(data.nbytes, file_size(path), compressed=False, path=path,
                         what="'data' array", fn="read_cifar_batch")
    labels = _cifar_labels(batch[label_key], label_key, path)
    if len(labels) != len(data):
        raise ValueError(
            f"read_cifar_batch: {path} has {len(data)} images but {len(labels)} {label_key}"
        )
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_labels(values: Any, label_key: str, path: Path) -> np.ndarray:
    """The batch's class indices as int64 (N,): integers in ``[0, classes)``, else an
    error naming the file and the first offending value."""
    labels = np.asarray(values)
    if labels.dtype == object or labels.dtype.kind not in "iu" or labels.ndim != 1:
        bad = next((v for v in np.ravel(labels) if not isinstance(v, (int, np.integer))
                    or isinstance(v, bool)), labels.dtype)
        bad = bad.item() if isinstance(bad, np.generic) else bad
        raise ValueError(f"read_cifar_batch: {path}: {label_key!r} must be a list of "
                         f"integer class indices, got {bad!r}")
    classes = CIFAR_CLASSES[label_key]
    outside = (labels < 0) | (labels >= classes)
    if outside.any():
        raise ValueError(f"read_cifar_batch: {path}: {label_key!r} must lie in [0, "
                         f"{classes}), got {labels[outside][0]}")
    return labels.astype(np.int64)


def _extract_members(archive: Path, root: Path, members: Sequence[str]) -> None:
    """Extract exactly ``members`` (known relative names) from a tar.gz into ``root``.

    Only the named regular files are written, each through ``atomic_write``, so a hostile
    archive cannot place files elsewhere (no links, no absolute or ``..`` names).
    """
    wanted = set(members)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if member.name not in wanted or not member.isfile():
                continue
            source = tar.extractfile(member)
            atomic_write(root / member.name, lambda file, src=source: file.write(src.read()))
            wanted.discard(member.name)
    if wanted:
        raise ValueError(f"{archive} lacks the members {sorted(wanted)}")


def _cifar_files(
    root: Path, folder: str, names: Sequence[str], url: str, sha256: str, download: bool,
    progress: bool, fn: str,
) -> list[Path]:
    paths = [root / folder / name for name in names]
    missing = [p for p in paths if not p.is_file()]
    if missing and download:
        archive = _download(url, sha256, cache_dir=root, progress=progress)
        _extract_members(archive, root, [f"{folder}/{name}" for name in names])
    elif missing:
        raise FileNotFoundError(
            f"{fn}: {root} lacks {[str(p) for p in missing]}; pass download=True to fetch "
            f"{url}"
        )
    return paths


def _cifar_dataset(paths: Sequence[Path], label_key: str | None) -> ArrayDataset:
    parts = [read_cifar_batch(path, label_key) for path in paths]
    images = np.concatenate([images for images, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    return ArrayDataset(images.astype(np.float32) / np.float32(255.0), labels)


def load_cifar10(
    root: str | os.PathLike[str], download: bool = False, progress: bool = True
) -> tuple[ArrayDataset, ArrayDataset]:
    """CIFAR-10 from ``root/cifar-10-batches-py`` (fetched from ``CIFAR10_URL`` if asked).

    Returns
    -------
    train, test : ArrayDataset
        ``x: (50000, 3, 32, 32)`` and ``(10000, 3, 32, 32)`` float32 in [0, 1]; ``y`` int64.
    """
    root = Path(root)
    names = CIFAR10_TRAIN + CIFAR10_TEST
    paths = _cifar_files(root, CIFAR10_DIR, names, CIFAR10_URL, CIFAR10_SHA256, download,
                         progress, "load_cifar10")
    return _cifar_dataset(paths[:5], "labels"), _cifar_dataset(paths[5:], "labels")


def load_cifar100(
    root: str | os.PathLike[str],
    label_mode: str = "fine",
    download: bool = False,
    progress: bool = True,
) -> tuple[ArrayDataset, ArrayDataset]:
    """CIFAR-100 from ``root/cifar-100-python`` (fetched from ``CIFAR100_URL`` if asked).

    Parameters
    ----------
    label_mode : {"fine", "coarse"}
        100 fine classes or 20 superclasses.

    Returns
    -------
    train, test : ArrayDataset
        ``x: (50000, 3, 32, 32)`` and ``(10000, 3, 32, 32)`` float32 in [0, 1]; ``y`` int64.
    """
    check_choice(label_mode, ("fine", "coarse"), "label_mode", "load_cifar100")
    root = Path(root)
    paths = _cifar_files(root, CIFAR100_DIR, ("train", "test"), CIFAR100_URL, CIFAR100_SHA256,
                         download, progress, "load_cifar100")
    label_key = f"{label_mode}_labels"
    return _cifar_dataset(paths[:1], label_key), _cifar_dataset(paths[1:], label_key)
