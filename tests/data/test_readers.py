"""Readers: IDX files, MNIST IDX sets, ImageFolder (CIFAR batches: test_cifar.py)."""

from __future__ import annotations

import gzip
import hashlib
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

import cnnlab.data.readers as readers
from cnnlab.data import (
    DataLoader,
    ImageFolder,
    load_mnist_idx,
    read_idx,
    write_idx,
)

# ------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip(tmp_path, dtype, suffix):
    values = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"values.idx{suffix}", values)
    assert path.read_bytes().startswith(b"\x1f\x8b") == (suffix == ".gz")
    restored = read_idx(path)
    assert restored.dtype == np.dtype(dtype).newbyteorder("=") and restored.shape == (2, 3, 4)
    np.testing.assert_array_equal(restored, values)


def test_idx_reads_a_hand_written_mnist_header(tmp_path):
    # Independent of write_idx: magic 0x00000803 (ubyte, 3 dims), sizes big-endian.
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    raw = struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">III", 2, 28, 28) + images.tobytes()
    (tmp_path / "images").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "images"), images)
    floats = np.array([1.5, -2.0], dtype=np.float32)
    raw = struct.pack(">HBBI", 0, 0x0D, 1, 2) + floats.astype(">f4").tobytes()
    (tmp_path / "floats.gz").write_bytes(gzip.compress(raw))
    np.testing.assert_array_equal(read_idx(tmp_path / "floats.gz"), floats)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_truncated_file_names_file_and_bytes(tmp_path, suffix):
    raw = struct.pack(">HBB", 0, 0x08, 2) + struct.pack(">II", 3, 4) + bytes(12)
    path = tmp_path / f"short{suffix}"
    cut = raw[:-5]
    path.write_bytes(gzip.compress(cut) if suffix else cut)
    with pytest.raises(ValueError, match=rf"read_idx: .*short{suffix} is truncated: dims "
                                         r"\(3, 4\) of uint8 need 12 payload bytes, got 7"):
        read_idx(path)


@pytest.mark.parametrize(
    ("raw", "match"),
    [(b"\x00\x00", "too few for the 4-byte IDX magic number"),
     (b"\x01\x00\x08\x01" + bytes(8), r"not an IDX file: magic number 0x01000801"),
     (b"\x00\x00\x07\x01" + bytes(8), "unknown IDX type code 0x07"),
     (b"\x00\x00\x08\x00", "declares 0 dimensions"),
     (b"\x00\x00\x08\x03\x00\x00\x00\x01", "truncated inside its header: expected 16"),
     (b"\x00\x00\x08\x01\x00\x00\x00\x02" + bytes(3), "longer than its header says"),
     # mtime=0: a timestamped gzip header would make this test's id differ between runs
     (gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab", mtime=0)[:-6],
      "damaged or truncated gzip")],
)
def test_idx_malformed_files(tmp_path, raw, match):
    path = tmp_path / "bad"
    path.write_bytes(raw)
    with pytest.raises(ValueError, match=f"read_idx: {path}.*{match}|{match}"):
        read_idx(path)


def test_write_idx_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(TypeError, match="write_idx: dtype must be one of"):
        write_idx(tmp_path / "x", np.zeros(3, np.int64))


def _write_mnist(root: Path, n_train: int = 6, n_test: int = 4, gz: bool = False) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, values in arrays.items():
        write_idx(root / (name + (".gz" if gz else "")), values)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_idx(tmp_path, gz):
    arrays = _write_mnist(tmp_path, gz=gz)
    train, test = load_mnist_idx(tmp_path)
    assert train.x.shape == (6, 1, 28, 28) and train.x.dtype == np.float32
    assert test.y.dtype == np.int64 and test.y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    np.testing.assert_allclose(train.x[:, 0] * 255, arrays["train-images-idx3-ubyte"], atol=1e-4)


def test_load_mnist_idx_missing_and_mismatched(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"lacks .*train-images-idx3-ubyte.*download=True"):
        load_mnist_idx(tmp_path)
    _write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match=r"has 4 images but .*t10k-labels-idx1-ubyte has 3"):
        load_mnist_idx(tmp_path)
    with pytest.raises(ValueError, match="variant must be one of"):
        load_mnist_idx(tmp_path, variant="kmnist")


