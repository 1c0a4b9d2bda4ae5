"""sha256-verified, atomic downloads into the cnnlab cache directory.

A file only ever appears under its final name after its whole content has been written and
its sha256 checked: bytes stream into a hidden temporary file in the same directory, which
``os.replace`` (atomic on POSIX and Windows when source and target share a file system)
renames into place. An interrupted or corrupted download therefore never leaves a file that
a later run would trust.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import posixpath
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO

from .._files import atomic_write

CACHE_ENV = "CNNLAB_CACHE"
DEFAULT_CACHE = Path("~/.cache/cnnlab")
CHUNK_BYTES = 1 << 20
TIMEOUT_S = 60.0
USER_AGENT = "cnnlab (+https://github.com/cnnlab)"


class DownloadError(OSError):
    """A download failed: an HTTP error, an unreachable host or a truncated transfer."""


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

    Returns
    -------
    Path
        ``cache_dir / filename``, whose sha256 equals ``sha256``.

    Raises
    ------
    DownloadError
        HTTP error status (e.g. 404), unreachable host, or fewer bytes than Content-Length.
    ChecksumError
        The downloaded bytes have another sha256; nothing is left in the cache.

    Notes
    -----
    A cached file with the right hash is returned without touching the network. A cached file
    with a wrong hash (truncated, corrupted, or an old version) is deleted and downloaded
    again.
    """
    expected = _check_sha256(sha256)
    target = get_cache_dir(cache_dir) / _filename_from(url, filename)
    if target.is_file():
        if sha256_file(target) == expected:
            return target
        _remove(target)

    def write_checked(file: IO[bytes]) -> None:
        actual = _stream(url, file, target.name, progress)
        if actual != expected:  # raised inside the write: the partial file is removed
            raise ChecksumError(
                f"download: sha256 mismatch for {url}: expected {expected}, got {actual}; "
                f"the file was discarded"
            )

    return atomic_write(target, write_checked)


def _stream(url: str, file: IO[bytes], name: str, progress: bool) -> str:
    """Copy ``url`` into ``file``; return the sha256 of the bytes written."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.sha256()
    written = 0
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            length = response.headers.get("Content-Length") if response.headers else None
            total = int(length) if length and length.isdigit() else None
            bar = _progress_bar(total, name, progress)
            try:
                while chunk := response.read(CHUNK_BYTES):
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
        raise DownloadError(f"download: cannot reach {url}: {error.reason}") from error
    except (TimeoutError, ConnectionError, http.client.HTTPException) as error:
        raise DownloadError(f"download: transfer of {url} failed: {error}") from error
    if total is not None and written != total:
        raise DownloadError(
            f"download: {url} was truncated: expected {total} bytes (Content-Length), "
            f"got {written}"
        )
    return digest.hexdigest()
