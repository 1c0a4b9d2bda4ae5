"""Old import path of the convolution's dispatcher, now :mod:`cnnlab.ops.dispatch`."""

from ._args import ConvRequest as ConvSpec  # noqa: F401
from .dispatch import *  # noqa: F403
from .dispatch import (  # noqa: F401
    ConvRequest,
    bias_grad,
    conv_nd,
    conv_nd_backward,
    conv_transpose_nd,
    conv_transpose_nd_backward,
)
from .gemm import GemmPlan as ConvGeometry  # noqa: F401
from .gemm import gemm_plan as conv_geometry  # noqa: F401
