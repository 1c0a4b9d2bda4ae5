"""download(): sha256-verified, atomic, cached; exercised against a local HTTP server."""

from __future__ import annotations

import errno
import hashlib
import math
import os
import re
import time
from pathlib import Path

import pytest

from cnnlab.data import (
    ChecksumError,
    DownloadError,
    download,
    downloads,
    get_cache_dir,
    sha256_file,
)
from cnnlab.data.downloads import atomic_write

PAYLOAD = bytes(range(256)) * 300  # 76,800 bytes: several reads, well under a second
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


def _leftovers(directory: Path) -> list[str]:
    """Temporary (.part) files left behind in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".part"))


def test_good_download_is_verified_and_placed(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD)
    cache = tmp_path / "cache"
    path = download(url, PAYLOAD_SHA, cache_dir=cache, progress=False)
    assert path == cache / "blob.bin"
    assert path.read_bytes() == PAYLOAD
    assert sha256_file(path) == PAYLOAD_SHA
    assert _leftovers(cache) == []
    assert server.count("blob.bin") == 1


def test_progress_bar_and_uppercase_hash_and_filename(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD)
    path = download(url, PAYLOAD_SHA.upper(), cache_dir=tmp_path, filename="renamed.bin",
                    progress=True)
    assert path.name == "renamed.bin"
    assert path.read_bytes() == PAYLOAD


def test_bad_hash_raises_and_leaves_nothing(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD)
    cache = tmp_path / "cache"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ChecksumError, match=f"sha256 mismatch.*expected {wrong}.*{PAYLOAD_SHA}"):
        download(url, wrong, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_cached_file_is_not_downloaded_again(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD)
    first = download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False)
    second = download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False)
    assert first == second
    assert server.count("blob.bin") == 1


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "empty"])
def test_damaged_cache_is_downloaded_again(server, tmp_path, damage):
    url = server.add("blob.bin", PAYLOAD)
    cached = tmp_path / "blob.bin"
    bad = {"truncated": PAYLOAD[:1000], "corrupted": b"\xff" + PAYLOAD[1:], "empty": b""}
    cached.write_bytes(bad[damage])
    path = download(url, PAYLOAD_SHA, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.count("blob.bin") == 1
    assert _leftovers(tmp_path) == []


def test_damaged_cache_and_bad_download_leave_no_file(server, tmp_path):
    url = server.add("blob.bin", b"not the expected content")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "blob.bin").write_bytes(b"stale")
    with pytest.raises(ChecksumError):
        download(url, PAYLOAD_SHA, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_http_404_is_a_clear_error(server, tmp_path):
    with pytest.raises(DownloadError, match=r"GET http://127\.0\.0\.1:\d+/missing\.bin .*404"):
        download(server.url("missing.bin"), PAYLOAD_SHA, cache_dir=tmp_path / "c",
                 progress=False)
    assert list((tmp_path / "c").iterdir()) == []


def test_transfer_cut_short_is_an_error(server, tmp_path):
    expected = r"truncated: expected 1000 bytes \(Content-Length\), got 10"
    with pytest.raises(DownloadError, match=expected):
        download(server.url("truncated/x.bin"), PAYLOAD_SHA, cache_dir=tmp_path / "c",
                 progress=False)
    assert list((tmp_path / "c").iterdir()) == []


def test_unreachable_host_is_a_clear_error(tmp_path):
    # Port 9 (discard) on localhost: nothing listens there in the test environment.
    with pytest.raises(DownloadError, match=r"cannot reach http://127\.0\.0\.1:9/x\.bin"):
        download("http://127.0.0.1:9/x.bin", PAYLOAD_SHA, cache_dir=tmp_path, progress=False)


def test_default_cache_dir_comes_from_environment(server, tmp_path, monkeypatch):
    monkeypatch.setenv("CNNLAB_CACHE", str(tmp_path / "env-cache"))
    assert get_cache_dir() == tmp_path / "env-cache"
    path = download(server.add("blob.bin", PAYLOAD), PAYLOAD_SHA, progress=False)
    assert path == tmp_path / "env-cache" / "blob.bin"


def test_default_cache_dir_without_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CNNLAB_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert get_cache_dir() == tmp_path / ".cache" / "cnnlab"


@pytest.mark.parametrize(
    ("sha256", "error", "match"),
    [("abc", ValueError, "must be 64 hex digits"), ("g" * 64, ValueError, "must be 64 hex"),
     (123, TypeError, "must be a str")],
)
def test_bad_sha256_argument(tmp_path, sha256, error, match):
    with pytest.raises(error, match=f"download: sha256 {match}"):
        download("http://127.0.0.1:9/x.bin", sha256, cache_dir=tmp_path)


@pytest.mark.parametrize(("url", "filename"), [("http://h/dir/", None), ("http://h/x", "a/b")])
def test_bad_filename(tmp_path, url, filename):
    with pytest.raises(ValueError, match=r"download: .*(file name|filename)"):
        download(url, PAYLOAD_SHA, cache_dir=tmp_path, filename=filename)


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "file.txt"
    target.write_bytes(b"old")

    def failing(file):
        file.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, failing)
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_a_download_gets_the_mode_open_would(server, tmp_path, umask):
    import stat

    url = server.add("blob.bin", PAYLOAD)
    previous = os.umask(umask)
    try:
        path = download(url, hashlib.sha256(PAYLOAD).hexdigest(), cache_dir=tmp_path,
                        progress=False)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


# Limits on a transfer (issue 13, item 19): a deadline for the whole transfer, a most size
# (the expected size when known) and a full disk, each a one-line DownloadError that leaves
# the cache clean. The limits are small here so that each test takes at most about a second.
DEADLINE_S = 0.6  # three drips of the local server's /drip/ (one byte every 0.2 s)


@pytest.mark.parametrize("given_as", ["argument", "module default"])
def test_dripping_server_is_stopped_at_the_deadline(server, tmp_path, monkeypatch, given_as):
    if given_as == "argument":
        limits = {"deadline_s": DEADLINE_S}
    else:  # read at each call, so a slow link can raise it for the dataset loaders too
        monkeypatch.setattr(downloads, "DEADLINE_S", DEADLINE_S)
        limits = {}
    cache = tmp_path / "cache"
    expected = (r"download: http://127\.0\.0\.1:\d+/drip/50 took longer than deadline_s=0\.6 "
                r"s: \d of 50 bytes arrived in 0\.\d s$")
    start = time.monotonic()
    with pytest.raises(DownloadError, match=expected):
        download(server.url("drip/50"), PAYLOAD_SHA, cache_dir=cache, filename="x.bin",
                 progress=False, **limits)
    assert time.monotonic() - start < DEADLINE_S + 1.0  # not 50 drips (10 s)
    assert list(cache.iterdir()) == []


def test_silent_server_is_stopped_at_the_deadline_not_the_read_timeout(server, tmp_path):
    # The server sends one byte and then nothing for 5 s: each read waits at most the
    # deadline (not TIMEOUT_S, 60 s), and the error names the deadline.
    expected = r"stall/10 took longer than deadline_s=0\.6 s: 1 of 10 bytes arrived"
    start = time.monotonic()
    with pytest.raises(DownloadError, match=expected):
        download(server.url("stall/10"), PAYLOAD_SHA, cache_dir=tmp_path / "c",
                 filename="x.bin", progress=False, deadline_s=DEADLINE_S)
    assert time.monotonic() - start < DEADLINE_S + 1.0
    assert list((tmp_path / "c").iterdir()) == []


@pytest.mark.parametrize("given_as", ["argument", "module default"])
def test_endless_body_is_stopped_at_max_bytes(server, tmp_path, monkeypatch, given_as):
    if given_as == "argument":
        limits = {"max_bytes": 4096}
    else:
        monkeypatch.setattr(downloads, "MAX_DOWNLOAD_BYTES", 4096)
        limits = {}
    cache = tmp_path / "cache"
    expected = (r"download: http://127\.0\.0\.1:\d+/endless/x\.bin sent more than "
                r"max_bytes=4096 bytes; stopped at \d+$")
    with pytest.raises(DownloadError, match=expected):
        download(server.url("endless/x.bin"), PAYLOAD_SHA, cache_dir=cache, progress=False,
                 deadline_s=10.0, **limits)
    assert list(cache.iterdir()) == []


def test_content_length_above_the_default_limit_is_refused_before_reading(server, tmp_path):
    # /huge/ announces 10**12 bytes: more than MAX_DOWNLOAD_BYTES (1 GiB), so no byte is read
    # (today's code read what came and called the transfer truncated).
    expected = (r"huge/x\.bin announces 1000000000000 bytes \(Content-Length\), more than "
                r"max_bytes=1073741824; nothing was read$")
    with pytest.raises(DownloadError, match=expected):
        download(server.url("huge/x.bin"), PAYLOAD_SHA, cache_dir=tmp_path / "c",
                 progress=False)
    assert list((tmp_path / "c").iterdir()) == []


def test_content_length_above_max_bytes_is_refused(server, tmp_path):
    url = server.add("blob.bin", PAYLOAD)
    expected = (r"blob\.bin announces 76800 bytes \(Content-Length\), more than "
                r"max_bytes=76799; nothing was read$")
    with pytest.raises(DownloadError, match=expected):
        download(url, PAYLOAD_SHA, cache_dir=tmp_path / "c", progress=False,
                 max_bytes=len(PAYLOAD) - 1)
    assert list((tmp_path / "c").iterdir()) == []


@pytest.mark.parametrize("error", [-1, 1])
def test_expected_size_contradicted_by_content_length_is_refused(server, tmp_path, error):
    url = server.add("blob.bin", PAYLOAD)
    expected_size = len(PAYLOAD) + error
    expected = (rf"blob\.bin announces 76800 bytes \(Content-Length\) but expected_size is "
                rf"{expected_size}; nothing was read$")
    with pytest.raises(DownloadError, match=expected):
        download(url, PAYLOAD_SHA, cache_dir=tmp_path / "c", progress=False,
                 expected_size=expected_size)
    assert list((tmp_path / "c").iterdir()) == []


@pytest.mark.parametrize(
    ("error", "match"),
    [(-1, r"nolength/blob\.bin sent more than expected_size=76799 bytes; stopped at \d+$"),
     (1, r"nolength/blob\.bin was truncated: expected 76801 bytes \(expected_size\), "
         r"got 76800$")],
    ids=["body_longer", "body_shorter"],
)
def test_expected_size_contradicted_by_the_body_is_refused(server, tmp_path, error, match):
    server.add("blob.bin", PAYLOAD)  # served without a Content-Length: only the body tells
    with pytest.raises(DownloadError, match=match):
        download(server.url("nolength/blob.bin"), PAYLOAD_SHA, cache_dir=tmp_path / "c",
                 progress=False, expected_size=len(PAYLOAD) + error)
    assert list((tmp_path / "c").iterdir()) == []


@pytest.mark.parametrize("route", ["", "nolength/"])
@pytest.mark.parametrize(
    "limits",
    [{"expected_size": len(PAYLOAD)}, {"max_bytes": len(PAYLOAD)},
     {"expected_size": len(PAYLOAD), "max_bytes": len(PAYLOAD), "deadline_s": 30.0},
     {"deadline_s": math.inf}],
    ids=["expected_size", "max_bytes", "all", "no_deadline"],
)
def test_download_within_the_limits_succeeds(server, tmp_path, route, limits):
    # The limits are inclusive: a body of exactly max_bytes or expected_size is accepted.
    server.add("blob.bin", PAYLOAD)
    path = download(server.url(route + "blob.bin"), PAYLOAD_SHA, cache_dir=tmp_path,
                    progress=True, **limits)
    assert path.read_bytes() == PAYLOAD
    assert _leftovers(tmp_path) == []


class _FullDisk:
    """A file whose writes fail with ENOSPC once ``room`` bytes are written."""

    def __init__(self, file, room: int) -> None:
        self.file = file
        self.room = room

    def write(self, data: bytes) -> int:
        if len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return self.file.write(data)


@pytest.mark.parametrize("fails_at", ["write", "fsync"])
def test_full_disk_is_a_download_error(server, tmp_path, monkeypatch, fails_at):
    url = server.add("blob.bin", PAYLOAD)
    cache = tmp_path / "cache"
    cache.mkdir()
    if fails_at == "write":
        def atomic_write_to_full_disk(path, write):
            return atomic_write(path, lambda file: write(_FullDisk(file, room=1000)))

        monkeypatch.setattr(downloads, "atomic_write", atomic_write_to_full_disk)
    else:  # the bytes fit in the page cache, but not on the disk
        def fsync(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(os, "fsync", fsync)
    expected = (rf"download: no space left in {re.escape(str(cache))} for "
                rf"http://127\.0\.0\.1:\d+/blob\.bin \(No space left on device\); "
                rf"the partial file was removed$")
    with pytest.raises(DownloadError, match=expected):
        download(url, PAYLOAD_SHA, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize(
    ("limits", "error", "match"),
    [({"expected_size": -1}, ValueError, "expected_size must be >= 0, got -1"),
     ({"expected_size": 1.5}, TypeError, "expected_size must be an int, got 1.5"),
     ({"max_bytes": 0}, ValueError, "max_bytes must be >= 1, got 0"),
     ({"max_bytes": True}, TypeError, "max_bytes must be an int, got True"),
     ({"expected_size": 10, "max_bytes": 5}, ValueError,
      r"expected_size \(10\) must not exceed max_bytes \(5\)"),
     ({"deadline_s": 0}, ValueError, "deadline_s must be > 0, got 0"),
     ({"deadline_s": math.nan}, ValueError, "deadline_s must be > 0, got nan"),
     ({"deadline_s": "60"}, TypeError, "deadline_s must be a number of seconds, got '60'")],
    ids=["expected_size_negative", "expected_size_float", "max_bytes_zero", "max_bytes_bool",
         "expected_above_max", "deadline_zero", "deadline_nan", "deadline_str"],
)
def test_bad_limit_arguments(tmp_path, limits, error, match):
    with pytest.raises(error, match=f"^download: {match}$"):
        download("http://127.0.0.1:9/x.bin", PAYLOAD_SHA, cache_dir=tmp_path, **limits)
