"""cnnlab: convolutional neural networks from first principles on NumPy."""

from . import functional, nn
from ._memory import tune_allocator
from .autograd import Tensor, no_grad

__all__ = ["Tensor", "functional", "nn", "no_grad", "tune_allocator"]
__version__ = "0.1.0"