def test_load_mnist_idx_downloads_with_verified_hashes(tmp_path, server, monkeypatch):
    source = tmp_path / "source"
    source.mkdir()
    _write_mnist(source, gz=True)
    checksums = {}
    for file in source.iterdir():
        data = file.read_bytes()
        server.add(file.name, data)
        checksums[file.name] = hashlib.sha256(data).hexdigest()
    # The first mirror is down (404): the loader falls back to the second.
    mirrors = (server.url("down/"), server.base_url)
    monkeypatch.setitem(readers.IDX_VARIANTS, "mnist", (mirrors, checksums))
    root = tmp_path / "mnist"
    train, test = load_mnist_idx(root, download=True, progress=False)
    assert len(train) == 6 and len(test) == 4
    assert sorted(p.name for p in root.iterdir()) == sorted(checksums)
    load_mnist_idx(root, download=True, progress=False)  # second call: all cached
    assert server.count("train-images-idx3-ubyte.gz") == 1

    bad = dict(checksums, **{"train-labels-idx1-ubyte.gz": "0" * 64})
    monkeypatch.setitem(readers.IDX_VARIANTS, "mnist", ((server.base_url,), bad))
    with pytest.raises(readers.DownloadError, match="sha256 mismatch"):
        load_mnist_idx(tmp_path / "other", download=True, progress=False)


def test_official_checksums_are_well_formed():
    for _, checksums in readers.IDX_VARIANTS.values():
        assert sorted(checksums) == sorted(f"{name}.gz" for name in readers.MNIST_FILES)
        assert all(len(h) == 64 and int(h, 16) >= 0 for h in checksums.values())
    for digest in (readers.CIFAR10_SHA256, readers.CIFAR100_SHA256):
        assert len(digest) == 64 and int(digest, 16) >= 0


# ------------------------------------------------------------------------------------------
# ImageFolder


@pytest.fixture
def image_root(tmp_path) -> Path:
    from PIL import Image

    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    layout = {"cat/a.png": (4, 6), "cat/nested/b.png": (4, 6), "dog/c.PNG": (5, 3),
              ".hidden/d.png": (4, 6)}
    for name, (height, width) in layout.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels, "RGB").save(path)
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_image_folder_classes_and_samples(image_root):
    from PIL import Image

    folder = ImageFolder(image_root)
    assert folder.classes == ["cat", "dog"] and folder.class_to_idx == {"cat": 0, "dog": 1}
    assert [p.name for p, _ in folder.samples] == ["a.png", "b.png", "c.PNG"]
    assert folder.targets.tolist() == [0, 0, 1] and folder.targets.dtype == np.int64
    x, y = folder[2]
    assert x.shape == (3, 5, 3) and x.dtype == np.float32 and y == 1
    expected = np.asarray(Image.open(image_root / "dog" / "c.PNG"), np.float32) / 255
    np.testing.assert_allclose(x, expected.transpose(2, 0, 1))


def test_image_folder_grayscale_resize_and_loader(image_root):
    folder = ImageFolder(image_root, size=(8, 7), grayscale=True)
    x, _ = folder[0]
    assert x.shape == (1, 8, 7) and 0 <= x.min() and x.max() <= 1
    batches = list(DataLoader(folder, batch_size=2))
    assert [xb.shape for xb, _ in batches] == [(2, 1, 8, 7), (1, 1, 8, 7)]
    arrays = ImageFolder(image_root, size=5).to_array_dataset()
    assert arrays.x.shape == (3, 3, 5, 5) and arrays.y.tolist() == [0, 0, 1]


def test_image_folder_errors(image_root, tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"samples must share one shape.*ImageFolder\(size"):
        ImageFolder(image_root).to_array_dataset()
    with pytest.raises(FileNotFoundError, match=r"ImageFolder: root .* is not a directory"):
        ImageFolder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"ImageFolder: .* has no class subdirectories"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(ValueError, match="ImageFolder: size must be >= 1"):
        ImageFolder(image_root, size=0)
    monkeypatch.setitem(sys.modules, "PIL", None)
    expected = r'ImageFolder needs Pillow: pip install "cnnlab\[train\]"'
    with pytest.raises(ImportError, match=expected):
        ImageFolder(image_root)[0]
