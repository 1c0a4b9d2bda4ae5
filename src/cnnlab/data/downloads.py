"""sha256-verified, atomic downloads into the cnnlab cache directory.

A file only ever appears under its final name after its whole content has been written and
its sha256 checked: bytes stream into a hidden temporary file in the same directory, which
``os.replace`` (atomic on POSIX and Windows when source and target share a file system)
renames into place. An interrupted or corrupted download therefore never leaves a file that
a later run would trust.

Every transfer is bounded three ways, each failing with a one-line ``DownloadError``: each read
waits at most ``TIMEOUT_S``, the whole transfer (connect and all reads) at most ``deadline_s``,
and the body may not grow past ``expected_size`` (when the caller knows it) or ``max_bytes``.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import http.client
import numbers
import operator
import os
import posixpath
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO

from .._files import atomic_write

CACHE_ENV = "CNNLAB_CACHE"
DEFAULT_CACHE = Path("~/.cache/cnnlab")
CHUNK_BYTES = 1 << 20
USER_AGENT = "cnnlab (+https://github.com/cnnlab)"
# Limits on one transfer (issue 13, item 19). TIMEOUT_S bounds each read, so a server that
# stops sending is dropped after a minute; but a server that sends a byte every 2 s never
# trips it, and kept a download alive 12 times that long.
TIMEOUT_S = 60.0
# DEADLINE_S bounds the whole transfer. It has to be long enough for the slowest link we
# still serve: the largest file cnnlab fetches is CIFAR-10's archive (170,498,071 bytes), and
# 15 minutes lets it arrive at 190 kB/s (1.5 Mbit/s); the MNIST files (under 10 MB) need
# only 11 kB/s. Slower links raise it with ``download(..., deadline_s=)`` or by setting
# ``cnnlab.data.downloads.DEADLINE_S`` (read at each call).
DEADLINE_S = 15 * 60.0
# MAX_DOWNLOAD_BYTES bounds a body whose size the caller does not know: 1 GiB is six times
# the largest file cnnlab fetches, and stops an endless body long before it fills a disk.
MAX_DOWNLOAD_BYTES = 1 << 30
# A full disk (or an exhausted quota) while writing becomes a DownloadError naming the folder.
_DISK_FULL = {errno.ENOSPC} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())


class DownloadError(OSError):
    """A download failed: an HTTP error, an unreachable host, a truncated, oversized or
    overlong transfer, or a full disk."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected sha256."""


def get_cache_dir(path: str | os.PathLike[str] | None = None, create: bool = True) -> Path:
    """The cache directory: ``path``, else ``$CNNLAB_CACHE``, else ``~/.cache/cnnlab``.

    The directory is created if missing (unless ``create=False``).

    >>> import tempfile
    >>> get_cache_dir(tempfile.mkdtemp()).is_dir()
    True
    """
    if path is None:
        path = os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    directory = Path(path).expanduser()
    if create:
        directory.mkdir(parents=True, exist_ok=True)
    return directory


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _remove(path: str | os.PathLike[str]) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _check_sha256(sha256: str) -> str:
    if not isinstance(sha256, str):
        raise TypeError(f"download: sha256 must be a str of 64 hex digits, got {sha256!r}")
    digest = sha256.strip().lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"download: sha256 must be 64 hex digits, got {sha256!r}")
    return digest


def _filename_from(url: str, filename: str | None) -> str:
    if filename is None:
        filename = posixpath.basename(urllib.parse.urlparse(url).path)
        if not filename:
            raise ValueError(
                f"download: cannot take a file name from url {url!r}; pass filename="
            )
    if filename in (".", "..") or "/" in filename or os.sep in filename:
        raise ValueError(f"download: filename must be a bare file name, got {filename!r}")
    return filename


@dataclasses.dataclass(frozen=True)
class _Limits:
    """What one transfer may take: at most ``size`` bytes (exactly, when ``size_name`` is
    ``"expected_size"``) and ``deadline_s`` seconds."""

    size: int
    size_name: str
    deadline_s: float

    @property
    def exact(self) -> bool:
        return self.size_name == "expected_size"


