"""Readers for datasets a user brings: IDX (MNIST, Fashion-MNIST), CIFAR python batches
(``cifar.py``, re-exported here), folders of images.

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
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..ops._args import check_choice
from .cifar import (  # noqa: F401 - their old import path
    CIFAR10_DIR,
    CIFAR10_SHA256,
    CIFAR10_TEST,
    CIFAR10_TRAIN,
    CIFAR10_URL,
    CIFAR100_DIR,
    CIFAR100_SHA256,
    CIFAR100_URL,
    CIFAR_CLASSES,
    CIFAR_LABEL_KEYS,
    load_cifar10,
    load_cifar100,
    read_cifar_batch,
)
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
IDX_MAX_DIMS = 32  # NumPy 1's limit (NumPy 2 allows 64); datasets use 1 to 4


def _open_maybe_gzip(path: Path) -> tuple[io.BufferedIOBase, bool]:
    """The file as a stream of its content (gzip decompressed as read), and whether it is
    gzip: nothing is inflated before the caller asks for it."""
    with open(path, "rb") as file:
        compressed = file.read(2) == GZIP_MAGIC
    # gzip.open owns the file it opens (GzipFile(fileobj=...) would leave it open)
    return (gzip.open(path, "rb"), True) if compressed else (open(path, "rb"), False)


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
        if not 1 <= ndim <= IDX_MAX_DIMS:
            raise ValueError(f"read_idx: {path} declares {ndim} dimensions; IDX needs at least "
                             f"1, and NumPy arrays have at most {IDX_MAX_DIMS}")
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
# Image folders: root/<class name>/<any depth>/<image file>, classes sorted by name (the
# torchvision ImageFolder convention).

IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
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
        # Only the formats an image folder holds: Pillow would otherwise open any file with
        # any of its plugins, EPS among them (which runs Ghostscript when it is installed).
        with Image.open(path, formats=IMAGE_FORMATS) as image:
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
