"""Readers for datasets a user brings: IDX (MNIST, Fashion-MNIST), CIFAR python batches,
folders of images.

Every reader checks what it reads against the format's own description and says which file
broke which rule. CIFAR's python batches are pickles, and unpickling runs code named by the
file, so they are read with an unpickler that resolves only the few numpy functions an array
needs and refuses everything else (``_CifarUnpickler``).
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..ops._args import check_choice
from .dataset import ArrayDataset, Dataset
from .downloads import DownloadError, atomic_write
from .downloads import download as _download
from .limits import check_declared_bytes, check_image_pixels, file_size

TRAIN_EXTRA = 'pip install "cnnlab[train]"'

# ---------------------------------------------------------------------------------------------
# IDX: http://yann.lecun.com/exdb/mnist/ ("THE IDX FILE FORMAT"). A 4-byte magic number
# 0x00 0x00 <type code> <ndim>, then ndim big-endian uint32 sizes, then the values big-endian
# in C order.

IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
IDX_CODES = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"


def _open_maybe_gzip(path: Path) -> tuple[io.BufferedIOBase, bool]:
    """The file as a stream of its content (gzip decompressed as read), and whether it is
    gzip: nothing is inflated before the caller asks for it."""
    file = open(path, "rb")
    if file.read(2) == GZIP_MAGIC:
        file.seek(0)
        return gzip.GzipFile(fileobj=file, mode="rb"), True
    file.seek(0)
    return file, False


def _read_at_most(stream: io.BufferedIOBase, count: int, path: Path) -> bytes:
    """Up to ``count`` bytes of ``stream`` (fewer at its end); a damaged gzip stream gets an
    error naming the file."""
    try:
        return stream.read(count)
    except (EOFError, OSError, zlib.error) as error:
        raise ValueError(f"read_idx: {path} is a damaged or truncated gzip file: "
                         f"{error}") from error


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzipped or not) into an array in native byte order.

    The header is read first and the payload it declares is checked against what the file
    can hold (:mod:`cnnlab.data.limits`) before anything is allocated; a gzip file is
    inflated as read, never past the declared payload.

    Parameters
    ----------
    path : path-like
        E.g. ``train-images-idx3-ubyte.gz``; gzip is detected from the content.

    Returns
    -------
    ndarray
        Shape from the header (MNIST images: ``(60000, 28, 28)`` uint8; labels:
        ``(60000,)`` uint8), dtype from the type code.

    Raises
    ------
    ValueError
        Bad magic number, unknown type code, a payload whose length is not
        ``prod(dims) * itemsize`` (a truncated file names the expected and actual bytes), or
        a declared payload the file cannot hold.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "x.idx"
    >>> _ = write_idx(path, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> read_idx(path).tolist()
    [[0, 1, 2], [3, 4, 5]]
    """
    path = Path(path)
    stream, compressed = _open_maybe_gzip(path)
    with stream:
        magic = _read_at_most(stream, 4, path)
        if len(magic) < 4:
            raise ValueError(f"read_idx: {path} has {len(magic)} bytes, too few for the 4-byte "
                             f"IDX magic number")
        zero, code, ndim = int.from_bytes(magic[:2], "big"), magic[2], magic[3]
        if zero != 0:
            raise ValueError(f"read_idx: {path} is not an IDX file: magic number "
                             f"0x{magic.hex()} must start with two zero bytes")
        if code not in IDX_DTYPES:
            known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
            raise ValueError(f"read_idx: {path} has unknown IDX type code 0x{code:02X} "
                             f"(expected one of {known})")
        if ndim == 0:
            raise ValueError(f"read_idx: {path} declares 0 dimensions; IDX needs at least 1")
        header_bytes = 4 + 4 * ndim
        sizes = _read_at_most(stream, 4 * ndim, path)
        if len(sizes) < 4 * ndim:
            raise ValueError(f"read_idx: {path} is truncated inside its header: expected "
                             f"{header_bytes} header bytes for {ndim} dimensions, got "
                             f"{4 + len(sizes)}")
        dims = tuple(int.from_bytes(sizes[i:i + 4], "big") for i in range(0, 4 * ndim, 4))
        dtype = IDX_DTYPES[code]
        expected = math.prod(dims) * dtype.itemsize  # Python ints: no wrap-around
        what = f"payload (dims {dims} of {dtype.name})"
        if compressed:
            check_declared_bytes(expected, file_size(path), compressed=True, path=path,
                                 what=what, fn="read_idx")
        else:  # the file's size says it all, before anything is read
            actual = file_size(path) - header_bytes
            if actual != expected:
                problem = "truncated" if actual < expected else "longer than its header says"
                raise ValueError(f"read_idx: {path} is {problem}: dims {dims} of "
                                 f"{dtype.name} need {expected} payload bytes, got {actual}")
            check_declared_bytes(expected, actual, compressed=False, path=path, what=what,
                                 fn="read_idx")
        payload = _read_at_most(stream, expected, path)
        if len(payload) < expected:
            raise ValueError(f"read_idx: {path} is truncated: dims {dims} of {dtype.name} "
                             f"need {expected} payload bytes, got {len(payload)}")
        if _read_at_most(stream, 1, path):
            raise ValueError(f"read_idx: {path} is longer than its header says: dims {dims} "
                             f"of {dtype.name} need {expected} payload bytes")
    values = np.frombuffer(payload, dtype=dtype).reshape(dims)
    return values.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: Any) -> Path:
    """Write ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz`` (atomically).

    Supported dtypes: uint8, int8, int16, int32, float32, float64.
    """
    array = np.asarray(array)
    dtype = array.dtype.newbyteorder("=")
    if dtype not in IDX_CODES:
        allowed = sorted(str(d) for d in IDX_CODES)
        raise TypeError(f"write_idx: dtype must be one of {allowed}, got {array.dtype}")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"write_idx: array must have 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, IDX_CODES[dtype], array.ndim])
    header += np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[IDX_CODES[dtype]]).tobytes()
    path = Path(path)
    if path.suffix == ".gz":
        payload = gzip.compress(payload, mtime=0)
    return atomic_write(path, lambda file: file.write(payload))


