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

from cnnlab._files import _HOST, atomic_write, atomic_write_bytes, exclusive_folder
from cnnlab.data import write_idx
from cnnlab.train import write_metrics
from cnnlab.train.checkpoint import save_checkpoint
from cnnlab.viz import Picture

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
    with open(tmp_path / "plain", "w") as file:  # what the user's own programs get
        file.write("x")
    written = [
        atomic_write_bytes(tmp_path / "bytes.bin", b"abc"),
        save_checkpoint(tmp_path / "run" / "checkpoint.safetensors",
                        {"w": np.zeros(3, np.float32)}, {"config": {}}),
        write_idx(tmp_path / "x.idx", np.zeros((2, 2), np.uint8)),
        Picture(b"\x89PNG", 1).save(tmp_path / "picture.png"),
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


def test_a_second_run_into_a_locked_folder_gets_one_line_naming_it(tmp_path, capsys):
    """Issue 13, item 7: two runs into one checkpoint folder each replaced the other's
    checkpoint; while one holds the folder, the other is refused and writes nothing."""
    from cnnlab.cli import main

    folder = tmp_path / "run"
    with exclusive_folder(folder, "train"):
        code = main(["train", "--data", "digits", "--model", "cnn", "--steps", "2",
                     "--no-progress", "--checkpoint", str(folder)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0] == (f"cnnlab: error: train: another run is using {folder}; wait for it to "
                      f"finish or choose another --checkpoint folder")
    assert list(folder.iterdir()) == []
    # once the first run is done, the folder is free again
    assert main(["train", "--data", "digits", "--model", "cnn", "--steps", "2",
                 "--no-progress", "--checkpoint", str(folder)]) == 0


def test_a_checkpoint_path_that_is_a_file_is_refused_before_the_run(tmp_path, capsys):
    from cnnlab.cli import main

    path = tmp_path / "a-file"
    path.write_text("mine")
    code = main(["train", "--data", "digits", "--model", "cnn", "--steps", "2",
                 "--no-progress", "--checkpoint", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and f"{path} is a file; the checkpoint needs a folder" in err
    assert path.read_text() == "mine"


def test_the_portable_lock_takes_over_a_dead_runs_lock_only(tmp_path):
    from cnnlab._files import FolderInUseError, _take_pid_lock

    lock = tmp_path / ".cnnlab.lock"
    lock.write_text("999999999")  # no such process: a crashed run's lock
    _take_pid_lock(lock, tmp_path, "train")
    assert lock.read_text() == str(os.getpid())
    with pytest.raises(FolderInUseError, match=rf"another run \(process {os.getpid()}\) is "
                                               rf"using {tmp_path}"):
        _take_pid_lock(lock, tmp_path, "train")


def test_a_write_removes_orphans_of_killed_writers_but_not_live_ones(tmp_path):
    """Issue 13, item 11: a writer killed mid-write (kill -9) leaves its temporary file;
    the next write into the folder removes it, never one a live process is writing."""
    import signal
    import subprocess
    import sys
    import time

    writer = subprocess.Popen([sys.executable, "-c", f"""
import time
from cnnlab._files import atomic_write
atomic_write({str(tmp_path / "big.bin")!r}, lambda file: (file.write(b"x"), time.sleep(60)))
"""])
    deadline = time.monotonic() + 30
    while not list(tmp_path.glob(".big.bin.*.part")) and time.monotonic() < deadline:
        time.sleep(0.05)
    (orphan,) = list(tmp_path.glob(f".big.bin.cnnlab-{_HOST}-{writer.pid}.*.part"))
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    live = tmp_path / f".other.bin.cnnlab-{_HOST}-{os.getpid()}.abcd1234.part"  # alive
    elsewhere = tmp_path / f".other.bin.cnnlab-otherhost-{writer.pid}.abcd1234.part"
    users = tmp_path / ".notes.12.draft.part"  # a user's own file that looks alike
    for kept in (live, elsewhere, users):
        kept.write_bytes(b"not ours to remove")
    atomic_write_bytes(tmp_path / "next.bin", b"n")
    assert not orphan.exists()
    assert live.exists() and elsewhere.exists() and users.exists()
    assert (tmp_path / "next.bin").read_bytes() == b"n"


def test_an_existing_file_keeps_its_mode_as_open_would_keep_it(tmp_path, umask):
    path = tmp_path / "metrics.json"
    atomic_write_bytes(path, b"{}")
    path.chmod(0o600)  # the user's choice
    atomic_write_bytes(path, b'{"a": 1}')
    assert mode(path) == 0o600 and path.read_bytes() == b'{"a": 1}'
