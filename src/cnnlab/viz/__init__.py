"""Pictures (matplotlib and Pillow, imported lazily): convolution arithmetic animated
(:func:`animate_convolution`) and, in :mod:`.pictures`, what :mod:`cnnlab.analysis` and
training measure: filters, feature maps, the equivariance heat map, receptive fields, a
convolution's matrix, activation histograms, Grad-CAM, feature visualisation, learning
curves, the CNN-vs-MLP chart and accuracy against shift size."""

from .animation import ConvolutionAnimation, animate_convolution, convolution_steps
from .pictures import (
    Picture,
    plot_activation_histograms,
    plot_channel,
    plot_cnn_vs_mlp,
    plot_conv_matrix,
    plot_equivariance,
    plot_feature_maps,
    plot_filters,
    plot_grad_cam,
    plot_learning_curves,
    plot_receptive_field,
    plot_shift_robustness,
)

__all__ = ["ConvolutionAnimation", "Picture", "animate_convolution", "convolution_steps",
           "plot_activation_histograms", "plot_channel", "plot_cnn_vs_mlp",
           "plot_conv_matrix", "plot_equivariance", "plot_feature_maps", "plot_filters",
           "plot_grad_cam", "plot_learning_curves", "plot_receptive_field",
           "plot_shift_robustness"]