# The four standard files, with the sha256 of their gzipped form as published by the
# dataset authors' mirrors (MNIST: LeCun et al. 1998; Fashion-MNIST: Xiao et al. 2017).
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz":
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz":
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz":
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz":
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
FASHION_MNIST_MIRRORS = (
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
)
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz":
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz":
        "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz":
        "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz":
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}
IDX_VARIANTS = {
    "mnist": (MNIST_MIRRORS, MNIST_SHA256),
    "fashion-mnist": (FASHION_MNIST_MIRRORS, FASHION_MNIST_SHA256),
}


def _download_from_mirrors(
    mirrors: Sequence[str], filename: str, sha256: str, root: Path, progress: bool
) -> Path:
    """Try each mirror in turn; a checksum mismatch is not retried elsewhere."""
    failures = []
    for base_url in mirrors:
        try:
            return _download(base_url + filename, sha256, cache_dir=root, filename=filename,
                             progress=progress)
        except DownloadError as error:
            if type(error) is not DownloadError:  # ChecksumError: the mirror served bad data
                raise
            failures.append(str(error))
    raise DownloadError(f"could not download {filename} from any mirror: {'; '.join(failures)}")


def load_mnist_idx(
    root: str | os.PathLike[str],
    download: bool = False,
    variant: str = "mnist",
    mirrors: Sequence[str] | None = None,
    progress: bool = True,
) -> tuple[ArrayDataset, ArrayDataset]:
    """MNIST or Fashion-MNIST from the four standard IDX files in ``root``.

    Parameters
    ----------
    root : path-like
        Folder with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``).
    download : bool, default False
        Fetch missing files (gzipped) into ``root``, each verified against ``MNIST_SHA256``
        or ``FASHION_MNIST_SHA256``.
    variant : {"mnist", "fashion-mnist"}
        Which file set ``download`` fetches.
    mirrors : sequence of str, optional
        Base urls tried in order; default ``MNIST_MIRRORS`` / ``FASHION_MNIST_MIRRORS``.
    progress : bool
        Progress bars while downloading.

    Returns
    -------
    train, test : ArrayDataset
        ``x: (60000, 1, 28, 28)`` and ``(10000, 1, 28, 28)`` float32 in [0, 1];
        ``y`` int64 in 0..9.
    """
    check_choice(variant, tuple(sorted(IDX_VARIANTS)), "variant", "load_mnist_idx")
    root = Path(root)
    default_mirrors, checksums = IDX_VARIANTS[variant]
    paths = {}
    missing = []
    for name in MNIST_FILES:
        found = [root / name, root / f"{name}.gz"]
        existing = [p for p in found if p.is_file()]
        if existing:
            paths[name] = existing[0]
        elif download:
            paths[name] = _download_from_mirrors(
                mirrors or default_mirrors, f"{name}.gz", checksums[f"{name}.gz"], root, progress
            )
        else:
            missing.append(name)
    if missing:
        raise FileNotFoundError(
            f"load_mnist_idx: {root} lacks {missing} (plain or .gz); pass download=True to "
            f"fetch them"
        )
    train = _mnist_pair(paths["train-images-idx3-ubyte"], paths["train-labels-idx1-ubyte"])
    test = _mnist_pair(paths["t10k-images-idx3-ubyte"], paths["t10k-labels-idx1-ubyte"])
    return train, test


