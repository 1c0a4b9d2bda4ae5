"""One size guard for every reader of a file a user brings: a file cannot make cnnlab
allocate more than its data can hold (deflate: 1032 times its size), nor more than
:data:`MAX_ARRAY_BYTES` for one array, whatever it declares.

A file declares sizes (an IDX header's dims, a pickled array's shape, an image's width and
height, an ``.npz`` member's header) before the data that fills them. A reader checks each
declared size here *before* it allocates, against what the file can actually hold:

- raw data: no more bytes than the file has;
- deflate data (gzip, zip, PNG): no more than :data:`DEFLATE_MAX_RATIO` times its
  compressed bytes, deflate's largest expansion (RFC 1951: a 258-byte match costs at
  least 2 bits, so 1032:1);
- and never more than :data:`MAX_ARRAY_BYTES` for one array, or :data:`MAX_IMAGE_PIXELS`
  for one image, whatever the file says (a decoder can expand beyond deflate's ratio: a
  1-bit PNG becomes 8 bits a pixel).

Every refusal is a ``ValueError`` naming the reader, the file and both sizes. The limits are
module attributes: a user with larger legitimate data raises them
(``cnnlab.data.limits.MAX_ARRAY_BYTES = 2**36``).
"""

from __future__ import annotations

import os
from pathlib import Path

# RFC 1951 (DEFLATE): the longest match, 258 bytes, coded in as few as 2 bits.
DEFLATE_MAX_RATIO = 1032
# One array read from a user's file: above every dataset cnnlab trains on (CIFAR-10's
# training images are 150 MiB) with ample room, and far below a forged header's petabytes.
MAX_ARRAY_BYTES = 2**33  # 8 GiB
# One decoded image: 16 Mpx (4096 x 4096). Decoding, converting to float32 and laying out
# (C, H, W) takes about 12 bytes a pixel at the peak (600 MB here); image-folder datasets
# hold far smaller pictures.
MAX_IMAGE_PIXELS = 2**24


def check_declared_bytes(declared: int, backing: int, *, compressed: bool, path: Path | str,
                         what: str, fn: str) -> None:
    """Refuse ``declared`` bytes of ``what`` that ``backing`` bytes of the file cannot hold
    (raw: at most ``backing``; deflate: ``DEFLATE_MAX_RATIO * backing``), or that exceed
    :data:`MAX_ARRAY_BYTES`. Sizes are Python ints: nothing wraps around.

    >>> check_declared_bytes(28, 10, compressed=True, path="x.gz", what="payload", fn="f")
    >>> check_declared_bytes(28, 10, compressed=False, path="x", what="payload", fn="f")
    Traceback (most recent call last):
    ...
    ValueError: f: x declares a payload of 28 bytes, but its 10 bytes can hold at most 10
    """
    declared, backing = int(declared), int(backing)
    limit = backing * (DEFLATE_MAX_RATIO if compressed else 1)
    if declared > limit:
        kind = " of deflate data" if compressed else ""
        raise ValueError(f"{fn}: {path} declares a {what} of {declared:,} bytes, but its "
                         f"{backing:,} bytes{kind} can hold at most {limit:,}")
    if declared > MAX_ARRAY_BYTES:
        raise ValueError(f"{fn}: {path} declares a {what} of {declared:,} bytes, more than "
                         f"cnnlab.data.limits.MAX_ARRAY_BYTES ({MAX_ARRAY_BYTES:,}); raise "
                         f"that limit to read it")


def check_image_pixels(width: int, height: int, *, path: Path | str, fn: str) -> None:
    """Refuse an image larger than :data:`MAX_IMAGE_PIXELS` (read from its header, before
    decoding)."""
    pixels = int(width) * int(height)
    if pixels > MAX_IMAGE_PIXELS:
        raise ValueError(f"{fn}: {path} is {width} x {height} = {pixels:,} pixels, more than "
                         f"cnnlab.data.limits.MAX_IMAGE_PIXELS ({MAX_IMAGE_PIXELS:,}); raise "
                         f"that limit to read it")


def file_size(path: Path | str) -> int:
    """The file's size in bytes (what its data can back)."""
    return os.stat(path).st_size
