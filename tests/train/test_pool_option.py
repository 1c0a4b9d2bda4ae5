"""``--pool`` / ``TrainConfig.pool``: a zoo model trained with its downsampling poolings
swapped (Zhang 2019's anti-aliased pooling, or max / average), from the same initial
weights as the model as built, and resumed only with the pooling it was trained with."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab import nn
from cnnlab.cli import main
from cnnlab.train import CheckpointError, Trainer, default_config, load_checkpoint


def _trainer(**overrides):
    settings = {"steps": 3, "progress": False, **overrides}
    return Trainer(default_config("digits", "digits-cnn", **settings))


def test_pool_blur_swaps_every_downsampling_pool_and_keeps_the_initial_weights():
    plain, blurred = _trainer(), _trainer(pool="blur", blur_filter=3)
    pools = [m for m in blurred.model.modules() if isinstance(m, nn.AntialiasedPool)]
    assert len(pools) == 2 and all(p.filter_size == 3 and p.kind == "max" for p in pools)
    assert not any(isinstance(m, nn.MaxPool2d) for m in blurred.model.modules())
    for (name, a), (_, b) in zip(plain.model.named_parameters(),
                                 blurred.model.named_parameters(), strict=True):
        np.testing.assert_array_equal(a.data, b.data, err_msg=name)
    # the optimizer holds the trained model's own parameters
    held = [p for group in blurred.optimizer.param_groups for p in group["params"]]
    assert all(a is b for a, b in zip(blurred.model.parameters(), held, strict=True))
    result = blurred.run()
    assert 0 <= result.metrics["test_accuracy"] <= 1
    averaged = _trainer(pool="avg")
    assert sum(isinstance(m, nn.AvgPool2d) for m in averaged.model.modules()) == 2


@pytest.mark.parametrize("bad, message", [({"pool": "median"}, "pool must be one of"),
                                          ({"blur_filter": 0}, "blur-filter must be >= 1")])
def test_bad_pool_settings(bad, message):
    with pytest.raises(ValueError, match=message):
        _trainer(**bad)


def test_cli_pool_blur_and_resume_keep_the_pooling(capsys, tmp_path):
    folder = str(tmp_path / "run")
    base = ["train", "--data", "digits", "--model", "cnn", "--checkpoint", folder,
            "--no-progress"]
    assert main([*base, "--steps", "2", "--pool", "blur", "--blur-filter", "2"]) == 0
    _, metadata = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert metadata["config"]["pool"] == "blur" and metadata["config"]["blur_filter"] == 2
    assert main([*base, "--steps", "4", "--resume"]) == 0  # takes the run's pooling
    _, metadata = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert metadata["step"] == 4 and metadata["config"]["pool"] == "blur"
    capsys.readouterr()
    assert main([*base, "--steps", "6", "--resume", "--pool", "max"]) != 0
    assert "trained with pool='blur', this run asks for pool='max'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --blur-filter must be an integer >= 1
        main([*base, "--steps", "2", "--blur-filter", "0"])
    assert "--blur-filter" in capsys.readouterr().err


def test_trainer_refuses_to_resume_with_another_pooling(tmp_path):
    first = _trainer(pool="blur", checkpoint_dir=str(tmp_path))
    first.run()
    other = _trainer(pool="avg", checkpoint_dir=str(tmp_path), resume=True, steps=5)
    with pytest.raises(CheckpointError, match="pool='blur'"):
        other.restore()
