"""The lecture's worked example ("Pooling" slide), the numbers as the slide prints them.

Kept apart from the library (``cnnlab.cli`` has its own copy of the input) so that the
tests check the engine against the lecture, not against itself.
"""

import numpy as np

IMAGE = np.array([
    [3, 3, 2, 1, 0, 0],
    [3, 3, 2, 1, 0, 0],
    [3, 3, 2, 1, 0, 0],
    [3, 3, 3, 2, 0, 0],
    [3, 3, 2, 1, 0, 0],
    [3, 2, 1, 1, 0, 0],
])
# Symmetric under a flip, so the example reads the same as a convolution and as the
# correlation a layer computes: it cannot tell the two apart (tests/test_lecture.py does).
FILTER = np.array([[1, 0, 1], [0, 1, 0], [1, 0, 1]])
# Correlation with FILTER, zero padding that keeps the size.
FEATURE_MAP = np.array([
    [6, 8, 6, 3, 1, 0],
    [9, 13, 10, 5, 2, 0],
    [9, 14, 11, 6, 3, 0],
    [9, 13, 11, 6, 2, 0],
    [8, 13, 10, 5, 3, 0],
    [6, 7, 5, 3, 1, 0],
])
# 2x2 max pooling of FEATURE_MAP.
POOLED = np.array([[13, 10, 2], [14, 11, 3], [13, 10, 3]])
