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
import struct
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

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


# The dtypes a CIFAR batch's arrays have (uint8 images; int labels when they are arrays).
_SIMPLE_DTYPES = frozenset(np.dtype(code) for code in ("u1", "i1", "i2", "i4", "i8", "u2",
                                                       "u4", "u8", "b1"))
# ndarray's pickled state for such a dtype: (version, byte order, subarray, names, fields,
# element size, alignment, flags): no fields, no subarray, the default size and alignment.
_SIMPLE_DTYPE_STATE = (None, None, None, -1, -1)


class _NdarrayType:
    """What the global ``numpy.ndarray`` resolves to: the subtype ``_reconstruct`` is given,
    never a constructor (``ndarray(shape)`` would be uninitialised memory of any size)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError(f"read_cifar_batch: {self.path} calls numpy.ndarray "
                                     f"itself, which a pickled array never does; refusing "
                                     f"to load it")


class _CifarUnpickler(pickle._Unpickler):
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
      grow a string a file names many times over);
    - ``numpy.ndarray`` is not a constructor here (:class:`_NdarrayType`), and ``dtype``
      builds only the plain dtypes a batch uses, whose pickled state (``BUILD``) may add no
      fields, offsets or sizes: a forged field at a far offset would read outside memory.

    The pure-Python unpickler runs over the file's bytes in memory (``io.BytesIO``): its
    memo is a dict, and a length the file declares past its end reads only what is there,
    so no opcode can make it allocate more than the file holds; and its ``BUILD`` can be
    checked. A batch is a handful of opcodes around one large byte string.
    """

    dispatch: ClassVar[dict] = dict(pickle._Unpickler.dispatch)

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
            ("numpy", "ndarray"): _NdarrayType(path),
            ("numpy", "dtype"): self._dtype,
            ("_codecs", "encode"): self._encode,  # bytes pickled by Python 3 at protocol 2
        }

    def _refuse(self, what: str) -> pickle.UnpicklingError:
        return pickle.UnpicklingError(f"read_cifar_batch: {self._path} {what}; refusing to "
                                      f"load it")

    def _dtype(self, code: Any, align: Any = False, copy: Any = False) -> np.dtype:
        try:
            dtype = np.dtype(code) if isinstance(code, (str, bytes)) else None
        except TypeError:
            dtype = None
        if dtype not in _SIMPLE_DTYPES:
            raise self._refuse(f"asks for the dtype {code!r}; a CIFAR batch holds only "
                               f"integer and uint8 arrays")
        return dtype

    def load_build(self) -> None:
        state, instance = self.stack[-1], self.stack[-2]
        if isinstance(instance, np.dtype) and not (
                isinstance(state, tuple) and len(state) == 8
                and state[2:7] == _SIMPLE_DTYPE_STATE):
            raise self._refuse("gives a dtype fields, offsets or sizes of its own")
        if isinstance(instance, np.ndarray) and not (
                isinstance(state, tuple) and len(state) == 5
                and isinstance(state[2], np.dtype) and state[2] in _SIMPLE_DTYPES
                and isinstance(state[4], bytes)):
            raise self._refuse("fills an array with something other than its own bytes")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if (not isinstance(subtype, _NdarrayType) or not isinstance(shape, tuple)
                or math.prod(shape) != 0):
            raise self._refuse(f"reconstructs an array of shape {shape!r} that its own bytes "
                               f"do not fill (NumPy pickles arrays as empty ones filled "
                               f"from the file)")
        return self._numpy_reconstruct(np.ndarray, shape, dtype)

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
    # The whole file in memory (bounded by its size), so that no length it declares can
    # make a read allocate more (see _CifarUnpickler).
    check_declared_bytes(file_size(path), file_size(path), compressed=False, path=path,
                         what="batch", fn="read_cifar_batch")
    try:
        batch = _CifarUnpickler(io.BytesIO(path.read_bytes()), path).load()
    except (EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            struct.error, RecursionError) as error:  # a malformed pickle: name the file
        raise pickle.UnpicklingError(f"read_cifar_batch: {path} is not a readable pickle "
                                     f"({type(error).__name__}: {error})") from None
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
    # A list of Python ints, as CIFAR's batches hold, or a 1-D array of a plain integer
    # dtype; checked before NumPy sees it (a nested list sharing its parts through the
    # pickle's memo would expand exponentially in np.asarray).
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype not in _SIMPLE_DTYPES or values.dtype.kind == "b":
            raise ValueError(f"read_cifar_batch: {path}: {label_key!r} must be a list of "
                             f"integer class indices, got an array of {values.dtype} "
                             f"{values.shape}")
        labels = values
    else:
        bad = (values if not isinstance(values, list)
               else next((v for v in values if type(v) is not int), None))
        if bad is not None:
            raise ValueError(f"read_cifar_batch: {path}: {label_key!r} must be a list of "
                             f"integer class indices, got {_short(bad)}")
        classes = CIFAR_CLASSES[label_key]
        bad = next((v for v in values if not 0 <= v < classes), None)
        if bad is not None:
            raise ValueError(f"read_cifar_batch: {path}: {label_key!r} must lie in [0, "
                             f"{classes}), got {_short(bad)}")
        labels = np.array(values, dtype=np.int64)
    classes = CIFAR_CLASSES[label_key]
    outside = (labels < 0) | (labels >= classes)
    if outside.any():
        raise ValueError(f"read_cifar_batch: {path}: {label_key!r} must lie in [0, "
                         f"{classes}), got {labels[outside][0]}")
    return labels.astype(np.int64)


def _short(value: Any) -> str:
    """A short description of a value from a file: a container by its type and length
    (its repr could be as large as the structure a pickle's memo can build), an int or a
    float by its repr, anything else by its type."""
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)} items"
    if isinstance(value, int) and abs(value) >= 10**50:
        return "a huge int"
    if isinstance(value, (int, float, str, bytes)):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(value).__name__}"


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
