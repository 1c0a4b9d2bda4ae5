"""PyTorch-named differentiable ops on NumPy arrays or :class:`cnnlab.Tensor`.

Layout is channels-first, ``input: (N, C, *spatial)`` (or unbatched ``(C, *spatial)``), and
a convolution layer computes cross-correlation, as in ``torch.nn.functional``. A NumPy
input gives a NumPy output (float32 and float64 preserved); a Tensor input gives a Tensor
that records the op for autograd. Each public op checks and normalises its arguments once
(the rules and shape rules are ``ops/_args.py``'s, the dtypes ``_binding.py``'s), then
binds an ``ops`` kernel and its VJP (``_binding.py``). The numerics are in ``ops/``, but for
``linear``'s one GEMM (``dense.py``) and dropout's mask (``normalization.py``).

The modules mirror :mod:`cnnlab.nn`: ``convolution`` (convolution and transposed
convolution; ``nn/conv.py``), ``conv_pool`` (the fused convolution + max pooling),
``pooling``, ``padding`` (pad, unfold, fold), ``activation``, ``loss``, ``normalization``
(batch_norm, layer_norm, dropout) and ``dense`` (linear, flatten; ``nn/linear.py``).
``import cnnlab.functional as F`` reaches every name.
"""

from ._binding import ArrayOrTensor, IntOrTuple
from .activation import gelu, leaky_relu, log_softmax, relu, sigmoid, softmax, tanh
from .conv_pool import _conv_max_pool as _conv_max_pool  # nn.Sequential's fusion pass
from .conv_pool import conv_max_pool
from .convolution import KEEP_GRID_BYTES as KEEP_GRID_BYTES  # a constant of functional.py
from .convolution import (
    conv,
    conv1d,
    conv2d,
    conv3d,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
)
from .dense import flatten, linear
from .loss import (
    REDUCTIONS,
    binary_cross_entropy_with_logits,
    cross_entropy,
    mse_loss,
    nll_loss,
)
from .normalization import batch_norm, dropout, layer_norm
from .padding import fold, pad, unfold
from .pooling import (
    adaptive_avg_pool1d,
    adaptive_avg_pool2d,
    adaptive_avg_pool3d,
    adaptive_max_pool1d,
    adaptive_max_pool2d,
    adaptive_max_pool3d,
    avg_pool1d,
    avg_pool2d,
    avg_pool3d,
    blur_pool1d,
    blur_pool2d,
    blur_pool3d,
    lp_pool1d,
    lp_pool2d,
    lp_pool3d,
    max_pool1d,
    max_pool2d,
    max_pool3d,
    max_unpool1d,
    max_unpool2d,
    max_unpool3d,
)

__all__ = [
    "REDUCTIONS",
    "ArrayOrTensor",
    "IntOrTuple",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "batch_norm",
    "binary_cross_entropy_with_logits",
    "blur_pool1d",
    "blur_pool2d",
    "blur_pool3d",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_max_pool",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "cross_entropy",
    "dropout",
    "flatten",
    "fold",
    "gelu",
    "layer_norm",
    "leaky_relu",
    "linear",
    "log_softmax",
    "lp_pool1d",
    "lp_pool2d",
    "lp_pool3d",
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "max_unpool1d",
    "max_unpool2d",
    "max_unpool3d",
    "mse_loss",
    "nll_loss",
    "pad",
    "relu",
    "sigmoid",
    "softmax",
    "tanh",
    "unfold",
]
