"""cnnlab.sources, the one way commands name a model: a checkpoint (with its data and
curve), or a torch callable with safetensors weights; each mistake named clearly."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from cnnlab.sources import load_checkpoint_model, load_torch_model
from cnnlab.train import Trainer, default_config


def test_a_checkpoint_brings_its_model_data_and_curve(tmp_path):
    config = default_config("digits", "digits-cnn", steps=4, eval_every=2, progress=False,
                            checkpoint_dir=str(tmp_path))
    trained = Trainer(config).run()
    loaded = load_checkpoint_model(tmp_path)
    assert loaded.name == "digits-cnn" and loaded.data == "digits"
    assert loaded.input_shape == (1, 8, 8) and len(loaded.history) == len(trained.history)
    for (name, a), (_, b) in zip(trained.model.named_parameters(),
                                 loaded.model.named_parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    (tmp_path / "tinysrc.py").write_text(
        "import torch\n"
        "def build():\n"
        "    return torch.nn.Sequential(torch.nn.Conv1d(1, 2, 3), torch.nn.Flatten(),\n"
        "                               torch.nn.Linear(12, 3))\n"
        "NOT_CALLABLE = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("tinysrc", None)
    import tinysrc

    save_file(tinysrc.build().state_dict(), str(tmp_path / "w.safetensors"))
    save_file({"0.weight": torch.zeros(5)}, str(tmp_path / "wrong.safetensors"))
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    return tmp_path


def test_a_torch_model_by_name_with_its_weights(tiny):
    loaded = load_torch_model("tinysrc:build", tiny / "w.safetensors", (1, 8))
    assert loaded.input_shape == (1, 8) and not loaded.model.training
    assert loaded.x_test is None and loaded.name == "tinysrc:build"


@pytest.mark.parametrize("spec, weights, message", [
    ("tinysrc.build", "w.safetensors", "must be module:callable"),
    ("no_such_module_here:build", "w.safetensors", "cannot import 'no_such_module_here'"),
    ("tinysrc:NOT_CALLABLE", "w.safetensors", "has no callable 'NOT_CALLABLE'"),
    ("tinysrc:build", "missing.safetensors", "is not a file"),
    ("tinysrc:build", "broken.safetensors", "is not a safetensors file"),
    ("tinysrc:build", "wrong.safetensors", "does not fit tinysrc:build"),
])
def test_each_mistake_is_named(tiny, spec, weights, message):
    with pytest.raises(ValueError, match=message):
        load_torch_model(spec, tiny / weights, (1, 8), fn="report")
