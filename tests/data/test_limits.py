"""The one size guard (cnnlab.data.limits) and the hostile files it stops: each reader runs
on a tiny file that declares gigabytes, in a subprocess whose address space is capped, and
must refuse it with a ValueError or UnpicklingError naming the file, never a MemoryError or
a crash."""

from __future__ import annotations

import gzip
import pickle
import struct
import subprocess
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _check import run_with_address_space
from cnnlab.data import ImageFolder, limits, read_cifar_batch, read_idx
from cnnlab.data.builtin import _read_mnist1d_cache

resource = pytest.importorskip("resource")  # POSIX: RLIMIT_AS caps the address space

# Room for Python, NumPy and Pillow with one BLAS thread, and far below what each hostile
# file declares (from 6 GiB to petabytes).
ADDRESS_SPACE_BYTES = 1536 * 2**20


def run_capped(code: str) -> subprocess.CompletedProcess:
    return run_with_address_space(code, ADDRESS_SPACE_BYTES)


def assert_refused(code: str, error: str, pattern: str) -> None:
    result = run_capped(textwrap.dedent(code) + "\nprint('read without error')")
    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(error + ":"), result.stderr
    assert pattern in last, last
    assert "MemoryError" not in result.stderr


def test_the_capped_interpreter_can_still_read_a_normal_file(tmp_path):
    """The cap is not what refuses the hostile files below."""
    path = tmp_path / "ok.idx.gz"
    path.write_bytes(gzip.compress(struct.pack(">HBBII", 0, 8, 2, 100, 100) + bytes(10_000)))
    result = run_capped(f"""
        from cnnlab.data import read_idx
        print(read_idx({str(path)!r}).shape)
    """)
    assert result.returncode == 0 and "(100, 100)" in result.stdout, result.stderr


# ------------------------------------------------------------------------------------------
# 1. A CIFAR batch whose arrays the file never fills.


