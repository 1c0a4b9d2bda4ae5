"""download(): sha256-verified, atomic, cached; exercised against a local HTTP server."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from cnnlab.data import ChecksumError, DownloadError, download, get_cache_dir, sha256_file
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
