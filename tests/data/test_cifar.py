"""CIFAR python batches: the restricted unpickler, labels, downloads and extraction."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

import cnnlab.data.cifar as cifar
import cnnlab.data.readers as readers
from cnnlab.data import (
    load_cifar10,
    load_cifar100,
    read_cifar_batch,
)

# ------------------------------------------------------------------------------------------
# CIFAR python batches


def _cifar_dict(n: int = 3, labels: str = "labels", seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    batch = {b"batch_label": b"testing batch 1 of 1",
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
    if labels == "labels":
        batch[b"labels"] = rng.integers(0, 10, n).tolist()
    else:
        batch[b"fine_labels"] = rng.integers(0, 100, n).tolist()
        batch[b"coarse_labels"] = rng.integers(0, 20, n).tolist()
    return batch


class _Python2Pickler(pickle._Pickler):
    """Writes what Python 2's cPickle wrote for CIFAR: bytes as STRING opcodes and numpy's
    functions under ``numpy.core`` (the pure-Python pickler lets both be overridden)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes_as_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes_as_str

    def save_global(self, obj, name=None):
        if getattr(obj, "__name__", "") == "_reconstruct":
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)


def _python2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


@pytest.mark.parametrize("protocol", [2, 4, 5, "python2"])
def test_read_cifar_batch_accepts_plain_batches(tmp_path, protocol):
    batch = _cifar_dict()
    data = _python2_pickle(batch) if protocol == "python2" else pickle.dumps(batch, protocol)
    (tmp_path / "data_batch_1").write_bytes(data)
    images, labels = read_cifar_batch(tmp_path / "data_batch_1")
    assert images.shape == (3, 3, 32, 32) and images.dtype == np.uint8
    np.testing.assert_array_equal(images.reshape(3, -1), batch[b"data"])
    assert labels.dtype == np.int64 and labels.tolist() == batch[b"labels"]
    # The red plane comes first in each row (CIFAR's layout).
    np.testing.assert_array_equal(images[:, 0].reshape(3, -1), batch[b"data"][:, :1024])


def test_read_cifar_batch_label_keys(tmp_path):
    batch = _cifar_dict(labels="fine")
    (tmp_path / "train").write_bytes(pickle.dumps(batch))
    _, fine = read_cifar_batch(tmp_path / "train")
    _, coarse = read_cifar_batch(tmp_path / "train", label_key="coarse_labels")
    assert fine.tolist() == batch[b"fine_labels"]
    assert coarse.tolist() == batch[b"coarse_labels"]
    with pytest.raises(ValueError, match="label_key must be one of"):
        read_cifar_batch(tmp_path / "train", label_key="bogus")


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _CallsEval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


class _LoadsNumpyFile:
    def __reduce__(self):
        return (np.load, ("/nonexistent.npy",))


@pytest.mark.parametrize(
    ("payload", "refused"),
    [("system", r"(posix|nt|os)\.system"), ("eval", r"(__builtin__|builtins)\.eval"),
     ("numpy", r"numpy\..*load")],
)
def test_read_cifar_batch_refuses_malicious_pickles(tmp_path, payload, refused):
    marker = tmp_path / "pwned"
    evil = {"system": _RunsShell(marker), "eval": _CallsEval(), "numpy": _LoadsNumpyFile()}
    batch = _cifar_dict()
    batch[b"labels"] = [evil[payload]]  # hidden inside an otherwise valid batch
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(pickle.UnpicklingError,
                       match=rf"read_cifar_batch: .*data_batch_1 asks for the global {refused}"):
        read_cifar_batch(path)
    assert not marker.exists()


def test_read_cifar_batch_rejects_non_batches(tmp_path):
    (tmp_path / "list").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="holds a list, expected a dict"):
        read_cifar_batch(tmp_path / "list")
    (tmp_path / "wrong").write_bytes(pickle.dumps({b"data": np.zeros((2, 5), np.uint8),
                                                   b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"'data' must be a uint8 array of shape \(N, 3072\)"):
        read_cifar_batch(tmp_path / "wrong")
    batch = _cifar_dict()
    batch[b"labels"] = [0]
    (tmp_path / "count").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match="has 3 images but 1 labels"):
        read_cifar_batch(tmp_path / "count")


@pytest.mark.parametrize(("labels", "shown"), [([-5, 1000, 3], "-5"), ([1000, 3, 4], "1000"),
                                              ([1.7, 2.9, 1.0], "1.7")])
def test_read_cifar_batch_names_bad_labels(tmp_path, labels, shown):
    batch = _cifar_dict()
    batch[b"labels"] = labels
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=rf"read_cifar_batch: .*data_batch_1: 'labels' must "
                                         rf".*got {shown}"):
        read_cifar_batch(tmp_path / "data_batch_1")


def test_read_cifar100_label_ranges(tmp_path):
    batch = _cifar_dict(labels="fine")
    batch[b"coarse_labels"] = [19, 20, 0]
    (tmp_path / "train").write_bytes(pickle.dumps(batch))
    read_cifar_batch(tmp_path / "train", label_key="fine_labels")
    with pytest.raises(ValueError, match=r"'coarse_labels' must lie in \[0, 20\), got 20"):
        read_cifar_batch(tmp_path / "train", label_key="coarse_labels")


def _cifar10_tree(root: Path) -> None:
    folder = root / readers.CIFAR10_DIR
    folder.mkdir(parents=True)
    for seed, name in enumerate(readers.CIFAR10_TRAIN + readers.CIFAR10_TEST):
        (folder / name).write_bytes(pickle.dumps(_cifar_dict(n=2, seed=seed), protocol=2))


