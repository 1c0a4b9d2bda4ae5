"""Writing files atomically, and one run per output folder: the one writer behind
checkpoints, metrics, downloads, datasets, report pages and pictures, and the lock a
training run holds on its checkpoint folder.

A file is written to a temporary name beside its target, flushed to disk and renamed into
place, so a reader (or a run that is killed half-way) never sees half a file; on any
exception the temporary file is removed and the target is left as it was. A temporary file
names its writer (host and pid), and one left by a writer of this host killed mid-write
(``kill -9`` runs no cleanup) is removed by the next write into that folder.

The result gets the permissions ``open(path, "w")`` would give it: an existing file keeps
its mode, a new one gets ``0o666`` less the umask. The temporary file is created with
``0o666`` so that the kernel applies the umask (``mkstemp``'s files are private, ``0o600``,
and reading the umask would set it for every thread of the process for a moment).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], object]) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it into place.

    Readers never see a half-written ``path``; on any exception (``write``'s own included:
    a download whose hash is wrong raises there) the temporary file is removed and ``path``
    is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_orphans(path.parent)
    # The writer in the name: a later write can tell an orphan from a live writer's.
    temp = path.parent / f".{path.name}.{_writer()}.{secrets.token_hex(4)}.part"
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o666)  # the kernel applies the umask, as open(path, "w") does
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileNotFoundError):  # an existing file keeps its mode
            os.chmod(temp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


# This process as a writer: its host (a folder on a network file system or a volume shared
# by containers is written from other hosts, whose pids mean nothing here) and its pid.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40] or "host"


def _writer() -> str:
    """This process as a writer (the pid read at each write: a forked child is another)."""
    return f"cnnlab-{_HOST}-{os.getpid()}"


# .<target name>.cnnlab-<host>-<pid>.<8 hex digits>.part
_TEMPORARY = re.compile(r"^\..+\.cnnlab-(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[0-9a-f]{8}"
                        r"\.part$")


def remove_orphans(folder: Path) -> list[Path]:
    """Remove the temporary files that writers killed mid-write left in ``folder`` (a
    ``kill -9`` runs no cleanup): cnnlab's own, written on this host, whose writer's pid
    names no live process. A file a live process is still writing, another host's, or a
    user's own ``.part`` file is never touched. Returns what was removed."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match and match["host"] == _HOST and not _alive(int(match["pid"])):
            with contextlib.suppress(OSError):  # another writer may have removed it first
                os.remove(entry.path)
                removed.append(Path(entry.path))
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically (:func:`atomic_write`)."""
    return atomic_write(path, lambda file: file.write(payload))


LOCK_NAME = ".cnnlab.lock"


class FolderInUseError(RuntimeError):
    """Another live process holds the folder's lock (:func:`exclusive_folder`)."""


@contextlib.contextmanager
def exclusive_folder(folder: str | os.PathLike[str], fn: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if missing) while the block runs.

    Two runs started into one checkpoint folder would each replace the other's checkpoint;
    the second one gets :class:`FolderInUseError` naming the folder instead. POSIX: an
    ``flock`` on the folder itself (no file is added to it), released by the system when
    the process ends, however it ends. Elsewhere: a lock file ``.cnnlab.lock`` is created
    exclusively with this process's id and removed on exit; one whose process is gone (a
    crash) is taken over.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{fn}: {folder} is a file; the checkpoint needs a folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None
    if fcntl is not None:
        handle = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise FolderInUseError(f"{fn}: another run is using {folder}; wait for it to "
                                   f"finish or choose another --checkpoint folder") from None
        try:
            yield folder
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            os.close(handle)
        return
    _take_pid_lock(path, folder, fn)
    try:
        yield folder
    finally:
        path.unlink(missing_ok=True)


def _take_pid_lock(path: Path, folder: Path, fn: str) -> None:
    """The portable fallback of :func:`exclusive_folder`: create ``path`` exclusively with
    this process's id, taking over one whose process is gone."""
    for _ in range(2):
        try:
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            owner = path.read_text().strip()
            if owner.isdigit() and _alive(int(owner)):
                raise FolderInUseError(f"{fn}: another run (process {owner}) is using "
                                       f"{folder}; wait for it to finish or choose another "
                                       f"--checkpoint folder") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(handle, "w") as file:
            file.write(str(os.getpid()))
        return
    raise FolderInUseError(f"{fn}: could not take the lock on {folder}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    except OSError:
        return False
    return True
