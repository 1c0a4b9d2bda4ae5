"""Statistics recorded while training (``TrainConfig.stats_every``, ``cnnlab train
--stats``): a step's row is its batch's, computed independently (``activation_stats`` and
the batch gradient), whether the batch ran as one shard or as shards in worker processes
or threads, the same bits for any worker count; recording changes no weight; the files
are read back without pickle; a resumed run appends to the rows of the run it continues
and drops those past its checkpoint."""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import pytest

from cnnlab.analysis import activation_stats
from cnnlab.data import ArrayDataset, available_datasets, load_dataset
from cnnlab.train import (
    Trainer,
    TrainingDivergedError,
    default_config,
    load_checkpoint,
    read_training_stats,
)
from cnnlab.train import loop as L
from cnnlab.train import parallel as P
from cnnlab.train.loop import CHECKPOINT_NAME
from cnnlab.train.stats import MAGNITUDE_EDGES, STATS_ARRAYS, STATS_INDEX

if "mnist1d" not in {name for name, _, ready, _ in available_datasets() if ready}:
    pytest.skip("mnist1d is not available offline here", allow_module_level=True)

LAYERS = ("conv1", "conv2", "conv3", "linear")
PARAMETERS = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "conv3.weight",
              "conv3.bias", "linear.weight", "linear.bias")
ROWS = ("count", "mean", "std", "nonpositive", "histogram", "grad_norm")


@cache
def _splits() -> tuple[ArrayDataset, ArrayDataset]:
    train_set, test_set = load_dataset("mnist1d")
    return (ArrayDataset(train_set.x[:400], train_set.y[:400]),
            ArrayDataset(test_set.x[:100], test_set.y[:100]))


def _trainer(datasets=None, **overrides) -> Trainer:
    options = {"steps": 6, "batch_size": 100, "lr": 1e-2, "progress": False,
               "eval_every": 0, "seed": 3, "threads": 1, "stats_every": 1, **overrides}
    return Trainer(default_config("mnist1d", "cnn", **options), datasets=datasets or _splits())


def _plan(monkeypatch, shards: int) -> None:
    """Split every batch into ``shards`` (MNIST-1D's are too small for the default plan)."""
    monkeypatch.setattr(P, "MIN_SHARD_VALUES", 1)
    monkeypatch.setattr(P, "MAX_SHARDS", shards)


RUNNERS = ["process", "thread"] if P.can_fork_workers() else ["thread"]


@pytest.fixture(params=RUNNERS)
def runner(request, monkeypatch):
    if request.param == "thread":
        monkeypatch.setattr(L, "can_fork_workers", lambda: False)
    return request.param


def _first_step(trainer: Trainer):
    """The statistics of the trainer's first step, and the batch it took."""
    xb, yb = next(iter(trainer.loader))
    trainer._train_step(xb, yb)
    trainer.close()
    return trainer.stats, xb, yb


def _same_rows(a, b) -> bool:
    return all(getattr(a, name).tobytes() == getattr(b, name).tobytes()
               for name in ("steps", *ROWS))


def test_a_sharded_step_records_the_whole_batchs_statistics(monkeypatch, runner):
    # Four shards: one process runs all four, or three run 2 + 1 + 1 of them.
    _plan(monkeypatch, 4)
    one, xb, yb = _first_step(_trainer(threads=1))
    three, _, _ = _first_step(_trainer(threads=3))
    assert one.steps.tolist() == three.steps.tolist() == [1]
    assert _same_rows(one, three)  # shards added in shard order: the same bits
    assert one.layers == LAYERS and one.parameters == PARAMETERS
    # ... and they are the batch's, computed independently: the layer outputs of the
    # weights before the step (no BatchNorm or Dropout here: eval mode is train mode),
    fresh = _trainer(stats_every=0)
    expected = activation_stats(fresh.model, [xb])
    for i, layer in enumerate(expected.layers):
        assert one.count[0, i] == layer.count
        assert one.mean[0, i] == pytest.approx(layer.mean, rel=1e-5, abs=1e-6)
        assert one.std[0, i] == pytest.approx(layer.std, rel=1e-5)
        assert one.nonpositive[0, i] == pytest.approx(layer.nonpositive, abs=3 / layer.count)
        assert np.abs(one.histogram[0, i] - layer.histogram).sum() <= 6
    # and the norms of the whole batch's gradient, from one shard
    params = list(fresh.model.parameters())
    _, grads = fresh._shard_gradients(xb, yb, 1.0, params)
    norms = [np.linalg.norm(g.astype(np.float64)) for g in grads]
    np.testing.assert_allclose(one.grad_norm[0], norms, rtol=1e-5)


def test_one_shard_and_four_shards_record_the_same_statistics(monkeypatch):
    _plan(monkeypatch, 1)
    whole, _, _ = _first_step(_trainer(threads=2))
    _plan(monkeypatch, 4)
    sharded, _, _ = _first_step(_trainer(threads=2))
    np.testing.assert_array_equal(whole.count, sharded.count)
    np.testing.assert_allclose(sharded.mean, whole.mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sharded.std, whole.std, rtol=1e-5)
    np.testing.assert_allclose(sharded.nonpositive, whole.nonpositive, atol=1e-3)
    assert np.abs(sharded.histogram - whole.histogram).sum() <= 8
    np.testing.assert_allclose(sharded.grad_norm, whole.grad_norm, rtol=1e-5)