def _as_size(name: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool):  # an int to Python, but never a size
        raise TypeError(f"download: {name} must be an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"download: {name} must be an int, got {value!r}") from None


def _check_limits(
    expected_size: int | None, max_bytes: int | None, deadline_s: float | None
) -> _Limits:
    """Normalise the limits of :func:`download`; None means the module default."""
    expected_size = _as_size("expected_size", expected_size)
    max_bytes = _as_size("max_bytes", max_bytes)
    if expected_size is not None and expected_size < 0:
        raise ValueError(f"download: expected_size must be >= 0, got {expected_size}")
    if max_bytes is not None and max_bytes < 1:
        raise ValueError(f"download: max_bytes must be >= 1, got {max_bytes}")
    if expected_size is not None and max_bytes is not None and expected_size > max_bytes:
        raise ValueError(f"download: expected_size ({expected_size}) must not exceed "
                         f"max_bytes ({max_bytes})")
    if deadline_s is None:
        deadline_s = DEADLINE_S
    if isinstance(deadline_s, bool) or not isinstance(deadline_s, numbers.Real):
        raise TypeError(f"download: deadline_s must be a number of seconds, got {deadline_s!r}")
    if not deadline_s > 0:  # also rejects NaN; math.inf turns the deadline off
        raise ValueError(f"download: deadline_s must be > 0, got {deadline_s}")
    if expected_size is not None:  # a known size is the exact limit: a byte more is wrong
        return _Limits(expected_size, "expected_size", float(deadline_s))
    if max_bytes is None:
        max_bytes = MAX_DOWNLOAD_BYTES
    return _Limits(max_bytes, "max_bytes", float(deadline_s))


def _progress_bar(total: int | None, name: str, enabled: bool):
    """A tqdm bar if tqdm is installed and ``enabled``, else None (tqdm is optional)."""
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                leave=False)


def download(
    url: str,
    sha256: str,
    cache_dir: str | os.PathLike[str] | None = None,
    filename: str | None = None,
    progress: bool = True,
    *,
    expected_size: int | None = None,
    max_bytes: int | None = None,
    deadline_s: float | None = None,
) -> Path:
    """Download ``url`` into the cache once, verified by sha256, and return its path.

    Parameters
    ----------
    url : str
        ``http(s)://`` or ``file://`` address.
    sha256 : str
        Expected hex digest of the file's bytes (case-insensitive).
    cache_dir : path-like, optional
        Target directory; default ``$CNNLAB_CACHE`` or ``~/.cache/cnnlab``.
    filename : str, optional
        Name in the cache; default the last component of the url's path.
    progress : bool
        Show a tqdm progress bar when tqdm is installed.
    expected_size : int, optional
        The file's size in bytes, when known: a Content-Length that differs is refused before
        reading, and a body that grows past it (or ends short of it) is refused; it replaces
        ``max_bytes`` as the limit (a ``max_bytes`` also given may not be smaller).
    max_bytes : int, optional
        Most bytes accepted when ``expected_size`` is not given; default
        ``MAX_DOWNLOAD_BYTES`` (1 GiB). A larger Content-Length is refused before reading.
    deadline_s : float, optional
        Most seconds for the whole transfer (connect and all reads), checked between reads;
        default ``DEADLINE_S`` (15 minutes); ``math.inf`` turns it off. Each read also waits
        at most ``TIMEOUT_S`` (60 s) or ``deadline_s``, whichever is less.

    Returns
    -------
    Path
        ``cache_dir / filename``, whose sha256 equals ``sha256``.

    Raises
    ------
    DownloadError
        HTTP error status (e.g. 404), unreachable host, fewer bytes than Content-Length or
        ``expected_size``, more than ``expected_size`` or ``max_bytes``, a transfer longer
        than ``deadline_s``, or a full disk; nothing is left in the cache.
    TypeError, ValueError
        A limit that is not a positive int (``expected_size`` may be 0) or number of seconds.
    ChecksumError
        The downloaded bytes have another sha256; nothing is left in the cache.

    Notes
    -----
    A cached file with the right hash is returned without touching the network. A cached file
    with a wrong hash (truncated, corrupted, or an old version) is deleted and downloaded
    again.
    """
    expected = _check_sha256(sha256)
    limits = _check_limits(expected_size, max_bytes, deadline_s)
    target = get_cache_dir(cache_dir) / _filename_from(url, filename)
    if target.is_file():
        if sha256_file(target) == expected:
            return target
        _remove(target)

    def write_checked(file: IO[bytes]) -> None:
        actual = _stream(url, file, target.name, progress, limits)
        if actual != expected:  # raised inside the write: the partial file is removed
            raise ChecksumError(
                f"download: sha256 mismatch for {url}: expected {expected}, got {actual}; "
                f"the file was discarded"
            )

    try:
        return atomic_write(target, write_checked)
    except OSError as error:  # the write, flush or fsync; atomic_write removed the partial file
        if error.errno not in _DISK_FULL:
            raise
        raise DownloadError(
            f"download: no space left in {target.parent} for {url} ({error.strerror}); "
            f"the partial file was removed"
        ) from error