class _Unfilled:
    """Pickles as NumPy's ``_reconstruct`` of a large empty array, with no state after it."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape = shape

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, self.shape, np.dtype("u1")))


def _forged_cifar(path: Path) -> Path:
    forged = {b"data": _Unfilled((2_000_000, 3072)), b"labels": _Unfilled((2_000_000,))}
    path.write_bytes(pickle.dumps(forged, protocol=2))
    return path


def test_a_cifar_batch_of_unfilled_arrays_is_refused(tmp_path):
    path = _forged_cifar(tmp_path / "data_batch_1")
    assert path.stat().st_size < 400  # the file was 234 bytes
    with pytest.raises(pickle.UnpicklingError,
                       match=r"read_cifar_batch: .*data_batch_1 reconstructs an array of shape "
                             r"\(2000000, 3072\) that its own bytes do not fill"):
        read_cifar_batch(path)
    assert_refused(f"""
        from cnnlab.data import read_cifar_batch
        read_cifar_batch({str(path)!r})
    """, "_pickle.UnpicklingError", "that its own bytes do not fill")


class _Encodes:
    def __init__(self, text: str, codec: str) -> None:
        self.text, self.codec = text, codec

    def __reduce__(self):
        import _codecs

        return (_codecs.encode, (self.text, self.codec))


def test_a_cifar_batch_may_only_reencode_latin1(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({b"data": _Encodes("ab", "hex_codec")}, protocol=2))
    with pytest.raises(pickle.UnpicklingError, match=r"re-encodes a string with the codec "
                                                     r"'hex_codec'"):
        read_cifar_batch(path)


# ------------------------------------------------------------------------------------------
# 2-3. IDX: a gzip bomb behind a small header, and sizes that wrap around in int64.


def _gzip_bomb(path: Path, inflated_bytes: int) -> Path:
    """A valid IDX header declaring 28 bytes, then ``inflated_bytes`` of zeros: gzip
    members of 64 MiB of zeros repeated (a multi-member gzip file), a few MiB on disk."""
    head = gzip.compress(struct.pack(">HBBI", 0, 8, 1, 28) + bytes(28), mtime=0)
    zeros = gzip.compress(bytes(64 * 2**20), mtime=0)
    path.write_bytes(head + zeros * (inflated_bytes // (64 * 2**20)))
    return path


def test_a_gzip_bomb_is_refused_after_its_declared_payload(tmp_path):
    path = _gzip_bomb(tmp_path / "bomb.gz", 4 * 2**30)
    assert path.stat().st_size < 8 * 2**20
    with pytest.raises(ValueError, match=r"read_idx: .*bomb.gz is longer than its header "
                                         r"says: dims \(28,\) of uint8 need 28 payload bytes"):
        read_idx(path)
    assert_refused(f"""
        from cnnlab.data import read_idx
        read_idx({str(path)!r})
    """, "ValueError", "is longer than its header says")


@pytest.mark.parametrize(("dims", "declared"), [
    ((2**32 - 1,) * 4, (2**32 - 1) ** 4),  # int64 made this negative
    ((65536,) * 4, 2**64),  # int64 made this 0, which passed the old check
])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_sizes_are_python_ints_and_checked_against_the_file(tmp_path, dims, declared,
                                                                 suffix):
    raw = struct.pack(">HBB", 0, 8, len(dims)) + struct.pack(">4I", *dims) + bytes(16)
    path = tmp_path / f"huge{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix else raw)
    # a raw file's size is known before anything is read; a gzip file's is bounded by deflate
    message = (rf"declares a payload \(dims .*\) of {declared:,} bytes, but its" if suffix
               else rf"is truncated: dims .* need {declared} payload bytes, got 16")
    with pytest.raises(ValueError, match=rf"read_idx: .*huge{suffix} {message}"):
        read_idx(path)


def test_a_declared_size_above_the_array_limit_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(limits, "MAX_ARRAY_BYTES", 100)
    path = tmp_path / "x.idx"
    path.write_bytes(struct.pack(">HBBI", 0, 8, 1, 101) + bytes(101))
    with pytest.raises(ValueError, match=r"more than cnnlab.data.limits.MAX_ARRAY_BYTES "
                                         r"\(100\); raise that limit to read it"):
        read_idx(path)


# ------------------------------------------------------------------------------------------
# 4. A poisoned mnist1d cache.


SHAPES = {"x": (4000, 1, 40), "y": (4000,), "x_test": (1000, 1, 40), "y_test": (1000,),
          "t": (40,)}


def _cache(path: Path, **changes) -> Path:
    arrays = {"x": np.zeros(SHAPES["x"], np.float32), "y": np.zeros(4000, np.int64),
              "x_test": np.zeros(SHAPES["x_test"], np.float32),
              "y_test": np.zeros(1000, np.int64), "t": np.zeros(40, np.float32)}
    arrays.update(changes)
    np.savez(path, **arrays)
    return path


def test_a_sound_mnist1d_cache_is_read(tmp_path):
    arrays = _read_mnist1d_cache(_cache(tmp_path / "cache.npz"))
    assert arrays is not None and arrays["x"].dtype == np.float32


@pytest.mark.parametrize(("changes", "problem"), [
    ({"y": np.full(4000, 2**40, np.int64)}, r"'y' values outside \[0, 10\)"),
    ({"x": np.zeros(SHAPES["x"], np.int8)}, r"'x' of shape \(4000, 1, 40\) int8, expected"),
    ({"x_test": np.full(SHAPES["x_test"], np.nan, np.float32)}, "non-finite values"),
])
def test_a_poisoned_mnist1d_cache_is_regenerated_with_a_warning(tmp_path, changes, problem):
    path = _cache(tmp_path / "cache.npz", **changes)
    with pytest.warns(RuntimeWarning, match=rf"mnist1d: the cache .*cache.npz holds {problem}"
                                            r".*; regenerating it"):
        assert _read_mnist1d_cache(path) is None


def test_a_cache_declaring_a_huge_array_allocates_nothing(tmp_path):
    """The member's header is read before its data: a forged shape costs nothing."""
    path = _cache(tmp_path / "cache.npz")
    text = "{'descr': '<i8', 'fortran_order': False, 'shape': (2000000000000,), }"
    text += " " * (63 - (10 + len(text)) % 64) + "\n"  # NPY 1.0: header padded to 64 bytes
    header = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("y.npy", header)  # a second 'y.npy': zipfile reads the last one
    assert_refused(f"""
        import warnings
        warnings.simplefilter("error")
        from pathlib import Path
        from cnnlab.data.builtin import _read_mnist1d_cache
        _read_mnist1d_cache(Path({str(path)!r}))
    """, "RuntimeWarning", "'y' of shape (2000000000000,) int64")


# ------------------------------------------------------------------------------------------
# 5. An image far larger than its file.