def test_recording_changes_no_weight_and_runs_every_n_steps(monkeypatch):
    _plan(monkeypatch, 2)
    plain = _trainer(stats_every=0, threads=2).run()
    recorded = _trainer(stats_every=2, threads=2).run()
    assert plain.stats is None
    assert recorded.stats.steps.tolist() == [2, 4, 6]
    for key, value in plain.model.state_dict().items():
        assert recorded.model.state_dict()[key].tobytes() == value.tobytes(), key
    assert not any(m._forward_hooks for m in recorded.model.modules())


def test_the_files_hold_the_rows_and_are_read_without_pickle(tmp_path):
    folder = tmp_path / "run"
    result = _trainer(steps=5, stats_every=2, checkpoint_dir=str(folder),
                      checkpoint_every=3).run()
    with np.load(folder / STATS_ARRAYS, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    assert sorted(arrays) == sorted(["steps", "edges", "layers", "kinds", "parameters",
                                     *ROWS])
    assert arrays["steps"].tolist() == [2, 4]
    assert arrays["layers"].tolist() == list(LAYERS)
    assert arrays["kinds"].tolist() == ["Conv1d"] * 3 + ["Linear"]
    assert arrays["parameters"].tolist() == list(PARAMETERS)
    np.testing.assert_array_equal(arrays["edges"], MAGNITUDE_EDGES)
    assert arrays["histogram"].shape == (2, 4, 82) and arrays["grad_norm"].shape == (2, 8)
    assert (arrays["histogram"].sum(axis=2) == arrays["count"]).all()
    assert arrays["count"][0].tolist() == [100 * 25 * 19, 100 * 25 * 10, 100 * 25 * 5,
                                           100 * 10]
    index = json.loads((folder / STATS_INDEX).read_text())
    assert index["schema"] == "cnnlab.stats/1" and index["every"] == 2
    assert (index["steps"], index["last_step"]) == (2, 4)
    assert [layer["name"] for layer in index["layers"]] == list(LAYERS)
    assert index["parameters"][0] == {"name": "conv1.weight", "shape": [25, 1, 5]}
    assert index["histogram"]["bins"] == 82
    read = read_training_stats(folder)
    assert _same_rows(read, result.stats) and read.every == 2
    assert read.histograms("conv2").shape == (2, 82)
    assert str(read).startswith("step 4 (2 steps recorded, every 2)")


def test_a_resumed_run_appends_to_the_runs_rows(tmp_path):
    whole = _trainer(steps=8, stats_every=2).run().stats
    folder = tmp_path / "run"
    _trainer(steps=4, stats_every=2, checkpoint_dir=str(folder)).run()
    assert read_training_stats(folder).steps.tolist() == [2, 4]
    resumed = _trainer(steps=8, stats_every=2, checkpoint_dir=str(folder),
                       resume=True).run()
    assert resumed.stats.steps.tolist() == [2, 4, 6, 8]
    assert _same_rows(read_training_stats(folder), whole)


def test_a_diverged_step_is_recorded_and_dropped_on_resume(tmp_path):
    folder = tmp_path / "run"
    _trainer(steps=4, stats_every=1, checkpoint_dir=str(folder)).run()
    train_set, test_set = _splits()
    poisoned = ArrayDataset(np.full_like(train_set.x, np.nan), train_set.y)
    with pytest.raises(TrainingDivergedError, match="at step 5"):
        _trainer(datasets=(poisoned, test_set), steps=8, checkpoint_dir=str(folder),
                 resume=True).run()
    kept = read_training_stats(folder)  # the diverging step's row says where it went
    assert kept.steps.tolist() == [1, 2, 3, 4, 5]
    assert np.isnan(kept.mean[-1]).all() and np.isfinite(kept.mean[:-1]).all()
    assert load_checkpoint(folder / CHECKPOINT_NAME)[1]["step"] == 4
    resumed = _trainer(steps=6, checkpoint_dir=str(folder), resume=True).run().stats
    assert resumed.steps.tolist() == [1, 2, 3, 4, 5, 6]
    assert np.isfinite(resumed.mean).all()


def test_a_stats_file_of_another_model_is_refused_on_resume(tmp_path):
    folder = tmp_path / "run"
    _trainer(steps=2, stats_every=1, checkpoint_dir=str(folder)).run()
    with np.load(folder / STATS_ARRAYS, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays["layers"] = np.array(["a", "b", "c", "d"])
    np.savez(folder / STATS_ARRAYS, **arrays)
    with pytest.raises(ValueError, match=r"^resume: .*stats\.npz records layers \['a', 'b', "
                                         r"'c', 'd'\] and parameters .* not this model's"):
        _trainer(steps=3, checkpoint_dir=str(folder), resume=True).run()
    arrays["histogram"] = arrays["histogram"][:, :, :3]
    np.savez(folder / STATS_ARRAYS, **arrays)
    with pytest.raises(ValueError, match=r"has 'histogram' of dtype int64 and shape "
                                         r"\(2, 4, 3\), expected \('S', 'L', 'B'\)"):
        read_training_stats(folder)
