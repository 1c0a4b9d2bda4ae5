"""Pictures (matplotlib and Pillow, imported lazily): learning curves and filters
(:mod:`.figures`), and convolution arithmetic animated (:func:`animate_convolution`)."""

from .animation import ConvolutionAnimation, animate_convolution, convolution_steps

__all__ = ["ConvolutionAnimation", "animate_convolution", "convolution_steps"]
