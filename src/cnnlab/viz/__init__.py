"""Pictures (matplotlib and Pillow, imported lazily): convolution arithmetic animated
(:func:`animate_convolution`), what :mod:`cnnlab.analysis` measures (:mod:`.pictures`:
filters, feature maps, the equivariance heat map, receptive fields, a convolution's
matrix, activation histograms over training), and the demo's curves (:mod:`.figures`)."""

from .animation import ConvolutionAnimation, animate_convolution, convolution_steps
from .pictures import (
    Picture,
    plot_activation_histograms,
    plot_channel,
    plot_conv_matrix,
    plot_equivariance,
    plot_feature_maps,
    plot_filters,
    plot_grad_cam,
    plot_receptive_field,
    plot_shift_robustness,
)

__all__ = ["ConvolutionAnimation", "Picture", "animate_convolution", "convolution_steps",
           "plot_activation_histograms", "plot_channel", "plot_conv_matrix",
           "plot_equivariance", "plot_feature_maps", "plot_filters", "plot_grad_cam",
           "plot_receptive_field", "plot_shift_robustness"]
