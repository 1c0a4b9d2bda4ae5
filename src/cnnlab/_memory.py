"""Keep freed large arrays in the process heap instead of returning them to the OS.

What it buys. An allocation that the heap cannot serve is fresh pages from the kernel, and
first-touching them costs more than the arithmetic: filling a fresh 8 MiB array took
2.7 ms, a reused one 0.29 ms (the project's 2-core development VM). glibc serves
allocations above its mmap threshold with fresh pages and unmaps them on free; it raises
that threshold to the size of each freed block (up to 32 MiB) and trims the heap's free
top above twice that, so how often a training step page-faults its activations, gradients
and columns in again depends on the sizes it has freed so far, on the environment
(``MALLOC_MMAP_THRESHOLD_`` fixes the threshold) and on arrays above 32 MiB.
:func:`tune_allocator` raises the thresholds so that every freed array is reused; the price
is that the process keeps its peak heap size until it exits.

Measured: LeNet-5 training on mnist5k (batch 128, two shards), ms per step over 160 steps,
minimum of alternating fresh processes (4-6 rounds), with the tuning and with the GEMM's
former workspace of scratch buffers reused between calls (``ops/gemm.py``, until issue 12):

=========================================  ======  ===========  ==============  =======
heap                                       both    tuning only  workspace only  neither
=========================================  ======  ===========  ==============  =======
glibc defaults                             5.2     5.2          5.2             5.3
``MALLOC_MMAP_THRESHOLD_=131072``          5.9     5.8          10.0            11.0
=========================================  ======  ===========  ==============  =======

(with that threshold, CIFAR's first layer, 64 images, forward + backward: 13.7, 13.1,
17.5, 18.0 ms). The workspace fixed a small part of the cost that the tuning fixes
whole, so only the tuning is kept (issue 12). Timed with a script that runs
``cnnlab.train.Trainer(default_config("mnist5k", "cnn", steps=160)).run()`` and reads its
``train_seconds``; the workspace was switched off by making its buffers fresh arrays.

How to turn it off: the library never calls it (it changes process-wide settings, so it is
not done on import); the ``cnnlab`` command line calls it once at start, so a run without
it is a Python script that trains without calling it. Elsewhere than glibc it does nothing
and returns False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameter numbers from glibc's <malloc.h>.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD_BYTES = 1 << 30   # allocations up to 1 GiB come from the reusable heap
TRIM_THRESHOLD_BYTES = 2**31 - 1  # keep up to 2 GiB of free heap top (mallopt takes an int)
TOP_PAD_BYTES = 256 << 20        # grow the heap in 256 MiB steps


def tune_allocator() -> bool:
    """Set glibc's malloc thresholds for array-heavy work; False where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
                (M_TOP_PAD, TOP_PAD_BYTES))
    return all(mallopt(option, value) == 1 for option, value in settings)
