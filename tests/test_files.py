"""cnnlab._files: the one atomic writer. Every file cnnlab writes (checkpoints, metrics,
downloads, datasets, pictures, report pages) gets the permissions ``open(path, "w")`` would
give it, not mkstemp's private 0o600, and a failed write leaves no file behind. (Downloads:
tests/data/test_downloads.py, which has the local server.)"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from cnnlab._files import atomic_write, atomic_write_bytes, default_file_mode
from cnnlab.data import write_idx
from cnnlab.train import write_metrics
from cnnlab.train.checkpoint import save_checkpoint
from cnnlab.viz.figures import plot_filters

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_writer_gives_the_mode_open_would(tmp_path, umask):
    expected = 0o666 & ~umask
    assert default_file_mode() == expected
    with open(tmp_path / "plain", "w") as file:  # what the user's own programs get
        file.write("x")
    written = [
        atomic_write_bytes(tmp_path / "bytes.bin", b"abc"),
        save_checkpoint(tmp_path / "run" / "checkpoint.safetensors",
                        {"w": np.zeros(3, np.float32)}, {"config": {}}),
        write_idx(tmp_path / "x.idx", np.zeros((2, 2), np.uint8)),
        plot_filters(np.zeros((2, 1, 3, 3)), tmp_path / "filters.png"),
    ]
    write_metrics(tmp_path / "metrics.json", {"test_accuracy": 0.5})
    written.append(tmp_path / "metrics.json")
    assert mode(tmp_path / "plain") == expected
    for path in written:
        assert mode(Path(path)) == expected, path


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "kept.txt"
    atomic_write_bytes(target, b"old")

    def fail(file):
        file.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]
