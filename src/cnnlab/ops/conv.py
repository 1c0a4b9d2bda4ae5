"""Old import path of :mod:`cnnlab.ops.gemm` (the GEMM convolution kernel), kept so that
code written before the kernels were named for what they are still imports."""

from ._args import FINITE_MASK_VALUES, all_finite  # noqa: F401
from .gemm import *  # noqa: F403
from .gemm import GemmPlan as ConvGeometry  # noqa: F401
from .gemm import gemm_plan as conv_geometry  # noqa: F401


def release_workspace() -> None:
    """Nothing to release: the GEMM kernel keeps no buffers between calls any more (its
    workspace was retired for :func:`cnnlab.tune_allocator`, which fixes the same cost)."""