def _check_length(url: str, length: int | None, limits: _Limits) -> None:
    """Refuse, before reading the body, a Content-Length the limits rule out."""
    if length is None:
        return
    if limits.exact and length != limits.size:
        raise DownloadError(
            f"download: {url} announces {length} bytes (Content-Length) but expected_size "
            f"is {limits.size}; nothing was read"
        )
    if length > limits.size:
        raise DownloadError(
            f"download: {url} announces {length} bytes (Content-Length), more than "
            f"{limits.size_name}={limits.size}; nothing was read"
        )


def _stream(url: str, file: IO[bytes], name: str, progress: bool, limits: _Limits) -> str:
    """Copy ``url`` into ``file`` within ``limits``; return the sha256 of the bytes written."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    written = 0
    total = None
    start = time.monotonic()

    def past_deadline() -> bool:
        return time.monotonic() - start > limits.deadline_s

    def deadline_error() -> DownloadError:
        of_total = f" of {total}" if total is not None else ""
        return DownloadError(
            f"download: {url} took longer than deadline_s={limits.deadline_s:g} s: "
            f"{written}{of_total} bytes arrived in {time.monotonic() - start:.1f} s"
        )

    try:
        # No single wait (connect or read) outlasts the deadline; the deadline itself is
        # checked between reads, so a transfer ends at most one such wait after it.
        timeout = min(TIMEOUT_S, limits.deadline_s)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length") if response.headers else None
            total = int(length) if length and length.isdigit() else None
            _check_length(url, total, limits)
            source = "Content-Length"
            if total is None and limits.exact:
                total, source = limits.size, "expected_size"
            bar = _progress_bar(total, name, progress)
            try:
                while True:
                    if past_deadline():
                        raise deadline_error()
                    # read1: at most one read of the socket, so a slow drip comes back to
                    # the deadline check instead of waiting for a whole chunk to fill.
                    chunk = response.read1(CHUNK_BYTES)
                    if not chunk:
                        break
                    if written + len(chunk) > limits.size:
                        raise DownloadError(
                            f"download: {url} sent more than {limits.size_name}="
                            f"{limits.size} bytes; stopped at {written + len(chunk)}"
                        )
                    file.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            finally:
                if bar is not None:
                    bar.close()
    except urllib.error.HTTPError as error:
        raise DownloadError(
            f"download: GET {url} failed with HTTP {error.code} {error.reason}"
        ) from error
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError) and past_deadline():
            raise deadline_error() from error
        raise DownloadError(f"download: cannot reach {url}: {error.reason}") from error
    except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
        if isinstance(error, TimeoutError) and past_deadline():
            raise deadline_error() from error
        raise DownloadError(f"download: transfer of {url} failed: {error}") from error
    if total is not None and written != total:
        raise DownloadError(
            f"download: {url} was truncated: expected {total} bytes ({source}), "
            f"got {written}"
        )
    return digest.hexdigest()
