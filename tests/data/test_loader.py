"""DataLoader: batching, drop_last, seeded shuffling, the fast path, and exact mid-epoch resume."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from cnnlab.data import ArrayDataset, Compose, DataLoader, Dataset, Normalize, RandomTranslate


def _dataset(n: int = 10) -> ArrayDataset:
    # x[i] is filled with i, so a batch's inputs identify its samples.
    x = np.repeat(np.arange(n, dtype=np.float64), 8).reshape(n, 2, 4)
    return ArrayDataset(x, np.arange(n))


def _order(loader: DataLoader) -> list[list[int]]:
    return [yb.tolist() for _, yb in loader]


def _assert_same_batches(ours, expected) -> None:
    assert len(ours) == len(expected)
    for (xb, yb), (x_expected, y_expected) in zip(ours, expected, strict=True):
        np.testing.assert_array_equal(xb, x_expected)
        np.testing.assert_array_equal(yb, y_expected)


@pytest.mark.parametrize(
    ("n", "batch_size", "drop_last", "sizes"),
    [(10, 4, False, [4, 4, 2]), (10, 4, True, [4, 4]), (8, 4, True, [4, 4]),
     (3, 5, False, [3]), (3, 5, True, []), (1, 1, False, [1])],
)
def test_batch_sizes_and_len(n, batch_size, drop_last, sizes):
    loader = DataLoader(_dataset(n), batch_size=batch_size, drop_last=drop_last)
    assert len(loader) == len(sizes)
    assert [len(yb) for _, yb in loader] == sizes


def test_sequential_batches_are_the_dataset_in_order():
    loader = DataLoader(_dataset(10), batch_size=4)
    batches = list(loader)
    assert [yb.tolist() for _, yb in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    xb, yb = batches[1]
    assert xb.shape == (4, 2, 4) and xb.dtype == np.float32 and yb.dtype == np.int64
    np.testing.assert_array_equal(xb[:, 0, 0], yb)


def test_batches_are_copies():
    dataset = _dataset(4)
    xb, _ = next(iter(DataLoader(dataset, batch_size=2)))
    xb[...] = -1
    assert dataset.x.min() == 0


def test_same_seed_same_order_and_each_epoch_a_permutation():
    first = DataLoader(_dataset(10), 3, shuffle=True, rng=np.random.default_rng(7))
    second = DataLoader(_dataset(10), 3, shuffle=True, rng=np.random.default_rng(7))
    other = DataLoader(_dataset(10), 3, shuffle=True, rng=np.random.default_rng(8))
    epochs = [_order(first) for _ in range(3)]
    assert epochs == [_order(second) for _ in range(3)]
    assert epochs[0] != _order(other)
    assert epochs[0] != epochs[1]  # a new permutation each epoch
    for epoch in epochs:
        assert sorted(np.concatenate(epoch).tolist()) == list(range(10))
    assert first.epoch == 3


def test_shuffle_without_rng_still_covers_every_sample():
    loader = DataLoader(_dataset(10), 4, shuffle=True)
    assert sorted(np.concatenate(_order(loader)).tolist()) == list(range(10))


def test_fast_path_does_not_touch_getitem(monkeypatch):
    dataset = _dataset(10)

    def per_item(self, index):
        raise AssertionError("the loader must not index samples one by one")

    monkeypatch.setattr(ArrayDataset, "__getitem__", per_item)
    assert len(list(DataLoader(dataset, 4, shuffle=True, rng=np.random.default_rng(0)))) == 3


class _ListDataset(Dataset):
    def __init__(self, n):
        self.items = [(np.full((1, 3), i, np.float32), i) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]


class _PlainSequence:
    """Not a cnnlab Dataset: only __len__ and __getitem__."""

    def __len__(self):
        return 5

    def __getitem__(self, index):
        return np.full((1, 2), index, np.float32), index


@pytest.mark.parametrize("dataset", [_ListDataset(5), _PlainSequence()])
def test_datasets_without_arrays_are_stacked(dataset):
    batches = list(DataLoader(dataset, batch_size=2))
    assert [yb.tolist() for _, yb in batches] == [[0, 1], [2, 3], [4]]
    assert batches[0][0].shape == (2, 1, 2 if isinstance(dataset, _PlainSequence) else 3)


def test_transform_is_applied_per_batch():
    loader = DataLoader(_dataset(4), 2, transform=Normalize(1.0, 2.0))
    xb, yb = next(iter(loader))
    np.testing.assert_allclose(xb[:, 0, 0], (yb - 1.0) / 2.0)


def _roundtrip(state: dict) -> dict:
    """Store a state the way a checkpoint would without pickle: arrays in npz, rest in JSON."""
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    plain = {k: v for k, v in state.items() if not isinstance(v, np.ndarray)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        restored = {k: archive[k] for k in archive.files}
    restored.update(json.loads(json.dumps(plain)))
    return restored


def _make_loader(seed: int) -> DataLoader:
    transform = Compose([RandomTranslate(1, rng=np.random.default_rng(seed + 100)),
                         Normalize(0.5, 2.0)])
    return DataLoader(_dataset(11), batch_size=3, shuffle=True,
                      rng=np.random.default_rng(seed), transform=transform)


@pytest.mark.parametrize("stop_after", [0, 1, 2, 3, 4, 5, 7])
def test_resume_mid_epoch_gives_identical_remaining_batches(stop_after):
    # Reference: an uninterrupted run over three epochs of 4 batches.
    reference = _make_loader(seed=1)
    expected = [batch for _ in range(3) for batch in reference]

    # Interrupted run: consume `stop_after` batches, save, and restore into a loader whose
    # generators were seeded differently, as a fresh process would be.
    interrupted = _make_loader(seed=1)
    seen = []
    state = interrupted.state_dict()
    epochs_done = 0
    while len(seen) < stop_after:
        for batch in interrupted:
            seen.append(batch)
            state = interrupted.state_dict()  # taken inside the loop, like a checkpoint
            if len(seen) == stop_after:
                break
        else:
            epochs_done += 1
    state = _roundtrip(state)

    resumed = _make_loader(seed=999)
    resumed.load_state_dict(state)
    rest = []
    for _ in range(3 - epochs_done):  # the training loop re-enters the interrupted epoch
        rest.extend(resumed)
    _assert_same_batches(seen + rest, expected)


def test_resume_between_epochs():
    reference = _make_loader(seed=3)
    expected = [list(reference) for _ in range(2)][1]
    first = _make_loader(seed=3)
    list(first)
    state = _roundtrip(first.state_dict())
    assert state["position"] == 0 and state["permutation"].shape == (0,)
    resumed = _make_loader(seed=4)
    resumed.load_state_dict(state)
    _assert_same_batches(list(resumed), expected)
    assert resumed.epoch == 2


def test_state_dict_contents_are_plain():
    loader = DataLoader(_dataset(10), 4, shuffle=True, rng=np.random.default_rng(0))
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    assert state["epoch"] == 0 and state["position"] == 1
    assert state["permutation"].dtype == np.int64 and state["permutation"].shape == (10,)
    json.dumps(state["rng_state"])  # plain str/int values only


def test_abandoned_epoch_counts_and_old_iterator_is_invalidated():
    loader = DataLoader(_dataset(10), 4, shuffle=True, rng=np.random.default_rng(0))
    old = iter(loader)
    next(old)
    assert sum(len(yb) for _, yb in loader) == 10  # a full new epoch
    assert loader.epoch == 2
    with pytest.raises(RuntimeError, match="invalidated"):
        next(old)


def test_unshuffled_loader_resumes_too():
    loader = DataLoader(_dataset(10), 4)
    iterator = iter(loader)
    next(iterator)
    state = loader.state_dict()
    resumed = DataLoader(_dataset(10), 4)
    resumed.load_state_dict(state)
    assert _order(resumed) == [[4, 5, 6, 7], [8, 9]]
    assert _order(resumed) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [({"batch_size": 0}, ValueError, "batch_size must be >= 1, got 0"),
     ({"batch_size": 2.0}, TypeError, "batch_size must be an int"),
     ({"rng": 0}, TypeError, "rng must be a numpy.random.Generator or None, got int"),
     ({"transform": 3}, TypeError, "transform must be callable")],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=f"DataLoader: {match}"):
        DataLoader(_dataset(4), **kwargs)


def test_dataset_type_is_checked():
    with pytest.raises(TypeError, match="DataLoader: dataset must have __len__ and __getitem__"):
        DataLoader(42)


def test_load_state_dict_rejects_bad_states():
    loader = DataLoader(_dataset(10), 4, shuffle=True, rng=np.random.default_rng(0))
    state = loader.state_dict()
    with pytest.raises(ValueError, match=r"missing keys \['permutation'\]"):
        loader.load_state_dict({k: v for k, v in state.items() if k != "permutation"})
    with pytest.raises(ValueError, match=r"permutation of range\(10\).*length 9"):
        loader.load_state_dict({**state, "permutation": np.arange(9)})
    with pytest.raises(ValueError, match=r"position must be in \[0, 3\], got 4"):
        loader.load_state_dict({**state, "permutation": np.arange(10), "position": 4})
    mt_state = np.random.Generator(np.random.MT19937(0)).bit_generator.state
    with pytest.raises(ValueError, match=r"bit generator 'MT19937'.*'PCG64'"):
        loader.load_state_dict({**state, "rng_state": mt_state})


def test_array_dataset_checks_and_conversions():
    dataset = ArrayDataset(np.zeros((3, 1, 2), np.uint8), np.array([0, 1, 1], np.int32))
    assert dataset.x.dtype == np.float32 and dataset.y.dtype == np.int64
    assert ArrayDataset(np.zeros((2, 1)), np.array([0.5, 1.5])).y.dtype == np.float32
    sub = dataset.subset([2, 0])
    assert sub.y.tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"same number of samples, got len\(x\)=3 and len\(y\)=2"):
        ArrayDataset(np.zeros((3, 1)), np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="ArrayDataset: x must be a numeric array"):
        ArrayDataset(np.array(["a", "b"]), np.zeros(2, np.int64))
    with pytest.raises(TypeError, match="ArrayDataset: y must be an integer or float array"):
        ArrayDataset(np.zeros((2, 1)), np.array(["a", "b"]))
