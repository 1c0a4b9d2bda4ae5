"""The training loop: reproducible from its seed, resumable to the exact weights, and safe
when the loss diverges (the last good checkpoint survives byte for byte).

Runs use a small slice of MNIST-1D (500 training sequences: 5 batches of 100 per epoch)
so every test takes a fraction of a second to a few seconds.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data import ArrayDataset, available_datasets, load_dataset
from cnnlab.train import (
    CheckpointError,
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    default_config,
    load_checkpoint,
    resolve_model,
    save_checkpoint,
    train,
    write_metrics,
)
from cnnlab.train.loop import CHECKPOINT_NAME

if "mnist1d" not in {name for name, _, ready, _ in available_datasets() if ready}:
    pytest.skip("mnist1d is not available offline here", allow_module_level=True)

BATCHES_PER_EPOCH = 5


@cache
def _splits() -> tuple[ArrayDataset, ArrayDataset]:
    train_set, test_set = load_dataset("mnist1d")
    return (ArrayDataset(train_set.x[:500], train_set.y[:500]),
            ArrayDataset(test_set.x[:200], test_set.y[:200]))


def _config(**overrides) -> TrainConfig:
    # Shuffled unless a test says otherwise: the loader's permutation is the state that
    # resuming must restore (the MNIST-1D recipe itself takes batches in stored order).
    options = {"steps": 12, "batch_size": 100, "lr": 1e-2, "progress": False,
               "eval_every": 0, "shuffle": True, **overrides}
    return default_config("mnist1d", "cnn", **options)


def _run(datasets=None, **overrides):
    return Trainer(_config(**overrides), datasets=datasets or _splits()).run()


def _weights(result) -> dict[str, np.ndarray]:
    return result.model.state_dict()


def _assert_bitwise_equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert a[key].tobytes() == b[key].tobytes(), f"{key} differs"


def _stray_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != CHECKPOINT_NAME)


# -- determinism ----------------------------------------------------------------------------


def test_same_seed_gives_bitwise_identical_weights():
    first = _run(steps=60, seed=7)
    second = _run(steps=60, seed=7)
    _assert_bitwise_equal(_weights(first), _weights(second))
    assert first.metrics["test_accuracy"] == second.metrics["test_accuracy"]
    assert [h["train_loss"] for h in first.history] == [h["train_loss"] for h in
                                                        second.history]


def test_the_mnist1d_recipe_takes_batches_in_stored_order():
    # Greydanus 2020's train_model reads batch ``step * 100 % 4000``: every epoch the same
    # batches, in the same order; other recipes reshuffle every epoch.
    assert default_config("mnist1d", "cnn").shuffle is False
    assert default_config("mnist1d", "mlp").shuffle is False
    assert default_config("mnist5k", "lenet5").shuffle is True
    trainer = Trainer(_config(shuffle=False, batch_size=90), datasets=_splits())
    x = _splits()[0].x
    for _ in range(2):  # two epochs, the same batches
        starts = [0, 90, 180, 270, 360, 450]
        batches = list(trainer.loader)
        assert [len(xb) for xb, _ in batches] == [90] * 5 + [50]
        for start, (xb, _) in zip(starts, batches, strict=True):
            assert np.array_equal(xb, x[start:start + 90])
    shuffled = Trainer(_config(shuffle=True), datasets=_splits())
    assert not np.array_equal(next(iter(shuffled.loader))[0], x[:100])


def test_different_seed_gives_different_weights():
    a, b = _weights(_run(steps=5, seed=0)), _weights(_run(steps=5, seed=1))
    assert not np.array_equal(a["conv1.weight"], b["conv1.weight"])


def test_training_does_not_touch_global_random_state():
    before = np.random.get_state()[1].copy()
    _run(steps=3, augment_shift=2)
    assert np.array_equal(np.random.get_state()[1], before)


# -- resume ---------------------------------------------------------------------------------


# (stop step, optimizer, augment_shift, batch size, shuffle): stops mid-epoch and on an
# epoch boundary, with and without random-shift augmentation, with Adam and with SGD's
# momentum buffers, with a short last batch (500 = 5 x 90 + 50), and in stored order.
RESUME_CASES = [
    (7, "adam", 0, 100, True),    # mid-epoch: epoch 1, 2 batches in
    (10, "adam", 0, 100, True),   # epoch boundary: all 5 batches of epoch 1 done
    (7, "adam", 3, 100, True),
    (10, "adam", 3, 100, True),
    (8, "sgd", 2, 100, True),
    (6, "adamw", 1, 90, True),    # right after the short last batch of epoch 0
    (9, "adam", 0, 90, True),
    (7, "adam", 0, 100, False),   # the MNIST-1D recipe's stored order
    (8, "adam", 2, 90, False),
]


@pytest.mark.parametrize(("stop", "optimizer", "shift", "batch", "shuffle"), RESUME_CASES)
def test_resume_reaches_the_uninterrupted_weights(tmp_path, stop, optimizer, shift, batch,
                                                  shuffle):
    total = 17
    common = {"optimizer": optimizer, "augment_shift": shift, "seed": 3, "batch_size": batch,
              "weight_decay": 1e-3 if optimizer == "adamw" else 0.0, "shuffle": shuffle}
    reference = _run(steps=total, **common)

    folder = tmp_path / "run"
    first = _run(steps=stop, checkpoint_dir=str(folder), checkpoint_every=3, **common)
    assert first.metrics["steps"] == stop
    _, metadata = load_checkpoint(folder / CHECKPOINT_NAME)
    assert metadata["step"] == stop
    resumed = _run(steps=total, checkpoint_dir=str(folder), checkpoint_every=3, resume=True,
                   **common)
    assert resumed.metrics["steps"] == total
    _assert_bitwise_equal(_weights(reference), _weights(resumed))
    assert _stray_files(folder) == []


@pytest.mark.parametrize(("crash_at", "schedule"), [(8, "constant"), (11, "constant"),
                                                   (8, "cosine"), (11, "onecycle")])
def test_resume_after_a_crash_reaches_the_uninterrupted_weights(tmp_path, monkeypatch,
                                                                crash_at, schedule):
    # The run dies inside step ``crash_at``; the last checkpoint is from step 6 (every 3
    # steps) or 10 (the end of epoch 2), and resuming replays the lost steps exactly,
    # learning-rate schedule included.
    total = 14
    common = {"augment_shift": 2, "seed": 5, "schedule": schedule}
    reference = _run(steps=total, **common)

    folder = tmp_path / "run"
    original = Trainer._train_step
    calls = {"n": 0}

    def dies(self, xb, yb):
        calls["n"] += 1
        if calls["n"] == crash_at:
            raise KeyboardInterrupt("simulated crash")
        return original(self, xb, yb)

    monkeypatch.setattr(Trainer, "_train_step", dies)
    with pytest.raises(KeyboardInterrupt):
        _run(steps=total, checkpoint_dir=str(folder), checkpoint_every=3, **common)
    monkeypatch.setattr(Trainer, "_train_step", original)
    _, metadata = load_checkpoint(folder / CHECKPOINT_NAME)
    last_good = max(s for s in range(crash_at) if s % 3 == 0 or s % BATCHES_PER_EPOCH == 0)
    assert metadata["step"] == last_good
    resumed = _run(steps=total, checkpoint_dir=str(folder), checkpoint_every=3, resume=True,
                   **common)
    _assert_bitwise_equal(_weights(reference), _weights(resumed))
    assert _stray_files(folder) == []


def test_resume_in_epochs_mode(tmp_path, monkeypatch):
    config = {"epochs": 3, "batch_size": 100, "progress": False, "seed": 4}
    reference = train(default_config("mnist1d", "cnn", **config), datasets=_splits())
    folder = str(tmp_path / "epochs")
    original = Trainer._train_step
    calls = {"n": 0}

    def dies(self, xb, yb):
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt("simulated crash")
        return original(self, xb, yb)

    monkeypatch.setattr(Trainer, "_train_step", dies)
    with pytest.raises(KeyboardInterrupt):
        train(default_config("mnist1d", "cnn", checkpoint_dir=folder, **config),
              datasets=_splits())
    monkeypatch.setattr(Trainer, "_train_step", original)
    resumed = train(default_config("mnist1d", "cnn", checkpoint_dir=folder, resume=True,
                                   **config), datasets=_splits())
    assert resumed.metrics["steps"] == 3 * BATCHES_PER_EPOCH
    _assert_bitwise_equal(_weights(reference), _weights(resumed))


def test_resume_with_batchnorm_buffers(tmp_path):
    # ResNetSmall carries BatchNorm running statistics and int64 num_batches_tracked.
    digits = load_dataset("digits") if "digits" in {
        name for name, _, ready, _ in available_datasets() if ready} else None
    if digits is None:
        pytest.skip("digits is not available offline here")
    train_set, test_set = digits
    splits = (ArrayDataset(train_set.x[:96], train_set.y[:96]),
              ArrayDataset(test_set.x[:32], test_set.y[:32]))

    def run(**overrides):
        config = default_config("digits", "resnet-small", batch_size=32, progress=False,
                                **overrides)
        return Trainer(config, datasets=splits).run()

    reference = run(steps=7)
    folder = str(tmp_path / "bn")
    run(steps=4, checkpoint_dir=folder, checkpoint_every=2)
    resumed = run(steps=7, checkpoint_dir=folder, checkpoint_every=2, resume=True)
    weights = _weights(resumed)
    _assert_bitwise_equal(_weights(reference), weights)
    assert int(weights["bn1.num_batches_tracked"]) == 7


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    folder = tmp_path / "empty"
    fresh = _run(steps=4, seed=2)
    resumed = _run(steps=4, seed=2, checkpoint_dir=str(folder), resume=True)
    _assert_bitwise_equal(_weights(fresh), _weights(resumed))
    assert (folder / CHECKPOINT_NAME).is_file()


def test_resume_of_a_finished_run_changes_nothing(tmp_path):
    folder = tmp_path / "done"
    done = _run(steps=6, checkpoint_dir=str(folder))
    payload = (folder / CHECKPOINT_NAME).read_bytes()
    again = _run(steps=6, checkpoint_dir=str(folder), resume=True)
    assert again.metrics["steps"] == 6
    _assert_bitwise_equal(_weights(done), _weights(again))
    assert (folder / CHECKPOINT_NAME).read_bytes() == payload


def test_resume_refuses_a_run_shorter_than_the_checkpoint(tmp_path):
    # It used to stop at once and report the checkpoint's weights as a 4-step run's.
    folder = tmp_path / "long"
    _run(steps=6, checkpoint_dir=str(folder))
    payload = (folder / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(CheckpointError, match=r"is at step 6, past this run's 4 steps"):
        _run(steps=4, checkpoint_dir=str(folder), resume=True)
    assert (folder / CHECKPOINT_NAME).read_bytes() == payload


def test_a_new_run_refuses_to_overwrite_an_existing_checkpoint(tmp_path):
    folder = tmp_path / "taken"
    _run(steps=4, checkpoint_dir=str(folder))
    payload = (folder / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(CheckpointError, match="already exists; pass --resume"):
        _run(steps=4, seed=3, checkpoint_dir=str(folder))
    assert (folder / CHECKPOINT_NAME).read_bytes() == payload


@pytest.mark.parametrize(("changed", "expected"), [
    ({"lr": 1e-3}, r"lr=0\.01, this run asks for lr=0\.001"),
    ({"shuffle": False}, r"shuffle=True, this run asks for shuffle=False"),
    ({"seed": 9, "batch_size": 90}, r"batch_size=100, seed=0, this run asks for "
                                    r"batch_size=90, seed=9"),
])
def test_resume_refuses_other_settings_than_the_checkpoints(tmp_path, changed, expected):
    # Another learning rate, order or seed could never reach the interrupted run's weights.
    folder = tmp_path / "run"
    _run(steps=4, checkpoint_dir=str(folder))
    payload = (folder / CHECKPOINT_NAME).read_bytes()
    with pytest.raises(CheckpointError, match=expected):
        _run(steps=8, checkpoint_dir=str(folder), resume=True, **changed)
    assert (folder / CHECKPOINT_NAME).read_bytes() == payload


def test_resume_may_extend_the_run_and_change_machine_settings(tmp_path):
    reference = _run(steps=8)
    folder = tmp_path / "run"
    _run(steps=4, checkpoint_dir=str(folder), checkpoint_every=2)
    resumed = _run(steps=8, checkpoint_dir=str(folder), checkpoint_every=3, eval_every=2,
                   resume=True)
    _assert_bitwise_equal(_weights(reference), _weights(resumed))


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_resume_refuses_to_change_the_length_of_a_learning_rate_schedule(tmp_path, schedule):
    # The schedule's shape depends on the run's length: a longer run is another schedule.
    folder = tmp_path / "run"
    _run(steps=4, schedule=schedule, checkpoint_dir=str(folder))
    with pytest.raises(CheckpointError, match=rf"follows a {schedule} learning-rate "
                                              rf"schedule over 4 steps, this run asks for 8"):
        _run(steps=8, schedule=schedule, checkpoint_dir=str(folder), resume=True)
    with pytest.raises(CheckpointError, match=r"over 4 steps, this run asks for 10"):
        _run(steps=None, epochs=2, schedule=schedule, checkpoint_dir=str(folder),
             resume=True)


def test_resume_of_a_checkpoint_from_before_a_setting_existed_takes_its_default(tmp_path):
    # Checkpoints written before ``shuffle`` existed have no such key: they shuffled.
    folder = tmp_path / "old"
    reference = _run(steps=8)
    _run(steps=4, checkpoint_dir=str(folder))
    path = folder / CHECKPOINT_NAME
    arrays, metadata = load_checkpoint(path)
    del metadata["config"]["shuffle"]
    save_checkpoint(path, arrays, metadata)
    resumed = _run(steps=8, checkpoint_dir=str(folder), resume=True)
    _assert_bitwise_equal(_weights(reference), _weights(resumed))
    with pytest.raises(CheckpointError, match=r"shuffle=True, this run asks for shuffle=Fa"):
        _run(steps=8, checkpoint_dir=str(folder), resume=True, shuffle=False)


# -- divergence -----------------------------------------------------------------------------


def test_nan_loss_raises_and_keeps_the_last_good_checkpoint(tmp_path):
    folder = tmp_path / "run"
    _run(steps=6, checkpoint_dir=str(folder), checkpoint_every=2)
    path = folder / CHECKPOINT_NAME
    good = path.read_bytes()
    train_set, test_set = _splits()
    poisoned = ArrayDataset(np.full_like(train_set.x, np.nan), train_set.y)
    with pytest.raises(TrainingDivergedError) as info:
        _run(datasets=(poisoned, test_set), steps=12, checkpoint_dir=str(folder),
             checkpoint_every=2, resume=True)
    message = str(info.value)
    assert message.startswith("train: loss became nan at step 7")
    assert "smaller --lr" in message
    assert f"last good checkpoint ({path}) was kept" in message
    assert path.read_bytes() == good
    assert _stray_files(folder) == []


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning",
                            "ignore:invalid value:RuntimeWarning")
def test_huge_learning_rate_diverges_with_a_clear_message(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(TrainingDivergedError,
                       match=r"^train: loss became (nan|inf|-inf) at step \d+ \(try a smaller "
                             r"--lr\)"):
        _run(steps=50, lr=1e6, optimizer="sgd", checkpoint_dir=str(folder),
             checkpoint_every=1)
    # The checkpoint left behind is a whole, loadable one from before the divergence.
    arrays, metadata = load_checkpoint(folder / CHECKPOINT_NAME)
    assert metadata["step"] >= 1
    assert all(np.isfinite(v).all() for k, v in arrays.items() if k.startswith("model."))
    assert _stray_files(folder) == []


# -- files ----------------------------------------------------------------------------------


def test_checkpoints_are_written_atomically(tmp_path, monkeypatch):
    import cnnlab.train.checkpoint as checkpoint_module

    folder = tmp_path / "run"
    _run(steps=3, checkpoint_dir=str(folder))
    path = folder / CHECKPOINT_NAME
    good = path.read_bytes()
    assert _stray_files(folder) == []

    def power_cut(source, target):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(checkpoint_module.os, "replace", power_cut)
    with pytest.raises(OSError, match="simulated crash"):
        _run(steps=6, checkpoint_dir=str(folder), resume=True)
    assert path.read_bytes() == good  # the old checkpoint, whole
    assert _stray_files(folder) == []  # and no half-written temporary file


def test_metrics_file(tmp_path):
    result = _run(steps=10, eval_every=5)
    path = tmp_path / "out" / "metrics.json"
    write_metrics(path, result.metrics)
    metrics = json.loads(path.read_text())
    assert 0.0 <= metrics["test_accuracy"] <= 1.0
    assert metrics["params"] == 5210
    assert metrics["train_seconds"] > 0
    assert metrics["steps"] == 10 and metrics["model"] == "mnist1d-cnn"
    assert [h["step"] for h in metrics["history"]] == [5, 10]
    assert metrics["config"]["lr"] == 1e-2
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_epochs_config_trains_whole_epochs():
    config = default_config("mnist1d", "cnn", epochs=2, batch_size=100, progress=False,
                            eval_every=0)
    result = train(config, datasets=_splits())
    assert result.metrics["steps"] == 2 * BATCHES_PER_EPOCH
    assert result.metrics["epochs"] == 2
    # One learning-curve point per epoch, labelled with the epochs trained so far.
    assert [(h["step"], h["epoch"]) for h in result.history] == [(5, 1), (10, 2)]


def test_history_epoch_is_epochs_trained_whatever_the_eval_step():
    result = _run(steps=10, eval_every=5)
    assert [(h["step"], h["epoch"]) for h in result.history] == [(5, 1), (10, 2)]
    result = _run(steps=8, eval_every=4)
    assert [h["epoch"] for h in result.history] == [0.8, 1.6]


@pytest.mark.parametrize(("overrides", "message"), [
    ({"lr": -1.0}, r"train: lr must be > 0, got -1.0"),
    ({"batch_size": 0}, r"train: batch-size must be >= 1, got 0"),
    ({"steps": 0}, r"train: steps must be >= 1, got 0"),
    ({"checkpoint_every": 0}, r"train: checkpoint-every must be >= 1, got 0"),
    ({"optimizer": "lbfgs"}, r"train: optimizer must be one of .*got 'lbfgs'"),
])
def test_bad_config_is_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(**overrides)


def test_unknown_standard_cnn():
    with pytest.raises(ValueError, match=r"train: dataset must be one of .*'nope'"):
        default_config("nope", "cnn")
    with pytest.raises(ValueError, match=r"train: no standard CNN for dataset 'nope'"):
        resolve_model("nope", "cnn")
