"""Old import path of the convolution's dispatcher, now :mod:`cnnlab.ops.dispatch`."""

from .dispatch import (  # noqa: F401
    ConvRequest,
    conv_nd,
    conv_nd_backward,
    conv_transpose_nd,
    conv_transpose_nd_backward,
)
from .dispatch import ConvRequest as ConvSpec  # noqa: F401
