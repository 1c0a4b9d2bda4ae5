"""Writing files atomically: the one writer behind checkpoints, metrics, downloads, datasets,
report pages and pictures.

A file is written to a temporary name beside its target, flushed to disk and renamed into
place, so a reader (or a run that is killed half-way) never sees half a file; on any
exception the temporary file is removed and the target is left as it was. The result gets
the permissions ``open(path, "w")`` would give it (``0o666`` less the umask): the temporary
file ``mkstemp`` creates is private (``0o600``), and a rename keeps that.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


def default_file_mode() -> int:
    """``0o666`` less the process's umask: the mode ``open(path, "w")`` creates files with."""
    umask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    Readers never see a half-written ``path``; on any exception (``write``'s own included:
    a download whose hash is wrong raises there) the temporary file is removed and ``path``
    is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temp, default_file_mode())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda file: file.write(payload))
