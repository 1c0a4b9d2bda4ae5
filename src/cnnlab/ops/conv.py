"""Old import path of :mod:`cnnlab.ops.gemm` (the GEMM convolution kernel), kept so that
code written before the kernels were named for what they are still imports."""

from .gemm import *  # noqa: F403
from .gemm import GemmPlan as ConvGeometry  # noqa: F401
from .gemm import gemm_plan as conv_geometry  # noqa: F401