def _mnist_pair(images_path: Path, labels_path: Path) -> ArrayDataset:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1:
        raise ValueError(
            f"load_mnist_idx: expected images (N, H, W) and labels (N,), got "
            f"{images.shape} from {images_path} and {labels.shape} from {labels_path}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"load_mnist_idx: {images_path} has {len(images)} images but {labels_path} "
            f"has {len(labels)} labels"
        )
    x = images[:, None].astype(np.float32) / np.float32(255.0)
    return ArrayDataset(x, labels.astype(np.int64))


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


# ---------------------------------------------------------------------------------------------
# Image folders: root/<class name>/<any depth>/<image file>, classes sorted by name (the
# torchvision ImageFolder convention).

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp",
                    ".ppm", ".pgm")


def _pillow():
    try:
        from PIL import Image
    except ImportError as error:
        raise ImportError(f"ImageFolder needs Pillow: {TRAIN_EXTRA}") from error
    return Image


class ImageFolder(Dataset):
    """Images in one subdirectory per class, read lazily with Pillow.

    Parameters
    ----------
    root : path-like
        ``root/<class>/.../<image>``; class ``k`` is the k-th subdirectory name in sorted
        order (hidden directories are skipped).
    size : int or (int, int), optional
        Resize every image to ``(size, size)`` or ``(H, W)`` (bilinear); needed to batch
        images of different sizes.
    grayscale : bool, default False
        One channel (Pillow mode ``"L"``) instead of three (``"RGB"``).
    extensions : tuple of str
        File suffixes (case-insensitive) counted as images.

    Attributes
    ----------
    classes : list of str
    class_to_idx : dict of str to int
    samples : list of (Path, int)
    targets : ndarray of shape (N,), int64

    Samples are ``(x, y)`` with ``x: (C, H, W)`` float32 in [0, 1] (``C`` = 1 or 3) and
    ``y`` an int64 class index. ``to_array_dataset()`` reads them all at once.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        size: int | tuple[int, int] | None = None,
        grayscale: bool = False,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageFolder: root {self.root} is not a directory")
        self.size = _image_size(size)
        self.grayscale = bool(grayscale)
        suffixes = tuple(e.lower() for e in extensions)
        self.classes = sorted(
            entry.name for entry in self.root.iterdir()
            if entry.is_dir() and not entry.name.startswith(".")
        )
        if not self.classes:
            raise ValueError(f"ImageFolder: {self.root} has no class subdirectories")
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.samples: list[tuple[Path, int]] = []
        for name in self.classes:
            for directory, subdirs, files in os.walk(self.root / name):
                subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
                for file in sorted(files):
                    if file.lower().endswith(suffixes) and not file.startswith("."):
                        self.samples.append((Path(directory) / file, self.class_to_idx[name]))
        if not self.samples:
            raise ValueError(
                f"ImageFolder: no files with suffixes {suffixes} under {self.root}"
            )
        self.targets = np.array([label for _, label in self.samples], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.int64]:
        path, label = self.samples[index]
        return self.load_image(path), np.int64(label)

    def load_image(self, path: str | os.PathLike[str]) -> np.ndarray:
        """One image as ``(C, H, W)`` float32 in [0, 1], converted and resized as set."""
        Image = _pillow()
        with Image.open(path) as image:
            # The header's size, before anything is decoded (cnnlab.data.limits).
            check_image_pixels(*image.size, path=path, fn="ImageFolder")
            image = image.convert("L" if self.grayscale else "RGB")
            if self.size is not None:
                height, width = self.size
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            pixels = np.asarray(image, dtype=np.float32) / np.float32(255.0)
        return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1).copy()

    def to_array_dataset(self) -> ArrayDataset:
        """Read every image now: ``x: (N, C, H, W)`` float32, ``y: (N,)`` int64."""
        xb, yb = self.get_batch(np.arange(len(self)))
        return ArrayDataset(xb, yb)

    def __repr__(self) -> str:
        return (f"ImageFolder({str(self.root)!r}, {len(self)} images, "
                f"{len(self.classes)} classes)")


def _image_size(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(pair) != 2 or not all(isinstance(s, (int, np.integer)) for s in pair):
        raise TypeError(f"ImageFolder: size must be an int or (H, W), got {size!r}")
    if any(s < 1 for s in pair):
        raise ValueError(f"ImageFolder: size must be >= 1, got {size!r}")
    return int(pair[0]), int(pair[1])
