"""cnnlab: convolutional neural networks from first principles on NumPy."""

from . import functional, nn
from .autograd import Tensor, no_grad

__all__ = ["Tensor", "functional", "nn", "no_grad"]
__version__ = "0.1.0"