def _image_folder(root: Path, size: tuple[int, int], mode: str = "1") -> Path:
    from PIL import Image

    (root / "cats").mkdir(parents=True)
    Image.new(mode, size).save(root / "cats" / "big.png")
    return root


def test_an_image_above_the_pixel_limit_is_refused_from_its_header(tmp_path):
    root = _image_folder(tmp_path / "images", (9500, 9500))
    assert (root / "cats" / "big.png").stat().st_size < 100_000
    with pytest.raises(ValueError, match=r"ImageFolder: .*big.png is 9500 x 9500 = "
                                         r"90,250,000 pixels, more than "
                                         r"cnnlab.data.limits.MAX_IMAGE_PIXELS"):
        ImageFolder(root)[0]
    assert_refused(f"""
        from cnnlab.data import ImageFolder
        ImageFolder({str(root)!r})[0]
    """, "ValueError", "more than cnnlab.data.limits.MAX_IMAGE_PIXELS")


def test_the_pixel_limit_is_a_setting(tmp_path, monkeypatch):
    root = _image_folder(tmp_path / "images", (20, 20), "L")
    assert ImageFolder(root)[0][0].shape == (3, 20, 20)
    monkeypatch.setattr(limits, "MAX_IMAGE_PIXELS", 399)
    with pytest.raises(ValueError, match=r"is 20 x 20 = 400 pixels"):
        ImageFolder(root)[0]


# ------------------------------------------------------------------------------------------
# The same guard on a checkpoint: a safetensors header longer than its file.


def test_a_checkpoint_declaring_a_huge_header_is_refused_before_reading_it(tmp_path):
    from cnnlab.train.checkpoint import CheckpointError, load_checkpoint

    path = tmp_path / "checkpoint.safetensors"
    path.write_bytes((8 * 2**30).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match=r"load_checkpoint: .*checkpoint.safetensors is "
                                              r"not a readable safetensors checkpoint: it "
                                              r"declares a safetensors header of "
                                              r"8,589,934,592 bytes, but its 2 bytes"):
        load_checkpoint(path)
    path.write_bytes(b"\x01")
    with pytest.raises(CheckpointError, match=r"too few for its header length"):
        load_checkpoint(path)


def test_a_cache_with_damaged_deflate_data_is_regenerated_with_a_warning(tmp_path):
    """zlib.error escaped as a traceback (the review's finding)."""
    path = tmp_path / "cache.npz"
    arrays = {key: np.zeros(shape, np.float32 if key in ("x", "x_test", "t") else np.int64)
              for key, shape in SHAPES.items()}
    np.savez_compressed(path, **arrays)
    raw = bytearray(path.read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(64)  # inside a member's deflate stream
    path.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match=r"mnist1d: the cache .*cache.npz holds an "
                                            r"unreadable file .*; regenerating it"):
        assert _read_mnist1d_cache(path) is None


def test_an_image_folder_opens_only_image_formats(tmp_path):
    """A PostScript file named like a PNG was opened by Pillow's EPS plugin (which runs
    Ghostscript when it is installed); only the image formats are tried now."""
    from PIL import UnidentifiedImageError

    (tmp_path / "cats").mkdir()
    (tmp_path / "cats" / "x.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 "
                                              b"10 10\nshowpage\n")
    with pytest.raises(UnidentifiedImageError, match=r"x\.png"):
        ImageFolder(tmp_path)[0]


def test_idx_with_more_dimensions_than_numpy_is_refused_by_name(tmp_path):
    path = tmp_path / "deep.idx"
    path.write_bytes(struct.pack(">HBB", 0, 8, 40) + struct.pack(">40I", *([1] * 40)) + b"x")
    with pytest.raises(ValueError, match=r"read_idx: .*deep.idx declares 40 dimensions; IDX "
                                         r"needs at least 1, and NumPy arrays have at most 32"):
        read_idx(path)


@pytest.mark.parametrize(("record", "error"), [("[" * 100_000 + "]" * 100_000, "RecursionError"),
                                               ("1" * 5_000, "ValueError")])
def test_a_checkpoint_record_json_cannot_parse_is_a_checkpoint_error(tmp_path, record, error):
    from safetensors.numpy import save_file

    from cnnlab.train.checkpoint import CheckpointError, load_checkpoint

    path = tmp_path / "checkpoint.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, str(path), metadata={"cnnlab": record})
    with pytest.raises(CheckpointError, match=rf"has an unreadable cnnlab metadata record "
                                              rf"\({error}\)"):
        load_checkpoint(path)
