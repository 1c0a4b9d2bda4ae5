"""Checkpoints: safetensors files with a JSON record, refused cleanly when unusable.

A checkpoint round-trips arrays (any dtype, 0-d included) and metadata; a truncated,
random, foreign or pickled file gives :class:`CheckpointError` naming the file, and
loading never runs code from the file.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save as save_safetensors

from cnnlab.data import ArrayDataset, available_datasets, load_dataset
from cnnlab.train import CheckpointError, Trainer, default_config, load_checkpoint
from cnnlab.train.checkpoint import SCHEMA, save_checkpoint, split_prefix, with_prefix
from cnnlab.train.loop import CHECKPOINT_NAME


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "model.conv.weight": rng.standard_normal((4, 1, 3)).astype(np.float32),
        "model.bn.num_batches_tracked": np.array(7, dtype=np.int64),  # 0-d, as in torch
        "optim.exp_avg": rng.standard_normal(5),  # float64
        "data.permutation": rng.permutation(10),
        "data.empty": np.zeros(0, dtype=np.int64),
        "extra.bytes": np.arange(6, dtype=np.uint8).reshape(2, 3),
    }


METADATA = {"step": 12, "config": {"lr": 0.01, "model": "mnist1d-cnn"},
            "history": [{"step": 5, "test_accuracy": 0.5}], "rng_state": {"s": 2**70}}


def _stray_files(folder: Path, keep: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != keep)


def test_round_trip(tmp_path):
    path = tmp_path / "sub" / "ckpt.safetensors"  # the folder is created
    arrays = _arrays()
    save_checkpoint(path, arrays, METADATA)
    loaded, metadata = load_checkpoint(path)
    assert loaded.keys() == arrays.keys()
    for key, value in arrays.items():
        assert loaded[key].dtype == value.dtype, key
        assert loaded[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    assert metadata == {"schema": SCHEMA, **METADATA}
    assert _stray_files(path.parent, path.name) == []


def test_overwrite_is_whole_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, _arrays(), {"step": 1})
    save_checkpoint(path, {"a": np.ones(3, np.float32)}, {"step": 2})
    arrays, metadata = load_checkpoint(path)
    assert list(arrays) == ["a"] and metadata["step"] == 2
    assert _stray_files(tmp_path, path.name) == []


def test_failed_save_keeps_the_old_file(tmp_path):
    path = tmp_path / "ckpt.safetensors"
    save_checkpoint(path, _arrays(), {"step": 1})
    good = path.read_bytes()
    with pytest.raises(Exception, match="object"):  # safetensors' own error type
        save_checkpoint(path, {"bad": np.array(["text"], dtype=object)}, {"step": 2})
    with pytest.raises(TypeError):
        save_checkpoint(path, _arrays(), {"not json": object()})
    assert path.read_bytes() == good
    assert _stray_files(tmp_path, path.name) == []


def test_prefix_helpers():
    arrays = with_prefix({"w": [1.0, 2.0], "b": np.zeros(1)}, "model")
    assert sorted(arrays) == ["model.b", "model.w"]
    assert sorted(split_prefix({**arrays, "optim.x": np.ones(1)}, "model")) == ["b", "w"]


# -- unusable files -------------------------------------------------------------------------


def _good_file(tmp_path: Path) -> Path:
    path = tmp_path / "good.safetensors"
    save_checkpoint(path, _arrays(), METADATA)
    return path


@pytest.mark.parametrize("damage", ["truncated", "half", "random", "empty", "header"])
def test_corrupt_file_is_refused_naming_it(tmp_path, damage):
    payload = _good_file(tmp_path).read_bytes()
    broken = {
        "truncated": payload[:-7],
        "half": payload[:len(payload) // 2],
        "random": np.random.default_rng(1).bytes(len(payload)),
        "empty": b"",
        "header": payload[:8] + b"[" + payload[9:],  # header length fine, JSON broken
    }[damage]
    path = tmp_path / "broken.safetensors"
    path.write_bytes(broken)
    with pytest.raises(CheckpointError, match=r"load_checkpoint: .*broken\.safetensors"):
        load_checkpoint(path)
    assert path.read_bytes() == broken  # reading never repairs or removes anything


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"load_checkpoint: no checkpoint file at .*nope"):
        load_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match=r"no checkpoint file"):
        load_checkpoint(tmp_path)  # a folder is not a file


def test_safetensors_without_cnnlab_record(tmp_path):
    path = tmp_path / "foreign.safetensors"
    path.write_bytes(save_safetensors({"w": np.ones(2, np.float32)}))
    with pytest.raises(CheckpointError, match=r"foreign\.safetensors has no cnnlab metadata"):
        load_checkpoint(path)


def test_other_schema(tmp_path):
    path = tmp_path / "future.safetensors"
    record = json.dumps({"schema": "cnnlab.checkpoint/99", "step": 1})
    path.write_bytes(save_safetensors({"w": np.ones(2, np.float32)},
                                      metadata={"cnnlab": record}))
    with pytest.raises(CheckpointError,
                       match=r"future\.safetensors has schema 'cnnlab.checkpoint/99', "
                             r"expected 'cnnlab.checkpoint/1'"):
        load_checkpoint(path)


# -- never unpickles ------------------------------------------------------------------------


class _Payload:
    """Unpickling this would create ``marker``: the classic pickle code-execution trick."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_renamed_to_safetensors_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"model.w": _Payload(marker)}))
    with pytest.raises(CheckpointError, match=r"evil\.safetensors is not a readable "
                                              r"safetensors checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_torch_save_file_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "torch.safetensors"
    torch.save({"w": torch.ones(2)}, path)  # a zip of pickles
    with pytest.raises(CheckpointError, match=r"torch\.safetensors"):
        load_checkpoint(path)


def test_loading_does_not_use_pickle(tmp_path, monkeypatch):
    path = _good_file(tmp_path)

    def forbidden(*args, **kwargs):
        raise AssertionError("load_checkpoint used pickle")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    monkeypatch.setattr(np, "load", forbidden)  # np.load may unpickle object arrays
    arrays, _ = load_checkpoint(path)
    assert int(arrays["model.bn.num_batches_tracked"]) == 7


# -- resuming into another architecture -------------------------------------------------------


@pytest.fixture(scope="module")
def mnist1d_slice():
    if "mnist1d" not in {name for name, _, ready, _ in available_datasets() if ready}:
        pytest.skip("mnist1d is not available offline here")
    train_set, test_set = load_dataset("mnist1d")
    return (ArrayDataset(train_set.x[:200], train_set.y[:200]),
            ArrayDataset(test_set.x[:50], test_set.y[:50]))


def _trained(folder: Path, splits, model: str = "cnn") -> Path:
    config = default_config("mnist1d", model, steps=2, batch_size=100, progress=False,
                            checkpoint_dir=str(folder))
    Trainer(config, datasets=splits).run()
    return folder / CHECKPOINT_NAME


def _resume(folder: Path, splits, model: str, data: str = "mnist1d"):
    config = default_config(data, model, steps=4, batch_size=100, progress=False,
                            checkpoint_dir=str(folder), resume=True)
    return Trainer(config, datasets=splits).run()


def test_resume_into_another_model_is_refused(tmp_path, mnist1d_slice):
    path = _trained(tmp_path, mnist1d_slice)
    good = path.read_bytes()
    with pytest.raises(CheckpointError,
                       match=r"resume: .*checkpoint\.safetensors is a checkpoint of model "
                             r"'mnist1d-cnn', not 'mlp'"):
        _resume(tmp_path, mnist1d_slice, "mlp")
    assert path.read_bytes() == good


def test_resume_into_another_dataset_is_refused(tmp_path, mnist1d_slice):
    path = _trained(tmp_path, mnist1d_slice, model="logistic")
    good = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"is a checkpoint of data 'mnist1d', not "
                                              r"'digits'"):
        _resume(tmp_path, mnist1d_slice, "logistic", data="digits")
    assert path.read_bytes() == good


def test_resume_of_same_name_but_other_shapes_is_refused(tmp_path, mnist1d_slice):
    # Same model name, but the weights are of another width (e.g. a hand-edited file).
    path = _trained(tmp_path, mnist1d_slice)
    arrays, metadata = load_checkpoint(path)
    arrays["model.linear.weight"] = np.zeros((10, 7), np.float32)
    metadata.pop("schema")
    save_checkpoint(path, arrays, metadata)
    edited = path.read_bytes()
    with pytest.raises(CheckpointError,
                       match=r"resume: .*checkpoint\.safetensors does not fit this "
                             r"architecture: .*shape mismatch for 'linear\.weight'"):
        _resume(tmp_path, mnist1d_slice, "cnn")
    assert path.read_bytes() == edited


def test_corrupt_checkpoint_on_resume_is_left_alone(tmp_path, mnist1d_slice):
    path = tmp_path / CHECKPOINT_NAME
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match=r"checkpoint\.safetensors is not a readable"):
        _resume(tmp_path, mnist1d_slice, "cnn")
    assert path.read_bytes() == b"\x00" * 100