def test_load_cifar10_from_folder(tmp_path):
    _cifar10_tree(tmp_path)
    train, test = load_cifar10(tmp_path)
    assert train.x.shape == (10, 3, 32, 32) and test.x.shape == (2, 3, 32, 32)
    assert train.x.dtype == np.float32 and 0 <= train.x.min() and train.x.max() <= 1
    assert train.y.dtype == np.int64
    with pytest.raises(FileNotFoundError, match=r"load_cifar10: .* lacks .*download=True"):
        load_cifar10(tmp_path / "empty")


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_load_cifar100_downloads_and_extracts_only_known_members(tmp_path, server,
                                                                 monkeypatch):
    archive = _tar_gz({
        "cifar-100-python/train": pickle.dumps(_cifar_dict(4, "fine", 1), protocol=2),
        "cifar-100-python/test": pickle.dumps(_cifar_dict(2, "fine", 2), protocol=2),
        "cifar-100-python/meta": b"not needed",
        "../escaped": b"must never be written",
    })
    monkeypatch.setattr(cifar, "CIFAR100_URL", server.add("cifar-100-python.tar.gz", archive))
    monkeypatch.setattr(cifar, "CIFAR100_SHA256", hashlib.sha256(archive).hexdigest())
    root = tmp_path / "root"
    train, test = load_cifar100(root, label_mode="coarse", download=True, progress=False)
    assert train.x.shape == (4, 3, 32, 32) and test.y.max() < 20
    assert not (tmp_path / "escaped").exists()
    assert sorted(p.name for p in (root / readers.CIFAR100_DIR).iterdir()) == ["test", "train"]
    load_cifar100(root, download=True, progress=False)  # extracted files reused
    assert server.count("cifar-100-python.tar.gz") == 1
    with pytest.raises(ValueError, match=r"label_mode must be one of \('fine', 'coarse'\)"):
        load_cifar100(root, label_mode="medium")


class _Calls:
    """Pickles as ``function(*arguments)``, with an optional ``BUILD`` state after it."""

    def __init__(self, function, arguments, state=None):
        self.function, self.arguments, self.state = function, arguments, state

    def __reduce__(self):
        if self.state is None:
            return (self.function, self.arguments)
        return (self.function, self.arguments, self.state)


def _nested(depth: int) -> list:
    labels = [0, 0]
    for _ in range(depth):
        labels = [labels, labels]  # shared through the memo: 2^depth items, a few bytes each
    return labels


def _hostile_batches():
    from numpy._core.multiarray import _reconstruct

    empty = np.zeros((0, 3072), np.uint8)
    field = np.dtype([("x", "u1")])  # a structured dtype: fields at offsets the file names
    return {
        "ndarray called": ({b"data": _Calls(np.ndarray, ((10**5, 3072), np.dtype("u1"))),
                            b"labels": [0]}, "calls numpy.ndarray itself"),
        "structured dtype": ({b"data": empty, b"labels": np.zeros(3, field)},
                             "asks for the dtype"),
        "object array": ({b"data": empty, b"labels": [],
                          b"junk": _Calls(_reconstruct, (np.ndarray, (0,), b"b"),
                                          (1, (2**40,), np.dtype("O"), False, []))},
                         "asks for the dtype"),
        "nested labels": ({b"data": empty, b"labels": _nested(28)},
                          "'labels' must be a list of integer class indices, got a list of 2"),
        "ragged labels": ({b"data": empty, b"labels": [[1], [1, 2]]},
                          "must be a list of integer class indices"),
        "huge int label": ({b"data": empty, b"labels": [2**70]},
                           r"must lie in \[0, 10\), got 1180591620717411303424"),
    }


@pytest.mark.parametrize("name", list(_hostile_batches()))
def test_hostile_batches_are_refused_by_name_in_bounded_memory(tmp_path, name):
    """The review's findings: each batch built arrays, dtypes or lists the file's bytes do
    not hold (a segfault, gigabytes, an exponential list); each is refused, naming the file,
    inside a 1.5 GiB address space."""
    from _check import run_with_address_space

    batch, message = _hostile_batches()[name]
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=4))
    assert path.stat().st_size < 2000
    with pytest.raises((pickle.UnpicklingError, ValueError), match=message):
        read_cifar_batch(path)
    result = run_with_address_space(f"""
        from cnnlab.data import read_cifar_batch
        try:
            read_cifar_batch({str(path)!r})
        except Exception as error:
            print(type(error).__name__, "|", error)
    """, 1536 * 2**20)
    assert result.returncode == 0, result.stderr  # no segfault, no MemoryError traceback
    kind, _, text = result.stdout.partition(" | ")
    assert kind in ("UnpicklingError", "ValueError") and "data_batch_1" in text, result.stdout


@pytest.mark.parametrize("raw", [
    b"\x80\x04}r\xff\xff\xff\x7f.",  # a memo slot at 2^31: a 32 GiB table in C's unpickler
    b"\x80\x04\x8e" + (2**40).to_bytes(8, "little") + b"abc.",  # BINBYTES8 of 1 TiB
])
def test_pickle_opcodes_declaring_huge_sizes_allocate_nothing(tmp_path, raw):
    from _check import run_with_address_space

    path = tmp_path / "batch"
    path.write_bytes(raw)
    result = run_with_address_space(f"""
        from cnnlab.data import read_cifar_batch
        try:
            read_cifar_batch({str(path)!r})
        except Exception as error:
            print(type(error).__name__, "|", error)
    """, 1536 * 2**20)
    assert result.returncode == 0 and "MemoryError" not in result.stdout, result.stdout
    assert str(path) in result.stdout
